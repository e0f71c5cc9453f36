//! The HTTP wire format of publishing: paths, request and response bodies, each declared
//! once with its field list ([`FIELDS`](BatchItemResult::FIELDS)), its reader (`read_json`,
//! over the core's [`Reader`](crate::json::Reader)) and its writer (`write_json`).
//!
//! Both ends use these: the publish queue writes [`BatchRequest`] bodies and reads
//! [`BatchResponseBody`] answers; the reference server reads publish bodies with
//! [`EventItem`] (one pass over the text, a fault named by field) and answers with the same
//! types. Serde derives stay on them for the server's OpenAPI document and for tests; the
//! hand-written readers and writers are what runs (no serde_json in the WASM build).
//!
//! - `POST` [`PUBLISH_PATH`]: body an [`Event`]; answer a [`PublishResponse`].
//! - `POST` [`PUBLISH_CHANNEL_PATH`]: the same, the channel taken from the path.
//! - `POST` [`PUBLISH_BATCH_PATH`]: body a [`BatchRequest`]; answer a [`BatchResponseBody`].
//! - Any refusal of a whole request: an error status with an [`ErrorResponse`].
//!
//! The WebSocket protocol's frames have a module of their own, [`crate::frame`]: they are a
//! different format (one object with an `op`), shared only by the [`Event`] envelope.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::channel::ChannelName;
use crate::error::{ErrorCode, Refusal};
// The error bodies live with the errors (the WebSocket error frame converts to and from
// them); named here too, so that this module holds every body of the HTTP API.
pub use crate::error::{ErrorBody, ErrorResponse};
use crate::event::{Event, Metadata, RawJson};
use crate::json::{self, JsonError, Obj, Reader, Seen};

/// The HTTP path one event is `POST`ed to.
pub const PUBLISH_PATH: &str = "/publish";

/// The HTTP path one event is `POST`ed to with the channel in the path (axum's route
/// syntax; the body's `channel` may then be absent).
pub const PUBLISH_CHANNEL_PATH: &str = "/publish/{channel}";

/// The HTTP path batches are `POST`ed to.
pub const PUBLISH_BATCH_PATH: &str = "/publish/batch";

/// Length of `{"events":[]}`, the body of a [`BatchRequest`] around its events.
pub const BATCH_BODY_OVERHEAD: usize = 13;

// ---------------------------------------------------------------------------------------
// `POST /publish/batch`
// ---------------------------------------------------------------------------------------

/// Request body of `POST /publish/batch`: `{"events":[Event, …]}`.
///
/// Each event is `{"id","type","channel","data","metadata"}` ([`Event`]). The server
/// answers `200` with a [`BatchResponseBody`] holding one result per event, in the same
/// order, or refuses the whole request with an error status and an [`ErrorResponse`] body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchRequest {
    /// The events to publish; their ids are the idempotency keys.
    pub events: Vec<Event>,
}

impl BatchRequest {
    /// The members, in the order they are written.
    pub const FIELDS: &'static [&'static str] = &["events"];

    /// Reads `{"events":[…]}` strictly: every event must be one (unknown members ignored).
    /// A server reads the events one by one instead, with [`BatchRequest::read_items`].
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        let mut events = None;
        read_events_object(r, &mut |r| {
            events
                .get_or_insert_with(Vec::new)
                .push(Event::read_json(r)?);
            Ok(())
        })?;
        Ok(Self {
            events: events.unwrap_or_default(),
        })
    }

    /// Reads a batch body as the server does, in one pass: the text must be JSON and an
    /// object with an `events` array (else `Err`, the whole request is refused); each
    /// element is an [`EventItem`], refused or not on its own.
    pub fn read_items(text: &str) -> Result<Vec<EventItem>, JsonError> {
        let mut r = Reader::new(text);
        let mut items = Vec::new();
        read_events_object(&mut r, &mut |r| {
            let item = EventItem::read_json(r, None);
            if let Some(e) = &item.syntax {
                return Err(e.clone());
            }
            items.push(item);
            Ok(())
        })?;
        r.end()?;
        Ok(items)
    }

    /// Appends the body (the same text serde writes).
    pub fn write_json(&self, out: &mut String) {
        let mut jsons = Vec::with_capacity(self.events.len());
        for e in &self.events {
            jsons.push(e.to_json());
        }
        out.push_str(&batch_body(jsons.iter().map(String::as_str)));
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }
}

