//! The Redis backend: every instance on one Redis behaves as one server.
//!
//! Keys (all under `redis.key_prefix`, `courier:` by default):
//!
//! | key | type | what |
//! |---|---|---|
//! | `epoch` | string | the history epoch, set once (`SET NX`); a new one only when Redis lost it |
//! | `seq:{channel}` | string | the channel's latest offset (`INCR`, never expires) |
//! | `h:{channel}` | stream | the channel's history; entry id `{offset}-0`, fields `e` (event JSON), `p` (epoch), `t` (Unix ms); trimmed by count and age, expires when idle |
//! | `ev:{channel}` | pub/sub | every appended event, published in the same script as the append |
//! | `rl:{bucket}:{sub}` | string | a GCRA bucket's theoretical arrival time (µs), expiring when full; `{bucket}` is `user`, `type:{prefix}` or `fallback` (one per user for every type no row matches) |
//! | `idem:{sub}:{id}` | string | `pending` while publishing (claimed with `SET NX GET`), then the first publish's position |
//! | `conn:{user}` | hash | connections per instance id |
//! | `inst:{id}` | string | an instance's heartbeat; it expires when the instance dies |
//!
//! One Lua script appends a channel's events of one request: it reads (or recreates) the
//! epoch, `INCRBY`s the channel's offset, `XADD`s the entries, `PUBLISH`es each encoded
//! frame, and trims. Redis runs scripts one at a time, so offsets are dense and every
//! instance's subscriber connection receives a channel's events in offset order. An instance
//! whose pub/sub connection was interrupted fills the hole from the stream when it is back
//! (see [`broker`]).
//!
//! A publish request (one event or a batch) costs a fixed number of round trips whatever its
//! size: each stage (idempotency claims with `SET NX GET`, which needs Redis >= 7.0; the
//! rate-limit script once per event; the appends, one script call per channel; the
//! completions) is one pipeline.
//!
//! Redis Cluster is not supported (the scripts touch keys of several slots); use one Redis,
//! with Sentinel for failover, `maxmemory-policy noeviction`, and AOF
//! (`appendonly yes`, `appendfsync always` for "acknowledged means durable").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Client, RedisError};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RedisConfig};
use crate::store::{DataLoss, HistoryStore, StoreError};
use crate::{ServerError, Stores};

pub mod broker;
pub mod connections;
pub mod history;
pub mod idempotency;
pub mod ratelimit;

pub use broker::RedisBroker;
pub use connections::RedisConnections;
pub use history::RedisHistory;
pub use idempotency::RedisIdempotency;
pub use ratelimit::RedisRateLimits;

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        StoreError(format!("redis: {e}"))
    }
}

/// What every Redis store shares: the client, a reconnecting multiplexed connection, the
/// key prefix and the epoch as last seen.
pub struct Shared {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    config: RedisConfig,
    instance: String,
    epoch: RwLock<Arc<str>>,
    /// Times the epoch changed after this instance first read it (Redis lost its data).
    epoch_changes: AtomicU64,
    /// When it last changed (Unix ms; 0: never).
    epoch_changed_at_ms: AtomicU64,
    /// The fan-out connection is subscribed (readiness).
    fanout_up: AtomicBool,
    stop: CancellationToken,
}

