//! A coarse monotonic millisecond clock shared by rate limiters and outlier detection.

use std::sync::OnceLock;

use tokio::time::Instant;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process started (monotonic).
pub fn now_ms() -> u64 {
    start().elapsed().as_millis() as u64
}
