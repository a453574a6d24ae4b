//! Reading and checking one credential folder: certificate chain, key, CA, CRL.
//!
//! Everything a folder can hold is parsed and checked before anything is swapped in: a
//! certificate that does not match its key, a chain out of order or a file that does not
//! parse is an error and the last good credential keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::Serialize;

/// Why a credential could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The folder or a file is missing or unreadable.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A path leaves the tenant's credential folder (`..`, or a symbolic link outside).
    #[error("{path}: refused: resolves outside the tenant's credential folder {root}")]
    Escape {
        /// The offending path.
        path: PathBuf,
        /// The tenant's folder.
        root: PathBuf,
    },
    /// A file does not hold what it should.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What is known about a loaded certificate, for `/status` and metrics.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, hex.
    pub serial: String,
    /// Subject, RFC 4514.
    pub subject: String,
    /// DNS names in the subjectAltName.
    pub dns_names: Vec<String>,
    /// Not before, seconds since the epoch.
    pub not_before: i64,
    /// Not after, seconds since the epoch.
    pub not_after: i64,
}

/// The parsed content of a credential folder.
pub(crate) struct Material {
    /// Certificate chain and key (absent for a CA-only folder).
    pub key: Option<Arc<CertifiedKey>>,
    /// About the leaf certificate.
    pub info: Option<CertInfo>,
    /// Trust anchors from `ca.crt` (MUTUAL, and TLS origination).
    pub ca: Option<Arc<RootCertStore>>,
    /// Revocation lists from `ca.crl`.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// The CRL file read, when there is one (it may be empty).
    pub crl_file: Option<PathBuf>,
    /// Non-fatal findings (expiry, SAN coverage).
    pub warnings: Vec<String>,
    /// The files read.
    pub files: Vec<PathBuf>,
}

/// File names Istio accepts for each part (`tls.crt` or `cert`, ...).
const CERT: &[&str] = &["tls.crt", "cert"];
const KEY: &[&str] = &["tls.key", "key"];
const CA: &[&str] = &["ca.crt", "cacert"];
const CRL: &[&str] = &["ca.crl", "crl"];

