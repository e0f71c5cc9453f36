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
//! - The Rust types below are the single source of truth: [`catalogue_schema`] exports them
//!   as JSON Schema, from which the TypeScript and Python types are generated.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::channel::ChannelName;
use crate::error::{ValidationError, ValidationKind};
use crate::json::{self, JsonError, Obj, Reader, Seen};

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
    /// When the event was created, in Unix milliseconds; 0 lets the server stamp it.
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
        r.object(|r, key| match key {
            "timestamp" => seen.read(0, r, key, &mut m.timestamp, Reader::u64),
            "source" => seen.read(1, r, key, &mut m.source, Reader::owned),
            "correlation_id" => {
                seen.read(2, r, key, &mut m.correlation_id, |r| r.opt(Reader::owned))
            }
            "user_id" => seen.read(3, r, key, &mut m.user_id, |r| r.opt(Reader::owned)),
            _ => r.skip_value().map(drop),
        })?;
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
        r.object(|r, key| match key {
            "id" => seen.read(0, r, key, &mut id, |r| r.owned().map(Some)),
            "type" => seen.read(1, r, key, &mut event_type, |r| r.owned().map(Some)),
            "channel" => seen.read(2, r, key, &mut channel, |r| read_channel(r).map(Some)),
            "data" => seen.read(3, r, key, &mut data, |r| {
                Ok(Some(RawJson::from_checked(r.skip_value()?)))
            }),
            "metadata" => seen.read(4, r, key, &mut metadata, |r| {
                Metadata::read_json(r).map(Some)
            }),
            _ => r.skip_value().map(drop),
        })?;
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

    /// Checks the envelope and, for catalogue types, the data shape.
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
        #[cfg(feature = "catalogue-validation")]
        let known = KnownEvent::parse(&self.event_type, &self.data)
            .transpose()?
            .is_some();
        #[cfg(not(feature = "catalogue-validation"))]
        let known = is_known_object(&self.event_type, &self.data)?;
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

    /// The data parsed into its catalogue type; `None` for custom types.
    #[cfg(feature = "catalogue-validation")]
    pub fn typed(&self) -> Option<Result<KnownEvent, ValidationError>> {
        KnownEvent::parse(&self.event_type, &self.data)
    }
}

/// Without typed validation: whether `event_type` is a catalogue type, whose data must then
/// at least be a JSON object (the server checks the rest and names the field).
#[cfg(not(feature = "catalogue-validation"))]
fn is_known_object(event_type: &str, data: &RawJson) -> Result<bool, ValidationError> {
    if !KNOWN_EVENT_TYPES.contains(&event_type) {
        return Ok(false);
    }
    if !data.get().trim_start().starts_with('{') {
        return Err(ValidationError::new(
            "data",
            ValidationKind::WrongType,
            format!("data of `{event_type}` must be a JSON object"),
        ));
    }
    Ok(true)
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

fn required(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        Err(ValidationError::new(
            format!("data.{field}"),
            ValidationKind::Missing,
            format!("`{field}` must not be empty"),
        ))
    } else {
        check_optional_text(&format!("data.{field}"), Some(value))
    }
}

fn percent(field: &str, value: f64) -> Result<(), ValidationError> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::new(
            format!("data.{field}"),
            ValidationKind::OutOfRange,
            format!("`{field}` is {value}; it must be between 0 and 100"),
        ))
    }
}

/// An exact decimal number carried as a string, e.g. `"101.25"` or `"-3"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Decimal(#[schemars(regex(pattern = r"^-?[0-9]+(\.[0-9]+)?$"))] pub String);

impl Decimal {
    fn check(&self, field: &str) -> Result<(), ValidationError> {
        let s = self.0.strip_prefix('-').unwrap_or(&self.0);
        let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if digits(int) && digits(frac) && self.0.len() <= 64 {
            Ok(())
        } else {
            Err(ValidationError::new(
                format!("data.{field}"),
                ValidationKind::BadFormat,
                format!(
                    "`{field}` is `{}`; decimals are strings like \"101.25\" (kept exact in every language)",
                    self.0
                ),
            ))
        }
    }

