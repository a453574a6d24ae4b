//! Background watchers on the control thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::control::Control;
use crate::credentials::Store;

/// Re-reads credentials whose files changed (polling fallback; cheap `stat` calls).
pub async fn credentials(store: Arc<Store>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.refresh_all(false)).await;
    }
}

/// Notices when the sync agent swaps `current`, and reloads.
pub async fn current(dir: PathBuf, control: Arc<Control>) {
    let link = dir.join("current");
    let mut last = std::fs::read_link(&link).ok();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = std::fs::read_link(&link).ok();
        if now != last {
            last = now;
            let _ = control.reload().await;
        }
    }
}
