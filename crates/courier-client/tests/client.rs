//! courier-client against the real reference server, started in-process on port 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courier_client::{Client, ClientConfig, StaticToken, SubscriptionItem, token_fn};
use courier_core::{ChannelPattern, Error, ValidationKind};
use courier_server::auth::{Role, claims_for, sign_hs256};
use courier_server::{Config, ServerHandle};
use serde_json::json;

const SECRET: &str = "courier-client-tests";
const WAIT: Duration = Duration::from_secs(10);

/// A server on a free port. `COURIER_BACKEND=redis` / `COURIER_REDIS_URL` in the environment
/// (set by `make test-sdk-redis`) select the Redis backend, each server in its own namespace.
async fn server() -> ServerHandle {
    server_with(|_| {}).await
}

/// [`server`], with `adjust` applied to its configuration.
async fn server_with(adjust: impl FnOnce(&mut Config)) -> ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    server_on(listener, adjust).await
}

/// [`server_with`] on a given listener (to start again on the port of a killed server).
async fn server_on(
    listener: tokio::net::TcpListener,
    adjust: impl FnOnce(&mut Config),
) -> ServerHandle {
    let mut config = Config::load(
        None,
        std::env::vars().filter(|(k, _)| k == "COURIER_BACKEND" || k == "COURIER_REDIS_URL"),
    )
    .expect("server configuration from the environment");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    config.redis.key_prefix = format!("rusttest-{}-{nanos}:", std::process::id());
    config.auth.jwt_secret = SECRET.into();
    config.enable_fault_injection = true;
    // Rate limits stay at their defaults (on), as a user gets the server; `token` is a
    // service (limits ×20), far above what any test here publishes.
    adjust(&mut config);
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
    assert_eq!(client.stats().acknowledged, 5);
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
    assert_eq!(client.stats().acknowledged, 0);
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
    let item = courier_client::event("backtest.rt3", "backtest.progress", &progress("rt3", 1.0));
    let ack = tokio::time::timeout(WAIT, publisher.publish(item))
        .await
        .unwrap()
        .unwrap();
    let id = ack.id.clone();
    assert!(!id.is_empty(), "the core stamped an id");
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
    assert!(client.stats().reconnects >= 1);
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

/// A client whose subscriptions hold at most `buffer` unread events.
fn client_with_buffer(server: &ServerHandle, buffer: usize) -> Client {
    let mut config =
        ClientConfig::new(format!("http://{}", server.local_addr())).service_name("rust-tests");
    config.core.subscription_buffer = Some(buffer);
    Client::new(config, Arc::new(StaticToken(token(3600)))).unwrap()
}

/// Queues `n` events for `channel` and waits until every one is acknowledged.
async fn publish_n(client: &Client, channel: &str, n: u32) {
    let publisher = client.publisher();
    let acked = Arc::new(AtomicUsize::new(0));
    for i in 0..n {
        let item = courier_client::event(
            channel,
            "backtest.progress",
            &progress("slow", f64::from(i % 100)),
        );
        let acked = acked.clone();
        publisher
            .enqueue(
                item,
                Box::new(move |r| {
                    if r.is_ok() {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                }),
            )
            .unwrap();
    }
    tokio::time::timeout(WAIT, client.flush()).await.unwrap();
    assert_eq!(
        acked.load(Ordering::SeqCst),
        n as usize,
        "every event acknowledged"
    );
}

/// A client whose subscriptions hold at most `buffer` unread events, subscribed to
/// `channel` while `n` events were published to it and the application read none.
async fn fall_behind(
    server: &ServerHandle,
    buffer: usize,
    channel: &str,
    n: u32,
) -> (Client, courier_client::Subscription) {
    let client = client_with_buffer(server, buffer);
    let mut sub = client.subscribe(channel, None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    publish_n(&client, channel, n).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    (client, sub)
}

/// Every item until `n` events were read (or the wait runs out): (events' offsets, gaps,
/// `Subscribed` items).
async fn read_events(sub: &mut courier_client::Subscription, n: usize) -> (Vec<u64>, usize, usize) {
    let (mut offsets, mut gaps, mut subscribed) = (Vec::new(), 0, 0);
    while offsets.len() < n {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(SubscriptionItem::Event(d))) => offsets.push(d.offset),
            Ok(Some(SubscriptionItem::Gap { .. })) => gaps += 1,
            Ok(Some(SubscriptionItem::Subscribed { .. })) => subscribed += 1,
            other => panic!("after {} events: {other:?}", offsets.len()),
        }
    }
    (offsets, gaps, subscribed)
}

#[tokio::test]
async fn a_slow_subscription_is_paused_then_resumed_from_history_without_loss() {
    let server = server().await;
    // 200 events arrive while the application reads none: the subscription holds 8, the
    // client pauses the channel instead of buffering the rest.
    let (client, mut sub) = fall_behind(&server, 8, "backtest.slow", 200).await;
    let (offsets, gaps, subscribed) = read_events(&mut sub, 200).await;
    assert_eq!(
        offsets,
        (1..=200).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(gaps, 0, "history covered the pause");
    // The first `Subscribed` (kept by `ready`), then one per resume.
    assert!(
        subscribed >= 2,
        "the channel was paused and resumed ({subscribed} subscribed)"
    );
    assert_eq!(client.stats().duplicates_dropped, 0);
    client.close().await;
}

#[tokio::test]
async fn a_pause_longer_than_history_reports_a_gap_and_goes_on() {
    let server = server_with(|c| c.history.max_events_per_channel = 10).await;
    let (client, mut sub) = fall_behind(&server, 4, "backtest.slower", 100).await;
    // The first 4 were held; history then only has the last 10 (91..=100). The resume from
    // 4 replays from the oldest held event: one gap names 5..=90, then 91..=100 follow.
    let (offsets, _, _) = read_events(&mut sub, 4).await;
    assert_eq!(offsets, [1, 2, 3, 4]);
    let gap = loop {
        match tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            SubscriptionItem::Gap {
                last,
                position,
                reason,
            } => break (last, position, reason),
            SubscriptionItem::Subscribed { .. } => {}
            other => panic!("expected a gap, got {other:?}"),
        }
    };
    assert_eq!(gap.0.map(|p| p.offset), Some(4));
    assert_eq!(gap.1.offset, 90);
    assert_eq!(
        gap.2,
        courier_core::connection::GapReason::HistoryUnavailable
    );
    let (offsets, gaps, _) = read_events(&mut sub, 10).await;
    assert_eq!(offsets, (91..=100).collect::<Vec<_>>(), "what history held");
    assert_eq!(gaps, 0, "one gap for the whole pause");
    // Live delivery goes on.
    publish_n(&client, "backtest.slower", 1).await;
    assert_eq!(next_offset(&mut sub).await, 101);
    client.close().await;
}

/// The issue's restart case (#11): a memory-backed server dies as under SIGKILL
/// ([`ServerHandle::kill`]: no close frames, history gone) and starts again on the same port
/// with a new epoch; events published there while the subscriber backs off are still held,
/// so the subscriber gets one `epoch_changed` gap, then every one of them once, in order.
#[tokio::test]
async fn a_restarted_server_replays_its_new_epoch_after_one_gap() {
    use courier_core::connection::GapReason;
    use courier_server::config::Backend;

    let memory = |c: &mut Config| c.backend = Backend::Memory;
    let first = server_with(memory).await;
    let addr = first.local_addr();
    let channel = "backtest.restart";
    // Every reconnect waits at least 1.5 s: the restart and the publishes below fit in it.
    let mut config = ClientConfig::new(format!("http://{addr}")).service_name("rust-tests");
    config.core.connection.backoff.min_delay_ms = 1_500;
    let subscriber = Client::new(config, Arc::new(StaticToken(token(3600)))).unwrap();
    let mut sub = subscriber.subscribe(channel, None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    let before = client(&first);
    for i in 0..3 {
        before
            .publish(channel, "backtest.progress", &progress("r", f64::from(i)))
            .await
            .unwrap();
    }
    before.close().await;
    let (offsets, _, _) = read_events(&mut sub, 3).await;
    assert_eq!(offsets, [1, 2, 3]);
    let old = sub.position().cloned().unwrap();

    tokio::time::timeout(WAIT, first.kill()).await.unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let second = server_on(socket.listen(1024).unwrap(), memory).await;
    let after = client(&second);
    let mut epoch = None;
    for i in 0..5u32 {
        let ack = after
            .publish(channel, "backtest.progress", &progress("r", f64::from(i)))
            .await
            .unwrap();
        assert_eq!(ack.offset, u64::from(i) + 1);
        epoch = Some(ack.epoch);
    }
    let epoch = epoch.unwrap();
    assert_ne!(
        epoch, old.epoch,
        "a restart without persistence is a new epoch"
    );
    assert_eq!(
        subscriber.stats().reconnects,
        0,
        "published while the subscriber was backing off"
    );

    let mut items = Vec::new();
    let mut events = Vec::new();
    while events.len() < 5 {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(SubscriptionItem::Event(d))) => events.push((d.epoch, d.offset)),
            Ok(Some(SubscriptionItem::Gap {
                last,
                position,
                reason,
            })) => items.push((last, position, reason)),
            Ok(Some(SubscriptionItem::Subscribed { .. })) => {}
            other => panic!("after {events:?}: {other:?}"),
        }
    }
    assert_eq!(
        items,
        [(
            Some(old),
            courier_core::StreamPosition {
                epoch: epoch.clone(),
                offset: 0
            },
            GapReason::EpochChanged
        )],
        "exactly one gap, naming only the old epoch's tail"
    );
    assert_eq!(
        events,
        (1..=5).map(|o| (epoch.clone(), o)).collect::<Vec<_>>(),
        "every event of the new epoch, once, in order"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "nothing more"
    );
    assert_eq!(subscriber.stats().reconnects, 1);
    assert_eq!(subscriber.stats().gaps, 1);
    after.close().await;
    subscriber.close().await;
}

