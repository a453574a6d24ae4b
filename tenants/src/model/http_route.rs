//! `HTTPRoute` of a VirtualService: matches, action and the per-rule policies.
//! Rules from Istio's `validateHTTPRoute`, `validateHTTPRouteConflict`,
//! `validateHTTPRouteMatchRequest`, `ValidateHTTPRetry`, `validateCORSPolicy`,
//! `validateHTTPFaultInjection`, `validateHTTPRedirect`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use super::{Checker, Destination, GatewayRef, HeaderOps, parse_weights};
use crate::diag::FieldPath;
use crate::raw;
use crate::types::StringMatch;

/// One validated `http[]` rule.
#[derive(Debug, Clone, Serialize)]
pub struct HttpRoute {
    /// Index in `spec.http`.
    pub index: usize,
    /// `name`.
    pub name: Option<String>,
    /// `match`; empty matches every request. Shared with the compiled routes.
    pub matches: Vec<Arc<HttpMatch>>,
    /// What to do with a matching request.
    pub action: HttpAction,
    /// `headers` for the whole rule.
    pub headers: HeaderOps,
    /// `rewrite`.
    pub rewrite: Option<Rewrite>,
    /// `timeout` (none when unset or 0).
    pub timeout: Option<Duration>,
    /// Whether `timeout` was written: a `0s` sets none, and keeps a delegate's rule from
    /// taking its root rule's.
    #[serde(skip)]
    pub timeout_set: bool,
    /// `retries` (`None`: the mesh default).
    pub retries: Option<RetryPolicy>,
    /// `fault`.
    pub fault: Option<Fault>,
    /// `mirror`/`mirrors`.
    pub mirrors: Vec<Mirror>,
    /// The same as written, for delegation, which fills each part on its own.
    #[serde(skip)]
    pub mirror_parts: MirrorParts,
    /// `corsPolicy`.
    pub cors: Option<CorsPolicy>,
}

/// One `match[]` block: every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpMatch {
    /// `name`.
    pub name: Option<String>,
    /// `uri`.
    pub uri: Option<StringMatch>,
    /// `ignoreUriCase`.
    pub ignore_uri_case: bool,
    /// `scheme`.
    pub scheme: Option<StringMatch>,
    /// `method`.
    pub method: Option<StringMatch>,
    /// `authority`.
    pub authority: Option<StringMatch>,
    /// `headers` (lowercase names).
    pub headers: Vec<(String, StringMatch)>,
    /// `withoutHeaders`.
    pub without_headers: Vec<(String, StringMatch)>,
    /// `queryParams`.
    pub query_params: Vec<(String, StringMatch)>,
    /// `port`.
    pub port: Option<u16>,
    /// `gateways`.
    pub gateways: Vec<GatewayRef>,
    /// `sourceLabels`.
    pub source_labels: BTreeMap<String, String>,
    /// `sourceNamespace`.
    pub source_namespace: Option<String>,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HttpAction {
    /// Forward to weighted destinations.
    Route(Vec<HttpDestination>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
    /// Replaced by a delegate VirtualService's rules when routes are compiled.
    Delegate(DelegateRef),
}

/// `delegate`: the VirtualService (one without hosts) whose rules replace this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegateRef {
    /// `name`.
    pub name: String,
    /// `namespace`, the rule's own when unset.
    pub namespace: String,
}

/// A weighted HTTP destination with its own header operations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpDestination {
    /// Where.
    pub destination: Destination,
    /// Relative weight.
    pub weight: u32,
    /// `headers` for this destination.
    pub headers: HeaderOps,
}

/// `derivePort` / `port` of a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RedirectPort {
    /// Keep the request's port.
    Keep,
    /// A fixed port.
    Fixed(u16),
    /// 80 for http, 443 for https.
    FromProtocolDefault,
    /// The port the request arrived on.
    FromRequestPort,
}

/// `HTTPRedirect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// Replace the path.
    pub uri: Option<String>,
    /// Replace the matched prefix.
    pub prefix_rewrite: Option<String>,
    /// Replace the authority.
    pub authority: Option<String>,
    /// The port.
    pub port: RedirectPort,
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

/// `HTTPDirectResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

