//! The Rust client of the cross-language end-to-end suite (`tests/e2e/`).
//!
//! ```text
//! e2e_client chaos SCENARIO NAME URL TOKEN OUT.jsonl   # a scenario's role (any scenario)
//! e2e_client storm SCENARIO URL TOKEN OUT.jsonl        # N subscribers, one connection each
//! ```
//!
//! Both read `go` / `stop` lines on stdin and print `ready`, `published`, `done` on stdout;
//! every event, gap, acknowledgement, dead letter and connection state goes to OUT as JSONL.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier_client::{Client, ClientConfig, ClientEvent, StaticToken, SubscriptionItem};
use courier_core::backoff::BackoffConfig;
use courier_core::client::EventOptions;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

type Out = Arc<Mutex<BufWriter<File>>>;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn write(out: &Out, rec: &Value) {
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = serde_json::to_writer(&mut *w, rec);
    let _ = w.write_all(b"\n");
}

fn say(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}

fn backoff(v: &Value) -> BackoffConfig {
    let ms = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("backoff.{k} missing"))
    };
    BackoffConfig {
        min_delay_ms: ms("min_delay_ms"),
        base_delay_ms: ms("base_delay_ms"),
        max_delay_ms: ms("max_delay_ms"),
        ..BackoffConfig::default()
    }
}

fn pos(p: Option<&courier_core::StreamPosition>) -> Value {
    p.map_or(
        Value::Null,
        |p| json!({"epoch": p.epoch, "offset": p.offset}),
    )
}

/// Watches stdin: the returned receiver holds the last command (`go`, `stop`).
fn control() -> watch::Receiver<String> {
    let (tx, rx) = watch::channel(String::new());
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line.trim().to_owned());
        }
    });
    rx
}

async fn wait_for(rx: &mut watch::Receiver<String>, what: &str) {
    rx.wait_for(|c| c == what)
        .await
        .expect("stdin closed before the command");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: e2e_client chaos SCENARIO NAME URL TOKEN OUT | storm SCENARIO URL TOKEN OUT";
    let scenario: Value = serde_json::from_str(
        &std::fs::read_to_string(args.get(2).expect(usage)).expect("read the scenario"),
    )
    .expect("scenario JSON");
    match args.get(1).map(String::as_str) {
        Some("chaos") if args.len() == 7 => {
            chaos(&scenario, &args[3], &args[4], &args[5], &args[6]).await;
        }
        Some("storm") if args.len() == 6 => storm(&scenario, &args[3], &args[4], &args[5]).await,
        _ => panic!("{usage}"),
    }
}

