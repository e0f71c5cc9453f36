//! The driver: one [`courier_core::client::Client`] behind one JavaScript object.
//!
//! Every decision is the core client's: the token (one provider call at a time, shared by the
//! WebSocket and HTTP), event stamping (id, `metadata.timestamp`, `metadata.source` from the
//! configured service name), the endpoints ([`courier_core::client::Endpoints`]), connecting on
//! the first subscription, several listeners per channel, reconnect, resume, gaps,
//! Retry-After, the publish queue and close semantics.
//!
//! The driver never calls JavaScript: the TypeScript layer (`npm/src/client.ts`) owns the
//! WebSocket, `fetch` and the one timer (issue #13 moves them into the WASM). After each
//! command or input it drains [`Driver::poll`] until `undefined`, doing what each output says,
//! then re-arms its timer at [`Driver::timeout`] (only when that is earlier than the armed
//! one: an early wake-up is harmless, the core ignores extra `handle_timeout` calls). This is
//! the core's driver contract (see `courier_core::client`).
//!
//! # The output boundary
//!
//! [`Driver::poll`] returns an [`OutputKind`] (a TypeScript `enum`); its payload is read with
//! [`Driver::arg`] (a number), [`Driver::text`] (a string, taken) and, for a batch,
//! [`Driver::token`]. No output allocates a JavaScript object in the WASM, and nothing crosses
//! as serde: the JSON payloads below are written by the core's small writer
//! ([`courier_core::json::Obj`]), so the release WASM carries no `serde_json` and no float
//! formatting.
//!
//! | kind | do | `arg()` | `text()` |
//! |---|---|---|---|
//! | `OpenSocket` | open a WebSocket to `Endpoints.wsUrl`; report `handleOpen` / `handleClose` | | |
//! | `SendFrame` | send this text frame | | the frame |
//! | `CloseSocket` | close the socket and forget it | close code | reason |
//! | `FetchToken` | ask the token provider; answer with `handleToken` | 1 if the token expired | |
//! | `SendBatch` | `POST` to `Endpoints.publishUrl` with `token()`; answer with `handleResponse` / `handleFailed` | batch id | body |
//! | `Event` | hand the event to the listener | listener id | `{"epoch","offset","event"}` |
//! | `State` | the connection's state changed | | state name |
//! | `Gap` | events may be missing (once per gap, not per listener) | | `{"channel","last","position","reason"}` |
//! | `SubscriptionFailed` | the listener's subscription was refused; it is gone | listener id | error JSON |
//! | `Published` | a publish completed | ticket | `{"ok": result}` or `{"error": error}` |
//! | `Error` | for the application | | error JSON |
//!
//! Error JSON is `{"code","category","retryable","message","retry_after_ms"?,"field"?,
//! "status"?,"limit_type"?}`; the TypeScript layer turns it into a `CourierError` subclass.
//! A command that fails throws that JSON text (`errorFromThrown` in TypeScript).
//!
//! The hot path, an event frame, is one call: [`Driver::handle_text`] (or
//! [`Driver::handle_buffered`]) returns the listener to hand the very frame to when that is
//! all the frame did, so the TypeScript layer `JSON.parse`s its own string once.

use courier_core::client::{
    Client, ClientConfig, ClientStats, Endpoints, EventOptions, ListenerId, Output, PublishItem,
};
use courier_core::connection::{GapReason, State};
use courier_core::json::Obj;
use courier_core::queue::{BatchId, Priority, PublishOptions, TransportResult};
use courier_core::time::{Duration, Instant, SystemTime, UNIX_EPOCH, as_millis_u64};
use courier_core::{ChannelName, Delivery, Error, Metadata, StreamPosition};
use wasm_bindgen::prelude::*;

/// What an output of [`Driver::poll`] asks for (see the module docs for each payload).
#[wasm_bindgen]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Open a new WebSocket to `Endpoints.wsUrl`.
    OpenSocket = 0,
    /// Send `text()` on the socket.
    SendFrame = 1,
    /// Close the socket with code `arg()` and reason `text()`, and forget it.
    CloseSocket = 2,
    /// Ask the token provider (`arg()` is 1 when the previous token expired).
    FetchToken = 3,
    /// `POST` `text()` to `Endpoints.publishUrl` with `token()`; `arg()` is the batch id.
    SendBatch = 4,
    /// Hand the event `text()` to listener `arg()`.
    Event = 5,
    /// The connection's state is now `text()`.
    State = 6,
    /// A gap on a channel, as JSON `text()`.
    Gap = 7,
    /// Listener `arg()`'s subscription was refused with the error JSON `text()`.
    SubscriptionFailed = 8,
    /// Ticket `arg()` completed: `text()` is `{"ok": …}` or `{"error": …}`.
    Published = 9,
    /// An error JSON `text()` for the application.
    Error = 10,
}