/// `{"events":[…]}` around events that are already JSON text (the publish queue keeps each
/// event's text from the moment it is pushed).
pub(crate) fn batch_body<'a>(events: impl Iterator<Item = &'a str> + Clone) -> String {
    let len = events.clone().map(|e| e.len() + 1).sum::<usize>();
    let mut body = String::with_capacity(BATCH_BODY_OVERHEAD + len);
    body.push_str("{\"events\":[");
    for (i, e) in events.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e);
    }
    body.push_str("]}");
    body
}

/// `{"events":[…]}` with `item` reading each element; `events` is required, other members
/// are skipped.
fn read_events_object(
    r: &mut Reader<'_>,
    item: &mut dyn FnMut(&mut Reader<'_>) -> Result<(), JsonError>,
) -> Result<(), JsonError> {
    let mut seen = Seen::default();
    let mut found = false;
    r.object(|r, key| match key {
        "events" => {
            seen.first(0, r, key)?;
            found = true;
            r.array(|r| item(r))
        }
        _ => r.skip_value().map(drop),
    })?;
    if found {
        Ok(())
    } else {
        Err(r.err("missing field `events`"))
    }
}

/// Successful (`200`) response body of `POST /publish/batch`: `{"results":[…]}`.
///
/// Holds exactly one [`BatchItemResult`] per event of the request, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResponseBody {
    /// One result per event, in the order of the request.
    pub results: Vec<BatchItemResult>,
}

impl BatchResponseBody {
    /// The members, in the order they are written.
    pub const FIELDS: &'static [&'static str] = &["results"];

    /// Reads `{"results":[…]}` with the core's JSON reader (what the publish queue uses on
    /// every target; unknown members are ignored, as with serde).
    pub fn from_json(text: &str) -> Result<Self, JsonError> {
        let mut r = Reader::new(text);
        let body = Self::read_json(&mut r)?;
        r.end()?;
        Ok(body)
    }

    /// Reads the object at the reader.
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        let mut results = None;
        let mut seen = Seen::default();
        r.object(|r, key| match key {
            "results" => {
                seen.first(0, r, key)?;
                let mut list = Vec::new();
                r.array(|r| {
                    list.push(BatchItemResult::read_json(r)?);
                    Ok(())
                })?;
                results = Some(list);
                Ok(())
            }
            _ => r.skip_value().map(drop),
        })?;
        Ok(Self {
            results: json::required(results, r, "results")?,
        })
    }

    /// Appends the body (the same text serde writes).
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"results\":[");
        for (i, result) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            result.write_json(out);
        }
        out.push_str("]}");
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 * self.results.len() + 16);
        self.write_json(&mut out);
        out
    }
}

/// What became of one event of a batch (wire form `"accepted"`, `"duplicate"`,
/// `"rejected"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ItemStatus {
    /// Stored and delivered to the channel's subscribers.
    Accepted,
    /// Its id was already accepted within the idempotency window; not delivered again.
    /// `channel`, `epoch` and `offset` are those of the first acceptance.
    Duplicate,
    /// Refused; `error` says why and whether a retry may help.
    Rejected,
}

impl ItemStatus {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Accepted => "accepted",
            ItemStatus::Duplicate => "duplicate",
            ItemStatus::Rejected => "rejected",
        }
    }

    /// Reads the wire form; other strings are an error.
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        let at = r.err("unknown status");
        Ok(match &*r.string()? {
            "accepted" => ItemStatus::Accepted,
            "duplicate" => ItemStatus::Duplicate,
            "rejected" => ItemStatus::Rejected,
            _ => return Err(at),
        })
    }
}

