//! Fault injection (`fault.delay`, `fault.abort`) by percentage.

use rand::Rng;
use tenants::model::{Abort, Fault};

/// What the fault filter decided for one request.
#[derive(Debug, Default)]
pub struct Decision {
    /// Wait this long first.
    pub delay: Option<std::time::Duration>,
    /// Then answer with this instead of forwarding.
    pub abort: Option<Abort>,
}

fn roll(pct: f64) -> bool {
    pct > 0.0 && (pct >= 100.0 || rand::rng().random_range(0.0..100.0) < pct)
}

/// Rolls the dice for `f`.
pub fn decide(f: &Fault) -> Decision {
    Decision {
        delay: f.delay.and_then(|(d, pct)| roll(pct).then_some(d)),
        abort: f.abort.and_then(|(a, pct)| roll(pct).then_some(a)),
    }
}
