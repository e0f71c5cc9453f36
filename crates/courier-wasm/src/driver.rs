//! The driver: one [`courier_core::client::Client`] with its I/O, behind one JavaScript object.
//!
//! Every decision is the core client's (the token, stamping, endpoints, connecting on the
//! first subscription, listeners, reconnect, resume, gaps, Retry-After, the publish queue,
//! close). This module moves bytes and time for it, as the tokio driver does natively:
//! - the WebSocket through `web-sys` (`WebSocket`, `MessageEvent`, `CloseEvent`), made with the
//!   constructor the facade passes in (the browser's, Node 22's, or the `ws` package's);
//! - publishing through `fetch` with `web-sys` `RequestInit`/`Headers`/`Response` and
//!   `wasm-bindgen-futures` (publish build only);
//! - the core's one timer through `gloo-timers` (re-armed after every input at
//!   [`Client::poll_timeout`]; dropped, hence cleared, when nothing is timed, so a closed
//!   client keeps no Node process alive);
//! - results, errors, stats, gaps and dead letters handed to JavaScript as typed objects
//!   through `serde-wasm-bindgen`.
//!
//! # The hot path
//!
//! An event frame is parsed once, by the engine's own `JSON.parse`, in the host's
//! `readEvent`, which checks the shape the core's decision needs and answers with the
//! position as one number (the channel and epoch cross only when they differ from the last
//! event's). Only that position goes into the core ([`Client::handle_event_position`]);
//! the parsed event object itself goes to the handlers (`deliverEvent`), with `epoch` and
//! `offset` set on it: three boundary calls per event. Any other frame, and an event frame
//! that does not have that shape, goes to the core whole ([`Client::handle_frame`]), which
//! decodes, checks and reports it.
//!
//! # Re-entrancy
//!
//! Handlers run inside this driver's callbacks and may call back into the client (publish
//! from a handler, unsubscribe in one). So no `RefCell` borrow is ever held while JavaScript
//! user code runs: outputs are taken one at a time ([`pump`]) and acted on after the borrow
//! ends, and every exported method takes `&self`.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use courier_core::client::{Client, ClientConfig, ClientStats, Endpoints, Output};
use courier_core::connection::{GapReason, State};
use courier_core::time::{Instant, as_millis_u64};
use courier_core::{ChannelName, Delivery, Error, StreamPosition};
use gloo_timers::callback::Timeout;
use js_sys::{Array, Function, Promise, Reflect};
use serde::Serialize;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{CloseEvent, MessageEvent, WebSocket};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** What the facade gives the driver: where its results go, and the token. Never throws. */
export interface CoreHost {
  onEvent(listener: number, event: object): void;
  /**
   * The hot path: `JSON.parse` of `data` when it is a string of at most `maxLength` units
   * holding an event frame (`op` "event", string `epoch` and `event.channel`, a whole
   * `offset` from 0 to 2^51); the event is kept with `epoch` and `offset` set on it, for
   * `deliverEvent`. Returns `offset * 4 + changed` (bit 0: the channel differs from the
   * last event's, bit 1: the epoch does; read them with `eventChannel`/`eventEpoch`), or -1
   * for anything else (the driver hands that to the core whole).
   */
  readEvent(data: unknown, maxLength: number): number;
  eventChannel(): string;
  eventEpoch(): string;
  /** Hands the event `readEvent` kept to `listener`. */
  deliverEvent(listener: number): void;
  onState(state: "disconnected" | "connecting" | "connected" | "closed"): void;
  onGap(gap: object): void;
  onSubscribed(listener: number, position: { epoch: string; offset: number }): void;
  onSubscriptionFailed(listener: number, error: object): void;
  onError(error: object): void;
  onPublished(ticket: number, ok: object | undefined, error: object | undefined): void;
  onFlushed(): void;
  /** The token (the facade turns the user's provider into a promise of a string). */
  token(): Promise<string>;
}

/** The options the facade has checked, flat. */
export interface CoreOptions {
  url: string;
  httpUrl?: string;
  serviceName?: string;
  clientName: string;
  WebSocket: abstract new (url: string) => object;
  minDelayMs?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  maxQueued?: number;
  maxBatchEvents?: number;
  lingerMs?: number;
  maxAttempts?: number;
  maxInFlight?: number;
  requestTimeoutMs?: number;
}

