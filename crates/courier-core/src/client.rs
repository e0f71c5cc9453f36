//! The one Courier client: a [`Connection`] (subscriptions over a WebSocket) and a
//! [`PublishQueue`] (publishing over HTTP) behind one sans-IO machine that also owns what
//! both halves share: the token, event stamping, the endpoints, subscriptions with several
//! listeners per channel and their flow control, and one stats struct.
//!
//! Every SDK drives this type and nothing else decides anything (the model is quinn-proto's
//! `Connection`; the driver loop is quinn's `drive_timer`). A driver:
//!
//! 1. calls application commands ([`Client::subscribe`], [`Client::publish`], …) and inputs
//!    (`handle_*`) with the current `now`;
//! 2. drains [`Client::poll`] until `None`, doing what each [`Output`] says (open, write or
//!    close the socket; `POST` a batch; ask the token provider; hand results to the
//!    application);
//! 3. sleeps until [`Client::poll_timeout`], a socket or HTTP event, or a command, then calls
//!    [`Client::handle_timeout`] (extra calls are harmless) and goes back to 2.
//!
//! The rules written down in `docs/behaviour.md` live here:
//! - **URLs**: `http(s)://` and `ws(s)://` are both accepted ([`Endpoints::parse`]).
//! - **Connect on subscribe**: the first subscription opens the WebSocket; [`Client::connect`]
//!   only opens it early. Publishing never needs the WebSocket.
//! - **Subscribing twice** to a channel adds a listener on the same server subscription; it
//!   receives events from the channel's current position on (a `since` that differs from that
//!   position is refused with `ALREADY_SUBSCRIBED`). The server subscription ends with the last
//!   listener.
//! - **One token**: the WebSocket and HTTP share it; one provider call at a time; a token
//!   refused as expired by either side is refreshed once, and the other side gets the new one.
//! - **Stamping**: a published event gets a time-sortable id, `metadata.timestamp` and
//!   `metadata.source` (the configured `service_name`) unless it brings its own.
//! - **Flow control**: with a `subscription_buffer`, a listener holding that many unread events
//!   pauses its channel (the server subscription ends, the position is kept); once every
//!   listener is down to half, the channel resubscribes after its last event, so nothing is lost
//!   or repeated and memory stays bounded.
//! - **Close while publishing**: [`Client::close`] closes the socket at once, refuses new
//!   publishes and subscriptions, and still sends what was queued; the driver stops when
//!   [`Client::is_finished`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::channel::ChannelName;
use crate::connection::{self, Connection, ConnectionConfig, ConnectionStats, GapReason, State};
use crate::error::{Error, UsageError, ValidationError, ValidationKind};
#[cfg(feature = "publish")]
use crate::event::{Event, Metadata};
use crate::frame::{Delivery, StreamPosition};
#[cfg(feature = "publish")]
use crate::queue::{
    BatchId, PublishOptions, PublishQueue, PublishResult, QueueConfig, QueueStats, Ticket,
    TransportResult,
};
use crate::time::Instant;
#[cfg(feature = "publish")]
use crate::time::{SystemTime, UNIX_EPOCH};
use crate::vec_map::VecMap;

/// Where a client talks to: the WebSocket URL and the HTTP base, derived from one URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// `ws(s)://host[:port][/prefix]/ws`.
    pub ws_url: String,
    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    pub http_base: String,
}

impl Endpoints {
    /// Derives both endpoints from the server's URL, in any of the forms a user has at hand:
    /// `http://host:8766`, `https://host/prefix`, `ws://host:8766`, `ws://host:8766/ws`,
    /// `wss://host/prefix/ws` (a trailing `/ws` names the WebSocket endpoint and is dropped
    /// from the HTTP base). The scheme is case-insensitive; a query or fragment is refused.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |message: String| -> Error {
            ValidationError::new("url", ValidationKind::BadFormat, message).into()
        };
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(format!(
                "`{url}` is not a URL: use http(s)://host:port or ws(s)://host:port"
            )));
        };
        let (http, ws) = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => ("http", "ws"),
            "https" | "wss" => ("https", "wss"),
            other => {
                return Err(bad(format!(
                    "`{other}://` is not supported: use http://, https://, ws:// or wss://"
                )));
            }
        };
        if rest.contains(['?', '#']) {
            return Err(bad(format!(
                "`{url}` has a query or fragment: give the server's base URL only"
            )));
        }
        let rest = rest.trim_end_matches('/');
        let rest = rest
            .strip_suffix("/ws")
            .unwrap_or(rest)
            .trim_end_matches('/');
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() || host.starts_with(':') || host.contains(char::is_whitespace) {
            return Err(bad(format!("`{url}` has no host")));
        }
        Ok(Self {
            ws_url: format!("{ws}://{rest}/ws"),
            http_base: format!("{http}://{rest}"),
        })
    }

    /// Like [`parse`](Self::parse), with the HTTP base given separately (a publish endpoint
    /// behind another host or prefix than the WebSocket).
    pub fn with_http_base(url: &str, http_base: &str) -> Result<Self, Error> {
        let ws = Self::parse(url)?;
        let http = Self::parse(http_base)?;
        Ok(Self {
            ws_url: ws.ws_url,
            http_base: http.http_base,
        })
    }

    /// The URL batches are posted to.
    #[cfg(feature = "publish")]
    pub fn publish_batch_url(&self) -> String {
        format!("{}{}", self.http_base, crate::queue::PUBLISH_BATCH_PATH)
    }
}

