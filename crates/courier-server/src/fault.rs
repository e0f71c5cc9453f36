//! Fault injection for SDK test suites: off by default, only on loopback, switched on by
//! `--enable-fault-injection`.
//!
//! Faults apply to the API routes (`/publish*` and `/ws*`), never to `/_fault`, health,
//! stats, metrics or the OpenAPI document. Every request to an API route is also recorded
//! (arrival time, path, the token's `sub`, the status and `Retry-After` answered, the
//! rate-limit buckets of the events it carried and those that refused one) and served at
//! `GET /_fault/requests`, so a test can check from the server's side that clients honour
//! `Retry-After`, per bucket too, and spread their reconnects.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::http::ApiError;
use courier_core::ErrorCode;

/// The active faults.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FaultState {
    /// Requests still to be failed, with the status and Retry-After.
    pub fail: Option<FailRule>,
    /// Delay added to requests.
    pub delay: Option<DelayRule>,
    /// How many times every WebSocket was dropped.
    pub drops: u64,
}

/// Answer the next `count` requests with `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRule {
    /// 429 or 503.
    pub status: u16,
    /// How many requests.
    pub count: u64,
    /// `Retry-After` in seconds (429 and 503).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
}

/// Delay requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DelayRule {
    /// Added before the request is handled.
    pub delay_ms: u64,
    /// How many requests; absent means until reset.
    #[serde(default)]
    pub count: Option<u64>,
}

/// One request to an API route, as the fault layer saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Arrival, in Unix milliseconds with microsecond precision.
    pub at_ms: f64,
    /// The request path (`/publish/batch`, `/ws`, ...).
    pub path: String,
    /// The `sub` of the bearer token, when the request carried a valid one (a WebSocket
    /// authenticates in its first frame, after this record: `None`).
    pub sub: Option<String>,
    /// The HTTP status answered (101 for an accepted WebSocket upgrade).
    pub status: u16,
    /// The `Retry-After` header answered, as sent.
    pub retry_after: Option<String>,
    /// `Retry-After` in milliseconds when it was a number of seconds.
    pub retry_after_ms: Option<u64>,
    /// The rate-limit buckets of the events the request carried (`user` first, then each
    /// type's bucket), accepted or not; empty when limiting is off or for a WebSocket.
    pub buckets: Vec<String>,
    /// Every per-event rate-limit refusal of the request, in order.
    pub refused: Vec<Refused>,
}

/// A rate-limit bucket refused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// The bucket (`user`, `type:<prefix>`, `fallback`).
    pub bucket: String,
    /// The wait answered for that event, exact.
    pub retry_after_ms: u64,
}

/// What a publish handler leaves in its response's extensions for the request log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Charged {
    /// See [`RequestRecord::buckets`].
    pub(crate) buckets: Vec<String>,
    /// See [`RequestRecord::refused`].
    pub(crate) refused: Vec<Refused>,
}

/// Most requests recorded; later ones are only counted.
pub const MAX_RECORDED_REQUESTS: usize = 500_000;

#[derive(Default)]
struct RequestLog {
    records: Vec<RequestRecord>,
    dropped: u64,
}

/// Fault switches shared by the handlers.
#[derive(Default)]
pub struct Faults {
    state: Mutex<FaultState>,
    requests: Mutex<RequestLog>,
}

impl Faults {
    /// A snapshot.
    pub fn snapshot(&self) -> FaultState {
        self.state.lock().expect("fault lock").clone()
    }

    fn take(&self) -> (Option<FailRule>, Option<Duration>) {
        let mut s = self.state.lock().expect("fault lock");
        let fail = match &mut s.fail {
            Some(rule) if rule.count > 0 => {
                rule.count -= 1;
                let out = rule.clone();
                if rule.count == 0 {
                    s.fail = None;
                }
                Some(out)
            }
            _ => None,
        };
        let delay = match &mut s.delay {
            Some(rule) => {
                let d = Duration::from_millis(rule.delay_ms);
                if let Some(c) = &mut rule.count {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        s.delay = None;
                    }
                }
                Some(d)
            }
            None => None,
        };
        (fail, delay)
    }

    fn record(&self, record: RequestRecord) {
        let mut log = self.requests.lock().expect("request log lock");
        if log.records.len() < MAX_RECORDED_REQUESTS {
            log.records.push(record);
        } else {
            log.dropped += 1;
        }
    }
}

fn unix_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The claims of a valid bearer token in `Authorization`, if any.
fn bearer_claims(state: &crate::AppState, req: &Request) -> Option<crate::auth::Claims> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    state.verifier.verify(token.trim()).ok()
}

/// Middleware applying the faults to API routes.
pub(crate) async fn middleware(
    State(state): State<crate::SharedState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if !(path.starts_with("/publish") || path.starts_with("/ws")) {
        return next.run(req).await;
    }
    let at_ms = unix_ms_f64();
    let path = path.to_owned();
    let sub = bearer_claims(&state, &req).map(|c| c.sub);
    let mut response = faulted(&state, req, next).await;
    let charged = response
        .extensions_mut()
        .remove::<Charged>()
        .unwrap_or_default();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.faults.record(RequestRecord {
        at_ms,
        path,
        sub,
        status: response.status().as_u16(),
        retry_after_ms: retry_after
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| s.saturating_mul(1000)),
        retry_after,
        buckets: charged.buckets,
        refused: charged.refused,
    });
    response
}

