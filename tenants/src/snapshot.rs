//! The compiled configuration: immutable, pure data, one per generation.
//!
//! The data plane reads a [`Snapshot`] behind one `ArcSwap`: HTTP per request, TCP and TLS
//! passthrough once per connection. Nothing here changes after compile.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use crate::cel::Expr;
use crate::diag::Diagnostic;
use crate::model::{
    ClientTlsMode, Credential, GatewayGroup, HeaderOps, HttpMatch, HttpRoute, LogMode,
    MeshSettings, OutboundPolicy, PortPolicy, Provider, Quotas, Redirect, RetryPolicy,
    ServerTlsMode, TlsVersion,
};
use crate::types::{Host, Protocol};

/// One configuration generation for every enabled group.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The revision it was compiled from (a commit id, or `local`).
    pub revision: String,
    /// Enabled groups by name.
    pub groups: BTreeMap<String, GroupSnapshot>,
    /// Per-tenant runtime settings and status.
    pub tenants: BTreeMap<String, TenantStatus>,
    /// Mesh-wide settings (access-log providers).
    pub mesh: MeshSettings,
    /// Who holds each contested name: `group|bind:port|name` → tenant.
    pub claims: BTreeMap<String, String>,
}

/// One group's listeners and clusters.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSnapshot {
    /// The group's settings.
    pub group: GatewayGroup,
    /// Listeners in bind order.
    pub listeners: Vec<Arc<Listener>>,
    /// Clusters that some route references, by name.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Access-log policy per tenant (the platform is `istio-system`).
    pub access_logs: BTreeMap<String, Arc<AccessLogPolicy>>,
    /// HTTP CONNECT targets by `host:port` (egress groups only; a gatehouse extension).
    pub connect: BTreeMap<String, ConnectTarget>,
    /// The outbound policy in force for unregistered destinations (egress groups): the
    /// group's `appliance.outboundTrafficPolicy`, else a Sidecar of the platform namespace
    /// (Istio's root-namespace default), else `meshConfig.outboundTrafficPolicy`, else
    /// REGISTRY_ONLY.
    pub outbound: OutboundPolicy,
}

/// Where an HTTP CONNECT to a registered `host:port` goes.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectTarget {
    /// The tenant that registered the host (its quotas and logs apply).
    pub tenant: String,
    /// The cluster (`outbound|port||host`).
    pub cluster: String,
}

/// A listening socket's configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// `0.0.0.0_18080`-style name.
    pub name: String,
    /// Bind address (IP and listening port, after the targetPort mapping).
    pub address: SocketAddr,
    /// The Gateway port (`servers[].port.number`) that `match.port` compares with.
    pub gateway_port: u16,
    /// What runs on the socket.
    pub kind: ListenerKind,
}

/// The protocol family of a listener.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ListenerKind {
    /// Plaintext HTTP/1.1 and HTTP/2.
    Http(Arc<RouteTable>),
    /// TLS: filter chains chosen by SNI.
    Tls(Vec<Arc<FilterChain>>),
    /// Opaque TCP.
    Tcp(Arc<TcpProxy>),
}

/// One SNI-selected chain of a TLS listener.
#[derive(Debug, Clone, Serialize)]
pub struct FilterChain {
    /// Envoy-style name, e.g. `https.443.https.gw.istio-system`.
    pub name: String,
    /// SNI names; empty means "the fallback chain".
    pub server_names: Vec<Host>,
    /// The tenant that owns the chain.
    pub tenant: String,
    /// What the chain does.
    pub action: ChainAction,
}

/// What a TLS filter chain does.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChainAction {
    /// Terminate TLS and serve HTTP.
    TerminateHttp {
        /// Certificate and client-verification settings.
        tls: Arc<TlsContext>,
        /// The route table of this server.
        routes: Arc<RouteTable>,
    },
    /// Terminate TLS and proxy the plaintext bytes.
    TerminateTcp {
        /// Certificate and client-verification settings.
        tls: Arc<TlsContext>,
        /// Where the bytes go.
        tcp: Arc<TcpProxy>,
    },
    /// Forward the TLS stream untouched.
    Passthrough(Arc<TcpProxy>),
}

/// Where a server certificate is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CredentialRef {
    /// The folder owner (tenant, or `istio-system`).
    pub namespace: String,
    /// `credentialName`, or file paths for the platform.
    pub source: Credential,
}

