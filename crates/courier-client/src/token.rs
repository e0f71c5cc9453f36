//! Token providers: where the client gets its JWT.
//!
//! The core owns the token ([`courier_core::client`]): it decides when one is needed, asks
//! for it with [`Output::FetchToken`](courier_core::client::Output::FetchToken) (one call at
//! a time, shared by HTTP and the WebSocket) and remembers the answer. The driver only calls
//! the provider below and reports what it said.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
