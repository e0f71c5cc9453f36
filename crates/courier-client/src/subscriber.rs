//! The WebSocket subscriber: one tokio task driving [`Connection`], one task per socket.
//!
//! The connection state machine decides everything (authentication, resubscription with
//! `since`, duplicates, gaps, heartbeats, backoff, token refresh, the close-code table); the
//! driver opens and closes sockets when told, forwards frames both ways, asks the token
//! provider, and wakes the state machine at [`Connection::poll_timeout`].
//!
//! A subscription holds at most [`ClientConfig::subscription_buffer`](crate::ClientConfig)
//! unread events. When the application falls that far behind, the driver stops taking the
//! channel's events (the core unsubscribes) instead of holding them all; once the
//! application has read half of them, the channel is subscribed again after the last event
//! it was given, and the server's history fills the hole. This is the core's ordinary
//! resubscription with `since`, so it has the same semantics as a reconnect: when history no
//! longer covers the lag (trimmed, or the epoch changed meanwhile) one `Gap` names what is
//! missing and the events the server still holds follow. Memory stays bounded and only what
//! the server no longer has is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use courier_core::connection::{
    Connection, ConnectionStats, GapReason, Output, State as ConnState,
};
use courier_core::time::Instant;
use courier_core::{ChannelName, Delivery, Error, StreamPosition, UsageError};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::token::TokenCache;

/// Something that happened on the client, for connection-state listeners.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The subscriber connection changed state.
    State(ConnState),
    /// An error the application may want to know about (the state says if it was fatal).
    Error(Error),
}

/// A listener for [`ClientEvent`]s, called on the client's runtime; keep it quick.
pub type Listener = Arc<dyn Fn(ClientEvent) + Send + Sync>;

/// What a subscription yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubscriptionItem {
    /// The subscription is live (again, after a reconnect or after a pause for falling
    /// behind: see the module docs).
    Subscribed {
        /// Whether everything since the last position is replayed.
        recovered: bool,
        /// The channel's position when it started.
        position: StreamPosition,
    },
    /// An event; never a duplicate, always in offset order.
    Event(Delivery),
    /// Events were missed: those after `last` up to and including `position`, which the
    /// server no longer holds (see [`courier_core::connection::Output::Gap`]). At most one
    /// per (re)subscription; the events that follow continue right after `position`.
    Gap {
        /// Where the subscription stood: its last event, or its `since`.
        last: Option<StreamPosition>,
        /// Where delivery continues: the next event is the one after it.
        position: StreamPosition,
        /// Why.
        reason: GapReason,
    },
    /// The subscription ended for good: refused by the server, or the client closed
    /// (`None` when closed by the application).
    Ended(Option<Error>),
}

/// How many unread events a subscription holds by default before the client pauses it.
pub const DEFAULT_SUBSCRIPTION_BUFFER: usize = 10_000;

/// The unread events of one subscription, shared by the driver (which adds) and the
/// [`Subscription`] (which takes).
#[derive(Debug)]
struct Flow {
    queued: AtomicUsize,
    /// The driver stopped taking this channel's events; the first side to see `queued`
    /// at or below `resume_at` while this is set asks for them again.
    paused: AtomicBool,
    capacity: usize,
    resume_at: usize,
}

impl Flow {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            queued: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            capacity,
            resume_at: capacity / 2,
        }
    }

    /// Whether a paused channel should resume now (true for one caller only). `SeqCst`
    /// on both sides: the driver sets `paused` then reads `queued`, the subscription
    /// lowers `queued` then reads `paused`, so one of them sees the other's write.
    fn take_resume(&self) -> bool {
        self.queued.load(Ordering::SeqCst) <= self.resume_at
            && self.paused.swap(false, Ordering::SeqCst)
    }
}

enum Command {
    Subscribe {
        channel: ChannelName,
        since: Option<StreamPosition>,
        tx: mpsc::UnboundedSender<SubscriptionItem>,
        flow: Arc<Flow>,
    },
    Unsubscribe(ChannelName),
    /// A paused subscription has caught up: subscribe again after its last event.
    Resume(ChannelName),
    Close(oneshot::Sender<()>),
}

