//! `resolution: DYNAMIC_DNS`: a ServiceEntry for wildcard hosts (`*.partner.example`) whose
//! endpoints are the addresses of the name each request asks for (its authority, or a TLS
//! connection's SNI), resolved when first asked and kept for the answer's TTL, as Envoy's
//! dynamic forward proxy does.
//!
//! Stricter than Envoy: only names the ServiceEntry's wildcards cover are looked up, so a
//! route that sends other hosts to the cluster cannot make the gateway resolve and connect
//! to any name a client writes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Endpoint;

/// Shortest and longest time an answer is kept.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);
/// How long a name without addresses is remembered as such.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Names kept per cluster (Envoy's `dns_cache_config.max_hosts` default).
const MAX_NAMES: usize = 1024;
/// How long a lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Names looked up at once per cluster (Envoy's DNS cache circuit breaker default).
const MAX_PENDING: usize = 1024;

impl From<DynamicError> for crate::http::errors::ProxyError {
    fn from(e: DynamicError) -> Self {
        match e {
            DynamicError::NotCovered(name) => {
                // Debug only: any client can send such names.
                tracing::debug!(host = %name, "name not covered by the cluster's DYNAMIC_DNS hosts");
                Self::NoHealthyUpstream
            }
            e @ DynamicError::Resolution { .. } => Self::DnsFailed(e.to_string()),
        }
    }
}

/// Why a request's name has no endpoints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DynamicError {
    /// The name is not one the ServiceEntry's hosts cover.
    #[error("{0:?} is not covered by the ServiceEntry's DYNAMIC_DNS hosts")]
    NotCovered(String),
    /// The lookup failed or found no address.
    #[error("DNS resolution of {name:?} failed: {reason}")]
    Resolution {
        /// The name.
        name: String,
        /// The resolver's error.
        reason: String,
    },
}

struct Entry {
    endpoints: Arc<Vec<Arc<Endpoint>>>,
    /// Why there are none, when there are none.
    error: Option<String>,
    until: Instant,
}

/// Names being looked up: requests for one name wait for its single lookup. The count is
/// of the requests holding or waiting for the name's turn.
type Flights = Mutex<HashMap<String, (Arc<tokio::sync::Mutex<()>>, usize)>>;

/// The names a DYNAMIC_DNS cluster has resolved.
pub struct DynamicHosts {
    /// The ServiceEntry's hosts (`*.suffix` or exact names), lower case.
    hosts: Vec<String>,
    /// The route's destination when it names one host: that name, whatever the request's.
    fixed: Option<String>,
    port: u16,
    cache: Mutex<HashMap<String, Entry>>,
    flights: Flights,
    /// Tests: lookups made, and a wait before each, so requests can overlap one.
    #[cfg(test)]
    probe: (std::sync::atomic::AtomicUsize, Duration),
}

impl std::fmt::Debug for DynamicHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DynamicHosts({:?}:{})", self.hosts, self.port)
    }
}

/// `name` without a port, brackets, a trailing dot, or upper case.
fn bare(name: &str) -> String {
    let host = crate::http::rewrite::split_authority(name).0;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A place in [`Flights`]; leaving it (done, or the request gone) lets the name go once
/// nobody else holds or waits for it.
struct Flight<'a> {
    flights: &'a Flights,
    name: &'a str,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut f = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, n)) = f.get_mut(self.name) {
            *n -= 1;
            if *n == 0 {
                f.remove(self.name);
            }
        }
    }
}

impl DynamicHosts {
    /// Lookups for `hosts` (the ServiceEntry's), connecting on `port`; `fixed` is the
    /// destination's own name when it is not a wildcard.
    pub fn new(hosts: &[String], fixed: Option<&str>, port: u16) -> Self {
        Self {
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            fixed: fixed.map(bare),
            port,
            cache: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            #[cfg(test)]
            probe: (std::sync::atomic::AtomicUsize::new(0), Duration::ZERO),
        }
    }

    /// Whether a ServiceEntry host covers `name` (a wildcard covers one label or more).
    fn covers(&self, name: &str) -> bool {
        self.hosts.iter().any(|h| match h.strip_prefix('*') {
            Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
            None => h == name,
        })
    }

