//! The four stores behind narrow, object-safe async traits, and their in-memory
//! implementations. A Redis backend (several instances) implements the same traits:
//!
//! - [`HistoryStore`] assigns offsets and owns the epoch (Redis: a stream or list per
//!   channel plus `INCR`; the epoch is a key set once).
//! - [`Broker`] fans published events out to this instance's subscribers (Redis: pub/sub,
//!   one subscription per channel with local subscribers).
//! - [`RateLimitStore`] runs GCRA atomically over a set of buckets (Redis: one Lua script).
//! - [`IdempotencyStore`] claims an event id for the window (Redis: `SET NX PX`).
//! - [`ConnectionStore`] counts each user's connections across instances (Redis: a hash
//!   per user with one field per instance; an instance's heartbeat key expires when it
//!   dies, and its counts with it).
//!
//! The Redis implementations live in `crate::redis`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use courier_core::{ChannelName, Event, StreamPosition};

/// A store failed (a backend is down); the request may be retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// An event stored in a channel's history.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The history's epoch.
    pub epoch: Arc<str>,
    /// The event's offset (1, 2, …) in its channel.
    pub offset: u64,
    /// The event, as accepted (id and metadata stamped).
    pub event: Arc<Event>,
}

/// What a channel's history still holds for a resume, read in one step.
#[derive(Debug, Clone)]
pub struct Retained {
    /// The current epoch.
    pub epoch: Arc<str>,
    /// The channel's latest offset in `epoch` (0 when it has none).
    pub latest: u64,
    /// The held events of `epoch` the resuming client has not seen, in order: those after
    /// `since.offset` when `since` is in `epoch`, else all of them.
    pub events: Vec<StoredEvent>,
}

/// Where a subscription with `since` continues (docs/protocol.md, resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Nothing between `since` and `replay_from` is missing.
    pub recovered: bool,
    /// The first offset delivered after `subscribed`, replayed or live.
    pub replay_from: u64,
}

impl Retained {
    /// The resume rule: continue right after `since` when the history still holds what
    /// follows it; otherwise from the oldest event held (of the current epoch), so that only
    /// what the server no longer has is lost.
    pub fn resume_point(&self, since: &StreamPosition) -> ResumePoint {
        let held_from = self.events.first().map_or(self.latest + 1, |e| e.offset);
        if *since.epoch != *self.epoch {
            return ResumePoint {
                recovered: false,
                replay_from: held_from,
            };
        }
        // A client ahead of the history (it cannot be, within one epoch) resumes live.
        let next = since.offset.min(self.latest) + 1;
        if held_from <= next {
            ResumePoint {
                recovered: true,
                replay_from: next,
            }
        } else {
            ResumePoint {
                recovered: false,
                replay_from: held_from,
            }
        }
    }
}

/// Where a page of history starts, and so its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFrom {
    /// Forwards: offsets greater than this one, oldest first (0: from the oldest held).
    After(u64),
    /// Backwards: offsets smaller than this one, newest first (`u64::MAX`: from the newest).
    Before(u64),
    /// Forwards from the first event stored at or after this Unix time (ms).
    Since(u64),
}

/// One page of a channel's history (the current epoch's events only).
#[derive(Debug, Clone)]
pub struct Page {
    /// The current epoch.
    pub epoch: Arc<str>,
    /// The channel's latest offset in `epoch` (0 when it has none), never older than the
    /// newest event of the page.
    pub latest: u64,
    /// At most the asked number of events, in the page's direction.
    pub events: Vec<StoredEvent>,
    /// More events are held beyond the page in its direction.
    pub more: bool,
}

/// Sizes, for `/health` and `/stats`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct HistoryStats {
    /// Channels with history.
    pub channels: usize,
    /// Events held in all.
    pub events: usize,
}

/// What the history's backend is known to have lost while this instance ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataLoss {
    /// Times the epoch changed under this instance (the backend lost its data).
    pub epoch_changes: u64,
    /// When this instance last saw it change (Unix ms).
    pub last_at_ms: Option<u64>,
}

