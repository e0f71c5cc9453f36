//! `courier_core::client::Client` cases beyond the shared `client.json` vectors: the ones
//! that need Rust-side inspection (pending counts, error fields) or several sockets.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courier_core::client::{
    Client, ClientConfig, Endpoints, EventOptions, ListenerId, Output, PublishItem,
};
use courier_core::queue::{PublishOptions, QueueConfig, TransportResult};
use courier_core::{Error, UsageError};

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn item(channel: &str, data: &str) -> PublishItem {
    PublishItem {
        channel: channel.into(),
        event_type: "backtest.progress".into(),
        data_json: data.into(),
        event: EventOptions::default(),
        options: PublishOptions::default(),
    }
}

const GOOD: &str = r#"{"backtest_id":"a","percent":1}"#;

fn drain(c: &mut Client, now: Instant) -> Vec<Output> {
    std::iter::from_fn(|| c.poll(now)).collect()
}

fn connected(c: &mut Client, now: Instant, token: &str) {
    let out = drain(c, now);
    assert!(
        out.contains(&Output::FetchToken { refresh: false }),
        "{out:?}"
    );
    c.handle_token(Ok(token.into()), now);
    assert!(drain(c, now).contains(&Output::OpenSocket));
    c.handle_socket_open(now);
    drain(c, now);
    c.handle_frame(
        r#"{"op":"connected","session":"s","epoch":"E","ping_interval_ms":15000,"limits":{"max_payload_bytes":1000,"max_frame_bytes":100000,"max_subscriptions":10}}"#,
        now,
    );
    drain(c, now);
}

#[test]
fn a_token_refreshed_for_the_websocket_serves_the_next_batch_without_another_call() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default(), 1, now);
    c.subscribe("backtest.a", None, now).unwrap();
    connected(&mut c, now, "old");
    c.handle_socket_closed(Some(4002), "token expired", now);
    let out = drain(&mut c, now);
    assert!(
        out.contains(&Output::FetchToken { refresh: true }),
        "{out:?}"
    );
    c.handle_token(Ok("new".into()), now);
    drain(&mut c, now);
    c.publish(item("backtest.a", GOOD), now, wall()).unwrap();
    let out = drain(&mut c, now);
    assert!(
        matches!(out.as_slice(), [Output::SendBatch { token, .. }] if token == "new"),
        "{out:?}"
    );
    assert_eq!(c.stats(now).token_fetches, 2);
}

#[test]
fn a_refused_subscription_removes_every_listener_of_the_channel() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default(), 1, now);
    let a = c.subscribe("backtest.a", None, now).unwrap();
    let b = c.subscribe("backtest.a", None, now).unwrap();
    connected(&mut c, now, "t");
    c.handle_frame(
        r#"{"op":"error","id":1,"code":"FORBIDDEN","message":"not yours"}"#,
        now,
    );
    let failed: Vec<ListenerId> = drain(&mut c, now)
        .into_iter()
        .filter_map(|o| match o {
            Output::SubscriptionFailed { listener, .. } => Some(listener),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![a, b]);
    assert_eq!(c.stats(now).channels, 0);
    assert!(!c.unsubscribe(a, now));
    // The channel can be subscribed again afterwards.
    c.subscribe("backtest.a", None, now).unwrap();
    assert_eq!(c.stats(now).channels, 1);
}

#[test]
fn publish_many_queues_all_or_nothing_and_names_the_index() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default(), 1, now);
    let err = c
        .publish_many(
            vec![
                item("backtest.a", GOOD),
                item("backtest.a", r#"{"percent":1}"#),
            ],
            now,
            wall(),
        )
        .unwrap_err();
    match err {
        Error::Invalid(v) => assert!(v.field.starts_with("events[1]"), "{}", v.field),
        other => panic!("{other:?}"),
    }
    assert!(c.is_flushed(), "nothing was queued");
    assert!(drain(&mut c, now).is_empty(), "nothing asked for");
}

#[test]
fn publish_many_refuses_what_does_not_fit_before_queueing_any() {
    let now = Instant::now();
    let config = ClientConfig {
        queue: QueueConfig {
            max_queued: 2,
            ..QueueConfig::default()
        },
        ..ClientConfig::default()
    };
    let mut c = Client::new(config, 1, now);
    let three = vec![item("backtest.a", GOOD); 3];
    assert!(matches!(
        c.publish_many(three, now, wall()),
        Err(Error::Usage(UsageError::QueueFull { capacity: 2 }))
    ));
    assert!(c.is_flushed());
    assert_eq!(
        c.publish_many(vec![item("backtest.a", GOOD); 2], now, wall())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn stray_inputs_are_ignored() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default(), 1, now);
    c.handle_token(Ok("unasked".into()), now);
    c.handle_consumed(ListenerId(42), 5, now);
    c.handle_response(
        courier_core::queue::BatchId(9),
        TransportResult::Failed("x".into()),
        now,
        wall(),
    );
    c.handle_socket_open(now);
    c.handle_frame(r#"{"op":"ping"}"#, now);
    assert!(drain(&mut c, now).is_empty());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn finished_only_once_closed_and_drained() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default(), 1, now);
    c.publish(item("backtest.a", GOOD), now, wall()).unwrap();
    assert_eq!(
        drain(&mut c, now),
        vec![Output::FetchToken { refresh: false }]
    );
    c.handle_token(Ok("t".into()), now);
    let batch = drain(&mut c, now)
        .into_iter()
        .find_map(|o| match o {
            Output::SendBatch { batch, .. } => Some(batch),
            _ => None,
        })
        .expect("a batch");
    c.close(now);
    assert_eq!(
        drain(&mut c, now),
        vec![Output::State(courier_core::connection::State::Closed)]
    );
    assert!(!c.is_finished(), "one event in flight");
    c.handle_response(
        batch,
        TransportResult::Http {
            status: 400,
            headers: vec![],
            body: r#"{"error":{"code":"INVALID_EVENT","message":"no"}}"#.into(),
        },
        now,
        wall(),
    );
    let out = drain(&mut c, now);
    assert!(
        matches!(out.as_slice(), [Output::Published { result: Err(_), .. }]),
        "{out:?}"
    );
    assert!(c.is_finished());
}

#[test]
fn a_separate_http_base_keeps_the_websocket_url() {
    let e = Endpoints::with_http_base("wss://rt.example.com/ws", "https://api.example.com/v1/")
        .unwrap();
    assert_eq!(e.ws_url, "wss://rt.example.com/ws");
    assert_eq!(e.http_base, "https://api.example.com/v1");
    assert_eq!(
        e.publish_batch_url(),
        "https://api.example.com/v1/publish/batch"
    );
}
