//! JSON-in, JSON-out entry points to the core for the shared vectors in `tests/vectors/`.
//!
//! Every SDK runs the same vector files through its own binding: the binding exposes these
//! functions, the host language's test runner reads a case, calls them and compares the
//! answer with the case's expectation. The logic stays here, once; only the comparison is
//! written per language.
//!
//! [`evaluate`] takes one case of one file and returns the same case with every expected
//! field recomputed by the core; a runner asserts that the answer equals the case.

use serde_json::{Value, json};

use crate::backoff::{Backoff, BackoffConfig};
use crate::channel::ChannelName;
use crate::close::classify_close;
use crate::connection::{Connection, ConnectionConfig, Input, Output};
use crate::error::{Error, ErrorCode, FrameError, Refusal, UsageError};
use crate::event::Event;
use crate::event::Metadata;
use crate::frame::{ClientFrame, DEFAULT_MAX_FRAME_BYTES, ServerFrame};
use crate::gcra::Gcra;
use crate::limits::BucketLimiter;
use crate::queue::{
    BatchId, Priority, PublishOptions, PublishQueue, QueueConfig, Ticket, TransportResult,
};
use crate::rate_limit::{RateLimitInfo, parse_bucket_headers, parse_rate_limit_headers};
use crate::retry_after::parse_retry_after;
use crate::time::{Duration, Instant};
use crate::time::{SystemTime, UNIX_EPOCH, as_millis_u64};

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn frame_error_kind(e: &FrameError) -> &'static str {
    match e {
        FrameError::TooLarge { .. } => "too_large",
        FrameError::Malformed(_) => "malformed",
        FrameError::MissingOp => "missing_op",
        FrameError::UnknownOp(_) => "unknown_op",
        FrameError::Invalid { .. } => "invalid",
    }
}

/// A `frames.json` case → `{"ok": frame}` or `{"error": kind}`.
pub fn decode_frame(case: &Value) -> Value {
    let text = text_of(&case["text"]);
    let max = case["max_len"]
        .as_u64()
        .map_or(DEFAULT_MAX_FRAME_BYTES, |m| m as usize);
    let encoded = if case["direction"] == "client" {
        ClientFrame::decode(&text, max).map(|f| f.encode())
    } else {
        ServerFrame::decode(&text, max).map(|f| f.encode())
    };
    match encoded {
        Ok(s) => json!({ "ok": serde_json::from_str::<Value>(&s).unwrap_or(Value::Null) }),
        Err(e) => json!({ "error": frame_error_kind(&e) }),
    }
}

/// An `events.json` case → `"valid"` or `{"field", "kind"}`.
pub fn validate_event(case: &Value) -> Value {
    let max = case["max_payload_bytes"]
        .as_u64()
        .map_or(crate::event::DEFAULT_MAX_PAYLOAD_BYTES, |m| m as usize);
    match serde_json::from_value::<Event>(case["event"].clone()) {
        Err(e) if e.to_string().contains("channel") || !case["event"]["channel"].is_string() => {
            json!({ "field": "channel", "kind": "bad_format" })
        }
        Err(e) => json!({ "field": "event", "kind": "wrong_type", "message": e.to_string() }),
        Ok(event) => match event.validate(max) {
            Ok(()) => json!("valid"),
            Err(e) => json!({ "field": e.field, "kind": e.kind }),
        },
    }
}

