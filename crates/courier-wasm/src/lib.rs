//! wasm-bindgen glue between `courier-core` and JavaScript hosts (browsers, web workers, Node).
//!
//! The core decides; the TypeScript layer moves bytes and time. [`driver::Driver`] owns one
//! [`courier_core::client::Client`] (the connection, the publish queue, the one token, event
//! stamping, listeners, endpoints and stats); the TypeScript layer (`npm/src/client.ts`) owns
//! the WebSocket (the host's, or the `ws` package in Node), `fetch` and one `setTimeout`,
//! reports what happens through the driver's `handle*` methods and does what its outputs say.
//! Reconnect, backoff, resume, gaps, Retry-After, the client-side GCRA, the retry budget, dead
//! letters, token sharing, stamping and subscribe-twice all come from the core.
//!
//! Boundary choices, for size and speed:
//! - The driver never calls JavaScript: no closures, futures, `web-sys` or `js-sys` bindings,
//!   so the WASM and its generated glue stay small.
//! - An event frame is decided on in one call (`handleText` returns the listener to hand it
//!   to); the TypeScript layer `JSON.parse`s the very string it passed in, once.
//! - Outputs cross as an [`driver::OutputKind`] (a TypeScript `enum`) plus a number and a
//!   string; the few JSON payloads and the named stats are written by the core's small JSON
//!   writer (no `serde_json`, no `Serialize` of the outputs, no float formatting).
//! - The WASM is built without `courier-core`'s `conformance` feature (see `npm/README.md`);
//!   it validates catalogue event data like every other build (the core's tables, no serde).
//!   The test build (`--features conformance`, into `npm/pkg-test`) adds [`evaluate_vector`]
//!   for the shared vectors.
//!
//! The public API is written in TypeScript (`npm/src/`); names here are exported in
//! camelCase with `js_name`. On native targets the crate is empty.

#[cfg(target_arch = "wasm32")]
pub mod driver;

/// Recomputes one case of `tests/vectors/{file}.json` with the core (see
/// `courier_core::conformance::evaluate`); the runner asserts the answer equals the case.
/// Only in the test build (`conformance` feature).
#[cfg(all(target_arch = "wasm32", feature = "conformance"))]
#[wasm_bindgen::prelude::wasm_bindgen(js_name = evaluateVector)]
pub fn evaluate_vector(file: &str, case_json: &str) -> Result<String, wasm_bindgen::JsError> {
    use wasm_bindgen::JsError;
    let case: serde_json::Value =
        serde_json::from_str(case_json).map_err(|e| JsError::new(&e.to_string()))?;
    courier_core::conformance::evaluate(file, &case, courier_core::time::Instant::now())
        .map(|v| v.to_string())
        .map_err(|e| JsError::new(&e))
}

/// The vector files `evaluateVector` understands, by file stem (test build only).
#[cfg(all(target_arch = "wasm32", feature = "conformance"))]
#[wasm_bindgen::prelude::wasm_bindgen(js_name = vectorFiles)]
pub fn vector_files() -> Vec<String> {
    courier_core::conformance::VECTOR_FILES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The field names of `courier_core::client::ClientStats` as serde writes them (test build
/// only): the npm tests check that `stats()` carries exactly these.
#[cfg(all(target_arch = "wasm32", feature = "conformance"))]
#[wasm_bindgen::prelude::wasm_bindgen(js_name = statsFieldNames)]
pub fn stats_field_names() -> Vec<String> {
    match serde_json::to_value(courier_core::client::ClientStats::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// A free-list allocator of about 1 KB instead of the standard library's dlmalloc (about
/// 7 KB): the client allocates little (frames, event texts, queue entries) and frees it
/// soon, so a first-fit free list is fast enough and keeps the download small.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());
