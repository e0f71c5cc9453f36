//! Scripted end-to-end scenarios of the publish queue through the JSON bodies, against a
//! tiny in-test server that parses each request the way the reference server does.

use std::collections::HashMap;

use courier_core::event::{Event, Metadata};
use courier_core::queue::{
    Completion, OutgoingBatch, Priority, PublishOptions, PublishQueue, QueueConfig, TransportResult,
};
use courier_core::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use courier_core::wire::{
    BatchItemResult, BatchRequest, BatchResponseBody, ErrorBody, ErrorResponse,
};
use courier_core::{ChannelName, Error, ErrorCode};

/// A server with an idempotency window and a per-channel offset.
#[derive(Default)]
struct Server {
    stored: HashMap<String, u64>,
    next: u64,
    requests: Vec<BatchRequest>,
}

impl Server {
    fn answer(&mut self, batch: &OutgoingBatch) -> TransportResult {
        let req: BatchRequest =
            serde_json::from_str(&batch.body).expect("the body is a BatchRequest");
        assert_eq!(req.events.len(), batch.count);
        let mut results = Vec::new();
        for e in &req.events {
            if let Err(v) = e.validate(100 * 1024) {
                results.push(BatchItemResult::rejected(
                    &e.id,
                    Some(e.channel.to_string()),
                    ErrorBody::from(&v),
                ));
            } else if e.channel.as_str().starts_with("user.") && e.channel.as_str() != "user.u1" {
                let err = ErrorBody::new(ErrorCode::ForbiddenChannel, "token may not publish here");
                results.push(BatchItemResult::rejected(
                    &e.id,
                    Some(e.channel.to_string()),
                    err,
                ));
            } else if let Some(&off) = self.stored.get(&e.id) {
                results.push(BatchItemResult::duplicate(
                    &e.id,
                    e.channel.as_str(),
                    "epoch-1",
                    off,
                ));
            } else {
                self.stored.insert(e.id.clone(), self.next);
                results.push(BatchItemResult::accepted(
                    &e.id,
                    e.channel.as_str(),
                    "epoch-1",
                    self.next,
                ));
                self.next += 1;
            }
        }
        self.requests.push(req);
        let body = serde_json::to_string(&BatchResponseBody { results }).unwrap();
        TransportResult::Http {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn progress(q: &mut PublishQueue, channel: &str, percent: u32) -> Event {
    let id = q.next_event_id(1_750_000_000_000 + u64::from(percent));
    Event::new(
        id,
        "backtest.progress",
        ChannelName::new(channel).unwrap(),
        &serde_json::json!({"backtest_id": "bt1", "percent": percent}),
        Metadata {
            timestamp: 1_750_000_000_000,
            source: "backtester".into(),
            ..Metadata::default()
        },
    )
}

fn drain(q: &mut PublishQueue) -> Vec<Completion> {
    std::iter::from_fn(|| q.poll_completion()).collect()
}

#[test]
fn rate_limited_then_lost_answer_then_duplicate() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut q = PublishQueue::new(QueueConfig::default(), 1, t0);
    let mut server = Server::default();

    let mut tickets = Vec::new();
    for pct in [10, 20] {
        let e = progress(&mut q, "backtest.bt1", pct);
        tickets.push(q.push(e, PublishOptions::default(), now).unwrap());
    }
    let forbidden = progress(&mut q, "user.someone-else", 30);
    let forbidden_ticket = q
        .push(forbidden, PublishOptions::with_priority(Priority::Low), now)
        .unwrap();
    let done = Event::new(
        q.next_event_id(1_750_000_000_100),
        "backtest.completed",
        ChannelName::new("backtest.bt1").unwrap(),
        &serde_json::json!({"backtest_id": "bt1", "total_return": "0.125", "trades": 42}),
        Metadata::default(),
    );
    let done_ticket = q
        .push(done, PublishOptions::with_priority(Priority::High), now)
        .unwrap();

    // Nothing in flight, so no linger: one batch at once, the high-priority event first.
    let first = q.poll_transmit(now).unwrap();
    assert_eq!(now, t0);
    let sent: BatchRequest = serde_json::from_str(&first.body).unwrap();
    let types: Vec<_> = sent.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "backtest.completed",
            "backtest.progress",
            "backtest.progress",
            "backtest.progress"
        ]
    );
    let raw: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(
        raw["events"][0]["data"]["total_return"], "0.125",
        "decimals travel as strings"
    );
    assert_eq!(raw["events"][1]["metadata"]["source"], "backtester");

    // 429 with Retry-After (a proxy's: the server refuses per event) and the IETF fields,
    // which describe a bucket with room (4 of 100 used), so only Retry-After holds.
    let body = serde_json::to_string(&ErrorResponse {
        error: ErrorBody {
            retry_after_ms: Some(1_500),
            ..ErrorBody::new(ErrorCode::RateLimitExceeded, "publish rate exceeded")
        },
    })
    .unwrap();
    let headers = vec![
        ("Retry-After".to_owned(), "2".to_owned()),
        (
            "RateLimit-Policy".to_owned(),
            "\"publish\";q=100;w=60".to_owned(),
        ),
        ("RateLimit".to_owned(), "\"publish\";r=96;t=3".to_owned()),
    ];
    q.handle_response(
        first.id,
        TransportResult::Http {
            status: 429,
            headers,
            body,
        },
        now,
        wall(),
    );
    let retry_at = q.poll_timeout().unwrap();
    assert!(
        retry_at >= now + Duration::from_secs(2),
        "Retry-After is honoured"
    );
    assert!(
        q.poll_transmit(retry_at - Duration::from_millis(1))
            .is_none()
    );
    assert_eq!(q.stats(now).rate_limit_waits, 1);
    now = retry_at;

