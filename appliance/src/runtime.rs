//! One generation of data-plane state: the snapshot plus what serving it needs (TLS server
//! configurations, cluster runtimes, tenant counters). Built to the side by the control path,
//! published with one `ArcSwap` store. Parts whose configuration did not change are carried
//! over from the previous generation, so a reload keeps pools, ejections and counters.

// FxHash: these maps are read on every request, keyed by configuration (names, listener
// addresses, label sets), never by anything a client chooses.
use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use tenants::Snapshot;
use tenants::snapshot::{ChainAction, FilterChain, Listener, ListenerKind, TlsContext};

use crate::credentials::{Store, covers};
use crate::quota::TenantRt;
use crate::tls::server::{self, ChainTls};
use crate::upstream::ClusterRt;

/// A group's serving state.
pub struct GroupRt {
    /// The group name.
    pub name: Arc<str>,
    /// Listeners by bind address.
    pub listeners: HashMap<SocketAddr, Arc<Listener>>,
    /// Cluster runtimes by name.
    pub clusters: HashMap<String, Arc<ClusterRt>>,
    /// TLS configurations of terminating chains, by chain name.
    pub chains: HashMap<String, Arc<ChainState>>,
    /// Open connections on the group (`appliance.maxConnections`).
    pub connections: Arc<AtomicU32>,
    /// Access-log policy per tenant (the platform is `istio-system`).
    pub access_logs: std::collections::BTreeMap<String, Arc<tenants::snapshot::AccessLogPolicy>>,
    /// Whether any tenant of the group logs.
    pub logging: bool,
    /// Whether some sink needs request headers beyond the standard fields (a custom format
    /// or a filter): only then are they copied for the log.
    pub log_headers: bool,
    /// `Alt-Svc` for TCP responses, by listener: HTTPS listeners that also serve HTTP/3,
    /// unless the group turned the advertisement off (`appliance.http3.altSvc: false`).
    pub alt_svc: HashMap<SocketAddr, http::HeaderValue>,
}

impl GroupRt {
    /// The access-log policy of `tenant`, when it logs anywhere.
    pub fn log_policy(&self, tenant: &str) -> Option<&Arc<tenants::snapshot::AccessLogPolicy>> {
        if !self.logging {
            return None;
        }
        self.access_logs.get(tenant).filter(|p| !p.sinks.is_empty())
    }
}

/// A terminating chain's TLS state, keyed by what built it.
pub struct ChainState {
    /// The context it was built from.
    pub ctx: TlsContext,
    /// ALPN offered.
    pub alpn: Vec<Vec<u8>>,
    /// The rustls config.
    pub tls: ChainTls,
}

/// One generation.
pub struct Runtime {
    /// Generation number (1, 2, ...).
    pub generation: u64,
    /// The compiled configuration.
    pub snapshot: Arc<Snapshot>,
    /// Served groups.
    pub groups: HashMap<String, GroupRt>,
    /// Tenant counters by tenant (the platform is `istio-system`).
    pub tenants: HashMap<String, Arc<TenantRt>>,
    /// Problems found while building (bad credentials on a chain, ...).
    pub problems: Vec<String>,
}

impl Runtime {
    /// A runtime serving nothing.
    pub fn empty() -> Self {
        Self {
            generation: 0,
            snapshot: Arc::new(Snapshot::empty()),
            groups: HashMap::default(),
            tenants: HashMap::default(),
            problems: Vec::new(),
        }
    }

    /// The listener a connection arrived on.
    pub fn listener(&self, group: &str, addr: &SocketAddr) -> Option<&Arc<Listener>> {
        self.groups.get(group)?.listeners.get(addr)
    }

    /// The tenant's counters.
    pub fn tenant(&self, name: &str) -> Option<&Arc<TenantRt>> {
        self.tenants.get(name)
    }