/// The result for one event of a batch:
/// `{"id","status","channel"?,"epoch"?,"offset"?,"error"?}`.
///
/// `channel`, `epoch` and `offset` are present when the status is `accepted` or
/// `duplicate` (`channel` may also be present on `rejected`); `error` is present exactly
/// when it is `rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchItemResult {
    /// The event's id, as sent.
    pub id: String,
    /// What happened to it.
    pub status: ItemStatus,
    /// The channel it was published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The channel's history epoch at the time it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Its offset in the channel's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl BatchItemResult {
    /// The members, in the order they are written (the last four only when present).
    pub const FIELDS: &'static [&'static str] =
        &["id", "status", "channel", "epoch", "offset", "error"];

    /// An `accepted` result.
    pub fn accepted(
        id: impl Into<String>,
        channel: impl Into<String>,
        epoch: impl Into<String>,
        offset: u64,
    ) -> Self {
        Self {
            id: id.into(),
            status: ItemStatus::Accepted,
            channel: Some(channel.into()),
            epoch: Some(epoch.into()),
            offset: Some(offset),
            error: None,
        }
    }

    /// A `duplicate` result, carrying the position of the first acceptance.
    pub fn duplicate(
        id: impl Into<String>,
        channel: impl Into<String>,
        epoch: impl Into<String>,
        offset: u64,
    ) -> Self {
        Self {
            status: ItemStatus::Duplicate,
            ..Self::accepted(id, channel, epoch, offset)
        }
    }

    /// A `rejected` result.
    pub fn rejected(id: impl Into<String>, channel: Option<String>, error: ErrorBody) -> Self {
        Self {
            id: id.into(),
            status: ItemStatus::Rejected,
            channel,
            epoch: None,
            offset: None,
            error: Some(error),
        }
    }

    /// Reads one result object.
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        const F: &[&str] = BatchItemResult::FIELDS;
        let (mut id, mut status, mut channel, mut epoch, mut offset, mut error) =
            (None, None, None, None, None, None);
        let mut seen = Seen::default();
        r.object(|r, key| match F.iter().position(|f| *f == key) {
            Some(0) => seen.read(0, r, key, &mut id, |r| r.owned().map(Some)),
            Some(1) => seen.read(1, r, key, &mut status, |r| {
                ItemStatus::read_json(r).map(Some)
            }),
            Some(2) => seen.read(2, r, key, &mut channel, |r| r.opt(Reader::owned)),
            Some(3) => seen.read(3, r, key, &mut epoch, |r| r.opt(Reader::owned)),
            Some(4) => seen.read(4, r, key, &mut offset, |r| r.opt(Reader::u64)),
            Some(5) => seen.read(5, r, key, &mut error, |r| r.opt(ErrorBody::read_json)),
            _ => r.skip_value().map(drop),
        })?;
        Ok(Self {
            id: json::required(id, r, F[0])?,
            status: json::required(status, r, F[1])?,
            channel,
            epoch,
            offset,
            error,
        })
    }

    /// Appends the result (the same text serde writes).
    pub fn write_json(&self, out: &mut String) {
        const F: &[&str] = BatchItemResult::FIELDS;
        let mut o = Obj::new(out);
        o.str(F[0], &self.id)
            .str(F[1], self.status.as_str())
            .opt_str(F[2], self.channel.as_deref())
            .opt_str(F[3], self.epoch.as_deref())
            .opt_u64(F[4], self.offset);
        if let Some(e) = &self.error {
            o.with(F[5], |out| e.write_json(out));
        }
        o.end();
    }
}

// ---------------------------------------------------------------------------------------
// `POST /publish` and `POST /publish/{channel}`
// ---------------------------------------------------------------------------------------

/// Successful (`200`) response body of `POST /publish` and `POST /publish/{channel}`:
/// `{"id","channel","epoch","offset","duplicate"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishResponse {
    /// The event id (server-generated when the request had none).
    pub id: String,
    /// The channel.
    pub channel: String,
    /// The history epoch.
    pub epoch: String,
    /// The event's offset in its channel.
    pub offset: u64,
    /// True when the id was seen within the idempotency window (not delivered again).
    pub duplicate: bool,
}

