//! `Telemetry`: access-log providers with Istio's root → namespace → selector inheritance.
//! Rules from Istio's `ValidateTelemetry`; metrics and tracing are accepted and reported.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Checker, Meta};
use crate::cel::Expr;
use crate::diag::FieldPath;
use crate::raw;

/// `accessLogging[].match.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogMode {
    /// Both directions (default).
    ClientAndServer,
    /// Outbound: gateways count as clients.
    Client,
    /// Inbound: never applies to a gateway.
    Server,
}

/// One `accessLogging[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessLogRule {
    /// Provider names; empty means the mesh default providers.
    pub providers: Vec<String>,
    /// `disabled` when set.
    pub disabled: Option<bool>,
    /// `match.mode`.
    pub mode: LogMode,
    /// `filter.expression`.
    pub filter: Option<Expr>,
}

/// A validated Telemetry.
#[derive(Debug, Clone, Serialize)]
pub struct Telemetry {
    /// Identity.
    pub meta: Meta,
    /// `selector.matchLabels`: narrows to the gateway groups carrying these labels.
    pub selector: Option<BTreeMap<String, String>>,
    /// `accessLogging`.
    pub access_logging: Vec<AccessLogRule>,
}

// === impl Telemetry ===

impl Telemetry {
    /// Parses and validates a Telemetry.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::TelemetrySpec) -> Self {
        let sp = FieldPath::root().key("spec");
        if spec.selector.is_some() && (spec.target_ref.is_some() || spec.target_refs.is_some()) {
            c.error(&sp, "only one of selector or targetRefs can be set");
        }
        c.unsupported(&sp.key("targetRef"), &spec.target_ref);
        c.unsupported(&sp.key("targetRefs"), &spec.target_refs);
        if spec.tracing.is_some() {
            c.warn(&sp.key("tracing"), "not supported yet: spec.tracing is ignored (trace headers are forwarded unchanged)");
        }
        for (i, m) in spec.metrics.iter().enumerate() {
            let mp = sp.key("metrics").idx(i);
            provider_names(c, &mp.key("providers"), &m.providers);
            c.duration(&mp.key("reportingInterval"), &m.reporting_interval);
            for (j, o) in m.overrides.iter().enumerate() {
                let op = mp.key("overrides").idx(j);
                if let Some(sel) = &o.selector
                    && sel.custom_metric.as_deref() == Some("")
                {
                    c.error(
                        &op.key("match").key("customMetric"),
                        "customMetric in body should be at least 1 chars long",
                    );
                }
                for (tag, t) in &o.tag_overrides {
                    let tp = op.key("tagOverrides").key(tag);
                    match t.operation.as_deref() {
                        None | Some("UPSERT") if t.value.is_none() => {
                            c.error(
                                &tp.key("value"),
                                "value must be set when operation is UPSERT",
                            );
                        }
                        Some("REMOVE") if t.value.is_some() => {
                            c.error(
                                &tp.key("value"),
                                "value must not be set when operation is REMOVE",
                            );
                        }
                        None | Some("UPSERT") | Some("REMOVE") => {}
                        Some(other) => c.error(
                            &tp.key("operation"),
                            format!("unknown value {other:?}; expected UPSERT or REMOVE"),
                        ),
                    }
                }
            }
        }
        if !spec.metrics.is_empty() {
            c.warn(&sp.key("metrics"), "not supported yet: spec.metrics overrides are ignored (gatehouse exports Istio's standard metrics)");
        }
        let mut access_logging = Vec::new();
        for (i, a) in spec.access_logging.iter().enumerate() {
            let ap = sp.key("accessLogging").idx(i);
            let providers = provider_names(c, &ap.key("providers"), &a.providers);
            let mode = match a.selector.as_ref().and_then(|s| s.mode.clone()) {
                None => LogMode::ClientAndServer,
                Some(m) => c
                    .enumeration(
                        &ap.key("match").key("mode"),
                        &Some(m),
                        &[
                            ("CLIENT_AND_SERVER", LogMode::ClientAndServer),
                            ("CLIENT", LogMode::Client),
                            ("SERVER", LogMode::Server),
                        ],
                        LogMode::ClientAndServer,
                    )
                    .unwrap_or(LogMode::ClientAndServer),
            };
            if mode == LogMode::Server {
                c.warn(
                    &ap.key("match").key("mode"),
                    "mode SERVER never applies to a gateway (gateways count as CLIENT)",
                );
            }
            let filter = a.filter.as_ref().and_then(|f| {
                let fp = ap.key("filter").key("expression");
                match f.expression.as_deref() {
                    None | Some("") => None,
                    Some(e) => match Expr::parse(e) {
                        Ok(x) => {
                            let unknown = x.unknown_names();
                            if !unknown.is_empty() {
                                c.warn(
                                    &fp,
                                    format!(
                                        "{} not known to gatehouse: an entry whose filter needs them is not logged (known attributes: {})",
                                        unknown.join(", "),
                                        crate::cel::ATTRIBUTES.join(", ")
                                    ),
                                );
                            }
                            Some(x)
                        }
                        Err(err) => {
                            c.error(&fp, err.to_string());
                            None
                        }
                    },
                }
            });
            access_logging.push(AccessLogRule {
                providers,
                disabled: a.disabled,
                mode,
                filter,
            });
        }
        Self {
            meta,
            // An empty `matchLabels` selects nothing in particular: namespace-wide, as
            // Istio's `namespaceWideTelemetryConfig` reads it.
            selector: spec
                .selector
                .as_ref()
                .map(|s| s.match_labels.clone())
                .filter(|l| !l.is_empty()),
            access_logging,
        }
    }
}

fn provider_names(c: &mut Checker, p: &FieldPath, providers: &[raw::ProviderRef]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, pr) in providers.iter().enumerate() {
        match pr.name.as_deref() {
            None | Some("") => c.error(
                &p.idx(i).key("name"),
                "name in body should be at least 1 chars long",
            ),
            Some(n) => out.push(n.to_string()),
        }
    }
    out
}