/// Settings of a [`Client`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// `metadata.source` of published events that do not name one (empty lets the server use
    /// the token's subject).
    #[cfg(feature = "publish")]
    pub service_name: String,
    /// The WebSocket half.
    pub connection: ConnectionConfig,
    /// The publishing half.
    #[cfg(feature = "publish")]
    pub queue: QueueConfig,
    /// Unread events one listener may hold before its channel pauses (see the module docs);
    /// `None` for hosts that hand events to callbacks at once and report nothing unread.
    pub subscription_buffer: Option<usize>,
}

/// Unread events a listener holds by default before its channel pauses.
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 10_000;

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            #[cfg(feature = "publish")]
            service_name: String::new(),
            connection: ConnectionConfig::default(),
            #[cfg(feature = "publish")]
            queue: QueueConfig::default(),
            subscription_buffer: Some(DEFAULT_SUBSCRIPTION_BUFFER),
        }
    }
}

/// Per-event envelope options beyond the channel, type and data.
#[cfg(feature = "publish")]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventOptions {
    /// The event id (idempotency key); a fresh time-sortable id when `None`.
    pub idempotency_key: Option<String>,
    /// Metadata; `source` defaults to the client's service name and `timestamp` to now.
    pub metadata: Option<Metadata>,
}

/// One event to publish ([`Client::publish`], [`Client::publish_many`]).
#[cfg(feature = "publish")]
#[derive(Debug, Clone, PartialEq)]
pub struct PublishItem {
    /// The channel.
    pub channel: String,
    /// The event type.
    pub event_type: String,
    /// The data, as JSON text.
    pub data_json: String,
    /// Id and metadata.
    pub event: EventOptions,
    /// Priority and retry.
    pub options: PublishOptions,
}

/// One application-side subscription (a Rust `Subscription`, a Python async iterator, a
/// TypeScript handler). Several may share a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListenerId(pub u64);

/// What the driver or the application must act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Ask the token provider and answer with [`Client::handle_token`]. Never emitted again
    /// before that answer.
    FetchToken {
        /// Whether the previous token was refused as expired.
        refresh: bool,
    },
    /// Open a new WebSocket to [`Endpoints::ws_url`] and report
    /// [`Client::handle_socket_open`] or [`Client::handle_socket_closed`].
    OpenSocket,
    /// Send this text frame on the socket.
    SendFrame(String),
    /// Close the socket with this code and forget it.
    CloseSocket {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// `POST` `body` to [`Endpoints::publish_batch_url`] with `Authorization: Bearer
    /// {token}` and `Content-Type: application/json`; report the answer with
    /// [`Client::handle_response`].
    #[cfg(feature = "publish")]
    SendBatch {
        /// Pass it back with the answer.
        batch: BatchId,
        /// The request body.
        body: String,
        /// The bearer token.
        token: String,
    },
    /// The connection's state changed.
    State(State),
    /// A listener's subscription is live (again).
    Subscribed {
        /// Who.
        listener: ListenerId,
        /// The channel.
        channel: ChannelName,
        /// False when a [`Output::Gap`] follows.
        recovered: bool,
        /// The channel's latest position when the subscription started.
        position: StreamPosition,
    },
    /// An event for a listener; never a duplicate.
    Event {
        /// Who.
        listener: ListenerId,
        /// The event.
        delivery: Delivery,
    },
    /// Events were missed (see [`connection::Output::Gap`]).
    Gap {
        /// Who.
        listener: ListenerId,
        /// The channel.
        channel: ChannelName,
        /// The position before the gap.
        last: Option<StreamPosition>,
        /// The position after it.
        position: StreamPosition,
        /// Why.
        reason: GapReason,
    },
    /// A listener's subscription was refused; the listener is gone.
    SubscriptionFailed {
        /// Who.
        listener: ListenerId,
        /// The channel.
        channel: ChannelName,
        /// The server's reason.
        error: Error,
    },
    /// A published event's final outcome (each ticket exactly once).
    #[cfg(feature = "publish")]
    Published {
        /// The ticket [`Client::publish`] returned.
        ticket: Ticket,
        /// The acknowledgement, or why it was given up.
        result: Result<PublishResult, Error>,
    },
    /// Something the application should know about; [`Output::State`] says if it was fatal.
    Error(Error),
}

