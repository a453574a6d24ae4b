//! `DestinationRule`: subsets and upstream traffic policy.
//! Rules from Istio's `ValidateDestinationRule`, `validateTrafficPolicy`,
//! `validateConnectionPool`, `validateOutlierDetection`, `validateLoadBalancer`, `ValidateTLS`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Checker, ExportTo, Meta};
use crate::diag::FieldPath;
use crate::raw;
use crate::types::{Host, is_dns1123_label};

/// A validated DestinationRule.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationRule {
    /// Identity.
    pub meta: Meta,
    /// `host`, short name expanded.
    pub host: Host,
    /// `trafficPolicy`.
    pub policy: Option<TrafficPolicy>,
    /// `subsets`.
    pub subsets: Vec<Subset>,
    /// `exportTo`.
    pub export_to: ExportTo,
}

/// A named subset of a service's endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct Subset {
    /// `name`.
    pub name: String,
    /// `labels`: endpoints must carry all of them.
    pub labels: BTreeMap<String, String>,
    /// `trafficPolicy`: overrides the top-level policy field by field.
    pub policy: Option<TrafficPolicy>,
}

/// The four policy fields that layer (subset over top level; port level replaces).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PortPolicy {
    /// `loadBalancer`.
    pub load_balancer: Option<LoadBalancer>,
    /// `loadBalancer.warmup` (part of `loadBalancer`: it layers with it).
    pub warmup: Option<Warmup>,
    /// `connectionPool`.
    pub connection_pool: Option<ConnectionPool>,
    /// `outlierDetection`.
    pub outlier_detection: Option<OutlierDetection>,
    /// `tls`.
    pub tls: Option<ClientTls>,
    /// `retryBudget` (a field of the whole policy: a port-level entry keeps its policy's).
    pub retry_budget: Option<RetryBudget>,
    /// `proxyProtocol`: the PROXY protocol header each upstream connection starts with (a
    /// field of the whole policy, as `retryBudget`).
    pub proxy_protocol: Option<ProxyVersion>,
    /// `tunnel`: TCP carried through an HTTP CONNECT proxy (the endpoints) to a target (a
    /// field of the whole policy, as `retryBudget`; TCP and TLS routes only, as in Istio).
    pub tunnel: Option<Tunnel>,
}

/// `tunnel` with `protocol: CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    /// `targetHost`: a name or an IP address.
    pub target_host: String,
    /// `targetPort`.
    pub target_port: u16,
}

/// `proxyProtocol.version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 ...`), Istio's default.
    V1,
    /// The binary header.
    V2,
}

/// `TrafficPolicy.retryBudget`: concurrent retries allowed to the cluster, as a share of
/// the requests in flight and waiting, never fewer than a floor (Envoy's
/// `CircuitBreakers.Thresholds.RetryBudget`, which replaces `maxRetries`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudget {
    /// `percent` (default 20).
    pub percent: f64,
    /// `minRetryConcurrency` (default 3; 0 means the default, as Istio reads it).
    pub min_concurrency: u32,
}

/// `TrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrafficPolicy {
    /// The top-level fields.
    pub base: PortPolicy,
    /// `portLevelSettings`: replaces `base` for that port.
    pub port_level: Vec<(u16, PortPolicy)>,
}

/// `LoadBalancerSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancer {
    /// Istio's default: the fewer in-flight requests, the likelier (power of two choices).
    LeastRequest,
    /// In turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// To the address the client asked for (not meaningful on a gateway).
    Passthrough,
    /// Sticky by a hash of a request attribute.
    ConsistentHash(HashKey),
}

/// `loadBalancer.warmup`: Envoy's slow start. An endpoint that joined the cluster less than
/// `duration` ago gets `weight × max(minimumPercent, (age / duration)^(1 / aggression))`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Warmup {
    /// `duration`: how long an endpoint warms up.
    pub duration: Duration,
    /// `minimumPercent` (default 10): the least share of its weight a new endpoint gets.
    pub minimum_percent: f64,
    /// `aggression` (default 1: linear).
    pub aggression: f64,
}

