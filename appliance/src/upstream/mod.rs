//! Upstream clusters at run time: endpoints (static or resolved by DNS), load balancing,
//! outlier detection, circuit breakers and TLS origination. A cluster's runtime survives a
//! reload that does not change its configuration, so counters, ejections and pooled
//! connections carry over.

pub mod connect;
pub mod dns;
pub mod dynamic;
pub mod endpoint;
pub mod h1;
pub mod lb;
pub mod pool;
pub mod proxy_protocol;
pub mod tunnel;
pub mod unix;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tenants::snapshot::{Cluster, Endpoints, UpstreamProtocol};
use tokio::sync::Semaphore;

use crate::credentials::Store;
pub use endpoint::{Endpoint, Outcome};

/// Circuit-breaker limits and their live counters (`connectionPool`).
#[derive(Debug)]
pub struct Limits {
    /// `tcp.maxConnections`: permits for upstream connections (all threads).
    pub connections: Option<Arc<Semaphore>>,
    /// `http.http1MaxPendingRequests`.
    pub max_pending: u32,
    /// Requests waiting for a connection, and the signal that asks idle pooled connections
    /// to close so that a waiter gets their permit.
    pub pending: Arc<Pending>,
    /// `http.http2MaxRequests`: in-flight requests.
    pub max_requests: u32,
    /// In-flight requests.
    pub requests: AtomicU32,
    /// `http.maxRetries`: concurrent retries.
    pub max_retries: u32,
    /// `retryBudget`: concurrent retries as a share of the requests in flight and waiting,
    /// in place of `max_retries`.
    pub retry_budget: Option<tenants::model::RetryBudget>,
    /// Retries in flight.
    pub retries: AtomicU32,
    /// `http.maxRequestsPerConnection` (0: unlimited).
    pub per_connection: u32,
    /// Pooled connection idle timeout.
    pub idle_timeout: Duration,
    /// `tcp.connectTimeout` (default 10s, as Envoy's).
    pub connect_timeout: Duration,
    /// `tcp.idleTimeout` for TCP proxying (default 1h; `0s` disables).
    pub tcp_idle_timeout: Option<Duration>,
    /// `tcp.tcpKeepalive`: TCP keepalive on every upstream connection (the operating
    /// system's time, interval or probe count for any it leaves out).
    pub keepalive: Option<socket2::TcpKeepalive>,
    /// `tcp.maxConnectionDuration`: an HTTP connection this old takes no new request and
    /// closes once its requests are done; a TCP proxy connection is closed (flag DT).
    pub max_connection_duration: Option<Duration>,
}

/// Requests waiting for a connection permit (`http1MaxPendingRequests`). Pooled connections
/// hold a permit while idle; when a request starts waiting, idle connections of the cluster
/// (on any worker thread) are asked to close, and a connection that becomes idle while
/// requests wait closes instead of idling, so a waiter is never stuck behind an idle one.
#[derive(Debug, Default)]
pub struct Pending {
    /// Requests waiting now.
    pub count: AtomicU32,
    /// Wakes HTTP/2 connection tasks to check whether they should give their permit back
    /// (idle HTTP/1.1 connections have no task: each thread's pool sweeper is woken instead).
    pub reclaim: tokio::sync::Notify,
    /// Requests waiting for a stream on an HTTP/2 connection of the cluster (at
    /// `maxConcurrentStreams`, with `maxConnections` reached): pending requests too, but
    /// they want a connection kept, not one closed.
    pub for_stream: AtomicU32,
}

