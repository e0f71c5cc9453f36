//! Reconnect and retry delays: exponential backoff with jitter.
//!
//! Two schedules are offered (see the AWS Architecture Blog, "Exponential Backoff And
//! Jitter"):
//!
//! - [`Jitter::Full`] (the default): attempt `n` (counting from 0) waits
//!   `U(0, min(max, base·2ⁿ))`, then raised to the floor `min`.
//! - [`Jitter::Decorrelated`]: each delay is `min(max, U(base, prev·3))`, raised to the floor
//!   `min`, where `prev` is the previous delay (`base` before the first one).
//!
//! All arithmetic is on whole milliseconds and saturates, so no attempt count or
//! configuration can overflow. When `min_delay_ms > max_delay_ms`, `max_delay_ms` wins:
//! every delay lies in `[min(min_delay, max_delay), max_delay]`.
//!
//! The randomness comes from a [`Pcg64Mcg`] owned by the [`Backoff`] and seeded from a
//! `u64`, so the same seed gives the same schedule on every target (the shared vectors in
//! `tests/vectors/backoff.json` pin it). Drivers pass a random seed; tests pass a fixed one
//! or set [`BackoffConfig::seed`].
//!
//! A connection that stayed up for at least `healthy_after_ms` resets the schedule
//! ([`Backoff::note_connection_lasted`]), so a flapping server does not get hammered while
//! a long-lived connection that drops once reconnects quickly.

use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// How a [`Backoff`] randomises its delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// `U(0, min(max, base·2ⁿ))`, floored at `min`.
    #[default]
    Full,
    /// `min(max, U(base, prev·3))`, floored at `min`.
    Decorrelated,
}

/// Configuration of a [`Backoff`]; every field has a default, so `{}` is a valid config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackoffConfig {
    /// Floor of every delay, in milliseconds (default 100).
    pub min_delay_ms: u64,
    /// Base delay, in milliseconds (default 500).
    pub base_delay_ms: u64,
    /// Ceiling of every delay, in milliseconds (default 20 000).
    pub max_delay_ms: u64,
    /// The jitter strategy (default [`Jitter::Full`]).
    pub jitter: Jitter,
    /// A connection that lasted at least this long resets the schedule (default 10 000).
    pub healthy_after_ms: u64,
    /// A fixed RNG seed; when `None`, the seed given to [`Backoff::new`] is used.
    pub seed: Option<u64>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 100,
            base_delay_ms: 500,
            max_delay_ms: 20_000,
            jitter: Jitter::Full,
            healthy_after_ms: 10_000,
            seed: None,
        }
    }
}

/// A backoff schedule: call [`next_delay`](Backoff::next_delay) before each retry.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    rng: Pcg64Mcg,
    attempts: u32,
    /// The previous delay in milliseconds, for [`Jitter::Decorrelated`].
    prev_ms: u64,
}

impl Backoff {
    /// A fresh schedule. `seed` is used unless `config.seed` is set.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        let rng = Pcg64Mcg::seed_from_u64(config.seed.unwrap_or(seed));
        let prev_ms = config.base_delay_ms;
        Self {
            config,
            rng,
            attempts: 0,
            prev_ms,
        }
    }

    /// The delay before the next attempt; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let c = &self.config;
        let max = c.max_delay_ms;
        let floor = c.min_delay_ms.min(max);
        let ms = match c.jitter {
            Jitter::Full => {
                let factor = 1u64.checked_shl(self.attempts).unwrap_or(u64::MAX);
                let ceiling = c.base_delay_ms.saturating_mul(factor).min(max);
                uniform(&mut self.rng, 0, ceiling)
            }
            Jitter::Decorrelated => {
                let lo = c.base_delay_ms;
                let hi = self.prev_ms.saturating_mul(3).max(lo);
                uniform(&mut self.rng, lo, hi).min(max)
            }
        }
        .max(floor);
        self.prev_ms = ms;
        self.attempts = self.attempts.saturating_add(1);
        Duration::from_millis(ms)
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts the schedule over (the RNG is not reseeded).
    pub fn reset(&mut self) {
        self.attempts = 0;
        self.prev_ms = self.config.base_delay_ms;
    }

    /// Tells the schedule how long the last connection stayed up; resets it when that was
    /// at least `healthy_after_ms`.
    pub fn note_connection_lasted(&mut self, lasted: Duration) {
        if lasted >= Duration::from_millis(self.config.healthy_after_ms) {
            self.reset();
        }
    }

    /// The configuration this schedule was built with.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }
}

