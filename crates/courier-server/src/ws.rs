//! WebSocket protocol v1.
//!
//! Each connection has a reader (this task: frames, timers) and a writer task draining a
//! bounded outbound queue. Fan-out never blocks: a queue full by frame count
//! (`ws.outbound_queue`) or by bytes (`ws.max_queued_bytes`) closes the connection with 4008
//! (slow consumer); the client resumes from history. Close requests that must follow an
//! error frame travel through the queue, so the error is written first. A close reason is
//! cut to what a close frame can carry, so the code always reaches the client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use courier_core::close;
use courier_core::frame::{Limits, ServerFrame};
use courier_core::{ChannelName, ClientFrame, ErrorCode, ErrorFrame, FrameError, StreamPosition};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use ws_tungstenite::tungstenite::protocol::CloseFrame;
use ws_tungstenite::tungstenite::protocol::frame::Frame;
use ws_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use ws_tungstenite::tungstenite::{Bytes, Message};

use crate::SharedState;
use crate::admin::ConnectionEntry;
use crate::auth::{AuthError, Claims, unix_now};
use crate::config::WsCompression;
use crate::connections::{ConnectionGuard, Refused};
use crate::deflate::{self, Cohort, InflateError};
use crate::http::{ApiError, publish_event};
use crate::metrics::AuthFailure;
use crate::store::{Published, ResumePoint, Retained, StoreError, Subscriber, SubscriptionId};
use crate::upgrade::{Socket, Upgrade};
#[allow(unused_imports)] // named by the OpenAPI annotations
use courier_core::ErrorResponse;

/// `GET /ws`.
#[utoipa::path(get, path = "/ws", tag = "websocket", responses(
    (status = 101, description = "Switched to the WebSocket protocol (docs/protocol.md); the first frame must be `connect` with the token"),
    (status = 400, description = "Not a WebSocket upgrade (`Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and `Sec-WebSocket-Key` are required)", body = ErrorResponse),
    (status = 426, description = "The connection cannot be upgraded", body = ErrorResponse),
    (status = 429, description = "Too many connections waiting to authenticate (`ws.max_unauthenticated`): `CONNECTION_LIMIT_EXCEEDED` with `Retry-After`", body = ErrorResponse),
    (status = 503, description = "The server is shutting down", body = ErrorResponse),
))]
pub(crate) async fn ws_root(State(state): State<SharedState>, ws: Upgrade) -> Response {
    upgrade(state, ws, None)
}

