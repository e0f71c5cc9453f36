//! Protocol v1 frames and their codec.
//!
//! Frames are JSON text objects with an `op` field. Each direction has one enum, one
//! `encode` and one `decode`, on every target written with the core's own JSON reader and
//! writer ([`crate::json`]; serde_json made most of the WASM bundle). Decoding checks the
//! whole text and keeps each known member as raw text, then looks at `op`, then reads the
//! members (every one present, whatever the op) and checks those `op` requires. Unknown fields are ignored (new
//! servers may add some); unknown ops, trailing junk, oversized frames and missing fields are
//! [`FrameError`]s, never panics.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::channel::ChannelName;
use crate::error::{ErrorBody, ErrorCode, FrameError, Refusal};
use crate::event::{Event, read_channel};
use crate::json::{self, JsonError, Obj, Reader, Seen};

/// Default limit on one frame's size, in bytes: the payload limit plus room for the envelope.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 128 * 1024;

/// A position in a channel's history: the history's epoch and the offset of an event in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct StreamPosition {
    /// Changes whenever the server lost the channel's history.
    pub epoch: String,
    /// Offset of the last event seen; offsets grow by one per channel, starting at 1.
    pub offset: u64,
}

/// Limits the server announces in `connected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Largest `data` of an event, in bytes.
    pub max_payload_bytes: usize,
    /// Largest frame the server accepts, in bytes.
    pub max_frame_bytes: usize,
    /// Most channels one connection may subscribe to.
    pub max_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: crate::event::DEFAULT_MAX_PAYLOAD_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_subscriptions: 1024,
        }
    }
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientFrame {
    /// The first frame: authenticates the connection.
    Connect {
        /// The JWT.
        token: String,
        /// The SDK and its version, e.g. `courier-ts/0.1.0`.
        #[serde(skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Subscribe to a channel, optionally resuming after a position.
    Subscribe {
        /// Request id, echoed in the answer.
        id: u64,
        /// The channel.
        channel: ChannelName,
        /// Resume after this position: replay what came after it.
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<StreamPosition>,
    },
    /// Stop receiving a channel.
    Unsubscribe {
        /// Request id, echoed in the answer.
        id: u64,
        /// The channel.
        channel: ChannelName,
    },
    /// Publish an event over the socket.
    Publish {
        /// Request id, echoed in `ack` or `error`.
        id: u64,
        /// The event.
        event: Event,
    },
    /// Replace the connection's token before it expires.
    Refresh {
        /// Request id, echoed in `refreshed` or `error`.
        id: u64,
        /// The new JWT.
        token: String,
    },
    /// Liveness check; the peer answers `pong`.
    Ping,
    /// Answer to the server's `ping`.
    Pong,
}

/// An event delivered on a subscribed channel, with its place in the channel's history (the
/// replay API's pages hold the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// The channel history's epoch.
    pub epoch: String,
    /// The event's offset in the channel.
    pub offset: u64,
    /// The event (its `channel` says where it was published).
    pub event: Event,
}

/// The payload of an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// The request this answers, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// How long to wait before trying again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Which limit, for `CONNECTION_LIMIT_EXCEEDED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_type: Option<String>,
    /// Which field, for `INVALID_EVENT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorFrame {
    /// An error frame with just a code and message.
    pub fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
            retry_after_ms: None,
            limit_type: None,
            field: None,
        }
    }

    /// The frame for an error body (the one wire error struct) answering request `id`.
    pub fn from_body(id: Option<u64>, body: ErrorBody) -> Self {
        let ErrorBody {
            code,
            message,
            field,
            retry_after_ms,
            limit_type,
        } = body;
        Self {
            id,
            code,
            message,
            retry_after_ms,
            limit_type,
            field,
        }
    }

    /// The error without the request `id`, as HTTP bodies and batch results carry it.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
            field: self.field.clone(),
            retry_after_ms: self.retry_after_ms,
            limit_type: self.limit_type.clone(),
        }
    }

    /// The same refusal as a core error value.
    pub fn to_refusal(&self) -> Refusal {
        self.body().to_refusal(None)
    }
}

