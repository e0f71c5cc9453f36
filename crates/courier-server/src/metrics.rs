//! Counters and one histogram, rendered in the Prometheus text format. Kept per server
//! instance (no global recorder), so several servers in one test process do not mix.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The server's metrics.
#[derive(Default)]
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
    labelled: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency_counts: [AtomicU64; 13],
    latency_sum_us: AtomicU64,
}

impl Metrics {
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

    /// Records one publish-to-deliver latency.
    pub fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_counts[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
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

    /// The text exposition, with gauges supplied by the caller.
    pub fn render(&self, channels: usize, history_events: usize, draining: bool) -> String {
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
        let name = "courier_publish_to_deliver_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from accepting an event to writing it to a subscriber.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += load(&self.latency_counts[i]);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += load(&self.latency_counts[LATENCY_BUCKETS.len()]);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            load(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {cumulative}");
        out
    }
}