/** A publish call's options, flat. */
export interface CorePublish {
  priority?: string;
  idempotencyKey?: string;
  retry?: boolean;
  source?: string;
  correlationId?: string;
  userId?: string;
  timestamp?: number;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// See `CoreHost` above.
    #[wasm_bindgen(typescript_type = "CoreHost")]
    pub type Host;
    #[wasm_bindgen(method, js_name = onEvent)]
    fn on_event(this: &Host, listener: f64, event: &JsValue);
    #[wasm_bindgen(method, js_name = readEvent)]
    fn read_event(this: &Host, data: &JsValue, max_length: u32) -> f64;
    #[wasm_bindgen(method, js_name = eventChannel)]
    fn event_channel(this: &Host) -> String;
    #[wasm_bindgen(method, js_name = eventEpoch)]
    fn event_epoch(this: &Host) -> String;
    #[wasm_bindgen(method, js_name = deliverEvent)]
    fn deliver_event(this: &Host, listener: f64);
    #[wasm_bindgen(method, js_name = onState)]
    fn on_state(this: &Host, state: &str);
    #[wasm_bindgen(method, js_name = onGap)]
    fn on_gap(this: &Host, gap: &JsValue);
    #[wasm_bindgen(method, js_name = onSubscribed)]
    fn on_subscribed(this: &Host, listener: f64, position: &JsValue);
    #[wasm_bindgen(method, js_name = onSubscriptionFailed)]
    fn on_subscription_failed(this: &Host, listener: f64, error: &JsValue);
    #[wasm_bindgen(method, js_name = onError)]
    fn on_error(this: &Host, error: &JsValue);
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, js_name = onPublished)]
    fn on_published(this: &Host, ticket: f64, ok: &JsValue, error: &JsValue);
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, js_name = onFlushed)]
    fn on_flushed(this: &Host);
    #[wasm_bindgen(method)]
    fn token(this: &Host) -> Promise;

    /// See `CoreOptions` above.
    #[wasm_bindgen(typescript_type = "CoreOptions")]
    pub type Options;
    #[wasm_bindgen(method, getter)]
    fn url(this: &Options) -> String;
    #[wasm_bindgen(method, getter, js_name = httpUrl)]
    fn http_url(this: &Options) -> Option<String>;
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, getter, js_name = serviceName)]
    fn service_name(this: &Options) -> Option<String>;
    #[wasm_bindgen(method, getter, js_name = clientName)]
    fn client_name(this: &Options) -> String;
    #[wasm_bindgen(method, getter, js_name = WebSocket)]
    fn web_socket(this: &Options) -> JsValue;
    #[wasm_bindgen(method, getter, js_name = minDelayMs)]
    fn min_delay_ms(this: &Options) -> Option<f64>;
    #[wasm_bindgen(method, getter, js_name = baseDelayMs)]
    fn base_delay_ms(this: &Options) -> Option<f64>;
    #[wasm_bindgen(method, getter, js_name = maxDelayMs)]
    fn max_delay_ms(this: &Options) -> Option<f64>;
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, getter, js_name = maxQueued)]
    fn max_queued(this: &Options) -> Option<f64>;
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, getter, js_name = maxBatchEvents)]
    fn max_batch_events(this: &Options) -> Option<f64>;
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, getter, js_name = lingerMs)]
    fn linger_ms(this: &Options) -> Option<f64>;
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, getter, js_name = maxAttempts)]
    fn max_attempts(this: &Options) -> Option<f64>;
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, getter, js_name = maxInFlight)]
    fn max_in_flight(this: &Options) -> Option<f64>;
    #[cfg(feature = "publish")]
    #[wasm_bindgen(method, getter, js_name = requestTimeoutMs)]
    fn request_timeout_ms(this: &Options) -> Option<f64>;

    /// An event object for handlers (one the core decoded: see `delivery_object`).
    type EventObject;
    #[wasm_bindgen(method, setter = epoch)]
    fn set_epoch(this: &EventObject, epoch: &JsValue);
    #[wasm_bindgen(method, setter = offset)]
    fn set_offset(this: &EventObject, offset: &JsValue);
}

fn now() -> Instant {
    Instant::now()
}

/// A non-negative whole number from JavaScript (the facade checked the type).
fn whole(v: Option<f64>) -> Option<u64> {
    v.filter(|v| v.is_finite() && *v >= 0.0).map(|v| v as u64)
}

/// The error as JavaScript sees it: the facade turns it into a `CourierError` subclass.
#[derive(Serialize)]
struct ErrorJs<'a> {
    code: &'a str,
    category: &'a str,
    retryable: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_type: Option<&'a str>,
}

