//! What bounds a client that is slow or wrong on purpose: header and body timeouts, the cap
//! on connections that have not authenticated, and JSON on every error answer.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

/// Reads until the server closes the connection; returns what it sent and how long it took.
async fn read_until_closed(tcp: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(STEP, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open past {STEP:?}"),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_after_the_header_timeout() {
    let server = start_with(|c| c.http.header_timeout_ms = 300).await;
    // Slowloris: a request line, then nothing.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Idle: connected, never a byte.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // Keep-alive: one request answered, then silence.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for (name, tcp) in [
        ("slow", &mut slow),
        ("idle", &mut idle),
        ("kept", &mut kept),
    ] {
        let (_, took) = read_until_closed(tcp).await;
        assert!(
            took < Duration::from_secs(5),
            "{name}: closed after {took:?}"
        );
    }
    // A normal client is unaffected.
    assert_eq!(server.get("/health/live").await.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_times_out_with_a_json_error() {
    let server = start_with(|c| c.http.body_timeout_ms = 300).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(
        format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"type\":",
            service("svc")
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (answer, took) = read_until_closed(&mut tcp).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!((400..500).contains(&status), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert!(answer.contains("\"code\""), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_that_have_not_authenticated_are_capped() {
    let server = start_with(|c| c.ws.max_unauthenticated = 2).await;
    let first = server.open("/ws").await;
    let second = server.open("/ws").await;
    // A third anonymous upgrade is refused before it holds anything.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "CONNECTION_LIMIT_EXCEEDED", "{body}");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    // Authenticating frees the slot.
    let mut first = first;
    first
        .send(json!({"op": "connect", "token": service("svc"), "client": "t"}))
        .await;
    assert_eq!(first.recv().await["op"], "connected");
    let (_third, _) = server.connect(&service("svc")).await;
    drop(second);
    server.shutdown().await;
}

async fn json_error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{status}: {content_type}"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn every_error_answer_is_json() {
    let server = start().await;
    let (status, body) = json_error(server.get("/nope").await).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "BAD_REQUEST");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("/nope"),
        "{body}"
    );

    let r = server
        .http
        .delete(server.url("/health"))
        .send()
        .await
        .unwrap();
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    let (status, body) = json_error(r).await;
    assert_eq!(status, 405);
    assert!(allow.contains("GET"), "{allow}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DELETE"),
        "{body}"
    );

    // A plain GET on the WebSocket endpoint (no upgrade).
    let (status, body) = json_error(server.get("/ws").await).await;
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(body["error"]["code"], "BAD_REQUEST", "{body}");

    // A path with a bad percent-escape.
    let (status, body) = json_error(
        server
            .post(
                "/publish/%ff%fe",
                Some(&service("svc")),
                &json!({"type": "x.y", "data": {}}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // A body that is not JSON.
    let r = server
        .http
        .post(server.url("/publish"))
        .bearer_auth(service("svc"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    let (status, _) = json_error(r).await;
    assert!((400..500).contains(&status), "{status}");
    server.shutdown().await;
}

/// The status, the head and the JSON body of a raw answer.
fn split_answer(answer: &str) -> (u16, String, Value) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {answer}"));
    (status, head.to_ascii_lowercase(), body)
}

#[tokio::test]
async fn a_request_hyper_cannot_read_gets_a_json_error_too() {
    let server = start_with(|c| c.http.max_header_bytes = 16 * 1024).await;
    // A head over `http.max_header_bytes`: 431, JSON, then the connection closes.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let big = "a".repeat(20 * 1024);
    let request = format!("GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = tcp.write_all(request.as_bytes()).await;
    let (answer, _) = read_until_closed(&mut tcp).await;
    let (status, head, body) = split_answer(&answer);
    assert_eq!(status, 431, "{answer}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body["error"]["code"], "BAD_REQUEST", "{body}");
    assert_eq!(body["error"]["field"], "headers", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("16384"),
        "{body}"
    );

    // A malformed header line: hyper's 400, JSON as well.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut tcp).await;
    let (status, head, body) = split_answer(&answer);
    assert_eq!(status, 400, "{answer}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body["error"]["code"], "BAD_REQUEST", "{body}");

    // A head under the limit on the same server is served as usual.
    assert_eq!(server.get("/health/live").await.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_on_every_publish_path() {
    let server = start().await;
    // An anonymous caller gets 401 whatever it sent: not the body's 400 (nor, on the
    // channel path, the channel mismatch).
    for (path, body) in [
        ("/publish", "not json"),
        ("/publish/global", "not json"),
        (
            "/publish/global",
            r#"{"type":"x.y","channel":"other","data":{}}"#,
        ),
        ("/publish/batch", "not json"),
    ] {
        let r = server
            .http
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, body) = json_error(r).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{path}: {body}");
    }
    // With a token, the same bodies are refused for what they are.
    let r = server
        .http
        .post(server.url("/publish/global"))
        .bearer_auth(service("svc"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(json_error(r).await.0, 400);
    server.shutdown().await;
}