/// A `close_codes.json` case → the action's name.
pub fn close_action(case: &Value) -> Value {
    let code = case["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(1006);
    serde_json::to_value(classify_close(code)).unwrap_or(Value::Null)
}

/// The errors that carry the codes no frame or body carries (`Error::code` of the local
/// variants), one per code.
fn local_errors() -> [Error; 6] {
    [
        UsageError::QueueFull { capacity: 1 }.into(),
        UsageError::Closed.into(),
        UsageError::Timeout(Duration::from_secs(1)).into(),
        UsageError::AlreadySubscribed("c".into()).into(),
        FrameError::MissingOp.into(),
        Error::Transport("down".into()),
    ]
}

/// An `errors.json` case (`code`) → `{wire, category, retryable}` as the core decides them;
/// the host-language class names (`python`, `typescript`) are each binding's to check.
pub fn error_class(case: &Value) -> Result<Value, String> {
    let code = case["code"].as_str().ok_or("errors case without code")?;
    let wire = ErrorCode::from_wire(code);
    let error = if wire.as_str() == code {
        Error::Refused(Refusal::new(wire, ""))
    } else {
        local_errors()
            .into_iter()
            .find(|e| e.code() == code)
            .ok_or_else(|| format!("`{code}` is no code of the core"))?
    };
    Ok(json!({
        "wire": matches!(error, Error::Refused(_)),
        "category": error.category().as_str(),
        "retryable": error.is_retryable(),
    }))
}

/// Every code the core reports: the wire codes then the local ones (`errors.json` lists each).
pub fn error_codes() -> Vec<&'static str> {
    ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(local_errors().iter().map(Error::code))
        .collect()
}

/// Replays a `transcripts.json` case step by step on simulated time.
#[derive(Debug)]
pub struct TranscriptRunner {
    connection: Connection,
    start: Instant,
}

impl TranscriptRunner {
    /// A runner for a case's `config` and `seed`; `start` is any instant (times are offsets).
    pub fn new(case: &Value, start: Instant) -> Result<Self, String> {
        let config: ConnectionConfig = serde_json::from_value(case["config"].clone())
            .map_err(|e| format!("bad config: {e}"))?;
        let seed = case["seed"].as_u64().unwrap_or(0);
        Ok(Self {
            connection: Connection::new(config, seed),
            start,
        })
    }

    /// Applies a step (`at_ms`, `input`) → `{"outputs": [...], "next_timeout_ms": n|null}`.
    pub fn step(&mut self, step: &Value) -> Result<Value, String> {
        let now =
            self.start + Duration::from_millis(step["at_ms"].as_u64().ok_or("step without at_ms")?);
        let mut input = step["input"].clone();
        if let Some(text) = input.get_mut("text") {
            *text = Value::String(text_of(text));
        }
        let input: Input = serde_json::from_value(input).map_err(|e| format!("bad input: {e}"))?;
        let mut outputs = Vec::new();
        if let Err(e) = self.connection.handle(input, now) {
            outputs.push(json!({ "rejected": e.code() }));
        }
        while let Some(output) = self.connection.poll() {
            outputs.push(output_json(&output));
        }
        let next = self
            .connection
            .poll_timeout()
            .map(|t| t.saturating_duration_since(self.start).as_millis() as u64);
        Ok(json!({ "outputs": outputs, "next_timeout_ms": next }))
    }
}

fn output_json(output: &Output) -> Value {
    match output {
        Output::Send(text) => {
            json!({ "send": serde_json::from_str::<Value>(text).unwrap_or(Value::Null) })
        }
        other => {
            // Messages are for humans and may be reworded; vectors pin codes and delays.
            let mut v = serde_json::to_value(other).unwrap_or(Value::Null);
            for key in ["error", "subscription_failed"] {
                if let Some(e) = v.get_mut(key) {
                    let target = if key == "error" {
                        Some(e)
                    } else {
                        e.get_mut("error")
                    };
                    if let Some(Value::Object(m)) = target {
                        m.remove("message");
                    }
                }
            }
            v
        }
    }
}

/// Replays a `queue.json` case step by step on simulated time: a publish queue and a
/// driver that sends every batch it is given at once and reports what the case says the
/// server answered.
#[derive(Debug)]
pub struct QueueRunner {
    queue: PublishQueue,
    start: Instant,
    wall_start: SystemTime,
    /// Event ids by ticket, for the completions.
    ids: Vec<(Ticket, String)>,
}