#[tokio::test]
async fn a_dropped_publish_withdraws_its_event_if_it_was_not_sent() {
    let server = server().await;
    // One request at a time, and the token held back: both events wait in the queue (the
    // core sends nothing before it has a token); the second is given up on.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let mut config = ClientConfig::new(format!("http://{}", server.local_addr()));
    config.core.queue.max_in_flight = 1;
    config.core.queue.max_batch_events = 1;
    let publisher = Client::new(
        config,
        token_fn(move |_| {
            let g = g.clone();
            async move {
                let _permit = g.acquire().await.map_err(|e| e.to_string())?;
                Ok(token(3600))
            }
        }),
    )
    .unwrap();
    let watcher = client(&server);
    let mut sub = watcher.subscribe("backtest.rt9", None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();

    let p = publisher.clone();
    let first = tokio::spawn(async move {
        p.publish("backtest.rt9", "backtest.progress", &progress("rt9", 1.0))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        publisher.publish("backtest.rt9", "backtest.progress", &progress("rt9", 2.0)),
    )
    .await;
    assert!(abandoned.is_err(), "still queued behind the first");
    assert_eq!(
        publisher.publisher().stats().queued_normal,
        1,
        "the second withdrawn, the first still waiting for the token"
    );

    gate.add_permits(100);
    assert_eq!(first.await.unwrap().unwrap().offset, 1);
    let third = publisher
        .publish("backtest.rt9", "backtest.progress", &progress("rt9", 3.0))
        .await
        .unwrap();
    assert_eq!(third.offset, 2, "the withdrawn event never took an offset");
    for offset in [1, 2] {
        let d = tokio::time::timeout(WAIT, sub.next_event())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.offset, d.event.data.get().contains("2.0")),
            (offset, false)
        );
    }
    assert_eq!(publisher.stats().acknowledged, 2);
    publisher.close().await;
    watcher.close().await;
}