/// What a consistent hash is computed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HashKey {
    /// A request header.
    Header(String),
    /// A cookie; generated with `ttl` when absent and `ttl` is set.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Lifetime of a generated cookie.
        ttl: Option<Duration>,
        /// `attributes` of a generated cookie (`name`, `value`; an empty value is a flag such
        /// as `Secure`).
        attributes: Vec<(String, String)>,
    },
    /// The client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// `ConnectionPoolSettings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`.
    pub max_connections: Option<u32>,
    /// `tcp.connectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `tcp.tcpKeepalive` (time, interval, probes).
    pub tcp_keepalive: Option<(Option<Duration>, Option<Duration>, Option<u32>)>,
    /// `tcp.maxConnectionDuration`.
    pub max_connection_duration: Option<Duration>,
    /// `tcp.idleTimeout` (`Some(0)`: disabled).
    pub tcp_idle_timeout: Option<Duration>,
    /// `http.http1MaxPendingRequests`.
    pub http1_max_pending_requests: Option<u32>,
    /// `http.http2MaxRequests`.
    pub http2_max_requests: Option<u32>,
    /// `http.maxRequestsPerConnection`.
    pub max_requests_per_connection: Option<u32>,
    /// `http.maxRetries`.
    pub max_retries: Option<u32>,
    /// `http.idleTimeout`.
    pub http_idle_timeout: Option<Duration>,
    /// `http.h2UpgradePolicy: UPGRADE`.
    pub h2_upgrade: Option<bool>,
    /// `http.useClientProtocol`.
    pub use_client_protocol: bool,
    /// `http.maxConcurrentStreams`.
    pub max_concurrent_streams: Option<u32>,
    /// `http.http2KeepAlive` (interval, timeout).
    pub http2_keep_alive: Option<(Duration, Duration)>,
}

/// `OutlierDetection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors` (Envoy default 5; 0 disables).
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors` (0 disables).
    pub consecutive_gateway: u32,
    /// `consecutiveLocalOriginFailures` (with `splitExternalLocalOriginErrors`; Envoy's
    /// default 5).
    pub consecutive_local_origin: Option<u32>,
    /// `splitExternalLocalOriginErrors`: connect failures, resets and timeouts count on their
    /// own, not as gateway errors.
    pub split_local_origin: bool,
    /// `interval` (default 10s).
    pub interval: Duration,
    /// `baseEjectionTime` (default 30s).
    pub base_ejection_time: Duration,
    /// `maxEjectionPercent` (default 10).
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (default 0).
    pub min_health_percent: u32,
}

/// `ClientTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plaintext.
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// TLS with a client certificate.
    Mutual,
    /// Mesh mTLS; without a mesh identity the connection stays plaintext.
    IstioMutual,
}

/// `ClientTLSSettings`: TLS origination to the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientTls {
    /// `mode`.
    pub mode: ClientTlsMode,
    /// `credentialName`: `<credentials>/<namespace>/<name>/` with tls.crt, tls.key, ca.crt.
    pub credential_name: Option<String>,
    /// `clientCertificate` (platform only).
    pub client_certificate: Option<String>,
    /// `privateKey` (platform only).
    pub private_key: Option<String>,
    /// `caCertificates` (platform only); system roots when unset.
    pub ca_certificates: Option<String>,
    /// `caCrl` (platform only): revoked server certificates.
    pub ca_crl: Option<String>,
    /// `sni`: empty means the request's host.
    pub sni: Option<String>,
    /// `subjectAltNames`: empty means check against the SNI host.
    pub subject_alt_names: Vec<String>,
    /// `insecureSkipVerify`.
    pub insecure_skip_verify: bool,
}

const LB_SIMPLE: &[(&str, Option<LoadBalancer>)] = &[
    ("UNSPECIFIED", None),
    ("LEAST_REQUEST", Some(LoadBalancer::LeastRequest)),
    ("LEAST_CONN", Some(LoadBalancer::LeastRequest)),
    ("ROUND_ROBIN", Some(LoadBalancer::RoundRobin)),
    ("RANDOM", Some(LoadBalancer::Random)),
    ("PASSTHROUGH", Some(LoadBalancer::Passthrough)),
];