/// Frames a server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame {
    /// Authentication succeeded.
    Connected {
        /// Session id, for logs.
        session: String,
        /// The server's history epoch at connect time.
        epoch: String,
        /// The server sends `ping` this often; a silent connection is dead after
        /// `ping_interval_ms` plus the client's grace.
        ping_interval_ms: u64,
        /// Limits the server enforces.
        limits: Limits,
    },
    /// A subscription is live; missed events follow when `recovered`.
    Subscribed {
        /// The request id.
        id: u64,
        /// The channel.
        channel: ChannelName,
        /// Whether everything after `since` will be replayed (true when no `since` was given).
        recovered: bool,
        /// The channel history's current epoch.
        epoch: String,
        /// The channel's latest offset when the subscription started (0 for an empty channel).
        offset: u64,
        /// The offset of the first event the server replays after this frame: `since.offset
        /// + 1` when `recovered`, the oldest event it still holds of the current epoch when
        /// not, `offset + 1` when nothing is replayed. Delivery continues from here, so the
        /// client knows exactly what is missing (offsets below it that it has not seen).
        /// Absent from servers that predate it: the client then continues from `offset`.
        replay_from: Option<u64>,
    },
    /// A subscription ended.
    Unsubscribed {
        /// The request id.
        id: u64,
        /// The channel.
        channel: ChannelName,
    },
    /// An event on a subscribed channel.
    Event(Delivery),
    /// A publish was accepted (or was a duplicate of one already accepted).
    Ack {
        /// The request id.
        id: u64,
        /// The event's id.
        event_id: String,
        /// The event's offset in its channel.
        offset: u64,
        /// Whether the id was seen before within the idempotency window.
        duplicate: bool,
    },
    /// A `refresh` was accepted.
    Refreshed {
        /// The request id.
        id: u64,
    },
    /// A request, or the connection, was refused.
    Error(ErrorFrame),
    /// Liveness check; the client answers `pong`.
    Ping,
    /// Answer to the client's `ping`.
    Pong,
}

fn required<T>(value: Option<T>, op: &str, field: &str) -> Result<T, FrameError> {
    value.ok_or_else(|| FrameError::Invalid {
        op: op.to_owned(),
        detail: format!("missing `{field}`"),
    })
}

fn check_len(text: &str, max: usize) -> Result<(), FrameError> {
    if text.len() > max {
        Err(FrameError::TooLarge {
            len: text.len(),
            max,
        })
    } else {
        Ok(())
    }
}

/// The first pass over a frame: the whole text is checked as JSON (any syntax error,
/// trailing junk or a frame that is not an object is `Malformed`), `op` and each member
/// named in `fields` are kept as raw text; other members are skipped.
///
/// Then `op` is looked at (`MissingOp`, `UnknownOp`, or `Invalid` when it is not a string);
/// a repeated member is `Invalid`. Only then are the members read, in [`Members::read`].
struct Members<'a, const N: usize> {
    op: Cow<'a, str>,
    raw: [Option<&'a str>; N],
    /// The `event` member, read in the first pass (the hot path: an event frame is
    /// walked once); `Some(Err)` when it is present but not an event.
    event: Option<Result<Event, JsonError>>,
}

