//! HTTP handlers, the shared publish path, and the error type every handler answers with.

// `ApiError` carries its response headers inline; it is built once per refused request, on
// the cold path, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use courier_core::frame::{Delivery, ServerFrame};
use courier_core::json::Reader;
use courier_core::wire::{
    BatchItemResult, BatchRequest, BatchResponseBody, EventItem, FaultKind, ItemFault, ItemStatus,
    PublishResponse,
};
use courier_core::{ChannelName, ErrorCode, Event, ValidationError};
use courier_core::{ErrorBody, ErrorResponse};

use crate::SharedState;
use crate::admin::RateLimitedEvent;
use crate::auth::{AuthError, Claims};
use crate::metrics::AuthFailure;
use crate::ratelimit::{Charge, Usage, millis};
use crate::store::{Claim, PublishRecord, Published};

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An error answer: status, body and headers (rate-limit headers travel here too).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The code.
    pub code: ErrorCode,
    /// The message.
    pub message: String,
    /// The field at fault.
    pub field: Option<String>,
    /// Delay before retrying.
    pub retry_after_ms: Option<u64>,
    /// Which limit.
    pub limit_type: Option<String>,
    /// Extra headers.
    pub headers: HeaderMap,
}

impl ApiError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            field: None,
            retry_after_ms: None,
            limit_type: None,
            headers: HeaderMap::new(),
        }
    }

    /// The same error with another status (the code's usual one otherwise).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The error as it travels in bodies (core's wire type, shared with the SDKs).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
            field: self.field.clone(),
            retry_after_ms: self.retry_after_ms,
            limit_type: self.limit_type.clone(),
        }
    }

    /// The same error as a WebSocket error frame answering request `id`.
    pub fn to_frame(&self, id: Option<u64>) -> courier_core::ErrorFrame {
        courier_core::ErrorFrame::from_body(id, self.body())
    }

    /// A backend failed: 503 with `Retry-After` (clients retry with the same event id).
    pub(crate) fn store(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store failed");
        let mut err = Self::new(
            ErrorCode::Unavailable,
            "a backend is unavailable; retry later",
        );
        err.retry_after_ms = Some(1_000);
        err.headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        err
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(e.code(), e.message.clone()).with_field(e.field)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<&ApiError> for ErrorResponse {
    fn from(e: &ApiError) -> Self {
        ErrorResponse { error: e.body() }
    }
}

/// The exact wait of an error answer (`retry_after_ms`), for the Retry-After histogram:
/// the header rounds it up to whole seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryAfterMs(pub(crate) u64);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse::from(&self);
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        if let Some(ms) = self.retry_after_ms {
            response.extensions_mut().insert(RetryAfterMs(ms));
        }
        response
    }
}

/// Reads the bearer token.
pub(crate) fn authenticate(state: &SharedState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            state.metrics.auth_failure(AuthFailure::Invalid);
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing `Authorization: Bearer <token>`",
            )
        })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            state.metrics.auth_failure(AuthFailure::Invalid);
            ApiError::new(
                ErrorCode::Unauthorized,
                "the Authorization scheme must be Bearer",
            )
        })?;
    state.verifier.verify(token.trim()).map_err(|e| {
        // Never the token: the reason says what was wrong with it.
        tracing::info!(status = 401, code = e.code.as_str(), reason = %e.message, "request refused");
        state.metrics.auth_failure(AuthFailure::of_code(e.code));
        ApiError::from(e)
    })
}

/// The answer to an event that could not be read: `INVALID_EVENT` naming the member at
/// fault (`body` for the object itself).
fn fault_error(f: ItemFault) -> ApiError {
    let field = f.field.unwrap_or_else(|| "body".to_owned());
    ApiError::new(ErrorCode::InvalidEvent, f.message).with_field(field)
}

/// The event of a one-event body read by [`EventItem::read_json`]; `end` is what the
/// reader found after it (only whitespace may follow).
fn event_of(item: EventItem, end: Result<(), ApiError>) -> Result<Event, ApiError> {
    let event = item.into_event().map_err(fault_error)?;
    end?;
    Ok(event)
}

