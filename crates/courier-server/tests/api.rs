//! Integration tests of the reference server, started in-process on 127.0.0.1:0 and driven
//! with reqwest and tokio-tungstenite. One binary (see Cargo.toml) to keep link times low.

#[path = "api/util.rs"]
mod util;

#[path = "api/admin.rs"]
mod admin;
#[macro_use]
#[path = "api/batches.rs"]
mod batches;

#[path = "api/auth.rs"]
mod auth;
#[path = "api/bodies.rs"]
mod bodies;
#[path = "api/faults.rs"]
mod faults;
#[path = "api/frames.rs"]
mod frames;
#[path = "api/hardening.rs"]
mod hardening;
#[path = "api/history.rs"]
mod history;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/ops.rs"]
mod ops;
#[path = "api/paging.rs"]
mod paging;
#[path = "api/publish.rs"]
mod publish;
#[path = "api/resume.rs"]
mod resume;

/// The batch cases on the in-memory backend (`redis.rs` runs them on Redis).
mod batches_on_memory {
    batch_tests!(((), crate::util::start().await));
}
