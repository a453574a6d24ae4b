//! Upstream connection pools, one per worker thread (no lock, no cross-thread wake-up):
//! HTTP/1.1 keeps idle connections per endpoint (gatehouse's own client, [`super::h1`]) and
//! takes a connection back when its response body ends; HTTP/2 keeps one multiplexed hyper
//! connection per endpoint.
//!
//! An idle HTTP/1.1 connection has no task. One sweeper task per worker thread, running
//! while that thread's pool holds connections, closes those past their idle timeout, closed
//! by the upstream, of a cluster a reload replaced, or holding a connection permit that a
//! request is waiting for.

use std::cell::{Cell, RefCell};
// FxHash: these maps are read on every request, keyed by configuration (names, listener
// addresses, label sets), never by anything a client chooses.
use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::OwnedSemaphorePermit;

use super::connect::{self, ConnectError};
use super::h1::Conn;
use super::proxy_protocol::Via;
use super::{ClusterRt, Pending};
use crate::clock;
use crate::http::body::Body;

/// Identifies a pool of equivalent connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    cluster: u64,
    addr: SocketAddr,
    sni: Option<Arc<str>>,
    /// The downstream connection, when the cluster's connections start with a PROXY
    /// header that names it: such a connection is that client's only. (Behind a pointer:
    /// every lease carries its key.)
    via: Option<Arc<Via>>,
}

struct Idle {
    lease: Lease,
    since_ms: u64,
}

/// What a pooled connection's entry and its connection task share.
#[derive(Debug, Default)]
struct ConnState {
    /// Streams using the (HTTP/2) connection now.
    busy: AtomicU32,
    /// When its last stream ended (ms on [`clock::now_ms`]), for the idle timeout.
    last_used_ms: AtomicU64,
    /// Streams it carried, for `maxRequestsPerConnection`.
    streams: AtomicU32,
    /// Wakes a request of this thread waiting for a stream to the endpoint when one ends
    /// (shared by the thread's connections to the endpoint).
    freed: Arc<tokio::sync::Notify>,
}

/// Counts one stream on an HTTP/2 connection until dropped. When the connection becomes idle while
/// requests wait for a connection permit, its task is woken to close it and free the permit.
pub struct Busy {
    state: Arc<ConnState>,
    pending: Arc<Pending>,
}

impl Busy {
    fn new(state: Arc<ConnState>, pending: Arc<Pending>) -> Self {
        state.busy.fetch_add(1, Ordering::SeqCst);
        state.streams.fetch_add(1, Ordering::Relaxed);
        Self { state, pending }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.pending.for_stream.load(Ordering::SeqCst) > 0 {
            self.state.freed.notify_one();
        }
        if self.state.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.state
                .last_used_ms
                .store(clock::now_ms(), Ordering::Relaxed);
            if self.pending.count.load(Ordering::SeqCst) > 0 {
                self.pending.reclaim.notify_waiters();
            }
        }
    }
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Busy")
    }
}

/// A thread's HTTP/2 connection to an endpoint. Dropping the entry's sender lets hyper
/// close the connection once its streams are done.
struct H2Conn {
    tx: http2::SendRequest<Body>,
    state: Arc<ConnState>,
    cluster: Weak<ClusterRt>,
    idle_timeout_ms: u64,
    /// `maxRequestsPerConnection` (0: no limit).
    max_streams_total: u32,
    /// When it takes no new stream (`maxConnectionDuration`; `u64::MAX`: never).
    retire_at_ms: u64,
}

impl H2Conn {
    /// Whether it carried all the streams it may, or lived as long as it may.
    fn used_up(&self, now_ms: u64) -> bool {
        (self.max_streams_total != 0
            && self.state.streams.load(Ordering::Relaxed) >= self.max_streams_total)
            || now_ms >= self.retire_at_ms
    }

