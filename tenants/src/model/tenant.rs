//! `Tenant` (gatehouse.dev/v1): what a team may claim, declared by the platform.

use serde::Serialize;

use super::{Checker, Meta};
use crate::diag::FieldPath;
use crate::raw;
use crate::types::{Host, is_dns1123_label};

/// Per-tenant limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Quotas {
    /// Concurrent downstream connections.
    pub max_connections: Option<u32>,
    /// Requests per second (token bucket, burst = one second).
    pub requests_per_second: Option<u32>,
    /// Compiled HTTP routes.
    pub max_routes: Option<u32>,
}

/// A validated Tenant entry.
#[derive(Debug, Clone, Serialize)]
pub struct TenantDef {
    /// Identity; the name is the tenant (and namespace, and folder under `tenants/`).
    pub meta: Meta,
    /// Hosts the tenant may claim.
    pub hosts: Vec<Host>,
    /// Groups the tenant may attach to.
    pub gateways: Vec<String>,
    /// TCP ports the tenant may own.
    pub tcp_ports: Vec<u16>,
    /// Limits.
    pub quotas: Quotas,
    /// Public keys allowed to sign changes under `tenants/<name>/`.
    pub signers: Vec<String>,
}

// === impl TenantDef ===

impl TenantDef {
    /// Parses a Tenant.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::TenantSpec) -> Self {
        let sp = FieldPath::root().key("spec");
        if !is_dns1123_label(&meta.name) || meta.name == super::PLATFORM_NAMESPACE {
            c.error(
                &FieldPath::root().key("metadata").key("name"),
                format!(
                    "tenant name {:?} must be a DNS-1123 label other than istio-system",
                    meta.name
                ),
            );
        }
        let mut hosts = Vec::new();
        for (i, h) in spec.hosts.iter().enumerate() {
            match Host::parse_gateway_host(h) {
                Ok(h) => hosts.push(h),
                Err(e) => c.error(&sp.key("hosts").idx(i), e.to_string()),
            }
        }
        let mut tcp_ports = Vec::new();
        for (i, p) in spec.tcp_ports.iter().enumerate() {
            if let Some(p) = c.port(&sp.key("tcpPorts").idx(i), *p) {
                tcp_ports.push(p);
            }
        }
        let quotas = match &spec.quotas {
            None => Quotas::default(),
            Some(q) => {
                let qp = sp.key("quotas");
                let pos = |c: &mut Checker, f: &str, v: Option<i64>| -> Option<u32> {
                    match v {
                        Some(n) if n <= 0 => {
                            c.error(&qp.key(f), format!("{f} must be positive"));
                            None
                        }
                        other => c.count(&qp.key(f), other),
                    }
                };
                Quotas {
                    max_connections: pos(c, "maxConnections", q.max_connections),
                    requests_per_second: pos(c, "requestsPerSecond", q.requests_per_second),
                    max_routes: pos(c, "maxRoutes", q.max_routes),
                }
            }
        };
        for (i, s) in spec.signers.iter().enumerate() {
            let ok = s.starts_with("ssh-")
                || s.starts_with("ecdsa-sha2-")
                || s.starts_with("sk-")
                || s.contains("BEGIN PGP PUBLIC KEY BLOCK")
                || (s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                c.error(
                    &sp.key("signers").idx(i),
                    "signer must be an SSH public key (ssh-ed25519 AAAA...), an OpenPGP key fingerprint or an armored public key",
                );
            }
        }
        Self {
            meta,
            hosts,
            gateways: spec.gateways.clone(),
            tcp_ports,
            quotas,
            signers: spec.signers.clone(),
        }
    }

    /// Whether the tenant may claim `host` (a concrete name or a wildcard).
    pub fn may_claim(&self, host: &Host) -> bool {
        self.hosts.iter().any(|allowed| host.subset_of(allowed))
    }
}
