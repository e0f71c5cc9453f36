//! Typed events: the envelope every event travels in, the catalogue of known event types
//! with their data shapes, and validation with errors that name the field.
//!
//! Decisions (documented in `docs/protocol.md`):
//! - `data` stays raw JSON inside the envelope ([`RawJson`]): the core validates it when an
//!   event is published and otherwise passes it through untouched, so a subscriber pays for
//!   one parse, in its own language.
//! - Prices, quantities and money are decimal strings (`"101.25"`), never floats, so they
//!   stay exact in every language. Percentages are numbers from 0 to 100.
//! - Timestamps are Unix milliseconds (integers).
//! - Each catalogue type is declared once (`event_data!`): its Rust struct, which
//!   [`catalogue_schema`] exports as JSON Schema (from which the TypeScript and Python types
//!   are generated), and its validation table ([`EventData::FIELDS`]), which
//!   [`Event::validate`] walks over the data's text with the core's JSON reader
//!   ([`crate::shape`]): no serde on that path, so every build (WASM included) validates
//!   catalogue data the same way, naming the field (`data.percent`, `data.symbols[1]`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::channel::ChannelName;
use crate::error::{ValidationError, ValidationKind};
use crate::json::{self, JsonError, Obj, Reader, Seen};
use crate::shape::{self, Field, Kind};

#[cfg(all(test, feature = "publish"))]
mod oracle;

/// Default limit on the size of an event's `data`, in bytes (100 KB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 100 * 1024;
/// Longest event id, idempotency key or event type, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// JSON text that is exactly one value (an event's `data`), kept as text: the core checks
/// it and passes it on, it never builds a tree of it.
///
/// The core's own type rather than serde_json's `RawValue`, so that the WASM build (which
/// reads and writes frames with [`crate::json`]) does not carry serde_json at all. With
/// serde it behaves like `RawValue`: written verbatim, read as whatever value is there.
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Box<str>);

impl RawJson {
    /// Checks that `json` is one JSON value and keeps it (surrounding whitespace trimmed).
    pub fn from_string(json: String) -> Result<Self, JsonError> {
        json::validate(&json)?;
        let trimmed = json.trim_matches([' ', '\t', '\n', '\r']);
        Ok(if trimmed.len() == json.len() {
            Self(json.into_boxed_str())
        } else {
            Self(trimmed.into())
        })
    }

    /// Text the caller has already checked is one JSON value (the reader returned it).
    pub(crate) fn from_checked(json: &str) -> Self {
        Self(json.into())
    }

    /// `null`.
    pub fn null() -> Self {
        Self("null".into())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawJson")
            .field(&format_args!("{}", self.0))
            .finish()
    }
}

impl std::fmt::Display for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RawJson {
    /// Written verbatim by serde_json (through a borrowed `RawValue`; the text is checked
    /// once more on the way, off the hot paths, which use [`Event::write_json`]).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(Self(raw.into()))
    }
}

/// Who sent an event, when, and on whose behalf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Metadata {
    /// When the event was created, in Unix milliseconds; 0 lets the server stamp it. Read
    /// from any whole number (`5`, `5.0`, `5e3`), written as digits.
    #[serde(default)]
    pub timestamp: u64,
    /// The service that published it; empty lets the server use the token's subject.
    #[serde(default)]
    pub source: String,
    /// Ties together the events of one piece of work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The user the event concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl Metadata {
    /// Reads a metadata object; every member may be absent, unknown ones are ignored.
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        let mut m = Metadata::default();
        let mut seen = Seen::default();
        // Member by member rather than with `Reader::object`'s closure: this runs per event.
        r.open_object()?;
        let mut first = true;
        while let Some(key) = r.next_key(&mut first)? {
            let key = &*key;
            match key {
                "timestamp" => seen.read(0, r, key, &mut m.timestamp, Reader::whole_u64)?,
                "source" => seen.read(1, r, key, &mut m.source, Reader::owned)?,
                "correlation_id" => {
                    seen.read(2, r, key, &mut m.correlation_id, |r| r.opt(Reader::owned))?;
                }
                "user_id" => seen.read(3, r, key, &mut m.user_id, |r| r.opt(Reader::owned))?,
                _ => drop(r.skip_value()?),
            }
        }
        Ok(m)
    }

    /// Appends the metadata as JSON (the same text serde would write).
    pub fn write_json(&self, out: &mut String) {
        Obj::new(out)
            .u64("timestamp", self.timestamp)
            .str("source", &self.source)
            .opt_str("correlation_id", self.correlation_id.as_deref())
            .opt_str("user_id", self.user_id.as_deref())
            .end();
    }
}

/// The envelope of every event: on the wire, in history, in the publish queue.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// The idempotency key: the same id within the server's window is delivered once.
    #[serde(default)]
    pub id: String,
    /// The event type, e.g. `backtest.progress`, or a custom type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The channel it is published to.
    pub channel: ChannelName,
    /// The payload, as raw JSON; its shape depends on `type`.
    #[schemars(with = "serde_json::Value")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: RawJson,
    /// Who, when, why.
    #[serde(default)]
    pub metadata: Metadata,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.event_type == other.event_type
            && self.channel == other.channel
            && self.data.get() == other.data.get()
            && self.metadata == other.metadata
    }
}

