//! Serving one downstream connection with hyper: HTTP/1.1 and HTTP/2 (prior knowledge or
//! ALPN), upgrades, header limits, header-read and idle timeouts, graceful drain.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tenants::model::DownstreamLimits;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::service::{ConnInfo, handle};
use crate::idle::{Activity, Idle};

/// Which protocol the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Detect: HTTP/2 prior knowledge or HTTP/1.1.
    Auto,
    /// ALPN chose h2.
    H2,
    /// ALPN chose http/1.1 (or none).
    H1,
}

/// Serves HTTP on `io` until the client goes away, the connection idles out, or `drain`
/// turns true (then in-flight requests finish and the connection closes gracefully:
/// HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`).
pub async fn serve<I>(
    io: I,
    info: Arc<ConnInfo>,
    proto: Proto,
    limits: &DownstreamLimits,
    mut drain: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = Idle::new(io, activity.clone());
    let mut b = auto::Builder::new(TokioExecutor::new());
    let header_bytes = (limits.max_request_headers_kb as usize).saturating_mul(1024);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(header_bytes.max(8192))
        .writev(false)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(100))
        .max_local_error_reset_streams(Some(1024));
    let b = match proto {
        Proto::Auto => b,
        Proto::H2 => b.http2_only(),
        Proto::H1 => b.http1_only(),
    };
    let svc = service_fn(move |req| handle(req, info.clone()));
    let conn = b.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let mut draining = *drain.borrow() || *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = &mut conn => break,
            r = drain.changed(), if !draining => {
                if r.is_err() || *drain.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            r = stop.changed(), if !draining => {
                if r.is_err() || *stop.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = activity.idle_for(idle) => {
                // No bytes in either direction for the idle timeout: close.
                break;
            }
        }
    }
}