fn error_js(e: &Error) -> ErrorJs<'_> {
    let mut out = ErrorJs {
        code: e.code(),
        category: e.category().as_str(),
        retryable: e.is_retryable(),
        message: String::new(),
        retry_after_ms: None,
        field: None,
        status: None,
        limit_type: None,
    };
    match e {
        // The server's own message, without the code prefix `Display` adds.
        Error::Refused(r) => {
            out.message.clone_from(&r.message);
            out.retry_after_ms = r.retry_after.map(as_millis_u64);
            out.field = r.field.as_deref();
            out.status = r.status;
            out.limit_type = r.limit_type.as_deref();
        }
        Error::Invalid(v) => {
            out.message.clone_from(&v.message);
            out.field = Some(&v.field);
        }
        other => out.message = other.to_string(),
    }
    out
}

/// Any serialisable value as a JavaScript value (plain objects and numbers).
fn js(value: &impl Serialize) -> JsValue {
    value
        .serialize(&serde_wasm_bindgen::Serializer::new())
        .unwrap_or(JsValue::UNDEFINED)
}

/// A core error, thrown to JavaScript as an error object.
pub(crate) fn thrown(e: impl Into<Error>) -> JsValue {
    js(&error_js(&e.into()))
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Disconnected => "disconnected",
        State::Connecting => "connecting",
        State::Connected => "connected",
        State::Closed => "closed",
    }
}

/// A gap as the facade reports it (once per client, not per listener).
#[derive(Serialize, PartialEq)]
struct GapJs {
    channel: ChannelName,
    last: Option<StreamPosition>,
    position: StreamPosition,
    reason: &'static str,
}

/// What a thrown JavaScript value says, with its `cause` (Node's `fetch failed` names the
/// socket error only there).
fn describe(e: &JsValue) -> String {
    let Some(error) = e.dyn_ref::<js_sys::Error>() else {
        return e.as_string().unwrap_or_else(|| "unknown error".into());
    };
    let message = String::from(error.message());
    match Reflect::get(e, &JsValue::from_str("cause")) {
        Ok(cause) if !cause.is_undefined() => format!("{message} ({})", describe(&cause)),
        _ => message,
    }
}

/// The socket of the current attempt and its callbacks (dropping them detaches nothing by
/// itself: [`detach`] clears the handlers first).
struct Socket {
    ws: WebSocket,
    _callbacks: [Closure<dyn FnMut(JsValue)>; 3],
}

thread_local! {
    /// The `onerror` of every socket, never dropped: a detached socket keeps it (Node's `ws`
    /// throws on an error event nobody listens to, e.g. one closed while connecting), so it
    /// must outlive the socket's other callbacks, which go with the socket.
    static IGNORE_ERROR: Closure<dyn FnMut(JsValue)> = Closure::new(|_: JsValue| {});
}

struct Inner {
    host: Host,
    ctor: Function,
    ws_url: String,
    #[cfg(feature = "publish")]
    publish_url: String,
    #[cfg(feature = "publish")]
    request_timeout_ms: u32,
    /// Longest frame (UTF-16 units) taken on the hot path; longer ones go to the core whole,
    /// which checks the byte limit.
    max_frame_units: u32,
    st: RefCell<St>,
}

struct St {
    client: Client,
    socket: Option<Socket>,
    /// Bumped for every socket: callbacks of an older one are ignored.
    generation: u32,
    /// The armed timer and when it fires.
    timer: Option<(Timeout, Instant)>,
    /// `flush()` waits: call `onFlushed` once everything is acknowledged or dead.
    #[cfg(feature = "publish")]
    flush_wanted: bool,
    /// The gap last reported: the core reports a gap per listener, the facade per client.
    last_gap: Option<GapJs>,
    /// The hot path's last channel and epoch (the host says when they change).
    last_channel: String,
    last_epoch: String,
}

/// Drives one core client with its I/O; created and owned by the TypeScript facade.
#[wasm_bindgen]
pub struct CoreClient {
    inner: Rc<Inner>,
}

