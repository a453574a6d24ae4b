//! An upstream endpoint and its health as outlier detection sees it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tenants::model::OutlierDetection;

use crate::clock;

/// One upstream address with load and health counters shared by every worker thread.
#[derive(Debug)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Load-balancing weight.
    pub weight: u32,
    /// Requests in flight (LEAST_REQUEST).
    pub active: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Ejected until this time (ms on [`clock::now_ms`]); 0 when not ejected.
    ejected_until: AtomicU64,
    /// When the last ejection ended (or ends): kept after it ended, for the back-off's decay.
    last_until: AtomicU64,
    /// The ejection back-off: this × `baseEjectionTime` is the next ejection's length.
    times_ejected: AtomicU32,
    /// When the address joined the cluster (ms on [`clock::now_ms`]): `warmup` counts from it.
    joined_ms: AtomicU64,
}

/// Envoy's `max_ejection_time` default: an ejection never lasts longer (unless
/// `baseEjectionTime` itself is longer).
const MAX_EJECTION_MS: u64 = 300_000;

/// How a finished request went, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// 500 or 501, 505..: counts toward consecutive 5xx only.
    Error5xx,
    /// 502, 503 or 504: a gateway error (also a 5xx).
    GatewayError,
    /// No response: a connect failure, a reset or a timeout. A gateway error too, unless
    /// `splitExternalLocalOriginErrors` counts these on their own
    /// (`consecutiveLocalOriginFailures`), as Envoy does.
    LocalOrigin,
}

