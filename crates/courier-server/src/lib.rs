//! The Courier reference server: WebSocket protocol v1 and HTTP publish, JWT auth with the
//! algorithm pinned, channel authorization, GCRA rate limits, connection limits, per-channel
//! history with resume, the idempotency window, health and Prometheus metrics, graceful
//! shutdown and opt-in fault injection.
//!
//! Tests and other crates start it in-process with [`start`] on a listener bound to port 0;
//! the binary calls [`serve`], which runs until SIGTERM or SIGINT.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use axum::routing::{MethodFilter, MethodRouter, on};
use courier_core::ChannelName;
use courier_core::event::EventIdGenerator;
use courier_core::wire::{PUBLISH_BATCH_PATH, PUBLISH_CHANNEL_PATH, PUBLISH_PATH};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub mod admin;
pub mod auth;
pub mod config;
pub mod connections;
pub mod console;
mod deflate;
pub mod fault;
pub mod health;
pub mod http;
mod json_errors;
pub mod logs;
pub mod metrics;
pub mod openapi;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis;
mod replay;
mod serve;
pub mod store;
mod upgrade;
pub mod ws;

pub use config::Config;

use crate::auth::Verifier;
use crate::connections::ConnectionRegistry;
use crate::fault::Faults;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{
    Broker, ConnectionStore, HistoryStore, IdempotencyStore, MemoryBroker, MemoryConnections,
    MemoryHistory, MemoryIdempotency, MemoryRateLimits, RateLimitStore,
};

/// The state shared by every handler.
pub type SharedState = Arc<AppState>;

/// The backends; [`Stores::in_memory`] for one instance.
#[derive(Clone)]
pub struct Stores {
    /// Channel history (assigns offsets, owns the epoch).
    pub history: Arc<dyn HistoryStore>,
    /// Fan-out.
    pub broker: Arc<dyn Broker>,
    /// GCRA buckets.
    pub rate_limits: Arc<dyn RateLimitStore>,
    /// The idempotency window.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Per-user connection counts.
    pub connections: Arc<dyn ConnectionStore>,
    /// Cancelled when the server stops: ends the backend's background tasks.
    pub background: CancellationToken,
}

impl Stores {
    /// The stores `config.backend` names (Redis: connects, waiting up to
    /// `redis.startup_timeout_ms` for it).
    pub async fn for_config(config: &Config) -> Result<Self, ServerError> {
        let background = CancellationToken::new();
        // The history kept apart from the rest, when `history.backend` says so.
        let history: Option<Arc<dyn HistoryStore>> = match config.history.backend {
            config::HistoryBackend::Default => None,
            #[cfg(feature = "postgres")]
            config::HistoryBackend::Postgres => Some(
                postgres::PostgresHistory::connect(&config.history.postgres, background.clone())
                    .await
                    .map_err(|e| ServerError::Backend(e.0))?,
            ),
            #[cfg(not(feature = "postgres"))]
            config::HistoryBackend::Postgres => {
                return Err(ServerError::Backend(
                    "this build has no PostgreSQL support (cargo feature `postgres`)".into(),
                ));
            }
        };
        match config.backend {
            config::Backend::Memory => {
                let mut stores = Self::in_memory(config);
                if let Some(h) = history {
                    stores.history = h;
                }
                stores.background = background;
                Ok(stores)
            }
            #[cfg(feature = "redis")]
            config::Backend::Redis | config::Backend::RedisCluster => {
                redis::connect(config, history, background)
                    .await
                    .map_err(|e| ServerError::Backend(e.to_string()))
            }
            #[cfg(not(feature = "redis"))]
            config::Backend::Redis | config::Backend::RedisCluster => Err(ServerError::Backend(
                "this build has no Redis support (cargo feature `redis`)".into(),
            )),
        }
    }

