//! The valid namespaces → one [`GroupSnapshot`] per enabled gateway group, following
//! Istio's gateway merge rules (istio-api.md §3).
//!
//! Contested names (an HTTP host on a port, an SNI name, a TCP port) go to the tenant that
//! held them in the previous snapshot; without one, to the tenant whose object comes first in
//! load order (path order: `tenants/a/` before `tenants/b/`). The loser is reported and its
//! whole configuration falls back to its last good one.

mod clusters;
mod connect;
mod listeners;
mod logs;
mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::diag::{FieldPath, Severity};
use crate::model::{
    Finding, Gateway, GatewayGroup, MeshSettings, Meta, OutboundPolicy, PLATFORM_NAMESPACE,
};
use crate::policy::Found;
use crate::snapshot::{Cluster, GroupSnapshot, Listener};
use crate::world::World;

pub(crate) use clusters::ClusterBuilder;

/// What compiling produced besides the groups.
pub(crate) struct Compiled {
    /// Per group.
    pub groups: BTreeMap<String, GroupSnapshot>,
    /// Who holds each contested name now.
    pub claims: BTreeMap<String, String>,
    /// Findings to report.
    pub findings: Vec<Found>,
    /// Tenants that lost a conflict.
    pub rejected: BTreeSet<String>,
}

/// Compiles every enabled group.
pub(crate) fn compile(
    world: &World<'_>,
    mesh: &MeshSettings,
    prev_claims: Option<&BTreeMap<String, String>>,
) -> Compiled {
    let mut cx = Cx {
        world,
        prev_claims,
        claims: BTreeMap::new(),
        findings: Vec::new(),
        rejected: BTreeSet::new(),
    };
    let mut groups = BTreeMap::new();
    for g in world.groups.iter().filter(|g| g.enabled) {
        let mut clusters = ClusterBuilder::new(g);
        let listeners = listeners::build(&mut cx, g, &mut clusters);
        let connect = connect::build(world, g, &mut clusters);
        let access_logs = logs::build(world, mesh, g);
        let outbound = outbound(world, mesh, g);
        groups.insert(
            g.name.clone(),
            GroupSnapshot {
                group: g.clone(),
                listeners,
                clusters: clusters.finish(),
                access_logs,
                connect,
                outbound,
            },
        );
    }
    Compiled {
        groups,
        claims: cx.claims,
        findings: cx.findings,
        rejected: cx.rejected,
    }
}

/// The policy in force for a group's unregistered destinations, most specific first.
fn outbound(world: &World<'_>, mesh: &MeshSettings, g: &GatewayGroup) -> OutboundPolicy {
    let platform_sidecar = world
        .namespaces
        .get(PLATFORM_NAMESPACE)
        .and_then(|o| o.sidecars.iter().find_map(|s| s.outbound));
    g.outbound
        .or(platform_sidecar)
        .or(mesh.outbound)
        .unwrap_or(OutboundPolicy::RegistryOnly)
}

/// Compile state shared by the passes.
pub(crate) struct Cx<'w, 'a> {
    pub world: &'w World<'a>,
    pub prev_claims: Option<&'w BTreeMap<String, String>>,
    pub claims: BTreeMap<String, String>,
    pub findings: Vec<Found>,
    pub rejected: BTreeSet<String>,
}

/// Who contributed a claim, to report the loser of a conflict.
#[derive(Clone)]
pub(crate) struct Claimant {
    pub namespace: String,
    pub kind: &'static str,
    pub meta: Meta,
    pub path: FieldPath,
}

impl Cx<'_, '_> {
    pub(crate) fn warn(
        &mut self,
        kind: &'static str,
        meta: &Meta,
        path: FieldPath,
        message: String,
    ) {
        self.findings.push(Found {
            kind,
            meta: meta.clone(),
            finding: Finding {
                severity: Severity::Warning,
                path,
                message,
            },
        });
    }

    fn error(&mut self, kind: &'static str, meta: &Meta, path: FieldPath, message: String) {
        self.findings.push(Found {
            kind,
            meta: meta.clone(),
            finding: Finding {
                severity: Severity::Error,
                path,
                message,
            },
        });
    }

    /// Decides a contested name between the current holder and a newcomer. Returns whether
    /// the newcomer may use it. Same-namespace contests follow Istio (first wins, warning);
    /// cross-tenant ones reject the loser's whole configuration.
    pub(crate) fn contest(
        &mut self,
        key: &str,
        what: &str,
        holder: &Claimant,
        newcomer: &Claimant,
    ) -> bool {
        if holder.namespace == newcomer.namespace {
            self.warn(
                newcomer.kind,
                &newcomer.meta,
                newcomer.path.clone(),
                format!(
                    "{what} is already served by {}/{} {}; this one is ignored (first wins)",
                    holder.kind, holder.meta.namespace, holder.meta.name
                ),
            );
            return false;
        }
        let incumbent = self.prev_claims.and_then(|c| c.get(key));
        // The platform never loses a contest; otherwise the previous holder keeps the name.
        let newcomer_wins = newcomer.namespace == PLATFORM_NAMESPACE
            || (holder.namespace != PLATFORM_NAMESPACE && incumbent == Some(&newcomer.namespace));
        let (win, lose) = if newcomer_wins {
            (newcomer, holder)
        } else {
            (holder, newcomer)
        };
        let reason = if win.namespace == PLATFORM_NAMESPACE {
            "the platform's configuration takes precedence"
        } else if incumbent.is_some() {
            "the tenant that held it keeps it"
        } else {
            "the first claimant in repository order keeps it"
        };
        self.error(
            lose.kind,
            &lose.meta,
            lose.path.clone(),
            format!(
                "{what} is already claimed by {:?} ({} {}); {reason}",
                win.namespace, win.kind, win.meta.name
            ),
        );
        self.rejected.insert(lose.namespace.clone());
        newcomer_wins
    }
}

/// `0.0.0.0_18080`.
pub(crate) fn listener_name(addr: &SocketAddr) -> String {
    format!("{}_{}", addr.ip(), addr.port())
}

/// Every Gateway applying to `group`, in load order.
pub(crate) fn gateways_for<'a>(world: &World<'a>, group: &GatewayGroup) -> Vec<&'a Gateway> {
    let mut gws: Vec<&'a Gateway> = world
        .namespaces
        .values()
        .flat_map(|o| o.gateways.iter())
        .filter(|gw| world.groups_of(gw).iter().any(|g| g.name == group.name))
        .collect();
    gws.sort_by_key(|g| g.meta.source.order);
    gws
}

/// Clusters built for a group.
pub(crate) type ClusterMap = BTreeMap<String, Arc<Cluster>>;

/// Listener list.
pub(crate) type Listeners = Vec<Arc<Listener>>;
