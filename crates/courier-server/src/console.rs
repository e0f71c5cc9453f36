//! The admin console's files (`GET /admin`, `GET /admin/assets/{path}`), read at each request
//! from the built console's folder, so the server builds without Node and serves the console
//! once `make console` has built it.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use courier_core::ErrorCode;
use tower::ServiceExt as _;

use crate::SharedState;
use crate::http::ApiError;

/// Where the built console is: `admin.console_dir`, else `console/dist` of the source tree
/// this binary was built from (so a checkout serves it with no configuration once built).
pub fn console_dir(configured: &str) -> PathBuf {
    if configured.is_empty() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../console/dist")
    } else {
        PathBuf::from(configured)
    }
}

/// What to do when the console is not built (the folder `dir` has no `index.html`).
fn not_built_text(dir: &Path) -> String {
    format!(
        "the admin console is not built (no {}): run `make console`, or set admin.console_dir (COURIER_ADMIN__CONSOLE_DIR) to a built console",
        dir.join("index.html").display()
    )
}

/// The page a person sees at `/admin` before the console is built: what to run.
fn not_built_page(dir: &Path) -> Response {
    let text = not_built_text(dir)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Courier admin console</title>\n<h1>Courier admin console</h1>\n<p id=not-built>{text}</p>\n"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

/// `GET /admin`: the console's page.
#[utoipa::path(get, path = "/admin", tag = "admin",
    responses(
        (status = 200, description = "The admin console (HTML; it asks for an admin token), or, before `make console` built it, a page saying how to build it", content_type = "text/html", body = String),
    ))]
pub(crate) async fn page(State(state): State<SharedState>) -> Response {
    let dir = console_dir(&state.config.admin.console_dir);
    match tokio::fs::read(dir.join("index.html")).await {
        Ok(page) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            page,
        )
            .into_response(),
        Err(_) => not_built_page(&dir),
    }
}

/// `GET /admin/assets/{path}`: the console's scripts, styles and WebAssembly.
#[utoipa::path(get, path = "/admin/assets/{path}", tag = "admin",
    params(("path" = String, Path, description = "A file of the built console, e.g. `console.js`")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = String),
        (status = 404, description = "No such file, or the console is not built (the message says how to build it)", body = courier_core::ErrorResponse),
    ))]
pub(crate) async fn asset(State(state): State<SharedState>, request: Request) -> Response {
    let dir = console_dir(&state.config.admin.console_dir);
    if !dir.join("index.html").is_file() {
        return ApiError::new(ErrorCode::BadRequest, not_built_text(&dir))
            .with_status(StatusCode::NOT_FOUND)
            .into_response();
    }
    // ServeDir resolves the rest of the path under `assets/` (refusing `..`) and sets the
    // content type (`application/wasm` for the WebAssembly).
    let rest = request
        .uri()
        .path()
        .strip_prefix("/admin/assets")
        .unwrap_or("/")
        .to_owned();
    let (mut parts, body) = request.into_parts();
    parts.uri = match Uri::try_from(rest) {
        Ok(u) => u,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let serve = tower_http::services::ServeDir::new(dir.join("assets"));
    match serve.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}
