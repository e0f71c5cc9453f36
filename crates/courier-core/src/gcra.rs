//! Client-side Generic Cell Rate Algorithm: pre-throttle requests so the server is not hit
//! just to be told no.
//!
//! # The algorithm
//!
//! A quota of `q` requests per window `W` gives the *emission interval* `T = W / q`
//! (rounded **up** to the nanosecond, so the bound below holds exactly). `burst` (`b ≥ 1`)
//! is how many requests may go back to back from idle; it sets the *tolerance*
//! `τ = (b − 1)·T`. The only state is the *theoretical arrival time* `TAT`, when the next
//! request would be due if requests were perfectly spaced:
//!
//! - a request at `t` is admitted iff `TAT − τ ≤ t` (with no history it always is);
//! - admitting it sets `TAT ← max(TAT, t) + T`; a refused request changes nothing and is
//!   told to wait `TAT − τ − t`.
//!
//! **Bound.** Each admission raises `TAT` by at least `T`. If `N` requests are admitted at
//! `t₁ ≤ … ≤ t_N`, then just before the last one `TAT ≥ t₁ + (N−1)·T`, and admitting it
//! needs `TAT − τ ≤ t_N`, so `(N−1)·T ≤ (t_N − t₁) + τ`, that is
//! `N ≤ b + (t_N − t₁)/T`. Since `W ≤ q·T`: **within any window `[a, a + W)` at most
//! `q + b − 1` requests are admitted, and within a closed `[a, a + W]` at most `q + b`**
//! (with `b = 1`, one request at each end of the closed interval).
//! (`tests/policy_props.rs` checks these bounds on random request sequences.)
//!
//! On top of that, [`Gcra::block_until`] sets a hard floor (from `Retry-After`, or a reset
//! while `remaining == 0`) before which nothing is admitted; it can only move later.
//! [`Gcra::learn`] adopts the quota and window the server announces and applies its waits.
//! The [per-bucket limiter](crate::limits) keeps one `Gcra` per server bucket and moves its
//! TAT to what the server reports ([`Gcra::raise_tat`], [`Gcra::lower_tat`],
//! [`Gcra::refund`]); the bound above is about what [`Gcra::check`] admits between such
//! corrections.
//!
//! Times are stored as offsets from the first `Instant` the limiter sees (moved earlier if
//! an earlier one shows up), in saturating `Duration` arithmetic, so no input can make it
//! panic or overflow.

use crate::rate_limit::RateLimitInfo;
use crate::time::{Duration, Instant};

/// A client-side GCRA rate limiter (see the module docs).
#[derive(Debug, Clone)]
pub struct Gcra {
    /// `T`; zero means unlimited.
    emission_interval: Duration,
    /// `b ≥ 1`.
    burst: u64,
    /// `τ = (b − 1)·T`.
    tolerance: Duration,
    /// Origin of the offsets below.
    base: Option<Instant>,
    /// Theoretical arrival time, as an offset from `base`; `None` before any admission.
    tat: Option<Duration>,
    /// Nothing is admitted before this offset from `base`.
    blocked_until: Option<Duration>,
}

impl Gcra {
    /// `quota` requests per `window`, with up to `burst` back to back from idle.
    ///
    /// `quota` and `burst` are raised to at least 1; a zero `window` means unlimited.
    pub fn new(quota: u64, window: Duration, burst: u64) -> Self {
        let mut gcra = Self::unlimited();
        gcra.burst = burst.max(1);
        gcra.set_rate(quota, window);
        gcra
    }

    /// A limiter that admits everything until it [learns](Gcra::learn) a policy or is
    /// [blocked](Gcra::block_until); a learned policy then gets a burst of 1.
    pub fn unlimited() -> Self {
        Self {
            emission_interval: Duration::ZERO,
            burst: 1,
            tolerance: Duration::ZERO,
            base: None,
            tat: None,
            blocked_until: None,
        }
    }

