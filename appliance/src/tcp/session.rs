//! One proxied TCP session as telemetry sees it: `istio_tcp_connections_opened_total` when
//! it starts, the closed counter, byte counters and the access-log entry when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tenants::snapshot::AccessLogPolicy;
use tokio::io::{AsyncRead, AsyncWrite};

use super::proxy::{self, TcpReport};
use crate::runtime::GroupRt;
use crate::shared::Shared;
use crate::telemetry::entry::Entry;
use crate::upstream::ClusterRt;
use crate::upstream::proxy_protocol::Via;

/// Who a TCP session belongs to and where it came in.
pub struct Session {
    /// Process state (telemetry).
    pub shared: Arc<Shared>,
    /// Gateway group.
    pub group: Arc<str>,
    /// Owning tenant.
    pub tenant: Arc<str>,
    /// The client.
    pub peer: SocketAddr,
    /// The address the client connected to (the listener's, or the connection's own on a
    /// wildcard listener).
    pub local: SocketAddr,
    /// SNI, for TLS sessions.
    pub sni: Option<String>,
    /// The tenant's access-log policy.
    pub policy: Option<Arc<AccessLogPolicy>>,
}

impl Session {
    /// A session of `tenant` on `group`'s listener `local`.
    pub fn new(
        shared: &Arc<Shared>,
        group: &GroupRt,
        tenant: &str,
        peer: SocketAddr,
        local: SocketAddr,
        sni: Option<String>,
    ) -> Self {
        Self {
            shared: shared.clone(),
            group: group.name.clone(),
            tenant: Arc::from(tenant),
            peer,
            local,
            sni,
            policy: group.log_policy(tenant).cloned(),
        }
    }

    /// Proxies `down` to `cluster` (named `name`), originating the cluster's TLS when
    /// `originate_tls` (a `tcp` route's bytes, not passthrough TLS), and records the session.
    pub async fn run<D>(
        self,
        down: D,
        prefix: Bytes,
        cluster: &ClusterRt,
        name: String,
        originate_tls: bool,
    ) where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        let opened = self.open(&name);
        let mut report = TcpReport {
            cluster: Some(name),
            ..TcpReport::default()
        };
        let dial = proxy::Dial {
            via: Via {
                peer: self.peer,
                local: self.local,
            },
            originate_tls,
        };
        if let Some(up) =
            proxy::connect_upstream(cluster, dial, self.sni.as_deref(), &mut report).await
        {
            proxy::splice(down, up, prefix, cluster, opened.1, &mut report).await;
        }
        self.close(opened, report);
    }

    /// Splices `down` to an upstream connection already open (HTTP CONNECT answers 200 only
    /// once the upstream is reached) and records the session.
    pub async fn splice<D>(
        self,
        down: D,
        up: proxy::Upstream,
        cluster: &ClusterRt,
        name: String,
        mut report: TcpReport,
    ) where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        let opened = self.open(&name);
        report.cluster = Some(name);
        proxy::splice(down, up, Bytes::new(), cluster, opened.1, &mut report).await;
        self.close(opened, report);
    }

    fn open(&self, cluster: &str) -> (SystemTime, Instant) {
        self.shared
            .telemetry
            .tcp_opened(&self.tenant, &self.group, Some(cluster));
        (SystemTime::now(), Instant::now())
    }

    fn close(self, (start, started): (SystemTime, Instant), report: TcpReport) {
        let telemetry = &self.shared.telemetry;
        let e = Entry {
            start: Some(start),
            flags: report.flag.unwrap_or_default().to_string(),
            bytes_in: report.sent,
            bytes_out: report.received,
            duration: started.elapsed(),
            upstream: report.upstream,
            cluster: report.cluster.map(Arc::from),
            local: Some(self.local),
            peer: Some(self.peer),
            sni: self.sni,
            tenant: self.tenant,
            group: self.group,
            ..Entry::default()
        };
        telemetry.tcp_closed(&e);
        if let Some(p) = &self.policy {
            telemetry.log(e, p);
        }
    }
}
