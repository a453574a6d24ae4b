//! Validated model types, built from [`crate::raw`] by `parse` functions that apply Istio's
//! validation rules (istio-api.md §2) and collect every finding with its field path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::diag::{FieldPath, Severity};
use crate::raw;
use crate::types::{FullRegex, Host, StringMatch, parse_istio_duration};

mod common;
mod delegate;
mod destination_rule;
mod gateway;
mod http_route;
mod operator;
mod service_entry;
mod sidecar;
mod telemetry;
mod tenant;
mod virtual_service;

pub use common::*;
pub use delegate::{Merged, merge as merge_delegated};
pub use destination_rule::*;
pub use gateway::*;
pub use http_route::*;
pub use operator::*;
pub use service_entry::*;
pub use sidecar::*;
pub use telemetry::*;
pub use tenant::*;
pub use virtual_service::*;

/// Istio's root namespace: where platform-owned resources live.
pub const PLATFORM_NAMESPACE: &str = "istio-system";

/// Where an object came from: enough to point a diagnostic at its file and line later.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// Repository-relative path.
    pub file: Arc<str>,
    /// Document index within the file.
    pub doc: usize,
    /// 1-based line where the document starts.
    pub line: u32,
    /// Global load order (files by path, then documents): Istio's creation-time order.
    pub order: usize,
}

/// Identity of a loaded object.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// `metadata.name`.
    pub name: String,
    /// The namespace (tenant, or `istio-system`).
    pub namespace: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Where it came from.
    pub source: Source,
}

/// A finding about one object, before it is placed in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The field.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
}

/// Compiled regexes by source, shared by every object of one load: identical patterns
/// (common across VirtualServices) are compiled and held once.
pub type RegexCache = std::rc::Rc<std::cell::RefCell<std::collections::HashMap<String, FullRegex>>>;

/// Collects findings while parsing one object.
#[derive(Debug, Default)]
pub struct Checker {
    /// Findings so far.
    pub findings: Vec<Finding>,
    /// The object's namespace (for short-name expansion and `exportTo`).
    pub namespace: String,
    /// The DNS domain suffix for short names (`cluster.local`).
    pub domain: String,
    /// Whether the object belongs to a tenant (stricter rules apply).
    pub tenant: bool,
    /// Shared regex cache.
    pub regexes: RegexCache,
}

// === impl Checker ===

impl Checker {
    /// A checker for objects of `namespace`.
    pub fn new(namespace: &str, domain: &str, tenant: bool) -> Self {
        Self {
            findings: Vec::new(),
            namespace: namespace.to_string(),
            domain: domain.to_string(),
            tenant,
            regexes: RegexCache::default(),
        }
    }

    /// A checker sharing `regexes` with others of the same load.
    pub fn with_cache(namespace: &str, domain: &str, tenant: bool, regexes: RegexCache) -> Self {
        Self {
            regexes,
            ..Self::new(namespace, domain, tenant)
        }
    }

    /// Compiles `source` as a full-match regex, reusing an identical one already compiled.
    pub fn regex(&mut self, source: &str) -> Result<FullRegex, crate::types::RegexError> {
        if let Some(r) = self.regexes.borrow().get(source) {
            return Ok(r.clone());
        }
        let r = FullRegex::new(source)?;
        self.regexes
            .borrow_mut()
            .insert(source.to_string(), r.clone());
        Ok(r)
    }

