//! A client `Connection` against a scripted in-memory server on simulated time: reconnect
//! loops, resume and gaps, without sleeping (the quinn-proto `Pair` idea).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use courier_core::connection::{Connection, ConnectionConfig, GapReason, Output, State};
use courier_core::frame::{ClientFrame, Delivery, Limits, ServerFrame};
use courier_core::{ChannelName, Event, Metadata, StreamPosition};
use proptest::prelude::*;

/// What the server held of a channel when it answered a `subscribe`: offsets `lo ..= hi` of
/// `epoch` (none when `lo > hi`).
#[derive(Debug, Clone, PartialEq)]
struct Held {
    epoch: String,
    lo: u64,
    hi: u64,
}

impl Held {
    fn holds(&self, epoch: &str, offset: u64) -> bool {
        self.epoch == epoch && (self.lo..=self.hi).contains(&offset)
    }
}

/// The server side: history per channel, one socket at a time. Follows the resume rule of
/// docs/protocol.md: `subscribed` carries `replay_from`, and a stale epoch or a `since`
/// older than the history replays from the oldest event still held.
struct Server {
    epoch: String,
    restarts: u32,
    /// Every event of the current epoch, by offset (index `offset - 1`), trimmed or not.
    history: BTreeMap<ChannelName, Vec<Delivery>>,
    /// Oldest offset still held (older ones were trimmed).
    trimmed_below: u64,
    /// `false`: a server from before `replay_from` (no field, nothing replayed when it
    /// cannot recover).
    send_replay_from: bool,
    socket_open: bool,
    subscribed: Vec<ChannelName>,
    to_client: Vec<String>,
    connects: u32,
    /// What the last answered `subscribe` found held.
    last_subscribe: Option<Held>,
    /// Every event ever published, in order: `(epoch, offset)`.
    published: Vec<(String, u64)>,
    /// Every epoch, in order.
    epochs: Vec<String>,
}

impl Server {
    fn new() -> Self {
        Self {
            epoch: "E1".into(),
            restarts: 0,
            history: BTreeMap::new(),
            trimmed_below: 1,
            send_replay_from: true,
            socket_open: false,
            subscribed: vec![],
            to_client: vec![],
            connects: 0,
            last_subscribe: None,
            published: vec![],
            epochs: vec!["E1".into()],
        }
    }

    fn publish(&mut self, channel: &ChannelName, n: u64) {
        let log = self.history.entry(channel.clone()).or_default();
        let offset = log.len() as u64 + 1;
        let data = serde_json::json!({"backtest_id": "a", "percent": n % 101});
        let event = Event::new(
            format!("e{offset}"),
            "backtest.progress",
            channel.clone(),
            &data,
            Metadata::default(),
        );
        let d = Delivery {
            epoch: self.epoch.clone(),
            offset,
            event,
        };
        log.push(d.clone());
        self.published.push((self.epoch.clone(), offset));
        if self.socket_open && self.subscribed.contains(channel) {
            self.to_client.push(ServerFrame::Event(d).encode());
        }
    }

    fn latest(&self, channel: &ChannelName) -> u64 {
        self.history.get(channel).map_or(0, |l| l.len() as u64)
    }

    /// Keeps only the newest `keep` events of `channel`.
    fn trim(&mut self, channel: &ChannelName, keep: u64) {
        let below = (self.latest(channel) + 1).saturating_sub(keep);
        self.trimmed_below = self.trimmed_below.max(below);
    }

