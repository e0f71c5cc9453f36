//! The one task that drives [`courier_core::Client`] (quinn's `drive_timer` pattern).
//!
//! The core decides everything; this task only does what its [`Output`]s say and reports
//! what happened:
//!
//! - `OpenSocket` / `SendFrame` / `CloseSocket`: one tokio-tungstenite socket task per
//!   connection; its frames come back here tagged with the socket's generation, so a late
//!   report from a socket the core already forgot is ignored. Its TCP stream is counted
//!   ([`crate::wire`]) into the client's `wire_bytes_*` stats.
//! - `SendBatch`: a spawned reqwest `POST`; its [`TransportResult`] comes back here.
//! - `FetchToken`: a spawned call to the [`TokenProvider`]; its answer comes back here.
//! - `Subscribed` / `Event` / `Gap` / `SubscriptionFailed`: to the listener's
//!   [`Subscription`](crate::Subscription) (an mpsc per listener).
//! - `Published`: to the waiting [`Completer`].
//! - `State` / `Error`: to the state `watch` and the [`Listener`] callback.
//!
//! The core sits behind a mutex shared with the handles ([`Publisher`](crate::Publisher),
//! [`Subscriber`](crate::Subscriber), [`Subscription`](crate::Subscription)), as quinn's
//! `ConnectionRef` does: a publish or subscribe must answer at once (its ticket, a
//! validation error, `ALREADY_SUBSCRIBED`), so handles call the core directly and then wake
//! this task, which is the command channel. Nothing under the lock logs or calls application
//! code: a log sink or a completer may take another lock (Python's GIL) whose holder waits
//! for this one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use courier_core::client::{ListenerId, Output};
use courier_core::connection::State as ConnState;
use courier_core::queue::{BatchId, PublishResult, Ticket, TransportResult};
use courier_core::time::{Instant, SystemTime};
use courier_core::{Client as Core, Error};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::subscriber::{ClientEvent, Listener, SubscriptionItem};
use crate::token::TokenProvider;
use crate::wire::{self, WireCounters};

/// Called once with the final outcome of a queued event, on the client's runtime.
pub type Completer = Box<dyn FnOnce(Result<PublishResult, Error>) + Send + 'static>;

/// What the handles and the driver share: the core and where its outputs go.
pub(crate) struct State {
    pub(crate) core: Core,
    /// Who waits for each published event's outcome.
    pub(crate) waiters: HashMap<Ticket, Completer>,
    /// Where each listener's items go.
    pub(crate) routes: HashMap<ListenerId, mpsc::UnboundedSender<SubscriptionItem>>,
    /// The application closed the client (subscriptions then end without an error).
    pub(crate) closed_by_app: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the driver: a handle called the core.
    wake: Notify,
    /// Wakes `flush()` callers after outcomes were handed out.
    pub(crate) progress: Notify,
    /// True once the driver stopped.
    pub(crate) done: watch::Sender<bool>,
    /// The connection's state, for `Subscriber::state` and `watch_state`.
    pub(crate) conn_state: watch::Sender<ConnState>,
    /// Bytes every socket of this client read and wrote (for `stats()`).
    pub(crate) wire: Arc<WireCounters>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls the core (through `f`, under the lock), then wakes the driver to act on what it
    /// decided.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let r = f(&mut self.lock(), Instant::now());
        self.wake.notify_one();
        r
    }

    /// Closes the client: the socket closes at once, what was queued is still sent.
    pub(crate) fn close(&self) {
        self.with(|st, now| {
            st.closed_by_app = true;
            st.core.close(now);
        });
    }
}

/// How the driver reaches the world.
pub(crate) struct Io {
    pub(crate) http: reqwest::Client,
    pub(crate) batch_url: String,
    pub(crate) ws_url: String,
    pub(crate) request_timeout: Duration,
    pub(crate) max_frame_bytes: usize,
    pub(crate) tokens: Arc<dyn TokenProvider>,
    pub(crate) listener: Option<Listener>,
}

