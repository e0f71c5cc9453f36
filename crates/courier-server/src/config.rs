//! Server configuration: embedded defaults, a TOML file, then `COURIER_*` environment
//! variables, each overriding the one before.
//!
//! Environment variables name a key by its path, upper-cased, with `__` between sections:
//! `COURIER_WS__PING_INTERVAL_MS=500`, `COURIER_RATE_LIMITS__ENABLED=false`. A few common keys
//! have short aliases: `COURIER_LISTEN`, `COURIER_JWT_SECRET`, `COURIER_LOG_FORMAT`,
//! `COURIER_LOG_LEVEL`, `COURIER_ALLOW_DEV_SECRET`, `COURIER_ENABLE_FAULT_INJECTION`,
//! `COURIER_BACKEND` (`memory`, `redis` or `redis-cluster`), `COURIER_REDIS_URL`, `COURIER_POSTGRES_URL`.
//! Values are read as TOML scalars or arrays (`true`, `5`, `["a","b"]`); anything else is a
//! string. A comma-separated value is accepted for list keys (`COURIER_CORS_ORIGINS=a,b`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The development secret the server starts with when none is configured. It is refused on
/// a non-loopback address unless `allow_dev_secret` is set.
pub const DEV_JWT_SECRET: &str = "courier-development-secret-change-me";

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8766";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8766`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Allow the development JWT secret on a non-loopback address.
    pub allow_dev_secret: bool,
    /// Switch on the fault-injection endpoints (refused unless listening on loopback).
    pub enable_fault_injection: bool,
    /// `human` or `json`.
    pub log_format: String,
    /// A `tracing` filter such as `info` or `courier_server=debug`.
    pub log_level: String,
    /// Origins allowed by CORS; `["*"]` allows any.
    pub cors_origins: Vec<String>,
    /// Largest event `data`, in bytes.
    pub max_payload_bytes: usize,
    /// Largest WebSocket frame or single-publish HTTP body, in bytes.
    pub max_frame_bytes: usize,
    /// Largest `POST /publish/batch` body, in bytes.
    pub max_batch_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// JWT settings.
    pub auth: AuthConfig,
    /// WebSocket settings.
    pub ws: WsConfig,
    /// HTTP timeouts and header limits.
    pub http: HttpConfig,
    /// Connection limits.
    pub connections: ConnectionLimits,
    /// Channel history.
    pub history: HistoryConfig,
    /// The idempotency window.
    pub idempotency: IdempotencyConfig,
    /// Rate limits.
    pub rate_limits: RateLimitConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// What `/health` checks.
    pub health: HealthConfig,
    /// Where history, fan-out, limits and idempotency live: `memory` (one instance, the
    /// default), `redis` (several instances on one Redis as one server; see [`RedisConfig`])
    /// or `redis-cluster` (the same on a Redis Cluster).
    pub backend: Backend,
    /// The Redis backend's settings (used when `backend` is `redis` or `redis-cluster`).
    pub redis: RedisConfig,
    /// The admin console and API (`/admin`).
    pub admin: AdminConfig,
}

/// Where the server keeps its shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// In process memory: one instance; history is lost on restart.
    #[default]
    Memory,
    /// In Redis: every instance on the same Redis behaves as one server, and history and
    /// the idempotency window survive restarts.
    Redis,
    /// In a Redis Cluster (Redis >= 7): as `redis`, with each channel's keys in one slot and
    /// each user's in one slot, fan-out through sharded pub/sub, and one epoch per channel.
    /// `redis.url` names one or more nodes (comma-separated); the others are discovered.
    RedisCluster,
}

impl Backend {
    /// Whether the shared state lives in Redis (one node or a cluster).
    pub fn is_redis(self) -> bool {
        matches!(self, Self::Redis | Self::RedisCluster)
    }
}

