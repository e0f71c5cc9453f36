//! Several server instances on one real Redis, and on a three-master Redis Cluster
//! (`redis-server` and `redis-cli` from Debian's packages, started by these tests on free
//! loopback ports in temporary directories). Skipped, loudly, only when they are not
//! installed; `make test` installs them.
//!
//! The multi-instance cases are written once over a [`Deployment`] and run on both through
//! [`on_redis_and_cluster`] (`<case>::on_redis`, `<case>::on_cluster`); the cases about a
//! single Redis losing its data run on one Redis only.

#[path = "api/util.rs"]
mod util;

#[path = "api/paging.rs"]
mod paging;

#[path = "api/contract.rs"]
mod contract;

#[macro_use]
#[path = "api/batches.rs"]
mod batches;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courier_server::config::Backend;
use serde_json::{Value, json};
use util::{STEP, Server, Ws, service, start_with, user};

/// A `redis-server` child with AOF on (`appendfsync always`), killed on drop.
struct Redis {
    port: u16,
    dir: PathBuf,
    /// Arguments after the common ones (a cluster node's settings).
    extra: Vec<String>,
    child: Option<Child>,
}

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn redis_binary() -> Option<&'static str> {
    installed("redis-server").then_some("redis-server")
}

macro_rules! need_redis {
    () => {
        match $crate::Redis::start().await {
            Some(r) => r,
            None => {
                eprintln!(
                    "\n\n*** SKIPPED: redis-server is not installed (apt-get install -y redis-server; `make test` does it) ***\n"
                );
                return;
            }
        }
    };
}

macro_rules! need_cluster {
    () => {
        match $crate::Cluster::start().await {
            Some(c) => c,
            None => {
                eprintln!(
                    "\n\n*** SKIPPED: redis-server or redis-cli is not installed (apt-get install -y redis-server; `make test` does it) ***\n"
                );
                return;
            }
        }
    };
}

/// `n` distinct free loopback ports (each held until all are chosen, so none repeats).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Redis {
    async fn start() -> Option<Self> {
        redis_binary()?;
        Some(Self::start_with(free_ports(1)[0], Vec::new()).await)
    }

    /// Starts on `port` in a fresh temporary directory, with `extra` arguments.
    async fn start_with(port: u16, extra: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!("courier-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Self {
            port,
            dir,
            extra,
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").await.is_ok() {
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await
                    {
                        if buf[..n].starts_with(b"+PONG") {
                            return;
                        }
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Sends one inline command and returns the first line of the reply.
    async fn command(&self, line: &str) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        s.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(STEP, BufReader::new(s).read_line(&mut reply))
            .await
            .expect("redis answers")
            .unwrap();
        reply.trim_end().to_owned()
    }

    /// Runs one command (`args`) on this node alone, as redis-rs decodes its reply; an
    /// error when the node is down, refuses, or redirects (`MOVED`).
    async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query_async(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        }
    }

    /// Restarts with nothing: as a Redis without persistence comes back.
    async fn restart_empty(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).unwrap();
        std::fs::create_dir_all(&self.dir).unwrap();
        self.spawn().await;
    }

    /// SIGKILL: no shutdown save; only the AOF survives.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas), each a [`Redis`] in its own directory
/// with its own `nodes.conf` and AOF, so a master killed and restarted rejoins with its
/// slots and data. `cluster-require-full-coverage no`: while one master is down, the
/// others keep serving their slots. Every node is killed, and its directory removed, on
/// drop.
struct Cluster {
    masters: Vec<Redis>,
}

/// The cluster's size.
const MASTERS: usize = 3;

impl Cluster {
    async fn start() -> Option<Self> {
        if !(installed("redis-server") && installed("redis-cli")) {
            return None;
        }
        // A client port and a cluster bus port per master (the default bus port, the
        // client port + 10000, may be taken or past 65535).
        let ports = free_ports(2 * MASTERS);
        let mut masters = Vec::new();
        for pair in ports.chunks(2) {
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &pair[1].to_string(),
                // Short, so a restarted master is back in about a second.
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ]
            .map(String::from)
            .to_vec();
            masters.push(Redis::start_with(pair[0], extra).await);
        }
        let cluster = Self { masters };
        let mut create = tokio::process::Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for m in &cluster.masters {
            create.arg(format!("127.0.0.1:{}", m.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_healthy().await;
        Some(cluster)
    }

    /// Every seed node, comma-separated (`redis.url` of the `redis-cluster` backend).
    fn url(&self) -> String {
        let urls: Vec<String> = self.masters.iter().map(Redis::url).collect();
        urls.join(",")
    }

    /// Waits until every master says the cluster is ok, knows all masters and has every
    /// slot served.
    async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut unhealthy = None;
            for m in &self.masters {
                let info = m.query::<String>(&["CLUSTER", "INFO"]).await;
                let ok = info.as_ref().is_ok_and(|i| {
                    i.contains("cluster_state:ok")
                        && i.contains("cluster_slots_ok:16384")
                        && i.contains(&format!("cluster_known_nodes:{MASTERS}\r"))
                });
                if !ok {
                    unhealthy = Some((m.port, info));
                    break;
                }
            }
            let Some((port, info)) = unhealthy else {
                return;
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster did not become healthy; node {port}: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL of master `i`: its slots are down until [`Cluster::restart_master`].
    fn kill_master(&mut self, i: usize) {
        self.masters[i].kill();
    }

    /// Starts master `i` again in its directory (`nodes.conf` and AOF), and waits until it
    /// has rejoined with its slots.
    async fn restart_master(&mut self, i: usize) {
        self.masters[i].spawn().await;
        self.wait_healthy().await;
    }

    /// The slot ranges master `i` serves (its `myself` line of `CLUSTER NODES`).
    async fn slots_of(&self, i: usize) -> Vec<(u16, u16)> {
        let nodes: String = self.masters[i].query(&["CLUSTER", "NODES"]).await.unwrap();
        let me = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .expect("a myself line");
        me.split(' ')
            .skip(8)
            .map(|r| match r.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (r.parse().unwrap(), r.parse().unwrap()),
            })
            .collect()
    }
}

/// Where the instances under test share their state: one Redis, or a Redis Cluster.
trait Deployment {
    /// The backend the instances run with.
    fn backend(&self) -> Backend;
    /// Their `redis.url`.
    fn url(&self) -> String;
    /// SIGKILL of one node (the Redis; a cluster's master 1): its data is unavailable.
    fn kill_one(&mut self);
    /// Starts the killed node again from its directory (AOF), waiting until it serves.
    async fn restart_one(&mut self);
    /// SIGKILL of every node, then starts them again from their directories (AOF),
    /// waiting until they serve.
    async fn restart_all(&mut self);
}

impl Deployment for Redis {
    fn backend(&self) -> Backend {
        Backend::Redis
    }
    fn url(&self) -> String {
        Redis::url(self)
    }
    fn kill_one(&mut self) {
        self.kill();
    }
    async fn restart_one(&mut self) {
        self.spawn().await;
    }
    async fn restart_all(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Deployment for Cluster {
    fn backend(&self) -> Backend {
        Backend::RedisCluster
    }
    fn url(&self) -> String {
        Cluster::url(self)
    }
    fn kill_one(&mut self) {
        self.kill_master(1);
    }
    async fn restart_one(&mut self) {
        self.restart_master(1).await;
    }
    async fn restart_all(&mut self) {
        for m in &mut self.masters {
            m.kill();
        }
        for m in &mut self.masters {
            m.spawn().await;
        }
        self.wait_healthy().await;
    }
}

/// For each `case` (an `async fn(&impl Deployment)`, or `&mut` for a case that kills
/// nodes), a module of two tests: `on_redis` (one Redis) and `on_cluster` (three masters).
macro_rules! on_redis_and_cluster {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn on_redis() {
                let mut redis = need_redis!();
                super::$case(&mut redis).await;
            }

            #[tokio::test]
            async fn on_cluster() {
                let mut cluster = need_cluster!();
                super::$case(&mut cluster).await;
            }
        }
    )*};
}

async fn instance(redis: &impl Deployment, f: impl FnOnce(&mut courier_server::Config)) -> Server {
    let (backend, url) = (redis.backend(), redis.url());
    start_with(move |c| {
        c.backend = backend;
        c.redis.url = url;
        c.redis.startup_timeout_ms = 5_000;
        c.redis.instance_ttl_ms = 1_000;
        f(c);
    })
    .await
}

async fn kill(mut server: Server) {
    let h = server.handle.take().unwrap();
    tokio::time::timeout(STEP, h.kill())
        .await
        .expect("kill timed out");
}

fn ev(id: &str, channel: &str, n: u64) -> Value {
    json!({"id": id, "type": "custom.n", "channel": channel, "data": {"n": n}})
}

/// Reads `count` events, asserting offsets follow each other from `first`.
async fn expect_events(ws: &mut Ws, first: u64, count: u64) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..count {
        let f = ws.recv().await;
        assert_eq!(f["op"], "event", "{f}");
        assert_eq!(f["offset"].as_u64(), Some(first + i), "{f}");
        out.push(f);
    }
    out
}

