//! Copying bytes between a downstream connection and an upstream endpoint, both ways, with
//! half-close honoured and an idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use std::sync::atomic::Ordering;
use tenants::model::{HashKey, LoadBalancer};
use tenants::snapshot::TcpProxy;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::idle::{Activity, Idle};
use crate::runtime::GroupRt;
use crate::upstream::connect;
use crate::upstream::endpoint::Endpoint;
use crate::upstream::lb::hash_bytes;
use crate::upstream::pool::{self, Io, PoolError};
use crate::upstream::proxy_protocol::Via;
use crate::upstream::tunnel;
use crate::upstream::{ClusterRt, Outcome};

/// How a proxied connection ended, for logs and metrics.
#[derive(Debug, Default)]
pub struct TcpReport {
    /// The cluster chosen.
    pub cluster: Option<String>,
    /// The endpoint connected to.
    pub upstream: Option<SocketAddr>,
    /// Bytes from the client to the upstream (including the replayed ClientHello).
    pub sent: u64,
    /// Bytes from the upstream to the client.
    pub received: u64,
    /// What went wrong, if anything (Envoy flag).
    pub flag: Option<&'static str>,
}

/// Picks the weighted cluster of `tcp` for a connection from `peer` to `local` (a rule may
/// apply to some addresses only) and returns its runtime.
pub fn choose<'g>(
    tcp: &TcpProxy,
    group: &'g GroupRt,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<(&'g Arc<ClusterRt>, String)> {
    let (_, clusters) = tcp.clusters_for(peer.ip(), local.ip());
    let r = rand::rng().random_range(0..u64::MAX);
    let wc = tenants::find::pick(clusters, r)?;
    group
        .clusters
        .get(&*wc.cluster)
        .map(|c| (c, wc.cluster.to_string()))
}

