//! Publish rate limits: a per-user bucket and a per (user, event type) bucket chosen from
//! the configured table, scaled by the token's tier, checked atomically in the
//! [`RateLimitStore`], and turned into response headers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::Claims;
use crate::config::{LimitRule, RateLimitConfig};
use crate::store::{BucketRequest, RateLimitStore, StoreError};

/// The outcome of a rate-limit check.
#[derive(Debug, Clone, Default)]
pub struct RateDecision {
    /// The request may proceed.
    pub allowed: bool,
    /// How long to wait, when refused.
    pub retry_after: Option<Duration>,
    /// Headers for the response (empty when limiting is off).
    pub headers: HeaderMap,
    /// Rule names that refused (or would have, in shadow mode), for metrics.
    pub hits: Vec<(String, bool)>,
}

/// Applies [`RateLimitConfig`] with a store.
pub struct RateLimiter {
    config: RateLimitConfig,
    store: Arc<dyn RateLimitStore>,
}

struct Bucket {
    name: String,
    limit: u64,
    window_secs: u64,
    request: BucketRequest,
}

impl RateLimiter {
    /// A limiter for `config`.
    pub fn new(config: RateLimitConfig, store: Arc<dyn RateLimitStore>) -> Self {
        Self { config, store }
    }

    /// The table rule for `event_type`: the longest matching prefix, else the fallback.
    pub fn rule_for(&self, event_type: &str) -> (String, &LimitRule) {
        self.config
            .types
            .iter()
            .filter(|(prefix, _)| {
                event_type == prefix.as_str()
                    || (event_type.starts_with(prefix.as_str())
                        && event_type.as_bytes().get(prefix.len()) == Some(&b'.'))
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or_else(
                || ("fallback".to_owned(), &self.config.fallback),
                |(p, r)| (p.clone(), r),
            )
    }

    fn bucket(&self, name: String, key: String, rule: &LimitRule, tier: f64) -> Bucket {
        let limit = ((rule.limit as f64) * tier).round().max(1.0) as u64;
        let burst = ((rule.burst.unwrap_or(rule.limit) as f64) * tier)
            .round()
            .max(1.0) as u64;
        let window = Duration::from_secs(rule.window_secs.max(1));
        let emission_interval = window / u32::try_from(limit).unwrap_or(u32::MAX);
        Bucket {
            name,
            limit,
            window_secs: rule.window_secs.max(1),
            request: BucketRequest {
                key,
                emission_interval,
                burst,
                shadow: rule.shadow,
            },
        }
    }

    /// Checks one publish of `event_type` by `claims`.
    pub async fn check(
        &self,
        claims: &Claims,
        event_type: &str,
    ) -> Result<RateDecision, StoreError> {
        if !self.config.enabled {
            return Ok(RateDecision {
                allowed: true,
                ..RateDecision::default()
            });
        }
        let tier = self
            .config
            .tiers
            .get(claims.tier())
            .copied()
            .unwrap_or(1.0)
            .max(0.0);
        let (rule_name, rule) = self.rule_for(event_type);
        let type_key = if rule_name == "fallback" {
            format!("rl:fallback:{event_type}:{}", claims.sub)
        } else {
            format!("rl:type:{rule_name}:{}", claims.sub)
        };
        let buckets = [
            self.bucket(
                "user".into(),
                format!("rl:user:{}", claims.sub),
                &self.config.user,
                tier,
            ),
            self.bucket(rule_name, type_key, rule, tier),
        ];
        let requests: Vec<BucketRequest> = buckets.iter().map(|b| b.request.clone()).collect();
        let decisions = self.store.check(&requests).await?;
        let allowed = buckets
            .iter()
            .zip(&decisions)
            .all(|(b, d)| d.allowed || b.request.shadow);
        let mut hits = Vec::new();
        let mut retry_after: Option<Duration> = None;
        for (b, d) in buckets.iter().zip(&decisions) {
            if !d.allowed {
                hits.push((b.name.clone(), b.request.shadow));
                if !b.request.shadow {
                    retry_after = retry_after.max(Some(d.retry_after));
                }
            }
        }
        // The most restrictive bucket (fewest remaining) feeds the X-RateLimit-* fields.
        let (tightest, td) = buckets
            .iter()
            .zip(&decisions)
            .min_by_key(|(b, d)| (d.remaining, !(d.allowed || b.request.shadow)))
            .expect("two buckets");
        let mut headers = HeaderMap::new();
        let secs = |d: Duration| d.as_millis().div_ceil(1000);
        let set = |h: &mut HeaderMap, name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        set(
            &mut headers,
            "x-ratelimit-limit",
            tightest.limit.to_string(),
        );
        set(
            &mut headers,
            "x-ratelimit-remaining",
            td.remaining.to_string(),
        );
        set(
            &mut headers,
            "x-ratelimit-reset",
            secs(td.reset_after).to_string(),
        );
        let ratelimit = buckets
            .iter()
            .zip(&decisions)
            .map(|(b, d)| format!("\"{}\";r={};t={}", b.name, d.remaining, secs(d.reset_after)))
            .collect::<Vec<_>>()
            .join(", ");
        set(&mut headers, "ratelimit", ratelimit);
        let policy = buckets
            .iter()
            .map(|b| format!("\"{}\";q={};w={}", b.name, b.limit, b.window_secs))
            .collect::<Vec<_>>()
            .join(", ");
        set(&mut headers, "ratelimit-policy", policy);
        let retry_after = if allowed {
            None
        } else {
            retry_after.map(|d| d.max(Duration::from_millis(1)))
        };
        if let Some(wait) = retry_after {
            set(&mut headers, "retry-after", secs(wait).max(1).to_string());
        }
        Ok(RateDecision {
            allowed,
            retry_after,
            headers,
            hits,
        })
    }
}