/// The Redis backend.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (`COURIER_REDIS_URL`); with the
    /// `redis-cluster` backend, one or more cluster nodes, comma-separated
    /// (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`).
    pub url: String,
    /// Prefix of every key and pub/sub channel, so several deployments can share a Redis.
    pub key_prefix: String,
    /// A Redis command that has not answered in this long fails (the request gets 503).
    pub command_timeout_ms: u64,
    /// Deadline of one connection attempt.
    pub connect_timeout_ms: u64,
    /// At start, keep trying to reach Redis this long before giving up.
    pub startup_timeout_ms: u64,
    /// An instance that has not renewed its heartbeat in this long counts as dead: the
    /// connections it held no longer count against per-user limits.
    pub instance_ttl_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "courier:".into(),
            command_timeout_ms: 2_000,
            connect_timeout_ms: 1_000,
            startup_timeout_ms: 30_000,
            instance_ttl_ms: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            allow_dev_secret: false,
            enable_fault_injection: false,
            log_format: "human".into(),
            log_level: "info".into(),
            cors_origins: vec!["*".into()],
            max_payload_bytes: courier_core::event::DEFAULT_MAX_PAYLOAD_BYTES,
            max_frame_bytes: courier_core::frame::DEFAULT_MAX_FRAME_BYTES,
            max_batch_bytes: 1024 * 1024,
            max_batch_events: 100,
            auth: AuthConfig::default(),
            ws: WsConfig::default(),
            http: HttpConfig::default(),
            connections: ConnectionLimits::default(),
            history: HistoryConfig::default(),
            idempotency: IdempotencyConfig::default(),
            rate_limits: RateLimitConfig::default(),
            shutdown: ShutdownConfig::default(),
            health: HealthConfig::default(),
            backend: Backend::default(),
            redis: RedisConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

/// JWT verification.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HS256 secret.
    pub jwt_secret: String,
    /// PEM of the RSA public key for RS256 tokens.
    pub rsa_public_key_pem: Option<String>,
    /// File holding the RSA public key (PEM), read at start.
    pub rsa_public_key_file: Option<String>,
    /// Algorithms accepted: any of `HS256`, `RS256`. RS256 needs a public key.
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// When set, a token must carry exactly this `iss`.
    pub issuer: Option<String>,
    /// When not empty, a token must carry an `aud` naming one of these. When empty, `aud`
    /// is not checked (tokens minted for another audience are then accepted too).
    pub audience: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: DEV_JWT_SECRET.into(),
            rsa_public_key_pem: None,
            rsa_public_key_file: None,
            algorithms: vec!["HS256".into(), "RS256".into()],
            leeway_secs: 0,
            issuer: None,
            audience: Vec::new(),
        }
    }
}

/// WebSocket protocol settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Deadline for the first (`connect`) frame.
    pub auth_timeout_ms: u64,
    /// The server pings this often.
    pub ping_interval_ms: u64,
    /// A client that has not answered a ping with `pong` this long after it is closed (4030).
    pub pong_timeout_ms: u64,
    /// Frames queued for one connection before it counts as a slow consumer (4008).
    pub outbound_queue: usize,
    /// Bytes of frames queued for one connection before it counts as a slow consumer
    /// (4008), however few frames that is (`COURIER_WS__MAX_QUEUED_BYTES`). One frame is
    /// always admitted into an empty queue. Bounds the memory a subscriber that stops
    /// reading holds: `outbound_queue` frames of large events would be far more.
    pub max_queued_bytes: usize,
    /// Most channels one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Most WebSocket connections that have not authenticated yet, server-wide; more are
    /// refused with 429 `CONNECTION_LIMIT_EXCEEDED` and `Retry-After: 1` (0: unlimited). With
    /// `auth_timeout_ms` this bounds what anonymous sockets can hold.
    pub max_unauthenticated: usize,
    /// WebSocket compression: `on` negotiates permessage-deflate (RFC 7692) with every
    /// client that offers it (browsers and Node's `ws` do by default), `off` declines it.
    /// On by default: an event is deflated once for all its subscribers, so the CPU it
    /// costs does not grow with fan-out, and typical 400-byte events shrink to about a sixth
    /// (subscribers that went live together share a deflate stream with context; see
    /// docs/protocol.md).
    pub compression: WsCompression,
    /// Messages smaller than this many bytes go uncompressed even on a compressed
    /// connection: deflating a short frame saves a few bytes at best.
    pub compression_min_bytes: usize,
}