    fn check_positive(&self, field: &str) -> Result<(), ValidationError> {
        self.check(field)?;
        if self.0.starts_with('-') || self.0.bytes().all(|b| b == b'0' || b == b'.') {
            return Err(ValidationError::new(
                format!("data.{field}"),
                ValidationKind::OutOfRange,
                format!("`{field}` is `{}`; it must be greater than zero", self.0),
            ));
        }
        Ok(())
    }
}

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

/// Data of a catalogue event: deserialised from `data`, then checked for ranges.
pub trait EventData: DeserializeOwned + Serialize + JsonSchema {
    /// The event type this data belongs to.
    const TYPE: &'static str;
    /// Range and content checks beyond the shape.
    fn check(&self) -> Result<(), ValidationError>;
}

macro_rules! data_struct {
    ($(#[$doc:meta])* $name:ident = $ty:literal { $($(#[$fdoc:meta])* $field:ident : $fty:ty),* $(,)? } check($this:ident) $check:block) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        pub struct $name {
            // Option fields may be absent (and are then not required in the schema); every
            // other field is required.
            $($(#[$fdoc])* pub $field: $fty,)*
        }
        impl EventData for $name {
            const TYPE: &'static str = $ty;
            fn check(&self) -> Result<(), ValidationError> {
                let $this = self;
                $check
            }
        }
    };
}

data_struct!(
    /// `strategy.generation.started`
    StrategyGenerationStarted = "strategy.generation.started" {
        /// The generation run.
        generation_id: String,
        /// A human name for what is being generated.
        strategy_name: Option<String>,
        /// Free-form parameters.
        parameters: Option<serde_json::Value>,
    } check(s) { required("generation_id", &s.generation_id) }
);
data_struct!(
    /// `strategy.generation.progress`
    StrategyGenerationProgress = "strategy.generation.progress" {
        /// The generation run.
        generation_id: String,
        /// 0 to 100.
        percent: f64,
        /// The current stage.
        stage: Option<String>,
        /// A line for humans.
        message: Option<String>,
    } check(s) { required("generation_id", &s.generation_id)?; percent("percent", s.percent) }
);
data_struct!(
    /// `strategy.generation.completed`
    StrategyGenerationCompleted = "strategy.generation.completed" {
        /// The generation run.
        generation_id: String,
        /// The strategy it produced.
        strategy_id: String,
        /// How long it took.
        duration_ms: Option<u64>,
    } check(s) { required("generation_id", &s.generation_id)?; required("strategy_id", &s.strategy_id) }
);
data_struct!(
    /// `strategy.generation.failed`
    StrategyGenerationFailed = "strategy.generation.failed" {
        /// The generation run.
        generation_id: String,
        /// What went wrong.
        error: String,
        /// Whether running it again may succeed.
        retryable: Option<bool>,
    } check(s) { required("generation_id", &s.generation_id)?; required("error", &s.error) }
);
data_struct!(
    /// `backtest.started`
    BacktestStarted = "backtest.started" {
        /// The backtest.
        backtest_id: String,
        /// The strategy under test.
        strategy_id: String,
        /// Instruments covered.
        symbols: Option<Vec<String>>,
        /// Start of the tested period (ISO 8601 date).
        start_date: Option<String>,
        /// End of the tested period (ISO 8601 date).
        end_date: Option<String>,
    } check(s) { required("backtest_id", &s.backtest_id)?; required("strategy_id", &s.strategy_id) }
);
data_struct!(
    /// `backtest.progress`
    BacktestProgress = "backtest.progress" {
        /// The backtest.
        backtest_id: String,
        /// 0 to 100.
        percent: f64,
        /// Bars or days processed so far.
        processed: Option<u64>,
        /// Bars or days in all.
        total: Option<u64>,
        /// A line for humans.
        message: Option<String>,
    } check(s) { required("backtest_id", &s.backtest_id)?; percent("percent", s.percent) }
);
data_struct!(
    /// `backtest.completed`
    BacktestCompleted = "backtest.completed" {
        /// The backtest.
        backtest_id: String,
        /// Total return as a decimal fraction, e.g. `"0.125"` for 12.5 %.
        total_return: Option<Decimal>,
        /// Sharpe ratio.
        sharpe_ratio: Option<f64>,
        /// Maximum drawdown as a decimal fraction.
        max_drawdown: Option<Decimal>,
        /// Number of trades.
        trades: Option<u64>,
        /// How long it took.
        duration_ms: Option<u64>,
    } check(s) {
        required("backtest_id", &s.backtest_id)?;
        if let Some(d) = &s.total_return { d.check("total_return")?; }
        if let Some(d) = &s.max_drawdown { d.check("max_drawdown")?; }
        Ok(())
    }
);
data_struct!(
    /// `backtest.failed`
    BacktestFailed = "backtest.failed" {
        /// The backtest.
        backtest_id: String,
        /// What went wrong.
        error: String,
        /// Whether running it again may succeed.
        retryable: Option<bool>,
    } check(s) { required("backtest_id", &s.backtest_id)?; required("error", &s.error) }
);

/// `trade.executed`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TradeExecuted {
    /// The trade.
    pub trade_id: String,
    /// Instrument.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity, a positive decimal string.
    pub quantity: Decimal,
    /// Price, a positive decimal string.
    pub price: Decimal,
    /// When it executed, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_at: Option<u64>,
    /// The order it filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The backtest it belongs to, for simulated trades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtest_id: Option<String>,
}
impl EventData for TradeExecuted {
    const TYPE: &'static str = "trade.executed";
    fn check(&self) -> Result<(), ValidationError> {
        required("trade_id", &self.trade_id)?;
        required("symbol", &self.symbol)?;
        self.quantity.check_positive("quantity")?;
        self.price.check_positive("price")
    }
}

/// `order.placed`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: String,
    /// Instrument.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Market, limit, stop or stop-limit.
    pub order_type: OrderType,
    /// Quantity, a positive decimal string.
    pub quantity: Decimal,
    /// Limit price, for limit orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
}
impl EventData for OrderPlaced {
    const TYPE: &'static str = "order.placed";
    fn check(&self) -> Result<(), ValidationError> {
        required("order_id", &self.order_id)?;
        required("symbol", &self.symbol)?;
        self.quantity.check_positive("quantity")?;
        if let Some(p) = &self.price {
            p.check_positive("price")?;
        }
        Ok(())
    }
}

