//! Bytes on the wire: the WebSocket's TCP stream wrapped in a counting adapter before the
//! TLS and WebSocket handshakes, so `stats()` reports what really crossed the network
//! (handshake, TLS records, frame headers, payloads as sent).
//!
//! The counters belong to the client, not to one connection: every socket of the client adds
//! to the same two numbers, so they are cumulative across reconnects.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, UrlError};
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The client's byte counters, shared by all its sockets.
#[derive(Debug, Default)]
pub(crate) struct WireCounters {
    received: AtomicU64,
    sent: AtomicU64,
}

impl WireCounters {
    /// Bytes read from every socket so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Bytes written to every socket so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// A stream that adds what it reads and writes to [`WireCounters`].
#[derive(Debug)]
pub(crate) struct Counted<S> {
    inner: S,
    counters: Arc<WireCounters>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, counters: Arc<WireCounters>) -> Self {
        Self { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let n = buf.filled().len().saturating_sub(before);
            this.counters
                .received
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            this.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The WebSocket of one connection, counted.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<Counted<TcpStream>>>;

/// Connects to `url` as `tokio_tungstenite::connect_async_with_config` does (TCP with Nagle
/// off, then TLS for `wss` with the crate's rustls connector, then the WebSocket handshake),
/// with the TCP stream counted from its first byte.
pub(crate) async fn connect(
    url: &str,
    config: WebSocketConfig,
    counters: Arc<WireCounters>,
) -> Result<(Socket, Response), WsError> {
    let request = url.into_client_request()?;
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or(WsError::Url(UrlError::NoHostName))?
        // An IPv6 literal comes bracketed in a URL; the resolver wants it bare.
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri
        .port_u16()
        .or(match uri.scheme_str() {
            Some("wss") => Some(443),
            Some("ws") => Some(80),
            _ => None,
        })
        .ok_or(WsError::Url(UrlError::UnsupportedUrlScheme))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    // Frames are small and latency matters more than packet count (as before this module).
    tcp.set_nodelay(true)?;
    tokio_tungstenite::client_async_tls_with_config(
        request,
        Counted::new(tcp, counters),
        Some(config),
        None,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_what_passes_both_ways() {
        let counters = Arc::new(WireCounters::default());
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Counted::new(a, counters.clone());
        a.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.unwrap();
        b.write_all(b"wire bytes").await.unwrap();
        let mut back = [0u8; 10];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!((counters.sent(), counters.received()), (5, 10));
        // A second stream adds to the same counters (a reconnect).
        let (c, mut d) = tokio::io::duplex(64);
        let mut c = Counted::new(c, counters.clone());
        d.write_all(b"xyz").await.unwrap();
        let mut three = [0u8; 3];
        c.read_exact(&mut three).await.unwrap();
        assert_eq!((counters.sent(), counters.received()), (5, 13));
    }
}
