//! Tenancy rules (DESIGN.md "Isolation rules") and the cross-object references Istio only
//! reports through `istioctl analyze`: here they are errors before apply.

use std::collections::BTreeMap;

use crate::diag::FieldPath;
use crate::load::Objects;
use crate::model::{
    Finding, GatewayRef, HttpAction, HttpRoute, Meta, PLATFORM_NAMESPACE, TenantDef,
    VirtualService, merge_delegated,
};
use crate::types::Host;
use crate::world::World;

/// A finding about an object, with the object's kind.
pub(crate) struct Found {
    pub kind: &'static str,
    pub meta: Meta,
    pub finding: Finding,
}

struct Out(Vec<Found>);

impl Out {
    fn error(&mut self, kind: &'static str, meta: &Meta, path: FieldPath, message: String) {
        self.0.push(Found {
            kind,
            meta: meta.clone(),
            finding: Finding {
                severity: crate::diag::Severity::Error,
                path,
                message,
            },
        });
    }

    fn warn(&mut self, kind: &'static str, meta: &Meta, path: FieldPath, message: String) {
        self.0.push(Found {
            kind,
            meta: meta.clone(),
            finding: Finding {
                severity: crate::diag::Severity::Warning,
                path,
                message,
            },
        });
    }
}

/// Checks the platform's own consistency: tenants refer to real groups, TCP ports are granted
/// once.
pub(crate) fn check_platform(platform: &Objects) -> Vec<Found> {
    let mut out = Out(Vec::new());
    if platform.operators.len() > 1 {
        for op in &platform.operators[1..] {
            out.error(
                "IstioOperator",
                &op.meta,
                FieldPath::root(),
                "only one IstioOperator may declare gateway groups".into(),
            );
        }
    }
    let groups: Vec<&str> = platform
        .operators
        .first()
        .map(|o| o.groups.iter().map(|g| g.name.as_str()).collect())
        .unwrap_or_default();
    let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
    let mut names: BTreeMap<&str, ()> = BTreeMap::new();
    for t in &platform.tenants {
        let sp = FieldPath::root().key("spec");
        if names.insert(&t.meta.name, ()).is_some() {
            out.error(
                "Tenant",
                &t.meta,
                FieldPath::root().key("metadata").key("name"),
                format!("tenant {:?} is declared twice", t.meta.name),
            );
        }
        for (i, g) in t.gateways.iter().enumerate() {
            if !groups.contains(&g.as_str()) {
                out.error(
                    "Tenant",
                    &t.meta,
                    sp.key("gateways").idx(i),
                    format!("no gateway group {g:?}; groups are: {}", groups.join(", ")),
                );
            }
        }
        for (i, p) in t.tcp_ports.iter().enumerate() {
            if let Some(other) = ports.insert(*p, &t.meta.name) {
                out.error(
                    "Tenant",
                    &t.meta,
                    sp.key("tcpPorts").idx(i),
                    format!("TCP port {p} is already granted to tenant {other:?}"),
                );
            }
        }
    }
    check_dns_selections(platform, &mut out);
    check_telemetries(platform, &mut out);
    out.0
}

/// Istio applies one namespace-wide Telemetry per namespace (the oldest): the others are said
/// to have no effect, the first in the repository's order standing for the oldest.
fn check_telemetries(objs: &Objects, out: &mut Out) {
    let mut wide = objs.telemetries.iter().filter(|t| t.selector.is_none());
    let Some(first) = wide.next() else { return };
    for t in wide {
        out.warn(
            "Telemetry",
            &t.meta,
            FieldPath::root().key("spec"),
            format!(
                "only one Telemetry without a selector applies per namespace: {} comes first in the repository (Istio keeps the oldest), so this one has no effect",
                first.meta.name
            ),
        );
    }
}

