//! Publish rate limits (docs/protocol.md, "Rate limits").
//!
//! Every event is charged to two buckets of its publisher: `user` (every publish) and the
//! bucket of its type, `type:<prefix>` for the longest matching row of the table or else the
//! user's one `fallback` bucket, shared by every type no row matches. Limits are scaled by
//! the token's tier. The [`RateLimitStore`] checks both buckets atomically; a [`Usage`]
//! collects what one request was charged (event by event) and turns it into the answer's
//! `RateLimit-Policy`, `RateLimit` and `X-RateLimit-*` headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use courier_core::event::check_event_type;

use crate::auth::Claims;
use crate::config::{LimitRule, RateLimitConfig};
use crate::fault::{Charged, Refused};
use crate::metrics::RlDecision;
use crate::store::{BucketDecision, BucketRequest, RateLimitStore, StoreError, user_tag};

/// The name of the bucket every publish of a user is charged to.
pub const USER_BUCKET: &str = "user";
/// The name of the bucket shared by every event type no row of the table matches.
pub const FALLBACK_BUCKET: &str = "fallback";

/// One bucket of a user's table, scaled by a tier.
#[derive(Debug)]
struct Row {
    /// The bucket's name on the wire: `user`, `type:<prefix>` or `fallback`.
    name: String,
    /// The table prefix, for `type:` rows.
    prefix: Option<String>,
    /// The metrics label: the rule (`user`, `<prefix>`, `fallback`), as before buckets had
    /// names, so dashboards keep working.
    label: String,
    limit: u64,
    window_secs: u64,
    burst: u64,
    emission_interval: Duration,
    shadow: bool,
}

/// The whole table for one tier: `user`, the type rows, then `fallback`.
#[derive(Debug)]
struct Table {
    rows: Vec<Row>,
    /// `RateLimit-Policy`, the same for every answer to a user of this tier.
    policy: Option<HeaderValue>,
}

const USER_ROW: usize = 0;

impl Table {
    fn new(config: &RateLimitConfig, tier: f64) -> Self {
        let mut rows = vec![row(USER_BUCKET.into(), None, &config.user, tier)];
        for (prefix, rule) in &config.types {
            rows.push(row(
                format!("type:{prefix}"),
                Some(prefix.clone()),
                rule,
                tier,
            ));
        }
        rows.push(row(FALLBACK_BUCKET.into(), None, &config.fallback, tier));
        if config.shadow {
            // Everything is measured, announced (`;shadow`) and counted, nothing refused.
            for r in &mut rows {
                r.shadow = true;
            }
        }
        let policy = rows
            .iter()
            .map(|r| {
                let shadow = if r.shadow { ";shadow" } else { "" };
                format!(
                    "\"{}\";q={};w={};burst={}{shadow}",
                    r.name, r.limit, r.window_secs, r.burst
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            policy: HeaderValue::from_str(&policy).ok(),
            rows,
        }
    }

    /// The row of `event_type`'s bucket: the longest prefix `P` with `T == P` or `T`
    /// starting with `P.`, else the fallback.
    fn row_for(&self, event_type: &str) -> usize {
        self.rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.prefix.as_deref()?)))
            .filter(|(_, p)| {
                event_type == *p
                    || (event_type.starts_with(p)
                        && event_type.as_bytes().get(p.len()) == Some(&b'.'))
            })
            .max_by_key(|(_, p)| p.len())
            .map_or(self.rows.len() - 1, |(i, _)| i)
    }
}

fn row(name: String, prefix: Option<String>, rule: &LimitRule, tier: f64) -> Row {
    let scale = |n: u64| ((n as f64) * tier).round().max(1.0) as u64;
    let limit = scale(rule.limit);
    let window_secs = rule.window_secs.max(1);
    Row {
        label: prefix.clone().unwrap_or_else(|| name.clone()),
        name,
        prefix,
        limit,
        window_secs,
        burst: scale(rule.burst.unwrap_or(rule.limit)),
        emission_interval: Duration::from_secs(window_secs)
            / u32::try_from(limit).unwrap_or(u32::MAX),
        shadow: rule.shadow,
    }
}

/// A bucket refused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The bucket that refused (`user`, `type:<prefix>`, `fallback`); when several did, the
    /// one that frees last.
    pub bucket: String,
    /// Until that bucket would admit the event (at least 1 ms).
    pub retry_after: Duration,
}