    fn receive(&mut self, text: &str) {
        match ClientFrame::decode(text, 1 << 20).unwrap() {
            ClientFrame::Connect { .. } => {
                self.connects += 1;
                self.to_client.push(
                    ServerFrame::Connected {
                        session: "s".into(),
                        epoch: self.epoch.clone(),
                        ping_interval_ms: 1000,
                        limits: Limits::default(),
                    }
                    .encode(),
                );
            }
            ClientFrame::Subscribe { id, channel, since } => {
                let log = self.history.get(&channel).cloned().unwrap_or_default();
                let latest = log.len() as u64;
                // The oldest offset held, or latest + 1 when nothing is.
                let oldest = self.trimmed_below.min(latest + 1);
                let (recovered, replay_from) = match &since {
                    None => (true, latest + 1),
                    Some(p)
                        if p.epoch == self.epoch
                            && (p.offset + 1 >= self.trimmed_below || p.offset >= latest) =>
                    {
                        (true, p.offset.min(latest) + 1)
                    }
                    Some(_) if self.send_replay_from => (false, oldest),
                    Some(_) => (false, latest + 1),
                };
                self.last_subscribe = Some(Held {
                    epoch: self.epoch.clone(),
                    lo: oldest,
                    hi: latest,
                });
                self.to_client.push(
                    ServerFrame::Subscribed {
                        id,
                        channel: channel.clone(),
                        recovered,
                        epoch: self.epoch.clone(),
                        offset: latest,
                        replay_from: self.send_replay_from.then_some(replay_from),
                    }
                    .encode(),
                );
                for d in log.iter().filter(|d| d.offset >= replay_from) {
                    self.to_client.push(ServerFrame::Event(d.clone()).encode());
                }
                self.subscribed.push(channel);
            }
            ClientFrame::Pong | ClientFrame::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    fn drop_socket(&mut self) {
        self.socket_open = false;
        self.subscribed.clear();
        self.to_client.clear();
    }

    /// Restart without persistence: a new epoch, history gone.
    fn restart(&mut self) {
        self.drop_socket();
        self.restarts += 1;
        self.epoch = format!("E{}", self.restarts + 1);
        self.epochs.push(self.epoch.clone());
        self.history.clear();
        self.trimmed_below = 1;
    }
}

/// What the application saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// `subscribed`, with what the server held when it answered.
    Subscribed(Held),
    Gap {
        last: Option<StreamPosition>,
        position: StreamPosition,
        reason: GapReason,
    },
    Event(String, u64),
}

struct Pair {
    client: Connection,
    server: Server,
    now: Instant,
    delivered: Vec<(String, u64)>,
    gaps: Vec<GapReason>,
    seen: Vec<Seen>,
}

impl Pair {
    fn new(seed: u64) -> Self {
        let mut config = ConnectionConfig::default();
        config.backoff.max_delay_ms = 2_000;
        let mut client = Connection::new(config, seed);
        let now = Instant::now();
        client
            .subscribe(ChannelName::new("backtest.a").unwrap(), None, now)
            .unwrap();
        client.connect(now);
        let mut pair = Self {
            client,
            server: Server::new(),
            now,
            delivered: vec![],
            gaps: vec![],
            seen: vec![],
        };
        pair.settle();
        pair
    }

