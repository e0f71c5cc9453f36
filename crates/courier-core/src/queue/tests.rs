use super::*;
use crate::channel::ChannelName;
use crate::event::Metadata;
use crate::time::UNIX_EPOCH;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn event(id: &str) -> Event {
    Event::new(
        id,
        "custom.thing",
        ChannelName::new("global").unwrap(),
        &serde_json::json!({"id": id}),
        Metadata::default(),
    )
}

fn ids_of(body: &str) -> Vec<String> {
    let req: BatchRequest = serde_json::from_str(body).expect("body is a BatchRequest");
    req.events.into_iter().map(|e| e.id).collect()
}

fn accept_all(body: &str) -> TransportResult {
    let results = ids_of(body)
        .into_iter()
        .enumerate()
        .map(|(i, id)| BatchItemResult::accepted(id, "global", "ep1", i as u64))
        .collect();
    http(
        200,
        &[],
        &serde_json::to_string(&BatchResponseBody { results }).unwrap(),
    )
}

fn http(status: u16, headers: &[(&str, &str)], body: &str) -> TransportResult {
    TransportResult::Http {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.to_owned(),
    }
}

fn error_body(code: ErrorCode, retry_after_ms: Option<u64>) -> String {
    let mut e = ErrorBody::new(code, "nope");
    e.retry_after_ms = retry_after_ms;
    serde_json::to_string(&ErrorResponse { error: e }).unwrap()
}

/// A simulated driver: fake time, no sleeping.
struct Sim {
    q: PublishQueue,
    t0: Instant,
    now: Instant,
    n: u32,
}

impl Sim {
    fn new(config: QueueConfig) -> Self {
        let t0 = Instant::now();
        Self {
            q: PublishQueue::new(config, 42, t0),
            t0,
            now: t0,
            n: 0,
        }
    }

    fn quick() -> Self {
        Self::new(QueueConfig {
            linger_ms: 0,
            ..QueueConfig::default()
        })
    }

    fn push_with(&mut self, options: PublishOptions) -> Ticket {
        self.n += 1;
        let e = event(&format!("e{}", self.n));
        self.q.push(e, options, self.now).unwrap()
    }

    fn push(&mut self, priority: Priority) -> Ticket {
        self.push_with(PublishOptions::with_priority(priority))
    }

    fn at(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
        self.q.handle_timeout(self.now);
    }

    fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Sleeps until the queue's timer and takes the batch that is then due.
    fn wait_and_send(&mut self) -> OutgoingBatch {
        if let Some(b) = self.q.poll_transmit(self.now) {
            return b;
        }
        let t = self.q.poll_timeout().expect("a timer is set");
        assert!(
            t > self.now,
            "poll_timeout in the past with nothing to send"
        );
        self.advance_to(t);
        self.q.poll_transmit(self.now).expect("due at poll_timeout")
    }

