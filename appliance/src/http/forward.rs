//! Sending a request upstream: endpoint choice, connection from the pool, per-try and route
//! timeouts, retries with backoff, outlier detection bookkeeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use rand::Rng;
use tenants::model::{LoadBalancer, RetryPolicy};
use tenants::snapshot::UpstreamProtocol;
use tokio::time::Instant;

use super::body::{self, Body};
use super::deadline::{self, Timeouts};
use super::errors::{Flag, Flags, ProxyError};
use super::headers;
use super::tee::Tee;
use crate::upstream::endpoint::Active;
use crate::upstream::h1::{self, Again};
use crate::upstream::pool::{self, PoolError};
use crate::upstream::proxy_protocol::Via;
use crate::upstream::{ClusterRt, Endpoint, Outcome};

/// The request body as far as retries are concerned.
pub enum Source {
    /// No body: every attempt sends an empty body.
    Empty,
    /// Buffered (small): every attempt resends it.
    Buffered(Bytes),
    /// Streamed: only an attempt that never sent it can be retried.
    Stream(Option<Body>),
    /// Streamed with a copy kept for retries (length unknown; see [`Tee`]).
    Tee(Tee),
}

impl Source {
    fn take(&mut self) -> Option<Body> {
        match self {
            Self::Empty => Some(body::empty()),
            Self::Buffered(b) => Some(body::full(b.clone())),
            Self::Stream(s) => s.take(),
            Self::Tee(t) => t.attempt(),
        }
    }

    fn replayable(&self) -> bool {
        match self {
            Self::Stream(s) => s.is_some(),
            Self::Tee(t) => t.replayable(),
            Self::Empty | Self::Buffered(_) => true,
        }
    }
}

/// The head of the upstream request, reused across attempts.
pub struct Head {
    /// Method.
    pub method: Method,
    /// Path and query (shares the request's bytes unless rewritten).
    pub path: PathAndQuery,
    /// Authority sent upstream: a handle on the client's `Host` bytes unless rewritten.
    pub authority: HeaderValue,
    /// Headers (hop-by-hop already removed).
    pub headers: HeaderMap,
    /// The downstream protocol version (for `useClientProtocol`).
    pub downstream: Version,
    /// Whether the request is gRPC.
    pub grpc: bool,
    /// The downstream connection (a PROXY protocol header names it).
    pub via: Via,
}

impl Head {
    /// The authority as text. The client's was checked when the head was made; a configured
    /// one came from a string.
    pub fn authority(&self) -> &str {
        std::str::from_utf8(self.authority.as_bytes()).unwrap_or_default()
    }
}

/// What the attempt loop reports besides the response.
#[derive(Default)]
pub struct Report {
    /// The endpoint of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// Attempts made.
    pub attempts: u32,
    /// Time from the first attempt to response headers.
    pub service_time: Option<Duration>,
}

fn wants_h2(rt: &ClusterRt, downstream: Version) -> bool {
    match rt.config.protocol {
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::ClientProtocol => downstream == Version::HTTP_2,
        _ => false,
    }
}

/// The HTTP/2 request (HTTP/1.1 requests are written from the head itself).
fn build(h: &Head, tls: bool, b: Body) -> Request<Body> {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(h.path.clone());
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = h.authority().parse().ok();
    let uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
    let mut r = Request::new(b);
    *r.method_mut() = h.method.clone();
    *r.uri_mut() = uri;
    *r.version_mut() = Version::HTTP_2;
    *r.headers_mut() = h.headers.clone();
    r.headers_mut().remove(http::header::HOST);
    r
}

fn wire(h: &Head) -> h1::Head<'_> {
    h1::Head {
        method: &h.method,
        target: h.path.as_str(),
        host: h.authority(),
        headers: &h.headers,
    }
}