    /// The fresh answer for `name`, if any: its endpoints, or the error of a name found to
    /// have none.
    fn fresh(&self, name: &str) -> Option<Result<Arc<Vec<Arc<Endpoint>>>, DynamicError>> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = cache.get(name).filter(|e| e.until > Instant::now())?;
        Some(match &e.error {
            Some(reason) => Err(DynamicError::Resolution {
                name: name.to_string(),
                reason: reason.clone(),
            }),
            None => Ok(e.endpoints.clone()),
        })
    }

    /// The endpoints of the name `authority` names (or the destination's own name): from
    /// the cache while its answer is fresh, else looked up now, once for all the requests
    /// that ask at the same time.
    pub async fn endpoints(
        &self,
        authority: &str,
    ) -> Result<Arc<Vec<Arc<Endpoint>>>, DynamicError> {
        let name = match &self.fixed {
            Some(n) => n.clone(),
            None => bare(authority),
        };
        if !self.covers(&name) || name.parse::<IpAddr>().is_ok() {
            return Err(DynamicError::NotCovered(name));
        }
        if let Some(r) = self.fresh(&name) {
            return r;
        }
        let gate = {
            let mut f = self
                .flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if f.len() >= MAX_PENDING && !f.contains_key(&name) {
                return Err(DynamicError::Resolution {
                    name,
                    reason: format!("{MAX_PENDING} lookups are in flight already"),
                });
            }
            let (gate, n) = f.entry(name.clone()).or_default();
            *n += 1;
            gate.clone()
        };
        let _flight = Flight {
            flights: &self.flights,
            name: &name,
        };
        let _turn = gate.lock().await;
        // The lookup this request waited for may have answered it.
        if let Some(r) = self.fresh(&name) {
            return r;
        }
        self.resolve(&name).await
    }

    /// Looks `name` up and keeps the answer.
    async fn resolve(&self, name: &str) -> Result<Arc<Vec<Arc<Endpoint>>>, DynamicError> {
        let stale = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .map(|e| e.endpoints.clone());
        let (addrs, ttl) = match self.lookup(name).await {
            Ok(found) => found,
            // A failed lookup (timeout, server failure) keeps the last addresses a while.
            Err(reason) => match stale.filter(|s| !s.is_empty()) {
                Some(s) => {
                    tracing::warn!(host = %name, %reason, "DNS lookup failed; keeping the previous addresses");
                    self.store(name, s.clone(), None, NEGATIVE_TTL);
                    return Ok(s);
                }
                None => {
                    // Kept a moment, so the requests that waited for this lookup do not
                    // each make their own.
                    self.store(name, Arc::default(), Some(reason.clone()), MIN_TTL);
                    return Err(DynamicError::Resolution {
                        name: name.to_string(),
                        reason,
                    });
                }
            },
        };
        // Endpoints of addresses that stay keep their counters (in flight, outlier state).
        let endpoints: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|a| {
                stale
                    .as_ref()
                    .and_then(|s| s.iter().find(|e| e.addr == *a).cloned())
                    .unwrap_or_else(|| Arc::new(Endpoint::new(*a, 1)))
            })
            .collect();
        let endpoints = Arc::new(endpoints);
        if endpoints.is_empty() {
            let reason = "the name has no address".to_string();
            self.store(name, endpoints, Some(reason.clone()), ttl);
            return Err(DynamicError::Resolution {
                name: name.to_string(),
                reason,
            });
        }
        self.store(name, endpoints.clone(), None, ttl);
        Ok(endpoints)
    }

    /// Looks `name` up as a fully qualified name (the resolver's search domains would
    /// reach names the wildcard does not cover): its addresses on the cluster's port and
    /// how long they hold. No address (NXDOMAIN, no records) is an answer, kept for
    /// [`NEGATIVE_TTL`].
    async fn lookup(&self, name: &str) -> Result<(Vec<SocketAddr>, Duration), String> {
        let Some(r) = super::dns::resolver() else {
            return Err("no DNS resolver".into());
        };
        #[cfg(test)]
        {
            self.probe
                .0
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.probe.1).await;
        }
        let fqdn = format!("{name}.");
        match tokio::time::timeout(LOOKUP_TIMEOUT, r.lookup_ip(fqdn.as_str())).await {
            Err(_) => Err("timed out".into()),
            Ok(Ok(l)) => {
                let ttl = l
                    .valid_until()
                    .saturating_duration_since(Instant::now())
                    .clamp(MIN_TTL, MAX_TTL);
                Ok((
                    l.iter().map(|ip| SocketAddr::new(ip, self.port)).collect(),
                    ttl,
                ))
            }
            Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => {
                Ok((Vec::new(), NEGATIVE_TTL))
            }
            Ok(Err(e)) => Err(e.to_string()),
        }
    }

    fn store(
        &self,
        name: &str,
        endpoints: Arc<Vec<Arc<Endpoint>>>,
        error: Option<String>,
        ttl: Duration,
    ) {
        let now = Instant::now();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_NAMES && !cache.contains_key(name) {
            cache.retain(|_, e| e.until > now);
            if cache.len() >= MAX_NAMES {
                // Still full of fresh answers: the one that runs out first goes.
                if let Some(k) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(
            name.to_string(),
            Entry {
                endpoints,
                error,
                until: now + ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_names_below_them_only() {
        let d = DynamicHosts::new(
            &["*.partner.test".into(), "api.other.test".into()],
            None,
            443,
        );
        for name in ["a.partner.test", "x.y.partner.test", "api.other.test"] {
            assert!(d.covers(name), "{name}");
        }
        for name in [
            "partner.test",
            ".partner.test",
            "evilpartner.test",
            "other.test",
        ] {
            assert!(!d.covers(name), "{name}");
        }
        assert_eq!(bare("A.Partner.Test.:8443"), "a.partner.test");
        assert_eq!(bare("[::1]:80"), "::1");
    }

    #[tokio::test]
    async fn names_outside_the_hosts_and_addresses_are_not_looked_up() {
        let d = DynamicHosts::new(&["*.partner.test".into()], None, 443);
        assert_eq!(
            d.endpoints("localhost").await.err(),
            Some(DynamicError::NotCovered("localhost".into()))
        );
        // `*.partner.test` does not cover an address written as the authority.
        let d = DynamicHosts::new(&["*.0.0.1".into()], None, 443);
        assert!(matches!(
            d.endpoints("127.0.0.1").await,
            Err(DynamicError::NotCovered(_))
        ));
    }

    #[tokio::test]
    async fn a_name_resolves_once_while_its_answer_is_fresh() {
        // `localhost` is answered by the resolver itself, so no DNS server is needed.
        let d = DynamicHosts::new(&["localhost".into()], None, 8080);
        let a = d.endpoints("localhost:9999").await.expect("localhost");
        assert!(
            a.iter()
                .any(|e| e.addr == "127.0.0.1:8080".parse().expect("addr")),
            "{:?}",
            a.iter().map(|e| e.addr).collect::<Vec<_>>()
        );
        let b = d.endpoints("LOCALHOST").await.expect("cached");
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second request uses the cached endpoints"
        );
        assert_eq!(d.probe.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn requests_at_once_share_one_lookup_and_leave_nothing_in_flight() {
        let mut d = DynamicHosts::new(&["localhost".into()], None, 8080);
        d.probe.1 = Duration::from_millis(50);
        let (a, b, c) = tokio::join!(
            d.endpoints("localhost"),
            d.endpoints("localhost"),
            d.endpoints("localhost")
        );
        let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
        assert_eq!(d.probe.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&b, &c));
        assert!(d.flights.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_destination_naming_one_host_resolves_it_whatever_the_request_asks() {
        let d = DynamicHosts::new(&["localhost".into()], Some("LOCALHOST."), 8080);
        let eps = d
            .endpoints("somewhere.else.example")
            .await
            .expect("fixed name");
        assert!(
            eps.iter()
                .all(|e| e.addr.port() == 8080 && e.addr.ip().is_loopback())
        );
    }

    #[tokio::test]
    async fn waiters_share_a_failed_lookup_and_a_dropped_request_leaves_no_flight() {
        // `nowhere.invalid` fails (RFC 6761: never resolves), whatever DNS is reachable.
        let mut d = DynamicHosts::new(&["*.invalid".into()], None, 80);
        d.probe.1 = Duration::from_millis(50);
        let (a, b) = tokio::join!(
            d.endpoints("nowhere.invalid"),
            d.endpoints("nowhere.invalid")
        );
        assert!(a.is_err() && b.is_err());
        assert_eq!(d.probe.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A request given up while it waits for its turn.
        let mut d = DynamicHosts::new(&["localhost".into()], None, 80);
        d.probe.1 = Duration::from_millis(200);
        let mut first = Box::pin(d.endpoints("localhost"));
        let mut second = Box::pin(d.endpoints("localhost"));
        let _ = tokio::time::timeout(Duration::from_millis(20), async {
            tokio::join!(&mut first, &mut second)
        })
        .await;
        drop(first);
        drop(second);
        assert!(d.flights.lock().expect("lock").is_empty());
    }
}