/// `ws.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WsCompression {
    /// Decline permessage-deflate: every frame goes uncompressed.
    Off,
    /// Accept permessage-deflate when the client offers it.
    #[default]
    On,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            auth_timeout_ms: 5_000,
            ping_interval_ms: 15_000,
            pong_timeout_ms: 10_000,
            outbound_queue: 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            max_subscriptions: 1024,
            max_unauthenticated: 1_000,
            compression: WsCompression::On,
            compression_min_bytes: 256,
        }
    }
}

/// HTTP timeouts and header limits: what bounds a client that is slow on purpose.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection must deliver a request's headers within this (also the idle keep-alive
    /// timeout: the timer runs while a connection waits for its next request).
    pub header_timeout_ms: u64,
    /// A request body must arrive within this.
    pub body_timeout_ms: u64,
    /// Largest request head (request line and headers), in bytes; more is refused with 431.
    pub max_header_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Connection limits; 0 means unlimited.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// All WebSocket connections.
    pub max_total: usize,
    /// Connections of one `sub`.
    pub max_per_user: usize,
    /// Subscribers of one channel.
    pub max_per_channel: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_total: 10_000,
            max_per_user: 5,
            max_per_channel: 0,
        }
    }
}

/// Per-channel history.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Events kept per channel (memory and Redis history).
    pub max_events_per_channel: usize,
    /// Events older than this are dropped (memory and Redis history).
    pub max_age_secs: u64,
    /// Channels with history kept; the least recently written is dropped beyond this
    /// (memory history).
    pub max_channels: usize,
    /// Where history lives: `default` (where `backend` keeps everything) or `postgres`
    /// (PostgreSQL, with the memory or the Redis fan-out; see [`PostgresConfig`])
    /// (`COURIER_HISTORY__BACKEND`).
    pub backend: HistoryBackend,
    /// The PostgreSQL history's settings (used when `history.backend = "postgres"`).
    pub postgres: PostgresConfig,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_events_per_channel: 1000,
            max_age_secs: 3600,
            max_channels: 100_000,
            backend: HistoryBackend::default(),
            postgres: PostgresConfig::default(),
        }
    }
}

/// Where the history lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HistoryBackend {
    /// Where `backend` keeps everything (process memory or Redis).
    #[default]
    Default,
    /// In PostgreSQL: durable, retained for days, shared by every instance on it.
    Postgres,
}

/// The PostgreSQL history store.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/database` (`COURIER_POSTGRES_URL`).
    pub url: String,
    /// Events older than this are deleted by the retention task (7 days).
    pub max_age_secs: u64,
    /// Events kept per channel; older ones are deleted by the retention task.
    pub max_events_per_channel: u64,
    /// How often the retention task runs.
    pub retention_interval_ms: u64,
    /// Connections in the pool.
    pub pool_size: usize,
    /// A statement that has not answered in this long fails (the request gets 503).
    pub statement_timeout_ms: u64,
    /// At start, keep trying to reach PostgreSQL this long before giving up.
    pub startup_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://courier@127.0.0.1:5432/courier".into(),
            max_age_secs: 7 * 24 * 3600,
            max_events_per_channel: 1_000_000,
            retention_interval_ms: 60_000,
            pool_size: 8,
            statement_timeout_ms: 5_000,
            startup_timeout_ms: 30_000,
        }
    }
}

/// The idempotency window.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long an event id is remembered.
    pub window_secs: u64,
    /// Most ids remembered; the oldest is forgotten first.
    pub max_entries: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            window_secs: 300,
            max_entries: 100_000,
        }
    }
}

/// One GCRA bucket: `limit` requests per `window_secs`, `burst` back to back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitRule {
    /// Requests per window.
    pub limit: u64,
    /// Window length in seconds.
    pub window_secs: u64,
    /// Requests allowed back to back from idle; defaults to `limit`.
    pub burst: Option<u64>,
    /// Count and send headers but refuse nothing.
    pub shadow: bool,
}