impl<'a, const N: usize> Members<'a, N> {
    fn scan(text: &'a str, fields: &[&str; N], ops: &[&str]) -> Result<Self, FrameError> {
        let mut r = Reader::new(text);
        let mut op = None;
        let mut raw = [None; N];
        let mut duplicate = None;
        let mut event = None;
        let scanned = if r.peek() == Some(b'{') {
            r.object(|r, key| {
                // `event` is read as it is met; its raw text is then only a marker.
                let value = if key == "event" && !r.null() {
                    event = Some(r.try_read(Event::read_json)?);
                    "{}"
                } else if key == "event" {
                    "null"
                } else {
                    r.skip_value()?
                };
                if key == "op" {
                    if op.is_some() {
                        return Err(r.err("duplicate field `op`"));
                    }
                    op = Some(value);
                } else if let Some(i) = fields.iter().position(|f| *f == key) {
                    if raw[i].is_some() {
                        duplicate.get_or_insert(i);
                    }
                    raw[i] = Some(value);
                }
                Ok(())
            })
            .and_then(|()| r.end())
        } else {
            Err(r.err("expected a frame object"))
        };
        scanned.map_err(|e| FrameError::Malformed(e.to_string()))?;
        let op_raw = op.ok_or(FrameError::MissingOp)?;
        let mut r = Reader::new(op_raw);
        let op = match r.string() {
            Ok(op) => op,
            Err(_) => {
                return Err(FrameError::Invalid {
                    op: op_raw.to_owned(),
                    detail: "`op` must be a string".into(),
                });
            }
        };
        if !ops.contains(&&*op) {
            return Err(FrameError::UnknownOp(op.into_owned()));
        }
        if let Some(i) = duplicate {
            return Err(FrameError::Invalid {
                op: op.into_owned(),
                detail: format!("duplicate field `{}`", fields[i]),
            });
        }
        Ok(Members { op, raw, event })
    }

    /// Reads member `i` (`None` when absent or `null`).
    fn read<T>(
        &self,
        fields: &[&str; N],
        i: usize,
        read: fn(&mut Reader<'a>) -> Result<T, JsonError>,
    ) -> Result<Option<T>, FrameError> {
        let Some(mut r) = self.member(i) else {
            return Ok(None);
        };
        match read(&mut r) {
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(self.invalid(fields[i], e)),
        }
    }

    /// The `event` member (at `i` in `fields`), read during the scan.
    fn take_event(&mut self, fields: &[&str; N], i: usize) -> Result<Option<Event>, FrameError> {
        match self.event.take() {
            None => Ok(None),
            Some(Ok(e)) => Ok(Some(e)),
            Some(Err(e)) => Err(self.invalid(fields[i], e)),
        }
    }

    /// A reader at member `i`, unless it is absent or `null`.
    fn member(&self, i: usize) -> Option<Reader<'a>> {
        let mut r = Reader::new(self.raw[i]?);
        if r.null() { None } else { Some(r) }
    }

    fn invalid(&self, field: &str, e: JsonError) -> FrameError {
        FrameError::Invalid {
            op: self.op.clone().into_owned(),
            detail: format!("`{field}`: {e}"),
        }
    }
}

impl StreamPosition {
    /// Reads `{"epoch","offset"}`.
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        let (mut epoch, mut offset) = (None, None);
        let mut seen = Seen::default();
        r.object(|r, key| match key {
            "epoch" => seen.read(0, r, key, &mut epoch, |r| r.owned().map(Some)),
            "offset" => seen.read(1, r, key, &mut offset, |r| r.u64().map(Some)),
            _ => r.skip_value().map(drop),
        })?;
        Ok(StreamPosition {
            epoch: json::required(epoch, r, "epoch")?,
            offset: json::required(offset, r, "offset")?,
        })
    }

    fn write_json(&self, out: &mut String) {
        Obj::new(out)
            .str("epoch", &self.epoch)
            .u64("offset", self.offset)
            .end();
    }
}

impl Limits {
    /// Reads `{"max_payload_bytes","max_frame_bytes","max_subscriptions"}`.
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        const NAMES: [&str; 3] = ["max_payload_bytes", "max_frame_bytes", "max_subscriptions"];
        let mut v = [None; 3];
        let mut seen = Seen::default();
        r.object(|r, key| match NAMES.iter().position(|n| *n == key) {
            Some(i) => seen.read(i as u32, r, key, &mut v[i], |r| r.usize().map(Some)),
            None => r.skip_value().map(drop),
        })?;
        Ok(Limits {
            max_payload_bytes: json::required(v[0], r, NAMES[0])?,
            max_frame_bytes: json::required(v[1], r, NAMES[1])?,
            max_subscriptions: json::required(v[2], r, NAMES[2])?,
        })
    }
}

