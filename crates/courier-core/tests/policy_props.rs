//! Property tests of the policy modules: backoff bounds, the GCRA admission bound, the
//! retry budget's range, and header parsing that never panics.

use courier_core::backoff::{Backoff, BackoffConfig, Jitter};
use courier_core::gcra::Gcra;
use courier_core::rate_limit::parse_rate_limit_headers;
use courier_core::retry_after::parse_retry_after;
use courier_core::retry_budget::{RetryBudget, RetryBudgetConfig};
use courier_core::time::{Duration, Instant, UNIX_EPOCH};
use proptest::prelude::*;

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![Just(Jitter::Full), Just(Jitter::Decorrelated)]
}

/// Millisecond values from tiny to absurd, so saturation paths are exercised too.
fn millis() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..100, 0u64..100_000, any::<u64>()]
}

proptest! {
    /// Every delay lies in `[min(min_delay, max_delay), max_delay]`, whatever the config,
    /// seed, number of attempts and resets; full jitter also stays under `base·2ⁿ`
    /// (or the floor).
    #[test]
    fn backoff_delays_stay_within_bounds(
        min in millis(), base in millis(), max in millis(), jitter in jitter(),
        healthy in millis(), seed in any::<u64>(),
        // Each entry: how many delays to draw, then how long the connection lasted.
        rounds in prop::collection::vec((0usize..80, millis()), 1..6),
    ) {
        let config = BackoffConfig {
            min_delay_ms: min, base_delay_ms: base, max_delay_ms: max, jitter,
            healthy_after_ms: healthy, seed: None,
        };
        let floor = min.min(max);
        let mut b = Backoff::new(config, seed);
        for (draws, lasted) in rounds {
            for _ in 0..draws {
                let n = b.attempts();
                let d = u64::try_from(b.next_delay().as_millis()).unwrap();
                prop_assert!(d >= floor && d <= max, "{d} outside [{floor}, {max}]");
                if jitter == Jitter::Full {
                    let ceiling = base.saturating_mul(1u64.checked_shl(n).unwrap_or(u64::MAX));
                    prop_assert!(d <= ceiling.min(max).max(floor));
                }
                prop_assert_eq!(b.attempts(), n.saturating_add(1));
            }
            b.note_connection_lasted(Duration::from_millis(lasted));
            if lasted >= healthy {
                prop_assert_eq!(b.attempts(), 0);
            }
        }
    }

    /// The GCRA bound, with `T = ceil(window/quota)` and `b = max(burst, 1)`: for any two
    /// admitted requests `i < j` at `tᵢ ≤ tⱼ`, `j − i + 1 ≤ b + (tⱼ − tᵢ)/T`. Consequently
    /// at most `quota + b − 1` requests are admitted within any `[t, t + window)` and at
    /// most `quota + b` within any closed `[t, t + window]` (both checked directly). Also: a refusal's wait equals `wait_time`, and
    /// `wait_time` is zero exactly when a request is admitted.
    #[test]
    fn gcra_never_admits_more_than_the_bound(
        quota in 1u64..20, window_ms in 1u64..5_000, burst in 0u64..10,
        gaps in prop::collection::vec(0u64..400, 1..250),
    ) {
        let origin = Instant::now();
        let window = Duration::from_millis(window_ms);
        let mut g = Gcra::new(quota, window, burst);
        let b = burst.max(1);
        let t_nanos = window.as_nanos().div_ceil(u128::from(quota));
        prop_assert_eq!(g.emission_interval().as_nanos(), t_nanos);

        let mut now = 0u64;
        let mut admitted = Vec::new();
        for gap in gaps {
            now += gap;
            let at = origin + Duration::from_millis(now);
            let expected_wait = g.wait_time(at);
            match g.check(at) {
                Ok(()) => {
                    prop_assert_eq!(expected_wait, Duration::ZERO);
                    admitted.push(now);
                }
                Err(wait) => {
                    prop_assert!(wait > Duration::ZERO);
                    prop_assert_eq!(wait, expected_wait);
                }
            }
        }
        for i in 0..admitted.len() {
            for j in i..admitted.len() {
                let count = (j - i + 1) as u128;
                let elapsed = u128::from(admitted[j] - admitted[i]) * 1_000_000;
                // count ≤ b + elapsed/T  ⇔  (count − b)·T ≤ elapsed
                prop_assert!(
                    count <= u128::from(b) || (count - u128::from(b)) * t_nanos <= elapsed,
                    "{count} admitted within {elapsed} ns (T = {t_nanos} ns, b = {b})"
                );
            }
            let from = |t: &u64| t - admitted[i];
            let half_open = admitted[i..].iter().take_while(|t| from(t) < window_ms).count();
            prop_assert!((half_open as u64) < quota + b, "{half_open} in [t, t + W)");
            let closed = admitted[i..].iter().take_while(|t| from(t) <= window_ms).count();
            prop_assert!(closed as u64 <= quota + b, "{closed} in [t, t + W]");
        }
    }

    /// After a refusal, waiting exactly the returned time is enough.
    #[test]
    fn gcra_waiting_the_returned_time_is_enough(
        quota in 1u64..50, window_ms in 1u64..10_000, burst in 1u64..5, n in 1usize..60,
    ) {
        let origin = Instant::now();
        let mut g = Gcra::new(quota, Duration::from_millis(window_ms), burst);
        let mut at = origin;
        for _ in 0..n {
            if let Err(wait) = g.check(at) {
                at += wait;
                prop_assert_eq!(g.check(at), Ok(()));
            }
        }
    }

    /// The budget never holds fewer than 0 or more than `capacity` tokens, and a withdrawal
    /// succeeds exactly when at least one token is available.
    #[test]
    fn retry_budget_stays_in_range(
        capacity in 0.0f64..50.0, refill in 0.0f64..10.0, deposit in 0.0f64..2.0,
        // (advance ms, op): op 0 = withdraw, 1 = deposit, 2 = only look.
        ops in prop::collection::vec((0u64..3_000, 0u8..3), 1..200),
    ) {
        let origin = Instant::now();
        let cfg = RetryBudgetConfig { capacity, refill_per_sec: refill, deposit_per_success: deposit };
        let mut budget = RetryBudget::new(cfg, origin);
        let mut t = 0u64;
        for (advance, op) in ops {
            t += advance;
            let now = origin + Duration::from_millis(t);
            let before = budget.available(now);
            prop_assert!((0.0..=capacity).contains(&before), "{before} outside [0, {capacity}]");
            match op {
                0 => prop_assert_eq!(budget.try_withdraw(now), before >= 1.0),
                1 => budget.deposit_success(now),
                _ => {}
            }
            let after = budget.available(now);
            prop_assert!((0.0..=capacity).contains(&after), "{after} outside [0, {capacity}]");
        }
    }

    /// Arbitrary header names and values never make the parsers panic, and every delay
    /// they return respects the cap.
    #[test]
    fn header_parsing_never_panics(
        headers in prop::collection::vec((header_name(), header_value()), 0..8),
        wall_ms in 0u64..(1 << 45), cap_ms in millis(),
    ) {
        let wall_now = UNIX_EPOCH + Duration::from_millis(wall_ms);
        let cap = Duration::from_millis(cap_ms);
        let info = parse_rate_limit_headers(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())), wall_now, cap);
        prop_assert!(info.reset.is_none_or(|d| d <= cap));
        prop_assert!(info.retry_after.is_none_or(|d| d <= cap));
        prop_assert!(info.wait().is_none_or(|d| d <= cap));
        if let Some(p) = info.policy {
            prop_assert!(p.quota > 0 && !p.window.is_zero());
        }
        prop_assert_eq!(info.is_empty(), info == Default::default());
        for (_, v) in &headers {
            let d = parse_retry_after(v, wall_now, cap);
            prop_assert!(d.is_none_or(|d| d <= cap));
        }
    }
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "Retry-After",
            "retry-after",
            "X-RateLimit-Limit",
            "x-ratelimit-remaining",
            "X-RateLimit-Reset",
            "RateLimit",
            "ratelimit",
            "RateLimit-Policy",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ])
        .prop_map(String::from),
        "\\PC{0,20}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        // Anything at all, including control characters and multi-byte text.
        ".{0,40}",
        // Digits, separators and quotes: the shapes the parsers actually branch on.
        "[0-9 .,;=\"\\\\a-z-]{0,40}",
        // Plausible structured fields with random numbers.
        "(\"[a-z,]{0,5}\"|[0-9]{1,25})(;[qwrt]=-?[0-9.]{0,22}){0,3}(, ?\"[a-z]{0,3}\";r=[0-9]{1,3};t=[0-9]{1,12})?",
        "(limit|remaining|reset)=[0-9]{0,21}(, ?(limit|remaining|reset)=[0-9]{0,12}){0,2}",
        // HTTP-date shapes, valid or nearly so.
        "(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] (Jan|Feb|Oct|Dec) [0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT",
    ]
}