/// A uniform integer in `lo..=hi` (`lo` when `hi < lo`), without modulo bias.
///
/// Lemire's widening-multiply method; the exact sequence of RNG draws is part of the
/// cross-language contract (the backoff vectors depend on it).
pub(crate) fn uniform(rng: &mut impl Rng, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    let span = hi - lo;
    if span == u64::MAX {
        return rng.next_u64();
    }
    let range = span + 1;
    // Reject the low products that would make some outputs more likely than others.
    let threshold = range.wrapping_neg() % range;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(range);
        // Truncation intended: the low 64 bits of the product.
        let low = m as u64;
        if low >= threshold {
            // The high 64 bits are < range, so this fits.
            return lo + (m >> 64) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter: Jitter) -> BackoffConfig {
        BackoffConfig {
            jitter,
            ..BackoffConfig::default()
        }
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = BackoffConfig::default();
        assert_eq!(
            (
                c.min_delay_ms,
                c.base_delay_ms,
                c.max_delay_ms,
                c.healthy_after_ms
            ),
            (100, 500, 20_000, 10_000)
        );
        assert_eq!(c.jitter, Jitter::Full);
        let parsed: BackoffConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, c);
        let parsed: BackoffConfig =
            serde_json::from_str(r#"{"jitter":"decorrelated","max_delay_ms":7}"#).unwrap();
        assert_eq!(parsed.jitter, Jitter::Decorrelated);
        assert_eq!(parsed.max_delay_ms, 7);
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling() {
        let mut b = Backoff::new(cfg(Jitter::Full), 7);
        for n in 0..40u32 {
            let d = b.next_delay().as_millis() as u64;
            let ceiling = 500u64.saturating_mul(1u64.checked_shl(n).unwrap_or(u64::MAX));
            assert!(d >= 100 && d <= ceiling.min(20_000), "attempt {n}: {d}");
        }
        assert_eq!(b.attempts(), 40);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(cfg(Jitter::Full), 1);
        b.attempts = u32::MAX - 1;
        for _ in 0..3 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(20_000));
        }
        assert_eq!(b.attempts(), u32::MAX);
        let mut c = cfg(Jitter::Full);
        c.base_delay_ms = u64::MAX;
        c.max_delay_ms = u64::MAX;
        let mut b = Backoff::new(c, 1);
        for _ in 0..70 {
            b.next_delay();
        }
    }

    #[test]
    fn decorrelated_stays_in_bounds_and_grows() {
        let mut b = Backoff::new(cfg(Jitter::Decorrelated), 3);
        let mut last = 0;
        for _ in 0..50 {
            let d = b.next_delay().as_millis() as u64;
            assert!((500..=20_000).contains(&d), "{d}");
            last = d;
        }
        // After 50 draws the schedule has reached the ceiling region.
        assert!(last > 1_000);
    }

    #[test]
    fn same_seed_same_schedule_and_config_seed_wins() {
        let run = |c: BackoffConfig, seed| {
            let mut b = Backoff::new(c, seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(cfg(Jitter::Full), 9), run(cfg(Jitter::Full), 9));
        assert_ne!(run(cfg(Jitter::Full), 9), run(cfg(Jitter::Full), 10));
        let mut seeded = cfg(Jitter::Full);
        seeded.seed = Some(9);
        assert_eq!(run(seeded, 12345), run(cfg(Jitter::Full), 9));
    }

    #[test]
    fn healthy_connection_resets_short_one_does_not() {
        let mut b = Backoff::new(cfg(Jitter::Decorrelated), 5);
        b.next_delay();
        b.next_delay();
        b.note_connection_lasted(Duration::from_millis(9_999));
        assert_eq!(b.attempts(), 2);
        b.note_connection_lasted(Duration::from_millis(10_000));
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.prev_ms, 500);
    }

    #[test]
    fn inverted_min_max_and_zero_base() {
        let c = BackoffConfig {
            min_delay_ms: 1_000,
            max_delay_ms: 200,
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(c, 1);
        for _ in 0..10 {
            assert_eq!(b.next_delay(), Duration::from_millis(200));
        }
        for jitter in [Jitter::Full, Jitter::Decorrelated] {
            let c = BackoffConfig {
                base_delay_ms: 0,
                jitter,
                ..BackoffConfig::default()
            };
            let mut b = Backoff::new(c, 1);
            for _ in 0..10 {
                let d = b.next_delay();
                assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(20_000));
            }
        }
    }

    #[test]
    fn uniform_edges() {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        assert_eq!(uniform(&mut rng, 5, 5), 5);
        assert_eq!(uniform(&mut rng, 9, 3), 9);
        for _ in 0..1000 {
            let v = uniform(&mut rng, 10, 12);
            assert!((10..=12).contains(&v));
        }
        uniform(&mut rng, 0, u64::MAX);
        let mut seen = [false; 3];
        for _ in 0..100 {
            seen[(uniform(&mut rng, 0, 2)) as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