/// The WebSocket URL and (publish build) the URL batches are posted to, for `url` (and
/// `httpUrl`), as the core derives them; throws a core error for a URL it refuses.
#[cfg_attr(
    feature = "publish",
    wasm_bindgen(unchecked_return_type = "{ wsUrl: string; publishUrl: string }")
)]
#[cfg_attr(
    not(feature = "publish"),
    wasm_bindgen(unchecked_return_type = "{ wsUrl: string }")
)]
pub fn endpoints(url: &str, http_url: Option<String>) -> Result<JsValue, JsValue> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Urls {
        ws_url: String,
        #[cfg(feature = "publish")]
        publish_url: String,
    }
    let e = parse_endpoints(url, http_url)?;
    Ok(js(&Urls {
        #[cfg(feature = "publish")]
        publish_url: e.publish_batch_url(),
        ws_url: e.ws_url,
    }))
}

pub(crate) fn parse_endpoints(url: &str, http_url: Option<String>) -> Result<Endpoints, JsValue> {
    match http_url {
        Some(http) => Endpoints::with_http_base(url, &http),
        None => Endpoints::parse(url),
    }
    .map_err(thrown)
}

#[wasm_bindgen]
impl CoreClient {
    /// A client that does nothing until a subscription, `connect()` or `publish()`. Throws a
    /// core error for a URL the core refuses.
    #[wasm_bindgen(constructor)]
    pub fn new(
        options: &Options,
        host: Host,
        seed_hi: u32,
        seed_lo: u32,
    ) -> Result<CoreClient, JsValue> {
        let endpoints = parse_endpoints(&options.url(), options.http_url())?;
        let ctor: Function = options
            .web_socket()
            .dyn_into()
            .map_err(|_| JsValue::from_str("WebSocket must be a constructor"))?;
        let mut config = ClientConfig {
            #[cfg(feature = "publish")]
            service_name: options.service_name().unwrap_or_default(),
            // Callback host: handlers run as events arrive, nothing is left unread.
            subscription_buffer: None,
            ..ClientConfig::default()
        };
        config.connection.client_name = options.client_name();
        let b = &mut config.connection.backoff;
        b.min_delay_ms = whole(options.min_delay_ms()).unwrap_or(b.min_delay_ms);
        b.base_delay_ms = whole(options.base_delay_ms()).unwrap_or(b.base_delay_ms);
        b.max_delay_ms = whole(options.max_delay_ms()).unwrap_or(b.max_delay_ms);
        #[cfg(feature = "publish")]
        {
            let q = &mut config.queue;
            let size = |v: Option<f64>, d: usize| whole(v).map_or(d, |v| v as usize);
            q.max_queued = size(options.max_queued(), q.max_queued);
            q.max_batch_events = size(options.max_batch_events(), q.max_batch_events);
            q.linger_ms = whole(options.linger_ms()).unwrap_or(q.linger_ms);
            q.max_attempts = whole(options.max_attempts())
                .map_or(q.max_attempts, |v| v.min(u64::from(u32::MAX)) as u32);
            q.max_in_flight = size(options.max_in_flight(), q.max_in_flight);
        }
        let max_frame_units = u32::try_from(config.connection.max_frame_bytes).unwrap_or(u32::MAX);
        let seed = (u64::from(seed_hi) << 32) | u64::from(seed_lo);
        Ok(CoreClient {
            inner: Rc::new(Inner {
                host,
                ctor,
                #[cfg(feature = "publish")]
                publish_url: endpoints.publish_batch_url(),
                #[cfg(feature = "publish")]
                request_timeout_ms: whole(options.request_timeout_ms())
                    .map_or(30_000, |v| v.min(u64::from(u32::MAX)) as u32),
                ws_url: endpoints.ws_url,
                max_frame_units,
                st: RefCell::new(St {
                    client: Client::new(config, seed, now()),
                    socket: None,
                    generation: 0,
                    timer: None,
                    #[cfg(feature = "publish")]
                    flush_wanted: false,
                    last_gap: None,
                    last_channel: String::new(),
                    last_epoch: String::new(),
                }),
            }),
        })
    }