/// A `200` with a body the core's writer wrote.
fn json_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// What a charge produced, as an answer: `Ok` when admitted; a refusal is
/// `RATE_LIMIT_EXCEEDED` naming the bucket, with the exact wait and `Retry-After` (whole
/// seconds, rounded up; a batch drops it). Records the rate-limit metrics and, for the
/// admin console, the decisions about `event`.
fn charged(
    state: &SharedState,
    claims: &Claims,
    event: &Event,
    charge: &Charge,
) -> Result<(), ApiError> {
    for (rule, shadow) in &charge.hits {
        state.metrics.rate_limit_hit(rule, *shadow);
    }
    for (row, decision) in charge.decisions.iter().flatten() {
        state.metrics.rl_decision(*row, *decision);
    }
    if charge.decisions.iter().any(Option::is_some) {
        state.admin.rate_limited(
            &RateLimitedEvent {
                user: &claims.sub,
                tier: claims.tier(),
                channel: event.channel.as_str(),
                event_type: &event.event_type,
            },
            &charge.decisions,
            &|row| state.limiter.bucket_name(row).to_owned(),
            charge
                .refused
                .as_ref()
                .map(|r| millis(r.retry_after).max(1)),
        );
    }
    let Some(refusal) = &charge.refused else {
        return Ok(());
    };
    // Recorded where it is sent (`json_errors`, the batch handler, the WebSocket).
    let wait_ms = millis(refusal.retry_after).max(1);
    let mut err = ApiError::new(
        ErrorCode::RateLimitExceeded,
        format!(
            "rate limit `{}` exceeded; retry after {wait_ms} ms",
            refusal.bucket
        ),
    );
    err.retry_after_ms = Some(wait_ms);
    err.limit_type = Some(refusal.bucket.clone());
    if let Ok(v) = HeaderValue::from_str(&wait_ms.div_ceil(1000).to_string()) {
        err.headers.insert(header::RETRY_AFTER, v);
    }
    Err(err)
}

/// An event that passed the checks that need no store, on its way to the stores.
struct Prepared {
    event: Event,
    /// The publisher named the id: deduplicate it.
    dedupe: bool,
    /// The idempotency key, `{sub}:{id}`.
    key: String,
}

/// Authorizes, stamps and validates one event.
fn prepare(state: &SharedState, claims: &Claims, mut event: Event) -> Result<Prepared, ApiError> {
    if !claims.can_publish(&event.channel) {
        state.metrics.auth_failure(AuthFailure::Forbidden);
        return Err(ApiError::new(
            ErrorCode::ForbiddenChannel,
            format!("this token may not publish to `{}`", event.channel),
        )
        .with_field("channel"));
    }
    let dedupe = !event.id.is_empty();
    if !dedupe {
        event.id = state.next_event_id();
    }
    if event.metadata.timestamp == 0 {
        event.metadata.timestamp = unix_ms();
    }
    if event.metadata.source.is_empty() {
        event.metadata.source = claims.sub.clone();
    }
    if let Err(e) = event.validate(state.config.max_payload_bytes) {
        state.metrics.validation_failure(&e.field);
        return Err(e.into());
    }
    let key = format!("{}:{}", crate::store::user_tag(&claims.sub), event.id);
    Ok(Prepared { event, dedupe, key })
}

/// Authorizes, stamps, validates, deduplicates, rate-limits (charging `usage`), stores and
/// fans out one event. Only an event that would otherwise be accepted is charged: an
/// invalid or forbidden event, or a duplicate of an accepted id, costs nothing.
pub(crate) async fn publish_event(
    state: &SharedState,
    claims: &Claims,
    event: Event,
    usage: &mut Usage,
) -> Result<PublishResponse, ApiError> {
    publish_events(state, claims, vec![Ok(event)], usage)
        .await
        .pop()
        .unwrap_or_else(|| Err(unanswered()))
}

/// The answer for an event the stores left without one (they answered fewer results than
/// asked); the publisher retries with the same id.
fn unanswered() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the store gave no answer for this event; retry with the same id",
    )
}