/// `HTTPRewrite`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rewrite {
    /// Replace the matched prefix (or the whole path for exact and regex matches).
    pub uri: Option<String>,
    /// Replace the authority.
    pub authority: Option<String>,
    /// `uriRegexRewrite`: regex (unanchored) and replacement (`\1` → `${1}`).
    pub uri_regex: Option<(RegexRewrite, String)>,
}

/// A compiled `uriRegexRewrite.match`.
#[derive(Debug, Clone, Serialize)]
pub struct RegexRewrite(#[serde(serialize_with = "ser_regex")] pub regex::Regex);

impl PartialEq for RegexRewrite {
    fn eq(&self, o: &Self) -> bool {
        self.0.as_str() == o.0.as_str()
    }
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// Which failures a retry policy retries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// `5xx`: any 5xx response, or a reset/connect failure.
    pub five_xx: bool,
    /// `gateway-error`: 502, 503, 504.
    pub gateway_error: bool,
    /// `reset`: the upstream reset the connection or stream.
    pub reset: bool,
    /// `reset-before-request`: a reset before any of the request reached the upstream (a
    /// connect failure, or a connection that failed before the request was written): safe
    /// for requests that must not be sent twice.
    pub reset_before_request: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `refused-stream`: HTTP/2 REFUSED_STREAM.
    pub refused_stream: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `retriable-status-codes` with the numeric codes listed.
    pub status_codes: Vec<u16>,
    /// gRPC status names (`cancelled`, `unavailable`, ...).
    pub grpc: Vec<String>,
}

/// `HTTPRetry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first try (0 disables retries).
    pub attempts: u32,
    /// Timeout of each try.
    pub per_try_timeout: Option<Duration>,
    /// What is retried.
    pub retry_on: RetryOn,
    /// `backoff`: the base interval between tries (Envoy's 25 ms when unset). Each wait is
    /// drawn from zero to the base doubled per retry, capped at ten times the base.
    pub backoff: Option<Duration>,
    /// `retryIgnorePreviousHosts`. Unset is Istio's default: a retry avoids the endpoints
    /// already tried, except to a cluster that hashes (`consistentHash`), where it keeps to
    /// the endpoint the key chose.
    pub ignore_previous_hosts: Option<bool>,
}

impl RetryPolicy {
    /// Istio's default when `retries` is unset: 2 attempts on connect-failure,
    /// refused-stream, unavailable, cancelled and retriable-status-codes (503), on another
    /// endpoint (`route/retry/retry.go`).
    pub fn mesh_default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn {
                connect_failure: true,
                refused_stream: true,
                status_codes: vec![503],
                grpc: vec!["unavailable".into(), "cancelled".into()],
                ..RetryOn::default()
            },
            backoff: None,
            ignore_previous_hosts: None,
        }
    }
}

/// `HTTPFaultInjection`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Delay and its percentage.
    pub delay: Option<(Duration, f64)>,
    /// Abort status and its percentage.
    pub abort: Option<(Abort, f64)>,
}

/// What an injected abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Abort {
    /// An HTTP status.
    Http(u16),
    /// A gRPC status code.
    Grpc(u8),
}

/// A mirror destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mirror {
    /// Where to copy requests.
    pub destination: Destination,
    /// Share of requests copied, 0..100.
    pub percentage: f64,
}

/// `mirror`, its percentage (`mirrorPercentage`, or the deprecated `mirrorPercent`) and
/// `mirrors`, as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MirrorParts {
    /// `mirror`.
    pub mirror: Option<Destination>,
    /// Its percentage, when given.
    pub percentage: Option<f64>,
    /// `mirrors`.
    pub list: Vec<Mirror>,
}

impl MirrorParts {
    /// What is mirrored: `mirror` (100 % unless a percentage is given), then `mirrors`.
    pub fn effective(&self) -> Vec<Mirror> {
        let mut out: Vec<Mirror> = self
            .mirror
            .iter()
            .map(|d| Mirror {
                destination: d.clone(),
                percentage: self.percentage.unwrap_or(100.0),
            })
            .collect();
        out.extend(self.list.iter().cloned());
        out
    }
}