impl Event {
    /// Builds an event from a JSON value of data. Validation is separate: see [`Event::validate`].
    pub fn new(
        id: impl Into<String>,
        event_type: impl Into<String>,
        channel: ChannelName,
        data: &serde_json::Value,
        metadata: Metadata,
    ) -> Self {
        // serde_json writes one JSON value; a `Value` cannot fail to serialize.
        let data = serde_json::to_string(data)
            .map_or_else(|_| RawJson::null(), |text| RawJson(text.into()));
        Self {
            id: id.into(),
            event_type: event_type.into(),
            channel,
            data,
            metadata,
        }
    }

    /// Reads an event object (the protocol's envelope) with the core's JSON reader: unknown
    /// members are ignored, `id` and `metadata` may be absent, `data` is kept as raw text.
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        let (mut id, mut event_type, mut channel, mut data, mut metadata) =
            (None, None, None, None, None);
        let mut seen = Seen::default();
        // Member by member rather than with `Reader::object`'s closure: this runs per event.
        r.open_object()?;
        let mut first = true;
        while let Some(key) = r.next_key(&mut first)? {
            let key = &*key;
            match key {
                "id" => seen.read(0, r, key, &mut id, |r| r.owned().map(Some))?,
                "type" => seen.read(1, r, key, &mut event_type, |r| r.owned().map(Some))?,
                "channel" => seen.read(2, r, key, &mut channel, |r| read_channel(r).map(Some))?,
                "data" => seen.read(3, r, key, &mut data, |r| {
                    Ok(Some(RawJson::from_checked(r.skip_value()?)))
                })?,
                "metadata" => seen.read(4, r, key, &mut metadata, |r| {
                    Metadata::read_json(r).map(Some)
                })?,
                _ => drop(r.skip_value()?),
            }
        }
        Ok(Self {
            id: id.unwrap_or_default(),
            event_type: json::required(event_type, r, "type")?,
            channel: json::required(channel, r, "channel")?,
            data: json::required(data, r, "data")?,
            metadata: metadata.unwrap_or_default(),
        })
    }

    /// Appends the event as JSON (the same text serde would write).
    pub fn write_json(&self, out: &mut String) {
        Obj::new(out)
            .str("id", &self.id)
            .str("type", &self.event_type)
            .str("channel", self.channel.as_str())
            .raw("data", self.data.get())
            .with("metadata", |out| self.metadata.write_json(out))
            .end();
    }

    /// The event as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.data.get().len() + 128);
        self.write_json(&mut out);
        out
    }

    /// Builds an event from data that is already JSON text, checking that it is JSON.
    pub fn from_json_data(
        id: impl Into<String>,
        event_type: impl Into<String>,
        channel: ChannelName,
        data_json: String,
        metadata: Metadata,
    ) -> Result<Self, ValidationError> {
        let data = RawJson::from_string(data_json).map_err(|e| {
            ValidationError::new(
                "data",
                ValidationKind::BadFormat,
                format!("data is not valid JSON: {e}"),
            )
        })?;
        Ok(Self {
            id: id.into(),
            event_type: event_type.into(),
            channel,
            data,
            metadata,
        })
    }

    /// Checks the envelope and, for catalogue types, the data shape (`publish` feature).
    #[cfg(feature = "publish")]
    pub fn validate(&self, max_payload_bytes: usize) -> Result<(), ValidationError> {
        check_id("id", &self.id)?;
        check_event_type(&self.event_type)?;
        let size = self.data.get().len();
        if size > max_payload_bytes {
            return Err(ValidationError::new(
                "data",
                ValidationKind::TooLarge,
                format!(
                    "data is {size} bytes, over the {max_payload_bytes}-byte limit; send a reference instead of the payload"
                ),
            ));
        }
        check_optional_text("metadata.source", Some(&self.metadata.source))?;
        check_optional_text(
            "metadata.correlation_id",
            self.metadata.correlation_id.as_deref(),
        )?;
        check_optional_text("metadata.user_id", self.metadata.user_id.as_deref())?;
        let known = match catalogue_fields(&self.event_type) {
            Some(fields) => {
                if !self.data.get().trim_start().starts_with('{') {
                    return Err(ValidationError::new(
                        "data",
                        ValidationKind::WrongType,
                        format!("data of `{}` must be a JSON object", self.event_type),
                    ));
                }
                shape::validate(self.data.get(), fields, &self.event_type)?;
                true
            }
            None => false,
        };
        if !known
            && !self.data.get().trim_start().starts_with([
                '{', '[', '"', 't', 'f', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
            ])
        {
            return Err(ValidationError::new(
                "data",
                ValidationKind::BadFormat,
                "data must be JSON",
            ));
        }
        Ok(())
    }
}

/// Reads a channel name: a string that [`ChannelName::new`] accepts.
pub(crate) fn read_channel(r: &mut Reader<'_>) -> Result<ChannelName, JsonError> {
    let at = r.err("");
    let name = r.owned()?;
    ChannelName::new(name).map_err(|e| JsonError {
        what: e.to_string().into(),
        at: at.at,
    })
}

/// Checks an id or idempotency key: 1 to 128 bytes of `A-Z a-z 0-9 _ - . :`.
pub fn check_id(field: &str, id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(ValidationError::new(
            field,
            ValidationKind::Missing,
            format!("`{field}` must not be empty"),
        ));
    }
    if id.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            field,
            ValidationKind::TooLong,
            format!("`{field}` is {} bytes; at most {MAX_ID_LEN}", id.len()),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(ValidationError::new(
            field,
            ValidationKind::BadFormat,
            format!("`{field}` may only hold letters, digits, `_`, `-`, `.` and `:`"),
        ));
    }
    Ok(())
}

