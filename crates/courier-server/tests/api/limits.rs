//! Rate limits, connection limits, slow consumers and heartbeats.

use courier_server::auth::{Claims, sign_hs256};
use courier_server::config::LimitRule;
use serde_json::{Value, json};

use crate::util::*;

fn typed(kind: &str, channel: &str) -> Value {
    json!({"type": kind, "channel": channel, "data": {"n": 1}})
}

#[tokio::test]
async fn http_429_with_headers_and_the_limit_holds_under_a_burst() {
    let server = start_with(|c| {
        c.rate_limits
            .types
            .insert("candles".into(), LimitRule::per_minute(5));
    })
    .await;
    let svc = service("svc");
    let body = typed("candles.update", "global");
    let posts = (0..12).map(|_| server.post("/publish", Some(&svc), &body));
    let responses = futures_util::future::join_all(posts).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let limited: Vec<_> = responses.iter().filter(|r| r.status() == 429).collect();
    // Service tier multiplies limits by 20: 100 per minute, so all pass for `svc`...
    assert_eq!(ok, 12);
    assert!(limited.is_empty());
    // ...while a standard-tier user gets exactly 5.
    let user = user_with("alice", &[], &["global"]);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            server
                .post("/publish", Some(&user), &typed("candles.update", "global"))
                .await,
        );
    }
    assert_eq!(statuses.iter().filter(|r| r.status() == 200).count(), 5);
    let first = &statuses[0];
    assert_eq!(first.headers()["x-ratelimit-limit"], "5");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "4");
    assert!(
        first.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("\"type:candles\";q=5;w=60;burst=5, ")
    );
    let last = statuses.pop().unwrap();
    assert_eq!(last.status(), 429);
    let h = last.headers().clone();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(
        h["ratelimit"]
            .to_str()
            .unwrap()
            .contains("\"type:candles\";r=0;t=")
    );
    let e: Value = last.json().await.unwrap();
    assert_eq!(e["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(e["error"]["limit_type"], "type:candles");
    let ms = e["error"]["retry_after_ms"].as_u64().unwrap();
    assert_eq!(
        retry,
        ms.div_ceil(1000),
        "Retry-After is the exact wait rounded up"
    );
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .contains("courier_rate_limit_hits_total{event_type=\"candles\",shadow=\"false\"} 3"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn per_type_limits_tiers_shadow_and_switch() {
    let server = start_with(|c| {
        c.rate_limits.types.get_mut("strategy").unwrap().shadow = true;
    })
    .await;
    let alice = user_with("alice", &[], &["global"]);
    // payment: 5 per minute for a standard user; trade is a separate bucket.
    let mut ok = 0;
    for _ in 0..7 {
        if server
            .post("/publish", Some(&alice), &typed("payment.made", "global"))
            .await
            .status()
            == 200
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(
        server
            .post("/publish", Some(&alice), &typed("trade.signal", "global"))
            .await
            .status(),
        200
    );
    // Another user has their own buckets.
    let bob = user_with("bob", &[], &["global"]);
    assert_eq!(
        server
            .post("/publish", Some(&bob), &typed("payment.made", "global"))
            .await
            .status(),
        200
    );
    // Premium tier: 5 x 5 = 25.
    let premium = sign_hs256(
        SECRET,
        &Claims {
            tier: Some("premium".into()),
            publish: vec![courier_core::ChannelPattern::new("global").unwrap()],
            ..claims("carol")
        },
    );
    let mut ok = 0;
    for _ in 0..27 {
        if server
            .post("/publish", Some(&premium), &typed("deposit.made", "global"))
            .await
            .status()
            == 200
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 25);
    // Shadow bucket (strategy: 10/min): counted, headers say 0 left, nothing refused.
    let mut last = None;
    for _ in 0..12 {
        let r = server
            .post("/publish", Some(&alice), &typed("strategy.tick", "global"))
            .await;
        assert_eq!(r.status(), 200);
        last = Some(r);
    }
    assert!(
        last.unwrap().headers()["ratelimit"]
            .to_str()
            .unwrap()
            .contains("\"type:strategy\";r=0")
    );
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("event_type=\"strategy\",shadow=\"true\"} 2"),
        "{metrics}"
    );
    server.shutdown().await;

    // One switch turns limiting off.
    let server = start_with(|c| c.rate_limits.enabled = false).await;
    for _ in 0..8 {
        let r = server
            .post("/publish", Some(&alice), &typed("payment.made", "global"))
            .await;
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key("x-ratelimit-limit"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn ws_rate_limit_answers_an_error_frame_and_stays_open() {
    let server = start_with(|c| {
        c.rate_limits
            .types
            .insert("subscription".into(), LimitRule::per_minute(2));
    })
    .await;
    let token = user_with("alice", &[], &["user.alice"]);
    let (mut ws, _) = server.connect(&token).await;
    for id in 1..=3 {
        ws.send(json!({"op": "publish", "id": id, "event": typed("subscription.renewed", "user.alice")})).await;
    }
    assert_eq!(ws.recv().await["op"], "ack");
    assert_eq!(ws.recv().await["op"], "ack");
    let f = ws.recv().await;
    assert_eq!(
        (
            f["code"].as_str(),
            f["id"].as_u64(),
            f["limit_type"].as_str()
        ),
        (
            Some("RATE_LIMIT_EXCEEDED"),
            Some(3),
            Some("type:subscription")
        )
    );
    assert!(f["retry_after_ms"].as_u64().unwrap() > 1000);
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.recv().await["op"], "pong");
    server.shutdown().await;
}

#[tokio::test]
async fn connection_limits_per_user_total_and_channel() {
    let server = start_with(|c| {
        c.connections.max_per_user = 2;
        c.connections.max_total = 3;
        c.connections.max_per_channel = 1;
    })
    .await;
    let (_a1, _) = server.connect(&user("alice")).await;
    let (_a2, _) = server.connect(&user("alice")).await;
    let mut a3 = server.open("/ws").await;
    a3.send(json!({"op": "connect", "token": user("alice")}))
        .await;
    let (frames, end) = a3.until_end().await;
    assert_eq!(
        (frames[0]["code"].as_str(), frames[0]["limit_type"].as_str()),
        (Some("CONNECTION_LIMIT_EXCEEDED"), Some("user"))
    );
    assert_eq!(end, End::Close(1008));

    let (mut b1, _) = server.connect(&user("bob")).await;
    let mut c1 = server.open("/ws").await;
    c1.send(json!({"op": "connect", "token": user("carol")}))
        .await;
    let (frames, end) = c1.until_end().await;
    assert_eq!(
        (frames[0]["limit_type"].as_str(), end),
        (Some("total"), End::Close(1008))
    );

    // Per channel: bob holds the only place on `global`.
    assert_eq!(b1.subscribe(1, "global", None).await["op"], "subscribed");
    drop(_a1);
    let (mut a, _) = {
        // Wait until alice's closed connection has been counted out.
        let deadline = tokio::time::Instant::now() + STEP;
        while server.state().connections.total() >= 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connection not released"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        server.connect(&user("alice")).await
    };
    let f = a.subscribe(2, "global", None).await;
    assert_eq!(
        (
            f["code"].as_str(),
            f["limit_type"].as_str(),
            f["id"].as_u64()
        ),
        (Some("CONNECTION_LIMIT_EXCEEDED"), Some("channel"), Some(2))
    );
    // The connection stays open: other channels still work, and `global` once bob leaves.
    assert_eq!(a.subscribe(3, "user.alice", None).await["op"], "subscribed");
    a.send(json!({"op": "ping"})).await;
    assert_eq!(a.recv().await["op"], "pong");
    drop(b1);
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let f = a.subscribe(4, "global", None).await;
        if f["op"] == "subscribed" {
            break;
        }
        assert_eq!(f["limit_type"], "channel", "{f}");
        assert!(tokio::time::Instant::now() < deadline, "place not released");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let metrics = server.get("/metrics").await.text().await.unwrap();
    for t in ["user", "total"] {
        assert!(
            metrics.contains(&format!(
                "courier_connection_rejections_total{{limit_type=\"{t}\"}} 1"
            )),
            "{metrics}"
        );
    }
    assert!(
        metrics.contains("courier_connection_rejections_total{limit_type=\"channel\"}"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn slow_consumer_is_closed_with_4008_and_can_resume() {
    let server = start_with(|c| {
        c.ws.outbound_queue = 4;
        c.rate_limits.enabled = false;
    })
    .await;
    let svc = service("svc");
    let (mut slow, connected) = server.connect(&user("alice")).await;
    slow.subscribe(1, "global", None).await;
    let blob = "x".repeat(60 * 1024);
    let mut sent = 0u64;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while server
        .state()
        .metrics
        .slow_consumers
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never detected as slow"
        );
        let r = server
            .post(
                "/publish",
                Some(&svc),
                &json!({"type": "custom.blob", "channel": "global", "data": {"b": blob}}),
            )
            .await;
        assert_eq!(r.status(), 200);
        sent += 1;
    }
    let (frames, end) = slow.until_end().await;
    assert_eq!(end, End::Close(4008));
    // Nothing silently dropped: what was delivered is a prefix, and the rest is in history.
    let offsets: Vec<u64> = frames
        .iter()
        .filter(|f| f["op"] == "event")
        .map(|f| f["offset"].as_u64().unwrap())
        .collect();
    assert!(offsets.iter().enumerate().all(|(i, o)| *o == i as u64 + 1));
    let last = offsets.last().copied().unwrap_or(0);
    let (mut again, _) = server.connect(&user("alice")).await;
    let f = again
        .subscribe(
            1,
            "global",
            Some(json!({"epoch": connected["epoch"], "offset": last})),
        )
        .await;
    assert_eq!(f["recovered"], true);
    for expected in last + 1..=sent {
        assert_eq!(again.recv().await["offset"].as_u64(), Some(expected));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn heartbeat_closes_a_silent_client_with_4030() {
    let server = start_with(|c| {
        c.ws.ping_interval_ms = 100;
        c.ws.pong_timeout_ms = 200;
    })
    .await;
    let (mut ws, connected) = server.connect(&user("alice")).await;
    assert_eq!(connected["ping_interval_ms"], 100);
    // Read raw frames without answering pings.
    use futures_util::StreamExt;
    let mut saw_ping = false;
    let code = loop {
        match tokio::time::timeout(STEP, ws.s.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                saw_ping |= t.contains("\"ping\"")
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                break u16::from(f.code);
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert!(saw_ping);
    assert_eq!(code, 4030);
    // A client that answers stays connected across several ping intervals.
    let (mut ws, _) = server.connect(&user("bob")).await;
    for _ in 0..5 {
        ws.send(json!({"op": "ping"})).await;
        assert_eq!(ws.recv().await["op"], "pong"); // `recv` answers server pings
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

/// The members of a `RateLimit` header: bucket -> (r, t).
fn members(h: &reqwest::header::HeaderMap) -> std::collections::BTreeMap<String, (u64, u64)> {
    let Some(v) = h.get("ratelimit") else {
        return Default::default();
    };
    v.to_str()
        .unwrap()
        .split(", ")
        .map(|m| {
            let mut parts = m.split(';');
            let name = parts.next().unwrap().trim_matches('"').to_owned();
            let mut num = |k: &str| {
                parts
                    .next()
                    .unwrap()
                    .strip_prefix(k)
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            let r = num("r=");
            (name, (r, num("t=")))
        })
        .collect()
}

const STANDARD_POLICY: &str = "\"user\";q=600;w=60;burst=600, \
    \"type:candles\";q=100;w=60;burst=100, \"type:deposit\";q=5;w=60;burst=5, \
    \"type:payment\";q=5;w=60;burst=5, \"type:strategy\";q=10;w=60;burst=10, \
    \"type:subscription\";q=5;w=60;burst=5, \"type:trade\";q=50;w=60;burst=50, \
    \"fallback\";q=300;w=60;burst=300";

#[tokio::test]
async fn headers_name_every_bucket_and_a_batch_is_refused_per_event() {
    // Default limits, a standard user.
    let server = start().await;
    let alice = user_with("alice", &[], &["global"]);
    let r = server
        .post("/publish", Some(&alice), &typed("deposit.made", "global"))
        .await;
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["ratelimit-policy"], STANDARD_POLICY);
    let m = members(h);
    assert_eq!(m.keys().collect::<Vec<_>>(), ["type:deposit", "user"]);
    assert_eq!(m["type:deposit"], (4, 12));
    assert_eq!(m["user"].0, 599);
    // The deposit bucket is the tightest: 4 left of 5, full again in 12 s.
    assert_eq!(
        (
            &h["x-ratelimit-limit"],
            &h["x-ratelimit-remaining"],
            &h["x-ratelimit-reset"]
        ),
        (
            &"5".parse().unwrap(),
            &"4".parse().unwrap(),
            &"12".parse().unwrap()
        )
    );

    // The rest of the burst, a custom type, the 6th deposit, a custom type again.
    let body = json!({"events": [
        typed("deposit.made", "global"),
        typed("deposit.made", "global"),
        typed("deposit.made", "global"),
        typed("deposit.made", "global"),
        typed("custom.x", "global"),
        typed("deposit.made", "global"),
        typed("custom.x", "global"),
    ]});
    let r = server.post("/publish/batch", Some(&alice), &body).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h.get("retry-after").is_none(), "no Retry-After on a 200");
    assert_eq!(h["ratelimit-policy"], STANDARD_POLICY);
    let m = members(&h);
    // Every bucket the batch touched, in its state after the batch.
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["fallback", "type:deposit", "user"]
    );
    // Empty, full again 60 s after the first deposit (a little less by now).
    assert_eq!(m["type:deposit"].0, 0);
    assert!((58..=60).contains(&m["type:deposit"].1), "{m:?}");
    assert!((298..=300).contains(&m["fallback"].0), "{m:?}");
    assert!((593..=600).contains(&m["user"].0), "{m:?}");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["x-ratelimit-limit"], "5");
    let v: Value = r.json().await.unwrap();
    let res = v["results"].as_array().unwrap();
    let statuses: Vec<&str> = res.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            "accepted", "accepted", "accepted", "accepted", "accepted", "rejected", "accepted"
        ]
    );
    let e = &res[5]["error"];
    assert_eq!(
        (e["code"].as_str(), e["limit_type"].as_str()),
        (Some("RATE_LIMIT_EXCEEDED"), Some("type:deposit"))
    );
    let wait = e["retry_after_ms"].as_u64().unwrap();
    assert!((10_000..=12_000).contains(&wait), "{wait}");

    // A single publish of the exhausted type: 429 naming the bucket, Retry-After rounded up.
    let r = server
        .post("/publish", Some(&alice), &typed("deposit.made", "global"))
        .await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(members(r.headers())["type:deposit"].0, 0);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["limit_type"], "type:deposit");
    assert_eq!(
        retry,
        e["error"]["retry_after_ms"]
            .as_u64()
            .unwrap()
            .div_ceil(1000)
    );
    // ...while another type goes through at once.
    let r = server
        .post("/publish", Some(&alice), &typed("custom.x", "global"))
        .await;
    assert_eq!(r.status(), 200);

    // The request log names the buckets each request carried and those that refused.
    let log: Value = server.get("/_fault/requests").await.json().await.unwrap();
    let recs = log["requests"].as_array().unwrap();
    let brief: Vec<(u64, Value, Vec<&str>)> = recs
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap(),
                r["buckets"].clone(),
                r["refused"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["bucket"].as_str().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            (200, json!(["user", "type:deposit"]), vec![]),
            (
                200,
                json!(["user", "type:deposit", "fallback"]),
                vec!["type:deposit"]
            ),
            (429, json!(["user", "type:deposit"]), vec!["type:deposit"]),
            (200, json!(["user", "fallback"]), vec![]),
        ]
    );
    assert_eq!(recs[1]["refused"][0]["retry_after_ms"].as_u64(), Some(wait));
    server.shutdown().await;
}

#[tokio::test]
async fn custom_types_share_one_fallback_bucket_per_user() {
    let server = start_with(|c| c.rate_limits.fallback = LimitRule::per_minute(3)).await;
    let alice = user_with("alice", &[], &["global"]);
    for t in ["custom.a", "custom.a", "other.b"] {
        let r = server
            .post("/publish", Some(&alice), &typed(t, "global"))
            .await;
        assert_eq!(r.status(), 200, "{t}");
    }
    let r = server
        .post("/publish", Some(&alice), &typed("third.c", "global"))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(members(r.headers())["fallback"].0, 0);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["limit_type"], "fallback");
    // Per user: bob's fallback is untouched.
    let bob = user_with("bob", &[], &["global"]);
    let r = server
        .post("/publish", Some(&bob), &typed("third.c", "global"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(members(r.headers())["fallback"], (2, 20));
    server.shutdown().await;
}

#[tokio::test]
async fn an_invalid_event_or_a_duplicate_costs_nothing() {
    let server = start().await;
    let alice = user_with("alice", &[], &["global"]);
    let first = json!({"id": "dep-1", "type": "deposit.made", "channel": "global", "data": {}});
    let r = server.post("/publish", Some(&alice), &first).await;
    assert_eq!(members(r.headers())["type:deposit"].0, 4);
    // A duplicate: acknowledged, not charged (no RateLimit member), the table still sent.
    let r = server.post("/publish", Some(&alice), &first).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("ratelimit").is_none());
    assert_eq!(r.headers()["ratelimit-policy"], STANDARD_POLICY);
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    // Invalid events: missing data, a channel the token may not publish to.
    for bad in [
        json!({"type": "deposit.made", "channel": "global"}),
        json!({"type": "deposit.made", "channel": "elsewhere", "data": {}}),
    ] {
        let r = server.post("/publish", Some(&alice), &bad).await;
        assert!(r.status() == 400 || r.status() == 403, "{}", r.status());
        assert!(r.headers().get("ratelimit").is_none());
    }
    // The same in a batch, over WebSocket too.
    let body = json!({"events": [first.clone(), {"type": "deposit.made", "channel": "global"}]});
    let r = server.post("/publish/batch", Some(&alice), &body).await;
    assert!(r.headers().get("ratelimit").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["results"][0]["status"].as_str(),
            v["results"][1]["status"].as_str()
        ),
        (Some("duplicate"), Some("rejected"))
    );
    let (mut ws, _) = server.connect(&alice).await;
    ws.send(json!({"op": "publish", "id": 1, "event": first}))
        .await;
    assert_eq!(ws.recv().await["duplicate"], true);
    ws.send(
        json!({"op": "publish", "id": 2, "event": {"type": "deposit.made", "channel": "global"}}),
    )
    .await;
    assert_eq!(ws.recv().await["op"], "error");
    // The next new deposit takes the second cell of five.
    let r = server
        .post("/publish", Some(&alice), &typed("deposit.made", "global"))
        .await;
    assert_eq!(members(r.headers())["type:deposit"].0, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_id_is_not_kept_and_its_retry_is_published() {
    let server = start_with(|c| {
        c.rate_limits.types.insert(
            "deposit".into(),
            LimitRule {
                limit: 1,
                window_secs: 1,
                ..LimitRule::default()
            },
        );
    })
    .await;
    let alice = user_with("alice", &[], &["global"]);
    let ev = |id: &str| json!({"id": id, "type": "deposit.made", "channel": "global", "data": {}});
    assert_eq!(
        server
            .post("/publish", Some(&alice), &ev("a"))
            .await
            .status(),
        200
    );
    let r = server.post("/publish", Some(&alice), &ev("b")).await;
    assert_eq!(r.status(), 429);
    let wait = r.json::<Value>().await.unwrap()["error"]["retry_after_ms"]
        .as_u64()
        .unwrap();
    assert!(wait <= 1000, "{wait}");
    // Refused in a batch as well, next to an accepted event of another bucket.
    let body = json!({"events": [ev("b"), typed("custom.x", "global")]});
    let v: Value = server
        .post("/publish/batch", Some(&alice), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["results"][0]["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(v["results"][1]["status"], "accepted");
    tokio::time::sleep(std::time::Duration::from_millis(wait + 50)).await;
    // The retry is published (not a duplicate), and then it is one.
    let r: Value = server
        .post("/publish", Some(&alice), &ev("b"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["duplicate"].as_bool(), r["offset"].as_u64()),
        (Some(false), Some(3))
    );
    let r: Value = server
        .post("/publish", Some(&alice), &ev("b"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["duplicate"].as_bool(), r["offset"].as_u64()),
        (Some(true), Some(3))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_injected_fault_still_logs_the_buckets_of_its_events() {
    let server = start().await;
    let alice = user_with("alice", &[], &["global"]);
    server
        .post(
            "/_fault/fail",
            None,
            &json!({"status": 503, "count": 1, "retry_after_secs": 1}),
        )
        .await;
    let body = json!({"events": [typed("trade.x", "global"), typed("custom.y", "global")]});
    let r = server.post("/publish/batch", Some(&alice), &body).await;
    assert_eq!(r.status(), 503);
    let log: Value = server.get("/_fault/requests").await.json().await.unwrap();
    let rec = &log["requests"][0];
    assert_eq!(rec["buckets"], json!(["user", "type:trade", "fallback"]));
    assert_eq!(rec["refused"], json!([]));
    server.shutdown().await;
}

/// Publishes 60 KB events to `global` until the server counts a slow consumer; how many.
async fn publish_until_slow(server: &Server) -> u64 {
    let svc = service("svc");
    let blob = "x".repeat(60 * 1024);
    let mut sent = 0u64;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while server
        .state()
        .metrics
        .slow_consumers
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never detected as slow after {sent} events"
        );
        let r = server
            .post(
                "/publish",
                Some(&svc),
                &json!({"type": "custom.blob", "channel": "global", "data": {"b": blob}}),
            )
            .await;
        assert_eq!(r.status(), 200);
        sent += 1;
    }
    sent
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_closed_once_its_queue_passes_the_byte_budget() {
    let server = start_with(|c| {
        // The frame count (1,024 by default) would allow some 60 MB of these events.
        c.ws.max_queued_bytes = 256 * 1024;
        c.rate_limits.enabled = false;
    })
    .await;
    // A small receive window, so the kernel's buffers hold little of what is sent.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (s, _) = tokio_tungstenite::client_async(
        format!("ws://{}/ws", server.addr),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    let mut slow = Ws { s };
    slow.send(json!({"op": "connect", "token": user("alice")}))
        .await;
    assert_eq!(slow.recv().await["op"], "connected");
    assert_eq!(slow.subscribe(1, "global", None).await["op"], "subscribed");
    let sent = publish_until_slow(&server).await;
    // The kernel's send buffer takes some 3 MB (about 50 of these) before anything queues;
    // by frame count alone it would take over 1,024 more.
    assert!(sent < 150, "closed only after {sent} events of 60 KB");
    let (_, end) = slow.until_end().await;
    assert_eq!(end, End::Close(4008));
    server.shutdown().await;
}

#[tokio::test]
async fn global_shadow_measures_and_announces_but_refuses_nothing() {
    let server = start_with(|c| {
        c.rate_limits
            .types
            .insert("candles".into(), LimitRule::per_minute(2));
        c.rate_limits.shadow = true;
    })
    .await;
    let user = user_with("alice", &[], &["global"]);
    let mut last = None;
    for _ in 0..5 {
        let r = server
            .post("/publish", Some(&user), &typed("candles.update", "global"))
            .await;
        assert_eq!(r.status(), 200, "shadow mode refuses nothing");
        last = Some(r);
    }
    let policy = last.unwrap().headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for bucket in ["\"user\"", "\"type:candles\"", "\"fallback\""] {
        let rule = policy
            .split(", ")
            .find(|r| r.starts_with(bucket))
            .unwrap_or_else(|| panic!("{bucket} in {policy}"));
        assert!(rule.ends_with(";shadow"), "{rule}");
    }
    server.shutdown().await;
}