/// Per-channel history with server-assigned offsets.
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// The deployment's epoch, chosen when the history was created; it changes when history
    /// is lost. Each channel's events carry their channel's epoch ([`Self::latest`]): this
    /// one on one node, the channel's own on Redis.
    fn epoch(&self) -> Arc<str>;
    /// Appends `event` to its channel and returns it with its offset.
    async fn append(&self, event: Event) -> Result<StoredEvent, StoreError>;
    /// Appends `events` in order (offsets dense per channel, in the order given), as one
    /// step where the backend can (Redis: one pipelined round trip); one result per event.
    /// An `Err` of the whole means no result is known (the backend is unreachable).
    async fn append_many(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<StoredEvent, StoreError>>, StoreError> {
        let mut stored = Vec::with_capacity(events.len());
        for e in events {
            stored.push(self.append(e).await);
        }
        Ok(stored)
    }
    /// The channel's epoch and latest offset (0 when it never had an event).
    async fn latest(&self, channel: &ChannelName) -> Result<(Arc<str>, u64), StoreError>;
    /// What a resume from `since` can replay (see [`Retained::events`]). The latest offset
    /// is read with the events, so it is never older than the last of them.
    async fn read_since(
        &self,
        channel: &ChannelName,
        since: &StreamPosition,
    ) -> Result<Retained, StoreError>;
    /// One page of at most `limit` (at least 1) events of the current epoch from `from`,
    /// and whether more follow in that direction. Reads are bounded by `limit`, whatever
    /// the history holds.
    async fn read_page(
        &self,
        channel: &ChannelName,
        from: PageFrom,
        limit: usize,
    ) -> Result<Page, StoreError>;
    /// Sizes.
    async fn stats(&self) -> HistoryStats;
    /// Whether the backend can serve now (`/health/ready`); in-process stores always can.
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// What the backend lost while this instance ran; an in-process store loses nothing
    /// without the process.
    fn data_loss(&self) -> DataLoss {
        DataLoss::default()
    }
}

/// A published event on its way to subscribers, with its frame encoded once.
#[derive(Debug, Clone)]
pub struct Published {
    /// The channel.
    pub channel: ChannelName,
    /// The history epoch the offset belongs to.
    pub epoch: Arc<str>,
    /// The event's offset in its channel.
    pub offset: u64,
    /// The encoded `event` frame, shared by every subscriber's socket without a copy.
    pub frame: axum::extract::ws::Utf8Bytes,
    /// When the server accepted it (for the publish-to-deliver histogram).
    pub accepted_at: Instant,
    /// `frame` deflated for permessage-deflate, made by the first compressing subscriber's
    /// writer and shared by all of them (`ws.rs`): an event is compressed once.
    pub deflated: std::sync::OnceLock<bytes::Bytes>,
}

/// Something that receives a channel's events. `deliver` must not block: a subscriber that
/// cannot keep up closes its own connection (slow consumer).
pub trait Subscriber: Send + Sync + 'static {
    /// One event, in offset order per channel.
    fn deliver(&self, message: &Arc<Published>);
}

/// Identifies one subscription in a [`Broker`].
pub type SubscriptionId = u64;

/// Fans events out to subscribers.
///
/// A shared broker may take its events from its history instead: the Redis history's
/// append publishes to every instance in the same atomic step, so the Redis broker's
/// `publish` has nothing left to do.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Delivers to every subscriber of the channel (on every instance, for shared brokers).
    async fn publish(&self, message: Arc<Published>) -> Result<(), StoreError>;
    /// Adds a subscriber.
    async fn subscribe(
        &self,
        channel: &ChannelName,
        subscriber: Arc<dyn Subscriber>,
    ) -> Result<SubscriptionId, StoreError>;
    /// Removes a subscriber.
    async fn unsubscribe(&self, channel: &ChannelName, id: SubscriptionId);
    /// Whether the history's append already fans the event out in offset order (so the
    /// publisher needs no local per-channel lock around append and `publish`).
    fn fans_out_on_append(&self) -> bool {
        false
    }
    /// Subscribers of `channel` on this instance.
    fn subscriber_count(&self, channel: &ChannelName) -> usize;
    /// Channels with at least one subscriber on this instance.
    fn channel_count(&self) -> usize;
    /// Whether the fan-out can serve now (`/health/ready`); in-process brokers always can.
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One GCRA bucket to check.
#[derive(Debug, Clone)]
pub struct BucketRequest {
    /// The bucket's key, e.g. `user:alice`.
    pub key: String,
    /// `T = window / limit`.
    pub emission_interval: Duration,
    /// Requests back to back from idle (at least 1).
    pub burst: u64,
    /// A shadow bucket never refuses.
    pub shadow: bool,
}