impl PublishResponse {
    /// The members, in the order they are written.
    pub const FIELDS: &'static [&'static str] = &["id", "channel", "epoch", "offset", "duplicate"];

    /// Reads one response object (unknown members ignored).
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        const F: &[&str] = PublishResponse::FIELDS;
        let (mut id, mut channel, mut epoch, mut offset, mut duplicate) =
            (None, None, None, None, None);
        let mut seen = Seen::default();
        r.object(|r, key| match F.iter().position(|f| *f == key) {
            Some(0) => seen.read(0, r, key, &mut id, |r| r.owned().map(Some)),
            Some(1) => seen.read(1, r, key, &mut channel, |r| r.owned().map(Some)),
            Some(2) => seen.read(2, r, key, &mut epoch, |r| r.owned().map(Some)),
            Some(3) => seen.read(3, r, key, &mut offset, |r| r.u64().map(Some)),
            Some(4) => seen.read(4, r, key, &mut duplicate, |r| r.bool().map(Some)),
            _ => r.skip_value().map(drop),
        })?;
        Ok(Self {
            id: json::required(id, r, F[0])?,
            channel: json::required(channel, r, F[1])?,
            epoch: json::required(epoch, r, F[2])?,
            offset: json::required(offset, r, F[3])?,
            duplicate: json::required(duplicate, r, F[4])?,
        })
    }

    /// Appends the response (the same text serde writes).
    pub fn write_json(&self, out: &mut String) {
        const F: &[&str] = PublishResponse::FIELDS;
        Obj::new(out)
            .str(F[0], &self.id)
            .str(F[1], &self.channel)
            .str(F[2], &self.epoch)
            .u64(F[3], self.offset)
            .bool(F[4], self.duplicate)
            .end();
    }

    /// The response as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(96);
        self.write_json(&mut out);
        out
    }
}

// ---------------------------------------------------------------------------------------
// Reading publish bodies on the server
// ---------------------------------------------------------------------------------------

/// What kind of fault made an event unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The text is not JSON (or nests too deeply).
    Syntax,
    /// The value is JSON but not an object.
    NotAnObject,
    /// A member has the wrong type or an invalid value, or is repeated.
    Invalid,
    /// A required member is absent.
    Missing,
}

/// The first fault of an event object, in text order (what serde would have stopped at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFault {
    /// What kind of fault.
    pub kind: FaultKind,
    /// The member at fault as a dotted path (`type`, `metadata.source`); `None` for the
    /// object itself.
    pub field: Option<String>,
    /// A sentence for humans.
    pub message: String,
}

/// One event object of a publish body as a server reads it, in one pass over the text:
/// the members that are strings are kept even when the event is refused (the answer and
/// the request log name them), and the first fault is named by field.
///
/// The `data` value is kept as its exact text, whatever it holds (big integers, `1e999`,
/// escaped lone surrogates): the server passes it on untouched, on every publish path.
#[derive(Debug, Clone)]
pub struct EventItem {
    /// `id` when it is a string.
    pub id: Option<String>,
    /// `type` when it is a string.
    pub event_type: Option<String>,
    /// `channel` when it is a string (valid name or not).
    pub channel: Option<String>,
    /// Whether a `channel` member is present, whatever its value.
    pub has_channel: bool,
    /// Set when the text is not JSON; the reader's position is then meaningless and the
    /// first fault (`fault`) is this one or an earlier one.
    pub syntax: Option<JsonError>,
    fault: Option<ItemFault>,
    channel_name: Option<ChannelName>,
    data: Option<RawJson>,
    metadata: Metadata,
}

impl EventItem {
    /// Reads one value that should be an event object. `default_channel` stands in for an
    /// absent `channel` (`POST /publish/{channel}`). Never fails: a fault is kept in the
    /// item ([`fault`](Self::fault), [`syntax`](Self::syntax)).
    pub fn read_json(r: &mut Reader<'_>, default_channel: Option<&ChannelName>) -> Self {
        let mut item = EventItem {
            id: None,
            event_type: None,
            channel: None,
            has_channel: false,
            syntax: None,
            fault: None,
            channel_name: None,
            data: None,
            metadata: Metadata::default(),
        };
        if r.peek() != Some(b'{') {
            match r.skip_value() {
                Ok(_) => item.refuse(
                    None,
                    FaultKind::NotAnObject,
                    "the event must be a JSON object",
                ),
                Err(e) => item.not_json(None, e),
            }
            return item;
        }
        // The member whose value was being read when the text turned out not to be JSON.
        let mut at: Option<String> = None;
        let mut seen = Seen::default();
        let read = r.object(|r, key| {
            let read = item.member(r, key, &mut seen, &mut at);
            if read.is_err() && at.is_none() {
                at = Some(key.to_owned());
            }
            read
        });
        if let Err(e) = read {
            // Between members (a missing `,`, a key expected): `?`, the mark serde's path
            // tracker gave it, so the server's answers kept their `field`.
            item.not_json(Some(at.unwrap_or_else(|| "?".into())), e);
            return item;
        }

        if item.fault.is_none() {
            if item.event_type.is_none() {
                item.missing("type");
            } else if item.channel_name.is_none() {
                match default_channel {
                    Some(c) if !item.has_channel => item.channel_name = Some(c.clone()),
                    _ => item.missing("channel"),
                }
            }
            if item.fault.is_none() && item.data.is_none() {
                item.missing("data");
            }
        }
        item
    }

