//! Test PKI with rcgen: a CA, server certificates for host names, client certificates.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// PEM of the CA certificate.
    pub pem: String,
}

/// A certificate and its key in PEM.
pub struct Leaf {
    /// Certificate (chain) PEM.
    pub cert: String,
    /// Private key PEM.
    pub key: String,
    /// Serial, hex.
    pub serial: String,
}

impl Ca {
    /// A new CA named `cn`.
    pub fn new(cn: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca");
        let pem = issuer.pem();
        Self { issuer, pem }
    }

    fn leaf(&self, cn: &str, names: &[&str], client: bool, serial: u64) -> Leaf {
        self.leaf_with(cn, names, client, serial, KeyPair::generate().expect("key"))
    }

    fn leaf_with(&self, cn: &str, names: &[&str], client: bool, serial: u64, key: KeyPair) -> Leaf {
        let mut p =
            CertificateParams::new(names.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
                .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial: format!("{serial:x}"),
        }
    }

    /// A server certificate for `names` (the first is also the CN).
    pub fn server(&self, names: &[&str], serial: u64) -> Leaf {
        self.leaf(
            names.first().copied().unwrap_or("server"),
            names,
            false,
            serial,
        )
    }

    /// A server certificate like [`server`](Self::server) with a 2048-bit RSA key (the
    /// others are ECDSA P-256). The key comes from `openssl genpkey`.
    pub fn server_rsa(&self, names: &[&str], serial: u64) -> Leaf {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl genpkey");
        assert!(out.status.success(), "openssl genpkey: {out:?}");
        let pem = String::from_utf8(out.stdout).expect("PEM");
        let key = KeyPair::from_pem(&pem).expect("RSA key");
        self.leaf_with(
            names.first().copied().unwrap_or("server"),
            names,
            false,
            serial,
            key,
        )
    }

    /// A PEM CRL from this CA revoking the certificates with `serials`.
    pub fn crl(&self, serials: &[u64]) -> String {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("crl")
            .pem()
            .expect("crl pem")
    }

    /// A client certificate with CN `cn`.
    pub fn client(&self, cn: &str, serial: u64) -> Leaf {
        self.leaf(cn, &[cn], true, serial)
    }
}

/// Writes `<dir>/tls.crt`, `tls.key` and, when given, `ca.crt`.
pub fn write_credential(dir: &Path, leaf: &Leaf, ca: Option<&str>) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("tls.crt"), &leaf.cert).expect("write crt");
    std::fs::write(dir.join("tls.key"), &leaf.key).expect("write key");
    if let Some(ca) = ca {
        std::fs::write(dir.join("ca.crt"), ca).expect("write ca");
    }
}
