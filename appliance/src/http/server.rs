//! Serving one downstream connection: HTTP/1.1 by the own server (`h1`, which hands upgrades
//! and CONNECT to hyper), HTTP/2 (prior knowledge or ALPN) by hyper; header limits,
//! header-read and idle timeouts, graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tenants::model::DownstreamLimits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;

use super::body::Body;
use super::guard::Guard;
use super::h1::{self, Ctl};
use super::layout::pinned;
use super::service::{ConnInfo, handle};
use crate::gated::Gated;
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
    I: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let (first, proto) = match proto {
        Proto::Auto => {
            // Boxed: needed once, and inline its timers would stay in the connection's state.
            let sniffed = Box::pin(async {
                tokio::select! {
                    s = sniff(&mut io, limits.header_read_timeout) => s,
                    () = drained(&mut drain, &mut stop) => None,
                }
            })
            .await;
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
    let activity = Activity::new();
    let io = Idle::new(io, activity.clone());
    let header_bytes = (limits.max_request_headers_kb as usize).saturating_mul(1024);
    let ctl = Arc::new(Ctl::default());
    let shared_info = info.clone();
    let mut conn = match proto {
        // The protocol is known here (sniffed or ALPN): no auto-detection layer.
        Proto::H2 => Conn::H2(Box::pin(
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_concurrent_streams)
                .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
                .max_pending_accept_reset_streams(Some(100))
                .max_local_error_reset_streams(Some(1024))
                .serve_connection(
                    TokioIo::new(Prefixed::new(first, io)),
                    Svc {
                        info,
                        ctl: ctl.clone(),
                    },
                ),
        )),
        Proto::H1 | Proto::Auto => {
            let limits = h1::Limits {
                max_head: header_bytes,
                header_read: limits.header_read_timeout,
            };
            Conn::H1(Box::pin(h1::serve(io, first, info, limits, ctl.clone())))
        }
    };
    let idle = limits.idle_timeout;
    // HTTP/2 has GOAWAY, which no request races with: shut down at once. HTTP/1 first says
    // `Connection: close`, and shuts down once the connection is quiet.
    let mut shut = false;
    let mut draining = *drain.borrow() || *stop.borrow();
    // A route timeout cut a response off (`true`): an HTTP/1.1 connection ends, as Envoy
    // resets it, even when its writer waits on a client that stopped reading. (An HTTP/2
    // stream ends by itself once read; its connection carries others.) In the same gated
    // future as the drain signals: one more per connection would cost its memory.
    let h1 = matches!(conn, Conn::H1(_));
    // Gated: polled only when a watch changes, not on each of the connection's wakes.
    let mut signal = std::pin::pin!(Gated::new(async {
        tokio::select! {
            () = turned_true(&mut drain) => false,
            () = turned_true(&mut stop) => false,
            () = shared_info.cut.notified(), if h1 => true,
        }
    }));
    loop {
        if draining && !shut {
            ctl.closing.store(true, Ordering::Relaxed);
            if let Conn::H2(c) = &mut conn {
                shut = true;
                c.as_mut().graceful_shutdown();
            }
        }
        // One timer: the idle timeout, or while draining the (shorter) quiet period after which
        // an HTTP/1 connection is shut.
        let drain_wait = draining && !shut && DRAIN_IDLE < idle;
        let quiet = if drain_wait { DRAIN_IDLE } else { idle };
        // Envoy's idle timeout counts only time without a request in flight, and Istio turns
        // the stream idle timeout off: a long poll or a websocket silent past the idle
        // timeout is left alone, and its connection idles out once it is done.
        let idle_out = async {
            loop {
                activity.idle_for(quiet).await;
                if drain_wait || !ctl.in_flight() {
                    return;
                }
                tokio::time::sleep(quiet).await;
            }
        };
        tokio::select! {
            () = conn.run() => break,
            cut = &mut signal, if !draining => {
                if cut {
                    break;
                }
                draining = true;
            }
            () = Gated::new(idle_out) => {
                if !drain_wait {
                    // No bytes in either direction for the idle timeout, nothing in flight.
                    break;
                }
                shut = true;
                // Quiet that long with no request in flight: close. A request in flight ends
                // the connection after its response (`closing` is set); a connection handed
                // to hyper shuts down the way hyper does it.
                if !ctl.busy.load(Ordering::Relaxed) {
                    break;
                }
                ctl.shutdown.notify_one();
            }
        }
    }
}

/// Serves the rest of an HTTP/1 connection with hyper: one whose request (an upgrade or CONNECT)
/// the own server leaves to it, replayed in `io`'s first bytes.
pub(super) async fn hyper_h1<I>(io: I, info: Arc<ConnInfo>, limits: h1::Limits, ctl: Arc<Ctl>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    // HTTP/1 framing checks hyper cannot make (see `guard`), counting from this request.
    info.framing.rebase();
    let max_buf = limits.max_head.max(8192);
    let io = Guard::new(io, info.framing.clone(), true, max_buf);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(max_buf)
        .writev(false)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(io),
            Svc {
                info,
                ctl: ctl.clone(),
            },
        )
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = ctl.shutdown.notified() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// The request path as a hyper service (HTTP/2, and HTTP/1 connections handed to hyper).
#[derive(Clone)]
struct Svc {
    info: Arc<ConnInfo>,
    ctl: Arc<Ctl>,
}

type Served = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Served;

    fn call(&self, req: Request<Incoming>) -> Served {
        let (info, ctl) = (self.info.clone(), self.ctl.clone());
        pinned(|| async move {
            // An HTTP/2 stream in flight until its answer: the idle timeout leaves it be.
            let _stream = Stream::new(&ctl);
            let mut req = req.map(crate::http::body::boxed);
            // An HTTP/1 request here is one `h1` handed over (an upgrade, a CONNECT): the
            // connection is hyper's from then on, and hyper parses more leniently than `h1`
            // (two Host lines, the authority form, any transfer coding). So it carries that
            // one request only: unless the answer switches protocols, it closes after it.
            let handed_over = req.version() != hyper::Version::HTTP_2;
            let connect = req.method() == hyper::Method::CONNECT;
            let mut resp = handle(&mut req, info).await?;
            let switched = resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS
                || (connect && resp.status().is_success());
            if (ctl.closing.load(Ordering::Relaxed) || handed_over) && !switched {
                resp.headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp)
        })
    }
}

/// Counts a request the hyper service works on until its answer.
struct Stream<'a>(&'a Ctl);

impl<'a> Stream<'a> {
    fn new(ctl: &'a Ctl) -> Self {
        ctl.streams.fetch_add(1, Ordering::Relaxed);
        Self(ctl)
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// hyper's HTTP/2 connection over a sniffed (or ALPN-chosen) stream.
type H2Conn<I> = http2::Connection<TokioIo<Prefixed<Idle<I>>>, Svc, TokioExecutor>;

/// A served connection of either protocol.
enum Conn<I> {
    H1(Pin<Box<dyn Future<Output = ()> + Send>>),
    H2(Pin<Box<H2Conn<I>>>),
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn<I> {
    /// Drives the connection until it ends (errors are the client's and end it too).
    async fn run(&mut self) {
        match self {
            Self::H1(c) => c.as_mut().await,
            Self::H2(c) => {
                let _ = c.as_mut().await;
            }
        }
    }
}
