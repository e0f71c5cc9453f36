//! The client-side limiter of the publish queue: one [GCRA](crate::gcra) per bucket the
//! server names, so an event waits only for its own buckets.
//!
//! # Why per bucket
//!
//! The server charges every publish to two buckets: `user` (every publish of the user) and
//! the bucket of its event type (`type:<prefix>` from its table, else the user's one
//! `fallback` bucket). One limiter for the whole queue would hold a `custom.x` publish
//! because `deposit` is exhausted, and a limiter with burst 1 would space out events the
//! server accepts back to back. [`BucketLimiter`] keeps what the server announces, bucket by
//! bucket, and admits an event as soon as *its* buckets would.
//!
//! # The algorithm
//!
//! **Table.** Each response whose `RateLimit-Policy` names buckets
//! ([`parse_bucket_headers`](crate::rate_limit::parse_bucket_headers)) replaces the table:
//! one [`Gcra`] per non-shadow bucket with `T = ceil(w/q)` and burst `b` (`burst`, else `q`).
//! A bucket whose policy is unchanged keeps its state; one whose policy changed keeps its
//! backlog ([`Gcra::set_policy`]); buckets no longer named are dropped. Shadow buckets never
//! refuse, so they are not kept. Until the first such response the table is unknown and
//! nothing is held by a rate (only by Retry-After).
//!
//! **Route.** An event's buckets are `user`, plus its type's bucket: the `type:P` with the
//! longest `P` such that the type equals `P` or starts with `P.`; with none, `fallback` (if
//! the server names one). A named bucket outside that scheme (another server's `"default"`)
//! applies to every event, like `user`. The type's bucket is the event's [`Route`]; a route
//! stays valid until [`generation`](BucketLimiter::generation) changes.
//!
//! **Admission and charge.** An event may go at `now` iff every bucket of its route admits a
//! request (`TAT − τ ≤ now`) and no block holds it; putting it in a batch charges one cell to
//! each of them ([`try_charge`](BucketLimiter::try_charge): all or nothing). Events of one
//! batch are charged one by one, as the server does, so a burst of five fills five cells and
//! a sixth waits until `TAT − τ`.
//!
//! **Sync from `RateLimit`.** A member `"name";r=R` at response time `now` for a bucket with
//! `T`, `b` says the server's TAT lies in `(now + (b−R−1)·T, now + (b−R)·T]`:
//! - raise the bucket's TAT to at least `now + (b−R−1)·T` (someone else used cells);
//! - lower it to at most `now + (b−R)·T` only when no other batch is in flight (with one in
//!   flight, our extra charges are still unknown to the server, and lowering would forget
//!   them).
//!
//! The raise takes the interval's (open) lower end so that a hold never outlasts the
//! server's: the client may count one cell more than a bucket drained by someone else still
//! has, and the server then refuses that one event with a `retry_after_ms`, which blocks the
//! bucket exactly (below). When the client's own count is right, neither bound moves it.
//!
//! **Late charge.** Events sent before the first named table were charged to no named
//! bucket; the server counted them. Those it accepted are charged once the table is learned,
//! at the answer's arrival ([`charge_late`](BucketLimiter::charge_late); the server counted
//! them between the send and then, and the later end is never early), before the sync of the
//! same response: otherwise the mirror stays one cell short and sends an event to be
//! refused.
//!
//! **Refund.** An event answered `duplicate`, or rejected for any reason (a rate-limit
//! refusal included: the server charges no bucket for a refused event), was not charged by
//! the server: its cells come back
//! (`TAT ← max(TAT − T, now)`, [`refund`](BucketLimiter::refund)). Refunds are applied before
//! the sync of the same response.
//!
//! **Blocks (Retry-After always wins).** A per-event `RATE_LIMIT_EXCEEDED` with
//! `retry_after_ms` blocks the bucket its `limit_type` names (else the event's own type
//! bucket) until `now + retry_after_ms`, and raises that bucket's TAT to
//! `until + τ` (the server told exactly when its next cell is free, so one cell, not a whole
//! burst, comes back then). With no bucket to block, everything is blocked. A whole-request
//! refusal with a delay (429/503 `Retry-After`, a body's `retry_after_ms`) blocks everything:
//! [`block_all`](BucketLimiter::block_all). Blocks only ever move later.
//!
//! **Servers without names.** When responses carry rate-limit headers but no named policy
//! (plain `X-RateLimit-*`, an unnamed `RateLimit-Policy: 100;w=60`), one anonymous bucket
//! covers every event: it adopts the folded policy with burst = quota (never 1), and
//! `remaining == 0` blocks it until the reset. The first named table replaces it.
//!
//! Everything here is `O(buckets)` per call, without allocation on the admission path.

