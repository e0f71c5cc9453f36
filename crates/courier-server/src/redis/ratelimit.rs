//! GCRA in one Lua script over every bucket of a request, on Redis's clock, so every
//! instance shares the same buckets and the same time.

use std::sync::Arc;
use std::time::Duration;

use super::{LuaScript, Shared, eval_many};
use crate::store::{BucketDecision, BucketRequest, RateLimitStore, StoreError};
use async_trait::async_trait;

/// KEYS: the buckets. ARGV, three per bucket: emission interval (µs), burst, shadow (0/1).
/// Mirrors `store::gcra_decide`; the request is admitted when every non-shadow bucket
/// admits it, and only then are the admitting buckets advanced. Returns, per bucket,
/// `{allowed, remaining, reset_after_us, retry_after_us}`, the state left behind (a refused
/// request is reported against the buckets as they stay).
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local allowed = {}
local admitted = true
for i = 1, #KEYS do
  local ti = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local tau = ti * (burst - 1)
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  allowed[i] = tat <= now + tau
  if not allowed[i] and ARGV[3 * i] ~= '1' then admitted = false end
end
local res = {}
for i = 1, #KEYS do
  local ti = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local tau = ti * (burst - 1)
  local new_tat = tats[i]
  if admitted and allowed[i] then
    new_tat = tats[i] + ti
    local ttl = math.ceil((new_tat - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', ttl)
  end
  local remaining = math.floor((now + tau + ti - new_tat) / ti)
  if remaining < 0 then remaining = 0 end
  if remaining > burst then remaining = burst end
  local retry_after = 0
  if not allowed[i] then retry_after = tats[i] - tau - now end
  res[i] = {allowed[i] and 1 or 0, remaining, new_tat - now, retry_after}
end
return res
"#;

/// GCRA buckets in Redis.
pub struct RedisRateLimits {
    shared: Arc<Shared>,
    script: LuaScript,
}

impl RedisRateLimits {
    /// Buckets over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            script: LuaScript::new(GCRA),
        }
    }
}

fn micros(d: u64) -> Duration {
    Duration::from_micros(d)
}

#[async_trait]
impl RateLimitStore for RedisRateLimits {
    async fn check(&self, buckets: &[BucketRequest]) -> Result<Vec<BucketDecision>, StoreError> {
        self.check_many(&[buckets.to_vec()])
            .await?
            .pop()
            .ok_or_else(|| StoreError("redis: the rate-limit script got no answer".into()))
    }

    async fn check_many(
        &self,
        requests: &[Vec<BucketRequest>],
    ) -> Result<Vec<Vec<BucketDecision>>, StoreError> {
        // One script call per request, pipelined: Redis runs them in order, each seeing the
        // buckets as the ones before it left them.
        let calls = requests
            .iter()
            .map(|buckets| {
                let keys: Vec<String> = buckets.iter().map(|b| self.shared.key(&b.key)).collect();
                let mut call = self.script.call(&keys);
                for b in buckets {
                    let us = u64::try_from(b.emission_interval.as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    call.arg(us)
                        .arg(b.burst.max(1))
                        .arg(if b.shadow { 1 } else { 0 });
                }
                call
            })
            .collect();
        let answers: Vec<Vec<(i64, i64, i64, i64)>> =
            eval_many(&self.shared, &self.script, calls).await?;
        if answers.len() != requests.len()
            || answers
                .iter()
                .zip(requests)
                .any(|(a, r)| a.len() != r.len())
        {
            return Err(StoreError("redis: rate-limit script answered oddly".into()));
        }
        let pos = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(answers
            .into_iter()
            .map(|raw| {
                raw.into_iter()
                    .map(|(allowed, remaining, reset, retry)| BucketDecision {
                        allowed: allowed == 1,
                        remaining: pos(remaining),
                        reset_after: micros(pos(reset)),
                        retry_after: micros(pos(retry)),
                    })
                    .collect()
            })
            .collect())
    }
}