/// Downstream TLS settings of a terminating chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsContext {
    /// SIMPLE or MUTUAL.
    pub mode: ServerTlsMode,
    /// The server certificate.
    pub credential: CredentialRef,
    /// A second server certificate of the other key type (`credentialNames`,
    /// `tlsCertificates`), served to clients that can verify it.
    pub second_credential: Option<CredentialRef>,
    /// A separate CA folder (`caCertCredentialName`).
    pub ca_credential: Option<CredentialRef>,
    /// Allowed client SANs (MUTUAL); empty allows any client the CA signed.
    pub subject_alt_names: Vec<String>,
    /// Client-certificate pins (MUTUAL); empty admits any client the CA signed.
    pub pins: crate::model::CertPins,
    /// Minimum version.
    pub min_version: TlsVersion,
    /// Maximum version.
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites; empty means the defaults.
    pub cipher_suites: Vec<String>,
}

/// The virtual hosts of one HTTP route table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteTable {
    /// `http.80` or `https.443.https.gw.ns`.
    pub name: String,
    /// Virtual hosts in domain order.
    pub vhosts: Vec<VirtualHost>,
    /// Exact domain → vhost index.
    #[serde(skip)]
    pub exact: HashMap<String, usize>,
    /// `*.suffix` domains (suffix includes the dot), longest first.
    #[serde(skip)]
    pub suffixes: Vec<(String, usize)>,
    /// The `*` vhost.
    #[serde(skip)]
    pub star: Option<usize>,
}

/// A virtual host: domains and ordered routes.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    /// `domain:port`.
    pub name: String,
    /// The domain (exact, `*.suffix` or `*`).
    pub domain: Host,
    /// The tenant that owns it.
    pub tenant: Arc<str>,
    /// Answer every request with a 301 to https (`httpsRedirect`).
    pub require_tls: bool,
    /// Routes in match order.
    pub routes: Vec<Route>,
}

/// One route: a single match block and a shared rule body.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// The rule's name, or `<vs-name>.<rule-index>`; with a match name appended. Shared: every
    /// request's record holds it.
    pub name: Arc<str>,
    /// `namespace/name` of the VirtualService.
    pub virtual_service: String,
    /// The conditions; `None` matches everything.
    pub matcher: Option<Arc<HttpMatch>>,
    /// What to do.
    pub body: Arc<RouteBody>,
}

/// The parts of an HTTP rule shared by its match blocks: the rule itself (headers,
/// rewrite, timeout, fault, CORS) plus what compiling resolved (clusters, retries).
#[derive(Debug, Clone, Serialize)]
pub struct RouteBody {
    /// The tenant the rule belongs to.
    pub tenant: Arc<str>,
    /// Forward, redirect or answer, with clusters resolved.
    pub action: RouteAction,
    /// Retries (the mesh default when the rule sets none).
    pub retries: RetryPolicy,
    /// Mirrors: cluster and percentage.
    pub mirrors: Vec<(String, f64)>,
    /// The VirtualService rule, shared with the model.
    #[serde(skip)]
    pub rule: Arc<HttpRoute>,
}

/// What a matching route does.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteAction {
    /// Forward to one of the weighted clusters.
    Forward(Vec<WeightedCluster>),
    /// Redirect.
    Redirect(Redirect),
    /// Fixed response.
    Direct {
        /// Status.
        status: u16,
        /// Body.
        body: Vec<u8>,
    },
}

/// A weighted cluster with its own header operations.
#[derive(Debug, Clone, Serialize)]
pub struct WeightedCluster {
    /// The cluster name.
    pub cluster: Arc<str>,
    /// Relative weight.
    pub weight: u32,
    /// Per-destination header operations.
    pub headers: HeaderOps,
}

/// Where a TCP or passthrough connection goes.
#[derive(Debug, Clone, Serialize)]
pub struct TcpProxy {
    /// A name for logs (`namespace/vs` or the chain name).
    pub name: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// Weighted clusters, chosen once per connection.
    pub clusters: Vec<WeightedCluster>,
    /// Rules before this one that apply only to some client or destination addresses
    /// (`sourceSubnet`, `destinationSubnets`), tried in order; `clusters` serve the rest (none
    /// when every rule depends on addresses: the connection is closed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_address: Vec<AddressRoute>,
}

impl TcpProxy {
    /// The clusters for a connection from `peer` to `local`, and the rule's name.
    pub fn clusters_for(&self, peer: IpAddr, local: IpAddr) -> (&str, &[WeightedCluster]) {
        self.by_address
            .iter()
            .find(|r| r.matches.iter().any(|m| m.admits(peer, local)))
            .map_or((&self.name, &self.clusters), |r| (&r.name, &r.clusters))
    }
}

/// A TCP rule for some addresses only.
#[derive(Debug, Clone, Serialize)]
pub struct AddressRoute {
    /// The rule (`namespace/vs.tcp.N`).
    pub name: String,
    /// Its matches: any one admits a connection.
    pub matches: Vec<AddressMatch>,
    /// Its weighted clusters.
    pub clusters: Vec<WeightedCluster>,
}

