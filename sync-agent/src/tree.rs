//! Reading a commit straight from its tree (no working copy): the files gatehouse loads,
//! split into the platform part and one part per tenant, with the tree ids that tell which
//! parts changed.

use std::collections::BTreeMap;

use git2::{ObjectType, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};
use tenants::SourceFile;

/// Most files read from one commit.
const MAX_FILES: usize = 50_000;
/// Most bytes read from one commit.
const MAX_BYTES: usize = 256 << 20;

/// Why a commit could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// libgit2 failed (missing object, corrupt repository).
    #[error("reading {what}: {message}")]
    Git {
        /// What was being read.
        what: String,
        /// libgit2's message.
        message: String,
    },
    /// The commit is larger than gatehouse reads.
    #[error("the commit holds more than {MAX_FILES} files or {} MiB of configuration", MAX_BYTES >> 20)]
    TooLarge,
}

/// One commit's configuration, by part.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// The commit.
    pub commit: String,
    /// Identity of the platform part (gatehouse.yaml/yml blob ids and the platform/ tree).
    pub platform_id: String,
    /// `gatehouse.yaml` and `platform/**`.
    pub platform: Vec<SourceFile>,
    /// Per tenant folder: its tree id.
    pub tenant_trees: BTreeMap<String, String>,
    /// Per tenant folder: its files.
    pub tenants: BTreeMap<String, Vec<SourceFile>>,
}

fn git(what: &str) -> impl Fn(git2::Error) -> TreeError + '_ {
    move |e| TreeError::Git {
        what: what.to_string(),
        message: e.message().to_string(),
    }
}

/// Reads the commit `id`.
pub fn read(repo: &Repository, id: Oid) -> Result<Parts, TreeError> {
    let commit = repo.find_commit(id).map_err(git("the commit"))?;
    let tree = commit.tree().map_err(git("the commit's tree"))?;
    let mut parts = Parts {
        commit: id.to_string(),
        ..Parts::default()
    };
    let mut budget = (MAX_FILES, MAX_BYTES);
    let mut ids = Vec::new();
    for name in ["gatehouse.yaml", "gatehouse.yml"] {
        let Some(e) = tree.get_name(name) else {
            ids.push(String::from("-"));
            continue;
        };
        ids.push(e.id().to_string());
        if e.kind() == Some(ObjectType::Blob) && e.filemode() != 0o120_000 {
            let blob = repo.find_blob(e.id()).map_err(git(name))?;
            take(&mut budget, blob.content().len())?;
            parts.platform.push(SourceFile {
                path: name.to_string(),
                bytes: blob.content().to_vec(),
            });
        }
    }
    match subtree(repo, &tree, "platform")? {
        Some(t) => {
            ids.push(t.id().to_string());
            walk(repo, &t, "platform/", &mut parts.platform, &mut budget)?;
        }
        None => ids.push(String::from("-")),
    }
    parts.platform_id = ids.join(":");
    if let Some(tenants) = subtree(repo, &tree, "tenants")? {
        for e in &tenants {
            if e.kind() != Some(ObjectType::Tree) {
                continue;
            }
            let Ok(name) = e.name() else { continue };
            let t = repo.find_tree(e.id()).map_err(git(name))?;
            let mut files = Vec::new();
            walk(
                repo,
                &t,
                &format!("tenants/{name}/"),
                &mut files,
                &mut budget,
            )?;
            parts
                .tenant_trees
                .insert(name.to_string(), e.id().to_string());
            parts.tenants.insert(name.to_string(), files);
        }
    }
    Ok(parts)
}

fn subtree<'r>(
    repo: &'r Repository,
    tree: &Tree<'_>,
    name: &str,
) -> Result<Option<Tree<'r>>, TreeError> {
    match tree.get_name(name) {
        Some(e) if e.kind() == Some(ObjectType::Tree) => {
            repo.find_tree(e.id()).map(Some).map_err(git(name))
        }
        _ => Ok(None),
    }
}

fn take(budget: &mut (usize, usize), bytes: usize) -> Result<(), TreeError> {
    budget.0 = budget.0.checked_sub(1).ok_or(TreeError::TooLarge)?;
    budget.1 = budget.1.checked_sub(bytes).ok_or(TreeError::TooLarge)?;
    Ok(())
}

/// Collects the YAML blobs under `tree` (symbolic links and submodules are not followed).
fn walk(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    out: &mut Vec<SourceFile>,
    budget: &mut (usize, usize),
) -> Result<(), TreeError> {
    let mut err = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, e| {
        if e.kind() != Some(ObjectType::Blob) || e.filemode() == 0o120_000 {
            return TreeWalkResult::Ok;
        }
        let Ok(name) = e.name() else {
            return TreeWalkResult::Ok;
        };
        let path = format!("{prefix}{dir}{name}");
        if tenants::load::namespace_of(&path).is_none() {
            return TreeWalkResult::Ok;
        }
        let r = repo.find_blob(e.id()).map_err(git(&path)).and_then(|b| {
            take(budget, b.content().len())?;
            out.push(SourceFile {
                path: path.clone(),
                bytes: b.content().to_vec(),
            });
            Ok(())
        });
        match r {
            Ok(()) => TreeWalkResult::Ok,
            Err(e) => {
                err = Some(e);
                TreeWalkResult::Abort
            }
        }
    })
    .map_err(git(prefix))
    .or_else(|e| if err.is_some() { Ok(()) } else { Err(e) })?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