impl Shared {
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The epoch as last seen.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch.read().expect("epoch lock").clone()
    }

    fn set_epoch(&self, epoch: &str) {
        if *self.epoch() == *epoch {
            return;
        }
        let mut current = self.epoch.write().expect("epoch lock");
        if **current == *epoch {
            return;
        }
        // The first epoch read is no change; any later one means Redis lost its data.
        if !current.is_empty() {
            tracing::warn!(
                old = %current, epoch,
                "history epoch changed: Redis lost its data (history, offsets, and the \
                 idempotency window: ids acknowledged before are accepted again as new)"
            );
            self.epoch_changes.fetch_add(1, Ordering::Relaxed);
            self.epoch_changed_at_ms
                .store(crate::http::unix_ms(), Ordering::Relaxed);
        }
        *current = epoch.into();
    }

    /// What Redis lost while this instance ran.
    pub fn data_loss(&self) -> DataLoss {
        let at = self.epoch_changed_at_ms.load(Ordering::Relaxed);
        DataLoss {
            epoch_changes: self.epoch_changes.load(Ordering::Relaxed),
            last_at_ms: (at > 0).then_some(at),
        }
    }

    /// Reads the epoch, creating it when Redis has none (first start, or data lost).
    async fn ensure_epoch(&self) -> Result<Arc<str>, StoreError> {
        let candidate = new_epoch();
        let mut c = self.conn();
        let (_, epoch): ((), String) = redis::pipe()
            .cmd("SET")
            .arg(self.key("epoch"))
            .arg(&candidate)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(self.key("epoch"))
            .query_async(&mut c)
            .await
            .map(|(e,): (String,)| ((), e))?;
        self.set_epoch(&epoch);
        Ok(self.epoch())
    }
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Connects to `config.redis` (retrying until `startup_timeout_ms`), establishes the epoch
/// and this instance's heartbeat, and starts the fan-out; returns the stores. With
/// `history` (the history kept elsewhere, e.g. PostgreSQL), the fan-out publishes and fills
/// its holes from it, and the Redis streams are not used. `stop` ends the background tasks.
pub async fn connect(
    config: &Config,
    history: Option<Arc<dyn HistoryStore>>,
    stop: CancellationToken,
) -> Result<Stores, ServerError> {
    let rc = config.redis.clone();
    let client = Client::open(rc.url.as_str())
        .map_err(|e| ServerError::Backend(format!("redis.url: {e}")))?;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(rc.connect_timeout_ms.max(1))))
        .set_response_timeout(Some(Duration::from_millis(rc.command_timeout_ms.max(1))))
        // Fail fast while Redis is away (the request gets 503 and is retried by the
        // client); the next command starts a new attempt.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(rc.startup_timeout_ms);
    let conn = loop {
        match client
            .get_connection_manager_with_config(manager_config.clone())
            .await
        {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, url = %redacted(&rc.url), "waiting for Redis");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(ServerError::Backend(format!(
                    "cannot reach Redis at {}: {e}",
                    redacted(&rc.url)
                )));
            }
        }
    };
    let mut probe = conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut probe)
        .await
        .map_err(|e| ServerError::Backend(format!("redis: INFO server: {e}")))?;
    check_version(&info).map_err(ServerError::Backend)?;
    let shared = Arc::new(Shared {
        client,
        conn,
        prefix: rc.key_prefix.clone(),
        instance: format!("{}", uuid::Uuid::new_v4().simple()),
        config: rc,
        epoch: RwLock::new("".into()),
        epoch_changes: AtomicU64::new(0),
        epoch_changed_at_ms: AtomicU64::new(0),
        fanout_up: AtomicBool::new(false),
        stop: stop.clone(),
    });
    let epoch = shared
        .ensure_epoch()
        .await
        .map_err(|e| ServerError::Backend(e.to_string()))?;
    tracing::info!(epoch = %epoch, instance = %shared.instance, "Redis backend ready");
    let connections = RedisConnections::start(shared.clone())
        .await
        .map_err(|e| ServerError::Backend(e.to_string()))?;
    let broker = RedisBroker::start(shared.clone(), history.clone())
        .await
        .map_err(|e| ServerError::Backend(e.to_string()))?;
    let history = history.unwrap_or_else(|| {
        Arc::new(RedisHistory::new(
            shared.clone(),
            config.history.max_events_per_channel,
            Duration::from_secs(config.history.max_age_secs),
        ))
    });
    Ok(Stores {
        history,
        broker: Arc::new(broker),
        rate_limits: Arc::new(RedisRateLimits::new(shared.clone())),
        idempotency: Arc::new(RedisIdempotency::new(
            shared.clone(),
            Duration::from_secs(config.idempotency.window_secs),
        )),
        connections: Arc::new(connections),
        background: stop,
    })
}

/// The oldest Redis the backend runs on: idempotency claims use `SET … NX … GET`.
const MIN_VERSION: (u32, u32) = (7, 0);

