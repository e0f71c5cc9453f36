//! The connection state machine: authentication, subscriptions with resume, heartbeats,
//! reconnection with backoff, token refresh and the close-code table.
//!
//! A driver owns one WebSocket at a time and moves bytes and time:
//!
//! 1. Calls application commands ([`Connection::connect`], [`Connection::subscribe`], …) and
//!    driver inputs (`handle_*`) with the current `now`.
//! 2. Drains [`Connection::poll`] until `None`, doing what each [`Output`] says.
//! 3. Sleeps until [`Connection::poll_timeout`], or until a frame or a command arrives, and
//!    calls [`Connection::handle_timeout`]; extra calls are harmless.
//!
//! Contract for transports: after [`Output::CloseTransport`] (or after reporting
//! [`Connection::handle_transport_closed`]) the driver forgets that socket and reports nothing
//! more about it; [`Output::OpenTransport`] always means a new socket.
//!
//! Resume: every subscription keeps the `(epoch, offset)` of the last event it delivered. After
//! a reconnect it resubscribes with `since`; the server answers `subscribed` with
//! `replay_from` (f), the first offset it replays, then replays `f ..= offset` and goes live.
//! When it could resume (`recovered`) the position stays and the replay continues right after
//! it. When it could not (the epoch changed, or `since` is older than the history it holds),
//! exactly one [`Output::Gap`] names what is missing, the position moves to `(epoch, f - 1)`,
//! and the replayed events that remain are delivered. Events at or below the position are
//! dropped (never delivered twice). Servers without `replay_from` replay nothing on a failed
//! resume: f is then `offset + 1`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, BackoffConfig};
use crate::channel::ChannelName;
use crate::close::{self, CloseAction, classify_close};
use crate::error::{Error, ErrorCode, Refusal, UsageError};
use crate::frame::{ClientFrame, Delivery, ErrorFrame, ServerFrame, StreamPosition};
use crate::time::{Duration, Instant};
use crate::vec_map::VecMap;

/// Settings of a [`Connection`]. Durations are milliseconds, for the bindings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionConfig {
    /// Sent in `connect` as `client`, e.g. `courier-py/0.1.0`.
    pub client_name: String,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// How long opening the socket plus authentication may take.
    pub connect_timeout_ms: u64,
    /// How long past the server's ping interval a silent connection is still trusted.
    pub heartbeat_grace_ms: u64,
    /// Largest frame accepted from the server.
    pub max_frame_bytes: usize,
    /// Upper bound on any server-requested delay.
    pub retry_after_cap_ms: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            client_name: concat!("courier-core/", env!("CARGO_PKG_VERSION")).to_owned(),
            backoff: BackoffConfig::default(),
            connect_timeout_ms: 10_000,
            heartbeat_grace_ms: 5_000,
            max_frame_bytes: 1024 * 1024,
            retry_after_cap_ms: 300_000,
        }
    }
}

/// The connection's state as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not connected; a reconnect may be scheduled.
    Disconnected,
    /// Getting a token, opening the socket or authenticating.
    Connecting,
    /// Authenticated; subscriptions are live.
    Connected,
    /// Closed by the application or by a terminal error; nothing more happens.
    Closed,
}

/// Why events may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// Same epoch, but the server no longer holds the events right after the position
    /// (trimmed history): delivery continues from the oldest event it still holds.
    HistoryUnavailable,
    /// The channel's history epoch changed (the server lost its history): delivery
    /// continues from the oldest event the server holds in the new epoch.
    EpochChanged,
    /// An offset was skipped within one epoch.
    OffsetSkipped,
}

