//! Batch semantics every backend keeps: one result per event, dense offsets per channel in
//! batch order, an id twice in one batch, and refusals (rate limit included) per event.
//! `api.rs` runs these on memory and `redis.rs` on one Redis and on a Redis Cluster, through
//! [`batch_tests`], at the default settings (rate limits on).

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::util::*;

/// Declares the batch tests for one backend. `$start` gives `(guard, Server)`; the guard
/// (a Redis, a cluster, or `()`) lives as long as the test.
macro_rules! batch_tests {
    ($start:expr) => {
        #[tokio::test]
        async fn batch_reports_each_event() {
            let (_guard, server) = $start;
            $crate::batches::reports_each_event(&server).await;
            server.shutdown().await;
        }

        #[tokio::test]
        async fn batch_with_an_id_twice_publishes_it_once() {
            let (_guard, server) = $start;
            $crate::batches::id_twice_in_one_batch(&server).await;
            server.shutdown().await;
        }

        #[tokio::test]
        async fn batch_refuses_per_event_and_charges_only_accepted_ones() {
            let (_guard, server) = $start;
            $crate::batches::rate_limit_per_event(&server).await;
            server.shutdown().await;
        }

        #[tokio::test]
        async fn concurrent_batches_keep_offsets_dense_and_in_batch_order() {
            let (_guard, server) = $start;
            $crate::batches::dense_offsets_under_concurrency(&server).await;
            server.shutdown().await;
        }
    };
}

fn status_offsets(v: &Value) -> Vec<(String, Option<u64>)> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["offset"].as_u64(),
            )
        })
        .collect()
}

fn so(status: &str, offset: Option<u64>) -> (String, Option<u64>) {
    (status.to_owned(), offset)
}

pub(crate) async fn reports_each_event(server: &Server) {
    let svc = service("svc");
    server
        .post("/publish", Some(&svc), &event("b0", "global", 1))
        .await;
    let body = json!({"events": [
        event("b1", "global", 1),
        event("b0", "global", 1),
        {"id": "b2", "type": "backtest.progress", "channel": "global", "data": {"percent": 1}},
        event("", "backtest.z", 3),
    ]});
    let r = server.post("/publish/batch", Some(&svc), &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 4);
    assert_eq!(
        (res[0]["status"].as_str(), res[0]["offset"].as_u64()),
        (Some("accepted"), Some(2))
    );
    assert_eq!(
        (res[1]["status"].as_str(), res[1]["offset"].as_u64()),
        (Some("duplicate"), Some(1))
    );
    assert_eq!(
        (res[2]["status"].as_str(), res[2]["id"].as_str()),
        (Some("rejected"), Some("b2"))
    );
    assert_eq!(res[2]["error"]["field"], "events[2].data.backtest_id");
    assert!(res[0].get("error").is_none());
    assert_eq!(
        (
            res[3]["status"].as_str(),
            res[3]["channel"].as_str(),
            res[3]["offset"].as_u64()
        ),
        (Some("accepted"), Some("backtest.z"), Some(1))
    );
    assert_eq!(
        server
            .post("/publish/batch", Some(&svc), &json!({"nope": 1}))
            .await
            .status(),
        400
    );
}

pub(crate) async fn id_twice_in_one_batch(server: &Server) {
    let svc = service("svc");
    let (mut ws, _) = server.connect(&svc).await;
    assert_eq!(ws.subscribe(1, "dup", None).await["op"], "subscribed");
    let body = json!({"events": [
        event("x", "dup", 1),
        event("y", "dup", 2),
        event("x", "dup", 3),
        event("z", "dup", 4),
        event("x", "dup", 5),
    ]});
    let r = server.post("/publish/batch", Some(&svc), &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        status_offsets(&r.json().await.unwrap()),
        [
            so("accepted", Some(1)),
            so("accepted", Some(2)),
            so("duplicate", Some(1)),
            so("accepted", Some(3)),
            so("duplicate", Some(1)),
        ]
    );
    let body =
        json!({"events": [event("w", "dup", 6), event("x", "dup", 7), event("w", "dup", 8)]});
    let r = server.post("/publish/batch", Some(&svc), &body).await;
    assert_eq!(
        status_offsets(&r.json().await.unwrap()),
        [
            so("accepted", Some(4)),
            so("duplicate", Some(1)),
            so("duplicate", Some(4)),
        ]
    );
    // Delivered once each, in offset order, with the first occurrence's data; the marker
    // shows nothing else came in between.
    server
        .post("/publish", Some(&svc), &event("end", "dup", 9))
        .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let f = ws.recv().await;
        assert_eq!(f["op"], "event", "{f}");
        got.push((
            f["offset"].as_u64().unwrap(),
            f["event"]["id"].as_str().unwrap().to_owned(),
            f["event"]["data"]["percent"].as_u64().unwrap(),
        ));
    }
    let want: Vec<(u64, String, u64)> = [(1, "x", 1), (2, "y", 2), (3, "z", 4), (4, "w", 6)]
        .into_iter()
        .chain([(5, "end", 9)])
        .map(|(o, id, n)| (o, id.to_owned(), n))
        .collect();
    assert_eq!(got, want);
}

