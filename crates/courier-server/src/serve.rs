//! The accept loop: hyper with the timeouts `axum::serve` does not offer.
//!
//! A client that opens a TCP connection and never finishes its request headers (slowloris),
//! or keeps an idle keep-alive connection open, is closed after `http.header_timeout_ms`:
//! hyper's header-read timer runs whenever the connection waits for a request head, idle or
//! not. Request bodies are bounded by `http.body_timeout_ms` (a layer in the router).
//! Accepted sockets get `TCP_NODELAY` (the WebSocket writer flushes once per burst).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::HttpConfig;

/// Serves `router` on `listener` until `stop`, then lets the requests in progress finish
/// (upgraded WebSockets are tracked elsewhere).
///
/// HTTP/1.1 only: every SDK and browser speaks it to this server (HTTP/2 needs TLS with
/// ALPN, which a reverse proxy terminates), and hyper's automatic version detection would
/// wait for bytes with no timeout, letting an idle socket stay open for ever.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    config: HttpConfig,
) -> std::io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_timeout_ms.max(1)))
        .max_buf_size(config.max_header_bytes.max(8192));
    let connections = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let service = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            router.clone().oneshot(req)
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    // Finish the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}
