//! The native Courier client: one tokio task driving the sans-IO [`courier_core::Client`].
//!
//! The core decides everything a client does: connecting on the first subscription,
//! reconnect with backoff, resume with `since`, heartbeats, no duplicates, several listeners
//! per channel and their flow control; stamping, batching, priorities, idempotency ids,
//! Retry-After, the client-side rate limits, the retry budget and dead letters; one token
//! shared by HTTP and the WebSocket. This crate only moves bytes and time: it opens the
//! WebSocket (tokio-tungstenite), posts batches (reqwest with a keep-alive pool, rustls with
//! ring), asks the [`TokenProvider`], and hands the core's results to the application.
//!
//! [`Client`], [`Publisher`] and [`Subscriber`] are cheap handles on that one task; the
//! client closes when [`Client::close`] is called or the last handle (subscriptions
//! included) is dropped.
//!
//! ```no_run
//! use courier_client::{Client, ClientConfig, StaticToken};
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), courier_core::Error> {
//! let client = Client::new(
//!     ClientConfig::new("http://127.0.0.1:8766").service_name("backtester"),
//!     Arc::new(StaticToken("<jwt>".into())),
//! )?;
//! let mut sub = client.subscribe("backtest.abc", None)?;
//! let ack = client
//!     .publish("backtest.abc", "backtest.progress", &serde_json::json!({"backtest_id": "abc", "percent": 42.5}))
//!     .await?;
//! println!("stored at offset {}", ack.offset);
//! while let Some(Ok(delivery)) = sub.next_event().await {
//!     println!("{} {}", delivery.event.event_type, delivery.event.data);
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```

mod driver;
mod history;
mod publisher;
mod subscriber;
mod token;
mod wire;

use std::sync::{Arc, Once};
use std::time::Duration;

use courier_core::client::{EventOptions, PublishItem};
use courier_core::queue::{PublishOptions, PublishResult};
use courier_core::time::Instant;
use courier_core::{ClientStats, Endpoints, Error, StreamPosition, UsageError};

pub use courier_core::client::DEFAULT_SUBSCRIPTION_BUFFER;
pub use courier_core::history::{HistoryPage, HistoryQuery, HistoryStart};
pub use driver::Completer;
pub use history::History;
pub use publisher::Publisher;
pub use subscriber::{ClientEvent, Listener, Subscriber, Subscription, SubscriptionItem};
pub use token::{BoxFuture, StaticToken, TokenProvider, token_fn};

/// This SDK's name and version, sent in `connect`.
pub const CLIENT_NAME: &str = concat!("courier-rust/", env!("CARGO_PKG_VERSION"));

/// How a [`Client`] is set up. Every field has a sensible default except the URL.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server: `http(s)://host:port[/prefix]` or `ws(s)://host:port[/prefix][/ws]`
    /// (read by [`Endpoints::parse`]).
    pub base_url: String,
    /// What the core decides with: `service_name`, `queue`, `connection`,
    /// `subscription_buffer`.
    pub core: courier_core::ClientConfig,
    /// How long one HTTP request may take before it counts as failed (the core then decides
    /// whether to retry).
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per host; `None` (the default) keeps as many as the
    /// queue may have requests in flight (`core.queue.max_in_flight`).
    pub pool_max_idle_per_host: Option<usize>,
    /// Seed for ids and jitter; random when `None`.
    pub seed: Option<u64>,
    /// Told about connection states and errors.
    pub listener: Option<Listener>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("core", &self.core)
            .field("request_timeout", &self.request_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults for a server at `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        let mut core = courier_core::ClientConfig::default();
        core.connection.client_name = CLIENT_NAME.into();
        Self {
            base_url: base_url.into(),
            core,
            request_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: None,
            seed: None,
            listener: None,
        }
    }

    /// Sets the service name (`metadata.source` of published events that do not name one).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.core.service_name = name.into();
        self
    }

    /// Sets the listener.
    pub fn listener(mut self, listener: impl Fn(ClientEvent) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }
}

/// Keeps the client alive while a handle exists; the last one dropped closes it.
pub(crate) struct Owner {
    pub(crate) shared: Arc<driver::Shared>,
}

impl Owner {
    /// Closes the client and waits until the driver is done (queued events sent).
    async fn close(&self) {
        self.shared.close();
        let mut done = self.shared.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }

    /// The core's counters, and the bytes this driver's sockets moved (which the core
    /// cannot know).
    fn stats(&self) -> ClientStats {
        let mut stats = self.shared.lock().core.stats(Instant::now());
        stats.wire_bytes_received = Some(self.shared.wire.received());
        stats.wire_bytes_sent = Some(self.shared.wire.sent());
        stats
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// A Courier client: one task driving the core, with a [`Publisher`] and a [`Subscriber`]
/// handle on it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    publisher: Publisher,
    subscriber: Subscriber,
    http: history::HttpIo,
}

impl std::fmt::Debug for history::HttpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpIo")
            .field("http_base", &self.http_base)
            .finish_non_exhaustive()
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another library may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One event to publish with default options: `data` goes out as JSON; the core stamps its
/// id, `metadata.timestamp` and `metadata.source`.
pub fn event(channel: &str, event_type: &str, data: &serde_json::Value) -> PublishItem {
    PublishItem {
        channel: channel.to_owned(),
        event_type: event_type.to_owned(),
        data_json: data.to_string(),
        event: EventOptions::default(),
        options: PublishOptions::default(),
    }
}

impl Client {
    /// A client on the current tokio runtime. Nothing connects until the first publish or
    /// subscription.
    pub fn new(config: ClientConfig, tokens: Arc<dyn TokenProvider>) -> Result<Self, Error> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| Error::from(UsageError::Closed))?;
        Self::with_handle(config, tokens, &handle)
    }

    /// A client whose task runs on `handle` (for callers outside the runtime).
    pub fn with_handle(
        config: ClientConfig,
        tokens: Arc<dyn TokenProvider>,
        handle: &tokio::runtime::Handle,
    ) -> Result<Self, Error> {
        install_crypto();
        let endpoints = Endpoints::parse(&config.base_url)?;
        // Every request in flight holds a connection and gives it back when answered. A pool
        // smaller than `max_in_flight` closes the surplus after each round and opens it again
        // on the next (a fixed 32 cost 433 closes per 5,200 requests at 64 in flight), so by
        // default the pool keeps exactly what can be in flight at once.
        let pool = config
            .pool_max_idle_per_host
            .unwrap_or(config.core.queue.max_in_flight.max(1));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(CLIENT_NAME)
            .build()
            .map_err(|e| Error::Transport(format!("cannot build the HTTP client: {e}")))?;
        let seed = config.seed.unwrap_or_else(random_seed);
        let history_io = history::HttpIo {
            http: http.clone(),
            http_base: endpoints.http_base.clone(),
            tokens: tokens.clone(),
            request_timeout: config.request_timeout,
        };
        let io = driver::Io {
            http,
            batch_url: endpoints.publish_batch_url(),
            ws_url: endpoints.ws_url,
            request_timeout: config.request_timeout,
            max_frame_bytes: config.core.connection.max_frame_bytes,
            tokens,
            listener: config.listener,
        };
        let core = courier_core::Client::new(config.core, seed, Instant::now());
        let shared = driver::spawn(core, io, handle);
        let state = shared.conn_state.subscribe();
        let owner = Arc::new(Owner { shared });
        Ok(Self {
            publisher: Publisher {
                owner: owner.clone(),
            },
            subscriber: Subscriber { owner, state },
            http: history_io,
        })
    }

    /// Reads `channel`'s history through the replay API (`GET /history/{channel}`), page by
    /// page from where `query` says, following each page's cursor. The query is checked
    /// first (a bad `limit` is [`Error::Invalid`] before any request); refusals are the
    /// same typed errors as elsewhere (`FORBIDDEN_CHANNEL`, `EPOCH_CHANGED`, ...).
    ///
    /// ```no_run
    /// # async fn run(client: courier_client::Client) -> Result<(), courier_core::Error> {
    /// use courier_client::{HistoryQuery, HistoryStart};
    /// let mut pages = client.history(
    ///     "backtest.abc",
    ///     HistoryQuery { start: HistoryStart::After(0), limit: 500 },
    /// )?;
    /// while let Some(page) = pages.next_page().await {
    ///     for d in page?.events {
    ///         println!("{} {}", d.offset, d.event.event_type);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn history(&self, channel: &str, query: HistoryQuery) -> Result<History, Error> {
        let channel = courier_core::ChannelName::new(channel)?;
        let pager = courier_core::history::Pager::new(channel, query)?;
        Ok(History::new(self.http.clone(), pager))
    }

    /// The publishing handle.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The subscribing handle.
    pub fn subscriber(&self) -> &Subscriber {
        &self.subscriber
    }

    /// Publishes one event with default options and waits for its acknowledgement.
    pub async fn publish(
        &self,
        channel: &str,
        event_type: &str,
        data: &serde_json::Value,
    ) -> Result<PublishResult, Error> {
        self.publisher
            .publish(event(channel, event_type, data))
            .await
    }

    /// Publishes several events (all are validated first and none is queued if one is
    /// invalid) and waits for every outcome, in order.
    pub async fn publish_many(
        &self,
        items: Vec<PublishItem>,
    ) -> Result<Vec<Result<PublishResult, Error>>, Error> {
        let mut rxs = Vec::with_capacity(items.len());
        let items = items
            .into_iter()
            .map(|item| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                rxs.push(rx);
                let done: Completer = Box::new(move |r| {
                    let _ = tx.send(r);
                });
                (item, done)
            })
            .collect();
        self.publisher.enqueue_many(items)?;
        let mut out = Vec::with_capacity(rxs.len());
        for rx in rxs {
            out.push(
                rx.await
                    .unwrap_or_else(|_| Err(Error::Transport("the client stopped".into()))),
            );
        }
        Ok(out)
    }

    /// Subscribes to `channel` (resuming after `since` when given); see
    /// [`Subscriber::subscribe`].
    pub fn subscribe(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<Subscription, Error> {
        self.subscriber.subscribe(channel, since)
    }

    /// Waits until every queued event is acknowledged or dead-lettered.
    pub async fn flush(&self) {
        self.publisher.flush().await;
    }

    /// Closes the WebSocket at once, refuses new publishes and subscriptions, sends what was
    /// queued, and waits until the client's task is done. Every subscription then ends.
    pub async fn close(&self) {
        self.publisher.owner.close().await;
    }

    /// Every counter and gauge, by name (the same names in every SDK). `wire_bytes_received`
    /// and `wire_bytes_sent` are always `Some` here: the WebSocket's TCP bytes (TLS and the
    /// handshake included), over every connection since the client was made. This client
    /// does not offer permessage-deflate, so they exceed the JSON received.
    pub fn stats(&self) -> ClientStats {
        self.publisher.owner.stats()
    }
}
