//! The native Courier client: tokio drivers of the sans-IO `courier-core`.
//!
//! - [`Publisher`]: publishes over HTTP (`POST /publish/batch`, reqwest with a keep-alive
//!   pool, rustls with ring) through the core's [`PublishQueue`](courier_core::queue::PublishQueue):
//!   batching, priorities, idempotency ids, Retry-After, the client-side GCRA, the retry
//!   budget and dead letters all come from the core.
//! - [`Subscriber`]: receives over one WebSocket (tokio-tungstenite) driven by the core's
//!   [`Connection`](courier_core::connection::Connection): reconnect with backoff, resume
//!   with `since`, heartbeats, token refresh, no duplicates.
//!
//! The core decides; this crate only moves bytes and time.
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

mod publisher;
mod subscriber;
mod token;

use std::sync::{Arc, Once};
use std::time::Duration;

use courier_core::connection::{Connection, ConnectionConfig, ConnectionStats};
use courier_core::queue::{PublishOptions, PublishQueue, PublishResult, QueueConfig, QueueStats};
use courier_core::time::Instant;
use courier_core::{Error, StreamPosition, UsageError, ValidationError, ValidationKind};

pub use publisher::{Completer, EventOptions, Publisher};
pub use subscriber::{
    ClientEvent, DEFAULT_SUBSCRIPTION_BUFFER, Listener, Subscriber, Subscription, SubscriptionItem,
};
pub use token::{BoxFuture, StaticToken, TokenProvider, token_fn};

/// This SDK's name and version, sent in `connect`.
pub const CLIENT_NAME: &str = concat!("courier-rust/", env!("CARGO_PKG_VERSION"));

/// How a [`Client`] is set up. Every field has a sensible default except the URL.
#[derive(Clone)]
pub struct ClientConfig {
    /// `http://host:port` or `https://…`; the WebSocket URL is derived from it.
    pub base_url: String,
    /// `metadata.source` of published events when they do not say.
    pub service_name: Option<String>,
    /// The publish queue's settings.
    pub queue: QueueConfig,
    /// The subscriber connection's settings.
    pub connection: ConnectionConfig,
    /// How long one HTTP request may take before it counts as failed (and is retried).
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per host; `None` (the default) keeps as many as the
    /// queue may have requests in flight (`queue.max_in_flight`).
    pub pool_max_idle_per_host: Option<usize>,
    /// Seed for ids and jitter; random when `None`.
    pub seed: Option<u64>,
    /// Told about connection states and errors.
    pub listener: Option<Listener>,
    /// Unread events a subscription may hold (at least 1). When the application falls
    /// this far behind on a channel, the client stops taking its events and, once half of
    /// them are read, resubscribes after the last one: memory stays bounded and the
    /// server's history fills the hole (a `Gap` item says when it cannot).
    pub subscription_buffer: usize,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("service_name", &self.service_name)
            .field("queue", &self.queue)
            .field("connection", &self.connection)
            .field("request_timeout", &self.request_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("subscription_buffer", &self.subscription_buffer)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults for a server at `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        let connection = ConnectionConfig {
            client_name: CLIENT_NAME.into(),
            ..ConnectionConfig::default()
        };
        Self {
            base_url: base_url.into(),
            service_name: None,
            queue: QueueConfig::default(),
            connection,
            request_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: None,
            seed: None,
            listener: None,
            subscription_buffer: DEFAULT_SUBSCRIPTION_BUFFER,
        }
    }

    /// Sets the service name.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Sets the listener.
    pub fn listener(mut self, listener: impl Fn(ClientEvent) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }
}

/// Counters of both halves of a client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientStats {
    /// The publish queue.
    pub queue: QueueStats,
    /// The subscriber connection.
    pub connection: ConnectionStats,
}

/// A Courier client: a [`Publisher`] and a [`Subscriber`] sharing one token provider.
#[derive(Debug, Clone)]
pub struct Client {
    publisher: Publisher,
    subscriber: Subscriber,
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

fn bad_url(message: impl Into<String>) -> Error {
    ValidationError::new("base_url", ValidationKind::BadFormat, message).into()
}

impl Client {
    /// A client on the current tokio runtime. Nothing connects until the first publish or
    /// subscription.
    pub fn new(config: ClientConfig, tokens: Arc<dyn TokenProvider>) -> Result<Self, Error> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| Error::from(UsageError::Closed))?;
        Self::with_handle(config, tokens, &handle)
    }

    /// A client whose tasks run on `handle` (for callers outside the runtime).
    pub fn with_handle(
        config: ClientConfig,
        tokens: Arc<dyn TokenProvider>,
        handle: &tokio::runtime::Handle,
    ) -> Result<Self, Error> {
        install_crypto();
        let base = config.base_url.trim_end_matches('/').to_owned();
        let ws_base = if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            return Err(bad_url(format!(
                "`{base}` must start with http:// or https://"
            )));
        };
        if base.len() <= "https://".len() {
            return Err(bad_url("the URL has no host"));
        }
        // Every request in flight holds a connection and gives it back when answered. A pool
        // smaller than `max_in_flight` closes the surplus after each round and opens it again
        // on the next (a fixed 32 cost 433 closes per 5,200 requests at 64 in flight), so by
        // default the pool keeps exactly what can be in flight at once.
        let pool = config
            .pool_max_idle_per_host
            .unwrap_or(config.queue.max_in_flight.max(1));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(CLIENT_NAME)
            .build()
            .map_err(|e| Error::Transport(format!("cannot build the HTTP client: {e}")))?;
        let tokens = Arc::new(token::TokenCache::new(tokens));
        let seed = config.seed.unwrap_or_else(random_seed);
        let queue = PublishQueue::new(config.queue.clone(), seed, Instant::now());
        let publisher = Publisher::spawn(
            queue,
            config.service_name.clone().unwrap_or_default(),
            publisher::PublisherSetup {
                http,
                url: publisher::batch_url(&base),
                tokens: tokens.clone(),
                request_timeout: config.request_timeout,
            },
            handle,
        );
        let max_frame_bytes = config.connection.max_frame_bytes;
        let conn = Connection::new(config.connection.clone(), seed.rotate_left(17) ^ 0x5EED);
        let subscriber = Subscriber::spawn(
            conn,
            subscriber::SubscriberSetup {
                url: format!("{ws_base}/ws"),
                tokens,
                listener: config.listener.clone(),
                max_frame_bytes,
                subscription_buffer: config.subscription_buffer,
            },
            handle,
        );
        Ok(Self {
            publisher,
            subscriber,
        })
    }

    /// The HTTP publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The WebSocket subscriber.
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
        let event = self.publisher.event(
            channel,
            event_type,
            data.to_string(),
            EventOptions::default(),
        )?;
        self.publisher
            .publish(event, PublishOptions::default())
            .await
    }

    /// Subscribes to `channel` (resuming after `since` when given).
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

    /// Sends what is queued, closes the WebSocket, and stops both drivers.
    pub async fn close(&self) {
        self.publisher.close().await;
        self.subscriber.close().await;
    }

    /// Counters of the queue and the connection.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            queue: self.publisher.stats(),
            connection: self.subscriber.stats(),
        }
    }
}