async fn faulted(state: &crate::SharedState, req: Request, next: Next) -> Response {
    let (fail, delay) = state.faults.take();
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(rule) = fail {
        let code = if rule.status == 429 {
            ErrorCode::RateLimitExceeded
        } else {
            ErrorCode::Unavailable
        };
        let mut err = ApiError::new(code, "injected fault");
        err.status = StatusCode::from_u16(rule.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        if let Some(secs) = rule.retry_after_secs {
            err.retry_after_ms = Some(secs * 1000);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                err.headers.insert("retry-after", v);
            }
        }
        let buckets = carried_buckets(state, req).await;
        let mut response = err.into_response();
        response.extensions_mut().insert(Charged {
            buckets,
            refused: Vec::new(),
        });
        return response;
    }
    next.run(req).await
}

/// The buckets of the events in a publish body the handler never saw (an injected fault),
/// so the request log names them all the same.
async fn carried_buckets(state: &crate::SharedState, req: Request) -> Vec<String> {
    let Some(claims) = bearer_claims(state, &req) else {
        return Vec::new();
    };
    let limit = state
        .config
        .max_batch_bytes
        .max(state.config.max_frame_bytes);
    let Ok(body) = axum::body::to_bytes(req.into_body(), limit).await else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    let events = match value.get("events").and_then(|e| e.as_array()) {
        Some(events) => events.iter().collect(),
        None => vec![&value],
    };
    let mut usage = state.limiter.usage(&claims);
    for e in events {
        usage.carry(e.get("type").and_then(|t| t.as_str()).unwrap_or_default());
    }
    usage.record().buckets
}

/// `GET /_fault`: the active faults.
#[utoipa::path(get, path = "/_fault", tag = "fault", responses((status = 200, description = "The active faults: `{fail?, delay?, drops}`", body = Object)))]
pub(crate) async fn get(State(state): State<crate::SharedState>) -> Json<FaultState> {
    Json(state.faults.snapshot())
}

/// `POST /_fault/drop`: drops every WebSocket without a close frame.
#[utoipa::path(post, path = "/_fault/drop", tag = "fault", responses((status = 200, description = "`{\"dropped\": n}`", body = Object)))]
pub(crate) async fn drop_all(State(state): State<crate::SharedState>) -> Json<serde_json::Value> {
    let dropped = state
        .metrics
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    state.faults.state.lock().expect("fault lock").drops += 1;
    state.drop_tx.send_modify(|n| *n += 1);
    Json(serde_json::json!({ "dropped": dropped }))
}

/// `POST /_fault/fail {status, count, retry_after_secs?}`.
#[utoipa::path(post, path = "/_fault/fail", tag = "fault", request_body(content = Object, description = "`{status: 429 | 503, count, retry_after_secs?}`"), responses((status = 200, description = "The active faults", body = Object), (status = 400, description = "Not JSON, or a status other than 429 and 503", body = courier_core::ErrorResponse), (status = 415, description = "Not `application/json`", body = courier_core::ErrorResponse), (status = 422, description = "Not a rule", body = courier_core::ErrorResponse)))]
pub(crate) async fn fail(
    State(state): State<crate::SharedState>,
    Json(rule): Json<FailRule>,
) -> Response {
    if rule.status != 429 && rule.status != 503 {
        return ApiError::new(ErrorCode::BadRequest, "status must be 429 or 503")
            .with_field("status")
            .into_response();
    }
    let mut s = state.faults.state.lock().expect("fault lock");
    s.fail = (rule.count > 0).then_some(rule);
    Json(s.clone()).into_response()
}

/// `POST /_fault/delay {delay_ms, count?}`.
#[utoipa::path(post, path = "/_fault/delay", tag = "fault", request_body(content = Object, description = "`{delay_ms, count?}`"), responses((status = 200, description = "The active faults", body = Object), (status = 400, description = "Not JSON", body = courier_core::ErrorResponse), (status = 415, description = "Not `application/json`", body = courier_core::ErrorResponse), (status = 422, description = "Not a rule", body = courier_core::ErrorResponse)))]
pub(crate) async fn delay(
    State(state): State<crate::SharedState>,
    Json(rule): Json<DelayRule>,
) -> Response {
    let mut s = state.faults.state.lock().expect("fault lock");
    s.delay = (rule.delay_ms > 0 && rule.count != Some(0)).then_some(rule);
    Json(s.clone()).into_response()
}

/// `GET /_fault/requests`: every request to an API route since the start or the last reset,
/// in arrival order: `{"requests": [RequestRecord, ...], "dropped": n}`.
#[utoipa::path(get, path = "/_fault/requests", tag = "fault", responses((status = 200, description = "`{requests: [...], dropped}` (docs/protocol.md)", body = Object)))]
pub(crate) async fn requests(State(state): State<crate::SharedState>) -> Json<serde_json::Value> {
    let (mut records, dropped) = {
        let log = state.faults.requests.lock().expect("request log lock");
        (log.records.clone(), log.dropped)
    };
    // Recorded when answered; served by arrival.
    records.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    Json(serde_json::json!({ "requests": records, "dropped": dropped }))
}

/// `POST /_fault/reset`: clears every fault and the request record.
#[utoipa::path(post, path = "/_fault/reset", tag = "fault", responses((status = 200, description = "The active faults, now none", body = Object)))]
pub(crate) async fn reset(State(state): State<crate::SharedState>) -> Json<FaultState> {
    *state.faults.requests.lock().expect("request log lock") = RequestLog::default();
    let mut s = state.faults.state.lock().expect("fault lock");
    s.fail = None;
    s.delay = None;
    Json(s.clone())
}
