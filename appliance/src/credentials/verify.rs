//! rustls hooks that read the credential registry on every handshake, lock-free, so a
//! rotated certificate or CA applies to the next handshake without rebuilding configs.
//! Upstream verification is the exception: its verifier is built once per credential
//! generation, because rustls resumes a session only under the verifier that made it.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use tenants::model::CertPins;

use super::store::Credential;

/// Serves a credential's current certificate. With a second credential (`credentialNames`,
/// `tlsCertificates`), each handshake gets the one the client can use, an ECDSA certificate
/// before an RSA one, as Envoy chooses among a server's certificates.
#[derive(Debug)]
pub struct ServerCert {
    first: Arc<Credential>,
    second: Option<Arc<Credential>>,
    /// The suites of the protocol versions the server offers.
    suites: Vec<rustls::SupportedCipherSuite>,
}

impl ServerCert {
    /// Serves `first`, or `second` to a client that can use it and prefers its key type.
    /// `versions` are the protocol versions the server offers: a TLS 1.3 suite the client
    /// offers says nothing about a server capped at TLS 1.2.
    pub fn new(
        first: Arc<Credential>,
        second: Option<Arc<Credential>>,
        provider: &CryptoProvider,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Self {
        let suites = provider
            .cipher_suites
            .iter()
            .filter(|s| versions.iter().any(|v| *v == s.version()))
            .copied()
            .collect();
        Self {
            first,
            second,
            suites,
        }
    }

    /// Whether the client can take `k`: it offers a signature scheme the key signs with and
    /// a cipher suite (any TLS 1.3 one, or a TLS 1.2 one of the key's type) we serve.
    fn fits(&self, hello: &ClientHello<'_>, k: &CertifiedKey) -> bool {
        let alg = k.key.algorithm();
        k.key.choose_scheme(hello.signature_schemes()).is_some()
            && self.suites.iter().any(|s| {
                hello.cipher_suites().contains(&s.suite()) && s.usable_for_signature_algorithm(alg)
            })
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({})", self.name)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = self.first.key.load_full();
        let Some(second) = self.second.as_ref().and_then(|c| c.key.load_full()) else {
            return first;
        };
        let Some(first) = first else {
            return Some(second);
        };
        let ecdsa = |k: &CertifiedKey| k.key.algorithm() == rustls::SignatureAlgorithm::ECDSA;
        let (preferred, other) = if ecdsa(&second) && !ecdsa(&first) {
            (second, first)
        } else {
            (first, second)
        };
        if self.fits(&hello, &preferred) || !self.fits(&hello, &other) {
            Some(preferred)
        } else {
            Some(other)
        }
    }
}

/// Verifies client certificates against the credential's current `ca.crt`, then the
/// `subjectAltNames` allowlist and the pins (`verifyCertificateSpki`/`Hash`). No CA loaded
/// means no client is accepted (fail closed).
#[derive(Debug)]
pub struct ClientCerts {
    ca: Arc<Credential>,
    sans: Vec<String>,
    pins: CertPins,
    provider: Arc<CryptoProvider>,
    mandatory: bool,
}

impl ClientCerts {
    /// A verifier over `ca`'s trust anchors; `mandatory` is false for OPTIONAL_MUTUAL (a
    /// client without a certificate is let in; one presenting a certificate must pass).
    pub fn new(
        ca: Arc<Credential>,
        sans: Vec<String>,
        pins: CertPins,
        provider: Arc<CryptoProvider>,
        mandatory: bool,
    ) -> Self {
        Self {
            ca,
            sans,
            pins,
            provider,
            mandatory,
        }
    }

