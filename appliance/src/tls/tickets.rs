//! Session tickets of a chain that checks client certificates. A resumed session skips the
//! client-certificate check, so a ticket is honoured only while the credential holding the
//! client CA (and its CRL) is the one it was issued under: after a CA rotation or a new CRL,
//! every client shows its certificate again, as the new SSL context Envoy builds on a secret
//! change ensures.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustls::server::ProducesTickets;

use crate::credentials::Credential;

/// Tickets bound to `credential`'s generation.
#[derive(Debug)]
pub struct GenerationTickets {
    inner: Arc<dyn ProducesTickets>,
    credential: Arc<Credential>,
}

impl GenerationTickets {
    /// Wraps `inner` (the rotating ticketer).
    pub fn new(inner: Arc<dyn ProducesTickets>, credential: Arc<Credential>) -> Self {
        Self { inner, credential }
    }

    fn generation(&self) -> [u8; 8] {
        self.credential
            .generation
            .load(Ordering::Acquire)
            .to_be_bytes()
    }
}

impl ProducesTickets for GenerationTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut v = Vec::with_capacity(8 + plain.len());
        v.extend_from_slice(&self.generation());
        v.extend_from_slice(plain);
        self.inner.encrypt(&v)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(cipher)?;
        let (generation, rest) = plain.split_at_checked(8)?;
        (generation == self.generation()).then(|| rest.to_vec())
    }
}