    /// The connection's state.
    #[wasm_bindgen(
        unchecked_return_type = "\"disconnected\" | \"connecting\" | \"connected\" | \"closed\""
    )]
    pub fn state(&self) -> String {
        state_name(self.inner.st.borrow().client.state()).into()
    }

    /// Opens the WebSocket early (a subscription opens it anyway); the core reconnects until
    /// `close()`. Harmless when open.
    pub fn connect(&self) {
        self.inner.st.borrow_mut().client.connect(now());
        pump(&self.inner);
    }

    /// Closes the socket at once and refuses new work; what is queued still drains. Once
    /// drained nothing stays armed: no socket, no timer, no request.
    pub fn close(&self) {
        self.inner.st.borrow_mut().client.close(now());
        pump(&self.inner);
    }

    /// Adds a listener on `channel` (connecting if needed), resuming after (`since_epoch`,
    /// `since_offset`) if given; returns the listener id `onEvent` is called with. Throws a
    /// core error: an invalid channel, `CLOSED`, or `ALREADY_SUBSCRIBED` for a `since` other
    /// than the channel's current position.
    pub fn subscribe(
        &self,
        channel: &str,
        since_epoch: Option<String>,
        since_offset: Option<f64>,
    ) -> Result<f64, JsValue> {
        let since = since_epoch.map(|epoch| StreamPosition {
            epoch,
            offset: whole(since_offset).unwrap_or(0),
        });
        let listener = self
            .inner
            .st
            .borrow_mut()
            .client
            .subscribe(channel, since, now())
            .map_err(thrown)?;
        pump(&self.inner);
        Ok(listener.0 as f64)
    }

    /// Removes a listener (the channel's server subscription ends with its last one);
    /// returns whether it existed.
    pub fn unsubscribe(&self, listener: f64) -> bool {
        let id = courier_core::client::ListenerId(whole(Some(listener)).unwrap_or(0));
        let existed = self.inner.st.borrow_mut().client.unsubscribe(id, now());
        pump(&self.inner);
        existed
    }

    /// Where `channel`'s delivery stands.
    #[wasm_bindgen(unchecked_return_type = "{ epoch: string; offset: number } | undefined")]
    pub fn position(&self, channel: &str) -> JsValue {
        let Ok(channel) = ChannelName::new(channel) else {
            return JsValue::UNDEFINED;
        };
        match self.inner.st.borrow().client.position(&channel) {
            Some(p) => js(&p),
            None => JsValue::UNDEFINED,
        }
    }

    /// Every counter of the core's `ClientStats`, by its name.
    #[wasm_bindgen(unchecked_return_type = "Record<string, number>")]
    pub fn stats(&self) -> JsValue {
        let stats: ClientStats = self.inner.st.borrow().client.stats(now());
        js(&stats)
    }
}

#[cfg(feature = "publish")]
#[wasm_bindgen]
extern "C" {
    /// See `CorePublish` above.
    #[wasm_bindgen(typescript_type = "CorePublish")]
    pub type PublishArgs;
    #[wasm_bindgen(method, getter)]
    fn priority(this: &PublishArgs) -> Option<String>;
    #[wasm_bindgen(method, getter, js_name = idempotencyKey)]
    fn idempotency_key(this: &PublishArgs) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    fn retry(this: &PublishArgs) -> Option<bool>;
    #[wasm_bindgen(method, getter)]
    fn source(this: &PublishArgs) -> Option<String>;
    #[wasm_bindgen(method, getter, js_name = correlationId)]
    fn correlation_id(this: &PublishArgs) -> Option<String>;
    #[wasm_bindgen(method, getter, js_name = userId)]
    fn user_id(this: &PublishArgs) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    fn timestamp(this: &PublishArgs) -> Option<f64>;

    /// `fetch(url, init)` of the global scope (window, worker or Node), looked up at each
    /// call (so a test's or an app's replacement of `globalThis.fetch` is used).
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_with_init(url: &str, init: &web_sys::RequestInit) -> Promise;
}

#[cfg(feature = "publish")]
#[wasm_bindgen]
impl CoreClient {
    /// Stamps and queues an event for `POST /publish/batch`; returns its ticket (the outcome
    /// comes to `onPublished`). Throws a validation or usage error at once. `data_json` is
    /// the event's data as JSON text.
    pub fn publish(
        &self,
        channel: String,
        event_type: String,
        data_json: String,
        args: &PublishArgs,
    ) -> Result<f64, JsValue> {
        use courier_core::Metadata;
        use courier_core::client::{EventOptions, PublishItem};
        use courier_core::queue::{Priority, PublishOptions};
        let priority = match args.priority() {
            Some(p) => p.parse().map_err(thrown)?,
            None => Priority::Normal,
        };
        let item = PublishItem {
            channel,
            event_type,
            data_json,
            event: EventOptions {
                idempotency_key: args.idempotency_key(),
                metadata: Some(Metadata {
                    timestamp: whole(args.timestamp()).unwrap_or(0),
                    source: args.source().unwrap_or_default(),
                    correlation_id: args.correlation_id(),
                    user_id: args.user_id(),
                }),
            },
            options: PublishOptions {
                priority,
                retry: args.retry().unwrap_or(true),
            },
        };
        let ticket = self
            .inner
            .st
            .borrow_mut()
            .client
            .publish(item, now(), wall())
            .map_err(thrown)?;
        pump(&self.inner);
        Ok(ticket as f64)
    }