/// `CorsPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorsPolicy {
    /// `allowOrigins`.
    pub allow_origins: Vec<StringMatch>,
    /// `allowMethods`.
    pub allow_methods: Vec<String>,
    /// `allowHeaders`.
    pub allow_headers: Vec<String>,
    /// `exposeHeaders`.
    pub expose_headers: Vec<String>,
    /// `maxAge`.
    pub max_age: Option<Duration>,
    /// `allowCredentials`.
    pub allow_credentials: Option<bool>,
    /// `unmatchedPreflights`: FORWARD (the default) passes preflights from origins the
    /// policy does not allow to the backend; IGNORE answers them at the gateway without the
    /// allow-origin header (Envoy's `forward_not_matching_preflights: false`).
    pub forward_unmatched_preflights: bool,
}

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const GRPC_CODES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

// === impl HttpRoute ===

impl HttpRoute {
    /// The destinations of the action and of the mirrors.
    pub fn destinations(&self) -> Vec<&Destination> {
        let mut out: Vec<&Destination> = match &self.action {
            HttpAction::Route(ds) => ds.iter().map(|d| &d.destination).collect(),
            _ => Vec::new(),
        };
        out.extend(self.mirrors.iter().map(|m| &m.destination));
        out
    }
}

// === impl HttpMatch ===

impl HttpMatch {
    /// A block that matches every path with no other condition (Istio's `IsCatchAllRoute`).
    pub fn is_catch_all(&self) -> bool {
        self.uri.as_ref().is_none_or(StringMatch::is_catch_all_path)
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
    }
}

/// Parses one `http[]` rule.
pub(super) fn parse_http_route(
    c: &mut Checker,
    p: &FieldPath,
    index: usize,
    r: &raw::HttpRoute,
    mesh: bool,
    in_delegate: bool,
) -> HttpRoute {
    let actions = [
        !r.route.is_empty(),
        r.redirect.is_some(),
        r.direct_response.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let delegate = r
        .delegate
        .as_ref()
        .and_then(|d| super::delegate::parse_ref(c, &p.key("delegate"), d, in_delegate));
    if r.delegate.is_some() && !in_delegate {
        super::delegate::check_root_rule(c, p, r);
    }
    if r.delegate.is_some() || in_delegate {
        super::delegate::check_chained_matches(c, p, r);
    }
    if r.delegate.is_none() && actions != 1 {
        c.error(
            p,
            "HTTP route must have exactly one of route, redirect or directResponse",
        );
    }
    // Point at the field to remove: `rewrite`, else `fault`.
    let conflicting = if r.rewrite.is_some() {
        Some(p.key("rewrite"))
    } else if r.fault.is_some() {
        Some(p.key("fault"))
    } else {
        None
    };
    if let Some(cp) = &conflicting {
        if r.redirect.is_some() {
            c.error(
                cp,
                "HTTP route cannot contain both redirect and fault or rewrite",
            );
        }
        if r.direct_response.is_some() {
            c.error(
                cp,
                "HTTP route cannot contain both directResponse and fault or rewrite",
            );
        }
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        c.error(p, "HTTP route cannot contain both mirror and mirrors");
    }
    let matches = r
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| Arc::new(parse_match(c, &p.key("match").idx(i), m, mesh)))
        .collect::<Vec<_>>();
    let headers = HeaderOps::parse(c, &p.key("headers"), &r.headers);
    let action = if let Some(d) = delegate {
        HttpAction::Delegate(d)
    } else if let Some(rd) = &r.redirect {
        HttpAction::Redirect(
            parse_redirect(c, &p.key("redirect"), rd, &matches).unwrap_or(Redirect {
                uri: None,
                prefix_rewrite: None,
                authority: None,
                port: RedirectPort::Keep,
                scheme: None,
                code: 301,
            }),
        )
    } else if let Some(dr) = &r.direct_response {
        HttpAction::DirectResponse(parse_direct(c, &p.key("directResponse"), dr))
    } else {
        HttpAction::Route(parse_destinations(c, &p.key("route"), &r.route))
    };
    let rewrite = r
        .rewrite
        .as_ref()
        .map(|rw| parse_rewrite(c, &p.key("rewrite"), rw));
    let authority_writes = usize::from(rewrite.as_ref().is_some_and(|rw| rw.authority.is_some()))
        + headers.authority_writes()
        + match &action {
            HttpAction::Route(ds) => ds
                .iter()
                .map(|d| d.headers.authority_writes())
                .max()
                .unwrap_or(0),
            _ => 0,
        };
    if authority_writes > 1 {
        c.error(p, "authority may be set only once across rewrite.authority and headers.request[:authority|host]");
    }
    let timeout = c
        .duration_or_zero(&p.key("timeout"), &r.timeout)
        .filter(|d| !d.is_zero());
    let timeout_set = r.timeout.is_some();
    let retries = r
        .retries
        .as_ref()
        .map(|rt| parse_retry(c, &p.key("retries"), rt));
    let fault = r
        .fault
        .as_ref()
        .and_then(|f| parse_fault(c, &p.key("fault"), f));
    // The deprecated whole-number form still applies when `mirrorPercentage` is absent, as
    // Istio reads it (`0` turns mirroring off).
    let mut legacy_pct = None;
    if let Some(v) = &r.mirror_percent {
        let mp = p.key("mirrorPercent");
        c.warn(&mp, "mirrorPercent is deprecated; use mirrorPercentage");
        match v.as_u64().filter(|n| *n <= 100) {
            Some(n) => legacy_pct = Some(n as f64),
            None => c.error(
                &mp,
                format!("mirrorPercent {v} must be a whole number in 0..100"),
            ),
        }
    }
    let mut parts = MirrorParts {
        mirror: None,
        percentage: match &r.mirror_percentage {
            None => legacy_pct,
            given => Some(percentage(
                c,
                &p.key("mirrorPercentage"),
                given.as_ref(),
                100.0,
                false,
            )),
        },
        list: Vec::new(),
    };
    if let Some(m) = &r.mirror {
        parts.mirror = Destination::parse(c, &p.key("mirror"), &Some(m.clone()));
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let mp = p.key("mirrors").idx(i);
        let pct = percentage(
            c,
            &mp.key("percentage"),
            m.percentage.as_ref(),
            100.0,
            false,
        );
        if let Some(d) = Destination::parse(c, &mp.key("destination"), &m.destination) {
            parts.list.push(Mirror {
                destination: d,
                percentage: pct,
            });
        }
    }
    let mirrors = parts.effective();
    let cors = r
        .cors_policy
        .as_ref()
        .map(|cp| parse_cors(c, &p.key("corsPolicy"), cp));
    HttpRoute {
        index,
        name: r.name.clone(),
        matches,
        action,
        headers,
        rewrite,
        timeout,
        timeout_set,
        retries,
        fault,
        mirrors,
        mirror_parts: parts,
        cors,
    }
}

