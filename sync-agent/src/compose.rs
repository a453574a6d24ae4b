//! Composing a release: the platform files and valid tenants at the new commit, tenants
//! with errors at their last good files (taken from the served release), checked with the
//! `tenants` crate exactly as the appliance will load it.
//!
//! Guards: a broken platform refuses the whole commit; a tenant whose folder became empty
//! while it is still registered keeps its last good files (only removing its Tenant entry
//! retires it); conflicts between tenants go to the incumbent (`tenants::build` with the
//! served release's claims); the composed tree must build without a single tenant error, so
//! the appliance can never refuse what is published for a reason the agent could see.

use std::collections::{BTreeMap, BTreeSet};

use tenants::snapshot::TenantState as BuildState;
use tenants::{Accepted, BuildError, Diagnostic, LoadOptions, Pos, Severity, Snapshot, SourceFile};

use crate::release::{Manifest, TenantEntry};
use crate::status::TenantState;
use crate::tree::Parts;

/// The served release, as composition needs it.
#[derive(Debug, Clone)]
pub struct Served {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its files.
    pub files: Vec<SourceFile>,
}

/// What happened to one tenant.
#[derive(Debug, Clone)]
pub struct TenantOutcome {
    /// Applied at the new commit, kept at last good, refused, or suspended.
    pub state: TenantState,
    /// Where its files in the composed release come from (`None`: not served).
    pub entry: Option<TenantEntry>,
    /// Errors and warnings of the attempted revision.
    pub diagnostics: Vec<Diagnostic>,
}

/// A composed release, not yet written.
#[derive(Debug)]
pub struct Composition {
    /// The commit.
    pub revision: String,
    /// Identity of the platform part.
    pub platform_id: String,
    /// Every file of the release.
    pub files: Vec<SourceFile>,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantOutcome>,
    /// Warnings about the platform part.
    pub platform_warnings: Vec<Diagnostic>,
    /// The compiled release (what the appliance will serve), for plans.
    pub snapshot: Snapshot,
}

/// Why nothing can be composed from the commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// gatehouse.yaml or platform/ has errors: the whole commit is refused.
    #[error("gatehouse.yaml or platform/ has {} errors; the whole commit is refused", .0.iter().filter(|d| d.is_error()).count())]
    Platform(Vec<Diagnostic>),
    /// The composed tree still has errors after falling back (should not happen).
    #[error("the composed release does not build cleanly: {0}")]
    Inconsistent(String),
}

// === impl Composition ===

impl Composition {
    /// The manifest entries of the composed release.
    pub fn entries(&self) -> BTreeMap<String, TenantEntry> {
        self.tenants
            .iter()
            .filter_map(|(t, o)| o.entry.clone().map(|e| (t.clone(), e)))
            .collect()
    }

    /// Whether it serves exactly what `m` serves.
    pub fn same_as(&self, m: &Manifest) -> bool {
        let entries = self.entries();
        m.platform == self.platform_id
            && m.tenants.len() == entries.len()
            && entries
                .iter()
                .all(|(t, e)| m.tenants.get(t).is_some_and(|o| o.tree == e.tree))
    }
}

fn split(files: &[SourceFile]) -> BTreeMap<String, Vec<SourceFile>> {
    let mut out: BTreeMap<String, Vec<SourceFile>> = BTreeMap::new();
    for f in files {
        if let Some(rest) = f.path.strip_prefix("tenants/")
            && let Some((t, _)) = rest.split_once('/')
        {
            out.entry(t.to_string()).or_default().push(f.clone());
        }
    }
    out
}

fn object_count(o: &tenants::Objects) -> usize {
    o.gateways.len()
        + o.virtual_services.len()
        + o.destination_rules.len()
        + o.service_entries.len()
        + o.workload_entries.len()
        + o.sidecars.len()
        + o.telemetries.len()
}

fn accepted(served: Option<&Served>) -> Option<Accepted> {
    let s = served?;
    let loaded = tenants::load(&s.files, &LoadOptions::default());
    tenants::build(&loaded, &s.manifest.revision, None)
        .ok()
        .map(|o| o.accepted)
}

