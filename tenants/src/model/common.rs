//! Model pieces shared by several kinds: `exportTo`, gateway references, destinations,
//! header operations and label selectors.

use std::collections::BTreeMap;

use http::HeaderName;
use serde::Serialize;

use super::Checker;
use crate::diag::FieldPath;
use crate::raw;
use crate::types::labels::{validate_label_key, validate_label_value};
use crate::types::{Host, is_dns1123_label};

/// Where a resource is visible (`exportTo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ExportTo {
    /// Not set: the appliance's default, private to the namespace (`["."]`).
    Default,
    /// `*`: every namespace.
    All,
    /// `~`: nobody (ServiceEntry only).
    Nobody,
    /// The listed namespaces (`.` already replaced by the own namespace).
    Namespaces(Vec<String>),
}

// === impl ExportTo ===

impl ExportTo {
    /// Istio's `validateExportTo`.
    pub fn parse(c: &mut Checker, path: &FieldPath, v: &[String], service_entry: bool) -> Self {
        if v.is_empty() {
            return Self::Default;
        }
        let mut seen: Vec<String> = Vec::new();
        let mut star = false;
        let mut tilde = false;
        for (i, e) in v.iter().enumerate() {
            let p = path.idx(i);
            let ns = match e.as_str() {
                "*" => {
                    star = true;
                    "*".to_string()
                }
                "~" => {
                    if !service_entry {
                        c.error(&p, "exportTo \"~\" is only allowed on a ServiceEntry");
                    }
                    tilde = true;
                    "~".to_string()
                }
                "." => c.namespace.clone(),
                other => {
                    if !is_dns1123_label(other) {
                        c.error(&p, format!("invalid namespace {other:?} in exportTo"));
                    }
                    other.to_string()
                }
            };
            if seen.contains(&ns) {
                c.error(&p, format!("duplicate entry {e:?} in exportTo"));
            }
            seen.push(ns);
        }
        if (star || tilde) && v.len() > 1 {
            c.error(path, "exportTo \"*\" or \"~\" must be the only entry");
        }
        if star {
            Self::All
        } else if tilde {
            Self::Nobody
        } else {
            Self::Namespaces(seen)
        }
    }

    /// Whether a resource of namespace `own` with this setting is visible from `from`.
    pub fn visible(&self, own: &str, from: &str) -> bool {
        match self {
            Self::Default => own == from,
            Self::All => true,
            Self::Nobody => false,
            Self::Namespaces(list) => list.iter().any(|n| n == from),
        }
    }
}

/// A VirtualService's reference to a Gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum GatewayRef {
    /// `mesh`: sidecars, which an appliance does not have.
    Mesh,
    /// `namespace/name`.
    Named {
        /// Namespace of the Gateway.
        namespace: String,
        /// Name of the Gateway.
        name: String,
    },
}

// === impl GatewayRef ===

impl GatewayRef {
    /// Resolves as Istio's `resolveGatewayName`: `gw`, `./gw`, `ns/gw`, legacy `gw.ns.svc...`.
    pub fn parse(c: &mut Checker, path: &FieldPath, s: &str) -> Option<Self> {
        if s == "mesh" {
            return Some(Self::Mesh);
        }
        let (ns, name) = if let Some((ns, name)) = s.split_once('/') {
            let ns = if ns == "." { c.namespace.as_str() } else { ns };
            if !is_dns1123_label(ns) || !is_dns1123_label(name) {
                c.error(
                    path,
                    format!("invalid gateway name {s:?}: expected namespace/name"),
                );
                return None;
            }
            (ns.to_string(), name.to_string())
        } else if let Some((name, rest)) = s.split_once('.') {
            c.warn(
                path,
                format!("legacy gateway reference {s:?}; write it as namespace/name"),
            );
            let ns = rest.split('.').next().unwrap_or_default();
            if !is_dns1123_label(ns) || !is_dns1123_label(name) {
                c.error(path, format!("invalid gateway name {s:?}"));
                return None;
            }
            (ns.to_string(), name.to_string())
        } else {
            if !is_dns1123_label(s) {
                c.error(path, format!("invalid gateway name {s:?}"));
                return None;
            }
            (c.namespace.clone(), s.to_string())
        };
        Some(Self::Named {
            namespace: ns,
            name,
        })
    }