impl Limits {
    /// The limits a cluster's policy sets, counters at zero.
    pub fn of(policy: &tenants::model::PortPolicy) -> Self {
        let pool = policy.connection_pool.clone().unwrap_or_default();
        Self {
            connections: pool
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            max_pending: pool.http1_max_pending_requests.unwrap_or(u32::MAX),
            pending: Arc::default(),
            max_requests: pool.http2_max_requests.unwrap_or(u32::MAX),
            requests: AtomicU32::new(0),
            max_retries: pool.max_retries.unwrap_or(u32::MAX),
            retry_budget: policy.retry_budget,
            retries: AtomicU32::new(0),
            per_connection: pool.max_requests_per_connection.unwrap_or(0),
            idle_timeout: pool.http_idle_timeout.unwrap_or(Duration::from_secs(3600)),
            connect_timeout: pool.connect_timeout.unwrap_or(Duration::from_secs(10)),
            tcp_idle_timeout: match pool.tcp_idle_timeout {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => Some(Duration::from_secs(3600)),
            },
            keepalive: pool.tcp_keepalive.map(|(time, interval, probes)| {
                let mut k = socket2::TcpKeepalive::new();
                if let Some(t) = time {
                    k = k.with_time(t);
                }
                if let Some(i) = interval {
                    k = k.with_interval(i);
                }
                if let Some(n) = probes {
                    k = k.with_retries(n);
                }
                k
            }),
            max_connection_duration: pool.max_connection_duration.filter(|d| !d.is_zero()),
        }
    }

    /// Whether requests in flight are counted: for `http2MaxRequests`, or for a retry
    /// budget's share of them.
    pub fn counts_requests(&self) -> bool {
        self.max_requests != u32::MAX || self.retry_budget.is_some()
    }

    /// How many retries may be in flight now: the budget's share of the requests in flight
    /// and waiting, never fewer than its floor (Envoy's `RetryBudgetImpl::max`), else
    /// `maxRetries`. A request is counted in flight from its start, before it waits for a
    /// connection, so `requests` already holds Envoy's active and pending requests.
    pub fn max_retries_now(&self) -> u32 {
        let Some(b) = self.retry_budget else {
            return self.max_retries;
        };
        let active = self.requests.load(Ordering::Acquire);
        // Truncated as Envoy's integer conversion truncates; at most `active`, so it fits.
        let share = (b.percent / 100.0 * f64::from(active)) as u32;
        share.max(b.min_concurrency)
    }
}

/// A cluster at run time.
pub struct ClusterRt {
    /// Unique per runtime instance (pool keys).
    pub id: u64,
    /// The compiled configuration.
    pub config: Arc<Cluster>,
    /// Current endpoints.
    pub endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Balancer state.
    pub balancer: lb::Balancer,
    /// TLS origination config, ALPN per the cluster's protocol.
    pub tls: Option<crate::tls::client::Origination>,
    /// Circuit breakers.
    pub limits: Limits,
    /// Endpoints currently ejected (for maxEjectionPercent).
    pub ejected: AtomicU32,
    /// `DYNAMIC_DNS`: endpoints per requested name, instead of `endpoints`.
    pub dynamic: Option<dynamic::DynamicHosts>,
    /// Platform `unix://` endpoints: the socket each stand-in address names.
    pub unix: HashMap<SocketAddr, std::path::PathBuf>,
    dns: Option<tokio::task::AbortHandle>,
}

impl Drop for ClusterRt {
    fn drop(&mut self) {
        if let Some(h) = &self.dns {
            h.abort();
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl ClusterRt {
    /// Builds the runtime of a cluster; DNS clusters start resolving on `handle`.
    pub fn new(config: Arc<Cluster>, store: &Store, handle: &tokio::runtime::Handle) -> Arc<Self> {
        let limits = Limits::of(&config.policy);
        let alpn: &[&[u8]] = match config.protocol {
            UpstreamProtocol::Http2 => &[b"h2"],
            UpstreamProtocol::ClientProtocol => &[b"h2", b"http/1.1"],
            _ => &[b"http/1.1"],
        };
        // A cluster asked to originate TLS never falls back to plaintext: when the client
        // configuration cannot be built, every handshake fails (503) instead.
        let tls = config.tls.as_ref().map(|t| match crate::tls::client::build(t, store, alpn) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(cluster = %config.name, error = %e, "TLS origination not configured; requests to the cluster fail");
                crate::tls::client::refusing(store, alpn)
            }
        });
        let initial: Vec<Arc<Endpoint>> = match &config.endpoints {
            Endpoints::Static(v) => v
                .iter()
                .map(|e| Arc::new(Endpoint::new(e.address, e.weight)))
                .collect(),
            _ => Vec::new(),
        };
        let unix = match &config.endpoints {
            Endpoints::Static(v) => v
                .iter()
                .filter_map(|e| Some((e.address, unix::path(e.unix.as_deref()?))))
                .collect(),
            _ => HashMap::new(),
        };
        let endpoints = ArcSwap::from_pointee(initial);
        Arc::new_cyclic(|weak| Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            endpoints,
            balancer: lb::Balancer::default(),
            tls,
            limits,
            ejected: AtomicU32::new(0),
            unix,
            dynamic: match &config.endpoints {
                Endpoints::Dynamic { hosts, name, port } => {
                    Some(dynamic::DynamicHosts::new(hosts, name.as_deref(), *port))
                }
                _ => None,
            },
            dns: match &config.endpoints {
                Endpoints::Dns { names, first_only } => {
                    Some(dns::spawn(handle, weak.clone(), names.clone(), *first_only))
                }
                _ => None,
            },
            config,
        })
    }

