//! Process orchestration for `gatehouse run`: control thread, workers, admin, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::control::{ConfigSource, Control, ReloadError};
use crate::credentials::Store;
use crate::shared::Shared;

/// Settings of `gatehouse run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the configuration comes from.
    pub source: ConfigSource,
    /// Groups to serve (empty: all enabled).
    pub groups: Vec<String>,
    /// `<credentials>/<tenant>/<credentialName>/`.
    pub credentials: PathBuf,
    /// Admin endpoint.
    pub admin: Option<SocketAddr>,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// How long shutdown waits for connections to finish.
    pub drain: Duration,
    /// The sync agent's control socket (see `control_socket`).
    pub control_socket: Option<PathBuf>,
    /// Local settings file (TOML; `[telemetry]`).
    pub config: Option<PathBuf>,
}

/// Why the appliance could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The initial configuration was refused.
    #[error("initial configuration refused: {0}")]
    Config(#[from] ReloadError),
    /// The telemetry settings (settings file or `OTEL_*` environment) are unusable.
    #[error("{0}")]
    Telemetry(#[from] crate::telemetry::settings::SettingsError),
    /// An OS resource could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Whether a run error is a configuration problem (exit code 64, like `EX_USAGE`).
pub fn is_config_error(e: &RunError) -> bool {
    matches!(e, RunError::Config(_) | RunError::Telemetry(_))
}

/// Runs until SIGTERM/SIGINT, then drains.
pub fn run(opts: RunOptions) -> Result<(), RunError> {
    // First, before any thread exists: taking LISTEN_FDS edits the environment.
    let adopted = crate::fdstore::adopt_from_env();
    if adopted > 0 {
        tracing::info!(
            sockets = adopted,
            "listening sockets inherited from the previous process"
        );
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let store = Arc::new(Store::new(opts.credentials.clone(), provider));
    let served = (!opts.groups.is_empty()).then(|| opts.groups.clone());
    let file = match &opts.config {
        Some(p) => crate::telemetry::settings::load_file(p)?,
        None => crate::telemetry::settings::FileSettings::default(),
    };
    let telemetry = crate::telemetry::Telemetry::new(&file)?;
    let shared = Shared::new(store.clone(), served, telemetry);
    let control_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    shared
        .runtimes
        .register("control".to_string(), control_rt.handle());
    let control = Control::new(
        shared.clone(),
        opts.source.clone(),
        control_rt.handle().clone(),
    );
    match control_rt.block_on(control.reload()) {
        Ok(_) => {}
        // A releases folder the sync agent has not published into yet: serve nothing (not
        // ready) and pick up the first release when `current` appears.
        Err(ReloadError::Read(e)) if matches!(&opts.source, ConfigSource::Releases(d) if !d.join("current").exists()) =>
        {
            tracing::warn!(error = %e, "no release yet; waiting for the sync agent");
        }
        Err(e) => return Err(e.into()),
    }
    let socket = match &opts.control_socket {
        Some(p) => Some((
            control_rt.block_on(async { crate::control_socket::bind(p) })?,
            p.clone(),
        )),
        None => None,
    };
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
    } else {
        opts.workers
    };
    let handles = crate::workers::start(workers, shared.clone(), opts.drain);
    control_rt.block_on(async {
        if let Some(addr) = opts.admin {
            let c = control.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::admin::serve(addr, c).await {
                    tracing::error!(%addr, error = %e, "admin endpoint failed");
                }
            });
        }
        tokio::spawn(crate::systemd::ready_when_bound(shared.clone()));
        tokio::spawn(crate::systemd::watchdog());
        tokio::spawn(crate::watch::credentials(store.clone()));
        tokio::spawn(crate::metrics::push(control.clone()));
        if let Some((l, p)) = socket {
            tokio::spawn(crate::control_socket::serve(l, p, control.clone()));
        }
        if let ConfigSource::Releases(dir) = &opts.source {
            tokio::spawn(crate::watch::current(dir.clone(), control.clone()));
        }
        signals(control.clone()).await
    })?;
    crate::systemd::stopping();
    shared.with_status(|s| s.draining = true);
    let _ = shared.drain.send(true);
    tracing::info!(grace = ?opts.drain, "draining");
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

#[cfg(unix)]
async fn signals(control: Arc<Control>) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = control.reload().await;
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}