    /// True when every accepted event is acknowledged or dead-lettered; otherwise `onFlushed`
    /// is called once they are.
    #[wasm_bindgen(js_name = watchFlush)]
    pub fn watch_flush(&self) -> bool {
        let mut st = self.inner.st.borrow_mut();
        let flushed = st.client.is_flushed();
        st.flush_wanted |= !flushed;
        flushed
    }

    /// The events given up so far: `[{ticket, id, type, channel, error, attempts}]`.
    #[wasm_bindgen(
        js_name = deadLetters,
        unchecked_return_type = "Array<{ ticket: number; id: string; type: string; channel: string; error: object; attempts: number }>"
    )]
    pub fn dead_letters(&self) -> JsValue {
        #[derive(Serialize)]
        struct Dead<'a> {
            ticket: u64,
            id: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            channel: &'a str,
            error: ErrorJs<'a>,
            attempts: u32,
        }
        let st = self.inner.st.borrow();
        let list: Vec<Dead<'_>> = st
            .client
            .dead_letters()
            .iter()
            .map(|d| Dead {
                ticket: d.ticket,
                id: &d.event.id,
                event_type: &d.event.event_type,
                channel: d.event.channel.as_str(),
                error: error_js(&d.reason),
                attempts: d.attempts,
            })
            .collect();
        js(&list)
    }
}

/// The wall clock, for HTTP-dates and stamping.
#[cfg(feature = "publish")]
fn wall() -> courier_core::time::SystemTime {
    let ms = js_sys::Date::now();
    courier_core::time::UNIX_EPOCH
        + courier_core::time::Duration::from_millis(whole(Some(ms)).unwrap_or(0))
}

/// Does what the client's outputs say until there are none, then re-arms the timer.
fn pump(this: &Rc<Inner>) {
    loop {
        // The borrow ends before acting: acting may run handlers that call back in.
        let output = this.st.borrow_mut().client.poll(now());
        match output {
            Some(output) => act(this, output),
            None => break,
        }
    }
    arm_timer(this);
    #[cfg(feature = "publish")]
    {
        let flushed = {
            let mut st = this.st.borrow_mut();
            let flushed = st.flush_wanted && st.client.is_flushed();
            st.flush_wanted &= !flushed;
            flushed
        };
        if flushed {
            this.host.on_flushed();
        }
    }
}

fn act(this: &Rc<Inner>, output: Output) {
    let host = &this.host;
    if !matches!(output, Output::Gap { .. }) {
        this.st.borrow_mut().last_gap = None;
    }
    match output {
        Output::OpenSocket => open(this),
        Output::SendFrame(text) => {
            if let Some(s) = &this.st.borrow().socket {
                // A socket that is not open any more says so with its close event.
                let _ = s.ws.send_with_str(&text);
            }
        }
        Output::CloseSocket { code, reason } => {
            let socket = detach(&mut this.st.borrow_mut());
            if let Some(s) = socket
                && s.ws.close_with_code_and_reason(code, &reason).is_err()
            {
                let _ = s.ws.close();
            }
        }
        Output::FetchToken { .. } => fetch_token(this),
        #[cfg(feature = "publish")]
        Output::SendBatch { batch, body, token } => transmit(this, batch, body, token),
        Output::Event { listener, delivery } => {
            host.on_event(listener.0 as f64, &delivery_object(&delivery));
        }
        Output::State(s) => host.on_state(state_name(s)),
        Output::Gap {
            channel,
            last,
            position,
            reason,
            ..
        } => {
            let gap = GapJs {
                channel,
                last,
                position,
                reason: match reason {
                    GapReason::HistoryUnavailable => "history_unavailable",
                    GapReason::EpochChanged => "epoch_changed",
                    GapReason::OffsetSkipped => "offset_skipped",
                },
            };
            let value = {
                let mut st = this.st.borrow_mut();
                if st.last_gap.as_ref() == Some(&gap) {
                    // The same gap for the channel's next listener.
                    return;
                }
                let value = js(&gap);
                st.last_gap = Some(gap);
                value
            };
            host.on_gap(&value);
        }
        Output::Subscribed {
            listener, position, ..
        } => host.on_subscribed(listener.0 as f64, &js(&position)),
        Output::SubscriptionFailed {
            listener, error, ..
        } => host.on_subscription_failed(listener.0 as f64, &js(&error_js(&error))),
        #[cfg(feature = "publish")]
        Output::Published { ticket, result } => match &result {
            Ok(r) => host.on_published(ticket as f64, &js(r), &JsValue::UNDEFINED),
            Err(e) => host.on_published(ticket as f64, &JsValue::UNDEFINED, &js(&error_js(e))),
        },
        Output::Error(e) => host.on_error(&js(&error_js(&e))),
        // Any later addition: nothing for this host to do.
        _ => {}
    }
}