/// `GET /ws/{channel}`: subscribes to `channel` (request id 0) right after `connect`.
#[utoipa::path(get, path = "/ws/{channel}", tag = "websocket",
    params(("channel" = String, Path, description = "The channel to subscribe to")),
    responses(
    (status = 101, description = "Switched to the WebSocket protocol (docs/protocol.md); the first frame must be `connect` with the token"),
    (status = 400, description = "Not a WebSocket upgrade (`Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and `Sec-WebSocket-Key` are required), or an invalid channel name", body = ErrorResponse),
    (status = 426, description = "The connection cannot be upgraded", body = ErrorResponse),
    (status = 429, description = "Too many connections waiting to authenticate (`ws.max_unauthenticated`): `CONNECTION_LIMIT_EXCEEDED` with `Retry-After`", body = ErrorResponse),
    (status = 503, description = "The server is shutting down", body = ErrorResponse),
))]
pub(crate) async fn ws_channel(
    State(state): State<SharedState>,
    Path(channel): Path<String>,
    ws: Upgrade,
) -> Response {
    match ChannelName::new(channel) {
        Ok(c) => upgrade(state, ws, Some(c)),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn upgrade(state: SharedState, ws: Upgrade, channel: Option<ChannelName>) -> Response {
    if state.is_draining() {
        return ApiError::new(ErrorCode::ShuttingDown, "the server is shutting down")
            .into_response();
    }
    let Some(slot) = Unauthenticated::reserve(&state) else {
        let mut err = ApiError::new(
            ErrorCode::ConnectionLimitExceeded,
            "too many connections are waiting to authenticate; retry in a moment",
        );
        err.retry_after_ms = Some(1_000);
        let mut response = err.into_response();
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return response;
    };
    let tracker = state.ws_tracker.clone();
    let max = state
        .config
        .max_frame_bytes
        .saturating_mul(2)
        .max(64 * 1024);
    let compression = state.config.ws.compression == WsCompression::On;
    let deflating = ws
        .deflate_offered()
        .filter(|_| compression)
        .map(|offer| Deflating {
            min: state.config.ws.compression_min_bytes,
            cohorts: !offer.server_no_context_takeover,
        });
    ws.on_upgrade(compression, max, move |socket| {
        tracker.track_future(run(state, socket, channel, slot, deflating))
    })
}

/// A connection counted against `ws.max_unauthenticated` until it authenticates or ends.
struct Unauthenticated(SharedState);

impl Unauthenticated {
    fn reserve(state: &SharedState) -> Option<Self> {
        let max = state.config.ws.max_unauthenticated;
        let before = state.unauthenticated.fetch_add(1, Ordering::AcqRel);
        let slot = Self(state.clone());
        (max == 0 || before < max).then_some(slot)
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.0.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Close code for a text frame that is not UTF-8 (RFC 6455 §7.4.1).
const INVALID_PAYLOAD: u16 = 1007;

/// Close code for frames that break the protocol (RFC 6455 §7.4.1).
const PROTOCOL_ERROR: u16 = 1002;

/// A close frame's payload is at most 125 bytes: the 2-byte code and the reason.
const MAX_CLOSE_REASON: usize = 123;

/// The close frame for `code`: a longer reason would make tungstenite refuse to send it
/// (the client would see 1006 instead of the code), so it is cut on a UTF-8 boundary.
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: code.into(),
        reason: reason[..end].into(),
    }
}

/// A connection's permessage-deflate settings.
#[derive(Clone, Copy)]
struct Deflating {
    /// `ws.compression_min_bytes`.
    min: usize,
    /// The client let the server deflate with context: the connection may join a
    /// [`Cohort`].
    cohorts: bool,
}

/// [`Conn::cohort`]: may deflate any message on its own.
const FREE: u8 = 0;
/// [`Conn::cohort`]: in a cohort, so only the cohort's messages go compressed.
const IN_COHORT: u8 = 1;
/// [`Conn::cohort`]: left its cohort (for good): deflates messages on their own again.
const LEFT: u8 = 2;

/// An item of a connection's queue. The flag of a frame or event tells whether it may be
/// deflated on its own, decided when it is queued: the queue's order is the order on the
/// wire, so a connection in a cohort never gets another compressed message between two of
/// the cohort's.
enum Outbound {
    Frame(String, bool),
    Event(Arc<Published>, bool),
    /// An event and its bytes in the connection's cohort stream.
    Cohort(Arc<Published>, Bytes),
    Replayed(String, bool),
    Close(u16, String),
}

impl Outbound {
    /// The bytes this item holds against the connection's byte budget. A replay is not
    /// counted: it waits for room in the queue instead of overflowing it.
    fn budgeted_bytes(&self) -> usize {
        match self {
            Outbound::Frame(t, _) => t.len(),
            Outbound::Event(p, _) | Outbound::Cohort(p, _) => p.frame.len(),
            Outbound::Replayed(..) | Outbound::Close(..) => 0,
        }
    }
}

struct Conn {
    out: mpsc::Sender<Outbound>,
    close: watch::Sender<Option<(u16, String)>>,
    state: SharedState,
    /// Bytes of queued live frames not yet written (the writer subtracts what it wrote).
    queued_bytes: Arc<AtomicUsize>,
    /// `ws.max_queued_bytes`.
    max_queued_bytes: usize,
    /// Its permessage-deflate settings, when negotiated.
    deflating: Option<Deflating>,
    /// Where it stands with cohorts: [`FREE`], [`IN_COHORT`] or [`LEFT`] (read by the
    /// writer too).
    cohort: Arc<AtomicU8>,
}

impl Conn {
    /// Closes now, skipping anything queued (slow consumer).
    fn close_now(&self, code: u16, reason: &str) {
        self.close.send_if_modified(|c| {
            if c.is_none() {
                *c = Some((code, reason.to_owned()));
                true
            } else {
                false
            }
        });
    }

    fn slow(&self) {
        if self.close.borrow().is_none() {
            self.state
                .metrics
                .slow_consumers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("closing slow consumer");
        }
        self.close_now(
            close::SLOW_CONSUMER,
            "slow consumer: outbound queue full (frames or bytes); resume from history",
        );
    }

    /// The shared history was lost (a new epoch) while subscribed: offsets restart, so the
    /// client must resubscribe; it reconnects and reports the gap.
    fn epoch_changed(&self) {
        self.close_now(close::SERVICE_RESTART, "history epoch changed; resubscribe");
    }

    fn push(&self, item: Outbound) {
        let bytes = item.budgeted_bytes();
        let before = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        // One frame always fits an empty queue, however large: a client that keeps up is
        // never closed for the size of a single event.
        if before > 0 && before + bytes > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.slow();
            return;
        }
        match self.out.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.slow();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            }
        }
    }

    /// Whether a message queued now may be deflated on its own: not while in a cohort.
    fn may_deflate(&self) -> bool {
        self.cohort.load(Ordering::Acquire) != IN_COHORT
    }

    /// A cohort for a subscription of `channel` going live, if the connection may join one:
    /// it negotiated context takeover, is in no other cohort (one stream per connection:
    /// another compressed message between two of a cohort's would break its client's
    /// window) and has no other subscription (`alone`), whose fan-out could queue a message
    /// deflated on its own after the cohort's first.
    fn join_cohort(&self, channel: &ChannelName, alone: bool) -> Option<Member> {
        self.deflating.filter(|d| d.cohorts && alone)?;
        self.cohort
            .compare_exchange(FREE, IN_COHORT, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        match self.state.cohorts.join(channel.as_str()) {
            Some(cohort) => Some(Member { cohort, next: 1 }),
            None => {
                self.cohort.store(FREE, Ordering::Release);
                None
            }
        }
    }

    /// An event for a live subscription: from its cohort's stream while the stream's next
    /// message is the one `member` expects, else deflated on its own by the writer.
    fn push_event(&self, message: &Arc<Published>, member: &mut Option<Member>) {
        let min = self.deflating.map_or(usize::MAX, |d| d.min);
        if let Some(m) = member {
            if message.frame.len() < min {
                // Sent plain: not part of the stream.
                self.push(Outbound::Event(message.clone(), false));
                return;
            }
            let frame = message.frame.as_str().as_bytes();
            match m.cohort.deflate(&message.epoch, message.offset, frame) {
                Some((seq, bytes)) if seq == m.next => {
                    m.next += 1;
                    self.push(Outbound::Cohort(message.clone(), bytes));
                    return;
                }
                _ => {
                    // Every cohort message of this connection was queued before this store
                    // (under this subscription's lock): what is queued after may be
                    // deflated on its own.
                    *member = None;
                    self.cohort.store(LEFT, Ordering::Release);
                }
            }
        }
        self.push(Outbound::Event(message.clone(), self.may_deflate()));
    }

    fn send(&self, frame: &ServerFrame) {
        self.push(Outbound::Frame(frame.encode(), self.may_deflate()));
    }

    fn error(&self, frame: ErrorFrame) {
        if let Some(ms) = frame.retry_after_ms {
            self.state.metrics.retry_after_ms(ms);
        }
        self.send(&ServerFrame::Error(frame));
    }

    /// Closes after what is queued (so a preceding error frame is written first).
    fn close_after_queue(&self, code: u16, reason: &str) {
        if self
            .out
            .try_send(Outbound::Close(code, reason.to_owned()))
            .is_err()
        {
            self.close_now(code, reason);
        }
    }
}