fn parse_match(c: &mut Checker, p: &FieldPath, m: &raw::HttpMatchRequest, mesh: bool) -> HttpMatch {
    let mut out = HttpMatch {
        name: m.name.clone(),
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        ..HttpMatch::default()
    };
    if m.stat_prefix.is_some() {
        c.warn(
            &p.key("statPrefix"),
            "statPrefix is ignored: gatehouse names route metrics by route name",
        );
    }
    out.uri = m
        .uri
        .as_ref()
        .and_then(|s| c.string_match(&p.key("uri"), s, true));
    out.scheme = m
        .scheme
        .as_ref()
        .and_then(|s| c.string_match(&p.key("scheme"), s, false));
    out.method = m
        .method
        .as_ref()
        .and_then(|s| c.string_match(&p.key("method"), s, false));
    out.authority = m
        .authority
        .as_ref()
        .and_then(|s| c.string_match(&p.key("authority"), s, false));
    for (field, map, dst) in [
        ("headers", &m.headers, &mut out.headers),
        (
            "withoutHeaders",
            &m.without_headers,
            &mut out.without_headers,
        ),
    ] {
        for (k, v) in map {
            let hp = p.key(field).key(k);
            let name = k.to_ascii_lowercase();
            if name.starts_with("@request.auth.claims") {
                if mesh {
                    c.error(&hp, "JWT claim routing (@request.auth.claims) is not allowed for the mesh gateway");
                } else {
                    c.error(&hp, format!("not supported yet: {hp} (JWT claim routing needs RequestAuthentication)"));
                }
                continue;
            }
            let pseudo =
                [":method", ":scheme", ":authority", ":path", ":status"].contains(&name.as_str());
            if !pseudo && HeaderName::from_bytes(name.as_bytes()).is_err() {
                c.error(&hp, format!("invalid header name {k:?}"));
                continue;
            }
            // `withoutHeaders` allows `regex: "*"` to mean "present".
            let sm = if field == "withoutHeaders" && v.regex.as_deref() == Some("*") {
                Some(StringMatch::Present)
            } else {
                c.string_match(&hp, v, false)
            };
            if let Some(sm) = sm {
                dst.push((name, sm));
            }
        }
    }
    for (k, v) in &m.query_params {
        let qp = p.key("queryParams").key(k);
        // `exact: ""` means "present" for query parameters.
        let sm = if v.exact.as_deref() == Some("") && v.prefix.is_none() && v.regex.is_none() {
            Some(StringMatch::Present)
        } else {
            c.string_match(&qp, v, false)
        };
        if let Some(sm) = sm {
            out.query_params.push((k.clone(), sm));
        }
    }
    out.port = m.port.and_then(|n| c.port(&p.key("port"), n));
    out.gateways = m
        .gateways
        .iter()
        .enumerate()
        .filter_map(|(i, g)| GatewayRef::parse(c, &p.key("gateways").idx(i), g))
        .collect();
    super::parse_labels(c, &p.key("sourceLabels"), &m.source_labels);
    out.source_labels = m.source_labels.clone();
    if let Some(ns) = &m.source_namespace {
        if !crate::types::is_dns1123_label(ns) {
            c.error(
                &p.key("sourceNamespace"),
                format!("invalid namespace {ns:?}"),
            );
        }
        out.source_namespace = Some(ns.clone());
    }
    out
}