/// [`publish_event`] for each of `events` (an `Err` is an event already refused), in order,
/// with one store step per stage for all of them (claims, rate limits, appends,
/// completions): on Redis a batch costs a few round trips, not a few per event. The answers
/// are those publishing the events one after another would give: an id repeated in the
/// list is settled by what became of its first occurrence (the list is cut before the
/// repeat and the parts run in order), and a refusal rejects its event alone.
pub(crate) async fn publish_events(
    state: &SharedState,
    claims: &Claims,
    events: Vec<Result<Event, ApiError>>,
    usage: &mut Usage,
) -> Vec<Result<PublishResponse, ApiError>> {
    let mut results: Vec<Option<Result<PublishResponse, ApiError>>> =
        (0..events.len()).map(|_| None).collect();
    let mut part: Vec<(usize, Prepared)> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for (i, event) in events.into_iter().enumerate() {
        match event.and_then(|e| prepare(state, claims, e)) {
            Err(e) => results[i] = Some(Err(e)),
            Ok(p) => {
                if p.dedupe && !keys.insert(p.key.clone()) {
                    publish_part(
                        state,
                        claims,
                        usage,
                        std::mem::take(&mut part),
                        &mut results,
                    )
                    .await;
                    keys.clear();
                    keys.insert(p.key.clone());
                }
                part.push((i, p));
            }
        }
    }
    publish_part(state, claims, usage, part, &mut results).await;
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(unanswered())))
        .collect()
}

