//! The trust store (SSH public keys and OpenPGP public keys in files on the appliance) and
//! key identities, compared with the `signers` entries of Tenant definitions.

use std::io::Cursor;
use std::path::Path;

use pgp::composed::{Deserializable, SignedPublicKey};
use pgp::types::KeyDetails;
use ssh_key::HashAlg;
use ssh_key::public::KeyData;

use super::VerifyError;

/// A trusted key.
#[derive(Debug, Clone)]
pub enum TrustedKey {
    /// An SSH public key.
    Ssh(KeyData),
    /// An OpenPGP certificate (primary key and subkeys).
    Pgp(Box<SignedPublicKey>),
}

/// Who a key is, for comparisons with `signers` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyIdent {
    /// An SSH key.
    Ssh(KeyData),
    /// An OpenPGP key: upper-case hex fingerprints, primary first, then subkeys.
    Pgp(Vec<String>),
}

/// The keys every fetched commit (or tag) must be signed by.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    /// The keys.
    pub keys: Vec<TrustedKey>,
}

// === impl TrustedKey ===

impl TrustedKey {
    /// Its identity.
    pub fn ident(&self) -> KeyIdent {
        match self {
            Self::Ssh(k) => KeyIdent::Ssh(k.clone()),
            Self::Pgp(k) => {
                let mut fps = vec![format!("{:X}", k.primary_key.fingerprint())];
                fps.extend(
                    k.public_subkeys
                        .iter()
                        .map(|s| format!("{:X}", s.key.fingerprint())),
                );
                KeyIdent::Pgp(fps)
            }
        }
    }
}

// === impl KeyIdent ===

impl KeyIdent {
    /// `ssh-ed25519 SHA256:...` or `openpgp <fingerprint>`.
    pub fn describe(&self) -> String {
        match self {
            Self::Ssh(k) => format!("{} {}", k.algorithm(), k.fingerprint(HashAlg::Sha256)),
            Self::Pgp(fps) => format!("openpgp {}", fps.first().map_or("?", String::as_str)),
        }
    }

    /// Whether a Tenant `signers` entry names this key: an SSH public key line, an
    /// OpenPGP fingerprint or long key id (hex), or an armored OpenPGP public key.
    pub fn matches_entry(&self, entry: &str) -> bool {
        let entry = entry.trim();
        match self {
            Self::Ssh(k) => ssh_line(entry).is_some_and(|e| &e == k),
            Self::Pgp(fps) => {
                if entry.contains("BEGIN PGP PUBLIC KEY BLOCK") {
                    return parse_pgp(entry).is_ok_and(|keys| {
                        keys.iter().any(|k| {
                            TrustedKey::Pgp(Box::new(k.clone())).ident() == *self
                                || format!("{:X}", k.primary_key.fingerprint()) == fps[0]
                        })
                    });
                }
                let hex: String = entry
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
                    .trim_start_matches("0x")
                    .to_ascii_uppercase();
                hex.len() >= 16
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
                    && fps.iter().any(|f| f.ends_with(&hex))
            }
        }
    }
}

/// Parses the SSH key on one line (authorized_keys or allowed_signers style: options or
/// principals may precede the key type).
fn ssh_line(line: &str) -> Option<KeyData> {
    let start = ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
        .iter()
        .filter_map(|p| {
            line.match_indices(p)
                .map(|(i, _)| i)
                .find(|i| *i == 0 || line.as_bytes()[i - 1] == b' ')
        })
        .min()?;
    ssh_key::PublicKey::from_openssh(&line[start..])
        .ok()
        .map(|k| k.key_data().clone())
}

fn parse_pgp(text: &str) -> Result<Vec<SignedPublicKey>, String> {
    let (keys, _) = SignedPublicKey::from_armor_many(Cursor::new(text.as_bytes()))
        .map_err(|e| e.to_string())?;
    keys.collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// Parses one trust-store file's text.
pub fn parse(text: &str, origin: &str) -> Result<Vec<TrustedKey>, VerifyError> {
    let bad = |m: String| VerifyError::TrustStore(format!("{origin}: {m}"));
    if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        let keys = parse_pgp(text).map_err(bad)?;
        return Ok(keys
            .into_iter()
            .map(|k| TrustedKey::Pgp(Box::new(k)))
            .collect());
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let k = ssh_line(l).ok_or_else(|| bad(format!("line {}: not an SSH public key", n + 1)))?;
        out.push(TrustedKey::Ssh(k));
    }
    if out.is_empty() {
        return Err(bad("no keys".into()));
    }
    Ok(out)
}

// === impl TrustStore ===

impl TrustStore {
    /// Reads the trust store files.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, VerifyError> {
        let mut keys = Vec::new();
        for p in paths {
            let p = p.as_ref();
            let text = std::fs::read_to_string(p)
                .map_err(|e| VerifyError::TrustStore(format!("{}: {e}", p.display())))?;
            keys.extend(parse(&text, &p.display().to_string())?);
        }
        Ok(Self { keys })
    }
}
