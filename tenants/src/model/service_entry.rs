//! `ServiceEntry` and `WorkloadEntry`: the services and endpoints routes may reach.
//! Rules from Istio's `ValidateServiceEntry` and `ValidateWorkloadEntry`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::{Checker, ExportTo, Meta};
use crate::diag::FieldPath;
use crate::raw;
use crate::types::{Host, Protocol, is_dns1123_label, validate_fqdn};

/// A validated ServiceEntry.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceEntry {
    /// Identity.
    pub meta: Meta,
    /// `hosts` (short names expanded in the entry's namespace).
    pub hosts: Vec<Host>,
    /// `addresses` (IPs or CIDRs, as written).
    pub addresses: Vec<String>,
    /// `ports`.
    pub ports: Vec<ServicePort>,
    /// `location`.
    pub location: Location,
    /// `resolution`.
    pub resolution: Resolution,
    /// `endpoints`.
    pub endpoints: Vec<Endpoint>,
    /// `workloadSelector.labels`: selects WorkloadEntries of the same namespace.
    pub workload_selector: Option<BTreeMap<String, String>>,
    /// `exportTo`.
    pub export_to: ExportTo,
    /// `subjectAltNames`: upstream SANs to verify.
    pub subject_alt_names: Vec<String>,
}

/// A service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// `number`.
    pub number: u16,
    /// `protocol` (inferred from the name when unset, else TCP).
    pub protocol: Protocol,
    /// `name`.
    pub name: String,
    /// `targetPort`: the default endpoint port.
    pub target_port: Option<u16>,
}

/// `ServiceEntry.Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh (default).
    MeshExternal,
    /// Inside the mesh.
    MeshInternal,
}

/// `ServiceEntry.Resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Original destination (default).
    None,
    /// Endpoint IPs.
    Static,
    /// Resolve every address, use all records.
    Dns,
    /// Resolve, use the first record.
    DnsRoundRobin,
    /// Resolved per request (wildcard hosts).
    DynamicDns,
}

/// Where an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointAddress {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name (DNS resolution).
    Dns(String),
    /// A unix socket path.
    Unix(String),
}

/// A validated endpoint (inline `endpoints[]` or a WorkloadEntry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `address` (None when only `network` is set).
    pub address: Option<EndpointAddress>,
    /// `ports`: service port name → endpoint port.
    pub ports: BTreeMap<String, u16>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `weight` (default 1).
    pub weight: u32,
}

/// A validated WorkloadEntry.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadEntry {
    /// Identity.
    pub meta: Meta,
    /// The endpoint.
    pub endpoint: Endpoint,
}

// === impl ServiceEntry ===

