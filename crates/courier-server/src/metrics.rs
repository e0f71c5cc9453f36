//! Counters and histograms, rendered in the Prometheus text format. Kept per server
//! instance (no global recorder), so several servers in one test process do not mix.
//!
//! Hot paths touch atomics only: label sets that are known up front (close-code classes,
//! auth-failure reasons, rate-limit buckets, decisions) are fixed arrays indexed by an enum
//! or a row number, so counting allocates nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Message sizes (bytes of an accepted event's frame).
const SIZE_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// Publish handler time, in seconds.
const HANDLER_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Rate-limit waits handed out, in seconds.
const RETRY_AFTER_BUCKETS: &[f64] = &[0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A histogram over fixed bounds; the sum is kept in integer units (`unit` of the exposed
/// value each) so observing is two atomic adds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    unit: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64], unit: f64) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            unit,
        }
    }

    /// Records `value` (in the exposed unit: seconds or bytes).
    pub fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        // Saturating float-to-int cast: a huge value cannot wrap the sum.
        self.sum
            .fetch_add((value / self.unit).round() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum.load(Ordering::Relaxed) as f64 * self.unit;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Why a connection ended, by the close code the server sent (or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseClass {
    /// 1000 or 1001: a normal close or the server going away (shutdown).
    Normal,
    /// 4001, 4002, 4004: the token was refused, expired, or never came.
    Auth,
    /// 4008: the client did not read fast enough.
    SlowConsumer,
    /// 4030: no pong in time.
    Heartbeat,
    /// 1008 and 4029: a connection or rate limit.
    Limit,
    /// 4000, 1007, 1009: the client sent something the protocol refuses.
    Protocol,
    /// 1011, 1012, 1013: the server could not go on (backend down, epoch changed).
    Server,
    /// Any other code the server sent.
    Other,
    /// The client closed or vanished first; the server sent no close code.
    Peer,
}

impl CloseClass {
    const ALL: [CloseClass; 9] = [
        CloseClass::Normal,
        CloseClass::Auth,
        CloseClass::SlowConsumer,
        CloseClass::Heartbeat,
        CloseClass::Limit,
        CloseClass::Protocol,
        CloseClass::Server,
        CloseClass::Other,
        CloseClass::Peer,
    ];

    /// The class of the close code the server sent (`None`: the peer went first).
    pub fn of(code: Option<u16>) -> Self {
        match code {
            None => Self::Peer,
            Some(1000 | 1001) => Self::Normal,
            Some(4001 | 4002 | 4004) => Self::Auth,
            Some(4008) => Self::SlowConsumer,
            Some(4030) => Self::Heartbeat,
            Some(1008 | 4029) => Self::Limit,
            Some(4000 | 1007 | 1009) => Self::Protocol,
            Some(1011..=1013) => Self::Server,
            Some(_) => Self::Other,
        }
    }

    /// The `class` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Auth => "auth",
            Self::SlowConsumer => "slow_consumer",
            Self::Heartbeat => "heartbeat",
            Self::Limit => "limit",
            Self::Protocol => "protocol",
            Self::Server => "server",
            Self::Other => "other",
            Self::Peer => "peer",
        }
    }
}

/// Why a token or request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// `TOKEN_EXPIRED`.
    Expired,
    /// `UNAUTHORIZED`: missing, malformed, bad signature, not yet valid, wrong `iss`/`aud`,
    /// unknown tier.
    Invalid,
    /// `FORBIDDEN_CHANNEL`: a valid token that may not read or publish there.
    Forbidden,
}

impl AuthFailure {
    const ALL: [AuthFailure; 3] = [Self::Expired, Self::Invalid, Self::Forbidden];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::Forbidden => "forbidden",
        }
    }

    /// The reason of a refused token, by its error code.
    pub fn of_code(code: courier_core::ErrorCode) -> Self {
        match code {
            courier_core::ErrorCode::TokenExpired => Self::Expired,
            courier_core::ErrorCode::ForbiddenChannel => Self::Forbidden,
            _ => Self::Invalid,
        }
    }
}

/// What one rate-limit bucket decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RlDecision {
    /// Within the limit.
    Allowed,
    /// Over the limit and refused.
    Blocked,
    /// Over the limit of a shadow bucket: counted, not refused.
    ShadowBlocked,
}