/// The error JSON of the module docs. A refusal's message is the server's own (without the
/// code prefix its `Display` adds).
fn error_json(e: &Error) -> String {
    let mut out = String::new();
    let mut j = Obj::new(&mut out);
    j.str("code", e.code())
        .str("category", e.category().as_str())
        .bool("retryable", e.is_retryable());
    match e {
        Error::Refused(r) => {
            j.str("message", &r.message)
                .opt_u64("retry_after_ms", r.retry_after.map(as_millis_u64))
                .opt_str("field", r.field.as_deref())
                .opt_u64("status", r.status.map(u64::from))
                .opt_str("limit_type", r.limit_type.as_deref());
        }
        Error::Invalid(v) => {
            j.str("message", &v.message).str("field", &v.field);
        }
        other => {
            j.str("message", &other.to_string());
        }
    }
    j.end();
    out
}

/// A core error, thrown to JavaScript as its JSON text.
fn thrown(e: impl Into<Error>) -> JsValue {
    JsValue::from_str(&error_json(&e.into()))
}

fn write_position(out: &mut String, p: &StreamPosition) {
    Obj::new(out)
        .str("epoch", &p.epoch)
        .u64("offset", p.offset)
        .end();
}

fn position_json(p: &StreamPosition) -> String {
    let mut out = String::new();
    write_position(&mut out, p);
    out
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Disconnected => "disconnected",
        State::Connecting => "connecting",
        State::Connected => "connected",
        State::Closed => "closed",
    }
}

/// `{"epoch","offset","event"}`: the shape of an event frame, so the TypeScript layer reads a
/// delivery the same way whether it parsed the frame itself or got it from `poll`.
fn delivery_json(d: &Delivery) -> String {
    let mut out = String::with_capacity(d.event.data.get().len() + 192);
    Obj::new(&mut out)
        .str("epoch", &d.epoch)
        .u64("offset", d.offset)
        .with("event", |out| d.event.write_json(out))
        .end();
    out
}

/// The named stats as JSON, with the names of [`ClientStats`]. The exhaustive pattern makes
/// a new field a compile error here; the npm test compares the names with the Rust struct's
/// serde names (`statsFieldNames` in the test build).
fn stats_json(s: &ClientStats) -> String {
    let ClientStats {
        queued_high,
        queued_normal,
        queued_low,
        in_flight,
        retrying,
        retries,
        dead,
        acknowledged,
        budget_exhausted,
        rate_limit_waits,
        reconnects,
        events_received,
        duplicates_dropped,
        gaps,
        heartbeat_timeouts,
        channels,
        paused_channels,
        pauses,
        token_fetches,
    } = s.clone();
    let n = |v: usize| v as u64;
    let mut out = String::with_capacity(512);
    Obj::new(&mut out)
        .u64("queued_high", n(queued_high))
        .u64("queued_normal", n(queued_normal))
        .u64("queued_low", n(queued_low))
        .u64("in_flight", n(in_flight))
        .u64("retrying", n(retrying))
        .u64("retries", retries)
        .u64("dead", dead)
        .u64("acknowledged", acknowledged)
        .u64("budget_exhausted", budget_exhausted)
        .u64("rate_limit_waits", rate_limit_waits)
        .u64("reconnects", reconnects)
        .u64("events_received", events_received)
        .u64("duplicates_dropped", duplicates_dropped)
        .u64("gaps", gaps)
        .u64("heartbeat_timeouts", heartbeat_timeouts)
        .u64("channels", n(channels))
        .u64("paused_channels", n(paused_channels))
        .u64("pauses", pauses)
        .u64("token_fetches", token_fetches)
        .end();
    out
}

type GapKey = (ChannelName, Option<StreamPosition>, StreamPosition);

/// Where a client talks to, as the core derives it from the options' `url` and `httpUrl`
/// ([`Endpoints::parse`], [`Endpoints::with_http_base`]).
#[wasm_bindgen(js_name = Endpoints)]
pub struct JsEndpoints(Endpoints);