pin_project_lite::pin_project! {
    /// `F` polled in a function of its own: the exchange's state machine inlined into the
    /// request handler's made every request about a thousand instructions dearer (the
    /// handler's code with it grew past what LLVM keeps in registers; stop 29's profile).
    struct OutOfLine<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for OutOfLine<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// One attempt's failure.
enum Fail {
    Pool(PoolError),
    /// The exchange failed; `sent` when some of the request may have reached the upstream.
    Send {
        error: body::BoxError,
        sent: bool,
    },
    Timeout,
}

impl Fail {
    /// An HTTP/1.1 exchange's failure: the request reached the connection unless the client
    /// says nothing of it did.
    fn h1(f: h1::Failure) -> Self {
        Self::Send {
            sent: f.again != Again::Unsent,
            error: f.error.into(),
        }
    }
}

/// A connection ready to take one request.
enum Conn {
    H1(pool::Lease),
    H2(hyper::client::conn::http2::SendRequest<Body>, pool::Busy),
}

/// A response body that keeps `G` alive until the body is done with (a stream counted on
/// an HTTP/2 connection, a request counted against `http2MaxRequests`).
struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Sync + Unpin + 'static> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, body::BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `resp` with `guard` held until its body is done with.
pub(crate) fn guarded<G: Send + Sync + Unpin + 'static>(
    resp: Response<Body>,
    guard: G,
) -> Response<Body> {
    resp.map(|inner| {
        body::boxed(Guarded {
            inner,
            _guard: guard,
        })
    })
}

/// One request counted against the cluster's `http2MaxRequests` until dropped.
pub(crate) struct InFlight(Arc<ClusterRt>);

