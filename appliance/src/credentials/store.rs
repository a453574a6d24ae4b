//! The credential registry: one entry per credential folder, shared by every server that
//! names it, each holding its last good material behind an `ArcSwap` that handshakes read
//! without a lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateRevocationListDer;
use serde::Serialize;
use tenants::model::{Credential as Source, valid_credential_name};
use tenants::snapshot::CredentialRef;

use super::load::{CertInfo, CredentialError, FilePaths, Material, load_files, load_folder};

/// A client-certificate verifier built from the current `ca.crt`.
pub struct VerifierCell(pub Arc<dyn ClientCertVerifier>);

/// What `/status` shows about a credential.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CredentialStatus {
    /// `namespace/name` (or the file path for platform file credentials).
    pub name: String,
    /// Whether a good credential is being served.
    pub serving: bool,
    /// The last load error (the previous good credential keeps serving).
    pub error: Option<String>,
    /// Non-fatal findings of the last load.
    pub warnings: Vec<String>,
    /// The certificate being served.
    pub certificate: Option<CertInfo>,
    /// Seconds until the served certificate expires.
    pub expires_in_seconds: Option<i64>,
    /// Files read.
    pub files: Vec<String>,
    /// Successful loads since start.
    pub loads: u64,
}

/// One credential folder.
pub struct Credential {
    /// Display name.
    pub name: String,
    tenant_root: PathBuf,
    dir: PathBuf,
    ca_dir: Option<PathBuf>,
    /// A platform credential's own files, read instead of the folder's usual names.
    paths: Option<FilePaths>,
    need_key: bool,
    /// The served certificate and key.
    pub key: ArcSwapOption<CertifiedKey>,
    /// The trust anchors from `ca.crt`.
    pub ca: ArcSwapOption<RootCertStore>,
    /// A client verifier over `ca` (and `ca.crl`).
    pub verifier: ArcSwapOption<VerifierCell>,
    /// Revocation lists (`ca.crl`, `caCrl`), for verifying upstream servers.
    pub crls: ArcSwapOption<Vec<CertificateRevocationListDer<'static>>>,
    /// Bumped on each successful load.
    pub generation: AtomicU64,
    status: Mutex<CredentialStatus>,
    /// Content fingerprint of the files last loaded (mtime and size).
    stamp: Mutex<Vec<(PathBuf, u64, u64)>>,
}

impl Credential {
    /// Re-reads the folder if its files changed; keeps the last good material on error.
    /// Returns whether new material was swapped in.
    pub fn refresh(&self, provider: &Arc<CryptoProvider>, force: bool) -> bool {
        let stamp = self.fingerprint();
        if !force
            && let Ok(old) = self.stamp.lock()
            && *old == stamp
            && !old.is_empty()
        {
            return false;
        }
        let loaded = match &self.paths {
            Some(f) => load_files(f, self.need_key, provider),
            None => load_folder(
                &self.tenant_root,
                &self.dir,
                self.ca_dir.as_deref(),
                self.need_key,
                provider,
            ),
        };
        let result = loaded
            .and_then(|m| self.keeps_revocation(m))
            .and_then(|m| self.verifier_for(&m, provider).map(|v| (m, v)));
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok((m, verifier)) => {
                let changed = true;
                self.key.store(m.key.clone());
                self.ca.store(m.ca.clone());
                self.crls
                    .store((!m.crls.is_empty()).then(|| Arc::new(m.crls.clone())));
                self.verifier
                    .store(verifier.map(|v| Arc::new(VerifierCell(v))));
                self.generation.fetch_add(1, Ordering::Release);
                status.serving = m.key.is_some() || !self.need_key;
                status.error = None;
                status.warnings = m.warnings;
                status.certificate = m.info;
                status.files = m.files.iter().map(|p| p.display().to_string()).collect();
                status.loads += 1;
                if let Ok(mut s) = self.stamp.lock() {
                    *s = stamp;
                }
                changed
            }
            Err(e) => {
                let msg = e.to_string();
                if status.error.as_deref() != Some(&msg) {
                    tracing::warn!(credential = %self.name, error = %msg, "credential not loaded; the last good one keeps serving");
                }
                status.error = Some(msg);
                status.serving =
                    self.key.load().is_some() || (!self.need_key && self.ca.load().is_some());
                if let Ok(mut s) = self.stamp.lock() {
                    *s = stamp;
                }
                false
            }
        }
    }

    /// A CRL file that held CRLs and is empty now (caught mid-write, or emptied by mistake)
    /// would turn revocation off: refused, so the last good lists stay.
    fn keeps_revocation(&self, m: Material) -> Result<Material, CredentialError> {
        match &m.crl_file {
            Some(p) if m.crls.is_empty() && self.crls.load().is_some() => {
                Err(CredentialError::Invalid {
                    path: p.clone(),
                    reason: "the CRL file held CRLs and is empty now".into(),
                })
            }
            _ => Ok(m),
        }
    }

    fn verifier_for(
        &self,
        m: &Material,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Option<Arc<dyn ClientCertVerifier>>, CredentialError> {
        let Some(ca) = &m.ca else { return Ok(None) };
        let mut b = rustls::server::WebPkiClientVerifier::builder_with_provider(
            ca.clone(),
            provider.clone(),
        );
        if !m.crls.is_empty() {
            b = b
                .with_crls(m.crls.clone())
                .allow_unknown_revocation_status();
        }
        b.build().map(Some).map_err(|e| CredentialError::Invalid {
            path: self.dir.join("ca.crt"),
            reason: format!("cannot build a client verifier: {e}"),
        })
    }

    /// Size and mtime of every file that could be part of the credential.
    fn fingerprint(&self) -> Vec<(PathBuf, u64, u64)> {
        let mut out = Vec::new();
        let dirs = std::iter::once(&self.dir).chain(self.ca_dir.iter());
        // A platform credential given by paths: exactly its files.
        let named: Vec<PathBuf> = match &self.paths {
            Some(f) => f.all().cloned().collect(),
            None => dirs
                .flat_map(|d| {
                    [
                        "tls.crt", "tls.key", "cert", "key", "ca.crt", "cacert", "ca.crl", "crl",
                    ]
                    .map(|n| d.join(n))
                })
                .collect(),
        };
        for p in named {
            if let Ok(md) = std::fs::metadata(&p) {
                use std::os::unix::fs::MetadataExt;
                // Inode catches write-then-rename and `..data` swaps; mtime catches in-place
                // writes.
                let mtime = (md.mtime() as u64)
                    .wrapping_mul(1_000_000_000)
                    .wrapping_add(md.mtime_nsec() as u64);
                out.push((p, md.len() ^ md.ino().rotate_left(32), mtime));
            }
        }
        out
    }

    /// The status with the expiry countdown computed now.
    pub fn status(&self) -> CredentialStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        s.expires_in_seconds = s.certificate.as_ref().map(|c| c.not_after - now);
        s.name.clone_from(&self.name);
        s
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a warning computed by a user of the credential (SAN coverage).
    pub fn note(&self, warning: String) {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !s.warnings.contains(&warning) {
            s.warnings.push(warning);
        }
    }
}