use crate::gcra::Gcra;
use crate::rate_limit::{BucketHeaders, RateLimitInfo};
use crate::time::{Duration, Instant};

/// Which of the table's type buckets an event is charged to (besides the buckets every
/// event is charged to). Valid for one [`BucketLimiter::generation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route(u16);

impl Route {
    /// No type bucket: only the buckets every event is charged to.
    pub const NONE: Route = Route(u16::MAX);

    fn index(self) -> Option<usize> {
        (self != Route::NONE).then_some(usize::from(self.0))
    }
}

/// What a name in the table stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `type:<prefix>`: events whose type is the prefix or starts with `prefix.`.
    Type,
    /// `fallback`: events no type row matches.
    Fallback,
    /// `user`, or a name outside the scheme: every event.
    Every,
}

#[derive(Debug, Clone)]
struct Bucket {
    name: String,
    scope: Scope,
    gcra: Gcra,
}

/// One GCRA per server bucket (see the module docs).
#[derive(Debug, Clone)]
pub struct BucketLimiter {
    /// The named table, in header order.
    buckets: Vec<Bucket>,
    /// The bucket of servers that name none (unlimited until learned).
    anonymous: Gcra,
    /// Nothing is admitted before this (a whole-request Retry-After).
    blocked_until: Option<Instant>,
    /// Bumped whenever the table's names change (routes must be recomputed).
    generation: u64,
}

impl Default for BucketLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl BucketLimiter {
    /// A limiter that knows no table yet: it admits everything.
    pub fn new() -> Self {
        Self {
            buckets: Vec::new(),
            anonymous: Gcra::unlimited(),
            blocked_until: None,
            generation: 0,
        }
    }

    /// Changes whenever the table's bucket names change; [`Route`]s of another generation
    /// are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True once a response named its buckets.
    pub fn is_named(&self) -> bool {
        !self.buckets.is_empty()
    }

    /// The route of an event type: its `type:` bucket by longest prefix, else `fallback`,
    /// else [`Route::NONE`].
    pub fn route(&self, event_type: &str) -> Route {
        let mut best: Option<(usize, usize)> = None;
        let mut fallback = None;
        for (i, b) in self.buckets.iter().enumerate() {
            let p = b.name.get(TYPE_PREFIX.len()..).unwrap_or("");
            match b.scope {
                Scope::Type
                    if type_matches(event_type, p) && best.is_none_or(|(len, _)| p.len() > len) =>
                {
                    best = Some((p.len(), i));
                }
                Scope::Fallback => fallback = Some(i),
                _ => {}
            }
        }
        best.map(|(_, i)| i)
            .or(fallback)
            .and_then(|i| u16::try_from(i).ok())
            .map_or(Route::NONE, Route)
    }

    /// The name of a route's type bucket.
    pub fn route_name(&self, route: Route) -> Option<&str> {
        route
            .index()
            .and_then(|i| self.buckets.get(i))
            .map(|b| b.name.as_str())
    }