/// The address part of one L4 match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressMatch {
    /// `sourceSubnet`.
    pub source: Option<crate::types::Cidr>,
    /// `destinationSubnets`: any one.
    pub destination: Vec<crate::types::Cidr>,
}

impl AddressMatch {
    /// Whether a connection from `peer` to `local` matches.
    pub fn admits(&self, peer: IpAddr, local: IpAddr) -> bool {
        self.source.is_none_or(|s| s.contains(peer))
            && (self.destination.is_empty() || self.destination.iter().any(|d| d.contains(local)))
    }
}

/// The protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge, or ALPN under TLS).
    Http2,
    /// Whatever the client spoke (`useClientProtocol`).
    ClientProtocol,
    /// Opaque bytes.
    Tcp,
}

/// How a cluster finds its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoints {
    /// Fixed addresses.
    Static(Vec<StaticEndpoint>),
    /// Names resolved and refreshed by the data plane.
    Dns {
        /// Names with port and weight.
        names: Vec<(String, u16, u32)>,
        /// DNS_ROUND_ROBIN: use only the first address.
        first_only: bool,
    },
    /// `DYNAMIC_DNS`: the addresses of the name each request or connection asks for, when
    /// one of `hosts` covers it, on `port`.
    Dynamic {
        /// The ServiceEntry's hosts (`*.example.com`).
        hosts: Vec<String>,
        /// The destination's own name when the route names one host: resolved whatever the
        /// request asked for.
        name: Option<String>,
        /// The port to connect to.
        port: u16,
    },
    /// Nothing to connect to (resolution NONE): every request gets 503 UH.
    None,
}

/// A fixed endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticEndpoint {
    /// Address; for a unix socket, its stand-in ([`unix_stand_in`]).
    pub address: SocketAddr,
    /// Load-balancing weight.
    pub weight: u32,
    /// A platform `unix://` endpoint: the socket's path, `@name` for an abstract socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix: Option<String>,
}

/// The address that stands in for the unix socket `path` wherever endpoints are told apart
/// by address (balancing, pools, outlier state, logs): one in `100::/64`, the discard-only
/// prefix (RFC 6666), with port 0, so it can never be a real endpoint. The same path gets
/// the same address in every build, so a reload keeps the endpoint's state.
pub fn unix_stand_in(path: &str) -> SocketAddr {
    // FNV-1a: stable across processes and builds, unlike std's hasher.
    let h = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let ip = std::net::Ipv6Addr::from((0x0100_u128 << 112) | u128::from(h));
    SocketAddr::new(IpAddr::V6(ip), 0)
}

/// Whether `addr` stands in for a unix socket.
pub fn is_unix_stand_in(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V6(a) => a.port() == 0 && a.ip().segments()[..4] == [0x0100, 0, 0, 0],
        SocketAddr::V4(_) => false,
    }
}

/// TLS origination to the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamTls {
    /// SIMPLE or MUTUAL.
    pub mode: ClientTlsMode,
    /// Client certificate and CA (`credentialName` or platform files).
    pub credential: Option<CredentialRef>,
    /// CA file path (platform).
    pub ca_file: Option<String>,
    /// CRL file path (platform `caCrl`).
    pub crl_file: Option<String>,
    /// SNI; `None`: the request's host (or the service host for TCP).
    pub sni: Option<String>,
    /// SANs to verify; empty: verify against the SNI name.
    pub subject_alt_names: Vec<String>,
    /// Skip server verification.
    pub insecure_skip_verify: bool,
}

/// An upstream cluster: `outbound|port|subset|host`.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// The name.
    pub name: String,
    /// The tenant that declared the service.
    pub tenant: String,
    /// The service host.
    pub host: Host,
    /// The service port.
    pub port: u16,
    /// The subset.
    pub subset: Option<String>,
    /// The service port's protocol.
    pub service_protocol: Protocol,
    /// The protocol to speak.
    pub protocol: UpstreamProtocol,
    /// The endpoints.
    pub endpoints: Endpoints,
    /// The effective traffic policy.
    pub policy: PortPolicy,
    /// TLS origination.
    pub tls: Option<UpstreamTls>,
    /// Bind address for upstream connections (egress groups).
    pub source_address: Option<IpAddr>,
}

/// Where one tenant's traffic is logged in one group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccessLogPolicy {
    /// Enabled providers with their filters.
    pub sinks: Vec<LogSink>,
}