impl Endpoint {
    /// A fresh endpoint.
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Self {
            addr,
            weight: weight.max(1),
            active: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            joined_ms: AtomicU64::new(clock::now_ms()),
        }
    }

    /// When the address joined the cluster (ms on [`clock::now_ms`]).
    pub fn joined_ms(&self) -> u64 {
        self.joined_ms.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn set_joined(&self, ms: u64) {
        self.joined_ms.store(ms, Ordering::Relaxed);
    }

    /// Keeps `old`'s join time: the same address under a changed cluster configuration is no
    /// new endpoint to warm up.
    pub fn joined_with(&self, old: &Self) {
        self.joined_ms.store(old.joined_ms(), Ordering::Relaxed);
    }

    /// Whether outlier detection has ejected the endpoint right now.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    /// Records a result. Returns true when this result ejects the endpoint; the caller
    /// decides whether the ejection budget allows it (`eject`).
    pub fn record(&self, outcome: Outcome, od: Option<&OutlierDetection>) -> bool {
        let Some(od) = od else { return false };
        if od.split_local_origin {
            if outcome == Outcome::LocalOrigin {
                let n = self.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
                let limit = od.consecutive_local_origin.unwrap_or(5);
                return limit > 0 && n >= limit;
            }
            // A response of any kind means the connection worked.
            if self.consecutive_local.load(Ordering::Relaxed) != 0 {
                self.consecutive_local.store(0, Ordering::Relaxed);
            }
        }
        match outcome {
            Outcome::Success => {
                // Read first: every worker records every success, and a store would take the
                // line from the other cores each time although it nearly always holds 0.
                for c in [&self.consecutive_5xx, &self.consecutive_gateway] {
                    if c.load(Ordering::Relaxed) != 0 {
                        c.store(0, Ordering::Relaxed);
                    }
                }
                false
            }
            Outcome::Error5xx => {
                self.consecutive_gateway.store(0, Ordering::Relaxed);
                let n = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                od.consecutive_5xx > 0 && n >= od.consecutive_5xx
            }
            Outcome::GatewayError | Outcome::LocalOrigin => {
                let n5 = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                let ng = self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
                (od.consecutive_5xx > 0 && n5 >= od.consecutive_5xx)
                    || (od.consecutive_gateway > 0 && ng >= od.consecutive_gateway)
            }
        }
    }

    /// Ejects for `baseEjectionTime` × the back-off, as Envoy does: the back-off grows by one
    /// per ejection while the length stays below `max_ejection_time` (300 s, or
    /// `baseEjectionTime` if longer), and shrinks by one for each whole `interval` the
    /// endpoint has been back since its last ejection ended (Envoy takes one off at each
    /// interval tick at least an interval after the unejection). So an endpoint that failed
    /// long ago starts again from `baseEjectionTime`. Ejecting one that is ejected does
    /// nothing (two workers may see its threshold reached at once).
    pub fn eject(&self, od: &OutlierDetection, now_ms: u64) {
        if self.is_ejected(now_ms) {
            return;
        }
        let base = (od.base_ejection_time.as_millis() as u64).max(1);
        let max = MAX_EJECTION_MS.max(base);
        let mut backoff = u64::from(self.times_ejected.load(Ordering::Relaxed));
        let back_since = self.last_until.load(Ordering::Relaxed);
        let interval = (od.interval.as_millis() as u64).max(1);
        if backoff > 0 && now_ms >= back_since {
            backoff = backoff.saturating_sub((now_ms - back_since) / interval);
        }
        if backoff * base < max {
            backoff += 1;
        }
        let ms = (backoff * base).min(max);
        self.times_ejected.store(
            u32::try_from(backoff).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        self.ejected_until.store(now_ms + ms, Ordering::Relaxed);
        self.last_until.store(now_ms + ms, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        self.consecutive_local.store(0, Ordering::Relaxed);
        tracing::info!(endpoint = %self.addr, for_ms = ms, "outlier detection ejected endpoint");
    }

    /// Carries counters over to a replacement endpoint (DNS refresh, reload).
    pub fn inherit(&self, old: &Self) {
        self.ejected_until
            .store(old.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
        self.last_until
            .store(old.last_until.load(Ordering::Relaxed), Ordering::Relaxed);
        self.times_ejected
            .store(old.times_ejected.load(Ordering::Relaxed), Ordering::Relaxed);
        self.joined_with(old);
    }
}

/// A guard counting one in-flight request on an endpoint.
pub struct Active<'a>(&'a Endpoint);

impl<'a> Active<'a> {
    /// Counts a request on `e` until dropped.
    pub fn new(e: &'a Endpoint) -> Self {
        e.active.fetch_add(1, Ordering::Relaxed);
        Self(e)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`Active`] for a request that outlives the borrow (an upgraded connection's splice).
pub struct ActiveOwned(Arc<Endpoint>);

impl ActiveOwned {
    /// Counts a request on `e` until dropped.
    pub fn new(e: Arc<Endpoint>) -> Self {
        e.active.fetch_add(1, Ordering::Relaxed);
        Self(e)
    }
}

impl Drop for ActiveOwned {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps `clock` referenced for readers of this module.
pub fn now_ms() -> u64 {
    clock::now_ms()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn od(base_s: u64, interval_s: u64) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 2,
            consecutive_gateway: 0,
            consecutive_local_origin: None,
            split_local_origin: false,
            interval: Duration::from_secs(interval_s),
            base_ejection_time: Duration::from_secs(base_s),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }

    fn until(e: &Endpoint) -> u64 {
        e.ejected_until.load(Ordering::Relaxed)
    }

    #[test]
    fn ejections_grow_by_the_base_time_up_to_300_seconds() {
        let e = Endpoint::new("127.0.0.1:1".parse().expect("addr"), 1);
        let od = od(30, 10);
        let mut now = 1_000;
        let mut lengths = Vec::new();
        for _ in 0..12 {
            e.eject(&od, now);
            lengths.push((until(&e) - now) / 1000);
            // Fails again as soon as it is back: no healthy interval in between.
            now = until(&e);
            assert!(!e.is_ejected(now));
        }
        assert_eq!(
            lengths,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
    }

    #[test]
    fn healthy_intervals_after_an_ejection_shrink_the_next_one() {
        let e = Endpoint::new("127.0.0.1:1".parse().expect("addr"), 1);
        let od = od(30, 10);
        e.eject(&od, 0); // 30 s
        e.eject(&od, 30_000); // 60 s, ends at 90 s
        e.eject(&od, 90_000); // 90 s, ends at 180 s
        assert_eq!(until(&e), 180_000);
        // Back at 180 s; each whole 10 s interval since takes one off: at 205 s two have
        // passed, so 3 - 2 + 1 = 2 × 30 s.
        e.eject(&od, 205_000);
        assert_eq!(until(&e) - 205_000, 60_000);
        // Back at 265 s, failing again at 300 s: three intervals take the back-off of 2 to
        // 0, so 1 × 30 s.
        e.eject(&od, 300_000);
        assert_eq!(until(&e) - 300_000, 30_000);
        // Failing again within an interval of its return: it grows again.
        e.eject(&od, 335_000);
        assert_eq!(until(&e) - 335_000, 60_000);
    }

    #[test]
    fn local_origin_failures_count_apart_only_when_split() {
        let e = Endpoint::new("127.0.0.1:1".parse().expect("addr"), 1);
        let mut o = od(30, 10);
        o.consecutive_5xx = 0;
        o.consecutive_gateway = 2;
        // Not split: a connect failure is a gateway error.
        assert!(!e.record(Outcome::LocalOrigin, Some(&o)));
        assert!(e.record(Outcome::LocalOrigin, Some(&o)));
        e.record(Outcome::Success, Some(&o));
        // Split: counted on their own (threshold 3 here), and not as gateway errors.
        o.split_local_origin = true;
        o.consecutive_local_origin = Some(3);
        assert!(!e.record(Outcome::LocalOrigin, Some(&o)));
        assert!(!e.record(Outcome::LocalOrigin, Some(&o)));
        // Any response resets the local count: the connection worked.
        assert!(!e.record(Outcome::GatewayError, Some(&o)));
        assert!(!e.record(Outcome::LocalOrigin, Some(&o)));
        assert!(!e.record(Outcome::LocalOrigin, Some(&o)));
        assert!(e.record(Outcome::LocalOrigin, Some(&o)));
        // An ejection starts the count again, as Envoy's does: back from it, one more
        // failure is not yet three.
        e.eject(&o, 1_000);
        assert!(!e.record(Outcome::LocalOrigin, Some(&o)));
        // Without a count, Envoy's default 5.
        let f = Endpoint::new("127.0.0.1:2".parse().expect("addr"), 1);
        o.consecutive_local_origin = None;
        let ejected = (0..5)
            .map(|_| f.record(Outcome::LocalOrigin, Some(&o)))
            .collect::<Vec<_>>();
        assert_eq!(ejected, [false, false, false, false, true]);
    }

    #[test]
    fn an_ejected_endpoint_is_not_ejected_again() {
        let e = Endpoint::new("127.0.0.1:1".parse().expect("addr"), 1);
        let od = od(30, 10);
        e.eject(&od, 1_000);
        // Requests that were in flight fail after the ejection: the ejection stays as it was.
        for t in [1_500, 2_000, 20_000] {
            e.eject(&od, t);
        }
        assert_eq!(until(&e), 31_000);
        assert_eq!(e.times_ejected.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_base_time_above_the_cap_is_used_as_it_is() {
        let e = Endpoint::new("127.0.0.1:1".parse().expect("addr"), 1);
        let od = od(400, 10);
        e.eject(&od, 0);
        assert_eq!(until(&e), 400_000);
        e.eject(&od, 400_000);
        assert_eq!(until(&e), 800_000);
    }
}
