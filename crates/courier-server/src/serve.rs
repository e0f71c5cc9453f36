//! The accept loop: hyper with the timeouts `axum::serve` does not offer.
//!
//! A client that opens a TCP connection and never finishes its request headers (slowloris),
//! or keeps an idle keep-alive connection open, is closed after `http.header_timeout_ms`:
//! hyper's header-read timer runs whenever the connection waits for a request head, idle or
//! not. Request bodies are bounded by `http.body_timeout_ms` (a layer in the router).
//! Accepted sockets get `TCP_NODELAY` (the WebSocket writer flushes once per burst).
//!
//! A request hyper cannot read (a head over `http.max_header_bytes`: 431; a URI too long:
//! 414; a malformed request line or header: 400) never reaches the router: hyper answers it
//! itself with an empty body and closes. [`JsonRefusals`] sits between hyper and the socket
//! and turns that answer into the JSON error body every other error has.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use courier_core::{ErrorBody, ErrorCode, ErrorResponse};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
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
        let io = JsonRefusals::new(tcp, remote, config.max_header_bytes);
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
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

/// The accepted socket, passing everything through except hyper's own answer to a request
/// it could not parse, which it rewrites with a JSON body (see the module docs).
struct JsonRefusals {
    tcp: TcpStream,
    remote: SocketAddr,
    max_header_bytes: usize,
    /// A rewritten answer and how much of it is written: hyper was told its own head was
    /// written whole, so this goes out before anything else (flush and shutdown included).
    pending: Option<(Vec<u8>, usize)>,
}

impl JsonRefusals {
    fn new(tcp: TcpStream, remote: SocketAddr, max_header_bytes: usize) -> Self {
        Self {
            tcp,
            remote,
            max_header_bytes,
            pending: None,
        }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// If `buf` is hyper's automatic answer, queues its JSON rewrite and returns true.
    fn intercept(&mut self, buf: &[u8]) -> bool {
        let Some(answer) = rewrite_refusal(buf, self.max_header_bytes) else {
            return false;
        };
        tracing::info!(
            remote = %self.remote, status = answer.status, code = answer.code.as_str(),
            reason = %answer.message, "request refused"
        );
        self.pending = Some((answer.bytes, 0));
        true
    }
}

/// A rewritten refusal.
struct Refusal {
    status: u16,
    code: ErrorCode,
    message: String,
    bytes: Vec<u8>,
}

/// Recognises the head hyper writes for a request it could not parse — status 400, 414 or
/// 431, `content-length: 0`, no `content-type`, nothing after the head — and returns the
/// same head with a JSON error body. The application never writes such a head: its error
/// answers all carry JSON (`json_errors`).
fn rewrite_refusal(buf: &[u8], max_header_bytes: usize) -> Option<Refusal> {
    let rest = buf.strip_prefix(b"HTTP/1.1 4")?;
    let status: u16 = match rest.get(..3)? {
        b"00 " => 400,
        b"14 " => 414,
        b"31 " => 431,
        _ => return None,
    };
    let head = std::str::from_utf8(buf).ok()?.strip_suffix("\r\n\r\n")?;
    if head.contains("\r\n\r\n") {
        return None;
    }
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut kept = Vec::new();
    let mut empty = false;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-type:") {
            return None;
        }
        if lower == "content-length: 0" {
            empty = true;
        } else {
            kept.push(line);
        }
    }
    if !empty {
        return None;
    }
    let message = match status {
        431 => format!(
            "the request head (request line and headers) is over the server's limit of \
             {max_header_bytes} bytes (`http.max_header_bytes`)"
        ),
        414 => "the request URI is too long".to_owned(),
        _ => "the request is not valid HTTP/1.1 (request line or a header)".to_owned(),
    };
    let code = ErrorCode::BadRequest;
    let body = serde_json::to_string(&ErrorResponse {
        error: ErrorBody {
            code,
            message: message.clone(),
            field: (status == 431).then(|| "headers".to_owned()),
            retry_after_ms: None,
            limit_type: None,
        },
    })
    .ok()?;
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(status_line);
    out.push_str("\r\n");
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    Some(Refusal {
        status,
        code,
        message,
        bytes: out.into_bytes(),
    })
}

impl AsyncRead for JsonRefusals {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonRefusals {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.intercept(buf) {
            // Told written whole; the rewrite drains here or on flush / shutdown.
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if this.intercept(only) {
                let _ = this.poll_pending(cx)?;
                return Poll::Ready(Ok(only.len()));
            }
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_refusals_are_rewritten() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 18:00:00 GMT\r\n\r\n";
        let r = rewrite_refusal(hyper, 100).expect("rewritten");
        let text = String::from_utf8(r.bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "BAD_REQUEST");
        // The application's own answers, a WebSocket frame and a body are left alone.
        for other in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 431 X\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"\x81\x05hello",
        ] {
            assert!(rewrite_refusal(other, 100).is_none());
        }
    }
}
