//! `gatehouse-sync plan`: what a commit would change, per tenant (routes added, removed,
//! changed) and the errors, without publishing anything.

use std::collections::BTreeMap;
use std::io::Write;

use tenants::snapshot::{ChainAction, ListenerKind, RouteTable};
use tenants::{LoadOptions, Snapshot};

use crate::reconcile::{Plan, short};
use crate::status::TenantState;

/// Per tenant: route key → its compiled form (JSON), for comparison.
pub type Inventory = BTreeMap<String, BTreeMap<String, String>>;

fn table(inv: &mut Inventory, group: &str, addr: &str, t: &RouteTable) {
    for vh in &t.vhosts {
        for r in &vh.routes {
            inv.entry(vh.tenant.to_string()).or_default().insert(
                format!("{group} {addr} http {} {}", vh.name, r.name),
                serde_json::to_string(r).unwrap_or_default(),
            );
        }
    }
}

/// Every route of `s`, by tenant.
pub fn inventory(s: &Snapshot) -> Inventory {
    let mut inv = Inventory::new();
    for (g, gs) in &s.groups {
        for l in &gs.listeners {
            let addr = l.address.to_string();
            match &l.kind {
                ListenerKind::Http(t) => table(&mut inv, g, &addr, t),
                ListenerKind::Tls(chains) => {
                    for ch in chains {
                        match &ch.action {
                            ChainAction::TerminateHttp { routes, .. } => {
                                table(&mut inv, g, &addr, routes);
                            }
                            ChainAction::TerminateTcp { .. } | ChainAction::Passthrough(_) => {
                                let names: Vec<String> =
                                    ch.server_names.iter().map(ToString::to_string).collect();
                                inv.entry(ch.tenant.clone()).or_default().insert(
                                    format!("{g} {addr} tls {} {}", names.join(","), ch.name),
                                    serde_json::to_string(&**ch).unwrap_or_default(),
                                );
                            }
                        }
                    }
                }
                ListenerKind::Tcp(p) => {
                    inv.entry(p.tenant.clone()).or_default().insert(
                        format!("{g} {addr} tcp {}", p.name),
                        serde_json::to_string(&**p).unwrap_or_default(),
                    );
                }
            }
        }
    }
    inv
}

/// The compiled form of the served release.
pub fn served_snapshot(served: Option<&crate::compose::Served>) -> Option<Snapshot> {
    let s = served?;
    let loaded = tenants::load(&s.files, &LoadOptions::default());
    tenants::build(&loaded, &s.manifest.revision, None)
        .ok()
        .map(|o| o.snapshot)
}

/// Prints the plan; returns whether it has errors.
pub fn print(
    plan: &Plan,
    revision: &str,
    before: Option<&Snapshot>,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let comp = match plan {
        Plan::Refuse { reason, errors } => {
            writeln!(out, "commit {}: REFUSED: {reason}", short(revision))?;
            for e in errors.iter().filter(|d| d.is_error()) {
                writeln!(out, "  {e}")?;
            }
            return Ok(true);
        }
        Plan::Compose(c) => c,
    };
    let old = before.map(inventory).unwrap_or_default();
    let new = inventory(&comp.snapshot);
    writeln!(out, "commit {}:", short(revision))?;
    for w in &comp.platform_warnings {
        writeln!(out, "  {w}")?;
    }
    let mut errors = false;
    let empty = BTreeMap::new();
    for (t, o) in &comp.tenants {
        let state = match o.state {
            TenantState::Applied => "would apply".to_string(),
            TenantState::LastGood => format!(
                "has errors; keeps its last good configuration ({})",
                o.entry
                    .as_ref()
                    .map_or_else(|| "-".into(), |e| short(&e.revision))
            ),
            TenantState::Refused => "has errors; nothing would be served".into(),
            TenantState::Suspended => "suspended; unchanged".into(),
        };
        let a = old.get(t).unwrap_or(&empty);
        let b = new.get(t).unwrap_or(&empty);
        let added: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
        let removed: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).collect();
        let changed: Vec<&String> = b
            .iter()
            .filter(|(k, v)| a.get(*k).is_some_and(|old| old != *v))
            .map(|(k, _)| k)
            .collect();
        writeln!(
            out,
            "{t}: {state}: {} added, {} removed, {} changed",
            added.len(),
            removed.len(),
            changed.len()
        )?;
        for k in added {
            writeln!(out, "  + {k}")?;
        }
        for k in removed {
            writeln!(out, "  - {k}")?;
        }
        for k in changed {
            writeln!(out, "  ~ {k}")?;
        }
        for d in &o.diagnostics {
            errors |= d.is_error();
            writeln!(out, "  {d}")?;
        }
    }
    // Tenants that disappear entirely.
    for t in old.keys().filter(|t| !comp.tenants.contains_key(*t)) {
        writeln!(out, "{t}: removed: {} routes removed", old[t].len())?;
    }
    Ok(errors)
}