const CLIENT_TLS_MODES: &[(&str, ClientTlsMode)] = &[
    ("DISABLE", ClientTlsMode::Disable),
    ("SIMPLE", ClientTlsMode::Simple),
    ("MUTUAL", ClientTlsMode::Mutual),
    ("ISTIO_MUTUAL", ClientTlsMode::IstioMutual),
];

// === impl DestinationRule ===

impl DestinationRule {
    /// Parses and validates a DestinationRule.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::DestinationRuleSpec) -> Self {
        let sp = FieldPath::root().key("spec");
        let host = match spec.host.as_deref() {
            None | Some("") => {
                c.error(&sp.key("host"), "host is required");
                Host::any()
            }
            Some(h) => match Host::parse_wildcard_domain(h) {
                Ok(h) => c.expand(h),
                Err(e) => {
                    c.error(&sp.key("host"), e.to_string());
                    Host::any()
                }
            },
        };
        c.unsupported(&sp.key("workloadSelector"), &spec.workload_selector);
        let policy = spec
            .traffic_policy
            .as_ref()
            .map(|tp| parse_policy(c, &sp.key("trafficPolicy"), tp));
        let mut subsets: Vec<Subset> = Vec::new();
        for (i, s) in spec.subsets.iter().enumerate() {
            let p = sp.key("subsets").idx(i);
            let name = s.name.clone().unwrap_or_default();
            if !is_dns1123_label(&name) {
                c.error(
                    &p.key("name"),
                    format!("subset name {name:?} is not a DNS-1123 label"),
                );
            }
            if subsets.iter().any(|o| o.name == name) {
                c.error(&p.key("name"), format!("duplicate subset name {name:?}"));
                continue;
            }
            super::parse_labels(c, &p.key("labels"), &s.labels);
            let sub_policy = s
                .traffic_policy
                .as_ref()
                .map(|tp| parse_policy(c, &p.key("trafficPolicy"), tp));
            // The subset's policy layers over the top level's: one level's tunnel and the
            // other's PROXY header would meet in one connection (the header sent to the
            // proxy), which the per-level check cannot see.
            if let (Some(top), Some(sub)) = (&policy, &sub_policy) {
                let clash = top.base.tunnel.is_some() && sub.base.proxy_protocol.is_some()
                    || top.base.proxy_protocol.is_some() && sub.base.tunnel.is_some();
                if clash {
                    c.error(
                        &p.key("trafficPolicy"),
                        "tunnel and proxyProtocol cannot both be set (one at the top level, the other in this subset)",
                    );
                }
            }
            subsets.push(Subset {
                name,
                labels: s.labels.clone(),
                policy: sub_policy,
            });
        }
        let export_to = ExportTo::parse(c, &sp.key("exportTo"), &spec.export_to, false);
        Self {
            meta,
            host,
            policy,
            subsets,
            export_to,
        }
    }

    /// The subset called `name`.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }
}

// === impl TrafficPolicy ===

impl TrafficPolicy {
    /// Istio's layering: port-level settings replace the top level for that port; a subset's
    /// policy then overrides field by field (`GetPortLevelTrafficPolicy`,
    /// `MergeSubsetTrafficPolicy`).
    pub fn effective(top: Option<&Self>, subset: Option<&Self>, port: u16) -> PortPolicy {
        let for_port = |p: &Self| -> PortPolicy {
            p.port_level
                .iter()
                .find(|(n, _)| *n == port)
                .map(|(_, pp)| PortPolicy {
                    retry_budget: p.base.retry_budget,
                    proxy_protocol: p.base.proxy_protocol,
                    tunnel: p.base.tunnel.clone(),
                    ..pp.clone()
                })
                .unwrap_or_else(|| p.base.clone())
        };
        let base = top.map(for_port).unwrap_or_default();
        let Some(sub) = subset else {
            return base;
        };
        let s = for_port(sub);
        // `warmup` is a field of `loadBalancer`: whichever policy gives the one gives both.
        let (load_balancer, warmup) = if s.load_balancer.is_some() || s.warmup.is_some() {
            (s.load_balancer, s.warmup)
        } else {
            (base.load_balancer, base.warmup)
        };
        PortPolicy {
            load_balancer,
            warmup,
            connection_pool: s.connection_pool.or(base.connection_pool),
            outlier_detection: s.outlier_detection.or(base.outlier_detection),
            tls: s.tls.or(base.tls),
            retry_budget: s.retry_budget.or(base.retry_budget),
            proxy_protocol: s.proxy_protocol.or(base.proxy_protocol),
            tunnel: s.tunnel.or(base.tunnel),
        }
    }
}

