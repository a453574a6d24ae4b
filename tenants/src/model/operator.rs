//! `IstioOperator` in `gatehouse.yaml`: the gateway groups and mesh-wide settings.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::{Checker, Meta, OutboundPolicy, parse_outbound};
use crate::diag::FieldPath;
use crate::raw;
use crate::types::is_dns1123_label;

/// Whether a group faces clients or upstream partners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// From `components.ingressGateways`.
    Ingress,
    /// From `components.egressGateways`.
    Egress,
}

/// One `k8s.service.ports[]` entry: Gateway port → listening port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortMap {
    /// `name`.
    pub name: String,
    /// `port`: what Gateway servers write.
    pub port: u16,
    /// `targetPort`: what the appliance binds.
    pub target_port: u16,
}

/// HTTP/3 settings of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Http3 {
    /// Serve QUIC beside every HTTPS server.
    pub enabled: bool,
    /// Advertise `Alt-Svc: h3` on TCP responses.
    pub alt_svc: bool,
    /// Accept 0-RTT for idempotent methods.
    pub early_data: bool,
    /// Concurrent bidirectional streams per connection.
    pub max_concurrent_streams: u32,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Most concurrent QUIC connections per listener.
    pub max_connections: u32,
}

/// Downstream protection of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownstreamLimits {
    /// Largest request header block, in KiB (Envoy default 60).
    pub max_request_headers_kb: u32,
    /// Time allowed to receive a request's headers (slowloris).
    pub header_read_timeout: Duration,
    /// Idle keep-alive connection timeout.
    pub idle_timeout: Duration,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
}

/// A gateway group: a set of listeners served by one `gatehouse@<name>` process.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayGroup {
    /// `name`.
    pub name: String,
    /// Ingress or egress.
    pub kind: GroupKind,
    /// `label`: Gateways select the group by these.
    pub labels: BTreeMap<String, String>,
    /// The namespace the gateway "workload" runs in (`istio-system`).
    pub namespace: String,
    /// `enabled`.
    pub enabled: bool,
    /// `k8s.service.loadBalancerIP`: the bind address (default: every address).
    pub bind: Option<IpAddr>,
    /// `k8s.service.ports`.
    pub ports: Vec<PortMap>,
    /// `appliance.sourceAddress`: upstream connections leave from here.
    pub source_address: Option<IpAddr>,
    /// `appliance.maxConnections`.
    pub max_connections: Option<u32>,
    /// `appliance.outboundTrafficPolicy`, when set. The policy in force is the compiled
    /// group's [`outbound`](crate::snapshot::GroupSnapshot::outbound).
    pub outbound: Option<OutboundPolicy>,
    /// `appliance.drainTimeout` (default 10s).
    pub drain_timeout: Duration,
    /// `appliance.http3`.
    pub http3: Http3,
    /// `appliance.limits`.
    pub limits: DownstreamLimits,
}

impl GatewayGroup {
    /// The listening port for Gateway port `port` (the targetPort mapping, or the port itself).
    pub fn listen_port(&self, port: u16) -> u16 {
        self.ports
            .iter()
            .find(|p| p.port == port)
            .map_or(port, |p| p.target_port)
    }

    /// Whether every label of `selector` is on this group.
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// How the built-in `envoy` provider encodes entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogEncoding {
    /// Envoy's text format.
    Text,
    /// One JSON object per line.
    Json,
}

/// An access-log format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    /// A text template with Envoy `%COMMAND%` operators; `None` is Envoy's default format.
    Text(Option<String>),
    /// JSON with these keys → `%COMMAND%` templates; `None` is the default key set.
    Json(Option<BTreeMap<String, String>>),
}

/// An access-log provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// A file (or `/dev/stdout`).
    File {
        /// Path.
        path: String,
        /// Format.
        format: LogFormat,
    },
    /// OTLP logs to `service:port`.
    Otel {
        /// Collector host.
        service: String,
        /// Collector port.
        port: u16,
        /// `logName`.
        log_name: Option<String>,
        /// Body format.
        format: LogFormat,
    },
    /// Declared, but not an access-log provider gatehouse implements.
    Other(String),
}

/// `meshConfig` as far as gatehouse honours it.
#[derive(Debug, Clone, Serialize)]
pub struct MeshSettings {
    /// `accessLogFile`: non-empty turns the `envoy` provider on everywhere.
    pub access_log_file: Option<String>,
    /// The built-in `envoy` provider.
    pub envoy_provider: Provider,
    /// `extensionProviders` by name.
    pub providers: BTreeMap<String, Provider>,
    /// `defaultProviders.accessLogging`.
    pub default_access_logging: Vec<String>,
    /// `outboundTrafficPolicy.mode`.
    pub outbound: Option<OutboundPolicy>,
    /// `pathNormalization.normalization`.
    pub path_normalization: PathNormalization,
}

