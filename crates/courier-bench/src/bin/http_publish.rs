//! HTTP publish throughput: single events (`POST /publish`, 64 in flight) and batches of
//! 100 (`POST /publish/batch`, 8 in flight), each for a fixed time.
//! Prints `{"single_per_sec", "batched_per_sec", "seconds_each"}`. `--redis-url URL` runs
//! the server on Redis, and `--redis-cluster` with it on a Redis Cluster (the URL lists its
//! nodes, comma-separated).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier_bench::start_servers;

async fn run(concurrency: u64, per_request: u64, seconds: f64, addr: &str, token: &str) -> f64 {
    let http = courier_bench::http_client();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..concurrency {
        let (http, done, token) = (http.clone(), done.clone(), token.to_owned());
        let (single, batch) = (
            format!("http://{addr}/publish"),
            format!("http://{addr}/publish/batch"),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let event = |i: u64| {
                    serde_json::json!({"id": format!("l{lane}-{per_request}-{n}-{i}"), "type": "backtest.progress",
                        "channel": format!("backtest.b{}", lane % 8),
                        "data": {"backtest_id": "b", "percent": 50.0}, "metadata": {"source": "bench"}})
                };
                let req = if per_request == 1 {
                    http.post(&single).json(&event(0))
                } else {
                    http.post(&batch).json(&serde_json::json!({"events": (0..per_request).map(event).collect::<Vec<_>>()}))
                };
                let resp = req.bearer_auth(&token).send().await.expect("publish");
                assert!(resp.status().is_success(), "publish answered {}", resp.status());
                let _ = resp.bytes().await;
                done.fetch_add(per_request, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("lane");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    // `--redis-url URL` puts the server on Redis (`--redis-cluster`: on a Redis Cluster).
    let servers = start_servers(1, &[("COURIER_RATE_LIMITS__ENABLED", "false")]);
    let server = &servers[0];
    let token = server.token("bench");
    let seconds = 5.0;
    let single = run(64, 1, seconds, &server.addr, &token).await;
    let batched = run(8, 100, seconds, &server.addr, &token).await;
    println!(
        "{}",
        serde_json::json!({"single_per_sec": single, "batched_per_sec": batched, "seconds_each": seconds})
    );
}