    fn reply(&mut self, b: &OutgoingBatch, r: TransportResult) {
        self.q.handle_response(
            b.id,
            r,
            self.now,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
    }

    fn completions(&mut self) -> Vec<Completion> {
        std::iter::from_fn(|| self.q.poll_completion()).collect()
    }
}

#[test]
fn cancel_withdraws_only_events_never_sent() {
    let mut s = Sim::quick();
    let t1 = s.push(Priority::Normal);
    let t2 = s.push(Priority::Normal);
    let t3 = s.push(Priority::High);
    assert!(s.q.cancel(t2), "queued, never sent: withdrawn");
    assert!(!s.q.cancel(t2), "only once");
    assert_eq!(s.q.pending(), 2);
    let b = s.wait_and_send();
    assert_eq!(ids_of(&b.body), ["e3", "e1"]);
    // Sent: no longer withdrawable, before or after a failed attempt.
    assert!(!s.q.cancel(t1));
    s.reply(
        &b,
        http(503, &[], &error_body(ErrorCode::Unavailable, None)),
    );
    assert!(
        !s.q.cancel(t1),
        "a retry keeps the event's id and is left to finish"
    );
    let b = s.wait_and_send();
    s.reply(&b, accept_all(&b.body));
    let mut done: Vec<Ticket> = s.completions().iter().map(|c| c.ticket).collect();
    done.sort_unstable();
    assert_eq!(done, [t1, t3], "no completion for the withdrawn event");
    assert!(s.q.is_flushed());
    assert!(!s.q.cancel(999), "unknown tickets are not withdrawn");
}

#[test]
fn wire_types_are_exact() {
    let req = BatchRequest {
        events: vec![event("a1")],
    };
    let v: serde_json::Value = serde_json::to_value(&req).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"events": [{"id": "a1", "type": "custom.thing", "channel": "global", "data": {"id": "a1"}, "metadata": {"timestamp": 0, "source": ""}}]})
    );
    let body = r#"{"results":[
        {"id":"a","status":"accepted","channel":"global","epoch":"E","offset":7},
        {"id":"b","status":"duplicate","channel":"global","epoch":"E","offset":3},
        {"id":"c","status":"rejected","channel":"global","error":{"code":"INVALID_EVENT","message":"bad","field":"data.percent"}},
        {"id":"d","status":"rejected","error":{"code":"RATE_LIMIT_EXCEEDED","message":"slow","retry_after_ms":250}}]}"#;
    let parsed: BatchResponseBody = serde_json::from_str(body).unwrap();
    assert_eq!(
        parsed.results[0],
        BatchItemResult::accepted("a", "global", "E", 7)
    );
    assert_eq!(
        parsed.results[1],
        BatchItemResult::duplicate("b", "global", "E", 3)
    );
    let mut err = ErrorBody::new(ErrorCode::InvalidEvent, "bad");
    err.field = Some("data.percent".into());
    assert_eq!(
        parsed.results[2],
        BatchItemResult::rejected("c", Some("global".into()), err)
    );
    assert_eq!(
        parsed.results[3].error.as_ref().unwrap().retry_after_ms,
        Some(250)
    );
    // Absent options are not serialised.
    let out = serde_json::to_string(&BatchItemResult::rejected(
        "x",
        None,
        ErrorBody::new(ErrorCode::Internal, "m"),
    ))
    .unwrap();
    assert_eq!(
        out,
        r#"{"id":"x","status":"rejected","error":{"code":"INTERNAL","message":"m"}}"#
    );
    let e: ErrorResponse =
        serde_json::from_str(r#"{"error":{"code":"SOMETHING_NEW","message":"m"}}"#).unwrap();
    assert_eq!(e.error.code, ErrorCode::Unknown);
    let v = ValidationError::new("data.percent", ValidationKind::OutOfRange, "too big");
    assert_eq!(ErrorBody::from(&v).code, ErrorCode::InvalidEvent);
}

#[test]
fn priority_options_and_config_parse() {
    assert_eq!("high".parse::<Priority>().unwrap(), Priority::High);
    assert_eq!(" Low ".parse::<Priority>().unwrap(), Priority::Low);
    let err = "urgent".parse::<Priority>().unwrap_err();
    assert_eq!(err.field, "priority");
    assert!(
        err.message.contains("`high`, `normal` or `low`"),
        "{}",
        err.message
    );
    assert_eq!(
        serde_json::to_string(&Priority::Normal).unwrap(),
        "\"normal\""
    );
    let o: PublishOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(
        o,
        PublishOptions {
            priority: Priority::Normal,
            retry: true
        }
    );
    let o: PublishOptions = serde_json::from_str(r#"{"priority":"high","retry":false}"#).unwrap();
    assert_eq!((o.priority, o.retry), (Priority::High, false));
    let c: QueueConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, QueueConfig::default());
    assert_eq!(
        (
            c.max_queued,
            c.max_batch_events,
            c.linger_ms,
            c.max_in_flight,
            c.max_attempts,
            c.retry_after_cap_ms
        ),
        (10_000, 100, 2, 4, 8, 300_000)
    );
}

