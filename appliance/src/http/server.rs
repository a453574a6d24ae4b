//! Serving one downstream connection with hyper: HTTP/1.1 and HTTP/2 (prior knowledge or
//! ALPN), upgrades, header limits, header-read and idle timeouts, graceful drain.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tenants::model::DownstreamLimits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use super::guard::Guard;
use super::service::{ConnInfo, handle};
use crate::idle::{Activity, Idle};
use crate::io::Prefixed;

/// Which protocol the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain connection: HTTP/2 prior knowledge or HTTP/1.1, told apart by the first bytes.
    Auto,
    /// ALPN chose h2.
    H2,
    /// ALPN chose http/1.1 (or none).
    H1,
}

/// The HTTP/2 connection preface (prior knowledge).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells HTTP/2 prior knowledge (the whole preface) from HTTP/1 (a byte off the preface) on
/// a plain connection, within `limit`; returns the bytes read, to be replayed. hyper-util's
/// own detection has no time limit, so a client that connects and sends nothing (or part of
/// a preface) would hold the connection until the idle timeout: the header read timeout
/// covers the first bytes too, as the ClientHello read does on TLS listeners.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I, limit: Duration) -> Option<(Bytes, Proto)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    let read = async {
        loop {
            if buf[..n] != H2_PREFACE[..n] {
                return Some(Proto::H1);
            }
            if n == buf.len() {
                return Some(Proto::H2);
            }
            match io.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return None,
                Ok(r) => n += r,
            }
        }
    };
    let proto = tokio::time::timeout(limit, read).await.ok()??;
    Some((Bytes::copy_from_slice(&buf[..n]), proto))
}

/// Completes once `rx` holds `true` (or its sender is gone).
pub(crate) async fn turned_true(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How long a draining HTTP/1 connection may sit without a byte before it is closed. Closing
/// an idle keep-alive connection races with a request the client is sending on it, so while
/// draining every response says `Connection: close` (a busy client learns it that way,
/// without losing a request) and only a connection quiet this long is closed outright.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Completes [`DRAIN_IDLE`] after `drain` or `stop` turned true: a connection accepted just
/// before the drain gets that long to send its first bytes.
async fn drained(drain: &mut watch::Receiver<bool>, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = turned_true(drain) => {}
        () = turned_true(stop) => {}
    }
    tokio::time::sleep(DRAIN_IDLE).await;
}

/// Serves HTTP on `io` until the client goes away, the connection idles out, or `drain`
/// turns true (then in-flight requests finish and the connection closes gracefully:
/// HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`).
pub async fn serve<I>(
    mut io: I,
    info: Arc<ConnInfo>,
    proto: Proto,
    limits: &DownstreamLimits,
    mut drain: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (first, proto) = match proto {
        Proto::Auto => {
            let sniffed = tokio::select! {
                s = sniff(&mut io, limits.header_read_timeout) => s,
                () = drained(&mut drain, &mut stop) => None,
            };
            match sniffed {
                Some(x) => x,
                None => {
                    tracing::debug!(peer = %info.peer, "no HTTP/1 request line or HTTP/2 preface within the header read timeout; closed");
                    return;
                }
            }
        }
        p => (Bytes::new(), p),
    };
    let io = Prefixed::new(first, io);
    let activity = Activity::new();
    let header_bytes = (limits.max_request_headers_kb as usize).saturating_mul(1024);
    let max_buf = header_bytes.max(8192);
    // HTTP/1 framing checks hyper cannot make (see `guard`).
    let io = Guard::new(io, info.framing.clone(), proto == Proto::H1, max_buf);
    let io = Idle::new(io, activity.clone());
    // Set when draining HTTP/1: responses carry `Connection: close` (see `DRAIN_IDLE`).
    let closing = Arc::new(AtomicBool::new(false));
    let svc = {
        let closing = closing.clone();
        service_fn(move |req| {
            let (info, closing) = (info.clone(), closing.clone());
            // Boxed: hyper keeps room for one service future in every HTTP/1 connection for its
            // whole life, and the request path's future is about 6 KB. Boxed, that room is a
            // pointer and the 6 KB exist only while a request is in flight: 20.8 → 15.1 KB per
            // idle keep-alive connection (bench/idle.sh), for about 850 instructions per request
            // (1.9 %) spent allocating and filling the box (bench/instructions.sh).
            Box::pin(async move {
                let mut resp = handle(req, info).await?;
                if closing.load(Ordering::Relaxed)
                    && resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS
                {
                    resp.headers_mut()
                        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(resp)
            })
        })
    };
    // The protocol is known here (sniffed or ALPN), so hyper's own builders serve it directly:
    // no auto-detection layer, and the connection future holds only the one protocol's state,
    // boxed so the task stays small while the connection idles.
    let io = TokioIo::new(io);
    let mut conn = match proto {
        Proto::H2 => Conn::H2(Box::pin(
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_concurrent_streams)
                .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
                .max_pending_accept_reset_streams(Some(100))
                .max_local_error_reset_streams(Some(1024))
                .serve_connection(io, svc),
        )),
        Proto::H1 | Proto::Auto => Conn::H1(Box::pin(
            http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(max_buf)
                .writev(false)
                .keep_alive(true)
                .serve_connection(io, svc)
                .with_upgrades(),
        )),
    };
    let idle = limits.idle_timeout;
    // HTTP/2 has GOAWAY, which no request races with: shut down at once. HTTP/1 first says
    // `Connection: close`, and shuts down once the connection is quiet.
    let mut shut = false;
    let mut draining = *drain.borrow() || *stop.borrow();
    loop {
        if draining && !shut {
            closing.store(true, Ordering::Relaxed);
            if proto == Proto::H2 {
                shut = true;
                conn.graceful_shutdown();
            }
        }
        tokio::select! {
            _ = conn.run() => break,
            r = drain.changed(), if !draining => {
                draining = r.is_err() || *drain.borrow();
            }
            r = stop.changed(), if !draining => {
                draining = r.is_err() || *stop.borrow();
            }
            () = activity.idle_for(DRAIN_IDLE), if draining && !shut => {
                shut = true;
                conn.graceful_shutdown();
            }
            () = activity.idle_for(idle) => {
                // No bytes in either direction for the idle timeout: close.
                break;
            }
        }
    }
}

/// A served connection of either protocol.
enum Conn<H1, H2> {
    H1(Pin<Box<H1>>),
    H2(Pin<Box<H2>>),
}

impl<I, S, B> Conn<http1::UpgradeableConnection<I, S>, http2::Connection<I, S, TokioExecutor>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    /// Drives the connection until it ends (errors are the client's and end it too).
    async fn run(&mut self) {
        let _ = match self {
            Self::H1(c) => c.as_mut().await,
            Self::H2(c) => c.as_mut().await,
        };
    }

    /// HTTP/2 GOAWAY; HTTP/1 closes after the response in progress.
    fn graceful_shutdown(&mut self) {
        match self {
            Self::H1(c) => c.as_mut().graceful_shutdown(),
            Self::H2(c) => c.as_mut().graceful_shutdown(),
        }
    }
}
