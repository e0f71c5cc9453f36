//! Starts a server on port 0 and drives it.

#![allow(dead_code)]

use std::time::Duration;

use courier_core::ChannelPattern;
use courier_server::auth::{Claims, Role, sign_hs256, unix_now};
use courier_server::config::HistoryBackend;
use courier_server::{Config, ServerHandle};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) const SECRET: &str = "test-secret-0123456789";
pub(crate) const STEP: Duration = Duration::from_secs(10);

pub(crate) fn config() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.auth.jwt_secret = SECRET.into();
    c.enable_fault_injection = true;
    c
}

pub(crate) struct Server {
    pub(crate) handle: Option<ServerHandle>,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) http: reqwest::Client,
}

pub(crate) async fn start() -> Server {
    start_with(|_| {}).await
}

/// An HTTP client. Cargo unifies features across the workspace, so reqwest may carry rustls
/// without a crypto provider (courier-client asks for that): install ring's first.
pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub(crate) async fn start_with(f: impl FnOnce(&mut Config)) -> Server {
    let mut c = config();
    f(&mut c);
    if std::env::var("COURIER_TEST_HISTORY").as_deref() == Ok("postgres")
        && c.history.backend == HistoryBackend::Default
    {
        postgres_history(&mut c).await;
    }
    let listener = tokio::net::TcpListener::bind(c.listen).await.unwrap();
    let handle = courier_server::start(c, listener).await.unwrap();
    let addr = handle.local_addr();
    Server {
        handle: Some(handle),
        addr,
        http: http_client(),
    }
}

/// The PostgreSQL of tests/with-postgres.sh (`COURIER_TEST_POSTGRES_URL`), if any.
pub(crate) fn test_postgres_url() -> Option<String> {
    std::env::var("COURIER_TEST_POSTGRES_URL").ok()
}

/// Keeps the history in PostgreSQL, in a fresh database, with the limits the test set for
/// the default history. With `COURIER_TEST_HISTORY=postgres` (`make test-postgres`) every
/// server of these tests does this, so the tests that hold the memory history (and, through
/// the same assertions, Redis) to the protocol hold the PostgreSQL store to it too.
pub(crate) async fn postgres_history(c: &mut Config) {
    let url =
        test_postgres_url().expect("COURIER_TEST_POSTGRES_URL: run under tests/with-postgres.sh");
    c.history.backend = HistoryBackend::Postgres;
    c.history.postgres.url = fresh_database(&url).await;
    c.history.postgres.max_events_per_channel = c.history.max_events_per_channel as u64;
    c.history.postgres.max_age_secs = c.history.max_age_secs;
    c.history.postgres.retention_interval_ms = 200;
    c.history.postgres.startup_timeout_ms = 5_000;
}

/// A new empty database on the server of `url`; returns its URL.
pub(crate) async fn fresh_database(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    let task = tokio::spawn(conn);
    let name = format!("courier_t_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    drop(client);
    let _ = task.await;
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

pub(crate) fn claims(sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        exp: unix_now() + 3600,
        iat: unix_now(),
        role: Role::User,
        channels: vec![],
        publish: vec![],
        tier: None,
        nbf: None,
        iss: None,
        aud: None,
    }
}

pub(crate) fn user(sub: &str) -> String {
    sign_hs256(SECRET, &claims(sub))
}

pub(crate) fn service(sub: &str) -> String {
    sign_hs256(
        SECRET,
        &Claims {
            role: Role::Service,
            ..claims(sub)
        },
    )
}

pub(crate) fn user_with(sub: &str, read: &[&str], publish: &[&str]) -> String {
    let p = |l: &[&str]| l.iter().map(|s| ChannelPattern::new(*s).unwrap()).collect();
    sign_hs256(
        SECRET,
        &Claims {
            channels: p(read),
            publish: p(publish),
            ..claims(sub)
        },
    )
}

pub(crate) fn event(id: &str, channel: &str, n: u64) -> Value {
    json!({"id": id, "type": "backtest.progress", "channel": channel, "data": {"backtest_id": "b", "percent": n % 100}})
}

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) struct Ws {
    pub(crate) s: Socket,
}

