//! Publish throughput of the native client against a running server.
//!
//! ```text
//! publish_bench URL TOKEN [SEQUENTIAL_EVENTS] [CONCURRENT_EVENTS]
//! ```
//!
//! Publishes `SEQUENTIAL_EVENTS` (default 2,000) one after another with
//! `Client::publish(..).await`, then `CONCURRENT_EVENTS` (default 20,000) from 64 concurrent
//! tasks, each after a short warm-up, and prints one JSON line:
//! `{"sequential_per_sec": …, "concurrent_per_sec": …}`. Uses only `Client::new`,
//! `Client::publish` and `Client::close`, so the same file measures older versions too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use courier_client::{Client, ClientConfig, StaticToken};

const CONCURRENCY: u64 = 64;

fn data(i: u64) -> serde_json::Value {
    serde_json::json!({"backtest_id": "bench", "percent": (i % 1000) as f64 / 10.0,
        "processed": i, "total": 100_000, "message": "simulated bar processed"})
}

async fn sequential(client: &Client, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        client
            .publish("backtest.bench-rs", "backtest.progress", &data(i))
            .await
            .expect("acknowledged");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn concurrent(client: &Client, n: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    client
                        .publish("backtest.bench-rc", "backtest.progress", &data(i))
                        .await
                        .expect("acknowledged");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: publish_bench URL TOKEN [SEQUENTIAL_EVENTS] [CONCURRENT_EVENTS]";
    let url = args.get(1).expect(usage);
    let token = args.get(2).expect(usage);
    let n = |i: usize, default: u64| args.get(i).map_or(default, |s| s.parse().expect(usage));
    let (seq_n, conc_n) = (n(3, 2_000), n(4, 20_000));
    let client = Client::new(
        ClientConfig::new(url.as_str()).service_name("bench"),
        Arc::new(StaticToken(token.clone())),
    )
    .expect("client");
    sequential(&client, 200).await;
    let seq = sequential(&client, seq_n).await;
    concurrent(&client, 500).await;
    let conc = concurrent(&client, conc_n).await;
    client.close().await;
    println!("{{\"sequential_per_sec\": {seq:.0}, \"concurrent_per_sec\": {conc:.0}}}");
}