/// A TCP proxy in front of `target`: (its address, connections accepted, most open at once).
async fn counting_proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (a, p) = (accepted.clone(), peak.clone());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now_open, Ordering::SeqCst);
            let open = open.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, peak)
}

/// The HTTP pool keeps a connection for every request that can be in flight: rounds of 64
/// concurrent publishes reuse the same connections instead of closing the surplus after
/// each round (a fixed pool of 32 reopened 32 per round).
#[tokio::test]
async fn the_http_pool_keeps_what_is_in_flight() {
    let server = server().await;
    let (proxy, accepted, peak) = counting_proxy(server.local_addr()).await;
    let mut config = ClientConfig::new(format!("http://{proxy}")).service_name("rust-tests");
    config.core.queue.max_in_flight = 64;
    config.core.queue.max_batch_events = 1;
    let client = Client::new(config, Arc::new(StaticToken(token(3600)))).unwrap();
    for round in 0..5u32 {
        let publishes = (0..64u32).map(|i| {
            let client = client.clone();
            async move {
                client
                    .publish(
                        "backtest.pool",
                        "backtest.progress",
                        &progress("pool", f64::from(i)),
                    )
                    .await
            }
        });
        let results = tokio::time::timeout(WAIT, futures_util::future::join_all(publishes))
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok), "round {round}");
    }
    let (accepted, peak) = (accepted.load(Ordering::SeqCst), peak.load(Ordering::SeqCst));
    assert!(
        peak > 32,
        "more than 32 requests were in flight at once ({peak})"
    );
    assert!(
        accepted <= 64 + 8,
        "{accepted} connections for 5 rounds of at most 64 in flight"
    );
    client.close().await;
}