/// A DNS ServiceEntry looks its endpoints up by address or name: a WorkloadEntry it selects
/// on a unix socket is none of them, and that is said rather than left out unseen.
fn check_dns_selections(objs: &Objects, out: &mut Out) {
    use crate::model::{EndpointAddress, Resolution};
    for se in &objs.service_entries {
        let Some(sel) = se
            .workload_selector
            .as_ref()
            .filter(|_| matches!(se.resolution, Resolution::Dns | Resolution::DnsRoundRobin))
        else {
            continue;
        };
        for we in &objs.workload_entries {
            if sel
                .iter()
                .all(|(k, v)| we.endpoint.labels.get(k) == Some(v))
                && matches!(we.endpoint.address, Some(EndpointAddress::Unix(_)))
            {
                out.warn(
                    "WorkloadEntry",
                    &we.meta,
                    FieldPath::root().key("spec").key("address"),
                    format!(
                        "ServiceEntry {} selects this entry with resolution DNS, which needs an IP address or a host name: this unix socket is not one of its endpoints (use resolution: STATIC)",
                        se.meta.name
                    ),
                );
            }
        }
    }
}

/// Checks one tenant's objects against its Tenant entry and the rest of the world.
pub(crate) fn check_tenant(
    def: Option<&TenantDef>,
    ns: &str,
    objs: &Objects,
    world: &World<'_>,
) -> Vec<Found> {
    let mut out = Out(Vec::new());
    let Some(def) = def else {
        for (kind, meta) in all_metas(objs) {
            out.error(
                kind,
                meta,
                FieldPath::root(),
                format!(
                    "tenant {ns:?} is not registered: add a Tenant named {ns:?} to gatehouse.yaml"
                ),
            );
        }
        return out.0;
    };
    check_gateways(def, objs, world, &mut out);
    check_virtual_services(def, ns, objs, world, &mut out);
    check_static_selections(objs, &mut out);
    check_unix_endpoints(objs, &mut out);
    check_telemetries(objs, &mut out);
    for t in &objs.telemetries {
        for (i, r) in t.access_logging.iter().enumerate() {
            for (j, p) in r.providers.iter().enumerate() {
                let known = p == "envoy"
                    || world
                        .namespaces
                        .get(PLATFORM_NAMESPACE)
                        .and_then(|pl| pl.operators.first())
                        .is_some_and(|o| o.mesh.providers.contains_key(p));
                if !known {
                    out.warn(
                        "Telemetry",
                        &t.meta,
                        FieldPath::parse(&format!("spec.accessLogging[{i}].providers[{j}].name")),
                        format!(
                            "unknown provider {p:?}: declare it in meshConfig.extensionProviders"
                        ),
                    );
                }
            }
        }
    }
    out.0
}

