//! Istio `StringMatch` (`exact`, `prefix`, `regex`) with the regex compiled once.

use std::fmt;

use regex::Regex;
use serde::{Serialize, Serializer};

/// A compiled RE2-compatible regular expression that must match a whole value.
#[derive(Clone)]
pub struct FullRegex {
    source: String,
    re: Regex,
}

/// Why a regex was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegexError {
    /// Empty.
    #[error("regex match must not be empty")]
    Empty,
    /// Longer than Istio's 1024 characters.
    #[error("regex is longer than 1024 characters")]
    TooLong,
    /// Not valid RE2 syntax.
    #[error("invalid regex {pattern:?}: {reason}")]
    Syntax {
        /// The regex.
        pattern: String,
        /// The compiler's message.
        reason: String,
    },
}

// === impl FullRegex ===

impl FullRegex {
    /// Compiles `source` anchored at both ends, as Envoy's `safe_regex` full match does.
    pub fn new(source: &str) -> Result<Self, RegexError> {
        if source.is_empty() {
            return Err(RegexError::Empty);
        }
        if source.len() > 1024 {
            return Err(RegexError::TooLong);
        }
        let re = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| RegexError::Syntax {
                pattern: source.to_string(),
                reason: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            })?;
        Ok(Self {
            source: source.to_string(),
            re,
        })
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    /// The compiled regex (anchored).
    pub fn regex(&self) -> &Regex {
        &self.re
    }

    /// The regex as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for FullRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl PartialEq for FullRegex {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
    }
}

impl Serialize for FullRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// How a string value is matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Regex over the whole value.
    Regex(FullRegex),
    /// Present with any value (`{}` in Istio).
    Present,
}

// === impl StringMatch ===

impl StringMatch {
    /// Whether `v` matches; `ignore_case` applies to exact and prefix only.
    pub fn matches(&self, v: &str, ignore_case: bool) -> bool {
        match self {
            Self::Exact(e) if ignore_case => e.eq_ignore_ascii_case(v),
            Self::Exact(e) => e == v,
            Self::Prefix(p) if ignore_case => {
                v.len() >= p.len()
                    && v.is_char_boundary(p.len())
                    && v[..p.len()].eq_ignore_ascii_case(p)
            }
            Self::Prefix(p) => v.starts_with(p.as_str()),
            Self::Regex(r) => r.is_match(v),
            Self::Present => true,
        }
    }

    /// Whether this is a catch-all uri match as Istio's `IsCatchAllRoute` defines it: prefix
    /// `/`, regex `.*`, or no path condition. Other matches that accept every path (prefix
    /// `""`, regex `/.*`) are ordinary routes: they keep their place and do not end a
    /// VirtualService's route generation.
    pub fn is_catch_all_path(&self) -> bool {
        match self {
            Self::Prefix(p) => p == "/",
            Self::Regex(r) => r.as_str() == ".*",
            Self::Present => true,
            Self::Exact(_) => false,
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(e) => write!(f, "exact {e:?}"),
            Self::Prefix(p) => write!(f, "prefix {p:?}"),
            Self::Regex(r) => write!(f, "regex {:?}", r.as_str()),
            Self::Present => f.write_str("present"),
        }
    }
}