    /// In-process stores sized by `config`.
    pub fn in_memory(config: &Config) -> Self {
        Self {
            history: Arc::new(MemoryHistory::new(
                config.history.max_events_per_channel,
                Duration::from_secs(config.history.max_age_secs),
                config.history.max_channels,
            )),
            broker: Arc::new(MemoryBroker::new()),
            rate_limits: Arc::new(MemoryRateLimits::new()),
            idempotency: Arc::new(MemoryIdempotency::new(
                Duration::from_secs(config.idempotency.window_secs),
                config.idempotency.max_entries,
            )),
            connections: Arc::new(MemoryConnections::new()),
            background: CancellationToken::new(),
        }
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid or unsafe.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A JWT key is unusable.
    #[error("auth configuration: {0}")]
    Auth(String),
    /// Binding or serving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The backend (Redis) could not be reached or set up.
    #[error("backend: {0}")]
    Backend(String),
}

const ORDER_SHARDS: usize = 64;

/// Everything the handlers share.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// JWT verification.
    pub verifier: Verifier,
    /// History.
    pub history: Arc<dyn HistoryStore>,
    /// Fan-out.
    pub broker: Arc<dyn Broker>,
    /// Idempotency.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// Metrics.
    pub metrics: Metrics,
    /// Connection limits.
    pub connections: Arc<ConnectionRegistry>,
    /// Fault injection switches.
    pub faults: Faults,
    /// What the admin API reports (connections, channel rates, rate-limit decisions).
    pub admin: Arc<admin::AdminState>,
    background: CancellationToken,
    started: Instant,
    draining: AtomicBool,
    /// WebSocket connections upgraded but not authenticated yet (`ws.max_unauthenticated`).
    pub(crate) unauthenticated: std::sync::atomic::AtomicUsize,
    shutdown_tx: watch::Sender<bool>,
    drop_tx: watch::Sender<u64>,
    ws_tracker: TaskTracker,
    /// Shared deflate streams of WebSocket subscribers (permessage-deflate).
    pub(crate) cohorts: deflate::Cohorts,
    sessions: AtomicU64,
    ids: std::sync::Mutex<EventIdGenerator>,
    order: Vec<tokio::sync::Mutex<()>>,
}

