//! Publish and delivery, history resume, idempotency, validation, payload limits (batches:
//! `batches.rs`).

use serde_json::{Value, json};

use crate::util::*;

#[tokio::test]
async fn publish_http_delivers_over_ws_and_ws_publish_acks() {
    let server = start().await;
    let svc = service("svc");
    let (mut a, connected) = server.connect(&user("alice")).await;
    assert!(connected["session"].is_string() && connected["epoch"].is_string());
    assert_eq!(connected["limits"]["max_payload_bytes"], 100 * 1024);
    let f = a.subscribe(1, "global", None).await;
    assert_eq!(
        (f["recovered"].as_bool(), f["offset"].as_u64()),
        (Some(true), Some(0))
    );

    let r = server
        .post("/publish", Some(&svc), &event("e1", "global", 5))
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-ratelimit-limit"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (
            body["id"].as_str(),
            body["offset"].as_u64(),
            body["duplicate"].as_bool()
        ),
        (Some("e1"), Some(1), Some(false))
    );
    let d = a.recv().await;
    assert_eq!(
        (d["op"].as_str(), d["offset"].as_u64()),
        (Some("event"), Some(1))
    );
    assert_eq!(d["epoch"], connected["epoch"]);
    assert_eq!(d["event"]["id"], "e1");
    assert_eq!(d["event"]["metadata"]["source"], "svc");
    assert!(d["event"]["metadata"]["timestamp"].as_u64().unwrap() > 0);

    // Path channel, and a server-generated id when none is given.
    let r = server
        .post(
            "/publish/global",
            Some(&svc),
            &json!({"type": "custom.thing", "data": {"x": 1}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"].as_str().unwrap().len(), 26);
    assert_eq!(a.recv().await["event"]["id"], body["id"]);

    // WS publish from a service reaches a /ws/{channel} subscriber (request id 0).
    let (mut b, _) = server.connect_path("/ws/global", &user("bob")).await;
    let f = b.recv().await;
    assert_eq!(
        (f["op"].as_str(), f["id"].as_u64(), f["offset"].as_u64()),
        (Some("subscribed"), Some(0), Some(2))
    );
    let (mut s, _) = server.connect(&svc).await;
    s.send(json!({"op": "publish", "id": 7, "event": event("w1", "global", 1)}))
        .await;
    assert_eq!(
        s.recv().await,
        json!({"op": "ack", "id": 7, "event_id": "w1", "offset": 3, "duplicate": false})
    );
    assert_eq!(a.recv().await["offset"], 3);
    assert_eq!(b.recv().await["event"]["id"], "w1");
    server.shutdown().await;
}

#[tokio::test]
async fn duplicate_id_is_acknowledged_and_delivered_once() {
    let server = start().await;
    let svc = service("svc");
    let (mut a, _) = server.connect(&user("alice")).await;
    a.subscribe(1, "global", None).await;
    let first: Value = server
        .post("/publish", Some(&svc), &event("dup", "global", 1))
        .await
        .json()
        .await
        .unwrap();
    let again: Value = server
        .post("/publish", Some(&svc), &event("dup", "global", 1))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["offset"].clone(), again["duplicate"].as_bool()),
        (first["offset"].clone(), Some(true))
    );
    let (mut s, _) = server.connect(&svc).await;
    s.send(json!({"op": "publish", "id": 1, "event": event("dup", "global", 1)}))
        .await;
    assert_eq!(s.recv().await["duplicate"], true);
    server
        .post("/publish", Some(&svc), &event("after", "global", 1))
        .await;
    assert_eq!(a.recv().await["event"]["id"], "dup");
    assert_eq!(a.recv().await["event"]["id"], "after");
    // Concurrent duplicates: exactly one is new.
    let body = event("race", "global", 1);
    let posts = (0..8).map(|_| server.post("/publish", Some(&svc), &body));
    let results: Vec<Value> = futures_util::future::join_all(
        posts.map(|f| async { f.await.json::<Value>().await.unwrap() }),
    )
    .await;
    assert_eq!(
        results.iter().filter(|r| r["duplicate"] == false).count(),
        1
    );
    assert!(results.iter().all(|r| r["offset"] == results[0]["offset"]));
    server.shutdown().await;
}