/// Checks an event type: dot-separated lowercase segments of `a-z 0-9 _ -`, at most 128 bytes.
pub fn check_event_type(event_type: &str) -> Result<(), ValidationError> {
    let ok = !event_type.is_empty()
        && event_type.len() <= MAX_ID_LEN
        && event_type.split('.').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "type",
            if event_type.is_empty() {
                ValidationKind::Missing
            } else {
                ValidationKind::BadFormat
            },
            format!(
                "event type `{event_type}` must be dot-separated lowercase words such as `backtest.progress`"
            ),
        ))
    }
}

#[cfg(feature = "publish")]
fn check_optional_text(field: &str, value: Option<&str>) -> Result<(), ValidationError> {
    match value {
        Some(v) if v.len() > MAX_ID_LEN => Err(ValidationError::new(
            field,
            ValidationKind::TooLong,
            format!("`{field}` is {} bytes; at most {MAX_ID_LEN}", v.len()),
        )),
        _ => Ok(()),
    }
}

/// An exact decimal number carried as a string, e.g. `"101.25"` or `"-3"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Decimal(#[schemars(regex(pattern = r"^-?[0-9]+(\.[0-9]+)?$"))] pub String);

/// Side of a trade or order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Buying.
    Buy,
    /// Selling.
    Sell,
}

/// Kind of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// At the market price.
    Market,
    /// At a limit price or better.
    Limit,
    /// Becomes a market order at a stop price.
    Stop,
    /// Becomes a limit order at a stop price.
    StopLimit,
}

// The field kinds of the catalogue's tables (see [`crate::shape`]).
/// A required name or id: not blank, at most 128 bytes.
const NAME: Kind = Kind::Name;
/// Free text.
const TEXT: Kind = Kind::Str;
/// A decimal string.
const DECIMAL: Kind = Kind::Decimal { positive: false };
/// A decimal string greater than zero.
const POSITIVE: Kind = Kind::Decimal { positive: true };
/// A number from 0 to 100.
const PERCENT: Kind = Kind::Number(Some(&shape::PERCENT));
/// Any number.
const NUMBER: Kind = Kind::Number(None);
/// A `u64`.
const UINT: Kind = Kind::UInt;
/// `true` or `false`.
const BOOL: Kind = Kind::Bool;
/// Any JSON value.
const ANY: Kind = Kind::Any;
/// [`Side`].
const SIDE: Kind = Kind::Enum(&["buy", "sell"]);
/// [`OrderType`].
const ORDER_TYPE: Kind = Kind::Enum(&["market", "limit", "stop", "stop_limit"]);
/// A list of strings.
const TEXTS: Kind = Kind::Array(&Kind::Str);

/// Whether a field of this Rust type must be present: every catalogue field is required
/// unless its type is an `Option`. Gives the tables' `required` from the structs' types.
pub trait Presence {
    /// Whether a field of this type is required.
    const REQUIRED: bool;
}
impl<T> Presence for Option<T> {
    const REQUIRED: bool = false;
}
macro_rules! required_types {
    ($($t:ty),*) => { $(impl Presence for $t { const REQUIRED: bool = true; })* };
}
required_types!(
    String,
    f64,
    u64,
    bool,
    Decimal,
    Side,
    OrderType,
    serde_json::Value,
    Vec<String>
);

/// Data of a catalogue event: its Rust type (for the JSON Schema the TypeScript and Python
/// types are generated from, and for Rust code that builds or reads the data) and its
/// validation table (which [`Event::validate`] walks over the data's text).
pub trait EventData: DeserializeOwned + Serialize + JsonSchema {
    /// The event type this data belongs to.
    const TYPE: &'static str;
    /// The data's fields, in declaration order, for [`crate::shape::validate`].
    const FIELDS: &'static [Field];
}