enum Phase {
    Buffering(Vec<Arc<Published>>),
    /// The epoch subscribed in, the last offset sent, and the cohort it is in.
    Live(Arc<str>, u64, Option<Member>),
}

/// A subscription's place in a [`Cohort`]: the sequence number of the stream's message it
/// must send next.
struct Member {
    cohort: Arc<Cohort>,
    next: u64,
}

/// One channel subscription of one connection.
struct ChannelSub {
    conn: Arc<Conn>,
    phase: Mutex<Phase>,
    buffer_cap: usize,
}

impl Subscriber for ChannelSub {
    fn deliver(&self, message: &Arc<Published>) {
        let mut phase = self.phase.lock().expect("subscription lock");
        match &mut *phase {
            Phase::Buffering(buf) => {
                if buf.len() >= self.buffer_cap {
                    self.conn.slow();
                } else {
                    buf.push(message.clone());
                }
            }
            Phase::Live(epoch, last, member) => {
                if message.epoch != *epoch {
                    self.conn.epoch_changed();
                } else if message.offset > *last {
                    *last = message.offset;
                    self.conn.push_event(message, member);
                }
            }
        }
    }
}

impl ChannelSub {
    /// Ends replay: sends buffered live events after `last`, then goes live.
    fn go_live(&self, epoch: Arc<str>, mut last: u64, channel: &ChannelName, alone: bool) {
        let mut phase = self.phase.lock().expect("subscription lock");
        if let Phase::Buffering(buf) =
            std::mem::replace(&mut *phase, Phase::Live(epoch.clone(), 0, None))
        {
            for m in buf {
                if m.epoch != epoch {
                    self.conn.epoch_changed();
                } else if m.offset > last {
                    last = m.offset;
                    self.conn.push(Outbound::Event(m, self.conn.may_deflate()));
                }
            }
        }
        // Joined after the buffered events: they went out before the stream's first message,
        // where they do not matter to it.
        *phase = Phase::Live(epoch, last, self.conn.join_cohort(channel, alone));
    }
}

/// Most frames written between two flushes of one connection.
const MAX_FRAMES_PER_FLUSH: usize = 256;

/// One item of a connection's queue, ready for the socket.
enum Write {
    Send {
        message: Message,
        /// When the event was accepted (live events only).
        accepted_at: Option<std::time::Instant>,
        /// What the item held against the connection's byte budget.
        budgeted: usize,
        /// Payload bytes uncompressed, and as sent.
        raw: usize,
        wire: usize,
    },
    Close(Option<(u16, String)>),
}

/// A text message: deflated with RSV1 set when `deflated` is given and smaller, else as
/// it is. Returns the message and its payload bytes uncompressed and as sent.
fn text_frame(plain: Bytes, deflated: Option<&Bytes>) -> (Message, usize, usize) {
    let raw = plain.len();
    let (payload, rsv1) = match deflated {
        Some(d) if d.len() < raw => (d.clone(), true),
        _ => (plain, false),
    };
    let wire = payload.len();
    let mut frame = Frame::message(payload, OpCode::Data(Data::Text), true);
    frame.header_mut().rsv1 = rsv1;
    (Message::Frame(frame), raw, wire)
}

/// A connection's own text frame (not an event shared with other subscribers), deflated
/// for it alone when `deflating` (the minimum size) allows.
fn own_text(text: String, deflating: Option<usize>) -> (Message, usize, usize) {
    let plain = Bytes::from(text.into_bytes());
    let deflated = deflating
        .filter(|min| plain.len() >= *min)
        .map(|_| deflate::deflate(&plain));
    text_frame(plain, deflated.as_ref())
}

/// A frame the connection built itself (not a fanned-out event), as a write.
fn own_write(text: String, deflating: Option<usize>, budgeted: usize) -> Write {
    let (message, raw, wire) = own_text(text, deflating);
    Write::Send {
        message,
        accepted_at: None,
        budgeted,
        raw,
        wire,
    }
}