impl ServiceEntry {
    /// Parses and validates a ServiceEntry.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::ServiceEntrySpec) -> Self {
        let sp = FieldPath::root().key("spec");
        let resolution = c
            .enumeration(
                &sp.key("resolution"),
                &spec.resolution,
                &[
                    ("NONE", Resolution::None),
                    ("STATIC", Resolution::Static),
                    ("DNS", Resolution::Dns),
                    ("DNS_ROUND_ROBIN", Resolution::DnsRoundRobin),
                    ("DYNAMIC_DNS", Resolution::DynamicDns),
                ],
                Resolution::None,
            )
            .unwrap_or(Resolution::None);
        let location = c
            .enumeration(
                &sp.key("location"),
                &spec.location,
                &[
                    ("MESH_EXTERNAL", Location::MeshExternal),
                    ("MESH_INTERNAL", Location::MeshInternal),
                ],
                Location::MeshExternal,
            )
            .unwrap_or(Location::MeshExternal);
        let hosts = parse_hosts(c, &sp.key("hosts"), &spec.hosts, resolution);
        let mut addresses = Vec::new();
        for (i, a) in spec.addresses.iter().enumerate() {
            let ap = sp.key("addresses").idx(i);
            if let Some((ip, len)) = a.split_once('/') {
                let ok = ip
                    .parse::<IpAddr>()
                    .ok()
                    .zip(len.parse::<u8>().ok())
                    .is_some_and(|(ip, l)| l <= if ip.is_ipv4() { 32 } else { 128 });
                if !ok {
                    c.error(&ap, format!("invalid CIDR {a:?}"));
                } else if !matches!(resolution, Resolution::None | Resolution::Static) {
                    c.error(
                        &ap,
                        "CIDR addresses are allowed only for NONE/STATIC resolution types",
                    );
                }
            } else if a.parse::<IpAddr>().is_err() {
                c.error(&ap, format!("invalid address {a:?}"));
            }
            addresses.push(a.clone());
        }
        let ports = parse_ports(c, &sp.key("ports"), &spec.ports);
        if let Some(ws) = &spec.workload_selector {
            if !spec.endpoints.is_empty() {
                c.error(
                    &sp.key("workloadSelector"),
                    "only one of WorkloadSelector or Endpoints can be set",
                );
            }
            if resolution == Resolution::None {
                c.warn(
                    &sp.key("workloadSelector"),
                    "workloadSelector has no effect with resolution NONE",
                );
            }
            for (k, v) in &ws.labels {
                let lp = sp.key("workloadSelector").key("labels").key(k);
                if let Err(e) = crate::types::labels::validate_label_key(k) {
                    c.error(&lp, e);
                }
                if let Err(e) = crate::types::labels::validate_label_value(v) {
                    c.error(&lp, e);
                }
            }
        }
        if resolution == Resolution::None && !spec.endpoints.is_empty() {
            c.error(&sp.key("endpoints"), "NONE mode cannot set endpoints");
        }
        if resolution == Resolution::None && !spec.hosts.is_empty() {
            c.warn(
                &sp.key("resolution"),
                "resolution NONE (original destination) has no endpoints a gateway can reach; routes to this service answer 503 (set resolution STATIC or DNS)",
            );
        }
        if resolution == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
            c.error(
                &sp.key("endpoints"),
                "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
            );
        }
        if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
            && spec.endpoints.is_empty()
        {
            for (i, h) in hosts.iter().enumerate() {
                if h.is_wildcard() {
                    c.error(
                        &sp.key("hosts").idx(i),
                        "hosts must be FQDNs when resolution is DNS and there are no endpoints",
                    );
                }
            }
        }
        if resolution != Resolution::None
            && hosts.len() > 1
            && ports.iter().any(|p| {
                !p.protocol.is_http()
                    && p.protocol != Protocol::Https
                    && p.protocol != Protocol::Tls
            })
        {
            c.error(
                &sp.key("hosts"),
                "multiple hosts require all ports to be HTTP or TLS when resolution is not NONE",
            );
        }
        if resolution == Resolution::DynamicDns {
            dynamic_dns_rules(c, &sp, spec, &hosts, &ports);
        }
        let mut endpoints = Vec::new();
        for (i, e) in spec.endpoints.iter().enumerate() {
            let ep = sp.key("endpoints").idx(i);
            let Some(endpoint) = parse_endpoint(c, &ep, e) else {
                continue;
            };
            match (&endpoint.address, resolution) {
                (Some(EndpointAddress::Dns(_)), Resolution::Static) => {
                    c.error(
                        &ep.key("address"),
                        "STATIC endpoints must be IP addresses or unix:// sockets",
                    );
                }
                (Some(EndpointAddress::Unix(_)), Resolution::Dns | Resolution::DnsRoundRobin) => {
                    c.error(
                        &ep.key("address"),
                        "DNS endpoints must be IP addresses or host names",
                    );
                }
                _ => {}
            }
            for name in endpoint.ports.keys() {
                if !ports.iter().any(|p| &p.name == name) {
                    c.error(
                        &ep.key("ports").key(name),
                        format!("endpoint port {name:?} is not a port name of this ServiceEntry"),
                    );
                }
            }
            endpoints.push(endpoint);
        }
        let export_to = ExportTo::parse(c, &sp.key("exportTo"), &spec.export_to, true);
        Self {
            meta,
            hosts,
            addresses,
            ports,
            location,
            resolution,
            endpoints,
            workload_selector: spec.workload_selector.as_ref().map(|w| w.labels.clone()),
            export_to,
            subject_alt_names: spec.subject_alt_names.clone(),
        }
    }

    /// The port a destination names, or the only port when it names none.
    pub fn port(&self, number: Option<u16>) -> Option<&ServicePort> {
        match number {
            Some(n) => self.ports.iter().find(|p| p.number == n),
            None if self.ports.len() == 1 => self.ports.first(),
            None => None,
        }
    }
}

