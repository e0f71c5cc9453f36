//! The PostgreSQL history store against a real PostgreSQL (tests/with-postgres.sh starts a
//! throwaway cluster and exports `COURIER_TEST_POSTGRES_URL`; each test makes its own
//! database). `make test-postgres` runs these, the whole API suite with the history in
//! PostgreSQL (`COURIER_TEST_HISTORY=postgres`), and the Redis fan-out test with it.
//! Without the variable each test says so and passes: `cargo test --workspace` has no
//! PostgreSQL.

#[path = "api/util.rs"]
mod util;

#[path = "api/paging.rs"]
mod paging;

#[path = "api/contract.rs"]
mod contract;

use std::sync::Arc;
use std::time::Duration;

use contract::{append, at};
use courier_core::ChannelName;
use courier_server::config::{HistoryBackend, PostgresConfig};
use courier_server::postgres::PostgresHistory;
use courier_server::store::{HistoryStore, MemoryHistory, PageFrom};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use util::{STEP, Server, service, start_with, user_with};

macro_rules! need_postgres {
    () => {
        match util::test_postgres_url() {
            Some(url) => url,
            None => {
                eprintln!("SKIPPED: COURIER_TEST_POSTGRES_URL is not set (run under tests/with-postgres.sh; `make test-postgres` does)");
                return;
            }
        }
    };
}

fn pg_config(url: String) -> PostgresConfig {
    PostgresConfig {
        url,
        startup_timeout_ms: 5_000,
        ..PostgresConfig::default()
    }
}

async fn store(config: &PostgresConfig) -> Arc<PostgresHistory> {
    // The retention task ends with the test's runtime.
    PostgresHistory::connect(config, CancellationToken::new())
        .await
        .unwrap()
}

/// A client on the test database, to look at the tables themselves.
async fn client(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

#[tokio::test]
async fn the_history_contract_holds_for_memory_and_postgres() {
    contract::holds(&MemoryHistory::new(3, Duration::from_secs(60), 10)).await;
    let url = need_postgres!();
    let config = PostgresConfig {
        max_events_per_channel: 3,
        ..pg_config(util::fresh_database(&url).await)
    };
    contract::holds(&*store(&config).await).await;
}

#[tokio::test]
async fn concurrent_appends_from_two_stores_get_dense_offsets() {
    let url = need_postgres!();
    let config = pg_config(util::fresh_database(&url).await);
    let (a, b) = (store(&config).await, store(&config).await);
    assert_eq!(a.epoch(), b.epoch(), "one epoch per database");
    let ch = ChannelName::new("race").unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let h: Arc<dyn HistoryStore> = if i % 2 == 0 { a.clone() } else { b.clone() };
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move { append(&*h, &ch, 100).await }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        // Each writer's own appends come back in increasing order.
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=800).collect::<Vec<_>>());
    let c = client(&config.url).await;
    let row = c
        .query_one("SELECT count(*), min(\"offset\"), max(\"offset\") FROM courier_events WHERE channel = 'race'", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (800, 1, 800)
    );
}

#[tokio::test]
async fn retention_deletes_by_age_and_count_and_offsets_stay_dense() {
    let url = need_postgres!();
    let config = PostgresConfig {
        max_age_secs: 1,
        max_events_per_channel: 10,
        retention_interval_ms: 100,
        ..pg_config(util::fresh_database(&url).await)
    };
    let h = store(&config).await;
    let (old, busy) = (
        ChannelName::new("old").unwrap(),
        ChannelName::new("busy").unwrap(),
    );
    append(&*h, &old, 3).await;
    append(&*h, &busy, 25).await;
    let c = client(&config.url).await;
    let held = |ch: &'static str| {
        let c = &c;
        async move {
            c.query(
                "SELECT \"offset\" FROM courier_events WHERE channel = $1 ORDER BY 1",
                &[&ch],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<Vec<_>>()
        }
    };
    // The task deletes by count within its interval.
    let deadline = tokio::time::Instant::now() + STEP;
    while held("busy").await != (16..=25).collect::<Vec<_>>() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "count retention did not run: {:?}",
            held("busy").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And by age: `old` is past 1 s soon.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    while !held("old").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "age retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Offsets go on where they were: dense, never reused.
    assert_eq!(append(&*h, &old, 2).await, vec![4, 5]);
    assert_eq!(h.latest(&old).await.unwrap().1, 5);
    let p = h.read_page(&old, PageFrom::After(0), 10).await.unwrap();
    assert_eq!(
        p.events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![4, 5]
    );
    // A resume from before the gap is told what was lost.
    let since = at(&h.epoch(), 1);
    let r = h.read_since(&old, &since).await.unwrap();
    assert!(!r.resume_point(&since).recovered);
}