fn to_write(
    item: Option<Outbound>,
    close_tx: &watch::Sender<Option<(u16, String)>>,
    state: &SharedState,
    deflating: Option<usize>,
) -> Write {
    let bytes = item.as_ref().map_or(0, Outbound::budgeted_bytes);
    match item {
        None => Write::Close(None),
        Some(Outbound::Close(code, reason)) => {
            close_tx.send_if_modified(|c| {
                if c.is_none() {
                    *c = Some((code, reason.clone()));
                    true
                } else {
                    false
                }
            });
            Write::Close(close_tx.borrow().clone())
        }
        Some(Outbound::Replayed(t, may)) => {
            state.metrics.delivered.fetch_add(1, Ordering::Relaxed);
            own_write(t, deflating.filter(|_| may), bytes)
        }
        Some(Outbound::Frame(t, may)) => own_write(t, deflating.filter(|_| may), bytes),
        Some(Outbound::Cohort(p, deflated)) => {
            let raw = p.frame.len();
            let wire = deflated.len();
            // Always compressed: the cohort's deflater has this event in its window.
            let mut frame = Frame::message(deflated, OpCode::Data(Data::Text), true);
            frame.header_mut().rsv1 = true;
            Write::Send {
                message: Message::Frame(frame),
                accepted_at: Some(p.accepted_at),
                budgeted: bytes,
                raw,
                wire,
            }
        }
        Some(Outbound::Event(p, may)) => {
            let deflating = deflating.filter(|_| may);
            // Deflated once for every compressing subscriber: the first writer to need it
            // makes it, the others share its bytes.
            let deflated = deflating.filter(|min| p.frame.len() >= *min).map(|_| {
                p.deflated
                    .get_or_init(|| deflate::deflate(p.frame.as_str().as_bytes()))
            });
            let (message, raw, wire) = text_frame(Bytes::from(p.frame.clone()), deflated);
            Write::Send {
                message,
                accepted_at: Some(p.accepted_at),
                budgeted: bytes,
                raw,
                wire,
            }
        }
    }
}

/// Writes a connection's queue to its socket: everything queued at once goes out with one
/// flush (one TCP segment for a burst under `TCP_NODELAY`, not one per frame), and an event's
/// frame (plain or deflated) is shared with every other subscriber's writer, never copied.
/// `deflating`: the minimum size of a message to compress, when the connection negotiated
/// permessage-deflate.
async fn writer(
    mut sink: SplitSink<Socket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    close_tx: watch::Sender<Option<(u16, String)>>,
    queued_bytes: Arc<AtomicUsize>,
    state: SharedState,
    deflating: Option<usize>,
) {
    let mut close_rx = close_tx.subscribe();
    // One wait for a close for the writer's life (not a new one per item: registering and
    // dropping a `Notified` for every frame cost ~3% of the server's CPU per delivery).
    let closed = close_rx.changed();
    tokio::pin!(closed);
    let mut delivered: Vec<std::time::Instant> = Vec::new();
    let close = 'outer: loop {
        let item = tokio::select! {
            biased;
            _ = &mut closed => break close_tx.borrow().clone(),
            item = rx.recv() => item,
        };
        let mut next = Some(item);
        let mut fed_bytes = 0;
        let (mut fed_raw, mut fed_wire) = (0, 0);
        let mut fed = 0;
        while let Some(item) = next.take() {
            match to_write(item, &close_tx, &state, deflating) {
                Write::Close(c) => {
                    let _ = sink.flush().await;
                    break 'outer c;
                }
                Write::Send {
                    message,
                    accepted_at,
                    budgeted,
                    raw,
                    wire,
                } => {
                    if sink.feed(message).await.is_err() {
                        return;
                    }
                    fed_bytes += budgeted;
                    fed_raw += raw;
                    fed_wire += wire;
                    delivered.extend(accepted_at);
                }
            }
            fed += 1;
            // Bounded so one flush never waits on an unbounded burst.
            if fed < MAX_FRAMES_PER_FLUSH {
                next = rx.try_recv().ok().map(Some);
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        queued_bytes.fetch_sub(fed_bytes, Ordering::Relaxed);
        let metrics = &state.metrics;
        metrics
            .ws_raw_bytes
            .fetch_add(fed_raw as u64, Ordering::Relaxed);
        metrics
            .ws_wire_bytes
            .fetch_add(fed_wire as u64, Ordering::Relaxed);
        for at in delivered.drain(..) {
            state.metrics.delivered.fetch_add(1, Ordering::Relaxed);
            state.metrics.observe_latency(at.elapsed());
        }
    };
    if let Some((code, reason)) = close {
        let _ = sink
            .send(Message::Close(Some(close_frame(code, &reason))))
            .await;
        let _ = sink.flush().await;
    }
}

/// What the reader got from the peer.
enum Incoming {
    Text(String),
    Binary,
    /// A frame the WebSocket layer refused: the error to answer and the close code.
    Refused(ErrorCode, u16, &'static str),
}

/// Reads the next frame; `None` when the peer is gone or closed.
async fn next_text(stream: &mut SplitStream<Socket>) -> Option<Incoming> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(t)) => return Some(Incoming::Text(t.as_str().to_owned())),
            Ok(Message::Binary(_)) => return Some(Incoming::Binary),
            // tungstenite answers pings itself and never yields a raw frame when reading.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Close(_)) => return None,
            Err(e) => return refused_frame(&e),
        }
    }
}