impl QueueRunner {
    /// A runner for a case's `config` (a [`QueueConfig`]) and `seed`; `start` is any
    /// instant (times are offsets), the wall clock starts at `wall_now_unix_ms`.
    pub fn new(case: &Value, start: Instant) -> Result<Self, String> {
        let (config, seed, wall_start) = case_setup::<QueueConfig>(case)?;
        Ok(Self {
            queue: PublishQueue::new(config, seed, start),
            start,
            wall_start,
            ids: Vec::new(),
        })
    }

    /// Applies a step's `input` at `at_ms`, then drains what the queue sends and completes
    /// → `{"sent": [{"batch", "events"}], "completed": [...], "rejected"?: code,
    /// "next_timeout_ms": n|null, "rate_limit_waits": n}`.
    pub fn step(&mut self, step: &Value) -> Result<Value, String> {
        let at = Duration::from_millis(step["at_ms"].as_u64().ok_or("step without at_ms")?);
        let now = self.start + at;
        let mut out = json!({});
        let input = &step["input"];
        if let Some(push) = input.get("push") {
            let id = push["id"].as_str().ok_or("push without id")?.to_owned();
            let channel = ChannelName::new(push["channel"].as_str().unwrap_or("global"))
                .map_err(|e| format!("bad channel: {e}"))?;
            let data = push.get("data").cloned().unwrap_or_else(|| json!({}));
            let event = Event::new(
                id.clone(),
                push["type"].as_str().ok_or("push without type")?,
                channel,
                &data,
                Metadata::default(),
            );
            let options = PublishOptions {
                priority: match push["priority"].as_str() {
                    Some(p) => p.parse().map_err(|e| format!("bad priority: {e}"))?,
                    None => Priority::Normal,
                },
                retry: push["retry"].as_bool().unwrap_or(true),
            };
            match self.queue.push(event, options, now) {
                Ok(ticket) => self.ids.push((ticket, id)),
                Err(e) => out["rejected"] = json!(e.code()),
            }
        } else if let Some(r) = input.get("respond") {
            let batch = BatchId(r["batch"].as_u64().ok_or("respond without batch")?);
            let response = http_answer(r)?;
            self.queue
                .handle_response(batch, response, now, self.wall_start + at);
        } else if input == "timeout" {
            self.queue.handle_timeout(now);
        } else if input == "close" {
            self.queue.close();
        } else {
            return Err(format!("unknown queue input {input}"));
        }
        let mut sent = Vec::new();
        while let Some(b) = self.queue.poll_transmit(now) {
            let body: Value = serde_json::from_str(&b.body).map_err(|e| e.to_string())?;
            let events: Vec<Value> = body["events"]
                .as_array()
                .map(|a| a.iter().map(|e| e["id"].clone()).collect())
                .unwrap_or_default();
            sent.push(json!({ "batch": b.id.0, "events": events }));
        }
        out["sent"] = Value::Array(sent);
        let mut completed = Vec::new();
        while let Some(c) = self.queue.poll_completion() {
            let id = self
                .ids
                .iter()
                .find(|(t, _)| *t == c.ticket)
                .map_or("?", |(_, id)| id.as_str());
            // Messages are for humans: vectors pin codes, statuses and attempts.
            completed.push(match c.result {
                Ok(r) => json!({
                    "id": id,
                    "status": if r.duplicate { "duplicate" } else { "accepted" },
                    "attempts": r.attempts,
                }),
                Err(e) => json!({ "id": id, "error": e.code() }),
            });
        }
        out["completed"] = Value::Array(completed);
        out["next_timeout_ms"] = json!(
            self.queue
                .poll_timeout()
                .map(|t| ceil_ms(t.saturating_duration_since(self.start)))
        );
        out["rate_limit_waits"] = json!(self.queue.stats(now).rate_limit_waits);
        Ok(out)
    }
}

/// Replays a `client.json` case on simulated time: one [`Client`](crate::client::Client),
/// with the case playing the application, the token provider, the socket and the HTTP server.
#[derive(Debug)]
pub struct ClientRunner {
    client: crate::client::Client,
    start: Instant,
    wall_start: SystemTime,
}

