//! `GET /health`: an overall level and one entry per component.
//!
//! The level is the worst of the components': `websocket` is unhealthy while draining (the
//! instance is going away), `redis` (with that backend) is unhealthy when a PING fails and
//! degraded for one idempotency window after Redis lost its data (the epoch changed),
//! `postgres` (with the PostgreSQL history) is unhealthy when a `SELECT 1` fails, and
//! `memory` is degraded above `health.memory_soft_limit_bytes`. `healthy` and `degraded`
//! answer 200 (the instance still serves), `unhealthy` answers 503.

use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use crate::SharedState;
use crate::config::{Backend, HistoryBackend};
use crate::store::{DataLoss, HistoryStats};

/// How well a component, or the whole instance, is doing; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Everything works.
    Healthy,
    /// Serving, but something needs attention (memory above its soft limit).
    Degraded,
    /// Not serving properly (draining, or Redis unreachable): take it out of rotation.
    Unhealthy,
}

/// The `/health` body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthReport {
    /// The overall level, or `draining` while shutting down (then the HTTP status is 503).
    #[schema(example = "healthy")]
    pub status: &'static str,
    /// The overall level: the worst of the components'.
    pub level: Level,
    /// True once shutdown has begun.
    pub draining: bool,
    /// The server's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The history epoch.
    pub epoch: String,
    /// Open WebSocket connections (same as `components.websocket.connections`).
    pub connections: usize,
    /// Users with an open connection.
    pub users: usize,
    /// Channels with subscribers on this instance.
    pub channels: usize,
    /// History sizes (zero with Redis: not counted, it would scan).
    #[schema(value_type = Object)]
    pub history: HistoryStats,
    /// Per component.
    pub components: Components,
}

/// One entry per component.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Components {
    /// The WebSocket endpoint.
    pub websocket: WebSocketHealth,
    /// Redis; present only with `backend = "redis"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisHealth>,
    /// PostgreSQL, probed with `SELECT 1` (the same fields as `redis`); present only with
    /// `history.backend = "postgres"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<RedisHealth>,
    /// The process's memory.
    pub memory: MemoryHealth,
}

/// The WebSocket endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebSocketHealth {
    /// `unhealthy` while draining.
    pub level: Level,
    /// `accepting` or `draining`.
    pub status: &'static str,
    /// Open connections.
    pub connections: usize,
    /// Users with an open connection.
    pub users: usize,
}

/// A backend probed on each `/health`: Redis (PING), or PostgreSQL (`SELECT 1`) under `postgres`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RedisHealth {
    /// `unhealthy` when unreachable.
    pub level: Level,
    /// `reachable` or `unreachable`.
    pub status: &'static str,
    /// The probe's round trip, in milliseconds (when reachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Why it is unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Times Redis lost its data (the history epoch changed) while this instance ran.
    pub epoch_changes: u64,
    /// When this instance last saw the epoch change (Unix ms). For one idempotency window
    /// after it, an id acknowledged before the loss is accepted again as new, so the entry is
    /// `degraded` (`status: "data_lost"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_lost_at_ms: Option<u64>,
}

/// The process's memory.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryHealth {
    /// `degraded` above the soft limit.
    pub level: Level,
    /// Resident set size (`VmRSS`); null where `/proc` is not available.
    pub rss_bytes: Option<u64>,
    /// `health.memory_soft_limit_bytes`; null when not set.
    pub soft_limit_bytes: Option<u64>,
    /// Ids held by the idempotency window.
    pub idempotency_entries: usize,
    /// Events held in history.
    pub history_events: usize,
}

impl WebSocketHealth {
    /// The endpoint's entry: unhealthy while draining, since new connections are refused.
    pub fn new(draining: bool, connections: usize, users: usize) -> Self {
        Self {
            level: if draining {
                Level::Unhealthy
            } else {
                Level::Healthy
            },
            status: if draining { "draining" } else { "accepting" },
            connections,
            users,
        }
    }
}

impl RedisHealth {
    /// Redis's entry from one probe: its round trip, or why it failed.
    pub fn from_probe(probe: Result<Duration, String>) -> Self {
        match probe {
            Ok(rtt) => Self {
                level: Level::Healthy,
                status: "reachable",
                latency_ms: Some(rtt.as_secs_f64() * 1e3),
                error: None,
                epoch_changes: 0,
                data_lost_at_ms: None,
            },
            Err(e) => Self {
                level: Level::Unhealthy,
                status: "unreachable",
                latency_ms: None,
                error: Some(e),
                epoch_changes: 0,
                data_lost_at_ms: None,
            },
        }
    }

    /// Adds what Redis lost: a loss less than `window` (the idempotency window) before
    /// `now_ms` degrades a reachable Redis.
    pub fn with_data_loss(mut self, loss: DataLoss, window: Duration, now_ms: u64) -> Self {
        self.epoch_changes = loss.epoch_changes;
        self.data_lost_at_ms = loss.last_at_ms;
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let recent = loss
            .last_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < window_ms);
        if recent && self.level == Level::Healthy {
            self.level = Level::Degraded;
            self.status = "data_lost";
        }
        self
    }
}

