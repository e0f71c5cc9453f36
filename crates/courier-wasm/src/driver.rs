//! The driver: a [`Connection`] and a [`PublishQueue`] behind one JavaScript object.
//!
//! The driver never calls JavaScript: the TypeScript layer (`npm/src/client.ts`) owns the
//! WebSocket, `fetch` and the one timer, feeds what happens into the `handle*` methods and
//! then drains [`Driver::poll`] until it returns `undefined`, doing what each output says,
//! and finally re-arms its timer at [`Driver::timeout`] (only when that is earlier than the
//! armed one: an early wake-up is harmless, the core ignores extra `handle_timeout` calls).
//! This is the core's driver contract (see `courier_core::connection`), with the I/O on the
//! JavaScript side of the boundary: no closures, futures or `web-sys` bindings in the WASM.
//!
//! Outputs cross as one string each, tagged by their first character:
//!
//! | tag | meaning | rest |
//! |---|---|---|
//! | `o` | open a new WebSocket and report `handleOpen` / `handleClose` | |
//! | `s` | send this text frame | the frame |
//! | `c` | close the socket and forget it | `code reason` |
//! | `t` | ask the token provider, answer with `tokenResult` | `0`, or `1` if it expired |
//! | `e` | deliver the text frame last passed to `handleText` | |
//! | `b` | `POST` this batch, answer with `handleResponse` / `handleFailed` | `id body` |
//! | `p` | a publish completed | `ticket {"ok": result}` or `ticket {"error": error}` |
//! | `j` | for the application | `{"state"}`, `{"gap"}`, `{"subscription_failed"}`, `{"error"}` |

use std::collections::VecDeque;

use courier_core::connection::{Connection, ConnectionConfig, GapReason, Output, State};
use courier_core::queue::{
    BatchId, Completion, Priority, PublishOptions, PublishQueue, QueueConfig, TransportResult,
};
use courier_core::time::{Duration, Instant, UNIX_EPOCH, as_millis_u64};
use courier_core::{ChannelName, Error, Event, Metadata, StreamPosition, json};
use wasm_bindgen::prelude::*;

/// A tiny JSON writer for the few objects that cross the boundary (no `serde_json::Value`);
/// strings and numbers are written by the core's writer ([`courier_core::json`]).
struct Json(String);

impl Json {
    fn new() -> Self {
        Json(String::from("{"))
    }

    fn key(&mut self, key: &str) -> &mut Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
        self
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        json::push_str(&mut self.0, value);
        self
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    fn num(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.0.push_str(&json::u64_text(value));
        self
    }

    fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.0.push_str(if value { "true" } else { "false" });
        self
    }

    /// A nested object (already closed) or `null`.
    fn raw(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        self.0.push_str(value);
        self
    }

    fn end(&mut self) -> String {
        self.0.push('}');
        std::mem::take(&mut self.0)
    }
}

/// `{"code","category","retryable","message","retry_after_ms"?,"field"?,"status"?,"limit_type"?}`:
/// what the TypeScript layer turns into a `CourierError` subclass (picked by the core's
/// `category`). A refusal's message is the server's own (without the code prefix its
/// `Display` adds).
fn error_json(e: &Error) -> String {
    let mut j = Json::new();
    j.str("code", e.code())
        .str("category", e.category().as_str())
        .bool("retryable", e.is_retryable());
    match e {
        Error::Refused(r) => {
            j.str("message", &r.message);
            if let Some(d) = r.retry_after {
                j.num("retry_after_ms", as_millis_u64(d));
            }
            j.opt_str("field", r.field.as_deref());
            if let Some(s) = r.status {
                j.num("status", u64::from(s));
            }
            j.opt_str("limit_type", r.limit_type.as_deref());
        }
        Error::Invalid(v) => {
            j.str("message", &v.message).str("field", &v.field);
        }
        other => {
            j.str("message", &other.to_string());
        }
    }
    j.end()
}

/// A core error, thrown to JavaScript as its JSON text (`errorFromThrown` in TypeScript).
fn thrown(e: impl Into<Error>) -> JsValue {
    JsValue::from_str(&error_json(&e.into()))
}

fn position_json(p: &StreamPosition) -> String {
    Json::new()
        .str("epoch", &p.epoch)
        .num("offset", p.offset)
        .end()
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Disconnected => "disconnected",
        State::Connecting => "connecting",
        State::Connected => "connected",
        State::Closed => "closed",
    }
}

