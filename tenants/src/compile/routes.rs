//! HTTP route tables: VirtualServices bound to servers, hosts intersected, rules flattened
//! to one route per match block, catch-alls last (istio-api.md §3.2–3.3).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Claimant, ClusterBuilder, Cx};
use crate::diag::FieldPath;
use crate::model::{
    Gateway, GatewayGroup, GatewayRef, HttpAction, HttpMatch, HttpRoute, L4Match, NsSel,
    PLATFORM_NAMESPACE, RetryPolicy, Server, VirtualService, merge_delegated,
};
use crate::snapshot::{
    AddressMatch, AddressRoute, Route, RouteAction, RouteBody, RouteTable, TcpProxy, VirtualHost,
    WeightedCluster,
};
use crate::types::Host;

/// The reference a VirtualService uses for `gw`.
pub(crate) fn gateway_ref(gw: &Gateway) -> GatewayRef {
    GatewayRef::Named {
        namespace: gw.meta.namespace.clone(),
        name: gw.meta.name.clone(),
    }
}

/// VirtualServices that bind to `gw` (top-level or match-level), in load order. A tenant
/// binds only to its own Gateways and the platform's.
pub(crate) fn bound<'a>(
    cx: &Cx<'_, 'a>,
    gw: &Gateway,
    group: &GatewayGroup,
) -> Vec<&'a VirtualService> {
    let gref = gateway_ref(gw);
    let mut out: Vec<&'a VirtualService> = cx
        .world
        .namespaces
        .iter()
        .filter(|(ns, _)| {
            **ns == gw.meta.namespace
                || gw.meta.namespace == PLATFORM_NAMESPACE
                || **ns == PLATFORM_NAMESPACE
        })
        .filter(|(ns, _)| cx.world.may_use_group(ns, &group.name))
        .flat_map(|(_, o)| o.virtual_services.iter())
        .filter(|vs| refs(vs).any(|g| *g == gref))
        .collect();
    out.sort_by_key(|vs| vs.meta.source.order);
    out
}

fn refs(vs: &VirtualService) -> impl Iterator<Item = &GatewayRef> {
    vs.gateways
        .iter()
        .chain(
            vs.http
                .iter()
                .flat_map(|r| r.matches.iter().flat_map(|m| m.gateways.iter())),
        )
        .chain(
            vs.tls
                .iter()
                .flat_map(|r| r.matches.iter().flat_map(|m| m.gateways.iter())),
        )
        .chain(
            vs.tcp
                .iter()
                .flat_map(|r| r.matches.iter().flat_map(|m| m.gateways.iter())),
        )
}

/// Server hosts a VirtualService of `ns` may use (`host.NamesForNamespace`).
pub(crate) fn hosts_for_namespace<'s>(srv: &'s Server, ns: &str) -> Vec<&'s Host> {
    srv.hosts
        .iter()
        .filter(|h| match &h.ns {
            NsSel::Any => true,
            NsSel::Named(n) => n == ns,
        })
        .map(|h| &h.host)
        .collect()
}

/// Whether some server host selects the VirtualService (`pickMatchingGatewayHosts`).
pub(crate) fn picks(srv: &Server, vs: &VirtualService) -> bool {
    hosts_for_namespace(srv, &vs.meta.namespace)
        .iter()
        .any(|sh| vs.hosts.iter().any(|vh| sh.matches(vh)))
}

/// Whether an L4 match applies to this gateway server.
pub(crate) fn l4_applies(
    m: &L4Match,
    vs: &VirtualService,
    gref: &GatewayRef,
    srv: &Server,
    group: &GatewayGroup,
) -> bool {
    let gws = if m.gateways.is_empty() {
        &vs.gateways
    } else {
        &m.gateways
    };
    gws.contains(gref)
        && m.port.is_none_or(|p| p == srv.port)
        && m.source_labels
            .iter()
            .all(|(k, v)| group.labels.get(k) == Some(v))
        && m.source_namespace
            .as_ref()
            .is_none_or(|n| *n == group.namespace)
}

fn http_applies(
    m: &HttpMatch,
    vs: &VirtualService,
    gref: &GatewayRef,
    srv: &Server,
    group: &GatewayGroup,
) -> bool {
    let gws = if m.gateways.is_empty() {
        &vs.gateways
    } else {
        &m.gateways
    };
    gws.contains(gref)
        && m.port.is_none_or(|p| p == srv.port)
        && m.source_labels
            .iter()
            .all(|(k, v)| group.labels.get(k) == Some(v))
        && m.source_namespace
            .as_ref()
            .is_none_or(|n| *n == group.namespace)
}

struct VhostBuild {
    domain: Host,
    claimant: Claimant,
    require_tls: bool,
    routes: Vec<Route>,
}

