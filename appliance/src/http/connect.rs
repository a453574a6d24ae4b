//! HTTP CONNECT on egress groups — a gatehouse extension for bare-metal clients that cannot be
//! pointed at the gateway by DNS (`https_proxy=http://gateway:3128`). The target must be a
//! `host:port` a tenant registered (ServiceEntry on a host it owns); anything else is 403,
//! unless the group's outbound policy is ALLOW_ANY. The tunnel leaves from the group's
//! `sourceAddress` like every other upstream connection of the group, and is accounted to the
//! registering tenant (connection quota, TCP metrics, access log).

use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tenants::model::{GroupKind, OutboundPolicy};

use super::body::Body;
use super::errors::{ProxyError, local};
use super::record::Record;
use super::service::ConnInfo;
use crate::quota::ConnPermit;
use crate::runtime::Runtime;
use crate::tcp::proxy::{self, TcpReport};
use crate::tcp::session::Session;
use crate::upstream::connect;
use crate::upstream::proxy_protocol::Via;

/// How long an ALLOW_ANY tunnel may take to connect.
const ANY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers a CONNECT request: 200 and a spliced tunnel, or why not.
pub async fn handle(
    req: &mut Request<Body>,
    conn: &ConnInfo,
    rt: &Runtime,
    rec: &mut Record,
) -> Result<Response<Body>, ProxyError> {
    let Some(snap) = rt.snapshot.groups.get(&*conn.group) else {
        return Err(ProxyError::NoRoute);
    };
    let Some(group) = rt.groups.get(&*conn.group) else {
        return Err(ProxyError::NoRoute);
    };
    if snap.group.kind != GroupKind::Egress {
        return Ok(forbidden("CONNECT is only accepted by egress groups"));
    }
    let Some(target) = req
        .uri()
        .authority()
        .filter(|a| a.port_u16().is_some())
        .map(|a| a.as_str().to_ascii_lowercase())
    else {
        return Err(ProxyError::BadRequest("CONNECT needs host:port"));
    };
    if let Some(l) = rec.log() {
        l.authority = HeaderValue::from_str(&target).ok();
    }
    let on = hyper::upgrade::on(req);
    let Some(t) = snap.connect.get(&target) else {
        if snap.outbound == OutboundPolicy::AllowAny {
            return any(on, snap.group.source_address, &target, rec).await;
        }
        tracing::info!(peer = %conn.peer, %target, "CONNECT to an unregistered host refused");
        return Ok(forbidden(
            "CONNECT target is not a registered ServiceEntry host",
        ));
    };
    rec.tenant = Some(t.tenant.as_str().into());
    rec.cluster = Some(t.cluster.as_str().into());
    let Some(cluster) = group.clusters.get(&t.cluster).cloned() else {
        return Err(ProxyError::NoHealthyUpstream);
    };
    let permit = match rt.tenant(&t.tenant).cloned().map(ConnPermit::tenant) {
        Some(None) => return Err(ProxyError::Overflow),
        Some(Some(p)) => Some(p),
        None => None,
    };
    let mut report = TcpReport::default();
    // The tunnel carries the client's own bytes (its TLS, usually): never originated.
    let dial = proxy::Dial {
        via: Via {
            peer: conn.peer,
            local: conn.local,
        },
        originate_tls: false,
    };
    let target_host = crate::http::rewrite::split_authority(&target).0.to_string();
    let Some(up) = proxy::connect_upstream(&cluster, dial, Some(&target_host), &mut report).await
    else {
        rec.upstream = report.upstream;
        return Err(match report.flag {
            Some("UO") => ProxyError::Overflow,
            Some("UH") => ProxyError::NoHealthyUpstream,
            Some("DF") => ProxyError::DnsFailed(format!("{target_host} did not resolve")),
            _ => ProxyError::Connect("connection refused or timed out".into()),
        });
    };
    rec.upstream = report.upstream;
    let session = Session::new(&conn.shared, group, &t.tenant, conn.peer, conn.local, None);
    let name = t.cluster.clone();
    tokio::spawn(async move {
        let _permit = permit;
        match on.await {
            Ok(io) => {
                session
                    .splice(TokioIo::new(io), up, &cluster, name, report)
                    .await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT tunnel not established"),
        }
    });
    Ok(established())
}

/// ALLOW_ANY: the target is resolved and connected to directly, from the source address.
async fn any(
    on: hyper::upgrade::OnUpgrade,
    source: Option<std::net::IpAddr>,
    target: &str,
    rec: &mut Record,
) -> Result<Response<Body>, ProxyError> {
    let Some((mut up, addr)) = connect::tcp_by_name(target, source, ANY_CONNECT_TIMEOUT).await
    else {
        return Err(ProxyError::Connect(format!(
            "no address of {target} answered"
        )));
    };
    rec.upstream = Some(addr);
    tokio::spawn(async move {
        if let Ok(io) = on.await {
            let mut down = TokioIo::new(io);
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        }
    });
    Ok(established())
}

fn established() -> Response<Body> {
    local(StatusCode::OK, String::new())
}

fn forbidden(why: &'static str) -> Response<Body> {
    local(StatusCode::FORBIDDEN, format!("{why}\n"))
}
