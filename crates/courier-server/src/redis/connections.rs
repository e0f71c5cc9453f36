//! Per-user connection counts across instances. Each user has a hash of counts per
//! instance; each instance renews a heartbeat key. Counting skips (and removes) the fields of
//! instances whose heartbeat has expired, so a dead instance's connections stop counting
//! after `redis.instance_ttl_ms`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{Shared, timed};
use crate::store::{ConnectionStore, StoreError};

/// KEYS: the user's hash. ARGV: this instance, the limit (0 = none), the heartbeat key
/// prefix. Returns 1 when a place was taken.
const ACQUIRE: &str = r#"
local fields = redis.call('HGETALL', KEYS[1])
local sum = 0
for i = 1, #fields, 2 do
  local inst = fields[i]
  if inst == ARGV[1] or redis.call('EXISTS', ARGV[3] .. inst) == 1 then
    sum = sum + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], inst)
  end
end
local limit = tonumber(ARGV[2])
if limit > 0 and sum >= limit then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"#;

/// KEYS: the user's hash. ARGV: this instance.
const RELEASE: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"#;

/// Connection counts in Redis.
pub struct RedisConnections {
    shared: Arc<Shared>,
    acquire: Script,
    release: Arc<Script>,
}

impl RedisConnections {
    /// Writes this instance's heartbeat and keeps renewing it until the backend stops.
    pub async fn start(shared: Arc<Shared>) -> Result<Self, StoreError> {
        let ttl = Duration::from_millis(shared.config.instance_ttl_ms.max(300));
        heartbeat(&shared, ttl).await?;
        let s = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            loop {
                tokio::select! {
                    _ = s.stop.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = heartbeat(&s, ttl).await {
                            tracing::warn!(error = %e, "instance heartbeat failed");
                        }
                    }
                }
            }
        });
        Ok(Self {
            shared,
            acquire: Script::new(ACQUIRE),
            release: Arc::new(Script::new(RELEASE)),
        })
    }

    fn user_key(&self, user: &str) -> String {
        self.shared.key(&format!("conn:{user}"))
    }
}

async fn heartbeat(shared: &Shared, ttl: Duration) -> Result<(), StoreError> {
    let mut c = shared.conn();
    let _: () = timed(
        shared,
        redis::cmd("SET")
            .arg(shared.key(&format!("inst:{}", shared.instance)))
            .arg(1)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut c),
    )
    .await?;
    Ok(())
}

#[async_trait]
impl ConnectionStore for RedisConnections {
    async fn acquire(&self, user: &str, max: usize) -> Result<bool, StoreError> {
        let mut invocation = self.acquire.prepare_invoke();
        invocation
            .key(self.user_key(user))
            .arg(&self.shared.instance)
            .arg(max)
            .arg(self.shared.key("inst:"));
        let mut c = self.shared.conn();
        let taken: i64 = timed(&self.shared, invocation.invoke_async(&mut c)).await?;
        Ok(taken == 1)
    }

    fn release(&self, user: &str) {
        if self.shared.stop.is_cancelled() {
            // Stopped (or killed): the heartbeat expires and takes the counts with it.
            return;
        }
        let shared = self.shared.clone();
        let script = self.release.clone();
        let key = self.user_key(user);
        tokio::spawn(async move {
            let mut invocation = script.prepare_invoke();
            invocation.key(key).arg(&shared.instance);
            let mut c = shared.conn();
            if let Err(e) = timed(&shared, invocation.invoke_async::<i64>(&mut c)).await {
                tracing::warn!(error = %e, "releasing a connection place failed");
            }
        });
    }
}
