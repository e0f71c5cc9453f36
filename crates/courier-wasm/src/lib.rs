//! The WASM driver of the TypeScript client (browsers, web workers, Node).
//!
//! The core decides; this crate moves bytes and time for it, as `courier-client` does
//! natively. [`driver::CoreClient`] owns one [`courier_core::client::Client`] (the
//! connection, the publish queue, the one token, stamping, listeners, endpoints, stats) and
//! its I/O: the WebSocket (web-sys, with the constructor the facade passes: the browser's,
//! Node 22's, or the `ws` package's), `fetch` (web-sys and wasm-bindgen-futures), the one
//! timer (gloo-timers), and typed results for JavaScript (serde-wasm-bindgen). The
//! TypeScript layer (`npm/src/`) is the facade: options, overloads, generated event types,
//! error classes, promises and React hooks. [`history::HistoryPager`] is `history()`'s
//! pager: the core's replay-API policy, whose `GET`s the facade sends.
//!
//! Two builds: with the `publish` feature (default; the `courier-client` entry point) and
//! without it (`courier-client/subscriber`: no publish queue, no `fetch`). The test build
//! (`--features conformance`, into `npm/pkg-test`) adds [`evaluate_vector`] for the shared
//! vectors. On native targets the crate is empty.

#[cfg(target_arch = "wasm32")]
pub mod driver;
#[cfg(target_arch = "wasm32")]
pub mod history;

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
