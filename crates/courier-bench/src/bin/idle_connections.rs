//! Memory per idle authenticated WebSocket connection: the server's resident memory with N
//! connections open, minus its resident memory with a warm-up set open, divided by the
//! difference. Run under `ulimit -n` large enough for 2·N sockets.
//! Prints `{"connections", "rss_before_mb", "rss_after_mb", "bytes_per_connection"}`.

use std::time::Duration;

use courier_bench::{ServerProcess, Socket, connect_ws, server_binary};
use futures_util::StreamExt;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn open(addr: &str, token: &str, n: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let opened =
            futures_util::future::join_all(chunk.iter().map(|_| connect_ws(addr, token))).await;
        sockets.extend(opened);
    }
    sockets
}

#[tokio::main]
async fn main() {
    let n = arg("--connections", 10_000);
    let warmup = 200;
    let server = ServerProcess::start(
        &server_binary(),
        &[
            ("COURIER_CONNECTIONS__MAX_PER_USER", "0"),
            ("COURIER_CONNECTIONS__MAX_TOTAL", "0"),
            ("COURIER_WS__PING_INTERVAL_MS", "600000"),
        ],
    );
    let token = server.token("bench");
    let warm = open(&server.addr, &token, warmup).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_bytes();
    let rest = open(&server.addr, &token, n - warmup).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = server.rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / (n - warmup) as f64;
    // Everything still open: the server kept every connection.
    let mut open_count = 0;
    for mut s in warm.into_iter().chain(rest) {
        if tokio::time::timeout(Duration::from_millis(0), s.next())
            .await
            .is_err()
        {
            open_count += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({"connections": n, "still_open": open_count, "rss_before_mb": before as f64 / 1048576.0,
            "rss_after_mb": after as f64 / 1048576.0, "bytes_per_connection": per})
    );
}