fn u64_of(r: &mut Reader<'_>) -> Result<u64, JsonError> {
    r.u64()
}

fn code_of(r: &mut Reader<'_>) -> Result<ErrorCode, JsonError> {
    r.string().map(|s| ErrorCode::from_wire(&s))
}

/// Opens a frame object with its `op`.
fn frame<'o>(out: &'o mut String, op: &str) -> Obj<'o> {
    let mut o = Obj::new(out);
    o.str("op", op);
    o
}

const CLIENT_OPS: &[&str] = &[
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "refresh",
    "ping",
    "pong",
];

/// Every member a client frame may carry (besides `op`).
const CLIENT_FIELDS: [&str; 6] = ["id", "token", "client", "channel", "since", "event"];

impl ClientFrame {
    /// Decodes one frame, rejecting frames over `max_len` bytes.
    pub fn decode(text: &str, max_len: usize) -> Result<Self, FrameError> {
        check_len(text, max_len)?;
        const F: &[&str; 6] = &CLIENT_FIELDS;
        let mut m = Members::scan(text, F, CLIENT_OPS)?;
        // Every member present is read, whatever the op (as the serde codec did).
        let id = m.read(F, 0, u64_of)?;
        let token = m.read(F, 1, Reader::owned)?;
        let client = m.read(F, 2, Reader::owned)?;
        let channel = m.read(F, 3, read_channel)?;
        let since = m.read(F, 4, StreamPosition::read_json)?;
        let event = m.take_event(F, 5)?;
        let op = &*m.op;
        Ok(match op {
            "connect" => ClientFrame::Connect {
                token: required(token, op, "token")?,
                client,
            },
            "subscribe" => ClientFrame::Subscribe {
                id: required(id, op, "id")?,
                channel: required(channel, op, "channel")?,
                since,
            },
            "unsubscribe" => ClientFrame::Unsubscribe {
                id: required(id, op, "id")?,
                channel: required(channel, op, "channel")?,
            },
            "publish" => ClientFrame::Publish {
                id: required(id, op, "id")?,
                event: required(event, op, "event")?,
            },
            "refresh" => ClientFrame::Refresh {
                id: required(id, op, "id")?,
                token: required(token, op, "token")?,
            },
            "ping" => ClientFrame::Ping,
            _ => ClientFrame::Pong,
        })
    }

    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        match self {
            ClientFrame::Connect { token, client } => frame(&mut out, "connect")
                .str("token", token)
                .opt_str("client", client.as_deref())
                .end(),
            ClientFrame::Subscribe { id, channel, since } => {
                let mut o = frame(&mut out, "subscribe");
                o.u64("id", *id).str("channel", channel.as_str());
                if let Some(p) = since {
                    o.with("since", |out| p.write_json(out));
                }
                o.end();
            }
            ClientFrame::Unsubscribe { id, channel } => frame(&mut out, "unsubscribe")
                .u64("id", *id)
                .str("channel", channel.as_str())
                .end(),
            ClientFrame::Publish { id, event } => frame(&mut out, "publish")
                .u64("id", *id)
                .with("event", |out| event.write_json(out))
                .end(),
            ClientFrame::Refresh { id, token } => frame(&mut out, "refresh")
                .u64("id", *id)
                .str("token", token)
                .end(),
            ClientFrame::Ping => frame(&mut out, "ping").end(),
            ClientFrame::Pong => frame(&mut out, "pong").end(),
        }
        out
    }
}

