//! Which commit to serve: a branch, a tag, the highest tag in a semver range, or a pinned
//! commit, chosen from what the server advertises (never from a webhook payload).

use serde::{Deserialize, Serialize};

/// What the configuration tracks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum RefSelector {
    /// The tip of `refs/heads/<name>`.
    Branch(String),
    /// `refs/tags/<name>` (annotated or lightweight).
    Tag(String),
    /// The highest `refs/tags/[v]X.Y.Z` inside the range, e.g. `>=1.2, <2`.
    Semver(String),
    /// One commit, by its full id.
    Commit(String),
}

/// One reference the server advertised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertised {
    /// Full name, e.g. `refs/heads/main`, or `refs/tags/v1^{}` for a peeled tag.
    pub name: String,
    /// The object id it points at.
    pub oid: String,
}

/// The reference chosen for this fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    /// What the status shows, e.g. `branch main` or `tag v1.4.0 (semver >=1, <2)`.
    pub label: String,
    /// The refspec source to fetch: a ref name, or a commit id for a pin.
    pub fetch: String,
    /// The object the server advertised for it (a commit, or an annotated tag), when known.
    pub oid: Option<String>,
    /// Whether this is a tag (signature verification can look at the tag object).
    pub is_tag: bool,
}

/// Why no reference could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefError {
    /// The branch is not on the server (deleted, or a typo).
    #[error("branch {0:?} does not exist on the remote (deleted or renamed?)")]
    NoBranch(String),
    /// The tag is not on the server.
    #[error("tag {0:?} does not exist on the remote")]
    NoTag(String),
    /// No tag satisfies the range.
    #[error("no tag on the remote matches the semver range {0:?}")]
    NoSemverMatch(String),
    /// The range does not parse.
    #[error("invalid semver range {range:?}: {message}")]
    BadRange {
        /// The configured range.
        range: String,
        /// The parser's message.
        message: String,
    },
    /// The pinned commit id is not a full hexadecimal object id.
    #[error("pinned commit {0:?} must be a full 40-character hexadecimal commit id")]
    BadCommit(String),
}

// === impl RefSelector ===

impl RefSelector {
    /// Checks what can be checked without a server (range syntax, commit id form).
    pub fn check(&self) -> Result<(), RefError> {
        match self {
            Self::Semver(r) => parse_range(r).map(|_| ()),
            Self::Commit(c) if !is_full_oid(c) => Err(RefError::BadCommit(c.clone())),
            _ => Ok(()),
        }
    }

    /// A short description for logs and status.
    pub fn describe(&self) -> String {
        match self {
            Self::Branch(b) => format!("branch {b}"),
            Self::Tag(t) => format!("tag {t}"),
            Self::Semver(r) => format!("semver {r}"),
            Self::Commit(c) => format!("commit {c}"),
        }
    }

    /// Whether moving to an older commit means someone rewound history (only a branch can
    /// be force-pushed back; a tag range or a pin moves because the operator changed it).
    pub fn guards_rewind(&self) -> bool {
        matches!(self, Self::Branch(_))
    }
}