impl Default for LimitRule {
    fn default() -> Self {
        Self {
            limit: 100,
            window_secs: 60,
            burst: None,
            shadow: false,
        }
    }
}

impl LimitRule {
    /// `limit` per minute.
    pub fn per_minute(limit: u64) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }
}

/// Rate limits.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// One switch: false turns every limit off (no headers either).
    pub enabled: bool,
    /// Every publish of one user.
    pub user: LimitRule,
    /// Per (user, event type), keyed by event-type prefix (`trade` matches `trade` and
    /// `trade.executed`; the longest matching prefix wins).
    pub types: BTreeMap<String, LimitRule>,
    /// Per (user, event type) for types no entry of `types` matches.
    pub fallback: LimitRule,
    /// Multiplier on every limit and burst by the token's `tier` claim. With limits on, a
    /// token naming a tier not listed here is refused.
    pub tiers: BTreeMap<String, f64>,
    /// Shadow mode for every rule at once: limits are measured, announced (`;shadow` in
    /// `RateLimit-Policy`) and counted in the metrics, but nothing is refused. For trying
    /// limits out on live traffic.
    pub shadow: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let types = [
            ("trade", 50),
            ("candles", 100),
            ("strategy", 10),
            ("subscription", 5),
            ("payment", 5),
            ("deposit", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), LimitRule::per_minute(v)))
        .collect();
        let tiers = [("standard", 1.0), ("premium", 5.0), ("service", 20.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Self {
            enabled: true,
            user: LimitRule::per_minute(600),
            types,
            fallback: LimitRule::per_minute(300),
            tiers,
            shadow: false,
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After the signal, keep serving with `/health/ready` and `/health` at 503 this long
    /// before closing (lets a load balancer notice).
    pub drain_delay_ms: u64,
    /// Exit at the latest this long after the signal.
    pub deadline_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay_ms: 0,
            deadline_ms: 10_000,
        }
    }
}

/// What `/health` checks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Resident memory above which `/health` reports `memory` (and so the instance) as
    /// `degraded`, in bytes; 0 means no limit. A warning before the hard limit (container or
    /// OOM killer) is reached.
    pub memory_soft_limit_bytes: u64,
}

/// The admin console and API (`/admin`, for tokens with the `admin` role).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The folder of the built console (`make console` writes `console/dist`). Empty: the
    /// `console/dist` of the source tree the binary was built from. Read at each request, so
    /// building the console needs no server restart; without it `/admin` answers 503 saying
    /// how to build it.
    pub console_dir: String,
    /// Rate-limit refusals kept in memory for `GET /admin/api/rate-limits` (the newest; this
    /// instance's only).
    pub rate_limit_log: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            console_dir: String::new(),
            rate_limit_log: 1000,
        }
    }
}

/// A configuration that could not be loaded or is unsafe.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML or an override is invalid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The development secret on a public address.
    #[error(
        "refusing the development JWT secret on non-loopback address {0}: set COURIER_JWT_SECRET (or auth.jwt_secret), or pass --allow-dev-secret"
    )]
    DevSecretOnPublicAddress(SocketAddr),
    /// Fault injection on a public address.
    #[error("fault injection is only allowed on a loopback address, not {0}")]
    FaultInjectionOnPublicAddress(SocketAddr),
}

const ALIASES: &[(&str, &str)] = &[
    ("COURIER_JWT_SECRET", "auth.jwt_secret"),
    ("COURIER_RSA_PUBLIC_KEY_FILE", "auth.rsa_public_key_file"),
    ("COURIER_REDIS_URL", "redis.url"),
    ("COURIER_POSTGRES_URL", "history.postgres.url"),
];

const LIST_KEYS: &[&str] = &["cors_origins", "auth.algorithms", "auth.audience"];