/// What charging one event produced.
#[derive(Debug, Default)]
pub struct Charge {
    /// `Some` when the event is refused (nothing was charged).
    pub refused: Option<Refusal>,
    /// Rules over their limit (label, shadow), for metrics; shadow rules never refuse.
    pub hits: Vec<(String, bool)>,
    /// Each bucket checked (its row in [`RateLimiter::bucket_names`]) and what it decided,
    /// for metrics; a fixed array, so recording it allocates nothing.
    pub decisions: [Option<(usize, RlDecision)>; 2],
}

/// Applies [`RateLimitConfig`] with a store.
pub struct RateLimiter {
    enabled: bool,
    store: Arc<dyn RateLimitStore>,
    /// One table per configured tier; tokens of an unknown tier get `default_table` (×1).
    tiers: HashMap<String, Arc<Table>>,
    default_table: Arc<Table>,
}

impl RateLimiter {
    /// A limiter for `config`.
    pub fn new(config: RateLimitConfig, store: Arc<dyn RateLimitStore>) -> Self {
        let tiers = config
            .tiers
            .iter()
            .map(|(name, m)| (name.clone(), Arc::new(Table::new(&config, m.max(0.0)))))
            .collect();
        Self {
            enabled: config.enabled,
            store,
            tiers,
            default_table: Arc::new(Table::new(&config, 1.0)),
        }
    }

