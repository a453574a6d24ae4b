//! Listeners: servers grouped by (bind, listening port), then one HTTP route table, a set of
//! SNI filter chains, or one TCP proxy per listener (istio-api.md §3.1, §3.4, §3.5).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use super::routes::{self, gateway_ref, hosts_for_namespace, l4_applies, picks};
use super::{Claimant, ClusterBuilder, Cx, Listeners, gateways_for, listener_name};
use crate::diag::FieldPath;
use crate::model::{Gateway, GatewayGroup, Location, Server, ServerTlsMode};
use crate::snapshot::{
    ChainAction, CredentialRef, FilterChain, Listener, ListenerKind, TcpProxy, TlsContext,
    WeightedCluster,
};
use crate::types::Host;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Http,
    Tls,
    Tcp,
}

impl Family {
    fn of(s: &Server) -> Self {
        if s.protocol.is_http() {
            Self::Http
        } else if s.protocol.is_tcp() {
            Self::Tcp
        } else {
            Self::Tls
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Tls => "TLS",
            Self::Tcp => "TCP",
        }
    }
}

struct PortBuild<'a> {
    family: Family,
    gateway_port: u16,
    /// Bound on every address (no explicit bind): also listen on `::`.
    dual: bool,
    servers: Vec<(&'a Gateway, &'a Server)>,
}

fn server_claimant(gw: &Gateway, srv: &Server) -> Claimant {
    Claimant {
        namespace: gw.meta.namespace.clone(),
        kind: "Gateway",
        meta: gw.meta.clone(),
        path: FieldPath::root()
            .key("spec")
            .key("servers")
            .idx(srv.index)
            .key("port"),
    }
}

/// Builds a group's listeners.
pub(crate) fn build(
    cx: &mut Cx<'_, '_>,
    group: &GatewayGroup,
    clusters: &mut ClusterBuilder<'_>,
) -> Listeners {
    let mut ports: BTreeMap<SocketAddr, PortBuild<'_>> = BTreeMap::new();
    for gw in gateways_for(cx.world, group) {
        for srv in &gw.servers {
            let port = group.listen_port(srv.port);
            let explicit = srv.bind.or(group.bind);
            let ip = explicit.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let addr = SocketAddr::new(ip, port);
            let family = Family::of(srv);
            // A specific address and the wildcard on one port cannot both be bound.
            let clash = ports.iter().find(|(a, _)| {
                a.port() == port && *a != &addr && (a.ip().is_unspecified() || ip.is_unspecified())
            });
            if let Some((other, pb)) = clash {
                if let Some((ogw, osrv)) = pb.servers.first() {
                    let holder = server_claimant(ogw, osrv);
                    let other = *other;
                    cx.contest(
                        &format!("{}|{}", group.name, addr),
                        &format!("port {port} on {} (bound as {other})", group.name),
                        &holder,
                        &server_claimant(gw, srv),
                    );
                }
                continue;
            }
            match ports.get_mut(&addr) {
                None => {
                    ports.insert(
                        addr,
                        PortBuild {
                            family,
                            gateway_port: srv.port,
                            dual: explicit.is_none(),
                            servers: vec![(gw, srv)],
                        },
                    );
                }
                Some(pb) if pb.family != family || pb.gateway_port != srv.port => {
                    if let Some((ogw, osrv)) = pb.servers.first() {
                        let holder = server_claimant(ogw, osrv);
                        let what = format!(
                            "port {port} on group {} ({} server of {}/{})",
                            group.name,
                            pb.family.name(),
                            ogw.meta.namespace,
                            ogw.meta.name
                        );
                        cx.contest(
                            &format!("{}|{addr}|port", group.name),
                            &format!("{what}; a {} server cannot share it", family.name()),
                            &holder,
                            &server_claimant(gw, srv),
                        );
                    }
                }
                Some(pb) if pb.family == Family::Tcp => {
                    if let Some((ogw, osrv)) = pb.servers.first() {
                        let holder = server_claimant(ogw, osrv);
                        cx.contest(
                            &format!("{}|{addr}|tcp", group.name),
                            &format!("TCP port {port} on group {}", group.name),
                            &holder,
                            &server_claimant(gw, srv),
                        );
                    }
                }
                Some(pb) => pb.servers.push((gw, srv)),
            }
        }
    }
    let mut out: Listeners = Vec::new();
    for (addr, pb) in &ports {
        let prefix = format!("{}|{addr}", group.name);
        let kind = match pb.family {
            Family::Http => {
                let name = format!("http.{}", pb.gateway_port);
                let table = routes::table(cx, group, clusters, name, &prefix, &pb.servers);
                Some(ListenerKind::Http(Arc::new(table)))
            }
            Family::Tcp => {
                let (gw, srv) = pb.servers[0];
                match routes::tcp_proxy(cx, group, clusters, gw, srv) {
                    Some((proxy, claimant)) => {
                        cx.claims
                            .insert(format!("{prefix}|tcp"), claimant.namespace);
                        Some(ListenerKind::Tcp(Arc::new(proxy)))
                    }
                    None => {
                        cx.warn(
                            "Gateway",
                            &gw.meta,
                            FieldPath::root().key("spec").key("servers").idx(srv.index),
                            format!(
                                "no VirtualService has a tcp route for this server; nothing listens on port {} of group {}",
                                addr.port(),
                                group.name
                            ),
                        );
                        None
                    }
                }
            }
            Family::Tls => {
                let chains = tls_chains(cx, group, clusters, &prefix, pb);
                (!chains.is_empty()).then_some(ListenerKind::Tls(chains))
            }
        };
        let Some(kind) = kind else { continue };
        let mut addrs = vec![*addr];
        if pb.dual {
            addrs.push(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                addr.port(),
            ));
        }
        for a in addrs {
            out.push(Arc::new(Listener {
                name: listener_name(&a),
                address: a,
                gateway_port: pb.gateway_port,
                kind: kind.clone(),
            }));
        }
    }
    out
}