/// A live subscription to one channel; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    channel: ChannelName,
    rx: mpsc::UnboundedReceiver<SubscriptionItem>,
    buffered: VecDeque<SubscriptionItem>,
    cmd: mpsc::UnboundedSender<Command>,
    flow: Arc<Flow>,
    position: Option<StreamPosition>,
    ended: bool,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// Where this subscription stands: the position of the last event returned, or the
    /// `position` of a [`SubscriptionItem::Gap`] returned after it. Pass it as `since` to
    /// resume elsewhere without repeating an event or reporting a gap twice.
    pub fn position(&self) -> Option<&StreamPosition> {
        self.position.as_ref()
    }

    /// The next item; `None` once the subscription ended and everything was read.
    pub async fn next(&mut self) -> Option<SubscriptionItem> {
        if let Some(item) = self.buffered.pop_front() {
            return Some(self.note(item));
        }
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
            Some(item) => Some(self.note(item)),
            None => {
                self.ended = true;
                None
            }
        }
    }

    /// The next item if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<SubscriptionItem> {
        if let Some(item) = self.buffered.pop_front() {
            return Some(self.note(item));
        }
        self.rx.try_recv().ok().map(|i| self.note(i))
    }

    fn note(&mut self, item: SubscriptionItem) -> SubscriptionItem {
        match &item {
            SubscriptionItem::Event(d) => {
                self.position = Some(StreamPosition {
                    epoch: d.epoch.clone(),
                    offset: d.offset,
                });
                self.flow.queued.fetch_sub(1, Ordering::SeqCst);
                if self.flow.take_resume() {
                    let _ = self.cmd.send(Command::Resume(self.channel.clone()));
                }
            }
            SubscriptionItem::Gap { position, .. } => self.position = Some(position.clone()),
            SubscriptionItem::Ended(_) => self.ended = true,
            SubscriptionItem::Subscribed { .. } => {}
        }
        item
    }

    /// The next event, skipping the other items (gaps are logged); `None` when the
    /// subscription was closed by the application, `Some(Err)` when it was refused.
    pub async fn next_event(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            match self.next().await? {
                SubscriptionItem::Event(d) => return Some(Ok(d)),
                SubscriptionItem::Ended(Some(e)) => return Some(Err(e)),
                SubscriptionItem::Ended(None) => return None,
                _ => {}
            }
        }
    }

    /// Waits until the server confirmed the subscription (items that arrive meanwhile are
    /// kept for [`Subscription::next`]).
    pub async fn ready(&mut self) -> Result<StreamPosition, Error> {
        let mut seen = VecDeque::new();
        let result = loop {
            match self.rx.recv().await {
                Some(item @ SubscriptionItem::Subscribed { .. }) => {
                    let SubscriptionItem::Subscribed { position, .. } = &item else {
                        unreachable!()
                    };
                    let position = position.clone();
                    seen.push_back(item);
                    break Ok(position);
                }
                Some(SubscriptionItem::Ended(e)) => {
                    let err = e.clone().unwrap_or_else(|| UsageError::Closed.into());
                    seen.push_back(SubscriptionItem::Ended(e));
                    break Err(err);
                }
                Some(other) => seen.push_back(other),
                None => break Err(UsageError::Closed.into()),
            }
        };
        self.buffered.extend(seen);
        result
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.cmd.send(Command::Unsubscribe(self.channel.clone()));
        }
    }
}

/// The subscriber side of a client: one logical WebSocket connection, opened on the first
/// subscription.
#[derive(Clone)]
pub struct Subscriber {
    cmd: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnState>,
    stats: Arc<Mutex<ConnectionStats>>,
    buffer: usize,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

pub(crate) struct SubscriberSetup {
    pub(crate) url: String,
    pub(crate) tokens: Arc<TokenCache>,
    pub(crate) listener: Option<Listener>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) subscription_buffer: usize,
}