/// Every counter and gauge of a client, by name; the same names in every SDK, and in every
/// build: without the `publish` feature the publishing counters (`queued_*` to
/// `budget_exhausted`) are always zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientStats {
    /// High-priority events waiting to be sent (first attempts and retries).
    pub queued_high: usize,
    /// Normal-priority events waiting to be sent.
    pub queued_normal: usize,
    /// Low-priority events waiting to be sent.
    pub queued_low: usize,
    /// Events in batches awaiting an answer.
    pub in_flight: usize,
    /// Queued events that failed before and wait to be sent again.
    pub retrying: usize,
    /// Events sent again after a retryable failure, in all.
    pub retries: u64,
    /// Events given up (dead letters), in all.
    pub dead: u64,
    /// Events acknowledged (accepted or duplicate), in all.
    pub acknowledged: u64,
    /// Times retries waited for the retry budget.
    pub budget_exhausted: u64,
    /// Times a server-announced limit held something back (publishing or reconnecting).
    pub rate_limit_waits: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Events handed to listeners.
    pub events_received: u64,
    /// Replayed events dropped because they were already delivered.
    pub duplicates_dropped: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Heartbeat timeouts that replaced a connection.
    pub heartbeat_timeouts: u64,
    /// Channels subscribed (paused ones included).
    pub channels: usize,
    /// Channels paused because a listener fell behind.
    pub paused_channels: usize,
    /// Times a channel was paused, in all.
    pub pauses: u64,
    /// Token provider calls, in all.
    pub token_fetches: u64,
    /// Bytes read from the WebSocket's transport (TCP, or TLS records for `wss`): the upgrade
    /// response, frame headers and payloads as they crossed the wire (compressed when the
    /// connection negotiated permessage-deflate), summed over every connection of the client
    /// (reconnects included). `None` where the platform does not expose it (browsers). Filled
    /// by the SDK's driver, which owns the socket; the core never sets it.
    pub wire_bytes_received: Option<u64>,
    /// Bytes written to the WebSocket's transport, counted like `wire_bytes_received`.
    pub wire_bytes_sent: Option<u64>,
}

impl ClientStats {
    /// The connection's counters (every build).
    fn from_connection(c: &ConnectionStats) -> Self {
        Self {
            rate_limit_waits: c.rate_limit_waits,
            reconnects: c.reconnects,
            events_received: c.events_delivered,
            duplicates_dropped: c.duplicates_dropped,
            gaps: c.gaps,
            heartbeat_timeouts: c.heartbeat_timeouts,
            ..Self::default()
        }
    }

    /// The publish queue's counters on top (the publish build).
    #[cfg(feature = "publish")]
    fn with_queue(self, q: &QueueStats) -> Self {
        Self {
            queued_high: q.queued_high,
            queued_normal: q.queued_normal,
            queued_low: q.queued_low,
            in_flight: q.in_flight,
            retrying: q.retrying,
            retries: q.retries,
            dead: q.dead,
            acknowledged: q.acknowledged,
            budget_exhausted: q.budget_exhausted,
            rate_limit_waits: q.rate_limit_waits + self.rate_limit_waits,
            ..self
        }
    }
}

#[derive(Debug)]
struct Listener {
    channel: ChannelName,
    unread: usize,
}

#[derive(Debug, Default)]
struct ChannelState {
    listeners: Vec<ListenerId>,
    /// The `subscribed` answer of the live server subscription, for late listeners.
    live: Option<(bool, StreamPosition)>,
    /// Paused for flow control at this position (`None` inside when nothing was delivered).
    paused: Option<Option<StreamPosition>>,
}