/// Declares one catalogue type, once: each field's Rust type and its table kind side by side
/// (`percent: f64 => PERCENT`); the struct gets the serde and schemars derives, the table
/// the field names, kinds and `required` (from the type: an `Option` is optional).
macro_rules! event_data {
    ($(#[$doc:meta])* $name:ident = $ty:literal {
        $($(#[$fattr:meta])* $field:ident : $fty:ty => $kind:expr),* $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        pub struct $name {
            $($(#[$fattr])* pub $field: $fty,)*
        }
        impl EventData for $name {
            const TYPE: &'static str = $ty;
            const FIELDS: &'static [Field] = &[$(Field {
                name: stringify!($field),
                kind: &$kind,
                required: <$fty as Presence>::REQUIRED,
            }),*];
        }
    };
}

event_data!(
    /// `strategy.generation.started`
    StrategyGenerationStarted = "strategy.generation.started" {
        /// The generation run.
        generation_id: String => NAME,
        /// A human name for what is being generated.
        strategy_name: Option<String> => TEXT,
        /// Free-form parameters.
        parameters: Option<serde_json::Value> => ANY,
    }
);
event_data!(
    /// `strategy.generation.progress`
    StrategyGenerationProgress = "strategy.generation.progress" {
        /// The generation run.
        generation_id: String => NAME,
        /// 0 to 100.
        percent: f64 => PERCENT,
        /// The current stage.
        stage: Option<String> => TEXT,
        /// A line for humans.
        message: Option<String> => TEXT,
    }
);
event_data!(
    /// `strategy.generation.completed`
    StrategyGenerationCompleted = "strategy.generation.completed" {
        /// The generation run.
        generation_id: String => NAME,
        /// The strategy it produced.
        strategy_id: String => NAME,
        /// How long it took.
        duration_ms: Option<u64> => UINT,
    }
);
event_data!(
    /// `strategy.generation.failed`
    StrategyGenerationFailed = "strategy.generation.failed" {
        /// The generation run.
        generation_id: String => NAME,
        /// What went wrong.
        error: String => NAME,
        /// Whether running it again may succeed.
        retryable: Option<bool> => BOOL,
    }
);
event_data!(
    /// `backtest.started`
    BacktestStarted = "backtest.started" {
        /// The backtest.
        backtest_id: String => NAME,
        /// The strategy under test.
        strategy_id: String => NAME,
        /// Instruments covered.
        symbols: Option<Vec<String>> => TEXTS,
        /// Start of the tested period (ISO 8601 date).
        start_date: Option<String> => TEXT,
        /// End of the tested period (ISO 8601 date).
        end_date: Option<String> => TEXT,
    }
);
event_data!(
    /// `backtest.progress`
    BacktestProgress = "backtest.progress" {
        /// The backtest.
        backtest_id: String => NAME,
        /// 0 to 100.
        percent: f64 => PERCENT,
        /// Bars or days processed so far.
        processed: Option<u64> => UINT,
        /// Bars or days in all.
        total: Option<u64> => UINT,
        /// A line for humans.
        message: Option<String> => TEXT,
    }
);
event_data!(
    /// `backtest.completed`
    BacktestCompleted = "backtest.completed" {
        /// The backtest.
        backtest_id: String => NAME,
        /// Total return as a decimal fraction, e.g. `"0.125"` for 12.5 %.
        total_return: Option<Decimal> => DECIMAL,
        /// Sharpe ratio.
        sharpe_ratio: Option<f64> => NUMBER,
        /// Maximum drawdown as a decimal fraction.
        max_drawdown: Option<Decimal> => DECIMAL,
        /// Number of trades.
        trades: Option<u64> => UINT,
        /// How long it took.
        duration_ms: Option<u64> => UINT,
    }
);
event_data!(
    /// `backtest.failed`
    BacktestFailed = "backtest.failed" {
        /// The backtest.
        backtest_id: String => NAME,
        /// What went wrong.
        error: String => NAME,
        /// Whether running it again may succeed.
        retryable: Option<bool> => BOOL,
    }
);
event_data!(
    /// `trade.executed`
    TradeExecuted = "trade.executed" {
        /// The trade.
        trade_id: String => NAME,
        /// Instrument.
        symbol: String => NAME,
        /// Buy or sell.
        side: Side => SIDE,
        /// Quantity, a positive decimal string.
        quantity: Decimal => POSITIVE,
        /// Price, a positive decimal string.
        price: Decimal => POSITIVE,
        /// When it executed, Unix milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        executed_at: Option<u64> => UINT,
        /// The order it filled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_id: Option<String> => TEXT,
        /// The backtest it belongs to, for simulated trades.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backtest_id: Option<String> => TEXT,
    }
);
event_data!(
    /// `order.placed`
    OrderPlaced = "order.placed" {
        /// The order.
        order_id: String => NAME,
        /// Instrument.
        symbol: String => NAME,
        /// Buy or sell.
        side: Side => SIDE,
        /// Market, limit, stop or stop-limit.
        order_type: OrderType => ORDER_TYPE,
        /// Quantity, a positive decimal string.
        quantity: Decimal => POSITIVE,
        /// Limit price, for limit orders.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<Decimal> => POSITIVE,
    }
);
event_data!(
    /// `order.filled`
    OrderFilled = "order.filled" {
        /// The order.
        order_id: String => NAME,
        /// Instrument.
        symbol: String => NAME,
        /// Buy or sell.
        side: Side => SIDE,
        /// How much was filled.
        filled_quantity: Decimal => POSITIVE,
        /// Average fill price.
        average_price: Decimal => POSITIVE,
    }
);
event_data!(
    /// `order.cancelled`
    OrderCancelled = "order.cancelled" {
        /// The order.
        order_id: String => NAME,
        /// Why.
        reason: Option<String> => TEXT,
    }
);
event_data!(
    /// `position.updated`
    PositionUpdated = "position.updated" {
        /// Instrument.
        symbol: String => NAME,
        /// Signed quantity held (negative when short).
        quantity: Decimal => DECIMAL,
        /// Average entry price.
        average_price: Decimal => DECIMAL,
        /// Unrealised profit and loss.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unrealized_pnl: Option<Decimal> => DECIMAL,
        /// Realised profit and loss.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        realized_pnl: Option<Decimal> => DECIMAL,
    }
);
event_data!(
    /// `forge.job.started`
    ForgeJobStarted = "forge.job.started" {
        /// The job.
        job_id: String => NAME,
        /// What kind of job.
        kind: Option<String> => TEXT,
    }
);
event_data!(
    /// `forge.job.progress`
    ForgeJobProgress = "forge.job.progress" {
        /// The job.
        job_id: String => NAME,
        /// 0 to 100.
        percent: f64 => PERCENT,
        /// A line for humans.
        message: Option<String> => TEXT,
    }
);
event_data!(
    /// `forge.job.completed`
    ForgeJobCompleted = "forge.job.completed" {
        /// The job.
        job_id: String => NAME,
        /// Free-form result.
        result: Option<serde_json::Value> => ANY,
    }
);
event_data!(
    /// `forge.job.failed`
    ForgeJobFailed = "forge.job.failed" {
        /// The job.
        job_id: String => NAME,
        /// What went wrong.
        error: String => NAME,
        /// Whether running it again may succeed.
        retryable: Option<bool> => BOOL,
    }
);

macro_rules! catalogue {
    ($($variant:ident),* $(,)?) => {
        /// Every event type in the catalogue.
        pub const KNOWN_EVENT_TYPES: &[&str] = &[$(<$variant as EventData>::TYPE),*];

        /// The validation table of a catalogue event type's data; `None` for custom types.
        pub fn catalogue_fields(event_type: &str) -> Option<&'static [Field]> {
            // A loop over one static list: smaller WASM than a `match` over the strings.
            static CATALOGUE: &[(&str, &[Field])] =
                &[$((<$variant as EventData>::TYPE, <$variant as EventData>::FIELDS)),*];
            CATALOGUE
                .iter()
                .find(|(t, _)| *t == event_type)
                .map(|(_, fields)| *fields)
        }

        /// JSON Schema of every catalogue type's data, keyed by event type, plus the envelope:
        /// `{"envelope": …, "metadata": …, "events": {"backtest.progress": …, …}}`. Code
        /// generators for TypeScript and Python read this.
        pub fn catalogue_schema() -> serde_json::Value {
            let mut events = BTreeMap::new();
            $(events.insert(<$variant as EventData>::TYPE, serde_json::to_value(schemars::schema_for!($variant)).unwrap_or_default());)*
            serde_json::json!({
                "envelope": schemars::schema_for!(Event),
                "metadata": schemars::schema_for!(Metadata),
                "events": events,
            })
        }

        /// The old validation (serde's derive through `serde_path_to_error`, then checks),
        /// kept in tests as the oracle of the table-driven one; `None` for custom types.
        #[cfg(all(test, feature = "publish"))]
        pub(crate) fn oracle_validate(event_type: &str, data: &RawJson) -> Option<Result<(), ValidationError>> {
            match event_type {
                $(<$variant as EventData>::TYPE => Some(oracle::parse_data::<$variant>(data)),)*
                _ => None,
            }
        }
    };
}

