//! `Sidecar`: only `outboundTrafficPolicy` means something to a gateway (egress allowlist).

use serde::Serialize;

use super::{Checker, Meta, PLATFORM_NAMESPACE};
use crate::diag::FieldPath;
use crate::raw;

/// `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    /// Only hosts a ServiceEntry declares are reachable.
    RegistryOnly,
    /// Any host is reachable.
    AllowAny,
}

/// A validated Sidecar.
#[derive(Debug, Clone, Serialize)]
pub struct Sidecar {
    /// Identity.
    pub meta: Meta,
    /// `outboundTrafficPolicy.mode`, when set.
    pub outbound: Option<OutboundPolicy>,
}

/// Parses `REGISTRY_ONLY` / `ALLOW_ANY`.
pub fn parse_outbound(
    c: &mut Checker,
    p: &FieldPath,
    v: &Option<String>,
) -> Option<OutboundPolicy> {
    v.as_ref()?;
    c.enumeration(
        p,
        v,
        &[
            ("REGISTRY_ONLY", OutboundPolicy::RegistryOnly),
            ("ALLOW_ANY", OutboundPolicy::AllowAny),
        ],
        OutboundPolicy::RegistryOnly,
    )
}

// === impl Sidecar ===

impl Sidecar {
    /// Parses a Sidecar; the sidecar-only parts are reported as having no effect.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::SidecarSpec) -> Self {
        let sp = FieldPath::root().key("spec");
        c.mesh_only(
            &sp.key("egress"),
            spec.egress.is_some(),
            "sidecar egress listeners",
        );
        c.mesh_only(
            &sp.key("ingress"),
            spec.ingress.is_some(),
            "sidecar ingress listeners",
        );
        c.mesh_only(
            &sp.key("workloadSelector"),
            spec.workload_selector.is_some(),
            "the policy applies to the tenant's egress traffic",
        );
        c.mesh_only(
            &sp.key("inboundConnectionPool"),
            spec.inbound_connection_pool.is_some(),
            "sidecar inbound pool",
        );
        let outbound = spec.outbound_traffic_policy.as_ref().and_then(|o| {
            let op = sp.key("outboundTrafficPolicy");
            c.unsupported(&op.key("egressProxy"), &o.egress_proxy);
            let mode = parse_outbound(c, &op.key("mode"), &o.mode);
            if mode == Some(OutboundPolicy::AllowAny) && meta.namespace != PLATFORM_NAMESPACE {
                c.warn(
                    &op.key("mode"),
                    "a tenant's ALLOW_ANY does not open the egress gateway: an unregistered \
                     destination belongs to no tenant, so only the platform allows it (a Sidecar \
                     under platform/, meshConfig.outboundTrafficPolicy, or the group's \
                     appliance.outboundTrafficPolicy); declare the host with a ServiceEntry",
                );
            }
            mode
        });
        Self { meta, outbound }
    }
}
