//! HTTP/1.1 upgrades (websockets): the upgrade request goes upstream on a fresh connection;
//! after `101 Switching Protocols` both sides are spliced.
//!
//! The endpoint is chosen as for any request of the cluster: by its load balancer with the
//! request's hash key (a sticky session keeps its websocket on the same backend), never an
//! ejected endpoint, and the outcome is recorded for outlier detection. The upgraded
//! connection holds one of the cluster's `maxConnections` and counts as a request in flight
//! on its endpoint (LEAST_REQUEST) until it closes. TLS origination uses the
//! DestinationRule's `sni` when it names one. A connection that cannot be made is tried on
//! another endpoint when the route's retry policy retries connect failures.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, StatusCode, Uri};
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tenants::model::RetryPolicy;

use super::body::{self, Body};
use super::errors::ProxyError;
use super::forward::{Head, Report};
use crate::upstream::endpoint::ActiveOwned;
use crate::upstream::pool::{self, PoolError};
use crate::upstream::{ClusterRt, Outcome};

/// Forwards an upgrade request and, on 101, splices the two upgraded connections.
pub async fn forward(
    rt: &Arc<ClusterRt>,
    head: Head,
    downstream: OnUpgrade,
    hash: Option<u64>,
    policy: &RetryPolicy,
    report: &mut Report,
) -> Result<Response<Body>, ProxyError> {
    let permit = pool::permit(rt).await.map_err(|e| match e {
        PoolError::Overflow => ProxyError::Overflow,
        e => ProxyError::Connect(e.to_string()),
    })?;
    let od = rt.config.policy.outlier_detection.as_ref();
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
    let retry_connect = on.connect_failure || on.reset || on.five_xx || on.gateway_error;
    let attempts = 1 + if retry_connect { policy.attempts } else { 0 };
    let mut tried: Vec<SocketAddr> = Vec::new();
    // As `forward::send`: a retry to a hashing cluster keeps to the key's endpoint.
    let avoid_tried = !matches!(lb, Some(tenants::model::LoadBalancer::ConsistentHash(_)));
    let mut last = ProxyError::NoHealthyUpstream;
    for n in 0..attempts {
        let now = crate::clock::now_ms();
        let eps = rt.endpoints.load();
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
        let Some(ep) = rt.balancer.pick(candidates, lb, od, hash, now) else {
            break;
        };
        drop(others);
        drop(eps);
        report.upstream = Some(ep.addr);
        report.attempts = n + 1;
        let active = ActiveOwned::new(ep.clone());
        let io = match pool::upgrade_transport(rt, ep.addr, Some(&sni)).await {
            Ok(io) => io,
            Err(e) => {
                rt.record(&ep, Outcome::GatewayError);
                last = ProxyError::Connect(e.to_string());
                if avoid_tried {
                    tried.push(ep.addr);
                }
                continue;
            }
        };
        let (mut tx, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ProxyError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = http::Request::new(body::empty());
        *req.method_mut() = head.method;
        *req.uri_mut() = Uri::from(head.path);
        *req.headers_mut() = head.headers;
        req.headers_mut().insert(http::header::HOST, head.authority);
        let mut resp = match tx.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                rt.record(&ep, Outcome::GatewayError);
                return Err(ProxyError::Reset(e.to_string()));
            }
        };
        rt.record(
            &ep,
            match resp.status().as_u16() {
                502..=504 => Outcome::GatewayError,
                500..=599 => Outcome::Error5xx,
                _ => Outcome::Success,
            },
        );
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Its connection is in use until the body is read.
            return Ok(super::forward::guarded(
                resp.map(body::boxed),
                (permit, active),
            ));
        }
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            // Held for the life of the spliced connection.
            let _held = (permit, active);
            let (Ok(d), Ok(u)) = tokio::join!(downstream, upstream) else {
                return;
            };
            let mut d = TokioIo::new(d);
            let mut u = TokioIo::new(u);
            let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, body::empty()));
    }
    Err(last)
}
