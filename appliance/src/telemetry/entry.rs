//! One access-log entry and its renderings: Envoy's text format (default or a custom
//! `%COMMAND%` template), JSON, and the CEL attributes filters evaluate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tenants::cel::{Attributes, Value};

use super::template::{JsonTemplate, Template};

/// Istio's default text format (`meshConfig.accessLogFile` with TEXT encoding), plus the
/// tenant and gateway group gatehouse adds.
pub const DEFAULT_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME% tenant=%TENANT% gateway=%GATEWAY%\n";

/// Istio's default JSON keys.
pub const DEFAULT_JSON: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("tenant", "%TENANT%"),
    ("gateway", "%GATEWAY%"),
];

/// What happened on one request or TCP connection.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// When it started.
    pub start: Option<SystemTime>,
    /// Method (empty for TCP).
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2`, `HTTP/3`; empty for TCP.
    pub protocol: &'static str,
    /// Status sent (0 for TCP).
    pub status: u16,
    /// Envoy response flags (`-` when none).
    pub flags: String,
    /// Bytes received from the client (body).
    pub bytes_in: u64,
    /// Bytes sent to the client (body).
    pub bytes_out: u64,
    /// Total duration.
    pub duration: Duration,
    /// Upstream service time.
    pub upstream_time: Option<Duration>,
    /// `x-forwarded-for` as received.
    pub xff: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `:authority`.
    pub authority: String,
    /// The upstream endpoint.
    pub upstream: Option<SocketAddr>,
    /// The upstream cluster.
    pub cluster: Option<Arc<str>>,
    /// The listener address.
    pub local: Option<SocketAddr>,
    /// The client address.
    pub peer: Option<SocketAddr>,
    /// SNI.
    pub sni: Option<String>,
    /// Route name.
    pub route: Option<Arc<str>>,
    /// Tenant.
    pub tenant: Arc<str>,
    /// Gateway group.
    pub group: Arc<str>,
    /// Request headers named by custom formats (`%REQ(X)%`), lowercase name → value.
    pub req_headers: Vec<(String, String)>,
    /// A gRPC request (`request_protocol="grpc"` in metrics).
    pub grpc: bool,
}

pub(crate) fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let ms = d.subsec_millis();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

impl Entry {
    /// A request header by name (any case), without copying it.
    pub(crate) fn header_ref(&self, name: &str) -> Option<&str> {
        let non_empty = |s: &'_ str| (!s.is_empty()).then_some(());
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is(":method") {
            non_empty(&self.method)?;
            Some(&self.method)
        } else if is(":path") {
            non_empty(&self.path)?;
            Some(&self.path)
        } else if is("x-envoy-original-path") {
            // Set by Envoy when it rewrites the path; gatehouse logs the path as received.
            None
        } else if is(":authority") || is("host") {
            non_empty(&self.authority)?;
            Some(&self.authority)
        } else if is("x-forwarded-for") {
            self.xff.as_deref()
        } else if is("user-agent") {
            self.user_agent.as_deref()
        } else if is("x-request-id") {
            self.request_id.as_deref()
        } else {
            self.req_headers
                .iter()
                .find(|(k, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.header_ref(name).map(str::to_string)
    }

    /// Renders a `%COMMAND%` template (parsed on the spot; the writer keeps parsed ones).
    pub fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 128);
        Template::parse(template).render(self, &mut out);
        out
    }

    /// One JSON object with `keys` → templates, and a newline.
    pub fn render_json<'a>(&self, keys: impl Iterator<Item = (&'a str, &'a str)>) -> String {
        let mut out = String::with_capacity(512);
        JsonTemplate::parse(keys).render(self, &mut out);
        out
    }
}

impl Attributes for Entry {
    fn get(&self, path: &[&str]) -> Option<Value> {
        Some(match path {
            ["response", "code"] => Value::Int(i64::from(self.status)),
            ["response", "flags"] => Value::Str(self.flags.clone()),
            ["response", "total_size"] | ["response", "size"] => Value::Int(self.bytes_out as i64),
            ["request", "method"] => Value::Str(self.method.clone()),
            ["request", "path"] | ["request", "url_path"] => {
                Value::Str(self.path.split('?').next().unwrap_or("").to_string())
            }
            ["request", "host"] => Value::Str(self.authority.clone()),
            ["request", "protocol"] => Value::Str(self.protocol.to_string()),
            ["request", "id"] => Value::Str(self.request_id.clone()?),
            ["request", "useragent"] => Value::Str(self.user_agent.clone()?),
            ["request", "size"] | ["request", "total_size"] => Value::Int(self.bytes_in as i64),
            ["request", "duration"] => Value::Int(self.duration.as_millis() as i64),
            ["connection", "requested_server_name"] => Value::Str(self.sni.clone()?),
            ["upstream", "address"] => {
                Value::Str(crate::upstream::unix::Shown(self.upstream?).to_string())
            }
            ["source", "address"] => Value::Str(self.peer?.ip().to_string()),
            ["xds", "route_name"] => Value::Str(self.route.as_deref()?.to_string()),
            ["xds", "cluster_name"] => Value::Str(self.cluster.as_deref()?.to_string()),
            ["request", "headers", name] => return self.index(&["request", "headers"], name),
            _ => return None,
        })
    }

    fn index(&self, path: &[&str], key: &str) -> Option<Value> {
        match path {
            ["request", "headers"] => self.header(&key.to_ascii_lowercase()).map(Value::Str),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e() -> Entry {
        Entry {
            start: Some(UNIX_EPOCH + Duration::from_millis(1_764_174_615_123)),
            method: "GET".into(),
            path: "/api/x?y=1".into(),
            protocol: "HTTP/1.1",
            status: 503,
            flags: "UF,URX".into(),
            bytes_in: 0,
            bytes_out: 91,
            duration: Duration::from_millis(12),
            authority: "web.example.com".into(),
            user_agent: Some("curl/7.88.1".into()),
            request_id: Some("abc".into()),
            cluster: Some("outbound|80||api.t.internal".into()),
            tenant: Arc::from("team-a"),
            group: Arc::from("public-gw"),
            ..Entry::default()
        }
    }

    #[test]
    fn default_text_format_matches_envoy_layout() {
        let line = e().render(DEFAULT_TEXT);
        assert!(line.starts_with("[2025-11-26T16:30:15.123Z] \"GET /api/x?y=1 HTTP/1.1\" 503 UF,URX - - \"-\" 0 91 12 - \"-\" \"curl/7.88.1\" \"abc\" \"web.example.com\" \"-\" outbound|80||api.t.internal"), "{line}");
        assert!(
            line.ends_with("tenant=team-a gateway=public-gw\n"),
            "{line}"
        );
        assert_eq!(e().render("100%% %UNKNOWN% %"), "100%% - %");
    }

    #[test]
    fn every_attribute_the_compiler_accepts_is_there() {
        let mut full = e();
        full.sni = Some("web.example.com".into());
        full.upstream = Some(([127, 0, 0, 1], 8080).into());
        full.peer = Some(([127, 0, 0, 2], 5555).into());
        full.route = Some("r".into());
        for a in tenants::cel::ATTRIBUTES {
            let path: Vec<&str> = a.split('.').collect();
            assert!(full.get(&path).is_some(), "{a}");
        }
        for src in [
            "request.headers['user-agent'] == 'curl/7.88.1'",
            "request.headers.host == 'web.example.com'",
        ] {
            let f = tenants::cel::Expr::parse(src).expect("cel");
            assert!(f.unknown_names().is_empty(), "{src}");
            assert!(f.matches(&full), "{src}");
        }
    }

    #[test]
    fn json_and_cel() {
        let j: serde_json::Value =
            serde_json::from_str(&e().render_json(DEFAULT_JSON.iter().copied())).expect("json");
        assert_eq!(j["response_code"], 503);
        assert_eq!(j["authority"], "web.example.com");
        assert_eq!(j["tenant"], "team-a");
        assert!(j["upstream_host"].is_null());
        let f = tenants::cel::Expr::parse(
            "response.code >= 500 && request.headers['user-agent'].startsWith('curl')",
        )
        .expect("cel");
        assert!(f.matches(&e()));
    }
}
