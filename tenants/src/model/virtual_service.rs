//! `VirtualService`: hosts, gateway bindings and ordered HTTP, TLS and TCP rules.
//! Rules from Istio's `ValidateVirtualService` and `virtualservice.go`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::http_route::{HttpRoute, parse_http_route};
use super::{
    Checker, DelegateRef, Destination, ExportTo, GatewayRef, HttpAction, Meta, WeightedDestination,
    parse_l4_route,
};
use crate::diag::FieldPath;
use crate::raw;
use crate::types::{Cidr, Host};

/// A validated VirtualService.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualService {
    /// Identity.
    pub meta: Meta,
    /// `hosts`, short names expanded.
    pub hosts: Vec<Host>,
    /// `gateways`; empty in YAML means `[mesh]`.
    pub gateways: Vec<GatewayRef>,
    /// `http`.
    pub http: Vec<Arc<HttpRoute>>,
    /// `tls`.
    pub tls: Vec<TlsRoute>,
    /// `tcp`.
    pub tcp: Vec<TcpRoute>,
    /// `exportTo`.
    pub export_to: ExportTo,
    /// No `hosts`: a delegate, used only through a root rule's `delegate`.
    pub is_delegate: bool,
}

/// Match conditions shared by TLS and TCP rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct L4Match {
    /// `sniHosts` (TLS only).
    pub sni_hosts: Vec<Host>,
    /// `port`: must equal the server port.
    pub port: Option<u16>,
    /// `gateways`: overrides the VirtualService's gateways.
    pub gateways: Vec<GatewayRef>,
    /// `sourceLabels`: compared with the gateway group's labels.
    pub source_labels: std::collections::BTreeMap<String, String>,
    /// `sourceNamespace`: compared with the gateway's namespace.
    pub source_namespace: Option<String>,
    /// `sourceSubnet` (TCP only): the client's address must be in it.
    pub source_subnet: Option<Cidr>,
    /// `destinationSubnets` (TCP only): the address the client connected to must be in one.
    pub destination_subnets: Vec<Cidr>,
}

impl L4Match {
    /// Whether the match depends on the connection's addresses.
    pub fn by_address(&self) -> bool {
        self.source_subnet.is_some() || !self.destination_subnets.is_empty()
    }
}

/// A TLS (SNI) rule.
#[derive(Debug, Clone, Serialize)]
pub struct TlsRoute {
    /// Index in `spec.tls`.
    pub index: usize,
    /// `match`.
    pub matches: Vec<L4Match>,
    /// `route`.
    pub route: Vec<WeightedDestination>,
}

/// A TCP rule.
#[derive(Debug, Clone, Serialize)]
pub struct TcpRoute {
    /// Index in `spec.tcp`.
    pub index: usize,
    /// `match`; empty matches everything.
    pub matches: Vec<L4Match>,
    /// `route`.
    pub route: Vec<WeightedDestination>,
}

// === impl VirtualService ===

