//! The WebSocket opening handshake (RFC 6455 §4.2, HTTP/1.1), with permessage-deflate
//! negotiation.
//!
//! Done here instead of by axum's `WebSocketUpgrade` because that one builds the socket
//! itself: the connection must run over [`deflate::Transport`] (which inflates what the
//! client compressed) and the answer must carry `Sec-WebSocket-Extensions`. The checks and
//! their answers are the ones axum made (400 for a request that is not a WebSocket
//! upgrade, 426 for a connection that cannot be upgraded), as JSON errors.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use courier_core::ErrorCode;
use hyper_util::rt::TokioIo;
use ws_tungstenite::WebSocketStream;
use ws_tungstenite::tungstenite::handshake::derive_accept_key;
use ws_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::deflate::{self, Offer, Transport};
use crate::http::ApiError;

/// A server-side WebSocket over the upgraded connection.
pub(crate) type Socket = WebSocketStream<Transport<TokioIo<hyper::upgrade::Upgraded>>>;

/// A request to upgrade to a WebSocket: extracted once its headers check out.
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    deflate_offered: Option<Offer>,
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

/// Whether the comma-separated header `name` holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(bad_request(
                "not a WebSocket upgrade: the `Connection` header must include `upgrade`",
            ));
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(bad_request(
                "not a WebSocket upgrade: the `Upgrade` header must be `websocket`",
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(bad_request("`Sec-WebSocket-Version` must be 13"));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(bad_request("the `Sec-WebSocket-Key` header is missing"));
        };
        let deflate_offered = deflate::offered(headers);
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            let mut err = ApiError::new(
                ErrorCode::BadRequest,
                "this connection cannot be upgraded to a WebSocket (HTTP/1.1 is required)",
            );
            err.status = StatusCode::UPGRADE_REQUIRED;
            return Err(err);
        };
        Ok(Self {
            key,
            on_upgrade,
            deflate_offered,
        })
    }
}

impl Upgrade {
    /// The client's permessage-deflate offer, if it made one this server accepts.
    pub(crate) fn deflate_offered(&self) -> Option<Offer> {
        self.deflate_offered
    }

    /// Answers 101 and runs `callback` on the socket once the connection has switched;
    /// `deflate` (only when offered) turns permessage-deflate on. `max` bounds a message,
    /// compressed or inflated.
    pub(crate) fn on_upgrade<F, Fut>(self, deflate: bool, max: usize, callback: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let offer = self.deflate_offered.filter(|_| deflate);
        // Small buffers: tungstenite reserves its read buffer up front (128 KiB by default),
        // which would dominate the memory of an idle connection; they grow when a big frame
        // arrives.
        let config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .read_buffer_size(4 * 1024)
            .write_buffer_size(8 * 1024);
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            // A failed upgrade (the client went away) has nobody to tell.
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let io = Transport::new(TokioIo::new(upgraded), offer.is_some(), max);
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            callback(socket).await;
        });
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                derive_accept_key(self.key.as_bytes()),
            );
        if let Some(offer) = offer {
            let answer = if offer.server_no_context_takeover {
                deflate::RESPONSE_NO_CONTEXT
            } else {
                deflate::RESPONSE
            };
            response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, answer);
        }
        response
            .body(axum::body::Body::empty())
            .expect("a 101 answer from valid parts")
    }
}