/// Starts the driver task; returns what the handles share with it.
pub(crate) fn spawn(core: Core, io: Io, handle: &tokio::runtime::Handle) -> Arc<Shared> {
    let shared = Arc::new(Shared {
        conn_state: watch::channel(core.state()).0,
        state: Mutex::new(State {
            core,
            waiters: HashMap::new(),
            routes: HashMap::new(),
            closed_by_app: false,
        }),
        wake: Notify::new(),
        progress: Notify::new(),
        done: watch::channel(false).0,
        wire: Arc::default(),
    });
    let driver = Driver {
        shared: shared.clone(),
        io,
        socket: None,
        generation: 0,
        last_error: None,
    };
    handle.spawn(driver.run());
    shared
}

/// What to do once the lock is released.
enum Work {
    /// A socket, HTTP or token output.
    Io(Output),
    /// An event's outcome for its waiter.
    Complete(Completer, Result<PublishResult, Error>),
    /// For the application's listener.
    Notify(ClientEvent),
    /// A line for the log.
    Warn(String),
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
    shared: Arc<Shared>,
    io: Io,
    /// The live socket task's outbox.
    socket: Option<mpsc::UnboundedSender<SocketOut>>,
    /// Bumped per socket: reports of older sockets are stale.
    generation: u64,
    /// Ends the subscriptions when the connection closes for good.
    last_error: Option<Error>,
}

/// The inputs that come back to the driver.
struct Inbox {
    sockets: mpsc::UnboundedSender<(u64, SocketEvent)>,
    http: mpsc::UnboundedSender<(BatchId, TransportResult)>,
    tokens: mpsc::UnboundedSender<Result<String, String>>,
}

