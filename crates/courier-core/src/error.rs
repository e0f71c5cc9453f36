//! Errors, grouped by who is at fault, and the wire error codes.
//!
//! - [`ValidationError`]: the caller gave bad input (fix the input).
//! - [`FrameError`]: the peer sent bytes that are not protocol v1 (a bug or an attack).
//! - [`Refusal`]: the server understood and said no; it may carry a delay.
//! - [`UsageError`]: the API was used in a way that cannot work (queue full, closed).
//! - [`Error::Transport`]: the network failed; retried by the core where that is safe.
//!
//! Every code, on the wire or local, has one [`ErrorCategory`] (what the application can do
//! about it) and a `retryable` flag, decided here for every SDK: each binding picks its
//! exception class from the category (`tests/vectors/errors.json` lists the classes, and each
//! language's test checks its own against it).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::json::{self, JsonError, Reader, Seen};
use crate::time::{Duration, as_millis_u64};

/// Machine-readable error codes carried by `error` frames and HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum ErrorCode {
    /// Too many requests: wait `retry_after_ms` before trying again.
    RateLimitExceeded,
    /// A connection limit (total, per user, per channel) is reached; see `limit_type`.
    ConnectionLimitExceeded,
    /// The token is missing, malformed, badly signed or uses the wrong algorithm.
    Unauthorized,
    /// The token was valid but has expired: get a new one and send `refresh` or reconnect.
    TokenExpired,
    /// The token does not grant this channel.
    ForbiddenChannel,
    /// The event failed validation; see `field`.
    InvalidEvent,
    /// The event or frame is larger than the server accepts.
    PayloadTooLarge,
    /// The frame's `op` is not one this server knows.
    UnknownOp,
    /// The frame is not valid JSON or lacks a required field.
    BadRequest,
    /// No `connect` frame arrived within the server's deadline.
    AuthTimeout,
    /// The client read too slowly and its outbound queue filled up.
    SlowConsumer,
    /// The server is shutting down; reconnect elsewhere or later.
    ShuttingDown,
    /// The server is temporarily unable to serve (a dependency is down).
    Unavailable,
    /// The server failed; nothing the client did was wrong.
    Internal,
    /// A history cursor or position belongs to an epoch the server's history no longer has
    /// (its history was lost): start again from a fresh query.
    EpochChanged,
    /// A code this version of the core does not know yet.
    #[serde(other)]
    Unknown,
}

/// What the application can do about an error; every binding picks its exception class
/// from this (one class per category, named the same in every language).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCategory {
    /// The caller's input is invalid: fix it; sending it again fails the same way.
    Validation,
    /// The credentials were refused (missing, malformed, expired): get a new token.
    Authentication,
    /// The credentials are good but do not grant this: ask for a token that does.
    Authorization,
    /// A rate or connection limit was hit: wait (`retry_after_ms` when given) and retry.
    RateLimited,
    /// The connection failed, stalled or broke the protocol: the client reconnects by itself.
    Connection,
    /// The server could not serve right now: it is retried after the delay.
    Server,
    /// The API was used in a way that cannot work (closed client, full queue, timeout).
    Usage,
    /// A code this version of the core does not know.
    Unknown,
}

impl ErrorCategory {
    /// Every category, in declaration order.
    pub const ALL: [ErrorCategory; 8] = [
        ErrorCategory::Validation,
        ErrorCategory::Authentication,
        ErrorCategory::Authorization,
        ErrorCategory::RateLimited,
        ErrorCategory::Connection,
        ErrorCategory::Server,
        ErrorCategory::Usage,
        ErrorCategory::Unknown,
    ];

    /// The spelling the bindings and `errors.json` use, e.g. `rate_limited`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Validation => "validation",
            ErrorCategory::Authentication => "authentication",
            ErrorCategory::Authorization => "authorization",
            ErrorCategory::RateLimited => "rate_limited",
            ErrorCategory::Connection => "connection",
            ErrorCategory::Server => "server",
            ErrorCategory::Usage => "usage",
            ErrorCategory::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorCode {
    /// Every code this version knows, [`ErrorCode::Unknown`] last.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::RateLimitExceeded,
        ErrorCode::ConnectionLimitExceeded,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::ForbiddenChannel,
        ErrorCode::InvalidEvent,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnknownOp,
        ErrorCode::BadRequest,
        ErrorCode::AuthTimeout,
        ErrorCode::SlowConsumer,
        ErrorCode::ShuttingDown,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::EpochChanged,
        ErrorCode::Unknown,
    ];

