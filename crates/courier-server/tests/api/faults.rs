//! Fault injection: off by default; fail N requests with 429/503, delay, drop WebSockets.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

#[tokio::test]
async fn off_by_default_and_refused_off_loopback() {
    let server = start_with(|c| c.enable_fault_injection = false).await;
    assert_eq!(
        server.post("/_fault/drop", None, &json!({})).await.status(),
        404
    );
    server.shutdown().await;
    let mut c = config();
    c.listen = "0.0.0.0:0".parse().unwrap();
    let listener = tokio::net::TcpListener::bind(c.listen).await.unwrap();
    assert!(courier_server::start(c, listener).await.is_err());
}

#[tokio::test]
async fn fail_next_requests_with_429_or_503() {
    let server = start().await;
    let svc = service("svc");
    let r = server
        .post(
            "/_fault/fail",
            None,
            &json!({"status": 429, "count": 2, "retry_after_secs": 3}),
        )
        .await;
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let r = server
            .post("/publish", Some(&svc), &event("", "global", 1))
            .await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        let e: Value = r.json().await.unwrap();
        assert_eq!(
            (
                e["error"]["code"].as_str(),
                e["error"]["retry_after_ms"].as_u64()
            ),
            (Some("RATE_LIMIT_EXCEEDED"), Some(3000))
        );
    }
    assert_eq!(
        server
            .post("/publish", Some(&svc), &event("", "global", 1))
            .await
            .status(),
        200
    );
    // 503, also for WebSocket upgrades; health is never affected.
    server
        .post("/_fault/fail", None, &json!({"status": 503, "count": 2}))
        .await;
    assert_eq!(server.get("/health/ready").await.status(), 200);
    let r = server
        .post(
            "/publish/global",
            Some(&svc),
            &json!({"type": "x", "data": {}}),
        )
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "UNAVAILABLE"
    );
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(
        server
            .post("/publish", Some(&svc), &event("", "global", 1))
            .await
            .status(),
        200
    );
    assert_eq!(
        server
            .post("/_fault/fail", None, &json!({"status": 500, "count": 1}))
            .await
            .status(),
        400
    );
    server.shutdown().await;
}

#[tokio::test]
async fn delay_and_reset() {
    let server = start().await;
    let svc = service("svc");
    server
        .post("/_fault/delay", None, &json!({"delay_ms": 250}))
        .await;
    let t = Instant::now();
    assert_eq!(
        server
            .post("/publish", Some(&svc), &event("", "global", 1))
            .await
            .status(),
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(250));
    let state: Value = server.get("/_fault").await.json().await.unwrap();
    assert_eq!(state["delay"]["delay_ms"], 250);
    server.post("/_fault/reset", None, &json!({})).await;
    let state: Value = server.get("/_fault").await.json().await.unwrap();
    assert!(state["delay"].is_null() && state["fail"].is_null());
    server.shutdown().await;
}

#[tokio::test]
async fn drop_every_websocket_without_a_close_frame() {
    let server = start().await;
    let (mut a, _) = server.connect(&user("alice")).await;
    let (mut b, _) = server.connect(&user("bob")).await;
    let r: Value = server
        .post("/_fault/drop", None, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["dropped"], 2);
    assert_eq!(a.until_end().await.1, End::Dropped);
    assert_eq!(b.until_end().await.1, End::Dropped);
    // New connections work afterwards.
    let (mut c, _) = server.connect(&user("carol")).await;
    c.send(json!({"op": "ping"})).await;
    assert_eq!(c.recv().await["op"], "pong");
    server.shutdown().await;
}