catalogue!(
    StrategyGenerationStarted,
    StrategyGenerationProgress,
    StrategyGenerationCompleted,
    StrategyGenerationFailed,
    BacktestStarted,
    BacktestProgress,
    BacktestCompleted,
    BacktestFailed,
    TradeExecuted,
    OrderPlaced,
    OrderFilled,
    OrderCancelled,
    PositionUpdated,
    ForgeJobStarted,
    ForgeJobProgress,
    ForgeJobCompleted,
    ForgeJobFailed,
);

/// Makes event ids: 26 characters of Crockford base32 holding 48 bits of Unix
/// milliseconds and 80 random bits (the ULID layout), so ids sort by creation time.
#[derive(Debug, Clone)]
pub struct EventIdGenerator {
    rng: rand_pcg::Pcg64Mcg,
}

impl EventIdGenerator {
    /// A generator seeded by the driver (from the OS or `crypto.getRandomValues`).
    pub fn new(seed: u64) -> Self {
        Self {
            rng: rand_pcg::Pcg64Mcg::new(u128::from(seed) | 1 << 64),
        }
    }

    /// The next id, for an event created at `unix_ms`.
    pub fn next_id(&mut self, unix_ms: u64) -> String {
        use rand_core::Rng;
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let random = (u128::from(self.rng.next_u64()) << 16) ^ u128::from(self.rng.next_u32());
        let value: u128 =
            (u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
        (0..26)
            .rev()
            .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
            .collect()
    }
}

// The tests check validation, which comes with the `publish` feature (on by default).
#[cfg(all(test, feature = "publish"))]
mod tests {
    use super::*;

