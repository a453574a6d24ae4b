use super::{Any, Map, Percent, PortSelector, StringMatch};

raw! {
    /// `VirtualService.spec`.
    pub struct VirtualServiceSpec {
        pub hosts: Vec<String>,
        pub gateways: Vec<String>,
        pub http: Vec<HttpRoute>,
        pub tls: Vec<TlsRoute>,
        pub tcp: Vec<TcpRoute>,
        pub export_to: Vec<String>,
    }
}

raw! {
    /// `HTTPRoute`.
    pub struct HttpRoute {
        pub name: Option<String>,
        #[serde(rename = "match")]
        pub matches: Vec<HttpMatchRequest>,
        pub route: Vec<HttpRouteDestination>,
        pub redirect: Option<HttpRedirect>,
        pub direct_response: Option<HttpDirectResponse>,
        pub delegate: Option<Delegate>,
        pub rewrite: Option<HttpRewrite>,
        pub timeout: Option<String>,
        pub retries: Option<HttpRetry>,
        pub fault: Option<HttpFaultInjection>,
        pub mirror: Option<Destination>,
        pub mirror_percentage: Option<Percent>,
        pub mirror_percent: Any,
        pub mirrors: Vec<HttpMirrorPolicy>,
        pub cors_policy: Option<CorsPolicy>,
        pub headers: Option<Headers>,
    }
}

raw! {
    /// `Delegate`.
    pub struct Delegate {
        pub name: Option<String>,
        pub namespace: Option<String>,
    }
}

raw! {
    /// `HTTPMatchRequest`.
    pub struct HttpMatchRequest {
        pub name: Option<String>,
        pub uri: Option<StringMatch>,
        pub scheme: Option<StringMatch>,
        pub method: Option<StringMatch>,
        pub authority: Option<StringMatch>,
        pub headers: Map<StringMatch>,
        pub port: Option<i64>,
        pub source_labels: Map<String>,
        pub gateways: Vec<String>,
        pub query_params: Map<StringMatch>,
        pub ignore_uri_case: Option<bool>,
        pub without_headers: Map<StringMatch>,
        pub source_namespace: Option<String>,
        pub stat_prefix: Any,
    }
}

raw! {
    /// `Destination`.
    pub struct Destination {
        pub host: Option<String>,
        pub subset: Option<String>,
        pub port: Option<PortSelector>,
    }
}

raw! {
    /// `HTTPRouteDestination`.
    pub struct HttpRouteDestination {
        pub destination: Option<Destination>,
        pub weight: Option<i64>,
        pub headers: Option<Headers>,
    }
}

raw! {
    /// `RouteDestination` (TLS and TCP).
    pub struct RouteDestination {
        pub destination: Option<Destination>,
        pub weight: Option<i64>,
    }
}

raw! {
    /// `Headers`.
    pub struct Headers {
        pub request: Option<HeaderOperations>,
        pub response: Option<HeaderOperations>,
    }
}

raw! {
    /// `Headers.HeaderOperations`.
    pub struct HeaderOperations {
        pub set: Map<String>,
        pub add: Map<String>,
        pub remove: Vec<String>,
    }
}

raw! {
    /// `HTTPRedirect`.
    pub struct HttpRedirect {
        pub uri: Option<String>,
        pub authority: Option<String>,
        pub port: Option<i64>,
        pub derive_port: Option<String>,
        pub scheme: Option<String>,
        pub redirect_code: Option<i64>,
        pub prefix_rewrite: Option<String>,
    }
}

raw! {
    /// `HTTPDirectResponse`.
    pub struct HttpDirectResponse {
        pub status: Option<i64>,
        pub body: Option<HttpBody>,
    }
}

raw! {
    /// `HTTPBody`.
    pub struct HttpBody {
        pub string: Option<String>,
        pub bytes: Option<String>,
    }
}

raw! {
    /// `HTTPRewrite`.
    pub struct HttpRewrite {
        pub uri: Option<String>,
        pub authority: Option<String>,
        pub uri_regex_rewrite: Option<RegexRewrite>,
    }
}

raw! {
    /// `RegexRewrite`.
    pub struct RegexRewrite {
        #[serde(rename = "match")]
        pub pattern: Option<String>,
        pub rewrite: Option<String>,
    }
}

raw! {
    /// `HTTPRetry`.
    pub struct HttpRetry {
        pub attempts: Option<i64>,
        pub per_try_timeout: Option<String>,
        pub retry_on: Option<String>,
        pub retry_remote_localities: Any,
        pub retry_ignore_previous_hosts: Option<bool>,
        pub backoff: Option<String>,
    }
}

raw! {
    /// `HTTPFaultInjection`.
    pub struct HttpFaultInjection {
        pub delay: Option<FaultDelay>,
        pub abort: Option<FaultAbort>,
    }
}

raw! {
    /// `HTTPFaultInjection.Delay`.
    pub struct FaultDelay {
        pub fixed_delay: Option<String>,
        pub exponential_delay: Any,
        pub percentage: Option<Percent>,
        pub percent: Option<i64>,
    }
}

raw! {
    /// `HTTPFaultInjection.Abort`.
    pub struct FaultAbort {
        pub http_status: Option<i64>,
        pub grpc_status: Option<String>,
        pub http2_error: Any,
        pub percentage: Option<Percent>,
    }
}

raw! {
    /// `HTTPMirrorPolicy`.
    pub struct HttpMirrorPolicy {
        pub destination: Option<Destination>,
        pub percentage: Option<Percent>,
    }
}

raw! {
    /// `CorsPolicy`.
    pub struct CorsPolicy {
        pub allow_origin: Vec<String>,
        pub allow_origins: Vec<StringMatch>,
        pub allow_methods: Vec<String>,
        pub allow_headers: Vec<String>,
        pub expose_headers: Vec<String>,
        pub max_age: Option<String>,
        pub allow_credentials: Option<bool>,
        pub unmatched_preflights: Option<String>,
    }
}

raw! {
    /// `TLSRoute`.
    pub struct TlsRoute {
        #[serde(rename = "match")]
        pub matches: Vec<TlsMatchAttributes>,
        pub route: Vec<RouteDestination>,
    }
}

raw! {
    /// `TLSMatchAttributes`.
    pub struct TlsMatchAttributes {
        pub sni_hosts: Vec<String>,
        pub destination_subnets: Vec<String>,
        pub port: Option<i64>,
        pub source_labels: Map<String>,
        pub gateways: Vec<String>,
        pub source_namespace: Option<String>,
    }
}

raw! {
    /// `TCPRoute`.
    pub struct TcpRoute {
        #[serde(rename = "match")]
        pub matches: Vec<L4MatchAttributes>,
        pub route: Vec<RouteDestination>,
    }
}

raw! {
    /// `L4MatchAttributes`.
    pub struct L4MatchAttributes {
        pub destination_subnets: Vec<String>,
        pub port: Option<i64>,
        pub source_subnet: Option<String>,
        pub source_labels: Map<String>,
        pub gateways: Vec<String>,
        pub source_namespace: Option<String>,
    }
}
