//! The Redis backend: every instance on one Redis, or on one Redis Cluster, behaves as one
//! server.
//!
//! Keys (all under `redis.key_prefix`, `courier:` by default). A channel's keys carry the hash
//! tag `{c:channel}` and a user's the tag `{u:user}`, so that on a cluster each channel's
//! offset, epoch, history and fan-out live in one slot, and each user's limits, ids and
//! connection counts in one slot:
//!
//! | key | type | what |
//! |---|---|---|
//! | `epoch` | string | the deployment's epoch, set once (`SET NX`); shown in `connected` and `/health` |
//! | `ep:{c:channel}` | string | the channel's history epoch, set once; a new one only when Redis lost it (never expires) |
//! | `seq:{c:channel}` | string | the channel's latest offset (`INCR`, never expires) |
//! | `h:{c:channel}` | stream | the channel's history; entry id `{offset}-0`, fields `e` (event JSON), `p` (epoch), `t` (Unix ms); trimmed by count and age, expires when idle |
//! | `ev:{c:channel}` | pub/sub | every appended event, published in the same script as the append (`SPUBLISH`, sharded, on a cluster) |
//! | `rl:{u:user}:{bucket}` | string | a GCRA bucket's theoretical arrival time (µs), expiring when full; `{bucket}` is `user`, `type:{prefix}` or `fallback` (one per user for every type no row matches) |
//! | `idem:{u:user}:{id}` | string | `pending` while publishing (claimed with `SET NX GET`), then the first publish's position |
//! | `conn:{u:user}` | hash | connections per instance id |
//! | `instances` | sorted set | instance ids scored by when their heartbeat lapses (Unix ms) |
//!
//! One Lua script appends a channel's events of one request: it reads (or creates) the
//! channel's epoch, `INCRBY`s the channel's offset, `XADD`s the entries, publishes them in one
//! message, and trims. Redis runs scripts one at a time, so offsets are dense and every
//! instance's subscriber connection receives a channel's events in offset order. An instance
//! whose pub/sub connection was interrupted fills the hole from the stream when it is back
//! (see [`broker`]).
//!
//! A publish request (one event or a batch) costs a fixed number of round trips whatever its
//! size: each stage (idempotency claims with `SET NX GET`, which needs Redis >= 7.0; the
//! rate-limit script once per event; the appends, one script call per channel; the
//! completions) is one pipeline. On a cluster, a stage's commands go as one pipeline per
//! hash tag, all at once: a user's are one pipeline, a batch's channels one each.
//!
//! Each channel has its own epoch, so that losing one cluster node changes the epoch of its
//! channels only. Run Redis with `maxmemory-policy noeviction` and AOF (`appendonly yes`,
//! `appendfsync always` for "acknowledged means durable"); on one Redis, Sentinel for
//! failover; on a cluster, a replica per master.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use courier_core::ChannelName;
use redis::aio::ConnectionManager;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
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

/// The command connection: to one Redis, or to a cluster (each command goes to the node
/// serving its keys' slot).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One Redis, reconnecting.
    Single(ConnectionManager),
    /// A Redis Cluster, following its slots.
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the fan-out connects: the Redis, or the cluster's nodes.
enum Nodes {
    Single(Client),
    Cluster(Vec<String>),
}

/// Channels whose epoch an instance remembers to notice a change; past this many it forgets
/// them all and starts again (a change is then noticed for the channels seen since).
const EPOCHS_REMEMBERED: usize = 100_000;

/// What every Redis store shares: the connection, the key prefix, and the epochs as last
/// seen.
pub struct Shared {
    nodes: Nodes,
    conn: Conn,
    prefix: String,
    config: RedisConfig,
    instance: String,
    /// The deployment's epoch (for `connected` and `/health`; history epochs are per
    /// channel).
    epoch: RwLock<Arc<str>>,
    /// Each channel's history epoch as last seen.
    channel_epochs: Mutex<HashMap<ChannelName, Arc<str>>>,
    /// Times an epoch (the deployment's or a channel's) changed after this instance first
    /// read it (Redis lost data).
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

    /// A key of `channel`'s, `{prefix}{kind}:{c:channel}`: every key of a channel is in one
    /// cluster slot (the tag is cut at the first `}` the same way in each of them).
    fn channel_key(&self, kind: &str, channel: &ChannelName) -> String {
        format!("{}{kind}:{{c:{channel}}}", self.prefix)
    }