/// Why a credential reference was refused outright.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefError {
    /// The name could walk out of the tenant's folder.
    #[error("credential name {0:?} is not a DNS-1123 subdomain")]
    BadName(String),
}

/// (namespace, source, separate CA folder, key required).
type CredKey = (String, Source, Option<String>, bool);

/// All credentials in use.
pub struct Store {
    root: PathBuf,
    provider: Arc<CryptoProvider>,
    map: Mutex<HashMap<CredKey, Arc<Credential>>>,
}

impl Store {
    /// A store over `<root>/<namespace>/<name>/`.
    pub fn new(root: PathBuf, provider: Arc<CryptoProvider>) -> Self {
        Self {
            root,
            provider,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The crypto provider.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The credentials folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The credential for a reference, loading it on first use. `ca` names a separate CA
    /// folder; `need_key` is false for CA-only uses.
    pub fn get(
        &self,
        r: &CredentialRef,
        ca: Option<&str>,
        need_key: bool,
    ) -> Result<Arc<Credential>, RefError> {
        let key = (
            r.namespace.clone(),
            r.source.clone(),
            ca.map(str::to_string),
            need_key,
        );
        if let Some(c) = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(c.clone());
        }
        if !valid_credential_name(&r.namespace) {
            return Err(RefError::BadName(r.namespace.clone()));
        }
        let tenant_root = self.root.join(&r.namespace);
        let (dir, name) = match &r.source {
            Source::Name(n) => {
                if !valid_credential_name(n) {
                    return Err(RefError::BadName(n.clone()));
                }
                (tenant_root.join(n), format!("{}/{n}", r.namespace))
            }
            Source::Files { cert, ca, crl, .. } => {
                // Platform file credentials: the folder of the certificate file; a CA-only
                // one (a DestinationRule's `caCertificates`) is named after its CA file.
                let p = PathBuf::from(cert);
                let name = match (cert.is_empty(), ca, crl) {
                    (true, Some(ca), Some(crl)) => format!("{ca} (CRL {crl})"),
                    (true, Some(ca), None) => ca.clone(),
                    _ => cert.clone(),
                };
                (p.parent().map(Path::to_path_buf).unwrap_or_default(), name)
            }
        };
        let tenant_root = match &r.source {
            Source::Files { .. } => dir.clone(),
            Source::Name(_) => tenant_root,
        };
        let ca_dir = match (&r.source, ca) {
            (_, Some(c)) if valid_credential_name(c) => Some(self.root.join(&r.namespace).join(c)),
            (Source::Name(n), None) => {
                Some(self.root.join(&r.namespace).join(format!("{n}-cacert")))
            }
            _ => None,
        };
        let paths = match &r.source {
            Source::Files { cert, key, ca, crl } => Some(FilePaths {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                ca: ca.as_ref().map(PathBuf::from),
                crl: crl.as_ref().map(PathBuf::from),
            }),
            Source::Name(_) => None,
        };
        let cred = Arc::new(Credential {
            name,
            tenant_root,
            dir,
            ca_dir,
            paths,
            need_key,
            key: ArcSwapOption::empty(),
            ca: ArcSwapOption::empty(),
            verifier: ArcSwapOption::empty(),
            crls: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            status: Mutex::new(CredentialStatus::default()),
            stamp: Mutex::new(Vec::new()),
        });
        cred.refresh(&self.provider, true);
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, cred.clone());
        Ok(cred)
    }

    /// Re-reads every credential whose files changed (or all, with `force`); returns how many
    /// were swapped.
    pub fn refresh_all(&self, force: bool) -> usize {
        let creds: Vec<Arc<Credential>> = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        creds
            .iter()
            .filter(|c| c.refresh(&self.provider, force))
            .count()
    }

    /// Drops credentials nothing references any more.
    pub fn retain_used(&self) {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, c| Arc::strong_count(c) > 1);
    }

    /// Every credential's status.
    pub fn statuses(&self) -> Vec<CredentialStatus> {
        let mut v: Vec<CredentialStatus> = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|c| c.status())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.dedup_by(|a, b| a.name == b.name);
        v
    }

    /// Every credential.
    pub fn all(&self) -> Vec<Arc<Credential>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}