/// An open upstream connection, counted on its endpoint (least-request) and on the
/// cluster's connection limit while it lives.
pub struct Upstream {
    stream: Box<dyn Io>,
    endpoint: Arc<Endpoint>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an upstream connection of a TCP session is made.
#[derive(Debug, Clone, Copy)]
pub struct Dial {
    /// The downstream connection: its client's address is the hash key of a
    /// `consistentHash: {useSourceIp: true}` cluster, as Istio configures Envoy's TCP proxy;
    /// both addresses go in a PROXY protocol header when the cluster asks for one.
    pub via: Via,
    /// Whether the cluster's DestinationRule `tls` is originated: yes for `tcp` routes, no
    /// for TLS passthrough and CONNECT tunnels, whose bytes are the client's own TLS.
    pub originate_tls: bool,
}

/// Picks an endpoint and connects to it; `None` (with the Envoy flag in `report`) when no
/// endpoint is healthy, the cluster's connection limit is reached, or the connect fails.
/// `name` is what the connection asked for (its SNI, a CONNECT target): a `DYNAMIC_DNS`
/// cluster's endpoints are that name's addresses.
pub async fn connect_upstream(
    cluster: &ClusterRt,
    dial: Dial,
    name: Option<&str>,
    report: &mut TcpReport,
) -> Option<Upstream> {
    let eps = match &cluster.dynamic {
        Some(d) => match Box::pin(d.endpoints(name.unwrap_or_default())).await {
            Ok(eps) => arc_swap::Guard::from_inner(eps),
            Err(e) => {
                tracing::info!(error = %e, "no endpoint for the connection's name");
                report.flag = Some(match e {
                    crate::upstream::dynamic::DynamicError::NotCovered(_) => "UH",
                    crate::upstream::dynamic::DynamicError::Resolution { .. } => "DF",
                });
                return None;
            }
        },
        None => cluster.endpoints.load(),
    };
    let policy = &cluster.config.policy;
    let od = policy.outlier_detection.as_ref();
    let hash = match &policy.load_balancer {
        Some(LoadBalancer::ConsistentHash(HashKey::SourceIp)) => {
            Some(hash_bytes(dial.via.peer.ip().to_string().as_bytes()))
        }
        _ => None,
    };
    let Some(ep) = cluster.balancer.pick(
        &eps,
        policy.load_balancer.as_ref(),
        od,
        policy.warmup.as_ref(),
        hash,
        crate::clock::now_ms(),
    ) else {
        report.flag = Some("UH");
        return None;
    };
    drop(eps);
    report.upstream = Some(ep.addr);
    let permit = match &cluster.limits.connections {
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                report.flag = Some("UO");
                return None;
            }
        },
        None => None,
    };
    ep.active.fetch_add(1, Ordering::Relaxed);
    // Built before connecting so the endpoint's count is released on every path.
    let mut pending = Pending {
        endpoint: Some(ep),
        permit,
    };
    let addr = report.upstream?;
    // One connect timeout for the whole way to a usable stream: TCP, the PROXY header, TLS
    // and the tunnel's CONNECT together, not each step on its own.
    let establish = async {
        let connected = if dial.originate_tls && cluster.tls.is_some() {
            let sni = cluster.config.tls.as_ref().and_then(|t| t.sni.as_deref());
            pool::transport_offering(cluster, addr, sni, &[], Some(dial.via)).await
        } else {
            pool::plain_transport(cluster, addr, Some(dial.via)).await
        };
        // Through the cluster's endpoint, an HTTP CONNECT proxy, to the tunnel's target.
        match (connected, &policy.tunnel) {
            (Ok(io), Some(t)) => tunnel::open(io, t, addr, cluster.limits.connect_timeout)
                .await
                .map_err(PoolError::from),
            (other, _) => other,
        }
    };
    let connected = tokio::time::timeout(cluster.limits.connect_timeout, establish)
        .await
        .unwrap_or_else(|_| Err(PoolError::from(connect::ConnectError::Timeout(addr))));
    match connected {
        Ok(stream) => {
            let endpoint = pending.endpoint.take()?;
            cluster.record(&endpoint, Outcome::Success);
            Some(Upstream {
                stream,
                endpoint,
                _permit: pending.permit.take(),
            })
        }
        Err(e) => {
            if let Some(ep) = &pending.endpoint {
                cluster.record(ep, Outcome::LocalOrigin);
            }
            tracing::debug!(error = %e, "tcp upstream connect failed");
            report.flag = Some("UF");
            None
        }
    }
}

/// An endpoint counted as active while its connection is being set up.
struct Pending {
    endpoint: Option<Arc<Endpoint>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(ep) = &self.endpoint {
            ep.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Writes `prefix` to `up`, then copies both ways (half-close honoured: each direction's
/// EOF is passed on as a shutdown of the other side's write half) until both sides closed
/// or nothing moved for the cluster's TCP idle timeout.
pub async fn splice<D>(
    down: D,
    mut up: Upstream,
    prefix: Bytes,
    cluster: &ClusterRt,
    opened: Instant,
    report: &mut TcpReport,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    if !prefix.is_empty() {
        if up.stream.write_all(&prefix).await.is_err() {
            report.flag = Some("UC");
            return;
        }
        report.sent += prefix.len() as u64;
    }
    let activity = Activity::new();
    let mut d = Idle::new(down, activity.clone());
    let mut u = Idle::new(&mut up.stream, activity.clone());
    let idle = cluster
        .limits
        .tcp_idle_timeout
        .unwrap_or(Duration::from_secs(u64::MAX / 4_000));
    // Istio sets the DestinationRule's `maxConnectionDuration` as the TCP proxy's
    // `max_downstream_connection_duration`: the connection is closed when it is reached,
    // counted from when the session opened.
    let lifetime = async {
        match cluster.limits.max_connection_duration {
            Some(d) => tokio::time::sleep_until((opened + d).into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut d, &mut u) => {
            if let Ok((a, b)) = r {
                report.sent += a;
                report.received += b;
            }
        }
        () = activity.idle_for(idle) => {
            report.flag = Some("IT");
        }
        () = lifetime => {
            report.flag = Some("DT");
        }
    }
}
