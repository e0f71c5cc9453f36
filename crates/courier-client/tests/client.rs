//! courier-client against the real reference server, started in-process on port 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use courier_client::{Client, ClientConfig, StaticToken, SubscriptionItem, token_fn};
use courier_core::queue::PublishOptions;
use courier_core::{Error, ValidationKind};
use courier_server::auth::{Role, claims_for, sign_hs256};
use courier_server::{Config, ServerHandle};
use serde_json::json;

const SECRET: &str = "courier-client-tests";
const WAIT: Duration = Duration::from_secs(10);

/// A server on a free port. `COURIER_BACKEND=redis` / `COURIER_REDIS_URL` in the environment
/// (set by `make test-sdk-redis`) select the Redis backend, each server in its own namespace.
async fn server() -> ServerHandle {
    let mut config = Config::load(
        None,
        std::env::vars().filter(|(k, _)| k == "COURIER_BACKEND" || k == "COURIER_REDIS_URL"),
    )
    .expect("server configuration from the environment");
    config.redis.key_prefix = format!(
        "rusttest-{}-{:?}:",
        std::process::id(),
        std::time::SystemTime::now()
    );
    config.auth.jwt_secret = SECRET.into();
    config.enable_fault_injection = true;
    config.rate_limits.enabled = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    courier_server::start(config, listener).await.unwrap()
}

fn token(ttl: u64) -> String {
    sign_hs256(SECRET, &claims_for("svc-test", Role::Service, vec![], ttl))
}

fn client(server: &ServerHandle) -> Client {
    Client::new(
        ClientConfig::new(format!("http://{}", server.local_addr())).service_name("rust-tests"),
        Arc::new(StaticToken(token(3600))),
    )
    .unwrap()
}

async fn fault(server: &ServerHandle, path: &str, body: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/_fault/{path}", server.local_addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

fn progress(id: &str, percent: f64) -> serde_json::Value {
    json!({"backtest_id": id, "percent": percent})
}

async fn next_offset(sub: &mut courier_client::Subscription) -> u64 {
    let d = tokio::time::timeout(WAIT, sub.next_event())
        .await
        .expect("an event in time")
        .expect("subscription open")
        .expect("no error");
    d.offset
}

#[tokio::test]
async fn publish_and_receive_in_order() {
    let server = server().await;
    let client = client(&server);
    let mut sub = client.subscribe("backtest.rt1", None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    for i in 0..5u32 {
        let ack = client
            .publish(
                "backtest.rt1",
                "backtest.progress",
                &progress("rt1", f64::from(i) * 10.0),
            )
            .await
            .unwrap();
        assert_eq!(ack.offset, u64::from(i) + 1);
        assert!(!ack.duplicate);
    }
    for i in 1..=5 {
        assert_eq!(next_offset(&mut sub).await, i);
    }
    assert_eq!(client.stats().queue.acknowledged, 5);
    client.close().await;
    assert!(sub.next_event().await.is_none(), "close ends subscriptions");
}

#[tokio::test]
async fn invalid_event_fails_before_any_request() {
    let server = server().await;
    let client = client(&server);
    let err = client
        .publish("backtest.rt2", "backtest.progress", &progress("rt2", 150.0))
        .await
        .unwrap_err();
    match err {
        Error::Invalid(v) => {
            assert_eq!(v.field, "data.percent");
            assert_eq!(v.kind, ValidationKind::OutOfRange);
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let bad_channel = client.publish("Bad Channel!", "x.y", &json!({})).await;
    assert!(matches!(bad_channel, Err(Error::Invalid(_))));
    let metrics = &server.state().metrics;
    assert_eq!(metrics.published.load(Ordering::Relaxed), 0);
    assert_eq!(client.stats().queue.acknowledged, 0);
    client.close().await;
}

#[tokio::test]
async fn retries_503_with_the_same_id_and_delivers_once() {
    let server = server().await;
    let client = client(&server);
    let mut sub = client.subscribe("backtest.rt3", None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    fault(&server, "fail", json!({"status": 503, "count": 2})).await;
    let publisher = client.publisher();
    let event = publisher
        .event(
            "backtest.rt3",
            "backtest.progress",
            progress("rt3", 1.0).to_string(),
            Default::default(),
        )
        .unwrap();
    let id = event.id.clone();
    let ack = tokio::time::timeout(WAIT, publisher.publish(event, PublishOptions::default()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.id, id);
    assert_eq!(ack.attempts, 3);
    let d = tokio::time::timeout(WAIT, sub.next_event())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.event.id, id);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next_event())
            .await
            .is_err(),
        "delivered once"
    );
    assert_eq!(server.state().metrics.published.load(Ordering::Relaxed), 1);
    client.close().await;
}

#[tokio::test]
async fn resumes_after_dropped_connections_without_loss_or_duplicates() {
    let server = server().await;
    let client = client(&server);
    let mut sub = client.subscribe("backtest.rt4", None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    let publish = |n: u32| {
        let client = client.clone();
        async move {
            for i in 0..n {
                client
                    .publish(
                        "backtest.rt4",
                        "backtest.progress",
                        &progress("rt4", f64::from(i)),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    publish(3).await;
    let mut offsets = Vec::new();
    for _ in 0..3 {
        offsets.push(next_offset(&mut sub).await);
    }
    // Drop the socket, publish while the subscriber is away, then read everything.
    fault(&server, "drop", json!({})).await;
    publish(4).await;
    fault(&server, "drop", json!({})).await;
    publish(3).await;
    while offsets.len() < 10 {
        offsets.push(next_offset(&mut sub).await);
    }
    assert_eq!(offsets, (1..=10).collect::<Vec<u64>>());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next_event())
            .await
            .is_err(),
        "no duplicates"
    );
    assert!(client.stats().connection.reconnects >= 1);
    client.close().await;
}

#[tokio::test]
async fn token_provider_is_asked_again_when_the_token_expires() {
    let server = server().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let client = Client::new(
        ClientConfig::new(format!("http://{}", server.local_addr())),
        token_fn(move |_refresh| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            // The first token expires within a second; the next ones last an hour.
            let ttl = if n == 0 { 1 } else { 3600 };
            async move { Ok(token(ttl)) }
        }),
    )
    .unwrap();
    let mut sub = client.subscribe("backtest.rt5", None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    client
        .publish("backtest.rt5", "backtest.progress", &progress("rt5", 5.0))
        .await
        .unwrap();
    let offset = next_offset(&mut sub).await;
    assert_eq!(offset, 1);
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the provider was asked again"
    );
    client.close().await;
}

#[tokio::test]
async fn forbidden_subscription_ends_with_the_reason() {
    let server = server().await;
    let user = sign_hs256(SECRET, &claims_for("u1", Role::User, vec![], 3600));
    let client = Client::new(
        ClientConfig::new(format!("http://{}", server.local_addr())),
        Arc::new(StaticToken(user)),
    )
    .unwrap();
    let mut sub = client.subscribe("backtest.secret", None).unwrap();
    let item = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
    match item {
        Some(SubscriptionItem::Ended(Some(e))) => assert_eq!(e.code(), "FORBIDDEN_CHANNEL"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    client.close().await;
}