fn typed(id: &str, kind: &str) -> Value {
    json!({"id": id, "type": kind, "channel": "global", "data": {"n": 1}})
}

pub(crate) async fn rate_limit_per_event(server: &Server) {
    // Default limits, a standard user: `type:deposit` admits a burst of 5.
    let alice = user_with("alice", &[], &["global"]);
    let body = json!({"events": [
        typed("d1", "deposit.made"),
        typed("d2", "deposit.made"),
        typed("d3", "deposit.made"),
        typed("d4", "deposit.made"),
        typed("d5", "deposit.made"),
        typed("r", "deposit.made"),
        // The refused id again: not claimed, so published now (by another bucket).
        typed("r", "custom.x"),
        {"id": "bad", "type": "custom.x", "channel": "global"},
        typed("d1", "deposit.made"),
    ]});
    let r = server.post("/publish/batch", Some(&alice), &body).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h.get("retry-after").is_none(), "no Retry-After on a 200");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        status_offsets(&v),
        [
            so("accepted", Some(1)),
            so("accepted", Some(2)),
            so("accepted", Some(3)),
            so("accepted", Some(4)),
            so("accepted", Some(5)),
            so("rejected", None),
            so("accepted", Some(6)),
            so("rejected", None),
            so("duplicate", Some(1)),
        ]
    );
    let res = v["results"].as_array().unwrap();
    let e = &res[5]["error"];
    assert_eq!(
        (e["code"].as_str(), e["limit_type"].as_str()),
        (Some("RATE_LIMIT_EXCEEDED"), Some("type:deposit"))
    );
    let wait = e["retry_after_ms"].as_u64().unwrap();
    assert!((10_000..=12_000).contains(&wait), "{wait}");
    assert_eq!(res[7]["error"]["code"], "INVALID_EVENT");
    // Only the six accepted events were charged to `user` (600 a minute).
    let ratelimit = h["ratelimit"].to_str().unwrap();
    assert!(ratelimit.contains("\"user\";r=594;"), "{ratelimit}");
    assert!(ratelimit.contains("\"type:deposit\";r=0;"), "{ratelimit}");
    assert!(ratelimit.contains("\"fallback\";r=299;"), "{ratelimit}");
}

pub(crate) async fn dense_offsets_under_concurrency(server: &Server) {
    let svc = service("svc");
    let channels = ["c.a", "c.b", "c.c"];
    // Four publishers, five batches of 20 each, over three channels, half with ids.
    let publisher = |p: usize| {
        let svc = svc.clone();
        async move {
            let mut answers = Vec::new();
            for b in 0..5 {
                let events: Vec<Value> = (0..20)
                    .map(|i| {
                        let id = if i % 2 == 0 {
                            format!("p{p}-b{b}-{i}")
                        } else {
                            String::new()
                        };
                        event(&id, channels[(i + p) % 3], i as u64)
                    })
                    .collect();
                let r = server
                    .post("/publish/batch", Some(&svc), &json!({ "events": events }))
                    .await;
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                answers.push(v["results"].as_array().unwrap().clone());
            }
            answers
        }
    };
    let all = join_all((0..4).map(publisher)).await;
    let mut offsets: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for batch in all.iter().flatten() {
        let mut last: std::collections::HashMap<&str, u64> = Default::default();
        for r in batch {
            assert_eq!(r["status"], "accepted", "{r}");
            let (ch, off) = (
                r["channel"].as_str().unwrap(),
                r["offset"].as_u64().unwrap(),
            );
            // Within a batch, a channel's offsets follow the batch's order.
            assert!(last.get(ch).is_none_or(|&l| l < off), "{batch:?}");
            last.insert(ch, off);
            offsets.entry(ch.to_owned()).or_default().push(off);
        }
    }
    for (ch, mut offs) in offsets {
        offs.sort_unstable();
        let n = offs.len() as u64;
        assert_eq!(offs, (1..=n).collect::<Vec<_>>(), "{ch}: dense, each once");
    }
}