    /// `ns/name` or `mesh`.
    pub fn display(&self) -> String {
        match self {
            Self::Mesh => "mesh".into(),
            Self::Named { namespace, name } => format!("{namespace}/{name}"),
        }
    }
}

/// A route destination: service host (short names expanded), subset, port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// The service host.
    pub host: Host,
    /// The DestinationRule subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The service port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Where the destination is written (for reference diagnostics).
    #[serde(skip)]
    pub path: FieldPath,
}

// === impl Destination ===

impl Destination {
    /// `validateDestination`.
    pub fn parse(c: &mut Checker, path: &FieldPath, d: &Option<raw::Destination>) -> Option<Self> {
        let Some(d) = d else {
            c.error(path, "destination is required");
            return None;
        };
        let hp = path.key("host");
        let host = match d.host.as_deref() {
            None | Some("") => {
                c.error(&hp, "destination host is required");
                None
            }
            Some("*") => {
                c.error(&hp, "destination host cannot be \"*\"");
                None
            }
            Some(h) => match Host::parse_wildcard_domain(h) {
                Ok(h) => Some(c.expand(h)),
                Err(e) => {
                    c.error(&hp, e.to_string());
                    None
                }
            },
        };
        if let Some(s) = &d.subset
            && !is_dns1123_label(s)
        {
            c.error(
                &path.key("subset"),
                format!("subset name {s:?} is not a DNS-1123 label"),
            );
        }
        let port = match d.port.as_ref().and_then(|p| p.number) {
            Some(n) => c.port(&path.key("port").key("number"), n),
            None => None,
        };
        Some(Self {
            host: host?,
            subset: d.subset.clone(),
            port,
            path: path.clone(),
        })
    }
}

/// Header set/add/remove for one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOp {
    /// Replace (or create) these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Request and response header operations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOps {
    /// On the request to the upstream.
    pub request: HeaderOp,
    /// On the response to the client.
    pub response: HeaderOp,
}

// === impl HeaderOps ===

impl HeaderOps {
    /// Whether nothing is changed.
    pub fn is_empty(&self) -> bool {
        self.request == HeaderOp::default() && self.response == HeaderOp::default()
    }

    /// Parses `headers` with Istio's header-name and header-value rules.
    pub fn parse(c: &mut Checker, path: &FieldPath, h: &Option<raw::Headers>) -> Self {
        let Some(h) = h else {
            return Self::default();
        };
        Self {
            request: parse_op(c, &path.key("request"), &h.request, true),
            response: parse_op(c, &path.key("response"), &h.response, false),
        }
    }

    /// How many times the authority is rewritten by `request.set/add[:authority|host]`.
    pub fn authority_writes(&self) -> usize {
        self.request
            .set
            .iter()
            .chain(&self.request.add)
            .filter(|(k, _)| k == ":authority" || k == "host")
            .count()
    }
}

fn parse_op(
    c: &mut Checker,
    path: &FieldPath,
    op: &Option<raw::HeaderOperations>,
    request: bool,
) -> HeaderOp {
    let Some(op) = op else {
        return HeaderOp::default();
    };
    let mut out = HeaderOp::default();
    for (which, map, dst) in [
        ("set", &op.set, &mut out.set),
        ("add", &op.add, &mut out.add),
    ] {
        for (k, v) in map {
            let p = path.key(which).key(k);
            let name = k.to_ascii_lowercase();
            if check_header_name(c, &p, &name, request, false) {
                check_header_value(c, &p, v);
                dst.push((name, v.clone()));
            }
        }
    }
    for (i, k) in op.remove.iter().enumerate() {
        let p = path.key("remove").idx(i);
        let name = k.to_ascii_lowercase();
        if check_header_name(c, &p, &name, request, true) {
            out.remove.push(name);
        }
    }
    out
}

fn check_header_name(
    c: &mut Checker,
    p: &FieldPath,
    name: &str,
    request: bool,
    remove: bool,
) -> bool {
    if name.is_empty() {
        c.error(p, "header name must not be empty");
        return false;
    }
    if name == "host" || name == ":authority" {
        if !request {
            c.error(p, "the Host header cannot be changed on a response");
            return false;
        }
        if remove {
            c.error(p, "the Host header cannot be removed");
            return false;
        }
        return true;
    }
    if name.starts_with(':') {
        c.error(p, format!("pseudo-header {name:?} cannot be changed"));
        return false;
    }
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        c.error(p, format!("invalid header name {name:?}"));
        return false;
    }
    true
}

