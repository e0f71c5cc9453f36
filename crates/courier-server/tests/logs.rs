//! No token in the logs at any level: a `connect` frame and an `Authorization` header carry a
//! JWT, and the WebSocket and HTTP libraries print frames and headers at `trace`.
//!
//! Its own test binary: it captures every log line of the process (the server and this
//! test's own client) on one thread.

use std::io::Write;
use std::sync::{Arc, Mutex};

use courier_server::auth::{Role, claims_for, sign_hs256};
use courier_server::{Config, logs};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tracing_subscriber::EnvFilter;

const SECRET: &str = "test-secret-0123456789";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a connect + subscribe + HTTP publish under `filter` and returns every log line.
async fn logs_of_a_session(filter: EnvFilter) -> (String, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.auth.jwt_secret = SECRET.into();
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let server = courier_server::start(config, listener).await.unwrap();
    let addr = server.local_addr();
    let token = sign_hs256(SECRET, &claims_for("svc", Role::Service, vec![], 3600));

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let connect = format!(r#"{{"op":"connect","token":"{token}"}}"#);
    ws.send(Message::Text(connect.into())).await.unwrap();
    let answer = ws.next().await.unwrap().unwrap();
    assert!(
        answer.to_text().unwrap().contains("connected"),
        "{answer:?}"
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let status = reqwest::Client::new()
        .post(format!("http://{addr}/publish/batch"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"events":[{"id":"01JD3Z8Q4W6X9V2N5R7T1K3M8P","type":"custom.thing","channel":"global","data":{}}]}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    ws.close(None).await.ok();
    server.kill().await;
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    (text, token)
}

#[tokio::test(flavor = "current_thread")]
async fn no_token_in_the_logs_even_at_trace() {
    tracing_log::LogTracer::init().ok();
    // The threat is real: unfiltered `trace` prints the token (this also shows the capture
    // sees the libraries' lines, so the check below can fail).
    let (raw, token) = logs_of_a_session(EnvFilter::new("trace")).await;
    assert!(
        raw.contains(&token),
        "expected the unfiltered trace to show the token"
    );

    let (capped, token) = logs_of_a_session(logs::filter("trace")).await;
    assert!(
        !capped.contains(&token),
        "a token reached the logs:\n{capped}"
    );
    assert!(
        capped.contains("courier_server"),
        "the server's own trace lines are kept"
    );
    // At the default level: one line per publish batch and per connection event, with the
    // user, never the token.
    let (info, token) = logs_of_a_session(logs::filter("info")).await;
    assert!(!info.contains(&token), "{info}");
    assert!(!info.contains("DEBUG"), "a quiet spec stays quiet:\n{info}");
    for line in ["published batch", "websocket disconnected"] {
        let found = info.lines().find(|l| l.contains(line));
        assert!(
            found.is_some_and(|l| l.contains("user=svc")),
            "no `{line}` line naming the user:\n{info}"
        );
    }
    // The secret-bearing libraries are capped, not silenced.
    let (debug_spec, token) =
        logs_of_a_session(logs::filter("info,tungstenite=trace,hyper=trace")).await;
    assert!(!debug_spec.contains(&token), "{debug_spec}");
}
