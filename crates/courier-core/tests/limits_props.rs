//! Property tests of the per-bucket limits through the publish queue, against an
//! independent model of the server's buckets (integer milliseconds, written here from the
//! contract, not from the core):
//!
//! - no bucket ever gets more than `q + b − 1` events within any window `[t, t + w)`;
//! - after the queue has handed out everything it would at `now`, no queued event is
//!   admitted by all of its own buckets (an event of a bucket with capacity is never held by
//!   another bucket's exhaustion), and the queue's timer is never later than the first
//!   moment the model admits a queued event.

use std::collections::{BTreeMap, HashMap};

use courier_core::event::{Event, Metadata};
use courier_core::queue::{PublishOptions, PublishQueue, QueueConfig, TransportResult};
use courier_core::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use courier_core::wire::{BatchItemResult, BatchRequest, BatchResponseBody};
use courier_core::{ChannelName, Priority};
use proptest::prelude::*;

/// One bucket of the model: `T` and `b` in whole milliseconds / cells.
#[derive(Debug, Clone, Copy)]
struct Rule {
    quota: u64,
    interval_ms: u64,
    burst: Option<u64>,
}

impl Rule {
    fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.quota).max(1)
    }
    fn window_ms(&self) -> u64 {
        self.quota * self.interval_ms
    }
    fn tolerance(&self) -> u64 {
        (self.burst() - 1) * self.interval_ms
    }
}

/// The server's buckets as the contract describes them.
#[derive(Debug, Default)]
struct Model {
    rules: BTreeMap<&'static str, Rule>,
    tat: HashMap<&'static str, u64>,
    sends: HashMap<&'static str, Vec<u64>>,
}