#[wasm_bindgen(js_class = Endpoints)]
impl JsEndpoints {
    /// `url` in any form the core accepts (`http(s)://` or `ws(s)://`, optional prefix and
    /// trailing `/ws`); `http_url` overrides the HTTP base. Throws a core error (as JSON text)
    /// for a URL the core refuses.
    #[wasm_bindgen(constructor)]
    pub fn new(url: &str, http_url: Option<String>) -> Result<JsEndpoints, JsValue> {
        match http_url {
            Some(http) => Endpoints::with_http_base(url, &http),
            None => Endpoints::parse(url),
        }
        .map(JsEndpoints)
        .map_err(thrown)
    }

    /// The WebSocket URL (`OpenSocket` opens it).
    #[wasm_bindgen(getter, js_name = wsUrl)]
    pub fn ws_url(&self) -> String {
        self.0.ws_url.clone()
    }

    /// The URL `SendBatch` posts to.
    #[wasm_bindgen(getter, js_name = publishUrl)]
    pub fn publish_url(&self) -> String {
        self.0.publish_batch_url()
    }
}

/// Drives one core [`Client`]; created and owned by `CourierClient`.
#[wasm_bindgen]
pub struct Driver {
    client: Client,
    /// The (at most two) outputs `handle_text` took out of the client to look at, in order,
    /// not yet handed over (two slots, not a queue: smaller in the WASM).
    held: [Option<Output>; 2],
    /// The payload of the output `poll` returned last.
    arg: f64,
    text: String,
    token: String,
    /// The gap `poll` returned last, while only gaps followed it: the client reports a gap
    /// once per listener, the TypeScript API once per client.
    last_gap: Option<GapKey>,
    /// Where the host writes a text frame (UTF-8) for `handleBuffered`; never shrinks.
    inbox: Vec<u8>,
}

fn now() -> Instant {
    Instant::now()
}

/// The wall clock from the host's `Date.now()` (no `Date` binding in the WASM).
fn wall(unix_ms: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms(Some(unix_ms)).unwrap_or(0))
}

fn ms(v: Option<f64>) -> Option<u64> {
    v.filter(|v| v.is_finite() && *v >= 0.0).map(|v| v as u64)
}

fn listener_id(v: f64) -> ListenerId {
    ListenerId(ms(Some(v)).unwrap_or(0))
}

