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
use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// How many shards an HTTP series has: one per worker up to 8. Each worker thread adds to its
/// own shard, so two workers finishing requests on the same series never write the same cache
/// line (a line both cores write moves between them on every request); exports sum the shards.
/// Past 8 workers, two share a shard: 8 × 384 bytes per series bounds the memory of a registry
/// at its cardinality cap (20,000 series, 61 MB).
pub fn shards() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, MAX_SHARDS)
    })
}

const MAX_SHARDS: usize = 8;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard: the worker's index for worker threads ([`pin_shard`]), the next in
    /// turn for any other thread that records.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Makes the calling thread record into shard `i` (mod the shard count): worker `i` calls it at
/// start, so workers 0..n never share one when n ≤ [`shards`].
pub fn pin_shard(i: usize) {
    SHARD.with(|s| s.set(Some(i)));
}

fn shard() -> usize {
    SHARD.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
            s.set(Some(i));
            i
        }
    }) % shards()
}

/// Bucket counts and a sum, as one thread records them.
#[derive(Debug)]
struct Buckets<const N: usize> {
    counts: [AtomicU64; N],
    /// Sum of observations × 1000 (fixed point, so it can be atomic).
    sum_milli: AtomicU64,
}

impl<const N: usize> Buckets<N> {
    fn new() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_milli: AtomicU64::new(0),
        }
    }

    fn observe(&self, bounds: &[f64], v: f64) {
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_milli
            .fetch_add((v.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
    }

    fn add_to(&self, h: &mut Histogram) {
        for (t, c) in h.counts.iter_mut().zip(&self.counts) {
            *t += c.load(Ordering::Relaxed);
        }
        h.sum_milli += self.sum_milli.load(Ordering::Relaxed);
    }
}

const DURATION_N: usize = DURATION_BUCKETS.len() + 1;
const SIZE_N: usize = SIZE_BUCKETS.len() + 1;

/// One worker's part of an HTTP series: 48 counters, six cache lines of its own (aligned, so
/// that no other shard's counters share its first or last line).
#[derive(Debug)]
#[repr(align(128))]
struct HttpShard {
    requests: AtomicU64,
    duration: Buckets<DURATION_N>,
    request_bytes: Buckets<SIZE_N>,
    response_bytes: Buckets<SIZE_N>,
}

/// A histogram's totals, summed over a series' shards.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum_milli: u64,
}

impl Histogram {
    fn empty(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_milli: 0,
        }
    }

    /// Cumulative bucket counts (Prometheus `le`), sum and count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            out.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), acc));
        }
        (out, self.sum_milli as f64 / 1000.0, acc)
    }

    /// Raw per-bucket counts (OTLP explicit buckets).
    pub fn buckets(&self) -> (&'static [f64], Vec<u64>) {
        (self.bounds, self.counts.clone())
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

/// One HTTP series: `istio_requests_total` and the three histograms, sharded per worker.
#[derive(Debug)]
pub struct HttpSeries {
    shards: Box<[HttpShard]>,
}

/// An HTTP series' totals at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTotals {
    /// `istio_requests_total`.
    pub requests: u64,
    /// `istio_request_duration_milliseconds`.
    pub duration: Histogram,
    /// `istio_request_bytes`.
    pub request_bytes: Histogram,
    /// `istio_response_bytes`.
    pub response_bytes: Histogram,
}

impl HttpSeries {
    fn new() -> Self {
        Self {
            shards: (0..shards())
                .map(|_| HttpShard {
                    requests: AtomicU64::new(0),
                    duration: Buckets::new(),
                    request_bytes: Buckets::new(),
                    response_bytes: Buckets::new(),
                })
                .collect(),
        }
    }

    /// Records one finished request into the calling thread's shard.
    pub fn record(&self, duration_ms: f64, bytes_in: u64, bytes_out: u64) {
        let Some(s) = self.shards.get(shard()).or_else(|| self.shards.first()) else {
            return;
        };
        s.requests.fetch_add(1, Ordering::Relaxed);
        s.duration.observe(DURATION_BUCKETS, duration_ms);
        s.request_bytes.observe(SIZE_BUCKETS, bytes_in as f64);
        s.response_bytes.observe(SIZE_BUCKETS, bytes_out as f64);
    }

    /// The series' totals: every shard summed.
    pub fn totals(&self) -> HttpTotals {
        let mut t = HttpTotals {
            requests: 0,
            duration: Histogram::empty(DURATION_BUCKETS),
            request_bytes: Histogram::empty(SIZE_BUCKETS),
            response_bytes: Histogram::empty(SIZE_BUCKETS),
        };
        for s in &self.shards {
            t.requests += s.requests.load(Ordering::Relaxed);
            s.duration.add_to(&mut t.duration);
            s.request_bytes.add_to(&mut t.request_bytes);
            s.response_bytes.add_to(&mut t.response_bytes);
        }
        t
    }
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
            http: Family::new(HttpSeries::new),
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
        let s = HttpSeries::new();
        for v in [0.5, 3.0, 3.0, 70.0, 9_999_999.0] {
            s.record(v, 0, 0);
        }
        let (b, sum, n) = s.totals().duration.snapshot();
        assert_eq!(n, 5);
        assert_eq!(b[0], (1.0, 1));
        assert_eq!(b[1], (5.0, 3));
        assert_eq!(b[5], (100.0, 4));
        assert_eq!(b.last().copied(), Some((f64::INFINITY, 5)));
        assert!((sum - 10_000_075.5).abs() < 1.0);
    }

    #[test]
    fn every_thread_s_shard_is_counted_once() {
        let s = Arc::new(HttpSeries::new());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    // Two pinned as workers are, two taking the next shard in turn.
                    if i < 2 {
                        pin_shard(i);
                    }
                    for _ in 0..1000 {
                        s.record(7.0, 100, 2_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread");
        }
        let t = s.totals();
        assert_eq!(t.requests, 4000);
        let (d, sum, n) = t.duration.snapshot();
        assert_eq!(n, 4000);
        assert_eq!(d[1], (5.0, 0));
        assert_eq!(d[2], (10.0, 4000));
        assert!((sum - 28_000.0).abs() < 0.01);
        assert_eq!(t.request_bytes.snapshot().0[2], (100.0, 4000));
        assert_eq!(t.response_bytes.snapshot().0[3], (1000.0, 0));
        assert_eq!(t.response_bytes.snapshot().0[4], (10000.0, 4000));
    }

    #[test]
    fn a_shard_owns_its_cache_lines() {
        assert_eq!(align_of::<HttpShard>(), 128);
        assert_eq!(size_of::<HttpShard>(), 384);
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
