//! Fan-out through Redis pub/sub, in offset order, with holes filled from the streams.
//!
//! Each instance holds one pub/sub connection, subscribed to `ev:{c:channel}` for every
//! channel with a local subscriber (on a cluster, a sharded subscription, `SSUBSCRIBE`, on
//! the node of the channel's slot). The append script publishes a request's events of one
//! channel as one message (see [`parse_appended`]); scripts run one at a time, so one
//! connection receives a channel's events in offset order. One task reads the connection and keeps,
//! per channel, the last offset it delivered: an older offset is dropped, a skipped one is
//! read from the stream (`XRANGE`) before going on. When the connection drops (Redis
//! restarted, network), the task reconnects with backoff, resubscribes, and reads from each
//! channel's stream what it missed — so nothing that was acknowledged is lost. On a cluster
//! the connection resubscribes by itself when a node comes back and says so per channel;
//! the task then reads that channel's stream.
//!
//! With the history elsewhere (PostgreSQL), the broker publishes each event itself after the
//! append, in the same format, and fills holes from that history instead of the streams: two
//! instances appending to one channel may publish out of offset order, and the later offset
//! arriving first makes the earlier one a hole, read from the history before going on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use courier_core::ChannelName;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;

use super::history::{Entry, event_frame, event_json_in_frame, parse_appended, read_range};
use super::{FanoutConn, Shared, fanout_connection, timed};
use crate::store::{
    Broker, HistoryStore, PageFrom, Published, StoreError, Subscriber, SubscriptionId,
};

/// Events a catch-up reads from a durable history for a channel whose position is unknown.
const CATCH_UP_EVENTS: u64 = 1000;

/// An epoch and an offset in it.
type Position = (Arc<str>, u64);

struct ChannelState {
    subs: HashMap<SubscriptionId, Arc<dyn Subscriber>>,
    /// The last event delivered (None until one is known).
    position: Option<Position>,
}

struct Inner {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    channels: RwLock<HashMap<ChannelName, ChannelState>>,
    /// The pub/sub connection's command half; `None` while disconnected. Held across
    /// (un)subscribe so that the Redis subscription set matches `channels`.
    sink: tokio::sync::Mutex<Option<Sink>>,
    /// A task is subscribing again after a cluster node was lost.
    resubscribing: AtomicBool,
    /// The history when it is not the Redis streams: the broker publishes, and reads holes
    /// from it.
    history: Option<Arc<dyn HistoryStore>>,
}