// --- the client-side limiter against the server's default limits ---------------------------
// The default table (courier-server config.rs): `deposit` (and `deposit.*`) allows 5 a
// minute, all 5 back to back, then one every 12 s; the `premium` tier multiplies that by 5
// (25, then one every 2.4 s). A type no row matches (`custom.x`) is charged to the user's
// fallback bucket (300). Margins: "at once" is a fraction of the refill interval (a client
// that waited for the bucket at all would take a whole interval); "when it refills" has
// 1.5 s of slack for a loaded machine.

const LIMITED_TYPE: &str = "deposit.made";
const UNLIMITED_TYPE: &str = "custom.x";

/// A client for a `user` of `tier` allowed to publish to `backtest.*`.
fn user_client(server: &ServerHandle, sub: &str, tier: &str) -> Client {
    let mut claims = claims_for(sub, Role::User, vec![], 3600);
    claims.publish = vec![ChannelPattern::new("backtest.*").unwrap()];
    claims.tier = Some(tier.into());
    Client::new(
        ClientConfig::new(format!("http://{}", server.local_addr())),
        Arc::new(StaticToken(sign_hs256(SECRET, &claims))),
    )
    .unwrap()
}

/// The server's record of every publish request made with a token of `sub`, in arrival
/// order, after checking that none was refused, whole (429) or per event (`refused`):
/// whatever the client waited for, it waited on its own. Returns the arrival times (Unix s).
async fn publishes_none_refused(server: &ServerHandle, sub: &str) -> Vec<f64> {
    let log: serde_json::Value =
        reqwest::get(format!("http://{}/_fault/requests", server.local_addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let mine: Vec<&serde_json::Value> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["path"].as_str().unwrap_or("").starts_with("/publish") && r["sub"] == json!(sub)
        })
        .collect();
    assert!(!mine.is_empty(), "the server saw the publishes");
    let refused: Vec<_> = mine
        .iter()
        .filter(|r| {
            r["status"] != json!(200) || r["refused"].as_array().is_some_and(|a| !a.is_empty())
        })
        .collect();
    assert!(refused.is_empty(), "refused by the server: {refused:?}");
    mine.iter()
        .map(|r| r["at_ms"].as_f64().unwrap() / 1000.0)
        .collect()
}

