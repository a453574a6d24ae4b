//! The sync loop: reconcile, write the status, wait for the next poll (interval with jitter),
//! a webhook trigger, or — after an error — a backoff that grows up to the interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::reconcile::{self, Action, Context};
use crate::status::Status;

/// Wakes the loop early (webhook, shutdown).
#[derive(Debug, Default)]
pub struct Trigger {
    fired: Mutex<bool>,
    cv: Condvar,
}

// === impl Trigger ===

impl Trigger {
    /// Asks for a reconcile now.
    pub fn fire(&self) {
        *self.fired.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_all();
    }

    /// Waits until fired or `timeout` passes; returns whether it was fired.
    pub fn wait(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut fired = self.fired.lock().unwrap_or_else(PoisonError::into_inner);
        while !*fired {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            fired = self
                .cv
                .wait_timeout(fired, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *fired = false;
        true
    }
}

/// The error policy: after `failures` consecutive errors, retry after 1 s, 2 s, 4 s, ...
/// capped at the poll interval.
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let d = Duration::from_secs(1) * 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    d.min(interval)
}

/// `d` moved by up to ±`fraction` of itself, so many appliances do not poll in step.
pub fn jittered(d: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 {
        return d;
    }
    let f = rand::rng().random_range(-fraction..=fraction);
    d.mul_f64(1.0 + f)
}

/// Runs until `stop` is set (and the trigger fired to wake the loop).
pub fn run(ctx: &Context, status: &Arc<Mutex<Status>>, trigger: &Trigger, stop: &AtomicBool) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut st = status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let r = reconcile::run_once(ctx, &mut st, stop);
        st.updated = Some(crate::status::now());
        if let Err(e) = st.write(ctx.releases.dir()) {
            tracing::warn!(error = %e, "cannot write status");
        }
        *status.lock().unwrap_or_else(PoisonError::into_inner) = st;
        let wait = match r {
            Ok(a) => {
                failures = 0;
                match &a {
                    Action::Published { release, revision } => {
                        tracing::info!(%release, revision = %reconcile::short(revision), "release published");
                    }
                    Action::Refused { revision, reason } => {
                        tracing::warn!(revision = %reconcile::short(revision), %reason, "commit refused");
                    }
                    Action::UpToDate { .. } | Action::Suspended => {}
                }
                jittered(ctx.settings.interval, ctx.settings.jitter)
            }
            Err(e) => {
                failures += 1;
                let d = backoff(failures, ctx.settings.interval);
                tracing::warn!(error = %e, retry_in = ?d, "sync failed; the last good release keeps serving");
                jittered(d, ctx.settings.jitter)
            }
        };
        trigger.wait(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let i = Duration::from_secs(60);
        let got: Vec<u64> = (1..=8).map(|n| backoff(n, i).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(1000, i), i);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10), 0.1);
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(11));
        }
    }

    #[test]
    fn a_fired_trigger_wakes_a_waiter_once() {
        let t = Arc::new(Trigger::default());
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.wait(Duration::from_secs(30)));
        t.fire();
        assert!(h.join().expect("join"));
        assert!(!t.wait(Duration::from_millis(1)), "consumed");
    }
}