impl VirtualService {
    /// Parses and validates a VirtualService.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::VirtualServiceSpec) -> Self {
        let sp = FieldPath::root().key("spec");
        let mut gateways = Vec::new();
        for (i, g) in spec.gateways.iter().enumerate() {
            if let Some(r) = GatewayRef::parse(c, &sp.key("gateways").idx(i), g) {
                gateways.push(r);
            }
        }
        let is_delegate = spec.hosts.is_empty();
        if is_delegate {
            // A delegate takes its gateways from the root that names it.
            for (field, set) in [
                ("gateways", !spec.gateways.is_empty()),
                ("tls", !spec.tls.is_empty()),
                ("tcp", !spec.tcp.is_empty()),
            ] {
                if set {
                    c.error(
                        &sp.key(field),
                        format!(
                            "delegate virtual service (one without hosts) must have no {field}"
                        ),
                    );
                }
            }
            gateways.clear();
        } else if spec.gateways.is_empty() {
            gateways.push(GatewayRef::Mesh);
        }
        let applies_to_mesh = gateways.contains(&GatewayRef::Mesh);
        let hosts = parse_vs_hosts(c, &sp.key("hosts"), &spec.hosts, applies_to_mesh);
        if spec.http.is_empty() && spec.tls.is_empty() && spec.tcp.is_empty() {
            c.error(&sp, "http, tcp or tls must be provided in virtual service");
        }
        let http = spec
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Arc::new(parse_http_route(
                    c,
                    &sp.key("http").idx(i),
                    i,
                    r,
                    applies_to_mesh,
                    is_delegate,
                ))
            })
            .collect::<Vec<_>>();
        super::http_route::warn_unreachable(c, &sp.key("http"), &http);
        let tls = spec
            .tls
            .iter()
            .enumerate()
            .map(|(i, r)| parse_tls_route(c, &sp.key("tls").idx(i), i, r, &hosts))
            .collect();
        let tcp = spec
            .tcp
            .iter()
            .enumerate()
            .map(|(i, r)| TcpRoute {
                index: i,
                matches: r
                    .matches
                    .iter()
                    .enumerate()
                    .map(|(j, m)| parse_l4_match(c, &sp.key("tcp").idx(i).key("match").idx(j), m))
                    .collect(),
                route: parse_l4_route(c, &sp.key("tcp").idx(i).key("route"), &r.route),
            })
            .collect();
        let export_to = ExportTo::parse(c, &sp.key("exportTo"), &spec.export_to, false);
        Self {
            meta,
            hosts,
            gateways,
            http,
            tls,
            tcp,
            export_to,
            is_delegate,
        }
    }

    /// The rules that delegate, with where to.
    pub fn delegations(&self) -> impl Iterator<Item = (&Arc<HttpRoute>, &DelegateRef)> {
        self.http.iter().filter_map(|r| match &r.action {
            HttpAction::Delegate(d) => Some((r, d)),
            _ => None,
        })
    }

    /// Whether the VirtualService binds to anything but `mesh`.
    pub fn binds_gateways(&self) -> bool {
        self.gateways.iter().any(|g| *g != GatewayRef::Mesh)
            || self.http.iter().any(|r| {
                r.matches
                    .iter()
                    .any(|m| m.gateways.iter().any(|g| *g != GatewayRef::Mesh))
            })
    }

    /// Every destination the rules route to, with whether the rule can only apply to `mesh`.
    pub fn destinations(&self) -> Vec<(&Destination, bool)> {
        let mut out = Vec::new();
        let mesh_only = |own: &[GatewayRef]| -> bool {
            if self.is_delegate {
                return false;
            }
            let g = if own.is_empty() {
                &self.gateways[..]
            } else {
                own
            };
            g.iter().all(|g| *g == GatewayRef::Mesh)
        };
        for r in &self.http {
            let m = if r.matches.is_empty() {
                mesh_only(&[])
            } else {
                r.matches.iter().all(|m| mesh_only(&m.gateways))
            };
            for d in r.destinations() {
                out.push((d, m));
            }
        }
        for r in &self.tls {
            let m = r.matches.iter().all(|mm| mesh_only(&mm.gateways));
            for d in &r.route {
                out.push((&d.destination, m));
            }
        }
        for r in &self.tcp {
            let m = if r.matches.is_empty() {
                mesh_only(&[])
            } else {
                r.matches.iter().all(|mm| mesh_only(&mm.gateways))
            };
            for d in &r.route {
                out.push((&d.destination, m));
            }
        }
        out
    }
}

fn parse_vs_hosts(c: &mut Checker, p: &FieldPath, hosts: &[String], mesh: bool) -> Vec<Host> {
    let mut out: Vec<Host> = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let hp = p.idx(i);
        if h == "*" && mesh {
            c.error(
                &hp,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
            continue;
        }
        let parsed = if !mesh && h.starts_with("outbound_.") {
            Ok(Host::new_unchecked(h.as_str()))
        } else {
            Host::parse_wildcard_domain(h)
        };
        match parsed {
            Ok(host) => {
                let host = c.expand(host);
                if let Some(prev) = out.iter().find(|o| o.matches(&host)) {
                    c.error(
                        &hp,
                        format!("duplicate or overlapping host {h:?} (overlaps {prev:?})"),
                    );
                    continue;
                }
                out.push(host);
            }
            Err(e) => c.error(&hp, e.to_string()),
        }
    }
    out
}