impl AppState {
    /// State for `config` over `stores`.
    pub fn new(config: Config, stores: Stores) -> Result<Self, ServerError> {
        // With limits on, a token naming an unknown tier is refused rather than counted ×1.
        let tiers = config
            .rate_limits
            .enabled
            .then(|| config.rate_limits.tiers.keys().cloned().collect());
        let verifier = Verifier::new(&config.auth, tiers).map_err(ServerError::Auth)?;
        let limiter = RateLimiter::new(config.rate_limits.clone(), stores.rate_limits);
        // Every bucket's label set exists from the start, so counting allocates nothing.
        let metrics = Metrics::new(limiter.bucket_names());
        let seed = u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        Ok(Self {
            verifier,
            history: stores.history,
            broker: stores.broker,
            idempotency: stores.idempotency,
            limiter,
            metrics,
            connections: Arc::new(ConnectionRegistry::new(
                config.connections.clone(),
                stores.connections,
            )),
            faults: Faults::default(),
            admin: Arc::new(admin::AdminState::new(config.admin.rate_limit_log)),
            background: stores.background,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            unauthenticated: std::sync::atomic::AtomicUsize::new(0),
            shutdown_tx: watch::channel(false).0,
            drop_tx: watch::channel(0).0,
            ws_tracker: TaskTracker::new(),
            cohorts: Default::default(),
            sessions: AtomicU64::new(0),
            ids: std::sync::Mutex::new(EventIdGenerator::new(seed)),
            order: (0..ORDER_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            config,
        })
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn next_event_id(&self) -> String {
        self.ids.lock().expect("id lock").next_id(http::unix_ms())
    }

    pub(crate) fn next_session(&self) -> String {
        format!(
            "s{}-{}",
            self.sessions.fetch_add(1, Ordering::Relaxed) + 1,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    }

    /// The locks that serialise append + fan-out per channel (so subscribers see offsets in
    /// order) for every channel of `channels`, each once, in one global order so that two
    /// publishers taking them one after another cannot deadlock.
    pub(crate) fn order_locks<'a>(
        &self,
        channels: impl IntoIterator<Item = &'a ChannelName>,
    ) -> Vec<&tokio::sync::Mutex<()>> {
        let mut shards: Vec<usize> = channels
            .into_iter()
            .map(|channel| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                channel.hash(&mut h);
                (h.finish() as usize) % ORDER_SHARDS
            })
            .collect();
        shards.sort_unstable();
        shards.dedup();
        shards.into_iter().map(|i| &self.order[i]).collect()
    }
}

/// Makes one route's method router for its method.
type MakeRoute = fn(MethodFilter) -> MethodRouter<SharedState>;

/// Every route the server serves under `config`: method, path, handler. [`app`] builds its
/// router from this table alone, and [`routes`] lists it, so a test can hold the OpenAPI
/// document to exactly these routes.
fn route_table(config: &Config) -> Vec<(Method, &'static str, MakeRoute)> {
    let mut table: Vec<(Method, &'static str, MakeRoute)> = vec![
        (Method::POST, PUBLISH_PATH, |m| on(m, http::publish)),
        (Method::POST, PUBLISH_BATCH_PATH, |m| {
            on(m, http::publish_batch)
        }),
        (Method::POST, PUBLISH_CHANNEL_PATH, |m| {
            on(m, http::publish_to_channel)
        }),
        (Method::GET, "/ws", |m| on(m, ws::ws_root)),
        (Method::GET, "/ws/{channel}", |m| on(m, ws::ws_channel)),
        (Method::GET, courier_core::history::HISTORY_PATH, |m| {
            on(m, replay::history)
        }),
        (Method::GET, "/health", |m| on(m, http::health)),
        (Method::GET, "/health/live", |m| on(m, http::live)),
        (Method::GET, "/health/ready", |m| on(m, http::ready)),
        (Method::GET, "/stats", |m| on(m, http::stats)),
        (Method::GET, "/metrics", |m| on(m, http::metrics)),
        (Method::GET, "/openapi.json", |m| {
            on(m, openapi::openapi_json)
        }),
        (Method::GET, "/admin", |m| on(m, console::page)),
        (Method::GET, "/admin/assets/{*path}", |m| {
            on(m, console::asset)
        }),
        (Method::GET, "/admin/api/connections", |m| {
            on(m, admin::connections)
        }),
        (Method::GET, "/admin/api/channels", |m| {
            on(m, admin::channels)
        }),
        (Method::GET, "/admin/api/rate-limits", |m| {
            on(m, admin::rate_limits)
        }),
    ];
    if config.enable_fault_injection {
        table.extend([
            (Method::GET, "/_fault", (|m| on(m, fault::get)) as MakeRoute),
            (Method::POST, "/_fault/drop", |m| on(m, fault::drop_all)),
            (Method::POST, "/_fault/fail", |m| on(m, fault::fail)),
            (Method::POST, "/_fault/delay", |m| on(m, fault::delay)),
            (Method::POST, "/_fault/reset", |m| on(m, fault::reset)),
            (Method::GET, "/_fault/requests", |m| on(m, fault::requests)),
        ]);
    }
    table
}

/// The method and path of every route the server serves under `config` (the fault routes
/// only with `enable_fault_injection`). `GET` routes answer `HEAD` too; any path or method
/// not listed gets a JSON 404 or 405.
pub fn routes(config: &Config) -> Vec<(Method, &'static str)> {
    route_table(config)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

/// The router over `state`.
pub fn app(state: SharedState) -> Router {
    let single_limit = DefaultBodyLimit::max(state.config.max_frame_bytes);
    let batch_limit = DefaultBodyLimit::max(state.config.max_batch_bytes);
    let mut router = Router::new();
    for (method, path, make) in route_table(&state.config) {
        let filter = MethodFilter::try_from(method).expect("a method axum routes");
        let route = match path {
            PUBLISH_BATCH_PATH => make(filter).layer(batch_limit),
            PUBLISH_PATH | PUBLISH_CHANNEL_PATH => make(filter).layer(single_limit),
            _ => make(filter),
        };
        router = router.route(path, route);
    }
    if state.config.enable_fault_injection {
        router = router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            fault::middleware,
        ));
    }
    // Browsers may read what the SDKs' core reads, and the request id.
    let exposed: Vec<HeaderName> = courier_core::rate_limit::READ_HEADERS
        .into_iter()
        .chain(["x-request-id"])
        .map(HeaderName::from_static)
        .collect();
    let origins = &state.config.cors_origins;
    let cors = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(exposed);
    let cors = if origins.iter().any(|o| o == "*") {
        cors.allow_origin(Any)
    } else {
        cors.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
    };
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        // Headers are not logged: Authorization carries the token.
        tracing::info_span!(
            "http",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %header("x-request-id"),
            correlation_id = %header("x-correlation-id"),
        )
    });
    let body_timeout = Duration::from_millis(state.config.http.body_timeout_ms.max(1));
    router
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            json_errors::json_errors,
        ))
        .layer(cors)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// A running server started by [`start`].