/// The documented answer to a read error that is the peer's fault and leaves the connection
/// able to send a close frame; `None` for the rest (I/O, protocol), which end the connection
/// without one.
fn refused_frame(e: &ws_tungstenite::tungstenite::Error) -> Option<Incoming> {
    use ws_tungstenite::tungstenite::Error;
    match e {
        Error::Utf8(_) => Some(Incoming::Refused(
            ErrorCode::BadRequest,
            INVALID_PAYLOAD,
            "a text frame was not valid UTF-8",
        )),
        Error::Capacity(_) => Some(Incoming::Refused(
            ErrorCode::PayloadTooLarge,
            close::MESSAGE_TOO_BIG,
            "a frame was over the size limit",
        )),
        Error::Io(io) => match InflateError::of(io)? {
            InflateError::TooLarge { .. } => Some(Incoming::Refused(
                ErrorCode::PayloadTooLarge,
                close::MESSAGE_TOO_BIG,
                "a compressed message was over the size limit",
            )),
            InflateError::Corrupt => Some(Incoming::Refused(
                ErrorCode::BadRequest,
                INVALID_PAYLOAD,
                "a compressed message was not valid deflate data",
            )),
            InflateError::Protocol(_) => Some(Incoming::Refused(
                ErrorCode::BadRequest,
                PROTOCOL_ERROR,
                "compressed frames broke RFC 7692 (RSV1 on a continuation, or a message inside another)",
            )),
        },
        _ => None,
    }
}

struct Session {
    state: SharedState,
    conn: Arc<Conn>,
    claims: Claims,
    expires_at: Instant,
    subs: HashMap<ChannelName, (SubscriptionId, Arc<ChannelSub>)>,
    /// This connection in the admin API's list (its channels follow `subs`).
    listed: ConnectionEntry,
    _guard: ConnectionGuard,
}

fn expiry(exp: u64, leeway: u64) -> Instant {
    let left = (exp + leeway).saturating_sub(unix_now());
    Instant::now() + Duration::from_secs(left.min(10 * 365 * 24 * 3600))
}

async fn run(
    state: SharedState,
    socket: Socket,
    channel: Option<ChannelName>,
    unauthenticated: Unauthenticated,
    deflating: Option<Deflating>,
) {
    if deflating.is_some() {
        state
            .metrics
            .compressed_connections
            .fetch_add(1, Ordering::Relaxed);
    }
    let (sink, mut stream) = socket.split();
    let (out_tx, out_rx) = mpsc::channel(state.config.ws.outbound_queue.max(1));
    let (close_tx, mut close_rx) = watch::channel(None);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let cohort = Arc::new(AtomicU8::new(FREE));
    let conn = Arc::new(Conn {
        out: out_tx,
        close: close_tx.clone(),
        state: state.clone(),
        queued_bytes: queued_bytes.clone(),
        max_queued_bytes: state.config.ws.max_queued_bytes,
        deflating,
        cohort: cohort.clone(),
    });
    // Counts the disconnection on every way out of this function, by the close code sent.
    let _disconnect = DisconnectCount {
        state: state.clone(),
        close: close_tx.subscribe(),
    };
    let mut writer_task = tokio::spawn(writer(
        sink,
        out_rx,
        close_tx,
        queued_bytes,
        state.clone(),
        deflating.map(|d| d.min),
    ));
    let mut drop_rx = state.drop_tx.subscribe();
    let mut shutdown_rx = state.shutdown_tx.subscribe();

    // Drops injected before this connection existed are not its own.
    let drops_before = *drop_rx.borrow_and_update();
    let authenticated = authenticate(&state, &conn, &mut stream, &mut drop_rx).await;
    drop(unauthenticated);
    match authenticated {
        Some((claims, guard, listed)) => {
            let mut session = Session {
                listed,
                expires_at: expiry(claims.exp, state.config.auth.leeway_secs),
                state: state.clone(),
                conn: conn.clone(),
                claims,
                subs: HashMap::new(),
                _guard: guard,
            };
            state
                .metrics
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            state
                .metrics
                .connections_opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(ch) = channel {
                session.subscribe(0, ch, None).await;
            }
            let dropped = session
                .run(&mut stream, &mut close_rx, &mut drop_rx, &mut shutdown_rx)
                .await;
            let close = conn.close.borrow().clone();
            tracing::info!(
                user = %session.claims.sub,
                subscriptions = session.subs.len(),
                close_code = close.as_ref().map(|(c, _)| *c),
                reason = close.as_ref().map_or("", |(_, r)| r.as_str()),
                "websocket disconnected"
            );
            for (ch, (id, _)) in session.subs.drain() {
                state.broker.unsubscribe(&ch, id).await;
            }
            state
                .metrics
                .connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            drop(session);
            if dropped {
                writer_task.abort();
                return;
            }
        }
        None if *drop_rx.borrow_and_update() != drops_before && conn.close.borrow().is_none() => {
            writer_task.abort();
            return;
        }
        None => {}
    }
    // Closing: let the writer send what is queued and the close frame, then give the
    // client a moment to answer the close handshake.
    drop(conn);
    if tokio::time::timeout(Duration::from_secs(2), &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
    // After a frame the WebSocket layer refused (1007, 1009) the reader is done and may
    // leave the frame's bytes unread: dropping the socket then resets the connection, and the
    // kernel discards what it has not transmitted yet, the close frame included. Holding the
    // socket a moment lets the close reach the client.
    let refused_read = matches!(
        close_rx.borrow().as_ref(),
        Some((INVALID_PAYLOAD | PROTOCOL_ERROR | close::MESSAGE_TOO_BIG, _))
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while stream.next().await.is_some() {}
        if refused_read {
            std::future::pending::<()>().await;
        }
    })
    .await;
}

