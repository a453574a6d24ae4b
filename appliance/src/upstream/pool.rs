//! Upstream connection pools, one per worker thread (no lock, no cross-thread wake-up):
//! HTTP/1.1 keeps idle senders per endpoint and returns a sender when the response body
//! ends; HTTP/2 keeps one multiplexed connection per endpoint.

use std::cell::RefCell;
// FxHash: these maps are read on every request, keyed by configuration (names, listener
// addresses, label sets), never by anything a client chooses.
use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::OwnedSemaphorePermit;

use super::connect::{self, ConnectError};
use super::{ClusterRt, Pending};
use crate::clock;
use crate::http::body::{Body, BoxError};

/// Identifies a pool of equivalent connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    cluster: u64,
    addr: SocketAddr,
    sni: Option<Arc<str>>,
}

struct Idle {
    tx: http1::SendRequest<Body>,
    since_ms: u64,
    used: u32,
    state: Arc<ConnState>,
}

/// What a pooled connection's entry and its connection task share.
#[derive(Debug, Default)]
struct ConnState {
    /// Requests using the connection now (HTTP/1.1: 0 or 1; HTTP/2: streams).
    busy: AtomicU32,
}

/// Counts one request on a connection until dropped. When the connection becomes idle while
/// requests wait for a connection permit, its task is woken to close it and free the permit.
pub struct Busy {
    state: Arc<ConnState>,
    pending: Arc<Pending>,
}

impl Busy {
    fn new(state: Arc<ConnState>, pending: Arc<Pending>) -> Self {
        state.busy.fetch_add(1, Ordering::SeqCst);
        Self { state, pending }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.state.busy.fetch_sub(1, Ordering::SeqCst) == 1
            && self.pending.count.load(Ordering::SeqCst) > 0
        {
            self.pending.reclaim.notify_waiters();
        }
    }
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Busy")
    }
}

/// A thread's HTTP/2 connection to an endpoint and its shared state.
type H2Conn = (http2::SendRequest<Body>, Arc<ConnState>);

thread_local! {
    static H1: RefCell<HashMap<Key, Vec<Idle>>> = RefCell::new(HashMap::default());
    static H2: RefCell<HashMap<Key, H2Conn>> = RefCell::new(HashMap::default());
}

/// Runs a connection. With a connection limit, the connection holds its permit until it
/// closes, and closes early when it is idle while requests wait for a permit.
fn run_conn<F>(
    conn: F,
    permit: Option<OwnedSemaphorePermit>,
    state: Arc<ConnState>,
    pending: Arc<Pending>,
) where
    F: Future + Send + 'static,
{
    tokio::spawn(async move {
        let Some(_permit) = permit else {
            let _ = conn.await;
            return;
        };
        let mut conn = std::pin::pin!(conn);
        loop {
            // Register for the wake-up before looking, so a waiter arriving in between is
            // not missed.
            let notified = pending.reclaim.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if state.busy.load(Ordering::SeqCst) == 0 && pending.count.load(Ordering::SeqCst) > 0 {
                // Dropping the connection closes it; the pool entry sees a closed sender.
                return;
            }
            tokio::select! {
                _ = &mut conn => return,
                () = &mut notified => {}
            }
        }
    });
}

/// Most idle HTTP/1.1 connections kept per endpoint and thread.
const MAX_IDLE: usize = 512;

/// Why no upstream connection could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The cluster's connection limit is reached and the pending queue is full (UO).
    #[error("upstream connection pool overflow")]
    Overflow,
    /// Connecting failed (UF).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP handshake with the upstream failed (UF).
    #[error("upstream handshake: {0}")]
    Handshake(#[source] hyper::Error),
}

/// An HTTP/1.1 sender on loan; goes back to the pool when the response body ends.
pub struct Lease {
    key: Key,
    tx: http1::SendRequest<Body>,
    used: u32,
    max_per_conn: u32,
    idle_timeout: Duration,
    busy: Busy,
}

impl Lease {
    /// The sender.
    pub fn sender(&mut self) -> &mut http1::SendRequest<Body> {
        &mut self.tx
    }

    fn release(mut self) {
        self.used += 1;
        if self.max_per_conn != 0 && self.used >= self.max_per_conn {
            return;
        }
        if self.tx.is_closed() {
            return;
        }
        let idle = Idle {
            tx: self.tx,
            since_ms: clock::now_ms(),
            used: self.used,
            state: self.busy.state.clone(),
        };
        let _ = self.idle_timeout;
        H1.with(|p| {
            let mut p = p.borrow_mut();
            let v = p.entry(self.key).or_default();
            if v.len() < MAX_IDLE {
                v.push(idle);
            }
        });
        // Now idle: if requests wait for a permit, the connection task closes it.
        drop(self.busy);
    }
}

/// Counts a request waiting for a connection permit until dropped (also when the waiting
/// request is cancelled, e.g. by its timeout).
struct Waiting<'a>(&'a Pending);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn permit(rt: &ClusterRt) -> Result<Option<OwnedSemaphorePermit>, PoolError> {
    let Some(sem) = &rt.limits.connections else {
        return Ok(None);
    };
    if let Ok(p) = sem.clone().try_acquire_owned() {
        return Ok(Some(p));
    }
    let pending = &*rt.limits.pending;
    let waiting = pending.count.fetch_add(1, Ordering::SeqCst);
    let _waiting = Waiting(pending);
    if waiting >= rt.limits.max_pending {
        return Err(PoolError::Overflow);
    }
    // Idle pooled connections (on any thread) give their permits back.
    pending.reclaim.notify_waiters();
    let r = sem.clone().acquire_owned().await;
    r.map(Some).map_err(|_| PoolError::Overflow)
}

