//! The OpenAPI document of the HTTP API, generated from the handlers' annotations.

use axum::Json;
use courier_core::wire;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http;

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

/// The HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Courier reference server", description = "HTTP API of the Courier reference server. The WebSocket protocol (GET /ws, GET /ws/{channel}) is described in docs/protocol.md."),
    paths(
        http::publish,
        http::publish_to_channel,
        http::publish_batch,
        http::health,
        http::live,
        http::ready,
        http::stats,
        http::metrics,
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
        crate::health::HealthReport,
        crate::health::Components,
        crate::health::WebSocketHealth,
        crate::health::RedisHealth,
        crate::health::MemoryHealth,
        crate::health::Level,
    )),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