fn parse_policy(c: &mut Checker, p: &FieldPath, tp: &raw::TrafficPolicy) -> TrafficPolicy {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        c.error(p, "traffic policy must have at least one field");
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        c.error(p, "tunnel and proxyProtocol cannot both be set");
    }
    let mut base = parse_port_policy(
        c,
        p,
        &tp.load_balancer,
        &tp.connection_pool,
        &tp.outlier_detection,
        &tp.tls,
    );
    base.retry_budget = tp
        .retry_budget
        .as_ref()
        .and_then(|rb| parse_retry_budget(c, &p.key("retryBudget"), rb));
    base.tunnel = tp
        .tunnel
        .as_ref()
        .and_then(|t| parse_tunnel(c, &p.key("tunnel"), t));
    base.proxy_protocol = tp
        .proxy_protocol
        .as_ref()
        .and_then(|pp| match pp.version.as_deref() {
            None | Some("V1") => Some(ProxyVersion::V1),
            Some("V2") => Some(ProxyVersion::V2),
            Some(o) => {
                c.error(
                    &p.key("proxyProtocol").key("version"),
                    format!("unknown value {o:?}; expected V1 or V2"),
                );
                None
            }
        });
    let mut port_level = Vec::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = p.key("portLevelSettings").idx(i);
        let Some(n) = pl.port.as_ref().and_then(|p| p.number) else {
            c.error(&pp.key("port"), "portLevelSettings must specify port");
            continue;
        };
        let Some(port) = c.port(&pp.key("port").key("number"), n) else {
            continue;
        };
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            c.error(&pp, "port traffic policy must have at least one field");
        }
        let policy = parse_port_policy(
            c,
            &pp,
            &pl.load_balancer,
            &pl.connection_pool,
            &pl.outlier_detection,
            &pl.tls,
        );
        port_level.push((port, policy));
    }
    TrafficPolicy { base, port_level }
}

/// Istio's `validateTunnelSettings`; `POST` (data in a request body) is not offered yet.
fn parse_tunnel(c: &mut Checker, p: &FieldPath, t: &raw::TunnelSettings) -> Option<Tunnel> {
    match t.protocol.as_deref() {
        None | Some("" | "CONNECT") => {}
        Some("POST") => {
            c.error(
                &p.key("protocol"),
                "not supported yet: tunnel protocol POST (CONNECT is)",
            );
            return None;
        }
        Some(o) => {
            c.error(
                &p.key("protocol"),
                format!("tunnel protocol must be \"CONNECT\" or \"POST\" (it is {o:?})"),
            );
            return None;
        }
    }
    let host = t.target_host.clone().unwrap_or_default();
    if host.parse::<std::net::IpAddr>().is_err()
        && let Err(e) = crate::types::validate_fqdn(&host)
    {
        c.error(
            &p.key("targetHost"),
            format!("tunnel target host must be valid FQDN or IP address: {e}"),
        );
        return None;
    }
    let port = match t.target_port {
        Some(n) => c.port(&p.key("targetPort"), n)?,
        None => {
            c.error(&p.key("targetPort"), "tunnel target port is required");
            return None;
        }
    };
    Some(Tunnel {
        target_host: host,
        target_port: port,
    })
}

fn parse_retry_budget(
    c: &mut Checker,
    p: &FieldPath,
    rb: &raw::RetryBudget,
) -> Option<RetryBudget> {
    c.unsupported(&p.key("budgetInterval"), &rb.budget_interval);
    let percent = rb.percent.unwrap_or(20.0);
    if !(0.0..=100.0).contains(&percent) {
        c.error(
            &p.key("percent"),
            format!("percent must be in range [0, 100] (it is {percent})"),
        );
        return None;
    }
    let min_concurrency = match c.count(&p.key("minRetryConcurrency"), rb.min_retry_concurrency) {
        Some(0) | None => 3,
        Some(n) => n,
    };
    Some(RetryBudget {
        percent,
        min_concurrency,
    })
}

