//! Background watchers on the control thread: credential files (inotify through `notify`,
//! with a periodic rescan as a fallback for filesystems without events) and the sync agent's
//! `current` link.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::control::Control;
use crate::credentials::Store;

/// How often credentials are rescanned when no event arrives.
const RESCAN: Duration = Duration::from_secs(5);
/// Events within this window are handled together (tools write several files in a row).
const SETTLE: Duration = Duration::from_millis(50);

/// Re-reads credentials whose files changed: on inotify events under the credentials folder,
/// and every few seconds regardless.
pub async fn credentials(store: Arc<Store>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let root = store.root().to_path_buf();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.try_send(());
        }
    });
    // Kept alive for the life of the loop; a folder that does not exist yet is picked up by
    // the rescan, and watched once it appears.
    let mut watcher = watcher.ok();
    let mut watching = false;
    loop {
        if !watching && let Some(w) = watcher.as_mut() {
            watching = w.watch(&root, RecursiveMode::Recursive).is_ok();
        }
        tokio::select! {
            _ = rx.recv() => {
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(RESCAN) => {}
        }
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.refresh_all(false)).await;
    }
}

/// Notices when the sync agent swaps `current`, and reloads.
///
/// Compared with what is served, not with the link's last value: a swap and a swap back
/// within one tick (a release, then a rollback) must still reload. A release that fails to
/// load is tried once, not every tick, until `current` moves again.
pub async fn current(dir: PathBuf, control: Arc<Control>) {
    let link = dir.join("current");
    let mut tried: Option<PathBuf> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = std::fs::canonicalize(&link).ok();
        if now.is_some() && now != control.served_dir() && now != tried {
            tried.clone_from(&now);
            let _ = control.reload().await;
        }
    }
}