impl Driver {
    async fn run(mut self) {
        let (sock_tx, mut sock_rx) = mpsc::unbounded_channel();
        let (http_tx, mut http_rx) = mpsc::unbounded_channel();
        let (token_tx, mut token_rx) = mpsc::unbounded_channel();
        let inbox = Inbox {
            sockets: sock_tx,
            http: http_tx,
            tokens: token_tx,
        };
        let shared = self.shared.clone();
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let (work, deadline, finished) = self.step();
            self.execute(work, &inbox);
            if finished {
                break;
            }
            // One sleep, reset only when the core's deadline moved.
            if deadline != armed {
                if let Some(d) = deadline {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(d));
                }
                armed = deadline;
            }
            tokio::select! {
                () = shared.wake.notified() => {}
                Some((generation, event)) = sock_rx.recv() => {
                    let mut st = shared.lock();
                    self.socket_event(&mut st, generation, event);
                    // Frames that arrived meanwhile go in under the same lock.
                    while let Ok((generation, event)) = sock_rx.try_recv() {
                        self.socket_event(&mut st, generation, event);
                    }
                }
                Some((batch, result)) = http_rx.recv() => {
                    let mut st = shared.lock();
                    st.core.handle_response(batch, result, Instant::now(), SystemTime::now());
                    while let Ok((batch, result)) = http_rx.try_recv() {
                        st.core.handle_response(batch, result, Instant::now(), SystemTime::now());
                    }
                }
                Some(token) = token_rx.recv() => {
                    if let Err(e) = &token {
                        tracing::warn!(error = %e, "token provider failed");
                    }
                    shared.lock().core.handle_token(token, Instant::now());
                }
                () = &mut sleep, if armed.is_some() => {}
            }
        }
        // Finished: every subscription ends, waiters of `close` and `flush` are released.
        let routes: Vec<_> = self.shared.lock().routes.drain().collect();
        for (_, tx) in routes {
            let _ = tx.send(SubscriptionItem::Ended(None));
        }
        self.shared.done.send_replace(true);
        self.shared.progress.notify_waiters();
        tracing::debug!("client finished");
    }

    fn socket_event(&mut self, st: &mut State, generation: u64, event: SocketEvent) {
        if generation != self.generation || self.socket.is_none() {
            return;
        }
        let now = Instant::now();
        match event {
            SocketEvent::Open => st.core.handle_socket_open(now),
            SocketEvent::Text(text) => st.core.handle_frame(&text, now),
            SocketEvent::Closed(code, reason) => {
                self.socket = None;
                st.core.handle_socket_closed(code, &reason, now);
            }
        }
    }

    /// Under the lock: lets due timers fire and drains the core's outputs, routing
    /// subscription items at once (an mpsc send calls nothing) and keeping the rest for
    /// [`execute`](Self::execute). Returns that work, the next deadline, and whether the
    /// client is finished.
    fn step(&mut self) -> (Vec<Work>, Option<Instant>, bool) {
        let mut work = Vec::new();
        let mut st = self.shared.lock();
        let st = &mut *st;
        let now = Instant::now();
        if st.core.poll_timeout().is_some_and(|t| t <= now) {
            st.core.handle_timeout(now);
        }
        let mut gone = Vec::new();
        loop {
            while let Some(out) = st.core.poll(now) {
                match out {
                    Output::Event { listener, delivery } => {
                        route(st, listener, SubscriptionItem::Event(delivery), &mut gone);
                    }
                    Output::Subscribed {
                        listener,
                        recovered,
                        position,
                        ..
                    } => {
                        let item = SubscriptionItem::Subscribed {
                            recovered,
                            position,
                        };
                        route(st, listener, item, &mut gone);
                    }
                    Output::Gap {
                        listener,
                        channel,
                        last,
                        position,
                        reason,
                    } => {
                        work.push(Work::Warn(format!(
                            "events may be missing on {channel}: {reason:?} after {last:?} up to {position:?}"
                        )));
                        let item = SubscriptionItem::Gap {
                            last,
                            position,
                            reason,
                        };
                        route(st, listener, item, &mut gone);
                    }
                    Output::SubscriptionFailed {
                        listener,
                        channel,
                        error,
                    } => {
                        work.push(Work::Warn(format!(
                            "subscription to {channel} refused: {error}"
                        )));
                        if let Some(tx) = st.routes.remove(&listener) {
                            let _ = tx.send(SubscriptionItem::Ended(Some(error)));
                        }
                    }
                    Output::Published { ticket, result } => {
                        if let Some(w) = st.waiters.remove(&ticket) {
                            work.push(Work::Complete(w, result));
                        }
                    }
                    Output::State(state) => {
                        self.shared.conn_state.send_replace(state);
                        work.push(Work::Notify(ClientEvent::State(state)));
                        if state == ConnState::Closed {
                            let error = if st.closed_by_app {
                                None
                            } else {
                                self.last_error.take()
                            };
                            for (_, tx) in st.routes.drain() {
                                let _ = tx.send(SubscriptionItem::Ended(error.clone()));
                            }
                        }
                    }
                    Output::Error(error) => {
                        self.last_error = Some(error.clone());
                        work.push(Work::Notify(ClientEvent::Error(error)));
                    }
                    other => work.push(Work::Io(other)),
                }
            }
            if gone.is_empty() {
                break;
            }
            // Subscriptions dropped without their unsubscribe reaching the core.
            for listener in gone.drain(..) {
                st.core.unsubscribe(listener, now);
            }
        }
        (work, st.core.poll_timeout(), st.core.is_finished())
    }

    /// Outside the lock: does what the core asked for.
    fn execute(&mut self, work: Vec<Work>, inbox: &Inbox) {
        let mut completed = false;
        for w in work {
            match w {
                Work::Io(out) => self.io(out, inbox),
                Work::Complete(waiter, result) => {
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "event given up");
                    }
                    completed = true;
                    waiter(result);
                }
                Work::Notify(event) => {
                    match &event {
                        ClientEvent::State(s) => tracing::info!(state = ?s, "connection state"),
                        ClientEvent::Error(e) => tracing::warn!(error = %e, "connection error"),
                    }
                    if let Some(l) = &self.io.listener {
                        l(event);
                    }
                }
                Work::Warn(message) => tracing::warn!("{message}"),
            }
        }
        if completed {
            self.shared.progress.notify_waiters();
        }
    }

    fn io(&mut self, out: Output, inbox: &Inbox) {
        match out {
            Output::FetchToken { refresh } => {
                tracing::debug!(refresh, "asking the token provider");
                let token = self.io.tokens.token(refresh);
                let tx = inbox.tokens.clone();
                tokio::spawn(async move {
                    let _ = tx.send(token.await);
                });
            }
            Output::OpenSocket => {
                self.generation += 1;
                let (out_tx, out_rx) = mpsc::unbounded_channel();
                self.socket = Some(out_tx);
                tokio::spawn(run_socket(
                    self.generation,
                    self.io.ws_url.clone(),
                    self.io.max_frame_bytes,
                    self.shared.wire.clone(),
                    inbox.sockets.clone(),
                    out_rx,
                ));
            }
            Output::SendFrame(text) => {
                if let Some(s) = &self.socket {
                    let _ = s.send(SocketOut::Text(text));
                }
            }
            Output::CloseSocket { code, reason } => {
                tracing::info!(code, %reason, "closing the websocket");
                if let Some(s) = self.socket.take() {
                    let _ = s.send(SocketOut::Close(code, reason));
                }
            }
            Output::SendBatch { batch, body, token } => {
                tracing::debug!(batch = batch.0, "sending batch");
                let tx = inbox.http.clone();
                let request = self
                    .io
                    .http
                    .post(&self.io.batch_url)
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .timeout(self.io.request_timeout);
                tokio::spawn(async move {
                    let result = send(request).await;
                    if let TransportResult::Failed(e) = &result {
                        tracing::info!(batch = batch.0, error = %e, "batch request failed");
                    }
                    let _ = tx.send((batch, result));
                });
            }
            other => tracing::debug!(?other, "unhandled output"),
        }
    }
}

