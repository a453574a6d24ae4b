use super::{Any, Map};

raw! {
    /// `IstioOperator.spec`: gateway groups and mesh-wide settings.
    pub struct IstioOperatorSpec {
        pub profile: Option<String>,
        pub hub: Any,
        pub tag: Any,
        pub revision: Any,
        pub namespace: Any,
        pub install_package_path: Any,
        pub components: Option<Components>,
        pub mesh_config: Option<MeshConfig>,
        pub values: Any,
        pub unvalidated_values: Any,
    }
}

raw! {
    /// `IstioOperator.spec.components`.
    pub struct Components {
        pub base: Any,
        pub pilot: Any,
        pub cni: Any,
        pub ztunnel: Any,
        pub istiod_remote: Any,
        pub ingress_gateways: Vec<GatewayComponent>,
        pub egress_gateways: Vec<GatewayComponent>,
    }
}

raw! {
    /// One gateway group.
    pub struct GatewayComponent {
        pub name: Option<String>,
        pub namespace: Option<String>,
        pub label: Map<String>,
        pub enabled: Option<bool>,
        pub k8s: Option<K8sSettings>,
        pub hub: Any,
        pub tag: Any,
        pub appliance: Option<ApplianceSettings>,
    }
}

raw! {
    /// `k8s:` of a gateway component; only `service` means something on bare metal.
    pub struct K8sSettings {
        pub service: Option<K8sService>,
        pub resources: Any,
        pub hpa_spec: Any,
        pub replica_count: Any,
        pub affinity: Any,
        pub node_selector: Any,
        pub pod_annotations: Any,
        pub pod_disruption_budget: Any,
        pub service_annotations: Any,
        pub env: Any,
        pub tolerations: Any,
        pub strategy: Any,
        pub priority_class_name: Any,
        pub readiness_probe: Any,
        pub security_context: Any,
        pub volumes: Any,
        pub volume_mounts: Any,
        pub image_pull_policy: Any,
        pub overlays: Any,
    }
}

raw! {
    /// `k8s.service`: the bind address and Istio's port → targetPort mapping.
    pub struct K8sService {
        #[serde(rename = "type")]
        pub service_type: Option<String>,
        #[serde(rename = "loadBalancerIP")]
        pub load_balancer_ip: Option<String>,
        pub ports: Vec<K8sServicePort>,
        pub external_traffic_policy: Any,
        pub load_balancer_source_ranges: Any,
        pub external_i_ps: Any,
    }
}

raw! {
    /// `k8s.service.ports[]`.
    pub struct K8sServicePort {
        pub name: Option<String>,
        pub port: Option<i64>,
        pub target_port: Option<i64>,
        pub protocol: Option<String>,
        pub node_port: Any,
    }
}

raw! {
    /// gatehouse's bare-metal settings for a group.
    pub struct ApplianceSettings {
        pub source_address: Option<String>,
        pub max_connections: Option<i64>,
        pub outbound_traffic_policy: Option<String>,
        pub drain_timeout: Option<String>,
        pub http3: Option<Http3Settings>,
        pub limits: Option<DownstreamLimits>,
    }
}

raw! {
    /// HTTP/3 settings of a group.
    pub struct Http3Settings {
        pub enabled: Option<bool>,
        pub alt_svc: Option<bool>,
        pub early_data: Option<bool>,
        pub max_concurrent_streams: Option<i64>,
        pub idle_timeout: Option<String>,
        pub max_connections: Option<i64>,
    }
}

raw! {
    /// Downstream protection limits of a group.
    pub struct DownstreamLimits {
        pub max_request_headers_kb: Option<i64>,
        pub header_read_timeout: Option<String>,
        pub idle_timeout: Option<String>,
        pub max_concurrent_streams: Option<i64>,
    }
}

raw! {
    /// `meshConfig`: access-log switches and extension providers.
    pub struct MeshConfig {
        pub access_log_file: Option<String>,
        pub access_log_encoding: Option<String>,
        pub access_log_format: Option<String>,
        pub extension_providers: Vec<ExtensionProvider>,
        pub default_providers: Option<DefaultProviders>,
        pub outbound_traffic_policy: Option<super::OutboundTrafficPolicy>,
        pub path_normalization: Option<PathNormalization>,
        pub enable_tracing: Any,
        pub default_config: Any,
        pub trust_domain: Any,
        pub root_namespace: Any,
        pub enable_auto_mtls: Any,
        pub default_service_export_to: Any,
        pub default_virtual_service_export_to: Any,
        pub default_destination_rule_export_to: Any,
        pub locality_lb_setting: Any,
        pub dns_refresh_rate: Any,
        pub protocol_detection_timeout: Any,
        pub ingress_class: Any,
        pub ingress_service: Any,
        pub ingress_controller_mode: Any,
        pub enable_prometheus_merge: Any,
    }
}

raw! {
    /// `meshConfig.pathNormalization`.
    pub struct PathNormalization {
        pub normalization: Option<String>,
    }
}

raw! {
    /// `meshConfig.defaultProviders`.
    pub struct DefaultProviders {
        pub access_logging: Vec<String>,
        pub metrics: Vec<String>,
        pub tracing: Vec<String>,
    }
}

raw! {
    /// `meshConfig.extensionProviders[]`.
    pub struct ExtensionProvider {
        pub name: Option<String>,
        pub envoy_otel_als: Option<OtelAls>,
        pub envoy_file_access_log: Option<FileAccessLog>,
        pub opentelemetry: Any,
        pub prometheus: Any,
        pub zipkin: Any,
        pub datadog: Any,
        pub stackdriver: Any,
        pub skywalking: Any,
        pub envoy_ext_authz_http: Any,
        pub envoy_ext_authz_grpc: Any,
        pub envoy_http_als: Any,
        pub envoy_tcp_als: Any,
    }
}

raw! {
    /// `envoyOtelAls`: OTLP logs to `service:port`.
    pub struct OtelAls {
        pub service: Option<String>,
        pub port: Option<i64>,
        pub log_name: Option<String>,
        pub log_format: Option<LogFormat>,
    }
}

raw! {
    /// `envoyFileAccessLog`.
    pub struct FileAccessLog {
        pub path: Option<String>,
        pub log_format: Option<LogFormat>,
    }
}

raw! {
    /// `logFormat`: a text template or JSON labels.
    pub struct LogFormat {
        pub text: Option<String>,
        pub labels: Option<Map<String>>,
    }
}
