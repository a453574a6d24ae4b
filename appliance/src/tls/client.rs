//! rustls client configurations for TLS origination (DestinationRule `tls`).

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use tenants::model::ClientTlsMode;
use tenants::snapshot::UpstreamTls;

use crate::credentials::{ClientCert, RefError, Store, UpstreamCerts};

/// The system trust store (read once).
fn system_verifier(provider: &Arc<CryptoProvider>) -> Option<Arc<dyn ServerCertVerifier>> {
    static ROOTS: OnceLock<Option<Arc<rustls::RootCertStore>>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let mut store = rustls::RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(loaded.certs);
        (!store.is_empty()).then(|| Arc::new(store))
    });
    let roots = roots.clone()?;
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .ok()
        .map(|v| v as Arc<dyn ServerCertVerifier>)
}

/// A client configuration whose handshakes always fail (no trust anchors): used when a
/// cluster's TLS origination cannot be configured, so requests fail instead of going out
/// in plaintext.
pub fn refusing(store: &Store, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = store.provider().clone();
    let verifier = UpstreamCerts::new(None, None, Vec::new(), false, provider.clone());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| {
            ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| unreachable!("default provider supports TLS: {e}"))
        })
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Builds the client configuration for a cluster's TLS origination. `alpn` lists the
/// protocols to offer (`h2` for HTTP/2 clusters).
pub fn build(
    t: &UpstreamTls,
    store: &Store,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, RefError> {
    let provider = store.provider().clone();
    let cred = match (&t.credential, &t.ca_file) {
        (Some(r), _) => Some(store.get(r, None, t.mode == ClientTlsMode::Mutual)?),
        // A platform `caCertificates` (and `caCrl`) without a client certificate: a CA-only
        // credential, watched as the others are, so a rotated CA or a new CRL applies to the
        // next connection. A file that cannot be read leaves no CA: every upstream is
        // refused, never checked against the system roots instead.
        (None, Some(ca)) => Some(store.get(
            &tenants::snapshot::CredentialRef {
                namespace: tenants::model::PLATFORM_NAMESPACE.to_string(),
                source: tenants::model::Credential::Files {
                    cert: String::new(),
                    key: String::new(),
                    ca: Some(ca.clone()),
                    crl: t.crl_file.clone(),
                },
            },
            None,
            false,
        )?),
        (None, None) => None,
    };
    // A credential without ca.crt, like no credential, verifies against the system roots,
    // unless `caCertificates` named the CA (then a missing CA refuses every upstream).
    let ca = cred
        .clone()
        .filter(|c| c.ca.load().is_some() || t.ca_file.is_some());
    let fallback = system_verifier(&provider);
    let verifier = UpstreamCerts::new(
        ca,
        fallback,
        t.subject_alt_names.clone(),
        t.insecure_skip_verify,
        provider.clone(),
    );
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| RefError::BadName("protocol versions".into()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (&cred, t.mode) {
        (Some(c), ClientTlsMode::Mutual) => {
            builder.with_client_cert_resolver(Arc::new(ClientCert(c.clone())))
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // A resumed session skips the upstream's certificate check (and presents no new client
    // certificate): sessions last only while the credential stays as it was.
    if let Some(c) = cred {
        config.resumption = rustls::client::Resumption::store(Arc::new(
            super::sessions::GenerationSessions::new(c),
        ));
    }
    Ok(Arc::new(config))
}
