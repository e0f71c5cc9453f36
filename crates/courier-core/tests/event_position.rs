//! `Client::handle_event_position` (the WASM driver's hot path: the host parses the frame,
//! only its position crosses) against the oracle `Client::handle_frame` with the whole frame:
//! for any sequence of event frames — in order, duplicated, skipped, of another epoch, on a
//! channel nobody subscribes to, with one or two listeners, with flow control on or off —
//! both clients hand the same events to the same listeners with the same outputs in between
//! (gaps, pauses) and end with the same stats.

use std::time::Instant;

use courier_core::client::{Client, ClientConfig, ListenerId, Output};
use proptest::prelude::*;

const CHANNELS: [&str; 3] = ["backtest.a", "backtest.b", "backtest.nobody"];

/// One frame of the script: (channel index, epoch index, offset).
type Step = (usize, usize, u64);

fn frame((channel, epoch, offset): Step) -> String {
    format!(
        r#"{{"op":"event","epoch":"E{epoch}","offset":{offset},"event":{{"id":"id-{offset}","type":"x.y","channel":"{}","data":{{}},"metadata":{{"timestamp":1}}}}}}"#,
        CHANNELS[channel]
    )
}

/// A client subscribed to `backtest.a` (twice when `two`) and `backtest.b`, connected and
/// live at offset 0 of epoch `E0` on both.
fn live_client(buffer: Option<usize>, two: bool, now: Instant) -> Client {
    let config = ClientConfig {
        subscription_buffer: buffer,
        ..ClientConfig::default()
    };
    let mut c = Client::new(config, 7, now);
    c.subscribe("backtest.a", None, now).unwrap();
    if two {
        c.subscribe("backtest.a", None, now).unwrap();
    }
    c.subscribe("backtest.b", None, now).unwrap();
    c.handle_token(Ok("t".into()), now);
    c.handle_socket_open(now);
    c.handle_frame(
        r#"{"op":"connected","session":"s","epoch":"E0","ping_interval_ms":15000,"limits":{"max_payload_bytes":1000,"max_frame_bytes":100000,"max_subscriptions":10}}"#,
        now,
    );
    for (id, channel) in [(1, "backtest.a"), (2, "backtest.b")] {
        c.handle_frame(
            &format!(r#"{{"op":"subscribed","id":{id},"channel":"{channel}","recovered":true,"epoch":"E0","offset":0}}"#),
            now,
        );
    }
    while c.poll(now).is_some() {}
    c
}

/// What a host sees: outputs other than events as they are, events as (listener, offset).
#[derive(Debug, PartialEq)]
enum Seen {
    Event(ListenerId, u64),
    Other(String),
}

fn other(o: Output, out: &mut Vec<Seen>) {
    match o {
        Output::Event { listener, delivery } => out.push(Seen::Event(listener, delivery.offset)),
        o => out.push(Seen::Other(format!("{o:?}"))),
    }
}

fn run(buffer: Option<usize>, two: bool, steps: &[Step], by_position: bool) -> (Vec<Seen>, String) {
    let now = Instant::now();
    let mut c = live_client(buffer, two, now);
    let mut seen = Vec::new();
    for &step in steps {
        if by_position {
            let (channel, epoch, offset) = step;
            let listeners = c
                .handle_event_position(CHANNELS[channel], &format!("E{epoch}"), offset, now)
                .to_vec();
            // Outputs it caused come first (a gap), then the event, then the rest: the
            // order a driver hands them out in, the same as the frame path's.
            let mut after = Vec::new();
            while let Some(o) = c.poll(now) {
                if matches!(o, Output::Gap { .. }) {
                    other(o, &mut seen);
                } else {
                    after.push(o);
                }
            }
            seen.extend(listeners.iter().map(|&l| Seen::Event(l, offset)));
            for o in after {
                other(o, &mut seen);
            }
        } else {
            c.handle_frame(&frame(step), now);
            while let Some(o) = c.poll(now) {
                other(o, &mut seen);
            }
        }
    }
    (seen, format!("{:?}", c.stats(now)))
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Mostly the next offset, sometimes a repeat, a skip or another epoch.
    prop::collection::vec(
        (
            0..3usize,
            prop::sample::select(vec![0usize, 0, 0, 0, 1]),
            0..12u64,
        ),
        0..40,
    )
}

proptest! {
    #[test]
    fn the_position_path_decides_like_the_whole_frame(
        steps in steps(),
        buffer in prop::option::of(1..4usize),
        two in any::<bool>(),
    ) {
        let by_frame = run(buffer, two, &steps, false);
        let by_position = run(buffer, two, &steps, true);
        prop_assert_eq!(by_frame, by_position);
    }
}

#[test]
fn an_event_before_connected_is_ignored_by_both_paths() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default(), 7, now);
    c.subscribe("backtest.a", None, now).unwrap();
    c.handle_token(Ok("t".into()), now);
    c.handle_socket_open(now);
    assert!(
        c.handle_event_position("backtest.a", "E0", 1, now)
            .is_empty()
    );
    assert_eq!(c.stats(now).events_received, 0);
}