    /// The wire spelling, e.g. `RATE_LIMIT_EXCEEDED`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::ConnectionLimitExceeded => "CONNECTION_LIMIT_EXCEEDED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::ForbiddenChannel => "FORBIDDEN_CHANNEL",
            ErrorCode::InvalidEvent => "INVALID_EVENT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnknownOp => "UNKNOWN_OP",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::AuthTimeout => "AUTH_TIMEOUT",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::EpochChanged => "EPOCH_CHANGED",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The code for a wire spelling; codes this version does not know are [`ErrorCode::Unknown`].
    pub fn from_wire(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| *c != ErrorCode::Unknown && c.as_str() == s)
            .unwrap_or(ErrorCode::Unknown)
    }

    /// What the application can do about this code.
    ///
    /// The table follows what the client does (docs/protocol.md, error and close codes):
    /// `AUTH_TIMEOUT` and `SLOW_CONSUMER` are [`ErrorCategory::Connection`] because the client
    /// reconnects by itself (close 4004, 4008) and the token is not at fault, unlike
    /// `UNAUTHORIZED`; `UNKNOWN_OP` and `BAD_REQUEST` mean the frames broke protocol v1, as a
    /// local [`FrameError`] does; `CONNECTION_LIMIT_EXCEEDED` is a limit like a rate limit,
    /// with or without a delay.
    pub fn category(self) -> ErrorCategory {
        match self {
            ErrorCode::RateLimitExceeded | ErrorCode::ConnectionLimitExceeded => {
                ErrorCategory::RateLimited
            }
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => ErrorCategory::Authentication,
            ErrorCode::ForbiddenChannel => ErrorCategory::Authorization,
            ErrorCode::InvalidEvent | ErrorCode::PayloadTooLarge | ErrorCode::EpochChanged => {
                ErrorCategory::Validation
            }
            ErrorCode::UnknownOp
            | ErrorCode::BadRequest
            | ErrorCode::AuthTimeout
            | ErrorCode::SlowConsumer => ErrorCategory::Connection,
            ErrorCode::ShuttingDown | ErrorCode::Unavailable | ErrorCode::Internal => {
                ErrorCategory::Server
            }
            ErrorCode::Unknown => ErrorCategory::Unknown,
        }
    }

    /// Whether a request refused with this code may be sent again unchanged (after any delay).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimitExceeded
                | ErrorCode::ShuttingDown
                | ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::SlowConsumer
        )
    }

    /// The HTTP status the reference server answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::RateLimitExceeded | ErrorCode::ConnectionLimitExceeded => 429,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::AuthTimeout => 401,
            ErrorCode::ForbiddenChannel => 403,
            ErrorCode::InvalidEvent | ErrorCode::BadRequest | ErrorCode::UnknownOp => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::EpochChanged => 409,
            ErrorCode::ShuttingDown | ErrorCode::Unavailable | ErrorCode::SlowConsumer => 503,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was wrong with a validated value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ValidationKind {
    /// A required field is absent or empty.
    Missing,
    /// A number is outside its allowed range.
    OutOfRange,
    /// A string is longer than allowed.
    TooLong,
    /// The whole payload is larger than allowed.
    TooLarge,
    /// A string does not follow its grammar.
    BadFormat,
    /// A value has the wrong JSON type.
    WrongType,
}

/// Bad input from the caller: which field, what kind of problem, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("invalid `{field}`: {message}")]
pub struct ValidationError {
    /// The field at fault, as a dotted path (`data.percent`, `channel`).
    pub field: String,
    /// The kind of problem.
    pub kind: ValidationKind,
    /// A sentence saying what was wrong and what is accepted.
    pub message: String,
}

impl ValidationError {
    /// A new validation error.
    pub fn new(field: impl Into<String>, kind: ValidationKind, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind,
            message: message.into(),
        }
    }

    /// The same error with `prefix.` prepended to its field path.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }

    /// The wire code for this error (payload size has its own).
    pub fn code(&self) -> ErrorCode {
        if self.kind == ValidationKind::TooLarge {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::InvalidEvent
        }
    }
}