impl MemoryHealth {
    /// Memory's entry: degraded above a soft limit (`0`: none). An unknown RSS is healthy:
    /// the check cannot tell, and failing over it would take healthy instances down.
    pub fn new(rss_bytes: Option<u64>, soft_limit_bytes: u64) -> Self {
        let limit = (soft_limit_bytes > 0).then_some(soft_limit_bytes);
        let over = matches!((rss_bytes, limit), (Some(rss), Some(limit)) if rss > limit);
        Self {
            level: if over {
                Level::Degraded
            } else {
                Level::Healthy
            },
            rss_bytes,
            soft_limit_bytes: limit,
            idempotency_entries: 0,
            history_events: 0,
        }
    }
}

impl Components {
    /// The worst level of any component.
    pub fn level(&self) -> Level {
        let redis = self.redis.as_ref().map_or(Level::Healthy, |r| r.level);
        let postgres = self.postgres.as_ref().map_or(Level::Healthy, |r| r.level);
        self.websocket
            .level
            .max(redis)
            .max(postgres)
            .max(self.memory.level)
    }
}

/// The resident set size, from `VmRSS` in `/proc/self/status` (reported in kB, so no
/// page-size guess is needed); `None` off Linux.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Probes every component and builds the report.
pub async fn report(state: &SharedState) -> HealthReport {
    let draining = state.is_draining();
    let history = state.history.stats().await;
    let redis = match state.config.backend {
        Backend::Redis | Backend::RedisCluster => {
            // Redis serves the fan-out whatever keeps the history (PostgreSQL is probed by
            // readiness).
            let started = Instant::now();
            let probe = state.broker.ready().await;
            Some(
                RedisHealth::from_probe(
                    probe.map(|()| started.elapsed()).map_err(|e| e.to_string()),
                )
                .with_data_loss(
                    state.history.data_loss(),
                    Duration::from_secs(state.config.idempotency.window_secs),
                    crate::http::unix_ms(),
                ),
            )
        }
        Backend::Memory => None,
    };
    let postgres = match state.config.history.backend {
        HistoryBackend::Postgres => {
            let started = Instant::now();
            let probe = state.history.ready().await;
            Some(RedisHealth::from_probe(
                probe.map(|()| started.elapsed()).map_err(|e| e.to_string()),
            ))
        }
        HistoryBackend::Default => None,
    };
    let mut memory = MemoryHealth::new(rss_bytes(), state.config.health.memory_soft_limit_bytes);
    memory.idempotency_entries = state.idempotency.entries();
    memory.history_events = history.events;
    let connections = state.connections.total();
    let users = state.connections.users();
    let components = Components {
        websocket: WebSocketHealth::new(draining, connections, users),
        redis,
        postgres,
        memory,
    };
    let level = components.level();
    HealthReport {
        status: match (draining, level) {
            (true, _) => "draining",
            (false, Level::Healthy) => "healthy",
            (false, Level::Degraded) => "degraded",
            (false, Level::Unhealthy) => "unhealthy",
        },
        level,
        draining,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.uptime().as_secs(),
        epoch: state.history.epoch().to_string(),
        connections,
        users,
        channels: state.broker.channel_count(),
        history,
        components,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn components(draining: bool, redis: Option<Result<Duration, String>>, rss: u64) -> Components {
        Components {
            websocket: WebSocketHealth::new(draining, 0, 0),
            redis: redis.map(RedisHealth::from_probe),
            postgres: None,
            memory: MemoryHealth::new(Some(rss), 1000),
        }
    }

    #[test]
    fn the_level_is_the_worst_component() {
        let ok = Some(Ok(Duration::from_micros(1500)));
        assert_eq!(components(false, None, 10).level(), Level::Healthy);
        assert_eq!(components(false, ok.clone(), 10).level(), Level::Healthy);
        assert_eq!(components(false, ok.clone(), 2000).level(), Level::Degraded);
        assert_eq!(components(true, ok, 10).level(), Level::Unhealthy);
        let down = components(false, Some(Err("connection refused".into())), 2000);
        assert_eq!(down.level(), Level::Unhealthy);
        let redis = down.redis.unwrap();
        assert_eq!((redis.status, redis.latency_ms), ("unreachable", None));
        let mut pg_down = components(false, None, 10);
        pg_down.postgres = Some(RedisHealth::from_probe(Err("refused".into())));
        assert_eq!(pg_down.level(), Level::Unhealthy);
        let up = RedisHealth::from_probe(Ok(Duration::from_micros(1500)));
        assert_eq!(up.latency_ms, Some(1.5));
        // Redis lost its data a minute ago: degraded for a 5-minute window, not for 30 s.
        let loss = DataLoss {
            epoch_changes: 1,
            last_at_ms: Some(1_000_000),
        };
        let window = Duration::from_secs(300);
        let lost =
            RedisHealth::from_probe(Ok(Duration::ZERO)).with_data_loss(loss, window, 1_060_000);
        assert_eq!((lost.level, lost.status), (Level::Degraded, "data_lost"));
        let old = RedisHealth::from_probe(Ok(Duration::ZERO)).with_data_loss(
            loss,
            Duration::from_secs(30),
            1_060_000,
        );
        assert_eq!(
            (old.level, old.status, old.epoch_changes),
            (Level::Healthy, "reachable", 1)
        );
        let down = RedisHealth::from_probe(Err("x".into())).with_data_loss(loss, window, 1_060_000);
        assert_eq!(down.level, Level::Unhealthy);
        // No limit configured, or RSS unknown: never degraded.
        assert_eq!(MemoryHealth::new(Some(u64::MAX), 0).level, Level::Healthy);
        assert_eq!(MemoryHealth::new(None, 1).level, Level::Healthy);
    }

    #[test]
    fn vm_rss_is_read_in_kb() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t    2048 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