const SERVER_OPS: &[&str] = &[
    "connected",
    "subscribed",
    "unsubscribed",
    "event",
    "ack",
    "refreshed",
    "error",
    "ping",
    "pong",
];

/// Every member a server frame may carry (besides `op`).
const SERVER_FIELDS: [&str; 17] = [
    "id",
    "session",
    "epoch",
    "ping_interval_ms",
    "limits",
    "channel",
    "recovered",
    "offset",
    "event",
    "event_id",
    "duplicate",
    "code",
    "message",
    "retry_after_ms",
    "limit_type",
    "field",
    "replay_from",
];

/// The hot path of every subscriber: an `event` frame as servers write it (`op` first, then
/// `epoch`, `offset` and `event` in any order, nothing else), read in one pass without the
/// member table of [`Members`].
///
/// `None` for anything else: another op, `op` not first, another member, a repeated member,
/// `null`, any error. [`ServerFrame::decode`] then reads the frame the general way, so
/// every error (and every unusual frame) comes out exactly as before; for the frames this
/// accepts, the general way gives the same `Delivery` (the same readers, in the same
/// order, and the general way's extra checks cannot fail on them).
fn decode_event(text: &str) -> Option<Delivery> {
    let mut r = Reader::new(text);
    r.open_object().ok()?;
    let mut first = true;
    if r.next_key(&mut first).ok()?.as_deref() != Some("op") || r.string().ok()? != "event" {
        return None;
    }
    let (mut epoch, mut offset, mut event) = (None, None, None);
    while let Some(key) = r.next_key(&mut first).ok()? {
        match &*key {
            "epoch" if epoch.is_none() => epoch = Some(r.owned().ok()?),
            "offset" if offset.is_none() => offset = Some(r.u64().ok()?),
            "event" if event.is_none() => event = Some(Event::read_json(&mut r).ok()?),
            _ => return None,
        }
    }
    r.end().ok()?;
    Some(Delivery {
        epoch: epoch?,
        offset: offset?,
        event: event?,
    })
}

impl ServerFrame {
    /// Decodes one frame, rejecting frames over `max_len` bytes.
    pub fn decode(text: &str, max_len: usize) -> Result<Self, FrameError> {
        check_len(text, max_len)?;
        if let Some(delivery) = decode_event(text) {
            return Ok(ServerFrame::Event(delivery));
        }
        Self::decode_members(text)
    }

