//! History stores: append throughput, then the latency of a 100-event replay page
//! (`GET /history/{channel}`) with `--stored` events held in one channel.
//!
//! `--backend memory|redis|postgres` (`--url` for the latter two). The server runs
//! in-process with rate limits off; appends go straight to its history (8 tasks, 8 channels,
//! `--seconds`), then one channel is filled to `--stored` events (PostgreSQL: one
//! `INSERT … SELECT generate_series` of the same event, so the fill does not take minutes),
//! and 1,000 pages at random offsets are read over HTTP, forwards and backwards, one at a
//! time. Prints `{"backend", "append_per_sec", "stored", "forward": {p50_ms, p99_ms},
//! "backward": {…}}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier_bench::percentile;
use courier_core::{ChannelName, Event};
use courier_server::auth::{Role, claims_for, sign_hs256};
use courier_server::config::{Backend, HistoryBackend};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn event(channel: &ChannelName, i: u64) -> Event {
    Event::new(
        format!("h{i}"),
        "backtest.progress",
        channel.clone(),
        &serde_json::json!({"backtest_id": "b", "percent": 50.0}),
        Default::default(),
    )
}

async fn pages(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    stored: u64,
    backward: bool,
) -> (f64, f64) {
    let mut samples = Vec::with_capacity(1000);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..1000 {
        // xorshift: the same offsets every run.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = x % stored.saturating_sub(100).max(1);
        let query = if backward {
            format!("before={}&limit=100", at + 101)
        } else {
            format!("after={at}&limit=100")
        };
        let start = Instant::now();
        let r = http
            .get(format!("{url}?{query}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("history request");
        assert!(r.status().is_success(), "history answered {}", r.status());
        let body: serde_json::Value = r.json().await.expect("a page");
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(
            body["events"].as_array().map(Vec::len),
            Some(100),
            "a full page"
        );
    }
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

#[tokio::main]
async fn main() {
    let backend = arg("--backend").unwrap_or_else(|| "memory".into());
    let stored: u64 = arg("--stored").map_or(1_000_000, |s| s.parse().expect("--stored N"));
    let seconds: f64 = arg("--seconds").map_or(5.0, |s| s.parse().expect("--seconds S"));
    let mut config = courier_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    config.auth.jwt_secret = "history-bench-secret".into();
    config.rate_limits.enabled = false;
    config.history.max_events_per_channel = (stored as usize) * 2;
    config.history.max_age_secs = 24 * 3600;
    match backend.as_str() {
        "memory" => {}
        "redis" => {
            config.backend = Backend::Redis;
            config.redis.url = arg("--url").expect("--url redis://…");
            config.redis.key_prefix = format!("hbench{}:", std::process::id());
        }
        "postgres" => {
            config.history.backend = HistoryBackend::Postgres;
            config.history.postgres.url = arg("--url").expect("--url postgres://…");
        }
        other => panic!("unknown --backend {other}"),
    }
    let pg_url = config.history.postgres.url.clone();
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let server = courier_server::start(config, listener)
        .await
        .expect("server starts");
    let history = server.state().history.clone();

    // Append throughput: 8 tasks, one channel each.
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..8 {
        let (history, done) = (history.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let ch = ChannelName::new(format!("bench.append{lane}")).unwrap();
            let mut i = 0;
            while Instant::now() < deadline {
                history.append(event(&ch, i)).await.expect("append");
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let append_per_sec = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();

    // One channel with `stored` events.
    let ch = ChannelName::new("bench.replay").unwrap();
    if backend == "postgres" {
        let (c, conn) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let json = event(&ch, 0).to_json();
        let n = i64::try_from(stored).unwrap();
        c.execute(
            "INSERT INTO courier_events (channel, \"offset\", stored_at, event) \
             SELECT $1, g, (extract(epoch from clock_timestamp()) * 1000)::bigint, $2 \
             FROM generate_series(1, $3::bigint) g",
            &[&ch.as_str(), &json, &n],
        )
        .await
        .unwrap();
        c.execute(
            "INSERT INTO courier_channels (channel, latest) VALUES ($1, $2)",
            &[&ch.as_str(), &n],
        )
        .await
        .unwrap();
        c.batch_execute("ANALYZE courier_events").await.unwrap();
    } else {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (history, next, ch) = (history.clone(), next.clone(), ch.clone());
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < stored {
                    history.append(event(&ch, 0)).await.expect("fill");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    let token = sign_hs256(
        "history-bench-secret",
        &claims_for("bench", Role::Service, vec![], 3600),
    );
    let http = courier_bench::http_client();
    let url = format!("http://{}/history/bench.replay", server.local_addr());
    let (f50, f99) = pages(&http, &url, &token, stored, false).await;
    let (b50, b99) = pages(&http, &url, &token, stored, true).await;
    println!(
        "{}",
        serde_json::json!({
            "backend": backend, "append_per_sec": append_per_sec, "append_seconds": seconds,
            "stored": stored,
            "forward": {"p50_ms": f50, "p99_ms": f99},
            "backward": {"p50_ms": b50, "p99_ms": b99},
        })
    );
    server.shutdown();
    let _ = server.wait().await;
}