#[wasm_bindgen]
impl Driver {
    /// A driver that does nothing until a subscription, `connect()` or `publish()`.
    ///
    /// The host opens sockets to and posts batches to the URLs of an [`Endpoints`]
    /// (`JsEndpoints`) it made from the same options. `service_name` becomes `metadata.source` of published events
    /// that name none. Absent numbers keep the core's defaults; the TypeScript layer checks
    /// their types.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        service_name: Option<String>,
        client_name: String,
        seed_hi: u32,
        seed_lo: u32,
        min_delay_ms: Option<f64>,
        base_delay_ms: Option<f64>,
        max_delay_ms: Option<f64>,
        max_queued: Option<f64>,
        max_batch_events: Option<f64>,
        linger_ms: Option<f64>,
        max_attempts: Option<f64>,
        max_in_flight: Option<f64>,
    ) -> Driver {
        let mut config = ClientConfig {
            service_name: service_name.unwrap_or_default(),
            // Callback host: handlers run as events arrive, nothing is left unread.
            subscription_buffer: None,
            ..ClientConfig::default()
        };
        config.connection.client_name = client_name;
        let b = &mut config.connection.backoff;
        b.min_delay_ms = ms(min_delay_ms).unwrap_or(b.min_delay_ms);
        b.base_delay_ms = ms(base_delay_ms).unwrap_or(b.base_delay_ms);
        b.max_delay_ms = ms(max_delay_ms).unwrap_or(b.max_delay_ms);
        let q = &mut config.queue;
        q.max_queued = ms(max_queued).map_or(q.max_queued, |v| v as usize);
        q.max_batch_events = ms(max_batch_events).map_or(q.max_batch_events, |v| v as usize);
        q.linger_ms = ms(linger_ms).unwrap_or(q.linger_ms);
        q.max_attempts =
            ms(max_attempts).map_or(q.max_attempts, |v| v.min(u64::from(u32::MAX)) as u32);
        q.max_in_flight = ms(max_in_flight).map_or(q.max_in_flight, |v| v as usize);
        let seed = (u64::from(seed_hi) << 32) | u64::from(seed_lo);
        Driver {
            client: Client::new(config, seed, now()),
            held: [None, None],
            arg: 0.0,
            text: String::new(),
            token: String::new(),
            last_gap: None,
            inbox: Vec::new(),
        }
    }

    /// The next output's kind, or `undefined` when there is none; its payload is read with
    /// `arg()`, `text()` and `token()` before the next `poll`.
    pub fn poll(&mut self) -> Option<OutputKind> {
        loop {
            let [first, second] = &mut self.held;
            let output = match first.take().or_else(|| second.take()) {
                Some(o) => o,
                None => self.client.poll(now())?,
            };
            if let Some(kind) = self.take(output) {
                return Some(kind);
            }
        }
    }

    /// The number of the output `poll` returned last (see the module docs).
    pub fn arg(&self) -> f64 {
        self.arg
    }

    /// The text of the output `poll` returned last (taken: a second call returns "").
    pub fn text(&mut self) -> String {
        std::mem::take(&mut self.text)
    }

    /// The bearer token of the last `SendBatch`.
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// Milliseconds until `handleTimeout` is due (rounded up), or -1 when nothing is timed.
    pub fn timeout(&self) -> f64 {
        match self.client.poll_timeout() {
            None => -1.0,
            Some(t) => {
                let wait = t.saturating_duration_since(now());
                (wait.as_millis() as u64 + u64::from(wait.subsec_nanos() % 1_000_000 != 0)) as f64
            }
        }
    }

    /// The timer fired.
    #[wasm_bindgen(js_name = handleTimeout)]
    pub fn handle_timeout(&mut self) {
        self.client.handle_timeout(now());
    }

    /// The socket asked for by `OpenSocket` opened.
    #[wasm_bindgen(js_name = handleOpen)]
    pub fn handle_open(&mut self) {
        self.client.handle_socket_open(now());
    }

    /// The socket closed or failed to open (`code` absent: no close frame).
    #[wasm_bindgen(js_name = handleClose)]
    pub fn handle_close(&mut self, code: Option<u16>, reason: &str) {
        self.client.handle_socket_closed(code, reason, now());
    }

    /// The hot path: one text frame from the socket. Returns 0 when there is nothing to do;
    /// a listener id (> 0) when the frame is an event for that one listener and nothing else
    /// happened (hand it the frame; no `poll` needed); -1 when `poll` has outputs.
    #[wasm_bindgen(js_name = handleText)]
    pub fn handle_text(&mut self, text: &str) -> f64 {
        let t = now();
        self.client.handle_frame(text, t);
        if self.held.iter().any(Option::is_some) {
            // Outputs from before this frame still wait: `poll` hands them out first, then
            // the client's (this frame's among them), in order.
            return -1.0;
        }
        let Some(first) = self.client.poll(t) else {
            return 0.0;
        };
        match (first, self.client.poll(t)) {
            (Output::Event { listener, .. }, None) => listener.0 as f64,
            (first, next) => {
                self.held = [Some(first), next];
                -1.0
            }
        }
    }

    /// The address in WASM memory of a buffer of at least `len` bytes, for the host to
    /// write a text frame into (`TextEncoder.encodeInto`, much faster than passing a string)
    /// before calling `handleBuffered`. It stays where it is until `inbox` is asked for more
    /// than it holds (the host may keep a view of it; a grown memory needs a new view).
    pub fn inbox(&mut self, len: usize) -> usize {
        if self.inbox.len() < len {
            self.inbox.resize(len, 0);
        }
        self.inbox.as_mut_ptr() as usize
    }

    /// `handleText` for the first `len` bytes the host wrote into `inbox`.
    #[wasm_bindgen(js_name = handleBuffered)]
    pub fn handle_buffered(&mut self, len: usize) -> f64 {
        let inbox = std::mem::take(&mut self.inbox);
        let r = match inbox.get(..len).map(std::str::from_utf8) {
            Some(Ok(text)) => self.handle_text(text),
            // Not what the host should ever write: treat it as a frame that is not JSON.
            _ => self.handle_text("invalid UTF-8"),
        };
        self.inbox = inbox;
        r
    }

    /// Opens the WebSocket early (a subscription opens it anyway); the core reconnects until
    /// `close()`. Harmless when open.
    pub fn connect(&mut self) {
        self.client.connect(now());
    }

    /// Closes the socket at once and refuses new work; what is queued still drains (await
    /// `flush()`).
    pub fn close(&mut self) {
        self.client.close(now());
    }

    /// `disconnected`, `connecting`, `connected` or `closed`.
    #[wasm_bindgen(
        unchecked_return_type = "\"disconnected\" | \"connecting\" | \"connected\" | \"closed\""
    )]
    pub fn state(&self) -> String {
        state_name(self.client.state()).into()
    }

    /// Adds a listener on `channel` (connecting if needed), resuming after (`since_epoch`,
    /// `since_offset`) if given; returns the listener id its `Event` outputs carry. Throws a
    /// core error (as JSON text): an invalid channel, `CLOSED`, or `ALREADY_SUBSCRIBED` for a
    /// `since` other than the channel's current position.
    pub fn subscribe(
        &mut self,
        channel: &str,
        since_epoch: Option<String>,
        since_offset: Option<f64>,
    ) -> Result<f64, JsValue> {
        let since = since_epoch.map(|epoch| StreamPosition {
            epoch,
            offset: ms(since_offset).unwrap_or(0),
        });
        self.client
            .subscribe(channel, since, now())
            .map(|l| l.0 as f64)
            .map_err(thrown)
    }

    /// Removes a listener (the channel's server subscription ends with its last one);
    /// returns whether it existed.
    pub fn unsubscribe(&mut self, listener: f64) -> bool {
        self.client.unsubscribe(listener_id(listener), now())
    }

    /// Where `channel`'s delivery stands, as `{"epoch","offset"}` JSON.
    pub fn position(&self, channel: &str) -> Option<String> {
        let channel = ChannelName::new(channel).ok()?;
        self.client.position(&channel).as_ref().map(position_json)
    }

    /// Stamps and queues an event for `POST /publish/batch`; returns its ticket (the outcome
    /// comes as a `Published` output). Throws a validation or usage error (as JSON text) at
    /// once. `data_json` is the event's data as JSON text; `unix_ms` the wall clock
    /// (`Date.now()`); absent metadata is filled in by the core.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        channel: String,
        event_type: String,
        data_json: String,
        priority: Option<String>,
        id: Option<String>,
        retry: bool,
        unix_ms: f64,
        source: Option<String>,
        correlation_id: Option<String>,
        user_id: Option<String>,
        timestamp: Option<f64>,
    ) -> Result<f64, JsValue> {
        let priority = match priority {
            Some(p) => p.parse().map_err(thrown)?,
            None => Priority::Normal,
        };
        let item = PublishItem {
            channel,
            event_type,
            data_json,
            event: EventOptions {
                idempotency_key: id,
                metadata: Some(Metadata {
                    timestamp: ms(timestamp).unwrap_or(0),
                    source: source.unwrap_or_default(),
                    correlation_id,
                    user_id,
                }),
            },
            options: PublishOptions { priority, retry },
        };
        self.client
            .publish(item, now(), wall(unix_ms))
            .map(|t| t as f64)
            .map_err(thrown)
    }

    /// The token provider's answer to `FetchToken`: a token, or an error message.
    #[wasm_bindgen(js_name = handleToken)]
    pub fn handle_token(&mut self, token: Option<String>, error: Option<String>) {
        let result = token.ok_or_else(|| error.unwrap_or_else(|| "no token".into()));
        self.client.handle_token(result, now());
    }

    /// The answer to batch `batch`: its status, the rate-limit headers as
    /// `name\nvalue\n…`, the body, and the wall clock (`Date.now()`, for HTTP-dates in
    /// `Retry-After`).
    #[wasm_bindgen(js_name = handleResponse)]
    pub fn handle_response(
        &mut self,
        batch: f64,
        status: u16,
        headers: &str,
        body: String,
        unix_ms: f64,
    ) {
        let mut it = headers.split('\n');
        let mut pairs = Vec::new();
        while let (Some(n), Some(v)) = (it.next(), it.next()) {
            pairs.push((n.to_owned(), v.to_owned()));
        }
        let result = TransportResult::Http {
            status,
            headers: pairs,
            body,
        };
        self.client
            .handle_response(BatchId(batch as u64), result, now(), wall(unix_ms));
    }

    /// Batch `batch` got no answer (network error, timeout): `message` says why.
    #[wasm_bindgen(js_name = handleFailed)]
    pub fn handle_failed(&mut self, batch: f64, message: String) {
        self.client.handle_response(
            BatchId(batch as u64),
            TransportResult::Failed(message),
            now(),
            UNIX_EPOCH,
        );
    }

    /// True once every accepted event is acknowledged or dead-lettered.
    #[wasm_bindgen(js_name = isFlushed)]
    pub fn is_flushed(&self) -> bool {
        self.client.is_flushed()
    }

    /// Every counter of the core's `ClientStats`, as a JSON object with its field names.
    pub fn stats(&self) -> String {
        stats_json(&self.client.stats(now()))
    }

    /// The events given up, as JSON: `[{ticket, id, type, channel, error, attempts}]`.
    #[wasm_bindgen(js_name = deadLetters)]
    pub fn dead_letters(&self) -> String {
        let mut out = String::from("[");
        for (i, d) in self.client.dead_letters().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            Obj::new(&mut out)
                .u64("ticket", d.ticket)
                .str("id", &d.event.id)
                .str("type", &d.event.event_type)
                .str("channel", d.event.channel.as_str())
                .raw("error", &error_json(&d.reason))
                .u64("attempts", u64::from(d.attempts))
                .end();
        }
        out.push(']');
        out
    }
}

