//! The libgit2 callbacks: credentials (each kind offered at most once, so a rejected
//! credential ends the fetch with a clear error instead of libgit2's endless retry loop),
//! host-key checking, and the deadline checks in the progress callbacks.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::FetchError;
use super::known_hosts::{self, HostKeyError};
use super::url::RepoUrl;
use crate::config::Auth;

/// Secrets read from their files for one fetch.
#[derive(Clone, Default)]
pub struct Secrets {
    /// User name.
    pub username: Option<String>,
    /// Basic-auth password (token).
    pub token: Option<String>,
    /// The file it came from (for messages).
    pub token_file: Option<PathBuf>,
    /// Bearer token.
    pub bearer: Option<String>,
    /// SSH private key path.
    pub ssh_key: Option<PathBuf>,
    /// Its passphrase.
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("username", &self.username)
            .field("token_file", &self.token_file)
            .field("ssh_key", &self.ssh_key)
            .finish_non_exhaustive()
    }
}

fn read_secret(p: &Path) -> Result<String, FetchError> {
    let s = std::fs::read_to_string(p)
        .map_err(|e| FetchError::Auth(format!("cannot read {}: {e}", p.display())))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

// === impl Secrets ===

impl Secrets {
    /// Reads the configured files.
    pub fn read(auth: &Auth) -> Result<Self, FetchError> {
        Ok(Self {
            username: auth.username.clone(),
            token: auth.token_file.as_deref().map(read_secret).transpose()?,
            token_file: auth.token_file.clone(),
            bearer: auth
                .bearer_token_file
                .as_deref()
                .map(read_secret)
                .transpose()?,
            ssh_key: auth.ssh_key_file.clone(),
            passphrase: auth
                .ssh_key_passphrase_file
                .as_deref()
                .map(read_secret)
                .transpose()?,
        })
    }
}

/// What the callbacks saw, shared between the two transfers of one fetch.
#[derive(Debug, Default)]
pub struct Seen {
    userpass: u32,
    ssh_key: u32,
    username: u32,
    /// The first failure a callback reported; it explains libgit2's generic error.
    pub failure: Option<FetchError>,
    /// With `scan`: the host key the server offered (`known_hosts` form, no host).
    pub scanned: Option<String>,
}

fn fail(seen: &Rc<RefCell<Seen>>, e: FetchError) -> git2::Error {
    let msg = e.to_string();
    let mut s = seen.borrow_mut();
    if s.failure.is_none() {
        s.failure = Some(e);
    }
    git2::Error::from_str(&msg)
}

/// Builds the callbacks for one transfer.
pub fn callbacks<'a>(
    url: &'a RepoUrl,
    secrets: &'a Secrets,
    known_hosts: Option<&'a Path>,
    seen: Rc<RefCell<Seen>>,
    deadline: Instant,
    scan: bool,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let s = seen.clone();
    cb.credentials(move |_url, from_url, allowed| {
        let user = from_url
            .map(str::to_string)
            .or_else(|| secrets.username.clone())
            .unwrap_or_else(|| "git".into());
        credential(&s, secrets, &user, allowed)
    });
    let s = seen;
    cb.certificate_check(move |cert, host| {
        let Some(hk) = cert.as_hostkey() else {
            // X.509: libgit2 and OpenSSL verify the chain against the configured roots.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let token = known_hosts::host_token(host, url.port);
        if scan {
            // Record the key and stop: nothing is fetched from an unverified host.
            let key = hk
                .hostkey()
                .and_then(|raw| ssh_key::PublicKey::from_bytes(raw).ok())
                .and_then(|k| k.to_openssh().ok());
            s.borrow_mut().scanned = key;
            return Err(git2::Error::from_str("host key read"));
        }
        let Some(file) = known_hosts else {
            return Err(fail(
                &s,
                FetchError::HostKey(HostKeyError::NotConfigured(token).to_string()),
            ));
        };
        let Some(raw) = hk.hostkey() else {
            return Err(fail(
                &s,
                FetchError::HostKey(HostKeyError::NoKey(token).to_string()),
            ));
        };
        match known_hosts::check(file, host, url.port, raw) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(e) => Err(fail(&s, FetchError::HostKey(e.to_string()))),
        }
    });
    cb.transfer_progress(move |_| Instant::now() < deadline);
    cb.sideband_progress(move |_| Instant::now() < deadline);
    cb
}

fn credential(
    seen: &Rc<RefCell<Seen>>,
    secrets: &Secrets,
    user: &str,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    if allowed.contains(CredentialType::USERNAME) {
        seen.borrow_mut().username += 1;
        if seen.borrow().username > 1 {
            return Err(fail(
                seen,
                FetchError::Auth(format!("the server refused user {user:?}")),
            ));
        }
        return Cred::username(user);
    }
    if allowed.contains(CredentialType::SSH_KEY) {
        seen.borrow_mut().ssh_key += 1;
        let Some(key) = &secrets.ssh_key else {
            return Err(fail(
                seen,
                FetchError::Auth("the server asks for an ssh key; set ssh_key_file".into()),
            ));
        };
        if seen.borrow().ssh_key > 1 {
            return Err(fail(
                seen,
                FetchError::Auth(format!(
                    "the server refused the ssh key {} for user {user:?}",
                    key.display()
                )),
            ));
        }
        return Cred::ssh_key(user, None, key, secrets.passphrase.as_deref());
    }
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        seen.borrow_mut().userpass += 1;
        let Some(token) = &secrets.token else {
            let why = if secrets.bearer.is_some() {
                "the server refused the bearer token".to_string()
            } else {
                "the server asks for credentials; set token_file (or bearer_token_file)".into()
            };
            return Err(fail(seen, FetchError::Auth(why)));
        };
        if seen.borrow().userpass > 1 {
            let file = secrets
                .token_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(fail(
                seen,
                FetchError::Auth(format!(
                    "the server rejected user {user:?} with the token from {file}"
                )),
            ));
        }
        return Cred::userpass_plaintext(user, token);
    }
    Err(fail(
        seen,
        FetchError::Auth(format!(
            "the server asks for a credential type gatehouse does not support ({allowed:?})"
        )),
    ))
}
