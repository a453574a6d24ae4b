//! Signature verification: the fetched commit (or annotated tag) must carry a valid SSH or
//! OpenPGP signature by a key of the trust store, and the signer must be allowed to change
//! every part the commit changes relative to what is served.
//!
//! Who may change what: a key listed in some Tenant's `signers` is a *tenant key* and may
//! change only the folders of the tenants that list it. Any other trusted key is a *platform
//! key* and may change anything (gatehouse.yaml, platform/, any tenant folder). A tenant
//! whose `signers` list is empty can be changed by platform keys only. Signer lists come from
//! the served gatehouse.yaml (so a commit cannot grant itself rights); a tenant new in this
//! commit uses the new list. Changes are counted against the served release, not the
//! parent commit, so unsigned commits in between cannot smuggle a change through.

pub mod keys;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use git2::{Oid, Repository};
use pgp::composed::{Deserializable, DetachedSignature};

pub use keys::{KeyIdent, TrustStore, TrustedKey};

/// Why a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The trust store could not be read.
    #[error("trust store: {0}")]
    TrustStore(String),
    /// No signature at all.
    #[error("{what} {id} is not signed")]
    Unsigned {
        /// `commit` or `tag`.
        what: &'static str,
        /// Object id.
        id: String,
    },
    /// A signature that does not verify against any trusted key.
    #[error("{what} {id}: {message}")]
    Bad {
        /// `commit` or `tag`.
        what: &'static str,
        /// Object id.
        id: String,
        /// Why.
        message: String,
    },
    /// A valid signer changed something it may not.
    #[error("{0}")]
    NotAllowed(String),
}

/// A verified signature: who signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signing key.
    pub key: KeyIdent,
}

/// What a commit changes relative to the served release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// gatehouse.yaml or platform/ changed.
    pub platform: bool,
    /// Tenant folders that changed (added, modified or removed).
    pub tenants: BTreeSet<String>,
}

/// Verifies the signature on commit `id`.
pub fn commit(repo: &Repository, id: Oid, store: &TrustStore) -> Result<Verified, VerifyError> {
    let (sig, data) = match repo.extract_signature(&id, None) {
        Ok((s, d)) => (s.to_vec(), d.to_vec()),
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(VerifyError::Unsigned {
                what: "commit",
                id: id.to_string(),
            });
        }
        Err(e) => {
            return Err(VerifyError::Bad {
                what: "commit",
                id: id.to_string(),
                message: e.message().to_string(),
            });
        }
    };
    check(&sig, &data, store).map_err(|message| VerifyError::Bad {
        what: "commit",
        id: id.to_string(),
        message,
    })
}

/// Verifies the signature on annotated tag `id` (the signature trails the tag message).
pub fn tag(repo: &Repository, id: Oid, store: &TrustStore) -> Result<Verified, VerifyError> {
    let bad = |message: String| VerifyError::Bad {
        what: "tag",
        id: id.to_string(),
        message,
    };
    let odb = repo.odb().map_err(|e| bad(e.message().to_string()))?;
    let obj = odb.read(id).map_err(|e| bad(e.message().to_string()))?;
    let raw = obj.data();
    let start = [
        "-----BEGIN PGP SIGNATURE-----",
        "-----BEGIN SSH SIGNATURE-----",
    ]
    .iter()
    .filter_map(|m| find_line(raw, m.as_bytes()))
    .min()
    .ok_or_else(|| VerifyError::Unsigned {
        what: "tag",
        id: id.to_string(),
    })?;
    check(&raw[start..], &raw[..start], store).map_err(bad)
}

/// The offset of the last line of `raw` starting with `marker`.
fn find_line(raw: &[u8], marker: &[u8]) -> Option<usize> {
    (0..raw.len())
        .rev()
        .find(|&i| (i == 0 || raw[i - 1] == b'\n') && raw[i..].starts_with(marker))
}

/// Verifies `sig` (armored SSH or OpenPGP) over `data` against the trust store.
pub fn check(sig: &[u8], data: &[u8], store: &TrustStore) -> Result<Verified, String> {
    let text = std::str::from_utf8(sig).map_err(|_| "the signature is not text".to_string())?;
    if text
        .trim_start()
        .starts_with("-----BEGIN SSH SIGNATURE-----")
    {
        let sig = ssh_key::SshSig::from_pem(text.trim())
            .map_err(|e| format!("unreadable SSH signature: {e}"))?;
        let signer = sig.public_key().clone();
        let trusted = store
            .keys
            .iter()
            .any(|k| matches!(k, TrustedKey::Ssh(t) if *t == signer));
        let ident = KeyIdent::Ssh(signer.clone());
        if !trusted {
            return Err(format!(
                "signed by {}, which is not in the trust store",
                ident.describe()
            ));
        }
        ssh_key::PublicKey::from(signer)
            .verify("git", data, &sig)
            .map_err(|e| format!("the SSH signature by {} is invalid: {e}", ident.describe()))?;
        return Ok(Verified { key: ident });
    }
    if text
        .trim_start()
        .starts_with("-----BEGIN PGP SIGNATURE-----")
    {
        let (sig, _) = DetachedSignature::from_armor_single(Cursor::new(text.as_bytes()))
            .map_err(|e| format!("unreadable OpenPGP signature: {e}"))?;
        for k in &store.keys {
            let TrustedKey::Pgp(cert) = k else { continue };
            let ok = sig.verify(&cert.primary_key, data).is_ok()
                || cert
                    .public_subkeys
                    .iter()
                    .any(|s| sig.verify(&s.key, data).is_ok());
            if ok {
                return Ok(Verified { key: k.ident() });
            }
        }
        let issuer = sig
            .signature
            .issuer_fingerprint()
            .first()
            .map(|f| format!("{f:X}"))
            .or_else(|| {
                sig.signature
                    .issuer_key_id()
                    .first()
                    .map(|k| hex::encode_upper(k.as_ref()))
            })
            .unwrap_or_else(|| "an unknown key".into());
        return Err(format!(
            "the OpenPGP signature by {issuer} does not verify against any trusted key"
        ));
    }
    Err("unsupported signature format (only SSH and OpenPGP signatures are accepted)".into())
}

/// Checks that `signer` may make `changes`. `old` and `new` map tenant → `signers` entries
/// from the served and the fetched gatehouse.yaml (`old` is empty before the first release).
pub fn authorize(
    signer: &Verified,
    changes: &Changes,
    old: &BTreeMap<String, Vec<String>>,
    new: &BTreeMap<String, Vec<String>>,
) -> Result<(), VerifyError> {
    let listed_by: BTreeSet<&str> = old
        .iter()
        .chain(new.iter())
        .filter(|(_, entries)| entries.iter().any(|e| signer.key.matches_entry(e)))
        .map(|(t, _)| t.as_str())
        .collect();
    if listed_by.is_empty() {
        return Ok(()); // a platform key
    }
    let who = format!(
        "{} (a signer of {})",
        signer.key.describe(),
        listed_by.iter().copied().collect::<Vec<_>>().join(", ")
    );
    if changes.platform {
        return Err(VerifyError::NotAllowed(format!(
            "the commit changes gatehouse.yaml or platform/, but it is signed by {who}; platform changes need a platform key"
        )));
    }
    for t in &changes.tenants {
        let entries = old.get(t).or_else(|| new.get(t));
        let allowed = entries.is_some_and(|e| e.iter().any(|e| signer.key.matches_entry(e)));
        if !allowed {
            return Err(VerifyError::NotAllowed(format!(
                "the commit changes tenants/{t}/, but it is signed by {who}, which is not one of {t}'s signers"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