/// The one token, shared by both halves.
#[derive(Debug, Default)]
struct Token {
    value: Option<String>,
    /// Bumped each time a new token arrives.
    generation: u64,
    /// A provider call is out (with its `refresh` flag).
    fetching: Option<bool>,
    /// The connection asked and waits for the answer.
    connection_waits: bool,
    /// The generation the connection holds.
    connection_generation: u64,
    /// The queue was refused with an expired token and waits for a new one.
    #[cfg(feature = "publish")]
    queue_waits: bool,
    /// Batches wait for a first token.
    #[cfg(feature = "publish")]
    http_waits: bool,
    /// The provider failed while batches waited for a first token: they fail with this.
    #[cfg(feature = "publish")]
    failed: Option<String>,
    fetches: u64,
}

/// The client (see the module docs).
#[derive(Debug)]
pub struct Client {
    #[cfg(feature = "publish")]
    service_name: String,
    buffer: Option<usize>,
    conn: Connection,
    #[cfg(feature = "publish")]
    queue: PublishQueue,
    token: Token,
    listeners: VecMap<ListenerId, Listener>,
    channels: VecMap<ChannelName, ChannelState>,
    /// The token generation each batch in flight was sent with.
    #[cfg(feature = "publish")]
    batch_generation: VecMap<BatchId, u64>,
    outputs: VecDeque<Output>,
    next_listener: u64,
    closed: bool,
    pauses: u64,
}

