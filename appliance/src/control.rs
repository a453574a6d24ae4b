//! The control path: read the configuration, build the next generation to the side, swap it
//! in with one store, announce listener changes. A configuration that fails to build leaves
//! the previous generation serving; a bad tenant keeps its last good configuration.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tenants::{Accepted, BuildError, Diagnostic, LoadOptions};

use crate::repo;
use crate::runtime::Runtime;
use crate::shared::{Shared, Wanted, WantedListener};

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A repository directory.
    Repo(PathBuf),
    /// A releases folder maintained by `gatehouse-sync`: serve `current`.
    Releases(PathBuf),
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The configuration could not be read.
    #[error("cannot read the configuration: {0}")]
    Read(String),
    /// The platform configuration has errors.
    #[error("the platform configuration has {} errors; still serving generation {serving}", .diagnostics.iter().filter(|d| d.is_error()).count())]
    Platform {
        /// The findings.
        diagnostics: Vec<Diagnostic>,
        /// The generation still served.
        serving: u64,
    },
}

/// What a successful reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// The new generation.
    pub generation: u64,
    /// The revision served.
    pub revision: String,
    /// Errors in tenants that kept their last good configuration.
    pub tenant_errors: usize,
    /// Warnings.
    pub warnings: usize,
}

/// Owns reloading.
pub struct Control {
    shared: Arc<Shared>,
    source: ConfigSource,
    accepted: Mutex<Option<Accepted>>,
    generation: AtomicU64,
    /// The release folder the served generation was read from (`--releases`), so the
    /// `current` watcher does not reload what the control socket already loaded.
    served_dir: Mutex<Option<PathBuf>>,
    handle: tokio::runtime::Handle,
    lock: tokio::sync::Mutex<()>,
}

impl Control {
    /// A controller for `source`; DNS and other background tasks run on `handle`.
    pub fn new(
        shared: Arc<Shared>,
        source: ConfigSource,
        handle: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared,
            source,
            accepted: Mutex::new(None),
            generation: AtomicU64::new(0),
            served_dir: Mutex::new(None),
            handle,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The configuration source.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// The release folder the served generation came from (`--releases` only).
    pub fn served_dir(&self) -> Option<PathBuf> {
        self.served_dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn read(&self) -> Result<(Vec<tenants::SourceFile>, String, PathBuf), ReloadError> {
        let dir = match &self.source {
            ConfigSource::Repo(d) => d.clone(),
            ConfigSource::Releases(d) => std::fs::canonicalize(d.join("current"))
                .map_err(|e| ReloadError::Read(format!("{}: {e}", d.join("current").display())))?,
        };
        let files = repo::read_dir(&dir).map_err(|e| ReloadError::Read(e.to_string()))?;
        let revision = match &self.source {
            ConfigSource::Releases(_) => std::fs::read_to_string(dir.join(".revision"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| {
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                }),
            ConfigSource::Repo(_) => {
                let digest = files.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, f| {
                    f.path
                        .bytes()
                        .chain(f.bytes.iter().copied())
                        .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
                });
                format!("local-{digest:016x}")
            }
        };
        Ok((files, revision, dir))
    }

    /// Reloads once (serialised with other reloads).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _g = self.lock.lock().await;
        crate::systemd::reloading();
        self.shared.with_status(|s| s.reloads += 1);
        let r = self.reload_inner();
        crate::systemd::reloaded(&self.shared);
        if let Err(e) = &r {
            let msg = e.to_string();
            tracing::warn!(error = %msg, "reload refused");
            self.shared.with_status(|s| {
                s.reload_failures += 1;
                s.last_error = Some(msg);
            });
        }
        r
    }

    fn reload_inner(&self) -> Result<ReloadReport, ReloadError> {
        let (files, revision, dir) = self.read()?;
        let loaded = tenants::load(&files, &LoadOptions::default());
        let prev_accepted = self
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let out = match tenants::build(&loaded, &revision, prev_accepted.as_ref()) {
            Ok(o) => o,
            Err(BuildError::Platform { diagnostics }) => {
                for d in diagnostics.iter().filter(|d| d.is_error()).take(20) {
                    tracing::warn!("{d}");
                }
                return Err(ReloadError::Platform {
                    diagnostics,
                    serving: self.generation.load(Ordering::Acquire),
                });
            }
            Err(e) => return Err(ReloadError::Read(e.to_string())),
        };
        let tenant_errors = out.diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = out.diagnostics.len() - tenant_errors;
        for d in out.diagnostics.iter().filter(|d| d.is_error()).take(20) {
            tracing::warn!("{d}");
        }
        let platform_warnings: Vec<String> = out
            .diagnostics
            .iter()
            .filter(|d| !d.is_error() && d.namespace == tenants::model::PLATFORM_NAMESPACE)
            .map(ToString::to_string)
            .collect();
        for w in &platform_warnings {
            tracing::warn!("{w}");
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let snap = Arc::new(out.snapshot);
        let prev = self.shared.runtime.load_full();
        let next = Runtime::build(
            &prev,
            snap.clone(),
            generation,
            self.shared.served.as_deref(),
            &self.shared.store,
            &self.handle,
        );
        let problems = next.problems.clone();
        for p in &problems {
            tracing::warn!("{p}");
        }
        let wanted = Wanted {
            generation,
            listeners: next
                .groups
                .values()
                .flat_map(|g| {
                    let limits = Arc::new(
                        snap.groups
                            .get(&*g.name)
                            .map(|s| s.group.limits.clone())
                            .unwrap_or_else(default_limits),
                    );
                    g.listeners.keys().map(move |addr| WantedListener {
                        group: g.name.clone(),
                        addr: *addr,
                        limits: limits.clone(),
                    })
                })
                .collect(),
        };
        // One store publishes the generation; requests already running keep their own.
        self.shared.runtime.store(Arc::new(next));
        self.shared.wanted.send_replace(Arc::new(wanted));
        self.shared.store.retain_used();
        *self
            .accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(out.accepted);
        *self
            .served_dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(dir);
        self.shared.with_status(|s| {
            s.generation = generation;
            s.revision.clone_from(&revision);
            s.last_error = None;
            s.problems = problems;
            s.platform_warnings = platform_warnings;
        });
        tracing::info!(generation, %revision, tenant_errors, "configuration applied");
        Ok(ReloadReport {
            generation,
            revision,
            tenant_errors,
            warnings,
        })
    }
}

fn default_limits() -> tenants::model::DownstreamLimits {
    tenants::model::DownstreamLimits {
        max_request_headers_kb: 60,
        header_read_timeout: std::time::Duration::from_secs(10),
        idle_timeout: std::time::Duration::from_secs(3600),
        max_concurrent_streams: 1000,
    }
}