    /// Reads member `key`; `Err` only when the text is not JSON.
    fn member(
        &mut self,
        r: &mut Reader<'_>,
        key: &str,
        seen: &mut Seen,
        at: &mut Option<String>,
    ) -> Result<(), JsonError> {
        let bit = match key {
            "id" => 0,
            "type" => 1,
            "channel" => 2,
            "data" => 3,
            "metadata" => 4,
            _ => return r.skip_value().map(drop),
        };
        // A repeated member is a fault of the object (serde's `duplicate field`), met
        // before its value.
        let repeated = seen.first(bit, r, key).is_err();
        if repeated {
            let what = format!("duplicate field `{key}`");
            self.refuse(None, FaultKind::Invalid, what);
        }
        match bit {
            0..=2 => {
                if bit == 2 {
                    self.has_channel = true;
                }
                let value = r.try_read(Reader::owned)?;
                let refuse = self.fault.is_none();
                match &value {
                    Ok(s) if bit == 2 && refuse => match ChannelName::new(s.clone()) {
                        Ok(c) => self.channel_name = Some(c),
                        Err(e) => self.refuse(Some(key), FaultKind::Invalid, e.to_string()),
                    },
                    Ok(_) => {}
                    Err(e) if refuse => self.refuse(Some(key), FaultKind::Invalid, e.what.clone()),
                    Err(_) => {}
                }
                let slot = match bit {
                    0 => &mut self.id,
                    1 => &mut self.event_type,
                    _ => &mut self.channel,
                };
                *slot = value.ok();
            }
            3 => {
                let raw = r.skip_value()?;
                self.data = Some(RawJson::from_checked(raw));
            }
            _ => {
                if self.fault.is_none() {
                    self.metadata = self.read_metadata(r, at)?;
                } else {
                    r.skip_value()?;
                }
            }
        }
        Ok(())
    }

    /// Reads `metadata`, naming a fault `metadata.<member>`.
    fn read_metadata(
        &mut self,
        r: &mut Reader<'_>,
        at: &mut Option<String>,
    ) -> Result<Metadata, JsonError> {
        let mut m = Metadata::default();
        if r.peek() != Some(b'{') {
            r.skip_value()?;
            self.refuse(
                Some("metadata"),
                FaultKind::Invalid,
                "`metadata` must be an object",
            );
            return Ok(m);
        }
        let mut seen = Seen::default();
        let read = r.object(|r, key| {
            let read = self.metadata_member(r, key, &mut seen, &mut m);
            if read.is_err() && at.is_none() {
                *at = Some(format!("metadata.{key}"));
            }
            read
        });
        if read.is_err() && at.is_none() {
            *at = Some("metadata.?".into());
        }
        read.map(|()| m)
    }

