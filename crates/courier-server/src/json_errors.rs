//! Every error answer is JSON: `{"error": {"code", "message"}}`, the body every SDK reads.
//!
//! The server's own errors already are ([`ApiError`]); this layer rewrites what the
//! framework answers by itself — an unknown path (404), a wrong method (405), a `GET /ws`
//! without an upgrade, a path with a bad percent-escape, a body that times out — keeping
//! the status, the headers (`Allow`, `Retry-After`) and the framework's explanation.
//! (A request hyper cannot read — a head over `http.max_header_bytes`, a malformed request
//! line — never reaches this layer: `serve.rs` rewrites hyper's own answer.)
//!
//! It also records every wait an HTTP answer hands out (`Retry-After`, or `retry_after_ms`
//! in the body) in `courier_retry_after_seconds`, whichever handler or layer wrote it.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use courier_core::ErrorCode;

use crate::SharedState;
use crate::http::{ApiError, RetryAfterMs};

/// Largest framework error text carried over into the JSON message.
const MAX_TEXT: usize = 4096;

/// The middleware (see the module docs).
pub(crate) async fn json_errors(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    // The exact wait when the body carries one, else the header's whole seconds.
    let exact = response.extensions().get::<RetryAfterMs>().map(|r| r.0);
    let header_ms = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| secs.saturating_mul(1000));
    if let Some(ms) = exact.or(header_ms) {
        state.metrics.retry_after_ms(ms);
    }
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match status {
        StatusCode::NOT_FOUND if text.is_empty() => {
            format!("no route for {method} {path}: see /openapi.json for the API")
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("{method} is not allowed on {path} (allowed: {allowed})")
        }
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
        _ => text,
    };
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::ForbiddenChannel,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::RateLimitExceeded,
        503 => ErrorCode::Unavailable,
        500.. => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    tracing::info!(status = status.as_u16(), code = code.as_str(), reason = %message, "request refused");
    let mut err = ApiError::new(code, message);
    err.status = status;
    let mut rewritten = err.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rewritten
}
