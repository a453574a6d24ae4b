//! An upstream endpoint and its health as outlier detection sees it.

use std::net::SocketAddr;
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
    /// Ejected until this time (ms on [`clock::now_ms`]); 0 when not ejected.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
}

/// How a finished request went, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// 500 or 501, 505..: counts toward consecutive 5xx only.
    Error5xx,
    /// 502, 503, 504, or a connect failure/reset: a gateway error (also a 5xx).
    GatewayError,
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
            ejected_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
        }
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
            Outcome::GatewayError => {
                let n5 = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                let ng = self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
                (od.consecutive_5xx > 0 && n5 >= od.consecutive_5xx)
                    || (od.consecutive_gateway > 0 && ng >= od.consecutive_gateway)
            }
        }
    }

    /// Ejects for `baseEjectionTime × times ejected` (Envoy's growth).
    pub fn eject(&self, od: &OutlierDetection, now_ms: u64) {
        let n = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let ms = od.base_ejection_time.as_millis() as u64 * u64::from(n.min(10));
        self.ejected_until
            .store(now_ms + ms.max(1), Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        tracing::info!(endpoint = %self.addr, for_ms = ms, "outlier detection ejected endpoint");
    }

    /// Whether the endpoint has been ejected before and is back (for logs).
    pub fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Carries counters over to a replacement endpoint (DNS refresh, reload).
    pub fn inherit(&self, old: &Self) {
        self.ejected_until
            .store(old.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
        self.times_ejected
            .store(old.times_ejected.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Forgets an ejection (after the interval passed).
    pub fn clear_if_due(&self, now_ms: u64) {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until != 0 && now_ms >= until {
            let _ =
                self.ejected_until
                    .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
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

/// Keeps `clock` referenced for readers of this module.
pub fn now_ms() -> u64 {
    clock::now_ms()
}