fn completion_json(c: &Completion) -> String {
    let inner = match &c.result {
        Ok(r) => {
            let ok = Json::new()
                .str("id", &r.id)
                .str("channel", &r.channel)
                .str("epoch", &r.epoch)
                .num("offset", r.offset)
                .bool("duplicate", r.duplicate)
                .num("attempts", u64::from(r.attempts))
                .end();
            Json::new().raw("ok", &ok).end()
        }
        Err(e) => Json::new().raw("error", &error_json(e)).end(),
    };
    format!("p{} {inner}", c.ticket)
}

/// The tagged string for a connection output (see the module docs); `None` for outputs the
/// application does not need (`subscribed`).
fn output_text(o: Output) -> Option<String> {
    let app = match o {
        Output::OpenTransport => return Some("o".into()),
        Output::Send(text) => return Some(format!("s{text}")),
        Output::CloseTransport { code, reason } => return Some(format!("c{code} {reason}")),
        Output::FetchToken { refresh } => return Some(format!("t{}", u8::from(refresh))),
        Output::Event(_) => return Some("e".into()),
        Output::State(s) => Json::new().str("state", state_name(s)).end(),
        Output::Gap {
            channel,
            last,
            position,
            reason,
        } => {
            let reason = match reason {
                GapReason::HistoryUnavailable => "history_unavailable",
                GapReason::EpochChanged => "epoch_changed",
                GapReason::OffsetSkipped => "offset_skipped",
            };
            let last = last.as_ref().map_or_else(|| "null".into(), position_json);
            let gap = Json::new()
                .str("channel", channel.as_str())
                .raw("last", &last)
                .raw("position", &position_json(&position))
                .str("reason", reason)
                .end();
            Json::new().raw("gap", &gap).end()
        }
        Output::SubscriptionFailed { channel, error } => {
            let failed = Json::new()
                .str("channel", channel.as_str())
                .raw("error", &error_json(&error))
                .end();
            Json::new().raw("subscription_failed", &failed).end()
        }
        Output::Error(e) => Json::new().raw("error", &error_json(&e)).end(),
        _ => return None,
    };
    Some(format!("j{app}"))
}

/// Drives one Courier connection and publish queue; created and owned by `CourierClient`.
#[wasm_bindgen]
pub struct Driver {
    conn: Connection,
    queue: PublishQueue,
    /// Connection outputs taken out of the core but not yet handed over.
    held: VecDeque<Output>,
    /// Whether the host holds a token for HTTP publishing (it keeps the text itself).
    has_token: bool,
    /// One token request at a time, for the connection and the queue together.
    token_in_flight: bool,
    /// The first token request for publishing failed: ask again on the next publish.
    token_blocked: bool,
    /// Where the host writes a text frame (UTF-8) for `handleBuffered`; never shrinks.
    inbox: Vec<u8>,
}

fn now() -> Instant {
    Instant::now()
}

fn ms(v: Option<f64>) -> Option<u64> {
    v.filter(|v| v.is_finite() && *v >= 0.0).map(|v| v as u64)
}

