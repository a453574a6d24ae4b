//! HTTP/1.1 upgrades (websockets): the upgrade request goes upstream on a fresh connection;
//! after `101 Switching Protocols` both sides are spliced.
//!
//! The endpoint is chosen as for any request of the cluster: by its load balancer with the
//! request's hash key (a sticky session keeps its websocket on the same backend), never an
//! ejected endpoint, and the outcome is recorded for outlier detection. The upgraded
//! connection holds one of the cluster's `maxConnections`, counts against `http2MaxRequests`
//! and as a request in flight on its endpoint (LEAST_REQUEST) until it closes. TLS
//! origination uses the DestinationRule's `sni` and offers only `http/1.1`.
//!
//! Until the upstream answers, the upgrade is an ordinary request: a connection that cannot
//! be made, or one reset before its answer, is tried again on another endpoint when the
//! route retries connect failures or resets, after Envoy's backoff and within the cluster's
//! retry budget; the route `timeout` (and `perTryTimeout`) bound the wait for the answer,
//! counted from the request, as Envoy does for upgrades since envoyproxy/envoy#41075. The
//! answer disarms them: a spliced connection lives as long as its two sides do.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tenants::model::RetryPolicy;
use tokio::time::Instant;

use super::body::{self, Body};
use super::deadline::Timeouts;
use super::errors::ProxyError;
use super::forward::{self, Head, InFlight, Report, RetryBudget};
use crate::upstream::endpoint::ActiveOwned;
use crate::upstream::pool::{self, PoolError};
use crate::upstream::{ClusterRt, Endpoint, Outcome};

/// Why one attempt got no answer.
enum Fail {
    /// No connection (UF).
    Connect(String),
    /// The connection failed before the answer (UF, reset).
    Reset(String),
    /// The attempt's time ran out (UT).
    Timeout,
}

/// Forwards an upgrade request and, on 101, splices the two upgraded connections.
pub async fn forward(
    rt: &Arc<ClusterRt>,
    head: Head,
    downstream: OnUpgrade,
    hash: Option<u64>,
    policy: &RetryPolicy,
    timeouts: &Timeouts,
    report: &mut Report,
) -> Result<Response<Body>, ProxyError> {
    let in_flight = if !rt.limits.counts_requests() {
        None
    } else {
        Some(InFlight::new(rt).ok_or(ProxyError::Overflow)?)
    };
    // A wait for one of the cluster's connections counts against the route timeout too.
    let permit = tokio::select! {
        biased;
        p = pool::permit(rt) => p.map_err(|e| match e {
            PoolError::Overflow => ProxyError::Overflow,
            e => ProxyError::Connect(e.to_string()),
        })?,
        () = timeouts.expiry(Instant::now()) => return Err(ProxyError::Timeout),
    };
    let lb = rt.config.policy.load_balancer.as_ref();
    let sni = rt
        .config
        .tls
        .as_ref()
        .and_then(|t| t.sni.clone())
        .unwrap_or_else(|| {
            super::rewrite::split_authority(head.authority())
                .0
                .to_string()
        });
    let on = &policy.retry_on;
    let retry_connect =
        on.connect_failure || on.reset || on.reset_before_request || on.five_xx || on.gateway_error;
    let retry_reset = on.reset || on.five_xx || on.gateway_error;
    let attempts = 1 + if retry_connect { policy.attempts } else { 0 };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let avoid_tried = forward::avoids_tried(policy, lb);
    let route_expired = || {
        timeouts
            .route_deadline()
            .is_some_and(|d| Instant::now() >= d)
    };
    // DYNAMIC_DNS: the endpoints of the name the upgrade asks for.
    let named = match &rt.dynamic {
        Some(d) => Some(Box::pin(d.endpoints(head.authority())).await?),
        None => None,
    };
    let mut budget: Option<RetryBudget<'_>> = None;
    let mut last = ProxyError::NoHealthyUpstream;
    for n in 0..attempts {
        if n > 0 {
            if budget.is_none() {
                budget = RetryBudget::take(rt);
                if budget.is_none() {
                    break;
                }
            }
            // Envoy's route timer fires during the backoff: a long `backoff` does not hold
            // the upgrade past the route's deadline.
            let wait = tokio::time::sleep(forward::backoff(n, policy.backoff));
            match timeouts.route_deadline() {
                Some(d) => {
                    tokio::select! {
                        () = wait => {}
                        () = tokio::time::sleep_until(d) => {}
                    }
                }
                None => wait.await,
            }
            if route_expired() {
                last = ProxyError::Timeout;
                break;
            }
        }
        let Some(ep) = pick(rt, named.as_ref(), &tried, hash) else {
            break;
        };
        report.upstream = Some(ep.addr);
        report.attempts = n + 1;
        let active = ActiveOwned::new(ep.clone());
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            r = attempt(rt, ep.addr, &sni, &head) => r,
            () = timeouts.expiry(started) => Err(Fail::Timeout),
        };
        let failed = match result {
            Ok(resp) => {
                rt.record(
                    &ep,
                    match resp.status().as_u16() {
                        502..=504 => Outcome::GatewayError,
                        500..=599 => Outcome::Error5xx,
                        _ => Outcome::Success,
                    },
                );
                let held = (permit, active, in_flight);
                return Ok(answer(resp, downstream, held, timeouts, started));
            }
            Err(f) => f,
        };
        rt.record(&ep, Outcome::LocalOrigin);
        if avoid_tried {
            tried.push(ep.addr);
        }
        let again = match failed {
            Fail::Connect(e) => {
                last = ProxyError::Connect(e);
                retry_connect
            }
            Fail::Reset(e) => {
                last = ProxyError::Reset(e);
                retry_reset
            }
            Fail::Timeout => {
                last = ProxyError::Timeout;
                retry_reset && !route_expired()
            }
        };
        if !again {
            break;
        }
    }
    Err(last)
}