fn all_metas(o: &Objects) -> Vec<(&'static str, &Meta)> {
    let mut v: Vec<(&'static str, &Meta)> = Vec::new();
    v.extend(o.gateways.iter().map(|x| ("Gateway", &x.meta)));
    v.extend(
        o.virtual_services
            .iter()
            .map(|x| ("VirtualService", &x.meta)),
    );
    v.extend(
        o.destination_rules
            .iter()
            .map(|x| ("DestinationRule", &x.meta)),
    );
    v.extend(o.service_entries.iter().map(|x| ("ServiceEntry", &x.meta)));
    v.extend(
        o.workload_entries
            .iter()
            .map(|x| ("WorkloadEntry", &x.meta)),
    );
    v.extend(o.sidecars.iter().map(|x| ("Sidecar", &x.meta)));
    v.extend(o.telemetries.iter().map(|x| ("Telemetry", &x.meta)));
    v
}

fn check_gateways(def: &TenantDef, objs: &Objects, world: &World<'_>, out: &mut Out) {
    for gw in &objs.gateways {
        let sp = FieldPath::root().key("spec");
        if let Some(sel) = &gw.selector {
            let selected: Vec<&str> = world
                .groups
                .iter()
                .filter(|g| g.selected_by(sel))
                .map(|g| g.name.as_str())
                .collect();
            for g in &selected {
                if !def.gateways.iter().any(|a| a == g) {
                    out.error(
                        "Gateway",
                        &gw.meta,
                        sp.key("selector"),
                        format!(
                            "selects gateway group {g:?}, which tenant {:?} may not use (allowed: {})",
                            def.meta.name,
                            def.gateways.join(", ")
                        ),
                    );
                }
            }
            if selected.is_empty() {
                out.warn(
                    "Gateway",
                    &gw.meta,
                    sp.key("selector"),
                    "selects no gateway group; its servers are not served".into(),
                );
            }
        }
        for s in &gw.servers {
            let p = sp.key("servers").idx(s.index);
            if s.protocol.is_tcp() {
                if !def.tcp_ports.contains(&s.port) {
                    out.error(
                        "Gateway",
                        &gw.meta,
                        p.key("port").key("number"),
                        format!(
                            "TCP port {} is not granted to tenant {:?} (tcpPorts: {:?})",
                            s.port, def.meta.name, def.tcp_ports
                        ),
                    );
                }
                continue;
            }
            for (j, h) in s.hosts.iter().enumerate() {
                if !def.may_claim(&h.host) {
                    out.error(
                        "Gateway",
                        &gw.meta,
                        p.key("hosts").idx(j),
                        format!(
                            "host {:?} is outside tenant {:?}'s allowed hosts ({})",
                            h.host.as_str(),
                            def.meta.name,
                            hosts_list(def)
                        ),
                    );
                }
            }
        }
    }
}

/// A `unix://` endpoint reaches a socket on the appliance itself, which may be the gateway's
/// own control socket or any local service's: only the platform decides which the gateway
/// reaches, and shares them with `exportTo`.
fn check_unix_endpoints(objs: &Objects, out: &mut Out) {
    use crate::model::EndpointAddress;
    const WHY: &str = "unix:// endpoints reach sockets on the appliance itself: only the platform configuration (gatehouse.yaml, platform/) may declare them; a platform ServiceEntry shares one with exportTo";
    for se in &objs.service_entries {
        for (i, e) in se.endpoints.iter().enumerate() {
            if matches!(e.address, Some(EndpointAddress::Unix(_))) {
                let path = FieldPath::root()
                    .key("spec")
                    .key("endpoints")
                    .idx(i)
                    .key("address");
                out.error("ServiceEntry", &se.meta, path, WHY.into());
            }
        }
    }
    for we in &objs.workload_entries {
        if matches!(we.endpoint.address, Some(EndpointAddress::Unix(_))) {
            let path = FieldPath::root().key("spec").key("address");
            out.error("WorkloadEntry", &we.meta, path, WHY.into());
        }
    }
}

/// A WorkloadEntry a STATIC ServiceEntry selects needs an IP address: one with a DNS name, or
/// with only a `network`, is no endpoint of it (as in Istio, whose EDS carries addresses), and
/// that is said rather than left to a 503.
fn check_static_selections(objs: &Objects, out: &mut Out) {
    use crate::model::{EndpointAddress, Resolution};
    for se in &objs.service_entries {
        let Some(sel) = se
            .workload_selector
            .as_ref()
            .filter(|_| se.resolution == Resolution::Static)
        else {
            continue;
        };
        for we in &objs.workload_entries {
            if !sel
                .iter()
                .all(|(k, v)| we.endpoint.labels.get(k) == Some(v))
            {
                continue;
            }
            let what = match &we.endpoint.address {
                // A tenant's unix socket is refused by `check_unix_endpoints`.
                Some(EndpointAddress::Ip(_) | EndpointAddress::Unix(_)) => continue,
                Some(EndpointAddress::Dns(n)) => format!("its address {n:?} is a DNS name"),
                None => "it has no address".to_string(),
            };
            out.warn(
                "WorkloadEntry",
                &we.meta,
                FieldPath::root().key("spec").key("address"),
                format!(
                    "ServiceEntry {} selects this entry with resolution STATIC, which needs an IP address, but {what}: it is not one of its endpoints (use resolution: DNS for names)",
                    se.meta.name
                ),
            );
        }
    }
}

fn hosts_list(def: &TenantDef) -> String {
    def.hosts
        .iter()
        .map(Host::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `<name>.<ns>.svc.<domain>`: an expanded short name of the tenant's own namespace, which
/// never matches a public host name and so claims nothing.
fn internal_name(host: &Host, ns: &str) -> bool {
    let mut labels = host.as_str().split('.');
    labels.next();
    labels.next() == Some(ns) && labels.next() == Some("svc")
}

/// The routes a VirtualService makes, for `maxRoutes`, from the tenant's own objects only
/// (another tenant's commit never moves the count): one per match block. A rule that
/// delegates to a delegate of the same tenant counts the routes it expands to, and such a
/// delegate counts nothing itself; a delegate no root of its tenant names counts its rules
/// as written, and a rule that delegates to another namespace counts its own blocks.
fn route_count(ns: &str, vs: &VirtualService, objs: &Objects) -> u32 {
    let blocks = |r: &HttpRoute| u32::try_from(r.matches.len().max(1)).unwrap_or(u32::MAX);
    let own_delegate = |name: &str| {
        objs.virtual_services
            .iter()
            .find(|v| v.is_delegate && v.meta.name == name)
    };
    if vs.is_delegate {
        let named_here = objs
            .virtual_services
            .iter()
            .flat_map(VirtualService::delegations)
            .any(|(_, d)| d.namespace == ns && d.name == vs.meta.name);
        return if named_here {
            0
        } else {
            vs.http
                .iter()
                .map(|r| blocks(r))
                .fold(0, u32::saturating_add)
        };
    }
    vs.http
        .iter()
        .map(|r| match &r.action {
            HttpAction::Delegate(d) if d.namespace == ns => {
                own_delegate(&d.name).map_or(0, |dvs| {
                    dvs.http
                        .iter()
                        .filter_map(|leaf| merge_delegated(r, leaf))
                        .map(|m| blocks(&m.rule))
                        .fold(0, u32::saturating_add)
                })
            }
            _ => blocks(r),
        })
        .fold(0, u32::saturating_add)
}

fn check_virtual_services(
    def: &TenantDef,
    ns: &str,
    objs: &Objects,
    world: &World<'_>,
    out: &mut Out,
) {
    let mut routes = 0u32;
    for vs in &objs.virtual_services {
        let sp = FieldPath::root().key("spec");
        let mut all_refs: Vec<(FieldPath, &GatewayRef)> = vs
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (sp.key("gateways").idx(i), g))
            .collect();
        for r in &vs.http {
            for (j, m) in r.matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    all_refs.push((
                        sp.key("http")
                            .idx(r.index)
                            .key("match")
                            .idx(j)
                            .key("gateways")
                            .idx(k),
                        g,
                    ));
                }
            }
        }
        for r in &vs.tls {
            for (j, m) in r.matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    all_refs.push((
                        sp.key("tls")
                            .idx(r.index)
                            .key("match")
                            .idx(j)
                            .key("gateways")
                            .idx(k),
                        g,
                    ));
                }
            }
        }
        for r in &vs.tcp {
            for (j, m) in r.matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    all_refs.push((
                        sp.key("tcp")
                            .idx(r.index)
                            .key("match")
                            .idx(j)
                            .key("gateways")
                            .idx(k),
                        g,
                    ));
                }
            }
        }
        for (path, r) in &all_refs {
            let GatewayRef::Named { namespace, name } = r else {
                continue;
            };
            if namespace != ns && namespace != PLATFORM_NAMESPACE {
                out.error(
                    "VirtualService",
                    &vs.meta,
                    path.clone(),
                    format!(
                        "cannot bind to gateway {namespace}/{name}: it belongs to another tenant"
                    ),
                );
                continue;
            }
            match world.gateway(r) {
                None => out.error(
                    "VirtualService",
                    &vs.meta,
                    path.clone(),
                    format!("gateway {namespace}/{name} not found (IST0101)"),
                ),
                Some(gw) => {
                    let usable = world
                        .groups_of(gw)
                        .iter()
                        .any(|g| def.gateways.contains(&g.name));
                    if !usable {
                        out.error(
                            "VirtualService",
                            &vs.meta,
                            path.clone(),
                            format!(
                                "gateway {namespace}/{name} serves no group tenant {:?} may use (allowed: {})",
                                def.meta.name,
                                def.gateways.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        // A delegate of the same tenant must be there; another tenant's may come and go
        // (its rule is then skipped, with a warning from the compiler), or this tenant's
        // configuration would stand or fall with another tenant's commits.
        for (rule, d) in vs.delegations().filter(|(_, d)| d.namespace == ns) {
            if let Err(miss) = world.delegate(ns, d) {
                out.error(
                    "VirtualService",
                    &vs.meta,
                    sp.key("http").idx(rule.index).key("delegate"),
                    miss.to_string(),
                );
            }
        }
        if vs.is_delegate && world.delegated_by(ns, &vs.meta.name).next().is_none() {
            out.warn(
                "VirtualService",
                &vs.meta,
                sp.key("hosts"),
                "a VirtualService without hosts is a delegate, and no root rule names it yet: it routes nothing".into(),
            );
        }
        if !vs.binds_gateways() && !vs.is_delegate {
            out.warn(
                "VirtualService",
                &vs.meta,
                sp.key("gateways"),
                "binds only to mesh: it has no effect on a gatehouse appliance".into(),
            );
            continue;
        }
        // Hosts of TCP-only rules select TCP servers; a TCP server owns its whole port
        // (tcpPorts), so such hosts claim nothing.
        let claims_hosts = !vs.http.is_empty() || !vs.tls.is_empty();
        for (i, h) in vs.hosts.iter().enumerate().filter(|_| claims_hosts) {
            if h.as_str().starts_with("outbound_.") || internal_name(h, ns) {
                continue;
            }
            if !def.may_claim(h) {
                out.error(
                    "VirtualService",
                    &vs.meta,
                    sp.key("hosts").idx(i),
                    format!(
                        "host {:?} is outside tenant {:?}'s allowed hosts ({})",
                        h.as_str(),
                        def.meta.name,
                        hosts_list(def)
                    ),
                );
            }
        }
        for (d, mesh_only) in vs.destinations() {
            if mesh_only {
                continue;
            }
            let hp = d.path.key("host");
            let Some(found) = world.service(ns, &d.host) else {
                let msg = match world.hidden_owner(ns, &d.host) {
                    Some(owner) => format!(
                        "destination host {:?} is declared by tenant {owner:?} but not exported to {ns:?} (exportTo)",
                        d.host.as_str()
                    ),
                    None => format!(
                        "destination host {:?} is not declared by any ServiceEntry visible to tenant {ns:?}",
                        d.host.as_str()
                    ),
                };
                out.error("VirtualService", &vs.meta, hp, msg);
                continue;
            };
            match d.port {
                Some(p) => {
                    if found.entry.port(Some(p)).is_none() {
                        let ports: Vec<String> = found
                            .entry
                            .ports
                            .iter()
                            .map(|p| p.number.to_string())
                            .collect();
                        out.error(
                            "VirtualService",
                            &vs.meta,
                            d.path.key("port").key("number"),
                            format!(
                                "port {p} is not a port of service {:?} (ports: {})",
                                d.host.as_str(),
                                ports.join(", ")
                            ),
                        );
                        continue;
                    }
                }
                None => {
                    if found.entry.port(None).is_none() && found.entry.ports.len() > 1 {
                        out.warn(
                                "VirtualService",
                                &vs.meta,
                                d.path.clone(),
                                format!("service {:?} has several ports; without destination.port the listener port is used (IST0112)", d.host.as_str()),
                            );
                    }
                }
            }
            if let Some(subset) = &d.subset {
                let dr = world.destination_rule(ns, found.namespace, found.host);
                if dr.subset(subset).is_none() {
                    out.error(
                        "VirtualService",
                        &vs.meta,
                        d.path.key("subset"),
                        format!(
                            "subset {subset:?} is not defined for host {:?} by any DestinationRule visible to tenant {ns:?}",
                            d.host.as_str()
                        ),
                    );
                }
            }
        }
        routes = routes.saturating_add(route_count(ns, vs, objs));
        if let Some(max) = def.quotas.max_routes
            && routes > max
        {
            out.error(
                "VirtualService",
                &vs.meta,
                sp.key("http"),
                format!(
                    "tenant {:?} exceeds its maxRoutes quota ({routes} > {max})",
                    def.meta.name
                ),
            );
        }
    }
}