/// Claims SNI names on this listener; returns false (after reporting) if any is taken.
fn claim_names(
    cx: &mut Cx<'_, '_>,
    prefix: &str,
    taken: &mut BTreeMap<String, Claimant>,
    names: &[Host],
    claimant: &Claimant,
) -> bool {
    for n in names {
        if let Some(holder) = taken.get(n.as_str()) {
            let holder = holder.clone();
            cx.contest(
                &format!("{prefix}|sni:{n}"),
                &format!("SNI {n} on {prefix}"),
                &holder,
                claimant,
            );
            return false;
        }
    }
    for n in names {
        taken.insert(n.as_str().to_string(), claimant.clone());
        cx.claims
            .insert(format!("{prefix}|sni:{n}"), claimant.namespace.clone());
    }
    true
}

fn tls_chains(
    cx: &mut Cx<'_, '_>,
    group: &GatewayGroup,
    clusters: &mut ClusterBuilder<'_>,
    prefix: &str,
    pb: &PortBuild<'_>,
) -> Vec<Arc<FilterChain>> {
    let mut chains = Vec::new();
    let mut taken: BTreeMap<String, Claimant> = BTreeMap::new();
    for (gw, srv) in &pb.servers {
        let Some(tls) = &srv.tls else { continue };
        let gw_ns = gw.meta.namespace.clone();
        match tls.mode {
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                let Some(credential) = &tls.credential else {
                    continue;
                };
                let mut names: Vec<Host> = Vec::new();
                for h in &srv.hosts {
                    if !names.contains(&h.host) {
                        names.push(h.host.clone());
                    }
                }
                let claimant = Claimant {
                    namespace: gw_ns.clone(),
                    kind: "Gateway",
                    meta: gw.meta.clone(),
                    path: FieldPath::root()
                        .key("spec")
                        .key("servers")
                        .idx(srv.index)
                        .key("hosts"),
                };
                if !claim_names(cx, prefix, &mut taken, &names, &claimant) {
                    continue;
                }
                let ctx = Arc::new(TlsContext {
                    mode: tls.mode,
                    credential: CredentialRef {
                        namespace: gw_ns.clone(),
                        source: credential.clone(),
                    },
                    second_credential: tls.second_credential.as_ref().map(|s| CredentialRef {
                        namespace: gw_ns.clone(),
                        source: s.clone(),
                    }),
                    ca_credential: tls.ca_credential.as_ref().map(|n| CredentialRef {
                        namespace: gw_ns.clone(),
                        source: crate::model::Credential::Name(n.clone()),
                    }),
                    subject_alt_names: tls.subject_alt_names.clone(),
                    pins: tls.pins.clone(),
                    min_version: tls.min_version,
                    max_version: tls.max_version,
                    cipher_suites: tls.cipher_suites.clone(),
                });
                let name = format!(
                    "https.{}.{}.{}.{}",
                    srv.port, srv.port_name, gw.meta.name, gw_ns
                );
                let server_names: Vec<Host> =
                    names.into_iter().filter(|n| n.as_str() != "*").collect();
                let action = if srv.protocol.is_http()
                    || srv.protocol == crate::types::Protocol::Https
                {
                    let table = routes::table(
                        cx,
                        group,
                        clusters,
                        name.clone(),
                        &format!("{prefix}|{name}"),
                        &[(gw, srv)],
                    );
                    ChainAction::TerminateHttp {
                        tls: ctx,
                        routes: Arc::new(table),
                    }
                } else {
                    match routes::tcp_proxy(cx, group, clusters, gw, srv) {
                        Some((tcp, _)) => ChainAction::TerminateTcp {
                            tls: ctx,
                            tcp: Arc::new(tcp),
                        },
                        None => {
                            cx.warn(
                                "Gateway",
                                &gw.meta,
                                FieldPath::root().key("spec").key("servers").idx(srv.index),
                                "TLS server terminated with SIMPLE/MUTUAL has no VirtualService tcp route; its SNI names are not served".into(),
                            );
                            continue;
                        }
                    }
                };
                chains.push(Arc::new(FilterChain {
                    name,
                    server_names,
                    tenant: gw_ns,
                    action,
                }));
            }
            ServerTlsMode::Passthrough => passthrough(
                cx,
                group,
                clusters,
                prefix,
                gw,
                srv,
                &mut taken,
                &mut chains,
            ),
            ServerTlsMode::AutoPassthrough => auto_passthrough(
                cx,
                group,
                clusters,
                prefix,
                gw,
                srv,
                &mut taken,
                &mut chains,
            ),
            ServerTlsMode::IstioMutual => {}
        }
    }
    chains
}