/// What the driver or the application must act on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Output {
    /// Ask the token provider for a token and answer with [`Connection::handle_token`].
    /// Never emitted again before that answer (one request in flight, shared by everyone).
    FetchToken {
        /// Whether the previous token was rejected as expired.
        refresh: bool,
    },
    /// Open a new WebSocket and report [`Connection::handle_transport_open`].
    OpenTransport,
    /// Send this text frame.
    Send(String),
    /// Close the socket with this code and forget it.
    CloseTransport {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The state changed.
    State(State),
    /// A subscription is live.
    Subscribed {
        /// The channel.
        channel: ChannelName,
        /// Whether everything since the last position will be replayed (false when a
        /// [`Output::Gap`] follows).
        recovered: bool,
        /// The channel's latest position when the subscription started (the server's
        /// `epoch` and `offset`; offset 0 for an empty channel). Replayed events up to it
        /// follow, then live ones.
        position: StreamPosition,
    },
    /// An event for the application; never a duplicate.
    Event(Delivery),
    /// Events on `channel` were missed: exactly those after `last` and up to `position`,
    /// which the server no longer has. Same epoch: offsets `last.offset + 1 ..=
    /// position.offset`. Epoch changed: the rest of `last`'s epoch after `last.offset` (and
    /// any epoch in between), and offsets `1 ..= position.offset` of the new one (none when
    /// `position.offset` is 0).
    /// A (re)subscription reports at most one, right after [`Output::Subscribed`]; while
    /// live, an event of a new epoch or a skipped offset reports one right before it.
    /// Delivery goes on after a gap.
    Gap {
        /// The channel.
        channel: ChannelName,
        /// The subscription's position before the gap: its last delivered event, or the
        /// `since` it was started with. Always set by this version (a gap needs a position
        /// to be missed from); an `Option` for the bindings' sake.
        last: Option<StreamPosition>,
        /// The subscription's new position: the next event delivered is the one after it
        /// (`position.offset + 1` of `position.epoch`).
        position: StreamPosition,
        /// Why.
        reason: GapReason,
    },
    /// A subscription was refused and removed.
    SubscriptionFailed {
        /// The channel.
        channel: ChannelName,
        /// The server's reason.
        #[serde(serialize_with = "serialize_error")]
        error: Error,
    },
    /// Something the application should know about; [`Output::State`] says if it was fatal.
    Error(#[serde(serialize_with = "serialize_error")] Error),
}

fn serialize_error<S: serde::Serializer>(error: &Error, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    map.serialize_entry("code", error.code())?;
    map.serialize_entry("message", &error.to_string())?;
    if let Some(d) = error.retry_after() {
        map.serialize_entry("retry_after_ms", &crate::time::as_millis_u64(d))?;
    }
    map.end()
}

/// Counters for the SDKs' `stats()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Times a server-announced delay held something back.
    pub rate_limit_waits: u64,
    /// Events handed to the application.
    pub events_delivered: u64,
    /// Replayed events dropped because they were already delivered.
    pub duplicates_dropped: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Heartbeat timeouts that replaced a connection.
    pub heartbeat_timeouts: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum SubState {
    /// Waiting for the connection (or for a rate-limit delay to pass).
    Idle { not_before: Option<Instant> },
    /// `subscribe` sent with this request id.
    Pending(u64),
    /// Live.
    Active,
}

#[derive(Debug)]
struct Subscription {
    state: SubState,
    /// Last position delivered, the `since` the subscription started with, or where
    /// `subscribed` said delivery continues (`replay_from - 1`).
    position: Option<StreamPosition>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    /// Waiting for the token provider, then open.
    AwaitingToken,
    /// Socket requested; waiting for it to open.
    Opening {
        deadline: Instant,
    },
    /// `connect` sent; waiting for `connected`.
    Authenticating {
        deadline: Instant,
    },
    Connected {
        since: Instant,
        last_rx: Instant,
        ping_interval: Duration,
    },
    /// Waiting to reconnect.
    Backoff {
        until: Instant,
    },
    Closed,
}

/// The client side of one logical Courier connection, across any number of sockets.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    phase: Phase,
    state: State,
    backoff: Backoff,
    token: Option<String>,
    token_in_flight: bool,
    /// A refreshed token should go out as a `refresh` frame on the live connection.
    refresh_on_arrival: bool,
    /// No reconnect before this instant (server-announced delay).
    not_before: Option<Instant>,
    /// The last error frame without an id: explains the close that usually follows.
    last_error: Option<ErrorFrame>,
    subs: VecMap<ChannelName, Subscription>,
    next_request_id: u64,
    ever_connected: bool,
    outputs: VecDeque<Output>,
    stats: ConnectionStats,
}