impl Config {
    /// Defaults, then `file` (if any), then the `COURIER_*` variables in `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let file_value: toml::Value = toml::from_str(&text)
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            merge(&mut value, file_value);
        }
        // Other programs use `COURIER_*` names too (an app's `COURIER_URL`, a test
        // harness's `COURIER_SERVER_BIN`): a variable whose first segment names no section
        // or key of ours is not meant for us, so it is skipped with a warning. Within a known
        // section, unknown keys are still errors (they are typos).
        let top_level: Vec<String> = value
            .as_table()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        for (name, raw) in env {
            let Some(path) = env_key(&name) else { continue };
            let first = path.split('.').next().unwrap_or_default();
            if !top_level.iter().any(|k| k == first) {
                eprintln!("courier-server: ignoring {name}: not a configuration key");
                continue;
            }
            let parsed = parse_env_value(&path, &raw);
            set_path(&mut value, &path, parsed)?;
        }
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        Ok(config)
    }

    /// Reads the RSA key file, if one is named.
    pub fn resolve_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.auth.rsa_public_key_file {
            let pem = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            self.auth.rsa_public_key_pem = Some(pem);
        }
        Ok(())
    }

    /// Refuses unsafe combinations for the address actually bound.
    pub fn check_safety(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        let loopback = addr.ip().is_loopback();
        if !loopback && self.auth.jwt_secret == DEV_JWT_SECRET && !self.allow_dev_secret {
            return Err(ConfigError::DevSecretOnPublicAddress(addr));
        }
        if !loopback && self.enable_fault_injection {
            return Err(ConfigError::FaultInjectionOnPublicAddress(addr));
        }
        Ok(())
    }

    /// The ping interval.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ws.ping_interval_ms.max(1))
    }
}

/// `COURIER_*` variables that are not configuration keys: read by the command line
/// (`COURIER_CONFIG`) and the log filter (`COURIER_LOG`).
const NOT_KEYS: &[&str] = &["COURIER_CONFIG", "COURIER_LOG"];

fn env_key(name: &str) -> Option<String> {
    if NOT_KEYS.contains(&name) {
        return None;
    }
    if let Some((_, path)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
        return Some((*path).to_owned());
    }
    let rest = name.strip_prefix("COURIER_")?;
    if rest.is_empty() {
        return None;
    }
    Some(
        rest.split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join("."),
    )
}

fn parse_env_value(path: &str, raw: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct Wrap {
        v: toml::Value,
    }
    if let Ok(Wrap { v }) = toml::from_str::<Wrap>(&format!("v = {raw}")) {
        if LIST_KEYS.contains(&path) && !v.is_array() {
            return toml::Value::Array(vec![v]);
        }
        return v;
    }
    if LIST_KEYS.contains(&path) {
        return toml::Value::Array(
            raw.split(',')
                .map(|s| toml::Value::String(s.trim().to_owned()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        );
    }
    toml::Value::String(raw.to_owned())
}

fn set_path(root: &mut toml::Value, path: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = cur.as_table_mut().ok_or_else(|| {
            ConfigError::Invalid(format!("`{path}` does not name a configuration key"))
        })?;
        if i + 1 == parts.len() {
            // A string where the default is a number or bool: keep the TOML parse error
            // clear by letting deserialization report it.
            table.insert((*part).to_owned(), value);
            return Ok(());
        }
        cur = table
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The environment variable that sets the key at `path` (`ws.ping_interval_ms` →
/// `COURIER_WS__PING_INTERVAL_MS`), and its short alias if it has one.
pub fn env_names(path: &str) -> (String, Option<&'static str>) {
    let long = format!("COURIER_{}", path.to_ascii_uppercase().replace('.', "__"));
    let alias = ALIASES.iter().find(|(_, p)| *p == path).map(|(a, _)| *a);
    (long, alias)
}

/// `docs/configuration.md`: every key with its variable, default and doc comment, generated
/// from the configuration types (their JSON schema for structure and doc comments, the
/// serialized [`Config::default`] for defaults), so the reference cannot drift from the code.
/// Printed by `courier-server config-reference`.
pub fn reference_markdown() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default();
    let defaults = toml::Value::try_from(Config::default())
        .unwrap_or_else(|_| toml::Value::Table(Default::default()));
    let mut sections: Vec<(String, String, Vec<[String; 4]>)> = Vec::new();
    reference_section(&schema, &schema, &defaults, "", "", &mut sections);
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from crates/courier-server/src/config.rs; do not edit by hand.\n     \
         Regenerate: cargo run -p courier-server -- config-reference > docs/configuration.md -->\n\n\
         The server reads its embedded defaults, then a TOML file (`--config FILE` or\n\
         `COURIER_CONFIG`), then `COURIER_*` environment variables, each overriding the one\n\
         before; command-line flags (`--listen`, `--backend`, ...) win over all three.\n\n\
         A variable names a key by its path, upper-cased, with `__` between sections\n\
         (`ws.ping_interval_ms` is `COURIER_WS__PING_INTERVAL_MS`). Values are read as TOML\n\
         (`true`, `5`, `[\"a\",\"b\"]`); anything else is a string. List keys also take a\n\
         comma-separated value (`COURIER_CORS_ORIGINS=https://a,https://b`). A `COURIER_*`\n\
         variable whose first segment is not a section or key here is ignored with a warning;\n\
         an unknown key inside a known section is an error. `COURIER_CONFIG` (the file) and\n\
         `COURIER_LOG` (a log filter that wins over `log_level`) are not keys.\n",
    );
    for (title, description, rows) in sections {
        out.push_str(&format!("\n## {title}\n\n"));
        if !description.is_empty() {
            out.push_str(&format!("{description}\n\n"));
        }
        out.push_str("| Key | Environment | Default | Description |\n|---|---|---|---|\n");
        for row in rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
    }
    out
}

/// The schema `s` points to (`$ref` into `$defs`), or `s` itself.
fn resolve<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> &'a serde_json::Value {
    s.get("$ref")
        .and_then(|r| r.as_str())
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| root.get("$defs")?.get(name))
        .unwrap_or(s)
}