#[cfg(feature = "publish")]
fn unix_ms(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Client {
    /// A client that does nothing until a subscription or a publish. `seed` drives the ids
    /// and every jitter (drivers pass a random one; tests a fixed one).
    pub fn new(config: ClientConfig, seed: u64, now: Instant) -> Self {
        #[cfg(not(feature = "publish"))]
        let _ = now;
        Self {
            #[cfg(feature = "publish")]
            service_name: config.service_name,
            buffer: config.subscription_buffer.map(|b| b.max(1)),
            conn: Connection::new(config.connection, seed.rotate_left(17) ^ 0x5EED),
            #[cfg(feature = "publish")]
            queue: PublishQueue::new(config.queue, seed, now),
            token: Token::default(),
            listeners: VecMap::new(),
            channels: VecMap::new(),
            #[cfg(feature = "publish")]
            batch_generation: VecMap::new(),
            outputs: VecDeque::new(),
            next_listener: 1,
            closed: false,
            pauses: 0,
        }
    }

    // ---- application commands ----

    /// Opens the WebSocket now rather than on the first subscription. Harmless when open.
    pub fn connect(&mut self, now: Instant) {
        if !self.closed {
            self.conn.connect(now);
            self.pump(now);
        }
    }

    /// Adds a listener on `channel`, resuming after `since` when given; connects if needed.
    ///
    /// Errors: an invalid channel name; `CLOSED` after [`close`](Self::close);
    /// `ALREADY_SUBSCRIBED` when the channel is already subscribed and `since` is not its
    /// current position (one server subscription per channel cannot replay for one listener).
    pub fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        now: Instant,
    ) -> Result<ListenerId, Error> {
        let channel = ChannelName::new(channel)?;
        if self.closed || self.conn.state() == State::Closed {
            return Err(UsageError::Closed.into());
        }
        let id = ListenerId(self.next_listener);
        if let Some(state) = self.channels.get(&channel) {
            let current = self.position_of(&channel, state);
            if since.is_some() && since.as_ref() != current.as_ref() {
                return Err(UsageError::AlreadySubscribed(format!(
                    "{channel}` is already subscribed on this client at another position; \
                     a second listener gets events from the current position on: subscribe \
                     without `since`, or unsubscribe first"
                ))
                .into());
            }
            self.next_listener += 1;
            let live = state.live.clone();
            let state = self.channels.get_mut(&channel).expect("checked above");
            state.listeners.push(id);
            if let Some((recovered, position)) = live {
                self.outputs.push_back(Output::Subscribed {
                    listener: id,
                    channel: channel.clone(),
                    recovered,
                    position,
                });
            }
        } else {
            self.conn.subscribe(channel.clone(), since, now)?;
            self.next_listener += 1;
            self.channels.insert(
                channel.clone(),
                ChannelState {
                    listeners: vec![id],
                    ..ChannelState::default()
                },
            );
            self.conn.connect(now);
        }
        self.listeners.insert(id, Listener { channel, unread: 0 });
        self.pump(now);
        Ok(id)
    }

    /// Removes a listener; the server subscription ends with the channel's last listener.
    /// Returns whether the listener existed.
    pub fn unsubscribe(&mut self, listener: ListenerId, now: Instant) -> bool {
        let Some(l) = self.listeners.remove(&listener) else {
            return false;
        };
        let Some(state) = self.channels.get_mut(&l.channel) else {
            return true;
        };
        state.listeners.retain(|x| *x != listener);
        if state.listeners.is_empty() {
            self.channels.remove(&l.channel);
            self.conn.unsubscribe(&l.channel, now);
            self.pump(now);
        } else {
            self.maybe_resume(&l.channel, now);
        }
        true
    }

    /// The application read `count` events of `listener`'s: may resume a paused channel.
    pub fn handle_consumed(&mut self, listener: ListenerId, count: usize, now: Instant) {
        let Some(l) = self.listeners.get_mut(&listener) else {
            return;
        };
        l.unread = l.unread.saturating_sub(count);
        // Cheap unless the channel is paused (this runs for every event read).
        if self
            .channels
            .get(&l.channel)
            .is_some_and(|c| c.paused.is_some())
        {
            let channel = l.channel.clone();
            self.maybe_resume(&channel, now);
        }
    }

    /// Where `channel`'s delivery stands (the last event delivered, or the position right
    /// before the next one); resuming after it loses and repeats nothing.
    pub fn position(&self, channel: &ChannelName) -> Option<StreamPosition> {
        self.channels
            .get(channel)
            .and_then(|s| self.position_of(channel, s))
    }

    fn position_of(&self, channel: &ChannelName, state: &ChannelState) -> Option<StreamPosition> {
        match &state.paused {
            Some(p) => p.clone(),
            None => self.conn.position(channel).cloned(),
        }
    }

    /// Builds, stamps, validates and queues one event; its outcome comes as
    /// [`Output::Published`] with the returned ticket. Fails at once, with nothing queued,
    /// when the channel, the envelope or catalogue data is invalid, the queue is full, or the
    /// client is closed.
    #[cfg(feature = "publish")]
    pub fn publish(
        &mut self,
        item: PublishItem,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Ticket, Error> {
        if self.closed {
            return Err(UsageError::Closed.into());
        }
        let event = self.stamp(
            &item.channel,
            &item.event_type,
            item.data_json,
            item.event,
            wall,
        )?;
        self.queue.push(event, item.options, now)
    }

    /// Queues several events at once: all are checked first and none is queued if one is
    /// invalid (the error's field names its index) or if they do not all fit in the queue.
    #[cfg(feature = "publish")]
    pub fn publish_many(
        &mut self,
        items: Vec<PublishItem>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Vec<Ticket>, Error> {
        if self.closed {
            return Err(UsageError::Closed.into());
        }
        let max_payload = self.queue.config().max_payload_bytes;
        let capacity = self.queue.config().max_queued;
        if self.queue.pending() + items.len() > capacity {
            return Err(UsageError::QueueFull { capacity }.into());
        }
        let mut events = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let within = |e: Error| match e {
                Error::Invalid(v) => Error::Invalid(v.within(&format!("events[{i}]"))),
                other => other,
            };
            let event = self
                .stamp(
                    &item.channel,
                    &item.event_type,
                    item.data_json,
                    item.event,
                    wall,
                )
                .map_err(within)?;
            event
                .validate(max_payload)
                .map_err(|e| Error::Invalid(e.within(&format!("events[{i}]"))))?;
            events.push((event, item.options));
        }
        events
            .into_iter()
            .map(|(event, options)| self.queue.push(event, options, now))
            .collect()
    }

    #[cfg(feature = "publish")]
    fn stamp(
        &mut self,
        channel: &str,
        event_type: &str,
        data_json: String,
        options: EventOptions,
        wall: SystemTime,
    ) -> Result<Event, Error> {
        let channel = ChannelName::new(channel)?;
        let ms = unix_ms(wall);
        let id = match options.idempotency_key {
            Some(k) => k,
            None => self.queue.next_event_id(ms),
        };
        let mut metadata = options.metadata.unwrap_or_default();
        if metadata.source.is_empty() {
            metadata.source.clone_from(&self.service_name);
        }
        if metadata.timestamp == 0 {
            metadata.timestamp = ms;
        }
        Ok(Event::from_json_data(
            id, event_type, channel, data_json, metadata,
        )?)
    }

    /// Withdraws a published event that was never sent (no [`Output::Published`] comes for
    /// it then); returns whether it was withdrawn.
    #[cfg(feature = "publish")]
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        self.queue.cancel(ticket)
    }

    /// Closes the socket at once and refuses new work; what was queued is still sent.
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.closed = true;
        #[cfg(feature = "publish")]
        self.queue.close();
        self.conn.close(now);
        self.pump(now);
    }

    /// True after [`close`](Self::close) once every queued event completed: the driver may stop.
    pub fn is_finished(&self) -> bool {
        #[cfg(feature = "publish")]
        let flushed = self.queue.is_flushed();
        #[cfg(not(feature = "publish"))]
        let flushed = true;
        self.closed && flushed && self.outputs.is_empty()
    }

    /// True when every accepted event was acknowledged or given up.
    #[cfg(feature = "publish")]
    pub fn is_flushed(&self) -> bool {
        self.queue.is_flushed()
    }

    // ---- driver inputs ----

    /// The token provider's answer to [`Output::FetchToken`] (an empty token is an error).
    pub fn handle_token(&mut self, token: Result<String, String>, now: Instant) {
        if self.token.fetching.take().is_none() {
            return;
        }
        let token = token.and_then(|t| {
            if t.is_empty() {
                Err("the token provider returned an empty token".to_owned())
            } else {
                Ok(t)
            }
        });
        match token {
            Ok(t) => {
                self.token.value = Some(t.clone());
                self.token.generation += 1;
                #[cfg(feature = "publish")]
                {
                    self.token.failed = None;
                    self.token.http_waits = false;
                }
                if std::mem::take(&mut self.token.connection_waits) {
                    self.conn.handle_token(Ok(t), now);
                    self.token.connection_generation = self.token.generation;
                } else {
                    // For the next authentication; the live one still used the old token
                    // (see `handle_socket_open`).
                    self.conn.set_token(t);
                }
                #[cfg(feature = "publish")]
                if std::mem::take(&mut self.token.queue_waits) {
                    self.queue.handle_token(Ok(()), now);
                }
            }
            Err(message) => {
                if std::mem::take(&mut self.token.connection_waits) {
                    self.conn.handle_token(Err(message.clone()), now);
                }
                #[cfg(feature = "publish")]
                {
                    if std::mem::take(&mut self.token.queue_waits) {
                        self.queue.handle_token(Err(message.clone()), now);
                    }
                    if std::mem::take(&mut self.token.http_waits) {
                        self.token.failed = Some(message);
                    }
                }
            }
        }
        self.pump(now);
    }

    /// The socket asked for by [`Output::OpenSocket`] is open.
    pub fn handle_socket_open(&mut self, now: Instant) {
        // The connection authenticates with the latest token (`set_token` keeps it current).
        self.token.connection_generation = self.token.generation;
        self.conn.handle_transport_open(now);
        self.pump(now);
    }

    /// The socket closed or failed to open (`code` `None` when no close frame came).
    pub fn handle_socket_closed(&mut self, code: Option<u16>, reason: &str, now: Instant) {
        self.conn.handle_transport_closed(code, reason, now);
        self.pump(now);
    }

    /// A text frame from the server.
    pub fn handle_frame(&mut self, text: &str, now: Instant) {
        self.conn.handle_text(text, now);
        self.pump(now);
    }

    /// An event frame the driver decoded itself, by its position only (the WASM driver
    /// parses frames with the JavaScript engine's `JSON.parse` and keeps the event): the same
    /// decision as [`Client::handle_frame`] with the whole frame — duplicates dropped, gaps
    /// reported, flow control counted — but instead of [`Output::Event`]s it returns the
    /// listeners to hand the event to (none: drop it). Outputs it caused (a gap, a pause) are
    /// polled as usual; hand them out before the event.
    pub fn handle_event_position(
        &mut self,
        channel: &str,
        epoch: &str,
        offset: u64,
        now: Instant,
    ) -> &[ListenerId] {
        if !self.conn.handle_event_position(channel, epoch, offset, now) {
            self.pump(now);
            return &[];
        }
        self.pump(now);
        if self.buffer.is_some() {
            self.count_unread(channel, now);
            // A pause asks the connection to unsubscribe.
            self.pump(now);
        }
        self.channels
            .get(channel)
            .map_or(&[], |state| state.listeners.as_slice())
    }

    /// What came back for an [`Output::SendBatch`]; `wall` turns HTTP-dates into delays.
    #[cfg(feature = "publish")]
    pub fn handle_response(
        &mut self,
        batch: BatchId,
        result: TransportResult,
        now: Instant,
        wall: SystemTime,
    ) {
        let generation = self.batch_generation.remove(&batch);
        self.queue.handle_response(batch, result, now, wall);
        if self.queue.poll_token_request() {
            if generation.is_some_and(|g| g < self.token.generation) {
                // Someone already replaced the token this batch was refused with.
                self.queue.handle_token(Ok(()), now);
            } else {
                self.token.queue_waits = true;
                self.fetch_token(true);
            }
        }
        self.pump(now);
    }

    /// Lets timers fire; extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        #[cfg(feature = "publish")]
        self.queue.handle_timeout(now);
        self.pump(now);
    }

    // ---- outputs ----

    /// The next output to act on; call until `None` after every command or input.
    #[must_use]
    pub fn poll(&mut self, now: Instant) -> Option<Output> {
        #[cfg(feature = "publish")]
        if self.outputs.is_empty() {
            self.transmit(now);
        }
        #[cfg(not(feature = "publish"))]
        let _ = now;
        self.outputs.pop_front()
    }

    /// Whether an output waits (the driver's shortcut after an input that rarely has any,
    /// such as [`Client::handle_event_position`]; [`Client::poll`] is still the only way to
    /// take them, and may find batches to send even when this is false).
    #[must_use]
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        #[cfg(feature = "publish")]
        {
            let queue = if self.token.value.is_some() || self.token.fetching.is_none() {
                self.queue.poll_timeout()
            } else {
                None
            };
            [self.conn.poll_timeout(), queue]
                .into_iter()
                .flatten()
                .min()
        }
        #[cfg(not(feature = "publish"))]
        self.conn.poll_timeout()
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// Every counter, by name.
    pub fn stats(&self, now: Instant) -> ClientStats {
        let mut s = ClientStats::from_connection(self.conn.stats());
        #[cfg(feature = "publish")]
        {
            s = s.with_queue(&self.queue.stats(now));
        }
        #[cfg(not(feature = "publish"))]
        let _ = now;
        s.channels = self.channels.len();
        s.paused_channels = self
            .channels
            .values()
            .filter(|c| c.paused.is_some())
            .count();
        s.pauses = self.pauses;
        s.token_fetches = self.token.fetches;
        s
    }

    /// The events given up so far (oldest first).
    #[cfg(feature = "publish")]
    pub fn dead_letters(&self) -> &[crate::queue::DeadLetter] {
        self.queue.dead_letters()
    }

    /// Takes the dead letters, leaving none.
    #[cfg(feature = "publish")]
    pub fn take_dead_letters(&mut self) -> Vec<crate::queue::DeadLetter> {
        self.queue.take_dead_letters()
    }

    // ---- internals ----

    fn fetch_token(&mut self, refresh: bool) {
        if self.token.fetching.is_none() {
            self.token.fetching = Some(refresh);
            self.token.fetches += 1;
            self.outputs.push_back(Output::FetchToken { refresh });
        }
    }

    /// Hands out the batches the queue lets go now, with the token.
    #[cfg(feature = "publish")]
    fn transmit(&mut self, now: Instant) {
        loop {
            if self.token.value.is_none() {
                if let Some(message) = self.token.failed.take() {
                    // No token could be had: the batches fail like a failed request, so the
                    // queue's backoff and attempt limit apply (a dead provider ends in dead
                    // letters, never a hang).
                    while let Some(b) = self.queue.poll_transmit(now) {
                        self.queue.handle_response(
                            b.id,
                            TransportResult::Failed(format!("token provider failed: {message}")),
                            now,
                            SystemTime::UNIX_EPOCH,
                        );
                    }
                    self.drain_completions();
                    continue;
                }
                if self.queue.next_send_at(now).is_some_and(|t| t <= now) {
                    self.token.http_waits = true;
                    self.fetch_token(false);
                }
                return;
            }
            let Some(batch) = self.queue.poll_transmit(now) else {
                self.drain_completions();
                return;
            };
            let token = self.token.value.clone().unwrap_or_default();
            self.batch_generation
                .insert(batch.id, self.token.generation);
            self.outputs.push_back(Output::SendBatch {
                batch: batch.id,
                body: batch.body,
                token,
            });
        }
    }

    #[cfg(feature = "publish")]
    fn drain_completions(&mut self) {
        while let Some(c) = self.queue.poll_completion() {
            self.outputs.push_back(Output::Published {
                ticket: c.ticket,
                result: c.result,
            });
        }
    }

    /// Moves the connection's outputs into the client's, answering token requests from the
    /// shared token and fanning channel outputs out to listeners.
    fn pump(&mut self, now: Instant) {
        while let Some(out) = self.conn.poll() {
            match out {
                connection::Output::FetchToken { refresh } => {
                    let fresher = self.token.connection_generation < self.token.generation;
                    match &self.token.value {
                        Some(t) if !refresh || fresher => {
                            let t = t.clone();
                            self.token.connection_generation = self.token.generation;
                            self.conn.handle_token(Ok(t), now);
                        }
                        _ => {
                            if refresh {
                                self.token.value = None;
                            }
                            self.token.connection_waits = true;
                            self.fetch_token(refresh);
                        }
                    }
                }
                connection::Output::OpenTransport => self.outputs.push_back(Output::OpenSocket),
                connection::Output::Send(text) => self.outputs.push_back(Output::SendFrame(text)),
                connection::Output::CloseTransport { code, reason } => {
                    self.outputs.push_back(Output::CloseSocket { code, reason });
                }
                connection::Output::State(s) => {
                    if s != State::Connected {
                        for state in self.channels.values_mut() {
                            state.live = None;
                        }
                    }
                    self.outputs.push_back(Output::State(s));
                }
                connection::Output::Subscribed {
                    channel,
                    recovered,
                    position,
                } => {
                    let Some(state) = self.channels.get_mut(&channel) else {
                        continue;
                    };
                    state.live = Some((recovered, position.clone()));
                    for &listener in &state.listeners {
                        self.outputs.push_back(Output::Subscribed {
                            listener,
                            channel: channel.clone(),
                            recovered,
                            position: position.clone(),
                        });
                    }
                }
                connection::Output::Event(delivery) => self.deliver(delivery, now),
                connection::Output::Gap {
                    channel,
                    last,
                    position,
                    reason,
                } => {
                    let Some(state) = self.channels.get(&channel) else {
                        continue;
                    };
                    for &listener in &state.listeners {
                        self.outputs.push_back(Output::Gap {
                            listener,
                            channel: channel.clone(),
                            last: last.clone(),
                            position: position.clone(),
                            reason,
                        });
                    }
                }
                connection::Output::SubscriptionFailed { channel, error } => {
                    let Some(state) = self.channels.remove(&channel) else {
                        continue;
                    };
                    for listener in state.listeners {
                        self.listeners.remove(&listener);
                        self.outputs.push_back(Output::SubscriptionFailed {
                            listener,
                            channel: channel.clone(),
                            error: error.clone(),
                        });
                    }
                }
                connection::Output::Error(e) => self.outputs.push_back(Output::Error(e)),
            }
        }
        #[cfg(feature = "publish")]
        self.drain_completions();
    }

    fn deliver(&mut self, delivery: Delivery, now: Instant) {
        // The hot path of every subscriber: no allocation beyond the output itself when the
        // channel has one listener (the common case).
        let Some(state) = self.channels.get(delivery.event.channel.as_str()) else {
            return;
        };
        // Flow control counts after the outputs are queued (a pause follows the event).
        let counted = self
            .buffer
            .is_some()
            .then(|| delivery.event.channel.clone());
        match state.listeners.as_slice() {
            [] => {}
            [listener] => self.outputs.push_back(Output::Event {
                listener: *listener,
                delivery,
            }),
            [rest @ .., last] => {
                for &listener in rest {
                    self.outputs.push_back(Output::Event {
                        listener,
                        delivery: delivery.clone(),
                    });
                }
                self.outputs.push_back(Output::Event {
                    listener: *last,
                    delivery,
                });
            }
        }
        if let Some(channel) = counted {
            self.count_unread(channel.as_str(), now);
        }
    }

    /// Flow control: one more unread event for every listener of `channel`; pauses the
    /// channel when one of them reached the buffer.
    fn count_unread(&mut self, channel: &str, now: Instant) {
        let Some(buffer) = self.buffer else {
            return;
        };
        let Some(state) = self.channels.get(channel) else {
            return;
        };
        let mut full = false;
        for id in &state.listeners {
            if let Some(l) = self.listeners.get_mut(id) {
                l.unread += 1;
                full |= l.unread >= buffer;
            }
        }
        if full && let Ok(channel) = ChannelName::new(channel) {
            self.pause(&channel, now);
        }
    }

    /// Ends the server subscription of a channel whose listener fell behind, keeping its
    /// position.
    fn pause(&mut self, channel: &ChannelName, now: Instant) {
        let position = self.conn.position(channel).cloned();
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        if state.paused.is_some() {
            return;
        }
        state.paused = Some(position);
        state.live = None;
        self.pauses += 1;
        self.conn.unsubscribe(channel, now);
    }

    fn maybe_resume(&mut self, channel: &ChannelName, now: Instant) {
        let Some(buffer) = self.buffer else {
            return;
        };
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        if state.paused.is_none() {
            return;
        }
        let caught_up = state
            .listeners
            .iter()
            .all(|l| self.listeners.get(l).is_none_or(|l| l.unread <= buffer / 2));
        if !caught_up {
            return;
        }
        let since = state.paused.take().flatten();
        if self.conn.subscribe(channel.clone(), since, now).is_ok() {
            self.pump(now);
        }
    }
}