/// The fan-out connection's command half.
enum Sink {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

impl Sink {
    async fn subscribe(&mut self, keys: &[String]) -> redis::RedisResult<()> {
        match self {
            Self::Single(s) => s.subscribe(keys).await,
            Self::Cluster(c) => {
                // One command per channel: each goes to its own slot's node.
                for k in keys {
                    c.ssubscribe(k).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, key: String) -> redis::RedisResult<()> {
        match self {
            Self::Single(s) => s.unsubscribe(key).await,
            Self::Cluster(c) => c.sunsubscribe(key).await,
        }
    }
}

/// What the fan-out connection hears.
enum Feed {
    Single(PubSubStream),
    Cluster(tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>),
}

/// One thing heard: a message, a channel subscribed again after its node came back, or a
/// cluster node's connection lost.
enum Heard {
    Message(redis::Msg),
    Resubscribed(String),
    NodeLost,
}

impl Feed {
    /// The next message or resubscription; `None` when the connection is gone.
    async fn next(&mut self) -> Option<Heard> {
        match self {
            Self::Single(s) => s.next().await.map(Heard::Message),
            Self::Cluster(rx) => loop {
                let push = rx.recv().await?;
                if push.kind == redis::PushKind::Disconnection {
                    return Some(Heard::NodeLost);
                }
                if push.kind == redis::PushKind::SSubscribe {
                    if let Some(Ok(name)) = push
                        .data
                        .into_iter()
                        .next()
                        .map(redis::from_redis_value::<String>)
                    {
                        return Some(Heard::Resubscribed(name));
                    }
                } else if let Some(m) = redis::Msg::from_push_info(push) {
                    return Some(Heard::Message(m));
                }
            },
        }
    }
}

/// Fans out through Redis pub/sub.
pub struct RedisBroker {
    inner: Arc<Inner>,
}

impl RedisBroker {
    /// Connects the pub/sub connection and starts the task that reads it.
    /// `history` is the history when it is not the Redis streams (see the module docs).
    pub async fn start(
        shared: Arc<Shared>,
        history: Option<Arc<dyn HistoryStore>>,
    ) -> Result<Self, StoreError> {
        let inner = Arc::new(Inner {
            shared,
            next_id: AtomicU64::new(0),
            channels: RwLock::new(HashMap::new()),
            sink: tokio::sync::Mutex::new(None),
            resubscribing: AtomicBool::new(false),
            history,
        });
        let stream = inner.connect().await?;
        tokio::spawn(run(inner.clone(), Some(stream)));
        Ok(Self { inner })
    }
}

fn unix_ms_to_instant(ms: u64) -> Instant {
    let age = crate::http::unix_ms().saturating_sub(ms);
    let now = Instant::now();
    now.checked_sub(Duration::from_millis(age)).unwrap_or(now)
}

impl Inner {
    fn pubsub_key(&self, channel: &ChannelName) -> String {
        self.shared.channel_key("ev", channel)
    }

    /// The pub/sub keys of every channel with local subscribers.
    fn subscribed_keys(&self) -> Vec<String> {
        self.channels
            .read()
            .expect("broker lock")
            .keys()
            .map(|c| self.pubsub_key(c))
            .collect()
    }

    /// The channel a pub/sub key names.
    fn channel_of(&self, key: &str) -> Option<ChannelName> {
        key.strip_prefix(self.shared.prefix.as_str())
            .and_then(|k| k.strip_prefix("ev:{c:"))
            .and_then(|k| k.strip_suffix('}'))
            .and_then(|n| ChannelName::new(n).ok())
    }

    /// Connects, subscribes to every channel with local subscribers, and installs the sink.
    async fn connect(&self) -> Result<Feed, StoreError> {
        let (mut sink, stream) = match fanout_connection(&self.shared).await? {
            FanoutConn::Single(p) => {
                let (sink, stream) = p.split();
                (Sink::Single(sink), Feed::Single(stream))
            }
            FanoutConn::Cluster(c, rx) => (Sink::Cluster(c), Feed::Cluster(rx)),
        };
        let mut guard = self.sink.lock().await;
        let keys = self.subscribed_keys();
        if !keys.is_empty() {
            timed(&self.shared, sink.subscribe(&keys)).await?;
        }
        *guard = Some(sink);
        self.shared
            .fanout_up
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(stream)
    }

    fn deliver(&self, channel: &ChannelName, epoch: Arc<str>, offset: u64, frame: String, at: u64) {
        let mut channels = self.channels.write().expect("broker lock");
        let Some(state) = channels.get_mut(channel) else {
            return;
        };
        if let Some((e, last)) = &state.position {
            if **e == *epoch && offset <= *last {
                return;
            }
        }
        state.position = Some((epoch.clone(), offset));
        let message = Arc::new(Published {
            channel: channel.clone(),
            epoch,
            offset,
            frame: frame.into(),
            accepted_at: unix_ms_to_instant(at),
            deflated: Default::default(),
        });
        for s in state.subs.values() {
            s.deliver(&message);
        }
    }

    /// The entries after `after` (up to `until`, inclusive), from wherever history lives.
    async fn backfill(
        &self,
        channel: &ChannelName,
        after: u64,
        until: Option<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let Some(history) = &self.history else {
            return read_range(&self.shared, channel, after, until).await;
        };
        let mut out = Vec::new();
        let mut from = after;
        loop {
            let want = until.map_or(1000, |u| u.saturating_sub(from).clamp(1, 1000));
            if until.is_some_and(|u| from >= u) {
                break;
            }
            let page = history
                .read_page(channel, PageFrom::After(from), want as usize)
                .await?;
            let now = crate::http::unix_ms();
            for e in &page.events {
                from = e.offset;
                out.push(Entry {
                    offset: e.offset,
                    epoch: e.epoch.to_string(),
                    unix_ms: now,
                    event_json: e.event.to_json(),
                });
            }
            if page.events.is_empty() || !page.more {
                break;
            }
        }
        Ok(out)
    }

    /// The channel's epoch and latest offset, from wherever history lives.
    async fn head(&self, channel: &ChannelName) -> Result<Position, StoreError> {
        match &self.history {
            Some(h) => h.latest(channel).await,
            None => self.shared.channel_head(channel).await,
        }
    }

    /// Records where `channel` stands when it has no position yet (a new subscription), so
    /// a hole after a reconnect can be filled from there.
    fn start_at(&self, channel: &ChannelName, epoch: Arc<str>, latest: u64) {
        if let Some(state) = self.channels.write().expect("broker lock").get_mut(channel) {
            if state.position.is_none() {
                state.position = Some((epoch, latest));
            }
        }
    }

    fn deliver_entries(&self, channel: &ChannelName, entries: Vec<Entry>) {
        for e in entries {
            let frame = event_frame(&e.epoch, e.offset, &e.event_json);
            self.deliver(channel, e.epoch.into(), e.offset, frame, e.unix_ms);
        }
    }

    /// One pub/sub message: deliver it, after whatever it shows was missed.
    async fn handle(&self, msg: redis::Msg) {
        let Some(channel) = self.channel_of(msg.get_channel_name()) else {
            return;
        };
        let Ok(payload) = msg.get_payload::<String>() else {
            return;
        };
        let Some(m) = parse_appended(&payload) else {
            tracing::warn!(channel = %channel, "unreadable fan-out message dropped");
            return;
        };
        let missed_after = {
            let channels = self.channels.read().expect("broker lock");
            match channels.get(&channel).and_then(|s| s.position.clone()) {
                Some((e, last)) if *e == *m.epoch && m.first > last + 1 => Some(last),
                _ => None,
            }
        };
        if let Some(last) = missed_after {
            match self.backfill(&channel, last, Some(m.first - 1)).await {
                Ok(entries) => self.deliver_entries(&channel, entries),
                Err(e) => {
                    tracing::warn!(error = %e, channel = %channel, "cannot fill a fan-out gap")
                }
            }
        }
        let epoch: Arc<str> = m.epoch.into();
        for (offset, json) in (m.first..).zip(m.events) {
            let frame = event_frame(&epoch, offset, json);
            self.deliver(&channel, epoch.clone(), offset, frame, m.unix_ms);
        }
    }

    /// After a reconnect: reads from each channel's stream what pub/sub missed.
    async fn catch_up(&self) {
        let positions: Vec<(ChannelName, Option<Position>)> = self
            .channels
            .read()
            .expect("broker lock")
            .iter()
            .map(|(c, s)| (c.clone(), s.position.clone()))
            .collect();
        for (channel, position) in positions {
            self.catch_up_channel(&channel, position).await;
        }
    }

    /// Reads what pub/sub missed of `channel` since `position` (its last delivered event).
    async fn catch_up_channel(&self, channel: &ChannelName, position: Option<Position>) {
        let (epoch, latest) = match self.head(channel).await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, channel = %channel, "cannot catch up");
                return;
            }
        };
        let after = match position {
            Some((e, last)) if *e == *epoch => last,
            // Unknown position or a new epoch: everything the stream holds (at most
            // `history.max_events_per_channel`).
            _ if self.history.is_none() => 0,
            // A durable history may hold millions: its newest events, as many as the
            // streams would (the subscribers' resume reads the rest if they need it).
            _ => latest.saturating_sub(CATCH_UP_EVENTS),
        };
        match self.backfill(channel, after, None).await {
            Ok(entries) => self.deliver_entries(channel, entries),
            Err(e) => {
                tracing::warn!(error = %e, channel = %channel, "cannot catch up");
            }
        }
    }

