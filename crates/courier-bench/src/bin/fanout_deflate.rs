//! Fan-out with WebSocket compression off and on, in one run: N subscribers on one channel
//! receive `backtest.progress` events, then `trade.executed` events, published as fast as the
//! server takes them (batches of 50 to `/publish/batch`, 4 in flight).
//!
//! The subscribers are raw sockets: they send the handshake by hand (offering
//! `permessage-deflate` in the `on` run) and count event frames and the bytes read from
//! TCP, without inflating or parsing the events, so the client side costs the same in
//! both runs and the figures are the server's. `tests/bench/bench_deflate.py` turns the
//! output into docs/benchmarks.md.
//!
//! Prints `{"subscribers", "events", "runs": {"off"|"on": {"negotiated", "<type>":
//! {"deliveries", "seconds", "deliveries_per_sec", "wire_bytes_per_event",
//! "raw_bytes_per_event", "server_cpu_ms_per_1000"}}}}`: wire bytes are what the
//! subscribers read from TCP per delivered event (frame headers included); raw bytes the
//! event frame's payload uncompressed (the server's `courier_ws_sent_raw_bytes_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier_bench::{ServerProcess, server_binary, unix_ms};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

const CHANNEL: &str = "bench.deflate";
const TYPES: [&str; 2] = ["backtest.progress", "trade.executed"];

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    bytes: AtomicU64,
    negotiated: AtomicU64,
}

/// A masked client text frame (the key is fixed: this is a load generator).
async fn send_text(w: &mut OwnedWriteHalf, text: &str) {
    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
    let payload = text.as_bytes();
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    w.write_all(&frame).await.expect("write frame");
}

/// One subscriber: handshake, connect, subscribe; then counts event frames and bytes.
async fn subscriber(
    addr: String,
    token: String,
    deflate: bool,
    counters: Arc<Counters>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let ext = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{ext}\r\n"
    );
    w.write_all(head.as_bytes()).await.expect("handshake");
    let mut line = String::new();
    r.read_line(&mut line).await.expect("status line");
    assert!(
        line.starts_with("HTTP/1.1 101"),
        "handshake answered {line}"
    );
    loop {
        line.clear();
        r.read_line(&mut line).await.expect("header line");
        if line.to_ascii_lowercase().contains("permessage-deflate") {
            counters.negotiated.fetch_add(1, Ordering::Relaxed);
        }
        if line == "\r\n" {
            break;
        }
    }
    send_text(
        &mut w,
        &serde_json::json!({"op": "connect", "token": token, "client": "bench"}).to_string(),
    )
    .await;
    send_text(
        &mut w,
        &serde_json::json!({"op": "subscribe", "id": 1, "channel": CHANNEL}).to_string(),
    )
    .await;
    let mut ready = Some(ready);
    let mut texts = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut h = [0u8; 2];
        if r.read_exact(&mut h).await.is_err() {
            return;
        }
        let (rsv1, opcode) = (h[0] & 0x40 != 0, h[0] & 0x0f);
        let mut header_len = 2u64;
        let len = match h[1] & 0x7f {
            126 => {
                header_len += 2;
                u64::from(r.read_u16().await.expect("length"))
            }
            127 => {
                header_len += 8;
                r.read_u64().await.expect("length")
            }
            n => u64::from(n),
        };
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload).await.expect("payload");
        if opcode == 8 {
            return;
        }
        if opcode != 1 {
            continue;
        }
        texts += 1;
        // The first two text frames answer connect and subscribe.
        if texts <= 2 {
            if texts == 2
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
            continue;
        }
        if !rsv1 && payload.starts_with(b"{\"op\":\"ping\"") {
            send_text(&mut w, "{\"op\":\"pong\"}").await;
            continue;
        }
        counters
            .bytes
            .fetch_add(header_len + len, Ordering::Relaxed);
        counters.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// A realistic event of `kind` number `n`: ids, a timestamp and a correlation id vary.