/// Istio's rules for `resolution: DYNAMIC_DNS` (`ValidateServiceEntry`): wildcard hosts, no
/// addresses or endpoints, and ports whose requests name their host (HTTP, TLS).
fn dynamic_dns_rules(
    c: &mut Checker,
    sp: &FieldPath,
    spec: &raw::ServiceEntrySpec,
    hosts: &[Host],
    ports: &[ServicePort],
) {
    for (i, h) in hosts.iter().enumerate() {
        if !h.is_wildcard() {
            c.error(
                &sp.key("hosts").idx(i),
                "DYNAMIC_DNS resolution requires wildcard hosts (*.example.com)",
            );
        }
    }
    if !spec.addresses.is_empty() {
        c.error(
            &sp.key("addresses"),
            "DYNAMIC_DNS resolution cannot set addresses",
        );
    }
    if !spec.endpoints.is_empty() || spec.workload_selector.is_some() {
        c.error(
            &sp.key("endpoints"),
            "DYNAMIC_DNS resolution cannot set endpoints: the request's host names them",
        );
    }
    for (i, p) in ports.iter().enumerate() {
        let ok = p.protocol.is_http() || matches!(p.protocol, Protocol::Https | Protocol::Tls);
        if !ok {
            c.error(
                &sp.key("ports").idx(i).key("protocol"),
                format!(
                    "DYNAMIC_DNS resolution needs HTTP, HTTP2, GRPC, HTTPS or TLS ports (the request or its SNI names the host), not {}",
                    p.protocol
                ),
            );
        }
    }
}

fn parse_hosts(
    c: &mut Checker,
    p: &FieldPath,
    hosts: &[String],
    resolution: Resolution,
) -> Vec<Host> {
    if hosts.is_empty() {
        c.error(p, "ServiceEntry must have at least one host");
    }
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let hp = p.idx(i);
        if h == "*" {
            c.error(&hp, "hostname cannot be wildcard");
            continue;
        }
        match Host::parse_wildcard_domain(h) {
            Ok(host) => {
                if host.is_wildcard()
                    && !host.as_str().starts_with("*.")
                    && resolution != Resolution::DynamicDns
                {
                    c.warn(
                        &hp,
                        format!("partial wildcard {h:?} is not a recommended host"),
                    );
                }
                out.push(c.expand(host));
            }
            Err(e) => c.error(&hp, e.to_string()),
        }
    }
    out
}