    /// Every bucket's name, in row order (`user`, `type:<prefix>`..., `fallback`); the
    /// rows are the same for every tier, so a row number names a bucket.
    pub fn bucket_names(&self) -> Vec<String> {
        self.default_table
            .rows
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    /// The name of the bucket of `row` (see [`RateLimiter::bucket_names`]).
    pub fn bucket_name(&self, row: usize) -> &str {
        self.default_table
            .rows
            .get(row)
            .map_or("", |r| r.name.as_str())
    }

    /// The name of the bucket `event_type` is charged to (besides `user`).
    pub fn bucket_for(&self, event_type: &str) -> String {
        let t = &self.default_table;
        t.rows[t.row_for(event_type)].name.clone()
    }

    /// An empty record of what one request of `claims` is charged.
    pub fn usage(&self, claims: &Claims) -> Usage {
        let table = self.enabled.then(|| {
            self.tiers
                .get(claims.tier())
                .unwrap_or(&self.default_table)
                .clone()
        });
        Usage {
            table,
            sub: claims.sub.clone(),
            touched: Vec::new(),
            carried: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Charges one event of `event_type` to its buckets in `usage`, or refuses it (and
    /// charges nothing). Call it only for an event that is otherwise accepted: valid, and
    /// not a duplicate.
    pub async fn charge(&self, usage: &mut Usage, event_type: &str) -> Result<Charge, StoreError> {
        let mut charges = self.charge_many(usage, &[event_type]).await?;
        Ok(charges.pop().unwrap_or_default())
    }

    /// [`Self::charge`] for several events in order, each seeing the buckets as the ones
    /// before it left them, in one store step.
    pub async fn charge_many(
        &self,
        usage: &mut Usage,
        event_types: &[&str],
    ) -> Result<Vec<Charge>, StoreError> {
        let Some(table) = usage.table.clone() else {
            return Ok(event_types.iter().map(|_| Charge::default()).collect());
        };
        let rows: Vec<[usize; 2]> = event_types
            .iter()
            .map(|t| [USER_ROW, table.row_for(t)])
            .collect();
        let requests: Vec<Vec<BucketRequest>> = rows
            .iter()
            .map(|rows| {
                rows.iter()
                    .map(|&i| {
                        let r = &table.rows[i];
                        BucketRequest {
                            key: format!("rl:{}:{}", user_tag(&usage.sub), r.name),
                            emission_interval: r.emission_interval,
                            burst: r.burst,
                            shadow: r.shadow,
                        }
                    })
                    .collect()
            })
            .collect();
        let decided = self.store.check_many(&requests).await?;
        Ok(rows
            .iter()
            .zip(&decided)
            .map(|(rows, decisions)| settle(&table, usage, rows, decisions))
            .collect())
    }
}

/// What one event's bucket decisions mean, recorded in `usage`.
fn settle(
    table: &Table,
    usage: &mut Usage,
    rows: &[usize],
    decisions: &[BucketDecision],
) -> Charge {
    let mut charge = Charge::default();
    for (n, (&i, d)) in rows.iter().zip(decisions).enumerate() {
        let r = &table.rows[i];
        usage.touch(i, *d);
        let decision = match (d.allowed, r.shadow) {
            (true, _) => RlDecision::Allowed,
            (false, true) => RlDecision::ShadowBlocked,
            (false, false) => RlDecision::Blocked,
        };
        charge.decisions[n] = Some((i, decision));
        if d.allowed {
            continue;
        }
        charge.hits.push((r.label.clone(), r.shadow));
        let wait = d.retry_after.max(Duration::from_millis(1));
        let later = charge.refused.as_ref().is_none_or(|f| wait > f.retry_after);
        if !r.shadow && later {
            charge.refused = Some(Refusal {
                bucket: r.name.clone(),
                retry_after: wait,
            });
        }
    }
    if let Some(f) = &charge.refused {
        usage.refused.push(Refused {
            bucket: f.bucket.clone(),
            retry_after_ms: millis(f.retry_after),
        });
    }
    charge
}

/// Milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What one publish request (one event, or a batch) carried and was charged, with each
/// bucket's state after the request's last check of it.
#[derive(Debug)]
pub struct Usage {
    /// `None` when limiting is off.
    table: Option<Arc<Table>>,
    sub: String,
    /// Rows charged or refused, in first-touched order, with their latest state.
    touched: Vec<(usize, BucketDecision)>,
    /// Bucket names of the events carried (for the fault layer's request log).
    carried: Vec<String>,
    /// Every refusal, in order (for the fault layer's request log).
    refused: Vec<Refused>,
}

impl Usage {
    fn touch(&mut self, row: usize, decision: BucketDecision) {
        match self.touched.iter_mut().find(|(r, _)| *r == row) {
            Some((_, d)) => *d = decision,
            None => self.touched.push((row, decision)),
        }
    }

    /// Notes that the request carried an event of `event_type` (whatever became of it).
    pub fn carry(&mut self, event_type: &str) {
        let Some(table) = &self.table else { return };
        if check_event_type(event_type).is_err() {
            return;
        }
        for name in [
            &table.rows[USER_ROW].name,
            &table.rows[table.row_for(event_type)].name,
        ] {
            if !self.carried.contains(name) {
                self.carried.push(name.clone());
            }
        }
    }

    /// What the fault layer records for this request.
    pub(crate) fn record(&self) -> Charged {
        Charged {
            buckets: self.carried.clone(),
            refused: self.refused.clone(),
        }
    }

    /// `RateLimit-Policy` (the user's whole table, whenever limiting is on), and, when the
    /// request was charged or refused by some bucket, `RateLimit` (one member per such
    /// bucket) and `X-RateLimit-*` (from the tightest of them). No `Retry-After`: only a
    /// refused single publish carries one.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let Some(table) = &self.table else {
            return headers;
        };
        if let Some(policy) = &table.policy {
            headers.insert(HeaderName::from_static("ratelimit-policy"), policy.clone());
        }
        let secs = |d: Duration| d.as_millis().div_ceil(1000);
        let set = |h: &mut HeaderMap, name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        let ratelimit = self
            .touched
            .iter()
            .map(|(i, d)| {
                let name = &table.rows[*i].name;
                format!("\"{name}\";r={};t={}", d.remaining, secs(d.reset_after))
            })
            .collect::<Vec<_>>()
            .join(", ");
        if !ratelimit.is_empty() {
            set(&mut headers, "ratelimit", ratelimit);
        }
        // A shadow bucket never refuses, so it is the tightest only when every bucket is one
        // (a client reading only X-RateLimit-* would otherwise wait for nothing).
        let tightest = |shadow: bool| {
            self.touched
                .iter()
                .filter(|(i, _)| table.rows[*i].shadow == shadow)
                .min_by_key(|(_, d)| (d.remaining, std::cmp::Reverse(d.reset_after)))
        };
        if let Some((i, d)) = tightest(false).or_else(|| tightest(true)) {
            set(
                &mut headers,
                "x-ratelimit-limit",
                table.rows[*i].limit.to_string(),
            );
            set(
                &mut headers,
                "x-ratelimit-remaining",
                d.remaining.to_string(),
            );
            set(
                &mut headers,
                "x-ratelimit-reset",
                secs(d.reset_after).to_string(),
            );
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryRateLimits;

    fn limiter(f: impl FnOnce(&mut RateLimitConfig)) -> RateLimiter {
        let mut c = RateLimitConfig::default();
        f(&mut c);
        RateLimiter::new(c, Arc::new(MemoryRateLimits::new()))
    }

    fn claims(tier: &str) -> Claims {
        Claims {
            sub: "alice".into(),
            exp: 0,
            iat: 0,
            role: crate::auth::Role::User,
            channels: vec![],
            publish: vec![],
            tier: Some(tier.into()),
            nbf: None,
            iss: None,
            aud: None,
        }
    }

    #[test]
    fn types_map_to_the_longest_prefix_or_the_one_fallback() {
        let l = limiter(|c| {
            c.types
                .insert("deposit.big".into(), LimitRule::per_minute(1));
        });
        assert_eq!(l.bucket_for("deposit"), "type:deposit");
        assert_eq!(l.bucket_for("deposit.made"), "type:deposit");
        assert_eq!(l.bucket_for("deposit.big.one"), "type:deposit.big");
        assert_eq!(l.bucket_for("deposits"), "fallback");
        assert_eq!(l.bucket_for("custom.x"), "fallback");
        assert_eq!(l.bucket_for("custom.y"), "fallback");
    }

    #[test]
    fn policy_lists_the_whole_table_scaled_by_tier() {
        let l = limiter(|c| {
            c.types.get_mut("strategy").unwrap().shadow = true;
            c.types.get_mut("trade").unwrap().burst = Some(10);
        });
        let u = l.usage(&claims("premium"));
        let h = u.headers();
        assert_eq!(
            h["ratelimit-policy"],
            "\"user\";q=3000;w=60;burst=3000, \"type:candles\";q=500;w=60;burst=500, \
             \"type:deposit\";q=25;w=60;burst=25, \"type:payment\";q=25;w=60;burst=25, \
             \"type:strategy\";q=50;w=60;burst=50;shadow, \
             \"type:subscription\";q=25;w=60;burst=25, \"type:trade\";q=250;w=60;burst=50, \
             \"fallback\";q=1500;w=60;burst=1500"
        );
        // Nothing charged: no RateLimit, no X-RateLimit-*.
        assert!(!h.contains_key("ratelimit"));
        assert!(!h.contains_key("x-ratelimit-remaining"));
        // An unknown tier counts as ×1.
        let h = l.usage(&claims("gold")).headers();
        assert!(
            h["ratelimit-policy"]
                .to_str()
                .unwrap()
                .starts_with("\"user\";q=600;w=60;burst=600, ")
        );
        // Limiting off: no headers.
        let off = limiter(|c| c.enabled = false);
        assert!(off.usage(&claims("standard")).headers().is_empty());
    }

    #[tokio::test]
    async fn custom_types_share_the_fallback_and_refusals_name_their_bucket() {
        let l = limiter(|c| c.fallback = LimitRule::per_minute(2));
        let mut u = l.usage(&claims("standard"));
        for t in ["custom.x", "other.y"] {
            assert!(l.charge(&mut u, t).await.unwrap().refused.is_none());
        }
        let c = l.charge(&mut u, "third.z").await.unwrap();
        let refused = c.refused.unwrap();
        assert_eq!(refused.bucket, "fallback");
        assert!(refused.retry_after > Duration::from_secs(25));
        assert_eq!(c.hits, vec![("fallback".to_owned(), false)]);
        // A limited type is still admitted: its own bucket and `user` have room.
        assert!(
            l.charge(&mut u, "deposit.made")
                .await
                .unwrap()
                .refused
                .is_none()
        );
        let h = u.headers();
        // The refused event did not take a cell of `user`.
        assert_eq!(
            h["ratelimit"],
            "\"user\";r=597;t=1, \"fallback\";r=0;t=60, \"type:deposit\";r=4;t=12"
        );
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert_eq!(h["x-ratelimit-limit"], "2");
    }

    #[tokio::test]
    async fn a_refused_request_charges_no_bucket_and_reports_them_as_they_stay() {
        let s = MemoryRateLimits::new();
        let bucket = |key: &str, burst: u64| BucketRequest {
            key: key.into(),
            emission_interval: Duration::from_secs(1),
            burst,
            shadow: false,
        };
        let roomy = bucket("roomy", 10);
        let both = [roomy.clone(), bucket("tight", 1)];
        let d = s.check(&both).await.unwrap();
        assert_eq!((d[0].remaining, d[1].remaining), (9, 0));
        let d = s.check(&both).await.unwrap();
        assert!(d[0].allowed && !d[1].allowed);
        // `roomy` would have admitted it, but was not charged.
        assert_eq!(d[0].remaining, 9);
        assert!(d[0].reset_after <= Duration::from_secs(1));
        assert_eq!(s.check(&[roomy]).await.unwrap()[0].remaining, 8);
    }
}
