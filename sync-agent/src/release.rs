//! The releases folder: immutable `releases/<id>/` trees (a plain repository the appliance
//! loads), the `current` link, and pruning. A release is written to a temporary folder,
//! fsynced, and renamed into place; `current` is swapped by renaming a new link over it, so
//! a reader sees the old release or the new one, never a mixture.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tenants::SourceFile;

/// Name of the link to the served release.
pub const CURRENT: &str = "current";
/// The manifest inside each release.
pub const MANIFEST: &str = ".release.json";
/// The revision file the appliance reads.
pub const REVISION: &str = ".revision";

/// Why the releases folder could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A manifest does not parse.
    #[error("{path}: bad manifest: {message}")]
    Manifest {
        /// The path.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// No such release.
    #[error("no release {0:?} in the releases folder")]
    NotFound(String),
    /// Nothing to roll back to.
    #[error("no earlier release to roll back to")]
    NoPrevious,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where one tenant's files in a release came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEntry {
    /// The commit its files were taken from (its last good commit).
    pub revision: String,
    /// The tenant folder's tree id at that commit.
    pub tree: String,
}

/// `.release.json`: what a release holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The release id (its folder name).
    pub id: String,
    /// Sequence number (orders releases).
    pub seq: u64,
    /// The commit the release was composed at.
    pub revision: String,
    /// When it was written (RFC 3339).
    pub created: String,
    /// What was tracked, e.g. `branch main`.
    pub reference: String,
    /// Identity of the platform part (see `tree::Parts::platform_id`).
    pub platform: String,
    /// Per tenant: where its files came from.
    pub tenants: BTreeMap<String, TenantEntry>,
}

// === impl Manifest ===

impl Manifest {
    /// Whether two releases serve the same content.
    pub fn same_content(&self, other: &Self) -> bool {
        self.platform == other.platform
            && self.tenants.len() == other.tenants.len()
            && self
                .tenants
                .iter()
                .all(|(t, e)| other.tenants.get(t).is_some_and(|o| o.tree == e.tree))
    }
}

/// A releases folder.
#[derive(Debug, Clone)]
pub struct Releases {
    dir: PathBuf,
}

// === impl Releases ===