/// Refuses a Redis older than [`MIN_VERSION`], from its `INFO server` text.
fn check_version(info: &str) -> Result<(), String> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .ok_or("redis: INFO server names no redis_version")?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        return Err(format!(
            "Redis {version} is too old: the redis backend needs Redis {}.{} or later \
             (idempotency claims use SET NX GET); upgrade Redis",
            MIN_VERSION.0, MIN_VERSION.1
        ));
    }
    Ok(())
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A dedicated connection for pub/sub, within the connect timeout.
async fn pubsub(shared: &Shared) -> Result<redis::aio::PubSub, StoreError> {
    let timeout = Duration::from_millis(shared.config.connect_timeout_ms.max(1));
    match tokio::time::timeout(timeout, shared.client.get_async_pubsub()).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError("redis: pub/sub connect timed out".into())),
    }
}

/// Runs a Redis call within the command timeout.
async fn timed<T>(
    shared: &Shared,
    f: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    let timeout = Duration::from_millis(shared.config.command_timeout_ms.max(1));
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError("redis: command timed out".into())),
    }
}

impl Shared {
    fn fanout_up(&self) -> bool {
        self.fanout_up.load(Ordering::SeqCst)
    }
}

/// A Lua script that can run many times in one pipelined round trip.
pub(crate) struct LuaScript {
    script: redis::Script,
    code: &'static str,
}

impl LuaScript {
    pub(crate) fn new(code: &'static str) -> Self {
        Self {
            script: redis::Script::new(code),
            code,
        }
    }

    /// One call of the script (`EVALSHA`), for [`eval_many`]; add the arguments to it.
    pub(crate) fn call<K: redis::ToRedisArgs>(&self, keys: &[K]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(keys.len());
        for k in keys {
            cmd.arg(k);
        }
        cmd
    }
}

/// Runs `calls` of `script`, in order, as one pipelined round trip within the command
/// timeout; one answer per call, each its own success or failure (an `Err` of the whole is a
/// connection failure: then no answer is known). Several calls are preceded by `SCRIPT LOAD`
/// in the same pipeline (cheap when loaded), so a Redis that lost its script cache cannot
/// answer some of them `NOSCRIPT` and run the others; a single call loads the script only
/// when asked to.
pub(crate) async fn eval_each<T: redis::FromRedisValue>(
    shared: &Shared,
    script: &LuaScript,
    calls: Vec<redis::Cmd>,
) -> Result<Vec<Result<T, StoreError>>, StoreError> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let run = |load: bool| {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if load {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.code).ignore();
        }
        for c in &calls {
            pipe.add_command(c.clone());
        }
        pipe
    };
    let mut c = shared.conn();
    let first = calls.len() == 1;
    let no_script = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
    let answers: Vec<redis::RedisResult<T>> = timed(shared, async {
        let answers: Vec<redis::RedisResult<T>> = run(!first).query_async(&mut c).await?;
        match answers.first() {
            Some(Err(e)) if first && e.kind() == no_script => run(true).query_async(&mut c).await,
            _ => Ok(answers),
        }
    })
    .await?;
    if answers.len() != calls.len() {
        return Err(StoreError("redis: a pipeline was answered oddly".into()));
    }
    Ok(answers
        .into_iter()
        .map(|r| r.map_err(StoreError::from))
        .collect())
}

/// [`eval_each`] where any failed call fails the whole.
pub(crate) async fn eval_many<T: redis::FromRedisValue>(
    shared: &Shared,
    script: &LuaScript,
    calls: Vec<redis::Cmd>,
) -> Result<Vec<T>, StoreError> {
    eval_each(shared, script, calls)
        .await?
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_older_than_7_is_refused_with_what_to_do() {
        assert_eq!(
            check_version("# Server\r\nredis_version:7.0.15\r\n"),
            Ok(())
        );
        assert_eq!(check_version("redis_version:8.2.1"), Ok(()));
        let old = check_version("redis_version:6.2.14\r\nredis_mode:standalone").unwrap_err();
        assert!(
            old.contains("6.2.14") && old.contains("7.0 or later"),
            "{old}"
        );
        assert!(check_version("nothing").is_err());
    }
}