/// Publishes `part` (no id twice), writing each event's answer at its index in `results`.
async fn publish_part(
    state: &SharedState,
    claims: &Claims,
    usage: &mut Usage,
    part: Vec<(usize, Prepared)>,
    results: &mut [Option<Result<PublishResponse, ApiError>>],
) {
    if part.is_empty() {
        return;
    }
    // 1. Claim the ids; one still being published elsewhere is asked again for a while.
    let (mut to_claim, mut live): (Vec<_>, Vec<_>) = part.into_iter().partition(|(_, p)| p.dedupe);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !to_claim.is_empty() {
        let keys: Vec<String> = to_claim.iter().map(|(_, p)| p.key.clone()).collect();
        let claimed = match state.idempotency.claim_many(&keys).await {
            Ok(c) => c,
            Err(e) => {
                for (i, _) in to_claim {
                    results[i] = Some(Err(ApiError::store(e.clone())));
                }
                break;
            }
        };
        let mut pending = Vec::new();
        for ((i, p), claim) in to_claim.into_iter().zip(claimed) {
            match claim {
                Claim::New => {
                    state
                        .metrics
                        .idempotency_misses
                        .fetch_add(1, Ordering::Relaxed);
                    live.push((i, p));
                }
                Claim::Done(r) => {
                    state.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                    state
                        .metrics
                        .idempotency_hits
                        .fetch_add(1, Ordering::Relaxed);
                    results[i] = Some(Ok(PublishResponse {
                        id: p.event.id,
                        channel: r.channel,
                        epoch: r.epoch,
                        offset: r.offset,
                        duplicate: true,
                    }));
                }
                Claim::Pending => pending.push((i, p)),
            }
        }
        if !pending.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                for (i, _) in pending {
                    results[i] = Some(Err(ApiError::new(
                        ErrorCode::Unavailable,
                        "a publish with this id is still in progress; retry",
                    )));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        to_claim = pending;
    }
    live.sort_unstable_by_key(|(i, _)| *i);
    let dedupe_keys = |items: &[(usize, Prepared)]| -> Vec<String> {
        items
            .iter()
            .filter(|(_, p)| p.dedupe)
            .map(|(_, p)| p.key.clone())
            .collect()
    };

    // 2. Rate limits, in order; a refused event's id must not stay claimed, so a retry is
    // published, not a duplicate.
    let types: Vec<&str> = live
        .iter()
        .map(|(_, p)| p.event.event_type.as_str())
        .collect();
    let charges = match state.limiter.charge_many(usage, &types).await {
        Ok(c) => c,
        Err(e) => {
            state.idempotency.release_many(&dedupe_keys(&live)).await;
            for (i, _) in live {
                results[i] = Some(Err(ApiError::store(e.clone())));
            }
            return;
        }
    };
    let mut admitted = Vec::with_capacity(live.len());
    let mut released = Vec::new();
    for ((i, p), charge) in live.into_iter().zip(charges) {
        match charged(state, claims, &p.event, &charge) {
            Ok(()) => admitted.push((i, p)),
            Err(e) => {
                if p.dedupe {
                    released.push(p.key);
                }
                results[i] = Some(Err(e));
            }
        }
    }
    state.idempotency.release_many(&released).await;
    if admitted.is_empty() {
        return;
    }

    // 3. Append and fan out, in order.
    let failed_keys = dedupe_keys(&admitted);
    let mut answers = Vec::with_capacity(admitted.len());
    let mut events = Vec::with_capacity(admitted.len());
    for (i, p) in admitted {
        answers.push((i, p.dedupe, p.key, p.event.id.clone()));
        events.push(p.event);
    }
    let stored = {
        let locks = if state.broker.fans_out_on_append() {
            Vec::new()
        } else {
            state.order_locks(events.iter().map(|e| &e.channel))
        };
        let mut guards = Vec::with_capacity(locks.len());
        for lock in locks {
            guards.push(lock.lock().await);
        }
        match state.history.append_many(events).await {
            Ok(stored) => {
                let mut out = Vec::with_capacity(stored.len());
                for s in stored {
                    out.push(match s {
                        Ok(s) => fan_out(state, &s).await.map(|()| s),
                        Err(e) => Err(e),
                    });
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    };
    let stored = match stored {
        Ok(s) => s,
        Err(e) => {
            state.idempotency.release_many(&failed_keys).await;
            for (i, ..) in answers {
                results[i] = Some(Err(ApiError::store(e.clone())));
            }
            return;
        }
    };

    // 4. Remember the accepted ids.
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for ((i, dedupe, key, id), s) in answers.into_iter().zip(stored) {
        match s {
            Ok(stored) => {
                state.metrics.published.fetch_add(1, Ordering::Relaxed);
                state.admin.published(&stored.event.channel);
                let record = PublishRecord {
                    channel: stored.event.channel.to_string(),
                    epoch: stored.epoch.to_string(),
                    offset: stored.offset,
                };
                results[i] = Some(Ok(PublishResponse {
                    id,
                    channel: record.channel.clone(),
                    epoch: record.epoch.clone(),
                    offset: record.offset,
                    duplicate: false,
                }));
                if dedupe {
                    done.push((key, record));
                }
            }
            Err(e) => {
                if dedupe {
                    failed.push(key);
                }
                results[i] = Some(Err(ApiError::store(e)));
            }
        }
    }
    state.idempotency.release_many(&failed).await;
    if let Err(e) = state.idempotency.complete_many(done.clone()).await {
        // The events are stored and fanned out: they stay acknowledged. Answering an error
        // would have the client publish them again, and once their `pending` claims expired
        // a retry would store a second copy. Their ids are recorded in the background instead.
        tracing::warn!(error = %e, events = done.len(),
            "cannot record published ids yet; retrying in the background");
        tokio::spawn(complete_later(state.clone(), done));
    }
}

/// Records `done` (ids of stored events) until the idempotency store takes them, for at
/// most one idempotency window (after it the ids would be forgotten anyway).
async fn complete_later(state: SharedState, done: Vec<(String, PublishRecord)>) {
    let give_up = tokio::time::Instant::now()
        + Duration::from_secs(state.config.idempotency.window_secs.max(1));
    let mut delay = Duration::from_millis(100);
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(delay).await;
        match state.idempotency.complete_many(done.clone()).await {
            Ok(()) => {
                tracing::info!(events = done.len(), "published ids recorded after a retry");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "recording published ids failed again"),
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    tracing::error!(
        events = done.len(),
        "gave up recording published ids: a retry of them within the window is stored again"
    );
}

/// Hands a stored event to the broker, its frame encoded once.
async fn fan_out(
    state: &SharedState,
    stored: &crate::store::StoredEvent,
) -> Result<(), crate::store::StoreError> {
    let frame = ServerFrame::Event(Delivery {
        epoch: stored.epoch.to_string(),
        offset: stored.offset,
        event: (*stored.event).clone(),
    })
    .encode();
    state.metrics.message_bytes.observe(frame.len() as f64);
    let message = Published {
        channel: stored.event.channel.clone(),
        epoch: stored.epoch.clone(),
        offset: stored.offset,
        frame: frame.into(),
        accepted_at: std::time::Instant::now(),
        deflated: Default::default(),
    };
    state.broker.publish(Arc::new(message)).await
}

fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is over the server's limit",
            )
            .with_field("body")
        } else {
            ApiError::new(ErrorCode::BadRequest, rejection.body_text()).with_field("body")
        }
    })
}