/// Picks the reference to fetch from the server's advertisement.
pub fn choose(sel: &RefSelector, heads: &[Advertised]) -> Result<Chosen, RefError> {
    let find = |name: &str| heads.iter().find(|h| h.name == name);
    match sel {
        RefSelector::Branch(b) => {
            let name = format!("refs/heads/{b}");
            let h = find(&name).ok_or_else(|| RefError::NoBranch(b.clone()))?;
            Ok(Chosen {
                label: format!("branch {b}"),
                fetch: name,
                oid: Some(h.oid.clone()),
                is_tag: false,
            })
        }
        RefSelector::Tag(t) => {
            let name = format!("refs/tags/{t}");
            let h = find(&name).ok_or_else(|| RefError::NoTag(t.clone()))?;
            Ok(Chosen {
                label: format!("tag {t}"),
                fetch: name,
                oid: Some(h.oid.clone()),
                is_tag: true,
            })
        }
        RefSelector::Semver(r) => {
            let req = parse_range(r)?;
            let best = heads
                .iter()
                .filter_map(|h| {
                    let tag = h.name.strip_prefix("refs/tags/")?;
                    if tag.ends_with("^{}") {
                        return None;
                    }
                    let v = semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()?;
                    req.matches(&v).then_some((v, tag, h))
                })
                .max_by(|a, b| a.0.cmp(&b.0));
            let (_, tag, h) = best.ok_or_else(|| RefError::NoSemverMatch(r.clone()))?;
            Ok(Chosen {
                label: format!("tag {tag} (semver {r})"),
                fetch: format!("refs/tags/{tag}"),
                oid: Some(h.oid.clone()),
                is_tag: true,
            })
        }
        RefSelector::Commit(c) => {
            if !is_full_oid(c) {
                return Err(RefError::BadCommit(c.clone()));
            }
            Ok(Chosen {
                label: format!("commit {c}"),
                fetch: c.to_ascii_lowercase(),
                oid: Some(c.to_ascii_lowercase()),
                is_tag: false,
            })
        }
    }
}

fn parse_range(r: &str) -> Result<semver::VersionReq, RefError> {
    semver::VersionReq::parse(r).map_err(|e| RefError::BadRange {
        range: r.to_string(),
        message: e.to_string(),
    })
}

/// Whether `s` is a full SHA-1 object id.
pub fn is_full_oid(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(name: &str, oid: char) -> Advertised {
        Advertised {
            name: name.into(),
            oid: std::iter::repeat_n(oid, 40).collect(),
        }
    }

    fn heads() -> Vec<Advertised> {
        vec![
            ad("HEAD", '1'),
            ad("refs/heads/main", '1'),
            ad("refs/tags/v1.2.0", '2'),
            ad("refs/tags/v1.2.0^{}", '3'),
            ad("refs/tags/1.10.1", '4'),
            ad("refs/tags/v2.0.0", '5'),
            ad("refs/tags/v1.11.0-rc.1", '6'),
            ad("refs/tags/not-a-version", '7'),
        ]
    }

    #[test]
    fn branch_and_tag_are_looked_up_by_full_name() {
        let c = choose(&RefSelector::Branch("main".into()), &heads()).expect("main");
        assert_eq!(c.fetch, "refs/heads/main");
        assert!(!c.is_tag);
        let c = choose(&RefSelector::Tag("v1.2.0".into()), &heads()).expect("tag");
        assert_eq!(c.oid.as_deref(), Some(&*"2".repeat(40)));
        assert!(c.is_tag);
    }

    #[test]
    fn a_missing_branch_or_tag_is_a_clear_error() {
        assert_eq!(
            choose(&RefSelector::Branch("gone".into()), &heads()),
            Err(RefError::NoBranch("gone".into()))
        );
        assert_eq!(
            choose(&RefSelector::Tag("v9".into()), &heads()),
            Err(RefError::NoTag("v9".into()))
        );
    }

    #[test]
    fn semver_takes_the_highest_release_in_range_with_or_without_v() {
        let c = choose(&RefSelector::Semver(">=1.2, <2".into()), &heads()).expect("match");
        assert_eq!(
            c.fetch, "refs/tags/1.10.1",
            "1.10.1 > 1.2.0; pre-releases excluded"
        );
        let c = choose(&RefSelector::Semver("^2".into()), &heads()).expect("match");
        assert_eq!(c.fetch, "refs/tags/v2.0.0");
        assert_eq!(
            choose(&RefSelector::Semver(">=3".into()), &heads()),
            Err(RefError::NoSemverMatch(">=3".into()))
        );
        assert!(matches!(
            RefSelector::Semver("bogus range".into()).check(),
            Err(RefError::BadRange { .. })
        ));
    }

    #[test]
    fn a_pin_needs_a_full_commit_id() {
        assert!(RefSelector::Commit("abc123".into()).check().is_err());
        let id = "A".repeat(40);
        let c = choose(&RefSelector::Commit(id), &[]).expect("pin");
        assert_eq!(c.fetch, "a".repeat(40));
    }
}