/// Bytes from the peer that are not a valid protocol v1 frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is larger than the configured limit.
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a JSON object, or JSON followed by trailing junk.
    #[error("frame is not a single JSON object: {0}")]
    Malformed(String),
    /// The object has no string `op`.
    #[error("frame has no `op` field")]
    MissingOp,
    /// The `op` is not one of protocol v1's.
    #[error("unknown op `{0}`")]
    UnknownOp(String),
    /// The `op` is known but a field is missing or of the wrong type.
    #[error("invalid `{op}` frame: {detail}")]
    Invalid {
        /// The frame's op.
        op: String,
        /// What was wrong.
        detail: String,
    },
}

impl FrameError {
    /// The wire code a server answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            FrameError::UnknownOp(_) => ErrorCode::UnknownOp,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// The server understood a request and refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// The machine-readable reason.
    pub code: ErrorCode,
    /// The server's explanation.
    pub message: String,
    /// How long to wait before trying again, when the server said.
    pub retry_after: Option<Duration>,
    /// The field at fault, for validation refusals.
    pub field: Option<String>,
    /// Which connection limit was hit, for `CONNECTION_LIMIT_EXCEEDED`.
    pub limit_type: Option<String>,
    /// The HTTP status, when the refusal came over HTTP.
    pub status: Option<u16>,
}

impl Refusal {
    /// A refusal with just a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            field: None,
            limit_type: None,
            status: None,
        }
    }
}

/// The API was used in a way that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The publish queue holds as many events as it may; retry after some are acknowledged.
    #[error("publish queue is full ({capacity} events); await flush() or raise max_queued")]
    QueueFull {
        /// The queue's bound.
        capacity: usize,
    },
    /// The client was closed; create a new one.
    #[error("client is closed")]
    Closed,
    /// An operation gave up after its deadline.
    #[error("timed out after {} ms", as_millis_u64(*.0))]
    Timeout(Duration),
    /// The same channel is already subscribed on this connection.
    #[error("channel `{0}` is already subscribed")]
    AlreadySubscribed(String),
}

/// Every error the core reports, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller gave bad input.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The API was misused.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The server refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The peer sent something that is not protocol v1.
    #[error(transparent)]
    Protocol(#[from] FrameError),
    /// The network failed.
    #[error("transport failed: {0}")]
    Transport(String),
}

impl Error {
    /// The wire-style code for this error, for bindings that expose one string.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid(e) => e.code().as_str(),
            Error::Usage(UsageError::QueueFull { .. }) => "QUEUE_FULL",
            Error::Usage(UsageError::Closed) => "CLOSED",
            Error::Usage(UsageError::Timeout(_)) => "TIMEOUT",
            Error::Usage(UsageError::AlreadySubscribed(_)) => "ALREADY_SUBSCRIBED",
            Error::Refused(r) => r.code.as_str(),
            Error::Protocol(_) => "PROTOCOL_ERROR",
            Error::Transport(_) => "TRANSPORT",
        }
    }

    /// What the application can do about this error (see [`ErrorCode::category`]).
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Invalid(_) => ErrorCategory::Validation,
            Error::Usage(_) => ErrorCategory::Usage,
            Error::Refused(r) => r.code.category(),
            Error::Protocol(_) | Error::Transport(_) => ErrorCategory::Connection,
        }
    }

    /// Whether the same request may succeed if sent again unchanged, later: a retryable
    /// refusal ([`ErrorCode::is_retryable`]), a network failure, or a full queue (once some
    /// events are acknowledged). A timeout is not: the operation may still complete.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Refused(r) => r.code.is_retryable(),
            Error::Transport(_) | Error::Usage(UsageError::QueueFull { .. }) => true,
            Error::Invalid(_) | Error::Usage(_) | Error::Protocol(_) => false,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Refused(r) => r.retry_after,
            _ => None,
        }
    }
}

/// The error as it travels: `{"code","message","field"?,"retry_after_ms"?,"limit_type"?}`.
///
/// One wire struct for every error body: a rejected event inside a batch result
/// ([`BatchItemResult`](crate::wire::BatchItemResult)), the body of a whole-request error
/// status (wrapped in an [`ErrorResponse`]), and the payload of an `error` frame
/// ([`ErrorFrame`](crate::frame::ErrorFrame) adds the request `id`). Its code carries the
/// core's [`category`](Self::category) and [`retryable`](Self::is_retryable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The reason, e.g. `INVALID_EVENT`; unknown codes read as [`ErrorCode::Unknown`].
    pub code: ErrorCode,
    /// A sentence for humans.
    pub message: String,
    /// The field at fault as a dotted path (`data.percent`), for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// How long to wait before trying again, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Which limit was reached: the bucket that refused a publish
    /// (`RATE_LIMIT_EXCEEDED`: `user`, `type:deposit`, `fallback`, …), or the connection
    /// limit (`total`, `user`, `channel`) for `CONNECTION_LIMIT_EXCEEDED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_type: Option<String>,
}

