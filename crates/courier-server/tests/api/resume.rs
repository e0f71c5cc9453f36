//! Resume rules (docs/protocol.md, resume): only what the server no longer holds is lost.
//! A stale epoch replays the new epoch from its oldest held event; an offset older than the
//! history replays from the oldest held event; either way live events follow without a hole
//! or a duplicate.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

async fn publish(server: &Server, token: &str, id: &str, channel: &str) -> Value {
    let r = server
        .post("/publish", Some(token), &event(id, channel, 1))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Reads `subscribed` fields as (recovered, epoch, offset, replay_from).
fn answer(f: &Value) -> (Option<bool>, Option<&str>, Option<u64>, Option<u64>) {
    assert_eq!(f["op"], "subscribed", "{f}");
    (
        f["recovered"].as_bool(),
        f["epoch"].as_str(),
        f["offset"].as_u64(),
        f["replay_from"].as_u64(),
    )
}

/// Reads the next events, asserting their offsets and ids.
async fn expect(ws: &mut Ws, epoch: &str, events: &[(u64, &str)]) {
    for (offset, id) in events {
        let f = ws.recv().await;
        assert_eq!(
            (
                f["op"].as_str(),
                f["epoch"].as_str(),
                f["offset"].as_u64(),
                f["event"]["id"].as_str()
            ),
            (Some("event"), Some(epoch), Some(*offset), Some(*id)),
            "{f}"
        );
    }
}

#[tokio::test]
async fn a_first_subscription_goes_live_after_the_latest() {
    let server = start().await;
    let svc = service("svc");
    publish(&server, &svc, "x1", "global").await;
    publish(&server, &svc, "x2", "global").await;
    let (mut a, connected) = server.connect(&user_with("alice", &["empty"], &[])).await;
    let f = a.subscribe(1, "global", None).await;
    assert_eq!(
        answer(&f),
        (Some(true), connected["epoch"].as_str(), Some(2), Some(3))
    );
    let f = a.subscribe(2, "empty", None).await;
    assert_eq!(answer(&f).3, Some(1));
    publish(&server, &svc, "x3", "global").await;
    expect(&mut a, connected["epoch"].as_str().unwrap(), &[(3, "x3")]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn after_a_restart_the_new_epoch_is_replayed_from_its_first_event() {
    let svc = service("svc");
    // Before the restart: the client saw offsets 1..=3 of the old epoch.
    let old = start().await;
    let (mut a, connected) = old.connect(&user("alice")).await;
    let old_epoch = connected["epoch"].as_str().unwrap().to_owned();
    a.subscribe(1, "global", None).await;
    for id in ["o1", "o2", "o3"] {
        publish(&old, &svc, id, "global").await;
    }
    expect(&mut a, &old_epoch, &[(1, "o1"), (2, "o2"), (3, "o3")]).await;
    drop(a);
    old.shutdown().await;

    // A memory server restarts with a new epoch; events arrive before the client is back.
    let server = start().await;
    for id in ["n1", "n2", "n3", "n4"] {
        publish(&server, &svc, id, "global").await;
    }
    let (mut a, connected) = server.connect(&user("alice")).await;
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    assert_ne!(epoch, old_epoch);
    let f = a
        .subscribe(1, "global", Some(json!({"epoch": old_epoch, "offset": 3})))
        .await;
    assert_eq!(
        answer(&f),
        (Some(false), Some(epoch.as_str()), Some(4), Some(1))
    );
    expect(
        &mut a,
        &epoch,
        &[(1, "n1"), (2, "n2"), (3, "n3"), (4, "n4")],
    )
    .await;
    publish(&server, &svc, "n5", "global").await;
    expect(&mut a, &epoch, &[(5, "n5")]).await;

    // A stale epoch with an offset beyond the new latest: still the whole new epoch.
    let (mut b, _) = server.connect(&user_with("bob", &["quiet"], &[])).await;
    let f = b
        .subscribe(1, "global", Some(json!({"epoch": old_epoch, "offset": 99})))
        .await;
    assert_eq!(
        answer(&f),
        (Some(false), Some(epoch.as_str()), Some(5), Some(1))
    );
    expect(
        &mut b,
        &epoch,
        &[(1, "n1"), (2, "n2"), (3, "n3"), (4, "n4"), (5, "n5")],
    )
    .await;
    // A channel the new epoch has nothing of: live from offset 1, nothing replayed.
    let f = b
        .subscribe(2, "quiet", Some(json!({"epoch": old_epoch, "offset": 7})))
        .await;
    assert_eq!(
        answer(&f),
        (Some(false), Some(epoch.as_str()), Some(0), Some(1))
    );
    publish(&server, &svc, "q1", "quiet").await;
    expect(&mut b, &epoch, &[(1, "q1")]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_offset_older_than_the_history_replays_from_the_oldest_held() {
    let server = start_with(|c| c.history.max_events_per_channel = 3).await;
    let svc = service("svc");
    for i in 1..=6 {
        publish(&server, &svc, &format!("h{i}"), "global").await;
    }
    let (mut a, connected) = server.connect(&user("alice")).await;
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    // Holds 4..=6: 2 and 3 are lost, the rest is replayed.
    let f = a
        .subscribe(1, "global", Some(json!({"epoch": epoch, "offset": 1})))
        .await;
    assert_eq!(
        answer(&f),
        (Some(false), Some(epoch.as_str()), Some(6), Some(4))
    );
    expect(&mut a, &epoch, &[(4, "h4"), (5, "h5"), (6, "h6")]).await;
    publish(&server, &svc, "h7", "global").await;
    expect(&mut a, &epoch, &[(7, "h7")]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn events_past_their_age_are_not_replayed() {
    let server = start_with(|c| c.history.max_age_secs = 1).await;
    let svc = service("svc");
    publish(&server, &svc, "old1", "global").await;
    publish(&server, &svc, "old2", "global").await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    publish(&server, &svc, "new3", "global").await;
    let (mut a, connected) = server.connect(&user("alice")).await;
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    let f = a
        .subscribe(1, "global", Some(json!({"epoch": epoch, "offset": 0})))
        .await;
    assert_eq!(
        answer(&f),
        (Some(false), Some(epoch.as_str()), Some(3), Some(3))
    );
    expect(&mut a, &epoch, &[(3, "new3")]).await;
    server.shutdown().await;
}

/// Publishes `from..=to` on `channel` in the background, one request at a time.
fn publish_in_background(
    server: &Server,
    token: String,
    channel: &'static str,
    from: u64,
    to: u64,
) -> tokio::task::JoinHandle<()> {
    let http = server.http.clone();
    let url = server.url("/publish");
    tokio::spawn(async move {
        for i in from..=to {
            let r = http
                .post(&url)
                .bearer_auth(&token)
                .json(&event(&format!("r{i}"), channel, i))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    })
}

#[tokio::test]
async fn a_new_epoch_replay_meets_live_publishes_without_holes_or_duplicates() {
    let server = start().await;
    let svc = service("svc");
    for i in 1..=50 {
        publish(&server, &svc, &format!("r{i}"), "backtest.race").await;
    }
    let (mut a, connected) = server.connect(&service("reader")).await;
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    let publisher = publish_in_background(&server, svc, "backtest.race", 51, 150);
    let f = a
        .subscribe(
            1,
            "backtest.race",
            Some(json!({"epoch": "gone", "offset": 120})),
        )
        .await;
    let (recovered, e, latest, from) = answer(&f);
    assert_eq!(
        (recovered, e, from),
        (Some(false), Some(epoch.as_str()), Some(1))
    );
    assert!(latest.unwrap() >= 50, "{f}");
    for expected in 1..=150u64 {
        let f = a.recv().await;
        assert_eq!(f["offset"].as_u64(), Some(expected), "{f}");
        assert_eq!(f["event"]["id"], format!("r{expected}"));
    }
    publisher.await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_trimmed_replay_meets_live_publishes_without_holes_or_duplicates() {
    let server = start_with(|c| c.history.max_events_per_channel = 20).await;
    let svc = service("svc");
    for i in 1..=50 {
        publish(&server, &svc, &format!("r{i}"), "backtest.race").await;
    }
    let (mut a, connected) = server.connect(&service("reader")).await;
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    let publisher = publish_in_background(&server, svc, "backtest.race", 51, 150);
    let f = a
        .subscribe(
            1,
            "backtest.race",
            Some(json!({"epoch": epoch, "offset": 5})),
        )
        .await;
    let (recovered, _, latest, from) = answer(&f);
    let (latest, from) = (latest.unwrap(), from.unwrap());
    // The oldest of the 20 held when the subscription read the history.
    assert_eq!((recovered, from), (Some(false), latest - 19), "{f}");
    for expected in from..=150u64 {
        let f = a.recv().await;
        assert_eq!(f["offset"].as_u64(), Some(expected), "{f}");
    }
    publisher.await.unwrap();
    server.shutdown().await;
}
