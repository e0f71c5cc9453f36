//! Protocol v1 frames and their codec.
//!
//! Frames are JSON text objects with an `op` field. Each direction has one enum, one
//! `encode` and one `decode`. Decoding reads the text once into a flat record of every
//! field any frame may carry, then checks the fields `op` requires; only on failure is the
//! text looked at again, to say precisely what was wrong. Unknown fields are ignored (new
//! servers may add some); unknown ops, trailing junk, oversized frames and missing fields are
//! [`FrameError`]s, never panics.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::ChannelName;
use crate::error::{ErrorCode, FrameError, Refusal};
use crate::event::Event;
use crate::time::Duration;

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

/// An event delivered on a subscribed channel, with its place in the channel's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    /// The same refusal as a core error value.
    pub fn to_refusal(&self) -> Refusal {
        Refusal {
            code: self.code,
            message: self.message.clone(),
            retry_after: self.retry_after_ms.map(Duration::from_millis),
            field: self.field.clone(),
            limit_type: self.limit_type.clone(),
            status: None,
        }
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

/// Explains why `text` did not decode, after the fast path failed.
fn explain(text: &str, known: &[&str], err: serde_json::Error) -> FrameError {
    // `op` as raw JSON, not `serde_json::Value`: the decode path of the WASM build then
    // carries no `Value` machinery. A present `null` is `Some("null")`, not absent.
    #[derive(Deserialize)]
    struct OpOnly {
        #[serde(default, deserialize_with = "present")]
        op: Option<Box<RawValue>>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
        Box::<RawValue>::deserialize(d).map(Some)
    }
    if !text.trim_start().starts_with('{') {
        // Not an object (`OpOnly` would read `[]` as a struct without `op`).
        return FrameError::Malformed(err.to_string());
    }
    match serde_json::from_str::<OpOnly>(text) {
        Err(e) => FrameError::Malformed(e.to_string()),
        Ok(OpOnly { op: None }) => FrameError::MissingOp,
        Ok(OpOnly { op: Some(raw) }) => match serde_json::from_str::<String>(raw.get()) {
            Ok(op) if known.contains(&op.as_str()) => FrameError::Invalid {
                op,
                detail: err.to_string(),
            },
            Ok(op) => FrameError::UnknownOp(op),
            Err(_) => FrameError::Invalid {
                op: raw.get().to_owned(),
                detail: "`op` must be a string".into(),
            },
        },
    }
}

/// Every field a client frame may carry.
#[derive(Deserialize)]
struct ClientWire {
    op: String,
    id: Option<u64>,
    token: Option<String>,
    client: Option<String>,
    channel: Option<ChannelName>,
    since: Option<StreamPosition>,
    event: Option<Event>,
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

impl ClientFrame {
    /// Decodes one frame, rejecting frames over `max_len` bytes.
    pub fn decode(text: &str, max_len: usize) -> Result<Self, FrameError> {
        check_len(text, max_len)?;
        let w: ClientWire = serde_json::from_str(text).map_err(|e| explain(text, CLIENT_OPS, e))?;
        let op = w.op.as_str();
        Ok(match op {
            "connect" => ClientFrame::Connect {
                token: required(w.token, op, "token")?,
                client: w.client,
            },
            "subscribe" => ClientFrame::Subscribe {
                id: required(w.id, op, "id")?,
                channel: required(w.channel, op, "channel")?,
                since: w.since,
            },
            "unsubscribe" => ClientFrame::Unsubscribe {
                id: required(w.id, op, "id")?,
                channel: required(w.channel, op, "channel")?,
            },
            "publish" => ClientFrame::Publish {
                id: required(w.id, op, "id")?,
                event: required(w.event, op, "event")?,
            },
            "refresh" => ClientFrame::Refresh {
                id: required(w.id, op, "id")?,
                token: required(w.token, op, "token")?,
            },
            "ping" => ClientFrame::Ping,
            "pong" => ClientFrame::Pong,
            _ => return Err(FrameError::UnknownOp(w.op)),
        })
    }

    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("client frames always serialise"))
    }
}

/// Every field a server frame may carry.
#[derive(Deserialize)]
struct ServerWire {
    op: String,
    id: Option<u64>,
    session: Option<String>,
    epoch: Option<String>,
    ping_interval_ms: Option<u64>,
    limits: Option<Limits>,
    channel: Option<ChannelName>,
    recovered: Option<bool>,
    offset: Option<u64>,
    event: Option<Event>,
    event_id: Option<String>,
    duplicate: Option<bool>,
    code: Option<ErrorCode>,
    message: Option<String>,
    retry_after_ms: Option<u64>,
    limit_type: Option<String>,
    field: Option<String>,
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

impl ServerFrame {
    /// Decodes one frame, rejecting frames over `max_len` bytes.
    pub fn decode(text: &str, max_len: usize) -> Result<Self, FrameError> {
        check_len(text, max_len)?;
        let w: ServerWire = serde_json::from_str(text).map_err(|e| explain(text, SERVER_OPS, e))?;
        let op = w.op.as_str();
        Ok(match op {
            "event" => ServerFrame::Event(Delivery {
                epoch: required(w.epoch, op, "epoch")?,
                offset: required(w.offset, op, "offset")?,
                event: required(w.event, op, "event")?,
            }),
            "connected" => ServerFrame::Connected {
                session: required(w.session, op, "session")?,
                epoch: required(w.epoch, op, "epoch")?,
                ping_interval_ms: required(w.ping_interval_ms, op, "ping_interval_ms")?,
                limits: w.limits.unwrap_or_default(),
            },
            "subscribed" => ServerFrame::Subscribed {
                id: required(w.id, op, "id")?,
                channel: required(w.channel, op, "channel")?,
                recovered: required(w.recovered, op, "recovered")?,
                epoch: required(w.epoch, op, "epoch")?,
                offset: required(w.offset, op, "offset")?,
            },
            "unsubscribed" => ServerFrame::Unsubscribed {
                id: required(w.id, op, "id")?,
                channel: required(w.channel, op, "channel")?,
            },
            "ack" => ServerFrame::Ack {
                id: required(w.id, op, "id")?,
                event_id: required(w.event_id, op, "event_id")?,
                offset: required(w.offset, op, "offset")?,
                duplicate: w.duplicate.unwrap_or(false),
            },
            "refreshed" => ServerFrame::Refreshed {
                id: required(w.id, op, "id")?,
            },
            "error" => ServerFrame::Error(ErrorFrame {
                id: w.id,
                code: required(w.code, op, "code")?,
                message: w.message.unwrap_or_default(),
                retry_after_ms: w.retry_after_ms,
                limit_type: w.limit_type,
                field: w.field,
            }),
            "ping" => ServerFrame::Ping,
            "pong" => ServerFrame::Pong,
            _ => return Err(FrameError::UnknownOp(w.op)),
        })
    }

    /// Encodes the frame as JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("server frames always serialise"))
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