    /// Closed, its cluster replaced or removed by a reload, or with no stream open and idle
    /// past the cluster's `idleTimeout` or used up.
    fn done(&self, now_ms: u64) -> bool {
        self.tx.is_closed()
            || self.cluster.strong_count() == 0
            || (self.state.busy.load(Ordering::SeqCst) == 0
                && (self.used_up(now_ms)
                    || now_ms.saturating_sub(self.state.last_used_ms.load(Ordering::Relaxed))
                        > self.idle_timeout_ms))
    }
}

thread_local! {
    static H1: RefCell<HashMap<Key, Vec<Idle>>> = RefCell::new(HashMap::default());
    static H2: RefCell<HashMap<Key, Vec<H2Conn>>> = RefCell::new(HashMap::default());
    /// HTTP/2 connections being opened, by endpoint: requests at the connection limit wait
    /// for their streams rather than for a permit.
    static CONNECTING: RefCell<HashMap<Key, u32>> = RefCell::new(HashMap::default());
    /// What wakes this thread's requests waiting for a stream to an endpoint.
    static FREED: RefCell<HashMap<Key, Arc<tokio::sync::Notify>>> = RefCell::new(HashMap::default());
    /// Whether this thread's sweeper runs.
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

/// Wakes every thread's sweeper: a request waits for a connection permit.
static RECLAIM: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// How long an HTTP/2 connection beyond the first idle one to its endpoint stays idle.
const EXTRA_IDLE_MS: u64 = 10_000;

/// How often a sweeper looks at its idle connections when nothing wakes it.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Starts this thread's sweeper unless it runs. Only on a worker's current-thread runtime:
/// the pool is per thread, and a task of a multi-thread runtime could sweep another thread's.
fn sweeper() {
    if SWEEPING.get() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return;
    }
    SWEEPING.set(true);
    rt.spawn(async {
        loop {
            // Registered before sweeping, so a waiter arriving meanwhile is not missed.
            let notified = RECLAIM.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if sweep() == 0 {
                SWEEPING.set(false);
                return;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    });
}

/// Closes this thread's idle connections that must go; returns how many stay.
fn sweep() -> usize {
    let now = clock::now_ms();
    // Wake-ups no connection or waiter holds any more (a reload replaced the cluster).
    FREED.with(|f| f.borrow_mut().retain(|_, n| Arc::strong_count(n) > 1));
    let h2 = H2.with(|p| {
        let mut p = p.borrow_mut();
        let mut left = 0;
        p.retain(|_, v| {
            // One idle connection per endpoint is enough: others (several opened at once by
            // the first requests, or spilled over `maxConcurrentStreams`) go once idle for
            // `EXTRA_IDLE_MS`, so a burst that needs them again soon finds them.
            let mut idle_kept = false;
            v.retain(|c| {
                if c.done(now) {
                    return false;
                }
                if c.state.busy.load(Ordering::SeqCst) > 0 {
                    return true;
                }
                let idle_ms = now.saturating_sub(c.state.last_used_ms.load(Ordering::Relaxed));
                !std::mem::replace(&mut idle_kept, true) || idle_ms < EXTRA_IDLE_MS
            });
            left += v.len();
            !v.is_empty()
        });
        left
    });
    h2 + H1.with(|p| {
        let mut p = p.borrow_mut();
        let mut left = 0;
        p.retain(|_, v| {
            v.retain_mut(|i| {
                let keep =
                    !(i.expired(now) || i.wanted() || i.orphaned() || i.lease.conn.is_closed());
                left += usize::from(keep);
                keep
            });
            !v.is_empty()
        });
        left
    })
}

impl Idle {
    /// Idle past its timeout, or past its `maxConnectionDuration`.
    fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.since_ms) > self.lease.idle_timeout_ms
            || now_ms >= self.lease.retire_at_ms
    }

    /// Its cluster is no more (a reload replaced or removed it).
    fn orphaned(&self) -> bool {
        self.lease.cluster.strong_count() == 0
    }

    /// Its permit is wanted by a waiting request.
    fn wanted(&self) -> bool {
        self.lease.permit.is_some() && self.lease.pending.count.load(Ordering::SeqCst) > 0
    }
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
    /// The HTTP/2 handshake with the upstream failed (UF).
    #[error("upstream handshake: {0}")]
    Handshake(#[source] hyper::Error),
}

/// An HTTP/1.1 connection on loan; goes back to the pool when its response body ends.
pub struct Lease {
    key: Key,
    conn: Conn,
    used: u32,
    max_per_conn: u32,
    idle_timeout_ms: u64,
    /// When it stops taking requests (`maxConnectionDuration`; `u64::MAX`: never).
    retire_at_ms: u64,
    reused: bool,
    /// Gone once a reload replaced the cluster: its idle connections are then closed rather
    /// than kept to their idle timeout.
    cluster: Weak<ClusterRt>,
    pending: Arc<Pending>,
    /// The cluster's connection permit, held for the connection's life.
    permit: Option<OwnedSemaphorePermit>,
}

impl Lease {
    /// The connection.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Whether the connection carried a request before.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Puts the connection back in this thread's pool (or closes it: at its request limit,
    /// the pool full, or its permit wanted by a waiting request).
    pub fn release(mut self) {
        self.used += 1;
        self.reused = true;
        if self.max_per_conn != 0 && self.used >= self.max_per_conn {
            return;
        }
        let idle = Idle {
            since_ms: clock::now_ms(),
            lease: self,
        };
        if idle.wanted() || idle.orphaned() || idle.expired(idle.since_ms) {
            return;
        }
        H1.with(|p| {
            let mut p = p.borrow_mut();
            let v = p.entry(idle.lease.key.clone()).or_default();
            if v.len() < MAX_IDLE {
                v.push(idle);
            }
        });
        sweeper();
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("used", &self.used)
            .finish_non_exhaustive()
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

/// A permit for one of the cluster's `maxConnections`, waiting as a pending request
/// (`http1MaxPendingRequests`) when none is free; `None` without a limit.
pub async fn permit(rt: &ClusterRt) -> Result<Option<OwnedSemaphorePermit>, PoolError> {
    let Some(sem) = &rt.limits.connections else {
        return Ok(None);
    };
    if let Ok(p) = sem.clone().try_acquire_owned() {
        return Ok(Some(p));
    }
    let pending = &*rt.limits.pending;
    let waiting = pending.count.fetch_add(1, Ordering::SeqCst);
    let _waiting = Waiting(pending);
    if waiting + pending.for_stream.load(Ordering::SeqCst) >= rt.limits.max_pending {
        return Err(PoolError::Overflow);
    }
    // Idle pooled connections (on any thread) give their permits back.
    pending.reclaim.notify_waiters();
    RECLAIM.notify_waiters();
    let r = sem.clone().acquire_owned().await;
    r.map(Some).map_err(|_| PoolError::Overflow)
}

/// Opens the transport to an endpoint: TCP from the cluster's source address, then TLS when
/// the cluster originates it.
pub async fn transport(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
    via: Option<Via>,
) -> Result<Box<dyn Io>, PoolError> {
    open(rt, addr, sni, rt.tls.as_ref().map(|t| t.config()), via).await
}

/// [`transport`] for an HTTP/1.1 upgrade: TLS offers only `http/1.1` by ALPN. The upgrade is
/// an HTTP/1.1 exchange whatever the cluster's protocol; offering `h2` as the cluster's
/// pooled connections do would let a backend that speaks both choose HTTP/2 and then read
/// the request as a broken preface.
pub async fn upgrade_transport(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
    via: Option<Via>,
) -> Result<Box<dyn Io>, PoolError> {
    transport_offering(rt, addr, sni, &[b"http/1.1"], via).await
}

/// [`transport`] offering `alpn` (nothing, for bytes proxied over TCP).
pub async fn transport_offering(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&[u8]],
    via: Option<Via>,
) -> Result<Box<dyn Io>, PoolError> {
    let tls = rt.tls.as_ref().map(|t| {
        let cfg = t.config();
        if t.offers(alpn) {
            cfg
        } else {
            // Shares the verifier and session cache: only the offer differs.
            let mut c = (*cfg).clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(c)
        }
    });
    open(rt, addr, sni, tls, via).await
}

async fn open(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
    tls: Option<Arc<rustls::ClientConfig>>,
    via: Option<Via>,
) -> Result<Box<dyn Io>, PoolError> {
    let l = &rt.limits;
    if let Some(path) = rt.unix.get(&addr) {
        let s = connect::unix(path, addr, l.connect_timeout).await?;
        return finish(rt, s, addr, sni, tls, via).await;
    }
    let s = connect::tcp(
        addr,
        rt.config.source_address,
        l.connect_timeout,
        l.keepalive.as_ref(),
    )
    .await?;
    finish(rt, s, addr, sni, tls, via).await
}

/// A connected stream made ready: the PROXY header, then TLS when the cluster originates it.
async fn finish<S>(
    rt: &ClusterRt,
    mut s: S,
    addr: SocketAddr,
    sni: Option<&str>,
    tls: Option<Arc<rustls::ClientConfig>>,
    via: Option<Via>,
) -> Result<Box<dyn Io>, PoolError>
where
    S: Io,
    tokio_rustls::client::TlsStream<S>: Io,
{
    let timeout = rt.limits.connect_timeout;
    if let (Some(version), Some(via)) = (rt.config.policy.proxy_protocol, via) {
        connect::proxy_header(&mut s, version, via, addr, timeout).await?;
    }
    match tls {
        None => Ok(Box::new(s)),
        Some(cfg) => {
            let name = sni.unwrap_or_else(|| rt.config.host.as_str());
            let t = connect::tls(s, cfg, name, addr, timeout).await?;
            Ok(Box::new(t))
        }
    }
}

/// [`transport_offering`] without TLS, whatever the cluster's: bytes proxied over TCP that
/// the cluster does not originate TLS for.
pub async fn plain_transport(
    rt: &ClusterRt,
    addr: SocketAddr,
    via: Option<Via>,
) -> Result<Box<dyn Io>, PoolError> {
    open(rt, addr, None, None, via).await
}

/// A byte stream to an upstream.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static {
    /// Whether ALPN chose HTTP/2 (TLS only).
    fn alpn_h2(&self) -> bool {
        false
    }
}

impl Io for tokio::net::TcpStream {}

impl Io for tokio::net::UnixStream {}

impl<S: Io> Io for tokio_rustls::client::TlsStream<S> {
    fn alpn_h2(&self) -> bool {
        self.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

/// How long a pooled connection may idle: the cluster's `idleTimeout`, but at most 5 s for
/// one made for a single client (PROXY protocol), which no other request can use.
fn idle_ms(rt: &ClusterRt, key: &Key) -> u64 {
    let ms = u64::try_from(rt.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    if key.via.is_some() { ms.min(5_000) } else { ms }
}

fn key(rt: &ClusterRt, addr: SocketAddr, sni: Option<&str>, via: Option<Via>) -> Key {
    Key {
        cluster: rt.id,
        addr,
        via: via
            .filter(|_| rt.config.policy.proxy_protocol.is_some())
            .map(Arc::new),
        sni: if rt.tls.is_some() {
            sni.map(Arc::from)
        } else {
            None
        },
    }
}

/// When a connection opened now stops taking requests (`maxConnectionDuration`).
fn retire_at(rt: &ClusterRt) -> u64 {
    match rt.limits.max_connection_duration {
        Some(d) => clock::now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => u64::MAX,
    }
}

/// An HTTP/1.1 connection to `addr`: an idle pooled one, or a new one.
pub async fn http1(
    rt: &Arc<ClusterRt>,
    addr: SocketAddr,
    sni: Option<&str>,
    fresh: bool,
    via: Option<Via>,
) -> Result<Lease, PoolError> {
    let key = key(rt, addr, sni, via);
    if !fresh {
        let now = clock::now_ms();
        while let Some(mut idle) = H1.with(|p| p.borrow_mut().get_mut(&key).and_then(Vec::pop)) {
            if !(idle.expired(now) || idle.lease.conn.is_closed()) {
                return Ok(idle.lease);
            }
        }
    }
    // Boxed: a new connection (TCP, maybe TLS) is a large future and a rare one; inline, it
    // would make every request's future that much larger (see `server::serve`).
    let (permit, io) = Box::pin(async {
        let permit = permit(rt).await?;
        let io = transport(rt, addr, sni, via).await?;
        Ok::<_, PoolError>((permit, io))
    })
    .await?;
    Ok(Lease {
        idle_timeout_ms: idle_ms(rt, &key),
        key,
        conn: Conn::new(io),
        used: 0,
        max_per_conn: rt.limits.per_connection,
        retire_at_ms: retire_at(rt),
        reused: false,
        cluster: Arc::downgrade(rt),
        pending: rt.limits.pending.clone(),
        permit,
    })
}

/// An HTTP/2 sender to `addr`: the thread's connection to it, or a new one. The [`Busy`]
/// guard counts the stream; keep it until the response body ends.
pub async fn http2(
    rt: &Arc<ClusterRt>,
    addr: SocketAddr,
    sni: Option<&str>,
    via: Option<Via>,
) -> Result<(http2::SendRequest<Body>, Busy), PoolError> {
    let k = key(rt, addr, sni, via);
    // `maxConcurrentStreams`: a connection with that many streams open takes no more; the
    // next request opens another connection (Envoy's pool does the same).
    let max_streams = rt
        .config
        .policy
        .connection_pool
        .as_ref()
        .and_then(|p| p.max_concurrent_streams)
        .unwrap_or(u32::MAX);
    // Read only when connections retire by age (the one use of the time here).
    let now = || {
        if rt.limits.max_connection_duration.is_some() {
            clock::now_ms()
        } else {
            0
        }
    };
    let find = || {
        let now = now();
        H2.with(|p| {
            p.borrow().get(&k).and_then(|v| {
                v.iter()
                    .find(|c| {
                        !c.tx.is_closed()
                            && c.tx.is_ready()
                            && !c.used_up(now)
                            && c.state.busy.load(Ordering::SeqCst) < max_streams
                    })
                    .map(|c| (c.tx.clone(), c.state.clone()))
            })
        })
    };
    if let Some((tx, state)) = find() {
        return Ok((tx, Busy::new(state, rt.limits.pending.clone())));
    }
    // Boxed for the same reason as in `http1`.
    let (permit, tx, conn) = match Box::pin(stream_or_permit(rt, &k, find)).await? {
        Wait::Stream(tx, state) => {
            return Ok((tx, Busy::new(state, rt.limits.pending.clone())));
        }
        Wait::Permit(p) => {
            let _opening = Opening::new(&k);
            Box::pin(http2_connect(rt, addr, sni, p, via)).await?
        }
    };
    let freed = freed(&k);
    let state = Arc::new(ConnState {
        freed: freed.clone(),
        ..ConnState::default()
    });
    let busy = Busy::new(state.clone(), rt.limits.pending.clone());
    run_conn(conn, permit, state.clone(), rt.limits.pending.clone());
    let entry = H2Conn {
        tx: tx.clone(),
        state,
        cluster: Arc::downgrade(rt),
        idle_timeout_ms: idle_ms(rt, &k),
        max_streams_total: rt.limits.per_connection,
        retire_at_ms: retire_at(rt),
    };
    H2.with(|p| p.borrow_mut().entry(k).or_default().push(entry));
    // Requests waiting for a stream may find one on it.
    freed.notify_waiters();
    sweeper();
    Ok((tx, busy))
}

/// This thread's wake-up for requests waiting for a stream to the endpoint of `k`.
fn freed(k: &Key) -> Arc<tokio::sync::Notify> {
    FREED.with(|f| f.borrow_mut().entry(k.clone()).or_default().clone())
}

/// Counts an HTTP/2 connection being opened to an endpoint on this thread until dropped
/// (opened and registered, or failed: either way its waiters look again).
struct Opening {
    key: Key,
}

impl Opening {
    fn new(key: &Key) -> Self {
        CONNECTING.with(|c| *c.borrow_mut().entry(key.clone()).or_default() += 1);
        Self { key: key.clone() }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        CONNECTING.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(n) = c.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&self.key);
                }
            }
        });
        freed(&self.key).notify_waiters();
    }
}

