//! A retry budget: a token bucket that every retry draws from.
//!
//! Why: per-request retries multiply load exactly when the server can least take it. If
//! every one of N clients retries each failed request 3 times, an overloaded server sees up
//! to 4× its normal traffic and never recovers (a retry storm). A budget caps retries as a
//! whole instead of per request: each retry costs one token, tokens come back slowly with
//! time (`refill_per_sec`) and a little with each success (`deposit_per_success`), and the
//! bucket never holds more than `capacity`. When the bucket is empty the caller gives up
//! (or waits for its normal backoff) instead of retrying, so retries stay a bounded
//! fraction of the traffic however bad things get. First requests never need a token.
//! (The same idea as gRPC's retry throttling and Finagle's `RetryBudget`.)
//!
//! The bucket starts full. Values that make no sense (NaN, negative) are treated as 0;
//! `f64::INFINITY` capacity or refill mean "no budget". A capacity below 1 never allows a
//! retry.

use serde::{Deserialize, Serialize};

use crate::time::{Duration, Instant};

/// Configuration of a [`RetryBudget`]; every field has a default, so `{}` is valid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryBudgetConfig {
    /// Most tokens the bucket holds, and what it starts with (default 10).
    pub capacity: f64,
    /// Tokens added per second (default 1).
    pub refill_per_sec: f64,
    /// Tokens added by each success (default 0.1).
    pub deposit_per_success: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            capacity: 10.0,
            refill_per_sec: 1.0,
            deposit_per_success: 0.1,
        }
    }
}

/// A token bucket limiting retries (see the module docs).
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    tokens: f64,
    last: Instant,
}

impl RetryBudget {
    /// A full budget at `now`.
    pub fn new(config: RetryBudgetConfig, now: Instant) -> Self {
        let config = RetryBudgetConfig {
            capacity: sanitize(config.capacity),
            refill_per_sec: sanitize(config.refill_per_sec),
            deposit_per_success: sanitize(config.deposit_per_success),
        };
        Self {
            tokens: config.capacity,
            config,
            last: now,
        }
    }

    /// Takes one token for a retry; `false` (and nothing taken) when fewer than one is left.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Records a success, which earns back `deposit_per_success` tokens.
    pub fn deposit_success(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = self.clamp(self.tokens + self.config.deposit_per_success);
    }

    /// Tokens available at `now`, between 0 and `capacity`.
    pub fn available(&self, now: Instant) -> f64 {
        self.clamp(self.tokens + self.earned(now))
    }

    /// The sanitized configuration in force.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.available(now);
        // Time never runs backwards for the bucket: an earlier `now` earns nothing.
        self.last = self.last.max(now);
    }

    fn earned(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed == Duration::ZERO {
            0.0
        } else {
            elapsed.as_secs_f64() * self.config.refill_per_sec
        }
    }

    fn clamp(&self, tokens: f64) -> f64 {
        // `min` before `max`: NaN can only come from ∞ − ∞, and `f64::min` drops NaN.
        tokens.min(self.config.capacity).max(0.0)
    }
}

fn sanitize(x: f64) -> f64 {
    if x > 0.0 { x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn starts_full_and_empties() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default(), t0);
        assert_eq!(b.available(t0), 10.0);
        for _ in 0..10 {
            assert!(b.try_withdraw(t0));
        }
        assert!(!b.try_withdraw(t0));
        assert_eq!(b.available(t0), 0.0);
    }

    #[test]
    fn refills_with_time_and_successes_up_to_capacity() {
        let t0 = Instant::now();
        let cfg = RetryBudgetConfig {
            capacity: 2.0,
            refill_per_sec: 0.5,
            deposit_per_success: 0.25,
        };
        let mut b = RetryBudget::new(cfg, t0);
        assert!(b.try_withdraw(t0) && b.try_withdraw(t0));
        assert!(!b.try_withdraw(t0 + secs(1.9)));
        assert!(b.try_withdraw(t0 + secs(2.0)));
        for _ in 0..4 {
            b.deposit_success(t0 + secs(2.0));
        }
        assert!((b.available(t0 + secs(2.0)) - 1.0).abs() < 1e-9);
        assert_eq!(b.available(t0 + secs(100.0)), 2.0);
        for _ in 0..100 {
            b.deposit_success(t0 + secs(100.0));
        }
        assert_eq!(b.available(t0 + secs(100.0)), 2.0);
    }

    #[test]
    fn earlier_now_earns_nothing() {
        let t0 = Instant::now() + secs(10.0);
        let cfg = RetryBudgetConfig {
            capacity: 1.0,
            ..RetryBudgetConfig::default()
        };
        let mut b = RetryBudget::new(cfg, t0);
        assert!(b.try_withdraw(t0));
        assert!(!b.try_withdraw(t0 - secs(5.0)));
        assert!(!b.try_withdraw(t0 + secs(0.5)));
        assert!(b.try_withdraw(t0 + secs(1.0)));
    }

    #[test]
    fn nonsense_configs_are_safe() {
        let t0 = Instant::now();
        let cfg = RetryBudgetConfig {
            capacity: f64::NAN,
            refill_per_sec: -3.0,
            deposit_per_success: f64::NAN,
        };
        let mut b = RetryBudget::new(cfg, t0);
        assert!(!b.try_withdraw(t0 + secs(1.0)));
        b.deposit_success(t0);
        assert_eq!(b.available(t0), 0.0);
        let cfg = RetryBudgetConfig {
            capacity: f64::INFINITY,
            refill_per_sec: f64::INFINITY,
            deposit_per_success: f64::INFINITY,
        };
        let mut b = RetryBudget::new(cfg, t0);
        for i in 0..10 {
            assert!(b.try_withdraw(t0 + secs(f64::from(i))));
            b.deposit_success(t0 + secs(f64::from(i)));
            assert!(!b.available(t0).is_nan());
        }
        let parsed: RetryBudgetConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, RetryBudgetConfig::default());
    }
}