async fn publish_ok(server: &Server, token: &str, body: &Value) -> Value {
    let r = server.post("/publish", Some(token), body).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn fan_out_reaches_every_instance_in_order(redis: &impl Deployment) {
    let (a, b, c) = (
        instance(redis, |_| {}).await,
        instance(redis, |_| {}).await,
        instance(redis, |_| {}).await,
    );
    let svc = service("svc");
    let (mut on_b, _) = b.connect(&user("u")).await;
    let (mut on_c, _) = c.connect(&user("u")).await;
    assert_eq!(on_b.subscribe(1, "global", None).await["op"], "subscribed");
    assert_eq!(on_c.subscribe(1, "global", None).await["op"], "subscribed");
    // Two publishers on two instances at once: offsets stay dense and ordered everywhere.
    let pa = async {
        for i in 0..30 {
            publish_ok(&a, &svc, &ev(&format!("a{i}"), "global", i)).await;
        }
    };
    let pb = async {
        for i in 0..30 {
            publish_ok(&b, &svc, &ev(&format!("b{i}"), "global", i)).await;
        }
    };
    tokio::join!(pa, pb);
    let got_b = expect_events(&mut on_b, 1, 60).await;
    let got_c = expect_events(&mut on_c, 1, 60).await;
    let ids = |v: &[Value]| {
        v.iter()
            .map(|f| f["event"]["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&got_b), ids(&got_c));
    let mut a_ids: Vec<String> = ids(&got_b)
        .into_iter()
        .filter(|i| i.starts_with('a'))
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("a{i}")).collect();
    assert_eq!(a_ids, expected, "one publisher's events stay in its order");
    a_ids.clear();
    for s in [a, b, c] {
        s.shutdown().await;
    }
}

async fn subscriber_resumes_on_another_instance_and_after_restarting_all(
    redis: &mut impl Deployment,
) {
    let a = instance(redis, |_| {}).await;
    let b = instance(redis, |_| {}).await;
    let svc = service("svc");
    let (mut ws, connected) = a.connect(&user("u")).await;
    let deployment = connected["epoch"].as_str().unwrap().to_owned();
    // The channel's epoch (each channel has its own on Redis).
    let epoch = ws.subscribe(1, "global", None).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..=10 {
        publish_ok(&b, &svc, &ev(&format!("e{i}"), "global", i)).await;
    }
    let got = expect_events(&mut ws, 1, 10).await;
    assert_eq!(got[9]["epoch"], epoch.as_str());
    // A dies; events go on through B meanwhile.
    kill(a).await;
    assert!(
        ws.next().await.is_err(),
        "the socket on the killed instance ends"
    );
    for i in 11..=20 {
        publish_ok(&b, &svc, &ev(&format!("e{i}"), "global", i)).await;
    }
    let (mut ws, connected) = b.connect(&user("u")).await;
    assert_eq!(connected["epoch"], deployment.as_str());
    let f = ws
        .subscribe(2, "global", Some(json!({"epoch": epoch, "offset": 10})))
        .await;
    assert_eq!(
        (
            f["recovered"].as_bool(),
            f["epoch"].as_str(),
            f["offset"].as_u64(),
            f["replay_from"].as_u64()
        ),
        (Some(true), Some(epoch.as_str()), Some(20), Some(11)),
        "{f}"
    );
    expect_events(&mut ws, 11, 10).await;
    drop(ws);
    // Everything restarts, every instance and (SIGKILL) every Redis node: history, the
    // epochs and the idempotency window are in Redis's AOF.
    b.shutdown().await;
    redis.restart_all().await;
    let d = instance(&*redis, |_| {}).await;
    let e = instance(&*redis, |_| {}).await;
    for i in 21..=25 {
        publish_ok(&d, &svc, &ev(&format!("e{i}"), "global", i)).await;
    }
    let (mut ws, connected) = e.connect(&user("u")).await;
    assert_eq!(connected["epoch"], deployment.as_str());
    let f = ws
        .subscribe(3, "global", Some(json!({"epoch": epoch, "offset": 20})))
        .await;
    assert_eq!(
        (
            f["recovered"].as_bool(),
            f["epoch"].as_str(),
            f["replay_from"].as_u64()
        ),
        (Some(true), Some(epoch.as_str()), Some(21)),
        "{f}"
    );
    let got = expect_events(&mut ws, 21, 5).await;
    assert_eq!(got[0]["event"]["id"], "e21");
    // The idempotency window survived the restart too.
    let again = publish_ok(&e, &svc, &ev("e3", "global", 3)).await;
    assert_eq!(
        (again["duplicate"].as_bool(), again["offset"].as_u64()),
        (Some(true), Some(3))
    );
    d.shutdown().await;
    e.shutdown().await;
}

async fn rate_limit_holds_across_instances(redis: &impl Deployment) {
    let limited = |c: &mut courier_server::Config| {
        c.rate_limits.user = courier_server::config::LimitRule {
            limit: 10,
            window_secs: 60,
            burst: Some(10),
            shadow: false,
        };
    };
    let a = instance(redis, limited).await;
    let b = instance(redis, limited).await;
    let alice = util::user_with("alice", &[], &["global"]);
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..30u64 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = s.post("/publish", Some(&alice), &ev("", "global", i)).await;
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {
                refused += 1;
                let h = r.headers();
                assert!(h.get("retry-after").is_some());
                assert_eq!(h["x-ratelimit-limit"], "10");
                assert_eq!(h["x-ratelimit-remaining"], "0");
                assert!(h.get("ratelimit-policy").is_some());
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(
        (admitted, refused),
        (10, 20),
        "the sum admitted stays within the limit"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// `RateLimit` members of an answer: bucket -> remaining.
fn remaining(h: &reqwest::header::HeaderMap) -> std::collections::BTreeMap<String, u64> {
    let Some(v) = h.get("ratelimit") else {
        return Default::default();
    };
    v.to_str()
        .unwrap()
        .split(", ")
        .map(|m| {
            let mut parts = m.split(';');
            let name = parts.next().unwrap().trim_matches('"').to_owned();
            let r = parts.next().unwrap().strip_prefix("r=").unwrap();
            (name, r.parse().unwrap())
        })
        .collect()
}

async fn buckets_are_shared_by_instances_and_charged_per_accepted_event(redis: &impl Deployment) {
    use courier_server::config::LimitRule;
    let limited = |c: &mut courier_server::Config| {
        // Long windows: nothing refills during the test, so counts are exact.
        c.rate_limits.user = LimitRule {
            limit: 20,
            window_secs: 600,
            ..LimitRule::default()
        };
        c.rate_limits.fallback = LimitRule {
            limit: 2,
            window_secs: 600,
            ..LimitRule::default()
        };
    };
    let a = instance(redis, limited).await;
    let b = instance(redis, limited).await;
    let alice = util::user_with("alice", &[], &["global"]);
    let typed = |id: &str, t: &str| json!({"id": id, "type": t, "channel": "global", "data": {}});
    // Two custom types, one on each instance, share the one fallback bucket.
    let r = a
        .post("/publish", Some(&alice), &typed("x1", "custom.x"))
        .await;
    assert_eq!(remaining(r.headers())["fallback"], 1);
    let r = b
        .post("/publish", Some(&alice), &typed("y1", "custom.y"))
        .await;
    assert_eq!(
        remaining(r.headers()),
        [("fallback".into(), 0), ("user".into(), 18)].into()
    );
    let r = a
        .post("/publish", Some(&alice), &typed("z1", "other.z"))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["limit_type"],
        "fallback"
    );
    // The refusal, a duplicate and an invalid event took nothing from `user`; a batch is
    // refused per event: deposits (5 in the default table) go through, the custom type not.
    let body = json!({"events": [
        typed("x1", "custom.x"),
        {"type": "custom.q", "channel": "global"},
        typed("z1", "other.z"),
        typed("d1", "deposit.made"),
        typed("d2", "deposit.made"),
    ]});
    let r = b.post("/publish/batch", Some(&alice), &body).await;
    assert_eq!(r.status(), 200);
    let h = remaining(r.headers());
    assert_eq!(
        h,
        [
            ("fallback".into(), 0),
            ("type:deposit".into(), 3),
            ("user".into(), 16)
        ]
        .into()
    );
    let v: Value = r.json().await.unwrap();
    let statuses: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["duplicate", "rejected", "rejected", "accepted", "accepted"]
    );
    assert_eq!(v["results"][2]["error"]["limit_type"], "fallback");
    // The refused id was not kept: it is still refused (not a duplicate) on the other instance.
    let r = a
        .post("/publish", Some(&alice), &typed("z1", "other.z"))
        .await;
    assert_eq!(r.status(), 429);
    a.shutdown().await;
    b.shutdown().await;
}

async fn one_id_on_two_instances_is_delivered_once(redis: &impl Deployment) {
    let a = instance(redis, |_| {}).await;
    let b = instance(redis, |_| {}).await;
    let c = instance(redis, |_| {}).await;
    let svc = service("svc");
    let (mut ws, _) = c.connect(&user("u")).await;
    ws.subscribe(1, "global", None).await;
    let body = ev("same-id", "global", 1);
    let (ra, rb) = tokio::join!(publish_ok(&a, &svc, &body), publish_ok(&b, &svc, &body));
    assert_eq!(ra["offset"], rb["offset"]);
    let dups = [&ra, &rb].iter().filter(|r| r["duplicate"] == true).count();
    assert_eq!(dups, 1, "{ra} {rb}");
    publish_ok(&a, &svc, &ev("sentinel", "global", 2)).await;
    let got = expect_events(&mut ws, 1, 2).await;
    assert_eq!(
        (
            got[0]["event"]["id"].as_str(),
            got[1]["event"]["id"].as_str()
        ),
        (Some("same-id"), Some("sentinel"))
    );
    for s in [a, b, c] {
        s.shutdown().await;
    }
}

async fn per_user_connection_limit_spans_instances_and_forgets_dead_ones(redis: &impl Deployment) {
    let two = |c: &mut courier_server::Config| c.connections.max_per_user = 2;
    let a = instance(redis, two).await;
    let b = instance(redis, two).await;
    let c = instance(redis, two).await;
    let (_on_a, _) = a.connect(&user("alice")).await;
    let (_on_b, _) = b.connect(&user("alice")).await;
    let mut third = c.open("/ws").await;
    third
        .send(json!({"op": "connect", "token": user("alice")}))
        .await;
    let (frames, end) = third.until_end().await;
    assert_eq!(frames[0]["limit_type"], "user", "{frames:?}");
    assert_eq!(end, util::End::Close(1008));
    // A dies without cleaning up; its heartbeat (1 s here) expires and so do its places.
    kill(a).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let mut ws = c.open("/ws").await;
        ws.send(json!({"op": "connect", "token": user("alice")}))
            .await;
        let f = ws.recv().await;
        if f["op"] == "connected" {
            break;
        }
        assert_eq!(f["limit_type"], "user", "{f}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead instance's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn redis_killed_and_restarted_loses_nothing_acknowledged() {
    let mut redis = need_redis!();
    let a = instance(&redis, |_| {}).await;
    let b = instance(&redis, |_| {}).await;
    let svc = service("svc");
    let (mut ws, _) = b.connect(&user("u")).await;
    ws.subscribe(1, "global", None).await;
    let mut acked: Vec<String> = Vec::new();
    let mut saw_503 = false;
    let mut saw_unready = false;
    let started = tokio::time::Instant::now();
    let mut i = 0u64;
    // Publish with retries (same id, as the SDKs do), killing Redis after 20 events and
    // bringing it back 1 s later.
    let mut down_since: Option<tokio::time::Instant> = None;
    while acked.len() < 60 {
        assert!(started.elapsed() < Duration::from_secs(40), "took too long");
        if acked.len() == 20 && down_since.is_none() && !saw_503 {
            redis.kill();
            down_since = Some(tokio::time::Instant::now());
            let r = a.get("/health/ready").await;
            assert_eq!(r.status(), 503);
            saw_unready = true;
        }
        if let Some(t) = down_since {
            if t.elapsed() > Duration::from_secs(1) {
                redis.spawn().await;
                down_since = None;
            }
        }
        let id = format!("k{i}");
        let r = a.post("/publish", Some(&svc), &ev(&id, "global", i)).await;
        match r.status().as_u16() {
            200 => {
                acked.push(id);
                i += 1;
            }
            503 => {
                saw_503 = true;
                assert!(r.headers().get("retry-after").is_some());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(saw_503 && saw_unready);
    // Ready again on its own.
    let deadline = tokio::time::Instant::now() + STEP;
    while a.get("/health/ready").await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = expect_events(&mut ws, 1, 60).await;
    let ids: Vec<String> = got
        .iter()
        .map(|f| f["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, acked, "every acknowledged event, once, in order");
    a.shutdown().await;
    b.shutdown().await;
}

/// Publishes until acknowledged (same id), as the SDKs do while Redis comes back.
async fn publish_retrying(server: &Server, token: &str, body: &Value) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let r = server.post("/publish", Some(token), body).await;
        match r.status().as_u16() {
            200 => return r.json().await.unwrap(),
            503 => {
                assert!(tokio::time::Instant::now() < deadline, "Redis never back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            s => panic!("unexpected {s}"),
        }
    }
}

/// Subscribes `ws` to `global` from its live head, publishes `o1..=on` through `publisher`
/// and expects them; returns the epoch they were published in (the one about to be lost).
async fn fill_global(ws: &mut Ws, publisher: &Server, token: &str, n: u64) -> String {
    let epoch = ws.subscribe(1, "global", None).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..=n {
        publish_ok(publisher, token, &ev(&format!("o{i}"), "global", i)).await;
    }
    expect_events(ws, 1, n).await;
    epoch
}

/// Publishes `n1..=n3` through `server` while Redis comes back; returns their ids.
async fn publish_new_epoch(server: &Server, token: &str) -> Vec<String> {
    let ids: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        publish_retrying(server, token, &ev(id, "global", i as u64)).await;
    }
    ids
}

/// Subscribes with `since` from a lost epoch and expects the new epoch from offset 1:
/// `subscribed {recovered: false, replay_from: 1}`, then `ids` as offsets 1, 2, …
async fn expect_new_epoch(ws: &mut Ws, since: Value, old_epoch: &str, ids: &[String]) -> String {
    let f = ws.subscribe(9, "global", Some(since)).await;
    assert_eq!(f["op"], "subscribed", "{f}");
    let epoch = f["epoch"].as_str().unwrap().to_owned();
    assert_ne!(epoch, old_epoch, "{f}");
    assert_eq!(
        (
            f["recovered"].as_bool(),
            f["offset"].as_u64(),
            f["replay_from"].as_u64()
        ),
        (Some(false), Some(ids.len() as u64), Some(1)),
        "{f}"
    );
    let got = expect_events(ws, 1, ids.len() as u64).await;
    for (f, id) in got.iter().zip(ids) {
        assert_eq!(
            (f["epoch"].as_str(), f["event"]["id"].as_str()),
            (Some(epoch.as_str()), Some(id.as_str()))
        );
    }
    epoch
}

#[tokio::test]
async fn redis_losing_its_data_replays_the_new_epoch_from_its_first_event() {
    let redis = need_redis!();
    let a = instance(&redis, |_| {}).await;
    let b = instance(&redis, |_| {}).await;
    let svc = service("svc");
    let (mut ws, _) = a.connect(&user("u")).await;
    let old_epoch = fill_global(&mut ws, &b, &svc, 5).await;
    // Redis loses everything (FLUSHALL); publishing goes on in a new epoch.
    assert_eq!(redis.command("FLUSHALL").await, "+OK");
    let ids: Vec<String> = (1..=4).map(|i| format!("n{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        publish_ok(&b, &svc, &ev(id, "global", i as u64)).await;
    }
    // The subscriber is told to resubscribe (1012), and comes back on the other instance.
    let (frames, end) = ws.until_end().await;
    assert_eq!(
        (frames.len(), end),
        (0, util::End::Close(1012)),
        "{frames:?}"
    );
    let (mut ws, _) = b.connect(&user("u")).await;
    let epoch = expect_new_epoch(
        &mut ws,
        json!({"epoch": old_epoch, "offset": 5}),
        &old_epoch,
        &ids,
    )
    .await;
    // Live after the replay, from either instance.
    publish_ok(&a, &svc, &ev("n5", "global", 5)).await;
    let live = expect_events(&mut ws, 5, 1).await;
    assert_eq!(
        (live[0]["epoch"].as_str(), live[0]["event"]["id"].as_str()),
        (Some(epoch.as_str()), Some("n5"))
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn redis_and_every_instance_restarted_without_data_replay_the_new_epoch() {
    let mut redis = need_redis!();
    let a = instance(&redis, |_| {}).await;
    let b = instance(&redis, |_| {}).await;
    let svc = service("svc");
    let (mut ws, _) = a.connect(&user("u")).await;
    let old_epoch = fill_global(&mut ws, &b, &svc, 5).await;
    // Everything goes down; Redis comes back empty, then new instances.
    kill(a).await;
    kill(b).await;
    assert!(ws.next().await.is_err());
    redis.restart_empty().await;
    let c = instance(&redis, |_| {}).await;
    let d = instance(&redis, |_| {}).await;
    let ids = publish_new_epoch(&c, &svc).await;
    let (mut ws, _) = d.connect(&user("u")).await;
    expect_new_epoch(
        &mut ws,
        json!({"epoch": old_epoch, "offset": 5}),
        &old_epoch,
        &ids,
    )
    .await;
    publish_ok(&c, &svc, &ev("n4", "global", 4)).await;
    assert_eq!(expect_events(&mut ws, 4, 1).await[0]["event"]["id"], "n4");
    c.shutdown().await;
    d.shutdown().await;
}

#[tokio::test]
async fn redis_restarted_while_instances_run_replays_the_new_epoch() {
    let mut redis = need_redis!();
    let a = instance(&redis, |_| {}).await;
    let b = instance(&redis, |_| {}).await;
    let svc = service("svc");
    let (mut ws, _) = a.connect(&user("u")).await;
    let old_epoch = fill_global(&mut ws, &b, &svc, 3).await;
    // Redis without persistence restarts under running instances.
    redis.restart_empty().await;
    let ids = publish_new_epoch(&b, &svc).await;
    let (frames, end) = ws.until_end().await;
    assert_eq!(
        (frames.len(), end),
        (0, util::End::Close(1012)),
        "{frames:?}"
    );
    let (mut ws, _) = a.connect(&user("u")).await;
    expect_new_epoch(
        &mut ws,
        json!({"epoch": old_epoch, "offset": 3}),
        &old_epoch,
        &ids,
    )
    .await;
    publish_ok(&b, &svc, &ev("n4", "global", 4)).await;
    assert_eq!(expect_events(&mut ws, 4, 1).await[0]["event"]["id"], "n4");
    a.shutdown().await;
    b.shutdown().await;
}

async fn history_older_than_held_replays_from_the_oldest_after_restarting_all(
    redis: &impl Deployment,
) {
    let three = |c: &mut courier_server::Config| c.history.max_events_per_channel = 3;
    let a = instance(redis, three).await;
    let svc = service("svc");
    let mut epoch = String::new();
    for i in 1..=6 {
        let r = publish_ok(&a, &svc, &ev(&format!("e{i}"), "global", i)).await;
        epoch = r["epoch"].as_str().unwrap().to_owned();
    }
    // Every instance restarts; Redis keeps the history (4..=6) and the epoch.
    kill(a).await;
    let b = instance(redis, three).await;
    let (mut ws, _) = b.connect(&user("u")).await;
    let f = ws
        .subscribe(1, "global", Some(json!({"epoch": epoch, "offset": 1})))
        .await;
    assert_eq!(
        (
            f["epoch"].as_str(),
            f["recovered"].as_bool(),
            f["offset"].as_u64(),
            f["replay_from"].as_u64()
        ),
        (Some(epoch.as_str()), Some(false), Some(6), Some(4)),
        "{f}"
    );
    let got = expect_events(&mut ws, 4, 3).await;
    assert_eq!(got[0]["event"]["id"], "e4");
    publish_ok(&b, &svc, &ev("e7", "global", 7)).await;
    expect_events(&mut ws, 7, 1).await;
    // Right after a held offset: recovered, as before.
    let (mut ws, _) = b.connect(&user("u")).await;
    let f = ws
        .subscribe(1, "global", Some(json!({"epoch": epoch, "offset": 5})))
        .await;
    assert_eq!(
        (f["recovered"].as_bool(), f["replay_from"].as_u64()),
        (Some(true), Some(6)),
        "{f}"
    );
    expect_events(&mut ws, 6, 2).await;
    b.shutdown().await;
}

async fn foreign_epoch_replay_meets_live_publishes_without_holes_or_duplicates(
    redis: &impl Deployment,
) {
    let a = instance(redis, |_| {}).await;
    let b = instance(redis, |_| {}).await;
    let svc = service("svc");
    for i in 1..=50 {
        publish_ok(&a, &svc, &ev(&format!("r{i}"), "global", i)).await;
    }
    let publisher = {
        let http = a.http.clone();
        let url = a.url("/publish");
        let svc = svc.clone();
        tokio::spawn(async move {
            for i in 51..=150 {
                let r = http
                    .post(&url)
                    .bearer_auth(&svc)
                    .json(&ev(&format!("r{i}"), "global", i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let (mut ws, _) = b.connect(&user("u")).await;
    let f = ws
        .subscribe(1, "global", Some(json!({"epoch": "gone", "offset": 120})))
        .await;
    assert_eq!(
        (f["recovered"].as_bool(), f["replay_from"].as_u64()),
        (Some(false), Some(1)),
        "{f}"
    );
    let got = expect_events(&mut ws, 1, 150).await;
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f["event"]["id"], format!("r{}", i + 1));
    }
    publisher.await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn health_reports_redis_latency_and_is_unhealthy_when_it_is_down() {
    let mut redis = need_redis!();
    let a = instance(&redis, |_| {}).await;
    let r = a.get("/health").await;
    assert_eq!(r.status(), 200);
    let h: Value = r.json().await.unwrap();
    let entry = &h["components"]["redis"];
    assert_eq!(
        (h["level"].as_str(), entry["status"].as_str()),
        (Some("healthy"), Some("reachable"))
    );
    assert!(entry["latency_ms"].as_f64().unwrap() >= 0.0, "{h}");
    redis.kill();
    let r = a.get("/health").await;
    assert_eq!(r.status(), 503);
    let h: Value = r.json().await.unwrap();
    let entry = &h["components"]["redis"];
    assert_eq!(
        (
            h["status"].as_str(),
            entry["level"].as_str(),
            entry["status"].as_str()
        ),
        (Some("unhealthy"), Some("unhealthy"), Some("unreachable"))
    );
    assert!(entry["error"].is_string(), "{h}");
    kill(a).await;
}

#[tokio::test]
async fn replay_api_pages_10000_events_both_ways_on_every_instance() {
    let redis = need_redis!();
    let a = instance(&redis, |c| c.history.max_events_per_channel = 20_000).await;
    let b = instance(&redis, |c| c.history.max_events_per_channel = 20_000).await;
    paging::fill(&a, "hist.big", 10_000).await;
    let token = util::user_with("reader", &["hist.*"], &[]);
    paging::check_paging_both_ways(&a, &token, "hist.big", 10_000).await;
    // The other instance reads the same history, and a cursor from one continues on the other.
    let (status, page) = paging::get(&a, Some(&token), "hist.big", "after=9000&limit=500").await;
    assert_eq!(status, 200);
    let next = page["next"].as_str().unwrap();
    let (status, page) = paging::get(&b, Some(&token), "hist.big", &format!("cursor={next}")).await;
    assert_eq!(status, 200);
    assert_eq!(page["events"][0]["offset"], 9501);
    assert_eq!(page["latest"], 10_000);
    let (status, body) = paging::get(
        &b,
        Some(&util::user_with("u", &["x.*"], &[])),
        "hist.big",
        "",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("FORBIDDEN_CHANNEL"))
    );
    kill(a).await;
    kill(b).await;
}

async fn replay_api_since_and_count_trim(redis: &impl Deployment) {
    let a = instance(redis, |c| c.history.max_events_per_channel = 50).await;
    let token = util::user_with("reader", &["hist.*"], &[]);
    paging::fill(&a, "hist.trim", 120).await;
    let (fwd, _) = paging::page_all(&a, &token, "hist.trim", "", 7).await;
    assert_eq!(fwd, (71..=120).collect::<Vec<_>>());
    let (back, _) = paging::page_all(&a, &token, "hist.trim", "direction=backward", 7).await;
    assert_eq!(back, (71..=120).rev().collect::<Vec<_>>());
    // `since` bisects the stream by store time: 3 events, a cut, 2 more.
    paging::fill(&a, "hist.since", 3).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let cut = courier_server::http::unix_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let ch = courier_core::ChannelName::new("hist.since").unwrap();
    for i in 4..=5 {
        let e = courier_core::Event::new(
            format!("p{i}"),
            "custom.n",
            ch.clone(),
            &json!({"n": i}),
            Default::default(),
        );
        a.state().history.append(e).await.unwrap();
    }
    let (fwd, _) = paging::page_all(&a, &token, "hist.since", &format!("since={cut}"), 1).await;
    assert_eq!(fwd, vec![4, 5]);
    let (fwd, _) = paging::page_all(&a, &token, "hist.since", "since=0", 2).await;
    assert_eq!(fwd, vec![1, 2, 3, 4, 5]);
    let (fwd, _) = paging::page_all(
        &a,
        &token,
        "hist.since",
        &format!("since={}", cut + 60_000),
        2,
    )
    .await;
    assert!(fwd.is_empty());
    kill(a).await;
}

#[tokio::test]
async fn two_instances_on_redis_fan_out_with_postgres_history_deliver_every_offset_in_order() {
    let Some(pg) = util::test_postgres_url() else {
        eprintln!(
            "SKIPPED: COURIER_TEST_POSTGRES_URL is not set (run under tests/with-postgres.sh; `make test-postgres` does)"
        );
        return;
    };
    let redis = need_redis!();
    let db = util::fresh_database(&pg).await;
    let with_pg = |db: String| {
        move |c: &mut courier_server::Config| {
            c.history.backend = courier_server::config::HistoryBackend::Postgres;
            c.history.postgres.url = db;
            c.history.postgres.startup_timeout_ms = 5_000;
        }
    };
    let a = instance(&redis, with_pg(db.clone())).await;
    let b = instance(&redis, with_pg(db.clone())).await;
    let token = util::user_with("reader", &["pg.*"], &[]);
    let (mut wa, ca) = a.connect(&token).await;
    let (mut wb, cb) = b.connect(&token).await;
    assert_eq!(ca["epoch"], cb["epoch"], "one epoch: the database's");
    assert_eq!(wa.subscribe(1, "pg.x", None).await["op"], "subscribed");
    assert_eq!(wb.subscribe(1, "pg.x", None).await["op"], "subscribed");
    // Both instances append to one channel at once: offsets interleave across them, and
    // each instance's fan-out sees some offsets out of order (filled from PostgreSQL).
    let svc = service("svc");
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let mut tasks = Vec::new();
    for (k, server) in [a.clone(), b.clone()].into_iter().enumerate() {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100u64 {
                publish_ok(&server, &svc, &ev(&format!("i{k}-{i}"), "pg.x", i)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got_a = expect_events(&mut wa, 1, 200).await;
    let got_b = expect_events(&mut wb, 1, 200).await;
    let ids = |v: &[Value]| {
        v.iter()
            .map(|f| f["event"]["id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&got_a),
        ids(&got_b),
        "both instances deliver the same events"
    );
    // The replay API on either instance reads the same 200, in the same order.
    let (status, page) = paging::get(&b, Some(&token), "pg.x", "limit=1000").await;
    assert_eq!((status, page["latest"].as_u64()), (200, Some(200)));
    let events = page["events"].as_array().unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e["event"]["id"].clone())
            .collect::<Vec<_>>(),
        ids(&got_a)
    );
    drop((wa, wb));
    for s in [a, b] {
        let s = std::sync::Arc::into_inner(s).unwrap();
        kill(s).await;
    }
}

/// The batch cases (`api.rs` runs them in memory) on one instance on Redis, at the default
/// settings (rate limits on).
mod batches_on_redis {
    use super::*;

    batch_tests!({
        let redis = need_redis!();
        let server = instance(&redis, |_| {}).await;
        (redis, server)
    });
}

/// The batch cases on one instance on a three-master cluster, at the default settings.
mod batches_on_cluster {
    use super::*;

    batch_tests!({
        let cluster = need_cluster!();
        let server = instance(&cluster, |_| {}).await;
        (cluster, server)
    });
}

/// The `courier_history_epoch_changes_total` sample of `/metrics`.
async fn epoch_changes_metric(server: &Server) -> u64 {
    let text = server.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("courier_history_epoch_changes_total "))
        .expect("the epoch-change counter is exported")
        .parse()
        .unwrap()
}

/// Publishes a batch until no event is refused for Redis being away; returns the results.
async fn publish_batch_retrying(server: &Server, token: &str, events: &[Value]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let r = server
            .post("/publish/batch", Some(token), &json!({ "events": events }))
            .await;
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            let results = v["results"].as_array().unwrap().clone();
            if results.iter().all(|r| r["error"]["code"] != "UNAVAILABLE") {
                return results;
            }
        } else {
            assert_eq!(r.status(), 503);
        }
        assert!(tokio::time::Instant::now() < deadline, "Redis never back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_aof_always_ids_acknowledged_before_a_kill_9_stay_duplicates() {
    let mut redis = need_redis!();
    let a = instance(&redis, |_| {}).await;
    let svc = service("svc");
    // Five single publishes and a batch of five, with ids, over two channels.
    let singles: Vec<Value> = (0..5).map(|i| ev(&format!("s{i}"), "global", i)).collect();
    let batch: Vec<Value> = (0..5)
        .map(|i| {
            ev(
                &format!("b{i}"),
                if i % 2 == 0 { "global" } else { "other" },
                i,
            )
        })
        .collect();
    let mut first = Vec::new();
    for e in &singles {
        first.push(publish_ok(&a, &svc, e).await);
    }
    let first_batch = publish_batch_retrying(&a, &svc, &batch).await;
    let epoch = first[0]["epoch"].as_str().unwrap().to_owned();
    // SIGKILL: only the AOF (fsynced before every answer) survives.
    redis.kill();
    redis.spawn().await;
    // The same ids again: every one a duplicate with its first position.
    for (e, was) in singles.iter().zip(&first) {
        let again = publish_retrying(&a, &svc, e).await;
        assert_eq!(again["duplicate"], true, "{again}");
        assert_eq!(
            (&again["epoch"], &again["offset"]),
            (&was["epoch"], &was["offset"])
        );
    }
    let again = publish_batch_retrying(&a, &svc, &batch).await;
    for (r, was) in again.iter().zip(&first_batch) {
        assert_eq!(r["status"], "duplicate", "{r}");
        assert_eq!((&r["epoch"], &r["offset"]), (&was["epoch"], &was["offset"]));
    }
    // History intact: a resume from the start of the epoch replays all of it, once.
    let (mut ws, _) = a.connect(&user("u")).await;
    let f = ws
        .subscribe(1, "global", Some(json!({"epoch": epoch, "offset": 0})))
        .await;
    assert_eq!(
        (f["recovered"].as_bool(), f["epoch"].as_str()),
        (Some(true), Some(epoch.as_str())),
        "{f}"
    );
    let ids: Vec<String> = expect_events(&mut ws, 1, 8)
        .await
        .iter()
        .map(|f| f["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["s0", "s1", "s2", "s3", "s4", "b0", "b2", "b4"]);
    // Nothing was lost, and /health and /metrics say so.
    let h: Value = a.get("/health").await.json().await.unwrap();
    assert_eq!(
        (
            h["components"]["redis"]["status"].as_str(),
            h["components"]["redis"]["epoch_changes"].as_u64()
        ),
        (Some("reachable"), Some(0)),
        "{h}"
    );
    assert_eq!(epoch_changes_metric(&a).await, 0);
    a.shutdown().await;
}

#[tokio::test]
async fn without_persistence_a_restart_loses_ids_and_health_and_metrics_say_so() {
    let mut redis = need_redis!();
    let a = instance(&redis, |_| {}).await;
    let b = instance(&redis, |_| {}).await;
    let svc = service("svc");
    let was = publish_ok(&a, &svc, &ev("k1", "global", 1)).await;
    assert_eq!(epoch_changes_metric(&a).await, 0);
    // Redis comes back empty, as one without persistence does.
    redis.restart_empty().await;
    // The documented loss: the id is accepted again, as new, in a new epoch.
    let again = publish_retrying(&a, &svc, &ev("k1", "global", 1)).await;
    assert_eq!(again["duplicate"], false, "{again}");
    assert_ne!(again["epoch"], was["epoch"]);
    // Both instances tell: the one that published at once, the other at its next read.
    for server in [&a, &b] {
        let deadline = tokio::time::Instant::now() + STEP;
        let h = loop {
            let h: Value = server.get("/health").await.json().await.unwrap();
            if h["components"]["redis"]["status"] == "data_lost" {
                break h;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reported: {h}"
            );
            // A read of the channel is what shows the other instance the new epoch.
            let (mut ws, _) = server.connect(&user("u")).await;
            ws.subscribe(1, "global", None).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let r = &h["components"]["redis"];
        assert_eq!(
            (h["status"].as_str(), r["level"].as_str()),
            (Some("degraded"), Some("degraded")),
            "{h}"
        );
        // The deployment's epoch changed, and the channel's for the one that published.
        let changes = r["epoch_changes"].as_u64().unwrap();
        assert!((1..=2).contains(&changes), "{h}");
        assert!(r["data_lost_at_ms"].as_u64().is_some(), "{h}");
        assert_eq!(epoch_changes_metric(server).await, changes);
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Five rounds of a batch of ten over `one` and `two`, then a single to `one`, ids
/// `{name}-{round}-{i}` (`s` for the single).
async fn publish_rounds(name: &str, via: &Server, svc: &str) {
    for round in 0..5 {
        let events: Vec<Value> = (0..10)
            .map(|i| {
                let ch = if i % 3 == 0 { "two" } else { "one" };
                ev(&format!("{name}-{round}-{i}"), ch, i)
            })
            .collect();
        let results = publish_batch_retrying(via, svc, &events).await;
        assert!(
            results.iter().all(|r| r["status"] == "accepted"),
            "{results:?}"
        );
        publish_ok(via, svc, &ev(&format!("{name}-{round}-s"), "one", 0)).await;
    }
}

async fn batches_over_several_channels_reach_every_instance_once_in_order(redis: &impl Deployment) {
    let (a, b) = (instance(redis, |_| {}).await, instance(redis, |_| {}).await);
    let svc = service("svc");
    let reader = util::user_with("u", &["one", "two"], &[]);
    // Subscribers of both channels on both instances.
    let mut sockets = Vec::new();
    for server in [&a, &b] {
        for channel in ["one", "two"] {
            let (mut ws, _) = server.connect(&reader).await;
            assert_eq!(ws.subscribe(1, channel, None).await["op"], "subscribed");
            sockets.push((channel, ws));
        }
    }
    // Batches mixing the two channels, from both instances at once, with singles between.
    tokio::join!(publish_rounds("a", &a, &svc), publish_rounds("b", &b, &svc));
    // "one" got 2 × 5 × (6 + 1) events, "two" 2 × 5 × 4.
    let mut seen: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for (channel, ws) in &mut sockets {
        let n = if *channel == "one" { 70 } else { 40 };
        let ids: Vec<String> = expect_events(ws, 1, n)
            .await
            .iter()
            .map(|f| f["event"]["id"].as_str().unwrap().to_owned())
            .collect();
        // Both instances deliver the same sequence.
        match seen.get(channel) {
            Some(first) => assert_eq!(first, &ids, "{channel}"),
            None => {
                // Each publisher's events keep its order within the channel.
                for p in ["a-", "b-"] {
                    let mine: Vec<&String> = ids.iter().filter(|i| i.starts_with(p)).collect();
                    let mut sorted = mine.clone();
                    sorted.sort_by_key(|i| {
                        let mut parts = i.split('-').skip(1);
                        let round: u32 = parts.next().unwrap().parse().unwrap();
                        let i: u32 = parts.next().unwrap().parse().unwrap_or(99);
                        (round, i)
                    });
                    assert_eq!(mine, sorted, "{channel}");
                }
                seen.insert(channel, ids);
            }
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_channel_redis_refuses_rejects_its_events_alone_and_leaves_their_ids_free() {
    let redis = need_redis!();
    let a = instance(&redis, |_| {}).await;
    let svc = service("svc");
    // A channel whose offset counter Redis cannot increment (as a damaged key would be).
    assert_eq!(
        redis
            .command("SET courier:seq:{c:broken} not-a-number")
            .await,
        "+OK"
    );
    let events = [
        ev("f1", "fine", 1),
        ev("x1", "broken", 2),
        ev("f2", "fine", 3),
        ev("x2", "broken", 4),
    ];
    let r = a
        .post("/publish/batch", Some(&svc), &json!({ "events": events }))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let res = v["results"].as_array().unwrap();
    let got: Vec<(&str, Option<u64>, Option<&str>)> = res
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap(),
                r["offset"].as_u64(),
                r["error"]["code"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("accepted", Some(1), None),
            ("rejected", None, Some("UNAVAILABLE")),
            ("accepted", Some(2), None),
            ("rejected", None, Some("UNAVAILABLE")),
        ]
    );
    // Repaired, the refused ids publish as new events, not duplicates.
    assert_eq!(redis.command("DEL courier:seq:{c:broken}").await, ":1");
    let again = publish_batch_retrying(&a, &svc, &events).await;
    let statuses: Vec<(&str, Option<u64>)> = again
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["offset"].as_u64()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("duplicate", Some(1)),
            ("accepted", Some(1)),
            ("duplicate", Some(2)),
            ("accepted", Some(2)),
        ]
    );
    a.shutdown().await;
}

async fn the_history_contract_holds(redis: &impl Deployment) {
    let a = instance(redis, |c| c.history.max_events_per_channel = 3).await;
    contract::holds(&*a.state().history).await;
    kill(a).await;
}

on_redis_and_cluster!(
    fan_out_reaches_every_instance_in_order,
    subscriber_resumes_on_another_instance_and_after_restarting_all,
    rate_limit_holds_across_instances,
    buckets_are_shared_by_instances_and_charged_per_accepted_event,
    one_id_on_two_instances_is_delivered_once,
    per_user_connection_limit_spans_instances_and_forgets_dead_ones,
    batches_over_several_channels_reach_every_instance_once_in_order,
    history_older_than_held_replays_from_the_oldest_after_restarting_all,
    foreign_epoch_replay_meets_live_publishes_without_holes_or_duplicates,
    replay_api_since_and_count_trim,
    the_history_contract_holds,
    a_node_killed_mid_stream_and_restarted_loses_nothing_acknowledged,
);

/// The harness alone, without a server: the cluster forms; while a master is down the
/// others keep serving their slots; restarted, it rejoins with its slots and, from its AOF,
/// its data.
#[tokio::test]
async fn cluster_harness_a_killed_master_rejoins_with_its_slots_and_data() {
    let mut cluster = need_cluster!();
    let mut slots = Vec::new();
    let mut keys = Vec::new();
    for i in 0..MASTERS {
        let mine = cluster.slots_of(i).await;
        assert!(!mine.is_empty(), "master {i} serves no slot");
        // One key on each master: the first `k{n}` in a slot it serves.
        let mut n = 0;
        let key = loop {
            let key = format!("k{n}");
            let slot: u16 = cluster.masters[i]
                .query(&["CLUSTER", "KEYSLOT", &key])
                .await
                .unwrap();
            if mine.iter().any(|&(a, b)| (a..=b).contains(&slot)) {
                break key;
            }
            n += 1;
        };
        let ok: String = cluster.masters[i]
            .query(&["SET", &key, &format!("v{i}")])
            .await
            .unwrap();
        assert_eq!(ok, "OK");
        slots.push(mine);
        keys.push(key);
    }
    let total: u32 = slots
        .iter()
        .flatten()
        .map(|&(a, b)| u32::from(b - a) + 1)
        .sum();
    assert_eq!(total, 16_384, "{slots:?}");
    cluster.kill_master(1);
    assert!(
        cluster.masters[1].query::<String>(&["PING"]).await.is_err(),
        "master 1 is down"
    );
    // The others mark it failed and stay ok (full coverage not required) ...
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let info: String = cluster.masters[0]
            .query(&["CLUSTER", "INFO"])
            .await
            .unwrap();
        if info.contains("cluster_state:ok") && !info.contains("cluster_slots_fail:0\r") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "master 1 never marked failed: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and serve their slots, reads and writes; master 1's slots are its own alone.
    for i in [0, 2] {
        let v: String = cluster.masters[i].query(&["GET", &keys[i]]).await.unwrap();
        assert_eq!(v, format!("v{i}"));
        let ok: String = cluster.masters[i]
            .query(&["SET", &keys[i], "again"])
            .await
            .unwrap();
        assert_eq!(ok, "OK");
    }
    let moved = cluster.masters[0]
        .query::<String>(&["GET", &keys[1]])
        .await
        .unwrap_err();
    let to = format!("127.0.0.1:{}", cluster.masters[1].port);
    assert_eq!(
        moved.redirect_node().map(|(node, _)| node),
        Some(to.as_str()),
        "{moved}"
    );
    cluster.restart_master(1).await;
    assert_eq!(cluster.slots_of(1).await, slots[1]);
    let v: String = cluster.masters[1].query(&["GET", &keys[1]]).await.unwrap();
    assert_eq!(v, "v1");
}

/// Channels of the mid-stream test. Whatever the server's key layout, 16 channel names all
/// miss a given master's slots with a chance of (2/3)^16 < 0.2 % (a fixed layout and fixed
/// names make it the same every run); the test checks that the killed master held some:
/// publishes to it were refused while it was down.
const SPREAD: usize = 16;

/// What one subscriber saw.
#[derive(Default)]
struct Followed {
    /// Per channel, `(offset, event id)` in arrival order.
    events: BTreeMap<String, Vec<(u64, String)>>,
    /// Breaches of the resume promise: a resume not recovered, an epoch changing, an offset
    /// not right after the last one, an unexpected frame.
    faults: Vec<String>,
    /// Connections that ended (each followed by a new one).
    reconnects: usize,
    /// Subscriptions refused (then retried).
    refusals: usize,
    /// Errors about the connection (before the server closes it; the subscriber reconnects).
    notices: Vec<Value>,
}

/// Opens `/ws` and connects, retrying (as an SDK does) while the server refuses.
async fn connect_retrying(server: &Server, token: &str) -> Ws {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let mut ws = server.open("/ws").await;
        ws.send(json!({"op": "connect", "token": token})).await;
        match ws.next().await {
            Ok(f) if f["op"] == "connected" => return ws,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "never connected: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows `channels` on `server` as an SDK does: subscribes to each from its live head
/// (counting them in `ready`), and when the connection ends or a subscription is refused,
/// subscribes again with `since` its last `(epoch, offset)`. Returns once it holds, on
/// every channel, the offset `target` names (set when publishing is over).
async fn follow(
    server: &Server,
    token: &str,
    channels: &[String],
    ready: &Cell<usize>,
    target: &RefCell<Option<BTreeMap<String, u64>>>,
) -> Followed {
    use futures_util::{SinkExt, StreamExt};
    use tokio::time::Instant;
    use tokio_tungstenite::tungstenite::Message;
    // Whole run, and catching up once publishing is over.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut catch_up: Option<Instant> = None;
    let mut got = Followed::default();
    // Per channel, the epoch and the last offset delivered.
    let mut at: BTreeMap<String, (String, u64)> = BTreeMap::new();
    loop {
        let mut ws = connect_retrying(server, token).await;
        // (channel index, when to subscribe)
        let mut due: Vec<(usize, Instant)> =
            (0..channels.len()).map(|i| (i, Instant::now())).collect();
        loop {
            let caught_up = target.borrow().as_ref().is_some_and(|t| {
                t.iter()
                    .all(|(ch, &o)| at.get(ch).is_some_and(|&(_, last)| last >= o))
            });
            if caught_up {
                return got;
            }
            if target.borrow().is_some() {
                catch_up.get_or_insert_with(|| Instant::now() + STEP);
            }
            assert!(
                Instant::now() < deadline && catch_up.is_none_or(|t| Instant::now() < t),
                "not caught up; at {at:?}, target {:?}; faults so far {:?}",
                target.borrow(),
                got.faults
            );
            let now = Instant::now();
            let (send, wait): (Vec<_>, Vec<_>) = due.into_iter().partition(|&(_, t)| t <= now);
            due = wait;
            let mut dropped = false;
            for (i, _) in send {
                let ch = &channels[i];
                let mut f = json!({"op": "subscribe", "id": i + 1, "channel": ch});
                if let Some((epoch, offset)) = at.get(ch) {
                    f["since"] = json!({"epoch": epoch, "offset": offset});
                }
                dropped |=
                    ws.s.send(Message::Text(f.to_string().into()))
                        .await
                        .is_err();
            }
            if dropped {
                break;
            }
            let msg = tokio::select! {
                m = ws.s.next() => m,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            };
            let f: Value = serde_json::from_str(&text).unwrap();
            match f["op"].as_str().unwrap_or_default() {
                "ping" => {
                    let pong = Message::Text(json!({"op": "pong"}).to_string().into());
                    if ws.s.send(pong).await.is_err() {
                        break;
                    }
                }
                "subscribed" => {
                    let ch = f["channel"].as_str().unwrap().to_owned();
                    let epoch = f["epoch"].as_str().unwrap().to_owned();
                    match at.get(&ch) {
                        None => {
                            at.insert(ch, (epoch, f["offset"].as_u64().unwrap()));
                            ready.set(ready.get() + 1);
                        }
                        Some((was, last)) => {
                            let resumed = (
                                f["recovered"].as_bool(),
                                f["epoch"].as_str(),
                                f["replay_from"].as_u64(),
                            );
                            if resumed != (Some(true), Some(was.as_str()), Some(last + 1)) {
                                got.faults.push(format!("resume after {last}: {f}"));
                            }
                        }
                    }
                }
                "event" => {
                    let ch = f["event"]["channel"].as_str().unwrap().to_owned();
                    let offset = f["offset"].as_u64().unwrap();
                    let Some((epoch, last)) = at.get_mut(&ch) else {
                        got.faults.push(format!("event before subscribed: {f}"));
                        continue;
                    };
                    if f["epoch"] != epoch.as_str() || offset != *last + 1 {
                        got.faults.push(format!("after {epoch}/{last}: {f}"));
                    }
                    *last = offset.max(*last);
                    let id = f["event"]["id"].as_str().unwrap().to_owned();
                    got.events.entry(ch).or_default().push((offset, id));
                }
                "error" if f["id"].is_u64() => {
                    // A refused subscription: again after the delay the server asks for.
                    got.refusals += 1;
                    let i = f["id"].as_u64().unwrap() as usize - 1;
                    let wait = f["retry_after_ms"].as_u64().unwrap_or(200);
                    due.push((i, Instant::now() + Duration::from_millis(wait)));
                }
                "error" => got.notices.push(f),
                _ => got.faults.push(format!("unexpected: {f}")),
            }
        }
        got.reconnects += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes a steady stream to `channel`, one event every 100 ms with ids, alternating
/// between `via`'s instances; each until acknowledged (same id), waiting out the
/// `Retry-After` of every 503 (counted per channel in `refused`). Stops five events after
/// `restarted`.
async fn stream_to(
    channel: &str,
    via: [&Server; 2],
    token: &str,
    restarted: &Cell<bool>,
    refused: &RefCell<BTreeMap<String, usize>>,
    acked: &RefCell<BTreeMap<String, Vec<(u64, String)>>>,
) {
    let mut after = 0;
    for k in 0u64.. {
        let id = format!("{channel}:{k}");
        let body = ev(&id, channel, k);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let offset = loop {
            let r = via[k as usize % 2]
                .post("/publish", Some(token), &body)
                .await;
            match r.status().as_u16() {
                200 => break r.json::<Value>().await.unwrap()["offset"].as_u64().unwrap(),
                503 => {
                    *refused.borrow_mut().entry(channel.to_owned()).or_default() += 1;
                    let secs: u64 = r
                        .headers()
                        .get("retry-after")
                        .expect("a 503 says when to retry")
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{id}: refused for 30 s"
                    );
                    tokio::time::sleep(Duration::from_secs(secs).max(Duration::from_millis(50)))
                        .await;
                }
                s => panic!("{id}: unexpected {s}: {}", r.text().await.unwrap()),
            }
        };
        acked
            .borrow_mut()
            .entry(channel.to_owned())
            .or_default()
            .push((offset, id));
        if restarted.get() {
            after += 1;
            if after == 5 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two instances, a subscriber of every channel on each, a steady stream of publishes with
/// ids over [`SPREAD`] channels; one node is killed mid-stream and restarted. Publishers
/// retry as the SDKs do, subscribers resume with `since`: each subscriber gets every
/// acknowledged event once, in offset order. (On one Redis every channel stops while it is
/// down; on the cluster only those in master 1's slots.)
async fn a_node_killed_mid_stream_and_restarted_loses_nothing_acknowledged(
    redis: &mut impl Deployment,
) {
    let a = instance(&*redis, |_| {}).await;
    let b = instance(&*redis, |_| {}).await;
    let svc = service("svc");
    let channels: Vec<String> = (0..SPREAD).map(|i| format!("spread.{i}")).collect();
    let readers = [
        util::user_with("reader-a", &["spread.*"], &[]),
        util::user_with("reader-b", &["spread.*"], &[]),
    ];
    let ready = [Cell::new(0), Cell::new(0)];
    let target = RefCell::new(None);
    let (restarted, refused) = (Cell::new(false), RefCell::new(BTreeMap::new()));
    let refusals = || refused.borrow().values().sum::<usize>();
    let acked = RefCell::new(BTreeMap::new());
    let acked_count = || acked.borrow().values().map(Vec::len).sum::<usize>();
    let run = async {
        let deadline = tokio::time::Instant::now() + STEP;
        while ready.iter().any(|r| r.get() < SPREAD) {
            assert!(tokio::time::Instant::now() < deadline, "never subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let publish = futures_util::future::join_all(
            channels
                .iter()
                .map(|ch| stream_to(ch, [&a, &b], &svc, &restarted, &refused, &acked)),
        );
        let control = async {
            // Mid-stream: after about five events per channel.
            while acked_count() < 5 * SPREAD {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            redis.kill_one();
            let killed = tokio::time::Instant::now();
            // Down past the cluster's node timeout, and until publishes to it were refused.
            while refusals() == 0 || killed.elapsed() < Duration::from_millis(1_500) {
                assert!(
                    killed.elapsed() < Duration::from_secs(15),
                    "no publish refused in 15 s with a node down"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!(
                "node down {:?}; {} refusals; restarting",
                killed.elapsed(),
                refusals()
            );
            redis.restart_one().await;
            eprintln!("node back after {:?}", killed.elapsed());
            restarted.set(true);
        };
        tokio::join!(publish, control);
        let last = acked
            .borrow()
            .iter()
            .map(|(ch, events)| (ch.clone(), events.last().unwrap().0))
            .collect();
        *target.borrow_mut() = Some(last);
    };
    let (on_a, on_b, ()) = tokio::join!(
        follow(&a, &readers[0], &channels, &ready[0], &target),
        follow(&b, &readers[1], &channels, &ready[1], &target),
        run,
    );
    let acked = acked.into_inner();
    assert_eq!(acked.len(), SPREAD);
    for (ch, events) in &acked {
        let offsets: Vec<u64> = events.iter().map(|e| e.0).collect();
        let dense: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(offsets, dense, "{ch}: one offset per acknowledged event");
    }
    for (name, seen) in [("a", on_a), ("b", on_b)] {
        eprintln!(
            "subscriber on {name}: {} reconnects, {} refused subscriptions, errors {:?}",
            seen.reconnects, seen.refusals, seen.notices
        );
        assert!(seen.faults.is_empty(), "on {name}: {:#?}", seen.faults);
        for (ch, events) in &acked {
            assert_eq!(
                seen.events.get(ch),
                Some(events),
                "on {name}, {ch}: every acknowledged event once, in offset order"
            );
        }
    }
    // Every acknowledged id, again: a duplicate at its first offset (AOF kept the claims).
    for (ch, events) in &acked {
        for (k, (offset, id)) in events.iter().enumerate() {
            let r = publish_ok([&a, &b][k % 2], &svc, &ev(id, ch, 0)).await;
            assert_eq!(
                (r["duplicate"].as_bool(), r["offset"].as_u64()),
                (Some(true), Some(*offset)),
                "{id}: {r}"
            );
        }
    }
    eprintln!(
        "{} events acknowledged; publishes refused while a node was down, per channel: {:?}",
        acked.values().map(Vec::len).sum::<usize>(),
        refused.borrow()
    );
    a.shutdown().await;
    b.shutdown().await;
}