#[tokio::test]
async fn request_record_has_arrival_sub_status_and_retry_after() {
    let server = start().await;
    let svc = service("svc-rec");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0;
    server
        .post(
            "/_fault/fail",
            None,
            &json!({"status": 429, "count": 1, "retry_after_secs": 2}),
        )
        .await;
    let r = server
        .post("/publish", Some(&svc), &event("", "global", 1))
        .await;
    assert_eq!(r.status(), 429);
    let r = server
        .post("/publish", Some(&svc), &event("", "global", 2))
        .await;
    assert_eq!(r.status(), 200);
    // A bad token is recorded without a sub; so is a WebSocket (it authenticates later).
    let r = server
        .post("/publish", Some("not-a-jwt"), &event("", "global", 3))
        .await;
    assert_eq!(r.status(), 401);
    let (_ws, _) = server.connect(&user("alice")).await;
    // Health and the fault endpoints themselves are not recorded.
    server.get("/health").await;

    let body: Value = server.get("/_fault/requests").await.json().await.unwrap();
    let recs = body["requests"].as_array().unwrap();
    type Brief<'a> = (Option<&'a str>, &'a str, u64, Option<&'a str>, Option<u64>);
    let brief: Vec<Brief<'_>> = recs
        .iter()
        .map(|r| {
            (
                r["sub"].as_str(),
                r["path"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
                r["retry_after"].as_str(),
                r["retry_after_ms"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        brief,
        vec![
            (Some("svc-rec"), "/publish", 429, Some("2"), Some(2000)),
            (Some("svc-rec"), "/publish", 200, None, None),
            (None, "/publish", 401, None, None),
            (None, "/ws", 101, None, None),
        ]
    );
    let times: Vec<f64> = recs.iter().map(|r| r["at_ms"].as_f64().unwrap()).collect();
    assert!(
        times[0] >= before.floor() && times.windows(2).all(|w| w[0] <= w[1]),
        "arrival times in order after the test began: {times:?}"
    );
    assert_eq!(body["dropped"], 0);

    // Reset clears the record.
    server.post("/_fault/reset", None, &json!({})).await;
    let body: Value = server.get("/_fault/requests").await.json().await.unwrap();
    assert_eq!(body["requests"].as_array().unwrap().len(), 0);
    server.shutdown().await;
}

/// An idempotency store whose first `failures` completions fail (its backend away right
/// after the append), over the memory store.
struct CompletionFails {
    inner: courier_server::store::MemoryIdempotency,
    failures: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl courier_server::store::IdempotencyStore for CompletionFails {
    async fn claim(
        &self,
        key: &str,
    ) -> Result<courier_server::store::Claim, courier_server::store::StoreError> {
        self.inner.claim(key).await
    }
    async fn complete(
        &self,
        key: &str,
        record: courier_server::store::PublishRecord,
    ) -> Result<(), courier_server::store::StoreError> {
        use std::sync::atomic::Ordering;
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(courier_server::store::StoreError("away".into()));
        }
        self.inner.complete(key, record).await
    }
    async fn release(&self, key: &str) {
        self.inner.release(key).await
    }
    fn entries(&self) -> usize {
        self.inner.entries()
    }
}

/// The append succeeded but recording the id failed: the event is acknowledged (not an
/// error the client would publish again), the id is recorded in the background, and a
/// retry of it is a duplicate at the first offset, never a second copy.
#[tokio::test]
async fn an_id_whose_record_failed_after_the_append_is_still_acknowledged_once() {
    let mut c = config();
    let mut stores = courier_server::Stores::in_memory(&c);
    stores.idempotency = std::sync::Arc::new(CompletionFails {
        inner: courier_server::store::MemoryIdempotency::new(Duration::from_secs(60), 1000),
        failures: std::sync::atomic::AtomicU32::new(2),
    });
    c.listen = "127.0.0.1:0".parse().unwrap();
    let listener = tokio::net::TcpListener::bind(c.listen).await.unwrap();
    let handle = courier_server::start_with_stores(c, stores, listener)
        .await
        .unwrap();
    let addr = handle.local_addr();
    let server = Server {
        handle: Some(handle),
        addr,
        http: http_client(),
    };
    let svc = service("svc");
    let first = server
        .post("/publish", Some(&svc), &event("once", "global", 1))
        .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["duplicate"], false, "{first}");
    let again: Value = server
        .post("/publish", Some(&svc), &event("once", "global", 1))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["duplicate"].as_bool(), again["offset"].as_u64()),
        (Some(true), first["offset"].as_u64()),
        "{again}"
    );
    server.shutdown().await;
}