    /// Records a result on `ep`, ejecting it when outlier detection says so and the budget
    /// (`maxEjectionPercent`) allows. Envoy's budget rule (since 1.29, without
    /// `always_eject_one_host`, which Istio does not set): eject only if the share ejected
    /// afterwards is at most the maximum, so at the default 10 % a cluster of fewer than ten
    /// endpoints ejects none. An endpoint already ejected is not ejected again.
    pub fn record(&self, ep: &Endpoint, outcome: Outcome) {
        let od = self.config.policy.outlier_detection.as_ref();
        if ep.record(outcome, od)
            && let Some(od) = od
        {
            let now = crate::clock::now_ms();
            let eps = self.endpoints.load();
            let ejected = eps.iter().filter(|e| e.is_ejected(now)).count();
            if !ep.is_ejected(now)
                && (ejected + 1) * 100 <= eps.len() * od.max_ejection_percent as usize
            {
                ep.eject(od, now);
            }
        }
    }
}

/// A cluster built anew for a changed configuration keeps its addresses' join times, so a
/// reload does not put every endpoint back into `warmup`.
pub fn keep_join_times(rt: &ClusterRt, old: &ClusterRt) {
    let old = old.endpoints.load();
    for e in rt.endpoints.load().iter() {
        if let Some(o) = old.iter().find(|o| o.addr == e.addr) {
            e.joined_with(o);
        }
    }
}

/// Replaces a cluster's endpoints, keeping counters of addresses that stay.
pub fn replace_endpoints(rt: &ClusterRt, fresh: Vec<Arc<Endpoint>>) {
    let old = rt.endpoints.load();
    for f in &fresh {
        if let Some(o) = old.iter().find(|o| o.addr == f.addr) {
            f.inherit(o);
        }
    }
    rt.endpoints.store(Arc::new(fresh));
}

#[cfg(test)]
mod tests {
    use tenants::model::{PortPolicy, RetryBudget};

    use super::*;

    #[test]
    fn a_retry_budget_is_a_share_of_the_requests_in_flight_with_a_floor() {
        let l = Limits::of(&PortPolicy::default());
        assert_eq!(
            l.max_retries_now(),
            u32::MAX,
            "no budget, no maxRetries: no limit"
        );
        let l = Limits::of(&PortPolicy {
            retry_budget: Some(RetryBudget {
                percent: 25.0,
                min_concurrency: 3,
            }),
            ..PortPolicy::default()
        });
        assert!(l.counts_requests());
        assert_eq!(l.max_retries_now(), 3, "the floor with nothing in flight");
        l.requests.store(100, Ordering::Release);
        assert_eq!(l.max_retries_now(), 25);
        // Requests waiting for a connection are already in flight: not counted twice.
        l.pending.count.store(100, Ordering::Release);
        assert_eq!(l.max_retries_now(), 25);
        l.requests.store(13, Ordering::Release);
        assert_eq!(
            l.max_retries_now(),
            3,
            "25 % of 13 truncates to 3, the floor"
        );
    }
}