impl ErrorBody {
    /// What the application can do about it (the code's [`ErrorCategory`]).
    pub fn category(&self) -> ErrorCategory {
        self.code.category()
    }

    /// Whether the refused request may be sent again unchanged (the code's).
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }

    /// An error with just a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after_ms: None,
            limit_type: None,
        }
    }

    /// The same error as a core [`Refusal`], with the HTTP status it came with.
    pub fn to_refusal(&self, status: Option<u16>) -> Refusal {
        Refusal {
            code: self.code,
            message: self.message.clone(),
            retry_after: self.retry_after_ms.map(Duration::from_millis),
            field: self.field.clone(),
            limit_type: self.limit_type.clone(),
            status,
        }
    }
}

impl From<&ValidationError> for ErrorBody {
    fn from(e: &ValidationError) -> Self {
        Self {
            code: e.code(),
            message: e.message.clone(),
            field: Some(e.field.clone()),
            retry_after_ms: None,
            limit_type: None,
        }
    }
}

impl From<&Refusal> for ErrorBody {
    fn from(r: &Refusal) -> Self {
        Self {
            code: r.code,
            message: r.message.clone(),
            field: r.field.clone(),
            retry_after_ms: r.retry_after.map(as_millis_u64),
            limit_type: r.limit_type.clone(),
        }
    }
}

impl ErrorBody {
    /// Reads `{"code","message",…}`; unknown codes read as [`ErrorCode::Unknown`].
    pub fn read_json(r: &mut Reader<'_>) -> Result<Self, JsonError> {
        let (mut code, mut message, mut field, mut retry_after_ms, mut limit_type) =
            (None, None, None, None, None);
        let mut seen = Seen::default();
        r.object(|r, key| match key {
            "code" => seen.read(0, r, key, &mut code, |r| {
                Ok(Some(ErrorCode::from_wire(&r.string()?)))
            }),
            "message" => seen.read(1, r, key, &mut message, |r| r.owned().map(Some)),
            "field" => seen.read(2, r, key, &mut field, |r| r.opt(Reader::owned)),
            "retry_after_ms" => seen.read(3, r, key, &mut retry_after_ms, |r| r.opt(Reader::u64)),
            "limit_type" => seen.read(4, r, key, &mut limit_type, |r| r.opt(Reader::owned)),
            _ => r.skip_value().map(drop),
        })?;
        Ok(Self {
            code: json::required(code, r, "code")?,
            message: json::required(message, r, "message")?,
            field,
            retry_after_ms,
            limit_type,
        })
    }
}

impl ErrorBody {
    /// Appends the error object (the same text serde writes).
    pub fn write_json(&self, out: &mut String) {
        json::Obj::new(out)
            .str("code", self.code.as_str())
            .str("message", &self.message)
            .opt_str("field", self.field.as_deref())
            .opt_u64("retry_after_ms", self.retry_after_ms)
            .opt_str("limit_type", self.limit_type.as_deref())
            .end();
    }
}

impl ErrorResponse {
    /// Reads `{"error":{…}}`.
    pub fn from_json(text: &str) -> Result<Self, JsonError> {
        let mut r = Reader::new(text);
        let mut error = None;
        let mut seen = Seen::default();
        r.object(|r, key| match key {
            "error" => seen.read(0, r, key, &mut error, |r| ErrorBody::read_json(r).map(Some)),
            _ => r.skip_value().map(drop),
        })?;
        r.end()?;
        Ok(Self {
            error: json::required(error, &r, "error")?,
        })
    }
}

/// Body of a whole-request error status (400, 401, 403, 413, 429, 5xx):
/// `{"error":{"code","message","field"?,"retry_after_ms"?,"limit_type"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations print as whole milliseconds: `Duration`'s `Debug` pulls float-style
    /// formatting (~1 KB gzip of WASM) into every build that prints an error.
    #[test]
    fn timeout_prints_integer_milliseconds() {
        let e = UsageError::Timeout(Duration::from_micros(1_500_700));
        assert_eq!(e.to_string(), "timed out after 1500 ms");
    }
}