#[wasm_bindgen]
impl Driver {
    /// A driver that does nothing until `connect()` or `publish()`. Absent numbers keep the
    /// core's defaults; the TypeScript layer checks them before they get here.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
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
        let mut conn_config = ConnectionConfig {
            client_name,
            ..ConnectionConfig::default()
        };
        let b = &mut conn_config.backoff;
        b.min_delay_ms = ms(min_delay_ms).unwrap_or(b.min_delay_ms);
        b.base_delay_ms = ms(base_delay_ms).unwrap_or(b.base_delay_ms);
        b.max_delay_ms = ms(max_delay_ms).unwrap_or(b.max_delay_ms);
        let mut q = QueueConfig::default();
        q.max_queued = ms(max_queued).map_or(q.max_queued, |v| v as usize);
        q.max_batch_events = ms(max_batch_events).map_or(q.max_batch_events, |v| v as usize);
        q.linger_ms = ms(linger_ms).unwrap_or(q.linger_ms);
        q.max_attempts =
            ms(max_attempts).map_or(q.max_attempts, |v| v.min(u64::from(u32::MAX)) as u32);
        q.max_in_flight = ms(max_in_flight).map_or(q.max_in_flight, |v| v as usize);
        let seed = (u64::from(seed_hi) << 32) | u64::from(seed_lo);
        Driver {
            conn: Connection::new(conn_config, seed),
            queue: PublishQueue::new(q, seed.rotate_left(17) ^ 0xA076_1D64_78BD_642F, now()),
            held: VecDeque::new(),
            has_token: false,
            token_in_flight: false,
            token_blocked: false,
            inbox: Vec::new(),
        }
    }

    /// The next output, tagged (see the module docs), or `undefined` when there is none.
    pub fn poll(&mut self) -> Option<String> {
        loop {
            if let Some(o) = self.held.pop_front().or_else(|| self.conn.poll()) {
                match o {
                    Output::FetchToken { .. } if self.token_in_flight => continue,
                    Output::FetchToken { .. } => self.token_in_flight = true,
                    _ => {}
                }
                match output_text(o) {
                    Some(t) => return Some(t),
                    None => continue,
                }
            }
            if let Some(c) = self.queue.poll_completion() {
                return Some(completion_json(&c));
            }
            if self.queue.poll_token_request() {
                // 401 TOKEN_EXPIRED on a publish: the queue holds its sends until
                // `tokenResult` answers (the host keeps the old token until then).
                if !self.token_in_flight {
                    self.token_in_flight = true;
                    return Some("t1".into());
                }
            }
            if self.queue.is_flushed() {
                return None;
            }
            if !self.has_token {
                if self.token_in_flight || self.token_blocked {
                    return None;
                }
                self.token_in_flight = true;
                return Some("t0".into());
            }
            return self
                .queue
                .poll_transmit(now())
                .map(|b| format!("b{} {}", b.id.0, b.body));
        }
    }

    /// Milliseconds until `handleTimeout` is due (rounded up), or -1 when nothing is timed.
    pub fn timeout(&self) -> f64 {
        let queue = if self.has_token {
            self.queue.poll_timeout()
        } else {
            None
        };
        match [self.conn.poll_timeout(), queue]
            .into_iter()
            .flatten()
            .min()
        {
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
        let t = now();
        self.conn.handle_timeout(t);
        self.queue.handle_timeout(t);
    }

    /// The socket asked for by `o` opened.
    #[wasm_bindgen(js_name = handleOpen)]
    pub fn handle_open(&mut self) {
        self.conn.handle_transport_open(now());
    }

    /// The socket closed or failed to open (`code` absent: no close frame).
    #[wasm_bindgen(js_name = handleClose)]
    pub fn handle_close(&mut self, code: Option<u16>, reason: &str) {
        self.conn.handle_transport_closed(code, reason, now());
    }

    /// The hot path: one text frame from the socket. Returns 0 when there is nothing to do,
    /// 1 when the frame is an event to deliver and nothing else happened (no `poll` needed),
    /// 2 when `poll` has outputs (an event among them comes as `e`).
    #[wasm_bindgen(js_name = handleText)]
    pub fn handle_text(&mut self, text: &str) -> u32 {
        self.conn.handle_text(text, now());
        match self.conn.poll() {
            None => 0,
            Some(first) => {
                let lone_event = matches!(first, Output::Event(_));
                match self.conn.poll() {
                    None if lone_event => 1,
                    next => {
                        self.held.push_back(first);
                        self.held.extend(next);
                        2
                    }
                }
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
    pub fn handle_buffered(&mut self, len: usize) -> u32 {
        let inbox = std::mem::take(&mut self.inbox);
        let r = match inbox.get(..len).map(std::str::from_utf8) {
            Some(Ok(text)) => self.handle_text(text),
            // Not what the host should ever write: treat it as a frame that is not JSON.
            _ => self.handle_text("invalid UTF-8"),
        };
        self.inbox = inbox;
        r
    }

    /// Starts connecting; the core reconnects until `close()`.
    pub fn connect(&mut self) {
        self.conn.connect(now());
    }

    /// Closes the connection for good and stops accepting publishes; what is queued still
    /// drains (await `flush()`).
    pub fn close(&mut self) {
        self.conn.close(now());
        self.queue.close();
    }

    /// `disconnected`, `connecting`, `connected` or `closed`.
    #[wasm_bindgen(
        unchecked_return_type = "\"disconnected\" | \"connecting\" | \"connected\" | \"closed\""
    )]
    pub fn state(&self) -> String {
        state_name(self.conn.state()).into()
    }

    /// Subscribes to `channel`, resuming after (`since_epoch`, `since_offset`) if given.
    /// Throws a core error (as JSON text).
    pub fn subscribe(
        &mut self,
        channel: &str,
        since_epoch: Option<String>,
        since_offset: Option<f64>,
    ) -> Result<(), JsValue> {
        let channel = ChannelName::new(channel).map_err(thrown)?;
        let since = since_epoch.map(|epoch| StreamPosition {
            epoch,
            offset: ms(since_offset).unwrap_or(0),
        });
        self.conn.subscribe(channel, since, now()).map_err(thrown)
    }

    /// Stops receiving `channel`; returns whether it was subscribed.
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        match ChannelName::new(channel) {
            Ok(c) => self.conn.unsubscribe(&c, now()),
            Err(_) => false,
        }
    }

    /// The last position delivered on `channel`, as `{"epoch","offset"}` JSON.
    pub fn position(&self, channel: &str) -> Option<String> {
        let channel = ChannelName::new(channel).ok()?;
        self.conn.position(&channel).map(position_json)
    }

    /// Queues an event for `POST /publish/batch`; returns its ticket (the outcome comes as a
    /// `p` output). Throws a validation or usage error (as JSON text) at once.
    ///
    /// `data_json` is the event's data as JSON text; `unix_ms` the wall clock (`Date.now()`).
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        channel: &str,
        event_type: &str,
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
        let channel = ChannelName::new(channel).map_err(thrown)?;
        let priority = match priority {
            Some(p) => p.parse().map_err(thrown)?,
            None => Priority::Normal,
        };
        let unix_ms = unix_ms as u64;
        let metadata = Metadata {
            timestamp: ms(timestamp).filter(|t| *t != 0).unwrap_or(unix_ms),
            source: source.unwrap_or_default(),
            correlation_id,
            user_id,
        };
        let id = match id {
            Some(id) => id,
            None => self.queue.next_event_id(unix_ms),
        };
        let event =
            Event::from_json_data(id, event_type, channel, data_json, metadata).map_err(thrown)?;
        let ticket = self
            .queue
            .push(event, PublishOptions { priority, retry }, now())
            .map_err(thrown)?;
        self.token_blocked = false;
        Ok(ticket as f64)
    }

    /// The token provider's answer to `t`: a token (the host keeps it for publishing), or
    /// an error message.
    #[wasm_bindgen(js_name = tokenResult)]
    pub fn token_result(&mut self, token: Option<String>, error: Option<String>) {
        self.token_in_flight = false;
        let t = now();
        match token {
            Some(token) => {
                self.has_token = true;
                self.token_blocked = false;
                self.queue.handle_token(Ok(()), t);
                self.conn.handle_token(Ok(token), t);
            }
            None => {
                let message = error.unwrap_or_else(|| "no token".into());
                // A queue waiting after a 401 retries after a backoff (and ends in dead
                // letters if the provider keeps failing); a first request waits for the
                // next publish.
                self.token_blocked = !self.has_token;
                self.queue.handle_token(Err(message.clone()), t);
                self.conn.handle_token(Err(message), t);
            }
        }
    }

    /// The answer to batch `b`: its status, the rate-limit headers as `name\nvalue\n…`,
    /// the body, and the wall clock (`Date.now()`, for HTTP-dates in `Retry-After`).
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
        let wall = UNIX_EPOCH + Duration::from_millis(unix_ms as u64);
        self.queue
            .handle_response(BatchId(batch as u64), result, now(), wall);
    }

    /// Batch `b` got no answer (network error, timeout): `message` says why.
    #[wasm_bindgen(js_name = handleFailed)]
    pub fn handle_failed(&mut self, batch: f64, message: String) {
        self.queue.handle_response(
            BatchId(batch as u64),
            TransportResult::Failed(message),
            now(),
            UNIX_EPOCH,
        );
    }

    /// True once every accepted event is acknowledged or dead-lettered.
    #[wasm_bindgen(js_name = isFlushed)]
    pub fn is_flushed(&self) -> bool {
        self.queue.is_flushed()
    }

    /// Counters: `[reconnects, connection rate-limit waits, events delivered, duplicates
    /// dropped, gaps, queued, in flight, retrying, acknowledged, dead, queue rate-limit
    /// waits, retries]`.
    pub fn stats(&self) -> Vec<f64> {
        let c = self.conn.stats();
        let q = self.queue.stats(now());
        [
            c.reconnects,
            c.rate_limit_waits,
            c.events_delivered,
            c.duplicates_dropped,
            c.gaps,
            (q.queued_high + q.queued_normal + q.queued_low) as u64,
            q.in_flight as u64,
            q.retrying as u64,
            q.acknowledged,
            q.dead,
            q.rate_limit_waits,
            q.retries,
        ]
        .into_iter()
        .map(|n| n as f64)
        .collect()
    }

    /// The events given up, as JSON: `[{ticket, id, type, channel, error, attempts}]`.
    #[wasm_bindgen(js_name = deadLetters)]
    pub fn dead_letters(&self) -> String {
        let mut out = String::from("[");
        for (i, d) in self.queue.dead_letters().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(
                &Json::new()
                    .num("ticket", d.ticket)
                    .str("id", &d.event.id)
                    .str("type", &d.event.event_type)
                    .str("channel", d.event.channel.as_str())
                    .raw("error", &error_json(&d.reason))
                    .num("attempts", u64::from(d.attempts))
                    .end(),
            );
        }
        out.push(']');
        out
    }
}