/// How request paths are normalized before routing (`meshConfig.pathNormalization`), as
/// Istio configures Envoy (`buildHTTPConnectionManager`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// Routed as sent.
    None,
    /// Dot segments removed, unreserved escapes decoded, `\` read as `/` (`DEFAULT` too).
    #[default]
    Base,
    /// `Base`, then runs of slashes merged.
    MergeSlashes,
    /// `%2F` and `%5C` decoded first, then `MergeSlashes`.
    DecodeAndMergeSlashes,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            access_log_file: None,
            envoy_provider: Provider::File {
                path: "/dev/stdout".into(),
                format: LogFormat::Text(None),
            },
            providers: BTreeMap::new(),
            default_access_logging: Vec::new(),
            outbound: None,
            path_normalization: PathNormalization::Base,
        }
    }
}

/// A validated IstioOperator.
#[derive(Debug, Clone, Serialize)]
pub struct IstioOperator {
    /// Identity.
    pub meta: Meta,
    /// The groups, ingress first, in file order.
    pub groups: Vec<GatewayGroup>,
    /// Mesh-wide settings.
    pub mesh: MeshSettings,
}

// === impl IstioOperator ===

impl IstioOperator {
    /// Parses and validates an IstioOperator.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::IstioOperatorSpec) -> Self {
        let sp = FieldPath::root().key("spec");
        if let Some(p) = spec.profile.as_deref()
            && p != "empty"
        {
            c.warn(&sp.key("profile"), format!("profile {p:?} has no effect: gatehouse serves exactly the gateways listed under components"));
        }
        for (f, v) in [
            ("hub", &spec.hub),
            ("tag", &spec.tag),
            ("revision", &spec.revision),
            ("namespace", &spec.namespace),
            ("installPackagePath", &spec.install_package_path),
            ("values", &spec.values),
            ("unvalidatedValues", &spec.unvalidated_values),
        ] {
            c.mesh_only(&sp.key(f), v.is_some(), "Kubernetes installation setting");
        }
        let mut groups: Vec<GatewayGroup> = Vec::new();
        if let Some(comp) = &spec.components {
            let cp = sp.key("components");
            for (f, v) in [
                ("base", &comp.base),
                ("pilot", &comp.pilot),
                ("cni", &comp.cni),
                ("ztunnel", &comp.ztunnel),
                ("istiodRemote", &comp.istiod_remote),
            ] {
                c.mesh_only(&cp.key(f), v.is_some(), "Kubernetes component");
            }
            for (field, kind, list) in [
                (
                    "ingressGateways",
                    GroupKind::Ingress,
                    &comp.ingress_gateways,
                ),
                ("egressGateways", GroupKind::Egress, &comp.egress_gateways),
            ] {
                for (i, g) in list.iter().enumerate() {
                    let gp = cp.key(field).idx(i);
                    if let Some(group) = parse_group(c, &gp, kind, g) {
                        if groups.iter().any(|o| o.name == group.name) {
                            c.error(
                                &gp.key("name"),
                                format!("duplicate gateway group name {:?}", group.name),
                            );
                            continue;
                        }
                        groups.push(group);
                    }
                }
            }
        }
        let mesh = spec
            .mesh_config
            .as_ref()
            .map(|m| parse_mesh(c, &sp.key("meshConfig"), m))
            .unwrap_or_default();
        Self { meta, groups, mesh }
    }
}