    /// Whether a client must present a certificate (MUTUAL) or may not (OPTIONAL_MUTUAL).
    pub fn mandatory(&self) -> bool {
        self.mandatory
    }
}

/// Whether the certificate matches one of `pins` (either list), as Envoy checks
/// `verify_certificate_spki` and `verify_certificate_hash`.
fn pinned(pins: &CertPins, der: &CertificateDer<'_>) -> bool {
    use sha2::{Digest, Sha256};
    if !pins.hash.is_empty() {
        let d: [u8; 32] = Sha256::digest(der.as_ref()).into();
        if pins.hash.contains(&d) {
            return true;
        }
    }
    if !pins.spki.is_empty()
        && let Ok((_, c)) = x509_parser::parse_x509_certificate(der)
    {
        let d: [u8; 32] = Sha256::digest(c.tbs_certificate.subject_pki.raw).into();
        return pins.spki.contains(&d);
    }
    false
}

fn cert_sans(der: &CertificateDer<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(der)
        && let Ok(Some(san)) = c.subject_alternative_name()
    {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => out.push(d.to_string()),
                x509_parser::extensions::GeneralName::URI(u) => out.push(u.to_string()),
                x509_parser::extensions::GeneralName::RFC822Name(e) => out.push(e.to_string()),
                _ => {}
            }
        }
    }
    out
}

impl ClientCertVerifier for ClientCerts {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let Some(v) = self.ca.verifier.load_full() else {
            return Err(Error::General(
                "no CA certificate is loaded for this server".into(),
            ));
        };
        v.0.verify_client_cert(end_entity, intermediates, now)?;
        if !self.sans.is_empty() {
            let sans = cert_sans(end_entity);
            if !sans.iter().any(|s| self.sans.contains(s)) {
                return Err(Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ));
            }
        }
        if !self.pins.is_empty() && !pinned(&self.pins, end_entity) {
            return Err(Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Presents the credential's current client certificate (DestinationRule MUTUAL).
#[derive(Debug)]
pub struct ClientCert(pub Arc<Credential>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.key.load_full()
    }

    fn has_certs(&self) -> bool {
        self.0.key.load().is_some()
    }
}

/// Verifies upstream server certificates against one generation of a credential's `ca.crt`
/// and CRLs (or the system roots), and against `subjectAltNames` when given; with `skip`,
/// accepts anything. Built once per credential generation (`tls::client::Origination`), so
/// a handshake neither rebuilds the chain verifier nor copies the CRLs.
#[derive(Debug)]
pub struct UpstreamCerts {
    trust: Result<Arc<dyn ServerCertVerifier>, String>,
    sans: Vec<String>,
    skip: bool,
    provider: Arc<CryptoProvider>,
}

impl UpstreamCerts {
    /// Verification against `trust`, or every upstream refused with its error.
    pub fn new(
        trust: Result<Arc<dyn ServerCertVerifier>, String>,
        sans: Vec<String>,
        skip: bool,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            trust,
            sans,
            skip,
            provider,
        }
    }

    /// The chain verifier over `credential`'s CA and CRLs as they are now.
    pub fn trusting(
        credential: &Credential,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, String> {
        let Some(roots) = credential.ca.load_full() else {
            return Err("no CA certificate loaded for the upstream".into());
        };
        let mut b =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
        if let Some(crls) = credential.crls.load_full() {
            b = b
                .with_crls(crls.iter().cloned())
                .allow_unknown_revocation_status();
        }
        b.build()
            .map(|v| v as Arc<dyn ServerCertVerifier>)
            .map_err(|e| e.to_string())
    }
}

impl ServerCertVerifier for UpstreamCerts {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self.skip {
            return Ok(ServerCertVerified::assertion());
        }
        let inner = self.trust.as_ref().map_err(|e| Error::General(e.clone()))?;
        if self.sans.is_empty() {
            return inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        // With subjectAltNames, the chain must verify and one of the names must be on it.
        let mut last = Err(Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName,
        ));
        for san in &self.sans {
            if let Ok(name) = ServerName::try_from(san.clone()) {
                last = inner.verify_server_cert(end_entity, intermediates, &name, ocsp, now);
                if last.is_ok() {
                    break;
                }
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
