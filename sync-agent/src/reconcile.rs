//! One reconcile: the desired state (the fetched commit) against the applied state (the
//! served release) gives an [`Action`]: publish a new release, nothing to do, or refuse the
//! commit as a whole. Publishing writes the release, swaps `current`, tells the appliances,
//! and rolls `current` back if one refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;

use git2::{Oid, Repository};
use tenants::{Diagnostic, LoadOptions};

use crate::compose::{self, ComposeError, Composition, Served};
use crate::config::{Settings, VerifyMode};
use crate::notify;
use crate::release::{Manifest, ReleaseError, Releases};
use crate::source::isolate::Source;
use crate::source::{FetchError, Fetched};
use crate::state::State;
use crate::status::{
    ApplianceStatus, CommitRefusal, Finding, Status, TenantState, TenantStatus, now,
};
use crate::tree::{self, Parts, TreeError};
use crate::verify::{self, Changes, TrustStore, VerifyError};

/// What a reconcile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new release serves the commit.
    Published {
        /// Release id.
        release: String,
        /// Commit.
        revision: String,
    },
    /// The served release already has this content.
    UpToDate {
        /// Commit.
        revision: String,
    },
    /// The commit was refused as a whole; the served release stays.
    Refused {
        /// Commit.
        revision: String,
        /// Why.
        reason: String,
    },
    /// The agent is suspended.
    Suspended,
}

/// Why a reconcile could not finish (retried with backoff).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fetching failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The fetched commit could not be read.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The releases folder failed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The trust store could not be read.
    #[error("{0}")]
    Trust(VerifyError),
    /// The bare repository could not be opened.
    #[error("repository: {0}")]
    Repo(String),
}

/// What the agent works with.
#[derive(Debug)]
pub struct Context {
    /// Settings.
    pub settings: Settings,
    /// The fetcher.
    pub source: Source,
    /// The releases folder.
    pub releases: Releases,
}

/// The decision for one commit.
#[derive(Debug)]
pub enum Plan {
    /// Serve this composition.
    Compose(Box<Composition>),
    /// Refuse the commit.
    Refuse {
        /// Why.
        reason: String,
        /// Platform findings, when that is why.
        errors: Vec<Diagnostic>,
    },
}

/// The served release with its files.
pub fn served(releases: &Releases) -> Option<Served> {
    let manifest = releases.current()?;
    let files = releases.files(&manifest.id).ok()?;
    Some(Served { manifest, files })
}

fn signers(files: &[tenants::SourceFile]) -> BTreeMap<String, Vec<String>> {
    let platform: Vec<tenants::SourceFile> = files
        .iter()
        .filter(|f| !f.path.starts_with("tenants/"))
        .cloned()
        .collect();
    tenants::load(&platform, &LoadOptions::default())
        .platform
        .objects
        .tenants
        .iter()
        .map(|t| (t.meta.name.clone(), t.signers.clone()))
        .collect()
}

/// What `parts` changes relative to `served`.
pub fn changes(parts: &Parts, served: Option<&Manifest>) -> Changes {
    let Some(m) = served else {
        return Changes {
            platform: true,
            tenants: parts.tenant_trees.keys().cloned().collect(),
        };
    };
    let names: BTreeSet<&String> = parts.tenant_trees.keys().chain(m.tenants.keys()).collect();
    Changes {
        platform: m.platform != parts.platform_id,
        tenants: names
            .into_iter()
            .filter(|t| parts.tenant_trees.get(*t) != m.tenants.get(*t).map(|e| &e.tree))
            .cloned()
            .collect(),
    }
}

/// Whether moving from `served` to `new` rewinds the branch.
fn rewind(repo: &Repository, state: &State, served: &str, new: &str) -> bool {
    if served == new {
        return false;
    }
    let pos = |r: &str| state.applied.iter().position(|a| a == r);
    if let (Some(s), Some(n)) = (pos(served), pos(new))
        && n < s
    {
        return true;
    }
    let (Ok(s), Ok(n)) = (Oid::from_str(served), Oid::from_str(new)) else {
        return false;
    };
    if repo.graph_descendant_of(s, n).unwrap_or(false) {
        return true;
    }
    match (repo.find_commit(s), repo.find_commit(n)) {
        (Ok(sc), Ok(nc)) => nc.committer().when().seconds() < sc.committer().when().seconds(),
        _ => false,
    }
}