    /// A cluster node came back and the channel was subscribed again: reads what was
    /// published meanwhile.
    async fn resubscribed(&self, key: &str) {
        let Some(channel) = self.channel_of(key) else {
            return;
        };
        let position = match self.channels.read().expect("broker lock").get(&channel) {
            // A first subscription's confirmation: `subscribe` records where it starts.
            Some(state) if state.position.is_some() => state.position.clone(),
            _ => return,
        };
        self.catch_up_channel(&channel, position).await;
    }
}

/// How often the cluster fan-out tries to subscribe again while a node is away.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(250);

/// A cluster node's connection dropped: subscribes to every channel again until the node
/// (or the replica that took over its slots) accepts, then reads what pub/sub missed. The
/// cluster connection re-sends its subscriptions only after a failed command of its own,
/// and one that only listens sends none.
async fn resubscribe_after_loss(inner: Arc<Inner>) {
    if inner.resubscribing.swap(true, Ordering::SeqCst) {
        return;
    }
    loop {
        tokio::select! {
            _ = inner.shared.stop.cancelled() => break,
            _ = tokio::time::sleep(RESUBSCRIBE_EVERY) => {}
        }
        let keys = inner.subscribed_keys();
        let subscribed = match &mut *inner.sink.lock().await {
            Some(sink) => timed(&inner.shared, sink.subscribe(&keys)).await,
            None => break,
        };
        match subscribed {
            Ok(()) => {
                tracing::info!("fan-out subscribed again after losing a Redis node");
                inner.catch_up().await;
                break;
            }
            Err(e) => tracing::debug!(error = %e, "fan-out cannot subscribe again yet"),
        }
    }
    inner.resubscribing.store(false, Ordering::SeqCst);
}

/// Reads the pub/sub connection until the broker stops, reconnecting when it drops.
async fn run(inner: Arc<Inner>, mut stream: Option<Feed>) {
    let stop = inner.shared.stop.clone();
    let mut delay = Duration::from_millis(50);
    loop {
        let mut s = match stream.take() {
            Some(s) => s,
            None => {
                let connected = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = inner.connect() => r,
                };
                match connected {
                    Ok(s) => {
                        tracing::info!("fan-out reconnected to Redis");
                        delay = Duration::from_millis(50);
                        inner.catch_up().await;
                        s
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "fan-out cannot reach Redis; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(1));
                        continue;
                    }
                }
            }
        };
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = s.next() => m,
            };
            match msg {
                Some(Heard::Message(m)) => inner.handle(m).await,
                Some(Heard::Resubscribed(key)) => inner.resubscribed(&key).await,
                Some(Heard::NodeLost) => {
                    tokio::spawn(resubscribe_after_loss(inner.clone()));
                }
                None => break,
            }
        }
        tracing::warn!("fan-out connection to Redis lost; reconnecting");
        inner
            .shared
            .fanout_up
            .store(false, std::sync::atomic::Ordering::SeqCst);
        *inner.sink.lock().await = None;
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, message: Arc<Published>) -> Result<(), StoreError> {
        if self.inner.history.is_none() {
            // The history's append script has published it to every instance already.
            return Ok(());
        }
        // As the append script would, one event: `"{offset} {unix_ms} {epoch} {len} {json}"`.
        let s = &self.inner.shared;
        let Some(json) = event_json_in_frame(message.frame.as_str()) else {
            // `http::fan_out` writes every frame; instances read the event from the history.
            tracing::error!(channel = %message.channel, "not an `event` frame; not fanned out");
            return Ok(());
        };
        let payload = format!(
            "{} {} {} {} {json}",
            message.offset,
            crate::http::unix_ms(),
            message.epoch,
            json.len(),
        );
        let mut c = s.conn();
        let published: Result<i64, _> = timed(
            s,
            redis::cmd(if s.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            })
            .arg(self.inner.pubsub_key(&message.channel))
            .arg(payload)
            .query_async(&mut c),
        )
        .await;
        // The event is stored already: failing the request would make the client publish
        // it again (a second offset). Every instance reads it from the history instead, at
        // the channel's next event (a gap) or when its fan-out reconnects.
        if let Err(e) = published {
            tracing::warn!(error = %e, channel = %message.channel, offset = message.offset,
                "cannot publish to the fan-out; instances will read the event from the history");
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        subscriber: Arc<dyn Subscriber>,
    ) -> Result<SubscriptionId, StoreError> {
        let inner = &self.inner;
        let mut sink = inner.sink.lock().await;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let created = {
            let mut channels = inner.channels.write().expect("broker lock");
            let created = !channels.contains_key(channel);
            channels
                .entry(channel.clone())
                .or_insert_with(|| ChannelState {
                    subs: HashMap::new(),
                    position: None,
                })
                .subs
                .insert(id, subscriber);
            created
        };
        if !created {
            return Ok(id);
        }
        let subscribed = match sink.as_mut() {
            Some(sk) => timed(&inner.shared, sk.subscribe(&[inner.pubsub_key(channel)])).await,
            None => Err(StoreError("redis: the fan-out connection is down".into())),
        };
        if let Err(e) = subscribed {
            inner.channels.write().expect("broker lock").remove(channel);
            return Err(e);
        }
        // Where the channel stands now, so a hole after a reconnect can be filled.
        if let Ok((epoch, latest)) = inner.head(channel).await {
            inner.start_at(channel, epoch, latest);
        }
        Ok(id)
    }

    async fn unsubscribe(&self, channel: &ChannelName, id: SubscriptionId) {
        let inner = &self.inner;
        let mut sink = inner.sink.lock().await;
        let emptied = {
            let mut channels = inner.channels.write().expect("broker lock");
            match channels.get_mut(channel) {
                Some(state) => {
                    state.subs.remove(&id);
                    if state.subs.is_empty() {
                        channels.remove(channel);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if emptied {
            if let Some(sk) = sink.as_mut() {
                let _ = timed(&inner.shared, sk.unsubscribe(inner.pubsub_key(channel))).await;
            }
        }
    }

    fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.inner
            .channels
            .read()
            .expect("broker lock")
            .get(channel)
            .map_or(0, |s| s.subs.len())
    }

    fn channel_count(&self) -> usize {
        self.inner.channels.read().expect("broker lock").len()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let s = &self.inner.shared;
        if !s.fanout_up() {
            return Err(StoreError("redis: fan-out connection is down".into()));
        }
        s.ping().await
    }
}
