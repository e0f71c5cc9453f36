//! The OpenAPI document of the HTTP API, generated from the handlers' annotations.
//!
//! It is held to the server: every route of [`crate::routes`] is in it and nothing else
//! (a test checks both ways, with and without fault injection), every status a route can
//! answer is listed with its body (errors included: `ErrorResponse`), and the headers the
//! answers carry (`Retry-After`, `RateLimit`, `RateLimit-Policy`, `X-RateLimit-*`) are
//! declared. A bounded schemathesis run in `make test` checks the live server against it.

use axum::Json;
use axum::extract::State;
use courier_core::wire;
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Schema,
    Type,
};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::{Config, SharedState, admin, console, fault, http, replay, ws};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Declares the headers the publish answers carry and `Retry-After` on every 429 and 503.
struct Headers;

fn header(description: &str, schema: Type) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(schema))
        .description(Some(description))
        .build()
}

fn add_headers(status: &str, response: &mut Response, publish: bool) {
    if matches!(status, "429" | "503") {
        response.headers.insert(
            "Retry-After".into(),
            header(
                "Seconds to wait before retrying (whole seconds, rounded up; the body's \
                 `retry_after_ms` is exact)",
                Type::Integer,
            ),
        );
    }
    if publish && status != "401" && status != "408" {
        for (name, text) in [
            (
                "RateLimit",
                "Each rate-limit bucket the request touched: `\"<bucket>\";r=<remaining>;t=<seconds to reset>`",
            ),
            (
                "RateLimit-Policy",
                "The user's limits: `\"<bucket>\";q=<quota>;w=<window seconds>;burst=<burst>`, comma-separated",
            ),
            ("X-RateLimit-Limit", "The tightest bucket's limit"),
            (
                "X-RateLimit-Remaining",
                "The tightest bucket's remaining events",
            ),
            (
                "X-RateLimit-Reset",
                "Seconds until the tightest bucket is full again",
            ),
        ] {
            let schema = if name.starts_with("X-") {
                Type::Integer
            } else {
                Type::String
            };
            response.headers.insert(name.into(), header(text, schema));
        }
    }
}

fn operations(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = (&String, &mut Operation)> {
    openapi.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ]
        .into_iter()
        .flatten()
        .map(move |op| (path, op))
    })
}

impl Modify for Headers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, op) in operations(openapi) {
            let publish = path.starts_with("/publish");
            for (status, response) in op.responses.responses.iter_mut() {
                if let RefOr::T(response) = response {
                    add_headers(status, response, publish);
                }
            }
        }
    }
}

/// The grammar of channel names, event types and ids (courier-core's checks), so the
/// document refuses what the server refuses.
struct Grammar;

/// Channel names: dot-separated segments of 1 to 64 `A-Z a-z 0-9 _ - : @`, 255 bytes at most.
const CHANNEL_PATTERN: &str = r"^[A-Za-z0-9_:@-]{1,64}(\.[A-Za-z0-9_:@-]{1,64})*$";
/// Event types: dot-separated lowercase words of `a-z 0-9 _ -`, 128 bytes at most.
const TYPE_PATTERN: &str = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$";
/// Event ids: up to 128 bytes of `A-Z a-z 0-9 _ - . :` (empty or absent: the server assigns one).
const ID_PATTERN: &str = r"^[A-Za-z0-9_.:-]{0,128}$";

fn constrain(schema: &mut RefOr<Schema>, pattern: &str, max_length: usize) {
    if let RefOr::T(Schema::Object(o)) = schema {
        o.pattern = Some(pattern.to_owned());
        o.max_length = Some(max_length);
    }
}