impl Driver {
    /// Stores `output`'s payload for `arg`/`text`/`token` and returns its kind; `None` for
    /// outputs the host does not act on.
    fn take(&mut self, output: Output) -> Option<OutputKind> {
        let gap = self.last_gap.take();
        let (kind, arg, text) = match output {
            Output::OpenSocket => (OutputKind::OpenSocket, 0, String::new()),
            Output::SendFrame(text) => (OutputKind::SendFrame, 0, text),
            Output::CloseSocket { code, reason } => {
                (OutputKind::CloseSocket, u64::from(code), reason)
            }
            Output::FetchToken { refresh } => {
                (OutputKind::FetchToken, u64::from(refresh), String::new())
            }
            Output::SendBatch { batch, body, token } => {
                self.token = token;
                (OutputKind::SendBatch, batch.0, body)
            }
            Output::Event { listener, delivery } => {
                (OutputKind::Event, listener.0, delivery_json(&delivery))
            }
            Output::State(s) => (OutputKind::State, 0, state_name(s).to_owned()),
            Output::Gap {
                channel,
                last,
                position,
                reason,
                ..
            } => {
                let key = (channel, last, position);
                if gap.as_ref() == Some(&key) {
                    // The same gap for the channel's next listener.
                    self.last_gap = gap;
                    return None;
                }
                let text = gap_json(&key, reason);
                self.last_gap = Some(key);
                (OutputKind::Gap, 0, text)
            }
            Output::SubscriptionFailed {
                listener, error, ..
            } => (
                OutputKind::SubscriptionFailed,
                listener.0,
                error_json(&error),
            ),
            Output::Published { ticket, result } => {
                let mut text = String::new();
                match &result {
                    Ok(r) => Obj::new(&mut text)
                        .with("ok", |out| {
                            Obj::new(out)
                                .str("id", &r.id)
                                .str("channel", &r.channel)
                                .str("epoch", &r.epoch)
                                .u64("offset", r.offset)
                                .bool("duplicate", r.duplicate)
                                .u64("attempts", u64::from(r.attempts))
                                .end();
                        })
                        .end(),
                    Err(e) => Obj::new(&mut text).raw("error", &error_json(e)).end(),
                }
                (OutputKind::Published, ticket, text)
            }
            Output::Error(e) => (OutputKind::Error, 0, error_json(&e)),
            // `Subscribed` and any later addition: nothing for this host to do.
            _ => return None,
        };
        self.arg = arg as f64;
        self.text = text;
        Some(kind)
    }
}

/// `{"channel","last","position","reason"}` (`last` may be `null`).
fn gap_json((channel, last, position): &GapKey, reason: GapReason) -> String {
    let reason = match reason {
        GapReason::HistoryUnavailable => "history_unavailable",
        GapReason::EpochChanged => "epoch_changed",
        GapReason::OffsetSkipped => "offset_skipped",
    };
    let mut out = String::new();
    Obj::new(&mut out)
        .str("channel", channel.as_str())
        .with("last", |out| match last {
            Some(p) => write_position(out, p),
            None => out.push_str("null"),
        })
        .with("position", |out| write_position(out, position))
        .str("reason", reason)
        .end();
    out
}