/// Resolves `name` inside `root` and refuses anything that ends up outside `root`
/// (symbolic links included).
pub(crate) fn confined(root: &Path, rel: &Path) -> Result<PathBuf, CredentialError> {
    let joined = root.join(rel);
    let real_root = std::fs::canonicalize(root).map_err(|source| CredentialError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let real = std::fs::canonicalize(&joined).map_err(|source| CredentialError::Io {
        path: joined.clone(),
        source,
    })?;
    if !real.starts_with(&real_root) {
        return Err(CredentialError::Escape {
            path: joined,
            root: root.to_path_buf(),
        });
    }
    Ok(real)
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

fn read(root: &Path, path: &Path) -> Result<Vec<u8>, CredentialError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let real = confined(root, rel)?;
    std::fs::read(&real).map_err(|source| CredentialError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a credential folder. `tenant_root` is `<credentials>/<namespace>`: nothing outside it
/// is read. `ca_dir` is a separate folder for `ca.crt` (`<name>-cacert` or
/// `caCertCredentialName`).
pub(crate) fn load_folder(
    tenant_root: &Path,
    dir: &Path,
    ca_dir: Option<&Path>,
    need_key: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Material, CredentialError> {
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    if !dir.is_dir() {
        return Err(CredentialError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "credential folder not found",
            ),
        });
    }
    confined(tenant_root, dir.strip_prefix(tenant_root).unwrap_or(dir))?;
    let (key, info) = match (first_existing(dir, CERT), first_existing(dir, KEY)) {
        (Some(c), Some(k)) => {
            let (ck, info, w) = load_pair(tenant_root, &c, &k, provider)?;
            warnings.extend(w);
            files.push(c);
            files.push(k);
            (Some(Arc::new(ck)), Some(info))
        }
        (None, _) if need_key => {
            return Err(CredentialError::Io {
                path: dir.join("tls.crt"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tls.crt (or cert) in the credential folder",
                ),
            });
        }
        (Some(_), None) if need_key => {
            return Err(CredentialError::Io {
                path: dir.join("tls.key"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tls.key (or key) in the credential folder",
                ),
            });
        }
        _ => (None, None),
    };
    let ca_path = first_existing(dir, CA).or_else(|| ca_dir.and_then(|d| first_existing(d, CA)));
    let ca = match ca_path {
        Some(p) => {
            let store = load_ca(tenant_root, &p)?;
            files.push(p);
            Some(Arc::new(store))
        }
        None => None,
    };
    let mut crls = Vec::new();
    let crl_file = first_existing(dir, CRL);
    if let Some(p) = &crl_file {
        crls = load_crls(tenant_root, p)?;
        files.push(p.clone());
    }
    Ok(Material {
        key,
        info,
        ca,
        crls,
        crl_file,
        warnings,
        files,
    })
}

fn load_crls(
    root: &Path,
    p: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, CredentialError> {
    let bytes = read(root, p)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .map(|c| {
            c.map_err(|e| CredentialError::Invalid {
                path: p.to_path_buf(),
                reason: format!("not a PEM CRL: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // An empty file is no CRL (as Istio reads an empty `ca.crl`; the credential refuses it
    // when it held CRLs before, see `Credential::refresh`). A file with content but no CRL is
    // the wrong file: refused, so the last good lists stay.
    if crls.is_empty() && !bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CredentialError::Invalid {
            path: p.to_path_buf(),
            reason: "no CRL found (expected -----BEGIN X509 CRL-----)".into(),
        });
    }
    Ok(crls)
}

/// The files of a platform credential given by path (`serverCertificate`, `privateKey`,
/// `caCertificates`, `caCrl`; a DestinationRule's `clientCertificate`).
#[derive(Debug, Clone)]
pub(crate) struct FilePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub crl: Option<PathBuf>,
}

impl FilePaths {
    pub(crate) fn all(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(self.ca.iter())
            .chain(self.crl.iter())
    }
}

/// Loads a platform credential from the files it names. Only `gatehouse.yaml` and
/// `platform/` may name files (the tenants crate refuses paths in a tenant's resources), so
/// they are not confined to a folder.
pub(crate) fn load_files(
    f: &FilePaths,
    need_key: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Material, CredentialError> {
    let root = Path::new("/");
    let mut files = Vec::new();
    let (key, info, warnings) = if need_key || f.cert.exists() {
        let (ck, info, w) = load_pair(root, &f.cert, &f.key, provider)?;
        files.extend([f.cert.clone(), f.key.clone()]);
        (Some(Arc::new(ck)), Some(info), w)
    } else {
        (None, None, Vec::new())
    };
    let ca = match &f.ca {
        Some(p) => {
            let store = load_ca(root, p)?;
            files.push(p.clone());
            Some(Arc::new(store))
        }
        None => None,
    };
    let crls = match &f.crl {
        Some(p) => {
            files.push(p.clone());
            load_crls(root, p)?
        }
        None => Vec::new(),
    };
    Ok(Material {
        key,
        info,
        ca,
        crls,
        crl_file: f.crl.clone(),
        warnings,
        files,
    })
}

fn load_pair(
    root: &Path,
    cert_path: &Path,
    key_path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<(CertifiedKey, CertInfo, Vec<String>), CredentialError> {
    let cert_pem = read(root, cert_path)?;
    let key_pem = read(root, key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CredentialError::Invalid {
            path: cert_path.to_path_buf(),
            reason: format!("not a PEM certificate chain: {e}"),
        })?;
    if chain.is_empty() {
        return Err(CredentialError::Invalid {
            path: cert_path.to_path_buf(),
            reason: "no certificate found (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CredentialError::Invalid {
        path: key_path.to_path_buf(),
        reason: format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let signing =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CredentialError::Invalid {
                path: key_path.to_path_buf(),
                reason: format!("unsupported private key: {e}"),
            })?;
    let ck = CertifiedKey::new(chain.clone(), signing);
    ck.keys_match().map_err(|e| CredentialError::Invalid {
        path: key_path.to_path_buf(),
        reason: format!("the private key does not match the certificate: {e}"),
    })?;
    let mut parsed = Vec::new();
    for (i, der) in chain.iter().enumerate() {
        let (_, c) =
            x509_parser::parse_x509_certificate(der).map_err(|e| CredentialError::Invalid {
                path: cert_path.to_path_buf(),
                reason: format!("certificate {i} of the chain does not parse: {e}"),
            })?;
        parsed.push(c);
    }
    for i in 1..parsed.len() {
        if parsed[i - 1].issuer() != parsed[i].subject() {
            return Err(CredentialError::Invalid {
                path: cert_path.to_path_buf(),
                reason: format!(
                    "chain out of order: certificate {} ({}) is not issued by certificate {} ({})",
                    i - 1,
                    parsed[i - 1].subject(),
                    i,
                    parsed[i].subject()
                ),
            });
        }
    }
    let leaf = &parsed[0];
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                dns_names.push(d.to_ascii_lowercase());
            }
        }
    }
    let info = CertInfo {
        serial: leaf.raw_serial_as_string().replace(':', ""),
        subject: leaf.subject().to_string(),
        dns_names,
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
    };
    let mut warnings = Vec::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if info.not_after < now {
        warnings.push(format!(
            "{}: certificate expired at {} (now {})",
            cert_path.display(),
            leaf.validity().not_after,
            fmt_time(now)
        ));
    } else if info.not_before > now {
        warnings.push(format!(
            "{}: certificate is not valid before {} (now {})",
            cert_path.display(),
            leaf.validity().not_before,
            fmt_time(now)
        ));
    }
    Ok((ck, info, warnings))
}

fn fmt_time(secs: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map_or_else(|_| secs.to_string(), |t| t.to_string())
}

fn load_ca(root: &Path, p: &Path) -> Result<RootCertStore, CredentialError> {
    let bytes = read(root, p)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| CredentialError::Invalid {
            path: p.to_path_buf(),
            reason: format!("not a PEM certificate bundle: {e}"),
        })?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(CredentialError::Invalid {
            path: p.to_path_buf(),
            reason: "no usable CA certificate".into(),
        });
    }
    Ok(store)
}

/// Whether a certificate's DNS names cover `host` (wildcards one label deep, as TLS does).
pub fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| {
        if n == host {
            return true;
        }
        match (n.strip_prefix("*."), host.split_once('.')) {
            (Some(suffix), Some((_, rest))) => rest == suffix,
            _ => false,
        }
    })
}