#[tokio::test]
async fn a_limited_burst_goes_out_at_once_and_an_unlimited_type_is_not_held_behind_it() {
    let server = server().await;
    let client = user_client(&server, "rs-burst", "standard");
    let started = Instant::now();
    for i in 0..5 {
        let ack = client
            .publish(
                "backtest.limits",
                LIMITED_TYPE,
                &json!({"amount": i.to_string()}),
            )
            .await
            .unwrap();
        assert_eq!(ack.attempts, 1);
    }
    let burst = started.elapsed();
    assert_eq!(
        client.stats().rate_limit_waits,
        0,
        "the whole burst went out without a wait"
    );
    // Any wait for the deposit bucket lasts a refill interval (12 s).
    assert!(burst < Duration::from_secs(6), "5 publishes took {burst:?}");
    // The deposit bucket is now empty for 12 s; the fallback bucket is almost full.
    let started = Instant::now();
    let ack = client
        .publish("backtest.limits", UNLIMITED_TYPE, &json!({"n": 1}))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "an unlimited type waited {took:?} behind the deposit bucket"
    );
    assert_eq!(ack.attempts, 1);
    assert_eq!(client.stats().rate_limit_waits, 0);
    client.close().await;
    publishes_none_refused(&server, "rs-burst").await;
}