/// Builds one route table from the HTTP servers sharing it.
pub(crate) fn table(
    cx: &mut Cx<'_, '_>,
    group: &GatewayGroup,
    clusters: &mut ClusterBuilder<'_>,
    name: String,
    claim_prefix: &str,
    servers: &[(&Gateway, &Server)],
) -> RouteTable {
    let mut vhosts: BTreeMap<String, VhostBuild> = BTreeMap::new();
    for (gw, srv) in servers {
        let gref = gateway_ref(gw);
        let mut from_server: Vec<String> = Vec::new();
        for vs in bound(cx, gw, group) {
            let shosts = hosts_for_namespace(srv, &vs.meta.namespace);
            let mut domains: Vec<Host> = Vec::new();
            for sh in &shosts {
                for vh in &vs.hosts {
                    if let Some(d) = sh.intersect(vh)
                        && !domains.contains(&d)
                    {
                        domains.push(d);
                    }
                }
            }
            if domains.is_empty() {
                continue;
            }
            let routes = vs_routes(cx, group, clusters, vs, &gref, srv);
            if routes.is_empty() {
                continue;
            }
            for d in domains {
                let key = format!("{claim_prefix}|{d}");
                let claimant = Claimant {
                    namespace: vs.meta.namespace.clone(),
                    kind: "VirtualService",
                    meta: vs.meta.clone(),
                    path: FieldPath::root().key("spec").key("hosts"),
                };
                match vhosts.get_mut(d.as_str()) {
                    Some(vh) if vh.claimant.namespace != vs.meta.namespace => {
                        let holder = vh.claimant.clone();
                        cx.contest(
                            &key,
                            &format!("host {d} on {claim_prefix}"),
                            &holder,
                            &claimant,
                        );
                        continue;
                    }
                    Some(vh) => vh.routes.extend(routes.iter().cloned()),
                    None => {
                        vhosts.insert(
                            d.as_str().to_string(),
                            VhostBuild {
                                domain: d.clone(),
                                claimant,
                                require_tls: false,
                                routes: routes.clone(),
                            },
                        );
                    }
                }
                cx.claims.insert(key, vs.meta.namespace.clone());
                from_server.push(d.as_str().to_string());
            }
        }
        let redirect = srv.tls.as_ref().is_some_and(|t| t.https_redirect) && srv.protocol.is_http();
        if redirect {
            for d in &from_server {
                if let Some(vh) = vhosts.get_mut(d) {
                    vh.require_tls = true;
                }
            }
            // Istio answers 301 for the server's hosts even when no VirtualService binds them,
            // and turns a vhost another server already built for the host into a redirect too
            // (`buildGatewayHTTPRouteConfig`, simulation "mixed httpsRedirect with routes").
            for (j, sh) in srv.hosts.iter().enumerate() {
                let claimant = Claimant {
                    namespace: gw.meta.namespace.clone(),
                    kind: "Gateway",
                    meta: gw.meta.clone(),
                    path: FieldPath::root()
                        .key("spec")
                        .key("servers")
                        .idx(srv.index)
                        .key("hosts")
                        .idx(j),
                };
                match vhosts.get_mut(sh.host.as_str()) {
                    Some(vh)
                        if vh.claimant.namespace == claimant.namespace
                            || claimant.namespace == PLATFORM_NAMESPACE =>
                    {
                        vh.require_tls = true;
                    }
                    // Another tenant's host: a contest, as for routes.
                    Some(vh) => {
                        let holder = vh.claimant.clone();
                        let d = &sh.host;
                        cx.contest(
                            &format!("{claim_prefix}|{d}"),
                            &format!("host {d} on {claim_prefix}"),
                            &holder,
                            &claimant,
                        );
                    }
                    None => {
                        vhosts.insert(
                            sh.host.as_str().to_string(),
                            VhostBuild {
                                domain: sh.host.clone(),
                                claimant,
                                require_tls: true,
                                routes: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
    }
    let port = servers.first().map_or(0, |(_, s)| s.port);
    let mut t = RouteTable {
        name,
        vhosts: vhosts
            .into_values()
            .map(|mut v| {
                // Istio's SortVHostRoutes: catch-all routes move to the end, order kept.
                v.routes
                    .sort_by_key(|r| r.matcher.as_ref().is_none_or(|m| m.is_catch_all()));
                VirtualHost {
                    name: format!("{}:{port}", v.domain),
                    domain: v.domain,
                    tenant: v.claimant.namespace.into(),
                    require_tls: v.require_tls,
                    routes: v.routes,
                }
            })
            .collect(),
        ..RouteTable::default()
    };
    t.index();
    t
}

/// One rule as compiled: a VirtualService's own, or a delegate's merged with its root's.
struct Rule {
    rule: Arc<HttpRoute>,
    /// Whose destinations the action names: the tenant that owns the route.
    ns: String,
    /// Whose destinations each of the mirrors names (the root's for what the delegate's rule
    /// took from it).
    mirror_ns: Vec<String>,
    /// `namespace/name` of the VirtualService that holds the rule.
    vs_name: String,
    /// The route's name when its match blocks have none.
    base: String,
}

/// `vs.http` with every delegating rule replaced by its delegate's rules, merged
/// (`mergeVirtualServicesIfNeeded`). A delegate that cannot be used, or a delegate rule
/// outside the root rule's matches, is skipped with a warning, as Istio skips it.
fn rules(cx: &mut Cx<'_, '_>, group: &GatewayGroup, vs: &VirtualService) -> Vec<Rule> {
    let own = vs.meta.namespace.as_str();
    let mut out = Vec::with_capacity(vs.http.len());
    for rule in &vs.http {
        let HttpAction::Delegate(d) = &rule.action else {
            out.push(Rule {
                rule: rule.clone(),
                ns: own.to_string(),
                mirror_ns: vec![own.to_string(); rule.mirrors.len()],
                vs_name: format!("{own}/{}", vs.meta.name),
                base: rule
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}.{}", vs.meta.name, rule.index)),
            });
            continue;
        };
        let at = FieldPath::root()
            .key("spec")
            .key("http")
            .idx(rule.index)
            .key("delegate");
        let dvs = match cx.world.delegate(own, d) {
            Ok(dvs) => dvs,
            Err(miss) => {
                cx.warn(
                    "VirtualService",
                    &vs.meta,
                    at,
                    format!("{miss}: the rule is skipped"),
                );
                continue;
            }
        };
        let dns = dvs.meta.namespace.as_str();
        // The delegate's routes are its tenant's: only on groups that tenant may use.
        if !cx.world.may_use_group(dns, &group.name) {
            cx.warn(
                "VirtualService",
                &vs.meta,
                at,
                format!(
                    "delegate VirtualService {dns}/{} belongs to tenant {dns:?}, which may not use gateway group {:?}: the rule is skipped there",
                    dvs.meta.name, group.name
                ),
            );
            continue;
        }
        for leaf in &dvs.http {
            if matches!(leaf.action, HttpAction::Delegate(_)) {
                continue;
            }
            let Some(m) = merge_delegated(rule, leaf) else {
                cx.warn(
                    "VirtualService",
                    &dvs.meta,
                    FieldPath::root().key("spec").key("http").idx(leaf.index).key("match"),
                    format!(
                        "no match of the root rule {own}/{}: spec.http[{}] contains this rule's match: the rule is skipped",
                        vs.meta.name, rule.index
                    ),
                );
                continue;
            };
            out.push(Rule {
                base: m
                    .rule
                    .name
                    .clone()
                    // Unnamed on both sides: the root rule's place too, so that two root rules
                    // naming one delegate do not share route names (and metric series).
                    .unwrap_or_else(|| {
                        format!(
                            "{}.{}-{}.{}",
                            vs.meta.name, rule.index, dvs.meta.name, leaf.index
                        )
                    }),
                rule: Arc::new(m.rule),
                ns: dns.to_string(),
                mirror_ns: m
                    .root_mirrors
                    .iter()
                    .map(|root| if *root { own } else { dns }.to_string())
                    .collect(),
                vs_name: format!("{dns}/{}", dvs.meta.name),
            });
        }
    }
    out
}

/// The routes one VirtualService contributes to one server: one per applicable match
/// block, stopping after the first catch-all (`BuildHTTPRoutesForVirtualService`).
fn vs_routes(
    cx: &mut Cx<'_, '_>,
    group: &GatewayGroup,
    clusters: &mut ClusterBuilder<'_>,
    vs: &VirtualService,
    gref: &GatewayRef,
    srv: &Server,
) -> Vec<Route> {
    let mut out = Vec::new();
    for r in rules(cx, group, vs) {
        let mut body: Option<Arc<RouteBody>> = None;
        let mut get_body =
            |cx: &mut Cx<'_, '_>, clusters: &mut ClusterBuilder<'_>| -> Arc<RouteBody> {
                body.get_or_insert_with(|| Arc::new(route_body(cx, clusters, &r, srv.port)))
                    .clone()
            };
        let mut stop = false;
        if r.rule.matches.is_empty() {
            if !vs.gateways.contains(gref) {
                continue;
            }
            out.push(Route {
                name: r.base.clone().into(),
                virtual_service: r.vs_name.clone(),
                matcher: None,
                body: get_body(cx, clusters),
            });
            stop = true;
        } else {
            for m in &r.rule.matches {
                if !http_applies(m, vs, gref, srv, group) {
                    continue;
                }
                out.push(Route {
                    name: m
                        .name
                        .as_ref()
                        .map_or_else(|| r.base.clone(), |n| format!("{}.{n}", r.base))
                        .into(),
                    virtual_service: r.vs_name.clone(),
                    matcher: Some(m.clone()),
                    body: get_body(cx, clusters),
                });
                if m.is_catch_all() {
                    stop = true;
                    break;
                }
            }
        }
        if stop {
            break;
        }
    }
    out
}

fn route_body(
    cx: &Cx<'_, '_>,
    clusters: &mut ClusterBuilder<'_>,
    r: &Rule,
    port: u16,
) -> RouteBody {
    let rule = &r.rule;
    let ns = r.ns.as_str();
    let action = match &rule.action {
        HttpAction::Route(ds) => RouteAction::Forward(
            ds.iter()
                .map(|d| WeightedCluster {
                    cluster: clusters.resolve(cx.world, ns, &d.destination, port).into(),
                    weight: d.weight,
                    headers: d.headers.clone(),
                })
                .collect(),
        ),
        HttpAction::Redirect(r) => RouteAction::Redirect(r.clone()),
        HttpAction::DirectResponse(d) => RouteAction::Direct {
            status: d.status,
            body: d.body.clone(),
        },
        // `rules` replaced every delegating rule; were one left, no route would be its
        // answer, as for a delegate Istio cannot find.
        HttpAction::Delegate(_) => RouteAction::Direct {
            status: 404,
            body: Vec::new(),
        },
    };
    RouteBody {
        tenant: ns.into(),
        action,
        retries: rule
            .retries
            .clone()
            .unwrap_or_else(RetryPolicy::mesh_default),
        mirrors: rule
            .mirrors
            .iter()
            .zip(&r.mirror_ns)
            .map(|(m, ns)| {
                (
                    clusters.resolve(cx.world, ns, &m.destination, port),
                    m.percentage,
                )
            })
            .collect(),
        rule: rule.clone(),
    }
}

/// The TCP proxy of a TCP (or TLS-terminated) server: the first VirtualService in order
/// whose hosts the server picks and that has an applicable `tcp` rule (§3.5).
pub(crate) fn tcp_proxy(
    cx: &mut Cx<'_, '_>,
    group: &GatewayGroup,
    clusters: &mut ClusterBuilder<'_>,
    gw: &Gateway,
    srv: &Server,
) -> Option<(TcpProxy, Claimant)> {
    let gref = gateway_ref(gw);
    // The rules of the first VirtualService with one that applies, in order: those that
    // depend on the connection's addresses are kept until the first that does not, which
    // serves the rest. Rules of later VirtualServices are not consulted, as before subnets:
    // a port's connections are one owner's.
    let mut by_address: Vec<AddressRoute> = Vec::new();
    let mut claimant: Option<Claimant> = None;
    for vs in bound(cx, gw, group) {
        if !picks(srv, vs) {
            continue;
        }
        let ns = vs.meta.namespace.as_str();
        for rule in &vs.tcp {
            let applying: Vec<&L4Match> = rule
                .matches
                .iter()
                .filter(|m| l4_applies(m, vs, &gref, srv, group))
                .collect();
            let unconditional = if rule.matches.is_empty() {
                vs.gateways.contains(&gref)
            } else {
                applying.iter().any(|m| !m.by_address())
            };
            if !unconditional && applying.is_empty() {
                continue;
            }
            let clusters_list: Vec<WeightedCluster> = rule
                .route
                .iter()
                .map(|d| WeightedCluster {
                    cluster: clusters
                        .resolve(cx.world, ns, &d.destination, srv.port)
                        .into(),
                    weight: d.weight,
                    headers: Default::default(),
                })
                .collect();
            let name = format!("{ns}/{}.tcp.{}", vs.meta.name, rule.index);
            let this = Claimant {
                namespace: ns.to_string(),
                kind: "VirtualService",
                meta: vs.meta.clone(),
                path: FieldPath::root().key("spec").key("tcp").idx(rule.index),
            };
            let owner = claimant.get_or_insert(this).clone();
            if unconditional {
                return Some((
                    TcpProxy {
                        name,
                        tenant: owner.namespace.clone(),
                        clusters: clusters_list,
                        by_address,
                    },
                    owner,
                ));
            }
            by_address.push(AddressRoute {
                name,
                matches: applying
                    .iter()
                    .map(|m| AddressMatch {
                        source: m.source_subnet,
                        destination: m.destination_subnets.clone(),
                    })
                    .collect(),
                clusters: clusters_list,
            });
        }
        if claimant.is_some() {
            break;
        }
    }
    // Every rule depends on addresses: a connection none of them admits is closed.
    let claimant = claimant?;
    Some((
        TcpProxy {
            name: by_address
                .first()
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            tenant: claimant.namespace.clone(),
            clusters: Vec::new(),
            by_address,
        },
        claimant,
    ))
}
