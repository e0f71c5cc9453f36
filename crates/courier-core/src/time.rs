//! One clock vocabulary for every target.
//!
//! The core never reads a clock: drivers pass `now` in. `Instant` is
//! `std::time::Instant` natively and `web_time::Instant` on wasm32, where the standard
//! one panics. Wall-clock time (for HTTP-dates) is passed as [`std::time::SystemTime`],
//! which is a plain value on every target.

pub use core::time::Duration;
#[cfg(not(target_arch = "wasm32"))]
pub use std::time::Instant;
pub use std::time::{SystemTime, UNIX_EPOCH};
#[cfg(target_arch = "wasm32")]
pub use web_time::Instant;

/// Milliseconds in a [`Duration`], saturating at `u64::MAX`, for the wire and the bindings.
pub fn as_millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