#[tokio::test]
async fn history_resume_replays_in_order_from_what_is_held() {
    let server = start_with(|c| c.history.max_events_per_channel = 3).await;
    let svc = service("svc");
    let (mut a, connected) = server.connect(&user("alice")).await;
    let epoch = connected["epoch"].clone();
    for i in 1..=3 {
        server
            .post(
                "/publish",
                Some(&svc),
                &event(&format!("h{i}"), "global", i),
            )
            .await;
    }
    // Resume after offset 1: replays 2 and 3, then live events follow.
    let f = a
        .subscribe(1, "global", Some(json!({"epoch": epoch, "offset": 1})))
        .await;
    assert_eq!(
        (
            f["recovered"].as_bool(),
            f["offset"].as_u64(),
            f["replay_from"].as_u64()
        ),
        (Some(true), Some(3), Some(2))
    );
    assert_eq!(a.recv().await["offset"], 2);
    assert_eq!(a.recv().await["offset"], 3);
    server
        .post("/publish", Some(&svc), &event("h4", "global", 4))
        .await;
    assert_eq!(a.recv().await["offset"], 4);
    // Nothing missed.
    let (mut b, _) = server.connect(&user("bob")).await;
    let f = b
        .subscribe(1, "global", Some(json!({"epoch": epoch, "offset": 4})))
        .await;
    assert_eq!(
        (f["recovered"].as_bool(), f["replay_from"].as_u64()),
        (Some(true), Some(5))
    );
    // History holds 2..4 now: after offset 0, 1 is lost and 2..4 are replayed; a foreign
    // epoch has seen none of them, so it gets all three too.
    let (mut c, _) = server.connect(&user("carol")).await;
    let f = c
        .subscribe(1, "global", Some(json!({"epoch": epoch, "offset": 0})))
        .await;
    assert_eq!(
        (
            f["recovered"].as_bool(),
            f["offset"].as_u64(),
            f["replay_from"].as_u64()
        ),
        (Some(false), Some(4), Some(2))
    );
    for expected in 2..=4 {
        assert_eq!(c.recv().await["offset"], expected);
    }
    let f = c
        .subscribe(2, "global", Some(json!({"epoch": "other", "offset": 3})))
        .await;
    assert_eq!(
        (f["recovered"].as_bool(), f["replay_from"].as_u64()),
        (Some(false), Some(2))
    );
    for expected in 2..=4 {
        assert_eq!(c.recv().await["offset"], expected);
    }
    server
        .post("/publish", Some(&svc), &event("h5", "global", 5))
        .await;
    assert_eq!(c.recv().await["offset"], 5);
    assert_eq!(b.recv().await["offset"], 5);
    server.shutdown().await;
}