#[allow(clippy::too_many_arguments)]
fn passthrough(
    cx: &mut Cx<'_, '_>,
    group: &GatewayGroup,
    clusters: &mut ClusterBuilder<'_>,
    prefix: &str,
    gw: &Gateway,
    srv: &Server,
    taken: &mut BTreeMap<String, Claimant>,
    chains: &mut Vec<Arc<FilterChain>>,
) {
    let gref = gateway_ref(gw);
    for vs in routes::bound(cx, gw, group) {
        if !picks(srv, vs) {
            continue;
        }
        let ns = vs.meta.namespace.clone();
        for rule in &vs.tls {
            for (j, m) in rule.matches.iter().enumerate() {
                if !l4_applies(m, vs, &gref, srv, group) {
                    continue;
                }
                let claimant = Claimant {
                    namespace: ns.clone(),
                    kind: "VirtualService",
                    meta: vs.meta.clone(),
                    path: FieldPath::root()
                        .key("spec")
                        .key("tls")
                        .idx(rule.index)
                        .key("match")
                        .idx(j)
                        .key("sniHosts"),
                };
                let mut names: Vec<Host> = Vec::new();
                for h in &m.sni_hosts {
                    match taken.get(h.as_str()).cloned() {
                        Some(holder) => {
                            cx.contest(
                                &format!("{prefix}|sni:{h}"),
                                &format!("SNI {h} on {prefix}"),
                                &holder,
                                &claimant,
                            );
                        }
                        None => names.push(h.clone()),
                    }
                }
                if names.is_empty() || !claim_names(cx, prefix, taken, &names, &claimant) {
                    continue;
                }
                let proxy = TcpProxy {
                    name: format!("{ns}/{}.tls.{}", vs.meta.name, rule.index),
                    tenant: ns.clone(),
                    clusters: rule
                        .route
                        .iter()
                        .map(|d| WeightedCluster {
                            cluster: clusters
                                .resolve(cx.world, &ns, &d.destination, srv.port)
                                .into(),
                            weight: d.weight,
                            headers: Default::default(),
                        })
                        .collect(),
                    by_address: Vec::new(),
                };
                chains.push(Arc::new(FilterChain {
                    name: format!("tls.{}.{}.{}.{}", srv.port, vs.meta.name, ns, rule.index),
                    server_names: names,
                    tenant: ns.clone(),
                    action: ChainAction::Passthrough(Arc::new(proxy)),
                }));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn auto_passthrough(
    cx: &mut Cx<'_, '_>,
    group: &GatewayGroup,
    clusters: &mut ClusterBuilder<'_>,
    prefix: &str,
    gw: &Gateway,
    srv: &Server,
    taken: &mut BTreeMap<String, Claimant>,
    chains: &mut Vec<Arc<FilterChain>>,
) {
    let ns = gw.meta.namespace.clone();
    let shosts: Vec<Host> = hosts_for_namespace(srv, &ns).into_iter().cloned().collect();
    let world = cx.world;
    let mut names: Vec<(Host, String)> = Vec::new();
    for (owner, objs) in &world.namespaces {
        for se in &objs.service_entries {
            if se.location != Location::MeshInternal
                || !(se.export_to.visible(owner, &ns) || *owner == ns)
            {
                continue;
            }
            for h in se
                .hosts
                .iter()
                .filter(|h| !h.is_wildcard() && shosts.iter().any(|s| h.subset_of(s)))
            {
                let dr = world.destination_rule(&ns, owner, h);
                let mut subsets: Vec<Option<String>> = vec![None];
                subsets.extend(dr.subsets.iter().map(|s| Some(s.name.clone())));
                for p in &se.ports {
                    for subset in &subsets {
                        let sni = format!(
                            "outbound_.{}_.{}_.{}",
                            p.number,
                            subset.as_deref().unwrap_or(""),
                            h
                        );
                        let dest = crate::model::Destination {
                            host: h.clone(),
                            subset: subset.clone(),
                            port: Some(p.number),
                            path: FieldPath::root(),
                        };
                        let cluster = clusters.resolve(world, owner, &dest, srv.port);
                        names.push((Host::new_unchecked(sni), cluster));
                    }
                }
            }
        }
    }
    let _ = group;
    for (sni, cluster) in names {
        let claimant = Claimant {
            namespace: ns.clone(),
            kind: "Gateway",
            meta: gw.meta.clone(),
            path: FieldPath::root().key("spec").key("servers").idx(srv.index),
        };
        if taken.contains_key(sni.as_str())
            || !claim_names(cx, prefix, taken, std::slice::from_ref(&sni), &claimant)
        {
            continue;
        }
        chains.push(Arc::new(FilterChain {
            name: format!("auto.{}.{}", srv.port, sni),
            server_names: vec![sni],
            tenant: ns.clone(),
            action: ChainAction::Passthrough(Arc::new(TcpProxy {
                name: cluster.clone(),
                tenant: ns.clone(),
                clusters: vec![WeightedCluster {
                    cluster: cluster.into(),
                    weight: 100,
                    headers: Default::default(),
                }],
                by_address: Vec::new(),
            })),
        }));
    }
}