/// How a read ended when it was not a text frame.
#[derive(Debug, PartialEq)]
pub(crate) enum End {
    Close(u16),
    Dropped,
}

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn state(&self) -> &courier_server::SharedState {
        self.handle.as_ref().unwrap().state()
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        self.send(self.http.post(self.url(path)).json(body), token)
            .await
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.get_as(path, None).await
    }

    /// `GET path`, with `token` as the bearer when given.
    pub(crate) async fn get_as(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.send(self.http.get(self.url(path)), token).await
    }

    /// Sends `request` (with `token` as the bearer when given) within [`STEP`].
    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> reqwest::Response {
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        tokio::time::timeout(STEP, request.send())
            .await
            .expect("request timed out")
            .unwrap()
    }

    pub(crate) async fn open(&self, path: &str) -> Ws {
        let (s, _) = tokio::time::timeout(
            STEP,
            tokio_tungstenite::connect_async(format!("ws://{}{path}", self.addr)),
        )
        .await
        .expect("ws connect timed out")
        .unwrap();
        Ws { s }
    }

    /// Opens `/ws`, sends connect, and returns the socket with the `connected` frame.
    pub(crate) async fn connect(&self, token: &str) -> (Ws, Value) {
        self.connect_path("/ws", token).await
    }

    pub(crate) async fn connect_path(&self, path: &str, token: &str) -> (Ws, Value) {
        let mut ws = self.open(path).await;
        ws.send(json!({"op": "connect", "token": token, "client": "test/0"}))
            .await;
        let f = ws.recv().await;
        assert_eq!(f["op"], "connected", "{f}");
        (ws, f)
    }

    pub(crate) async fn shutdown(mut self) {
        let h = self.handle.take().unwrap();
        h.shutdown();
        tokio::time::timeout(Duration::from_secs(15), h.wait())
            .await
            .expect("shutdown timed out")
            .unwrap();
    }
}

impl Ws {
    /// Sends `text` as it is (JSON that `serde_json::Value` cannot hold, such as `1e999`).
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.s.send(Message::Text(text.into())).await.unwrap();
    }

    pub(crate) async fn send(&mut self, v: Value) {
        self.s
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next text frame, skipping server pings (answered with pong).
    pub(crate) async fn recv(&mut self) -> Value {
        match self.next().await {
            Ok(v) => v,
            Err(end) => panic!("expected a frame, got {end:?}"),
        }
    }

    /// The next text frame as sent (its exact text), skipping server pings.
    pub(crate) async fn recv_text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(STEP, self.s.next())
                .await
                .expect("no frame in time");
            match msg {
                Some(Ok(Message::Text(t))) if t.contains("\"op\":\"ping\"") => {
                    self.send(json!({"op": "pong"})).await;
                }
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    pub(crate) async fn next(&mut self) -> Result<Value, End> {
        loop {
            let msg = tokio::time::timeout(STEP, self.s.next())
                .await
                .expect("no frame in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["op"] == "ping" {
                        self.send(json!({"op": "pong"})).await;
                        continue;
                    }
                    return Ok(v);
                }
                Some(Ok(Message::Close(Some(f)))) => return Err(End::Close(f.code.into())),
                Some(Ok(Message::Close(None))) => return Err(End::Close(1005)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(End::Dropped),
            }
        }
    }

    /// Reads until the connection ends, returning the frames before it and how it ended.
    pub(crate) async fn until_end(&mut self) -> (Vec<Value>, End) {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Ok(v) => frames.push(v),
                Err(e) => return (frames, e),
            }
        }
    }

    pub(crate) async fn subscribe(
        &mut self,
        id: u64,
        channel: &str,
        since: Option<Value>,
    ) -> Value {
        let mut f = json!({"op": "subscribe", "id": id, "channel": channel});
        if let Some(s) = since {
            f["since"] = s;
        }
        self.send(f).await;
        self.recv().await
    }
}