/// One enabled access-log provider.
#[derive(Debug, Clone, Serialize)]
pub struct LogSink {
    /// The provider's name.
    pub name: String,
    /// The provider.
    pub provider: Provider,
    /// Only log entries this expression accepts.
    pub filter: Option<Expr>,
    /// The rule's mode.
    pub mode: LogMode,
}

/// Whether a tenant's latest configuration is being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TenantState {
    /// The latest configuration is served.
    Applied,
    /// The latest configuration was refused; the last good one is served.
    LastGood,
    /// The latest configuration was refused and none was ever accepted.
    Refused,
}

/// Per-tenant runtime settings and status.
#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    /// Applied, last good, or refused.
    pub state: TenantState,
    /// Revision of the configuration being served.
    pub applied_revision: Option<String>,
    /// Revision last attempted.
    pub attempted_revision: String,
    /// Limits.
    pub quotas: Quotas,
    /// Egress default for the tenant (`Sidecar` outboundTrafficPolicy).
    pub outbound: Option<OutboundPolicy>,
    /// Errors and warnings of the latest attempt.
    pub diagnostics: Vec<Diagnostic>,
}

// === impl Snapshot ===

impl Snapshot {
    /// An empty snapshot (nothing served).
    pub fn empty() -> Self {
        Self {
            revision: String::new(),
            groups: BTreeMap::new(),
            tenants: BTreeMap::new(),
            mesh: MeshSettings::default(),
            claims: BTreeMap::new(),
        }
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupSnapshot> {
        self.groups.get(name)
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Builds the domain index (call after the vhosts are final).
    pub fn index(&mut self) {
        self.exact.clear();
        self.suffixes.clear();
        self.star = None;
        for (i, v) in self.vhosts.iter().enumerate() {
            let d = v.domain.as_str();
            if d == "*" {
                self.star = Some(i);
            } else if let Some(s) = d.strip_prefix('*') {
                self.suffixes.push((s.to_string(), i));
            } else {
                self.exact.insert(d.to_string(), i);
            }
        }
        self.suffixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// Envoy's vhost choice: exact, then the longest `*.suffix`, then `*`; the port is ignored.
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        let host = strip_port(authority);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(i) = self.exact.get(host) {
            return self.vhosts.get(*i);
        }
        for (suffix, i) in &self.suffixes {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return self.vhosts.get(*i);
            }
        }
        self.star.and_then(|i| self.vhosts.get(i))
    }
}

/// `host[:port]` or `[v6]:port` → host.
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    // Bytes, not `rsplit_once(':')`: the char searcher costs more than the rest of the
    // virtual host lookup, on every request.
    let b = authority.as_bytes();
    match b.iter().rposition(|&c| c == b':') {
        Some(i) if !b[..i].contains(&b':') && b[i + 1..].iter().all(u8::is_ascii_digit) => {
            &authority[..i]
        }
        _ => authority,
    }
}

// === impl Listener ===

impl Listener {
    /// Envoy's filter-chain choice by SNI: exact name, then the longest wildcard, then the
    /// chain without names.
    pub fn chain(&self, sni: Option<&str>) -> Option<&Arc<FilterChain>> {
        let ListenerKind::Tls(chains) = &self.kind else {
            return None;
        };
        if let Some(sni) = sni {
            let sni = sni.to_ascii_lowercase();
            if let Some(c) = chains.iter().find(|c| {
                c.server_names
                    .iter()
                    .any(|n| !n.is_wildcard() && n.as_str() == sni)
            }) {
                return Some(c);
            }
            let best = chains
                .iter()
                .flat_map(|c| {
                    c.server_names
                        .iter()
                        .filter(|n| n.is_wildcard() && n.as_str() != "*" && n.covers(&sni))
                        .map(move |n| (n.as_str().len(), c))
                })
                .max_by_key(|(len, _)| *len);
            if let Some((_, c)) = best {
                return Some(c);
            }
        }
        chains
            .iter()
            .find(|c| c.server_names.is_empty() || c.server_names.iter().any(|n| n.as_str() == "*"))
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// `outbound|port|subset|host`.
pub fn cluster_name(port: u16, subset: Option<&str>, host: &Host) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn strip_port_keeps_hosts_and_bare_ipv6() {
        for (authority, host) in [
            ("example.com", "example.com"),
            ("example.com:8080", "example.com"),
            ("example.com:", "example.com"),
            ("example.com:http", "example.com:http"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]:443", "::1"),
            ("[::1]", "::1"),
            // A bare IPv6 address has several colons: none of it is a port.
            ("::1", "::1"),
            ("fe80::1:80", "fe80::1:80"),
            ("", ""),
        ] {
            assert_eq!(strip_port(authority), host, "{authority}");
        }
    }
}
