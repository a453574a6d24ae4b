//! Host names and wildcards with Istio's semantics (`pkg/config/host/name.go`).

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// A lowercase host name, possibly wildcarded in its first label (`*.example.com`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Host(String);

/// Why a host name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Empty.
    #[error("host name is empty")]
    Empty,
    /// Longer than 255 characters.
    #[error("host name {0:?} is longer than 255 characters")]
    TooLong(String),
    /// A label is not a DNS-1123 label.
    #[error("domain name {host:?} invalid (label {label:?} invalid)")]
    Label {
        /// The host.
        host: String,
        /// The bad label.
        label: String,
    },
    /// All-numeric top-level domain.
    #[error("domain name {host:?} invalid (top level domain {tld:?} cannot be all-numeric)")]
    NumericTld {
        /// The host.
        host: String,
        /// The TLD.
        tld: String,
    },
    /// `*foo.com` or `a.*.com` where only `*.foo.com` is allowed.
    #[error("partial wildcard {0:?} not allowed")]
    PartialWildcard(String),
    /// A name without a dot where a fully qualified one is required.
    #[error("short names (non FQDN) are not allowed: {0:?}")]
    ShortName(String),
    /// `*` where it is not allowed.
    #[error("wildcard host \"*\" is not allowed here")]
    Star,
}

// === impl Host ===

impl Host {
    /// Builds a host without checking it; for names the code itself constructs.
    pub fn new_unchecked(s: impl Into<String>) -> Self {
        Self(s.into().to_ascii_lowercase())
    }

    /// `*`
    pub fn any() -> Self {
        Self("*".into())
    }

    /// Istio's `ValidateWildcardDomain`, or an IP address.
    pub fn parse_wildcard_domain(s: &str) -> Result<Self, HostError> {
        if s.parse::<IpAddr>().is_ok() {
            return Ok(Self(s.to_ascii_lowercase()));
        }
        validate_wildcard_domain(s)?;
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// A host as a Gateway server or a gateway-bound route may use it: a wildcard domain or
    /// IP, fully qualified, wildcard only as the whole first label.
    pub fn parse_gateway_host(s: &str) -> Result<Self, HostError> {
        let h = Self::parse_wildcard_domain(s)?;
        if h.0 != "*" && h.0.contains('*') && !h.0.starts_with("*.") {
            return Err(HostError::PartialWildcard(s.into()));
        }
        if h.0 != "*" && !h.0.contains('.') && !h.0.contains(':') {
            return Err(HostError::ShortName(s.into()));
        }
        Ok(h)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the first label is a wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with('*')
    }

    /// Whether the two names overlap (`host.Name.Matches`).
    pub fn matches(&self, o: &Self) -> bool {
        match (self.is_wildcard(), o.is_wildcard()) {
            (true, true) => {
                if self.0.len() < o.0.len() {
                    o.0[1..].ends_with(&self.0[1..])
                } else {
                    self.0[1..].ends_with(&o.0[1..])
                }
            }
            (true, false) => o.0.ends_with(&self.0[1..]),
            (false, true) => self.0.ends_with(&o.0[1..]),
            (false, false) => self.0 == o.0,
        }
    }

    /// Whether every name `self` covers is covered by `o` (`host.Name.SubsetOf`).
    pub fn subset_of(&self, o: &Self) -> bool {
        match (self.is_wildcard(), o.is_wildcard()) {
            (true, true) => self.0.len() >= o.0.len() && self.0[1..].ends_with(&o.0[1..]),
            (true, false) => false,
            (false, true) => self.0.ends_with(&o.0[1..]),
            (false, false) => self.0 == o.0,
        }
    }

    /// The more specific of two overlapping names, or `None` (`host.Names.Intersection`).
    pub fn intersect(&self, o: &Self) -> Option<Self> {
        if !self.matches(o) {
            None
        } else if self.subset_of(o) {
            Some(self.clone())
        } else {
            Some(o.clone())
        }
    }

    /// Whether a concrete request host (no wildcard) is covered by this name.
    pub fn covers(&self, name: &str) -> bool {
        if self.0 == "*" {
            return true;
        }
        if let Some(suffix) = self.0.strip_prefix('*') {
            name.len() > suffix.len() && name.ends_with(suffix)
        } else {
            self.0 == name
        }
    }

    /// Whether the name has no dot (a Kubernetes short name to expand).
    pub fn is_short(&self) -> bool {
        self.0 != "*" && !self.0.contains('.') && self.0.parse::<IpAddr>().is_err()
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// `*`, `*label`, `*-label` or a DNS-1123 label.
fn is_wildcard_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= 63 && is_dns1123_label(rest)
}

/// Istio's `ValidateWildcardDomain`.
pub fn validate_wildcard_domain(s: &str) -> Result<(), HostError> {
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    if s.len() > 255 {
        return Err(HostError::TooLong(s.into()));
    }
    let (first, rest) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    if !is_wildcard_label(first) {
        return Err(HostError::Label {
            host: s.into(),
            label: first.into(),
        });
    }
    match rest {
        Some(rest) => validate_dns1123_labels(s, rest),
        None => Ok(()),
    }
}

/// Istio's `ValidateFQDN`: DNS-1123 labels, no wildcard.
pub fn validate_fqdn(s: &str) -> Result<(), HostError> {
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    if s.len() > 255 {
        return Err(HostError::TooLong(s.into()));
    }
    validate_dns1123_labels(s, s)
}

fn validate_dns1123_labels(host: &str, labels: &str) -> Result<(), HostError> {
    let labels = labels.strip_suffix('.').unwrap_or(labels);
    let parts: Vec<&str> = labels.split('.').collect();
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostError::NumericTld {
                host: host.into(),
                tld: (*label).into(),
            });
        }
        if !is_dns1123_label(label) {
            return Err(HostError::Label {
                host: host.into(),
                label: (*label).into(),
            });
        }
    }
    Ok(())
}
