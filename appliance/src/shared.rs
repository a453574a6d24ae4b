//! State shared by the control thread and the worker threads. The data path only reads the
//! `runtime` (lock-free); everything behind a mutex here is control-path only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use tenants::model::DownstreamLimits;
use tokio::sync::watch;

use crate::credentials::Store;
use crate::runtime::Runtime;

/// A listener the workers should have bound.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedListener {
    /// Its group.
    pub group: Arc<str>,
    /// Bind address.
    pub addr: SocketAddr,
    /// Downstream limits of the group.
    pub limits: Arc<DownstreamLimits>,
}

/// The set of listeners of the current generation.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Generation it was computed for.
    pub generation: u64,
    /// Listeners.
    pub listeners: Vec<WantedListener>,
}

/// What the control path reports on `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ControlStatus {
    /// Last successful reload's generation.
    pub generation: u64,
    /// Revision being served.
    pub revision: String,
    /// Reloads attempted.
    pub reloads: u64,
    /// Reloads refused (the previous generation kept serving).
    pub reload_failures: u64,
    /// Why the last reload was refused.
    pub last_error: Option<String>,
    /// Listeners that could not be bound, with the reason.
    pub bind_errors: BTreeMap<String, String>,
    /// Problems found building the last generation.
    pub problems: Vec<String>,
    /// Warnings about platform files (tenants' are under each tenant), such as a root rule
    /// skipped because its delegate is gone.
    pub platform_warnings: Vec<String>,
    /// Whether the process is draining for shutdown.
    pub draining: bool,
}

/// Everything the threads share.
pub struct Shared {
    /// The current generation; read per request.
    pub runtime: ArcSwap<Runtime>,
    /// Credentials.
    pub store: Arc<Store>,
    /// Groups this process serves (`None`: all enabled).
    pub served: Option<Vec<String>>,
    /// Desired listeners, announced to workers.
    pub wanted: watch::Sender<Arc<Wanted>>,
    /// Turns true when the process drains for shutdown.
    pub drain: watch::Sender<bool>,
    /// Control-path status.
    pub status: Mutex<ControlStatus>,
    /// Open downstream connections.
    pub connections: AtomicUsize,
    /// Open HTTP/3 (QUIC) connections.
    pub quic_connections: AtomicUsize,
    /// Worker threads started.
    pub workers: AtomicUsize,
    /// The listener generation each worker has bound (index: worker id).
    pub bound: Box<[std::sync::atomic::AtomicU64]>,
    /// Access logs and metrics.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Tokio runtimes observed by tokio-metrics.
    pub runtimes: crate::metrics::Runtimes,
}

/// Counts one downstream connection in [`Shared::connections`] while it lives: shutdown
/// waits for the count to reach zero.
pub struct OpenConn(Arc<Shared>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Most worker threads (one per core is the norm).
pub const MAX_WORKERS: usize = 256;

impl Shared {
    /// New shared state serving nothing yet.
    pub fn new(
        store: Arc<Store>,
        served: Option<Vec<String>>,
        telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> Arc<Self> {
        let (wanted, _) = watch::channel(Arc::new(Wanted::default()));
        let (drain, _) = watch::channel(false);
        Arc::new(Self {
            runtime: ArcSwap::from_pointee(Runtime::empty()),
            store,
            served,
            wanted,
            drain,
            status: Mutex::new(ControlStatus::default()),
            connections: AtomicUsize::new(0),
            quic_connections: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            bound: (0..MAX_WORKERS)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            telemetry,
            runtimes: crate::metrics::Runtimes::default(),
        })
    }

    /// Counts a connection until the guard drops.
    pub fn open(self: &Arc<Self>) -> OpenConn {
        use std::sync::atomic::Ordering;
        self.connections.fetch_add(1, Ordering::AcqRel);
        OpenConn(self.clone())
    }

    /// Whether every worker has bound the listeners of the current generation.
    pub fn listeners_bound(&self) -> bool {
        use std::sync::atomic::Ordering;
        let want = self.wanted.borrow().generation;
        let n = self.workers.load(Ordering::Acquire);
        n > 0
            && self
                .bound
                .iter()
                .take(n)
                .all(|g| g.load(Ordering::Acquire) >= want)
    }

    /// Runs `f` on the status.
    pub fn with_status<R>(&self, f: impl FnOnce(&mut ControlStatus) -> R) -> R {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s)
    }
}