fn parse_port_policy(
    c: &mut Checker,
    p: &FieldPath,
    lb: &Option<raw::LoadBalancerSettings>,
    pool: &Option<raw::ConnectionPoolSettings>,
    od: &Option<raw::OutlierDetection>,
    tls: &Option<raw::ClientTlsSettings>,
) -> PortPolicy {
    PortPolicy {
        load_balancer: lb
            .as_ref()
            .and_then(|l| parse_lb(c, &p.key("loadBalancer"), l)),
        warmup: lb
            .as_ref()
            .and_then(|l| parse_warmup(c, &p.key("loadBalancer"), l)),
        connection_pool: pool
            .as_ref()
            .map(|cp| parse_pool(c, &p.key("connectionPool"), cp)),
        outlier_detection: od
            .as_ref()
            .map(|o| parse_outlier(c, &p.key("outlierDetection"), o)),
        tls: tls
            .as_ref()
            .and_then(|t| parse_client_tls(c, &p.key("tls"), t)),
        retry_budget: None,
        proxy_protocol: None,
        tunnel: None,
    }
}

/// `warmup`, or the deprecated `warmupDurationSecs` (a duration, with the defaults).
fn parse_warmup(c: &mut Checker, p: &FieldPath, lb: &raw::LoadBalancerSettings) -> Option<Warmup> {
    let legacy = lb.warmup_duration_secs.as_ref().and_then(|v| {
        let lp = p.key("warmupDurationSecs");
        c.warn(&lp, "warmupDurationSecs is deprecated; use warmup.duration");
        match v.as_str() {
            Some(s) => c.duration(&lp, &Some(s.to_string())),
            None => {
                c.error(
                    &lp,
                    format!("warmupDurationSecs {v} must be a duration such as \"30s\""),
                );
                None
            }
        }
    });
    let w = match &lb.warmup {
        Some(w) => {
            let wp = p.key("warmup");
            if w.duration.is_none() {
                c.error(&wp.key("duration"), "warmup duration is required");
            }
            let duration = c.duration(&wp.key("duration"), &w.duration);
            let minimum_percent = w.minimum_percent.unwrap_or(10.0);
            if !(0.0..=100.0).contains(&minimum_percent) {
                c.error(
                    &wp.key("minimumPercent"),
                    format!("minimumPercent {minimum_percent} must be between 0 and 100"),
                );
            }
            let aggression = w.aggression.unwrap_or(1.0);
            if aggression <= 0.0 || aggression.is_nan() {
                c.error(
                    &wp.key("aggression"),
                    format!("aggression {aggression} must be greater than 0"),
                );
            }
            Warmup {
                duration: duration?,
                minimum_percent: minimum_percent.clamp(0.0, 100.0),
                aggression: if aggression > 0.0 { aggression } else { 1.0 },
            }
        }
        None => Warmup {
            duration: legacy?,
            minimum_percent: 10.0,
            aggression: 1.0,
        },
    };
    // Envoy's slow start exists for ROUND_ROBIN and LEAST_REQUEST only.
    if lb.consistent_hash.is_some()
        || lb.simple.as_deref().is_some_and(|s| {
            !matches!(
                s,
                "ROUND_ROBIN" | "LEAST_REQUEST" | "LEAST_CONN" | "UNSPECIFIED"
            )
        })
    {
        c.warn(
            &p.key("warmup"),
            "warmup has no effect here: it applies to ROUND_ROBIN and LEAST_REQUEST only",
        );
        return None;
    }
    (!w.duration.is_zero()).then_some(w)
}

