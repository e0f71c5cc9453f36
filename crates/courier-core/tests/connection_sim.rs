//! A client `Connection` against a scripted in-memory server on simulated time: reconnect
//! loops, resume and gaps, without sleeping (the quinn-proto `Pair` idea).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use courier_core::connection::{Connection, ConnectionConfig, GapReason, Output, State};
use courier_core::frame::{ClientFrame, Delivery, Limits, ServerFrame};
use courier_core::{ChannelName, Event, Metadata, StreamPosition};
use proptest::prelude::*;

/// The server side: history per channel, one socket at a time.
struct Server {
    epoch: String,
    history: BTreeMap<ChannelName, Vec<Delivery>>,
    /// Oldest offset still held, per channel (older ones were trimmed).
    trimmed_below: u64,
    socket_open: bool,
    subscribed: Vec<ChannelName>,
    to_client: Vec<String>,
    connects: u32,
}

impl Server {
    fn new() -> Self {
        Self {
            epoch: "E1".into(),
            history: BTreeMap::new(),
            trimmed_below: 1,
            socket_open: false,
            subscribed: vec![],
            to_client: vec![],
            connects: 0,
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
        if self.socket_open && self.subscribed.contains(channel) {
            self.to_client.push(ServerFrame::Event(d).encode());
        }
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
                let recovered = match &since {
                    None => true,
                    Some(p) => {
                        p.epoch == self.epoch
                            && (p.offset + 1 >= self.trimmed_below || p.offset >= latest)
                    }
                };
                self.to_client.push(
                    ServerFrame::Subscribed {
                        id,
                        channel: channel.clone(),
                        recovered,
                        epoch: self.epoch.clone(),
                        offset: latest,
                        replay_from: None,
                    }
                    .encode(),
                );
                if let (Some(p), true) = (&since, recovered) {
                    for d in log.iter().filter(|d| d.offset > p.offset) {
                        self.to_client.push(ServerFrame::Event(d.clone()).encode());
                    }
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
        self.epoch = format!("E{}", self.connects + 100);
        self.history.clear();
    }
}

struct Pair {
    client: Connection,
    server: Server,
    now: Instant,
    delivered: Vec<(String, u64)>,
    gaps: Vec<GapReason>,
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
                    Output::Event(d) => self.delivered.push((d.epoch, d.offset)),
                    Output::Gap { reason, .. } => self.gaps.push(reason),
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
}

#[test]
fn trimmed_history_reports_a_gap_and_goes_on() {
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
    let offsets: Vec<u64> = pair.delivered.iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, vec![1, 11]);
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
