//! Reading a `POST /publish/batch` body of 100 `backtest.progress` events into events
//! (with the id, channel and type each answer and the request log need), two ways in one
//! run:
//!
//! - `serde_passes`: how the reference server (`courier-server`'s `http.rs`) read it until
//!   the core's wire module took over, kept here as the baseline: serde_json into raw events, then per event a peek at `id` and
//!   `channel`, a peek at `type`, and serde_path_to_error into an [`Event`].
//! - `one_pass`: [`BatchRequest::read_items`], one pass with the core's reader (what the
//!   server does now).
//!
//! In courier-core rather than the server so that it builds without the server's stack.
//! Run: `cargo bench -p courier-core --bench publish_body`.

use std::hint::black_box;

use courier_core::Event;
use courier_core::wire::{BatchRequest, EventItem};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use serde_json::value::RawValue;

fn body(events: usize) -> String {
    let one = |i: usize| {
        format!(
            r#"{{"id":"01JD3Z8Q4W6X9V2N5R7T1K{i:04}","type":"backtest.progress","channel":"backtest.bt-2024-0042","data":{{"backtest_id":"bt-2024-0042","percent":42.5,"processed":1250,"total":2940,"message":"simulating 2023-06-14"}},"metadata":{{"timestamp":1732300000000,"source":"backtester","correlation_id":"run-7"}}}}"#
        )
    };
    let events: Vec<String> = (0..events).map(one).collect();
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

/// What the server needs of each event before publishing it.
struct Read {
    id: String,
    channel: Option<String>,
    event_type: String,
    event: Result<Event, String>,
}

// ---- the former reading, copied from `http.rs` as it was ----

#[derive(Deserialize)]
struct RawBatchRequest {
    events: Vec<Box<RawValue>>,
}

fn peek_type(text: &str) -> String {
    #[derive(Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        event_type: Option<serde_json::Value>,
    }
    serde_json::from_str::<TypeOnly>(text)
        .ok()
        .and_then(|t| t.event_type)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn parse_event(text: &str) -> Result<Event, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let event: Event = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.into_inner())
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(event)
}

fn serde_passes(text: &str) -> Vec<Read> {
    let batch: RawBatchRequest = serde_json::from_str(text).unwrap();
    batch
        .events
        .iter()
        .map(|raw| {
            let text = raw.get();
            #[derive(Deserialize, Default)]
            struct Peek {
                #[serde(default)]
                id: serde_json::Value,
                #[serde(default)]
                channel: serde_json::Value,
            }
            let peek: Peek = serde_json::from_str(text).unwrap_or_default();
            Read {
                id: peek.id.as_str().unwrap_or_default().to_owned(),
                channel: peek.channel.as_str().map(str::to_owned),
                event_type: peek_type(text),
                event: parse_event(text),
            }
        })
        .collect()
}

// ---- the core's one pass ----

fn one_pass(text: &str) -> Vec<Read> {
    let items = BatchRequest::read_items(text).unwrap();
    items
        .into_iter()
        .map(|item: EventItem| Read {
            id: item.id.clone().unwrap_or_default(),
            channel: item.channel.clone(),
            event_type: item.event_type.clone().unwrap_or_default(),
            event: item.into_event().map_err(|f| f.message),
        })
        .collect()
}

fn publish_body(c: &mut Criterion) {
    let text = body(100);
    // Both ways read the same events.
    let (a, b) = (serde_passes(&text), one_pass(&text));
    assert_eq!(a.len(), 100);
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(
            (&a.id, &a.channel, &a.event_type),
            (&b.id, &b.channel, &b.event_type)
        );
        assert_eq!(a.event.as_ref().unwrap(), b.event.as_ref().unwrap());
    }
    let mut group = c.benchmark_group("publish_batch_body_100_events");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("serde_passes", |b| {
        b.iter(|| black_box(serde_passes(black_box(&text))))
    });
    group.bench_function("one_pass", |b| {
        b.iter(|| black_box(one_pass(black_box(&text))))
    });
    group.finish();
}

criterion_group!(benches, publish_body);
criterion_main!(benches);