impl InFlight {
    /// Counts a request, or `None` when the cluster is at its limit (overflow).
    pub(crate) fn new(rt: &Arc<ClusterRt>) -> Option<Self> {
        let l = &rt.limits;
        if l.requests.fetch_add(1, Ordering::AcqRel) >= l.max_requests {
            l.requests.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(rt.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.limits.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request's share of the cluster's retry budget (`maxRetries`: requests retrying at
/// once), taken at its first retry and given back when the request is done.
pub(crate) struct RetryBudget<'a>(&'a ClusterRt);

impl<'a> RetryBudget<'a> {
    /// The share, or `None` when the budget is spent (the retry is turned down).
    pub(crate) fn take(rt: &'a ClusterRt) -> Option<Self> {
        let l = &rt.limits;
        if l.retries.fetch_add(1, Ordering::AcqRel) >= l.max_retries_now() {
            l.retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(rt))
    }
}

impl Drop for RetryBudget<'_> {
    fn drop(&mut self) {
        self.0.limits.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Envoy's backoff before retry `n` (1 for the first): full jitter up to `base` doubled per
/// retry, capped at ten times `base` (Envoy's `max_interval` default). `base` is the route's
/// `retries.backoff`, else Envoy's 25 ms.
pub(crate) fn backoff(n: u32, base: Option<Duration>) -> Duration {
    Duration::from_millis(rand::rng().random_range(0..=backoff_cap(n, base)))
}

/// The longest wait [`backoff`] may draw before retry `n`, in milliseconds.
fn backoff_cap(n: u32, base: Option<Duration>) -> u64 {
    let base = base.map_or(25, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let doubled = base.saturating_mul(1u64 << n.saturating_sub(1).min(32));
    doubled.min(base.saturating_mul(10))
}

/// Whether a retry goes to an endpoint not tried yet. `retryIgnorePreviousHosts` decides when
/// set; unset, Istio configures Envoy's `previous_hosts` retry predicate on every route except
/// to a cluster that hashes (`consistentHash`): there a retry keeps to the endpoint the key
/// chose.
pub(crate) fn avoids_tried(policy: &RetryPolicy, lb: Option<&LoadBalancer>) -> bool {
    policy
        .ignore_previous_hosts
        .unwrap_or(!matches!(lb, Some(LoadBalancer::ConsistentHash(_))))
}

async fn connect(
    rt: &Arc<ClusterRt>,
    addr: SocketAddr,
    sni: Option<&str>,
    h2: bool,
    via: Via,
) -> Result<Conn, PoolError> {
    if h2 {
        let (tx, busy) = pool::http2(rt, addr, sni, Some(via)).await?;
        Ok(Conn::H2(tx, busy))
    } else {
        Ok(Conn::H1(
            pool::http1(rt, addr, sni, false, Some(via)).await?,
        ))
    }
}

/// Sends the request with a body from `src`. An HTTP/1.1 request that a pooled connection
/// failed to carry (see [`Again`]) goes once more on a new connection, if `src` can give
/// the body a second time; that is not an attempt.
async fn exchange(
    rt: &Arc<ClusterRt>,
    addr: SocketAddr,
    sni: Option<&str>,
    conn: Conn,
    head: &Head,
    src: &mut Source,
) -> Result<Response<Body>, Fail> {
    // The body is handed over only once a connection exists, so a connect failure leaves it
    // in place for the next attempt, streamed or not.
    let Some(b) = src.take() else {
        return Err(Fail::Pool(PoolError::Overflow));
    };
    match conn {
        Conn::H2(mut tx, busy) => {
            let resp = tx
                .send_request(build(head, rt.tls.is_some(), b))
                .await
                // A stream the server refused was not processed; any other failure may
                // come after the request went out.
                .map_err(|e| Fail::Send {
                    sent: !format!("{e:?}").contains("REFUSED_STREAM"),
                    error: e.into(),
                })?;
            Ok(guarded(resp.map(body::boxed), busy))
        }
        Conn::H1(lease) => {
            let f = match h1::send(lease, wire(head), b).await {
                Ok(resp) => return Ok(resp),
                Err(f) => f,
            };
            // An unanswered request went out on the reused connection: whatever the fresh
            // one does, the upstream may have it.
            let first_sent = f.again != Again::Unsent;
            let Some(b) = again(f.again, &head.method).then(|| src.take()).flatten() else {
                return Err(Fail::h1(f));
            };
            let fresh = pool::http1(rt, addr, sni, true, Some(head.via))
                .await
                .map_err(Fail::Pool)?;
            h1::send(fresh, wire(head), b)
                .await
                .map_err(|g| match Fail::h1(g) {
                    Fail::Send { error, sent } => Fail::Send {
                        error,
                        sent: sent || first_sent,
                    },
                    other => other,
                })
        }
    }
}

/// Whether a request whose HTTP/1.1 exchange failed may go to a new connection.
fn again(a: Again, method: &Method) -> bool {
    match a {
        Again::Never => false,
        Again::Unsent => true,
        Again::Unanswered => method.is_idempotent(),
    }
}

fn outcome(status: u16) -> Outcome {
    match status {
        502..=504 => Outcome::GatewayError,
        500..=599 => Outcome::Error5xx,
        _ => Outcome::Success,
    }
}

fn retriable_status(p: &RetryPolicy, status: u16, headers: &HeaderMap, grpc: bool) -> bool {
    let on = &p.retry_on;
    (on.five_xx && (500..=599).contains(&status))
        || (on.gateway_error && (502..=504).contains(&status))
        || (on.retriable_4xx && status == 409)
        || on.status_codes.contains(&status)
        || (grpc && !on.grpc.is_empty() && {
            let code = headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<u8>().ok());
            matches!(code, Some(c) if on.grpc.iter().any(|n| grpc_code(n) == Some(c)))
        })
}

fn grpc_code(name: &str) -> Option<u8> {
    Some(match name {
        "cancelled" => 1,
        "deadline-exceeded" => 4,
        "resource-exhausted" => 8,
        "internal" => 13,
        "unavailable" => 14,
        _ => return None,
    })
}

/// Whether the request needs its body kept for response-based retries.
pub fn response_retries(p: &RetryPolicy, grpc: bool) -> bool {
    let on = &p.retry_on;
    p.attempts > 0
        && (on.five_xx
            || on.gateway_error
            || on.retriable_4xx
            || on.reset
            || on.reset_before_request
            || !on.status_codes.is_empty()
            || (grpc && !on.grpc.is_empty()))
}

/// The answer that stands: a streamed body's copy has no retry left to serve; the service
/// time is set; its body is bounded by the timeouts and holds the in-flight count.
fn stands(
    mut resp: Response<Body>,
    attempt: Instant,
    src: &Source,
    started: Instant,
    report: &mut Report,
    timeouts: &Timeouts,
    in_flight: Option<InFlight>,
) -> Response<Body> {
    if let Source::Tee(t) = src {
        t.settle();
    }
    let took = started.elapsed();
    report.service_time = Some(took);
    resp.headers_mut().insert(
        headers::X_ENVOY_UPSTREAM_SERVICE_TIME,
        headers::millis_value(u64::try_from(took.as_millis()).unwrap_or(u64::MAX)),
    );
    if let Some(g) = in_flight {
        resp = guarded(resp, g);
    }
    // Outside the in-flight guard: a body cut off at its deadline stops counting at once.
    if timeouts.any() {
        resp = resp.map(|b| deadline::bound(b, timeouts, attempt));
    }
    resp
}

/// Sends the request to `rt` with `policy`'s retries, within `timeouts` (from the end of the
/// request to the end of the response, as Envoy counts them).
#[allow(clippy::too_many_arguments)]
pub async fn send(
    rt: &Arc<ClusterRt>,
    head: &Head,
    mut src: Source,
    policy: &RetryPolicy,
    timeouts: &Timeouts,
    hash: Option<u64>,
    flags: &mut Flags,
    report: &mut Report,
) -> Result<Response<Body>, ProxyError> {
    // `http2MaxRequests`: requests in flight to the cluster, counted until the response
    // body is done with (only when a limit, or a retry budget's share, needs the count).
    let in_flight = if !rt.limits.counts_requests() {
        None
    } else {
        match InFlight::new(rt) {
            Some(g) => Some(g),
            None => return Err(ProxyError::Overflow),
        }
    };
    let started = Instant::now();
    let timed = timeouts.any();
    // Passed once the request has ended and the route's time since has run out.
    let expired = |extra: Duration| {
        timeouts
            .route_deadline()
            .is_some_and(|d| Instant::now() + extra >= d)
    };
    let h2 = wants_h2(rt, head.downstream);
    let sni: Option<String> = rt.tls.as_ref().map(|_| {
        rt.config
            .tls
            .as_ref()
            .and_then(|t| t.sni.clone())
            .unwrap_or_else(|| {
                crate::http::rewrite::split_authority(head.authority())
                    .0
                    .to_string()
            })
    });
    // DYNAMIC_DNS: the endpoints of the name the request asks for, for every attempt.
    let named = match &rt.dynamic {
        // Boxed: the lookup's future would otherwise enlarge every request's.
        Some(d) => Some(Box::pin(d.endpoints(head.authority())).await?),
        None => None,
    };
    let replay = response_retries(policy, head.grpc) && !matches!(src, Source::Stream(_));
    let max_attempts = 1 + policy.attempts;
    let mut last: Option<ProxyError> = None;
    let mut retrying: Option<RetryBudget<'_>> = None;
    let od = rt.config.policy.outlier_detection.as_ref();
    let on = &policy.retry_on;
    // Endpoints already tried: a retry goes elsewhere when it can (see `avoids_tried`).
    let mut tried: Vec<SocketAddr> = Vec::new();
    let avoid_tried = avoids_tried(policy, rt.config.policy.load_balancer.as_ref());
    // A retriable answer kept while its retry waits: it stands if the retry budget turns
    // the retry down (Envoy passes the answer on then).
    let mut kept: Option<Box<(Response<Body>, Instant)>> = None;
    // Some try may have reached the upstream: `reset-before-request` retries no more after
    // that, as Envoy's `upstream_request_started` stays set across tries.
    let mut reached = false;
    for n in 0..max_attempts {
        if n > 0 {
            // Kept from the first retry on: a request answered at once allocates nothing.
            if let Some(prev) = report.upstream
                && avoid_tried
                && !tried.contains(&prev)
            {
                tried.push(prev);
            }
            let wait = backoff(n, policy.backoff);
            if expired(wait) {
                // Envoy's route timer fires during this backoff: 504 UT at the deadline. The
                // kept answer's connection is let go first.
                drop(kept.take());
                if let Some(d) = timeouts.route_deadline() {
                    tokio::time::sleep_until(d).await;
                }
                break;
            }
            if retrying.is_none() {
                retrying = RetryBudget::take(rt);
                if retrying.is_none() {
                    if let Some(k) = kept.take() {
                        let (resp, attempt) = *k;
                        return Ok(stands(
                            resp, attempt, &src, started, report, timeouts, in_flight,
                        ));
                    }
                    break;
                }
            }
            tokio::time::sleep(wait).await;
            kept = None;
        }
        let eps = match &named {
            Some(n) => arc_swap::Guard::from_inner(n.clone()),
            None => rt.endpoints.load(),
        };
        let now = crate::clock::now_ms();
        let others: Vec<Arc<Endpoint>> = if tried.is_empty() {
            Vec::new()
        } else {
            eps.iter()
                .filter(|e| !(tried.contains(&e.addr) || od.is_some() && e.is_ejected(now)))
                .cloned()
                .collect()
        };
        let candidates: &[Arc<Endpoint>] = if others.is_empty() { &eps } else { &others };
        let Some(ep) = rt.balancer.pick(
            candidates,
            rt.config.policy.load_balancer.as_ref(),
            od,
            rt.config.policy.warmup.as_ref(),
            hash,
            now,
        ) else {
            last = Some(ProxyError::NoHealthyUpstream);
            break;
        };
        drop(others);
        drop(eps);
        report.attempts = n + 1;
        report.upstream = Some(ep.addr);
        let _active = Active::new(&ep);
        let attempt = Instant::now();
        let left = n + 1 < max_attempts;
        // Written out where it is awaited, so the attempt's future is built in place: moved
        // (a named future), it cost a copy of its whole state on every request.
        macro_rules! step {
            () => {
                async {
                    let conn = connect(rt, ep.addr, sni.as_deref(), h2, head.via)
                        .await
                        .map_err(Fail::Pool)?;
                    OutOfLine {
                        inner: exchange(rt, ep.addr, sni.as_deref(), conn, head, &mut src),
                    }
                    .await
                }
            };
        }
        let result = if timed {
            let expiry = timeouts.expiry(attempt);
            // Boxed: the timer and the select stay out of the untimed request's future.
            Box::pin(async {
                tokio::select! {
                    biased;
                    r = step!() => r,
                    () = expiry => Err(Fail::Timeout),
                }
            })
            .await
        } else {
            step!().await
        };
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                rt.record(&ep, outcome(status));
                let retriable = retriable_status(policy, status, resp.headers(), head.grpc);
                if retriable && left && replay && src.replayable() {
                    reached = true;
                    kept = Some(Box::new((resp, attempt)));
                    continue;
                }
                if retriable && n > 0 {
                    flags.add(Flag::RetryLimitExceeded);
                }
                drop(retrying);
                return Ok(stands(
                    resp, attempt, &src, started, report, timeouts, in_flight,
                ));
            }
            Err(Fail::Pool(PoolError::Overflow)) => {
                last = Some(ProxyError::Overflow);
                break;
            }
            Err(Fail::Pool(e)) => {
                rt.record(&ep, Outcome::LocalOrigin);
                last = Some(ProxyError::Connect(e.to_string()));
                // Envoy counts a connect failure as a reset too (`reset` retries it), one
                // before the request was sent.
                if !(on.connect_failure
                    || on.reset
                    || (on.reset_before_request && !reached)
                    || on.five_xx
                    || on.gateway_error)
                    || !left
                {
                    break;
                }
            }
            Err(Fail::Send { error: e, sent }) => {
                rt.record(&ep, Outcome::LocalOrigin);
                let refused = format!("{e:?}").contains("REFUSED_STREAM");
                last = Some(ProxyError::Reset(e.to_string()));
                reached |= sent;
                if !(on.reset
                    || on.five_xx
                    || on.gateway_error
                    || (refused && on.refused_stream)
                    || (!reached && on.reset_before_request))
                    || !left
                    || !src.replayable()
                {
                    break;
                }
            }
            Err(Fail::Timeout) => {
                rt.record(&ep, Outcome::LocalOrigin);
                last = Some(ProxyError::Timeout);
                reached = true;
                if expired(Duration::ZERO)
                    || !(on.reset || on.five_xx || on.gateway_error)
                    || !left
                    || !src.replayable()
                {
                    break;
                }
            }
        }
    }
    drop(retrying);
    if report.attempts > 1 {
        flags.add(Flag::RetryLimitExceeded);
    }
    if expired(Duration::ZERO) {
        return Err(ProxyError::Timeout);
    }
    Err(last.unwrap_or(ProxyError::NoHealthyUpstream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenants::model::HashKey;

    #[test]
    fn backoff_doubles_from_its_base_up_to_ten_times_it() {
        // Envoy's defaults: 25 ms base, 250 ms cap.
        let caps: Vec<u64> = (1..=6).map(|n| backoff_cap(n, None)).collect();
        assert_eq!(caps, [25, 50, 100, 200, 250, 250]);
        let base = Some(Duration::from_millis(300));
        let caps: Vec<u64> = (1..=6).map(|n| backoff_cap(n, base)).collect();
        assert_eq!(caps, [300, 600, 1200, 2400, 3000, 3000]);
        // No overflow for a silly base or a high retry count.
        assert_eq!(
            backoff_cap(u32::MAX, Some(Duration::from_secs(u64::MAX / 1000))),
            u64::MAX
        );
        for n in 1..=4 {
            assert!(backoff(n, base).as_millis() <= u128::from(backoff_cap(n, base)));
        }
    }

    #[test]
    fn retries_avoid_tried_endpoints_as_istio_configures_envoy() {
        let mut p = RetryPolicy::mesh_default();
        let hash = LoadBalancer::ConsistentHash(HashKey::SourceIp);
        assert!(avoids_tried(&p, None));
        assert!(avoids_tried(&p, Some(&LoadBalancer::RoundRobin)));
        assert!(!avoids_tried(&p, Some(&hash)));
        p.ignore_previous_hosts = Some(true);
        assert!(avoids_tried(&p, Some(&hash)));
        p.ignore_previous_hosts = Some(false);
        assert!(!avoids_tried(&p, None));
        assert!(!avoids_tried(&p, Some(&LoadBalancer::RoundRobin)));
    }
}