/// Decides what to do with the fetched commit.
pub fn reconcile(
    settings: &Settings,
    repo: &Repository,
    fetched: &Fetched,
    served: Option<&Served>,
    state: &State,
) -> Result<Plan, Error> {
    let refuse = |reason: String| {
        Ok(Plan::Refuse {
            reason,
            errors: Vec::new(),
        })
    };
    if let Some(why) = state.refused.get(&fetched.commit) {
        return refuse(format!("{why} (not retried until the reference moves)"));
    }
    if let Some(s) = served
        && settings.source.selector.guards_rewind()
        && !settings.allow_rewind
        && rewind(repo, state, &s.manifest.revision, &fetched.commit)
    {
        return refuse(format!(
            "{} moved back from {} to the older commit {}; refusing a rewind (push a revert instead; allow_rewind accepts rewinds)",
            fetched.chosen.label,
            short(&s.manifest.revision),
            short(&fetched.commit)
        ));
    }
    let id = Oid::from_str(&fetched.commit).map_err(|e| Error::Repo(e.message().to_string()))?;
    let parts = tree::read(repo, id)?;
    if settings.verify != VerifyMode::Off {
        let store = TrustStore::load(&settings.trusted_keys).map_err(Error::Trust)?;
        let verified = match (settings.verify, &fetched.tag) {
            (VerifyMode::Tag, Some(tag)) => {
                let tag = Oid::from_str(tag).map_err(|e| Error::Repo(e.message().to_string()))?;
                verify::tag(repo, tag, &store)
            }
            (VerifyMode::Tag, None) => Err(VerifyError::Unsigned {
                what: "tag",
                id: format!(
                    "{} (a lightweight tag cannot carry a signature)",
                    fetched.chosen.label
                ),
            }),
            _ => verify::commit(repo, id, &store),
        };
        let verified = match verified {
            Ok(v) => v,
            Err(e) => return refuse(e.to_string()),
        };
        let ch = changes(&parts, served.map(|s| &s.manifest));
        let old = served.map(|s| signers(&s.files)).unwrap_or_default();
        let new = signers(&parts.platform);
        if let Err(e) = verify::authorize(&verified, &ch, &old, &new) {
            return refuse(e.to_string());
        }
    }
    match compose::compose(&parts, served, &state.suspended_tenants) {
        Ok(c) => Ok(Plan::Compose(Box::new(c))),
        Err(ComposeError::Platform(errors)) => Ok(Plan::Refuse {
            reason: "gatehouse.yaml or platform/ has errors; the whole commit is refused".into(),
            errors,
        }),
        Err(e) => refuse(e.to_string()),
    }
}

/// First 12 characters of a commit id.
pub fn short(rev: &str) -> String {
    rev.chars().take(12).collect()
}

/// Fetches, reconciles and publishes once; updates `status` either way.
pub fn run_once(ctx: &Context, status: &mut Status, cancel: &AtomicBool) -> Result<Action, Error> {
    let mut state = State::read(ctx.releases.dir());
    status.version = 1;
    status.suspended.clone_from(&state.suspended);
    status.source.url = crate::source::url::redact(&ctx.settings.source.url);
    status.source.reference = ctx.settings.source.selector.describe();
    let cur = served(&ctx.releases);
    status.release = cur.as_ref().map(|s| s.manifest.id.clone());
    status.revision = cur.as_ref().map(|s| s.manifest.revision.clone());
    if state.suspended.is_some() {
        return Ok(Action::Suspended);
    }
    status.source.last_fetch = Some(now());
    let req = ctx.source.request(None);
    let fetched = match ctx.source.fetch(&req, cancel) {
        Ok(f) => f,
        Err(e) => {
            status.source.error = Some(e.to_string());
            return Err(e.into());
        }
    };
    status.source.error = None;
    status.source.last_success = Some(now());
    status.source.fetched_revision = Some(fetched.commit.clone());
    status.attempted_revision = Some(fetched.commit.clone());
    let repo = Repository::open_bare(ctx.source.repo_path())
        .map_err(|e| Error::Repo(e.message().to_string()))?;
    let plan = reconcile(&ctx.settings, &repo, &fetched, cur.as_ref(), &state)?;
    let comp = match plan {
        Plan::Refuse { reason, errors } => {
            refused(status, &fetched.commit, &reason, &errors);
            return Ok(Action::Refused {
                revision: fetched.commit,
                reason,
            });
        }
        Plan::Compose(c) => c,
    };
    if let Some(s) = &cur
        && comp.same_as(&s.manifest)
    {
        status.refused = None;
        tenant_statuses(status, &comp, true);
        return Ok(Action::UpToDate {
            revision: fetched.commit,
        });
    }
    publish(ctx, &comp, cur.as_ref(), &fetched, &mut state, status)
}

