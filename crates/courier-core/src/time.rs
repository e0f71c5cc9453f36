//! One clock vocabulary for every target.
//!
//! The core never reads a clock: drivers pass `now` in. `Instant` is
//! `std::time::Instant` natively; on wasm32, where the standard one panics, it is this
//! module's own: the host's `performance.now()` (browsers, web workers, Node) through one
//! wasm-bindgen import, with the part of `std::time::Instant`'s API the SDKs use. (The
//! `web-time` crate did the same with js-sys, whose global-object lookup and closures cost
//! about 1 KB gzip of WASM more.) Wall-clock time (for HTTP-dates) is passed as
//! [`std::time::SystemTime`], which is a plain value on every target.

pub use core::time::Duration;
#[cfg(not(target_arch = "wasm32"))]
pub use std::time::Instant;
pub use std::time::{SystemTime, UNIX_EPOCH};
#[cfg(target_arch = "wasm32")]
pub use wasm::Instant;

/// Milliseconds in a [`Duration`], saturating at `u64::MAX`, for the wire and the bindings.
pub fn as_millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use core::ops::{Add, AddAssign, Sub, SubAssign};

    use super::Duration;
    use wasm_bindgen::prelude::wasm_bindgen;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = performance, js_name = now)]
        fn performance_now() -> f64;
    }

    /// A monotonic instant: the time since the host's time origin (`performance.now()`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct Instant(Duration);

    impl Instant {
        /// Now, from `performance.now()` (microsecond resolution at best, in whole
        /// nanoseconds).
        pub fn now() -> Self {
            // `as` saturates: a NaN or negative reading is the origin.
            Self(Duration::from_nanos(
                (performance_now() * 1_000_000.0) as u64,
            ))
        }

        /// The time from `earlier` to `self`; zero when `earlier` is later (like std's).
        pub fn duration_since(&self, earlier: Self) -> Duration {
            self.saturating_duration_since(earlier)
        }

        /// The time from `earlier` to `self`, or `None` when `earlier` is later.
        pub fn checked_duration_since(&self, earlier: Self) -> Option<Duration> {
            self.0.checked_sub(earlier.0)
        }

        /// The time from `earlier` to `self`; zero when `earlier` is later.
        pub fn saturating_duration_since(&self, earlier: Self) -> Duration {
            self.0.saturating_sub(earlier.0)
        }

        /// The time since `self`.
        pub fn elapsed(&self) -> Duration {
            Self::now().saturating_duration_since(*self)
        }

        /// `self + d`, or `None` when it does not fit.
        pub fn checked_add(&self, d: Duration) -> Option<Self> {
            self.0.checked_add(d).map(Self)
        }

        /// `self - d`, or `None` before the time origin.
        pub fn checked_sub(&self, d: Duration) -> Option<Self> {
            self.0.checked_sub(d).map(Self)
        }
    }

    impl Add<Duration> for Instant {
        type Output = Self;
        fn add(self, d: Duration) -> Self {
            self.checked_add(d)
                .expect("overflow when adding a duration to an instant")
        }
    }

    impl AddAssign<Duration> for Instant {
        fn add_assign(&mut self, d: Duration) {
            *self = *self + d;
        }
    }

    impl Sub<Duration> for Instant {
        type Output = Self;
        fn sub(self, d: Duration) -> Self {
            self.checked_sub(d)
                .expect("overflow when subtracting a duration from an instant")
        }
    }

    impl SubAssign<Duration> for Instant {
        fn sub_assign(&mut self, d: Duration) {
            *self = *self - d;
        }
    }

    impl Sub<Instant> for Instant {
        type Output = Duration;
        fn sub(self, earlier: Self) -> Duration {
            self.saturating_duration_since(earlier)
        }
    }
}
