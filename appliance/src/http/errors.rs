//! Every failure on the HTTP path is classified once here: its origin, whether a retry may
//! help, the status Envoy would answer and the response flag kept for the access log.

use std::fmt;

use http::{HeaderValue, Response, StatusCode, header};

use super::body::{self, Body};

/// Envoy response flags (`%RESPONSE_FLAGS%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// No route configured.
    NoRoute,
    /// No healthy upstream host.
    NoHealthyUpstream,
    /// Upstream connection failure.
    UpstreamConnectFailure,
    /// Upstream overflow (circuit breaker).
    UpstreamOverflow,
    /// Upstream request timeout.
    UpstreamTimeout,
    /// Upstream retry limit exceeded.
    RetryLimitExceeded,
    /// Downstream connection termination.
    DownstreamTermination,
    /// Upstream connection termination.
    UpstreamTermination,
    /// Rate limited locally.
    RateLimited,
    /// Fault injection abort.
    FaultAbort,
    /// Fault injection delay.
    FaultDelay,
    /// Local reset / protocol error.
    LocalReset,
    /// DNS resolution failed (a `DYNAMIC_DNS` name).
    DnsResolutionFailed,
}

impl Flag {
    /// Envoy's short code.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoRoute => "NR",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectFailure => "UF",
            Self::UpstreamOverflow => "UO",
            Self::UpstreamTimeout => "UT",
            Self::RetryLimitExceeded => "URX",
            Self::DownstreamTermination => "DC",
            Self::UpstreamTermination => "UC",
            Self::RateLimited => "RL",
            Self::FaultAbort => "FI",
            Self::FaultDelay => "DI",
            Self::LocalReset => "LR",
            Self::DnsResolutionFailed => "DF",
        }
    }
}

/// The flags of one request, in the order they were raised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(Vec<Flag>);

impl Flags {
    /// Adds a flag once.
    pub fn add(&mut self, f: Flag) {
        if !self.0.contains(&f) {
            self.0.push(f);
        }
    }

    /// Whether no flag was raised.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `f` was raised.
    pub fn has(&self, f: Flag) -> bool {
        self.0.contains(&f)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        // Envoy prints flags in a fixed (alphabetical) order, whatever order they were set in.
        let mut codes: Vec<&str> = self.0.iter().map(|x| x.code()).collect();
        codes.sort_unstable();
        f.write_str(&codes.join(","))
    }
}

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client.
    Downstream,
    /// The upstream service.
    Upstream,
    /// The gateway itself (policy, configuration).
    Local,
}

/// A failure to proxy a request.
#[derive(Debug)]
pub enum ProxyError {
    /// No virtual host or no route.
    NoRoute,
    /// The cluster has no endpoint (or none healthy).
    NoHealthyUpstream,
    /// A circuit breaker refused the request.
    Overflow,
    /// The upstream could not be connected to.
    Connect(String),
    /// The upstream did not answer in time.
    Timeout,
    /// The upstream reset the connection or stream before answering.
    Reset(String),
    /// The tenant's request rate is exceeded.
    RateLimited,
    /// The request is malformed.
    BadRequest(&'static str),
    /// The tenant is at its `maxConnections` and this connection would be one more.
    TenantConnections,
    /// An upgrade to a protocol other than websocket (Envoy: `upgrade_failed`).
    UpgradeRejected,
    /// The name a `DYNAMIC_DNS` cluster was asked for did not resolve.
    DnsFailed(String),
}

impl ProxyError {
    /// Where the failure came from.
    pub fn origin(&self) -> Origin {
        match self {
            Self::NoRoute
            | Self::Overflow
            | Self::RateLimited
            | Self::TenantConnections
            | Self::UpgradeRejected => Origin::Local,
            Self::BadRequest(_) => Origin::Downstream,
            Self::NoHealthyUpstream
            | Self::Connect(_)
            | Self::Timeout
            | Self::Reset(_)
            | Self::DnsFailed(_) => Origin::Upstream,
        }
    }

    /// The status, flag and body Envoy would answer with.
    pub fn parts(&self) -> (StatusCode, Option<Flag>, String) {
        match self {
            Self::NoRoute => (StatusCode::NOT_FOUND, Some(Flag::NoRoute), String::new()),
            Self::NoHealthyUpstream => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Flag::NoHealthyUpstream),
                "no healthy upstream".into(),
            ),
            Self::Overflow => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Flag::UpstreamOverflow),
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
                    .into(),
            ),
            Self::Connect(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Flag::UpstreamConnectFailure),
                format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {e}"
                ),
            ),
            Self::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                Some(Flag::UpstreamTimeout),
                "upstream request timeout".into(),
            ),
            Self::Reset(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Flag::UpstreamTermination),
                format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination ({e})"
                ),
            ),
            Self::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                Some(Flag::RateLimited),
                "local_rate_limited".into(),
            ),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, None, (*m).into()),
            Self::TenantConnections => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Flag::UpstreamOverflow),
                "tenant connection limit reached".into(),
            ),
            Self::UpgradeRejected => (StatusCode::FORBIDDEN, None, String::new()),
            // Envoy's dynamic forward proxy: `dns_resolution_failure`, flag DF.
            Self::DnsFailed(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Flag::DnsResolutionFailed),
                format!("DNS resolution failure: {e}"),
            ),
        }
    }
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
pub fn grpc_code(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// A response generated by the gateway itself to a gRPC request: as Envoy answers one, a
/// trailers-only response (HTTP 200, no body) with `grpc-status` `code` (for an HTTP status,
/// [`grpc_code`]) and the text as `grpc-message`. A gRPC client then sees UNAVAILABLE for a
/// 503, not a bare protocol error.
pub fn local_grpc(code: u8, text: &str) -> Response<Body> {
    let mut r = Response::new(body::empty());
    let h = r.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if !text.is_empty() {
        let mut m = String::with_capacity(text.len());
        // grpc-message is percent-encoded outside printable ASCII, and `%` itself.
        for b in text.bytes() {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                m.push(char::from(b));
            } else {
                m.push_str(&format!("%{b:02X}"));
            }
        }
        if let Ok(v) = HeaderValue::try_from(m) {
            h.insert("grpc-message", v);
        }
    }
    r
}

/// A response generated by the gateway itself.
pub fn local(status: StatusCode, body_text: String) -> Response<Body> {
    let mut r = Response::new(if body_text.is_empty() {
        body::empty()
    } else {
        body::full(body_text)
    });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
    if h.get(header::CONTENT_TYPE).is_none() && status != StatusCode::NOT_FOUND {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}
