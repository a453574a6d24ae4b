//! Loaded repository → served configuration, tenant by tenant.
//!
//! A tenant whose manifests have any error keeps its last good configuration; the others
//! move on. A broken platform (gatehouse.yaml, platform/) refuses the whole revision.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::compile;
use crate::diag::{Diagnostic, has_errors};
use crate::load::{Loaded, Objects};
use crate::model::{
    GatewayGroup, MeshSettings, OutboundPolicy, PLATFORM_NAMESPACE, Quotas, TenantDef,
};
use crate::policy::{self, Found};
use crate::snapshot::{Snapshot, TenantState, TenantStatus};
use crate::world::World;

/// What is being served, per namespace: the input for the next build's "last good".
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// The platform's objects.
    pub platform: Arc<Objects>,
    /// Each served tenant's objects and the revision they came from.
    pub tenants: BTreeMap<String, AcceptedTenant>,
    /// Who holds each contested name.
    pub claims: BTreeMap<String, String>,
}

/// A tenant's accepted configuration.
#[derive(Debug, Clone)]
pub struct AcceptedTenant {
    /// Its objects.
    pub objects: Arc<Objects>,
    /// The revision they came from.
    pub revision: String,
}

/// A successful build.
#[derive(Debug)]
pub struct Output {
    /// The snapshot to serve.
    pub snapshot: Snapshot,
    /// What is served, for the next build.
    pub accepted: Accepted,
    /// Every finding, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Why nothing could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The platform configuration has errors: the revision is refused as a whole.
    #[error(
        "the platform configuration (gatehouse.yaml, platform/) has errors; the revision is refused"
    )]
    Platform {
        /// Every finding, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Builds the snapshot for `revision` from `loaded`, falling back per tenant to `prev`.
pub fn build(
    loaded: &Loaded,
    revision: &str,
    prev: Option<&Accepted>,
) -> Result<Output, BuildError> {
    let platform = &loaded.platform.objects;
    let mut diagnostics: Vec<Diagnostic> = loaded.platform.diagnostics.clone();
    diagnostics.extend(locate(loaded, policy::check_platform(platform)));
    if has_errors(&diagnostics) {
        for ns in loaded.tenants.values() {
            diagnostics.extend(ns.diagnostics.iter().cloned());
        }
        sort(&mut diagnostics);
        return Err(BuildError::Platform { diagnostics });
    }
    let (groups, mesh): (&[GatewayGroup], MeshSettings) = match platform.operators.first() {
        Some(op) => (&op.groups, op.mesh.clone()),
        None => (&[], MeshSettings::default()),
    };
    let defs: BTreeMap<&str, &TenantDef> = platform
        .tenants
        .iter()
        .map(|t| (t.meta.name.as_str(), t))
        .collect();
    let mut names: BTreeSet<String> = loaded.tenants.keys().cloned().collect();
    names.extend(defs.keys().map(|s| s.to_string()));
    let last = |t: &str| prev.and_then(|p| p.tenants.get(t));

    let mut per_tenant: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
    let mut candidate: BTreeMap<String, Arc<Objects>> = BTreeMap::new();
    let mut effective: BTreeMap<String, Arc<Objects>> = BTreeMap::new();
    for t in &names {
        let ns = loaded.tenants.get(t);
        let diags = per_tenant.entry(t.clone()).or_default();
        if let Some(ns) = ns {
            diags.extend(ns.diagnostics.iter().cloned());
        }
        if !defs.contains_key(t.as_str()) {
            // Not (or no longer) registered: nothing of it is served.
            if let Some(ns) = ns {
                let none = World {
                    groups,
                    tenant_defs: defs.clone(),
                    namespaces: BTreeMap::new(),
                };
                diags.extend(locate(
                    loaded,
                    policy::check_tenant(None, t, &ns.objects, &none),
                ));
            }
            continue;
        }
        match ns {
            Some(ns) if !ns.has_errors() => {
                let objs = ns.objects.clone();
                candidate.insert(t.clone(), objs.clone());
                effective.insert(t.clone(), objs);
            }
            Some(_) => {
                if let Some(l) = last(t) {
                    effective.insert(t.clone(), l.objects.clone());
                }
            }
            None => {
                let empty = Arc::new(Objects::default());
                candidate.insert(t.clone(), empty.clone());
                effective.insert(t.clone(), empty);
            }
        }
    }

    let platform_arc = loaded.platform.objects.clone();
    let mut rejected: BTreeSet<String> = BTreeSet::new();
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    let mut policy_findings: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    let compiled = loop {
        let world = world(groups, &defs, &platform_arc, &effective);
        // Per-tenant rules against the current world; a rejection changes the world, so repeat.
        let mut changed = false;
        for (t, objs) in &candidate {
            if rejected.contains(t) {
                continue;
            }
            let found = policy::check_tenant(defs.get(t.as_str()).copied(), t, objs, &world);
            let bad = found
                .iter()
                .any(|f| f.finding.severity == crate::diag::Severity::Error);
            policy_findings.insert(t.clone(), found);
            if bad {
                rejected.insert(t.clone());
                changed = true;
            }
        }
        if changed {
            for t in &rejected {
                match last(t) {
                    Some(l) => effective.insert(t.clone(), l.objects.clone()),
                    None => effective.remove(t),
                };
            }
            continue;
        }
        let compiled = compile::compile(&world, &mesh, prev.map(|p| &p.claims));
        if compiled.rejected.is_empty() {
            break compiled;
        }
        for t in &compiled.rejected {
            if candidate.contains_key(t) && !rejected.contains(t) && !dropped.contains(t) {
                rejected.insert(t.clone());
                policy_findings.entry(t.clone()).or_default().extend(
                    compiled
                        .findings
                        .iter()
                        .filter(|f| f.meta.namespace == *t)
                        .map(clone_found),
                );
                match last(t) {
                    Some(l) => effective.insert(t.clone(), l.objects.clone()),
                    None => effective.remove(t),
                };
            } else {
                // Its last good configuration conflicts too (the platform changed under it):
                // serve nothing of it rather than something half-merged.
                policy_findings.entry(t.clone()).or_default().extend(
                    compiled
                        .findings
                        .iter()
                        .filter(|f| f.meta.namespace == *t)
                        .map(clone_found),
                );
                dropped.insert(t.clone());
                effective.remove(t);
            }
        }
    };

    for (t, found) in policy_findings {
        per_tenant
            .entry(t)
            .or_default()
            .extend(locate(loaded, found));
    }
    let mut compile_diags: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
    for f in compiled
        .findings
        .iter()
        .filter(|f| f.finding.severity == crate::diag::Severity::Warning)
    {
        let ns = f.meta.namespace.clone();
        compile_diags
            .entry(ns)
            .or_default()
            .extend(locate(loaded, vec![clone_found(f)]));
    }
    for (ns, d) in compile_diags {
        if ns == PLATFORM_NAMESPACE {
            diagnostics.extend(d);
        } else {
            per_tenant.entry(ns).or_default().extend(d);
        }
    }

    let mut tenants = BTreeMap::new();
    let mut accepted_tenants = BTreeMap::new();
    for t in &names {
        let Some(def) = defs.get(t.as_str()) else {
            let mut d = per_tenant.remove(t).unwrap_or_default();
            sort(&mut d);
            dedup(&mut d);
            diagnostics.extend(d.iter().cloned());
            if !d.is_empty() {
                tenants.insert(
                    t.clone(),
                    status(
                        TenantState::Refused,
                        None,
                        revision,
                        Quotas::default(),
                        None,
                        d,
                    ),
                );
            }
            continue;
        };
        let mut d = per_tenant.remove(t).unwrap_or_default();
        sort(&mut d);
        dedup(&mut d);
        diagnostics.extend(d.iter().cloned());
        let served = effective.get(t);
        let ok = candidate.contains_key(t) && !rejected.contains(t) && !dropped.contains(t);
        let (state, applied) = if ok {
            (TenantState::Applied, Some(revision.to_string()))
        } else if let (Some(l), false) = (last(t), dropped.contains(t)) {
            (TenantState::LastGood, Some(l.revision.clone()))
        } else {
            (TenantState::Refused, None)
        };
        if let (Some(objs), Some(rev)) = (served, &applied) {
            accepted_tenants.insert(
                t.clone(),
                AcceptedTenant {
                    objects: objs.clone(),
                    revision: rev.clone(),
                },
            );
        }
        let outbound = served.and_then(|o| o.sidecars.iter().find_map(|s| s.outbound));
        tenants.insert(
            t.clone(),
            status(state, applied, revision, def.quotas.clone(), outbound, d),
        );
    }
    sort(&mut diagnostics);
    dedup(&mut diagnostics);
    let snapshot = Snapshot {
        revision: revision.to_string(),
        groups: compiled.groups,
        tenants,
        mesh,
        claims: compiled.claims.clone(),
    };
    Ok(Output {
        snapshot,
        accepted: Accepted {
            platform: platform_arc,
            tenants: accepted_tenants,
            claims: compiled.claims,
        },
        diagnostics,
    })
}

fn world<'a>(
    groups: &'a [GatewayGroup],
    defs: &BTreeMap<&'a str, &'a TenantDef>,
    platform: &'a Objects,
    effective: &'a BTreeMap<String, Arc<Objects>>,
) -> World<'a> {
    let mut namespaces: BTreeMap<&'a str, &'a Objects> = BTreeMap::new();
    namespaces.insert(PLATFORM_NAMESPACE, platform);
    for (t, o) in effective {
        namespaces.insert(t.as_str(), o.as_ref());
    }
    World {
        groups,
        tenant_defs: defs.clone(),
        namespaces,
    }
}

fn status(
    state: TenantState,
    applied: Option<String>,
    revision: &str,
    quotas: Quotas,
    outbound: Option<OutboundPolicy>,
    diagnostics: Vec<Diagnostic>,
) -> TenantStatus {
    TenantStatus {
        state,
        applied_revision: applied,
        attempted_revision: revision.to_string(),
        quotas,
        outbound,
        diagnostics,
    }
}

fn clone_found(f: &Found) -> Found {
    Found {
        kind: f.kind,
        meta: f.meta.clone(),
        finding: f.finding.clone(),
    }
}

fn locate(loaded: &Loaded, found: Vec<Found>) -> Vec<Diagnostic> {
    found
        .into_iter()
        .map(|f| loaded.diagnostic(&f.meta, f.kind, f.finding))
        .collect()
}

fn sort(d: &mut [Diagnostic]) {
    d.sort_by(|a, b| {
        (&a.file, a.pos, &a.field, &a.message).cmp(&(&b.file, b.pos, &b.field, &b.message))
    });
}

fn dedup(d: &mut Vec<Diagnostic>) {
    d.dedup();
}