    /// Admits and records a request at `now`, or returns how long to wait (recording
    /// nothing).
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        let t = self.offset(now);
        if let Some(allowed) = self.allowed_at() {
            if allowed > t {
                return Err(allowed - t);
            }
        }
        if !self.emission_interval.is_zero() {
            let start = self.tat.map_or(t, |tat| tat.max(t));
            self.tat = Some(start.saturating_add(self.emission_interval));
        }
        Ok(())
    }

    /// Records a request at `at` whether or not it would be admitted: `TAT ← max(TAT, at) +
    /// T`. For a request the server already counted that this limiter did not (it was sent
    /// before the limiter knew the policy).
    pub fn charge(&mut self, at: Instant) {
        let t = self.offset(at);
        if !self.emission_interval.is_zero() {
            let start = self.tat.map_or(t, |tat| tat.max(t));
            self.tat = Some(start.saturating_add(self.emission_interval));
        }
    }

    /// How long a request at `now` would have to wait; zero if it would be admitted.
    pub fn wait_time(&self, now: Instant) -> Duration {
        let Some(base) = self.base else {
            return Duration::ZERO;
        };
        // `now` as an offset, or, when it precedes `base` (a TAT or block set ahead of the
        // present), every stored offset moved that much later: `TAT − τ` must not saturate
        // at `base` before `now` is taken off.
        let (t, ahead) = if now >= base {
            (now - base, Duration::ZERO)
        } else {
            (Duration::ZERO, base - now)
        };
        let by_rate = self.tat.map(|tat| {
            tat.saturating_add(ahead)
                .saturating_sub(self.tolerance)
                .saturating_sub(t)
        });
        let by_block = self
            .blocked_until
            .map(|b| b.saturating_add(ahead).saturating_sub(t));
        by_rate.max(by_block).unwrap_or(Duration::ZERO)
    }

    /// Learns from a response: adopts the server's policy (keeping this limiter's burst)
    /// and, when the response says to wait ([`RateLimitInfo::wait`]: `retry_after`, or the
    /// reset while `remaining == 0`), blocks until `now` plus that delay.
    ///
    /// When the rate changes, the requests already "in flight" (`TAT − now`, in emission
    /// intervals) keep their count: the backlog is rescaled to the new interval, so a
    /// slower policy cannot be exceeded by requests made just before it was learned.
    pub fn learn(&mut self, info: &RateLimitInfo, now: Instant) {
        if let Some(policy) = info.policy {
            self.set_policy(policy.quota, policy.window, self.burst, now);
        }
        let t = self.offset(now);
        if let Some(wait) = info.wait() {
            self.block_offset(t.saturating_add(wait));
        }
    }

    /// Adopts `quota` per `window` with `burst` (as [`Gcra::new`]) at `now`, keeping the
    /// backlog: the requests already "in flight" (`TAT − now`, in emission intervals) keep
    /// their count at the new interval, so a slower policy cannot be exceeded by requests
    /// made just before it was learned.
    pub fn set_policy(&mut self, quota: u64, window: Duration, burst: u64, now: Instant) {
        let t = self.offset(now);
        let old = self.emission_interval;
        self.burst = burst.max(1);
        self.set_rate(quota, window);
        let new = self.emission_interval;
        if let (Some(tat), false) = (self.tat, old.is_zero() || old == new) {
            let backlog = tat.saturating_sub(t).as_nanos();
            let rescaled = backlog.saturating_mul(new.as_nanos()) / old.as_nanos();
            self.tat = Some(t.saturating_add(duration_from_nanos(rescaled)));
        }
    }

    /// Moves the theoretical arrival time to at least `at` (the server has used more of
    /// the burst than this limiter counted). No effect when unlimited.
    pub fn raise_tat(&mut self, at: Instant) {
        if self.is_unlimited() {
            return;
        }
        let t = self.offset(at);
        self.tat = Some(self.tat.map_or(t, |tat| tat.max(t)));
    }

    /// Moves the theoretical arrival time to at most `at` (the server has more of the burst
    /// left than this limiter counted). No effect on an idle limiter.
    pub fn lower_tat(&mut self, at: Instant) {
        let t = self.offset(at);
        self.tat = self.tat.map(|tat| tat.min(t));
    }

    /// Gives back one cell taken at or before `now` that the server did not charge:
    /// `TAT ← max(TAT − T, now)`.
    pub fn refund(&mut self, now: Instant) {
        let t = self.offset(now);
        if let Some(tat) = self.tat {
            self.tat = Some(tat.saturating_sub(self.emission_interval).max(t.min(tat)));
        }
    }

    /// The tolerance `τ = (b − 1)·T`.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Admits nothing before `until`; never moves an existing block earlier.
    pub fn block_until(&mut self, until: Instant) {
        let t = self.offset(until);
        self.block_offset(t);
    }

    /// The emission interval `T` (zero when unlimited).
    pub fn emission_interval(&self) -> Duration {
        self.emission_interval
    }

    /// How many requests may go back to back from idle.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// True when no rate applies (a block from [`block_until`](Gcra::block_until) still
    /// does).
    pub fn is_unlimited(&self) -> bool {
        self.emission_interval.is_zero()
    }

    /// Changes the burst (at least 1), keeping the rate and the history.
    pub fn set_burst(&mut self, burst: u64) {
        self.burst = burst.max(1);
        self.update_tolerance();
    }

    fn set_rate(&mut self, quota: u64, window: Duration) {
        let quota = u128::from(quota.max(1));
        let nanos = window.as_nanos().div_ceil(quota);
        self.emission_interval = duration_from_nanos(nanos);
        self.update_tolerance();
    }

    fn update_tolerance(&mut self) {
        let nanos = self
            .emission_interval
            .as_nanos()
            .saturating_mul(u128::from(self.burst - 1));
        self.tolerance = duration_from_nanos(nanos);
    }

    /// The earliest offset at which a request is admitted, if there is any constraint.
    fn allowed_at(&self) -> Option<Duration> {
        let by_rate = self.tat.map(|tat| tat.saturating_sub(self.tolerance));
        by_rate.max(self.blocked_until)
    }

    fn block_offset(&mut self, t: Duration) {
        self.blocked_until = self.blocked_until.max(Some(t));
    }

    /// `t` as an offset from `base`, moving `base` (and the stored offsets) earlier if `t`
    /// precedes it.
    fn offset(&mut self, t: Instant) -> Duration {
        match self.base {
            Some(base) if t >= base => t - base,
            Some(base) => {
                let shift = base - t;
                self.tat = self.tat.map(|v| v.saturating_add(shift));
                self.blocked_until = self.blocked_until.map(|v| v.saturating_add(shift));
                self.base = Some(t);
                Duration::ZERO
            }
            None => {
                self.base = Some(t);
                Duration::ZERO
            }
        }
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is < 10⁹, so it fits in a u32.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::RateLimitPolicy;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_paced() {
        let t0 = Instant::now();
        // 10 per second: T = 100 ms; burst 3.
        let mut g = Gcra::new(10, ms(1_000), 3);
        assert_eq!(g.emission_interval(), ms(100));
        for _ in 0..3 {
            assert_eq!(g.check(t0), Ok(()));
        }
        assert_eq!(g.check(t0), Err(ms(100)));
        assert_eq!(g.wait_time(t0), ms(100));
        assert_eq!(g.wait_time(t0 + ms(40)), ms(60));
        assert_eq!(g.check(t0 + ms(99)), Err(ms(1)));
        assert_eq!(g.check(t0 + ms(100)), Ok(()));
        assert_eq!(g.check(t0 + ms(100)), Err(ms(100)));
        // Idle long enough refills the whole burst, and no more.
        let later = t0 + ms(10_000);
        for _ in 0..3 {
            assert_eq!(g.check(later), Ok(()));
        }
        assert!(g.check(later).is_err());
    }

    #[test]
    fn unlimited_admits_everything_but_blocks() {
        let t0 = Instant::now();
        let mut g = Gcra::unlimited();
        assert!(g.is_unlimited());
        for _ in 0..1000 {
            assert_eq!(g.check(t0), Ok(()));
        }
        g.block_until(t0 + ms(500));
        assert_eq!(g.check(t0 + ms(100)), Err(ms(400)));
        g.block_until(t0 + ms(200));
        assert_eq!(
            g.wait_time(t0 + ms(100)),
            ms(400),
            "a block never moves earlier"
        );
        assert_eq!(g.check(t0 + ms(500)), Ok(()));
    }

    #[test]
    fn learn_adopts_policy_and_blocks() {
        let t0 = Instant::now();
        let mut g = Gcra::unlimited();
        let info = RateLimitInfo {
            remaining: Some(0),
            reset: Some(ms(2_000)),
            policy: Some(RateLimitPolicy {
                quota: 4,
                window: ms(1_000),
            }),
            ..RateLimitInfo::default()
        };
        g.learn(&info, t0);
        assert_eq!(g.emission_interval(), ms(250));
        assert_eq!(g.check(t0 + ms(1_000)), Err(ms(1_000)));
        assert_eq!(g.check(t0 + ms(2_000)), Ok(()));
        assert_eq!(g.check(t0 + ms(2_000)), Err(ms(250)));
        // remaining > 0 and no retry_after: no block.
        let info = RateLimitInfo {
            remaining: Some(3),
            reset: Some(ms(9_000)),
            ..Default::default()
        };
        g.learn(&info, t0 + ms(2_000));
        assert_eq!(g.wait_time(t0 + ms(2_250)), Duration::ZERO);
        // retry_after blocks even with remaining > 0.
        let info = RateLimitInfo {
            retry_after: Some(ms(700)),
            ..Default::default()
        };
        g.learn(&info, t0 + ms(3_000));
        assert_eq!(g.wait_time(t0 + ms(3_000)), ms(700));
    }

    #[test]
    fn earlier_instants_and_extremes_do_not_panic() {
        let t0 = Instant::now() + Duration::from_secs(3_600);
        let mut g = Gcra::new(1, ms(1_000), 1);
        assert_eq!(g.check(t0), Ok(()));
        // An earlier instant: the TAT is still t0 + 1 s.
        let early = t0 - ms(500);
        assert_eq!(g.wait_time(early), ms(1_500));
        assert_eq!(g.check(early), Err(ms(1_500)));
        assert_eq!(g.check(t0 + ms(1_000)), Ok(()));

        let mut g = Gcra::new(0, Duration::MAX, u64::MAX);
        assert_eq!(g.emission_interval(), Duration::MAX);
        assert_eq!(g.check(t0), Ok(()));
        assert_eq!(g.check(t0), Ok(()), "huge tolerance admits");
        let mut g = Gcra::new(1, Duration::MAX, 1);
        assert_eq!(g.check(t0), Ok(()));
        assert_eq!(g.check(t0), Err(Duration::MAX));
        g.learn(
            &RateLimitInfo {
                retry_after: Some(Duration::MAX),
                ..Default::default()
            },
            t0,
        );
        assert_eq!(g.wait_time(t0 - ms(1)), Duration::MAX);

        let fresh = Gcra::new(5, ms(10), 2);
        assert_eq!(fresh.wait_time(t0), Duration::ZERO);
        assert!(Gcra::new(5, Duration::ZERO, 2).is_unlimited());
    }

    #[test]
    fn learning_a_slower_rate_keeps_the_backlog() {
        let t0 = Instant::now();
        let mut g = Gcra::new(10, ms(1_000), 2);
        assert_eq!(g.check(t0), Ok(()));
        assert_eq!(g.check(t0), Ok(()));
        let info = RateLimitInfo {
            policy: Some(RateLimitPolicy {
                quota: 1,
                window: ms(1_000),
            }),
            ..RateLimitInfo::default()
        };
        g.learn(&info, t0);
        // Two requests of backlog at 1/s: the next one is due at 2 s − τ (1 s).
        assert_eq!(g.check(t0), Err(ms(1_000)));
        assert_eq!(g.check(t0 + ms(1_000)), Ok(()));
    }

    #[test]
    fn a_tat_set_ahead_of_the_present_keeps_its_tolerance() {
        let t0 = Instant::now();
        // 10 per second, burst 5: τ = 400 ms. The server says one cell is used, learned
        // at t0 on a fresh limiter: TAT = t0 + 100 ms is the first instant it sees.
        let mut g = Gcra::new(10, ms(1_000), 5);
        g.raise_tat(t0 + ms(100));
        assert_eq!(
            g.wait_time(t0),
            Duration::ZERO,
            "4 cells left, not a 100 ms wait"
        );
        g.raise_tat(t0 + ms(600));
        assert_eq!(g.wait_time(t0), ms(200));
        assert_eq!(g.check(t0), Err(ms(200)));
        assert_eq!(g.check(t0 + ms(200)), Ok(()));
        let mut g = Gcra::new(10, ms(1_000), 5);
        g.block_until(t0 + ms(300));
        assert_eq!(g.wait_time(t0), ms(300));
    }

    #[test]
    fn set_burst_changes_tolerance() {
        let t0 = Instant::now();
        let mut g = Gcra::new(1, ms(100), 1);
        g.set_burst(4);
        assert_eq!(g.burst(), 4);
        for _ in 0..4 {
            assert_eq!(g.check(t0), Ok(()));
        }
        assert_eq!(g.check(t0), Err(ms(100)));
    }
}