    /// When an event of `route` may go, as seen at `now` (`now` if it may go now), counting
    /// its buckets and every block; `None` if that is beyond any representable instant.
    pub fn admit_at(&self, route: Route, now: Instant) -> Option<Instant> {
        let mut at = self.blocked_until.map_or(now, |b| b.max(now));
        for gcra in self.gcras_of(route) {
            let wait = gcra.wait_time(now);
            if !wait.is_zero() {
                at = at.max(now.checked_add(wait)?);
            }
        }
        Some(at)
    }

    /// When the whole-request block ends, if it is still in force at `now`.
    pub fn blocked_until(&self, now: Instant) -> Option<Instant> {
        self.blocked_until.filter(|b| *b > now)
    }

    /// True when no bucket and no block holds anything at `now` (every route admits at
    /// least one event).
    pub fn admits_all(&self, now: Instant) -> bool {
        self.blocked_until(now).is_none()
            && self.anonymous.wait_time(now).is_zero()
            && self.buckets.iter().all(|b| b.gcra.wait_time(now).is_zero())
    }

    /// Admits an event of `route` at `now` and charges one cell to each of its buckets, or
    /// charges nothing and returns false.
    pub fn try_charge(&mut self, route: Route, now: Instant) -> bool {
        if self.admit_at(route, now) != Some(now) {
            return false;
        }
        let ty = route.index();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if b.scope == Scope::Every || Some(i) == ty {
                let admitted = b.gcra.check(now);
                debug_assert!(admitted.is_ok(), "admit_at checked every bucket");
            }
        }
        if !self.is_named() {
            let admitted = self.anonymous.check(now);
            debug_assert!(admitted.is_ok(), "admit_at checked the anonymous bucket");
        }
        true
    }

    /// Charges an event of `route` that the server accepted at about `at` but that went out
    /// under another table (before this one was learned), so this table never counted it.
    /// Without it the mirror stays one cell per such event short of the server's bucket, and
    /// would send an event the server then refuses.
    pub fn charge_late(&mut self, route: Route, at: Instant) {
        let ty = route.index();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if b.scope == Scope::Every || Some(i) == ty {
                b.gcra.charge(at);
            }
        }
        if !self.is_named() {
            self.anonymous.charge(at);
        }
    }

    /// Gives back the cells of an event of `route` that the server did not charge.
    pub fn refund(&mut self, route: Route, now: Instant) {
        let ty = route.index();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if b.scope == Scope::Every || Some(i) == ty {
                b.gcra.refund(now);
            }
        }
        if !self.is_named() {
            self.anonymous.refund(now);
        }
    }

    /// Learns the table from a response: the named policies replace the table; without any,
    /// the folded `info` feeds the anonymous bucket (while no table is known).
    pub fn learn_policies(&mut self, named: &BucketHeaders, info: &RateLimitInfo, now: Instant) {
        if named.policies.is_empty() {
            if !self.is_named() {
                if let Some(p) = info.policy {
                    self.anonymous.set_policy(p.quota, p.window, p.quota, now);
                }
                if info.remaining == Some(0) {
                    if let Some(until) = info.reset.and_then(|r| now.checked_add(r)) {
                        self.anonymous.block_until(until);
                    }
                }
            }
            return;
        }
        let kept = || named.policies.iter().filter(|p| !p.shadow);
        // Routes stay valid while the names (in header order: the server writes its table
        // the same way every time) stay the same.
        let renamed = kept().count() != self.buckets.len()
            || kept().zip(&self.buckets).any(|(p, b)| p.name != b.name);
        let mut old = std::mem::take(&mut self.buckets);
        for policy in kept() {
            let (q, w, b) = (policy.quota, policy.window, policy.effective_burst());
            let gcra = match old.iter().position(|o| o.name == policy.name) {
                Some(i) => {
                    let mut gcra = old.swap_remove(i).gcra;
                    if old_policy_differs(&gcra, q, w, b) {
                        gcra.set_policy(q, w, b, now);
                    }
                    gcra
                }
                None => Gcra::new(q, w, b),
            };
            self.buckets.push(Bucket {
                name: policy.name.clone(),
                scope: scope_of(&policy.name),
                gcra,
            });
        }
        if renamed {
            self.generation += 1;
        }
        self.anonymous = Gcra::unlimited();
    }

    /// Syncs the buckets named in `RateLimit` from their `r` at `now` (see the module docs);
    /// `lower` allows moving a TAT earlier (no other batch in flight).
    pub fn sync(&mut self, named: &BucketHeaders, now: Instant, lower: bool) {
        for member in &named.remaining {
            let Some(r) = member.remaining else {
                continue;
            };
            let Some(b) = self.buckets.iter_mut().find(|b| b.name == member.name) else {
                continue;
            };
            let burst = b.gcra.burst();
            let r = r.min(burst);
            let t = b.gcra.emission_interval();
            if burst > r {
                if let Some(at) = now.checked_add(times(t, burst - r - 1)) {
                    b.gcra.raise_tat(at);
                }
            }
            if lower {
                if let Some(at) = now.checked_add(times(t, burst - r)) {
                    b.gcra.lower_tat(at);
                }
            }
        }
    }

    /// A per-event `RATE_LIMIT_EXCEEDED`: blocks the bucket `limit_type` names, else the
    /// route's type bucket, until `until` (and sets its next cell free then); with neither,
    /// blocks everything.
    pub fn block_bucket(&mut self, limit_type: Option<&str>, route: Route, until: Instant) {
        let named = limit_type.and_then(|n| self.buckets.iter().position(|b| b.name == n));
        match named
            .or(route.index())
            .and_then(|i| self.buckets.get_mut(i))
        {
            Some(b) => {
                b.gcra.block_until(until);
                if let Some(at) = until.checked_add(b.gcra.tolerance()) {
                    b.gcra.raise_tat(at);
                }
            }
            None => self.block_all(until),
        }
    }

    /// A whole-request refusal with a delay: nothing is admitted before `until`.
    pub fn block_all(&mut self, until: Instant) {
        self.blocked_until = self.blocked_until.max(Some(until));
    }

    /// The GCRAs an event of `route` must pass.
    fn gcras_of(&self, route: Route) -> impl Iterator<Item = &Gcra> {
        let ty = route.index();
        let named = self
            .buckets
            .iter()
            .enumerate()
            .filter(move |(i, b)| b.scope == Scope::Every || Some(*i) == ty)
            .map(|(_, b)| &b.gcra);
        let anonymous = (!self.is_named()).then_some(&self.anonymous);
        named.chain(anonymous)
    }
}