/// The state of one bucket after a check: charged when the request was admitted, as it
/// was when it was refused (by this bucket or another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketDecision {
    /// This bucket alone would admit the request.
    pub allowed: bool,
    /// Requests still admissible back to back in the state the check left.
    pub remaining: u64,
    /// Until the bucket is full again, in that state.
    pub reset_after: Duration,
    /// Until a refused request would be admitted (zero when allowed).
    pub retry_after: Duration,
}

/// GCRA state. `check` is atomic over all the buckets: the request is admitted when every
/// non-shadow bucket admits it, and only then are the buckets updated.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Checks (and, when admitted, records) one request against `buckets`.
    async fn check(&self, buckets: &[BucketRequest]) -> Result<Vec<BucketDecision>, StoreError>;
    /// Runs `check` for each request in order, each seeing the ones before it, as one step
    /// where the backend can (Redis: one pipelined round trip).
    async fn check_many(
        &self,
        requests: &[Vec<BucketRequest>],
    ) -> Result<Vec<Vec<BucketDecision>>, StoreError> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.check(r).await?);
        }
        Ok(out)
    }
}

/// `user` as the hash tag every key of theirs carries (`{u:user}`): on a Redis Cluster a
/// user's rate-limit buckets, ids and connection counts share one slot, so each stage of a
/// request is one pipeline or one script on one node.
pub fn user_tag(user: &str) -> String {
    format!("{{u:{user}}}")
}

/// What an earlier publish of the same id produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRecord {
    /// The channel.
    pub channel: String,
    /// The history epoch.
    pub epoch: String,
    /// The offset it got.
    pub offset: u64,
}

/// The answer to [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time: publish, then `complete` (or `release` on failure).
    New,
    /// Published already within the window.
    Done(PublishRecord),
    /// Another request with this id is being published right now.
    Pending,
}

/// Remembers event ids for the idempotency window.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for the window.
    async fn claim(&self, key: &str) -> Result<Claim, StoreError>;
    /// Records the outcome of a claimed key.
    async fn complete(&self, key: &str, record: PublishRecord) -> Result<(), StoreError>;
    /// Forgets a claim whose publish failed.
    async fn release(&self, key: &str);
    /// Ids remembered now.
    fn entries(&self) -> usize;
    /// Claims each of `keys` in order (distinct keys), as one step where the backend can.
    async fn claim_many(&self, keys: &[String]) -> Result<Vec<Claim>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.claim(k).await?);
        }
        Ok(out)
    }
    /// Records the outcome of each claimed key, as one step where the backend can.
    async fn complete_many(&self, done: Vec<(String, PublishRecord)>) -> Result<(), StoreError> {
        for (k, r) in done {
            self.complete(&k, r).await?;
        }
        Ok(())
    }
    /// Forgets claims whose publish failed or was refused.
    async fn release_many(&self, keys: &[String]) {
        for k in keys {
            self.release(k).await;
        }
    }
}

/// Counts each user's WebSocket connections against the per-user limit, across every
/// instance that shares the store.
#[async_trait]
pub trait ConnectionStore: Send + Sync + 'static {
    /// Takes a place for `user` when fewer than `max` (0 = unlimited) are held.
    async fn acquire(&self, user: &str, max: usize) -> Result<bool, StoreError>;
    /// Frees a place taken by `acquire` (without waiting; a shared store may do it in the
    /// background).
    fn release(&self, user: &str);
}

// ----------------------------------------------------------------------------------------
// In-memory connection counts

/// Per-user connection counts in process memory.
#[derive(Default)]
pub struct MemoryConnections {
    per_user: Mutex<HashMap<String, usize>>,
}

