//! rustls client configurations for TLS origination (DestinationRule `tls`).
//!
//! A cluster that verifies its upstreams against a watched CA gets a new client
//! configuration each time that credential is reloaded: a new chain verifier over the CA and
//! CRLs as loaded, and a new session cache. rustls resumes a session only under the verifier
//! that made it and does not check the server's certificate again on resumption, so a
//! session (or a ticket arriving just after the reload) from before a CA rotation or a new
//! CRL can never skip the new check.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use rustls::ClientConfig;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use tenants::model::ClientTlsMode;
use tenants::snapshot::UpstreamTls;

use crate::credentials::{ClientCert, Credential, RefError, Store, UpstreamCerts};

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

/// A cluster's TLS origination: the client configuration for its credential's current
/// generation.
#[derive(Debug)]
pub struct Origination {
    credential: Option<Arc<Credential>>,
    recipe: Recipe,
    /// The configuration and the credential generation it was built from.
    current: ArcSwap<(u64, Arc<ClientConfig>)>,
}

/// What a cluster's client configuration is built from, apart from the credential.
#[derive(Debug)]
struct Recipe {
    /// `caCertificates` named the CA, or the credential has had one: without one loaded
    /// every upstream is refused, never checked against the system roots instead (a
    /// `ca.crt` that goes away must not widen trust to every public CA, nor drop its CRLs).
    ca_named: std::sync::atomic::AtomicBool,
    system: Option<Arc<dyn ServerCertVerifier>>,
    sans: Vec<String>,
    skip: bool,
    mutual: bool,
    alpn: Vec<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl Recipe {
    /// What upstream chains are checked against. A credential without ca.crt, like no
    /// credential, verifies against the system roots, unless `caCertificates` named the CA
    /// or the credential had one before.
    fn trust(
        &self,
        credential: Option<&Arc<Credential>>,
    ) -> Result<Arc<dyn ServerCertVerifier>, String> {
        if credential.is_some_and(|c| c.ca.load().is_some()) {
            self.ca_named.store(true, Ordering::Relaxed);
        }
        let named = self.ca_named.load(Ordering::Relaxed);
        match credential.filter(|c| c.ca.load().is_some() || named) {
            Some(c) => UpstreamCerts::trusting(c, &self.provider),
            None => self
                .system
                .clone()
                .ok_or_else(|| "no trust anchors for the upstream".to_string()),
        }
    }

    fn config(&self, credential: Option<&Arc<Credential>>) -> Result<Arc<ClientConfig>, RefError> {
        let trust = self.trust(credential);
        let verifier =
            UpstreamCerts::new(trust, self.sans.clone(), self.skip, self.provider.clone());
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|_| RefError::BadName("protocol versions".into()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        // The default resumption: a session cache of this configuration's own.
        let mut config = match credential.filter(|_| self.mutual) {
            Some(c) => builder.with_client_cert_resolver(Arc::new(ClientCert(c.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

impl Origination {
    /// The configuration for the next handshake: built again when the credential holding
    /// the CA, CRLs or client certificate was reloaded since.
    pub fn config(&self) -> Arc<ClientConfig> {
        let current = self.current.load();
        let Some(c) = &self.credential else {
            return current.1.clone();
        };
        // Read before the material, so a configuration is never labelled newer than what
        // it was built from; a reload in between only builds once more.
        let g = c.generation.load(Ordering::Acquire);
        if current.0 == g {
            return current.1.clone();
        }
        match self.recipe.config(Some(c)) {
            Ok(config) => {
                // Racing builders each store a valid configuration; one labelled older than
                // the credential is replaced at the next handshake.
                self.current.store(Arc::new((g, config.clone())));
                config
            }
            // The provider did not change, so this cannot fail once the first build passed;
            // the last configuration stays rather than none.
            Err(_) => current.1.clone(),
        }
    }

    /// Whether this origination offers exactly `alpn`.
    pub fn offers(&self, alpn: &[&[u8]]) -> bool {
        self.recipe
            .alpn
            .iter()
            .map(Vec::as_slice)
            .eq(alpn.iter().copied())
    }

    fn fixed(config: Arc<ClientConfig>, recipe: Recipe) -> Self {
        Self {
            credential: None,
            recipe,
            current: ArcSwap::from_pointee((0, config)),
        }
    }
}

/// An origination whose handshakes always fail (no trust anchors): used when a cluster's
/// TLS origination cannot be configured, so requests fail instead of going out in
/// plaintext.
pub fn refusing(store: &Store, alpn: &[&[u8]]) -> Origination {
    let provider = store.provider().clone();
    let recipe = Recipe {
        ca_named: true.into(),
        system: None,
        sans: Vec::new(),
        skip: false,
        mutual: false,
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        provider: provider.clone(),
    };
    let verifier = UpstreamCerts::new(
        Err("TLS origination is not configured".into()),
        Vec::new(),
        false,
        provider.clone(),
    );
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
    config.alpn_protocols = recipe.alpn.clone();
    Origination::fixed(Arc::new(config), recipe)
}

/// Builds a cluster's TLS origination. `alpn` lists the protocols to offer (`h2` for
/// HTTP/2 clusters).
pub fn build(t: &UpstreamTls, store: &Store, alpn: &[&[u8]]) -> Result<Origination, RefError> {
    let provider = store.provider().clone();
    let credential = match (&t.credential, &t.ca_file) {
        (Some(r), _) => Some(store.get(r, None, t.mode == ClientTlsMode::Mutual)?),
        // A platform `caCertificates` (and `caCrl`) without a client certificate: a CA-only
        // credential, watched as the others are, so a rotated CA or a new CRL applies to the
        // next connection. A file that cannot be read leaves no CA: every upstream is
        // refused.
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
    let recipe = Recipe {
        ca_named: t.ca_file.is_some().into(),
        system: system_verifier(&provider),
        sans: t.subject_alt_names.clone(),
        skip: t.insecure_skip_verify,
        mutual: t.mode == ClientTlsMode::Mutual,
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        provider,
    };
    let g = credential
        .as_ref()
        .map_or(0, |c| c.generation.load(Ordering::Acquire));
    let config = recipe.config(credential.as_ref())?;
    Ok(Origination {
        credential,
        recipe,
        current: ArcSwap::from_pointee((g, config)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).expect("self-signed").pem()
    }

    #[test]
    fn a_reloaded_ca_gets_a_configuration_of_its_own_and_an_unchanged_one_is_reused() {
        let dir =
            std::env::temp_dir().join(format!("gatehouse-origination-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("upstream-ca.pem");
        std::fs::write(&ca, ca_pem()).expect("write");
        let store = Store::new(
            dir.clone(),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        );
        let t = UpstreamTls {
            mode: ClientTlsMode::Simple,
            credential: None,
            ca_file: Some(ca.display().to_string()),
            crl_file: None,
            sni: None,
            subject_alt_names: Vec::new(),
            insecure_skip_verify: false,
        };
        let o = build(&t, &store, &[b"h2"]).expect("origination");
        let first = o.config();
        assert!(Arc::ptr_eq(&first, &o.config()), "rebuilt without a reload");
        assert_eq!(first.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(o.offers(&[b"h2"]) && !o.offers(&[b"http/1.1"]));

        std::fs::write(&ca, ca_pem()).expect("rewrite");
        assert_eq!(store.refresh_all(true), 1);
        let second = o.config();
        assert!(
            !Arc::ptr_eq(&first, &second),
            "a reloaded CA kept the old configuration"
        );
        assert!(Arc::ptr_eq(&second, &o.config()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_credential_that_loses_its_ca_refuses_upstreams_instead_of_trusting_the_system() {
        use rustls_pki_types::pem::PemObject;
        let dir = std::env::temp_dir().join(format!("gatehouse-lost-ca-{}", std::process::id()));
        let folder = dir.join("team-a/upstream");
        std::fs::create_dir_all(&folder).expect("dir");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let store = Store::new(dir.clone(), provider.clone());
        let r = tenants::snapshot::CredentialRef {
            namespace: "team-a".into(),
            source: tenants::model::Credential::Name("upstream".into()),
        };
        // Stands in for the system roots, which this machine may not have.
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(
            rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem().as_bytes())
                .filter_map(Result::ok),
        );
        let system: Arc<dyn ServerCertVerifier> =
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .expect("verifier");
        let recipe = Recipe {
            ca_named: false.into(),
            system: Some(system.clone()),
            sans: Vec::new(),
            skip: false,
            mutual: false,
            alpn: Vec::new(),
            provider,
        };
        // No ca.crt yet: the system roots, as Istio does.
        let c = store.get(&r, None, false).expect("credential");
        let t = recipe.trust(Some(&c)).expect("system roots");
        assert!(Arc::ptr_eq(&t, &system));
        // A CA arrives: it is trusted instead.
        std::fs::write(folder.join("ca.crt"), ca_pem()).expect("write");
        store.refresh_all(true);
        let t = recipe.trust(Some(&c)).expect("the folder's CA");
        assert!(!Arc::ptr_eq(&t, &system));
        // It goes away again: every upstream is refused.
        std::fs::remove_file(folder.join("ca.crt")).expect("rm");
        store.refresh_all(true);
        assert!(
            c.ca.load().is_none(),
            "the reload took the folder without ca.crt"
        );
        match recipe.trust(Some(&c)) {
            Err(e) => assert!(e.contains("no CA certificate"), "{e}"),
            Ok(_) => panic!("a lost ca.crt widened trust to the system roots"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
