//! Reads a repository directory into the (path, bytes) pairs the `tenants` crate loads.

use std::path::{Path, PathBuf};

use tenants::SourceFile;

/// Why a repository directory could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// A directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Most files read from one repository (a guard against pointing at `/`).
const MAX_FILES: usize = 100_000;

/// Reads every regular file under `root` (symbolic links are not followed, `.git` is
/// skipped), with `/`-separated paths relative to `root`.
pub fn read_dir(root: &Path) -> Result<Vec<SourceFile>, RepoError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| RepoError::Io {
            path: dir.clone(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| RepoError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = e.path();
            let ft = e.file_type().map_err(|source| RepoError::Io {
                path: path.clone(),
                source,
            })?;
            if e.file_name() == ".git" {
                continue;
            }
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                if !(rel.ends_with(".yaml") || rel.ends_with(".yml")) {
                    continue;
                }
                let bytes = std::fs::read(&path).map_err(|source| RepoError::Io {
                    path: path.clone(),
                    source,
                })?;
                out.push(SourceFile { path: rel, bytes });
                if out.len() > MAX_FILES {
                    break;
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