fn event(kind: &str, phase: &str, n: u64) -> serde_json::Value {
    let data = if kind == "backtest.progress" {
        serde_json::json!({"backtest_id": "bt-7f3a9c21", "percent": (n % 1000) as f64 / 10.0,
            "processed": 1000 + n, "total": 25_000,
            "message": "processing daily bars for AAPL, MSFT, NVDA"})
    } else {
        serde_json::json!({"trade_id": format!("tr-{n:08}"), "symbol": "AAPL",
            "side": if n.is_multiple_of(2) { "buy" } else { "sell" }, "quantity": "100",
            "price": format!("189.{:04}", n % 10_000), "executed_at": unix_ms() as u64,
            "order_id": format!("ord-{n:08}"), "backtest_id": "bt-7f3a9c21"})
    };
    // A correlation id as random as a UUID v4's (hex of a mixed counter): it does not
    // compress, as in real traffic.
    let (a, b) = (mix(n), mix(n ^ 0x9e37_79b9_7f4a_7c15));
    let correlation_id = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 48,
        b & 0xffff_ffff_ffff
    );
    serde_json::json!({"id": format!("{phase}-{n}"), "type": kind, "channel": CHANNEL, "data": data,
        "metadata": {"source": "bench", "user_id": "user-42", "correlation_id": correlation_id}})
}

/// splitmix64: a well-mixed 64-bit value of `n`.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn metric(http: &reqwest::Client, addr: &str, name: &str) -> f64 {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn run(mode: &str, subscribers: u64, events: u64) -> serde_json::Value {
    let server = ServerProcess::start(
        &server_binary(),
        &[
            ("COURIER_RATE_LIMITS__ENABLED", "false"),
            ("COURIER_CONNECTIONS__MAX_PER_USER", "0"),
            ("COURIER_CONNECTIONS__MAX_TOTAL", "0"),
            ("COURIER_WS__OUTBOUND_QUEUE", "100000"),
            ("COURIER_WS__MAX_UNAUTHENTICATED", "0"),
            ("COURIER_HISTORY__MAX_EVENTS_PER_CHANNEL", "100"),
            ("COURIER_WS__COMPRESSION", mode),
        ],
    );
    let token = server.token("bench");
    let counters = Arc::new(Counters::default());
    let mut ready = Vec::new();
    for _ in 0..subscribers {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        tokio::spawn(subscriber(
            server.addr.clone(),
            token.clone(),
            mode == "on",
            counters.clone(),
            tx,
        ));
    }
    for r in ready {
        r.await.expect("subscriber ready");
    }
    let http = courier_bench::http_client();
    let url = format!("http://{}/publish/batch", server.addr);
    let mut out = serde_json::json!({
        "negotiated": counters.negotiated.load(Ordering::Relaxed),
    });
    for kind in TYPES {
        counters.events.store(0, Ordering::Relaxed);
        counters.bytes.store(0, Ordering::Relaxed);
        let raw_before = metric(&http, &server.addr, "courier_ws_sent_raw_bytes_total").await;
        let delivered_before = metric(&http, &server.addr, "courier_events_delivered_total").await;
        let cpu_start = server.cpu_ms();
        let start = Instant::now();
        let batch = 50u64;
        let mut lanes = Vec::new();
        for lane in 0..4u64 {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            lanes.push(tokio::spawn(async move {
                let mut from = lane * batch;
                while from < events {
                    let list: Vec<_> = (from..(from + batch).min(events))
                        .map(|n| event(kind, kind, n))
                        .collect();
                    let resp = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "events": list }))
                        .send()
                        .await
                        .expect("publish");
                    assert!(resp.status().is_success(), "publish: {}", resp.status());
                    from += 4 * batch;
                }
            }));
        }
        for l in lanes {
            l.await.expect("publisher");
        }
        let target = subscribers * events;
        let limit = Instant::now() + Duration::from_secs(120);
        while counters.events.load(Ordering::Relaxed) < target && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let seconds = start.elapsed().as_secs_f64();
        let cpu = server.cpu_ms() - cpu_start;
        let deliveries = counters.events.load(Ordering::Relaxed);
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let raw = metric(&http, &server.addr, "courier_ws_sent_raw_bytes_total").await - raw_before;
        let frames =
            metric(&http, &server.addr, "courier_events_delivered_total").await - delivered_before;
        out[kind] = serde_json::json!({
            "deliveries": deliveries,
            "expected": target,
            "seconds": seconds,
            "deliveries_per_sec": deliveries as f64 / seconds,
            "wire_bytes_per_event": bytes as f64 / deliveries.max(1) as f64,
            "raw_bytes_per_event": raw / frames.max(1.0),
            "server_cpu_ms_per_1000": cpu / deliveries.max(1) as f64 * 1000.0,
        });
    }
    drop(server);
    out
}

#[tokio::main]
async fn main() {
    let subscribers = arg("--subscribers", 1000);
    let events = arg("--events", 1000);
    let off = run("off", subscribers, events).await;
    let on = run("on", subscribers, events).await;
    let out = serde_json::json!({
        "subscribers": subscribers,
        "events": events,
        "runs": {"off": off, "on": on},
    });
    println!("{out}");
    std::process::exit(0);
}