#[tokio::test]
async fn replay_races_live_publishes_without_holes_or_duplicates() {
    let server = start().await;
    let svc = service("svc");
    for i in 1..=50 {
        server
            .post(
                "/publish",
                Some(&svc),
                &event(&format!("r{i}"), "backtest.race", i),
            )
            .await;
    }
    let (mut a, connected) = server.connect(&service("reader")).await;
    let epoch = connected["epoch"].clone();
    let publisher = {
        let http = server.http.clone();
        let url = server.url("/publish");
        tokio::spawn(async move {
            for i in 51..=150 {
                http.post(&url)
                    .bearer_auth(&svc)
                    .json(&event(&format!("r{i}"), "backtest.race", i))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let f = a
        .subscribe(
            1,
            "backtest.race",
            Some(json!({"epoch": epoch, "offset": 10})),
        )
        .await;
    assert_eq!(
        (f["recovered"].as_bool(), f["replay_from"].as_u64()),
        (Some(true), Some(11))
    );
    for expected in 11..=150u64 {
        assert_eq!(a.recv().await["offset"].as_u64(), Some(expected));
    }
    publisher.await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_events_name_the_field() {
    let server = start().await;
    let svc = service("svc");
    let cases = [
        (json!({"channel": "global", "data": {}}), "type"),
        (
            json!({"type": "backtest.progress", "channel": "global"}),
            "data",
        ),
        (
            json!({"type": "x", "channel": "a..b", "data": {}}),
            "channel",
        ),
        (
            json!({"type": "Bad Type", "channel": "global", "data": {}}),
            "type",
        ),
        (
            json!({"type": "backtest.progress", "channel": "global", "data": {"backtest_id": "b", "percent": 150}}),
            "data.percent",
        ),
        (
            json!({"type": "backtest.progress", "channel": "global", "data": {"percent": 1}}),
            "data.backtest_id",
        ),
        (
            json!({"id": "bad id!", "type": "x", "channel": "global", "data": {}}),
            "id",
        ),
    ];
    for (body, field) in cases {
        let r = server.post("/publish", Some(&svc), &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(
            (e["error"]["code"].as_str(), e["error"]["field"].as_str()),
            (Some("INVALID_EVENT"), Some(field)),
            "{body}: {e}"
        );
        assert!(e["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Over WS too, with the request id.
    let (mut s, _) = server.connect(&svc).await;
    s.send(json!({"op": "publish", "id": 5, "event": {"type": "backtest.progress", "channel": "global", "data": {"backtest_id": "b", "percent": -1}}})).await;
    let f = s.recv().await;
    assert_eq!(
        (f["code"].as_str(), f["id"].as_u64(), f["field"].as_str()),
        (Some("INVALID_EVENT"), Some(5), Some("data.percent"))
    );
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("courier_validation_failures_total{field=\"data.percent\"} 2"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn payload_too_large() {
    let server = start().await;
    let svc = service("svc");
    let big = "x".repeat(101 * 1024);
    let r = server
        .post(
            "/publish",
            Some(&svc),
            &json!({"type": "custom.blob", "channel": "global", "data": {"blob": big}}),
        )
        .await;
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (Some("PAYLOAD_TOO_LARGE"), Some("data"))
    );
    let huge = "x".repeat(300 * 1024);
    let r = server
        .post(
            "/publish",
            Some(&svc),
            &json!({"type": "custom.blob", "channel": "global", "data": {"blob": huge}}),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "PAYLOAD_TOO_LARGE"
    );
    server.shutdown().await;
}

/// Every publish path passes `data` on as the exact text that was sent (issue #14: `POST
/// /publish/{channel}` used to re-serialise it, sorting keys and turning big integers into
/// floats, and refused `1e999` and lone surrogates that the other paths kept). The same data
/// goes through `POST /publish`, `POST /publish/{channel}`, `POST /publish/batch` and a
/// WebSocket `publish` frame; a subscriber must receive the identical text from each.
#[tokio::test]
async fn every_publish_path_keeps_the_data_text() {
    let server = start().await;
    let svc = service("svc");
    let (mut sub, _) = server.connect(&user("alice")).await;
    sub.subscribe(1, "global", None).await;
    let (mut publisher, _) = server.connect(&svc).await;
    let cases = [
        r#"{"b": 1, "a": 2, "c": {"z": 0, "y": [3, 2, 1]}}"#,
        r#"{"big":123456789012345678901234567890}"#,
        r#"123456789012345678901234567890"#,
        r#"{"f":1e999,"g":-1e999,"h":1E+400}"#,
        r#"{"z":-0,"y":-0.0,"d":1.50,"e":2.500e+3}"#,
        r#"{"s":"\ud800","t":"\udfff x","pair":"\ud83d\ude00"}"#,
        r#"{"nested":{"a":{"b":{"c":[{"d":null},true,false,"x"]}}}}"#,
        r#"{"é":"日本語 ✓ 😀","esc":"\u00e9\n\t\"\\\/"}"#,
        r#"[1, "two", {"three": 3.0}]"#,
        r#""just a string""#,
        r#"  {"spaced" :  [ 1 ,2 ] }  "#,
    ];
    let mut ws_id = 0;
    for data in cases {
        let one = format!(r#"{{"type":"custom.raw","channel":"global","data":{data}}}"#);
        let no_channel = format!(r#"{{"type":"custom.raw","data":{data}}}"#);
        let batch = format!(r#"{{"events":[{one}]}}"#);
        for (path, body) in [
            ("/publish", one.clone()),
            ("/publish/global", no_channel),
            ("/publish/batch", batch),
        ] {
            let r = server
                .http
                .post(server.url(path))
                .bearer_auth(&svc)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path} {data}");
            let v: Value = r.json().await.unwrap();
            assert!(
                v.get("error").is_none() && v["results"][0].get("error").is_none(),
                "{path} {data}: {v}"
            );
            let frame = sub.recv_text().await;
            assert_eq!(data_text(&frame), data.trim(), "{path}: {frame}");
        }
        ws_id += 1;
        publisher
            .send_text(&format!(r#"{{"op":"publish","id":{ws_id},"event":{one}}}"#))
            .await;
        let ack = publisher.recv().await;
        assert_eq!(ack["op"], "ack", "ws {data}: {ack}");
        let frame = sub.recv_text().await;
        assert_eq!(data_text(&frame), data.trim(), "ws: {frame}");
    }
    server.shutdown().await;
}

/// The text of the `data` member of an event frame, as it was written.
fn data_text(frame: &str) -> &str {
    let mut r = courier_core::json::Reader::new(frame);
    let mut found = None;
    r.object(|r, key| {
        if key == "event" {
            r.object(|r, key| {
                if key == "data" {
                    found = Some(r.skip_value()?);
                } else {
                    r.skip_value()?;
                }
                Ok(())
            })
        } else {
            r.skip_value().map(drop)
        }
    })
    .unwrap();
    found.expect("an event frame with data")
}

/// `metadata.timestamp` is any whole number however it is written (`5.0`, `5e3`: JSON
/// Schema's `integer`, which the OpenAPI document declares) on every publish path, and is
/// delivered as digits; a fraction is still refused.
#[tokio::test]
async fn a_timestamp_is_any_whole_number_on_every_path() {
    let server = start().await;
    let svc = service("svc");
    let (mut sub, _) = server.connect(&user("alice")).await;
    sub.subscribe(1, "global", None).await;
    let (mut publisher, _) = server.connect(&svc).await;
    for (n, written) in [
        ("1732300000000", "1732300000000.0"),
        ("653", "6.53e2"),
        ("5000", "5E+3"),
    ] {
        let one = format!(
            r#"{{"type":"custom.t","channel":"global","data":{{}},"metadata":{{"timestamp":{written}}}}}"#
        );
        let no_channel =
            format!(r#"{{"type":"custom.t","data":{{}},"metadata":{{"timestamp":{written}}}}}"#);
        let batch = format!(r#"{{"events":[{one}]}}"#);
        for (path, body) in [
            ("/publish", one.clone()),
            ("/publish/global", no_channel),
            ("/publish/batch", batch),
        ] {
            let v = post_text(&server, &svc, path, body).await;
            assert!(
                v.get("error").is_none() && v["results"][0].get("error").is_none(),
                "{path} {written}: {v}"
            );
            let frame = sub.recv().await;
            assert_eq!(
                frame["event"]["metadata"]["timestamp"].to_string(),
                n,
                "{path}"
            );
        }
        publisher
            .send_text(&format!(r#"{{"op":"publish","id":1,"event":{one}}}"#))
            .await;
        assert_eq!(publisher.recv().await["op"], "ack", "ws {written}");
        let frame = sub.recv().await;
        assert_eq!(frame["event"]["metadata"]["timestamp"].to_string(), n, "ws");
    }
    for written in ["1.5", "-1", "1e20"] {
        let body = format!(
            r#"{{"type":"custom.t","channel":"global","data":{{}},"metadata":{{"timestamp":{written}}}}}"#
        );
        let v = post_text(&server, &svc, "/publish", body.clone()).await;
        assert_eq!(v["error"]["field"], "metadata.timestamp", "{written}: {v}");
        publisher
            .send_text(&format!(r#"{{"op":"publish","id":2,"event":{body}}}"#))
            .await;
        let e = publisher.recv().await;
        assert_eq!(e["op"], "error", "ws {written}: {e}");
    }
    server.shutdown().await;
}

/// `POST /publish/{channel}`: a body may carry `channel`, but only the path's (the OpenAPI
/// document leaves the member out of `ChannelEvent`, as a schema cannot say "equal to the
/// path").
#[tokio::test]
async fn a_body_channel_must_equal_the_path() {
    let server = start().await;
    let svc = service("svc");
    let same = r#"{"type":"custom.c","channel":"global","data":{}}"#.to_owned();
    let v = post_text(&server, &svc, "/publish/global", same).await;
    assert_eq!(v["channel"], "global", "{v}");
    let other = r#"{"type":"custom.c","channel":"other","data":{}}"#.to_owned();
    let r = server
        .http
        .post(server.url("/publish/global"))
        .bearer_auth(&svc)
        .header("content-type", "application/json")
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (Some("INVALID_EVENT"), Some("channel"))
    );
    let doc: Value = server.get("/openapi.json").await.json().await.unwrap();
    let schema = &doc["components"]["schemas"]["ChannelEvent"];
    assert!(schema["properties"].get("channel").is_none(), "{schema}");
    assert_ne!(schema["additionalProperties"], false, "{schema}");
    server.shutdown().await;
}

/// The JSON answer of a publish of `body` (any status).
async fn post_text(server: &Server, token: &str, path: &str, body: String) -> Value {
    server
        .http
        .post(server.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