    // Second try: the server stores everything, but the answer is lost.
    let second = q.poll_transmit(now).unwrap();
    assert_eq!(second.body, first.body, "same ids, same bytes");
    let _lost = server.answer(&second);
    q.handle_response(
        second.id,
        TransportResult::Failed("connection reset by peer".into()),
        now,
        wall(),
    );
    assert!(drain(&mut q).is_empty());

    // Third try: duplicates for the stored ones, the forbidden one is final.
    now = q.poll_timeout().unwrap();
    let third = q.poll_transmit(now).unwrap();
    assert_eq!(third.body, first.body);
    let answer = server.answer(&third);
    q.handle_response(third.id, answer, now, wall());
    let completions = drain(&mut q);
    assert_eq!(completions.len(), 4);
    for c in &completions {
        if c.ticket == forbidden_ticket {
            let Err(Error::Refused(r)) = &c.result else {
                panic!("{c:?}")
            };
            assert_eq!((r.code, r.status), (ErrorCode::ForbiddenChannel, Some(403)));
        } else {
            let r = c.result.as_ref().unwrap();
            assert!(
                r.duplicate,
                "stored by the lost request, acknowledged again"
            );
            assert_eq!(r.attempts, 3);
            assert!(tickets.contains(&c.ticket) || c.ticket == done_ticket);
        }
    }
    assert_eq!(server.stored.len(), 3, "each event stored once");
    let dead = q.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].code(), dead[0].event.channel.as_str()),
        ("FORBIDDEN_CHANNEL", "user.someone-else")
    );
    assert!(q.is_flushed());
    let stats = serde_json::to_value(q.stats(now)).unwrap();
    assert_eq!(
        (
            stats["acknowledged"].as_u64(),
            stats["dead"].as_u64(),
            stats["retries"].as_u64()
        ),
        (Some(3), Some(1), Some(8))
    );
}

#[test]
fn a_payment_is_never_sent_twice_and_close_drains() {
    let t0 = Instant::now();
    let mut now = t0;
    let config: QueueConfig =
        serde_json::from_str(r#"{"linger_ms": 0, "max_batch_events": 2}"#).unwrap();
    let mut q = PublishQueue::new(config, 9, t0);
    let mut server = Server::default();
    let trade = Event::new(
        q.next_event_id(1),
        "trade.executed",
        ChannelName::new("strategy.s1").unwrap(),
        &serde_json::json!({"trade_id": "t1", "symbol": "AAPL", "side": "buy", "quantity": "10", "price": "101.25"}),
        Metadata::default(),
    );
    trade.validate(100 * 1024).expect("a valid trade");
    let payment = q
        .push(
            trade,
            PublishOptions {
                priority: Priority::High,
                retry: false,
            },
            now,
        )
        .unwrap();
    let mut others = Vec::new();
    for pct in [1, 2, 3] {
        let e = progress(&mut q, "backtest.bt2", pct);
        others.push(q.push(e, PublishOptions::default(), now).unwrap());
    }
    q.close();
    let late = progress(&mut q, "backtest.bt2", 4);
    assert!(matches!(
        q.push(late, PublishOptions::default(), now),
        Err(Error::Usage(_))
    ));

    // The first batch (payment + one progress event) meets a 503.
    let a = q.poll_transmit(now).unwrap();
    let b = q.poll_transmit(now).unwrap();
    assert_eq!((a.count, b.count), (2, 2));
    let unavailable = serde_json::to_string(&ErrorResponse {
        error: ErrorBody::new(ErrorCode::ShuttingDown, "draining"),
    })
    .unwrap();
    q.handle_response(
        a.id,
        TransportResult::Http {
            status: 503,
            headers: vec![],
            body: unavailable,
        },
        now,
        wall(),
    );
    let answer = server.answer(&b);
    q.handle_response(b.id, answer, now, wall());

    let mut outcomes: HashMap<u64, Completion> =
        drain(&mut q).into_iter().map(|c| (c.ticket, c)).collect();
    let paid = outcomes.remove(&payment).unwrap();
    let Err(Error::Refused(r)) = paid.result else {
        panic!()
    };
    assert_eq!((r.code, r.status), (ErrorCode::ShuttingDown, Some(503)));
    assert_eq!(q.dead_letters()[0].attempts, 1);

    // The progress event of the failed batch is retried and the queue drains.
    while !q.is_flushed() {
        if let Some(batch) = q.poll_transmit(now) {
            let req: BatchRequest = serde_json::from_str(&batch.body).unwrap();
            assert!(
                req.events.iter().all(|e| e.event_type != "trade.executed"),
                "the payment is never resent"
            );
            let answer = server.answer(&batch);
            q.handle_response(batch.id, answer, now, wall());
        } else {
            now = q.poll_timeout().expect("work left, so a timer");
            q.handle_timeout(now);
        }
    }
    outcomes.extend(drain(&mut q).into_iter().map(|c| (c.ticket, c)));
    for t in others {
        assert!(outcomes[&t].result.is_ok());
    }
    assert_eq!(server.stored.len(), 3);
}