/// Counts one ended connection when dropped, classed by the close code the server sent
/// (none: the client closed or vanished first).
struct DisconnectCount {
    state: SharedState,
    close: watch::Receiver<Option<(u16, String)>>,
}

impl Drop for DisconnectCount {
    fn drop(&mut self) {
        let code = self.close.borrow().as_ref().map(|(code, _)| *code);
        self.state.metrics.disconnected(code);
    }
}

/// The first frame must be `connect` with a valid token, within the deadline.
async fn authenticate(
    state: &SharedState,
    conn: &Arc<Conn>,
    stream: &mut SplitStream<Socket>,
    drop_rx: &mut watch::Receiver<u64>,
) -> Option<(Claims, ConnectionGuard, ConnectionEntry)> {
    let fail = |code: ErrorCode, close_code: u16, message: &str| {
        tracing::info!(
            code = code.as_str(),
            close_code,
            reason = message,
            "websocket refused"
        );
        conn.error(ErrorFrame::new(None, code, message));
        conn.close_after_queue(close_code, message);
    };
    let deadline = Duration::from_millis(state.config.ws.auth_timeout_ms);
    drop_rx.borrow_and_update();
    let first = tokio::select! {
        r = tokio::time::timeout(deadline, next_text(stream)) => r,
        _ = drop_rx.changed() => return None,
    };
    let text = match first {
        Err(_) => {
            fail(
                ErrorCode::AuthTimeout,
                close::AUTH_TIMEOUT,
                "no connect frame within the authentication deadline",
            );
            return None;
        }
        Ok(None) => return None,
        Ok(Some(Incoming::Binary)) => {
            fail(
                ErrorCode::BadRequest,
                close::BAD_REQUEST,
                "frames are JSON text; the first must be connect",
            );
            return None;
        }
        Ok(Some(Incoming::Refused(code, close_code, message))) => {
            fail(code, close_code, message);
            return None;
        }
        Ok(Some(Incoming::Text(t))) => t,
    };
    let (token, client) = match ClientFrame::decode(&text, state.config.max_frame_bytes) {
        Ok(ClientFrame::Connect { token, client }) => (token, client),
        Ok(_) => {
            fail(
                ErrorCode::BadRequest,
                close::BAD_REQUEST,
                "the first frame must be connect",
            );
            return None;
        }
        Err(e) => {
            fail(
                ErrorCode::BadRequest,
                close::BAD_REQUEST,
                &format!("the first frame must be connect: {e}"),
            );
            return None;
        }
    };
    let claims = match state.verifier.verify(&token) {
        Ok(c) => c,
        Err(AuthError { code, message }) => {
            state.metrics.auth_failure(AuthFailure::of_code(code));
            let close_code = if code == ErrorCode::TokenExpired {
                close::TOKEN_EXPIRED
            } else {
                close::UNAUTHORIZED
            };
            fail(code, close_code, &message);
            return None;
        }
    };
    let guard = match state.connections.acquire(&claims.sub).await {
        Ok(g) => g,
        Err(Refused::Limit(limit_type)) => {
            reject_connection(state, conn, limit_type);
            return None;
        }
        Err(Refused::Store(e)) => {
            tracing::error!(error = %e, "connection store failed");
            let mut frame = ErrorFrame::new(
                None,
                ErrorCode::Unavailable,
                "a backend is unavailable; reconnect later",
            );
            frame.retry_after_ms = Some(1_000);
            conn.error(frame);
            conn.close_after_queue(close::TRY_AGAIN_LATER, "backend unavailable");
            return None;
        }
    };
    let session = state.next_session();
    tracing::info!(session = %session, sub = %claims.sub, "connected");
    let listed = state.admin.connected(&session, &claims, client.as_deref());
    conn.send(&ServerFrame::Connected {
        session,
        epoch: state.history.epoch().to_string(),
        ping_interval_ms: state.config.ws.ping_interval_ms,
        limits: Limits {
            max_payload_bytes: state.config.max_payload_bytes,
            max_frame_bytes: state.config.max_frame_bytes,
            max_subscriptions: state.config.ws.max_subscriptions,
        },
    });
    Some((claims, guard, listed))
}

fn limit_error(state: &SharedState, id: Option<u64>, limit_type: &str) -> ErrorFrame {
    state.metrics.connection_rejected(limit_type);
    let mut frame = ErrorFrame::new(
        id,
        ErrorCode::ConnectionLimitExceeded,
        format!("connection limit reached ({limit_type})"),
    );
    frame.limit_type = Some(limit_type.to_owned());
    frame
}