/// Composes the release for commit `c`.
pub fn compose(
    c: &Parts,
    served: Option<&Served>,
    suspended: &BTreeSet<String>,
) -> Result<Composition, ComposeError> {
    let opts = LoadOptions::default();
    let prev = accepted(served);
    let served_files = served.map(|s| split(&s.files)).unwrap_or_default();
    let served_entry = |t: &str| served.and_then(|s| s.manifest.tenants.get(t).cloned());
    let new_entry = |t: &str| TenantEntry {
        revision: c.commit.clone(),
        tree: c.tenant_trees.get(t).cloned().unwrap_or_else(|| "-".into()),
    };

    // First look at the commit as it is, to know who is registered and who emptied out.
    let mut all: Vec<SourceFile> = c.platform.clone();
    all.extend(c.tenants.values().flatten().cloned());
    let loaded = tenants::load(&all, &opts);
    let registered: BTreeSet<String> = loaded
        .platform
        .objects
        .tenants
        .iter()
        .map(|t| t.meta.name.clone())
        .collect();

    // Tenants kept at their served files before validation, with the reason.
    let mut forced: BTreeMap<String, (TenantState, Vec<Diagnostic>)> = BTreeMap::new();
    for t in suspended {
        forced.insert(t.clone(), (TenantState::Suspended, Vec::new()));
    }
    for t in &registered {
        let had = served_files.get(t).is_some_and(|f| !f.is_empty());
        let now = loaded
            .tenants
            .get(t)
            .map_or(0, |ns| object_count(&ns.objects) + ns.diagnostics.len());
        if had && now == 0 && !forced.contains_key(t) {
            let d = Diagnostic {
                severity: Severity::Error,
                file: format!("tenants/{t}/"),
                pos: Pos { line: 1, col: 1 },
                namespace: t.clone(),
                object: None,
                field: String::new(),
                message: format!(
                    "the folder is missing or empty, but tenant {t} is still registered in gatehouse.yaml; keeping its last good configuration (remove its Tenant entry to retire it)"
                ),
            };
            forced.insert(t.clone(), (TenantState::LastGood, vec![d]));
        }
    }

    let candidate = |kept: &BTreeMap<String, (TenantState, Vec<Diagnostic>)>| {
        let mut files = c.platform.clone();
        let names: BTreeSet<&String> = c.tenants.keys().chain(served_files.keys()).collect();
        for t in names {
            if kept.contains_key(t) {
                files.extend(served_files.get(t).into_iter().flatten().cloned());
            } else if registered.contains(t) {
                files.extend(c.tenants.get(t).into_iter().flatten().cloned());
            } else if c.tenants.contains_key(t) {
                // Not registered: loaded so that its status explains why nothing is served.
                files.extend(c.tenants.get(t).into_iter().flatten().cloned());
            }
        }
        files
    };

    let files = candidate(&forced);
    let loaded = tenants::load(&files, &opts);
    let out = match tenants::build(&loaded, &c.commit, prev.as_ref()) {
        Ok(o) => o,
        Err(BuildError::Platform { diagnostics }) => {
            return Err(ComposeError::Platform(diagnostics));
        }
        Err(e) => return Err(ComposeError::Inconsistent(e.to_string())),
    };
    let platform_warnings: Vec<Diagnostic> = out
        .diagnostics
        .iter()
        .filter(|d| d.namespace == tenants::model::PLATFORM_NAMESPACE)
        .cloned()
        .collect();

    let mut outcomes: BTreeMap<String, TenantOutcome> = BTreeMap::new();
    for (t, st) in &out.snapshot.tenants {
        let (state, entry) = if let Some((s, _)) = forced.get(t) {
            (s.clone(), served_entry(t))
        } else if !registered.contains(t) {
            (TenantState::Refused, None)
        } else {
            match st.state {
                BuildState::Applied => (TenantState::Applied, Some(new_entry(t))),
                BuildState::LastGood => (TenantState::LastGood, served_entry(t)),
                BuildState::Refused => (TenantState::Refused, None),
            }
        };
        let mut diagnostics = forced.get(t).map(|(_, d)| d.clone()).unwrap_or_default();
        diagnostics.extend(st.diagnostics.iter().cloned());
        outcomes.insert(
            t.clone(),
            TenantOutcome {
                state,
                entry,
                diagnostics,
            },
        );
    }

    // Compose, then prove the composition builds cleanly; a tenant that does not (its last
    // good files against the new platform, say) falls back once more.
    let mut kept: BTreeMap<String, (TenantState, Vec<Diagnostic>)> = outcomes
        .iter()
        .filter(|(_, o)| o.state != TenantState::Applied)
        .map(|(t, o)| (t.clone(), (o.state.clone(), Vec::new())))
        .collect();
    for _round in 0..4 {
        let mut files = c.platform.clone();
        for (t, o) in &outcomes {
            if o.entry.is_none() {
                continue;
            }
            if kept.contains_key(t) {
                files.extend(served_files.get(t).into_iter().flatten().cloned());
            } else {
                files.extend(c.tenants.get(t).into_iter().flatten().cloned());
            }
        }
        let loaded = tenants::load(&files, &opts);
        let built = tenants::build(&loaded, &c.commit, prev.as_ref())
            .map_err(|e| ComposeError::Inconsistent(e.to_string()))?;
        let bad: Vec<(String, Vec<Diagnostic>)> = built
            .snapshot
            .tenants
            .iter()
            .filter(|(t, _)| outcomes.get(*t).is_some_and(|o| o.entry.is_some()))
            .filter(|(_, s)| s.diagnostics.iter().any(Diagnostic::is_error))
            .map(|(t, s)| (t.clone(), s.diagnostics.clone()))
            .collect();
        if bad.is_empty() {
            return Ok(Composition {
                revision: c.commit.clone(),
                platform_id: c.platform_id.clone(),
                files,
                tenants: outcomes,
                platform_warnings,
                snapshot: built.snapshot,
            });
        }
        for (t, diags) in bad {
            let Some(o) = outcomes.get_mut(&t) else {
                continue;
            };
            if kept.contains_key(&t) {
                // Its last good files fail too: serve nothing of it rather than half of it.
                o.state = TenantState::Refused;
                o.entry = None;
            } else {
                o.state = if served_entry(&t).is_some() {
                    TenantState::LastGood
                } else {
                    TenantState::Refused
                };
                o.entry = served_entry(&t);
                kept.insert(t.clone(), (o.state.clone(), Vec::new()));
            }
            o.diagnostics.extend(diags);
        }
    }
    Err(ComposeError::Inconsistent(
        "tenants kept failing after falling back to their last good configuration".into(),
    ))
}

#[cfg(test)]
mod tests;