/// Hands `item` to `listener`'s subscription; a subscription that is gone is noted for an
/// unsubscribe.
fn route(st: &mut State, listener: ListenerId, item: SubscriptionItem, gone: &mut Vec<ListenerId>) {
    if let Some(tx) = st.routes.get(&listener) {
        if tx.send(item).is_err() {
            st.routes.remove(&listener);
            gone.push(listener);
        }
    }
}

async fn send(request: reqwest::RequestBuilder) -> TransportResult {
    match request.send().await {
        Err(e) => TransportResult::Failed(error_chain(&e)),
        Ok(r) => {
            let status = r.status().as_u16();
            let headers = r
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            match r.text().await {
                Ok(body) => TransportResult::Http {
                    status,
                    headers,
                    body,
                },
                Err(e) => TransportResult::Failed(error_chain(&e)),
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// One WebSocket: connects, then forwards frames both ways until either side closes.
async fn run_socket(
    generation: u64,
    url: String,
    max_frame_bytes: usize,
    counters: Arc<WireCounters>,
    events: mpsc::UnboundedSender<(u64, SocketEvent)>,
    mut out: mpsc::UnboundedReceiver<SocketOut>,
) {
    let report = |e: SocketEvent| {
        let _ = events.send((generation, e));
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes));
    let connecting = wire::connect(&url, config, counters);
    // The core owns the connect deadline: when it gives up it sends CloseSocket, which drops
    // `out`, which ends this attempt.
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
                    // The core already forgot this socket: the close handshake is a courtesy
                    // to the server, bounded so a dead peer cannot keep the task alive.
                    let frame = CloseFrame { code: code.into(), reason: reason.into() };
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
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