    /// [`ServerFrame::decode`] the general way: the whole text checked first, then `op`,
    /// then every known member.
    fn decode_members(text: &str) -> Result<Self, FrameError> {
        const F: &[&str; 17] = &SERVER_FIELDS;
        let mut m = Members::scan(text, F, SERVER_OPS)?;
        // Every member present is read, whatever the op (as the serde codec did).
        let id = m.read(F, 0, u64_of)?;
        let session = m.read(F, 1, Reader::owned)?;
        let epoch = m.read(F, 2, Reader::owned)?;
        let ping_interval_ms = m.read(F, 3, u64_of)?;
        let limits = m.read(F, 4, Limits::read_json)?;
        let channel = m.read(F, 5, read_channel)?;
        let recovered = m.read(F, 6, Reader::bool)?;
        let offset = m.read(F, 7, u64_of)?;
        let event = m.take_event(F, 8)?;
        let event_id = m.read(F, 9, Reader::owned)?;
        let duplicate = m.read(F, 10, Reader::bool)?;
        let code = m.read(F, 11, code_of)?;
        let message = m.read(F, 12, Reader::owned)?;
        let retry_after_ms = m.read(F, 13, u64_of)?;
        let limit_type = m.read(F, 14, Reader::owned)?;
        let field = m.read(F, 15, Reader::owned)?;
        let replay_from = m.read(F, 16, u64_of)?;
        let op = &*m.op;
        Ok(match op {
            "event" => ServerFrame::Event(Delivery {
                epoch: required(epoch, op, "epoch")?,
                offset: required(offset, op, "offset")?,
                event: required(event, op, "event")?,
            }),
            "connected" => ServerFrame::Connected {
                session: required(session, op, "session")?,
                epoch: required(epoch, op, "epoch")?,
                ping_interval_ms: required(ping_interval_ms, op, "ping_interval_ms")?,
                limits: limits.unwrap_or_default(),
            },
            "subscribed" => ServerFrame::Subscribed {
                id: required(id, op, "id")?,
                channel: required(channel, op, "channel")?,
                recovered: required(recovered, op, "recovered")?,
                epoch: required(epoch, op, "epoch")?,
                offset: required(offset, op, "offset")?,
                replay_from,
            },
            "unsubscribed" => ServerFrame::Unsubscribed {
                id: required(id, op, "id")?,
                channel: required(channel, op, "channel")?,
            },
            "ack" => ServerFrame::Ack {
                id: required(id, op, "id")?,
                event_id: required(event_id, op, "event_id")?,
                offset: required(offset, op, "offset")?,
                duplicate: duplicate.unwrap_or(false),
            },
            "refreshed" => ServerFrame::Refreshed {
                id: required(id, op, "id")?,
            },
            "error" => ServerFrame::Error(ErrorFrame {
                id,
                code: required(code, op, "code")?,
                message: message.unwrap_or_default(),
                retry_after_ms,
                limit_type,
                field,
            }),
            "ping" => ServerFrame::Ping,
            _ => ServerFrame::Pong,
        })
    }

    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        match self {
            ServerFrame::Connected {
                session,
                epoch,
                ping_interval_ms,
                limits,
            } => frame(&mut out, "connected")
                .str("session", session)
                .str("epoch", epoch)
                .u64("ping_interval_ms", *ping_interval_ms)
                .with("limits", |out| {
                    Obj::new(out)
                        .u64("max_payload_bytes", limits.max_payload_bytes as u64)
                        .u64("max_frame_bytes", limits.max_frame_bytes as u64)
                        .u64("max_subscriptions", limits.max_subscriptions as u64)
                        .end();
                })
                .end(),
            ServerFrame::Subscribed {
                id,
                channel,
                recovered,
                epoch,
                offset,
                replay_from,
            } => {
                let mut obj = frame(&mut out, "subscribed");
                obj.u64("id", *id)
                    .str("channel", channel.as_str())
                    .bool("recovered", *recovered)
                    .str("epoch", epoch)
                    .u64("offset", *offset);
                if let Some(from) = replay_from {
                    obj.u64("replay_from", *from);
                }
                obj.end()
            }
            ServerFrame::Unsubscribed { id, channel } => frame(&mut out, "unsubscribed")
                .u64("id", *id)
                .str("channel", channel.as_str())
                .end(),
            ServerFrame::Event(d) => frame(&mut out, "event")
                .str("epoch", &d.epoch)
                .u64("offset", d.offset)
                .with("event", |out| d.event.write_json(out))
                .end(),
            ServerFrame::Ack {
                id,
                event_id,
                offset,
                duplicate,
            } => frame(&mut out, "ack")
                .u64("id", *id)
                .str("event_id", event_id)
                .u64("offset", *offset)
                .bool("duplicate", *duplicate)
                .end(),
            ServerFrame::Refreshed { id } => frame(&mut out, "refreshed").u64("id", *id).end(),
            ServerFrame::Error(e) => frame(&mut out, "error")
                .opt_u64("id", e.id)
                .str("code", e.code.as_str())
                .str("message", &e.message)
                .opt_u64("retry_after_ms", e.retry_after_ms)
                .opt_str("limit_type", e.limit_type.as_deref())
                .opt_str("field", e.field.as_deref())
                .end(),
            ServerFrame::Ping => frame(&mut out, "ping").end(),
            ServerFrame::Pong => frame(&mut out, "pong").end(),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_event() {
        let text = r#"{"op":"event","epoch":"e1","offset":7,"event":{"id":"x","type":"backtest.progress","channel":"backtest.a","data":{"backtest_id":"a","percent":5},"metadata":{"timestamp":1,"source":"s"}}}"#;
        let frame = ServerFrame::decode(text, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(
            ServerFrame::decode(&frame.encode(), DEFAULT_MAX_FRAME_BYTES).unwrap(),
            frame
        );
        let ServerFrame::Event(d) = frame else {
            panic!("not an event")
        };
        assert_eq!(d.event.data.get(), r#"{"backtest_id":"a","percent":5}"#);
    }

    /// The event fast path against the general decoder: the same result (value or error)
    /// for event frames as servers write them and for every kind of variation on them.
    #[test]
    fn event_fast_path_agrees_with_the_general_decoder() {
        let max = DEFAULT_MAX_FRAME_BYTES;
        let event = r#"{"id":"01JD3Z8Q4W6X9V2N5R7T1K3M8P","type":"backtest.progress","channel":"backtest.bt-1","data":{"backtest_id":"bt-1","percent":42.5,"message":"a\"b\u00e9"},"metadata":{"timestamp":1732300000000,"source":"backtester","correlation_id":"run-7"}}"#;
        let frames = [
            format!(r#"{{"op":"event","epoch":"E","offset":3,"event":{event}}}"#),
            format!(r#"{{"op":"event","event":{event},"offset":3,"epoch":"E"}}"#),
            format!(r#" {{ "op" : "event" , "epoch" : "E\n" , "offset" : 3 , "event" : {event} }} "#),
            format!(r#"{{"op":"ev\u0065nt","epoch":"E","offset":3,"event":{event}}}"#),
            r#"{"op":"event","epoch":"E","offset":1,"event":{"type":"t","channel":"c","data":null}}"#.into(),
            r#"{"op":"event","epoch":"E","offset":1,"event":{"type":"t","channel":"c","data":1,"metadata":{},"x":[1,{"y":2}]}}"#.into(),
            r#"{"op":"event","epoch":"E","offset":1,"event":{"type":"t","channel":"c","data":1,"metadata":{"user_id":null,"correlation_id":"c","z":0}}}"#.into(),
            // Not for the fast path: each must come out as the general decoder says.
            format!(r#"{{"epoch":"E","op":"event","offset":3,"event":{event}}}"#),
            format!(r#"{{"op":"event","epoch":"E","offset":3,"event":{event},"extra":1}}"#),
            format!(r#"{{"op":"event","epoch":"E","offset":3,"event":{event},"id":"x"}}"#),
            format!(r#"{{"op":"event","epoch":"E","offset":3,"event":{event},"id":7}}"#),
            format!(r#"{{"op":"event","epoch":"E","epoch":"F","offset":3,"event":{event}}}"#),
            format!(r#"{{"op":"event","op":"event","epoch":"E","offset":3,"event":{event}}}"#),
            format!(r#"{{"op":"event","epoch":"E","offset":3,"event":{event}}} x"#),
            format!(r#"{{"op":"event","epoch":null,"offset":3,"event":{event}}}"#),
            format!(r#"{{"op":"event","epoch":"E","offset":-3,"event":{event}}}"#),
            format!(r#"{{"op":"event","epoch":"E","offset":3.0,"event":{event}}}"#),
            format!(r#"{{"op":"event","offset":3,"event":{event}}}"#),
            r#"{"op":"event","epoch":"E","offset":3}"#.into(),
            r#"{"op":"event","epoch":"E","offset":3,"event":null}"#.into(),
            r#"{"op":"event","epoch":"E","offset":3,"event":{"type":"t","channel":"c"}}"#.into(),
            r#"{"op":"event","epoch":"E","offset":3,"event":{"type":"t","channel":"c..d","data":1}}"#.into(),
            r#"{"op":"event","epoch":"E","offset":3,"event":{"type":"t","type":"u","channel":"c","data":1}}"#.into(),
            r#"{"op":"event","epoch":"E","offset":3,"event":{"type":"t","channel":"c","data":[1,]}}"#.into(),
            r#"{"op":"event","epoch":"E","offset":3,"event":{"type":"t","channel":"c","data":1,"metadata":null}}"#.into(),
            r#"{"op":"event","epoch":"E","offset":3,"event":{"type":"t","channel":"c","data":1,"metadata":{"timestamp":-1}}}"#.into(),
            r#"{"op":"event","epoch":"E","offset":3,"event":{"type":"t","channel":"c","data":1}"#.into(),
            r#"{"op":"ping"}"#.into(),
            r#"{"op":"pong","epoch":"E"}"#.into(),
            r#"{"op":"event"}"#.into(),
            r#"{"op":7}"#.into(),
            r#"{"op":"eventx"}"#.into(),
            "[]".into(),
            "".into(),
        ];
        for (i, text) in frames.iter().enumerate() {
            let general = ServerFrame::decode_members(text);
            assert_eq!(ServerFrame::decode(text, max), general, "{text}");
            assert_eq!(decode_event(text).is_some(), i < 7, "{text}");
            if i < 7 {
                assert!(matches!(general, Ok(ServerFrame::Event(_))), "{text}");
            }
            // Every prefix (cut frames) too.
            for cut in (0..text.len()).filter(|&n| text.is_char_boundary(n)) {
                let text = &text[..cut];
                assert_eq!(
                    ServerFrame::decode(text, max),
                    ServerFrame::decode_members(text),
                    "{text}"
                );
            }
        }
    }

    proptest::proptest! {
        /// Edits of an event frame (a piece of JSON put in, a span taken out) come out of
        /// `decode` as the general decoder reads them.
        #[test]
        fn edited_event_frames_decode_as_the_general_decoder(
            at in 0usize..400,
            len in 0usize..6,
            piece in proptest::sample::select(vec![
                "", "\"", ",", ":", "{", "}", "[", "]", "null", "1", "-1", "\"op\":\"event\",",
                "\"epoch\":\"F\",", "\"id\":\"x\",", "\"offset\":2,", "\\u0041", " ", "\"x\":{},",
            ]),
        ) {
            let text = r#"{"op":"event","epoch":"E","offset":3,"event":{"id":"i","type":"backtest.progress","channel":"backtest.bt-1","data":{"backtest_id":"bt-1","percent":42.5,"list":[1,"a",null]},"metadata":{"timestamp":17,"source":"s","correlation_id":"c","user_id":null}}}"#;
            let at = at.min(text.len());
            let end = (at + len).min(text.len());
            let edited = format!("{}{}{}", &text[..at], piece, &text[end..]);
            proptest::prop_assert_eq!(
                ServerFrame::decode(&edited, DEFAULT_MAX_FRAME_BYTES),
                ServerFrame::decode_members(&edited),
                "{}", edited
            );
        }
    }

    #[test]
    fn errors_are_typed() {
        let max = DEFAULT_MAX_FRAME_BYTES;
        assert_eq!(
            ServerFrame::decode(r#"{"op":"nope"}"#, max),
            Err(FrameError::UnknownOp("nope".into()))
        );
        assert_eq!(
            ServerFrame::decode(r#"{"id":1}"#, max),
            Err(FrameError::MissingOp)
        );
        assert!(matches!(
            ServerFrame::decode(r#"{"op":"ping"} x"#, max),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            ServerFrame::decode(r#"{"op":"ack","id":1}"#, max),
            Err(FrameError::Invalid { .. })
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"op":"subscribe","id":1,"channel":"a..b"}"#, max),
            Err(FrameError::Invalid { .. })
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"op":"ping"}"#, 3),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            ClientFrame::decode("[]", max),
            Err(FrameError::Malformed(_))
        ));
    }
}