/// Refuses the connection itself (total or per user): error, then close 1008.
fn reject_connection(state: &SharedState, conn: &Conn, limit_type: &str) {
    conn.error(limit_error(state, None, limit_type));
    conn.close_after_queue(close::POLICY_VIOLATION, "connection limit reached");
}

/// The request id of a frame that failed to decode, if it has one.
fn id_of(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_str::<IdOnly>(text).ok().and_then(|i| i.id)
}

impl Session {
    /// Runs until the connection ends; true when it was dropped by fault injection.
    async fn run(
        &mut self,
        stream: &mut SplitStream<Socket>,
        close_rx: &mut watch::Receiver<Option<(u16, String)>>,
        drop_rx: &mut watch::Receiver<u64>,
        shutdown_rx: &mut watch::Receiver<bool>,
    ) -> bool {
        let ping_every = self.state.config.ping_interval();
        let pong_timeout = Duration::from_millis(self.state.config.ws.pong_timeout_ms);
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pong_deadline: Option<Instant> = None;
        if *shutdown_rx.borrow_and_update() {
            self.conn
                .close_after_queue(close::GOING_AWAY, "server shutting down");
            return false;
        }
        loop {
            let pong_wait = async {
                match pong_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = drop_rx.changed() => return true,
                _ = close_rx.changed() => return false,
                _ = shutdown_rx.changed() => {
                    self.conn.close_after_queue(close::GOING_AWAY, "server shutting down");
                    return false;
                }
                _ = tokio::time::sleep_until(self.expires_at) => {
                    self.conn.error(ErrorFrame::new(None, ErrorCode::TokenExpired, "token expired; refresh it and reconnect"));
                    self.conn.close_after_queue(close::TOKEN_EXPIRED, "token expired");
                    return false;
                }
                _ = pong_wait => {
                    self.conn.close_after_queue(close::HEARTBEAT_TIMEOUT, "no pong in time");
                    return false;
                }
                _ = ping.tick() => {
                    if pong_deadline.is_none() {
                        self.conn.send(&ServerFrame::Ping);
                        pong_deadline = Some(Instant::now() + pong_timeout);
                    }
                }
                msg = next_text(stream) => match msg {
                    None => return false,
                    Some(Incoming::Binary) => self.conn.error(ErrorFrame::new(None, ErrorCode::BadRequest, "frames are JSON text")),
                    Some(Incoming::Refused(code, close_code, message)) => {
                        self.conn.error(ErrorFrame::new(None, code, message));
                        self.conn.close_after_queue(close_code, message);
                        return false;
                    }
                    Some(Incoming::Text(text)) => {
                        if self.handle(&text, &mut pong_deadline).await {
                            return false;
                        }
                    }
                },
            }
        }
    }

    /// Handles one frame; true when the connection is closing.
    async fn handle(&mut self, text: &str, pong_deadline: &mut Option<Instant>) -> bool {
        let frame = match ClientFrame::decode(text, self.state.config.max_frame_bytes) {
            Ok(f) => f,
            Err(e) => {
                let code = e.code();
                let id = if matches!(e, FrameError::TooLarge { .. }) {
                    None
                } else {
                    id_of(text)
                };
                self.conn.error(ErrorFrame::new(id, code, e.to_string()));
                return false;
            }
        };
        match frame {
            ClientFrame::Ping => self.conn.send(&ServerFrame::Pong),
            ClientFrame::Pong => *pong_deadline = None,
            ClientFrame::Connect { .. } => {
                self.conn.error(ErrorFrame::new(
                    None,
                    ErrorCode::BadRequest,
                    "already connected; use refresh to replace the token",
                ));
            }
            ClientFrame::Subscribe { id, channel, since } => {
                return self.subscribe(id, channel, since).await;
            }
            ClientFrame::Unsubscribe { id, channel } => {
                if let Some((sid, _)) = self.subs.remove(&channel) {
                    self.state.broker.unsubscribe(&channel, sid).await;
                    self.listed.unsubscribed(&channel);
                }
                self.conn.send(&ServerFrame::Unsubscribed { id, channel });
            }
            ClientFrame::Publish { id, event } => {
                let _timer = self.state.metrics.publish_timer();
                let mut usage = self.state.limiter.usage(&self.claims);
                match publish_event(&self.state, &self.claims, event, &mut usage).await {
                    Ok(ok) => self.conn.send(&ServerFrame::Ack {
                        id,
                        event_id: ok.id,
                        offset: ok.offset,
                        duplicate: ok.duplicate,
                    }),
                    Err(e) => self.conn.error(e.to_frame(Some(id))),
                }
            }
            ClientFrame::Refresh { id, token } => match self.state.verifier.verify(&token) {
                Ok(claims) if claims.sub == self.claims.sub => {
                    self.expires_at = expiry(claims.exp, self.state.config.auth.leeway_secs);
                    self.claims = claims;
                    self.conn.send(&ServerFrame::Refreshed { id });
                }
                Ok(_) => self.conn.error(ErrorFrame::new(
                    Some(id),
                    ErrorCode::Unauthorized,
                    "a refreshed token must have the same `sub`",
                )),
                Err(e) => {
                    self.state
                        .metrics
                        .auth_failure(AuthFailure::of_code(e.code));
                    self.conn
                        .error(ErrorFrame::new(Some(id), e.code, e.message))
                }
            },
            _ => self.conn.error(ErrorFrame::new(
                None,
                ErrorCode::UnknownOp,
                "unsupported op",
            )),
        }
        false
    }