#[test]
fn push_validates_bounds_and_closes() {
    let mut s = Sim::new(QueueConfig {
        max_queued: 2,
        ..QueueConfig::default()
    });
    let err =
        s.q.push(event(""), PublishOptions::default(), s.now)
            .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.field == "id"),
        "{err:?}"
    );
    let bad = Event::new(
        "x",
        "backtest.progress",
        ChannelName::new("global").unwrap(),
        &serde_json::json!({"backtest_id": "b", "percent": 500}),
        Metadata::default(),
    );
    assert!(
        matches!(s.q.push(bad, PublishOptions::default(), s.now), Err(Error::Invalid(e)) if e.field == "data.percent")
    );
    s.push(Priority::Normal);
    s.push(Priority::Normal);
    let full =
        s.q.push(event("z"), PublishOptions::default(), s.now)
            .unwrap_err();
    assert_eq!(full, Error::Usage(UsageError::QueueFull { capacity: 2 }));
    s.q.close();
    assert_eq!(
        s.q.push(event("y"), PublishOptions::default(), s.now)
            .unwrap_err(),
        Error::Usage(UsageError::Closed)
    );
    // What was queued still drains, without lingering.
    let b =
        s.q.poll_transmit(s.now)
            .expect("closed queue sends at once");
    assert_eq!(b.count, 2);
    let small = QueueConfig {
        max_batch_bytes: 60,
        ..QueueConfig::default()
    };
    let mut s = Sim::new(small);
    let big =
        s.q.push(
            event("big-one-with-a-long-id"),
            PublishOptions::default(),
            s.now,
        )
        .unwrap_err();
    assert!(matches!(big, Error::Invalid(e) if e.kind == ValidationKind::TooLarge));
    assert_ne!(s.q.next_event_id(1), s.q.next_event_id(1));
}

#[test]
fn linger_then_full_batches() {
    let mut s = Sim::new(QueueConfig {
        linger_ms: 5,
        max_batch_events: 3,
        ..QueueConfig::default()
    });
    // Nothing in flight: lingering would buy nothing.
    s.push(Priority::Normal);
    let first = s.q.poll_transmit(s.now).expect("sent at once");
    assert_eq!(ids_of(&first.body), ["e1"]);
    // While it is in flight, new events wait for company.
    s.push(Priority::Normal);
    assert!(s.q.poll_transmit(s.now).is_none());
    assert_eq!(s.q.poll_timeout(), Some(s.t0 + ms(5)));
    s.advance(ms(2));
    s.push(Priority::Normal);
    assert!(s.q.poll_transmit(s.now).is_none());
    assert_eq!(
        s.q.poll_timeout(),
        Some(s.t0 + ms(5)),
        "the oldest event sets the deadline"
    );
    s.advance(ms(3));
    let second = s.q.poll_transmit(s.now).unwrap();
    assert_eq!(ids_of(&second.body), ["e2", "e3"]);
    assert!(s.q.poll_timeout().is_none());
    // A full batch goes at once.
    for _ in 0..4 {
        s.push(Priority::Normal);
    }
    let b = s.q.poll_transmit(s.now).unwrap();
    assert_eq!(ids_of(&b.body), ["e4", "e5", "e6"]);
    assert!(s.q.poll_transmit(s.now).is_none(), "the rest lingers");
    assert_eq!(s.q.poll_timeout(), Some(s.now + ms(5)));
    // Once nothing is in flight, what lingers goes at once.
    for batch in [&first, &second, &b] {
        s.reply(batch, accept_all(&batch.body));
    }
    let rest =
        s.q.poll_transmit(s.now)
            .expect("nothing in flight: no linger");
    assert_eq!(ids_of(&rest.body), ["e7"]);
}