async fn chaos(scenario: &Value, name: &str, url: &str, token: &str, out_path: &str) {
    let out: Out = Arc::new(Mutex::new(BufWriter::new(
        File::create(out_path).expect("create the output"),
    )));
    let mut ctl = control();
    let opts = &scenario["client_options"];
    let mut config = ClientConfig::new(url).service_name(format!("e2e-{name}"));
    config.core.connection.backoff = backoff(&opts["backoff"]);
    config.core.queue.backoff = backoff(&opts["backoff"]);
    config.core.queue.max_in_flight =
        opts["max_in_flight"].as_u64().expect("max_in_flight") as usize;
    config.core.queue.max_attempts = opts["max_attempts"].as_u64().expect("max_attempts") as u32;
    config.core.queue.max_batch_events = opts["max_batch_events"].as_u64().expect("batch") as usize;
    config.core.queue.max_queued = 100_000;
    let o = out.clone();
    let config = config.listener(move |ev| {
        if let ClientEvent::State(s) = ev {
            write(&o, &json!({"k": "state", "state": s, "t": now_ms()}));
        }
    });
    let client = Client::new(config, Arc::new(StaticToken(token.into()))).expect("client");
    let channels: Vec<String> = scenario["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| c.as_str().expect("channel").to_owned())
        .collect();
    let (activity_tx, activity) = watch::channel(tokio::time::Instant::now());
    let activity_tx = Arc::new(activity_tx);
    let mut readers = Vec::new();
    for ch in &channels {
        let mut sub = client.subscribe(ch, None).expect("subscribe");
        tokio::time::timeout(Duration::from_secs(20), sub.ready())
            .await
            .expect("subscribed within 20 s")
            .expect("subscribed");
        let o = out.clone();
        let act = activity_tx.clone();
        let ch = ch.clone();
        readers.push(tokio::spawn(async move {
            while let Some(item) = sub.next().await {
                match item {
                    SubscriptionItem::Event(d) => {
                        write(&o, &json!({"k": "event", "ch": d.event.channel.as_str(), "epoch": d.epoch, "offset": d.offset, "id": d.event.id}));
                    }
                    SubscriptionItem::Gap { last, position, reason } => {
                        write(&o, &json!({"k": "gap", "ch": ch, "reason": reason, "last": pos(last.as_ref()), "pos": pos(Some(&position))}));
                    }
                    SubscriptionItem::Ended(_) => break,
                    _ => continue,
                }
                let _ = act.send(tokio::time::Instant::now());
            }
        }));
    }
    say("ready");
    wait_for(&mut ctl, "go").await;

    // The orchestrator resolved the scenario's streams into ticks of
    // `{at_ms, events: [[seq, channel, type], ...]}` (tests/e2e/harness.py).
    let schedule = scenario["schedule"].as_array().expect("schedule");
    let start = tokio::time::Instant::now();
    let publisher = client.publisher().clone();
    for tick in schedule {
        let at_ms = tick["at_ms"].as_f64().expect("at_ms");
        tokio::time::sleep_until(start + Duration::from_secs_f64(at_ms / 1000.0)).await;
        for e in tick["events"].as_array().expect("events") {
            let seq = e[0].as_u64().expect("seq");
            let ch = e[1].as_str().expect("channel").to_owned();
            let event_type = e[2].as_str().expect("type");
            let id = format!("{name}-{seq}");
            let data = json!({"client": name, "seq": seq}).to_string();
            let item = courier_core::PublishItem {
                channel: ch.clone(),
                event_type: event_type.to_owned(),
                data_json: data,
                event: EventOptions {
                    idempotency_key: Some(id.clone()),
                    metadata: None,
                },
                options: Default::default(),
            };
            let o = out.clone();
            let sent = now_ms();
            publisher
                .enqueue(
                    item,
                    Box::new(move |r| match r {
                        Ok(r) => write(&o, &json!({"k": "ack", "id": id, "ch": ch, "epoch": r.epoch, "offset": r.offset, "dup": r.duplicate, "attempts": r.attempts, "sent": sent, "t": now_ms()})),
                        Err(e) => write(&o, &json!({"k": "dead", "id": id, "ch": ch, "code": e.code(), "message": e.to_string(), "attempts": null, "sent": sent, "t": now_ms()})),
                    }),
                )
                .expect("queued");
        }
    }
    tokio::time::timeout(Duration::from_secs(120), client.flush())
        .await
        .expect("flushed within 120 s");
    for d in publisher.dead_letters() {
        write(
            &out,
            &json!({"k": "dead_letter", "id": d.event.id, "ch": d.event.channel.as_str(), "code": d.code(), "message": d.reason.to_string(), "attempts": d.attempts}),
        );
    }
    out.lock()
        .unwrap_or_else(|e| e.into_inner())
        .flush()
        .expect("flush the output");
    say("published");

    wait_for(&mut ctl, "stop").await;
    while activity.borrow().elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = client.stats();
    write(
        &out,
        &json!({"k": "summary", "stats": {
        "reconnects": stats.reconnects, "gaps": stats.gaps,
        "duplicates_dropped": stats.duplicates_dropped,
        "rate_limit_waits": stats.rate_limit_waits,
        "dead": publisher.dead_letters().len(), "acknowledged": stats.acknowledged}}),
    );
    client.close().await;
    for r in readers {
        r.abort();
    }
    out.lock()
        .unwrap_or_else(|e| e.into_inner())
        .flush()
        .expect("flush the output");
    say("done");
}

async fn storm(scenario: &Value, url: &str, token: &str, out_path: &str) {
    let out: Out = Arc::new(Mutex::new(BufWriter::new(
        File::create(out_path).expect("create the output"),
    )));
    let mut ctl = control();
    let storm = &scenario["storm"];
    let n = storm["subscribers"].as_u64().expect("subscribers") as usize;
    let channel = storm["channel"].as_str().expect("channel");
    let mut clients = Vec::with_capacity(n);
    let mut subs = Vec::with_capacity(n);
    for i in 0..n {
        let mut config = ClientConfig::new(url).service_name(format!("storm-{i}"));
        config.core.connection.backoff = backoff(&storm["backoff"]);
        config.seed = Some(0x5707_0000 + i as u64);
        let o = out.clone();
        let config = config.listener(move |ev| {
            if let ClientEvent::State(s) = ev {
                write(
                    &o,
                    &json!({"k": "state", "i": i, "state": s, "t": now_ms()}),
                );
            }
        });
        let client = Client::new(config, Arc::new(StaticToken(token.into()))).expect("client");
        subs.push(client.subscribe(channel, None).expect("subscribe"));
        clients.push(client);
    }
    for s in &mut subs {
        tokio::time::timeout(Duration::from_secs(60), s.ready())
            .await
            .expect("subscribed within 60 s")
            .expect("subscribed");
    }
    // Keep draining the subscriptions so their buffers stay empty.
    let mut drains = Vec::new();
    for mut s in subs {
        drains.push(tokio::spawn(
            async move { while s.next().await.is_some() {} },
        ));
    }
    out.lock()
        .unwrap_or_else(|e| e.into_inner())
        .flush()
        .expect("flush the output");
    say("ready");
    wait_for(&mut ctl, "stop").await;
    let mut reconnects = 0;
    for c in &clients {
        reconnects += c.stats().reconnects;
    }
    write(&out, &json!({"k": "summary", "reconnects": reconnects}));
    for c in &clients {
        c.close().await;
    }
    for d in drains {
        d.abort();
    }
    out.lock()
        .unwrap_or_else(|e| e.into_inner())
        .flush()
        .expect("flush the output");
    say("done");
}