impl Subscriber {
    pub(crate) fn spawn(
        conn: Connection,
        setup: SubscriberSetup,
        handle: &tokio::runtime::Handle,
    ) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(conn.state());
        let stats = Arc::new(Mutex::new(ConnectionStats::default()));
        let buffer = setup.subscription_buffer;
        let driver = Driver {
            conn,
            setup,
            generation: 0,
            socket: None,
            subs: HashMap::new(),
            state_tx,
            stats: stats.clone(),
            last_token: None,
            last_error: None,
        };
        handle.spawn(driver.run(cmd_rx));
        Self {
            cmd: cmd_tx,
            state: state_rx,
            stats,
            buffer,
        }
    }

    /// Subscribes to `channel`, resuming after `since` when given.
    pub fn subscribe(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<Subscription, Error> {
        let channel = ChannelName::new(channel)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let flow = Arc::new(Flow::new(self.buffer));
        self.cmd
            .send(Command::Subscribe {
                channel: channel.clone(),
                since: since.clone(),
                tx,
                flow: flow.clone(),
            })
            .map_err(|_| Error::from(UsageError::Closed))?;
        Ok(Subscription {
            channel,
            rx,
            buffered: VecDeque::new(),
            cmd: self.cmd.clone(),
            flow,
            position: since,
            ended: false,
        })
    }

    /// The connection's state.
    pub fn state(&self) -> ConnState {
        *self.state.borrow()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<ConnState> {
        self.state.clone()
    }

    /// Connection counters.
    pub fn stats(&self) -> ConnectionStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Closes the connection (1000) and ends every subscription.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

enum SocketOut {
    Text(String),
    Close(u16, String),
}

enum SocketEvent {
    Open,
    Text(String),
    Closed(Option<u16>, String),
}

struct Driver {
    conn: Connection,
    setup: SubscriberSetup,
    generation: u64,
    socket: Option<mpsc::UnboundedSender<SocketOut>>,
    subs: HashMap<ChannelName, Route>,
    state_tx: watch::Sender<ConnState>,
    stats: Arc<Mutex<ConnectionStats>>,
    last_token: Option<String>,
    last_error: Option<Error>,
}

/// Where one channel's items go.
struct Route {
    tx: mpsc::UnboundedSender<SubscriptionItem>,
    flow: Arc<Flow>,
    /// The last position handed to the subscription: its last event, the `position` of the
    /// last gap it was given, or its `since`. A paused channel resubscribes from here.
    last: Option<StreamPosition>,
    /// The core no longer holds the channel: the subscription fell behind.
    paused: bool,
}

impl Driver {
    async fn run(mut self, mut cmd_rx: mpsc::UnboundedReceiver<Command>) {
        let (sock_tx, mut sock_rx) = mpsc::unbounded_channel::<(u64, SocketEvent)>();
        let (token_tx, mut token_rx) = mpsc::unbounded_channel::<Result<String, String>>();
        let mut close_replies: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let now = Instant::now();
            if self.conn.poll_timeout().is_some_and(|t| t <= now) {
                self.conn.handle_timeout(now);
            }
            self.drain(&sock_tx, &token_tx);
            if !close_replies.is_empty() && self.conn.state() == ConnState::Closed {
                break;
            }
            let deadline = self.conn.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmd_rx.recv() => {
                    let now = Instant::now();
                    match cmd {
                        None => {
                            self.conn.close(now);
                            self.drain(&sock_tx, &token_tx);
                            break;
                        }
                        Some(Command::Close(reply)) => {
                            close_replies.push(reply);
                            self.conn.close(now);
                        }
                        Some(Command::Subscribe { channel, since, tx, flow }) => {
                            match self.conn.subscribe(channel.clone(), since.clone(), now) {
                                Ok(()) => {
                                    let route = Route { tx, flow, last: since, paused: false };
                                    self.subs.insert(channel, route);
                                    self.conn.connect(now);
                                }
                                Err(e) => {
                                    let _ = tx.send(SubscriptionItem::Ended(Some(e)));
                                }
                            }
                        }
                        Some(Command::Unsubscribe(channel)) => {
                            self.subs.remove(&channel);
                            self.conn.unsubscribe(&channel, now);
                        }
                        Some(Command::Resume(channel)) => self.resume(&channel, now),
                    }
                }
                Some((generation, event)) = sock_rx.recv() => {
                    if generation == self.generation && self.socket.is_some() {
                        let now = Instant::now();
                        match event {
                            SocketEvent::Open => self.conn.handle_transport_open(now),
                            SocketEvent::Text(text) => self.conn.handle_text(&text, now),
                            SocketEvent::Closed(code, reason) => {
                                tracing::info!(?code, %reason, "websocket closed");
                                self.socket = None;
                                self.conn.handle_transport_closed(code, &reason, now);
                            }
                        }
                    }
                }
                Some(token) = token_rx.recv() => {
                    if let Ok(t) = &token {
                        self.last_token = Some(t.clone());
                    }
                    self.conn.handle_token(token, Instant::now());
                }
                () = sleep => {}
            }
        }
        // Closed: every subscription ends.
        for (_, route) in self.subs.drain() {
            let _ = route.tx.send(SubscriptionItem::Ended(None));
        }
        for reply in close_replies {
            let _ = reply.send(());
        }
    }

    fn drain(
        &mut self,
        sock_tx: &mpsc::UnboundedSender<(u64, SocketEvent)>,
        token_tx: &mpsc::UnboundedSender<Result<String, String>>,
    ) {
        while let Some(output) = self.conn.poll() {
            match output {
                Output::FetchToken { refresh } => {
                    let tokens = self.setup.tokens.clone();
                    let tx = token_tx.clone();
                    let stale = self.last_token.clone();
                    tokio::spawn(async move {
                        let token = if refresh {
                            tokens.refresh(stale.as_deref()).await
                        } else {
                            tokens.get().await
                        };
                        let _ = tx.send(token);
                    });
                }
                Output::OpenTransport => {
                    self.generation += 1;
                    let (out_tx, out_rx) = mpsc::unbounded_channel();
                    self.socket = Some(out_tx);
                    tokio::spawn(run_socket(
                        self.generation,
                        self.setup.url.clone(),
                        self.setup.max_frame_bytes,
                        sock_tx.clone(),
                        out_rx,
                    ));
                }
                Output::Send(text) => {
                    if let Some(s) = &self.socket {
                        let _ = s.send(SocketOut::Text(text));
                    }
                }
                Output::CloseTransport { code, reason } => {
                    if let Some(s) = self.socket.take() {
                        let _ = s.send(SocketOut::Close(code, reason));
                    }
                }
                Output::State(state) => {
                    tracing::info!(state = ?state, "connection state");
                    self.state_tx.send_replace(state);
                    self.notify(ClientEvent::State(state));
                    if state == ConnState::Closed {
                        let error = self.last_error.take();
                        for (_, route) in self.subs.drain() {
                            let _ = route.tx.send(SubscriptionItem::Ended(error.clone()));
                        }
                    }
                }
                Output::Subscribed {
                    channel,
                    recovered,
                    position,
                } => {
                    tracing::debug!(%channel, recovered, "subscribed");
                    self.route(
                        &channel,
                        SubscriptionItem::Subscribed {
                            recovered,
                            position,
                        },
                    );
                }
                Output::Event(delivery) => self.route_event(delivery),
                Output::Gap {
                    channel,
                    last,
                    position,
                    reason,
                } => {
                    tracing::warn!(%channel, ?reason, ?last, ?position, "events may be missing");
                    // The subscription has been told everything up to `position` is gone:
                    // a pause before the next event resumes from there, with no second gap.
                    if let Some(route) = self.subs.get_mut(&channel) {
                        route.last = Some(position.clone());
                    }
                    self.route(
                        &channel,
                        SubscriptionItem::Gap {
                            last,
                            position,
                            reason,
                        },
                    );
                }
                Output::SubscriptionFailed { channel, error } => {
                    tracing::warn!(%channel, %error, "subscription refused");
                    if let Some(route) = self.subs.remove(&channel) {
                        let _ = route.tx.send(SubscriptionItem::Ended(Some(error)));
                    }
                }
                Output::Error(error) => {
                    tracing::warn!(%error, "connection error");
                    self.last_error = Some(error.clone());
                    self.notify(ClientEvent::Error(error));
                }
                other => tracing::debug!(?other, "unhandled output"),
            }
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = self.conn.stats().clone();
    }

    fn route(&mut self, channel: &ChannelName, item: SubscriptionItem) {
        if let Some(route) = self.subs.get(channel) {
            if route.tx.send(item).is_err() {
                // The application dropped the subscription without an unsubscribe reaching us.
                self.subs.remove(channel);
                self.conn.unsubscribe(channel, Instant::now());
            }
        }
    }

    /// Hands an event to its subscription, or pauses the channel when the subscription
    /// already holds `subscription_buffer` unread events (see the module docs).
    fn route_event(&mut self, delivery: Delivery) {
        let channel = delivery.event.channel.clone();
        let Some(route) = self.subs.get_mut(&channel) else {
            return;
        };
        if route.paused {
            return;
        }
        if route.flow.queued.load(Ordering::SeqCst) >= route.flow.capacity {
            tracing::warn!(%channel, unread = route.flow.capacity, last = ?route.last,
                "subscription not keeping up: paused until it has read half of its events");
            route.paused = true;
            route.flow.paused.store(true, Ordering::SeqCst);
            let resume_now = route.flow.take_resume();
            let now = Instant::now();
            self.conn.unsubscribe(&channel, now);
            if resume_now {
                self.resume(&channel, now);
            }
            return;
        }
        let position = StreamPosition {
            epoch: delivery.epoch.clone(),
            offset: delivery.offset,
        };
        route.flow.queued.fetch_add(1, Ordering::SeqCst);
        if route.tx.send(SubscriptionItem::Event(delivery)).is_err() {
            // The application dropped the subscription without an unsubscribe reaching us.
            self.subs.remove(&channel);
            self.conn.unsubscribe(&channel, Instant::now());
            return;
        }
        route.last = Some(position);
    }

    /// Subscribes a paused channel again, after the last event its subscription was given.
    fn resume(&mut self, channel: &ChannelName, now: Instant) {
        let Some(route) = self.subs.get_mut(channel) else {
            return;
        };
        if !route.paused {
            return;
        }
        route.paused = false;
        tracing::info!(%channel, since = ?route.last, "subscription caught up: resuming");
        match self
            .conn
            .subscribe(channel.clone(), route.last.clone(), now)
        {
            Ok(()) => self.conn.connect(now),
            Err(e) => {
                let _ = route.tx.send(SubscriptionItem::Ended(Some(e)));
                self.subs.remove(channel);
            }
        }
    }

    fn notify(&self, event: ClientEvent) {
        if let Some(l) = &self.setup.listener {
            l(event);
        }
    }
}

async fn run_socket(
    generation: u64,
    url: String,
    max_frame_bytes: usize,
    events: mpsc::UnboundedSender<(u64, SocketEvent)>,
    mut out: mpsc::UnboundedReceiver<SocketOut>,
) {
    let report = |e: SocketEvent| {
        let _ = events.send((generation, e));
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes));
    let connecting = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
    // The connection state machine owns the connect deadline: when it gives up it sends
    // CloseTransport, which drops `out`, which ends this attempt.
    let mut ws = tokio::select! {
        r = connecting => match r {
            Ok((ws, _)) => ws,
            Err(e) => {
                report(SocketEvent::Closed(None, format!("connect failed: {e}")));
                return;
            }
        },
        _ = out.recv() => return,
    };
    report(SocketEvent::Open);
    loop {
        tokio::select! {
            msg = out.recv() => match msg {
                Some(SocketOut::Text(text)) => {
                    if let Err(e) = ws.send(Message::text(text)).await {
                        report(SocketEvent::Closed(None, format!("send failed: {e}")));
                        return;
                    }
                }
                Some(SocketOut::Close(code, reason)) => {
                    let frame = CloseFrame { code: code.into(), reason: reason.into() };
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        ws.close(Some(frame)),
                    )
                    .await;
                    return;
                }
                None => return,
            },
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => report(SocketEvent::Text(text.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (Some(u16::from(f.code)), f.reason.to_string()))
                        .unwrap_or((None, String::new()));
                    report(SocketEvent::Closed(code, reason));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    report(SocketEvent::Closed(None, e.to_string()));
                    return;
                }
                None => {
                    report(SocketEvent::Closed(None, "connection ended".into()));
                    return;
                }
            },
        }
    }
}