impl ClientRunner {
    /// A runner for a case's `config` (a [`ClientConfig`](crate::client::ClientConfig)) and
    /// `seed`; the wall clock starts at `wall_now_unix_ms`.
    pub fn new(case: &Value, start: Instant) -> Result<Self, String> {
        let (config, seed, wall_start) = case_setup::<crate::client::ClientConfig>(case)?;
        Ok(Self {
            client: crate::client::Client::new(config, seed, start),
            start,
            wall_start,
        })
    }

    /// Applies a step's `input` at `at_ms` → `{"outputs": [...], "next_timeout_ms": n|null,
    /// "stats": {...}}` (a command's result, a listener id or a ticket, comes first in
    /// `outputs` as `{"listener": n}` / `{"ticket": n}`, or `{"rejected": code}`).
    pub fn step(&mut self, step: &Value) -> Result<Value, String> {
        use crate::client::{EventOptions, ListenerId, Output as O};
        let at = Duration::from_millis(step["at_ms"].as_u64().ok_or("step without at_ms")?);
        let now = self.start + at;
        let wall = self.wall_start + at;
        let input = &step["input"];
        let mut outputs = Vec::new();
        let c = &mut self.client;
        if let Some(sub) = input.get("subscribe") {
            let since = match sub.get("since") {
                Some(s) => Some(serde_json::from_value(s.clone()).map_err(|e| e.to_string())?),
                None => None,
            };
            match c.subscribe(sub["channel"].as_str().unwrap_or(""), since, now) {
                Ok(l) => outputs.push(json!({ "listener": l.0 })),
                Err(e) => outputs.push(json!({ "rejected": e.code() })),
            }
        } else if let Some(l) = input.get("unsubscribe") {
            let existed = c.unsubscribe(ListenerId(l.as_u64().unwrap_or(0)), now);
            outputs.push(json!({ "unsubscribed": existed }));
        } else if let Some(r) = input.get("consumed") {
            let listener = ListenerId(r["listener"].as_u64().unwrap_or(0));
            let count = r["count"].as_u64().unwrap_or(0) as usize;
            c.handle_consumed(listener, count, now);
        } else if let Some(p) = input.get("publish") {
            let data = p.get("data").cloned().unwrap_or_else(|| json!({}));
            let metadata = match p.get("metadata") {
                Some(m) => Some(serde_json::from_value(m.clone()).map_err(|e| e.to_string())?),
                None => None,
            };
            let options = EventOptions {
                idempotency_key: p["id"].as_str().map(str::to_owned),
                metadata,
            };
            let item = crate::client::PublishItem {
                channel: p["channel"].as_str().unwrap_or("").to_owned(),
                event_type: p["type"].as_str().unwrap_or("").to_owned(),
                data_json: data.to_string(),
                event: options,
                options: PublishOptions::default(),
            };
            match c.publish(item, now, wall) {
                Ok(t) => outputs.push(json!({ "ticket": t })),
                Err(e) => outputs.push(json!({ "rejected": e.code(), "field": field_of(&e) })),
            }
        } else if let Some(t) = input.get("token") {
            c.handle_token(Ok(text_of(t)), now);
        } else if let Some(m) = input.get("token_error") {
            c.handle_token(Err(text_of(m)), now);
        } else if let Some(f) = input.get("frame") {
            c.handle_frame(&text_of(f), now);
        } else if let Some(s) = input.get("socket_closed") {
            let code = s["code"].as_u64().and_then(|c| u16::try_from(c).ok());
            c.handle_socket_closed(code, s["reason"].as_str().unwrap_or(""), now);
        } else if let Some(r) = input.get("respond") {
            let batch = BatchId(r["batch"].as_u64().ok_or("respond without batch")?);
            c.handle_response(batch, http_answer(r)?, now, wall);
        } else {
            match input.as_str() {
                Some("connect") => c.connect(now),
                Some("close") => c.close(now),
                Some("timeout") => c.handle_timeout(now),
                Some("socket_open") => c.handle_socket_open(now),
                _ => return Err(format!("unknown client input {input}")),
            }
        }
        while let Some(o) = c.poll(now) {
            outputs.push(match o {
                O::FetchToken { refresh } => json!({ "fetch_token": { "refresh": refresh } }),
                O::OpenSocket => json!("open_socket"),
                O::SendFrame(text) => {
                    json!({ "send": serde_json::from_str::<Value>(&text).unwrap_or(Value::Null) })
                }
                O::CloseSocket { code, reason } => {
                    json!({ "close_socket": { "code": code, "reason": reason } })
                }
                O::SendBatch { batch, body, token } => {
                    let body: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                    let events: Vec<Value> = body["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            json!({
                                "id": e["id"], "channel": e["channel"], "type": e["type"],
                                "source": e["metadata"]["source"],
                                "timestamp": e["metadata"]["timestamp"],
                            })
                        })
                        .collect();
                    json!({ "send_batch": { "batch": batch.0, "token": token, "events": events } })
                }
                O::State(s) => json!({ "state": s }),
                O::Subscribed { listener, channel, recovered, position } => json!({
                    "subscribed": { "listener": listener.0, "channel": channel, "recovered": recovered, "position": position }
                }),
                O::Event { listener, delivery } => json!({
                    "event": { "listener": listener.0, "channel": delivery.event.channel,
                               "epoch": delivery.epoch, "offset": delivery.offset, "id": delivery.event.id }
                }),
                O::Gap { listener, channel, last, position, reason } => json!({
                    "gap": { "listener": listener.0, "channel": channel, "last": last, "position": position, "reason": reason }
                }),
                O::SubscriptionFailed { listener, channel, error } => json!({
                    "subscription_failed": { "listener": listener.0, "channel": channel, "error": error.code() }
                }),
                O::Published { ticket, result } => match result {
                    Ok(r) => json!({ "published": { "ticket": ticket, "offset": r.offset, "duplicate": r.duplicate, "attempts": r.attempts } }),
                    Err(e) => json!({ "published": { "ticket": ticket, "error": e.code() } }),
                },
                O::Error(e) => json!({ "error": e.code() }),
            });
        }
        let next = c
            .poll_timeout()
            .map(|t| ceil_ms(t.saturating_duration_since(self.start)));
        let stats = serde_json::to_value(c.stats(now)).map_err(|e| e.to_string())?;
        Ok(json!({ "outputs": outputs, "next_timeout_ms": next, "stats": stats }))
    }
}