    /// Reads member `key` of `metadata` into `m`; `Err` only when the text is not JSON.
    fn metadata_member(
        &mut self,
        r: &mut Reader<'_>,
        key: &str,
        seen: &mut Seen,
        m: &mut Metadata,
    ) -> Result<(), JsonError> {
        let bit = match key {
            "timestamp" => 0,
            "source" => 1,
            "correlation_id" => 2,
            "user_id" => 3,
            _ => return r.skip_value().map(drop),
        };
        if let Err(e) = seen.first(bit, r, key) {
            self.refuse(Some("metadata"), FaultKind::Invalid, e.what);
            return r.skip_value().map(drop);
        }
        let value = match bit {
            0 => r.try_read(|r| r.whole_u64().map(|t| m.timestamp = t))?,
            1 => r.try_read(|r| r.owned().map(|s| m.source = s))?,
            2 => r.try_read(|r| r.opt(Reader::owned).map(|s| m.correlation_id = s))?,
            _ => r.try_read(|r| r.opt(Reader::owned).map(|s| m.user_id = s))?,
        };
        if let Err(e) = value
            && self.fault.is_none()
        {
            let field = format!("metadata.{key}");
            self.refuse(Some(&field), FaultKind::Invalid, e.what);
        }
        Ok(())
    }

    fn refuse(&mut self, field: Option<&str>, kind: FaultKind, message: impl Into<String>) {
        self.fault.get_or_insert_with(|| ItemFault {
            kind,
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    fn missing(&mut self, field: &str) {
        self.refuse(
            Some(field),
            FaultKind::Missing,
            format!("`{field}` is required"),
        );
    }

    fn not_json(&mut self, field: Option<String>, e: JsonError) {
        self.fault.get_or_insert_with(|| ItemFault {
            kind: FaultKind::Syntax,
            field,
            message: e.to_string(),
        });
        self.syntax = Some(e);
    }

    /// The first fault, if any.
    pub fn fault(&self) -> Option<&ItemFault> {
        self.fault.as_ref()
    }

    /// The event, or the first fault. `id` and `metadata` may have been absent (empty and
    /// default then); the event is not validated yet ([`Event::validate`]).
    pub fn into_event(self) -> Result<Event, ItemFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        // Without a fault every required part is there (checked when the object ended).
        match (self.event_type, self.channel_name, self.data) {
            (Some(event_type), Some(channel), Some(data)) => Ok(Event {
                id: self.id.unwrap_or_default(),
                event_type,
                channel,
                data,
                metadata: self.metadata,
            }),
            _ => Err(ItemFault {
                kind: FaultKind::Missing,
                field: None,
                message: "the event is incomplete".into(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Answers as the publish queue reads them
// ---------------------------------------------------------------------------------------

/// Reads a 2xx answer to a batch whose events had the ids `sent`: one result per event,
/// same ids, same order; `Err` says what is wrong with it.
pub(crate) fn read_results<'a>(
    body: &str,
    sent: impl ExactSizeIterator<Item = &'a str> + Clone,
) -> Result<Vec<BatchItemResult>, String> {
    let parsed = BatchResponseBody::from_json(body)
        .map_err(|e| format!("unreadable response from {PUBLISH_BATCH_PATH}: {e}"))?;
    if parsed.results.len() != sent.len() {
        return Err(format!(
            "response from {PUBLISH_BATCH_PATH} has {} results for {} events",
            parsed.results.len(),
            sent.len()
        ));
    }
    if let Some((id, r)) = sent.zip(&parsed.results).find(|(id, r)| *id != r.id) {
        return Err(format!(
            "response from {PUBLISH_BATCH_PATH} answers `{}` where `{id}` was sent",
            r.id
        ));
    }
    Ok(parsed.results)
}

/// The refusal a 4xx/5xx answer stands for: its [`ErrorResponse`] body if readable, else
/// the code the status implies.
pub(crate) fn refusal_from_error_status(status: u16, body: &str) -> Refusal {
    if let Ok(parsed) = ErrorResponse::from_json(body) {
        return parsed.error.to_refusal(Some(status));
    }
    let code = match status {
        400 => ErrorCode::BadRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::ForbiddenChannel,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::RateLimitExceeded,
        502..=504 => ErrorCode::Unavailable,
        500..=599 => ErrorCode::Internal,
        _ => ErrorCode::Unknown,
    };
    let snippet: String = body.chars().take(200).collect();
    let message = if snippet.trim().is_empty() {
        format!("HTTP {status} from {PUBLISH_BATCH_PATH}")
    } else {
        format!("HTTP {status} from {PUBLISH_BATCH_PATH}: {snippet}")
    };
    let mut refusal = Refusal::new(code, message);
    refusal.status = Some(status);
    refusal
}

#[cfg(test)]
mod tests;
