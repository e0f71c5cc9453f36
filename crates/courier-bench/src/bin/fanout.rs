//! Fan-out: one publisher, N WebSocket subscribers on one channel.
//! With `--redis-url URL --instances K`, K Redis-backed servers share the subscribers
//! round-robin and the publisher posts to the first one; `--redis-cluster` puts them on a
//! Redis Cluster (the URL lists its nodes).
//! With `--channels C` (default 1), events go round-robin to C channels
//! (`bench.fanout.0` …) and every subscriber subscribes to all of them, so each event still
//! reaches every subscriber; on a cluster the channels' slots spread over the masters.
//! Prints `{"subscribers", "events", "deliveries", "seconds", "deliveries_per_sec",
//! "paced": {"rate", "p50_ms", "p99_ms", "samples", "curve"}, "saturated": {…}}`, where
//! `curve` is `[[percentile, ms], …]`, and `server_cpu_ms_per_1000` the servers' CPU time
//! per 1,000 deliveries in that phase.
//! With `--server node` the same load runs against the bare Node `ws` broadcast server of
//! `tests/bench/ws_broadcast.mjs` instead (the baseline of `tests/bench/bench_server_vs_node.py`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier_bench::{connect_ws, percentile, start_servers, unix_ms};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// The channel of event `n` when there are `channels` of them.
fn channel(n: u64, channels: u64) -> String {
    if channels <= 1 {
        "bench.fanout".to_owned()
    } else {
        format!("bench.fanout.{}", n % channels)
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Shared {
    received: AtomicU64,
    latencies: Mutex<Vec<f64>>,
}

async fn publish_batch(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    phase: &str,
    from: u64,
    count: u64,
    channels: u64,
) {
    let events: Vec<serde_json::Value> = (from..from + count)
        .map(|n| {
            serde_json::json!({"id": format!("{phase}-{n}"), "type": "bench.tick", "channel": channel(n, channels),
                "data": {"seq": n, "sent_ms": unix_ms()}, "metadata": {"source": "bench"}})
        })
        .collect();
    let resp = http
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "events": events }))
        .send()
        .await
        .expect("publish");
    assert!(
        resp.status().is_success(),
        "publish answered {}",
        resp.status()
    );
}