    /// Builds the next generation from `snap`, reusing what `prev` already has.
    pub fn build(
        prev: &Self,
        snap: Arc<Snapshot>,
        generation: u64,
        served: Option<&[String]>,
        store: &Store,
        handle: &tokio::runtime::Handle,
    ) -> Self {
        let mut groups = HashMap::default();
        let mut problems = Vec::new();
        for (name, g) in &snap.groups {
            if served.is_some_and(|s| !s.iter().any(|x| x == name)) {
                continue;
            }
            let old = prev.groups.get(name);
            let mut listeners = HashMap::default();
            let mut chains = HashMap::default();
            for l in &g.listeners {
                listeners.insert(l.address, l.clone());
                if let ListenerKind::Tls(cs) = &l.kind {
                    for c in cs {
                        if chains.contains_key(&c.name) {
                            continue;
                        }
                        match chain_state(c, old, store) {
                            Ok(Some(st)) => {
                                check_sans(c, &st);
                                chains.insert(c.name.clone(), st);
                            }
                            Ok(None) => {}
                            Err(e) => problems.push(format!("group {name}: chain {}: {e}", c.name)),
                        }
                    }
                }
            }
            let h3 = &g.group.http3;
            let alt_svc = g
                .listeners
                .iter()
                .filter(|l| h3.enabled && h3.alt_svc && crate::quic::serves_https(l))
                .filter_map(|l| {
                    let v = format!("h3=\":{}\"", l.address.port());
                    Some((l.address, http::HeaderValue::from_str(&v).ok()?))
                })
                .collect();
            let mut clusters = HashMap::default();
            for (cname, c) in &g.clusters {
                let before = old.and_then(|o| o.clusters.get(cname));
                let reuse = before.filter(|rt| same_cluster(&rt.config, c)).cloned();
                let rt = reuse.unwrap_or_else(|| {
                    let rt = ClusterRt::new(c.clone(), store, handle);
                    if let Some(b) = before {
                        crate::upstream::keep_join_times(&rt, b);
                    }
                    rt
                });
                clusters.insert(cname.clone(), rt);
            }
            groups.insert(
                name.clone(),
                GroupRt {
                    name: Arc::from(name.as_str()),
                    listeners,
                    clusters,
                    chains,
                    access_logs: g.access_logs.clone(),
                    logging: g.access_logs.values().any(|p| !p.sinks.is_empty()),
                    log_headers: g
                        .access_logs
                        .values()
                        .any(|p| p.sinks.iter().any(needs_headers)),
                    alt_svc,
                    connections: old
                        .map_or_else(|| Arc::new(AtomicU32::new(0)), |o| o.connections.clone()),
                },
            );
        }
        let mut tenants = HashMap::default();
        for (t, st) in &snap.tenants {
            let reuse = prev
                .tenants
                .get(t)
                .filter(|o| o.quotas == st.quotas)
                .cloned();
            tenants.insert(
                t.clone(),
                reuse.unwrap_or_else(|| Arc::new(TenantRt::new(&st.quotas))),
            );
        }
        if !tenants.contains_key(tenants::model::PLATFORM_NAMESPACE) {
            let platform = prev
                .tenants
                .get(tenants::model::PLATFORM_NAMESPACE)
                .cloned()
                .unwrap_or_else(|| Arc::new(TenantRt::new(&Default::default())));
            tenants.insert(tenants::model::PLATFORM_NAMESPACE.to_string(), platform);
        }
        Self {
            generation,
            snapshot: snap,
            groups,
            tenants,
            problems,
        }
    }
}

fn same_cluster(a: &tenants::snapshot::Cluster, b: &tenants::snapshot::Cluster) -> bool {
    // Clusters are plain data; their JSON form is a faithful equality.
    serde_json::to_string(a).ok() == serde_json::to_string(b).ok()
}

fn chain_state(
    c: &FilterChain,
    old: Option<&GroupRt>,
    store: &Store,
) -> Result<Option<Arc<ChainState>>, server::TlsConfigError> {
    let (ctx, alpn): (&TlsContext, Vec<Vec<u8>>) = match &c.action {
        ChainAction::TerminateHttp { tls, .. } => (tls, vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
        ChainAction::TerminateTcp { tls, .. } => (tls, Vec::new()),
        ChainAction::Passthrough(_) => return Ok(None),
    };
    if let Some(st) = old.and_then(|o| o.chains.get(&c.name))
        && st.ctx == *ctx
        && st.alpn == alpn
    {
        return Ok(Some(st.clone()));
    }
    let protos: Vec<&[u8]> = alpn.iter().map(Vec::as_slice).collect();
    let tls = server::build(ctx, store, &protos)?;
    Ok(Some(Arc::new(ChainState {
        ctx: ctx.clone(),
        alpn,
        tls,
    })))
}

/// Warns on `/status` when a certificate does not cover the chain's SNI names, or when the
/// chain's two certificates have the same key type (the second would never be served).
fn check_sans(c: &FilterChain, st: &ChainState) {
    let creds = std::iter::once(&st.tls.credential).chain(st.tls.second.as_ref());
    for cred in creds {
        check_cert_sans(c, cred);
    }
    let Some(second) = &st.tls.second else {
        return;
    };
    if let (Some(a), Some(b)) = (st.tls.credential.key.load_full(), second.key.load_full())
        && a.key.algorithm() == b.key.algorithm()
    {
        second.note(format!(
            "both certificates of {} are {:?}: a client that can take either gets {}'s (pair an RSA certificate with an ECDSA one)",
            c.name,
            a.key.algorithm(),
            st.tls.credential.name
        ));
    }
}

fn check_cert_sans(c: &FilterChain, cred: &crate::credentials::Credential) {
    let Some(info) = cred.status().certificate else {
        return;
    };
    for n in &c.server_names {
        let host = n.as_str();
        let ok = if let Some(suffix) = host.strip_prefix("*.") {
            info.dns_names
                .iter()
                .any(|d| d == host || d.strip_prefix("*.") == Some(suffix))
        } else {
            covers(&info.dns_names, host)
        };
        if !ok {
            cred.note(format!(
                "certificate (SANs: {}) does not cover host {host} served by {}",
                info.dns_names.join(", "),
                c.name
            ));
        }
    }
}

/// Whether a log sink may read arbitrary request headers.
fn needs_headers(s: &tenants::snapshot::LogSink) -> bool {
    use tenants::model::{LogFormat, Provider};
    let custom = match &s.provider {
        Provider::File { format, .. } | Provider::Otel { format, .. } => {
            !matches!(format, LogFormat::Text(None) | LogFormat::Json(None))
        }
        Provider::Other(_) => false,
    };
    custom || s.filter.is_some()
}