/// Adds the rate-limit headers of `usage` and its record for the fault layer.
fn with_usage(mut response: Response, usage: &Usage) -> Response {
    response.headers_mut().extend(usage.headers());
    response.extensions_mut().insert(usage.record());
    response
}

/// Publishes the one event of a body, read in one pass; `end` is what followed it.
async fn publish_item(
    state: &SharedState,
    claims: Claims,
    item: EventItem,
    end: Result<(), ApiError>,
) -> Response {
    let mut usage = state.limiter.usage(&claims);
    usage.carry(item.event_type.as_deref().unwrap_or_default());
    let event_type = item.event_type.clone().unwrap_or_default();
    let result = match event_of(item, end) {
        Ok(event) => publish_event(state, &claims, event, &mut usage).await,
        Err(e) => {
            state
                .metrics
                .validation_failure(e.field.as_deref().unwrap_or("body"));
            Err(e)
        }
    };
    let response = match result {
        Ok(ok) => {
            tracing::info!(
                user = %claims.sub, channel = %ok.channel, event_type = %event_type,
                status = 200, duplicate = ok.duplicate, offset = ok.offset, "published"
            );
            json_response(ok.to_json())
        }
        Err(e) => {
            tracing::info!(
                user = %claims.sub, event_type = %event_type, status = e.status.as_u16(),
                code = e.code.as_str(), field = e.field.as_deref().unwrap_or(""),
                reason = %e.message, "publish refused"
            );
            e.into_response()
        }
    };
    with_usage(response, &usage)
}

/// `POST /publish`.
#[utoipa::path(post, path = "/publish", tag = "publish",
    request_body(content = courier_core::Event, description = "An event: `{id?, type, channel, data, metadata?}`"),
    responses(
        (status = 200, description = "Accepted or duplicate", body = PublishResponse),
        (status = 400, description = "Invalid event; `error.field` names the field", body = ErrorResponse),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorResponse),
        (status = 403, description = "The token may not publish to the channel", body = ErrorResponse),
        (status = 408, description = "The body did not arrive within `http.body_timeout_ms`", body = ErrorResponse),
        (status = 413, description = "Over the payload limit", body = ErrorResponse),
        (status = 429, description = "Rate limited; see Retry-After (whole seconds), `retry_after_ms` (exact) and `limit_type` (the bucket: `user`, `type:<prefix>`, `fallback`)", body = ErrorResponse),
        (status = 503, description = "A backend is unavailable, or a publish with the same id is still in progress: retry with the same id", body = ErrorResponse),
    ),
    security(("bearer" = [])))]
pub(crate) async fn publish(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let _timer = state.metrics.publish_timer();
    // The token first, as on every publish path: an anonymous caller learns nothing about
    // its body.
    let claims = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match std::str::from_utf8(&body) {
        Ok(text) => {
            let mut r = Reader::new(text);
            let item = EventItem::read_json(&mut r, None);
            let end = r.end().map_err(|_| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    "trailing characters after the JSON body",
                )
                .with_field("body")
            });
            publish_item(&state, claims, item, end).await
        }
        Err(_) => ApiError::new(ErrorCode::BadRequest, "the body is not UTF-8")
            .with_field("body")
            .into_response(),
    }
}

