//! Endpoint choice: LEAST_REQUEST (Istio's default), ROUND_ROBIN, RANDOM and consistent
//! hashing, skipping endpoints outlier detection ejected.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;
use tenants::model::{LoadBalancer, OutlierDetection, Warmup};

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
        warmup: Option<&Warmup>,
        hash: Option<u64>,
        now_ms: u64,
    ) -> Option<Arc<Endpoint>> {
        if eps.is_empty() {
            return None;
        }
        if let Some(w) = warmup
            && matches!(
                policy,
                None | Some(LoadBalancer::RoundRobin | LoadBalancer::LeastRequest)
            )
            && eps.iter().any(|e| warming(e, w, now_ms))
        {
            return self.pick_warming(eps, policy, od, w, now_ms);
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

impl Balancer {
    /// `pick` while some endpoint warms up: weights scaled by Envoy's slow-start factor.
    /// ROUND_ROBIN walks the scaled weights in turn; LEAST_REQUEST draws in proportion to
    /// scaled weight ÷ (requests in flight + 1), as Envoy's weighted least-request does, so
    /// a new endpoint's share grows with its age (two uniform candidates would give it a
    /// fixed share of the draws whatever its weight).
    fn pick_warming(
        &self,
        eps: &[Arc<Endpoint>],
        policy: Option<&LoadBalancer>,
        od: Option<&OutlierDetection>,
        w: &Warmup,
        now_ms: u64,
    ) -> Option<Arc<Endpoint>> {
        let mut set: Vec<&Arc<Endpoint>> = eps.iter().filter(|e| !e.is_ejected(now_ms)).collect();
        let min_pct = od.map_or(0, |o| o.min_health_percent) as usize;
        if od.is_none() || set.len() * 100 < eps.len() * min_pct {
            set = eps.iter().collect();
        }
        // Thousandths of a weight unit: integer arithmetic below, and never 0.
        let weights: Vec<u64> = set
            .iter()
            .map(|e| ((warm_weight(e, w, now_ms) * 1000.0) as u64).max(1))
            .collect();
        let total: u64 = weights.iter().sum();
        let at = |mut n: u64| -> Option<usize> {
            for (i, x) in weights.iter().enumerate() {
                if n < *x {
                    return Some(i);
                }
                n -= x;
            }
            None
        };
        let i = match policy {
            Some(LoadBalancer::RoundRobin) => {
                // Steps of a thousandth: one pick per whole weight unit, as without warmup.
                let n = (self.rr.fetch_add(1, Ordering::Relaxed) as u64).wrapping_mul(1000);
                at(n % total.max(1))?
            }
            _ => {
                let by_load: Vec<u64> = weights
                    .iter()
                    .zip(&set)
                    .map(|(w, e)| {
                        (w * 1000 / (u64::from(e.active.load(Ordering::Relaxed)) + 1)).max(1)
                    })
                    .collect();
                let mut n = rand::rng().random_range(0..by_load.iter().sum::<u64>().max(1));
                let mut chosen = by_load.len().checked_sub(1)?;
                for (i, x) in by_load.iter().enumerate() {
                    if n < *x {
                        chosen = i;
                        break;
                    }
                    n -= x;
                }
                chosen
            }
        };
        set.get(i).map(|e| Arc::clone(e))
    }
}

/// Whether `e` joined less than the warmup's duration ago.
fn warming(e: &Endpoint, w: &Warmup, now_ms: u64) -> bool {
    (now_ms.saturating_sub(e.joined_ms()) as u128) < w.duration.as_millis()
}

/// Envoy's `applySlowStartFactor`: `weight × max(minimumPercent, (age / window)^(1 /
/// aggression))`, the age at least 1 ms.
fn warm_weight(e: &Endpoint, w: &Warmup, now_ms: u64) -> f64 {
    let weight = f64::from(e.weight);
    if !warming(e, w, now_ms) {
        return weight;
    }
    let window = w.duration.as_millis() as f64;
    let age = now_ms.saturating_sub(e.joined_ms()).max(1) as f64;
    let t = age / window;
    let factor = if w.aggression == 1.0 {
        t
    } else {
        t.powf(1.0 / w.aggression)
    };
    weight * factor.max(w.minimum_percent / 100.0)
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
            split_local_origin: false,
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
                b.pick(&e, Some(&LoadBalancer::RoundRobin), None, None, None, 0)
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
        let first = b.pick(&e, Some(&lb), None, None, Some(42), 0).unwrap().addr;
        for _ in 0..20 {
            assert_eq!(
                b.pick(&e, Some(&lb), None, None, Some(42), 0).unwrap().addr,
                first
            );
        }
        let distinct: std::collections::HashSet<_> = (0..200u64)
            .map(|k| {
                b.pick(
                    &e,
                    Some(&lb),
                    None,
                    None,
                    Some(hash_bytes(&k.to_be_bytes())),
                    0,
                )
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
                .pick(
                    &e,
                    Some(&LoadBalancer::RoundRobin),
                    Some(&o),
                    None,
                    None,
                    2_000,
                )
                .unwrap();
            assert_eq!(p.addr.port(), 1001);
        }
        // After baseEjectionTime the endpoint is back.
        let back: std::collections::HashSet<u16> = (0..4)
            .map(|_| {
                b.pick(
                    &e,
                    Some(&LoadBalancer::RoundRobin),
                    Some(&o),
                    None,
                    None,
                    40_000,
                )
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
            assert!(
                b.pick(&e, lb, Some(&o), None, None, 2_000).is_none(),
                "{lb:?}"
            );
            assert!(
                b.pick(&e, lb, Some(&o), None, Some(7), 2_000).is_none(),
                "{lb:?}"
            );
        }
        // 50: fewer than half healthy, so every endpoint is used again.
        o.min_health_percent = 50;
        assert!(b.pick(&e, rr, Some(&o), None, None, 2_000).is_some());
    }

    #[test]
    fn a_warming_endpoint_gets_a_share_that_grows_with_its_age() {
        let b = Balancer::default();
        let e = eps(2);
        let w = Warmup {
            duration: Duration::from_secs(100),
            minimum_percent: 10.0,
            aggression: 1.0,
        };
        // e[0] has been there long; e[1] joins at `now`.
        let now = 10_000_000;
        e[0].set_joined(0);
        e[1].set_joined(now);
        let share = |at: u64, lb: Option<&LoadBalancer>| {
            (0..4000)
                .filter(|_| {
                    b.pick(&e, lb, None, Some(&w), None, at)
                        .unwrap()
                        .addr
                        .port()
                        == 1001
                })
                .count() as f64
                / 4000.0
        };
        // Joined "now": the new one is at its minimum (10 % of its weight: 1/11 of picks);
        // half-way, half its weight (1/3); after the window, an equal share.
        let past = now + 1_000_000;
        for lb in [Some(&LoadBalancer::RoundRobin), None] {
            let s0 = share(now, lb);
            let s50 = share(now + 50_000, lb);
            let s100 = share(past, lb);
            assert!(s0 < 0.2, "{lb:?}: at first {s0}");
            assert!((0.2..0.45).contains(&s50), "{lb:?}: half-way {s50}");
            assert!((0.4..0.6).contains(&s100), "{lb:?}: after {s100}");
        }
        // Random and hashing ignore it (Envoy's slow start is for RR and LR).
        let s = share(now, Some(&LoadBalancer::Random));
        assert!((0.4..0.6).contains(&s), "random {s}");
    }

    #[test]
    fn least_request_prefers_idle() {
        let b = Balancer::default();
        let e = eps(2);
        e[0].active.store(50, Ordering::Relaxed);
        let idle = (0..200)
            .filter(|_| b.pick(&e, None, None, None, None, 0).unwrap().addr.port() == 1001)
            .count();
        assert!(idle > 120, "idle endpoint chosen {idle}/200");
    }
}