impl RlDecision {
    const ALL: [RlDecision; 3] = [Self::Allowed, Self::Blocked, Self::ShadowBlocked];

    /// The `decision` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Blocked => "blocked",
            Self::ShadowBlocked => "shadow_blocked",
        }
    }
}

/// The server's metrics.
pub struct Metrics {
    /// Open WebSocket connections (authenticated).
    pub connections: AtomicI64,
    /// WebSocket connections accepted since start.
    pub connections_opened: AtomicU64,
    /// Events accepted (not counting duplicates).
    pub published: AtomicU64,
    /// Duplicate publishes acknowledged without delivery.
    pub duplicates: AtomicU64,
    /// Event frames written to sockets (live and replayed).
    pub delivered: AtomicU64,
    /// Connections closed as slow consumers.
    pub slow_consumers: AtomicU64,
    /// WebSocket connections that negotiated permessage-deflate since start.
    pub compressed_connections: AtomicU64,
    /// Payload bytes of the text messages written to WebSockets, as written (compressed
    /// where the connection negotiated it and the message was large enough).
    pub ws_wire_bytes: AtomicU64,
    /// The same messages' payload bytes uncompressed: with `ws_wire_bytes`, what
    /// compression saves.
    pub ws_raw_bytes: AtomicU64,
    /// Idempotency-window lookups that found the id (a duplicate).
    pub idempotency_hits: AtomicU64,
    /// Idempotency-window lookups that did not (a new id claimed).
    pub idempotency_misses: AtomicU64,
    /// Bytes of each accepted event's frame.
    pub message_bytes: Histogram,
    /// Time to handle a publish: per HTTP request and per WebSocket `publish` frame.
    pub publish_duration: Histogram,
    /// Every wait the server hands out, in seconds: `Retry-After` on HTTP answers (429,
    /// 503), `retry_after_ms` of refused batch items and of WebSocket error frames. Record
    /// with [`Metrics::retry_after_ms`].
    pub retry_after: Histogram,
    labelled: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Histogram,
    disconnects: [AtomicU64; CloseClass::ALL.len()],
    auth_failures: [AtomicU64; AuthFailure::ALL.len()],
    /// Rate-limit bucket names by row, and per row one counter per decision.
    rl_buckets: Vec<String>,
    rl_decisions: Box<[[AtomicU64; RlDecision::ALL.len()]]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Metrics {
    /// Metrics with one rate-limit label set per bucket (row order of the limiter's
    /// table: `user`, `type:<prefix>`..., `fallback`), registered up front.
    pub fn new(rl_buckets: Vec<String>) -> Self {
        Self {
            connections: AtomicI64::new(0),
            connections_opened: AtomicU64::new(0),
            published: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            compressed_connections: AtomicU64::new(0),
            ws_wire_bytes: AtomicU64::new(0),
            ws_raw_bytes: AtomicU64::new(0),
            idempotency_hits: AtomicU64::new(0),
            idempotency_misses: AtomicU64::new(0),
            message_bytes: Histogram::new(SIZE_BUCKETS, 1.0),
            publish_duration: Histogram::new(HANDLER_BUCKETS, 1e-6),
            retry_after: Histogram::new(RETRY_AFTER_BUCKETS, 1e-3),
            labelled: Mutex::new(BTreeMap::new()),
            latency: Histogram::new(LATENCY_BUCKETS, 1e-6),
            disconnects: Default::default(),
            auth_failures: Default::default(),
            rl_decisions: rl_buckets.iter().map(|_| Default::default()).collect(),
            rl_buckets,
        }
    }

    /// Counts a WebSocket connection that ended, by the close code the server sent.
    pub fn disconnected(&self, code: Option<u16>) {
        let class = CloseClass::of(code);
        let i = CloseClass::ALL
            .iter()
            .position(|c| *c == class)
            .expect("every class is listed");
        self.disconnects[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Disconnections of one class so far.
    pub fn disconnects(&self, class: CloseClass) -> u64 {
        let i = CloseClass::ALL.iter().position(|c| *c == class);
        i.map_or(0, |i| self.disconnects[i].load(Ordering::Relaxed))
    }

    /// Counts a refused token or a forbidden channel.
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one bucket's decision for one event (`row` as in [`Metrics::new`]).
    pub fn rl_decision(&self, row: usize, decision: RlDecision) {
        if let Some(c) = self.rl_decisions.get(row) {
            c[decision as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts timing a publish request; the time is recorded when the guard drops, on
    /// whichever path the handler returns.
    pub fn publish_timer(&self) -> PublishTimer<'_> {
        PublishTimer {
            metrics: self,
            started: std::time::Instant::now(),
        }
    }

    /// Counts a rate-limit hit for a rule (event-type rule name, `user` or `fallback`).
    pub fn rate_limit_hit(&self, rule: &str, shadow: bool) {
        self.inc("rl", format!("event_type=\"{rule}\",shadow=\"{shadow}\""));
    }

    /// Counts a refused connection by limit type (`total`, `user`, `channel`).
    pub fn connection_rejected(&self, limit_type: &str) {
        self.inc("conn", format!("limit_type=\"{limit_type}\""));
    }

    /// Counts an invalid event by the field at fault.
    pub fn validation_failure(&self, field: &str) {
        let field: String = field
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
            .take(64)
            .collect();
        self.inc("val", format!("field=\"{field}\""));
    }

    fn inc(&self, family: &'static str, labels: String) {
        *self
            .labelled
            .lock()
            .expect("metrics lock")
            .entry((family, labels))
            .or_default() += 1;
    }

    /// Records one wait handed out to a client (see [`Metrics::retry_after`]).
    pub fn retry_after_ms(&self, ms: u64) {
        self.retry_after.observe(ms as f64 / 1000.0);
    }

    /// Records one publish-to-deliver latency.
    pub fn observe_latency(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    /// The sum of a labelled family, for `/stats`.
    pub fn family_total(&self, family: &str) -> u64 {
        self.labelled
            .lock()
            .expect("metrics lock")
            .iter()
            .filter(|((f, _), _)| *f == family)
            .map(|(_, v)| v)
            .sum()
    }

    /// The text exposition, with gauges (and the backend's epoch changes) supplied by the
    /// caller.
    pub fn render(
        &self,
        channels: usize,
        history_events: usize,
        draining: bool,
        epoch_changes: u64,
    ) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut simple = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        simple(
            "courier_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections.load(Ordering::Relaxed).to_string(),
        );
        simple(
            "courier_connections_opened_total",
            "counter",
            "WebSocket connections accepted.",
            load(&self.connections_opened).to_string(),
        );
        simple(
            "courier_history_epoch_changes_total",
            "counter",
            "Times the history epoch changed while this instance ran: the backend (Redis) lost its data, idempotency window included.",
            epoch_changes.to_string(),
        );
        simple(
            "courier_channels",
            "gauge",
            "Channels with subscribers.",
            channels.to_string(),
        );
        simple(
            "courier_history_events",
            "gauge",
            "Events held in history.",
            history_events.to_string(),
        );
        simple(
            "courier_events_published_total",
            "counter",
            "Events accepted for delivery.",
            load(&self.published).to_string(),
        );
        simple(
            "courier_events_duplicate_total",
            "counter",
            "Duplicate publishes acknowledged.",
            load(&self.duplicates).to_string(),
        );
        simple(
            "courier_events_delivered_total",
            "counter",
            "Event frames sent to subscribers.",
            load(&self.delivered).to_string(),
        );
        simple(
            "courier_slow_consumers_total",
            "counter",
            "Connections closed as slow consumers.",
            load(&self.slow_consumers).to_string(),
        );
        simple(
            "courier_ws_compressed_connections_total",
            "counter",
            "WebSocket connections that negotiated permessage-deflate.",
            load(&self.compressed_connections).to_string(),
        );
        simple(
            "courier_ws_sent_bytes_total",
            "counter",
            "Payload bytes of text messages written to WebSockets, as sent (compressed where negotiated).",
            load(&self.ws_wire_bytes).to_string(),
        );
        simple(
            "courier_ws_sent_raw_bytes_total",
            "counter",
            "Payload bytes of the same messages before compression.",
            load(&self.ws_raw_bytes).to_string(),
        );
        simple(
            "courier_draining",
            "gauge",
            "1 while shutting down.",
            u8::from(draining).to_string(),
        );
        let labelled = self.labelled.lock().expect("metrics lock").clone();
        for (family, name, help) in [
            (
                "rl",
                "courier_rate_limit_hits_total",
                "Publishes over a rate limit, by rule.",
            ),
            (
                "conn",
                "courier_connection_rejections_total",
                "Connections refused, by limit type.",
            ),
            (
                "val",
                "courier_validation_failures_total",
                "Invalid events, by field.",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((f, labels), v) in &labelled {
                if *f == family {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        self.latency.render(
            &mut out,
            "courier_publish_to_deliver_seconds",
            "Time from accepting an event to writing it to a subscriber.",
        );
        self.message_bytes.render(
            &mut out,
            "courier_message_size_bytes",
            "Bytes of each accepted event's frame.",
        );
        self.publish_duration.render(
            &mut out,
            "courier_publish_duration_seconds",
            "Time to handle a publish: per HTTP request (one event or a batch) and per WebSocket publish frame.",
        );
        self.retry_after.render(
            &mut out,
            "courier_retry_after_seconds",
            "Every wait handed out: Retry-After of HTTP 429/503 answers (the exact retry_after_ms when the body has one), retry_after_ms of refused batch items and of WebSocket error frames.",
        );
        let name = "courier_disconnections_total";
        let _ = writeln!(
            out,
            "# HELP {name} WebSocket connections ended, by close-code class (`peer`: the client went first).\n# TYPE {name} counter"
        );
        for (class, c) in CloseClass::ALL.iter().zip(&self.disconnects) {
            let _ = writeln!(out, "{name}{{class=\"{}\"}} {}", class.label(), load(c));
        }
        let name = "courier_auth_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Refused tokens and forbidden channels, by reason.\n# TYPE {name} counter"
        );
        for (reason, c) in AuthFailure::ALL.iter().zip(&self.auth_failures) {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", reason.label(), load(c));
        }
        let name = "courier_idempotency_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Idempotency-window lookups of publishes with an id: `hit` is a duplicate.\n# TYPE {name} counter\n{name}{{result=\"hit\"}} {}\n{name}{{result=\"miss\"}} {}",
            load(&self.idempotency_hits),
            load(&self.idempotency_misses)
        );
        let name = "courier_rl_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Rate-limit decisions per event and bucket (`shadow_blocked`: over a shadow limit, not refused).\n# TYPE {name} counter"
        );
        for (bucket, row) in self.rl_buckets.iter().zip(self.rl_decisions.iter()) {
            for (decision, c) in RlDecision::ALL.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "{name}{{bucket=\"{bucket}\",decision=\"{}\"}} {}",
                    decision.label(),
                    load(c)
                );
            }
        }
        out
    }
}

/// Times one publish request; see [`Metrics::publish_timer`].
pub struct PublishTimer<'a> {
    metrics: &'a Metrics,
    started: std::time::Instant,
}

impl Drop for PublishTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .publish_duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_classes_and_histograms_render() {
        let m = Metrics::new(vec!["user".into(), "fallback".into()]);
        m.disconnected(Some(4008));
        m.disconnected(None);
        m.disconnected(Some(1001));
        m.auth_failure(AuthFailure::Expired);
        m.rl_decision(1, RlDecision::ShadowBlocked);
        m.rl_decision(7, RlDecision::Blocked); // unknown row: ignored, no panic
        m.message_bytes.observe(100.0);
        m.retry_after.observe(1.5);
        let text = m.render(0, 0, false, 0);
        for line in [
            "courier_disconnections_total{class=\"slow_consumer\"} 1",
            "courier_disconnections_total{class=\"peer\"} 1",
            "courier_disconnections_total{class=\"normal\"} 1",
            "courier_auth_failures_total{reason=\"expired\"} 1",
            "courier_rl_requests_total{bucket=\"fallback\",decision=\"shadow_blocked\"} 1",
            "courier_rl_requests_total{bucket=\"user\",decision=\"allowed\"} 0",
            "courier_message_size_bytes_bucket{le=\"256\"} 1",
            "courier_message_size_bytes_sum 100",
            "courier_retry_after_seconds_bucket{le=\"1\"} 0",
            "courier_retry_after_seconds_bucket{le=\"2\"} 1",
            "courier_retry_after_seconds_sum 1.5",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