    #[test]
    fn raw_json_keeps_one_checked_value_and_is_verbatim_with_serde() {
        let raw = RawJson::from_string(" {\"a\": [1, 2.5e3, \"\\u00e9\"]}\n".into()).unwrap();
        assert_eq!(raw.get(), "{\"a\": [1, 2.5e3, \"\\u00e9\"]}");
        for bad in ["", "{", "1 2", "{\"a\":}", "nul", "[1,]"] {
            assert!(RawJson::from_string(bad.into()).is_err(), "{bad:?}");
        }
        // Written as is (spacing and number spelling kept), read back from any position.
        let e = Event {
            id: "e1".into(),
            event_type: "custom.x".into(),
            channel: ChannelName::new("backtest.a").unwrap(),
            data: raw.clone(),
            metadata: Metadata::default(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            text.contains(r#""data":{"a": [1, 2.5e3, "\u00e9"]}"#),
            "{text}"
        );
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back.data, raw);
        assert_eq!(back.to_json(), e.to_json());
    }

    fn event(event_type: &str, data: serde_json::Value) -> Event {
        Event::new(
            "e1",
            event_type,
            ChannelName::new("backtest.a").unwrap(),
            &data,
            Metadata::default(),
        )
    }

    #[test]
    fn valid_progress() {
        let e = event(
            "backtest.progress",
            serde_json::json!({"backtest_id": "a", "percent": 50}),
        );
        e.validate(DEFAULT_MAX_PAYLOAD_BYTES).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let e = event(
            "backtest.progress",
            serde_json::json!({"backtest_id": "a", "percent": 150}),
        );
        let err = e.validate(DEFAULT_MAX_PAYLOAD_BYTES).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.kind),
            ("data.percent", ValidationKind::OutOfRange)
        );
        let e = event("backtest.progress", serde_json::json!({"percent": 1}));
        let err = e.validate(DEFAULT_MAX_PAYLOAD_BYTES).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.kind),
            ("data.backtest_id", ValidationKind::Missing)
        );
        let e = event(
            "trade.executed",
            serde_json::json!({"trade_id": "t", "symbol": "X", "side": "buy", "quantity": 1, "price": "1"}),
        );
        let err = e.validate(DEFAULT_MAX_PAYLOAD_BYTES).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.kind),
            ("data.quantity", ValidationKind::WrongType)
        );
        let e = event("custom.thing", serde_json::json!({"x": "y".repeat(200)}));
        assert_eq!(e.validate(100).unwrap_err().kind, ValidationKind::TooLarge);
    }

    #[test]
    fn messages_say_what_is_accepted() {
        let message = |t: &str, data: &str| {
            Event::from_json_data(
                "e1",
                t,
                ChannelName::new("backtest.a").unwrap(),
                data.to_owned(),
                Metadata::default(),
            )
            .unwrap()
            .validate(DEFAULT_MAX_PAYLOAD_BYTES)
            .unwrap_err()
            .message
        };
        let p = "backtest.progress";
        for (t, data, want) in [
            (
                p,
                r#"{"backtest_id":"a","percnt":1}"#,
                "`percent` is required for `backtest.progress`",
            ),
            (
                p,
                r#"{"backtest_id":"a","percent":"50"}"#,
                "`percent` must be a number, not a string (in `backtest.progress` data)",
            ),
            (
                p,
                r#"{"backtest_id":"a","percent":100.5}"#,
                "`percent` is 100.5; it must be between 0 and 100",
            ),
            (
                p,
                r#"{"backtest_id":"a","percent":1,"total":-1}"#,
                "`total` is -1; it must be a whole number from 0 to 18446744073709551615 (in `backtest.progress` data)",
            ),
            (
                p,
                r#"{"backtest_id":" ","percent":1}"#,
                "`backtest_id` must not be empty",
            ),
            (
                p,
                r#"{"backtest_id":"a","percent":1e999}"#,
                "`percent` is 1e999, a number out of range (in `backtest.progress` data)",
            ),
            (
                p,
                r#"{"backtest_id":"a","backtest_id":"b","percent":1}"#,
                "duplicate field `backtest_id` (in `backtest.progress` data)",
            ),
            (
                "trade.executed",
                r#"{"trade_id":"t","symbol":"X","side":"hold","quantity":"1","price":"1"}"#,
                "`side` is `hold`; it must be one of `buy`, `sell` (in `trade.executed` data)",
            ),
            (
                "trade.executed",
                r#"{"trade_id":"t","symbol":"X","side":"buy","quantity":"1","price":"1e3"}"#,
                "`price` is `1e3`; decimals are strings like \"101.25\" (kept exact in every language)",
            ),
            (
                "trade.executed",
                r#"{"trade_id":"t","symbol":"X","side":"buy","quantity":"0","price":"1"}"#,
                "`quantity` is `0`; it must be greater than zero",
            ),
            (
                "backtest.started",
                r#"{"backtest_id":"b","strategy_id":"s","symbols":["A",7]}"#,
                "`symbols[1]` must be a string, not a number (in `backtest.started` data)",
            ),
            (
                "backtest.failed",
                r#"{"backtest_id":"b","error":"e","retryable":null,"x":1,"retryable":"no"}"#,
                "duplicate field `retryable` (in `backtest.failed` data)",
            ),
        ] {
            assert_eq!(message(t, data), want, "{data}");
        }
        let long = format!(r#"{{"backtest_id":"{}","percent":1}}"#, "b".repeat(130));
        assert_eq!(
            message(p, &long),
            "`data.backtest_id` is 130 bytes; at most 128"
        );
    }

    /// The tables agree with the JSON Schema of the Rust types (which the TypeScript and
    /// Python types are generated from): same fields, same required ones, same JSON types.
    #[test]
    fn tables_agree_with_the_schema() {
        let schema = catalogue_schema();
        for t in KNOWN_EVENT_TYPES {
            let fields = catalogue_fields(t).unwrap();
            assert!(
                fields.len() <= 64,
                "{t}: the shape walk's seen-mask holds 64 fields"
            );
            let s = &schema["events"][t];
            let props = s["properties"].as_object().unwrap();
            let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
            let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            keys.sort_unstable();
            assert_eq!(sorted, keys, "{t}");
            let required: Vec<&str> = s["required"]
                .as_array()
                .map(|r| r.iter().map(|v| v.as_str().unwrap()).collect())
                .unwrap_or_default();
            for f in fields {
                assert_eq!(f.required, required.contains(&f.name), "{t}.{}", f.name);
                let p = &props[f.name];
                // The JSON type, through a `$ref` (Decimal, Side, OrderType) when there is one.
                let target = p["$ref"]
                    .as_str()
                    .or_else(|| p["anyOf"][0]["$ref"].as_str())
                    .map(|r| &s["$defs"][r.rsplit('/').next().unwrap()])
                    .unwrap_or(p);
                let text = target.to_string();
                let want = match *f.kind {
                    Kind::Str | Kind::Name | Kind::Decimal { .. } | Kind::Enum(_) => "\"string\"",
                    Kind::Number(_) => "\"number\"",
                    Kind::UInt => "\"integer\"",
                    Kind::Bool => "\"boolean\"",
                    Kind::Array(_) => "\"array\"",
                    Kind::Object(_) => "\"object\"",
                    Kind::Any => "",
                };
                assert!(text.contains(want), "{t}.{}: {text}", f.name);
                if let Kind::Enum(names) = *f.kind {
                    for n in names {
                        assert!(text.contains(&format!("\"{n}\"")), "{t}.{}: {n}", f.name);
                    }
                }
                if let Kind::Decimal { .. } = *f.kind {
                    assert!(text.contains("pattern"), "{t}.{}: {text}", f.name);
                }
            }
        }
    }

    /// The field and kind of the first error, or `None` for valid.
    type Verdict = Option<(String, ValidationKind)>;

    /// What the old serde path and the table say about `data` for `event_type`: the field and
    /// kind of the first error, or valid.
    fn both(event_type: &str, data: &str) -> (Verdict, Verdict) {
        let e = Event::from_json_data(
            "e1",
            event_type,
            ChannelName::new("backtest.a").unwrap(),
            data.to_owned(),
            Metadata::default(),
        )
        .unwrap();
        let new = e
            .validate(DEFAULT_MAX_PAYLOAD_BYTES)
            .err()
            .map(|e| (e.field, e.kind));
        let old = oracle_validate(event_type, &e.data)
            .unwrap()
            .err()
            .map(|e| (e.field, e.kind));
        (old, new)
    }

    #[test]
    fn table_matches_the_serde_oracle_on_chosen_cases() {
        for (t, data) in [
            (
                "backtest.progress",
                r#"{"backtest_id":"a","percent":50,"percent":60}"#,
            ),
            (
                "backtest.progress",
                r#"{"percent":1e400,"backtest_id":"a"}"#,
            ),
            ("backtest.progress", r#"{"percent":-0,"backtest_id":"a"}"#),
            (
                "backtest.progress",
                r#"{"percent":-1e-400,"backtest_id":"a"}"#,
            ),
            (
                "backtest.progress",
                r#"{"percent":100.000000000000007,"backtest_id":"a"}"#,
            ),
            (
                "backtest.progress",
                r#"{"percent":1e2,"backtest_id":"a","processed":1.0}"#,
            ),
            (
                "backtest.progress",
                r#"{"percent":1,"backtest_id":"a","processed":-0}"#,
            ),
            (
                "backtest.progress",
                r#"{"percent":1,"backtest_id":"a","total":18446744073709551616}"#,
            ),
            (
                "backtest.progress",
                r#"{"percent":1,"backtest_id":"a","total":18446744073709551615}"#,
            ),
            ("backtest.progress", r#"{"percnt":1,"backtest_id":"a"}"#),
            ("backtest.progress", r#"{"percent":null,"backtest_id":"a"}"#),
            (
                "backtest.progress",
                r#"{"percent":5,"backtest_id":"a","message":null}"#,
            ),
            (
                "backtest.started",
                r#"{"backtest_id":"a","strategy_id":"s","symbols":["A",2]}"#,
            ),
            (
                "backtest.started",
                r#"{"backtest_id":"a","strategy_id":"s","symbols":[null]}"#,
            ),
            (
                "backtest.started",
                r#"{"backtest_id":"a","strategy_id":"s","symbols":"A"}"#,
            ),
            (
                "backtest.completed",
                r#"{"backtest_id":"a","sharpe_ratio":"1"}"#,
            ),
            (
                "backtest.completed",
                r#"{"backtest_id":"a","sharpe_ratio":-1e300,"total_return":"1."}"#,
            ),
            (
                "backtest.completed",
                r#"{"backtest_id":"a","max_drawdown":"0.1","total_return":"x"}"#,
            ),
            (
                "order.placed",
                r#"{"order_id":"o","symbol":"X","side":"buy","order_type":"iceberg","quantity":"1"}"#,
            ),
            (
                "order.placed",
                r#"{"order_id":"o","symbol":"X","side":"buy","order_type":"stop_limit","quantity":"1","price":"0"}"#,
            ),
            (
                "order.placed",
                r#"{"order_id":"o","symbol":"X","side":true,"order_type":"limit","quantity":"1"}"#,
            ),
            (
                "trade.executed",
                r#"{"trade_id":"t","symbol":"X","side":"buy","quantity":"1","price":"1","executed_at":"x"}"#,
            ),
            (
                "trade.executed",
                r#"{"trade_id":"t","symbol":"X","side":"buy","quantity":"1","price":"-1.5"}"#,
            ),
            (
                "position.updated",
                r#"{"symbol":"X","quantity":"-1","average_price":"1","realized_pnl":"1e3"}"#,
            ),
            (
                "forge.job.failed",
                r#"{"job_id":"j","error":"e","retryable":"yes"}"#,
            ),
            ("forge.job.completed", r#"{"job_id":"j","result":null}"#),
            (
                "strategy.generation.started",
                r#"{"generation_id":"g","parameters":[1,{"a":null}]}"#,
            ),
            ("order.cancelled", r#"{"order_id":"\u006f\u0020"}"#),
            ("order.cancelled", r#"{"order\u005fid":" "}"#),
        ] {
            let (old, new) = both(t, data);
            assert_eq!(old, new, "{t} {data}");
        }
        let long = format!(r#"{{"job_id":"{}","percent":1}}"#, "j".repeat(129));
        let (old, new) = both("forge.job.progress", &long);
        assert_eq!(old, new);
        assert_eq!(new.unwrap().1, ValidationKind::TooLong);
    }

    /// Every catalogue case of the shared vectors gets the same answer from the serde oracle.
    #[test]
    fn table_matches_the_serde_oracle_on_the_vectors() {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/vectors/events.json")).unwrap();
        let mut compared = 0;
        for case in file["cases"].as_array().unwrap() {
            let t = case["event"]["type"].as_str().unwrap_or("");
            if catalogue_fields(t).is_some() {
                let (old, new) = both(t, &case["event"]["data"].to_string());
                assert_eq!(old, new, "{}", case["name"]);
                compared += 1;
            }
        }
        assert!(compared > 30, "{compared}");
    }

    mod oracle_props {
        use super::*;
        use proptest::prelude::*;

        /// Values of every JSON type, near the edges the tables check. Numbers stay within
        /// what serde_json's float parser (not correctly rounded, without its
        /// `float_roundtrip` feature) and the table's exact comparison agree on.
        const VALUES: &[&str] = &[
            "\"a\"",
            "\"\"",
            "\" \"",
            "\"1.5\"",
            "\"-3\"",
            "\"0.00\"",
            "\"1e3\"",
            "\"1.\"",
            "\".5\"",
            "\"--1\"",
            "\"buy\"",
            "\"sell\"",
            "\"hold\"",
            "\"limit\"",
            "\"stop_limit\"",
            "0",
            "-0",
            "1",
            "50",
            "100",
            "100.0",
            "100.5",
            "-1",
            "-0.0",
            "1e2",
            "1.5e1",
            "2.5",
            "18446744073709551615",
            "18446744073709551616",
            "1e400",
            "-1e400",
            "1e-5",
            "true",
            "false",
            "null",
            "[]",
            "[\"A\"]",
            "[\"A\",1]",
            "[null]",
            "{}",
            "{\"x\":[1]}",
        ];

        fn case() -> impl Strategy<Value = (&'static str, String)> {
            let types = proptest::sample::select(KNOWN_EVENT_TYPES);
            (
                types,
                proptest::collection::vec((0usize..64, 0usize..VALUES.len(), 0u8..10), 0..9),
            )
                .prop_map(|(t, picks)| {
                    let fields = catalogue_fields(t).unwrap();
                    let mut members = Vec::new();
                    for (f, v, how) in picks {
                        let name = if how == 0 {
                            "extra"
                        } else {
                            fields[f % fields.len()].name
                        };
                        let mut value = VALUES[v];
                        // Any-typed fields: serde_json::Value cannot hold 1e400 (the table lets
                        // any JSON through there).
                        if *fields[f % fields.len()].kind == Kind::Any && value.contains("e400") {
                            value = "1";
                        }
                        members.push(format!("\"{name}\":{value}"));
                    }
                    (t, format!("{{{}}}", members.join(",")))
                })
        }

        /// Mostly valid data: every required field with a good value, then a few changes.
        fn near_valid() -> impl Strategy<Value = (&'static str, String)> {
            let types = proptest::sample::select(KNOWN_EVENT_TYPES);
            (
                types,
                proptest::collection::vec((0usize..64, 0usize..VALUES.len()), 0..3),
                any::<bool>(),
            )
                .prop_map(|(t, changes, reverse)| {
                    let fields = catalogue_fields(t).unwrap();
                    let good = |k: &Kind| match k {
                        Kind::Name | Kind::Str => "\"n\"",
                        Kind::Decimal { .. } => "\"1.5\"",
                        Kind::Number(_) => "42",
                        Kind::UInt => "7",
                        Kind::Bool => "true",
                        Kind::Enum(n) => {
                            if n.contains(&"buy") {
                                "\"sell\""
                            } else {
                                "\"limit\""
                            }
                        }
                        Kind::Array(_) => "[\"A\"]",
                        _ => "{}",
                    };
                    let mut members: Vec<(&str, &str)> = fields
                        .iter()
                        .filter(|f| f.required)
                        .map(|f| (f.name, good(f.kind)))
                        .collect();
                    for (f, v) in changes {
                        let field = &fields[f % fields.len()];
                        let value = if *field.kind == Kind::Any && VALUES[v].contains("e400") {
                            "1"
                        } else {
                            VALUES[v]
                        };
                        match members.iter_mut().find(|(n, _)| *n == field.name) {
                            Some(m) => m.1 = value,
                            None => members.push((field.name, value)),
                        }
                    }
                    if reverse {
                        members.reverse();
                    }
                    let body: Vec<String> = members
                        .iter()
                        .map(|(n, v)| format!("\"{n}\":{v}"))
                        .collect();
                    (t, format!("{{{}}}", body.join(",")))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn table_matches_the_serde_oracle((t, data) in case()) {
                let (old, new) = both(t, &data);
                prop_assert_eq!(old, new, "{} {}", t, data);
            }

            #[test]
            fn table_matches_the_serde_oracle_near_valid((t, data) in near_valid()) {
                let (old, new) = both(t, &data);
                prop_assert_eq!(old, new, "{} {}", t, data);
            }
        }
    }

    #[test]
    fn ids_sort_by_time() {
        let mut g = EventIdGenerator::new(7);
        let a = g.next_id(1_000);
        let b = g.next_id(2_000);
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert_ne!(g.next_id(2_000), b);
        check_id("id", &a).unwrap();
    }

    #[test]
    fn schema_lists_every_type() {
        let schema = catalogue_schema();
        for t in KNOWN_EVENT_TYPES {
            assert!(schema["events"][t].is_object(), "{t}");
        }
    }
}