/// The Envoy variables gatehouse fills in in header values (`REQ` as `%REQ(name)%`, on
/// request headers). Envoy has more; a value naming another is a warning.
pub const HEADER_VARIABLES: &[&str] = &[
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_REMOTE_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_PORT",
    "REQUESTED_SERVER_NAME",
    "HOSTNAME",
    "PROTOCOL",
    "START_TIME",
    "REQ",
];

/// Istio's `header_value_validator.go`: no control characters; `%` must be `%%` or a
/// well-formed `%VAR(...)%` expression. A variable gatehouse does not fill in is a warning.
fn check_header_value(c: &mut Checker, p: &FieldPath, v: &str) {
    if v.chars().any(|ch| ch.is_control() && ch != '\t') {
        c.error(p, "header value contains control characters");
        return;
    }
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if b.get(i + 1) == Some(&b'%') {
                i += 2;
                continue;
            }
            match v[i + 1..].find('%') {
                Some(end) if end > 0 => {
                    let var = &v[i + 1..i + 1 + end];
                    let name = var.split('(').next().unwrap_or_default();
                    if name.is_empty()
                        || !name.bytes().all(|ch| ch.is_ascii_uppercase() || ch == b'_')
                    {
                        c.error(
                            p,
                            format!("invalid header value variable %{var}%; escape % as %%"),
                        );
                        return;
                    }
                    if !HEADER_VARIABLES.contains(&name) {
                        c.warn(
                            p,
                            format!(
                                "%{var}% is not filled in by gatehouse: it comes out empty (known: {})",
                                HEADER_VARIABLES.join(", ")
                            ),
                        );
                    }
                    i += end + 2;
                }
                _ => {
                    c.error(p, "unterminated % in header value; escape % as %%");
                    return;
                }
            }
        } else {
            i += 1;
        }
    }
}

/// Checks a label selector map.
pub fn parse_labels(c: &mut Checker, path: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        let p = path.key(k);
        if let Err(e) = validate_label_key(k) {
            c.error(&p, e);
        }
        if let Err(e) = validate_label_value(v) {
            c.error(&p, e);
        }
    }
}

/// A weighted L4 destination (TLS and TCP routes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedDestination {
    /// Where to send.
    pub destination: Destination,
    /// Relative weight.
    pub weight: u32,
}

/// `validateRouteDestinations`: weights ≥ 0; several destinations may not all weigh 0.
pub fn parse_weights(c: &mut Checker, path: &FieldPath, weights: &[Option<i64>]) -> Vec<u32> {
    let mut out = Vec::with_capacity(weights.len());
    let mut negative = false;
    for (i, w) in weights.iter().enumerate() {
        let w = w.unwrap_or(0);
        if w < 0 {
            negative = true;
            c.error(
                &path.idx(i).key("weight"),
                format!("weight {w} must not be negative"),
            );
        }
        out.push(u32::try_from(w.max(0)).unwrap_or(u32::MAX));
    }
    if out.len() > 1 && out.iter().all(|w| *w == 0) && !negative {
        c.error(path, "total destination weight is 0");
    }
    // A single destination gets all traffic whatever its weight.
    if out.len() == 1 {
        out[0] = 100;
    }
    out
}

/// `route[]` of a TLS or TCP rule.
pub fn parse_l4_route(
    c: &mut Checker,
    path: &FieldPath,
    route: &[raw::RouteDestination],
) -> Vec<WeightedDestination> {
    if route.is_empty() {
        c.error(path, "route is required");
    }
    let weights = parse_weights(c, path, &route.iter().map(|r| r.weight).collect::<Vec<_>>());
    route
        .iter()
        .zip(weights)
        .enumerate()
        .filter(|(_, (_, w))| *w > 0 || route.len() == 1)
        .filter_map(|(i, (r, w))| {
            let d = Destination::parse(c, &path.idx(i).key("destination"), &r.destination)?;
            Some(WeightedDestination {
                destination: d,
                weight: w,
            })
        })
        .collect()
}