/// The endpoint for the next attempt: the balancer's choice among those not tried yet (all
/// of them once every one was tried).
fn pick(
    rt: &ClusterRt,
    named: Option<&Arc<Vec<Arc<Endpoint>>>>,
    tried: &[SocketAddr],
    hash: Option<u64>,
) -> Option<Arc<Endpoint>> {
    let policy = &rt.config.policy;
    let eps = match named {
        Some(n) => arc_swap::Guard::from_inner(n.clone()),
        None => rt.endpoints.load(),
    };
    let others: Vec<_> = eps
        .iter()
        .filter(|e| !tried.contains(&e.addr))
        .cloned()
        .collect();
    let candidates = if others.is_empty() {
        &eps[..]
    } else {
        &others[..]
    };
    rt.balancer.pick(
        candidates,
        policy.load_balancer.as_ref(),
        policy.outlier_detection.as_ref(),
        policy.warmup.as_ref(),
        hash,
        crate::clock::now_ms(),
    )
}

/// One attempt: a fresh connection to `addr`, the upgrade request, its answer.
async fn attempt(
    rt: &ClusterRt,
    addr: SocketAddr,
    sni: &str,
    head: &Head,
) -> Result<Response<Incoming>, Fail> {
    let io = pool::upgrade_transport(rt, addr, Some(sni), Some(head.via))
        .await
        .map_err(|e| Fail::Connect(e.to_string()))?;
    let (mut tx, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Fail::Reset(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = http::Request::new(body::empty());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = Uri::from(head.path.clone());
    *req.headers_mut() = head.headers.clone();
    req.headers_mut()
        .insert(http::header::HOST, head.authority.clone());
    tx.send_request(req)
        .await
        .map_err(|e| Fail::Reset(e.to_string()))
}

/// The answer to the client. A 101 splices the two connections in a task of their own that
/// holds `held` (the connection permit, the endpoint's and the cluster's request counts)
/// until either side closes; any other answer holds it until its body is read, which the
/// route's timeouts bound as any response's.
fn answer<G: Send + Sync + Unpin + 'static>(
    mut resp: Response<Incoming>,
    downstream: OnUpgrade,
    held: G,
    timeouts: &Timeouts,
    attempt: Instant,
) -> Response<Body> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return forward::guarded(resp.map(body::boxed), held)
            .map(|b| super::deadline::bound(b, timeouts, attempt));
    }
    let upstream = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let _held = held;
        let (Ok(d), Ok(u)) = tokio::join!(downstream, upstream) else {
            return;
        };
        let mut d = TokioIo::new(d);
        let mut u = TokioIo::new(u);
        let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, body::empty())
}