/// `httpCookie.attributes`: `[{name, value}]`, each written into the generated `Set-Cookie` as
/// Envoy writes them (`; name=value`, or `; name` without a value). A name must be a token and
/// a value must not end the attribute early (no `;`, no control bytes).
fn cookie_attributes(
    c: &mut Checker,
    p: &FieldPath,
    v: &Option<serde_json::Value>,
) -> Vec<(String, String)> {
    let Some(v) = v else { return Vec::new() };
    let Some(list) = v.as_array() else {
        c.error(p, "attributes must be a list of {name, value}");
        return Vec::new();
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let mut out = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let ap = p.idx(i);
        let name = a.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let value = a.get("value").and_then(|n| n.as_str()).unwrap_or_default();
        let known = a
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "name" || k == "value"))
            && a.get("value").is_none_or(serde_json::Value::is_string);
        if !known {
            c.error(
                &ap,
                "a cookie attribute has only name and value, both strings",
            );
        } else if !token(name) {
            c.error(
                &ap.key("name"),
                format!("cookie attribute name {name:?} must be a token"),
            );
        } else if !value
            .bytes()
            .all(|b| (b.is_ascii_graphic() && b != b';') || b == b' ')
        {
            c.error(
                &ap.key("value"),
                format!("cookie attribute value {value:?} must be visible ASCII without ';'"),
            );
        } else {
            out.push((name.to_string(), value.to_string()));
        }
    }
    out
}

fn parse_lb(
    c: &mut Checker,
    p: &FieldPath,
    lb: &raw::LoadBalancerSettings,
) -> Option<LoadBalancer> {
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        c.error(
            p,
            "localityLbSetting and zoneAwareLbSetting cannot both be set",
        );
    }
    if lb.locality_lb_setting.is_some() {
        c.warn(
            &p.key("localityLbSetting"),
            "has no effect: gatehouse endpoints have no locality",
        );
    }
    if lb.zone_aware_lb_setting.is_some() {
        c.warn(
            &p.key("zoneAwareLbSetting"),
            "has no effect: gatehouse endpoints have no locality",
        );
    }
    let simple = match &lb.simple {
        Some(s) => c.enumeration(&p.key("simple"), &Some(s.clone()), LB_SIMPLE, None)?,
        None => None,
    };
    if let Some(LoadBalancer::Passthrough) = simple {
        c.error(
            &p.key("simple"),
            format!(
                "not supported yet: {} PASSTHROUGH (original destination)",
                p.key("simple")
            ),
        );
    }
    let hash = lb.consistent_hash.as_ref().and_then(|ch| {
        let hp = p.key("consistentHash");
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            c.error(&hp, "minimumRingSize cannot be set together with ringHash or maglev");
        } else if ch.minimum_ring_size.is_some() {
            c.warn(&hp.key("minimumRingSize"), "minimumRingSize is deprecated and has no effect here");
        }
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            c.warn(&hp, "ringHash/maglev tuning has no effect: gatehouse uses rendezvous hashing");
        }
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip == Some(true),
            ch.http_query_parameter_name.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if keys != 1 {
            c.error(&hp, "consistentHash needs exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName");
            return None;
        }
        if let Some(h) = &ch.http_header_name {
            return Some(HashKey::Header(h.to_ascii_lowercase()));
        }
        if let Some(q) = &ch.http_query_parameter_name {
            return Some(HashKey::QueryParameter(q.clone()));
        }
        if let Some(ck) = &ch.http_cookie {
            let cp = hp.key("httpCookie");
            let name = ck.name.clone().unwrap_or_default();
            if name.is_empty() {
                c.error(&cp.key("name"), "cookie name is required for consistent hash");
            }
            let attributes = cookie_attributes(c, &cp.key("attributes"), &ck.attributes);
            let ttl = c.duration_or_zero(&cp.key("ttl"), &ck.ttl);
            return Some(HashKey::Cookie {
                attributes,
                name,
                path: ck.path.clone(),
                ttl,
            });
        }
        Some(HashKey::SourceIp)
    });
    if hash.is_some() && simple.is_some() {
        c.error(p, "only one of simple or consistentHash may be set");
    }
    hash.map(LoadBalancer::ConsistentHash).or(simple)
}