async fn wait_for(shared: &Shared, target: u64, limit: Duration) -> Instant {
    let start = Instant::now();
    while shared.received.load(Ordering::Relaxed) < target && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

/// `[[percentile, ms], …]` for a latency plot.
fn curve(sorted: &[f64]) -> serde_json::Value {
    let points = [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0];
    serde_json::json!(
        points
            .iter()
            .map(|p| [*p, percentile(sorted, *p)])
            .collect::<Vec<_>>()
    )
}

#[tokio::main]
async fn main() {
    let subscribers = arg("--subscribers", 1000);
    let events = arg("--events", 1000);
    let instances = arg("--instances", 1);
    let channels = arg("--channels", 1).max(1);
    let servers = start_servers(
        instances,
        &[
            ("COURIER_RATE_LIMITS__ENABLED", "false"),
            ("COURIER_CONNECTIONS__MAX_PER_USER", "0"),
            ("COURIER_CONNECTIONS__MAX_TOTAL", "0"),
            ("COURIER_WS__OUTBOUND_QUEUE", "100000"),
            ("COURIER_HISTORY__MAX_EVENTS_PER_CHANNEL", "100"),
        ],
    );
    let server = &servers[0];
    let token = server.token("bench");
    let shared = Arc::new(Shared {
        received: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
    });
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut ready = Vec::new();
    for i in 0..subscribers {
        let (addr, token, shared, sampling) = (
            servers[(i % servers.len() as u64) as usize].addr.clone(),
            token.clone(),
            shared.clone(),
            sampling.clone(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        tokio::spawn(async move {
            let mut ws = connect_ws(&addr, &token).await;
            for c in 0..channels {
                let sub = serde_json::json!({"op": "subscribe", "id": c + 1, "channel": channel(c, channels)})
                    .to_string();
                ws.send(Message::text(sub)).await.expect("subscribe");
            }
            let mut tx = Some(tx);
            let mut pending = channels;
            let sample = i % 10 == 0;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                if text.starts_with("{\"op\":\"event\"") {
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    if sample && sampling.load(Ordering::Relaxed) {
                        let v: serde_json::Value = serde_json::from_str(&text).expect("event json");
                        let sent = v["event"]["data"]["sent_ms"].as_f64().unwrap_or(0.0);
                        shared.latencies.lock().await.push(unix_ms() - sent);
                    }
                } else if text.contains("\"op\":\"subscribed\"") {
                    pending = pending.saturating_sub(1);
                    if pending == 0
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(());
                    }
                } else if text.contains("\"op\":\"ping\"") {
                    let _ = ws.send(Message::text("{\"op\":\"pong\"}")).await;
                }
            }
        });
    }
    for r in ready {
        r.await.expect("subscriber ready");
    }
    let http = courier_bench::http_client();
    let url = format!("http://{}/publish/batch", server.addr);

    // Saturated: publish every event as fast as the server takes them (4 requests in flight).
    let batch = 50u64;
    let cpu_ms = || servers.iter().map(|s| s.cpu_ms()).sum::<f64>();
    let cpu_start = cpu_ms();
    let start = Instant::now();
    sampling.store(true, Ordering::Relaxed);
    let mut handles = Vec::new();
    for lane in 0..4u64 {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        handles.push(tokio::spawn(async move {
            let mut from = lane * batch;
            while from < events {
                publish_batch(
                    &http,
                    &url,
                    &token,
                    "sat",
                    from,
                    batch.min(events - from),
                    channels,
                )
                .await;
                from += 4 * batch;
            }
        }));
    }
    for h in handles {
        h.await.expect("publisher");
    }
    let target = subscribers * events;
    let end = wait_for(&shared, target, Duration::from_secs(120)).await;
    let deliveries = shared.received.load(Ordering::Relaxed);
    let seconds = (end - start).as_secs_f64();
    let saturated_cpu = cpu_ms() - cpu_start;
    let mut saturated = std::mem::take(&mut *shared.latencies.lock().await);
    saturated.sort_by(f64::total_cmp);

    // Paced: 200 events/s for 3 s, one event per request, for latency under moderate load.
    shared.received.store(0, Ordering::Relaxed);
    let rate = 200u64;
    let paced_events = rate * 3;
    let cpu_start = cpu_ms();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for n in 0..paced_events {
        tick.tick().await;
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        tokio::spawn(
            async move { publish_batch(&http, &url, &token, "paced", n, 1, channels).await },
        );
    }
    wait_for(&shared, subscribers * paced_events, Duration::from_secs(60)).await;
    let paced_cpu = cpu_ms() - cpu_start;
    let paced_deliveries = shared.received.load(Ordering::Relaxed);
    let mut paced = std::mem::take(&mut *shared.latencies.lock().await);
    paced.sort_by(f64::total_cmp);

    let out = serde_json::json!({
        "subscribers": subscribers,
        "instances": servers.len(),
        "channels": channels,
        "events": events,
        "deliveries": deliveries,
        "expected_deliveries": target,
        "seconds": seconds,
        "deliveries_per_sec": deliveries as f64 / seconds,
        "saturated": {"p50_ms": percentile(&saturated, 50.0), "p99_ms": percentile(&saturated, 99.0), "samples": saturated.len(), "curve": curve(&saturated),
            "server_cpu_ms_per_1000": saturated_cpu / deliveries.max(1) as f64 * 1000.0},
        "paced": {"rate": rate, "p50_ms": percentile(&paced, 50.0), "p99_ms": percentile(&paced, 99.0), "samples": paced.len(), "curve": curve(&paced),
            "deliveries": paced_deliveries, "expected_deliveries": subscribers * paced_events, "server_cpu_ms_per_1000": paced_cpu / paced_deliveries.max(1) as f64 * 1000.0},
        "server_rss_mb": servers.iter().map(|s| s.rss_bytes()).sum::<u64>() as f64 / 1048576.0,
    });
    println!("{out}");
    // `exit` skips destructors: stop the servers first, or they outlive this process (and
    // hold the caller's stderr open).
    drop(servers);
    std::process::exit(0);
}