fn parse_group(
    c: &mut Checker,
    p: &FieldPath,
    kind: GroupKind,
    g: &raw::GatewayComponent,
) -> Option<GatewayGroup> {
    let name = g.name.clone().unwrap_or_default();
    if !is_dns1123_label(&name) {
        c.error(
            &p.key("name"),
            format!("gateway group name {name:?} must be a DNS-1123 label"),
        );
        return None;
    }
    c.mesh_only(&p.key("hub"), g.hub.is_some(), "container image setting");
    c.mesh_only(&p.key("tag"), g.tag.is_some(), "container image setting");
    super::parse_labels(c, &p.key("label"), &g.label);
    let labels = if g.label.is_empty() {
        BTreeMap::from([("istio".to_string(), name.clone())])
    } else {
        g.label.clone()
    };
    let mut bind = None;
    let mut ports: Vec<PortMap> = Vec::new();
    if let Some(k8s) = &g.k8s {
        let kp = p.key("k8s");
        for (f, v) in [
            ("resources", &k8s.resources),
            ("hpaSpec", &k8s.hpa_spec),
            ("replicaCount", &k8s.replica_count),
            ("affinity", &k8s.affinity),
            ("nodeSelector", &k8s.node_selector),
            ("podAnnotations", &k8s.pod_annotations),
            ("podDisruptionBudget", &k8s.pod_disruption_budget),
            ("serviceAnnotations", &k8s.service_annotations),
            ("env", &k8s.env),
            ("tolerations", &k8s.tolerations),
            ("strategy", &k8s.strategy),
            ("priorityClassName", &k8s.priority_class_name),
            ("readinessProbe", &k8s.readiness_probe),
            ("securityContext", &k8s.security_context),
            ("volumes", &k8s.volumes),
            ("volumeMounts", &k8s.volume_mounts),
            ("imagePullPolicy", &k8s.image_pull_policy),
            ("overlays", &k8s.overlays),
        ] {
            c.mesh_only(
                &kp.key(f),
                v.is_some(),
                "Kubernetes-only setting (use systemd drop-ins for resources)",
            );
        }
        if let Some(svc) = &k8s.service {
            let svp = kp.key("service");
            if let Some(t) = &svc.service_type {
                c.mesh_only(&svp.key("type"), true, &format!("service type {t} means nothing on bare metal; the group binds its ports directly"));
            }
            for (f, v) in [
                ("externalTrafficPolicy", &svc.external_traffic_policy),
                ("loadBalancerSourceRanges", &svc.load_balancer_source_ranges),
                ("externalIPs", &svc.external_i_ps),
            ] {
                c.mesh_only(&svp.key(f), v.is_some(), "Kubernetes Service setting");
            }
            if let Some(ip) = &svc.load_balancer_ip {
                match ip.parse::<IpAddr>() {
                    Ok(a) => bind = Some(a),
                    Err(_) => c.error(
                        &svp.key("loadBalancerIP"),
                        format!("loadBalancerIP {ip:?} must be an IP address"),
                    ),
                }
            }
            for (i, sp) in svc.ports.iter().enumerate() {
                let pp = svp.key("ports").idx(i);
                c.mesh_only(
                    &pp.key("nodePort"),
                    sp.node_port.is_some(),
                    "Kubernetes NodePort",
                );
                let Some(port) = sp.port.and_then(|n| c.port(&pp.key("port"), n)) else {
                    if sp.port.is_none() {
                        c.error(&pp.key("port"), "port is required");
                    }
                    continue;
                };
                let target = match sp.target_port {
                    Some(n) => match c.port(&pp.key("targetPort"), n) {
                        Some(t) => t,
                        None => continue,
                    },
                    None => port,
                };
                if let Some(o) = ports.iter().find(|o| o.port == port) {
                    c.error(
                        &pp.key("port"),
                        format!("port {port} is already mapped (by {:?})", o.name),
                    );
                    continue;
                }
                if let Some(o) = ports.iter().find(|o| o.target_port == target) {
                    c.error(
                        &pp.key("targetPort"),
                        format!(
                            "targetPort {target} is already used by port {} ({:?})",
                            o.port, o.name
                        ),
                    );
                    continue;
                }
                ports.push(PortMap {
                    name: sp.name.clone().unwrap_or_default(),
                    port,
                    target_port: target,
                });
            }
        }
    }
    let a = g.appliance.clone().unwrap_or_default();
    let ap = p.key("appliance");
    let source_address = a
        .source_address
        .as_deref()
        .and_then(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                c.error(
                    &ap.key("sourceAddress"),
                    format!("sourceAddress {s:?} must be an IP address"),
                );
                None
            }
        });
    let max_connections = match a.max_connections {
        Some(n) if n <= 0 => {
            c.error(&ap.key("maxConnections"), "maxConnections must be positive");
            None
        }
        other => c.count(&ap.key("maxConnections"), other),
    };
    let outbound = parse_outbound(
        c,
        &ap.key("outboundTrafficPolicy"),
        &a.outbound_traffic_policy,
    );
    let drain_timeout = c
        .duration(&ap.key("drainTimeout"), &a.drain_timeout)
        .unwrap_or(Duration::from_secs(10));
    let h = a.http3.clone().unwrap_or_default();
    let hp = ap.key("http3");
    let http3 = Http3 {
        enabled: h.enabled.unwrap_or(true),
        alt_svc: h.alt_svc.unwrap_or(true),
        early_data: h.early_data.unwrap_or(false),
        max_concurrent_streams: c
            .count(&hp.key("maxConcurrentStreams"), h.max_concurrent_streams)
            .unwrap_or(100)
            .max(1),
        idle_timeout: c
            .duration(&hp.key("idleTimeout"), &h.idle_timeout)
            .unwrap_or(Duration::from_secs(30)),
        max_connections: c
            .count(&hp.key("maxConnections"), h.max_connections)
            .unwrap_or(10_000)
            .max(1),
    };
    let l = a.limits.clone().unwrap_or_default();
    let lp = ap.key("limits");
    let limits = DownstreamLimits {
        max_request_headers_kb: c
            .count(&lp.key("maxRequestHeadersKb"), l.max_request_headers_kb)
            .unwrap_or(60)
            .clamp(1, 8192),
        header_read_timeout: c
            .duration(&lp.key("headerReadTimeout"), &l.header_read_timeout)
            .unwrap_or(Duration::from_secs(10)),
        idle_timeout: c
            .duration(&lp.key("idleTimeout"), &l.idle_timeout)
            .unwrap_or(Duration::from_secs(3600)),
        max_concurrent_streams: c
            .count(&lp.key("maxConcurrentStreams"), l.max_concurrent_streams)
            .unwrap_or(1000)
            .max(1),
    };
    Some(GatewayGroup {
        name,
        kind,
        labels,
        namespace: g
            .namespace
            .clone()
            .unwrap_or_else(|| super::PLATFORM_NAMESPACE.to_string()),
        enabled: g.enabled.unwrap_or(true),
        bind,
        ports,
        source_address,
        max_connections,
        outbound,
        drain_timeout,
        http3,
        limits,
    })
}