/// An event the core decoded (a frame that was not taken on the hot path), as the object
/// handlers get: the event with `epoch` and `offset`.
pub(crate) fn delivery_object(d: &Delivery) -> JsValue {
    let mut text = String::with_capacity(d.event.data.get().len() + 192);
    d.event.write_json(&mut text);
    let Ok(event) = js_sys::JSON::parse(&text) else {
        return JsValue::UNDEFINED;
    };
    let event: EventObject = event.unchecked_into();
    event.set_epoch(&JsValue::from_str(&d.epoch));
    event.set_offset(&JsValue::from_f64(d.offset as f64));
    event.into()
}

/// Clears the current socket's handlers and forgets it.
fn detach(st: &mut St) -> Option<Socket> {
    let s = st.socket.take()?;
    s.ws.set_onopen(None);
    s.ws.set_onmessage(None);
    s.ws.set_onclose(None);
    // `onerror` stays (`IGNORE_ERROR`, which outlives the socket): Node's `ws` throws on an
    // error event nobody listens to.
    Some(s)
}

fn open(this: &Rc<Inner>) {
    let generation = {
        let mut st = this.st.borrow_mut();
        if let Some(old) = detach(&mut st) {
            let _ = old.ws.close();
        }
        st.generation = st.generation.wrapping_add(1);
        st.generation
    };
    let args = Array::of1(&JsValue::from_str(&this.ws_url));
    let ws: WebSocket = match Reflect::construct(&this.ctor, &args) {
        Ok(ws) => ws.unchecked_into(),
        Err(e) => {
            let reason = format!("cannot open WebSocket: {}", describe(&e));
            this.st
                .borrow_mut()
                .client
                .handle_socket_closed(None, &reason, now());
            return;
        }
    };
    let callback = |f: fn(&Rc<Inner>, JsValue)| {
        let weak: Weak<Inner> = Rc::downgrade(this);
        Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            if let Some(this) = weak.upgrade()
                && this.st.borrow().generation == generation
            {
                f(&this, e);
            }
        })
    };
    let callbacks = [callback(on_open), callback(on_message), callback(on_close)];
    ws.set_onopen(Some(callbacks[0].as_ref().unchecked_ref()));
    ws.set_onmessage(Some(callbacks[1].as_ref().unchecked_ref()));
    ws.set_onclose(Some(callbacks[2].as_ref().unchecked_ref()));
    IGNORE_ERROR.with(|f| ws.set_onerror(Some(f.as_ref().unchecked_ref())));
    this.st.borrow_mut().socket = Some(Socket {
        ws,
        _callbacks: callbacks,
    });
}

fn on_open(this: &Rc<Inner>, _: JsValue) {
    this.st.borrow_mut().client.handle_socket_open(now());
    pump(this);
}

fn on_close(this: &Rc<Inner>, e: JsValue) {
    let e: CloseEvent = e.unchecked_into();
    let reason = e.reason();
    {
        let mut st = this.st.borrow_mut();
        drop(detach(&mut st));
        st.client
            .handle_socket_closed(Some(e.code()), &reason, now());
    }
    pump(this);
}

fn on_message(this: &Rc<Inner>, e: JsValue) {
    let data = e.unchecked_into::<MessageEvent>().data();
    if !hot_path(this, &data) {
        // Protocol v1 is text only: a binary frame is the peer speaking something else.
        let text = data.as_string().unwrap_or_else(|| "binary frame".into());
        this.st.borrow_mut().client.handle_frame(&text, now());
        pump(this);
    }
}

