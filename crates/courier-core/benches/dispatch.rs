//! Decoding and dispatching a typical `backtest.progress` event frame through the
//! connection state machine, and through the whole client (`courier_core::client`, what every
//! SDK drives: the connection plus listener routing and flow-control accounting), side by
//! side: the hot path of every subscriber.

use std::hint::black_box;
use std::time::Instant;

use courier_core::ChannelName;
use courier_core::client::{self, Client, ClientConfig};
use courier_core::connection::{Connection, ConnectionConfig, Output};
use courier_core::frame::{Limits, ServerFrame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn connected_client(now: Instant) -> Connection {
    let mut c = Connection::new(ConnectionConfig::default(), 1);
    c.subscribe(
        ChannelName::new("backtest.bt-2024-0042").unwrap(),
        None,
        now,
    )
    .unwrap();
    c.connect(now);
    c.handle_token(Ok("token".into()), now);
    c.handle_transport_open(now);
    let connected = ServerFrame::Connected {
        session: "s".into(),
        epoch: "E".into(),
        ping_interval_ms: 15_000,
        limits: Limits::default(),
    };
    c.handle_text(&connected.encode(), now);
    c.handle_text(
        r#"{"op":"subscribed","id":1,"channel":"backtest.bt-2024-0042","recovered":true,"epoch":"E","offset":0}"#,
        now,
    );
    while c.poll().is_some() {}
    c
}

fn connected_full_client(now: Instant) -> Client {
    let mut c = Client::new(ClientConfig::default(), 1, now);
    c.subscribe("backtest.bt-2024-0042", None, now).unwrap();
    c.handle_token(Ok("token".into()), now);
    c.handle_socket_open(now);
    let connected = ServerFrame::Connected {
        session: "s".into(),
        epoch: "E".into(),
        ping_interval_ms: 15_000,
        limits: Limits::default(),
    };
    c.handle_frame(&connected.encode(), now);
    c.handle_frame(
        r#"{"op":"subscribed","id":1,"channel":"backtest.bt-2024-0042","recovered":true,"epoch":"E","offset":0}"#,
        now,
    );
    while c.poll(now).is_some() {}
    c
}

fn frame(offset: u64) -> String {
    format!(
        r#"{{"op":"event","epoch":"E","offset":{offset},"event":{{"id":"01JD3Z8Q4W6X9V2N5R7T1K3M8P","type":"backtest.progress","channel":"backtest.bt-2024-0042","data":{{"backtest_id":"bt-2024-0042","percent":42.5,"processed":1250,"total":2940,"message":"simulating 2023-06-14"}},"metadata":{{"timestamp":1732300000000,"source":"backtester","correlation_id":"run-7"}}}}}}"#
    )
}

fn dispatch(c: &mut Criterion) {
    let now = Instant::now();
    let frames: Vec<String> = (1..=100_000).map(frame).collect();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("backtest_progress_frame", |b| {
        let mut client = connected_client(now);
        let mut i = 0usize;
        b.iter(|| {
            if i == frames.len() {
                // Offsets must keep growing or the client drops repeats; start over rarely.
                client = connected_client(now);
                i = 0;
            }
            client.handle_text(&frames[i], now);
            i += 1;
            let out = client.poll();
            debug_assert!(matches!(out, Some(Output::Event(_))));
            black_box(out)
        })
    });
    group.bench_function("backtest_progress_frame_through_client", |b| {
        let mut client = connected_full_client(now);
        let listener = client::ListenerId(1);
        let mut i = 0usize;
        b.iter(|| {
            if i == frames.len() {
                client = connected_full_client(now);
                i = 0;
            }
            client.handle_frame(&frames[i], now);
            i += 1;
            let out = client.poll(now);
            debug_assert!(matches!(out, Some(client::Output::Event { .. })));
            // What a driver does when the application reads the event.
            client.handle_consumed(listener, 1, now);
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
