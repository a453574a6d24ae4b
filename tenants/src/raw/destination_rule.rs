use super::{Any, Map, PortSelector};

raw! {
    /// `DestinationRule.spec`.
    pub struct DestinationRuleSpec {
        pub host: Option<String>,
        pub traffic_policy: Option<TrafficPolicy>,
        pub subsets: Vec<Subset>,
        pub export_to: Vec<String>,
        pub workload_selector: Any,
    }
}

raw! {
    /// `TrafficPolicy`.
    pub struct TrafficPolicy {
        pub load_balancer: Option<LoadBalancerSettings>,
        pub connection_pool: Option<ConnectionPoolSettings>,
        pub outlier_detection: Option<OutlierDetection>,
        pub tls: Option<ClientTlsSettings>,
        pub port_level_settings: Vec<PortTrafficPolicy>,
        pub tunnel: Option<TunnelSettings>,
        pub proxy_protocol: Option<ProxyProtocol>,
        pub retry_budget: Option<RetryBudget>,
    }
}

raw! {
    /// `TrafficPolicy.TunnelSettings`.
    pub struct TunnelSettings {
        pub protocol: Option<String>,
        pub target_host: Option<String>,
        pub target_port: Option<i64>,
    }
}

raw! {
    /// `TrafficPolicy.ProxyProtocol`.
    pub struct ProxyProtocol {
        pub version: Option<String>,
    }
}

raw! {
    /// `TrafficPolicy.RetryBudget`.
    pub struct RetryBudget {
        pub percent: Option<f64>,
        pub min_retry_concurrency: Option<i64>,
        pub budget_interval: Any,
    }
}

raw! {
    /// `TrafficPolicy.PortTrafficPolicy`.
    pub struct PortTrafficPolicy {
        pub port: Option<PortSelector>,
        pub load_balancer: Option<LoadBalancerSettings>,
        pub connection_pool: Option<ConnectionPoolSettings>,
        pub outlier_detection: Option<OutlierDetection>,
        pub tls: Option<ClientTlsSettings>,
    }
}

raw! {
    /// `Subset`.
    pub struct Subset {
        pub name: Option<String>,
        pub labels: Map<String>,
        pub traffic_policy: Option<TrafficPolicy>,
    }
}

raw! {
    /// `LoadBalancerSettings`.
    pub struct LoadBalancerSettings {
        pub simple: Option<String>,
        pub consistent_hash: Option<ConsistentHashLb>,
        pub locality_lb_setting: Any,
        pub zone_aware_lb_setting: Any,
        pub warmup_duration_secs: Any,
        pub warmup: Option<WarmupConfiguration>,
    }
}

raw! {
    /// `WarmupConfiguration`.
    pub struct WarmupConfiguration {
        pub duration: Option<String>,
        pub minimum_percent: Option<f64>,
        pub aggression: Option<f64>,
    }
}

raw! {
    /// `LoadBalancerSettings.ConsistentHashLB`.
    pub struct ConsistentHashLb {
        pub http_header_name: Option<String>,
        pub http_cookie: Option<HttpCookie>,
        pub use_source_ip: Option<bool>,
        pub http_query_parameter_name: Option<String>,
        pub ring_hash: Any,
        pub maglev: Any,
        pub minimum_ring_size: Any,
    }
}

raw! {
    /// `ConsistentHashLB.HTTPCookie`.
    pub struct HttpCookie {
        pub name: Option<String>,
        pub path: Option<String>,
        pub ttl: Option<String>,
        pub attributes: Any,
    }
}

raw! {
    /// `ConnectionPoolSettings`.
    pub struct ConnectionPoolSettings {
        pub tcp: Option<TcpSettings>,
        pub http: Option<HttpSettings>,
    }
}

raw! {
    /// `ConnectionPoolSettings.TCPSettings`.
    pub struct TcpSettings {
        pub max_connections: Option<i64>,
        pub connect_timeout: Option<String>,
        pub tcp_keepalive: Option<TcpKeepalive>,
        pub max_connection_duration: Option<String>,
        pub idle_timeout: Option<String>,
    }
}

raw! {
    /// `TCPSettings.TcpKeepalive`.
    pub struct TcpKeepalive {
        pub probes: Option<i64>,
        pub time: Option<String>,
        pub interval: Option<String>,
    }
}

raw! {
    /// `ConnectionPoolSettings.HTTPSettings`.
    pub struct HttpSettings {
        pub http1_max_pending_requests: Option<i64>,
        pub http2_max_requests: Option<i64>,
        pub max_requests_per_connection: Option<i64>,
        pub max_retries: Option<i64>,
        pub idle_timeout: Option<String>,
        pub h2_upgrade_policy: Option<String>,
        pub use_client_protocol: Option<bool>,
        pub max_concurrent_streams: Option<i64>,
        pub http2_keep_alive: Option<Http2KeepAlive>,
    }
}

raw! {
    /// `HTTPSettings.Http2KeepAlive`.
    pub struct Http2KeepAlive {
        pub interval: Option<String>,
        pub timeout: Option<String>,
    }
}

raw! {
    /// `OutlierDetection`.
    pub struct OutlierDetection {
        pub consecutive_errors: Any,
        pub split_external_local_origin_errors: Option<bool>,
        pub consecutive_local_origin_failures: Option<i64>,
        pub consecutive_gateway_errors: Option<i64>,
        pub consecutive_5xx_errors: Option<i64>,
        pub interval: Option<String>,
        pub base_ejection_time: Option<String>,
        pub max_ejection_percent: Option<i64>,
        pub min_health_percent: Option<i64>,
    }
}

raw! {
    /// `ClientTLSSettings`.
    pub struct ClientTlsSettings {
        pub mode: Option<String>,
        pub client_certificate: Option<String>,
        pub private_key: Option<String>,
        pub ca_certificates: Option<String>,
        pub credential_name: Option<String>,
        pub subject_alt_names: Vec<String>,
        pub sni: Option<String>,
        pub insecure_skip_verify: Option<bool>,
        pub ca_crl: Option<String>,
    }
}