#[test]
fn byte_limit_splits_batches() {
    let one = serde_json::to_string(&event("e1")).unwrap().len();
    let cfg = QueueConfig {
        linger_ms: 0,
        max_batch_bytes: BODY_OVERHEAD + 2 * one + 1,
        ..QueueConfig::default()
    };
    let mut s = Sim::new(cfg);
    for _ in 0..5 {
        s.push(Priority::Normal);
    }
    let mut sizes = Vec::new();
    while let Some(b) = s.q.poll_transmit(s.now) {
        assert!(b.body.len() <= s.q.config().max_batch_bytes);
        sizes.push(b.count);
    }
    assert_eq!(sizes, [2, 2, 1]);
}

#[test]
fn priority_first_then_fifo() {
    let mut s = Sim::new(QueueConfig {
        linger_ms: 0,
        max_batch_events: 3,
        ..QueueConfig::default()
    });
    s.push(Priority::Low);
    s.push(Priority::Normal);
    s.push(Priority::High);
    s.push(Priority::Low);
    s.push(Priority::High);
    let b = s.q.poll_transmit(s.now).unwrap();
    assert_eq!(ids_of(&b.body), ["e3", "e5", "e2"]);
    let b2 = s.q.poll_transmit(s.now).unwrap();
    assert_eq!(ids_of(&b2.body), ["e1", "e4"]);
    // A retried high event goes back in front of a newer high one.
    s.reply(&b, TransportResult::Failed("reset".into()));
    s.push(Priority::High);
    let b3 = s.wait_and_send();
    assert_eq!(ids_of(&b3.body), ["e3", "e5", "e6"]);
}

#[test]
fn max_in_flight_is_respected() {
    let mut s = Sim::new(QueueConfig {
        linger_ms: 0,
        max_batch_events: 1,
        max_in_flight: 2,
        ..QueueConfig::default()
    });
    for _ in 0..4 {
        s.push(Priority::Normal);
    }
    let a = s.q.poll_transmit(s.now).unwrap();
    let _b = s.q.poll_transmit(s.now).unwrap();
    assert!(s.q.poll_transmit(s.now).is_none());
    assert_eq!(s.q.poll_timeout(), None, "only a response can help");
    assert_eq!(s.q.stats(s.now).in_flight_batches, 2);
    s.reply(&a, accept_all(&a.body));
    assert!(s.q.poll_transmit(s.now).is_some());
    // A second answer for the same batch, or an unknown batch, is ignored.
    s.reply(&a, TransportResult::Failed("late".into()));
    s.q.handle_response(
        BatchId(999),
        TransportResult::Failed("?".into()),
        s.now,
        UNIX_EPOCH,
    );
    assert_eq!(s.completions().len(), 1);
}

#[test]
fn success_completes_with_position() {
    let mut s = Sim::quick();
    let t = s.push(Priority::Normal);
    let b = s.q.poll_transmit(s.now).unwrap();
    assert_eq!(b.count, 1);
    assert!(!s.q.is_flushed());
    s.reply(&b, http(200, &[], r#"{"results":[{"id":"e1","status":"duplicate","channel":"global","epoch":"E9","offset":41}]}"#));
    let c = s.completions();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].ticket, t);
    let r = c[0].result.clone().unwrap();
    assert_eq!(
        r,
        PublishResult {
            id: "e1".into(),
            channel: "global".into(),
            epoch: "E9".into(),
            offset: 41,
            duplicate: true,
            attempts: 1
        }
    );
    assert!(s.q.is_flushed());
    assert_eq!(s.q.stats(s.now).acknowledged, 1);
}

