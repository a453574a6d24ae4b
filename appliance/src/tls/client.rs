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

/// A verifier trusting the certificates in the PEM file `path` (`caCertificates`), with the
/// revocation lists in `crl` (`caCrl`). `None` (every upstream refused) when a file cannot
/// be read or the CA file holds no certificate: a CA or CRL that was asked for is never
/// replaced by the system roots, or dropped.
fn file_verifier(
    path: &str,
    crl: Option<&str>,
    provider: &Arc<CryptoProvider>,
) -> Option<Arc<dyn ServerCertVerifier>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path, error = %e, "caCertificates not readable; upstream TLS will fail");
            return None;
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        tracing::warn!(
            path,
            "caCertificates holds no certificate; upstream TLS will fail"
        );
        return None;
    }
    let mut b = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if let Some(crl) = crl {
        use rustls_pki_types::CertificateRevocationListDer;
        let crls = std::fs::read(crl).map_err(|e| e.to_string()).and_then(|b| {
            CertificateRevocationListDer::pem_slice_iter(&b)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        });
        match crls {
            Ok(crls) if !crls.is_empty() => {
                b = b.with_crls(crls).allow_unknown_revocation_status();
            }
            Ok(_) => {
                tracing::warn!(path = crl, "caCrl holds no CRL; upstream TLS will fail");
                return None;
            }
            Err(error) => {
                tracing::warn!(path = crl, %error, "caCrl not readable; upstream TLS will fail");
                return None;
            }
        }
    }
    b.build().ok().map(|v| v as Arc<dyn ServerCertVerifier>)
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
    let cred = match &t.credential {
        Some(r) => Some(store.get(r, None, t.mode == ClientTlsMode::Mutual)?),
        None => None,
    };
    // A credential without ca.crt, like no credential, verifies against the system roots,
    // or against `caCertificates` (platform DestinationRules) when that is set.
    let ca = cred
        .clone()
        .filter(|c| c.ca.load().is_some() || t.ca_file.is_some());
    let fallback = match (&ca, &t.ca_file) {
        (None, Some(path)) => file_verifier(path, t.crl_file.as_deref(), &provider),
        _ => system_verifier(&provider),
    };
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
    Ok(Arc::new(config))
}