    /// Whether the backend is a Redis Cluster.
    fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The deployment's epoch.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch.read().expect("epoch lock").clone()
    }

    /// Records the epoch `channel`'s history was read or written in, noting a change (Redis
    /// lost the channel's data); returns it.
    fn saw_epoch(&self, channel: &ChannelName, epoch: &str) -> Arc<str> {
        let mut epochs = self.channel_epochs.lock().expect("epochs lock");
        if let Some(known) = epochs.get(channel) {
            if **known == *epoch {
                return known.clone();
            }
            tracing::warn!(
                channel = %channel, old = %known, epoch,
                "history epoch changed: Redis lost the channel's data (its history and \
                 offsets, and the idempotency window of its node: ids acknowledged before \
                 are accepted again as new)"
            );
            self.note_loss();
        } else if epochs.len() >= EPOCHS_REMEMBERED {
            epochs.clear();
        }
        let epoch: Arc<str> = epoch.into();
        epochs.insert(channel.clone(), epoch.clone());
        epoch
    }

    /// What Redis lost while this instance ran.
    pub fn data_loss(&self) -> DataLoss {
        let at = self.epoch_changed_at_ms.load(Ordering::Relaxed);
        DataLoss {
            epoch_changes: self.epoch_changes.load(Ordering::Relaxed),
            last_at_ms: (at > 0).then_some(at),
        }
    }

    /// Reads the deployment's epoch, creating it when Redis has none; a change after the
    /// first read means Redis (or, on a cluster, the key's node) lost its data. Read at
    /// start and at every heartbeat, so every instance notices, whatever channels it uses.
    async fn ensure_epoch(&self) -> Result<Arc<str>, StoreError> {
        let epoch = set_once(self, self.key("epoch")).await?;
        let mut current = self.epoch.write().expect("epoch lock");
        if **current != *epoch {
            if !current.is_empty() {
                tracing::warn!(
                    old = %current, epoch,
                    "the deployment's epoch changed: Redis lost its data"
                );
                self.note_loss();
            }
            *current = epoch.into();
        }
        Ok(current.clone())
    }

    fn note_loss(&self) {
        self.epoch_changes.fetch_add(1, Ordering::Relaxed);
        self.epoch_changed_at_ms
            .store(crate::http::unix_ms(), Ordering::Relaxed);
    }

    /// `channel`'s epoch and latest offset, creating its epoch when it has none (a new
    /// channel, or Redis lost it).
    async fn channel_head(&self, channel: &ChannelName) -> Result<(Arc<str>, u64), StoreError> {
        let mut c = self.conn();
        let epoch_key = self.channel_key("ep", channel);
        let (latest, epoch): (Option<u64>, Option<String>) = timed(
            self,
            redis::cmd("MGET")
                .arg(self.channel_key("seq", channel))
                .arg(&epoch_key)
                .query_async(&mut c),
        )
        .await?;
        let epoch = match epoch {
            Some(e) => e,
            None => set_once(self, epoch_key).await?,
        };
        Ok((self.saw_epoch(channel, &epoch), latest.unwrap_or(0)))
    }
}

