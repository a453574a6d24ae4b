//! The systemd service protocol (`Type=notify`): READY once the first configuration is
//! applied and every worker has bound its listeners, RELOADING/READY around each later reload,
//! STOPPING when the drain starts, and watchdog pings from the control thread.
//!
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), and a failed send is only
//! logged: the service manager being unreachable must never take traffic down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::shared::Shared;

/// Set once READY=1 was sent: reload notifications before it would confuse systemd, which
/// is still waiting for the start to finish.
static READY: AtomicBool = AtomicBool::new(false);

/// How long startup waits for the workers to bind before declaring readiness anyway (a
/// listener that cannot be bound is reported on `/status`, not by failing the start).
const BIND_WAIT: Duration = Duration::from_secs(30);
/// How often startup checks whether the workers have bound.
const BIND_POLL: Duration = Duration::from_millis(5);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn status_line(shared: &Shared) -> String {
    shared.with_status(|s| {
        format!(
            "serving generation {} (revision {}), {} listeners failed to bind",
            s.generation,
            if s.revision.is_empty() {
                "-"
            } else {
                &s.revision
            },
            s.bind_errors.len()
        )
    })
}

/// Waits until every worker has bound the first generation's listeners, then sends READY=1.
pub async fn ready_when_bound(shared: Arc<Shared>) {
    let deadline = tokio::time::Instant::now() + BIND_WAIT;
    while !shared.listeners_bound() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(BIND_POLL).await;
    }
    // Inherited sockets the first generation did not claim belong to listeners that no
    // longer exist: close them now rather than leave connections queueing on them.
    crate::fdstore::release_unclaimed();
    let status = status_line(&shared);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    READY.store(true, Ordering::Release);
    tracing::info!("ready");
}

/// Tells systemd a reload started (before READY=1 this is part of the start, so nothing is
/// sent).
pub fn reloading() {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    // systemd 253+ wants the monotonic time with RELOADING=1 to order the messages.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Tells systemd the reload finished (applied or refused: either way the service runs).
pub fn reloaded(shared: &Shared) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    let status = status_line(shared);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tells systemd the drain started.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Pings the watchdog at half its interval for as long as the control thread's runtime
/// runs this task: a wedged control loop stops the pings and systemd restarts the group.
pub async fn watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}