/// `POST /publish/{channel}`: the channel comes from the path.
#[utoipa::path(post, path = "/publish/{channel}", tag = "publish",
    params(("channel" = String, Path, description = "The channel")),
    request_body(content = crate::openapi::ChannelEvent, description = "An event whose `channel` may be left out: `{id?, type, channel?, data, metadata?}`"),
    responses(
        (status = 200, description = "Accepted or duplicate", body = PublishResponse),
        (status = 400, description = "Invalid event or channel name", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden channel", body = ErrorResponse),
        (status = 408, description = "The body did not arrive within `http.body_timeout_ms`", body = ErrorResponse),
        (status = 413, description = "Too large", body = ErrorResponse),
        (status = 429, description = "Rate limited", body = ErrorResponse),
        (status = 503, description = "A backend is unavailable, or a publish with the same id is still in progress", body = ErrorResponse),
    ),
    security(("bearer" = [])))]
pub(crate) async fn publish_to_channel(
    State(state): State<SharedState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let _timer = state.metrics.publish_timer();
    let claims = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let result = (|| {
        let body = body_or_error(body)?;
        let channel = ChannelName::new(channel).map_err(ApiError::from)?;
        let not_json = |e: &dyn std::fmt::Display| {
            ApiError::new(ErrorCode::BadRequest, format!("body is not JSON: {e}"))
                .with_field("body")
        };
        let text = std::str::from_utf8(&body).map_err(|e| not_json(&e))?;
        // One pass: the event is read with the path's channel standing in for an absent
        // `channel`; its `data` stays the exact text that was sent.
        let mut r = Reader::new(text);
        let item = EventItem::read_json(&mut r, Some(&channel));
        if let Some(e) = &item.syntax {
            return Err(not_json(e));
        }
        r.end().map_err(|e| not_json(&e))?;
        if item
            .fault()
            .is_some_and(|f| f.kind == FaultKind::NotAnObject)
        {
            return Err(
                ApiError::new(ErrorCode::InvalidEvent, "the body must be a JSON object")
                    .with_field("body"),
            );
        }
        if item.has_channel && item.channel.as_deref() != Some(channel.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidEvent,
                "`channel` in the body differs from the path",
            )
            .with_field("channel"));
        }
        Ok(item)
    })();
    match result {
        Ok(item) => publish_item(&state, claims, item, Ok(())).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /publish/batch`: one result per event, in order.
#[utoipa::path(post, path = "/publish/batch", tag = "publish",
    request_body(content = courier_core::wire::BatchRequest),
    responses(
        (status = 200, description = "One result per event; a rate-limited event is rejected on its own (`RATE_LIMIT_EXCEEDED`, `retry_after_ms`, `limit_type` = the bucket) and the others are still accepted", body = BatchResponseBody),
        (status = 400, description = "The body is not a batch", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 408, description = "The body did not arrive within `http.body_timeout_ms`", body = ErrorResponse),
        (status = 413, description = "Too large or too many events", body = ErrorResponse),
    ),
    security(("bearer" = [])))]
pub(crate) async fn publish_batch(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let _timer = state.metrics.publish_timer();
    let claims = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // One pass over the body: a text that is not a batch is refused whole; each event is
    // read on its own, so one unreadable event is rejected alone.
    let items = std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|text| BatchRequest::read_items(text).map_err(|e| e.to_string()));
    let items = match items {
        Ok(items) => items,
        Err(e) => {
            return ApiError::new(
                ErrorCode::BadRequest,
                format!("expected {{\"events\": [...]}}: {e}"),
            )
            .with_field("events")
            .into_response();
        }
    };
    if items.len() > state.config.max_batch_events {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("at most {} events per batch", state.config.max_batch_events),
        )
        .with_field("events")
        .into_response();
    }
    let mut usage = state.limiter.usage(&claims);
    // For the answer if an event is refused: what it said its id and channel were.
    let mut named = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    for item in items {
        named.push((item.id.clone().unwrap_or_default(), item.channel.clone()));
        usage.carry(item.event_type.as_deref().unwrap_or_default());
        events.push(item.into_event().map_err(fault_error).inspect_err(|e| {
            state
                .metrics
                .validation_failure(e.field.as_deref().unwrap_or("body"))
        }));
    }
    // Each event on its own: a refusal (rate limit included) rejects that event only.
    let outcomes = publish_events(&state, &claims, events, &mut usage).await;
    let results: Vec<BatchItemResult> = outcomes
        .into_iter()
        .zip(named)
        .enumerate()
        .map(|(i, (outcome, (id, channel)))| match outcome {
            Ok(ok) if ok.duplicate => {
                BatchItemResult::duplicate(ok.id, ok.channel, ok.epoch, ok.offset)
            }
            Ok(ok) => BatchItemResult::accepted(ok.id, ok.channel, ok.epoch, ok.offset),
            Err(mut e) => {
                if let Some(f) = &e.field {
                    e.field = Some(format!("events[{i}].{f}"));
                }
                BatchItemResult::rejected(id, channel, e.body())
            }
        })
        .collect();
    let rejected: Vec<&BatchItemResult> = results.iter().filter(|r| r.error.is_some()).collect();
    let duplicates = results
        .iter()
        .filter(|r| r.status == ItemStatus::Duplicate)
        .count();
    tracing::info!(
        user = %claims.sub, events = results.len(), rejected = rejected.len(), duplicates,
        status = 200, "published batch"
    );
    for r in rejected {
        if let Some(e) = &r.error {
            if let Some(ms) = e.retry_after_ms {
                state.metrics.retry_after_ms(ms);
            }
            tracing::info!(
                user = %claims.sub, id = %r.id, channel = r.channel.as_deref().unwrap_or(""),
                code = e.code.as_str(), field = e.field.as_deref().unwrap_or(""),
                reason = %e.message, "batch event refused"
            );
        }
    }
    // A 200 carries no Retry-After: each refused event has its own `retry_after_ms`.
    with_usage(
        json_response(BatchResponseBody { results }.to_json()),
        &usage,
    )
}

/// `GET /health`: the overall level and each component's; 503 when unhealthy (draining
/// included), so a load balancer may use it too.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, description = "`healthy` or `degraded` (memory above its soft limit)", body = crate::health::HealthReport),
    (status = 503, description = "`unhealthy` (Redis unreachable) or `draining`", body = crate::health::HealthReport),
))]
pub(crate) async fn health(State(state): State<SharedState>) -> Response {
    let report = crate::health::report(&state).await;
    let status = if report.level == crate::health::Level::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(report)).into_response()
}

/// `GET /health/live`: the process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`", body = crate::openapi::Status)))]
pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /health/ready`: 503 while draining or while the backend (Redis) is unreachable.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "Ready: `{\"status\": \"ready\"}`", body = crate::openapi::Status),
    (status = 503, description = "`draining`, or `unavailable` with the backend's `reason` (and `Retry-After`)", body = crate::openapi::Status),
))]
pub(crate) async fn ready(State(state): State<SharedState>) -> Response {
    if state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "draining"})),
        )
            .into_response();
    }
    // The history and the fan-out (the same Redis, or PostgreSQL beside Redis).
    let ready = match state.history.ready().await {
        Ok(()) => state.broker.ready().await,
        Err(e) => Err(e),
    };
    match ready {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            Json(serde_json::json!({"status": "unavailable", "reason": e.to_string()})),
        )
            .into_response(),
    }
}

/// `GET /stats`.
#[utoipa::path(get, path = "/stats", tag = "health", responses((status = 200, description = "Counters", body = Object)))]
pub(crate) async fn stats(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let m = &state.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let history = state.history.stats().await;
    Json(serde_json::json!({
        "uptime_secs": state.uptime().as_secs(),
        "connections": state.connections.total(),
        "connections_opened": load(&m.connections_opened),
        "channels": state.broker.channel_count(),
        "history": history,
        "published": load(&m.published),
        "duplicates": load(&m.duplicates),
        "delivered": load(&m.delivered),
        "slow_consumers": load(&m.slow_consumers),
        "rate_limit_hits": m.family_total("rl"),
        "connection_rejections": m.family_total("conn"),
        "validation_failures": m.family_total("val"),
        "idempotency_entries": state.idempotency.entries(),
        "draining": state.is_draining(),
    }))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<SharedState>) -> Response {
    let history = state.history.stats().await;
    let text = state.metrics.render(
        state.broker.channel_count(),
        history.events,
        state.is_draining(),
        state.history.data_loss().epoch_changes,
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
