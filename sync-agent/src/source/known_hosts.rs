//! SSH host-key checking against the known_hosts file gatehouse manages: plain and hashed
//! (`|1|salt|hash`) host names, `[host]:port` for non-22 ports, wildcards and negations,
//! `@revoked`. Anything not positively matched is refused (fail closed).

use std::path::Path;

use hmac::{Hmac, Mac};
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

/// Why a host key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostKeyError {
    /// No known_hosts file configured for an ssh:// source.
    #[error("ssh needs a known_hosts file (known_hosts = ...); refusing to connect to {0}")]
    NotConfigured(String),
    /// The file cannot be read or parsed.
    #[error("known_hosts {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The server sent no key libgit2 could report.
    #[error("{0}: the server's host key could not be read")]
    NoKey(String),
    /// The host is known with other keys: possibly a man in the middle.
    #[error(
        "host key mismatch for {host}: the server offered {offered}, known_hosts has other keys for it; refusing (possible man in the middle)"
    )]
    Mismatch {
        /// `host` or `[host]:port`.
        host: String,
        /// Type and SHA256 fingerprint of the offered key.
        offered: String,
    },
    /// The host is not in the file.
    #[error(
        "unknown ssh host {host}: its key {offered} is not in {file}; refusing (check the fingerprint out of band, then add it, e.g. with ssh-keyscan)"
    )]
    Unknown {
        /// `host` or `[host]:port`.
        host: String,
        /// Type and SHA256 fingerprint of the offered key.
        offered: String,
        /// The known_hosts file.
        file: String,
    },
    /// The key is marked revoked.
    #[error("the host key {offered} of {host} is marked @revoked in known_hosts; refusing")]
    Revoked {
        /// `host` or `[host]:port`.
        host: String,
        /// Type and SHA256 fingerprint of the offered key.
        offered: String,
    },
}

/// The name known_hosts uses for `host` on `port`.
pub fn host_token(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks the raw (wire-format) host key `raw` of `host:port` against the file at `path`.
pub fn check(path: &Path, host: &str, port: u16, raw: &[u8]) -> Result<(), HostKeyError> {
    let token = host_token(host, port);
    let offered = PublicKey::from_bytes(raw).map_err(|_| HostKeyError::NoKey(token.clone()))?;
    let text = std::fs::read_to_string(path).map_err(|e| HostKeyError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    check_text(
        &text,
        &path.display().to_string(),
        &token,
        offered.key_data(),
    )
}

/// `type SHA256:...` of a key, as ssh prints it.
pub fn describe(key: &KeyData) -> String {
    format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256))
}

fn check_text(text: &str, file: &str, token: &str, offered: &KeyData) -> Result<(), HostKeyError> {
    let mut known_other = false;
    let mut accepted = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry: Entry = line.parse().map_err(|e| HostKeyError::File {
            path: file.to_string(),
            message: format!("line {}: {e}", n + 1),
        })?;
        if !matches(entry.host_patterns(), token) {
            continue;
        }
        let same = entry.public_key().key_data() == offered;
        match entry.marker() {
            Some(Marker::Revoked) if same => {
                return Err(HostKeyError::Revoked {
                    host: token.to_string(),
                    offered: describe(offered),
                });
            }
            Some(Marker::Revoked) => {}
            // Host certificates are not checked here: a CA line never accepts a plain key.
            Some(Marker::CertAuthority) => known_other = true,
            None if same => accepted = true,
            None => known_other = true,
        }
    }
    if accepted {
        return Ok(());
    }
    if known_other {
        return Err(HostKeyError::Mismatch {
            host: token.to_string(),
            offered: describe(offered),
        });
    }
    Err(HostKeyError::Unknown {
        host: token.to_string(),
        offered: describe(offered),
        file: file.to_string(),
    })
}

fn matches(p: &HostPatterns, token: &str) -> bool {
    match p {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(token.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut hit = false;
            for pat in list {
                if let Some(neg) = pat.strip_prefix('!') {
                    if glob(neg, token) {
                        return false;
                    }
                } else if glob(pat, token) {
                    hit = true;
                }
            }
            hit
        }
    }
}

/// OpenSSH's pattern match: `*` any run, `?` one character, case-insensitive.
fn glob(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = s.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJX/Ul6Mhj75+n5dpUeXEZ2PcUfOCOnNspb7XD53V20c";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFZyfKUHdu4OlvvxEh9UfPxi3QDHbKy+YuYkNbfTj60";

    fn key(s: &str) -> KeyData {
        PublicKey::from_openssh(s).expect("key").key_data().clone()
    }

    #[test]
    fn plain_entries_match_host_and_bracketed_port() {
        let text = format!("example.com {KEY_A}\n[git.local]:2222 {KEY_A}\n");
        assert!(check_text(&text, "kh", "example.com", &key(KEY_A)).is_ok());
        assert!(check_text(&text, "kh", &host_token("git.local", 2222), &key(KEY_A)).is_ok());
        // Port 22 entry does not cover another port.
        let e = check_text(&text, "kh", &host_token("example.com", 2200), &key(KEY_A));
        assert!(matches!(e, Err(HostKeyError::Unknown { .. })), "{e:?}");
    }

    #[test]
    fn a_different_key_for_a_known_host_is_a_mismatch() {
        let text = format!("example.com {KEY_A}\n");
        let e = check_text(&text, "kh", "example.com", &key(KEY_B)).expect_err("mismatch");
        assert!(matches!(e, HostKeyError::Mismatch { .. }));
        assert!(e.to_string().contains("SHA256:"), "{e}");
    }

    #[test]
    fn hashed_names_wildcards_negation_and_revocation() {
        // `ssh-keygen -H` form of "example.com" with a fixed salt.
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("hmac");
        mac.update(b"example.com");
        let hash = mac.finalize().into_bytes();
        let p = HostPatterns::HashedName {
            salt: salt.to_vec(),
            hash: hash.into(),
        };
        let line = format!("{} {KEY_A}\n", p.to_string());
        assert!(check_text(&line, "kh", "example.com", &key(KEY_A)).is_ok());
        assert!(check_text(&line, "kh", "other.com", &key(KEY_A)).is_err());

        let text = format!("*.corp,!evil.corp {KEY_A}\n");
        assert!(check_text(&text, "kh", "git.corp", &key(KEY_A)).is_ok());
        assert!(check_text(&text, "kh", "evil.corp", &key(KEY_A)).is_err());

        let text = format!("@revoked * {KEY_A}\nexample.com {KEY_A}\n");
        let e = check_text(&text, "kh", "example.com", &key(KEY_A)).expect_err("revoked");
        assert!(matches!(e, HostKeyError::Revoked { .. }));
    }

    #[test]
    fn glob_semantics() {
        assert!(glob("*", "anything"));
        assert!(glob("g?t.*.com", "git.x.com"));
        assert!(!glob("g?t.*.com", "gt.x.com"));
        assert!(glob("EXAMPLE.com", "example.COM"));
    }
}