/// A doc comment on one line (the reference is a table).
fn one_line(s: Option<&serde_json::Value>) -> String {
    s.and_then(|d| d.as_str())
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        // Rustdoc links (`[`Type`]`) read as plain code in Markdown.
        .replace("[`", "`")
        .replace("`]", "`")
}

/// A default as TOML would write it inline; maps as `{ k = v, ... }`.
fn inline_toml(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k} = {}", inline_toml(v)))
                .collect();
            if items.is_empty() {
                "{}".into()
            } else {
                format!("{{ {} }}", items.join(", "))
            }
        }
        toml::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(inline_toml).collect::<Vec<_>>().join(", ")
            )
        }
        other => other.to_string(),
    }
}

/// Appends the section of the object schema `s` at `prefix` (a sub-table becomes its own
/// section, after this one).
fn reference_section(
    root: &serde_json::Value,
    s: &serde_json::Value,
    defaults: &toml::Value,
    prefix: &str,
    description: &str,
    sections: &mut Vec<(String, String, Vec<[String; 4]>)>,
) {
    let title = if prefix.is_empty() {
        "Top level".to_owned()
    } else {
        format!("`[{prefix}]`")
    };
    let index = sections.len();
    sections.push((title, description.to_owned(), Vec::new()));
    let Some(props) = s.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    // Plain keys first, in declaration order; then sub-tables, each as its own section.
    let mut tables = Vec::new();
    for (key, prop) in props {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let target = resolve(root, prop);
        let doc = one_line(
            prop.get("description")
                .or_else(|| target.get("description")),
        );
        let default = defaults.get(key);
        if target.get("properties").is_some() {
            tables.push((path, target, doc, default));
            continue;
        }
        let (long, alias) = env_names(&path);
        let env = match alias {
            Some(a) => format!("`{long}`, `{a}`"),
            None => format!("`{long}`"),
        };
        let shown = default.map_or_else(|| "unset".to_owned(), |v| format!("`{}`", inline_toml(v)));
        let mut row = [format!("`{path}`"), env, shown, doc];
        // A map of tables (`rate_limits.types`): its entries' own keys, once.
        if let Some(entry) = target
            .get("additionalProperties")
            .map(|e| resolve(root, e))
            .filter(|e| e.get("properties").is_some())
        {
            let keys: Vec<&str> = entry["properties"]
                .as_object()
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            row[3].push_str(&format!(
                " Each entry `{path}.<name>` has the keys `{}`; by variable: `{long}__<NAME>__<KEY>`.",
                keys.join("`, `"),
            ));
        }
        sections[index].2.push(row);
    }
    let empty = toml::Value::Table(Default::default());
    for (path, target, doc, default) in tables {
        reference_section(
            root,
            target,
            default.unwrap_or(&empty),
            &path,
            &doc,
            sections,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_defaults_and_file() {
        let dir = std::env::temp_dir().join(format!("courier-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:0\"\n[ws]\nping_interval_ms = 99\n[rate_limits.types.trade]\nlimit = 7\n").unwrap();
        let env = vec![
            ("COURIER_JWT_SECRET".to_owned(), "s3cret".to_owned()),
            ("COURIER_WS__OUTBOUND_QUEUE".to_owned(), "8".to_owned()),
            (
                "COURIER_WS__MAX_QUEUED_BYTES".to_owned(),
                "65536".to_owned(),
            ),
            (
                "COURIER_CORS_ORIGINS".to_owned(),
                "http://a,http://b".to_owned(),
            ),
            (
                "COURIER_RATE_LIMITS__ENABLED".to_owned(),
                "false".to_owned(),
            ),
            ("PATH".to_owned(), "/bin".to_owned()),
            ("COURIER_LOG".to_owned(), "debug".to_owned()),
            ("COURIER_CONFIG".to_owned(), "/elsewhere.toml".to_owned()),
        ];
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.auth.jwt_secret, "s3cret");
        assert_eq!(c.ws.ping_interval_ms, 99);
        assert_eq!(c.ws.outbound_queue, 8);
        assert_eq!(c.ws.max_queued_bytes, 65536);
        assert_eq!(c.cors_origins, vec!["http://a", "http://b"]);
        assert!(!c.rate_limits.enabled);
        assert_eq!(c.rate_limits.types["trade"].limit, 7);
        assert_eq!(c.rate_limits.types["payment"].limit, 5);
        // Another program's variable is skipped; a typo inside one of our sections is not.
        assert!(Config::load(None, vec![("COURIER_URL".into(), "http://x".into())]).is_ok());
        assert!(Config::load(None, vec![("COURIER_WS__PINGG_MS".into(), "1".into())]).is_err());
        let c = Config::load(
            None,
            vec![
                ("COURIER_BACKEND".into(), "redis".into()),
                (
                    "COURIER_REDIS_URL".into(),
                    "redis://127.0.0.1:7000/2".into(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.backend, Backend::Redis);
        assert_eq!(c.redis.url, "redis://127.0.0.1:7000/2");
    }

    #[test]
    fn redis_example_config_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("courier-redis.example.toml");
        let c = Config::load(Some(&file), Vec::new()).unwrap();
        assert_eq!(c.backend, Backend::Redis);
        assert_eq!(c.redis.url, "redis://10.0.0.5:6379/0");
        assert_eq!(c.connections.max_per_user, 5);
    }

    /// `docs/configuration.md` is the generated reference, byte for byte.
    #[test]
    fn configuration_reference_is_up_to_date() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = reference_markdown();
        assert!(
            committed == generated,
            "docs/configuration.md is out of date with src/config.rs; regenerate it with\n    \
             cargo run -p courier-server -- config-reference > docs/configuration.md"
        );
        // Every key is in it with its variable, the aliases too.
        for needle in [
            "`ws.ping_interval_ms` | `COURIER_WS__PING_INTERVAL_MS`",
            "`COURIER_AUTH__JWT_SECRET`, `COURIER_JWT_SECRET`",
            "`health.memory_soft_limit_bytes`",
            "`rate_limits.types`",
        ] {
            assert!(generated.contains(needle), "{needle}");
        }
    }

    #[test]
    fn dev_secret_refused_on_public_address() {
        let c = Config::default();
        assert!(c.check_safety("127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(c.check_safety("0.0.0.0:1".parse().unwrap()).is_err());
        let c = Config {
            allow_dev_secret: true,
            ..Config::default()
        };
        assert!(c.check_safety("0.0.0.0:1".parse().unwrap()).is_ok());
    }
}
