//! rustls server configurations for terminating filter chains.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use tenants::model::{ServerTlsMode, TlsVersion};
use tenants::snapshot::TlsContext;

use crate::credentials::{ClientCerts, Credential, RefError, ServerCert, Store};

/// Why a chain's TLS could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A credential reference was refused.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A built server configuration and the credential it serves.
pub struct ChainTls {
    /// For the acceptor.
    pub config: Arc<ServerConfig>,
    /// The certificate source.
    pub credential: Arc<Credential>,
    /// The second certificate source (`credentialNames`, `tlsCertificates`).
    pub second: Option<Arc<Credential>>,
    /// MUTUAL: the client-certificate check, also run after a QUIC handshake (whose single
    /// rustls config serves every chain of a listener, so it cannot carry this one's).
    pub client: Option<Arc<ClientCerts>>,
}

/// A resumed session skipped the client-certificate check: the certificate it carries is
/// checked now against the chain's current CA, CRL, SANs and pins, as QUIC checks after
/// every handshake. (Tickets already end with a CA or CRL change, `tickets.rs`; this closes
/// the moment between a handshake's check and its ticket.)
pub fn recheck_resumed(
    client: &ClientCerts,
    conn: &rustls::ServerConnection,
) -> Result<(), rustls::Error> {
    if conn.handshake_kind() != Some(rustls::HandshakeKind::Resumed) {
        return Ok(());
    }
    match conn.peer_certificates().and_then(|c| c.split_first()) {
        Some((ee, rest)) => {
            use rustls::server::danger::ClientCertVerifier;
            client
                .verify_client_cert(ee, rest, rustls_pki_types::UnixTime::now())
                .map(|_| ())
        }
        None if client.mandatory() => Err(rustls::Error::NoCertificatesPresented),
        None => Ok(()),
    }
}

/// OpenSSL-style names Istio uses → rustls suites.
fn suite_name(s: &rustls::SupportedCipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    Some(match s.suite() {
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

/// A provider limited to `suites` for TLS 1.2 (TLS 1.3 suites are never filtered, as in Envoy).
pub fn provider_with(base: &Arc<CryptoProvider>, suites: &[String]) -> Arc<CryptoProvider> {
    if suites.is_empty() {
        return base.clone();
    }
    let mut p = (**base).clone();
    p.cipher_suites.retain(|s| {
        s.version() == &rustls::version::TLS13
            || suite_name(s).is_some_and(|n| suites.iter().any(|w| w == n))
    });
    Arc::new(p)
}

/// Builds the server configuration of a terminating chain. `alpn` is `h2`/`http/1.1` for
/// HTTP chains and empty for TLS-terminated TCP.
pub fn build(ctx: &TlsContext, store: &Store, alpn: &[&[u8]]) -> Result<ChainTls, TlsConfigError> {
    let provider = provider_with(store.provider(), &ctx.cipher_suites);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        match (ctx.min_version, ctx.max_version) {
            (TlsVersion::Tlsv13, _) => vec![&rustls::version::TLS13],
            (_, TlsVersion::Tlsv12) => vec![&rustls::version::TLS12],
            _ => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        };
    let cred = store.get(
        &ctx.credential,
        ctx.ca_credential.as_ref().and_then(|c| match &c.source {
            tenants::model::Credential::Name(n) => Some(n.as_str()),
            tenants::model::Credential::Files { .. } => None,
        }),
        true,
    )?;
    let second = match &ctx.second_credential {
        Some(r) => Some(store.get(r, None, true)?),
        None => None,
    };
    let resolver = Arc::new(ServerCert::new(
        cred.clone(),
        second.clone(),
        &provider,
        &versions,
    ));
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let client = matches!(
        ctx.mode,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    )
    .then(|| {
        Arc::new(ClientCerts::new(
            cred.clone(),
            ctx.subject_alt_names.clone(),
            ctx.pins.clone(),
            provider,
            ctx.mode == ServerTlsMode::Mutual,
        ))
    });
    let mut config = match &client {
        Some(c) => {
            let v: Arc<dyn ClientCertVerifier> = c.clone();
            builder
                .with_client_cert_verifier(v)
                .with_cert_resolver(resolver)
        }
        None => builder.with_no_client_auth().with_cert_resolver(resolver),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Stateless resumption with rotating ticket keys (rustls' default ticketer rotates).
    if let Ok(t) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        config.ticketer = t;
    }
    if client.is_some() {
        // A resumed session skips the client-certificate check: tickets hold only while the
        // client CA and CRL stay as they were, and sessions are not kept server-side.
        config.ticketer = Arc::new(super::tickets::GenerationTickets::new(
            config.ticketer.clone(),
            cred.clone(),
        ));
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Ok(ChainTls {
        config: Arc::new(config),
        credential: cred,
        second,
        client,
    })
}