impl Modify for Grammar {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            if let Some(channel) = components.schemas.get_mut("ChannelName") {
                constrain(channel, CHANNEL_PATTERN, 255);
            }
            // A timestamp is any u64 (JSON Schema's `int64` would stop at 2^63 - 1), written
            // as any whole number (`5`, `5.0`, `5e3`: JSON Schema's `integer`).
            if let Some(RefOr::T(Schema::Object(metadata))) = components.schemas.get_mut("Metadata")
            {
                if let Some(RefOr::T(Schema::Object(ts))) = metadata.properties.get_mut("timestamp")
                {
                    ts.format = None;
                    ts.maximum = Some(utoipa::Number::UInt(
                        usize::try_from(u64::MAX).unwrap_or(usize::MAX),
                    ));
                }
            }
            if let Some(RefOr::T(Schema::Object(event))) = components.schemas.get_mut("Event") {
                if let Some(t) = event.properties.get_mut("type") {
                    constrain(t, TYPE_PATTERN, 128);
                }
                if let Some(id) = event.properties.get_mut("id") {
                    constrain(id, ID_PATTERN, 128);
                }
                // Any JSON value is kept verbatim; only a catalogue type's data must be an
                // object (of the catalogue's shape).
                event.properties.insert(
                    "data".to_owned(),
                    ObjectBuilder::new()
                        .schema_type(SchemaType::AnyValue)
                        .description(Some(
                            "The payload, kept verbatim: any JSON value; for a type of the event \
                             catalogue, an object of the catalogue's shape.",
                        ))
                        .into(),
                );
                // The path names the channel. A body may still carry `channel`, but only the
                // path's, which a schema cannot say: the member is left out of the schema (an
                // extra member is allowed), so no schema-valid body can differ from the path.
                let mut without_channel = event.clone();
                without_channel.required.retain(|r| r != "channel");
                without_channel.properties.remove("channel");
                without_channel.description = Some(
                    "An event for `POST /publish/{channel}`: the path names the channel. A body \
                     may also carry `channel`, but only equal to the path's (400 \
                     `INVALID_EVENT` on `channel` otherwise)."
                        .to_owned(),
                );
                components.schemas.insert(
                    "ChannelEvent".to_owned(),
                    RefOr::T(Schema::Object(without_channel)),
                );
            }
        }
        for (_, op) in operations(openapi) {
            for param in op.parameters.iter_mut().flatten() {
                if param.name == "channel" {
                    param.schema = Some(Ref::from_schema_name("ChannelName").into());
                }
            }
        }
    }
}

/// `{"status": ...}` of `/health/live` and `/health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// `ok` (live); `ready`, `draining` or `unavailable` (ready).
    pub status: String,
    /// Why the backend is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An event for `POST /publish/{channel}`: [`courier_core::Event`] whose `channel` may be
/// left out (the path names it; when present it must equal the path's). Its schema is
/// `Event`'s with `channel` optional, written by [`Grammar`].
#[derive(ToSchema)]
pub(crate) struct ChannelEvent;

/// The HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Courier reference server", description = "HTTP API of the Courier reference server. The WebSocket protocol spoken after the upgrade of GET /ws and GET /ws/{channel} is described in docs/protocol.md. Every error answer is `ErrorResponse` JSON, including 404 (unknown path), 405 (wrong method, with `Allow`) and the 400/414/431 of a request that cannot be read as HTTP/1.1."),
    paths(
        http::publish,
        http::publish_to_channel,
        http::publish_batch,
        replay::history,
        ws::ws_root,
        ws::ws_channel,
        http::health,
        http::live,
        http::ready,
        http::stats,
        http::metrics,
        openapi_json,
        console::page,
        console::asset,
        admin::connections,
        admin::channels,
        admin::rate_limits,
    ),
    components(schemas(
        wire::PublishResponse,
        wire::BatchRequest,
        wire::BatchResponseBody,
        wire::BatchItemResult,
        wire::ItemStatus,
        courier_core::ErrorResponse,
        courier_core::ErrorBody,
        courier_core::Event,
        courier_core::Metadata,
        courier_core::ErrorCode,
        courier_core::ChannelName,
        courier_core::history::HistoryPage,
        courier_core::Delivery,
        crate::health::HealthReport,
        crate::health::Components,
        crate::health::WebSocketHealth,
        crate::health::RedisHealth,
        crate::health::MemoryHealth,
        crate::health::Level,
        Status,
        ChannelEvent,
        admin::ConnectionsReport,
        admin::ConnectionInfo,
        admin::ChannelsReport,
        admin::ChannelInfo,
        admin::RateLimitsReport,
        admin::RateLimitMinute,
        admin::RateLimitRefusal,
    )),
    modifiers(&Bearer, &Headers, &Grammar),
)]
pub struct ApiDoc;

/// The test-only fault-injection routes (`enable_fault_injection`).
#[derive(OpenApi)]
#[openapi(paths(
    fault::get,
    fault::drop_all,
    fault::fail,
    fault::delay,
    fault::reset,
    fault::requests,
))]
struct FaultDoc;

/// The document for a server running with `config`: with fault injection on, the `/_fault`
/// routes are added, and the API routes may answer an injected 429 or 503.
pub fn document(config: &Config) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if config.enable_fault_injection {
        let injected = |status: &str| -> Response {
            let mut r = ResponseBuilder::new()
                .description(format!(
                    "Injected fault (`POST /_fault/fail`, status {status})"
                ))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorResponse")))
                        .build(),
                )
                .build();
            add_headers(status, &mut r, false);
            r
        };
        for (path, op) in operations(&mut doc) {
            if path.starts_with("/publish") || path.starts_with("/ws") {
                for status in ["429", "503"] {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::T(injected(status)));
                }
            }
        }
        doc.merge(FaultDoc::openapi());
    }
    doc
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses(
    (status = 200, description = "The OpenAPI 3.1 document of this server", body = Object, content_type = "application/json"),
))]
pub(crate) async fn openapi_json(
    State(state): State<SharedState>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(document(&state.config))
}