#[tokio::test]
async fn an_exhausted_bucket_holds_its_event_until_it_refills_not_later() {
    let server = server().await;
    // Premium: 25 deposits back to back, then one every 2.4 s (standard would take 12 s).
    let client = user_client(&server, "rs-refill", "premium");
    for i in 0..25 {
        client
            .publish(
                "backtest.limits",
                LIMITED_TYPE,
                &json!({"amount": i.to_string()}),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        client.stats().rate_limit_waits,
        0,
        "the whole burst went out without a wait"
    );
    let ack = tokio::time::timeout(
        Duration::from_secs(30),
        client.publish("backtest.limits", LIMITED_TYPE, &json!({"amount": "held"})),
    )
    .await
    .expect("acknowledged")
    .unwrap();
    let acked_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(ack.attempts, 1, "sent once: when the bucket had refilled");
    assert!(client.stats().rate_limit_waits >= 1, "the client held it");
    client.close().await;
    let arrivals = publishes_none_refused(&server, "rs-refill").await;
    assert_eq!(arrivals.len(), 26, "one request per event, none repeated");
    // The server's bucket gives one back a refill interval after the burst's first event,
    // as long as each burst event came within an interval of the one before (it did).
    let refill = arrivals[0] + 2.4;
    assert!(
        arrivals[25] >= refill - 0.05,
        "sent {:.3} s before the refill",
        refill - arrivals[25]
    );
    assert!(
        acked_at <= refill + 1.5,
        "acked {:.2} s after the refill",
        acked_at - refill
    );
}

// --- one client (#12) ----------------------------------------------------------------------

/// `ws://host:port` and `ws://host:port/ws` name the same server as `http://host:port`.
#[tokio::test]
async fn a_ws_url_works_for_publishing_and_subscribing() {
    let server = server().await;
    for url in [
        format!("ws://{}", server.local_addr()),
        format!("ws://{}/ws/", server.local_addr()),
    ] {
        let client = Client::new(
            ClientConfig::new(url.clone()).service_name("rust-tests"),
            Arc::new(StaticToken(token(3600))),
        )
        .unwrap();
        let channel = if url.ends_with('/') {
            "backtest.ws2"
        } else {
            "backtest.ws1"
        };
        let mut sub = client.subscribe(channel, None).unwrap();
        tokio::time::timeout(WAIT, sub.ready())
            .await
            .unwrap()
            .unwrap();
        let ack = client
            .publish(channel, "backtest.progress", &progress("ws", 1.0))
            .await
            .unwrap();
        assert_eq!(next_offset(&mut sub).await, ack.offset, "{url}");
        client.close().await;
    }
    let bad = Client::new(
        ClientConfig::new("ftp://example.invalid"),
        Arc::new(StaticToken(token(3600))),
    );
    assert!(matches!(bad, Err(Error::Invalid(_))));
}

/// Subscribing twice adds a listener: both get every event; a third asking for another
/// position is refused at once with `ALREADY_SUBSCRIBED`.
#[tokio::test]
async fn two_subscriptions_on_one_channel_both_receive() {
    let server = server().await;
    let client = client(&server);
    let mut first = client.subscribe("backtest.twice", None).unwrap();
    tokio::time::timeout(WAIT, first.ready())
        .await
        .unwrap()
        .unwrap();
    let mut second = client.subscribe("backtest.twice", None).unwrap();
    tokio::time::timeout(WAIT, second.ready())
        .await
        .unwrap()
        .unwrap();
    for i in 0..3 {
        client
            .publish(
                "backtest.twice",
                "backtest.progress",
                &progress("t", f64::from(i)),
            )
            .await
            .unwrap();
    }
    for sub in [&mut first, &mut second] {
        for offset in 1..=3 {
            assert_eq!(next_offset(sub).await, offset);
        }
    }
    let elsewhere = courier_core::StreamPosition {
        epoch: first.position().unwrap().epoch.clone(),
        offset: 1,
    };
    let third = client.subscribe("backtest.twice", Some(elsewhere));
    assert_eq!(third.unwrap_err().code(), "ALREADY_SUBSCRIBED");
    // One listener leaving keeps the channel for the other.
    drop(first);
    client
        .publish("backtest.twice", "backtest.progress", &progress("t", 9.0))
        .await
        .unwrap();
    assert_eq!(next_offset(&mut second).await, 4);
    assert_eq!(client.stats().channels, 1);
    client.close().await;
}

/// `close` while events are queued: the socket closes at once, new publishes are refused,
/// and what was queued is still sent before `close` returns.
#[tokio::test]
async fn close_sends_what_was_queued() {
    let server = server().await;
    let client = client(&server);
    let mut sub = client.subscribe("backtest.closing", None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    for i in 0..50 {
        let acked = acked.clone();
        client
            .publisher()
            .enqueue(
                courier_client::event(
                    "backtest.closing",
                    "backtest.progress",
                    &progress("c", f64::from(i)),
                ),
                Box::new(move |r| {
                    if r.is_ok() {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                }),
            )
            .unwrap();
    }
    tokio::time::timeout(WAIT, client.close()).await.unwrap();
    assert_eq!(
        acked.load(Ordering::SeqCst),
        50,
        "every queued event was sent"
    );
    assert_eq!(server.state().metrics.published.load(Ordering::Relaxed), 50);
    let refused = client
        .publish("backtest.closing", "backtest.progress", &progress("c", 1.0))
        .await;
    assert_eq!(refused.unwrap_err().code(), "CLOSED");
    assert!(client.subscribe("backtest.closing", None).is_err());
    // The subscription ended when the socket closed, with nothing after it.
    loop {
        match tokio::time::timeout(WAIT, sub.next()).await.unwrap() {
            None => break,
            Some(SubscriptionItem::Ended(e)) => assert!(e.is_none(), "{e:?}"),
            Some(_) => {}
        }
    }
}

#[tokio::test]
async fn history_pages_both_ways_with_the_events_a_subscription_yields() {
    use courier_client::{HistoryQuery, HistoryStart};
    let server = server().await;
    let c = client(&server);
    let mut sub = c.subscribe("hist.rust", None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    for i in 0..25 {
        c.publish(
            "hist.rust",
            "backtest.progress",
            &progress("h", f64::from(i)),
        )
        .await
        .unwrap();
    }
    let mut live = Vec::new();
    while live.len() < 25 {
        match tokio::time::timeout(WAIT, sub.next_event()).await.unwrap() {
            Some(Ok(d)) => live.push(d),
            other => panic!("{other:?}"),
        }
    }
    // Forwards in pages of 10: 10, 10, 5, then the end.
    let mut pages = c
        .history(
            "hist.rust",
            HistoryQuery {
                start: HistoryStart::After(0),
                limit: 10,
            },
        )
        .unwrap();
    let mut sizes = Vec::new();
    let mut read = Vec::new();
    while let Some(page) = pages.next_page().await {
        let page = page.unwrap();
        sizes.push(page.events.len());
        read.extend(page.events);
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(read, live, "the same Delivery values as the subscription");
    // Backwards, one event at a time.
    let mut back = c
        .history(
            "hist.rust",
            HistoryQuery {
                start: HistoryStart::Newest,
                limit: 7,
            },
        )
        .unwrap();
    let mut offsets = Vec::new();
    while let Some(d) = back.next_event().await {
        offsets.push(d.unwrap().offset);
    }
    assert_eq!(offsets, (1..=25).rev().collect::<Vec<_>>());
    // Checked before sending; refused with the SDK's typed errors.
    let e = c
        .history(
            "hist.rust",
            HistoryQuery {
                start: HistoryStart::Oldest,
                limit: 0,
            },
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(v) if v.field == "limit"),
        "{e:?}"
    );
    assert!(c.history("bad..channel", HistoryQuery::default()).is_err());
    let limited = Client::new(
        ClientConfig::new(format!("http://{}", server.local_addr())),
        Arc::new(StaticToken(sign_hs256(
            SECRET,
            &claims_for("nobody", Role::User, vec![], 3600),
        ))),
    )
    .unwrap();
    let mut refused = limited
        .history("hist.rust", HistoryQuery::default())
        .unwrap();
    let e = refused.next_page().await.unwrap().unwrap_err();
    assert_eq!(e.code(), "FORBIDDEN_CHANNEL", "{e:?}");
    assert_eq!(e.category(), courier_core::ErrorCategory::Authorization);
    c.close().await;
    limited.close().await;
}

// --- bytes on the wire -----------------------------------------------------------------------

/// Bytes a [`byte_proxy`] carried: (server to client, client to server), over all connections.
#[derive(Clone, Default)]
struct Carried(Arc<(AtomicU64, AtomicU64)>);

impl Carried {
    fn get(&self) -> (u64, u64) {
        (
            self.0.0.load(Ordering::SeqCst),
            self.0.1.load(Ordering::SeqCst),
        )
    }
}

/// Copies `from` to `to`, adding each chunk to `n` once it is written on.
async fn carry(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    n: impl Fn(u64),
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(k @ 1..) = from.read(&mut buf).await {
        if to.write_all(&buf[..k]).await.is_err() {
            break;
        }
        n(k as u64);
    }
    let _ = to.shutdown().await;
}

/// A TCP proxy in front of `target` that counts the bytes it carries each way: what a client
/// behind it read and wrote on its sockets, measured from outside the client.
async fn byte_proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Carried) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let carried = Carried::default();
    let c = carried.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (in_r, in_w) = inbound.into_split();
            let (out_r, out_w) = outbound.into_split();
            let (down, up) = (c.clone(), c.clone());
            tokio::spawn(carry(out_r, in_w, move |k| {
                down.0.0.fetch_add(k, Ordering::SeqCst);
            }));
            tokio::spawn(carry(in_r, out_w, move |k| {
                up.0.1.fetch_add(k, Ordering::SeqCst);
            }));
        }
    });
    (addr, carried)
}

