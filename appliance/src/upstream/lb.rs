//! Endpoint choice: LEAST_REQUEST (Istio's default), ROUND_ROBIN, RANDOM and consistent
//! hashing, skipping endpoints outlier detection ejected.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;
use tenants::model::{LoadBalancer, OutlierDetection};

use super::endpoint::Endpoint;

/// Per-cluster balancer state.
#[derive(Debug, Default)]
pub struct Balancer {
    rr: AtomicUsize,
}

/// FNV-1a over bytes, for hash keys.
pub fn hash_bytes(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

fn mix(key: u64, e: &Endpoint) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    e.addr.hash(&mut h);
    h.finish()
}

impl Balancer {
    /// Chooses an endpoint. `hash` is the consistent-hash key when the policy has one.
    /// Ejected endpoints are skipped unless fewer than `minHealthPercent` would remain: then
    /// Envoy's panic mode uses them all. Istio makes `minHealthPercent` Envoy's panic
    /// threshold, and its default 0 turns panic mode off, so with every endpoint ejected
    /// there is none to choose (503 UH).
    pub fn pick(
        &self,
        eps: &[Arc<Endpoint>],
        policy: Option<&LoadBalancer>,
        od: Option<&OutlierDetection>,
        hash: Option<u64>,
        now_ms: u64,
    ) -> Option<Arc<Endpoint>> {
        if eps.is_empty() {
            return None;
        }
        // Nearly always nothing is ejected: choose among the endpoints as they are, without
        // collecting the healthy ones (an allocation per request).
        let ejected = |e: &Arc<Endpoint>| e.is_ejected(now_ms);
        if od.is_none() || !eps.iter().any(ejected) {
            return self.choose(eps, policy, hash).cloned();
        }
        let healthy: Vec<&Arc<Endpoint>> = eps.iter().filter(|e| !ejected(e)).collect();
        let min_pct = od.map_or(0, |o| o.min_health_percent) as usize;
        if healthy.len() * 100 < eps.len() * min_pct {
            self.choose(eps, policy, hash).cloned()
        } else {
            self.choose(&healthy, policy, hash).cloned()
        }
    }

    fn choose<'a, E: Borrow<Arc<Endpoint>>>(
        &self,
        set: &'a [E],
        policy: Option<&LoadBalancer>,
        hash: Option<u64>,
    ) -> Option<&'a Arc<Endpoint>> {
        let at = |i: usize| set.get(i).map(Borrow::borrow);
        if set.len() <= 1 {
            // Also keeps an empty set (every endpoint ejected) away from `random_range(0..0)`.
            return at(0);
        }
        match policy {
            Some(LoadBalancer::ConsistentHash(_)) => match hash {
                // Rendezvous hashing: stable per key, minimal movement when endpoints change.
                Some(k) => set.iter().map(Borrow::borrow).max_by_key(|e| mix(k, e)),
                None => random(set),
            },
            Some(LoadBalancer::RoundRobin) => {
                let total: u64 = set.iter().map(|e| u64::from(e.borrow().weight)).sum();
                let mut n = (self.rr.fetch_add(1, Ordering::Relaxed) as u64) % total.max(1);
                for e in set {
                    let w = u64::from(e.borrow().weight);
                    if n < w {
                        return Some(e.borrow());
                    }
                    n -= w;
                }
                at(0)
            }
            Some(LoadBalancer::Random) => random(set),
            // LEAST_REQUEST: power of two random choices, weighted by active/weight.
            _ => {
                let mut rng = rand::rng();
                let a = at(rng.random_range(0..set.len()))?;
                let b = at(rng.random_range(0..set.len()))?;
                let load = |e: &Endpoint| {
                    (u64::from(e.active.load(Ordering::Relaxed)) + 1) * 1000 / u64::from(e.weight)
                };
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }
}