impl Releases {
    /// Opens (and creates) the folder.
    pub fn open(dir: &Path) -> Result<Self, ReleaseError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the folder's write lock (blocks while another writer holds it).
    pub fn lock(&self) -> Result<File, ReleaseError> {
        let p = self.dir.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io(&p))?;
        f.lock().map_err(io(&p))?;
        Ok(f)
    }

    /// The id `current` points at.
    pub fn current_id(&self) -> Option<String> {
        std::fs::read_link(self.dir.join(CURRENT))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// The folder of release `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The manifest of release `id`.
    pub fn manifest(&self, id: &str) -> Result<Manifest, ReleaseError> {
        let p = self.path(id).join(MANIFEST);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ReleaseError::NotFound(id.to_string())
            } else {
                io(&p)(e)
            }
        })?;
        serde_json::from_str(&text).map_err(|e| ReleaseError::Manifest {
            path: p,
            message: e.to_string(),
        })
    }

    /// The served release's manifest.
    pub fn current(&self) -> Option<Manifest> {
        self.current_id().and_then(|id| self.manifest(&id).ok())
    }

    /// Every release, oldest first.
    pub fn list(&self) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (!name.starts_with('.'))
                    .then(|| self.manifest(&name).ok())
                    .flatten()
            })
            .collect();
        out.sort_by_key(|m| m.seq);
        out
    }

    /// The files of release `id` (every file the appliance would load).
    pub fn files(&self, id: &str) -> Result<Vec<SourceFile>, ReleaseError> {
        let root = self.path(id);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).map_err(io(&d))? {
                let e = e.map_err(io(&d))?;
                let p = e.path();
                let ft = e.file_type().map_err(io(&p))?;
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap_or(&p)
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    if tenants::load::namespace_of(&rel).is_some() {
                        let bytes = std::fs::read(&p).map_err(io(&p))?;
                        out.push(SourceFile { path: rel, bytes });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The next id for `revision`: `<seq>-<short commit>`.
    pub fn next(&self, revision: &str) -> (u64, String) {
        let seq = self.list().last().map_or(1, |m| m.seq + 1);
        let short: String = revision.chars().take(12).collect();
        (seq, format!("{seq:06}-{short}"))
    }

    /// Writes a release atomically; returns its folder. `manifest.id` names it.
    pub fn write(
        &self,
        files: &[SourceFile],
        manifest: &Manifest,
    ) -> Result<PathBuf, ReleaseError> {
        let tmp = self.dir.join(format!(".tmp-{}", manifest.id));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        let mut dirs = vec![tmp.clone()];
        for f in files {
            // Paths come from a git tree (no `..`, no absolute paths); refuse anything else.
            if f.path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                continue;
            }
            let p = tmp.join(&f.path);
            if let Some(parent) = p.parent()
                && !parent.exists()
            {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
                let mut d = parent.to_path_buf();
                while d != tmp {
                    dirs.push(d.clone());
                    if !d.pop() {
                        break;
                    }
                }
            }
            write_synced(&p, &f.bytes)?;
        }
        write_synced(
            &tmp.join(REVISION),
            format!("{}\n", manifest.revision).as_bytes(),
        )?;
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| ReleaseError::Manifest {
            path: tmp.join(MANIFEST),
            message: e.to_string(),
        })?;
        write_synced(&tmp.join(MANIFEST), &json)?;
        dirs.sort();
        dirs.dedup();
        for d in dirs.iter().rev() {
            sync_dir(d)?;
        }
        let dest = self.path(&manifest.id);
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
        sync_dir(&self.dir)?;
        Ok(dest)
    }

    /// Points `current` at release `id` (one rename: readers never see it missing).
    pub fn swap(&self, id: &str) -> Result<(), ReleaseError> {
        if !self.path(id).join(MANIFEST).exists() {
            return Err(ReleaseError::NotFound(id.to_string()));
        }
        let tmp = self.dir.join(".current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(id, &tmp).map_err(io(&tmp))?;
        let link = self.dir.join(CURRENT);
        std::fs::rename(&tmp, &link).map_err(io(&link))?;
        sync_dir(&self.dir)
    }

    /// The release before `id` (by sequence).
    pub fn previous(&self, id: &str) -> Option<Manifest> {
        let all = self.list();
        let seq = all.iter().find(|m| m.id == id)?.seq;
        all.into_iter().rev().find(|m| m.seq < seq)
    }

    /// Removes the oldest releases beyond `keep`, never `current` or `protect`.
    pub fn prune(&self, keep: usize, protect: &[&str]) -> Result<Vec<String>, ReleaseError> {
        let current = self.current_id();
        let all = self.list();
        let excess = all.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for m in all.into_iter().take(excess) {
            if current.as_deref() == Some(&m.id) || protect.contains(&m.id.as_str()) {
                continue;
            }
            let p = self.path(&m.id);
            std::fs::remove_dir_all(&p).map_err(io(&p))?;
            removed.push(m.id);
        }
        // Leftovers of an interrupted write.
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(removed)
    }
}

fn write_synced(p: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    let mut f = File::create(p).map_err(io(p))?;
    f.write_all(bytes).map_err(io(p))?;
    f.sync_all().map_err(io(p))
}

fn sync_dir(p: &Path) -> Result<(), ReleaseError> {
    File::open(p).and_then(|d| d.sync_all()).map_err(io(p))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(d) = path.parent() {
        sync_dir(d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(r: &Releases, rev: &str) -> Manifest {
        let (seq, id) = r.next(rev);
        Manifest {
            version: 1,
            id,
            seq,
            revision: rev.into(),
            created: String::new(),
            reference: "branch main".into(),
            platform: "p".into(),
            tenants: BTreeMap::new(),
        }
    }

    #[test]
    fn write_swap_previous_and_prune() {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = Releases::open(tmp.path()).expect("open");
        let files = vec![SourceFile {
            path: "tenants/a/x.yaml".into(),
            bytes: b"k: v\n".to_vec(),
        }];
        let mut ids = Vec::new();
        for i in 0..5 {
            let m = manifest(&r, &format!("{i:0>40}"));
            r.write(&files, &m).expect("write");
            r.swap(&m.id).expect("swap");
            ids.push(m.id);
        }
        assert_eq!(r.current_id().as_deref(), Some(ids[4].as_str()));
        assert_eq!(r.previous(&ids[4]).map(|m| m.id), Some(ids[3].clone()));
        let got = r.files(&ids[4]).expect("files");
        let pairs = |v: &[SourceFile]| {
            v.iter()
                .map(|f| (f.path.clone(), f.bytes.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs(&got),
            pairs(&files),
            "the manifest and .revision are not configuration"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("current/.revision")).expect("rev"),
            format!("{:0>40}\n", 4)
        );
        r.swap(&ids[1]).expect("rollback");
        let removed = r.prune(2, &[]).expect("prune");
        assert_eq!(
            removed,
            vec![ids[0].clone(), ids[2].clone()],
            "current survives"
        );
        assert!(r.swap("nope").is_err());
    }
}
