//! Runs the shared policy vectors in `tests/vectors/` (backoff, Retry-After, rate-limit
//! headers, GCRA) through the core. Every language binding runs the same files.

use std::fs;

use courier_core::backoff::{Backoff, BackoffConfig};
use courier_core::gcra::Gcra;
use courier_core::rate_limit::{RateLimitInfo, parse_rate_limit_headers};
use courier_core::retry_after::parse_retry_after;
use courier_core::time::{Duration, Instant, SystemTime, UNIX_EPOCH, as_millis_u64};
use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Deserialize)]
struct File<C> {
    description: String,
    cases: Vec<C>,
}

fn load<C: DeserializeOwned>(name: &str) -> Vec<C> {
    let path = format!("{}/../../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file: File<C> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(!file.description.is_empty(), "{path}: no description");
    assert!(!file.cases.is_empty(), "{path}: no cases");
    file.cases
}

fn wall(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms)
}

fn ms(d: Duration) -> u64 {
    as_millis_u64(d)
}

/// Whole milliseconds rounded up: a wait is never reported shorter than it is.
fn ceil_ms(d: Duration) -> u64 {
    let sub_ms = d.subsec_nanos() % 1_000_000 != 0;
    ms(d).saturating_add(u64::from(sub_ms))
}

// ---------------------------------------------------------------------------- backoff

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffCase {
    name: String,
    config: BackoffConfig,
    seed: u64,
    steps: Vec<BackoffStep>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum BackoffStep {
    NextDelay {
        delay_ms: u64,
        attempts: Option<u32>,
    },
    ConnectionLasted {
        lasted_ms: u64,
        attempts: Option<u32>,
    },
    Reset {
        attempts: Option<u32>,
    },
}

#[test]
fn backoff_vectors() {
    let cases: Vec<BackoffCase> = load("backoff.json");
    assert!(cases.len() >= 4);
    for case in cases {
        let mut b = Backoff::new(case.config, case.seed);
        for (i, step) in case.steps.iter().enumerate() {
            let at = format!("{} step {i}", case.name);
            let attempts = match *step {
                BackoffStep::NextDelay { delay_ms, attempts } => {
                    assert_eq!(ms(b.next_delay()), delay_ms, "{at}");
                    attempts
                }
                BackoffStep::ConnectionLasted {
                    lasted_ms,
                    attempts,
                } => {
                    b.note_connection_lasted(Duration::from_millis(lasted_ms));
                    attempts
                }
                BackoffStep::Reset { attempts } => {
                    b.reset();
                    attempts
                }
            };
            if let Some(expected) = attempts {
                assert_eq!(b.attempts(), expected, "{at}: attempts");
            }
        }
    }
}

// ------------------------------------------------------------------------ retry_after

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryAfterCase {
    name: String,
    value: String,
    wall_now_unix_ms: u64,
    cap_ms: u64,
    delay_ms: Option<u64>,
}

#[test]
fn retry_after_vectors() {
    let cases: Vec<RetryAfterCase> = load("retry_after.json");
    assert!(cases.len() >= 15);
    for c in cases {
        let got = parse_retry_after(
            &c.value,
            wall(c.wall_now_unix_ms),
            Duration::from_millis(c.cap_ms),
        );
        assert_eq!(got.map(ms), c.delay_ms, "{}: {:?}", c.name, c.value);
    }
}

// ------------------------------------------------------------------ rate_limit_headers

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitCase {
    name: String,
    headers: Vec<(String, String)>,
    wall_now_unix_ms: u64,
    cap_ms: u64,
    expected: serde_json::Value,
    wait_ms: Option<u64>,
    is_empty: bool,
}

#[test]
fn rate_limit_header_vectors() {
    let cases: Vec<RateLimitCase> = load("rate_limit_headers.json");
    assert!(cases.len() >= 15);
    for c in cases {
        let info = parse_rate_limit_headers(
            c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            wall(c.wall_now_unix_ms),
            Duration::from_millis(c.cap_ms),
        );
        // The expected object is compared field for field with the serialized info, so a
        // vector must spell out every field (null for absent ones).
        let got = serde_json::to_value(&info).unwrap();
        assert_eq!(got, c.expected, "{}", c.name);
        assert_eq!(info.wait().map(ms), c.wait_ms, "{}: wait", c.name);
        assert_eq!(info.is_empty(), c.is_empty, "{}: is_empty", c.name);
    }
}

// ------------------------------------------------------------------------------- gcra

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GcraCase {
    name: String,
    /// `null` for [`Gcra::unlimited`].
    quota: Option<u64>,
    #[serde(default)]
    window_ms: u64,
    #[serde(default)]
    burst: u64,
    steps: Vec<GcraStep>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum GcraStep {
    Check {
        at_ms: u64,
        admitted: bool,
        wait_ms: u64,
    },
    WaitTime {
        at_ms: u64,
        wait_ms: u64,
    },
    BlockUntil {
        until_ms: u64,
    },
    Learn {
        at_ms: u64,
        info: RateLimitInfo,
    },
}

#[test]
fn gcra_vectors() {
    let cases: Vec<GcraCase> = load("gcra.json");
    // The vectors' times are offsets from an arbitrary origin.
    let origin = Instant::now();
    let at = |t: u64| origin + Duration::from_millis(t);
    for case in cases {
        let mut g = match case.quota {
            Some(q) => Gcra::new(q, Duration::from_millis(case.window_ms), case.burst),
            None => Gcra::unlimited(),
        };
        for (i, step) in case.steps.iter().enumerate() {
            let name = format!("{} step {i}", case.name);
            match step {
                &GcraStep::Check {
                    at_ms,
                    admitted,
                    wait_ms,
                } => {
                    let r = g.check(at(at_ms));
                    assert_eq!(r.is_ok(), admitted, "{name}: admitted");
                    assert_eq!(r.err().map_or(0, ceil_ms), wait_ms, "{name}: wait_ms");
                    assert_eq!(admitted, wait_ms == 0, "{name}: inconsistent vector");
                }
                &GcraStep::WaitTime { at_ms, wait_ms } => {
                    assert_eq!(ceil_ms(g.wait_time(at(at_ms))), wait_ms, "{name}");
                }
                &GcraStep::BlockUntil { until_ms } => g.block_until(at(until_ms)),
                GcraStep::Learn { at_ms, info } => g.learn(info, at(*at_ms)),
            }
        }
    }
}