fn parse_format(c: &mut Checker, p: &FieldPath, f: &Option<raw::LogFormat>) -> LogFormat {
    match f {
        None => LogFormat::Text(None),
        Some(f) => match (&f.text, &f.labels) {
            (Some(_), Some(_)) => {
                c.error(p, "logFormat may set text or labels, not both");
                LogFormat::Text(None)
            }
            (Some(t), None) => LogFormat::Text(Some(t.clone())),
            (None, Some(l)) => LogFormat::Json(Some(l.clone())),
            (None, None) => LogFormat::Text(None),
        },
    }
}

fn parse_mesh(c: &mut Checker, p: &FieldPath, m: &raw::MeshConfig) -> MeshSettings {
    for (f, v) in [
        ("enableTracing", &m.enable_tracing),
        ("defaultConfig", &m.default_config),
        ("trustDomain", &m.trust_domain),
        ("rootNamespace", &m.root_namespace),
        ("enableAutoMtls", &m.enable_auto_mtls),
        ("localityLbSetting", &m.locality_lb_setting),
        ("dnsRefreshRate", &m.dns_refresh_rate),
        ("protocolDetectionTimeout", &m.protocol_detection_timeout),
        ("ingressClass", &m.ingress_class),
        ("ingressService", &m.ingress_service),
        ("ingressControllerMode", &m.ingress_controller_mode),
        ("enablePrometheusMerge", &m.enable_prometheus_merge),
    ] {
        c.mesh_only(&p.key(f), v.is_some(), "mesh-only setting");
    }
    for (f, v) in [
        ("defaultServiceExportTo", &m.default_service_export_to),
        (
            "defaultVirtualServiceExportTo",
            &m.default_virtual_service_export_to,
        ),
        (
            "defaultDestinationRuleExportTo",
            &m.default_destination_rule_export_to,
        ),
    ] {
        if v.is_some() {
            c.warn(
                &p.key(f),
                "has no effect: tenant resources are private by default; share them with exportTo",
            );
        }
    }
    let encoding = match m.access_log_encoding.as_deref() {
        None | Some("TEXT") => LogEncoding::Text,
        Some("JSON") => LogEncoding::Json,
        Some(o) => {
            c.error(
                &p.key("accessLogEncoding"),
                format!("unknown value {o:?}; expected TEXT or JSON"),
            );
            LogEncoding::Text
        }
    };
    let format = match encoding {
        LogEncoding::Text => LogFormat::Text(m.access_log_format.clone().filter(|s| !s.is_empty())),
        LogEncoding::Json => match m.access_log_format.as_deref().filter(|s| !s.is_empty()) {
            None => LogFormat::Json(None),
            Some(s) => match serde_json::from_str::<BTreeMap<String, String>>(s) {
                Ok(map) => LogFormat::Json(Some(map)),
                Err(e) => {
                    c.error(
                        &p.key("accessLogFormat"),
                        format!("JSON accessLogFormat must be a JSON object of strings: {e}"),
                    );
                    LogFormat::Json(None)
                }
            },
        },
    };
    let access_log_file = m.access_log_file.clone().filter(|s| !s.is_empty());
    let envoy_provider = Provider::File {
        path: access_log_file
            .clone()
            .unwrap_or_else(|| "/dev/stdout".into()),
        format,
    };
    let mut providers = BTreeMap::new();
    for (i, e) in m.extension_providers.iter().enumerate() {
        let ep = p.key("extensionProviders").idx(i);
        let name = e.name.clone().unwrap_or_default();
        if name.is_empty() {
            c.error(&ep.key("name"), "provider name is required");
            continue;
        }
        if providers.contains_key(&name) || name == "envoy" {
            c.error(
                &ep.key("name"),
                format!("duplicate extension provider name {name:?}"),
            );
            continue;
        }
        let provider = if let Some(f) = &e.envoy_file_access_log {
            let path = f.path.clone().unwrap_or_else(|| "/dev/stdout".into());
            Provider::File {
                path,
                format: parse_format(
                    c,
                    &ep.key("envoyFileAccessLog").key("logFormat"),
                    &f.log_format,
                ),
            }
        } else if let Some(o) = &e.envoy_otel_als {
            let op = ep.key("envoyOtelAls");
            let service = o.service.clone().unwrap_or_default();
            if service.is_empty() {
                c.error(&op.key("service"), "service is required");
            }
            let port = match o.port {
                Some(n) => c.port(&op.key("port"), n).unwrap_or(4317),
                None => {
                    c.error(&op.key("port"), "port is required");
                    4317
                }
            };
            Provider::Otel {
                service,
                port,
                log_name: o.log_name.clone(),
                format: parse_format(c, &op.key("logFormat"), &o.log_format),
            }
        } else {
            let kind = [
                ("opentelemetry", e.opentelemetry.is_some()),
                ("prometheus", e.prometheus.is_some()),
                ("zipkin", e.zipkin.is_some()),
                ("datadog", e.datadog.is_some()),
                ("stackdriver", e.stackdriver.is_some()),
                ("skywalking", e.skywalking.is_some()),
                ("envoyExtAuthzHttp", e.envoy_ext_authz_http.is_some()),
                ("envoyExtAuthzGrpc", e.envoy_ext_authz_grpc.is_some()),
                ("envoyHttpAls", e.envoy_http_als.is_some()),
                ("envoyTcpAls", e.envoy_tcp_als.is_some()),
            ]
            .iter()
            .find(|(_, b)| *b)
            .map_or("none", |(k, _)| *k);
            c.warn(&ep, format!("provider {name:?} ({kind}) is not an access-log provider gatehouse implements; Telemetry resources naming it log nothing"));
            Provider::Other(kind.to_string())
        };
        providers.insert(name, provider);
    }
    let default_access_logging = m
        .default_providers
        .as_ref()
        .map(|d| d.access_logging.clone())
        .unwrap_or_default();
    for (i, n) in default_access_logging.iter().enumerate() {
        if n != "envoy" && !providers.contains_key(n) {
            c.error(
                &p.key("defaultProviders").key("accessLogging").idx(i),
                format!("unknown provider {n:?}"),
            );
        }
    }
    let outbound = m
        .outbound_traffic_policy
        .as_ref()
        .and_then(|o| parse_outbound(c, &p.key("outboundTrafficPolicy").key("mode"), &o.mode));
    let path_normalization = m
        .path_normalization
        .as_ref()
        .and_then(|n| n.normalization.as_deref())
        .map_or(PathNormalization::Base, |v| {
            parse_path_normalization(c, &p.key("pathNormalization").key("normalization"), v)
        });
    MeshSettings {
        access_log_file,
        envoy_provider,
        providers,
        default_access_logging,
        outbound,
        path_normalization,
    }
}

fn parse_path_normalization(c: &mut Checker, p: &FieldPath, v: &str) -> PathNormalization {
    match v {
        "DEFAULT" | "BASE" => PathNormalization::Base,
        "MERGE_SLASHES" => PathNormalization::MergeSlashes,
        "DECODE_AND_MERGE_SLASHES" => PathNormalization::DecodeAndMergeSlashes,
        "NONE" => {
            c.warn(
                p,
                "NONE routes on the path as sent: /public/../admin matches prefix /public, and a backend that normalizes serves /admin",
            );
            PathNormalization::None
        }
        o => {
            c.error(
                p,
                format!(
                    "unknown value {o:?}; expected NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES"
                ),
            );
            PathNormalization::Base
        }
    }
}