/// An event frame parsed by the host's `JSON.parse` (`readEvent`), its position decided on
/// by the core and the parsed event handed to the listeners (`deliverEvent`): three calls
/// across the boundary per event. False when the frame is not one (the caller hands it to
/// the core whole).
fn hot_path(this: &Rc<Inner>, data: &JsValue) -> bool {
    let code = this.host.read_event(data, this.max_frame_units);
    if code < 0.0 {
        return false;
    }
    let changed = (code % 4.0) as u8;
    let offset = (code / 4.0).floor() as u64;
    let now = now();
    let (listeners, more) = {
        let mut st = this.st.borrow_mut();
        let st = &mut *st;
        // The channel and epoch are the last event's almost always: copied only on a change.
        if changed & 1 != 0 {
            st.last_channel = this.host.event_channel();
        }
        if changed & 2 != 0 {
            st.last_epoch = this.host.event_epoch();
        }
        let listeners: Listeners = st
            .client
            .handle_event_position(&st.last_channel, &st.last_epoch, offset, now)
            .iter()
            .map(|l| l.0 as f64)
            .collect();
        (listeners, st.client.has_output())
    };
    if more {
        // What the event caused (a gap, a pause) goes out before it.
        pump(this);
    }
    for l in listeners {
        this.host.deliver_event(l);
    }
    true
}

/// The listeners of one event: one, almost always.
type Listeners = Vec<f64>;

fn arm_timer(this: &Rc<Inner>) {
    let mut st = this.st.borrow_mut();
    let Some(at) = st.client.poll_timeout() else {
        // Dropping the timer clears it: nothing keeps a Node process alive.
        st.timer = None;
        return;
    };
    if st.timer.as_ref().is_some_and(|(_, armed)| *armed <= at) {
        // An earlier wake-up is harmless: the core ignores extra `handle_timeout` calls.
        return;
    }
    let wait = at.saturating_duration_since(now());
    let ms = wait.as_millis() as u64 + u64::from(wait.subsec_nanos() % 1_000_000 != 0);
    let weak = Rc::downgrade(this);
    let timeout = Timeout::new(ms.min(u64::from(u32::MAX)) as u32, move || {
        if let Some(this) = weak.upgrade() {
            {
                let mut st = this.st.borrow_mut();
                st.timer = None;
                st.client.handle_timeout(now());
            }
            pump(&this);
        }
    });
    st.timer = Some((timeout, at));
}

fn fetch_token(this: &Rc<Inner>) {
    let promise = this.host.token();
    let weak = Rc::downgrade(this);
    spawn_local(async move {
        let result = match JsFuture::from(promise).await {
            Ok(token) => token
                .as_string()
                .ok_or_else(|| "the token provider returned no string".to_owned()),
            Err(e) => Err(describe(&e)),
        };
        if let Some(this) = weak.upgrade() {
            this.st.borrow_mut().client.handle_token(result, now());
            pump(&this);
        }
    });
}

#[cfg(feature = "publish")]
fn transmit(this: &Rc<Inner>, batch: courier_core::queue::BatchId, body: String, token: String) {
    use courier_core::queue::TransportResult;
    let weak = Rc::downgrade(this);
    let url = this.publish_url.clone();
    let timeout_ms = this.request_timeout_ms;
    spawn_local(async move {
        let result = post(&url, &body, &token, timeout_ms)
            .await
            .unwrap_or_else(|e| TransportResult::Failed(describe(&e)));
        if let Some(this) = weak.upgrade() {
            this.st
                .borrow_mut()
                .client
                .handle_response(batch, result, now(), wall());
            pump(&this);
        }
    });
}

/// One `POST` of a batch body, with its timeout.
#[cfg(feature = "publish")]
async fn post(
    url: &str,
    body: &str,
    token: &str,
    timeout_ms: u32,
) -> Result<courier_core::queue::TransportResult, JsValue> {
    use web_sys::{AbortSignal, Headers, RequestInit, Response};
    let headers = Headers::new()?;
    headers.set("content-type", "application/json")?;
    headers.set("authorization", &format!("Bearer {token}"))?;
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(body));
    init.set_signal(Some(&AbortSignal::timeout_with_u32(timeout_ms)));
    let response: Response = JsFuture::from(fetch_with_init(url, &init))
        .await?
        .unchecked_into();
    let received = response.headers();
    let mut headers = Vec::new();
    for name in courier_core::rate_limit::READ_HEADERS {
        if let Some(value) = received.get(name)? {
            headers.push((name.to_owned(), value));
        }
    }
    let body = JsFuture::from(response.text()?).await?;
    Ok(courier_core::queue::TransportResult::Http {
        status: response.status(),
        headers,
        body: body.as_string().unwrap_or_default(),
    })
}