/// What a request without a free HTTP/2 stream gets.
enum Wait {
    /// A stream on one of the thread's connections to the endpoint.
    Stream(http2::SendRequest<Body>, Arc<ConnState>),
    /// A permit for a new connection (`None`: the cluster has no connection limit).
    Permit(Option<OwnedSemaphorePermit>),
}

/// At `maxConnections` with this thread's connections to the endpoint at
/// `maxConcurrentStreams` (or still being opened), a request waits for one of their streams,
/// as Envoy queues it on the pool, rather than for a permit: waiting for a permit would close whichever
/// connection goes idle first only to open another (a handshake per request). It takes a
/// permit instead if one comes free first, or if it has no connection of its own to wait on.
async fn stream_or_permit(
    rt: &ClusterRt,
    k: &Key,
    find: impl Fn() -> Option<(http2::SendRequest<Body>, Arc<ConnState>)>,
) -> Result<Wait, PoolError> {
    let Some(sem) = &rt.limits.connections else {
        return Ok(Wait::Permit(None));
    };
    if let Ok(p) = sem.clone().try_acquire_owned() {
        return Ok(Wait::Permit(Some(p)));
    }
    // A connection that will take streams again once one ends (not one used up or aged out:
    // that one gives its permit back once idle, which a pending request asks for).
    let live = || {
        let now = clock::now_ms();
        CONNECTING.with(|c| c.borrow().contains_key(k))
            || H2.with(|p| {
                p.borrow()
                    .get(k)
                    .is_some_and(|v| v.iter().any(|c| !c.tx.is_closed() && !c.used_up(now)))
            })
    };
    if !live() {
        return permit(rt).await.map(Wait::Permit);
    }
    let pending = &*rt.limits.pending;
    let waiting = pending.for_stream.fetch_add(1, Ordering::SeqCst);
    let _waiting = ForStream(pending);
    if waiting + pending.count.load(Ordering::SeqCst) >= rt.limits.max_pending {
        return Err(PoolError::Overflow);
    }
    let wake = freed(k);
    // Kept across wake-ups: its place in the semaphore's queue is not given up.
    let mut acquire = std::pin::pin!(sem.clone().acquire_owned());
    loop {
        // Registered before looking, so a stream ending in between is not missed.
        let freed = wake.notified();
        let mut freed = std::pin::pin!(freed);
        freed.as_mut().enable();
        if let Some((tx, state)) = find() {
            return Ok(Wait::Stream(tx, state));
        }
        if !live() {
            // Counted once: as a request waiting for a permit from here on.
            drop(_waiting);
            return permit(rt).await.map(Wait::Permit);
        }
        tokio::select! {
            () = &mut freed => {}
            p = &mut acquire => {
                return p.map(|p| Wait::Permit(Some(p))).map_err(|_| PoolError::Overflow);
            }
        }
    }
}

/// Counts a request waiting for a stream until dropped.
struct ForStream<'a>(&'a Pending);

impl Drop for ForStream<'_> {
    fn drop(&mut self) {
        self.0.for_stream.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A new HTTP/2 connection to `addr` on `permit`, handshake done; its connection future
/// still to run.
async fn http2_connect(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: Option<&str>,
    permit: Option<OwnedSemaphorePermit>,
    via: Option<Via>,
) -> Result<
    (
        Option<OwnedSemaphorePermit>,
        http2::SendRequest<Body>,
        http2::Connection<TokioIo<Box<dyn Io>>, Body, TokioExecutor>,
    ),
    PoolError,
> {
    let io = transport(rt, addr, sni, via).await?;
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
    let (tx, conn) = b
        .handshake(TokioIo::new(io))
        .await
        .map_err(PoolError::Handshake)?;
    Ok((permit, tx, conn))
}