pub struct ServerHandle {
    addr: SocketAddr,
    state: SharedState,
    trigger: CancellationToken,
    kill: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (metrics, stores), for tests.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Begins graceful shutdown; [`ServerHandle::wait`] returns when it is done.
    pub fn shutdown(&self) {
        self.trigger.cancel();
    }

    /// Stops at once, as a crashed process would (for tests): the listener closes, every
    /// WebSocket is dropped without a close frame, the backend's background tasks (Redis
    /// heartbeat, fan-out) stop, and shared state is left as it is, for the other
    /// instances to clean up.
    pub async fn kill(self) {
        self.state.background.cancel();
        self.kill.cancel();
        let _ = self.task.await;
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e))),
        }
    }
}

/// Starts serving on `listener` with the backend `config` names; returns at once.
pub async fn start(config: Config, listener: TcpListener) -> Result<ServerHandle, ServerError> {
    let stores = Stores::for_config(&config).await?;
    start_with_stores(config, stores, listener).await
}

/// Starts serving on `listener` with the given stores; returns at once.
pub async fn start_with_stores(
    mut config: Config,
    stores: Stores,
    listener: TcpListener,
) -> Result<ServerHandle, ServerError> {
    let addr = listener.local_addr()?;
    config.resolve_files()?;
    config.check_safety(addr)?;
    let state: SharedState = Arc::new(AppState::new(config, stores)?);
    let trigger = CancellationToken::new();
    let kill = CancellationToken::new();
    let task = tokio::spawn(run(state.clone(), listener, trigger.clone(), kill.clone()));
    Ok(ServerHandle {
        addr,
        state,
        trigger,
        kill,
        task,
    })
}

async fn run(
    state: SharedState,
    listener: TcpListener,
    trigger: CancellationToken,
    kill: CancellationToken,
) -> Result<(), ServerError> {
    let result = tokio::select! {
        r = run_until_stopped(state.clone(), listener, trigger) => r,
        _ = kill.cancelled() => {
            // Dropping `run_until_stopped` aborts the listener task (see below); the
            // WebSockets go without a close frame, as on a crash.
            state.drop_tx.send_modify(|n| *n += 1);
            Ok(())
        }
    };
    state.background.cancel();
    result
}

async fn run_until_stopped(
    state: SharedState,
    listener: TcpListener,
    trigger: CancellationToken,
) -> Result<(), ServerError> {
    let stop_accepting = CancellationToken::new();
    let router = app(state.clone());
    let http_config = state.config.http.clone();
    let server = {
        let stop = stop_accepting.clone();
        tokio::spawn(async move { serve::serve(listener, router, stop, http_config).await })
    };
    // Aborts the listener if this future is dropped (a kill).
    let _abort_on_drop = AbortOnDrop(server.abort_handle());
    trigger.cancelled().await;
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(state.config.shutdown.deadline_ms);
    tracing::info!("shutting down: readiness now 503");
    state.draining.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(state.config.shutdown.drain_delay_ms)).await;
    stop_accepting.cancel();
    state.shutdown_tx.send_replace(true);
    state.ws_tracker.close();
    let abort = server.abort_handle();
    let finished = tokio::time::timeout_at(deadline, async {
        let served = server.await;
        state.ws_tracker.wait().await;
        served
    })
    .await;
    match finished {
        Ok(Ok(Ok(()))) => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(ServerError::Io(e)),
        Ok(Err(e)) => Err(ServerError::Io(std::io::Error::other(e))),
        Err(_) => {
            tracing::warn!("shutdown deadline reached; dropping what is left");
            abort.abort();
            Ok(())
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves until SIGTERM or SIGINT, printing `listening on <addr>` once bound.
pub async fn serve(config: Config, listener: TcpListener) -> Result<(), ServerError> {
    let handle = start(config, listener).await?;
    println!("listening on {}", handle.local_addr());
    {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    tracing::info!(addr = %handle.local_addr(), "listening");
    shutdown_signal().await;
    handle.shutdown();
    handle.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