#[test]
fn server_errors_are_retried_with_the_same_id_after_backoff() {
    let mut s = Sim::quick();
    s.push(Priority::Normal);
    let b = s.q.poll_transmit(s.now).unwrap();
    s.reply(
        &b,
        http(503, &[], &error_body(ErrorCode::ShuttingDown, None)),
    );
    assert!(s.q.poll_transmit(s.now).is_none(), "backoff first");
    let due = s.q.poll_timeout().unwrap();
    let wait = due - s.now;
    assert!(wait >= ms(100) && wait <= ms(500), "{wait:?}");
    assert_eq!(s.q.stats(s.now).retrying, 1);
    s.advance(wait - ms(1));
    assert!(s.q.poll_transmit(s.now).is_none(), "never early");
    let b2 = s.wait_and_send();
    assert_eq!(b2.body, b.body, "same event, same id");
    s.reply(&b2, accept_all(&b2.body));
    let c = s.completions();
    assert_eq!(c[0].result.as_ref().unwrap().attempts, 2);
    let st = s.q.stats(s.now);
    assert_eq!((st.retries, st.acknowledged, st.retrying), (1, 1, 0));
    assert_eq!(s.q.backoff.attempts(), 0, "success resets the backoff");
}

#[test]
fn transport_failures_and_bad_bodies_are_retried() {
    let mut s = Sim::quick();
    s.push(Priority::Normal);
    let replies = [
        TransportResult::Failed("connection reset".into()),
        http(200, &[], "<html>oops</html>"),
        http(200, &[], r#"{"results":[]}"#),
        http(
            200,
            &[],
            r#"{"results":[{"id":"other","status":"accepted"}]}"#,
        ),
        http(302, &[("Location", "/elsewhere")], ""),
        http(502, &[], "Bad Gateway"),
    ];
    for r in replies {
        let b = s.wait_and_send();
        s.reply(&b, r);
        assert!(s.completions().is_empty());
    }
    let b = s.wait_and_send();
    s.reply(&b, accept_all(&b.body));
    assert_eq!(s.completions()[0].result.as_ref().unwrap().attempts, 7);
}

#[test]
fn a_rejected_event_reports_its_own_field_path() {
    assert_eq!(event_field("events[12].data.percent"), "data.percent");
    assert_eq!(event_field("data.percent"), "data.percent");
    assert_eq!(event_field("events[x].data"), "events[x].data");
}

#[test]
fn expired_token_holds_sends_until_the_driver_refreshes_it() {
    let mut s = Sim::quick();
    let payment = s.push_with(PublishOptions {
        priority: Priority::High,
        retry: false,
    });
    let b = s.wait_and_send();
    s.reply(
        &b,
        http(401, &[], &error_body(ErrorCode::TokenExpired, None)),
    );
    assert!(
        s.q.poll_completion().is_none(),
        "nothing fails on an expired token"
    );
    assert!(s.q.poll_token_request());
    assert!(!s.q.poll_token_request(), "one token request at a time");
    assert!(s.q.poll_transmit(s.now).is_none());
    assert_eq!(s.q.poll_timeout(), None, "only the token can unblock");
    s.q.handle_token(Ok(()), s.now);
    let again = s.wait_and_send();
    assert_eq!(
        ids_of(&again.body),
        ids_of(&b.body),
        "same id, so never published twice"
    );
    let reply = accept_all(&again.body);
    s.reply(&again, reply);
    let done = s.q.poll_completion().unwrap();
    assert_eq!(done.ticket, payment);
    assert_eq!(done.result.unwrap().attempts, 2);
}

#[test]
fn a_token_the_server_keeps_refusing_ends_in_dead_letters() {
    let mut s = Sim::new(QueueConfig {
        linger_ms: 0,
        max_attempts: 3,
        ..QueueConfig::default()
    });
    s.push(Priority::Normal);
    for _ in 0..3 {
        let b = s.wait_and_send();
        s.reply(
            &b,
            http(401, &[], &error_body(ErrorCode::TokenExpired, None)),
        );
        if s.q.poll_token_request() {
            s.q.handle_token(Err("provider down".into()), s.now);
        }
    }
    let done = s.q.poll_completion().expect("given up");
    assert_eq!(done.result.unwrap_err().code(), "TOKEN_EXPIRED");
    assert!(s.q.is_flushed());
    assert_eq!(s.q.dead_letters().len(), 1);
}

#[test]
fn retry_after_holds_every_send() {
    let mut s = Sim::quick();
    s.push(Priority::Normal);
    let b = s.q.poll_transmit(s.now).unwrap();
    s.reply(
        &b,
        http(
            429,
            &[("Retry-After", "3"), ("X-RateLimit-Remaining", "0")],
            &error_body(ErrorCode::RateLimitExceeded, Some(1_000)),
        ),
    );
    let deadline = s.now + ms(3_000);
    s.push(Priority::High);
    assert!(s.q.poll_transmit(s.now).is_none());
    assert_eq!(s.q.poll_timeout(), Some(deadline));
    assert_eq!(s.q.stats(s.now).rate_limit_waits, 1);
    s.advance(ms(2_999));
    assert!(s.q.poll_transmit(s.now).is_none());
    assert_eq!(s.q.stats(s.now).rate_limit_waits, 1, "one hold counts once");
    let b2 = s.wait_and_send();
    assert_eq!(s.now, deadline);
    assert_eq!(ids_of(&b2.body), ["e2", "e1"], "high first, then the retry");
    s.reply(&b2, accept_all(&b2.body));
    assert!(s.q.is_flushed());
}

#[test]
fn retry_after_http_date_uses_the_wall_clock() {
    let mut s = Sim::quick();
    s.push(Priority::Normal);
    let b = s.q.poll_transmit(s.now).unwrap();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let date = httpdate::fmt_http_date(wall + Duration::from_secs(10));
    s.q.handle_response(b.id, http(503, &[("retry-after", &date)], ""), s.now, wall);
    assert_eq!(s.q.poll_timeout(), Some(s.now + ms(10_000)));
    let c = s.q.poll_timeout().unwrap();
    s.advance_to(c);
    assert!(s.q.poll_transmit(s.now).is_some());
}

#[test]
fn refused_requests_become_dead_letters() {
    for (status, code) in [
        (400, ErrorCode::InvalidEvent),
        (401, ErrorCode::Unauthorized),
        (403, ErrorCode::ForbiddenChannel),
        (413, ErrorCode::PayloadTooLarge),
    ] {
        let mut s = Sim::quick();
        let t = s.push(Priority::Normal);
        let b = s.q.poll_transmit(s.now).unwrap();
        let mut e = ErrorBody::new(code, "no way");
        e.field = Some("data.percent".into());
        s.reply(
            &b,
            http(
                status,
                &[],
                &serde_json::to_string(&ErrorResponse { error: e }).unwrap(),
            ),
        );
        let c = s.completions();
        let Err(Error::Refused(r)) = &c[0].result else {
            panic!("{c:?}")
        };
        assert_eq!(
            (c[0].ticket, r.code, r.status, r.field.as_deref()),
            (t, code, Some(status), Some("data.percent"))
        );
        assert!(s.q.is_flushed());
        assert!(s.q.poll_timeout().is_none());
        let d = &s.q.dead_letters()[0];
        assert_eq!(
            (
                d.code(),
                d.message().as_str(),
                d.field(),
                d.status(),
                d.attempts
            ),
            (
                code.as_str(),
                "no way",
                Some("data.percent"),
                Some(status),
                1
            )
        );
        assert_eq!(s.q.take_dead_letters().len(), 1);
        assert!(s.q.dead_letters().is_empty());
        assert_eq!(s.q.stats(s.now).dead, 1);
    }
    // No readable body: the status decides the code.
    let mut s = Sim::quick();
    s.push(Priority::Normal);
    let b = s.q.poll_transmit(s.now).unwrap();
    s.reply(&b, http(401, &[], ""));
    assert_eq!(s.q.dead_letters()[0].code(), "UNAUTHORIZED");
}

#[test]
fn mixed_item_results() {
    let mut s = Sim::quick();
    for _ in 0..4 {
        s.push(Priority::Normal);
    }
    let b = s.q.poll_transmit(s.now).unwrap();
    let mut invalid = ErrorBody::new(ErrorCode::InvalidEvent, "percent over 100");
    invalid.field = Some("data.percent".into());
    let mut slow = ErrorBody::new(ErrorCode::RateLimitExceeded, "slow down");
    slow.retry_after_ms = Some(2_500);
    let body = BatchResponseBody {
        results: vec![
            BatchItemResult::accepted("e1", "global", "E", 1),
            BatchItemResult::duplicate("e2", "global", "E", 0),
            BatchItemResult::rejected("e3", Some("global".into()), invalid),
            BatchItemResult::rejected("e4", None, slow),
        ],
    };
    s.reply(&b, http(200, &[], &serde_json::to_string(&body).unwrap()));
    let c = s.completions();
    assert_eq!(c.len(), 3);
    assert!(!c[0].result.as_ref().unwrap().duplicate);
    assert!(c[1].result.as_ref().unwrap().duplicate);
    let Err(Error::Refused(r)) = &c[2].result else {
        panic!()
    };
    assert_eq!(
        (r.code, r.status, r.field.as_deref()),
        (ErrorCode::InvalidEvent, Some(400), Some("data.percent"))
    );
    assert_eq!(
        s.q.poll_timeout(),
        Some(s.now + ms(2_500)),
        "the item's retry_after_ms holds sending"
    );
    let start = s.now;
    let b2 = s.wait_and_send();
    assert!(s.now - start >= ms(2_500));
    assert_eq!(ids_of(&b2.body), ["e4"]);
    s.reply(&b2, accept_all(&b2.body));
    assert!(s.q.is_flushed());
    assert_eq!(s.q.stats(s.now).acknowledged, 3);
}

#[test]
fn no_retry_events_are_never_sent_twice() {
    let mut s = Sim::quick();
    let t = s.push_with(PublishOptions {
        priority: Priority::High,
        retry: false,
    });
    let b = s.q.poll_transmit(s.now).unwrap();
    s.reply(&b, TransportResult::Failed("timeout".into()));
    let c = s.completions();
    assert_eq!(
        (c[0].ticket, c[0].result.clone().unwrap_err()),
        (t, Error::Transport("timeout".into()))
    );
    assert_eq!(s.q.dead_letters()[0].code(), "TRANSPORT");
    assert!(s.q.poll_timeout().is_none() && s.q.is_flushed());
}

#[test]
fn max_attempts_then_dead_letter() {
    let mut s = Sim::new(QueueConfig {
        linger_ms: 0,
        max_attempts: 3,
        ..QueueConfig::default()
    });
    s.push(Priority::Normal);
    for _ in 0..3 {
        let b = s.wait_and_send();
        s.reply(&b, http(500, &[], ""));
    }
    let d = &s.q.dead_letters()[0];
    assert_eq!(
        (d.attempts, d.code(), d.status()),
        (3, "INTERNAL", Some(500))
    );
    assert!(s.q.is_flushed() && s.q.poll_timeout().is_none());
    assert_eq!(s.q.stats(s.now).retries, 2);
}

#[test]
fn empty_budget_delays_retries_and_lets_first_attempts_through() {
    let cfg = QueueConfig {
        linger_ms: 0,
        backoff: BackoffConfig {
            min_delay_ms: 10,
            base_delay_ms: 10,
            max_delay_ms: 10,
            ..BackoffConfig::default()
        },
        retry_budget: RetryBudgetConfig {
            capacity: 1.0,
            refill_per_sec: 1.0,
            deposit_per_success: 0.0,
        },
        ..QueueConfig::default()
    };
    let mut s = Sim::new(cfg);
    s.push(Priority::High);
    let b = s.wait_and_send();
    s.reply(&b, TransportResult::Failed("x".into()));
    let b = s.wait_and_send(); // takes the only token
    assert_eq!(s.at(), 10);
    s.reply(&b, TransportResult::Failed("x".into()));
    s.advance(ms(10));
    assert!(s.q.poll_transmit(s.now).is_none(), "no token");
    assert_eq!(s.q.stats(s.now).budget_exhausted, 1);
    let due = s.q.poll_timeout().unwrap();
    assert!(due - s.t0 >= ms(1_010), "{:?}", due - s.t0);
    // A first attempt needs no token and goes ahead.
    s.push(Priority::Low);
    let fresh = s.q.poll_transmit(s.now).unwrap();
    assert_eq!(ids_of(&fresh.body), ["e2"]);
    s.reply(&fresh, accept_all(&fresh.body));
    let b = s.wait_and_send();
    assert!(s.now >= due);
    assert_eq!(ids_of(&b.body), ["e1"]);
    s.reply(&b, accept_all(&b.body));
    assert!(s.q.is_flushed());
    assert_eq!(s.q.stats(s.now).dead, 0, "delayed, never dropped");
}

#[test]
fn a_budget_that_never_refills_fails_retries_instead_of_hanging() {
    let cfg = QueueConfig {
        linger_ms: 0,
        retry_budget: RetryBudgetConfig {
            capacity: 1.0,
            refill_per_sec: 0.0,
            deposit_per_success: 0.0,
        },
        ..QueueConfig::default()
    };
    let mut s = Sim::new(cfg);
    s.push(Priority::Normal);
    let b = s.wait_and_send();
    s.reply(&b, http(503, &[], ""));
    let b = s.wait_and_send();
    s.reply(&b, http(503, &[], ""));
    assert!(s.q.is_flushed());
    let d = &s.q.dead_letters()[0];
    assert_eq!((d.code(), d.attempts), ("UNAVAILABLE", 2));
    assert_eq!(s.q.stats(s.now).budget_exhausted, 1);
}

#[test]
fn concurrent_failures_grow_the_backoff_once() {
    let mut s = Sim::new(QueueConfig {
        linger_ms: 0,
        max_batch_events: 1,
        ..QueueConfig::default()
    });
    for _ in 0..4 {
        s.push(Priority::Normal);
    }
    let batches: Vec<_> = std::iter::from_fn(|| s.q.poll_transmit(s.now)).collect();
    assert_eq!(batches.len(), 4);
    for b in &batches {
        s.advance(ms(1));
        s.reply(b, http(503, &[], ""));
    }
    assert_eq!(s.q.backoff.attempts(), 1);
    let b = s.wait_and_send();
    s.reply(&b, http(503, &[], ""));
    assert_eq!(s.q.backoff.attempts(), 2);
}

#[test]
fn rate_limit_headers_pre_throttle() {
    let mut s = Sim::new(QueueConfig {
        linger_ms: 0,
        max_batch_events: 1,
        ..QueueConfig::default()
    });
    s.push(Priority::Normal);
    let b = s.q.poll_transmit(s.now).unwrap();
    let mut reply = accept_all(&b.body);
    if let TransportResult::Http { headers, .. } = &mut reply {
        headers.push(("RateLimit-Policy".into(), "2;w=1".into()));
    }
    s.reply(&b, reply);
    for _ in 0..3 {
        s.push(Priority::Normal);
    }
    // Learned 2 per second from an unnamed policy: burst 2 (the quota), then one
    // request every 500 ms. (Before per-bucket limits the burst was 1: [0, 500, 1000].)
    let mut sent_at = Vec::new();
    for _ in 0..3 {
        let b = s.wait_and_send();
        sent_at.push(s.at());
        s.reply(&b, accept_all(&b.body));
    }
    assert_eq!(sent_at, [0, 0, 500]);
    assert_eq!(s.q.stats(s.now).rate_limit_waits, 1);
}