fn parse_destinations(
    c: &mut Checker,
    p: &FieldPath,
    route: &[raw::HttpRouteDestination],
) -> Vec<HttpDestination> {
    let weights = parse_weights(c, p, &route.iter().map(|r| r.weight).collect::<Vec<_>>());
    let many = route.len() > 1;
    route
        .iter()
        .zip(weights)
        .enumerate()
        .filter_map(|(i, (r, w))| {
            let dp = p.idx(i);
            let headers = HeaderOps::parse(c, &dp.key("headers"), &r.headers);
            let d = Destination::parse(c, &dp.key("destination"), &r.destination)?;
            // Zero-weight destinations are dropped when there are several.
            (w > 0 || !many).then_some(HttpDestination {
                destination: d,
                weight: w,
                headers,
            })
        })
        .collect()
}

fn parse_redirect(
    c: &mut Checker,
    p: &FieldPath,
    r: &raw::HttpRedirect,
    matches: &[Arc<HttpMatch>],
) -> Option<Redirect> {
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        c.error(p, "redirect cannot set both uri and prefixRewrite");
    }
    if r.prefix_rewrite.is_some()
        && (matches.is_empty()
            || matches
                .iter()
                .any(|m| !matches!(m.uri, Some(StringMatch::Prefix(_)))))
    {
        c.error(
            &p.key("prefixRewrite"),
            "prefixRewrite requires every uri match to be a prefix match",
        );
    }
    if r.uri.is_none()
        && r.prefix_rewrite.is_none()
        && r.authority.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
        && r.scheme.is_none()
    {
        c.error(
            p,
            "redirect must specify uri, prefixRewrite, authority, port or scheme",
        );
    }
    if let Some(u) = &r.uri
        && u.is_empty()
    {
        c.error(&p.key("uri"), "redirect uri must not be empty");
    }
    if let Some(a) = &r.authority
        && a.is_empty()
    {
        c.error(&p.key("authority"), "redirect authority must not be empty");
    }
    let code = match r.redirect_code {
        None | Some(0) => 301,
        Some(n) if (300..=399).contains(&n) => {
            if ![301, 302, 303, 307, 308].contains(&n) {
                c.error(
                    &p.key("redirectCode"),
                    format!("redirect code {n} is not supported; use 301, 302, 303, 307 or 308"),
                );
            }
            n as u16
        }
        Some(n) => {
            c.error(
                &p.key("redirectCode"),
                format!("{n} is not a valid redirect code, must be 3xx"),
            );
            301
        }
    };
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        c.error(
            &p.key("scheme"),
            format!("invalid redirect scheme {s:?}, must be http or https"),
        );
    }
    let port = match (r.port, r.derive_port.as_deref()) {
        (Some(_), Some(_)) => {
            c.error(p, "redirect cannot set both port and derivePort");
            RedirectPort::Keep
        }
        (Some(n), None) => c
            .port(&p.key("port"), n)
            .map_or(RedirectPort::Keep, RedirectPort::Fixed),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => RedirectPort::FromProtocolDefault,
        (None, Some("FROM_REQUEST_PORT")) => RedirectPort::FromRequestPort,
        (None, Some(other)) => {
            c.error(
                &p.key("derivePort"),
                format!(
                    "unknown value {other:?}; expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"
                ),
            );
            RedirectPort::Keep
        }
        (None, None) => RedirectPort::Keep,
    };
    Some(Redirect {
        uri: r.uri.clone(),
        prefix_rewrite: r.prefix_rewrite.clone(),
        authority: r.authority.clone(),
        port,
        scheme: r.scheme.clone(),
        code,
    })
}

