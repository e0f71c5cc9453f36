//! Load generators for `courier-server`, run by `make bench` (`tests/bench/bench_server.py`).
//!
//! Each binary starts the release server as a child process on a free loopback port with the
//! settings a benchmark needs (limits off, quiet logs), drives it, prints one JSON object of
//! figures on stdout, and stops it. Traffic stays on 127.0.0.1 and every loop is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server child process, killed on drop.
pub struct ServerProcess {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    binary: String,
}

impl ServerProcess {
    /// Starts `binary serve --listen 127.0.0.1:0` with `env` added, and waits for its
    /// `listening on` line.
    pub fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(binary);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        cmd.env("COURIER_LOG_LEVEL", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, binary)
    }

    /// Starts the bare Node `ws` broadcast server of `tests/bench/ws_broadcast.mjs`, the
    /// baseline of the fan-out comparison (it speaks just enough of the protocol for the
    /// fan-out subscribers and answers `POST /publish/batch`). Tokens still come from the
    /// Courier binary; the Node server does not check them.
    pub fn start_node_broadcast() -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/bench/ws_broadcast.mjs"
        );
        let mut cmd = Command::new("node");
        cmd.arg(script);
        let mut server = Self::spawn(cmd, "node");
        server.binary = server_binary();
        server
    }

    /// Spawns `cmd` (which prints `listening on <addr>` once bound) with stdout piped.
    fn spawn(mut cmd: Command, name: &str) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let binary = name.to_owned();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("server stdout");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().trim_start_matches("http://").to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr,
            binary: binary.to_owned(),
        }
    }

    /// A signed service token from the server's own `token` command.
    pub fn token(&self, sub: &str) -> String {
        let out = Command::new(&self.binary)
            .args(["token", "--sub", sub, "--role", "service", "--ttl", "3600"])
            .output()
            .expect("token command");
        assert!(
            out.status.success(),
            "token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 token")
            .trim()
            .to_owned()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the child has used so far, in milliseconds, from
    /// `/proc/<pid>/stat` (Linux clock ticks are 10 ms).
    pub fn cpu_ms(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 after the name.
        (ticks(11) + ticks(12)) as f64 * 10.0
    }

    /// The child's resident memory in bytes, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary: `$COURIER_SERVER_BIN` or the workspace's release build.
pub fn server_binary() -> String {
    std::env::var("COURIER_SERVER_BIN").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/release/courier-server"
        )
        .to_owned()
    })
}

/// A WebSocket to the server, authenticated (`connect` answered by `connected`).
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `ws://{addr}/ws`, sends `connect` and waits for `connected`.
pub async fn connect_ws(addr: &str, token: &str) -> Socket {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("ws connect");
    let hello =
        serde_json::json!({"op": "connect", "token": token, "client": "courier-bench"}).to_string();
    ws.send(Message::text(hello)).await.expect("send connect");
    loop {
        match ws
            .next()
            .await
            .expect("server closed during connect")
            .expect("ws read")
        {
            Message::Text(t) if t.contains("\"connected\"") => return ws,
            Message::Text(t) => panic!("unexpected answer to connect: {t}"),
            _ => {}
        }
    }
}

/// An HTTP client; installs ring as rustls's provider first, since feature unification in
/// workspace builds can give reqwest rustls without one.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Percentile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Milliseconds since the Unix epoch, as a float (latency stamps cross processes).
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
        * 1000.0
}

/// `--redis-url URL` from the command line: the server settings that put it on Redis
/// (`COURIER_BACKEND=redis`), under a key prefix of its own so runs do not mix. With
/// `--redis-cluster` too, on a Redis Cluster instead (`COURIER_BACKEND=redis-cluster`; the
/// URL lists seed nodes, comma-separated).
pub fn redis_env() -> Option<Vec<(String, String)>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .iter()
        .position(|a| a == "--redis-url")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let cluster = args.iter().any(|a| a == "--redis-cluster");
    assert!(
        url.is_some() || !cluster,
        "--redis-cluster needs --redis-url with the cluster's nodes, comma-separated"
    );
    let url = url?;
    let backend = if cluster { "redis-cluster" } else { "redis" };
    let prefix = format!("bench{}-{}:", std::process::id(), unix_ms() as u64);
    Some(vec![
        ("COURIER_BACKEND".into(), backend.into()),
        ("COURIER_REDIS_URL".into(), url),
        ("COURIER_REDIS__KEY_PREFIX".into(), prefix),
    ])
}

/// Starts `instances` servers with `env` plus [`redis_env`] (all on one Redis, or one Redis
/// Cluster, when given), or with `--server node` on the command line the bare Node `ws`
/// baseline instead.
pub fn start_servers(instances: u64, env: &[(&str, &str)]) -> Vec<ServerProcess> {
    let args: Vec<String> = std::env::args().collect();
    if args
        .windows(2)
        .any(|w| w[0] == "--server" && w[1] == "node")
    {
        return vec![ServerProcess::start_node_broadcast()];
    }
    let redis = redis_env();
    assert!(
        instances <= 1 || redis.is_some(),
        "--instances above 1 needs --redis-url"
    );
    let mut all: Vec<(&str, &str)> = env.to_vec();
    if let Some(r) = &redis {
        all.extend(r.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    (0..instances.max(1))
        .map(|_| ServerProcess::start(&server_binary(), &all))
        .collect()
}