/// `order.filled`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderFilled {
    /// The order.
    pub order_id: String,
    /// Instrument.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// How much was filled.
    pub filled_quantity: Decimal,
    /// Average fill price.
    pub average_price: Decimal,
}
impl EventData for OrderFilled {
    const TYPE: &'static str = "order.filled";
    fn check(&self) -> Result<(), ValidationError> {
        required("order_id", &self.order_id)?;
        required("symbol", &self.symbol)?;
        self.filled_quantity.check_positive("filled_quantity")?;
        self.average_price.check_positive("average_price")
    }
}

data_struct!(
    /// `order.cancelled`
    OrderCancelled = "order.cancelled" {
        /// The order.
        order_id: String,
        /// Why.
        reason: Option<String>,
    } check(s) { required("order_id", &s.order_id) }
);

/// `position.updated`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PositionUpdated {
    /// Instrument.
    pub symbol: String,
    /// Signed quantity held (negative when short).
    pub quantity: Decimal,
    /// Average entry price.
    pub average_price: Decimal,
    /// Unrealised profit and loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrealized_pnl: Option<Decimal>,
    /// Realised profit and loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realized_pnl: Option<Decimal>,
}
impl EventData for PositionUpdated {
    const TYPE: &'static str = "position.updated";
    fn check(&self) -> Result<(), ValidationError> {
        required("symbol", &self.symbol)?;
        self.quantity.check("quantity")?;
        self.average_price.check("average_price")?;
        if let Some(d) = &self.unrealized_pnl {
            d.check("unrealized_pnl")?;
        }
        if let Some(d) = &self.realized_pnl {
            d.check("realized_pnl")?;
        }
        Ok(())
    }
}