fn parse_direct(c: &mut Checker, p: &FieldPath, d: &raw::HttpDirectResponse) -> DirectResponse {
    let status = match d.status {
        Some(n) if (200..=600).contains(&n) => n as u16,
        Some(n) => {
            c.error(
                &p.key("status"),
                format!("status {n} must be in the range 200-599"),
            );
            500
        }
        None => {
            c.error(&p.key("status"), "status is required");
            500
        }
    };
    let body = match &d.body {
        None => Vec::new(),
        Some(b) => match (&b.string, &b.bytes) {
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(b64)) => match base64_decode(b64) {
                Some(v) => v,
                None => {
                    c.error(
                        &p.key("body").key("bytes"),
                        "body.bytes is not valid base64",
                    );
                    Vec::new()
                }
            },
            (Some(_), Some(_)) => {
                c.error(
                    &p.key("body"),
                    "only one of body.string or body.bytes may be set",
                );
                Vec::new()
            }
            (None, None) => Vec::new(),
        },
    };
    if body.len() > 1 << 20 {
        c.error(&p.key("body"), "direct response body must be at most 1MB");
    } else if body.len() > 100 << 10 {
        c.warn(&p.key("body"), "direct response body is larger than 100KB");
    }
    DirectResponse { status, body }
}

fn parse_rewrite(c: &mut Checker, p: &FieldPath, r: &raw::HttpRewrite) -> Rewrite {
    if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
        c.error(p, "rewrite may only contain one of uri or uriRegexRewrite");
    }
    if r.uri.is_none() && r.uri_regex_rewrite.is_none() && r.authority.is_none() {
        c.error(p, "rewrite must specify uri, uriRegexRewrite or authority");
    }
    let uri_regex = r.uri_regex_rewrite.as_ref().and_then(|rr| {
        let rp = p.key("uriRegexRewrite");
        match (&rr.pattern, &rr.rewrite) {
            (Some(m), Some(w)) => match regex::Regex::new(m) {
                Ok(re) if !m.is_empty() => Some((RegexRewrite(re), go_to_rust_replacement(w))),
                Ok(_) => {
                    c.error(&rp.key("match"), "regex match must not be empty");
                    None
                }
                Err(e) => {
                    c.error(
                        &rp.key("match"),
                        format!(
                            "invalid regex {m:?}: {}",
                            e.to_string().lines().last().unwrap_or_default().trim()
                        ),
                    );
                    None
                }
            },
            _ => {
                c.error(&rp, "uriRegexRewrite needs both match and rewrite");
                None
            }
        }
    });
    Rewrite {
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        uri_regex,
    }
}

/// RE2/Envoy substitutions write `\1`; the regex crate writes `${1}`.
fn go_to_rust_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            other => out.push(other),
        }
    }
    out
}