fn refused(status: &mut Status, revision: &str, reason: &str, errors: &[Diagnostic]) {
    status.refused = Some(CommitRefusal {
        revision: revision.to_string(),
        reason: reason.to_string(),
        errors: errors
            .iter()
            .filter(|d| d.is_error())
            .map(Finding::from)
            .collect(),
        at: now(),
    });
    for t in status.tenants.values_mut() {
        t.attempted_revision = Some(revision.to_string());
    }
}

fn tenant_statuses(status: &mut Status, comp: &Composition, success: bool) {
    let at = now();
    let mut next = BTreeMap::new();
    for (t, o) in &comp.tenants {
        let prev = status.tenants.get(t);
        let ok = success && o.state == TenantState::Applied;
        next.insert(
            t.clone(),
            TenantStatus {
                state: o.state.clone(),
                applied_revision: o.entry.as_ref().map(|e| e.revision.clone()),
                attempted_revision: Some(comp.revision.clone()),
                last_success: if ok {
                    Some(at.clone())
                } else {
                    prev.and_then(|p| p.last_success.clone())
                },
                errors: o
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(Finding::from)
                    .collect(),
                warnings: o.diagnostics.iter().filter(|d| !d.is_error()).count(),
            },
        );
    }
    status.tenants = next;
}

/// Notifies every configured appliance of release `id`.
fn notify_all(ctx: &Context, id: &str, revision: &str) -> Vec<(ApplianceStatus, bool)> {
    let msg = notify::apply(id, revision);
    ctx.settings
        .control_sockets
        .iter()
        .map(|sock| {
            let socket = sock.display().to_string();
            match notify::send(sock, &msg, ctx.settings.notify_timeout) {
                Ok(r) => {
                    let accepted = r.accepted();
                    (
                        ApplianceStatus {
                            socket,
                            ok: accepted,
                            generation: r.generation,
                            revision: r.revision.clone(),
                            error: (!accepted).then(|| r.reason()),
                        },
                        !accepted,
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "appliance not notified; it watches current itself");
                    (
                        ApplianceStatus {
                            socket,
                            ok: false,
                            generation: None,
                            revision: None,
                            error: Some(e.to_string()),
                        },
                        false,
                    )
                }
            }
        })
        .collect()
}

fn publish(
    ctx: &Context,
    comp: &Composition,
    cur: Option<&Served>,
    fetched: &Fetched,
    state: &mut State,
    status: &mut Status,
) -> Result<Action, Error> {
    let r = &ctx.releases;
    let lock = r.lock()?;
    let (seq, id) = r.next(&comp.revision);
    let manifest = Manifest {
        version: 1,
        id: id.clone(),
        seq,
        revision: comp.revision.clone(),
        created: now(),
        reference: fetched.chosen.label.clone(),
        platform: comp.platform_id.clone(),
        tenants: comp.entries(),
    };
    r.write(&comp.files, &manifest)?;
    r.swap(&id)?;
    tracing::info!(release = %id, revision = %comp.revision, "published");
    let replies = notify_all(ctx, &id, &comp.revision);
    let refusal = replies
        .iter()
        .find(|(_, refused)| *refused)
        .map(|(a, _)| format!("{}: {}", a.socket, a.error.clone().unwrap_or_default()));
    status.appliances = replies.into_iter().map(|(a, _)| a).collect();
    if let Some(why) = refusal {
        // Put the previous release back, and tell the appliances again.
        match cur {
            Some(prev) => {
                r.swap(&prev.manifest.id)?;
                let back = notify_all(ctx, &prev.manifest.id, &prev.manifest.revision);
                status.appliances = back.into_iter().map(|(a, _)| a).collect();
            }
            None => {
                let _ = std::fs::remove_file(r.dir().join(crate::release::CURRENT));
            }
        }
        let reason = format!("an appliance refused release {id}: {why}; rolled back");
        tracing::warn!("{reason}");
        state.refuse(&comp.revision, &reason);
        state.write(r.dir())?;
        drop(lock);
        refused(status, &comp.revision, &reason, &[]);
        return Ok(Action::Refused {
            revision: comp.revision.clone(),
            reason,
        });
    }
    state.applied(&comp.revision);
    state.write(r.dir())?;
    let protect: Vec<&str> = cur.iter().map(|s| s.manifest.id.as_str()).collect();
    let _ = r.prune(ctx.settings.keep, &protect);
    drop(lock);
    status.release = Some(id.clone());
    status.revision = Some(comp.revision.clone());
    status.refused = None;
    tenant_statuses(status, comp, true);
    Ok(Action::Published {
        release: id,
        revision: comp.revision.clone(),
    })
}
