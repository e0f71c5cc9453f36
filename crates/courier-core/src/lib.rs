//! Sans-IO core of the Courier SDKs.
//!
//! Everything that decides how a Courier client behaves lives here, once, for every
//! language: typed events and their validation, the protocol v1 frames and codec, channel
//! names, error codes and the close-code table, reconnect backoff with jitter, Retry-After
//! and rate-limit header parsing, the client-side GCRA and the per-bucket limiter built on it, the retry budget, the connection
//! state machine with resume, the publish queue, and the HTTP wire format (`wire`).
//!
//! Nothing in this crate reads a clock, sleeps, spawns or touches a socket (the model is
//! quinn-proto). Drivers feed inputs through `handle_*(…, now)` methods, drain outputs with
//! `poll_*()` methods, and ask `poll_timeout()` when to call `handle_timeout(now)` next.
//! Every SDK drives one type, [`client::Client`], which owns the connection state machine,
//! the publish queue and everything they share (token, stamping, listeners, stats); the
//! behaviour it fixes for all languages is tabled in `docs/behaviour.md`.
//! The drivers are `courier-client` (tokio), `courier-wasm` (browsers and Node) and, through
//! `courier-client`, the Python package.
//!
//! # Features
//!
//! - `publish` (default): the publishing half: `queue`, the modules only it uses (`wire`,
//!   `limits`, `gcra`, `retry_budget`, `rate_limit`, `retry_after`), catalogue
//!   validation (`Event::validate`, `shape::validate`) and `Client::publish` with its outputs.
//!   Without it [`Client`] subscribes only (the subscriber-only WASM build); its
//!   [`ClientStats`] keeps every field, the publishing ones at zero.
//! - `conformance` (default, implies `publish`): `conformance::evaluate` for the shared vectors.
//! - `openapi`: `utoipa::ToSchema` on the wire types.

pub mod backoff;
pub mod channel;
pub mod client;
pub mod close;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod connection;
pub mod error;
pub mod event;
pub mod frame;
#[cfg(feature = "publish")]
pub mod gcra;
pub mod history;
#[cfg(feature = "publish")]
pub mod limits;
pub use courier_json as json;
#[cfg(feature = "publish")]
pub mod queue;
#[cfg(feature = "publish")]
pub mod rate_limit;
#[cfg(feature = "publish")]
pub mod retry_after;
#[cfg(feature = "publish")]
pub mod retry_budget;
pub mod shape;
pub mod time;
mod vec_map;
#[cfg(feature = "publish")]
pub mod wire;

pub use channel::{ChannelName, ChannelPattern};
pub use client::{Client, ClientConfig, ClientStats, Endpoints, ListenerId};
#[cfg(feature = "publish")]
pub use client::{EventOptions, PublishItem};
pub use error::{
    Error, ErrorBody, ErrorCategory, ErrorCode, ErrorResponse, FrameError, Refusal, UsageError,
    ValidationError, ValidationKind,
};
pub use event::{Event, Metadata, RawJson};
pub use frame::{ClientFrame, Delivery, ErrorFrame, Limits, ServerFrame, StreamPosition};
#[cfg(feature = "publish")]
pub use queue::{Priority, PublishOptions, PublishQueue, PublishResult, QueueConfig};
pub use time::{Duration, Instant};

/// The protocol version this crate speaks; sent by clients and servers in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;