fn parse_retry(c: &mut Checker, p: &FieldPath, r: &raw::HttpRetry) -> RetryPolicy {
    let attempts = match r.attempts {
        Some(n) if n < 0 => {
            c.error(&p.key("attempts"), "attempts cannot be negative");
            0
        }
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        None => 0,
    };
    if r.attempts == Some(0)
        && (r.per_try_timeout.is_some()
            || r.retry_on.is_some()
            || r.retry_remote_localities.is_some())
    {
        c.error(
            p,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    if r.retry_remote_localities.is_some() {
        c.warn(
            &p.key("retryRemoteLocalities"),
            "has no effect: gatehouse has no localities",
        );
    }
    let backoff = c.duration(&p.key("backoff"), &r.backoff);
    let per_try_timeout = c.duration(&p.key("perTryTimeout"), &r.per_try_timeout);
    // Istio's `ConvertPolicy` starts from the mesh default and replaces only what is set:
    // `retries: {attempts: 5}` retries 5 times on the default conditions, not on none.
    let mut on = match r.retry_on.as_deref().map(str::trim) {
        None | Some("") => RetryPolicy::mesh_default().retry_on,
        Some(_) => RetryOn::default(),
    };
    if let Some(s) = &r.retry_on {
        for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Ok(code) = tok.parse::<u16>() {
                if !(100..=599).contains(&code) {
                    c.error(
                        &p.key("retryOn"),
                        format!("{tok:?} is not a valid HTTP status code"),
                    );
                }
                on.status_codes.push(code);
                continue;
            }
            if !RETRY_ON.contains(&tok) {
                c.error(
                    &p.key("retryOn"),
                    format!(
                        "{tok:?} is not a valid retryOn policy; expected one of {}",
                        RETRY_ON.join(", ")
                    ),
                );
                continue;
            }
            match tok {
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "reset" => on.reset = true,
                "reset-before-request" => on.reset_before_request = true,
                "connect-failure" | "http3-post-connect-failure" => on.connect_failure = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "retriable-status-codes" => {}
                "retriable-headers" | "envoy-ratelimited" => {
                    c.warn(
                        &p.key("retryOn"),
                        format!("retry policy {tok:?} never fires on a gatehouse gateway"),
                    );
                }
                grpc => on.grpc.push(grpc.to_string()),
            }
        }
    }
    RetryPolicy {
        attempts,
        per_try_timeout,
        retry_on: on,
        backoff,
        ignore_previous_hosts: r.retry_ignore_previous_hosts,
    }
}

fn percentage(
    c: &mut Checker,
    p: &FieldPath,
    v: Option<&raw::Percent>,
    default: f64,
    fault: bool,
) -> f64 {
    let Some(v) = v else { return default };
    let x = v.value.unwrap_or(0.0);
    let ok = if fault {
        x == 0.0 || (0.0001..=100.0).contains(&x)
    } else {
        (0.0..=100.0).contains(&x)
    };
    if !ok {
        c.error(p, format!("percentage {x} must be in the range 0..100"));
    }
    x.clamp(0.0, 100.0)
}

fn parse_fault(c: &mut Checker, p: &FieldPath, f: &raw::HttpFaultInjection) -> Option<Fault> {
    if f.delay.is_none() && f.abort.is_none() {
        c.error(p, "fault must have at least one of delay or abort");
        return None;
    }
    let delay = f.delay.as_ref().and_then(|d| {
        let dp = p.key("delay");
        if d.exponential_delay.is_some() {
            c.error(
                &dp.key("exponentialDelay"),
                "exponentialDelay is not supported",
            );
        }
        let pct = match (&d.percentage, d.percent) {
            (Some(pc), _) => percentage(c, &dp.key("percentage"), Some(pc), 0.0, true),
            (None, Some(n)) if (0..=100).contains(&n) => n as f64,
            (None, Some(n)) => {
                c.error(
                    &dp.key("percent"),
                    format!("percentage {n} must be in the range 0..100"),
                );
                0.0
            }
            (None, None) => 0.0,
        };
        match c.duration(&dp.key("fixedDelay"), &d.fixed_delay) {
            Some(dur) => Some((dur, pct)),
            None => {
                if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
                    c.error(&dp.key("fixedDelay"), "delay needs fixedDelay");
                }
                None
            }
        }
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let ap = p.key("abort");
        let pct = percentage(c, &ap.key("percentage"), a.percentage.as_ref(), 0.0, true);
        if a.http2_error.is_some() {
            c.error(&ap.key("http2Error"), "http2Error is not supported");
            return None;
        }
        match (a.http_status, &a.grpc_status) {
            (Some(s), None) => {
                if !(200..=600).contains(&s) {
                    c.error(
                        &ap.key("httpStatus"),
                        format!("httpStatus {s} must be in the range 200-599"),
                    );
                    return None;
                }
                Some((Abort::Http(s as u16), pct))
            }
            (None, Some(g)) => match GRPC_CODES.iter().position(|n| n == g) {
                Some(code) => Some((Abort::Grpc(code as u8), pct)),
                None => {
                    c.error(
                        &ap.key("grpcStatus"),
                        format!("{g:?} is not a valid gRPC status code"),
                    );
                    None
                }
            },
            (Some(_), Some(_)) => {
                c.error(&ap, "only one of httpStatus or grpcStatus may be set");
                None
            }
            (None, None) => {
                c.warn(&ap, "abort has no httpStatus or grpcStatus and never fires");
                None
            }
        }
    });
    Some(Fault { delay, abort })
}

