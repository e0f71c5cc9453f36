//! Property tests of the publish queue: random pushes against a random server, driven to
//! quiescence on simulated time.

use std::collections::{BTreeMap, HashMap, HashSet};

use courier_core::backoff::BackoffConfig;
use courier_core::event::{Event, Metadata};
use courier_core::queue::{
    BatchId, Priority, PublishOptions, PublishQueue, QueueConfig, Ticket, TransportResult,
};
use courier_core::retry_budget::RetryBudgetConfig;
use courier_core::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use courier_core::wire::{
    BatchItemResult, BatchRequest, BatchResponseBody, ErrorBody, ErrorResponse,
};
use courier_core::{ChannelName, Error, ErrorCode};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Item {
    Accept,
    Invalid,
    RateLimited(u64),
    Unavailable,
}

#[derive(Debug, Clone)]
enum Behaviour {
    AcceptAll,
    Mixed(Vec<Item>),
    TooMany {
        retry_after_s: u64,
    },
    Unavailable,
    Transport,
    /// The server stores the events, then the answer is lost.
    AcceptedThenLost,
    BadRequest,
    Garbage,
    WrongCount,
}

#[derive(Debug, Clone)]
struct Push {
    priority: Priority,
    retry: bool,
    gap_ms: u64,
    /// The application cancels this long after pushing (withdrawn only if never sent).
    cancel_after_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Scenario {
    pushes: Vec<Push>,
    behaviours: Vec<(Behaviour, u64)>,
    max_batch_events: usize,
    max_in_flight: usize,
    linger_ms: u64,
    max_attempts: u32,
    /// `None`: a budget that never runs dry; `Some((capacity, refill))`: a tight one.
    budget: Option<(f64, f64)>,
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        3 => Just(Item::Accept),
        1 => Just(Item::Invalid),
        1 => (1u64..3_000).prop_map(Item::RateLimited),
        1 => Just(Item::Unavailable),
    ]
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        4 => Just(Behaviour::AcceptAll),
        3 => prop::collection::vec(item(), 1..4).prop_map(Behaviour::Mixed),
        2 => (0u64..5).prop_map(|retry_after_s| Behaviour::TooMany { retry_after_s }),
        2 => Just(Behaviour::Unavailable),
        2 => Just(Behaviour::Transport),
        1 => Just(Behaviour::AcceptedThenLost),
        1 => Just(Behaviour::BadRequest),
        1 => Just(Behaviour::Garbage),
        1 => Just(Behaviour::WrongCount),
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::High),
        Just(Priority::Normal),
        Just(Priority::Low)
    ]
}

fn scenario(tight_budget: bool) -> impl Strategy<Value = Scenario> {
    let push = (
        priority(),
        prop::bool::weighted(0.8),
        prop_oneof![3 => Just(0u64), 1 => 0u64..50],
        prop_oneof![6 => Just(None), 1 => (0u64..200).prop_map(Some)],
    )
        .prop_map(|(priority, retry, gap_ms, cancel_after_ms)| Push {
            priority,
            retry,
            gap_ms,
            cancel_after_ms,
        });
    let budget = if tight_budget {
        prop_oneof![
            3 => (1.0f64..3.0, 0.2f64..5.0).prop_map(Some),
            1 => (0.0f64..2.0).prop_map(|c| Some((c, 0.0))),
        ]
        .boxed()
    } else {
        Just(None).boxed()
    };
    (
        prop::collection::vec(push, 1..40),
        prop::collection::vec((behaviour(), 0u64..40), 0..30),
        1usize..6,
        1usize..5,
        0u64..6,
        1u32..7,
        budget,
    )
        .prop_map(
            |(
                pushes,
                behaviours,
                max_batch_events,
                max_in_flight,
                linger_ms,
                max_attempts,
                budget,
            )| Scenario {
                pushes,
                behaviours,
                max_batch_events,
                max_in_flight,
                linger_ms,
                max_attempts,
                budget,
            },
        )
}

fn http(status: u16, headers: Vec<(String, String)>, body: String) -> TransportResult {
    TransportResult::Http {
        status,
        headers,
        body,
    }
}

struct Pushed {
    ticket: Ticket,
    priority: Priority,
    retry: bool,
    json: String,
}