impl Model {
    /// The buckets an event type is charged to (the test's table has rows `a` and `b`).
    fn buckets(&self, event_type: &str) -> Vec<&'static str> {
        let own = if event_type == "a" || event_type.starts_with("a.") {
            "type:a"
        } else if event_type == "b" || event_type.starts_with("b.") {
            "type:b"
        } else {
            "fallback"
        };
        ["user", own]
            .into_iter()
            .filter(|b| self.rules.contains_key(b))
            .collect()
    }

    /// When bucket `b` next admits, at or after `t`.
    fn admit_at(&self, b: &str, t: u64) -> u64 {
        let rule = self.rules[b];
        self.tat
            .get(b)
            .map_or(t, |tat| tat.saturating_sub(rule.tolerance()).max(t))
    }

    fn event_admit_at(&self, event_type: &str, t: u64) -> u64 {
        self.buckets(event_type)
            .into_iter()
            .map(|b| self.admit_at(b, t))
            .max()
            .unwrap_or(t)
    }

    fn charge(&mut self, event_type: &str, t: u64) {
        for b in self.buckets(event_type) {
            let rule = self.rules[b];
            let tat = self.tat.get(b).copied().unwrap_or(t).max(t);
            self.tat.insert(b, tat + rule.interval_ms);
            self.sends.entry(b).or_default().push(t);
        }
    }

    fn policy_header(&self) -> String {
        self.rules
            .iter()
            .map(|(name, r)| {
                let w = r.window_ms();
                let mut m = format!("\"{name}\";q={};w={}.{:03}", r.quota, w / 1000, w % 1000);
                if let Some(b) = r.burst {
                    m.push_str(&format!(";burst={b}"));
                }
                m
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn rule() -> impl Strategy<Value = Rule> {
    (1u64..6, 20u64..400, prop::option::of(1u64..8)).prop_map(|(quota, interval_ms, burst)| Rule {
        quota,
        interval_ms,
        burst,
    })
}

const TYPES: [&str; 5] = ["a", "a.x", "b.y", "custom.c", "custom.d"];

#[derive(Debug, Clone)]
struct Scenario {
    user: Option<Rule>,
    a: Rule,
    b: Rule,
    fallback: Option<Rule>,
    /// (gap before the push in ms, index into TYPES, priority)
    pushes: Vec<(u64, usize, u8)>,
    max_batch_events: usize,
    linger_ms: u64,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::option::of(rule()),
        rule(),
        rule(),
        prop::option::of(rule()),
        prop::collection::vec(
            (
                prop_oneof![3 => Just(0u64), 2 => 0u64..300],
                0usize..5,
                0u8..3,
            ),
            1..60,
        ),
        1usize..5,
        0u64..4,
    )
        .prop_map(
            |(user, a, b, fallback, pushes, max_batch_events, linger_ms)| Scenario {
                user,
                a,
                b,
                fallback,
                pushes,
                max_batch_events,
                linger_ms,
            },
        )
}

fn ok_response(body: &str) -> TransportResult {
    let req: BatchRequest = serde_json::from_str(body).unwrap();
    let results = req
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| BatchItemResult::accepted(&e.id, "global", "E", i as u64))
        .collect();
    TransportResult::Http {
        status: 200,
        headers: vec![],
        body: serde_json::to_string(&BatchResponseBody { results }).unwrap(),
    }
}

fn run(s: &Scenario) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    if let Some(r) = s.user {
        model.rules.insert("user", r);
    }
    model.rules.insert("type:a", s.a);
    model.rules.insert("type:b", s.b);
    if let Some(r) = s.fallback {
        model.rules.insert("fallback", r);
    }
    let t0 = Instant::now();
    let wall: SystemTime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let config = QueueConfig {
        max_batch_events: s.max_batch_events,
        linger_ms: s.linger_ms,
        max_in_flight: 1_000,
        ..QueueConfig::default()
    };
    let mut q = PublishQueue::new(config, 3, t0);
    let channel = ChannelName::new("global").unwrap();
    let event = |id: String, ty: &str| {
        Event::new(
            id,
            ty,
            channel.clone(),
            &serde_json::json!({}),
            Metadata::default(),
        )
    };

    // Warm-up: the first answer teaches the table. The server charged the warm-up like any
    // event, so the model does too, and the queue must count it once it learns the table.
    q.push(
        event("warm".into(), "warm.up"),
        PublishOptions::default(),
        t0,
    )
    .unwrap();
    let warm = q
        .poll_transmit(t0)
        .expect("nothing in flight: sent at once");
    let TransportResult::Http { body, .. } = ok_response(&warm.body) else {
        unreachable!()
    };
    let headers = vec![("RateLimit-Policy".to_owned(), model.policy_header())];
    q.handle_response(
        warm.id,
        TransportResult::Http {
            status: 200,
            headers,
            body,
        },
        t0,
        wall,
    );
    while q.poll_completion().is_some() {}
    model.charge("warm.up", 0);

    let mut pending: Vec<(u64, usize, String, Priority)> = Vec::new();
    let mut t = 0u64;
    for (i, (gap, ty, p)) in s.pushes.iter().enumerate() {
        t += gap;
        let priority = Priority::ALL[usize::from(*p)];
        pending.push((t, *ty, format!("e{i}"), priority));
    }
    pending.reverse();
    // Queued in the queue: id -> type.
    let mut queued: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut now = 0u64;
    for _ in 0..100_000 {
        while pending.last().is_some_and(|(pt, ..)| *pt <= now) {
            let (_, ty, id, priority) = pending.pop().unwrap();
            q.push(
                event(id.clone(), TYPES[ty]),
                PublishOptions::with_priority(priority),
                at(now),
            )
            .unwrap();
            queued.insert(id, TYPES[ty]);
        }
        while let Some(b) = q.poll_transmit(at(now)) {
            let req: BatchRequest = serde_json::from_str(&b.body).unwrap();
            for e in &req.events {
                let ty = queued
                    .remove(&e.id)
                    .ok_or_else(|| TestCaseError::fail(format!("{} sent twice", e.id)))?;
                let due = model.event_admit_at(ty, now);
                prop_assert!(
                    due <= now,
                    "{} ({ty}) sent at {now} ms, its buckets admit it at {due} ms",
                    e.id
                );
                model.charge(ty, now);
            }
            q.handle_response(b.id, ok_response(&b.body), at(now), wall);
        }
        while q.poll_completion().is_some() {}
        // Nothing admitted by its own buckets is left behind, and the timer is not late.
        let first_due = queued
            .iter()
            .map(|(id, ty)| (model.event_admit_at(ty, now), id))
            .min();
        if let Some((due, id)) = first_due {
            prop_assert!(
                due > now,
                "{id} ({}) held at {now} ms though its buckets admit it",
                queued[id]
            );
            let timer = q.poll_timeout().map(|i| (i - t0).as_millis() as u64);
            prop_assert!(
                timer.is_some_and(|tm| tm <= due),
                "timer {timer:?} ms, but {id} is admitted at {due} ms"
            );
        }
        let next = [
            pending.last().map(|p| p.0),
            q.poll_timeout().map(|i| (i - t0).as_millis() as u64),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(n) => now = now.max(n),
            None => break,
        }
    }
    prop_assert!(queued.is_empty() && pending.is_empty(), "not drained");

    // The GCRA bound per bucket: at most q + b − 1 within any [t, t + w).
    for (name, times) in &model.sends {
        let rule = model.rules[name];
        let bound = rule.quota + rule.burst() - 1;
        for (i, start) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .take_while(|t| **t < start + rule.window_ms())
                .count() as u64;
            prop_assert!(
                n <= bound,
                "{name}: {n} sends in [{start}, +{}) > {bound}",
                rule.window_ms()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn buckets_admit_no_more_than_the_server_and_hold_nothing_needlessly(s in scenario()) {
        run(&s)?;
    }
}
