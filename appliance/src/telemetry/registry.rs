//! Istio's standard metrics, aggregated without locks on the request path.
//!
//! A series is a set of atomic counters; series are found through an `ArcSwap`'d map, so a
//! request only loads a pointer and adds atomically. A new label combination is inserted by
//! copy-on-write under a mutex that only writers of new series take (never the scraper,
//! which reads the map lock-free). Label cardinality is bounded: past `MAX_SERIES`, new
//! combinations are counted in one overflow series.

use hashbrown::Equivalent;
use rustc_hash::FxBuildHasher;

/// Series by labels. FxHash: label values come from configuration and a bounded set of
/// status codes and flags, never from what a client sends; hashbrown for borrowed-key
/// lookups ([`Equivalent`]), so finding a series allocates nothing.
pub type HashMap<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// Istio's `istio_request_duration_milliseconds` buckets.
pub const DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's size buckets (`istio_request_bytes`, `istio_response_bytes`).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0,
    10.0,
    100.0,
    1000.0,
    10000.0,
    100000.0,
    1000000.0,
    10000000.0,
    100000000.0,
    1000000000.0,
];

/// Most label combinations kept per metric family.
pub const MAX_SERIES: usize = 20_000;

/// A histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// Sum of observations × 1000 (fixed point, so it can be atomic).
    sum_milli: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_milli: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_milli
            .fetch_add((v.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (Prometheus `le`), sum and count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(self.bounds.len() + 1);
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Ordering::Relaxed);
            out.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), acc));
        }
        (
            out,
            self.sum_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            self.count.load(Ordering::Relaxed),
        )
    }

    /// Raw per-bucket counts (OTLP explicit buckets).
    pub fn buckets(&self) -> (&'static [f64], Vec<u64>) {
        (
            self.bounds,
            self.counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        )
    }
}

/// Labels of an HTTP request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpLabels {
    /// `tenant`.
    pub tenant: Arc<str>,
    /// `gateway` (the group).
    pub gateway: Arc<str>,
    /// `destination_service` (the cluster's service host, or `unknown`).
    pub destination_service: Arc<str>,
    /// `response_code`.
    pub response_code: u16,
    /// `response_flags` (`-` when none).
    pub response_flags: Arc<str>,
    /// `request_protocol` (`http`, `grpc`).
    pub request_protocol: &'static str,
}

/// [`HttpLabels`] borrowed from a request's entry. Hashes exactly as `HttpLabels` does
/// (fields in the same order; `Arc<str>` hashes as its `str`).
#[derive(Debug, Hash)]
pub struct HttpLabelsRef<'a> {
    /// `tenant`.
    pub tenant: &'a str,
    /// `gateway`.
    pub gateway: &'a str,
    /// `destination_service`.
    pub destination_service: &'a str,
    /// `response_code`.
    pub response_code: u16,
    /// `response_flags`.
    pub response_flags: &'a str,
    /// `request_protocol`.
    pub request_protocol: &'static str,
}

impl Equivalent<HttpLabels> for HttpLabelsRef<'_> {
    fn equivalent(&self, k: &HttpLabels) -> bool {
        self.response_code == k.response_code
            && self.request_protocol == k.request_protocol
            && self.tenant == &*k.tenant
            && self.gateway == &*k.gateway
            && self.destination_service == &*k.destination_service
            && self.response_flags == &*k.response_flags
    }
}

impl HttpLabelsRef<'_> {
    /// The owned labels, for a new series.
    pub fn to_owned(&self) -> HttpLabels {
        HttpLabels {
            tenant: Arc::from(self.tenant),
            gateway: Arc::from(self.gateway),
            destination_service: Arc::from(self.destination_service),
            response_code: self.response_code,
            response_flags: Arc::from(self.response_flags),
            request_protocol: self.request_protocol,
        }
    }
}

/// One HTTP series.
#[derive(Debug)]
pub struct HttpSeries {
    /// `istio_requests_total`.
    pub requests: AtomicU64,
    /// `istio_request_duration_milliseconds`.
    pub duration: Histogram,
    /// `istio_request_bytes`.
    pub request_bytes: Histogram,
    /// `istio_response_bytes`.
    pub response_bytes: Histogram,
}

/// Labels of a TCP series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpLabels {
    /// `tenant`.
    pub tenant: Arc<str>,
    /// `gateway`.
    pub gateway: Arc<str>,
    /// `destination_service`.
    pub destination_service: Arc<str>,
    /// `response_flags`.
    pub response_flags: Arc<str>,
}

/// One TCP series.
#[derive(Debug, Default)]
pub struct TcpSeries {
    /// `istio_tcp_sent_bytes_total` (to the client... Istio: bytes sent during the response).
    pub sent: AtomicU64,
    /// `istio_tcp_received_bytes_total`.
    pub received: AtomicU64,
    /// `istio_tcp_connections_opened_total`.
    pub opened: AtomicU64,
    /// `istio_tcp_connections_closed_total`.
    pub closed: AtomicU64,
}