/// Opens the transport to an endpoint: TCP from the cluster's source address, then TLS when
/// the cluster originates it.
pub async fn transport(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
) -> Result<Box<dyn Io>, PoolError> {
    let tcp = connect::tcp(addr, rt.config.source_address, rt.limits.connect_timeout).await?;
    match &rt.tls {
        None => Ok(Box::new(tcp)),
        Some(cfg) => {
            let name = sni.unwrap_or_else(|| rt.config.host.as_str());
            let t = connect::tls(tcp, cfg.clone(), name, addr, rt.limits.connect_timeout).await?;
            Ok(Box::new(t))
        }
    }
}

/// A byte stream to an upstream.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {
    /// Whether ALPN chose HTTP/2 (TLS only).
    fn alpn_h2(&self) -> bool {
        false
    }
}

impl Io for tokio::net::TcpStream {}

impl Io for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fn alpn_h2(&self) -> bool {
        self.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

fn key(rt: &ClusterRt, addr: SocketAddr, sni: Option<&str>) -> Key {
    Key {
        cluster: rt.id,
        addr,
        sni: if rt.tls.is_some() {
            sni.map(Arc::from)
        } else {
            None
        },
    }
}

/// An HTTP/1.1 sender to `addr`: an idle pooled one, or a new connection.
pub async fn http1(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
    fresh: bool,
) -> Result<Lease, PoolError> {
    let k = key(rt, addr, sni);
    if !fresh {
        let now = clock::now_ms();
        let idle_ms = rt.limits.idle_timeout.as_millis() as u64;
        while let Some(mut idle) = H1.with(|p| p.borrow_mut().get_mut(&k).and_then(Vec::pop)) {
            if idle.tx.is_closed() || now.saturating_sub(idle.since_ms) > idle_ms {
                continue;
            }
            // Busy before the first await, so the connection task does not close it.
            let busy = Busy::new(idle.state, rt.limits.pending.clone());
            if idle.tx.ready().await.is_ok() {
                return Ok(Lease {
                    key: k,
                    tx: idle.tx,
                    used: idle.used,
                    max_per_conn: rt.limits.per_connection,
                    idle_timeout: rt.limits.idle_timeout,
                    busy,
                });
            }
        }
    }
    // Boxed: a new connection (TCP, maybe TLS, the handshake) is a large future and a rare
    // one; inline, it would make every request's future that much larger (see `server::serve`).
    let (permit, tx, conn) = Box::pin(async {
        let permit = permit(rt).await?;
        let io = transport(rt, addr, sni).await?;
        let (tx, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(io))
            .await
            .map_err(PoolError::Handshake)?;
        Ok::<_, PoolError>((permit, tx, conn))
    })
    .await?;
    let state = Arc::new(ConnState::default());
    let busy = Busy::new(state.clone(), rt.limits.pending.clone());
    run_conn(conn, permit, state, rt.limits.pending.clone());
    Ok(Lease {
        key: k,
        tx,
        used: 0,
        max_per_conn: rt.limits.per_connection,
        idle_timeout: rt.limits.idle_timeout,
        busy,
    })
}

/// An HTTP/2 sender to `addr`: the thread's connection to it, or a new one. The [`Busy`]
/// guard counts the stream; keep it until the response body ends.
pub async fn http2(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
) -> Result<(http2::SendRequest<Body>, Busy), PoolError> {
    let k = key(rt, addr, sni);
    if let Some((tx, state)) = H2.with(|p| {
        p.borrow()
            .get(&k)
            .filter(|(t, _)| !t.is_closed() && t.is_ready())
            .cloned()
    }) {
        return Ok((tx, Busy::new(state, rt.limits.pending.clone())));
    }
    // Boxed for the same reason as in `http1`.
    let (permit, tx, conn) = Box::pin(http2_connect(rt, addr, sni)).await?;
    let state = Arc::new(ConnState::default());
    let busy = Busy::new(state.clone(), rt.limits.pending.clone());
    run_conn(conn, permit, state.clone(), rt.limits.pending.clone());
    H2.with(|p| p.borrow_mut().insert(k, (tx.clone(), state)));
    Ok((tx, busy))
}

/// A new HTTP/2 connection to `addr`, handshake done; its connection future still to run.
async fn http2_connect(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
) -> Result<
    (
        Option<OwnedSemaphorePermit>,
        http2::SendRequest<Body>,
        http2::Connection<TokioIo<Box<dyn Io>>, Body, TokioExecutor>,
    ),
    PoolError,
> {
    let permit = permit(rt).await?;
    let io = transport(rt, addr, sni).await?;
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new());
    if let Some((interval, timeout)) = rt
        .config
        .policy
        .connection_pool
        .as_ref()
        .and_then(|p| p.http2_keep_alive)
    {
        b.keep_alive_interval(interval).keep_alive_timeout(timeout);
    }
    if let Some(n) = rt
        .config
        .policy
        .connection_pool
        .as_ref()
        .and_then(|p| p.max_concurrent_streams)
    {
        b.max_concurrent_reset_streams(n as usize);
    }
    let (tx, conn) = b
        .handshake(TokioIo::new(io))
        .await
        .map_err(PoolError::Handshake)?;
    Ok((permit, tx, conn))
}

/// A response body that returns its HTTP/1.1 connection to the pool when it ends.
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    /// Wraps `inner`; `lease` goes back to the pool at the end of the body.
    pub fn new(inner: Incoming, lease: Option<Lease>) -> Self {
        let mut b = Self { inner, lease };
        if b.inner.is_end_stream()
            && let Some(l) = b.lease.take()
        {
            l.release();
        }
        b
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => {
                if let Some(l) = self.lease.take() {
                    l.release();
                }
            }
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                if let Some(l) = self.lease.take() {
                    l.release();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                self.lease = None;
            }
            _ => {}
        }
        r.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