fn field_of(e: &Error) -> Value {
    match e {
        Error::Invalid(v) => json!(v.field),
        _ => Value::Null,
    }
}

/// A scripted HTTP answer of a vector step: `failed`, or `status`, `headers` and
/// `results` / `error` / `body`.
fn http_answer(r: &Value) -> Result<TransportResult, String> {
    Ok(match r.get("failed") {
        Some(message) => TransportResult::Failed(text_of(message)),
        None => TransportResult::Http {
            status: r["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(200),
            headers: serde_json::from_value(r.get("headers").cloned().unwrap_or_else(|| json!([])))
                .map_err(|e| format!("bad headers: {e}"))?,
            body: match (r.get("results"), r.get("error")) {
                (Some(results), _) => json!({ "results": results }).to_string(),
                (None, Some(error)) => json!({ "error": error }).to_string(),
                (None, None) => text_of(r.get("body").unwrap_or(&json!(""))),
            },
        },
    })
}

/// The vector files [`evaluate`] understands, by file stem.
pub const VECTOR_FILES: &[&str] = &[
    "backoff",
    "client",
    "close_codes",
    "endpoints",
    "errors",
    "events",
    "frames",
    "gcra",
    "queue",
    "rate_limit_buckets",
    "rate_limit_headers",
    "retry_after",
    "transcripts",
];

/// Recomputes every expectation of `case` from `tests/vectors/{file}.json` with the core.
/// `origin` is any instant: vector times are offsets from it.
pub fn evaluate(file: &str, case: &Value, origin: Instant) -> Result<Value, String> {
    let mut out = case.clone();
    match file {
        "frames" => out["expect"] = decode_frame(case),
        "events" => {
            let mut v = validate_event(case);
            if let Some(m) = v.as_object_mut() {
                m.remove("message");
            }
            out["expect"] = v;
        }
        "close_codes" => out["action"] = close_action(case),
        "endpoints" => {
            let url = case["url"].as_str().ok_or("endpoints case without url")?;
            out["expect"] = match crate::client::Endpoints::parse(url) {
                Ok(e) => json!({ "ws_url": e.ws_url, "http_base": e.http_base }),
                Err(e) => json!({ "error": field_of(&e) }),
            };
        }
        "errors" => {
            let got = error_class(case)?;
            for key in ["wire", "category", "retryable"] {
                out[key] = got[key].clone();
            }
        }
        "retry_after" => {
            let value = case["value"]
                .as_str()
                .ok_or("retry_after case without value")?;
            let got = parse_retry_after(
                value,
                wall(&case["wall_now_unix_ms"]),
                ms_field(&case["cap_ms"]),
            );
            out["delay_ms"] = json!(got.map(as_millis_u64));
        }
        "rate_limit_headers" => {
            let headers: Vec<(String, String)> = serde_json::from_value(case["headers"].clone())
                .map_err(|e| format!("bad headers: {e}"))?;
            let info = parse_rate_limit_headers(
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                wall(&case["wall_now_unix_ms"]),
                ms_field(&case["cap_ms"]),
            );
            out["expected"] = serde_json::to_value(&info).map_err(|e| e.to_string())?;
            out["wait_ms"] = json!(info.wait().map(as_millis_u64));
            out["is_empty"] = json!(info.is_empty());
        }
        "rate_limit_buckets" => {
            let headers: Vec<(String, String)> = serde_json::from_value(case["headers"].clone())
                .map_err(|e| format!("bad headers: {e}"))?;
            let named = parse_bucket_headers(
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                wall(&case["wall_now_unix_ms"]),
                ms_field(&case["cap_ms"]),
            );
            out["expected"] = serde_json::to_value(&named).map_err(|e| e.to_string())?;
            if case.get("routes").is_some() {
                // Which bucket each type is charged to (besides `user`) under this table.
                let mut limiter = BucketLimiter::new();
                limiter.learn_policies(&named, &RateLimitInfo::default(), origin);
                let mut routes = serde_json::Map::new();
                for t in case["routes"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.keys())
                {
                    let name = limiter.route_name(limiter.route(t));
                    routes.insert(t.clone(), json!(name));
                }
                out["routes"] = Value::Object(routes);
            }
        }
        "queue" => {
            let mut runner = QueueRunner::new(case, origin)?;
            for step in out["steps"]
                .as_array_mut()
                .ok_or("queue case without steps")?
            {
                let got = runner.step(step)?;
                for key in ["sent", "completed"] {
                    step[key] = got[key].clone();
                }
                // Optional expectations: only those the case states are compared.
                for key in ["rejected", "next_timeout_ms", "rate_limit_waits"] {
                    if step.get(key).is_some() || (key == "rejected" && got.get(key).is_some()) {
                        step[key] = got[key].clone();
                    }
                }
            }
        }
        "backoff" => {
            let config: BackoffConfig = serde_json::from_value(case["config"].clone())
                .map_err(|e| format!("bad config: {e}"))?;
            let mut backoff = Backoff::new(config, case["seed"].as_u64().unwrap_or(0));
            for step in out["steps"]
                .as_array_mut()
                .ok_or("backoff case without steps")?
            {
                match step["op"].as_str() {
                    Some("next_delay") => {
                        step["delay_ms"] = json!(as_millis_u64(backoff.next_delay()))
                    }
                    Some("connection_lasted") => {
                        backoff.note_connection_lasted(ms_field(&step["lasted_ms"]))
                    }
                    Some("reset") => backoff.reset(),
                    other => return Err(format!("unknown backoff op {other:?}")),
                }
                if step.get("attempts").is_some() {
                    step["attempts"] = json!(backoff.attempts());
                }
            }
        }
        "gcra" => {
            let mut gcra = match case["quota"].as_u64() {
                Some(q) => Gcra::new(
                    q,
                    ms_field(&case["window_ms"]),
                    case["burst"].as_u64().unwrap_or(0),
                ),
                None => Gcra::unlimited(),
            };
            let at = |v: &Value| origin + ms_field(v);
            for step in out["steps"]
                .as_array_mut()
                .ok_or("gcra case without steps")?
            {
                match step["op"].as_str() {
                    Some("check") => {
                        let r = gcra.check(at(&step["at_ms"]));
                        step["admitted"] = json!(r.is_ok());
                        step["wait_ms"] = json!(r.err().map_or(0, ceil_ms));
                    }
                    Some("wait_time") => {
                        step["wait_ms"] = json!(ceil_ms(gcra.wait_time(at(&step["at_ms"]))))
                    }
                    Some("block_until") => gcra.block_until(at(&step["until_ms"])),
                    Some("learn") => {
                        let info: RateLimitInfo = serde_json::from_value(step["info"].clone())
                            .map_err(|e| format!("bad info: {e}"))?;
                        gcra.learn(&info, at(&step["at_ms"]));
                    }
                    other => return Err(format!("unknown gcra op {other:?}")),
                }
            }
        }
        "client" => {
            let mut runner = ClientRunner::new(case, origin)?;
            for step in out["steps"]
                .as_array_mut()
                .ok_or("client case without steps")?
            {
                let got = runner.step(step)?;
                step["expect"] = got["outputs"].clone();
                // Optional expectations: only those the case states are compared.
                if step.get("next_timeout_ms").is_some() {
                    step["next_timeout_ms"] = got["next_timeout_ms"].clone();
                }
                if let Some(Value::Object(wanted)) = step.get("stats").cloned() {
                    let picked: serde_json::Map<String, Value> = wanted
                        .keys()
                        .map(|k| (k.clone(), got["stats"][k].clone()))
                        .collect();
                    step["stats"] = Value::Object(picked);
                }
            }
        }
        "transcripts" => {
            let mut runner = TranscriptRunner::new(case, origin)?;
            for step in out["steps"]
                .as_array_mut()
                .ok_or("transcript without steps")?
            {
                let got = runner.step(step)?;
                step["expect"] = got["outputs"].clone();
                if step.get("next_timeout_ms").is_some() {
                    step["next_timeout_ms"] = got["next_timeout_ms"].clone();
                }
            }
        }
        other => return Err(format!("no vectors named {other:?}")),
    }
    Ok(out)
}

/// A stateful case's `config`, `seed` and wall-clock start (`wall_now_unix_ms`, by default
/// 2023-11-14T22:13:20Z).
fn case_setup<C: serde::de::DeserializeOwned>(
    case: &Value,
) -> Result<(C, u64, SystemTime), String> {
    let config =
        serde_json::from_value(case["config"].clone()).map_err(|e| format!("bad config: {e}"))?;
    let seed = case["seed"].as_u64().unwrap_or(0);
    let wall_start = case["wall_now_unix_ms"]
        .as_u64()
        .map_or(UNIX_EPOCH + Duration::from_secs(1_700_000_000), |ms| {
            UNIX_EPOCH + Duration::from_millis(ms)
        });
    Ok((config, seed, wall_start))
}

fn ms_field(v: &Value) -> Duration {
    Duration::from_millis(v.as_u64().unwrap_or(0))
}

fn wall(v: &Value) -> SystemTime {
    UNIX_EPOCH + ms_field(v)
}

/// Whole milliseconds rounded up: a wait is never reported shorter than it is.
fn ceil_ms(d: Duration) -> u64 {
    as_millis_u64(d).saturating_add(u64::from(d.subsec_nanos() % 1_000_000 != 0))
}
