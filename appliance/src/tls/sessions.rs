//! Upstream TLS sessions of a cluster that verifies its upstreams against a watched CA. A
//! resumed session skips the server-certificate check, so the cluster's cached sessions are
//! dropped when the credential holding the CA and CRL changes: after a CA rotation or a new
//! CRL, the next connection checks the upstream's certificate again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls_pki_types::ServerName;

use crate::credentials::Credential;

/// Sessions kept per cluster (rustls' default).
const SESSIONS: usize = 256;

/// A session cache that starts empty again whenever `credential` is reloaded.
#[derive(Debug)]
pub struct GenerationSessions {
    credential: Arc<Credential>,
    cache: ArcSwap<(u64, ClientSessionMemoryCache)>,
}

impl GenerationSessions {
    /// Sessions checked against `credential`'s CA.
    pub fn new(credential: Arc<Credential>) -> Self {
        let g = credential.generation.load(Ordering::Acquire);
        Self {
            credential,
            cache: ArcSwap::from_pointee((g, ClientSessionMemoryCache::new(SESSIONS))),
        }
    }

    fn current(&self) -> Arc<(u64, ClientSessionMemoryCache)> {
        let g = self.credential.generation.load(Ordering::Acquire);
        let c = self.cache.load_full();
        if c.0 == g {
            return c;
        }
        // Only the cache this handshake saw is replaced: one a racing handshake already
        // started for the new generation stays.
        let fresh = Arc::new((g, ClientSessionMemoryCache::new(SESSIONS)));
        let prev = self.cache.compare_and_swap(&c, fresh.clone());
        if Arc::ptr_eq(&prev, &c) {
            fresh
        } else {
            self.cache.load_full()
        }
    }
}

impl ClientSessionStore for GenerationSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.current().1.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.current().1.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.current().1.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.current().1.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.current().1.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.current().1.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.current().1.take_tls13_ticket(server_name)
    }
}