impl MemoryConnections {
    /// No connections yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ConnectionStore for MemoryConnections {
    async fn acquire(&self, user: &str, max: usize) -> Result<bool, StoreError> {
        let mut m = self.per_user.lock().expect("connection lock");
        let n = m.entry(user.to_owned()).or_default();
        if max > 0 && *n >= max {
            return Ok(false);
        }
        *n += 1;
        Ok(true)
    }

    fn release(&self, user: &str) {
        let mut m = self.per_user.lock().expect("connection lock");
        if let Some(n) = m.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(user);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// In-memory history

/// A held event: when it was stored (monotonic, for the age limit; Unix ms, for `since`).
struct Held {
    at: Instant,
    unix_ms: u64,
    stored: StoredEvent,
}

struct ChannelHistory {
    latest: u64,
    events: VecDeque<Held>,
    last_write: u64,
}

/// History in process memory, bounded by count and age per channel and by channel count.
pub struct MemoryHistory {
    epoch: Arc<str>,
    max_events: usize,
    max_age: Duration,
    max_channels: usize,
    writes: AtomicU64,
    channels: Mutex<HashMap<ChannelName, ChannelHistory>>,
}

impl MemoryHistory {
    /// An empty history with a fresh epoch.
    pub fn new(max_events: usize, max_age: Duration, max_channels: usize) -> Self {
        let epoch = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self {
            epoch: epoch.into(),
            max_events: max_events.max(1),
            max_age,
            max_channels: max_channels.max(1),
            writes: AtomicU64::new(0),
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn trim(&self, h: &mut ChannelHistory, now: Instant) {
        while h.events.len() > self.max_events {
            h.events.pop_front();
        }
        while let Some(held) = h.events.front() {
            if now.duration_since(held.at) > self.max_age {
                h.events.pop_front();
            } else {
                break;
            }
        }
    }
}

#[async_trait]
impl HistoryStore for MemoryHistory {
    fn epoch(&self) -> Arc<str> {
        self.epoch.clone()
    }

    async fn append(&self, event: Event) -> Result<StoredEvent, StoreError> {
        let now = Instant::now();
        let write = self.writes.fetch_add(1, Ordering::Relaxed);
        let mut channels = self.channels.lock().expect("history lock");
        if !channels.contains_key(&event.channel) && channels.len() >= self.max_channels {
            // Forget the events of the least recently written channel but keep its latest
            // offset, so offsets never restart within an epoch (a resume then reports a gap).
            if let Some(oldest) = channels
                .iter()
                .filter(|(_, h)| !h.events.is_empty())
                .min_by_key(|(_, h)| h.last_write)
                .map(|(k, _)| k.clone())
            {
                if let Some(h) = channels.get_mut(&oldest) {
                    h.events.clear();
                }
            }
        }
        let h = channels
            .entry(event.channel.clone())
            .or_insert_with(|| ChannelHistory {
                latest: 0,
                events: VecDeque::new(),
                last_write: write,
            });
        h.latest += 1;
        h.last_write = write;
        let stored = StoredEvent {
            epoch: self.epoch.clone(),
            offset: h.latest,
            event: Arc::new(event),
        };
        // Kept non-decreasing (the wall clock may step back) so `since` can bisect.
        let unix_ms = crate::http::unix_ms().max(h.events.back().map_or(0, |e| e.unix_ms));
        h.events.push_back(Held {
            at: now,
            unix_ms,
            stored: stored.clone(),
        });
        self.trim(h, now);
        Ok(stored)
    }

    async fn latest(&self, channel: &ChannelName) -> Result<(Arc<str>, u64), StoreError> {
        let latest = self
            .channels
            .lock()
            .expect("history lock")
            .get(channel)
            .map_or(0, |h| h.latest);
        Ok((self.epoch(), latest))
    }

    async fn read_since(
        &self,
        channel: &ChannelName,
        since: &StreamPosition,
    ) -> Result<Retained, StoreError> {
        // One epoch per process: a foreign one has seen none of this history.
        let after = if *since.epoch == *self.epoch {
            since.offset
        } else {
            0
        };
        let now = Instant::now();
        let mut channels = self.channels.lock().expect("history lock");
        let (latest, events) = match channels.get_mut(channel) {
            None => (0, Vec::new()),
            Some(h) => {
                self.trim(h, now);
                // Offsets are dense and ascending: find the first unseen one by bisection.
                let start = h.events.partition_point(|e| e.stored.offset <= after);
                let events = h.events.range(start..).map(|e| e.stored.clone()).collect();
                (h.latest, events)
            }
        };
        Ok(Retained {
            epoch: self.epoch.clone(),
            latest,
            events,
        })
    }

    async fn read_page(
        &self,
        channel: &ChannelName,
        from: PageFrom,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        let now = Instant::now();
        let mut channels = self.channels.lock().expect("history lock");
        let Some(h) = channels.get_mut(channel) else {
            return Ok(Page {
                epoch: self.epoch.clone(),
                latest: 0,
                events: Vec::new(),
                more: false,
            });
        };
        self.trim(h, now);
        // Offsets and store times are ascending: bisect to the page's first event.
        let forward = |start: usize| {
            let end = (start + limit).min(h.events.len());
            let events = h.events.range(start..end).map(|e| e.stored.clone());
            (events.collect(), end < h.events.len())
        };
        let (events, more) = match from {
            PageFrom::After(after) => {
                forward(h.events.partition_point(|e| e.stored.offset <= after))
            }
            PageFrom::Since(ms) => forward(h.events.partition_point(|e| e.unix_ms < ms)),
            PageFrom::Before(before) => {
                let end = h.events.partition_point(|e| e.stored.offset < before);
                let start = end.saturating_sub(limit);
                let events = h.events.range(start..end).rev().map(|e| e.stored.clone());
                (events.collect(), start > 0)
            }
        };
        Ok(Page {
            epoch: self.epoch.clone(),
            latest: h.latest,
            events,
            more,
        })
    }

    async fn stats(&self) -> HistoryStats {
        let channels = self.channels.lock().expect("history lock");
        HistoryStats {
            channels: channels.len(),
            events: channels.values().map(|h| h.events.len()).sum(),
        }
    }
}

// ----------------------------------------------------------------------------------------
// In-memory broker

type SubscriberMap = HashMap<SubscriptionId, Arc<dyn Subscriber>>;

/// Fans out within this process.
#[derive(Default)]
pub struct MemoryBroker {
    next_id: AtomicU64,
    channels: RwLock<HashMap<ChannelName, SubscriberMap>>,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, message: Arc<Published>) -> Result<(), StoreError> {
        let subscribers: Vec<Arc<dyn Subscriber>> = {
            let channels = self.channels.read().expect("broker lock");
            channels
                .get(&message.channel)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        };
        for s in subscribers {
            s.deliver(&message);
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        channel: &ChannelName,
        subscriber: Arc<dyn Subscriber>,
    ) -> Result<SubscriptionId, StoreError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.channels
            .write()
            .expect("broker lock")
            .entry(channel.clone())
            .or_default()
            .insert(id, subscriber);
        Ok(id)
    }

    async fn unsubscribe(&self, channel: &ChannelName, id: SubscriptionId) {
        let mut channels = self.channels.write().expect("broker lock");
        if let Some(m) = channels.get_mut(channel) {
            m.remove(&id);
            if m.is_empty() {
                channels.remove(channel);
            }
        }
    }

    fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.channels
            .read()
            .expect("broker lock")
            .get(channel)
            .map_or(0, HashMap::len)
    }

    fn channel_count(&self) -> usize {
        self.channels.read().expect("broker lock").len()
    }
}

// ----------------------------------------------------------------------------------------
// In-memory GCRA

/// GCRA buckets in process memory; idle buckets are dropped.
pub struct MemoryRateLimits {
    origin: Instant,
    /// Theoretical arrival times, in nanoseconds since `origin`.
    tats: Mutex<HashMap<String, u128>>,
    checks: AtomicU64,
}

impl Default for MemoryRateLimits {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            tats: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }
}

impl MemoryRateLimits {
    /// No buckets yet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// One bucket's GCRA decision at `now`: whether it alone admits the request, and its state
/// after the request, charged (`charge`, and only when admitted) or not.
fn gcra_decide(
    tat: Option<u128>,
    now: u128,
    req: &BucketRequest,
    charge: bool,
) -> (BucketDecision, u128) {
    let t = req.emission_interval.as_nanos().max(1);
    let tau = t * u128::from(req.burst.max(1) - 1);
    let tat = tat.unwrap_or(now).max(now);
    let allowed = tat <= now + tau;
    let new_tat = if allowed && charge { tat + t } else { tat };
    // Requests still admissible back to back in the state left behind.
    let remaining = (now + tau + t).saturating_sub(new_tat) / t;
    let reset_after = Duration::from_nanos(u64::try_from(new_tat - now).unwrap_or(u64::MAX));
    let retry_after = if allowed {
        Duration::ZERO
    } else {
        Duration::from_nanos(u64::try_from(tat - tau - now).unwrap_or(u64::MAX))
    };
    let remaining = u64::try_from(remaining).unwrap_or(u64::MAX).min(req.burst);
    (
        BucketDecision {
            allowed,
            remaining,
            reset_after,
            retry_after,
        },
        new_tat,
    )
}

#[async_trait]
impl RateLimitStore for MemoryRateLimits {
    async fn check(&self, buckets: &[BucketRequest]) -> Result<Vec<BucketDecision>, StoreError> {
        let now = self.origin.elapsed().as_nanos();
        let mut tats = self.tats.lock().expect("rate-limit lock");
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            tats.retain(|_, tat| *tat > now);
        }
        let decide = |charge: bool| -> Vec<(BucketDecision, u128)> {
            buckets
                .iter()
                .map(|b| gcra_decide(tats.get(&b.key).copied(), now, b, charge))
                .collect()
        };
        let decided = decide(true);
        let admitted = buckets
            .iter()
            .zip(&decided)
            .all(|(b, (d, _))| d.allowed || b.shadow);
        if !admitted {
            // Nothing is charged: report the buckets as they stay.
            return Ok(decide(false).into_iter().map(|(d, _)| d).collect());
        }
        for (b, (d, new_tat)) in buckets.iter().zip(&decided) {
            if d.allowed {
                tats.insert(b.key.clone(), *new_tat);
            }
        }
        Ok(decided.into_iter().map(|(d, _)| d).collect())
    }
}

// ----------------------------------------------------------------------------------------
// In-memory idempotency

enum IdemEntry {
    Pending,
    Done(PublishRecord),
}

struct IdemInner {
    entries: HashMap<String, (Instant, IdemEntry)>,
    order: VecDeque<(Instant, String)>,
}

/// Event ids in process memory for the window, at most `max_entries` of them.
pub struct MemoryIdempotency {
    window: Duration,
    max_entries: usize,
    inner: Mutex<IdemInner>,
}

impl MemoryIdempotency {
    /// An empty store.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            window,
            max_entries: max_entries.max(1),
            inner: Mutex::new(IdemInner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("idempotency lock");
        let IdemInner { entries, order } = &mut *inner;
        while let Some((at, k)) = order.front() {
            let expired = now.duration_since(*at) > self.window;
            if expired || entries.len() >= self.max_entries {
                // The queue may hold stale keys (released or re-inserted); remove only the
                // entry inserted at this time.
                if entries.get(k).is_some_and(|(t, _)| t == at) {
                    entries.remove(k);
                }
                order.pop_front();
            } else {
                break;
            }
        }
        match entries.get(key) {
            Some((at, _)) if now.duration_since(*at) > self.window => {}
            Some((_, IdemEntry::Pending)) => return Ok(Claim::Pending),
            Some((_, IdemEntry::Done(r))) => return Ok(Claim::Done(r.clone())),
            None => {}
        }
        entries.insert(key.to_owned(), (now, IdemEntry::Pending));
        order.push_back((now, key.to_owned()));
        Ok(Claim::New)
    }