    /// Drives both sides until nothing moves, advancing simulated time to each timer.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(out) = self.client.poll() {
                moved = true;
                match out {
                    Output::FetchToken { .. } => self.client.handle_token(Ok("t".into()), self.now),
                    Output::OpenTransport => {
                        self.server.socket_open = true;
                        self.client.handle_transport_open(self.now);
                    }
                    Output::Send(text) => self.server.receive(&text),
                    Output::CloseTransport { .. } => self.server.drop_socket(),
                    Output::Subscribed { .. } => {
                        let held = self.server.last_subscribe.clone().expect("answered");
                        self.seen.push(Seen::Subscribed(held));
                    }
                    Output::Event(d) => {
                        self.seen.push(Seen::Event(d.epoch.clone(), d.offset));
                        self.delivered.push((d.epoch, d.offset));
                    }
                    Output::Gap {
                        last,
                        position,
                        reason,
                        ..
                    } => {
                        self.seen.push(Seen::Gap {
                            last,
                            position,
                            reason,
                        });
                        self.gaps.push(reason);
                    }
                    _ => {}
                }
            }
            for text in std::mem::take(&mut self.server.to_client) {
                moved = true;
                self.client.handle_text(&text, self.now);
            }
            if !moved {
                if self.client.state() == State::Connected {
                    return;
                }
                let Some(t) = self.client.poll_timeout() else {
                    return;
                };
                self.now = self.now.max(t);
                self.client.handle_timeout(self.now);
            }
        }
        panic!("did not settle");
    }

    fn drop_connection(&mut self) {
        self.server.drop_socket();
        self.client
            .handle_transport_closed(None, "dropped", self.now);
        self.settle();
    }

    /// The resume contract (CONTRACT.md §1), checked on everything the application saw:
    /// - events are delivered in order (epochs in the server's order, offsets rising within
    ///   one), hence never twice;
    /// - a gap comes right after a `subscribed`, at most one per (re)subscription;
    /// - a gap names (everything after `last` up to `position`) only events the server no
    ///   longer held when it answered that `subscribe`;
    /// - every event published is either delivered or named by a gap, never both;
    /// - every event the server held when it answered a `subscribe` is delivered.
    fn check_resume_contract(&self) -> Result<(), String> {
        let epochs = &self.server.epochs;
        let key = |epoch: &str, offset: u64| {
            let e = epochs.iter().position(|x| x == epoch);
            (e.unwrap_or_else(|| panic!("unknown epoch {epoch}")), offset)
        };
        for w in self.delivered.windows(2) {
            if key(&w[0].0, w[0].1) >= key(&w[1].0, w[1].1) {
                return Err(format!("{:?} delivered after {:?}", w[1], w[0]));
            }
        }
        let delivered: HashSet<&(String, u64)> = self.delivered.iter().collect();
        let mut named = HashSet::new();
        let mut held: Option<&Held> = None;
        let mut gaps_here = 0;
        for (i, item) in self.seen.iter().enumerate() {
            match item {
                Seen::Subscribed(h) => {
                    held = Some(h);
                    gaps_here = 0;
                }
                Seen::Event(..) => {}
                Seen::Gap {
                    last,
                    position,
                    reason,
                } => {
                    gaps_here += 1;
                    if gaps_here > 1 || !matches!(self.seen[i - 1], Seen::Subscribed(_)) {
                        return Err(format!("gap {i} is not the one right after subscribed"));
                    }
                    if *reason == GapReason::OffsetSkipped {
                        return Err("the server never skips an offset".into());
                    }
                    let same_epoch = last.as_ref().map(|l| l.epoch == position.epoch);
                    let expected = if same_epoch == Some(true) {
                        GapReason::HistoryUnavailable
                    } else {
                        GapReason::EpochChanged
                    };
                    if *reason != expected {
                        return Err(format!("gap {i}: {reason:?}, expected {expected:?}"));
                    }
                    let last = last.as_ref().ok_or("a gap without last")?;
                    let (from, to) = (
                        key(&last.epoch, last.offset),
                        key(&position.epoch, position.offset),
                    );
                    let held = held.expect("a gap after subscribed");
                    for (e, o) in &self.server.published {
                        let k = key(e, *o);
                        if from < k && k <= to {
                            if held.holds(e, *o) {
                                return Err(format!("gap {i} names {e}:{o}, still held"));
                            }
                            named.insert((e.clone(), *o));
                        }
                    }
                }
            }
        }
        for p in &self.server.published {
            match (delivered.contains(p), named.contains(p)) {
                (true, false) | (false, true) => {}
                (true, true) => return Err(format!("{p:?} delivered yet named missing")),
                (false, false) => return Err(format!("{p:?} neither delivered nor named")),
            }
        }
        for item in &self.seen {
            if let Seen::Subscribed(h) = item {
                for o in h.lo..=h.hi {
                    if !delivered.contains(&(h.epoch.clone(), o)) {
                        return Err(format!(
                            "{}:{o} was held at a subscribe, never delivered",
                            h.epoch
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn publish(&mut self, n: u64) {
        let channel = ChannelName::new("backtest.a").unwrap();
        for _ in 0..n {
            let k = self.server.published.len() as u64 + 1;
            self.server.publish(&channel, k);
        }
    }
}

/// Outages, restarts and trims in any order.
#[derive(Debug, Clone)]
enum Chaos {
    /// Live events.
    Publish(u8),
    /// The socket drops; before the client is back the server may restart without its
    /// history (a new epoch), take `publish` events and keep only the newest `keep`.
    Outage {
        restart: bool,
        publish: u8,
        keep: Option<u8>,
    },
    /// History trimmed to the newest events while the client is connected.
    Trim(u8),
    /// Time passes (server pings keep the connection).
    Idle(u16),
}

fn chaos() -> impl Strategy<Value = Chaos> {
    prop_oneof![
        (1u8..20).prop_map(Chaos::Publish),
        (any::<bool>(), 0u8..20, prop::option::of(0u8..15)).prop_map(|(restart, publish, keep)| {
            Chaos::Outage {
                restart,
                publish,
                keep,
            }
        }),
        (0u8..10).prop_map(Chaos::Trim),
        (1u16..5000).prop_map(Chaos::Idle),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Publish(u8),
    Drop,
    PublishWhileDown(u8),
    Idle(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u8..20).prop_map(Step::Publish),
        Just(Step::Drop),
        (1u8..20).prop_map(Step::PublishWhileDown),
        (1u16..5000).prop_map(Step::Idle),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// While history covers every outage: nothing lost, nothing duplicated, order kept.
    #[test]
    fn resume_loses_and_duplicates_nothing(seed in any::<u64>(), steps in prop::collection::vec(step(), 1..40)) {
        let mut pair = Pair::new(seed);
        let channel = ChannelName::new("backtest.a").unwrap();
        let mut published = 0u64;
        for s in steps {
            match s {
                Step::Publish(n) => { for _ in 0..n { published += 1; pair.server.publish(&channel, published); } pair.settle(); }
                Step::Drop => pair.drop_connection(),
                Step::PublishWhileDown(n) => {
                    pair.server.drop_socket();
                    for _ in 0..n { published += 1; pair.server.publish(&channel, published); }
                    pair.client.handle_transport_closed(Some(1012), "restart", pair.now);
                    pair.settle();
                }
                Step::Idle(ms) => {
                    // Server pings keep the connection alive while idle.
                    pair.now += Duration::from_millis(u64::from(ms));
                    pair.client.handle_text(&ServerFrame::Ping.encode(), pair.now);
                    pair.client.handle_timeout(pair.now);
                    pair.settle();
                }
            }
        }
        pair.settle();
        let offsets: Vec<u64> = pair.delivered.iter().map(|(_, o)| *o).collect();
        prop_assert_eq!(offsets, (1..=published).collect::<Vec<_>>());
        prop_assert!(pair.gaps.is_empty());
        prop_assert_eq!(pair.check_resume_contract(), Ok(()));
    }

    /// Across drops, restarts (epoch changes) and trims: every event the server still held
    /// when the client resubscribed is delivered once, in order; the only missing ones are
    /// those the gaps name; at most one gap per resubscription.
    #[test]
    fn resume_loses_only_what_the_server_no_longer_has(
        seed in any::<u64>(),
        steps in prop::collection::vec(chaos(), 1..40),
    ) {
        let mut pair = Pair::new(seed);
        let channel = ChannelName::new("backtest.a").unwrap();
        for s in steps {
            match s {
                Chaos::Publish(n) => {
                    pair.publish(u64::from(n));
                    pair.settle();
                }
                Chaos::Outage { restart, publish, keep } => {
                    pair.server.drop_socket();
                    if restart {
                        pair.server.restart();
                    }
                    pair.publish(u64::from(publish));
                    if let Some(keep) = keep {
                        pair.server.trim(&channel, u64::from(keep));
                    }
                    let code = if restart { None } else { Some(1012) };
                    pair.client.handle_transport_closed(code, "outage", pair.now);
                    pair.settle();
                }
                Chaos::Trim(keep) => pair.server.trim(&channel, u64::from(keep)),
                Chaos::Idle(ms) => {
                    pair.now += Duration::from_millis(u64::from(ms));
                    pair.client.handle_text(&ServerFrame::Ping.encode(), pair.now);
                    pair.client.handle_timeout(pair.now);
                    pair.settle();
                }
            }
        }
        // Live delivery goes on after whatever happened.
        pair.publish(3);
        pair.settle();
        prop_assert_eq!(pair.check_resume_contract(), Ok(()));
        let resubscribes = pair.seen.iter().filter(|s| matches!(s, Seen::Subscribed(_))).count() - 1;
        prop_assert!(pair.gaps.len() <= resubscribes);
        let last = pair.server.published.last().unwrap();
        prop_assert_eq!(pair.delivered.last(), Some(last));
    }
}

#[test]
fn restart_without_history_reports_exactly_one_gap() {
    let mut pair = Pair::new(7);
    let channel = ChannelName::new("backtest.a").unwrap();
    for n in 1..=3 {
        pair.server.publish(&channel, n);
    }
    pair.settle();
    pair.server.restart();
    pair.client
        .handle_transport_closed(Some(1012), "restart", pair.now);
    pair.settle();
    for n in 1..=2 {
        pair.server.publish(&channel, n);
    }
    pair.settle();
    assert_eq!(pair.gaps, vec![GapReason::EpochChanged]);
    let epochs: Vec<&str> = pair.delivered.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(epochs.len(), 5);
    assert_ne!(epochs[2], epochs[3]);
    let resumed = pair.client.position(&channel).unwrap();
    assert_eq!(
        resumed,
        &StreamPosition {
            epoch: epochs[4].to_owned(),
            offset: 2
        }
    );
    pair.check_resume_contract().unwrap();
}

/// The case: events published in the new epoch while the client backs off are
/// replayed (the server still has them), after one gap naming only the old epoch's tail.
#[test]
fn restart_then_events_while_down_are_replayed_after_one_gap() {
    let mut pair = Pair::new(11);
    pair.publish(3);
    pair.settle();
    pair.server.restart();
    pair.publish(4);
    pair.client
        .handle_transport_closed(None, "killed", pair.now);
    pair.settle();
    pair.publish(1);
    pair.settle();
    let e2 = pair.server.epoch.clone();
    assert_eq!(
        pair.seen[pair.seen.len() - 7..],
        [
            Seen::Subscribed(Held {
                epoch: e2.clone(),
                lo: 1,
                hi: 4
            }),
            Seen::Gap {
                last: Some(StreamPosition {
                    epoch: "E1".into(),
                    offset: 3
                }),
                position: StreamPosition {
                    epoch: e2.clone(),
                    offset: 0
                },
                reason: GapReason::EpochChanged,
            },
            Seen::Event(e2.clone(), 1),
            Seen::Event(e2.clone(), 2),
            Seen::Event(e2.clone(), 3),
            Seen::Event(e2.clone(), 4),
            Seen::Event(e2.clone(), 5),
        ]
    );
    pair.check_resume_contract().unwrap();
}

/// A restart and then a trim: the new epoch's trimmed head is part of the one gap.
#[test]
fn restart_and_trim_name_both_in_one_gap() {
    let mut pair = Pair::new(12);
    let channel = ChannelName::new("backtest.a").unwrap();
    pair.publish(2);
    pair.settle();
    pair.server.restart();
    pair.publish(10);
    pair.server.trim(&channel, 3);
    pair.client
        .handle_transport_closed(None, "killed", pair.now);
    pair.settle();
    let e2 = pair.server.epoch.clone();
    assert_eq!(pair.gaps, [GapReason::EpochChanged]);
    assert!(pair.seen.contains(&Seen::Gap {
        last: Some(StreamPosition {
            epoch: "E1".into(),
            offset: 2
        }),
        position: StreamPosition {
            epoch: e2.clone(),
            offset: 7
        },
        reason: GapReason::EpochChanged,
    }));
    assert_eq!(
        pair.delivered,
        [("E1", 1), ("E1", 2), (&*e2, 8), (&*e2, 9), (&*e2, 10)].map(|(e, o)| (e.to_owned(), o))
    );
    pair.check_resume_contract().unwrap();
}

#[test]
fn trimmed_history_reports_a_gap_and_replays_what_is_left() {
    let mut pair = Pair::new(9);
    let channel = ChannelName::new("backtest.a").unwrap();
    pair.server.publish(&channel, 1);
    pair.settle();
    pair.server.drop_socket();
    for n in 2..=10 {
        pair.server.publish(&channel, n);
    }
    pair.server.trimmed_below = 8;
    pair.client
        .handle_transport_closed(None, "dropped", pair.now);
    pair.settle();
    pair.server.publish(&channel, 11);
    pair.settle();
    assert_eq!(pair.gaps, vec![GapReason::HistoryUnavailable]);
    assert!(pair.seen.contains(&Seen::Gap {
        last: Some(StreamPosition {
            epoch: "E1".into(),
            offset: 1
        }),
        position: StreamPosition {
            epoch: "E1".into(),
            offset: 7
        },
        reason: GapReason::HistoryUnavailable,
    }));
    let offsets: Vec<u64> = pair.delivered.iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, vec![1, 8, 9, 10, 11]);
    pair.check_resume_contract().unwrap();
}

/// A server from before `replay_from`: the client keeps today's behaviour (continues at the
/// latest offset; the gap names everything up to it).
#[test]
fn a_server_without_replay_from_resumes_live_after_the_gap() {
    let mut pair = Pair::new(13);
    pair.server.send_replay_from = false;
    pair.publish(2);
    pair.settle();
    pair.server.restart();
    pair.publish(3);
    pair.client
        .handle_transport_closed(None, "killed", pair.now);
    pair.settle();
    pair.publish(1);
    pair.settle();
    let e2 = pair.server.epoch.clone();
    assert_eq!(pair.gaps, [GapReason::EpochChanged]);
    assert!(pair.seen.contains(&Seen::Gap {
        last: Some(StreamPosition {
            epoch: "E1".into(),
            offset: 2
        }),
        position: StreamPosition {
            epoch: e2.clone(),
            offset: 3
        },
        reason: GapReason::EpochChanged,
    }));
    assert_eq!(pair.delivered.last(), Some(&(e2, 4)));
    assert_eq!(pair.delivered.len(), 3);
}

/// The history is lost while the client stays subscribed (no close): the first event of
/// the new epoch brings one gap and is delivered.
#[test]
fn an_epoch_change_while_subscribed_reports_one_gap() {
    let mut pair = Pair::new(14);
    let channel = ChannelName::new("backtest.a").unwrap();
    pair.publish(2);
    pair.settle();
    pair.server.epoch = "E9".into();
    pair.server.history.clear();
    pair.publish(2);
    pair.settle();
    assert_eq!(
        pair.seen[pair.seen.len() - 3..],
        [
            Seen::Gap {
                last: Some(StreamPosition {
                    epoch: "E1".into(),
                    offset: 2
                }),
                position: StreamPosition {
                    epoch: "E9".into(),
                    offset: 0
                },
                reason: GapReason::EpochChanged,
            },
            Seen::Event("E9".into(), 1),
            Seen::Event("E9".into(), 2),
        ]
    );
    assert_eq!(
        pair.client.position(&channel),
        Some(&StreamPosition {
            epoch: "E9".into(),
            offset: 2
        })
    );
}

#[test]
fn reconnect_loop_backs_off_while_the_server_is_down() {
    let mut pair = Pair::new(3);
    let start = pair.now;
    pair.server.drop_socket();
    pair.client.handle_transport_closed(None, "down", pair.now);
    // The server refuses every attempt for a while: each open fails at once.
    let mut attempts = vec![];
    for _ in 0..8 {
        let t = pair.client.poll_timeout().unwrap();
        pair.now = t;
        pair.client.handle_timeout(t);
        while let Some(out) = pair.client.poll() {
            if out == Output::OpenTransport {
                attempts.push(pair.now.duration_since(start));
                pair.client
                    .handle_transport_closed(None, "refused", pair.now);
            }
        }
    }
    assert_eq!(attempts.len(), 8);
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .all(|g| *g >= Duration::from_millis(100) && *g <= Duration::from_millis(2_000)),
        "{gaps:?}"
    );
    pair.settle();
    assert_eq!(pair.client.state(), State::Connected);
    assert_eq!(pair.client.stats().reconnects, 1);
}