fn parse_ports(c: &mut Checker, p: &FieldPath, ports: &[raw::ServicePort]) -> Vec<ServicePort> {
    let mut out: Vec<ServicePort> = Vec::new();
    for (i, sp) in ports.iter().enumerate() {
        let pp = p.idx(i);
        let name = sp.name.clone().unwrap_or_default();
        if !name.is_empty() && !is_dns1123_label(&name) {
            c.error(
                &pp.key("name"),
                format!("invalid port name {name:?}: must be a DNS-1123 label"),
            );
        }
        if out.iter().any(|o| o.name == name) {
            c.error(
                &pp.key("name"),
                format!("Duplicate value: port name {name:?}"),
            );
        }
        let Some(number) = sp.number.and_then(|n| c.port(&pp.key("number"), n)) else {
            if sp.number.is_none() {
                c.error(&pp.key("number"), "port number is required");
            }
            continue;
        };
        if out.iter().any(|o| o.number == number) {
            c.error(
                &pp.key("number"),
                format!("port number cannot be duplicated: {number}"),
            );
        }
        let protocol = match sp.protocol.as_deref() {
            Some(s) => match Protocol::parse(s) {
                Some(pr) => pr,
                None => {
                    c.error(&pp.key("protocol"), format!("unrecognized protocol {s:?}"));
                    Protocol::Tcp
                }
            },
            None => crate::types::protocol::from_port_name(&name).unwrap_or(Protocol::Tcp),
        };
        let target_port = sp
            .target_port
            .and_then(|n| c.port(&pp.key("targetPort"), n));
        out.push(ServicePort {
            number,
            protocol,
            name,
            target_port,
        });
    }
    out
}

/// Parses an endpoint (`ValidateWorkloadEntry` rules).
pub fn parse_endpoint(
    c: &mut Checker,
    p: &FieldPath,
    e: &raw::WorkloadEntrySpec,
) -> Option<Endpoint> {
    let address = match e.address.as_deref() {
        None | Some("") => {
            if e.network.is_none() {
                c.error(&p.key("address"), "Address is required");
                return None;
            }
            None
        }
        Some(a) if a.starts_with("unix://") => {
            let path = &a["unix://".len()..];
            if path.ends_with('/') {
                c.error(&p.key("address"), "UDS may not be a dir");
            } else if !(path.starts_with('/') || path.starts_with('@')) {
                c.error(
                    &p.key("address"),
                    "UDS must be an absolute path or abstract socket",
                );
            }
            if !e.ports.is_empty() {
                c.error(&p.key("ports"), "UDS may not include ports");
            }
            // Only the platform may declare one: `policy::check_unix_endpoints`.
            Some(EndpointAddress::Unix(path.to_string()))
        }
        Some(a) => match a.parse::<IpAddr>() {
            Ok(ip) => Some(EndpointAddress::Ip(ip)),
            Err(_) => match validate_fqdn(a) {
                Ok(()) => Some(EndpointAddress::Dns(a.to_ascii_lowercase())),
                Err(err) => {
                    c.error(&p.key("address"), format!("invalid address: {err}"));
                    None
                }
            },
        },
    };
    let mut ports = BTreeMap::new();
    for (name, n) in &e.ports {
        let pp = p.key("ports").key(name);
        if !is_dns1123_label(name) {
            c.error(
                &pp,
                format!("Invalid value: port name {name:?} must be a DNS-1123 label"),
            );
        }
        if let Some(port) = c.port(&pp, *n) {
            ports.insert(name.clone(), port);
        }
    }
    super::parse_labels(c, &p.key("labels"), &e.labels);
    if e.service_account.is_some() {
        c.mesh_only(&p.key("serviceAccount"), true, "no mesh identity");
    }
    if e.network.is_some() {
        c.mesh_only(&p.key("network"), true, "single network");
    }
    if e.locality.is_some() {
        c.mesh_only(&p.key("locality"), true, "no locality-aware load balancing");
    }
    let weight = match e.weight {
        Some(w) if w < 0 || w > i64::from(u32::MAX) => {
            c.error(&p.key("weight"), format!("weight {w} is out of range"));
            1
        }
        Some(0) | None => 1,
        Some(w) => w as u32,
    };
    if c.has_errors() {
        return None;
    }
    Some(Endpoint {
        address,
        ports,
        labels: e.labels.clone(),
        weight,
    })
}

// === impl WorkloadEntry ===

impl WorkloadEntry {
    /// Parses and validates a WorkloadEntry.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::WorkloadEntrySpec) -> Option<Self> {
        let endpoint = parse_endpoint(c, &FieldPath::root().key("spec"), spec)?;
        Some(Self { meta, endpoint })
    }
}
