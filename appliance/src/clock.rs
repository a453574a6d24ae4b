//! A coarse monotonic millisecond clock shared by rate limiters, outlier detection, idle
//! timeouts and the upstream pool.
//!
//! Coarse on purpose: it reads the kernel's `CLOCK_MONOTONIC_COARSE` (the last timer tick;
//! 4 ms here) from the vDSO, without the TSC read and scaling `Instant::now` costs. It is read
//! several times per request (an idle stamp on every read and write, the pool's idle ages, the
//! balancer's ejection checks), and none of those need better than a few milliseconds. Measured
//! before this change: 11 precise clock reads per proxied request, 1.4 % of the worker's CPU in
//! `clock_gettime` (`perf record` under wrk; BENCHMARKS.md, "Clock reads").

use std::sync::OnceLock;

use rustix::time::{ClockId, clock_gettime};

fn coarse_ms() -> u64 {
    let t = clock_gettime(ClockId::MonotonicCoarse);
    // The monotonic clock counts from boot: never negative.
    u64::try_from(t.tv_sec).unwrap_or(0) * 1000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000
}

fn start() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    *START.get_or_init(coarse_ms)
}

/// Milliseconds since the process first asked (monotonic, advancing in timer ticks).
pub fn now_ms() -> u64 {
    coarse_ms().saturating_sub(start())
}

/// Seconds since the Unix epoch from the coarse wall clock, for the `Date` header: a second's
/// resolution needs no precise read, and one was a fifth of the precise reads per response.
pub fn unix_seconds() -> u64 {
    let t = clock_gettime(ClockId::RealtimeCoarse);
    u64::try_from(t.tv_sec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within a tick of the precise wall clock read around it.
    #[test]
    fn wall_seconds_match_the_system_clock() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let coarse = unix_seconds();
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        assert!(
            coarse + 1 >= before && coarse <= after,
            "coarse {coarse}, precise {before}..{after}"
        );
    }

    /// It advances, and never by more than the precise clock around it plus a tick (10 ms at
    /// the slowest kernel tick rate). Being descheduled only widens the precise interval.
    #[test]
    fn keeps_up_with_the_precise_clock() {
        let t0 = std::time::Instant::now();
        let c0 = now_ms();
        let deadline = t0 + std::time::Duration::from_secs(5);
        while now_ms() < c0 + 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "the coarse clock stood still"
            );
            std::hint::spin_loop();
        }
        let c1 = now_ms();
        let precise = t0.elapsed().as_millis() as u64;
        let coarse = c1 - c0;
        assert!(coarse >= 50);
        assert!(
            coarse <= precise + 10,
            "coarse {coarse} ms, precise {precise} ms"
        );
    }
}
