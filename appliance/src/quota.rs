//! Per-tenant limits on the data path: a lock-free token bucket for `requestsPerSecond` and a
//! connection counter for `maxConnections`. Shared by every worker thread; survives reloads
//! that do not change the tenant's quotas.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tenants::model::Quotas;

use crate::clock;

/// A token bucket refilled at `rate` per second, holding at most one second of tokens.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    /// High 32 bits: milli-tokens; low 32 bits: last refill, ms (wrapping).
    state: AtomicU64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32) -> Self {
        let rate = u64::from(rate.clamp(1, 4_000_000));
        Self {
            rate,
            state: AtomicU64::new(pack(rate * 1000, clock::now_ms() as u32)),
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn try_take(&self) -> bool {
        self.take_at(clock::now_ms() as u32)
    }

    fn take_at(&self, now: u32) -> bool {
        let cap = self.rate * 1000;
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (tokens, last) = unpack(cur);
            // Another thread may have refilled at a later reading than ours, a few ms at most:
            // that is no time passing (read as a wrapped difference it would fill the bucket).
            // A bucket unused for weeks is a long gap forward, not a reading behind.
            let back = last.wrapping_sub(now);
            let behind = back != 0 && back < READING_SKEW_MS;
            let (elapsed, stamp) = if behind {
                (0, last)
            } else {
                (u64::from(now.wrapping_sub(last)), now)
            };
            // rate tokens/s == rate milli-tokens/ms
            let filled = (tokens + elapsed.saturating_mul(self.rate)).min(cap);
            if filled < 1000 {
                return false;
            }
            let next = pack(filled - 1000, stamp);
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// How far behind another thread's last refill a clock reading can be: a reading behind it by
/// less is the race between two takes; by more, the 32-bit millisecond stamp wrapped.
const READING_SKEW_MS: u32 = 60_000;

fn pack(tokens: u64, ms: u32) -> u64 {
    (tokens.min(u64::from(u32::MAX)) << 32) | u64::from(ms)
}

fn unpack(s: u64) -> (u64, u32) {
    (s >> 32, s as u32)
}

/// A tenant's live counters.
#[derive(Debug)]
pub struct TenantRt {
    /// The quotas these counters enforce.
    pub quotas: Quotas,
    /// `requestsPerSecond`.
    pub rate: Option<TokenBucket>,
    /// Open downstream connections attributed to the tenant.
    pub connections: AtomicU32,
    /// Requests refused by the rate limit.
    pub rate_limited: AtomicU64,
    /// Connections refused by the connection quota.
    pub refused_connections: AtomicU64,
}

impl TenantRt {
    /// Counters for `quotas`.
    pub fn new(quotas: &Quotas) -> Self {
        Self {
            quotas: quotas.clone(),
            rate: quotas.requests_per_second.map(TokenBucket::new),
            connections: AtomicU32::new(0),
            rate_limited: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
        }
    }

    /// Admits one request (false: answer 429).
    pub fn admit_request(&self) -> bool {
        match &self.rate {
            Some(b) if !b.try_take() => {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }
}

/// A connection counted against a tenant (and a group) until dropped.
pub struct ConnPermit {
    tenant: Option<std::sync::Arc<TenantRt>>,
    group: Option<std::sync::Arc<AtomicU32>>,
}

impl ConnPermit {
    /// Counts a connection for `tenant` if its quota allows; `None` means refuse.
    pub fn tenant(t: std::sync::Arc<TenantRt>) -> Option<Self> {
        let max = t.quotas.max_connections.unwrap_or(u32::MAX);
        let prev = t.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            t.connections.fetch_sub(1, Ordering::AcqRel);
            t.refused_connections.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Self {
            tenant: Some(t),
            group: None,
        })
    }

    /// Counts a connection against a group-wide limit.
    pub fn group(counter: std::sync::Arc<AtomicU32>, max: Option<u32>) -> Option<Self> {
        let prev = counter.fetch_add(1, Ordering::AcqRel);
        if prev >= max.unwrap_or(u32::MAX) {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self {
            tenant: None,
            group: Some(counter),
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some(t) = &self.tenant {
            t.connections.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(g) = &self.group {
            g.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_of_one_second_then_refuses() {
        let b = TokenBucket::new(50);
        let taken = (0..200).filter(|_| b.try_take()).count();
        // 50 in the bucket, plus whatever refilled during the loop (well under 1 ms here).
        assert!((50..=55).contains(&taken), "took {taken}");
    }

    /// A thread whose clock reading is older than the last refill (another thread took a
    /// token at a later one) finds no time passed, not a wrapped 49 days.
    #[test]
    fn an_older_clock_reading_does_not_refill_the_bucket() {
        let b = TokenBucket::new(5);
        b.state.store(pack(0, 1_000), Ordering::Relaxed);
        assert!(!b.take_at(999), "a reading 1 ms behind refilled the bucket");
        assert_eq!(unpack(b.state.load(Ordering::Relaxed)), (0, 1_000));
        // 200 ms later: one token at 5/s.
        assert!(b.take_at(1_200));
        assert!(!b.take_at(1_200));
        // Across the wrap of the 32-bit millisecond stamp, time still passes.
        b.state.store(pack(0, u32::MAX - 100), Ordering::Relaxed);
        assert!(b.take_at(100));
        // A bucket unused for more than 24.9 days (half the stamp's range) refills too.
        b.state.store(pack(0, 0), Ordering::Relaxed);
        assert!(b.take_at(u32::MAX / 2 + 10));
    }

    #[test]
    fn connection_quota() {
        let t = std::sync::Arc::new(TenantRt::new(&Quotas {
            max_connections: Some(2),
            ..Quotas::default()
        }));
        let a = ConnPermit::tenant(t.clone()).expect("first");
        let _b = ConnPermit::tenant(t.clone()).expect("second");
        assert!(ConnPermit::tenant(t.clone()).is_none());
        drop(a);
        assert!(ConnPermit::tenant(t.clone()).is_some());
        assert_eq!(t.refused_connections.load(Ordering::Relaxed), 1);
    }
}

/// The tenant a plain-HTTP connection is counted against. On a shared HTTP port the tenant
/// is only known from the Host of the first request, so that request decides: the connection
/// is counted against its tenant from then on, or refused when the tenant is at its limit.
#[derive(Default)]
pub struct ConnTenant(std::sync::OnceLock<Admission>);

enum Admission {
    Counted(#[allow(dead_code)] ConnPermit),
    Refused,
    Unlimited,
}

impl ConnTenant {
    /// Whether the connection may serve a request of `tenant` (counting it on first use).
    pub fn admit(&self, tenant: Option<&std::sync::Arc<TenantRt>>) -> bool {
        let a = self
            .0
            .get_or_init(|| match tenant.cloned().map(ConnPermit::tenant) {
                Some(Some(p)) => Admission::Counted(p),
                Some(None) => Admission::Refused,
                None => Admission::Unlimited,
            });
        !matches!(a, Admission::Refused)
    }
}
