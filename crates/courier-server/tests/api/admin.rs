//! The admin API (`/admin/api/*`, admin tokens only) and the console's static files.

use std::time::Duration;

use courier_server::auth::{Claims, Role, sign_hs256};
use courier_server::config::LimitRule;
use serde_json::{Value, json};

use crate::util::*;

fn admin(sub: &str) -> String {
    sign_hs256(
        SECRET,
        &Claims {
            role: Role::Admin,
            ..claims(sub)
        },
    )
}

impl Server {
    async fn admin_json(&self, path: &str) -> Value {
        let r = self.get_as(path, Some(&admin("ops"))).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// Polls `path` until `ok` holds of its answer (the registry follows the sockets).
    async fn admin_until(&self, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let v = self.admin_json(path).await;
            if ok(&v) {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "{path}: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn the_admin_api_refuses_every_token_but_an_admin_one() {
    let server = start().await;
    for path in [
        "/admin/api/connections",
        "/admin/api/channels",
        "/admin/api/rate-limits",
    ] {
        let r = server.get_as(path, None).await;
        assert_eq!(r.status(), 401, "{path}");
        for (role, token) in [("user", user("u1")), ("service", service("svc"))] {
            let r = server.get_as(path, Some(&token)).await;
            assert_eq!(r.status(), 403, "{path} {role}");
            let body: Value = r.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("role `admin`") && message.contains(&format!("`{role}`")),
                "{message}"
            );
        }
        assert_eq!(server.get_as(path, Some(&admin("ops"))).await.status(), 200);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_admin_token_reads_and_publishes_anywhere() {
    let server = start().await;
    let token = admin("ops");
    let (mut ws, _) = server.connect(&token).await;
    let f = ws.subscribe(1, "user.someone-else", None).await;
    assert_eq!(f["op"], "subscribed", "{f}");
    let r = server
        .post("/publish", Some(&token), &event("", "user.someone-else", 1))
        .await;
    assert_eq!(r.status(), 200);
    let f = ws.recv().await;
    assert_eq!(f["op"], "event", "{f}");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_are_listed_with_their_client_and_channels_until_they_close() {
    let server = start().await;
    let path = "/admin/api/connections";
    let before = server.admin_json(path).await;
    assert_eq!(before["total"], 0, "{before}");
    let (mut ws, connected) = server.connect(&user("u1")).await;
    assert_eq!(ws.subscribe(1, "global", None).await["op"], "subscribed");
    let v = server
        .admin_until(path, |v| {
            v["connections"][0]["channels"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        })
        .await;
    let c = &v["connections"][0];
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(c["user"], "u1");
    assert_eq!(c["role"], "user");
    assert_eq!(c["client"], "test/0");
    assert_eq!(c["session"], connected["session"]);
    assert_eq!(c["channels"], json!(["global"]));
    assert_eq!(v["users"], json!({"u1": 1}));
    assert_eq!(v["channels"], json!({"global": 1}));
    // Unsubscribing leaves the connection listed without the channel.
    ws.send(json!({"op": "unsubscribe", "id": 2, "channel": "global"}))
        .await;
    assert_eq!(ws.recv().await["op"], "unsubscribed");
    let v = server
        .admin_until(path, |v| v["connections"][0]["channels"] == json!([]))
        .await;
    assert_eq!(v["total"], 1);
    drop(ws);
    server.admin_until(path, |v| v["total"] == 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn channels_report_their_subscribers_and_event_rates() {
    let server = start().await;
    let (mut ws, _) = server.connect(&user("u1")).await;
    assert_eq!(ws.subscribe(1, "global", None).await["op"], "subscribed");
    let svc = service("svc");
    for n in 0..5 {
        let r = server
            .post("/publish", Some(&svc), &event("", "backtest.b1", n))
            .await;
        assert_eq!(r.status(), 200);
    }
    let v = server.admin_json("/admin/api/channels").await;
    let channels = v["channels"].as_array().unwrap();
    let find = |name: &str| {
        channels
            .iter()
            .find(|c| c["channel"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {v}"))
    };
    let b1 = find("backtest.b1");
    assert_eq!(b1["events"], 5);
    assert_eq!(b1["subscribers"], 0);
    assert!(b1["last_event_ms"].as_u64().unwrap() > 0);
    let global = find("global");
    assert_eq!(global["subscribers"], 1);
    assert_eq!(global["events"], 0);
    assert!(global["last_event_ms"].is_null());
    // Busiest first: the channel with events leads.
    assert_eq!(channels[0]["channel"], "backtest.b1", "{v}");
    // The rates count whole past seconds: once the seconds of the 5 events are over (at
    // most ~2 s), the 10 s rate is 5 / 10 (and not more).
    server
        .admin_until("/admin/api/channels", |v| {
            let rate = v["channels"][0]["rate_10s"].as_f64().unwrap();
            assert!(rate <= 0.5, "{v}");
            rate == 0.5
        })
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limit_decisions_of_the_last_minutes_are_reported() {
    let server = start_with(|c| {
        c.rate_limits.types.insert(
            "deposit".into(),
            LimitRule {
                limit: 2,
                window_secs: 60,
                ..LimitRule::default()
            },
        );
    })
    .await;
    let alice = user_with("alice", &[], &["global"]);
    let ev = json!({"type": "deposit.made", "channel": "global", "data": {}});
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..4 {
        match server.post("/publish", Some(&alice), &ev).await.status() {
            s if s == 200 => accepted += 1,
            s if s == 429 => refused += 1,
            s => panic!("{s}"),
        }
    }
    assert_eq!((accepted, refused), (2, 2));
    let v = server.admin_json("/admin/api/rate-limits").await;
    assert_eq!(v["enabled"], true);
    assert_eq!(v["window_secs"], 600);
    assert_eq!(v["kept"], 1000);
    let refusals = v["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 2, "{v}");
    for r in refusals {
        assert_eq!(r["user"], "alice");
        assert_eq!(r["tier"], "standard");
        assert_eq!(r["channel"], "global");
        assert_eq!(r["type"], "deposit.made");
        assert_eq!(r["bucket"], "type:deposit");
        assert_eq!(r["shadow"], false);
        assert!(r["retry_after_ms"].as_u64().unwrap() >= 1, "{r}");
    }
    // Newest first.
    assert!(refusals[0]["at_ms"].as_u64() >= refusals[1]["at_ms"].as_u64());
    let sum = |bucket: &str, field: &str| -> u64 {
        v["minutes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["bucket"] == bucket)
            .map(|m| m[field].as_u64().unwrap())
            .sum()
    };
    // A refused event is charged nothing, but each bucket's decision is reported.
    assert_eq!(sum("type:deposit", "allowed"), 2, "{v}");
    assert_eq!(sum("type:deposit", "blocked"), 2, "{v}");
    assert_eq!(sum("user", "allowed"), 4, "{v}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_console_is_served_from_its_folder_or_explained_when_not_built() {
    let dir = std::env::temp_dir().join(format!("courier-console-{}", std::process::id()));
    let missing = dir.join("missing");
    let server = start_with(|c| c.admin.console_dir = missing.display().to_string()).await;
    // A person opening /admin is told what to run; a script's file is a JSON 404 saying so.
    let r = server.get("/admin").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("run `make console`"));
    let r = server.get("/admin/assets/console.js").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("make console"), "{message}");
    server.shutdown().await;

    let built = dir.join("built");
    std::fs::create_dir_all(built.join("assets/wasm")).unwrap();
    std::fs::write(
        built.join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .unwrap();
    std::fs::write(built.join("assets/console.js"), "export {};").unwrap();
    std::fs::write(built.join("assets/wasm/courier_wasm_bg.wasm"), b"\0asm").unwrap();
    std::fs::write(dir.join("secret.txt"), "no").unwrap();
    let server = start_with(|c| c.admin.console_dir = built.display().to_string()).await;
    let r = server.get("/admin").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("<title>console</title>"));
    let r = server.get("/admin/assets/console.js").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    let r = server.get("/admin/assets/wasm/courier_wasm_bg.wasm").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/wasm");
    for path in [
        "/admin/assets/nope.js",
        "/admin/assets/../../secret.txt",
        "/admin/assets/%2e%2e/%2e%2e/secret.txt",
    ] {
        let r = server.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