fn parse_pool(c: &mut Checker, p: &FieldPath, cp: &raw::ConnectionPoolSettings) -> ConnectionPool {
    if cp.tcp.is_none() && cp.http.is_none() {
        c.error(p, "connection pool must have at least one field");
    }
    let mut out = ConnectionPool::default();
    if let Some(t) = &cp.tcp {
        let tp = p.key("tcp");
        out.max_connections = nonneg(c, &tp.key("maxConnections"), t.max_connections);
        out.connect_timeout = c.duration(&tp.key("connectTimeout"), &t.connect_timeout);
        out.max_connection_duration =
            c.duration(&tp.key("maxConnectionDuration"), &t.max_connection_duration);
        out.tcp_idle_timeout = c.duration_or_zero(&tp.key("idleTimeout"), &t.idle_timeout);
        if let Some(k) = &t.tcp_keepalive {
            let kp = tp.key("tcpKeepalive");
            out.tcp_keepalive = Some((
                c.duration(&kp.key("time"), &k.time),
                c.duration(&kp.key("interval"), &k.interval),
                nonneg(c, &kp.key("probes"), k.probes),
            ));
        }
    }
    if let Some(h) = &cp.http {
        let hp = p.key("http");
        out.http1_max_pending_requests = nonneg(
            c,
            &hp.key("http1MaxPendingRequests"),
            h.http1_max_pending_requests,
        );
        out.http2_max_requests = nonneg(c, &hp.key("http2MaxRequests"), h.http2_max_requests);
        out.max_requests_per_connection = nonneg(
            c,
            &hp.key("maxRequestsPerConnection"),
            h.max_requests_per_connection,
        );
        out.max_retries = nonneg(c, &hp.key("maxRetries"), h.max_retries);
        out.max_concurrent_streams =
            nonneg(c, &hp.key("maxConcurrentStreams"), h.max_concurrent_streams);
        out.http_idle_timeout = c.duration(&hp.key("idleTimeout"), &h.idle_timeout);
        out.use_client_protocol = h.use_client_protocol.unwrap_or(false);
        out.h2_upgrade = match h.h2_upgrade_policy.as_deref() {
            None | Some("DEFAULT") => None,
            Some("UPGRADE") => Some(true),
            Some("DO_NOT_UPGRADE") => Some(false),
            Some(o) => {
                c.error(
                    &hp.key("h2UpgradePolicy"),
                    format!("unknown value {o:?}; expected DEFAULT, DO_NOT_UPGRADE or UPGRADE"),
                );
                None
            }
        };
        if out.h2_upgrade == Some(true) && out.use_client_protocol {
            c.error(
                &hp,
                "useClientProtocol cannot be set together with h2UpgradePolicy: UPGRADE",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            let kp = hp.key("http2KeepAlive");
            match (&ka.interval, &ka.timeout) {
                (Some(_), Some(_)) => {
                    let i = c.duration(&kp.key("interval"), &ka.interval);
                    let t = c.duration(&kp.key("timeout"), &ka.timeout);
                    out.http2_keep_alive = i.zip(t);
                }
                _ => c.error(&kp, "http2KeepAlive requires both interval and timeout"),
            }
        }
    }
    out
}

fn nonneg(c: &mut Checker, p: &FieldPath, v: Option<i64>) -> Option<u32> {
    match v {
        Some(n) if n < 0 => {
            c.error(p, format!("{n} must not be negative"));
            None
        }
        other => c.count(p, other),
    }
}

fn parse_outlier(c: &mut Checker, p: &FieldPath, o: &raw::OutlierDetection) -> OutlierDetection {
    // Istio's `applyOutlierDetection` no longer reads the deprecated `consecutiveErrors`
    // (it once meant gateway errors): it has no effect, and that is said.
    if o.consecutive_errors.is_some() {
        c.warn(
            &p.key("consecutiveErrors"),
            "consecutiveErrors is deprecated and has no effect (Istio ignores it); use consecutiveGatewayErrors or consecutive5xxErrors",
        );
    }
    if o.consecutive_local_origin_failures.is_some()
        && o.split_external_local_origin_errors != Some(true)
    {
        c.error(
            &p.key("consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures requires splitExternalLocalOriginErrors",
        );
    }
    for (f, v) in [
        ("maxEjectionPercent", o.max_ejection_percent),
        ("minHealthPercent", o.min_health_percent),
    ] {
        if let Some(n) = v
            && !(0..=100).contains(&n)
        {
            c.error(&p.key(f), format!("{f} {n} must be between 0 and 100"));
        }
    }
    let consecutive_5xx = nonneg(c, &p.key("consecutive5xxErrors"), o.consecutive_5xx_errors);
    let consecutive_gateway = nonneg(
        c,
        &p.key("consecutiveGatewayErrors"),
        o.consecutive_gateway_errors,
    );
    OutlierDetection {
        consecutive_5xx: consecutive_5xx.unwrap_or(5),
        consecutive_gateway: consecutive_gateway.unwrap_or(0),
        split_local_origin: o.split_external_local_origin_errors == Some(true),
        // Istio passes it only when above 0: `0` leaves Envoy's default, 5.
        consecutive_local_origin: nonneg(
            c,
            &p.key("consecutiveLocalOriginFailures"),
            o.consecutive_local_origin_failures,
        )
        .filter(|n| *n > 0),
        interval: c
            .duration(&p.key("interval"), &o.interval)
            .unwrap_or(Duration::from_secs(10)),
        base_ejection_time: c
            .duration(&p.key("baseEjectionTime"), &o.base_ejection_time)
            .unwrap_or(Duration::from_secs(30)),
        // Istio passes it to Envoy only when above 0: `0` leaves Envoy's default, 10.
        max_ejection_percent: o
            .max_ejection_percent
            .filter(|n| *n > 0)
            .map_or(10, |n| n.clamp(0, 100) as u32),
        min_health_percent: o.min_health_percent.map_or(0, |n| n.clamp(0, 100) as u32),
    }
}

fn parse_client_tls(
    c: &mut Checker,
    p: &FieldPath,
    t: &raw::ClientTlsSettings,
) -> Option<ClientTls> {
    let mode = c.enumeration(
        &p.key("mode"),
        &t.mode,
        CLIENT_TLS_MODES,
        ClientTlsMode::Disable,
    )?;
    for (key, v) in [
        ("clientCertificate", &t.client_certificate),
        ("privateKey", &t.private_key),
        ("caCertificates", &t.ca_certificates),
        ("caCrl", &t.ca_crl),
    ] {
        c.file_path(&p.key(key), v.as_deref());
    }
    let files = t.client_certificate.is_some()
        || t.private_key.is_some()
        || t.ca_certificates.is_some()
        || t.ca_crl.is_some();
    if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
        && t.credential_name.is_some()
        && files
    {
        c.error(p, "credentialName cannot be set together with clientCertificate, privateKey or caCertificates");
    }
    let skip = t.insecure_skip_verify.unwrap_or(false);
    if skip
        && (t.ca_certificates.is_some()
            || t.credential_name.is_some()
            || !t.subject_alt_names.is_empty())
    {
        c.error(
            &p.key("insecureSkipVerify"),
            "insecureSkipVerify cannot be set together with caCertificates, credentialName or subjectAltNames",
        );
    }
    if mode == ClientTlsMode::Mutual
        && t.credential_name.is_none()
        && (t.client_certificate.is_none() || t.private_key.is_none())
    {
        c.error(
            p,
            "MUTUAL TLS needs credentialName, or clientCertificate and privateKey",
        );
    }
    if mode == ClientTlsMode::IstioMutual {
        c.warn(
            &p.key("mode"),
            "ISTIO_MUTUAL has no effect on a gatehouse appliance (no mesh identity): the connection to the upstream is plaintext; use SIMPLE or MUTUAL",
        );
    }
    if c.tenant && files {
        c.error(
            p,
            "tenants reference certificates by credentialName, not by file path",
        );
    }
    if let Some(n) = &t.credential_name
        && !super::valid_credential_name(n)
    {
        c.error(
            &p.key("credentialName"),
            format!("credentialName {n:?} must be a DNS-1123 subdomain"),
        );
    }
    if t.ca_crl.is_some() && t.credential_name.is_some() {
        c.error(
            &p.key("caCrl"),
            "caCrl cannot be set with credentialName; put ca.crl in the credential folder",
        );
    } else if t.ca_crl.is_some() && t.ca_certificates.is_none() {
        c.error(
            &p.key("caCrl"),
            "caCrl needs caCertificates: the system roots are not checked against a CRL",
        );
    }
    Some(ClientTls {
        mode,
        credential_name: t.credential_name.clone(),
        client_certificate: t.client_certificate.clone(),
        private_key: t.private_key.clone(),
        ca_certificates: t.ca_certificates.clone(),
        ca_crl: t.ca_crl.clone(),
        sni: t.sni.clone().filter(|s| !s.is_empty()),
        subject_alt_names: t.subject_alt_names.clone(),
        insecure_skip_verify: skip,
    })
}
