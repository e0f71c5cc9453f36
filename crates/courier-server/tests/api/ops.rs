//! Health, stats, metrics, OpenAPI, CORS and graceful shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

#[tokio::test]
async fn health_stats_metrics_openapi() {
    let server = start().await;
    let (_ws, _) = server.connect(&user("alice")).await;
    let h: Value = server.get("/health").await.json().await.unwrap();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["level"], "healthy");
    assert_eq!(h["connections"], 1);
    let ws = &h["components"]["websocket"];
    assert_eq!(
        (ws["status"].as_str(), ws["connections"].as_u64()),
        (Some("accepting"), Some(1))
    );
    // The memory backend has no Redis entry; RSS is read from /proc on Linux.
    assert!(h["components"].get("redis").is_none(), "{h}");
    if cfg!(target_os = "linux") {
        assert!(h["components"]["memory"]["rss_bytes"].as_u64().unwrap() > 0);
    }
    for k in ["uptime_secs", "version", "channels", "epoch"] {
        assert!(h.get(k).is_some(), "{k}: {h}");
    }
    assert_eq!(server.get("/health/live").await.status(), 200);
    assert_eq!(server.get("/health/ready").await.status(), 200);
    server
        .post("/publish", Some(&service("svc")), &event("m1", "global", 1))
        .await;
    let s: Value = server.get("/stats").await.json().await.unwrap();
    assert_eq!(s["published"], 1);
    let m = server.get("/metrics").await;
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = m.text().await.unwrap();
    for name in [
        "courier_connections 1",
        "courier_events_published_total 1",
        "courier_events_delivered_total",
        "# TYPE courier_rate_limit_hits_total counter",
        "# TYPE courier_connection_rejections_total counter",
        "# TYPE courier_validation_failures_total counter",
        "courier_publish_to_deliver_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let doc: Value = server.get("/openapi.json").await.json().await.unwrap();
    for p in [
        "/publish",
        "/publish/{channel}",
        "/publish/batch",
        "/health/ready",
        "/metrics",
    ] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
    // /health's body is documented, components included.
    let schemas = &doc["components"]["schemas"];
    for s in [
        "HealthReport",
        "Components",
        "RedisHealth",
        "MemoryHealth",
        "Level",
    ] {
        assert!(schemas[s].is_object(), "{s}");
    }
    // Every response carries a request id; CORS answers preflights.
    let r = server.get("/health/live").await;
    assert!(r.headers().contains_key("x-request-id"));
    let r = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/publish"))
        .header("origin", "http://example.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    server.shutdown().await;
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let server = start_with(|c| c.cors_origins = vec!["http://app.test".into()]).await;
    let preflight = |origin: &'static str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, server.url("/publish"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let r = preflight("http://app.test").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    let r = preflight("http://elsewhere.test").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_closes_1001_and_finishes_in_flight_publishes() {
    let mut server = start_with(|c| c.shutdown.drain_delay_ms = 400).await;
    let svc = service("svc");
    let (mut ws, _) = server.connect(&user("alice")).await;
    // An in-flight publish, held back by an injected delay.
    server
        .post("/_fault/delay", None, &json!({"delay_ms": 300, "count": 1}))
        .await;
    let in_flight = {
        let http = server.http.clone();
        let url = server.url("/publish");
        let svc = svc.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(svc)
                .json(&event("late", "global", 1))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // Wait until the request is inside the server (the delay consumed the fault).
    let deadline = tokio::time::Instant::now() + STEP;
    while server.state().faults.snapshot().delay.is_some() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let handle = server.handle.take().unwrap();
    handle.shutdown();
    // Readiness turns 503 while draining.
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let r = server
            .http
            .get(server.url("/health/ready"))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        tokio::time::timeout(STEP, in_flight)
            .await
            .unwrap()
            .unwrap(),
        200
    );
    let (_, end) = ws.until_end().await;
    assert_eq!(end, End::Close(1001));
    tokio::time::timeout(STEP, handle.wait())
        .await
        .expect("exit within deadline")
        .unwrap();
    // No longer accepting.
    assert!(
        server
            .http
            .get(server.url("/health/live"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_deadline_bounds_exit() {
    let mut server = start_with(|c| c.shutdown.deadline_ms = 300).await;
    server
        .post(
            "/_fault/delay",
            None,
            &json!({"delay_ms": 60_000, "count": 1}),
        )
        .await;
    let http = server.http.clone();
    let url = server.url("/publish");
    let svc = service("svc");
    let stuck = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(svc)
            .json(&event("x", "global", 1))
            .send()
            .await
    });
    let deadline = tokio::time::Instant::now() + STEP;
    while server.state().faults.snapshot().delay.is_some() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let handle = server.handle.take().unwrap();
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), handle.wait())
        .await
        .expect("deadline not enforced")
        .unwrap();
    stuck.abort();
}

/// The value of one exposition line (`name{labels}`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn new_metrics_move_on_publish_refusal_duplicate_and_disconnect() {
    use courier_server::auth::{Claims, sign_hs256, unix_now};
    use courier_server::config::LimitRule;
    let server = start_with(|c| {
        let t = &mut c.rate_limits.types;
        t.insert("backtest".into(), LimitRule::per_minute(1));
        t.insert(
            "shadowed".into(),
            LimitRule {
                limit: 1,
                shadow: true,
                ..LimitRule::default()
            },
        );
    })
    .await;
    let alice = user_with("alice", &[], &["global"]);
    let post = |body: Value, token: String| {
        let server = &server;
        async move { server.post("/publish", Some(&token), &body).await.status() }
    };
    // Accepted, then its duplicate, then refused by `type:backtest`.
    assert_eq!(post(event("m1", "global", 1), alice.clone()).await, 200);
    assert_eq!(post(event("m1", "global", 1), alice.clone()).await, 200);
    assert_eq!(post(event("m2", "global", 2), alice.clone()).await, 429);
    // Over a shadow limit: accepted, counted as shadow_blocked.
    let shadowed =
        |id: &str| json!({"id": id, "type": "shadowed.x", "channel": "global", "data": {}});
    assert_eq!(post(shadowed("s1"), alice.clone()).await, 200);
    assert_eq!(post(shadowed("s2"), alice.clone()).await, 200);
    // Auth failures: invalid, expired, forbidden.
    assert_eq!(post(event("x", "global", 1), "garbage".into()).await, 401);
    let expired = sign_hs256(
        SECRET,
        &Claims {
            exp: unix_now() - 10,
            ..claims("alice")
        },
    );
    assert_eq!(post(event("x", "global", 1), expired.clone()).await, 401);
    assert_eq!(post(event("x", "private", 1), alice.clone()).await, 403);
    // Disconnections: an expired token over WebSocket (closed 4002), and a client that
    // closes first.
    let mut refused = server.open("/ws").await;
    refused
        .send(json!({"op": "connect", "token": expired}))
        .await;
    let (_, end) = refused.until_end().await;
    assert_eq!(end, End::Close(4002));
    let (mut ws, _) = server.connect(&user("bob")).await;
    ws.s.close(None).await.unwrap();
    drop(ws);

    let deadline = tokio::time::Instant::now() + STEP;
    let text = loop {
        let text = server.get("/metrics").await.text().await.unwrap();
        let peer = sample(&text, "courier_disconnections_total{class=\"peer\"}");
        let auth = sample(&text, "courier_disconnections_total{class=\"auth\"}");
        if peer >= 1.0 && auth >= 1.0 {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let expect = [
        ("courier_idempotency_requests_total{result=\"hit\"}", 1.0),
        // m1, m2 (refused, so its id was released after the claim), s1, s2.
        ("courier_idempotency_requests_total{result=\"miss\"}", 4.0),
        ("courier_auth_failures_total{reason=\"invalid\"}", 1.0),
        // The HTTP publish and the WebSocket connect.
        ("courier_auth_failures_total{reason=\"expired\"}", 2.0),
        ("courier_auth_failures_total{reason=\"forbidden\"}", 1.0),
        (
            "courier_rl_requests_total{bucket=\"type:backtest\",decision=\"allowed\"}",
            1.0,
        ),
        (
            "courier_rl_requests_total{bucket=\"type:backtest\",decision=\"blocked\"}",
            1.0,
        ),
        (
            "courier_rl_requests_total{bucket=\"type:shadowed\",decision=\"allowed\"}",
            1.0,
        ),
        (
            "courier_rl_requests_total{bucket=\"type:shadowed\",decision=\"shadow_blocked\"}",
            1.0,
        ),
        (
            "courier_rl_requests_total{bucket=\"user\",decision=\"allowed\"}",
            4.0,
        ),
        ("courier_retry_after_seconds_count", 1.0),
        // m1, s1, s2.
        ("courier_message_size_bytes_count", 3.0),
        // Every publish request, refused ones included.
        ("courier_publish_duration_seconds_count", 8.0),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&text, series), want, "{series}:\n{text}");
    }
    assert!(sample(&text, "courier_message_size_bytes_sum") > 0.0);
    assert!(sample(&text, "courier_retry_after_seconds_sum") > 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn health_is_degraded_above_the_memory_soft_limit() {
    if !cfg!(target_os = "linux") {
        return; // no /proc: RSS unknown, never degraded
    }
    let server = start_with(|c| c.health.memory_soft_limit_bytes = 1).await;
    let r = server.get("/health").await;
    assert_eq!(r.status(), 200, "degraded still serves");
    let h: Value = r.json().await.unwrap();
    assert_eq!(
        (h["status"].as_str(), h["level"].as_str()),
        (Some("degraded"), Some("degraded"))
    );
    let m = &h["components"]["memory"];
    assert_eq!(
        (m["level"].as_str(), m["soft_limit_bytes"].as_u64()),
        (Some("degraded"), Some(1))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn health_is_503_and_draining_during_shutdown() {
    let mut server = start_with(|c| c.shutdown.drain_delay_ms = 2_000).await;
    assert_eq!(server.get("/health").await.status(), 200);
    let handle = server.handle.take().unwrap();
    handle.shutdown();
    let deadline = tokio::time::Instant::now() + STEP;
    let r = loop {
        let r = server.get("/health").await;
        if r.status() != 200 {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(r.status(), 503);
    let h: Value = r.json().await.unwrap();
    assert_eq!(
        (h["status"].as_str(), h["level"].as_str()),
        (Some("draining"), Some("unhealthy"))
    );
    assert_eq!(h["draining"], true);
    assert_eq!(h["components"]["websocket"]["status"], "draining");
    handle.wait().await.unwrap();
}

#[tokio::test]
async fn every_retry_after_sent_is_recorded_and_websocket_publishes_are_timed() {
    use courier_server::config::LimitRule;
    let server = start_with(|c| {
        c.rate_limits
            .types
            .insert("backtest".into(), LimitRule::per_minute(1));
    })
    .await;
    let metrics = || async { server.get("/metrics").await.text().await.unwrap() };
    let before = metrics().await;
    assert_eq!(sample(&before, "courier_retry_after_seconds_count"), 0.0);
    assert_eq!(
        sample(&before, "courier_publish_duration_seconds_count"),
        0.0
    );

    // A 503 with the fixed `Retry-After: 1` (an injected backend failure).
    let r = server
        .post(
            "/_fault/fail",
            None,
            &json!({"status": 503, "count": 1, "retry_after_secs": 1}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let token = user_with("alice", &[], &["global"]);
    let r = server
        .post("/publish", Some(&token), &event("a1", "global", 1))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let text = metrics().await;
    assert_eq!(
        sample(&text, "courier_retry_after_seconds_count"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "courier_retry_after_seconds_sum"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "courier_retry_after_seconds_bucket{le=\"0.5\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "courier_retry_after_seconds_bucket{le=\"1\"}"),
        1.0,
        "{text}"
    );

    // Over WebSocket: an accepted publish, then one refused with an error frame carrying
    // `retry_after_ms`. Both are timed; the refusal's wait is recorded.
    let (mut ws, _) = server.connect(&token).await;
    for id in 1..=2 {
        ws.send(
            json!({"op": "publish", "id": id, "event": event(&format!("w{id}"), "global", id)}),
        )
        .await;
    }
    assert_eq!(ws.recv().await["op"], "ack");
    let refused = ws.recv().await;
    assert_eq!(refused["code"], "RATE_LIMIT_EXCEEDED", "{refused}");
    let wait_ms = refused["retry_after_ms"].as_u64().unwrap();
    let text = metrics().await;
    assert_eq!(
        sample(&text, "courier_retry_after_seconds_count"),
        2.0,
        "{text}"
    );
    let sum = sample(&text, "courier_retry_after_seconds_sum");
    assert!(
        (sum - (1.0 + wait_ms as f64 / 1000.0)).abs() < 0.002,
        "{sum} vs 1 s + {wait_ms} ms"
    );
    // The two WebSocket publishes (the injected 503 was answered before any handler).
    assert_eq!(
        sample(&text, "courier_publish_duration_seconds_count"),
        2.0,
        "{text}"
    );

    // A refused batch item carries `retry_after_ms` in the body: recorded too.
    let r = server
        .post(
            "/publish/batch",
            Some(&token),
            &json!({"events": [event("b1", "global", 1)]}),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["results"][0]["error"]["code"], "RATE_LIMIT_EXCEEDED",
        "{body}"
    );
    let text = metrics().await;
    assert_eq!(
        sample(&text, "courier_retry_after_seconds_count"),
        3.0,
        "{text}"
    );
    server.shutdown().await;
}

/// Method and path of every operation of an OpenAPI document.
fn documented(doc: &Value) -> std::collections::BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    ["get", "post", "put", "delete", "patch", "head", "options"]
                        .contains(&k.as_str())
                })
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    for faults in [false, true] {
        let server = start_with(|c| c.enable_fault_injection = faults).await;
        let config = &server.state().config;
        let served: std::collections::BTreeSet<(String, String)> = courier_server::routes(config)
            .into_iter()
            // axum's catch-all `{*path}` is OpenAPI's `{path}`.
            .map(|(m, p)| (m.to_string(), p.replace("{*", "{")))
            .collect();
        let doc: Value = server.get("/openapi.json").await.json().await.unwrap();
        let listed = documented(&doc);
        let undocumented: Vec<_> = served.difference(&listed).collect();
        let not_served: Vec<_> = listed.difference(&served).collect();
        assert!(
            undocumented.is_empty() && not_served.is_empty(),
            "faults={faults}: served but not documented {undocumented:?}; documented but not served {not_served:?}"
        );
        assert_eq!(served.iter().any(|(_, p)| p.starts_with("/_fault")), faults);
        // The router is built from the same table: each route answers its method (not a
        // 404 or 405); a method it does not list gets the JSON 405.
        for (method, path) in &served {
            if path.starts_with("/_fault") && method == "POST" {
                continue; // would switch faults on
            }
            let url = server.url(
                &path
                    .replace("{channel}", "global")
                    .replace("{path}", "console.js"),
            );
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = server
                .http
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            let status = response.status();
            if path.ends_with("{path}") && status == 404 {
                // A file route answers its own 404 (the console is not built here), not the
                // router's "no route".
                let body: Value = response.json().await.unwrap();
                let message = body["error"]["message"].as_str().unwrap();
                assert!(
                    !message.starts_with("no route"),
                    "{method} {path}: {message}"
                );
                continue;
            }
            assert!(status != 404 && status != 405, "{method} {path}: {status}");
        }
        // Every status documented with a body names its schema; every error is an
        // ErrorResponse (but the health checks', which report the health).
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let code: u16 = status.parse().unwrap();
                    let content = &response["content"];
                    if code == 101 {
                        assert!(content.is_null(), "{method} {path} 101");
                        continue;
                    }
                    assert!(
                        content.is_object(),
                        "{method} {path} {status}: no body documented"
                    );
                    if code >= 400 && !path.starts_with("/health") {
                        let schema = &content["application/json"]["schema"]["$ref"];
                        assert_eq!(
                            schema, "#/components/schemas/ErrorResponse",
                            "{method} {path} {status}"
                        );
                    }
                    if code == 429 {
                        assert!(
                            response["headers"]["Retry-After"].is_object(),
                            "{method} {path} 429 without Retry-After"
                        );
                    }
                }
            }
        }
        server.shutdown().await;
    }
}