impl Connection {
    /// A connection that does nothing until [`Connection::connect`]. `seed` drives the jitter
    /// (drivers pass a random one; tests a fixed one).
    pub fn new(config: ConnectionConfig, seed: u64) -> Self {
        let backoff = Backoff::new(config.backoff.clone(), seed);
        Self {
            config,
            phase: Phase::Idle,
            state: State::Disconnected,
            backoff,
            token: None,
            token_in_flight: false,
            refresh_on_arrival: false,
            not_before: None,
            last_error: None,
            subs: VecMap::new(),
            next_request_id: 1,
            ever_connected: false,
            outputs: VecDeque::new(),
            stats: ConnectionStats::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// Where `channel`'s delivery stands: the last event delivered (or, after a gap or a
    /// first `subscribed`, the position right before the next event). Resuming after it
    /// loses and repeats nothing.
    pub fn position(&self, channel: &ChannelName) -> Option<&StreamPosition> {
        self.subs.get(channel).and_then(|s| s.position.as_ref())
    }

    /// The subscribed channels.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.subs.keys()
    }

    /// The next output to act on.
    #[must_use]
    pub fn poll(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Connection::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Opening { deadline } | Phase::Authenticating { deadline } => Some(deadline),
            Phase::Connected {
                last_rx,
                ping_interval,
                ..
            } => Some(later(last_rx, ping_interval + self.grace())),
            Phase::Backoff { until } => Some(until),
            Phase::Idle | Phase::AwaitingToken | Phase::Closed => None,
        };
        let subs = match self.phase {
            Phase::Connected { .. } => self
                .subs
                .values()
                .filter_map(|s| match s.state {
                    SubState::Idle { not_before } => not_before,
                    _ => None,
                })
                .min(),
            _ => None,
        };
        [phase, subs].into_iter().flatten().min()
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.config.heartbeat_grace_ms)
    }

    fn cap(&self) -> Duration {
        Duration::from_millis(self.config.retry_after_cap_ms)
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.outputs.push_back(Output::State(state));
        }
    }

    fn send(&mut self, frame: &ClientFrame) {
        self.outputs.push_back(Output::Send(frame.encode()));
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// Starts connecting (and keeps reconnecting until closed). Harmless when already started.
    pub fn connect(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle) {
            self.start_attempt(now);
        }
    }

    /// Closes for good: the socket is closed with 1000 and nothing reconnects.
    pub fn close(&mut self, _now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if matches!(
            self.phase,
            Phase::Opening { .. } | Phase::Authenticating { .. } | Phase::Connected { .. }
        ) {
            self.outputs.push_back(Output::CloseTransport {
                code: close::NORMAL,
                reason: "client closed".into(),
            });
        }
        self.phase = Phase::Closed;
        self.set_state(State::Closed);
    }

    /// Subscribes to `channel`, resuming after `since` when given. Takes effect at once when
    /// connected, otherwise as soon as the connection is up.
    pub fn subscribe(
        &mut self,
        channel: ChannelName,
        since: Option<StreamPosition>,
        now: Instant,
    ) -> Result<(), Error> {
        if self.phase == Phase::Closed {
            return Err(UsageError::Closed.into());
        }
        if self.subs.contains_key(&channel) {
            return Err(UsageError::AlreadySubscribed(channel.to_string()).into());
        }
        self.subs.insert(
            channel.clone(),
            Subscription {
                state: SubState::Idle { not_before: None },
                position: since,
            },
        );
        if matches!(self.phase, Phase::Connected { .. }) {
            self.send_subscribe(&channel, now);
        }
        Ok(())
    }

    /// Stops receiving `channel`; returns whether it was subscribed.
    pub fn unsubscribe(&mut self, channel: &ChannelName, _now: Instant) -> bool {
        let Some(sub) = self.subs.remove(channel) else {
            return false;
        };
        if matches!(self.phase, Phase::Connected { .. })
            && sub.state != (SubState::Idle { not_before: None })
        {
            let id = self.request_id();
            self.send(&ClientFrame::Unsubscribe {
                id,
                channel: channel.clone(),
            });
        }
        true
    }

    fn send_subscribe(&mut self, channel: &ChannelName, now: Instant) {
        let id = self.request_id();
        let Some(sub) = self.subs.get_mut(channel) else {
            return;
        };
        if let SubState::Idle {
            not_before: Some(t),
        } = sub.state
        {
            if t > now {
                return;
            }
        }
        sub.state = SubState::Pending(id);
        let since = sub.position.clone();
        self.send(&ClientFrame::Subscribe {
            id,
            channel: channel.clone(),
            since,
        });
    }

    /// The token provider's answer to [`Output::FetchToken`].
    pub fn handle_token(&mut self, token: Result<String, String>, now: Instant) {
        if !self.token_in_flight {
            return;
        }
        self.token_in_flight = false;
        match token {
            Ok(token) => {
                self.token = Some(token.clone());
                if self.refresh_on_arrival {
                    self.refresh_on_arrival = false;
                    if matches!(self.phase, Phase::Connected { .. }) {
                        let id = self.request_id();
                        self.send(&ClientFrame::Refresh { id, token });
                    }
                }
                if self.phase == Phase::AwaitingToken {
                    self.open(now);
                }
            }
            Err(message) => {
                self.refresh_on_arrival = false;
                self.outputs
                    .push_back(Output::Error(Error::Transport(format!(
                        "token provider failed: {message}"
                    ))));
                if self.phase == Phase::AwaitingToken {
                    self.schedule_reconnect(now);
                }
            }
        }
    }

    /// A newer token obtained elsewhere (the client's HTTP side refreshed it): used from the
    /// next connection attempt on; ignored while a token request of this connection is out
    /// (its answer comes through [`Connection::handle_token`]).
    pub fn set_token(&mut self, token: String) {
        if !self.token_in_flight {
            self.token = Some(token);
        }
    }

    fn fetch_token(&mut self, refresh: bool) {
        if !self.token_in_flight {
            self.token_in_flight = true;
            self.outputs.push_back(Output::FetchToken { refresh });
        }
    }

    fn start_attempt(&mut self, now: Instant) {
        self.set_state(State::Connecting);
        if self.token.is_some() {
            self.open(now);
        } else {
            self.phase = Phase::AwaitingToken;
            self.fetch_token(false);
        }
    }

    fn open(&mut self, now: Instant) {
        self.phase = Phase::Opening {
            deadline: later(now, Duration::from_millis(self.config.connect_timeout_ms)),
        };
        self.last_error = None;
        self.outputs.push_back(Output::OpenTransport);
    }

    /// The socket requested by [`Output::OpenTransport`] is open.
    pub fn handle_transport_open(&mut self, now: Instant) {
        if let Phase::Opening { deadline } = self.phase {
            let token = self.token.clone().unwrap_or_default();
            self.send(&ClientFrame::Connect {
                token,
                client: Some(self.config.client_name.clone()),
            });
            self.phase = Phase::Authenticating {
                deadline: deadline.max(now),
            };
        }
    }

    /// The socket closed (or failed to open): `code` is the close code, `None` when no close
    /// frame arrived (treated as 1006).
    pub fn handle_transport_closed(&mut self, code: Option<u16>, reason: &str, now: Instant) {
        let live = matches!(
            self.phase,
            Phase::Opening { .. } | Phase::Authenticating { .. } | Phase::Connected { .. }
        );
        if !live {
            return;
        }
        let code = code.unwrap_or(close::ABNORMAL);
        self.note_disconnected(now);
        match classify_close(code) {
            CloseAction::Terminal => {
                let refusal = self
                    .last_error
                    .take()
                    .map(|e| e.to_refusal())
                    .unwrap_or_else(|| {
                        Refusal::new(
                            terminal_code(code),
                            format!("connection closed with {code}: {reason}"),
                        )
                    });
                self.phase = Phase::Closed;
                self.outputs
                    .push_back(Output::Error(Error::Refused(refusal)));
                self.set_state(State::Closed);
            }
            CloseAction::RefreshTokenThenReconnect => {
                self.token = None;
                self.set_state(State::Connecting);
                self.phase = Phase::AwaitingToken;
                self.fetch_token(true);
            }
            CloseAction::Reconnect => self.schedule_reconnect(now),
        }
    }

    fn note_disconnected(&mut self, now: Instant) {
        if let Phase::Connected { since, .. } = self.phase {
            self.backoff
                .note_connection_lasted(now.saturating_duration_since(since));
        }
        for sub in self.subs.values_mut() {
            sub.state = SubState::Idle { not_before: None };
        }
    }

    fn schedule_reconnect(&mut self, now: Instant) {
        let mut until = later(now, self.backoff.next_delay());
        if let Some(t) = self.not_before.take() {
            if t > until {
                until = t;
                self.stats.rate_limit_waits += 1;
            }
        }
        self.phase = Phase::Backoff { until };
        self.set_state(State::Disconnected);
    }

    /// Drops the current socket (closing it with `code`) and schedules a reconnect.
    fn replace_transport(&mut self, code: u16, reason: &str, now: Instant) {
        self.outputs.push_back(Output::CloseTransport {
            code,
            reason: reason.to_owned(),
        });
        self.note_disconnected(now);
        self.schedule_reconnect(now);
    }

    /// Timers: connect deadline, heartbeat, reconnect delay, delayed resubscriptions.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Opening { deadline } | Phase::Authenticating { deadline } if now >= deadline => {
                self.outputs
                    .push_back(Output::Error(Error::Transport("connect timed out".into())));
                self.replace_transport(close::NORMAL, "connect timeout", now);
            }
            Phase::Connected {
                last_rx,
                ping_interval,
                ..
            } if now >= later(last_rx, ping_interval + self.grace()) => {
                self.stats.heartbeat_timeouts += 1;
                self.outputs.push_back(Output::Error(Error::Transport(
                    "heartbeat timeout: server silent".into(),
                )));
                self.replace_transport(close::HEARTBEAT_TIMEOUT, "heartbeat timeout", now);
            }
            Phase::Connected { .. } => {
                let due: Vec<ChannelName> = self
                    .subs
                    .iter()
                    .filter(|(_, s)| matches!(s.state, SubState::Idle { not_before: Some(t) } if t <= now))
                    .map(|(c, _)| c.clone())
                    .collect();
                for channel in due {
                    if let Some(sub) = self.subs.get_mut(&channel) {
                        sub.state = SubState::Idle { not_before: None };
                    }
                    self.send_subscribe(&channel, now);
                }
            }
            Phase::Backoff { until } if now >= until => self.start_attempt(now),
            _ => {}
        }
    }

    /// A text frame from the server.
    pub fn handle_text(&mut self, text: &str, now: Instant) {
        if !matches!(
            self.phase,
            Phase::Authenticating { .. } | Phase::Connected { .. }
        ) {
            return;
        }
        if let Phase::Connected {
            ref mut last_rx, ..
        } = self.phase
        {
            *last_rx = now;
        }
        match ServerFrame::decode(text, self.config.max_frame_bytes) {
            Ok(frame) => self.handle_frame(frame, now),
            Err(e) => {
                // A server that speaks something else cannot be trusted with our positions.
                self.outputs.push_back(Output::Error(Error::Protocol(e)));
                self.replace_transport(close::BAD_REQUEST, "malformed frame from server", now);
            }
        }
    }

    fn handle_frame(&mut self, frame: ServerFrame, now: Instant) {
        match frame {
            ServerFrame::Event(delivery) => self.deliver(delivery),
            ServerFrame::Ping => self.send(&ClientFrame::Pong),
            ServerFrame::Pong => {}
            ServerFrame::Connected {
                ping_interval_ms, ..
            } => {
                if !matches!(self.phase, Phase::Authenticating { .. }) {
                    return;
                }
                let ping_interval = Duration::from_millis(ping_interval_ms.max(1));
                self.phase = Phase::Connected {
                    since: now,
                    last_rx: now,
                    ping_interval,
                };
                if self.ever_connected {
                    self.stats.reconnects += 1;
                }
                self.ever_connected = true;
                self.set_state(State::Connected);
                let channels: Vec<ChannelName> = self.subs.keys().cloned().collect();
                for channel in channels {
                    self.send_subscribe(&channel, now);
                }
            }
            ServerFrame::Subscribed {
                id,
                channel,
                recovered,
                epoch,
                offset,
                replay_from,
            } => self.subscribed(
                id,
                channel,
                recovered,
                StreamPosition { epoch, offset },
                replay_from,
            ),
            ServerFrame::Unsubscribed { .. }
            | ServerFrame::Ack { .. }
            | ServerFrame::Refreshed { .. } => {}
            ServerFrame::Error(error) => self.server_error(error, now),
        }
    }

    /// The server's answer to `subscribe`: where delivery continues, and the one gap (if any)
    /// between the subscription's position and that point.
    ///
    /// `replay_from` (f) is the first offset the server replays; servers that predate it
    /// replay nothing on a failed resume, so f = `latest.offset + 1` then. f is clamped to
    /// `1..=latest.offset + 1`: a server cannot replay what it does not have, and a larger
    /// value would make the client drop live events as duplicates.
    fn subscribed(
        &mut self,
        id: u64,
        channel: ChannelName,
        recovered: bool,
        latest: StreamPosition,
        replay_from: Option<u64>,
    ) {
        let Some(sub) = self.subs.get_mut(&channel) else {
            return;
        };
        if sub.state != SubState::Pending(id) {
            return;
        }
        sub.state = SubState::Active;
        let next = replay_from
            .unwrap_or(u64::MAX)
            .clamp(1, latest.offset.saturating_add(1));
        // Where delivery continues: the replay (offsets `next ..= latest.offset`) follows.
        let resume_at = StreamPosition {
            epoch: latest.epoch.clone(),
            offset: next - 1,
        };
        let last = sub.position.clone();
        let gap = match &last {
            // First subscription: start with the replay, nothing is missing.
            None => {
                sub.position = Some(resume_at);
                None
            }
            Some(last) if last.epoch != latest.epoch => {
                // Missing: the old epoch after `last`, and the new one up to `next - 1`.
                sub.position = Some(resume_at.clone());
                Some((GapReason::EpochChanged, resume_at))
            }
            // Resumed: keep our position; the replay starts right after it (anything at or
            // below it is a duplicate and dropped).
            Some(_) if recovered => None,
            Some(last) => {
                // Missing: `last.offset + 1 ..= next - 1`. Never move back within an epoch:
                // that would deliver events twice.
                let position = StreamPosition {
                    epoch: latest.epoch.clone(),
                    offset: resume_at.offset.max(last.offset),
                };
                sub.position = Some(position.clone());
                Some((GapReason::HistoryUnavailable, position))
            }
        };
        self.outputs.push_back(Output::Subscribed {
            channel: channel.clone(),
            recovered: gap.is_none(),
            position: latest,
        });
        if let Some((reason, position)) = gap {
            self.stats.gaps += 1;
            self.outputs.push_back(Output::Gap {
                channel,
                last,
                position,
                reason,
            });
        }
    }

    /// An event from the server: delivered when it comes after the subscription's position,
    /// dropped as a duplicate when it does not. An event of another epoch while subscribed
    /// (the server lost its history without closing the socket) or a skipped offset is
    /// reported as one [`Output::Gap`] ending right before the event.
    fn deliver(&mut self, delivery: Delivery) {
        let Some(sub) = self.subs.get_mut(&delivery.event.channel) else {
            return;
        };
        if sub.state != SubState::Active {
            return;
        }
        let reason = match &sub.position {
            Some(pos) if pos.epoch == delivery.epoch => {
                if delivery.offset <= pos.offset {
                    self.stats.duplicates_dropped += 1;
                    return;
                }
                (delivery.offset > pos.offset.saturating_add(1)).then_some(GapReason::OffsetSkipped)
            }
            // `subscribed` always sets a position; without one there is nothing to miss.
            None => None,
            Some(_) => Some(GapReason::EpochChanged),
        };
        let last = match (&mut sub.position, reason) {
            // The common case: the same epoch, one offset on (no allocation per event).
            (Some(pos), None) => {
                pos.offset = delivery.offset;
                None
            }
            (position, _) => position.replace(StreamPosition {
                epoch: delivery.epoch.clone(),
                offset: delivery.offset,
            }),
        };
        if let Some(reason) = reason {
            self.stats.gaps += 1;
            self.outputs.push_back(Output::Gap {
                channel: delivery.event.channel.clone(),
                last,
                position: StreamPosition {
                    epoch: delivery.epoch.clone(),
                    offset: delivery.offset.saturating_sub(1),
                },
                reason,
            });
        }
        self.stats.events_delivered += 1;
        self.outputs.push_back(Output::Event(delivery));
    }

    fn server_error(&mut self, error: ErrorFrame, now: Instant) {
        let delay = error
            .retry_after_ms
            .map(|ms| Duration::from_millis(ms).min(self.cap()));
        if let Some(id) = error.id {
            let found = self
                .subs
                .iter()
                .find(|(_, s)| s.state == SubState::Pending(id))
                .map(|(c, _)| c.clone());
            let Some(channel) = found else {
                self.outputs
                    .push_back(Output::Error(Error::Refused(error.to_refusal())));
                return;
            };
            if error.code.is_retryable() {
                let min = Duration::from_millis(self.backoff.config().min_delay_ms.max(1));
                let not_before = later(now, delay.unwrap_or(min));
                self.stats.rate_limit_waits +=
                    u64::from(error.code == ErrorCode::RateLimitExceeded);
                if let Some(sub) = self.subs.get_mut(&channel) {
                    sub.state = SubState::Idle {
                        not_before: Some(not_before),
                    };
                }
            } else {
                self.subs.remove(&channel);
                self.outputs.push_back(Output::SubscriptionFailed {
                    channel,
                    error: Error::Refused(error.to_refusal()),
                });
            }
            return;
        }
        match error.code {
            ErrorCode::TokenExpired => {
                self.token = None;
                self.refresh_on_arrival = true;
                self.fetch_token(true);
            }
            ErrorCode::RateLimitExceeded | ErrorCode::ShuttingDown | ErrorCode::Unavailable => {
                if let Some(d) = delay {
                    self.not_before = Some(later(now, d));
                }
            }
            _ => {}
        }
        self.outputs
            .push_back(Output::Error(Error::Refused(error.to_refusal())));
        self.last_error = Some(error);
    }
}