    async fn complete(&self, key: &str, record: PublishRecord) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("idempotency lock");
        if let Some((_, entry)) = inner.entries.get_mut(key) {
            *entry = IdemEntry::Done(record);
        }
        Ok(())
    }

    async fn release(&self, key: &str) {
        self.inner
            .lock()
            .expect("idempotency lock")
            .entries
            .remove(key);
    }

    fn entries(&self) -> usize {
        self.inner.lock().expect("idempotency lock").entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(key: &str, per_sec: u64, burst: u64) -> BucketRequest {
        BucketRequest {
            key: key.into(),
            emission_interval: Duration::from_secs(1) / per_sec as u32,
            burst,
            shadow: false,
        }
    }

    #[test]
    fn gcra_admits_burst_then_refuses() {
        let b = bucket("k", 1, 3);
        let mut tat = None;
        let now = 1_000_000_000u128;
        for expected_remaining in [2, 1, 0] {
            let (d, t) = gcra_decide(tat, now, &b, true);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = Some(t);
        }
        let (d, _) = gcra_decide(tat, now, &b, true);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_secs(1));
        let (d, _) = gcra_decide(tat, now + 1_000_000_000, &b, true);
        assert!(d.allowed);
    }

    async fn appended(h: &MemoryHistory, ch: &ChannelName, n: u64) {
        for i in 0..n {
            let e = Event::new(
                format!("e{i}"),
                "x",
                ch.clone(),
                &serde_json::json!({}),
                Default::default(),
            );
            h.append(e).await.unwrap();
        }
    }

