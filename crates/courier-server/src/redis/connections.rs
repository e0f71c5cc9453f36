//! Per-user connection counts across instances. Each user has a hash of counts per
//! instance; each instance renews its place in a sorted set of instances, scored by when its
//! heartbeat lapses. Counting skips (and removes) the fields of instances whose heartbeat has
//! lapsed, so a dead instance's connections stop counting after `redis.instance_ttl_ms` (and
//! at most a third of it more: each instance learns who died at its own heartbeat). The
//! user's hash and the set are read by separate commands, so that on a cluster each stays in
//! its own slot.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{LuaScript, Shared, eval_many, timed};
use crate::store::{ConnectionStore, StoreError};

/// KEYS: the instances' sorted set. ARGV: this instance, the heartbeat TTL (ms). Renews this
/// instance, forgets instances dead for a day, and returns the ids whose heartbeat lapsed,
/// on Redis's clock (the same for every instance).
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
"#;

/// KEYS: the user's hash. ARGV: this instance, the limit (0 = none), then the instances
/// known dead. Returns 1 when a place was taken.
const ACQUIRE: &str = r#"
local dead = {}
for i = 3, #ARGV do dead[ARGV[i]] = true end
local fields = redis.call('HGETALL', KEYS[1])
local sum = 0
for i = 1, #fields, 2 do
  local inst = fields[i]
  if dead[inst] and inst ~= ARGV[1] then
    redis.call('HDEL', KEYS[1], inst)
  else
    sum = sum + tonumber(fields[i + 1])
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
    /// The instances whose heartbeat had lapsed at this instance's last heartbeat.
    dead: Arc<RwLock<Vec<String>>>,
    acquire: Script,
    release: Arc<Script>,
}

impl RedisConnections {
    /// Writes this instance's heartbeat and keeps renewing it until the backend stops.
    pub async fn start(shared: Arc<Shared>) -> Result<Self, StoreError> {
        let ttl = Duration::from_millis(shared.config.instance_ttl_ms.max(300));
        let script = Arc::new(LuaScript::new(HEARTBEAT));
        let dead = Arc::new(RwLock::new(heartbeat(&shared, &script, ttl).await?));
        let (s, d) = (shared.clone(), dead.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            // One warning when a check starts failing (its node is down), not one per tick.
            let (mut beat_failing, mut epoch_failing) = (false, false);
            loop {
                tokio::select! {
                    _ = s.stop.cancelled() => return,
                    _ = tick.tick() => {
                        let beat = heartbeat(&s, &script, ttl).await.map(|now_dead| {
                            *d.write().expect("dead lock") = now_dead;
                        });
                        report(beat, &mut beat_failing, "instance heartbeat");
                        // Notices Redis losing its data even on an idle instance.
                        let epoch = s.ensure_epoch().await.map(|_| ());
                        report(epoch, &mut epoch_failing, "reading the deployment's epoch");
                    }
                }
            }
        });
        Ok(Self {
            shared,
            dead,
            acquire: Script::new(ACQUIRE),
            release: Arc::new(Script::new(RELEASE)),
        })
    }

    fn user_key(&self, user: &str) -> String {
        self.shared
            .key(&format!("conn:{}", crate::store::user_tag(user)))
    }
}

/// Logs a periodic check's failure once when it starts failing, and its recovery.
fn report(result: Result<(), StoreError>, failing: &mut bool, what: &str) {
    match result {
        Err(e) if !*failing => {
            *failing = true;
            tracing::warn!(error = %e, "{what} failed; retrying every tick");
        }
        Err(e) => tracing::debug!(error = %e, "{what} failed again"),
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!("{what} works again");
        }
        Ok(()) => {}
    }
}

/// Renews this instance's heartbeat; returns the instances whose heartbeat lapsed.
async fn heartbeat(
    shared: &Shared,
    script: &LuaScript,
    ttl: Duration,
) -> Result<Vec<String>, StoreError> {
    let mut call = script.call(&[shared.key("instances")]);
    call.arg(&shared.instance)
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let mut answers: Vec<Vec<String>> = eval_many(shared, script, vec![call]).await?;
    Ok(answers.pop().unwrap_or_default())
}

#[async_trait]
impl ConnectionStore for RedisConnections {
    async fn acquire(&self, user: &str, max: usize) -> Result<bool, StoreError> {
        let mut invocation = self.acquire.prepare_invoke();
        invocation
            .key(self.user_key(user))
            .arg(&self.shared.instance)
            .arg(max);
        for id in self.dead.read().expect("dead lock").iter() {
            invocation.arg(id);
        }
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