/// Runs a scenario to quiescence and checks every invariant on the way.
fn run(s: &Scenario) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let wall: SystemTime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let budget = match s.budget {
        None => RetryBudgetConfig {
            capacity: 1e12,
            refill_per_sec: 1e12,
            deposit_per_success: 1.0,
        },
        Some((capacity, refill_per_sec)) => RetryBudgetConfig {
            capacity,
            refill_per_sec,
            deposit_per_success: 0.1,
        },
    };
    let config = QueueConfig {
        max_batch_events: s.max_batch_events,
        max_in_flight: s.max_in_flight,
        linger_ms: s.linger_ms,
        max_attempts: s.max_attempts,
        backoff: BackoffConfig {
            min_delay_ms: 10,
            base_delay_ms: 50,
            max_delay_ms: 2_000,
            ..BackoffConfig::default()
        },
        retry_budget: budget,
        ..QueueConfig::default()
    };
    let mut q = PublishQueue::new(config, 7, t0);
    let channel = ChannelName::new("global").unwrap();

    // Absolute push times.
    let mut at = t0;
    let mut pending_pushes: Vec<(Instant, usize)> = Vec::new();
    for (i, p) in s.pushes.iter().enumerate() {
        at += Duration::from_millis(p.gap_ms);
        pending_pushes.push((at, i));
    }
    pending_pushes.reverse();

    let mut now = t0;
    let mut pushed: HashMap<String, Pushed> = HashMap::new();
    let mut by_ticket: HashMap<Ticket, String> = HashMap::new();
    let mut sends: HashMap<String, u32> = HashMap::new();
    let mut completed: HashMap<Ticket, bool> = HashMap::new();
    // Cancellations still to make (time, push index), and the tickets withdrawn.
    let mut cancels: BTreeMap<(Instant, usize), ()> = BTreeMap::new();
    let mut withdrawn: HashSet<Ticket> = HashSet::new();
    // The server: id -> offset of the stored event.
    let mut stored: HashMap<String, u64> = HashMap::new();
    let mut next_offset = 0u64;
    // Batches awaiting delivery of their answer: due time -> (batch, ids, behaviour).
    let mut outstanding: BTreeMap<(Instant, u64), (BatchId, Vec<String>, Behaviour)> =
        BTreeMap::new();
    let mut behaviours = s.behaviours.iter();
    let mut announced_deadline = t0;

    for _step in 0..200_000 {
        // Pushes that are due.
        while pending_pushes.last().is_some_and(|(t, _)| *t <= now) {
            let (_, i) = pending_pushes.pop().unwrap();
            let p = &s.pushes[i];
            let id = format!("ev{i}");
            let event = Event::new(
                &id,
                "custom.thing",
                channel.clone(),
                &serde_json::json!({"i": i}),
                Metadata::default(),
            );
            let json = serde_json::to_string(&event).unwrap();
            let ticket = q
                .push(
                    event,
                    PublishOptions {
                        priority: p.priority,
                        retry: p.retry,
                    },
                    now,
                )
                .map_err(|e| TestCaseError::fail(format!("push refused: {e}")))?;
            by_ticket.insert(ticket, id.clone());
            if let Some(ms) = p.cancel_after_ms {
                cancels.insert((now + Duration::from_millis(ms), i), ());
            }
            pushed.insert(
                id,
                Pushed {
                    ticket,
                    priority: p.priority,
                    retry: p.retry,
                    json,
                },
            );
        }

        // Cancellations that are due: withdrawn exactly when never sent.
        while let Some(entry) = cancels.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, i), ()) = entry.remove_entry();
            let id = format!("ev{i}");
            let ticket = pushed[&id].ticket;
            let never_sent = !sends.contains_key(&id);
            prop_assert_eq!(q.cancel(ticket), never_sent, "cancel of {}", id);
            if never_sent {
                withdrawn.insert(ticket);
            }
        }

        // Answers that are due.
        while let Some(entry) = outstanding.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (batch, ids, behaviour) = entry.remove();
            let mut store = |id: &str| -> BatchItemResult {
                match stored.get(id) {
                    Some(&off) => BatchItemResult::duplicate(id, "global", "E", off),
                    None => {
                        stored.insert(id.to_owned(), next_offset);
                        next_offset += 1;
                        BatchItemResult::accepted(id, "global", "E", next_offset - 1)
                    }
                }
            };
            let response = match behaviour {
                Behaviour::AcceptAll => {
                    let results = ids.iter().map(|id| store(id)).collect();
                    http(
                        200,
                        vec![],
                        serde_json::to_string(&BatchResponseBody { results }).unwrap(),
                    )
                }
                Behaviour::Mixed(items) => {
                    let mut results = Vec::new();
                    for (i, id) in ids.iter().enumerate() {
                        results.push(match items[i % items.len()] {
                            Item::Accept => store(id),
                            Item::Invalid => {
                                let mut e = ErrorBody::new(ErrorCode::InvalidEvent, "bad");
                                e.field = Some("data.i".into());
                                BatchItemResult::rejected(id, Some("global".into()), e)
                            }
                            Item::RateLimited(ms) => {
                                let mut e =
                                    ErrorBody::new(ErrorCode::RateLimitExceeded, "slow down");
                                e.retry_after_ms = Some(ms);
                                announced_deadline =
                                    announced_deadline.max(now + Duration::from_millis(ms));
                                BatchItemResult::rejected(id, None, e)
                            }
                            Item::Unavailable => BatchItemResult::rejected(
                                id,
                                None,
                                ErrorBody::new(ErrorCode::Unavailable, "busy"),
                            ),
                        });
                    }
                    http(
                        200,
                        vec![],
                        serde_json::to_string(&BatchResponseBody { results }).unwrap(),
                    )
                }
                Behaviour::TooMany { retry_after_s } => {
                    announced_deadline =
                        announced_deadline.max(now + Duration::from_secs(retry_after_s));
                    let body = ErrorResponse {
                        error: ErrorBody::new(ErrorCode::RateLimitExceeded, "too many"),
                    };
                    http(
                        429,
                        vec![
                            ("Retry-After".into(), retry_after_s.to_string()),
                            ("X-RateLimit-Limit".into(), "10".into()),
                        ],
                        serde_json::to_string(&body).unwrap(),
                    )
                }
                Behaviour::Unavailable => http(503, vec![], String::new()),
                Behaviour::Transport => TransportResult::Failed("connection reset".into()),
                Behaviour::AcceptedThenLost => {
                    for id in &ids {
                        store(id);
                    }
                    TransportResult::Failed("timed out".into())
                }
                Behaviour::BadRequest => {
                    let body = ErrorResponse {
                        error: ErrorBody::new(ErrorCode::BadRequest, "malformed"),
                    };
                    http(400, vec![], serde_json::to_string(&body).unwrap())
                }
                Behaviour::Garbage => http(200, vec![], "{\"results\":".into()),
                Behaviour::WrongCount => http(200, vec![], "{\"results\":[]}".into()),
            };
            q.handle_response(batch, response, now, wall);
        }

        // Everything the queue wants to send now.
        while let Some(b) = q.poll_transmit(now) {
            prop_assert!(
                now >= announced_deadline,
                "batch handed out {:?} before a Retry-After deadline",
                announced_deadline - now
            );
            let req: BatchRequest = serde_json::from_str(&b.body)
                .map_err(|e| TestCaseError::fail(format!("body: {e}")))?;
            prop_assert_eq!(req.events.len(), b.count);
            prop_assert!(b.count >= 1 && b.count <= s.max_batch_events);
            let mut ids = Vec::new();
            let mut last: Option<(Priority, Ticket)> = None;
            for e in &req.events {
                let p = pushed
                    .get(&e.id)
                    .ok_or_else(|| TestCaseError::fail(format!("unknown id {}", e.id)))?;
                // Same id, same bytes, on every attempt.
                prop_assert_eq!(&serde_json::to_string(e).unwrap(), &p.json);
                let n = sends.entry(e.id.clone()).or_default();
                *n += 1;
                prop_assert!(*n <= s.max_attempts, "{} sent {} times", e.id, n);
                prop_assert!(
                    p.retry || *n == 1,
                    "{} has retry: false but was sent again",
                    e.id
                );
                prop_assert!(
                    !completed.contains_key(&p.ticket),
                    "{} sent after it completed",
                    e.id
                );
                prop_assert!(
                    !withdrawn.contains(&p.ticket),
                    "{} sent after it was withdrawn",
                    e.id
                );
                // Priority order, then push order, within a batch.
                if let Some((lp, lt)) = last {
                    prop_assert!(
                        lp < p.priority || (lp == p.priority && lt < p.ticket),
                        "batch out of order"
                    );
                }
                last = Some((p.priority, p.ticket));
                ids.push(e.id.clone());
            }
            if s.budget.is_none() {
                // High priority never waits behind low: nothing more urgent than the least
                // urgent event of this batch is left queued.
                let least = req
                    .events
                    .iter()
                    .map(|e| pushed[&e.id].priority)
                    .max()
                    .unwrap();
                let st = q.stats(now);
                let queued = [st.queued_high, st.queued_normal, st.queued_low];
                for (p, n) in Priority::ALL.iter().zip(queued) {
                    prop_assert!(
                        !(*p < least && n > 0),
                        "{n} {p} events left behind a {least} batch"
                    );
                }
            }
            let (behaviour, latency) = behaviours
                .next()
                .cloned()
                .unwrap_or((Behaviour::AcceptAll, 5));
            outstanding.insert(
                (now + Duration::from_millis(latency), b.id.0),
                (b.id, ids, behaviour),
            );
        }

        // Outcomes.
        while let Some(c) = q.poll_completion() {
            let id = by_ticket
                .get(&c.ticket)
                .ok_or_else(|| TestCaseError::fail("unknown ticket"))?;
            prop_assert!(
                completed.insert(c.ticket, c.result.is_ok()).is_none(),
                "ticket {} completed twice",
                c.ticket
            );
            match &c.result {
                Ok(r) => {
                    prop_assert_eq!(&r.id, id);
                    prop_assert_eq!(
                        Some(&r.offset),
                        stored.get(id),
                        "acknowledged but not stored"
                    );
                    prop_assert_eq!(Some(&r.attempts), sends.get(id));
                }
                Err(Error::Refused(_) | Error::Transport(_)) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }

        // Never a deadline in the past with nothing to send (that would spin a driver).
        let timer = q.poll_timeout();
        if let Some(t) = timer {
            prop_assert!(
                t > now,
                "poll_timeout is due but poll_transmit gave nothing"
            );
        }
        let next = [
            pending_pushes.last().map(|(t, _)| *t),
            cancels.first_key_value().map(|(k, _)| k.0),
            outstanding.first_key_value().map(|(k, _)| k.0),
            timer,
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) => {
                now = now.max(t);
                q.handle_timeout(now);
            }
            None => break,
        }
    }

    prop_assert!(
        pending_pushes.is_empty() && outstanding.is_empty() && cancels.is_empty(),
        "did not reach quiescence"
    );
    prop_assert!(
        q.is_flushed(),
        "not flushed at quiescence: {:?}",
        q.stats(now)
    );
    prop_assert!(
        withdrawn.iter().all(|t| !completed.contains_key(t)),
        "a withdrawn ticket completed"
    );
    prop_assert_eq!(
        completed.len() + withdrawn.len(),
        s.pushes.len(),
        "every ticket completes or was withdrawn"
    );
    let st = q.stats(now);
    let acked = completed.values().filter(|ok| **ok).count() as u64;
    prop_assert_eq!(st.acknowledged, acked);
    prop_assert_eq!(st.dead, completed.len() as u64 - acked);
    let dead: HashSet<Ticket> = q.dead_letters().iter().map(|d| d.ticket).collect();
    let failed: HashSet<Ticket> = completed
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(t, _)| *t)
        .collect();
    prop_assert_eq!(dead, failed, "dead letters are exactly the failed tickets");
    for d in q.dead_letters() {
        prop_assert_eq!(Some(&d.attempts), sends.get(&d.event.id));
        prop_assert!(!d.code().is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_ticket_completes_once_with_a_generous_budget(s in scenario(false)) {
        run(&s)?;
    }

    #[test]
    fn every_ticket_completes_once_with_a_tight_budget(s in scenario(true)) {
        run(&s)?;
    }
}
