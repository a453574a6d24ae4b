//! TLS for a QUIC endpoint. quinn hands the handshake to one rustls config before anyone has
//! seen the SNI (TCP listeners peek at the ClientHello and pick the chain's own config), so
//! the config's hooks choose by SNI themselves, reading the current generation lock-free:
//!
//! - the certificate comes from the resolver of the chain the SNI picks — the same resolver
//!   TCP uses, so a rotated certificate applies to the next QUIC handshake too;
//! - client certificates are requested when some chain of the listener is MUTUAL, and
//!   verified in the handshake against those chains' CAs (rustls' verifier is not told the
//!   SNI). Once the handshake has told the SNI, [`check_client`] verifies the certificate
//!   against the chain it chose, and a MUTUAL chain without a valid one closes the
//!   connection. When every HTTPS chain of the listener is MUTUAL, a missing certificate
//!   already fails the handshake, as on TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tenants::model::TlsVersion;
use tenants::snapshot::{ChainAction, FilterChain};

use crate::runtime::{ChainState, Runtime};
use crate::shared::Shared;

/// The chain serving `sni` on a listener, and its TLS state, when it terminates HTTP.
pub(super) fn chain_for(
    rt: &Runtime,
    group: &str,
    addr: &SocketAddr,
    sni: Option<&str>,
) -> Option<(Arc<FilterChain>, Arc<ChainState>)> {
    let g = rt.groups.get(group)?;
    let c = g.listeners.get(addr)?.chain(sni)?;
    if !matches!(c.action, ChainAction::TerminateHttp { .. }) {
        return None;
    }
    Some((c.clone(), g.chains.get(&c.name)?.clone()))
}

/// The TLS states of the listener's HTTPS chains.
fn https_chains<'r>(
    rt: &'r Runtime,
    group: &str,
    addr: &SocketAddr,
) -> impl Iterator<Item = &'r Arc<ChainState>> {
    let g = rt.groups.get(group);
    let chains = g
        .and_then(|g| g.listeners.get(addr))
        .and_then(|l| match &l.kind {
            tenants::snapshot::ListenerKind::Tls(cs) => Some(cs.as_slice()),
            _ => None,
        })
        .unwrap_or_default();
    chains
        .iter()
        .filter(|c| matches!(c.action, ChainAction::TerminateHttp { .. }))
        .filter_map(move |c| g?.chains.get(&c.name))
}

/// The rustls hooks of one QUIC endpoint.
pub(super) struct ListenerTls {
    shared: Arc<Shared>,
    group: Arc<str>,
    addr: SocketAddr,
    provider: Arc<CryptoProvider>,
    /// Some chain is MUTUAL: ask for a client certificate.
    offer: bool,
    /// Every chain is MUTUAL: a handshake without one fails.
    mandatory: bool,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListenerTls({}/{})", self.group, self.addr)
    }
}

impl ListenerTls {
    /// Hooks for the listener `group`/`addr` as `rt` configures it. `offer` and `mandatory`
    /// are fixed here, not read per handshake: rustls asks twice in one handshake and the
    /// answers must agree; the endpoint rebuilds its config when they change.
    pub(super) fn new(
        shared: Arc<Shared>,
        group: Arc<str>,
        addr: SocketAddr,
        rt: &Runtime,
    ) -> Self {
        // Per chain: (asks for a client certificate, requires one).
        let mutual: Vec<(bool, bool)> = https_chains(rt, &group, &addr)
            .map(|st| {
                st.tls
                    .client
                    .as_ref()
                    .map_or((false, false), |c| (true, c.mandatory()))
            })
            .collect();
        Self {
            provider: shared.store.provider().clone(),
            shared,
            group,
            addr,
            offer: mutual.iter().any(|(asks, _)| *asks),
            mandatory: !mutual.is_empty() && mutual.iter().all(|(_, requires)| *requires),
        }
    }

    /// What the endpoint's config depends on besides the group's settings.
    pub(super) fn client_auth(&self) -> (bool, bool) {
        (self.offer, self.mandatory)
    }

    /// The crypto provider (the process's).
    pub(super) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }
}

impl ResolvesServerCert for ListenerTls {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let rt = self.shared.runtime.load();
        let (_, st) = chain_for(&rt, &self.group, &self.addr, hello.server_name())?;
        // QUIC is TLS 1.3 only: a chain capped at TLS 1.2 is not served over it.
        if matches!(
            st.ctx.max_version,
            TlsVersion::Tlsv10 | TlsVersion::Tlsv11 | TlsVersion::Tlsv12
        ) {
            return None;
        }
        st.tls.config.cert_resolver.resolve(hello)
    }
}

impl ClientCertVerifier for ListenerTls {
    fn offer_client_auth(&self) -> bool {
        self.offer
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let rt = self.shared.runtime.load();
        let mut last = Err(Error::General("no MUTUAL server on this listener".into()));
        for v in https_chains(&rt, &self.group, &self.addr).filter_map(|st| st.tls.client.as_ref())
        {
            last = v.verify_client_cert(end_entity, intermediates, now);
            if last.is_ok() {
                break;
            }
        }
        last
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let algs = &self.provider.signature_verification_algorithms;
        algs.supported_schemes()
    }
}

/// The chain's own client-certificate check on an established connection: MUTUAL needs a
/// certificate its CA (and `subjectAltNames`) accepts; other modes need nothing. Returns the
/// `x-forwarded-client-cert` value of the certificate presented, if any.
pub(super) fn check_client(
    st: &ChainState,
    conn: &quinn::Connection,
) -> Result<Option<HeaderValue>, Error> {
    let Some(v) = &st.tls.client else {
        return Ok(None);
    };
    let Some(certs) = conn
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
    else {
        // OPTIONAL_MUTUAL lets a client without a certificate in.
        return if v.mandatory() {
            Err(Error::NoCertificatesPresented)
        } else {
            Ok(None)
        };
    };
    let (ee, rest) = certs.split_first().ok_or(Error::NoCertificatesPresented)?;
    v.verify_client_cert(ee, rest, UnixTime::now())?;
    Ok(crate::http::xfcc::value(ee))
}