    /// Records an error.
    pub fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Error,
            path: path.clone(),
            message: message.into(),
        });
    }

    /// Records a warning.
    pub fn warn(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            path: path.clone(),
            message: message.into(),
        });
    }

    /// A traffic-changing field gatehouse does not implement: an error, never silently ignored.
    pub fn unsupported(&mut self, path: &FieldPath, what: &Option<serde_json::Value>) {
        if what.is_some() {
            self.error(path, format!("not supported yet: {path}"));
        }
    }

    /// A field that only means something in a Kubernetes mesh: accepted with a warning.
    pub fn mesh_only(&mut self, path: &FieldPath, present: bool, why: &str) {
        if present {
            self.warn(
                path,
                format!("has no effect on a gatehouse appliance: {why}"),
            );
        }
    }

    /// A certificate, key or CRL file path (platform TLS): a relative one is read from the
    /// service's working directory, `/`, which is rarely what was meant.
    pub fn file_path(&mut self, path: &FieldPath, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty() && !v.starts_with('/')) {
            self.warn(
                path,
                format!("{v:?} is a relative path, read from / (the service's working directory); write the absolute path"),
            );
        }
    }

    /// Whether an error was recorded.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// A port in 1..=65535.
    pub fn port(&mut self, path: &FieldPath, v: i64) -> Option<u16> {
        match u16::try_from(v) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.error(path, format!("port number {v} must be between 1-65535"));
                None
            }
        }
    }

    /// A non-negative count.
    pub fn count(&mut self, path: &FieldPath, v: Option<i64>) -> Option<u32> {
        let v = v?;
        match u32::try_from(v) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(path, format!("{v} must be between 0 and {}", u32::MAX));
                None
            }
        }
    }

    /// An Istio duration (≥ 1ms, millisecond precision).
    pub fn duration(&mut self, path: &FieldPath, v: &Option<String>) -> Option<Duration> {
        let s = v.as_ref()?;
        match parse_istio_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, e.to_string());
                None
            }
        }
    }

    /// A duration where `0s` is allowed and means "disabled".
    pub fn duration_or_zero(&mut self, path: &FieldPath, v: &Option<String>) -> Option<Duration> {
        let s = v.as_ref()?;
        match crate::types::parse_go_duration(s) {
            Ok(d) if d.is_zero() => Some(d),
            _ => self.duration(path, v),
        }
    }

    /// Expands a short name (no dot) to `<name>.<namespace>.svc.<domain>`, as Istio's
    /// `ResolveShortnameToFQDN` does.
    pub fn expand(&self, host: Host) -> Host {
        if host.is_short() {
            Host::new_unchecked(format!(
                "{}.{}.svc.{}",
                host.as_str(),
                self.namespace,
                self.domain
            ))
        } else {
            host
        }
    }

    /// Parses an Istio `StringMatch`; `allow_empty_prefix` is true for `uri`.
    pub fn string_match(
        &mut self,
        path: &FieldPath,
        m: &raw::StringMatch,
        allow_empty_prefix: bool,
    ) -> Option<StringMatch> {
        let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set > 1 {
            self.error(path, "only one of exact, prefix or regex may be set");
            return None;
        }
        if let Some(e) = &m.exact {
            return Some(StringMatch::Exact(e.clone()));
        }
        if let Some(p) = &m.prefix {
            if p.is_empty() && !allow_empty_prefix {
                self.error(&path.key("prefix"), "prefix match must not be empty");
                return None;
            }
            return Some(StringMatch::Prefix(p.clone()));
        }
        if let Some(r) = &m.regex {
            return match self.regex(r) {
                Ok(re) => Some(StringMatch::Regex(re)),
                Err(e) => {
                    self.error(&path.key("regex"), e.to_string());
                    None
                }
            };
        }
        Some(StringMatch::Present)
    }

    /// Parses an enum written by name, with Istio's default when absent.
    pub fn enumeration<T: Clone>(
        &mut self,
        path: &FieldPath,
        v: &Option<String>,
        table: &[(&str, T)],
        default: T,
    ) -> Option<T> {
        let Some(s) = v else {
            return Some(default);
        };
        if let Some((_, t)) = table.iter().find(|(n, _)| *n == s.as_str()) {
            return Some(t.clone());
        }
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        let hint = table
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(n, _)| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        self.error(
            path,
            format!(
                "unknown value {s:?}{hint}; expected one of {}",
                names.join(", ")
            ),
        );
        None
    }
}