fn random<E: Borrow<Arc<Endpoint>>>(set: &[E]) -> Option<&Arc<Endpoint>> {
    let total: u64 = set.iter().map(|e| u64::from(e.borrow().weight)).sum();
    let mut n = rand::rng().random_range(0..total.max(1));
    for e in set {
        let w = u64::from(e.borrow().weight);
        if n < w {
            return Some(e.borrow());
        }
        n -= w;
    }
    set.last().map(Borrow::borrow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn eps(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                    1,
                ))
            })
            .collect()
    }

    fn od() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 2,
            consecutive_gateway: 0,
            consecutive_local_origin: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
            min_health_percent: 0,
        }
    }

    #[test]
    fn round_robin_cycles() {
        let b = Balancer::default();
        let e = eps(3);
        let picks: Vec<u16> = (0..6)
            .map(|_| {
                b.pick(&e, Some(&LoadBalancer::RoundRobin), None, None, 0)
                    .unwrap()
                    .addr
                    .port()
            })
            .collect();
        assert_eq!(picks, vec![1000, 1001, 1002, 1000, 1001, 1002]);
    }

    #[test]
    fn consistent_hash_is_sticky_and_spreads() {
        let b = Balancer::default();
        let e = eps(4);
        let lb = LoadBalancer::ConsistentHash(tenants::model::HashKey::SourceIp);
        let first = b.pick(&e, Some(&lb), None, Some(42), 0).unwrap().addr;
        for _ in 0..20 {
            assert_eq!(
                b.pick(&e, Some(&lb), None, Some(42), 0).unwrap().addr,
                first
            );
        }
        let distinct: std::collections::HashSet<_> = (0..200u64)
            .map(|k| {
                b.pick(&e, Some(&lb), None, Some(hash_bytes(&k.to_be_bytes())), 0)
                    .unwrap()
                    .addr
            })
            .collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn ejected_endpoints_are_skipped_until_due() {
        let b = Balancer::default();
        let e = eps(2);
        let o = od();
        assert!(!e[0].record(super::super::endpoint::Outcome::Error5xx, Some(&o)));
        assert!(e[0].record(super::super::endpoint::Outcome::Error5xx, Some(&o)));
        e[0].eject(&o, 1_000);
        for _ in 0..20 {
            let p = b
                .pick(&e, Some(&LoadBalancer::RoundRobin), Some(&o), None, 2_000)
                .unwrap();
            assert_eq!(p.addr.port(), 1001);
        }
        // After baseEjectionTime the endpoint is back.
        let back: std::collections::HashSet<u16> = (0..4)
            .map(|_| {
                b.pick(&e, Some(&LoadBalancer::RoundRobin), Some(&o), None, 40_000)
                    .unwrap()
                    .addr
                    .port()
            })
            .collect();
        assert!(back.contains(&1000));
    }

    #[test]
    fn with_every_endpoint_ejected_panic_mode_needs_a_min_health_percent() {
        let b = Balancer::default();
        let e = eps(2);
        let mut o = od();
        e[0].eject(&o, 1_000);
        e[1].eject(&o, 1_000);
        let rr = Some(&LoadBalancer::RoundRobin);
        // Istio's default minHealthPercent 0: panic mode off, nothing to choose, whatever
        // the policy.
        for lb in [
            None,
            rr,
            Some(&LoadBalancer::Random),
            Some(&LoadBalancer::LeastRequest),
        ] {
            assert!(b.pick(&e, lb, Some(&o), None, 2_000).is_none(), "{lb:?}");
            assert!(b.pick(&e, lb, Some(&o), Some(7), 2_000).is_none(), "{lb:?}");
        }
        // 50: fewer than half healthy, so every endpoint is used again.
        o.min_health_percent = 50;
        assert!(b.pick(&e, rr, Some(&o), None, 2_000).is_some());
    }

    #[test]
    fn least_request_prefers_idle() {
        let b = Balancer::default();
        let e = eps(2);
        e[0].active.store(50, Ordering::Relaxed);
        let idle = (0..200)
            .filter(|_| b.pick(&e, None, None, None, 0).unwrap().addr.port() == 1001)
            .count();
        assert!(idle > 120, "idle endpoint chosen {idle}/200");
    }
}