    /// What the history holds for a subscription from `since`, and where it continues.
    async fn resume(
        &self,
        channel: &ChannelName,
        since: Option<&StreamPosition>,
    ) -> Result<(Retained, ResumePoint), StoreError> {
        let history = &self.state.history;
        match since {
            Some(pos) => {
                let held = history.read_since(channel, pos).await?;
                let point = held.resume_point(pos);
                Ok((held, point))
            }
            // A first subscription: live from after the latest.
            None => {
                let (epoch, latest) = history.latest(channel).await?;
                let held = Retained {
                    epoch,
                    latest,
                    events: Vec::new(),
                };
                let point = ResumePoint {
                    recovered: true,
                    replay_from: latest + 1,
                };
                Ok((held, point))
            }
        }
    }

    /// Answers a subscribe that a store failed; the connection stays.
    fn subscribe_failed(&self, id: u64, e: &StoreError) -> bool {
        tracing::error!(error = %e, "subscribe failed");
        self.conn.error(ErrorFrame::new(
            Some(id),
            ErrorCode::Unavailable,
            "history is unavailable; retry",
        ));
        false
    }

    /// Subscribes, replays what `since` missed, then goes live; true when closing.
    async fn subscribe(
        &mut self,
        id: u64,
        channel: ChannelName,
        since: Option<StreamPosition>,
    ) -> bool {
        if !self.claims.can_read(&channel) {
            self.state.metrics.auth_failure(AuthFailure::Forbidden);
            self.conn.error(ErrorFrame::new(
                Some(id),
                ErrorCode::ForbiddenChannel,
                format!("this token may not read `{channel}`"),
            ));
            return false;
        }
        if let Some((sid, _)) = self.subs.remove(&channel) {
            self.state.broker.unsubscribe(&channel, sid).await;
        } else if self.subs.len() >= self.state.config.ws.max_subscriptions {
            self.conn.error(ErrorFrame::new(
                Some(id),
                ErrorCode::BadRequest,
                format!(
                    "at most {} subscriptions per connection",
                    self.state.config.ws.max_subscriptions
                ),
            ));
            return false;
        }
        let max_per_channel = self.state.connections.max_per_channel();
        if max_per_channel > 0 && self.state.broker.subscriber_count(&channel) >= max_per_channel {
            // Only this subscription fails; the connection and its other channels stay.
            self.conn
                .error(limit_error(&self.state, Some(id), "channel"));
            return false;
        }
        let sub = Arc::new(ChannelSub {
            conn: self.conn.clone(),
            phase: Mutex::new(Phase::Buffering(Vec::new())),
            buffer_cap: self.state.config.ws.outbound_queue.max(1),
        });
        // Subscribed before reading the history: what is appended after the read reaches the
        // buffer, so replay and live meet without a hole (`go_live` drops the overlap).
        let sid = match self.state.broker.subscribe(&channel, sub.clone()).await {
            Ok(sid) => sid,
            Err(e) => return self.subscribe_failed(id, &e),
        };
        let (held, point) = match self.resume(&channel, since.as_ref()).await {
            Ok(r) => r,
            Err(e) => {
                // Not left in the broker: its buffer would fill and close the connection.
                self.state.broker.unsubscribe(&channel, sid).await;
                return self.subscribe_failed(id, &e);
            }
        };
        self.subs.insert(channel.clone(), (sid, sub.clone()));
        self.listed.subscribed(&channel);
        let channel_name = channel.clone();
        self.conn.send(&ServerFrame::Subscribed {
            id,
            channel,
            recovered: point.recovered,
            epoch: held.epoch.to_string(),
            offset: held.latest,
            replay_from: Some(point.replay_from),
        });
        // Every held event the client has not seen, from `replay_from`, whether or not
        // older ones are lost: losing some is no reason to skip the rest.
        let mut last = held.latest;
        for stored in held.events {
            last = last.max(stored.offset);
            let frame = ServerFrame::Event(courier_core::Delivery {
                epoch: stored.epoch.to_string(),
                offset: stored.offset,
                event: (*stored.event).clone(),
            })
            .encode();
            // Replay waits for room in the queue instead of failing: the client asked for it.
            let item = Outbound::Replayed(frame, self.conn.may_deflate());
            if self.conn.out.send(item).await.is_err() {
                return true;
            }
        }
        sub.go_live(held.epoch, last, &channel_name, self.subs.len() == 1);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_to_123_bytes_on_a_char_boundary() {
        let short = close_frame(4001, "token has expired");
        assert_eq!(
            (u16::from(short.code), short.reason.as_str()),
            (4001, "token has expired")
        );
        let ascii = "x".repeat(300);
        assert_eq!(close_frame(4001, &ascii).reason.len(), 123);
        // 122 ASCII bytes then a 4-byte character: cut before it, not through it.
        let wide = format!("{}🦀🦀", "a".repeat(122));
        let cut = close_frame(4000, &wide);
        assert_eq!(cut.reason.as_str(), "a".repeat(122));
        let accents = "é".repeat(100);
        assert_eq!(close_frame(4000, &accents).reason.as_str(), "é".repeat(61));
    }
}
