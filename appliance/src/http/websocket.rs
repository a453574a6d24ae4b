//! HTTP/1.1 upgrades (websockets): the upgrade request goes upstream on a fresh connection;
//! after `101 Switching Protocols` both sides are spliced.

use std::sync::Arc;

use http::{Response, StatusCode, Uri};
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::{self, Body};
use super::errors::ProxyError;
use super::forward::{Head, Report};
use crate::upstream::ClusterRt;
use crate::upstream::pool;

/// Forwards an upgrade request and, on 101, splices the two upgraded connections.
pub async fn forward(
    rt: &Arc<ClusterRt>,
    head: Head,
    downstream: OnUpgrade,
    report: &mut Report,
) -> Result<Response<Body>, ProxyError> {
    let eps = rt.endpoints.load();
    let Some(ep) = rt.balancer.pick(
        &eps,
        rt.config.policy.load_balancer.as_ref(),
        None,
        None,
        crate::clock::now_ms(),
    ) else {
        return Err(ProxyError::NoHealthyUpstream);
    };
    drop(eps);
    report.upstream = Some(ep.addr);
    report.attempts = 1;
    let sni = super::rewrite::split_authority(head.authority())
        .0
        .to_string();
    let io = pool::transport(rt, ep.addr, Some(&sni))
        .await
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
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
    let mut resp = tx
        .send_request(req)
        .await
        .map_err(|e| ProxyError::Reset(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(body::boxed));
    }
    let upstream = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (Ok(d), Ok(u)) = tokio::join!(downstream, upstream) else {
            return;
        };
        let mut d = TokioIo::new(d);
        let mut u = TokioIo::new(u);
        let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
    });
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, body::empty()))
}