/// The longest any timer of the connection waits: server-sent or configured durations
/// beyond it are clamped, so no input can overflow `Instant` arithmetic.
const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// `now + d`, clamped to [`MAX_WAIT`] and never panicking.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_WAIT)).unwrap_or(now)
}

/// The error code a terminal close means when no error frame explained it.
fn terminal_code(code: u16) -> ErrorCode {
    match code {
        close::UNAUTHORIZED => ErrorCode::Unauthorized,
        close::POLICY_VIOLATION => ErrorCode::ConnectionLimitExceeded,
        close::MESSAGE_TOO_BIG => ErrorCode::PayloadTooLarge,
        _ => ErrorCode::BadRequest,
    }
}

/// Inputs to a [`Connection`] as data, for transcripts, conformance runners and bindings
/// that prefer one entry point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// [`Connection::connect`].
    Connect,
    /// [`Connection::close`].
    Close,
    /// [`Connection::subscribe`].
    Subscribe {
        /// The channel.
        channel: ChannelName,
        /// Resume point.
        #[serde(default)]
        since: Option<StreamPosition>,
    },
    /// [`Connection::unsubscribe`].
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
    },
    /// [`Connection::handle_token`] with a token.
    Token(String),
    /// [`Connection::handle_token`] with a failure.
    TokenFailed(String),
    /// [`Connection::handle_transport_open`].
    TransportOpen,
    /// [`Connection::handle_text`].
    Text(String),
    /// [`Connection::handle_transport_closed`].
    TransportClosed {
        /// Close code, if a close frame arrived.
        #[serde(default)]
        code: Option<u16>,
        /// Close reason.
        #[serde(default)]
        reason: String,
    },
    /// [`Connection::handle_timeout`].
    Timeout,
}

impl Connection {
    /// Applies one [`Input`]; commands that can fail return their error.
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<(), Error> {
        match input {
            Input::Connect => self.connect(now),
            Input::Close => self.close(now),
            Input::Subscribe { channel, since } => self.subscribe(channel, since, now)?,
            Input::Unsubscribe { channel } => {
                self.unsubscribe(&channel, now);
            }
            Input::Token(t) => self.handle_token(Ok(t), now),
            Input::TokenFailed(e) => self.handle_token(Err(e), now),
            Input::TransportOpen => self.handle_transport_open(now),
            Input::Text(t) => self.handle_text(&t, now),
            Input::TransportClosed { code, reason } => {
                self.handle_transport_closed(code, &reason, now)
            }
            Input::Timeout => self.handle_timeout(now),
        }
        Ok(())
    }
}