/// The client's `(wire_bytes_received, wire_bytes_sent)`, which the native client always has.
fn wire(client: &Client) -> (u64, u64) {
    let s = client.stats();
    (
        s.wire_bytes_received
            .expect("the native client counts its bytes"),
        s.wire_bytes_sent
            .expect("the native client counts its bytes"),
    )
}

/// Waits until the client's counts equal what the proxy carried (bytes in transit arrive).
async fn wire_matches(client: &Client, carried: &Carried) {
    let deadline = Instant::now() + WAIT;
    while wire(client) != carried.get() {
        assert!(
            Instant::now() < deadline,
            "client counted {:?}, the proxy carried {:?}",
            wire(client),
            carried.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receives `n` events and returns the bytes of their `data` JSON (a lower bound of what
/// their frames carried).
async fn receive_payload(sub: &mut courier_client::Subscription, n: usize) -> u64 {
    let mut bytes = 0;
    for _ in 0..n {
        let d = tokio::time::timeout(WAIT, sub.next_event())
            .await
            .expect("an event in time")
            .expect("subscription open")
            .expect("no error");
        bytes += d.event.data.get().len() as u64;
    }
    bytes
}

/// `stats()` counts the WebSocket's bytes exactly as they crossed TCP (checked against a
/// proxy that carries them), grows with traffic, keeps counting across a reconnect, and
/// counts nothing for a client that only publishes over HTTP. The server runs its defaults
/// (compression on): this client does not offer deflate, so the wire carries at least the
/// JSON.
#[tokio::test]
async fn stats_count_the_websocket_bytes_on_the_wire_across_reconnects() {
    let server = server().await;
    let (proxy, carried) = byte_proxy(server.local_addr()).await;
    let sub_client = Client::new(
        ClientConfig::new(format!("http://{proxy}")).service_name("rust-tests"),
        Arc::new(StaticToken(token(3600))),
    )
    .unwrap();
    let publisher = client(&server);
    assert_eq!(wire(&sub_client), (0, 0), "nothing before the first socket");

    let mut sub = sub_client.subscribe("backtest.wire", None).unwrap();
    tokio::time::timeout(WAIT, sub.ready())
        .await
        .unwrap()
        .unwrap();
    wire_matches(&sub_client, &carried).await;
    let (handshake_in, handshake_out) = wire(&sub_client);
    assert!(
        handshake_in > 0 && handshake_out > 0,
        "upgrade and subscribe counted"
    );

    let publish = |from: u32| {
        let publisher = publisher.clone();
        async move {
            for i in from..from + 20 {
                publisher
                    .publish(
                        "backtest.wire",
                        "backtest.progress",
                        &progress("wire-bytes-wire-bytes-wire-bytes", f64::from(i)),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    publish(0).await;
    let payload = receive_payload(&mut sub, 20).await;
    wire_matches(&sub_client, &carried).await;
    let (first_in, _) = wire(&sub_client);
    assert!(
        first_in >= handshake_in + payload,
        "20 events of {payload} JSON bytes, uncompressed: {handshake_in} -> {first_in}"
    );

    // A new connection adds to the same counts.
    fault(&server, "drop", json!({})).await;
    publish(20).await;
    let payload = receive_payload(&mut sub, 20).await;
    wire_matches(&sub_client, &carried).await;
    let (second_in, second_out) = wire(&sub_client);
    assert!(sub_client.stats().reconnects >= 1);
    assert!(
        second_in >= first_in + payload,
        "cumulative across the reconnect: {first_in} -> {second_in}"
    );
    assert!(
        second_out > handshake_out,
        "the new upgrade and resubscribe were sent"
    );

    assert_eq!(
        wire(&publisher),
        (0, 0),
        "publishing over HTTP opens no WebSocket"
    );
    sub_client.close().await;
    publisher.close().await;
}
