//! Token providers and the token cache shared by the publisher and the subscriber.
//!
//! The core decides *when* a token is needed ([`courier_core::connection::Output::FetchToken`],
//! [`courier_core::queue::PublishQueue::poll_token_request`]); this module only asks the
//! application's provider, one request at a time, and remembers the answer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A boxed, sendable future, as token providers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where the client gets its JWT. Called before the first request and again whenever the
/// server says the token expired (`refresh` is then true).
pub trait TokenProvider: Send + Sync + 'static {
    /// A token, or a message saying why none could be had.
    fn token(&self, refresh: bool) -> BoxFuture<Result<String, String>>;
}

/// A fixed token (it cannot be renewed: an expired one stays expired).
#[derive(Clone)]
pub struct StaticToken(pub String);

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenProvider for StaticToken {
    fn token(&self, _refresh: bool) -> BoxFuture<Result<String, String>> {
        let t = self.0.clone();
        Box::pin(async move { Ok(t) })
    }
}

/// A provider from an async closure: `token_fn(|refresh| async move { Ok(fetch().await) })`.
pub fn token_fn<F, Fut>(f: F) -> Arc<dyn TokenProvider>
where
    F: Fn(bool) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    struct FnProvider<F>(F);
    impl<F, Fut> TokenProvider for FnProvider<F>
    where
        F: Fn(bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        fn token(&self, refresh: bool) -> BoxFuture<Result<String, String>> {
            Box::pin((self.0)(refresh))
        }
    }
    Arc::new(FnProvider(f))
}

/// The current token, shared by every request, with one provider call in flight at a time.
pub(crate) struct TokenCache {
    provider: Arc<dyn TokenProvider>,
    current: Mutex<Option<String>>,
    /// Held while the provider is being asked: every waiter shares that one answer.
    fetching: tokio::sync::Mutex<()>,
}

impl TokenCache {
    pub(crate) fn new(provider: Arc<dyn TokenProvider>) -> Self {
        Self {
            provider,
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The cached token, asking the provider when there is none yet.
    pub(crate) async fn get(&self) -> Result<String, String> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _guard = self.fetching.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        self.ask(false).await
    }

    /// A token newer than `stale` (the one the server refused), asking the provider unless
    /// another caller already replaced it.
    pub(crate) async fn refresh(&self, stale: Option<&str>) -> Result<String, String> {
        let _guard = self.fetching.lock().await;
        if let Some(t) = self.cached() {
            if Some(t.as_str()) != stale {
                return Ok(t);
            }
        }
        self.ask(true).await
    }

    async fn ask(&self, refresh: bool) -> Result<String, String> {
        tracing::debug!(refresh, "asking the token provider");
        let token = self.provider.token(refresh).await?;
        if token.is_empty() {
            return Err("the token provider returned an empty token".into());
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(token)
    }
}