data_struct!(
    /// `forge.job.started`
    ForgeJobStarted = "forge.job.started" {
        /// The job.
        job_id: String,
        /// What kind of job.
        kind: Option<String>,
    } check(s) { required("job_id", &s.job_id) }
);
data_struct!(
    /// `forge.job.progress`
    ForgeJobProgress = "forge.job.progress" {
        /// The job.
        job_id: String,
        /// 0 to 100.
        percent: f64,
        /// A line for humans.
        message: Option<String>,
    } check(s) { required("job_id", &s.job_id)?; percent("percent", s.percent) }
);
data_struct!(
    /// `forge.job.completed`
    ForgeJobCompleted = "forge.job.completed" {
        /// The job.
        job_id: String,
        /// Free-form result.
        result: Option<serde_json::Value>,
    } check(s) { required("job_id", &s.job_id) }
);
data_struct!(
    /// `forge.job.failed`
    ForgeJobFailed = "forge.job.failed" {
        /// The job.
        job_id: String,
        /// What went wrong.
        error: String,
        /// Whether running it again may succeed.
        retryable: Option<bool>,
    } check(s) { required("job_id", &s.job_id)?; required("error", &s.error) }
);

#[cfg(feature = "catalogue-validation")]
fn parse_data<T: EventData>(data: &RawJson) -> Result<T, ValidationError> {
    if !data.get().trim_start().starts_with('{') {
        return Err(ValidationError::new(
            "data",
            ValidationKind::WrongType,
            format!("data of `{}` must be a JSON object", T::TYPE),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(data.get());
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        let msg = text.split(" at line ").next().unwrap_or(&text).to_owned();
        if let Some(rest) = msg.strip_prefix("missing field `") {
            let field = rest.trim_end_matches('`');
            let full = if path == "." {
                format!("data.{field}")
            } else {
                format!("data.{path}.{field}")
            };
            return ValidationError::new(
                full,
                ValidationKind::Missing,
                format!("`{field}` is required for `{}`", T::TYPE),
            );
        }
        let field = if path == "." {
            "data".to_owned()
        } else {
            format!("data.{path}")
        };
        ValidationError::new(
            field,
            ValidationKind::WrongType,
            format!("{msg} (in `{}` data)", T::TYPE),
        )
    })?;
    value.check()?;
    Ok(value)
}

macro_rules! catalogue {
    ($($variant:ident),* $(,)?) => {
        /// The data of an event from the catalogue, parsed.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        #[non_exhaustive]
        pub enum KnownEvent {
            $(
                #[doc = concat!("See [`", stringify!($variant), "`].")]
                $variant($variant),
            )*
        }

        /// Every event type in the catalogue.
        pub const KNOWN_EVENT_TYPES: &[&str] = &[$(<$variant as EventData>::TYPE),*];

        impl KnownEvent {
            /// Parses `data` for a catalogue `event_type`; `None` for custom types.
            #[cfg(feature = "catalogue-validation")]
            pub fn parse(event_type: &str, data: &RawJson) -> Option<Result<Self, ValidationError>> {
                match event_type {
                    $(<$variant as EventData>::TYPE => Some(parse_data::<$variant>(data).map(KnownEvent::$variant)),)*
                    _ => None,
                }
            }

            /// This event's type.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(KnownEvent::$variant(_) => <$variant as EventData>::TYPE,)*
                }
            }
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

#[cfg(test)]
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

    #[cfg(feature = "catalogue-validation")]
    #[test]
    fn valid_progress() {
        let e = event(
            "backtest.progress",
            serde_json::json!({"backtest_id": "a", "percent": 50}),
        );
        e.validate(DEFAULT_MAX_PAYLOAD_BYTES).unwrap();
        assert!(matches!(
            e.typed(),
            Some(Ok(KnownEvent::BacktestProgress(_)))
        ));
    }

    #[cfg(feature = "catalogue-validation")]
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