/// Sets `key` to a new epoch unless it has one (`SET NX GET`); returns the one it holds.
async fn set_once(shared: &Shared, key: String) -> Result<String, StoreError> {
    let candidate = new_epoch();
    let mut c = shared.conn();
    let before: Option<String> = timed(
        shared,
        redis::cmd("SET")
            .arg(key)
            .arg(&candidate)
            .arg("NX")
            .arg("GET")
            .query_async(&mut c),
    )
    .await?;
    Ok(before.unwrap_or(candidate))
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
    if rc.key_prefix.contains(['{', '}']) {
        return Err(ServerError::Backend(format!(
            "redis.key_prefix `{}` has a brace: keys carry hash tags per channel and per \
             user, which a brace in the prefix would break; use a prefix without `{{` or `}}`",
            rc.key_prefix
        )));
    }
    let cluster = config.backend == crate::config::Backend::RedisCluster;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(rc.startup_timeout_ms);
    let (nodes, conn) = loop {
        let attempt = if cluster {
            connect_cluster(&rc).await
        } else {
            connect_single(&rc).await
        };
        match attempt {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < deadline && !e.is_config() => {
                tracing::warn!(error = %e.message(), url = %redacted(&rc.url), "waiting for Redis");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(ServerError::Backend(format!(
                    "cannot reach Redis at {}: {}",
                    redacted(&rc.url),
                    e.message()
                )));
            }
        }
    };
    let mut probe = conn.clone();
    let info: String = match &mut probe {
        Conn::Single(c) => redis::cmd("INFO").arg("server").query_async(c).await,
        // One node answers for the version: every node of a cluster runs the same.
        Conn::Cluster(c) => c
            .route_command(redis::cmd("INFO").arg("server").clone(), random_node())
            .await
            .and_then(|v| redis::from_redis_value(v).map_err(RedisError::from)),
    }
    .map_err(|e| ServerError::Backend(format!("redis: INFO server: {e}")))?;
    check_version(&info).map_err(ServerError::Backend)?;
    let shared = Arc::new(Shared {
        nodes,
        conn,
        prefix: rc.key_prefix.clone(),
        instance: format!("{}", uuid::Uuid::new_v4().simple()),
        config: rc,
        epoch: RwLock::new("".into()),
        channel_epochs: Mutex::new(HashMap::new()),
        epoch_changes: AtomicU64::new(0),
        epoch_changed_at_ms: AtomicU64::new(0),
        fanout_up: AtomicBool::new(false),
        stop: stop.clone(),
    });
    let epoch = shared
        .ensure_epoch()
        .await
        .map_err(|e| ServerError::Backend(e.to_string()))?;
    tracing::info!(epoch = %epoch, instance = %shared.instance, cluster, "Redis backend ready");
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

/// Why a connection attempt failed: a setting that no retry mends, or Redis not reachable.
enum ConnectError {
    Config(String),
    Unreachable(String),
}

impl ConnectError {
    fn is_config(&self) -> bool {
        matches!(self, Self::Config(_))
    }

    fn message(&self) -> &str {
        match self {
            Self::Config(m) | Self::Unreachable(m) => m,
        }
    }
}

/// Route to any one node of the cluster.
fn random_node() -> redis::cluster_routing::RoutingInfo {
    redis::cluster_routing::RoutingInfo::SingleNode(
        redis::cluster_routing::SingleNodeRoutingInfo::Random,
    )
}

async fn connect_single(rc: &RedisConfig) -> Result<(Nodes, Conn), ConnectError> {
    let client = Client::open(rc.url.as_str())
        .map_err(|e| ConnectError::Config(format!("redis.url: {e}")))?;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(rc.connect_timeout_ms.max(1))))
        .set_response_timeout(Some(Duration::from_millis(rc.command_timeout_ms.max(1))))
        // Fail fast while Redis is away (the request gets 503 and is retried by the
        // client); the next command starts a new attempt.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let conn = client
        .get_connection_manager_with_config(manager_config)
        .await
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    Ok((Nodes::Single(client), Conn::Single(conn)))
}

/// The seed nodes of `redis.url` (comma-separated).
fn cluster_seeds(rc: &RedisConfig) -> Vec<String> {
    rc.url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A cluster client over `seeds`; `push` receives its pub/sub messages (RESP3).
fn cluster_client(
    rc: &RedisConfig,
    seeds: &[String],
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<ClusterClient, ConnectError> {
    let mut builder = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(Duration::from_millis(rc.connect_timeout_ms.max(1)))
        .response_timeout(Duration::from_millis(rc.command_timeout_ms.max(1)))
        // A slot whose master is down fails its requests fast (503, retried by the
        // client) instead of holding them through many attempts.
        .retries(1)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(tx) = push {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx);
    }
    builder
        .build()
        .map_err(|e| ConnectError::Config(format!("redis.url (cluster nodes): {e}")))
}

async fn connect_cluster(rc: &RedisConfig) -> Result<(Nodes, Conn), ConnectError> {
    let seeds = cluster_seeds(rc);
    if seeds.is_empty() {
        return Err(ConnectError::Config(
            "redis.url names no cluster node; give one or more, comma-separated".into(),
        ));
    }
    let conn = cluster_client(rc, &seeds, None)?
        .get_async_connection()
        .await
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    Ok((Nodes::Cluster(seeds), Conn::Cluster(conn)))
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

/// A connection of the fan-out's own: a pub/sub connection to the one Redis, or a RESP3
/// cluster connection whose messages arrive on the receiver (it resubscribes by itself when
/// a node comes back, saying so with an `SSUBSCRIBE` push).
pub(crate) enum FanoutConn {
    Single(redis::aio::PubSub),
    Cluster(
        ClusterConnection,
        tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    ),
}

/// Opens the fan-out's connection, within the connect timeout.
async fn fanout_connection(shared: &Shared) -> Result<FanoutConn, StoreError> {
    let timeout = Duration::from_millis(shared.config.connect_timeout_ms.max(1));
    let open = async {
        match &shared.nodes {
            Nodes::Single(client) => Ok(FanoutConn::Single(client.get_async_pubsub().await?)),
            Nodes::Cluster(seeds) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let client = cluster_client(&shared.config, seeds, Some(tx))
                    .map_err(|e| StoreError(e.message().to_owned()))?;
                Ok(FanoutConn::Cluster(
                    client.get_async_connection().await?,
                    rx,
                ))
            }
        }
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(r) => r,
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

    /// Whether Redis answers (on a cluster, any one node: a master that is down fails its
    /// own slots' requests, not the instance).
    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = match self.conn() {
            Conn::Single(mut c) => timed(self, redis::cmd("PING").query_async(&mut c)).await?,
            Conn::Cluster(mut c) => {
                let pong = timed(self, c.route_command(redis::cmd("PING"), random_node())).await?;
                redis::from_redis_value(pong).map_err(RedisError::from)?
            }
        };
        Ok(())
    }
}

/// A Lua script that can run many times in one pipelined round trip.
pub(crate) struct LuaScript {
    script: redis::Script,
    code: &'static str,
}

/// One call of a [`LuaScript`], and the hash tag of its first key (calls with one tag run on
/// one cluster node, in order).
pub(crate) struct ScriptCall {
    cmd: redis::Cmd,
    tag: String,
}

impl ScriptCall {
    /// Adds an argument (`ARGV`).
    pub(crate) fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.cmd.arg(arg);
        self
    }
}