async fn pg_server(url: &str) -> Server {
    let url = url.to_owned();
    start_with(move |c| {
        c.history.backend = HistoryBackend::Postgres;
        c.history.postgres = pg_config(url);
    })
    .await
}

/// Publishes events `r{i}` for `offsets` to `pg.a`, each accepted.
async fn publish(server: &Server, svc: &str, offsets: std::ops::RangeInclusive<u64>) {
    for i in offsets {
        let r = server
            .post(
                "/publish",
                Some(svc),
                &util::event(&format!("r{i}"), "pg.a", i),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn resume_across_a_server_restart_loses_nothing_and_keeps_the_epoch() {
    let url = need_postgres!();
    let db = util::fresh_database(&url).await;
    let server = pg_server(&db).await;
    let svc = service("svc");
    let token = user_with("reader", &["pg.*"], &[]);
    let (mut ws, connected) = server.connect(&token).await;
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    assert_eq!(ws.subscribe(1, "pg.a", None).await["op"], "subscribed");
    publish(&server, &svc, 1..=3).await;
    for i in 1..=3u64 {
        let f = ws.recv().await;
        assert_eq!(
            (f["op"].as_str(), f["offset"].as_u64()),
            (Some("event"), Some(i)),
            "{f}"
        );
    }
    // Two more that the subscriber never sees: it is gone, then the server restarts.
    publish(&server, &svc, 4..=5).await;
    drop(ws);
    server.shutdown().await;
    let server = pg_server(&db).await;
    let (mut ws, connected) = server.connect(&token).await;
    assert_eq!(
        connected["epoch"].as_str(),
        Some(epoch.as_str()),
        "the epoch survives a restart"
    );
    let f = ws
        .subscribe(1, "pg.a", Some(json!({"epoch": epoch, "offset": 3})))
        .await;
    assert_eq!(
        (f["recovered"].as_bool(), f["replay_from"].as_u64()),
        (Some(true), Some(4)),
        "{f}"
    );
    for i in 4..=5u64 {
        let f = ws.recv().await;
        assert_eq!(
            (f["offset"].as_u64(), f["event"]["id"].as_str()),
            (Some(i), Some(format!("r{i}").as_str())),
            "{f}"
        );
    }
    // Live continues at 6; the replay API sees all of it.
    let r = server
        .post("/publish", Some(&svc), &util::event("r6", "pg.a", 6))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(ws.recv().await["offset"], 6);
    let (status, page) = paging::get(&server, Some(&token), "pg.a", "limit=10").await;
    assert_eq!(status, 200);
    let offsets: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=6).collect::<Vec<_>>());
    assert_eq!(page["epoch"], epoch.as_str());
    server.shutdown().await;
}

#[tokio::test]
async fn health_and_readiness_report_postgres() {
    let url = need_postgres!();
    let server = pg_server(&util::fresh_database(&url).await).await;
    let health: serde_json::Value = server.get("/health").await.json().await.unwrap();
    let pg = &health["components"]["postgres"];
    assert_eq!(
        (pg["level"].as_str(), pg["status"].as_str()),
        (Some("healthy"), Some("reachable")),
        "{health}"
    );
    assert!(pg["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(health["components"]["redis"].is_null());
    assert_eq!(server.get("/health/ready").await.status(), 200);
    server.shutdown().await;
}