/// True when a kept bucket's limiter runs another rate or burst than `q`/`w`/`b`.
fn old_policy_differs(gcra: &Gcra, q: u64, w: Duration, b: u64) -> bool {
    gcra.burst() != b || gcra.emission_interval() != Gcra::new(q, w, b).emission_interval()
}

const TYPE_PREFIX: &str = "type:";

fn scope_of(name: &str) -> Scope {
    if name == "fallback" {
        Scope::Fallback
    } else if name.len() > TYPE_PREFIX.len() && name.starts_with(TYPE_PREFIX) {
        Scope::Type
    } else {
        Scope::Every
    }
}

/// `T == P`, or `T` starts with `P.`.
fn type_matches(event_type: &str, prefix: &str) -> bool {
    event_type
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// `t · n`, saturating.
fn times(t: Duration, n: u64) -> Duration {
    t.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::parse_bucket_headers;
    use crate::time::{SystemTime, UNIX_EPOCH};

    const POLICY: &str = "\"user\";q=600;w=60;burst=600, \"type:deposit\";q=5;w=60;burst=5, \
        \"type:trade\";q=50;w=60, \"type:audit\";q=1;w=60;shadow, \"fallback\";q=300;w=60";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn headers(policy: &str, remaining: &str) -> BucketHeaders {
        let wall: SystemTime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = vec![("RateLimit-Policy", policy)];
        if !remaining.is_empty() {
            h.push(("RateLimit", remaining));
        }
        parse_bucket_headers(h, wall, Duration::from_secs(300))
    }

    fn learned(t0: Instant) -> BucketLimiter {
        let mut l = BucketLimiter::new();
        l.learn_policies(&headers(POLICY, ""), &RateLimitInfo::default(), t0);
        l
    }

    #[test]
    fn unknown_table_admits_everything() {
        let t0 = Instant::now();
        let mut l = BucketLimiter::new();
        assert!(!l.is_named());
        assert_eq!(l.route("deposit.made"), Route::NONE);
        for _ in 0..1_000 {
            assert!(l.try_charge(Route::NONE, t0));
        }
        assert!(l.admits_all(t0));
    }

    #[test]
    fn routes_by_longest_prefix_then_fallback() {
        let t0 = Instant::now();
        let l = learned(t0);
        let name = |t: &str| l.route_name(l.route(t));
        assert_eq!(name("deposit.made"), Some("type:deposit"));
        assert_eq!(name("deposit"), Some("type:deposit"));
        assert_eq!(name("depositx"), Some("fallback"));
        assert_eq!(name("trade.executed"), Some("type:trade"));
        assert_eq!(
            name("audit.login"),
            Some("fallback"),
            "shadow buckets are not kept"
        );
        assert_eq!(name("audit"), Some("fallback"));
    }

    #[test]
    fn a_burst_then_exactly_one_interval() {
        let t0 = Instant::now();
        let mut l = learned(t0);
        let deposit = l.route("deposit.made");
        let custom = l.route("custom.x");
        for _ in 0..5 {
            assert!(l.try_charge(deposit, t0));
        }
        assert!(!l.try_charge(deposit, t0), "the sixth is refused");
        assert_eq!(l.admit_at(deposit, t0), Some(t0 + ms(12_000)));
        assert!(l.try_charge(custom, t0), "another bucket is not held");
        assert_eq!(l.admit_at(custom, t0), Some(t0));
        assert!(!l.admits_all(t0));
    }

    #[test]
    fn sync_raises_and_lowers_only_when_alone() {
        let t0 = Instant::now();
        let mut l = learned(t0);
        let deposit = l.route("deposit.made");
        // The server has 1 cell left, we counted 5: raise to now + (5−1−1)·12 s.
        l.sync(&headers(POLICY, "\"type:deposit\";r=1;t=48"), t0, false);
        assert!(l.try_charge(deposit, t0));
        assert!(
            l.try_charge(deposit, t0),
            "the lower bound leaves r + 1 cells"
        );
        assert!(!l.try_charge(deposit, t0));
        // The server says 5 left: lowering waits for no other batch in flight.
        l.sync(&headers(POLICY, "\"type:deposit\";r=5;t=0"), t0, false);
        assert!(!l.try_charge(deposit, t0));
        l.sync(&headers(POLICY, "\"type:deposit\";r=5;t=0"), t0, true);
        for _ in 0..5 {
            assert!(l.try_charge(deposit, t0));
        }
        assert!(!l.try_charge(deposit, t0));
        // Unknown names and members without r change nothing.
        l.sync(
            &headers(POLICY, "\"nope\";r=0, \"type:deposit\";t=5"),
            t0,
            true,
        );
        assert_eq!(l.admit_at(deposit, t0), Some(t0 + ms(12_000)));
    }

    #[test]
    fn refund_gives_a_cell_back() {
        let t0 = Instant::now();
        let mut l = learned(t0);
        let deposit = l.route("deposit.made");
        for _ in 0..5 {
            assert!(l.try_charge(deposit, t0));
        }
        l.refund(deposit, t0);
        assert!(l.try_charge(deposit, t0));
        assert!(!l.try_charge(deposit, t0));
    }

    #[test]
    fn blocks_per_bucket_and_for_everything() {
        let t0 = Instant::now();
        let mut l = learned(t0);
        let deposit = l.route("deposit.made");
        let trade = l.route("trade.executed");
        l.block_bucket(Some("type:deposit"), trade, t0 + ms(5_000));
        assert_eq!(l.admit_at(deposit, t0), Some(t0 + ms(5_000)));
        assert_eq!(
            l.admit_at(trade, t0),
            Some(t0),
            "limit_type wins over the route"
        );
        // At the end of the block one cell is free, not the whole burst.
        let then = t0 + ms(5_000);
        assert!(l.try_charge(deposit, then));
        assert_eq!(l.admit_at(deposit, then), Some(then + ms(12_000)));
        // No limit_type: the event's own bucket.
        l.block_bucket(None, trade, t0 + ms(1_000));
        assert_eq!(l.admit_at(trade, t0), Some(t0 + ms(1_000)));
        // Nothing to name: everything waits.
        l.block_bucket(Some("nope"), Route::NONE, t0 + ms(2_000));
        assert_eq!(l.admit_at(l.route("custom.x"), t0), Some(t0 + ms(2_000)));
        assert_eq!(l.blocked_until(t0), Some(t0 + ms(2_000)));
        l.block_all(t0 + ms(100));
        assert_eq!(l.blocked_until(t0), Some(t0 + ms(2_000)), "never earlier");
    }

    #[test]
    fn a_new_table_keeps_unchanged_buckets_and_bumps_the_generation_on_new_names() {
        let t0 = Instant::now();
        let mut l = learned(t0);
        let generation = l.generation();
        let deposit = l.route("deposit.made");
        for _ in 0..5 {
            assert!(l.try_charge(deposit, t0));
        }
        l.learn_policies(&headers(POLICY, ""), &RateLimitInfo::default(), t0);
        assert_eq!(l.generation(), generation, "same names: routes stay valid");
        assert!(!l.try_charge(deposit, t0), "same policy: state kept");
        // A premium tier: deposit 25/min with burst 25; the 5 cells used keep their count.
        let premium = POLICY.replace("q=5;w=60;burst=5", "q=25;w=60;burst=25");
        l.learn_policies(&headers(&premium, ""), &RateLimitInfo::default(), t0);
        assert_eq!(l.generation(), generation);
        for _ in 0..20 {
            assert!(l.try_charge(deposit, t0));
        }
        assert!(!l.try_charge(deposit, t0));
        let fewer = "\"user\";q=600;w=60, \"type:deposit\";q=5;w=60";
        l.learn_policies(&headers(fewer, ""), &RateLimitInfo::default(), t0);
        assert_ne!(
            l.generation(),
            generation,
            "names changed: routes are stale"
        );
        assert_eq!(l.route("custom.x"), Route::NONE, "no fallback any more");
    }

    #[test]
    fn anonymous_bucket_until_a_named_table() {
        let t0 = Instant::now();
        let mut l = BucketLimiter::new();
        let info = RateLimitInfo {
            policy: Some(crate::rate_limit::RateLimitPolicy {
                quota: 2,
                window: ms(1_000),
            }),
            ..RateLimitInfo::default()
        };
        l.learn_policies(&BucketHeaders::default(), &info, t0);
        assert!(l.try_charge(Route::NONE, t0));
        assert!(l.try_charge(Route::NONE, t0), "burst = quota, not 1");
        assert_eq!(l.admit_at(Route::NONE, t0), Some(t0 + ms(500)));
        let exhausted = RateLimitInfo {
            remaining: Some(0),
            reset: Some(ms(3_000)),
            ..RateLimitInfo::default()
        };
        l.learn_policies(&BucketHeaders::default(), &exhausted, t0);
        assert_eq!(l.admit_at(Route::NONE, t0), Some(t0 + ms(3_000)));
        l.learn_policies(&headers(POLICY, ""), &RateLimitInfo::default(), t0);
        assert_eq!(
            l.admit_at(l.route("custom.x"), t0),
            Some(t0),
            "names replace it"
        );
        l.learn_policies(&BucketHeaders::default(), &exhausted, t0);
        assert_eq!(
            l.admit_at(l.route("custom.x"), t0),
            Some(t0),
            "folded headers are ignored once buckets are named"
        );
    }
}