/// The part of `key` Redis Cluster hashes: between the first `{` and the next `}` when that
/// is not empty, else the whole key.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

impl LuaScript {
    pub(crate) fn new(code: &'static str) -> Self {
        Self {
            script: redis::Script::new(code),
            code,
        }
    }

    /// One call of the script (`EVALSHA`), for [`eval_many`]; add the arguments to it.
    pub(crate) fn call(&self, keys: &[String]) -> ScriptCall {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(keys.len());
        for k in keys {
            cmd.arg(k);
        }
        let tag = keys.first().map_or("", |k| hash_tag(k)).to_owned();
        ScriptCall { cmd, tag }
    }
}

/// Runs `calls` of `script`, in order, as one pipelined round trip within the command
/// timeout; one answer per call, each its own success or failure (an `Err` of the whole is a
/// connection failure: then no answer is known). Several calls are preceded by `SCRIPT LOAD`
/// in the same pipeline (cheap when loaded), so a Redis that lost its script cache cannot
/// answer some of them `NOSCRIPT` and run the others; a single call loads the script only
/// when asked to.
///
/// On a cluster, the calls of one hash tag go as one such pipeline to their node, and the
/// tags' pipelines all at once; a node that fails fails its calls alone.
pub(crate) async fn eval_each<T: redis::FromRedisValue>(
    shared: &Shared,
    script: &LuaScript,
    calls: Vec<ScriptCall>,
) -> Result<Vec<Result<T, StoreError>>, StoreError> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    if !shared.is_cluster() {
        let cmds = calls.into_iter().map(|c| c.cmd).collect();
        return eval_pipelined(shared, script, cmds).await;
    }
    // Group by tag, keeping each call's place.
    let mut groups: Vec<(String, Vec<usize>, Vec<redis::Cmd>)> = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        match groups.iter_mut().find(|(tag, ..)| *tag == call.tag) {
            Some((_, places, cmds)) => {
                places.push(i);
                cmds.push(call.cmd);
            }
            None => groups.push((call.tag, vec![i], vec![call.cmd])),
        }
    }
    let total = groups.iter().map(|(_, p, _)| p.len()).sum();
    let answered = futures_util::future::join_all(
        groups
            .iter()
            .map(|(_, _, cmds)| eval_pipelined::<T>(shared, script, cmds.clone())),
    )
    .await;
    let mut answers: Vec<Option<Result<T, StoreError>>> = (0..total).map(|_| None).collect();
    for ((_, places, _), group) in groups.iter().zip(answered) {
        match group {
            Ok(results) => {
                for (&i, r) in places.iter().zip(results) {
                    answers[i] = Some(r);
                }
            }
            Err(e) => {
                for &i in places {
                    answers[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(StoreError("redis: a call got no answer".into()))))
        .collect())
}

/// [`eval_each`]'s one pipeline (every call on one node).
async fn eval_pipelined<T: redis::FromRedisValue>(
    shared: &Shared,
    script: &LuaScript,
    calls: Vec<redis::Cmd>,
) -> Result<Vec<Result<T, StoreError>>, StoreError> {
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
    calls: Vec<ScriptCall>,
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
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag("courier:seq:{c:trades}"), "c:trades");
        assert_eq!(hash_tag("courier:h:{c:a}b}"), "c:a");
        assert_eq!(hash_tag("courier:ep:{c:a}b}"), "c:a");
        assert_eq!(hash_tag("courier:epoch"), "courier:epoch");
        assert_eq!(hash_tag("x{}y{z}"), "x{}y{z}");
        assert_eq!(hash_tag("rl:{u:}}:user"), "u:");
    }

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