/// A family of series keyed by labels.
pub struct Family<K, S> {
    map: ArcSwap<HashMap<K, Arc<S>>>,
    insert: Mutex<()>,
    overflow: Arc<S>,
    new: fn() -> S,
}

impl<K: Clone + Eq + Hash, S> Family<K, S> {
    fn new(new: fn() -> S) -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::default()),
            insert: Mutex::new(()),
            overflow: Arc::new(new()),
            new,
        }
    }

    /// The series for `k`, created on first use.
    pub fn get(&self, k: &K) -> Arc<S> {
        self.with(k, K::clone, Arc::clone)
    }

    /// Runs `f` on the series for `q` (a borrowed form of the labels), creating it with
    /// `own(q)` on first use. The common case loads the map and adds atomically: no
    /// allocation, and no reference count touched on a series both workers update.
    pub fn with<Q, R>(&self, q: &Q, own: impl FnOnce(&Q) -> K, f: impl FnOnce(&Arc<S>) -> R) -> R
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        if let Some(s) = self.map.load().get(q) {
            return f(s);
        }
        let _g = self
            .insert
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cur = self.map.load_full();
        if let Some(s) = cur.get(q) {
            return f(s);
        }
        if cur.len() >= MAX_SERIES {
            return f(&self.overflow);
        }
        let s = Arc::new((self.new)());
        let mut next = (*cur).clone();
        next.insert(own(q), s.clone());
        self.map.store(Arc::new(next));
        f(&s)
    }

    /// Every series, for export.
    pub fn all(&self) -> Arc<HashMap<K, Arc<S>>> {
        self.map.load_full()
    }

    /// The overflow series (label combinations past the cap).
    pub fn overflow(&self) -> &Arc<S> {
        &self.overflow
    }
}

/// All metrics of the process.
pub struct Registry {
    /// HTTP.
    pub http: Family<HttpLabels, HttpSeries>,
    /// TCP.
    pub tcp: Family<TcpLabels, TcpSeries>,
    /// Access-log entries dropped because the queue was full.
    pub log_dropped: AtomicU64,
    /// Access-log entries written.
    pub log_written: AtomicU64,
    /// Access-log export failures.
    pub log_export_errors: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            http: Family::new(|| HttpSeries {
                requests: AtomicU64::new(0),
                duration: Histogram::new(DURATION_BUCKETS),
                request_bytes: Histogram::new(SIZE_BUCKETS),
                response_bytes: Histogram::new(SIZE_BUCKETS),
            }),
            tcp: Family::new(TcpSeries::default),
            log_dropped: AtomicU64::new(0),
            log_written: AtomicU64::new(0),
            log_export_errors: AtomicU64::new(0),
        }
    }
}

/// A stable hash of labels (for tests and dedup).
pub fn hash_of<T: Hash>(t: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(DURATION_BUCKETS);
        for v in [0.5, 3.0, 3.0, 70.0, 9_999_999.0] {
            h.observe(v);
        }
        let (b, sum, n) = h.snapshot();
        assert_eq!(n, 5);
        assert_eq!(b[0], (1.0, 1));
        assert_eq!(b[1], (5.0, 3));
        assert_eq!(b[5], (100.0, 4));
        assert_eq!(b.last().copied(), Some((f64::INFINITY, 5)));
        assert!((sum - 10_000_075.5).abs() < 1.0);
    }

    #[test]
    fn borrowed_http_labels_find_the_owned_series() {
        let f: Family<HttpLabels, AtomicU64> = Family::new(|| AtomicU64::new(0));
        let r = HttpLabelsRef {
            tenant: "team-a",
            gateway: "public-gw",
            destination_service: "web.team-a.svc",
            response_code: 200,
            response_flags: "-",
            request_protocol: "http",
        };
        assert_eq!(hash_of(&r), hash_of(&r.to_owned()));
        for _ in 0..3 {
            f.with(&r, HttpLabelsRef::to_owned, |s| {
                s.fetch_add(1, Ordering::Relaxed)
            });
        }
        let other = HttpLabelsRef {
            response_code: 503,
            ..r
        };
        f.with(&other, HttpLabelsRef::to_owned, |s| {
            s.fetch_add(1, Ordering::Relaxed)
        });
        let all = f.all();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all.get(&r.to_owned()).map(|s| s.load(Ordering::Relaxed)),
            Some(3)
        );
        assert_eq!(f.get(&other.to_owned()).load(Ordering::Relaxed), 1);
    }

    #[test]
    fn families_cap_cardinality() {
        let f: Family<u32, AtomicU64> = Family::new(|| AtomicU64::new(0));
        for i in 0..(MAX_SERIES as u32 + 10) {
            f.get(&i).fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(f.all().len(), MAX_SERIES);
        assert_eq!(f.overflow().load(Ordering::Relaxed), 10);
        // An existing series is found again, not duplicated.
        f.get(&7).fetch_add(1, Ordering::Relaxed);
        assert_eq!(f.all().get(&7).map(|s| s.load(Ordering::Relaxed)), Some(2));
    }
}