fn parse_cors(c: &mut Checker, p: &FieldPath, cp: &raw::CorsPolicy) -> CorsPolicy {
    let mut allow_origins = Vec::new();
    if !cp.allow_origin.is_empty() {
        c.warn(
            &p.key("allowOrigin"),
            "allowOrigin is deprecated; use allowOrigins",
        );
        allow_origins.extend(
            cp.allow_origin
                .iter()
                .map(|o| StringMatch::Exact(o.clone())),
        );
    }
    for (i, o) in cp.allow_origins.iter().enumerate() {
        let op = p.key("allowOrigins").idx(i);
        if o.exact.is_none() && o.prefix.is_none() && o.regex.is_none() {
            c.error(&op, "allowOrigins matcher must not be empty");
            continue;
        }
        if let Some(sm) = c.string_match(&op, o, false) {
            allow_origins.push(sm);
        }
    }
    for (i, m) in cp.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            c.error(
                &p.key("allowMethods").idx(i),
                format!("{m:?} is not a valid HTTP method"),
            );
        }
    }
    for (field, list) in [
        ("allowHeaders", &cp.allow_headers),
        ("exposeHeaders", &cp.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if h != "*" && HeaderName::from_bytes(h.as_bytes()).is_err() {
                c.error(
                    &p.key(field).idx(i),
                    format!("{h:?} is not a valid header name"),
                );
            }
        }
    }
    let max_age = c.duration(&p.key("maxAge"), &cp.max_age);
    if let Some(d) = max_age
        && d.subsec_nanos() != 0
    {
        c.error(
            &p.key("maxAge"),
            "max_age duration is accurate only to seconds precision",
        );
    }
    let forward_unmatched_preflights = match cp.unmatched_preflights.as_deref() {
        None | Some("UNSPECIFIED") | Some("FORWARD") => true,
        Some("IGNORE") => false,
        Some(o) => {
            c.error(
                &p.key("unmatchedPreflights"),
                format!("unknown value {o:?}; expected FORWARD or IGNORE"),
            );
            true
        }
    };
    CorsPolicy {
        allow_origins,
        allow_methods: cp.allow_methods.clone(),
        allow_headers: cp.allow_headers.clone(),
        expose_headers: cp.expose_headers.clone(),
        max_age,
        allow_credentials: cp.allow_credentials,
        forward_unmatched_preflights,
    }
}

/// Istio's analyzers IST0130/IST0131: rules after a catch-all never match; duplicated matches.
pub(super) fn warn_unreachable(c: &mut Checker, p: &FieldPath, routes: &[Arc<HttpRoute>]) {
    let mut seen: Vec<&HttpMatch> = Vec::new();
    let mut catch_all: Option<usize> = None;
    for r in routes {
        if let Some(ca) = catch_all {
            c.warn(
                &p.idx(r.index),
                format!(
                    "rule is unreachable: http[{ca}] before it matches every request (IST0130)"
                ),
            );
            continue;
        }
        for (j, m) in r.matches.iter().enumerate() {
            let key = HttpMatch {
                name: None,
                ..(**m).clone()
            };
            if seen.iter().any(|s| **s == key) {
                c.warn(
                    &p.idx(r.index).key("match").idx(j),
                    "duplicate match: an earlier rule already has it (IST0131)",
                );
            }
        }
        seen.extend(r.matches.iter().map(|m| &**m));
        if r.matches.is_empty() || r.matches.iter().any(|m| m.is_catch_all()) {
            catch_all = Some(r.index);
        }
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            acc |= val(*b)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}