fn parse_l4_match(c: &mut Checker, p: &FieldPath, m: &raw::L4MatchAttributes) -> L4Match {
    let mut lm = common_l4(
        c,
        p,
        m.port,
        &m.gateways,
        &m.source_labels,
        &m.source_namespace,
    );
    lm.destination_subnets = m
        .destination_subnets
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Cidr::parse(s)
                .map_err(|e| c.error(&p.key("destinationSubnets").idx(i), e))
                .ok()
        })
        .collect();
    lm.source_subnet = m.source_subnet.as_deref().and_then(|s| {
        Cidr::parse(s)
            .map_err(|e| c.error(&p.key("sourceSubnet"), e))
            .ok()
    });
    if lm.by_address() {
        let field = if lm.source_subnet.is_some() {
            p.key("sourceSubnet")
        } else {
            p.key("destinationSubnets")
        };
        c.warn(
            &field,
            "applied by gatehouse: the rule serves only connections from (or to) these addresses; Istio's gateways ignore sourceSubnet and destinationSubnets on tcp rules (its sidecars apply them)",
        );
    }
    lm
}

fn common_l4(
    c: &mut Checker,
    p: &FieldPath,
    port: Option<i64>,
    gateways: &[String],
    source_labels: &std::collections::BTreeMap<String, String>,
    source_namespace: &Option<String>,
) -> L4Match {
    let port = port.and_then(|n| c.port(&p.key("port"), n));
    let gateways = gateways
        .iter()
        .enumerate()
        .filter_map(|(i, g)| GatewayRef::parse(c, &p.key("gateways").idx(i), g))
        .collect();
    super::parse_labels(c, &p.key("sourceLabels"), source_labels);
    if let Some(ns) = source_namespace
        && !crate::types::is_dns1123_label(ns)
    {
        c.error(
            &p.key("sourceNamespace"),
            format!("invalid namespace {ns:?}"),
        );
    }
    L4Match {
        sni_hosts: Vec::new(),
        port,
        gateways,
        source_labels: source_labels.clone(),
        source_namespace: source_namespace.clone(),
        source_subnet: None,
        destination_subnets: Vec::new(),
    }
}

fn parse_tls_route(
    c: &mut Checker,
    p: &FieldPath,
    index: usize,
    r: &raw::TlsRoute,
    hosts: &[Host],
) -> TlsRoute {
    if r.matches.is_empty() {
        c.error(
            &p.key("match"),
            "TLS route must have at least one match condition",
        );
    }
    let mut matches = Vec::new();
    for (j, m) in r.matches.iter().enumerate() {
        let mp = p.key("match").idx(j);
        if !m.destination_subnets.is_empty() {
            c.error(
                &mp.key("destinationSubnets"),
                format!("not supported yet: {}", mp.key("destinationSubnets")),
            );
        }
        let mut lm = common_l4(
            c,
            &mp,
            m.port,
            &m.gateways,
            &m.source_labels,
            &m.source_namespace,
        );
        if m.sni_hosts.is_empty() {
            c.error(
                &mp.key("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (k, s) in m.sni_hosts.iter().enumerate() {
            let sp = mp.key("sniHosts").idx(k);
            if s.parse::<std::net::IpAddr>().is_ok() {
                c.warn(
                    &sp,
                    format!(
                        "SNI host {s:?} is an IP address; clients do not send IP addresses as SNI"
                    ),
                );
            }
            match Host::parse_wildcard_domain(s) {
                Ok(h) => {
                    let h = c.expand(h);
                    if !hosts.iter().any(|vh| h.subset_of(vh)) {
                        c.error(
                            &sp,
                            format!("SNI host {s:?} is not a compatible subset of any of the virtual service hosts"),
                        );
                    }
                    lm.sni_hosts.push(h);
                }
                Err(e) => c.error(&sp, e.to_string()),
            }
        }
        matches.push(lm);
    }
    TlsRoute {
        index,
        matches,
        route: parse_l4_route(c, &p.key("route"), &r.route),
    }
}

/// Re-exported for the compile step: a match duration of zero means "no timeout".
pub fn nonzero(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}