    fn at(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: epoch.into(),
            offset,
        }
    }

    /// The offsets held for `since`, and where the resume continues.
    async fn resume(
        h: &MemoryHistory,
        ch: &ChannelName,
        since: StreamPosition,
    ) -> (Vec<u64>, u64, bool) {
        let r = h.read_since(ch, &since).await.unwrap();
        let p = r.resume_point(&since);
        (
            r.events.iter().map(|e| e.offset).collect(),
            p.replay_from,
            p.recovered,
        )
    }

    // The resume rule over a history trimmed by count, paging and dense offsets: the
    // contract every store keeps, in tests/api/contract.rs (run on memory, Redis, PostgreSQL).

    #[tokio::test]
    async fn history_resume_after_age_trim_and_eviction() {
        let h = MemoryHistory::new(100, Duration::from_millis(50), 1);
        let (a, b) = (
            ChannelName::new("a").unwrap(),
            ChannelName::new("b").unwrap(),
        );
        let e = h.epoch().to_string();
        appended(&h, &a, 2).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
        appended(&h, &a, 2).await;
        // 1 and 2 aged out.
        assert_eq!(resume(&h, &a, at(&e, 0)).await, (vec![3, 4], 3, false));
        assert_eq!(resume(&h, &a, at("old", 0)).await, (vec![3, 4], 3, false));
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Nothing held: live from after the latest.
        assert_eq!(resume(&h, &a, at(&e, 1)).await, (vec![], 5, false));
        assert_eq!(resume(&h, &a, at("old", 1)).await, (vec![], 5, false));
        assert_eq!(resume(&h, &a, at(&e, 4)).await, (vec![], 5, true));
        // A second channel evicts the first one's events but not its offsets.
        appended(&h, &a, 1).await;
        appended(&h, &b, 1).await;
        assert_eq!(resume(&h, &a, at(&e, 4)).await, (vec![], 6, false));
        assert_eq!(resume(&h, &b, at(&e, 0)).await, (vec![1], 1, true));
    }

    #[tokio::test]
    async fn idempotency_claims_once() {
        let s = MemoryIdempotency::new(Duration::from_secs(60), 2);
        assert_eq!(s.claim("a").await.unwrap(), Claim::New);
        assert_eq!(s.claim("a").await.unwrap(), Claim::Pending);
        let r = PublishRecord {
            channel: "c".into(),
            epoch: "e".into(),
            offset: 1,
        };
        s.complete("a", r.clone()).await.unwrap();
        assert_eq!(s.claim("a").await.unwrap(), Claim::Done(r));
        assert_eq!(s.claim("b").await.unwrap(), Claim::New);
        assert_eq!(s.claim("c").await.unwrap(), Claim::New);
        assert!(s.entries() <= 2);
    }
}
