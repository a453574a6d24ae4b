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

impl From<DynamicError> for crate::http::errors::ProxyError {
    fn from(e: DynamicError) -> Self {
        match e {
            DynamicError::NotCovered(name) => {
                tracing::info!(host = %name, "name not covered by the cluster's DYNAMIC_DNS hosts");
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
    until: Instant,
}

/// The names a DYNAMIC_DNS cluster has resolved.
pub struct DynamicHosts {
    /// The ServiceEntry's hosts (`*.suffix` or exact names), lower case.
    hosts: Vec<String>,
    port: u16,
    cache: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for DynamicHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DynamicHosts({:?}:{})", self.hosts, self.port)
    }
}

/// `name` without a port, a trailing dot, or upper case.
fn bare(name: &str) -> String {
    let host = crate::http::rewrite::split_authority(name).0;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl DynamicHosts {
    /// Lookups for `hosts` (the ServiceEntry's), connecting on `port`.
    pub fn new(hosts: &[String], port: u16) -> Self {
        Self {
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            port,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a ServiceEntry host covers `name` (a wildcard covers one label or more).
    fn covers(&self, name: &str) -> bool {
        self.hosts.iter().any(|h| match h.strip_prefix('*') {
            Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
            None => h == name,
        })
    }

    /// The endpoints of the name `authority` names: from the cache while its answer is
    /// fresh, else looked up now.
    pub async fn endpoints(
        &self,
        authority: &str,
    ) -> Result<Arc<Vec<Arc<Endpoint>>>, DynamicError> {
        let name = bare(authority);
        if !self.covers(&name) || name.parse::<IpAddr>().is_ok() {
            return Err(DynamicError::NotCovered(name));
        }
        let now = Instant::now();
        let stale = {
            let cache = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match cache.get(&name) {
                Some(e) if e.until > now => {
                    return if e.endpoints.is_empty() {
                        Err(DynamicError::Resolution {
                            name,
                            reason: "no address".into(),
                        })
                    } else {
                        Ok(e.endpoints.clone())
                    };
                }
                Some(e) => Some(e.endpoints.clone()),
                None => None,
            }
        };
        let (addrs, ttl) = match self.lookup(&name).await {
            Ok(found) => found,
            // A failed lookup (timeout, server failure) keeps the last addresses a while.
            Err(reason) => match stale.filter(|s| !s.is_empty()) {
                Some(s) => {
                    tracing::warn!(host = %name, %reason, "DNS lookup failed; keeping the previous addresses");
                    self.store(&name, s.clone(), NEGATIVE_TTL);
                    return Ok(s);
                }
                None => return Err(DynamicError::Resolution { name, reason }),
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
        self.store(&name, endpoints.clone(), ttl);
        if endpoints.is_empty() {
            return Err(DynamicError::Resolution {
                name,
                reason: "no address".into(),
            });
        }
        Ok(endpoints)
    }

    /// Looks `name` up: its addresses on the cluster's port and how long they hold. No
    /// address (NXDOMAIN, no records) is an answer, kept for [`NEGATIVE_TTL`].
    async fn lookup(&self, name: &str) -> Result<(Vec<SocketAddr>, Duration), String> {
        let Some(r) = super::dns::resolver() else {
            return Err("no DNS resolver".into());
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, r.lookup_ip(name)).await {
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

    fn store(&self, name: &str, endpoints: Arc<Vec<Arc<Endpoint>>>, ttl: Duration) {
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
        let d = DynamicHosts::new(&["*.partner.test".into(), "api.other.test".into()], 443);
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
        let d = DynamicHosts::new(&["*.partner.test".into()], 443);
        assert_eq!(
            d.endpoints("localhost").await.err(),
            Some(DynamicError::NotCovered("localhost".into()))
        );
        // `*.partner.test` does not cover an address written as the authority.
        let d = DynamicHosts::new(&["*.0.0.1".into()], 443);
        assert!(matches!(
            d.endpoints("127.0.0.1").await,
            Err(DynamicError::NotCovered(_))
        ));
    }

    #[tokio::test]
    async fn a_name_resolves_once_while_its_answer_is_fresh() {
        // `localhost` is answered by the resolver itself, so no DNS server is needed.
        let d = DynamicHosts::new(&["localhost".into()], 8080);
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
    }
}
