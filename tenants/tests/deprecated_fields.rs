//! Fields Istio still applies though they are deprecated or rarely used, applied as Istio
//! applies them (not only warned about): `mirrorPercent`, `maxEjectionPercent: 0`,
//! `consecutiveLocalOriginFailures: 0`, `loadBalancer.warmup` and `warmupDurationSecs`; one it
//! no longer reads (`consecutiveErrors`) said to do nothing; and a WorkloadEntry a STATIC
//! ServiceEntry cannot use, said rather than dropped in silence; `retryBudget` with its
//! documented defaults; `proxyProtocol`; `tunnel`.

use std::time::Duration;

use tenants::model::{
    OutlierDetection, PortPolicy, ProxyVersion, RetryBudget, TrafficPolicy, Tunnel, Warmup,
};
use tenants::{LoadOptions, Severity, SourceFile, load_standalone};

fn dr(policy: &str) -> (Option<TrafficPolicy>, Vec<String>) {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d}}\nspec:\n  host: api.example.com\n  trafficPolicy:\n{policy}"
    );
    let ns = load_standalone(&text, "dr.yaml");
    let errors: Vec<String> = ns
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let warnings = ns.diagnostics.iter().map(|d| d.to_string()).collect();
    let policy = ns
        .objects
        .destination_rules
        .first()
        .and_then(|d| d.policy.clone());
    (policy, warnings)
}

fn base(policy: &str) -> (PortPolicy, Vec<String>) {
    let (p, w) = dr(policy);
    (p.expect("a policy").base, w)
}

fn outlier(od: &str) -> OutlierDetection {
    base(&format!("    outlierDetection: {od}\n"))
        .0
        .outlier_detection
        .expect("outlier detection")
}

#[test]
fn consecutive_errors_does_nothing_as_in_istio_and_says_so() {
    // Istio's applyOutlierDetection no longer reads it: Envoy's defaults stay.
    let od = outlier("{consecutiveErrors: 3}");
    assert_eq!((od.consecutive_gateway, od.consecutive_5xx), (0, 5));
    let od = outlier("{consecutiveErrors: 3, consecutiveGatewayErrors: 2}");
    assert_eq!((od.consecutive_gateway, od.consecutive_5xx), (2, 5));
    let (_, warnings) = base("    outlierDetection: {consecutiveErrors: 3}\n");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("consecutiveErrors is deprecated and has no effect")),
        "{warnings:#?}"
    );
}

#[test]
fn local_origin_failures_split_with_envoys_default_count() {
    let od = outlier("{splitExternalLocalOriginErrors: true}");
    assert!(od.split_local_origin);
    assert_eq!(od.consecutive_local_origin, None);
    let od = outlier("{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 0}");
    assert_eq!(od.consecutive_local_origin, None, "0 leaves Envoy's 5");
    let od = outlier("{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}");
    assert_eq!(od.consecutive_local_origin, Some(2));
    assert!(!outlier("{interval: 1s}").split_local_origin);
}

#[test]
fn max_ejection_percent_zero_leaves_envoys_default() {
    assert_eq!(outlier("{maxEjectionPercent: 0}").max_ejection_percent, 10);
    assert_eq!(outlier("{maxEjectionPercent: 50}").max_ejection_percent, 50);
}

#[test]
fn warmup_is_applied_with_istios_defaults() {
    let (p, _) = base("    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s}}\n");
    assert_eq!(
        p.warmup,
        Some(Warmup {
            duration: Duration::from_secs(30),
            minimum_percent: 10.0,
            aggression: 1.0,
        })
    );
    let (p, _) =
        base("    loadBalancer: {warmup: {duration: 1m, minimumPercent: 25, aggression: 2}}\n");
    assert_eq!(
        p.warmup,
        Some(Warmup {
            duration: Duration::from_secs(60),
            minimum_percent: 25.0,
            aggression: 2.0,
        })
    );
    let (p, w) = base("    loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 45s}\n");
    assert_eq!(p.warmup.map(|w| w.duration), Some(Duration::from_secs(45)));
    assert!(
        w.iter()
            .any(|w| w.contains("warmupDurationSecs is deprecated")),
        "{w:#?}"
    );
    // Envoy's slow start is for ROUND_ROBIN and LEAST_REQUEST: elsewhere it is said to do nothing.
    let (p, w) = base("    loadBalancer: {simple: RANDOM, warmup: {duration: 30s}}\n");
    assert_eq!(p.warmup, None);
    assert!(
        w.iter().any(|w| w.contains("warmup has no effect")),
        "{w:#?}"
    );
}

#[test]
fn warmup_layers_with_its_load_balancer() {
    let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api.example.com\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s}}\n  subsets:\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy: {loadBalancer: {simple: RANDOM}}\n  - name: v3\n    labels: {version: v3}\n    trafficPolicy: {connectionPool: {tcp: {maxConnections: 5}}}\n";
    let ns = load_standalone(text, "dr.yaml");
    assert!(!ns.has_errors(), "{:#?}", ns.diagnostics);
    let d = &ns.objects.destination_rules[0];
    let effective = |subset: &str| {
        TrafficPolicy::effective(
            d.policy.as_ref(),
            d.subset(subset).and_then(|s| s.policy.as_ref()),
            80,
        )
    };
    // A subset's own loadBalancer replaces the whole of it, warmup included.
    assert_eq!(effective("v2").warmup, None);
    // One that does not set it keeps the top level's.
    assert_eq!(
        effective("v3").warmup.map(|w| w.duration),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn mirror_percent_applies_when_mirror_percentage_is_absent() {
    let vs = |extra: &str| {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v}}\nspec:\n  hosts: [web.example.com]\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: a.example.com}}}}]\n    mirror: {{host: b.example.com}}\n{extra}"
        );
        let ns = load_standalone(&text, "vs.yaml");
        assert!(!ns.has_errors(), "{:#?}", ns.diagnostics);
        ns.objects.virtual_services[0].http[0].mirrors[0].percentage
    };
    assert_eq!(vs(""), 100.0);
    assert_eq!(vs("    mirrorPercent: 0\n"), 0.0);
    assert_eq!(vs("    mirrorPercent: 25\n"), 25.0);
    assert_eq!(
        vs("    mirrorPercent: 25\n    mirrorPercentage: {value: 5.5}\n"),
        5.5
    );
}

#[test]
fn a_dns_named_workload_entry_under_a_static_service_entry_is_reported() {
    let files = [
        (
            "gatehouse.yaml",
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: appliance}\nspec:\n  components:\n    ingressGateways:\n    - name: public-gw\n      label: {istio: public-gw}\n      k8s: {service: {ports: [{name: http, port: 80, targetPort: 18080}]}}\n---\napiVersion: gatehouse.dev/v1\nkind: Tenant\nmetadata: {name: team-a}\nspec: {hosts: [\"web.example.com\"], gateways: [public-gw]}\n",
        ),
        (
            "tenants/team-a/services.yaml",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api}\nspec:\n  hosts: [api.team-a.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: api}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: by-ip}\nspec: {address: 127.0.0.1, labels: {app: api}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: by-name}\nspec: {address: vm1.example.com, labels: {app: api}}\n",
        ),
    ];
    let sources: Vec<SourceFile> = files
        .iter()
        .map(|(p, y)| SourceFile {
            path: (*p).into(),
            bytes: y.as_bytes().to_vec(),
        })
        .collect();
    let out = tenants::build(
        &tenants::load(&sources, &LoadOptions::default()),
        "test",
        None,
    )
    .expect("builds");
    let found: Vec<String> = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning && d.to_string().contains("resolution STATIC"))
        .map(|d| d.to_string())
        .collect();
    assert_eq!(found.len(), 1, "{:#?}", out.diagnostics);
    assert!(found[0].contains("by-name"), "{}", found[0]);
    assert!(
        found[0].contains("\"vm1.example.com\" is a DNS name"),
        "{}",
        found[0]
    );
}

#[test]
fn retry_budget_has_its_defaults_and_is_kept_by_port_level_settings() {
    let (p, _) = dr(
        "    retryBudget: {}\n    portLevelSettings:\n    - port: {number: 8080}\n      connectionPool: {tcp: {maxConnections: 5}}\n",
    );
    let p = p.expect("a policy");
    let default = Some(RetryBudget {
        percent: 20.0,
        min_concurrency: 3,
    });
    assert_eq!(p.base.retry_budget, default);
    // A port-level entry has no retryBudget of its own: the policy's stays.
    let at_8080 = TrafficPolicy::effective(Some(&p), None, 8080);
    assert_eq!(at_8080.retry_budget, default);
    assert!(at_8080.connection_pool.is_some());
    // A subset's budget replaces the top level's.
    let (sub, _) = dr("    retryBudget: {percent: 5.5, minRetryConcurrency: 1}\n");
    let merged = TrafficPolicy::effective(Some(&p), sub.as_ref(), 80);
    assert_eq!(
        merged.retry_budget,
        Some(RetryBudget {
            percent: 5.5,
            min_concurrency: 1
        })
    );
    let ns = load_standalone(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: a.example.com\n  trafficPolicy:\n    retryBudget: {percent: 120}\n",
        "dr.yaml",
    );
    let all: Vec<String> = ns.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        all.iter().any(|d| d.contains("error: default/DestinationRule/d: spec.trafficPolicy.retryBudget.percent: percent must be in range [0, 100] (it is 120)")),
        "{all:#?}"
    );
}

#[test]
fn proxy_protocol_defaults_to_version_1_and_is_kept_by_port_level_settings() {
    let (p, _) = dr(
        "    proxyProtocol: {}\n    portLevelSettings:\n    - port: {number: 8080}\n      connectionPool: {tcp: {maxConnections: 5}}\n",
    );
    let p = p.expect("a policy");
    assert_eq!(p.base.proxy_protocol, Some(ProxyVersion::V1));
    assert_eq!(
        TrafficPolicy::effective(Some(&p), None, 8080).proxy_protocol,
        Some(ProxyVersion::V1)
    );
    let (v2, _) = dr("    proxyProtocol: {version: V2}\n");
    assert_eq!(
        TrafficPolicy::effective(Some(&p), v2.as_ref(), 80).proxy_protocol,
        Some(ProxyVersion::V2),
        "a subset's setting replaces the top level's"
    );
    let ns = load_standalone(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: a.example.com\n  trafficPolicy:\n    proxyProtocol: {version: V3}\n",
        "dr.yaml",
    );
    let all: Vec<String> = ns.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        all.iter().any(|d| d.contains(
            "spec.trafficPolicy.proxyProtocol.version: unknown value \"V3\"; expected V1 or V2"
        )),
        "{all:#?}"
    );
}

#[test]
fn tunnel_is_validated_as_istio_does_and_post_is_not_offered_yet() {
    let (p, _) = dr("    tunnel: {targetHost: proxy.example.com, targetPort: 3128}\n");
    assert_eq!(
        p.expect("a policy").base.tunnel,
        Some(Tunnel {
            target_host: "proxy.example.com".into(),
            target_port: 3128
        })
    );
    for (tunnel, want) in [
        (
            "{protocol: POST, targetHost: a.example.com, targetPort: 1}",
            "spec.trafficPolicy.tunnel.protocol: not supported yet: tunnel protocol POST (CONNECT is)",
        ),
        (
            "{protocol: UDP, targetHost: a.example.com, targetPort: 1}",
            "tunnel protocol must be \"CONNECT\" or \"POST\" (it is \"UDP\")",
        ),
        (
            "{targetHost: \"bad host\", targetPort: 1}",
            "spec.trafficPolicy.tunnel.targetHost: tunnel target host must be valid FQDN or IP address",
        ),
        (
            "{targetHost: 10.0.0.1}",
            "spec.trafficPolicy.tunnel.targetPort: tunnel target port is required",
        ),
    ] {
        let ns = load_standalone(
            &format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d}}\nspec:\n  host: a.example.com\n  trafficPolicy:\n    tunnel: {tunnel}\n"
            ),
            "dr.yaml",
        );
        let all: Vec<String> = ns.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(all.iter().any(|d| d.contains(want)), "{tunnel}: {all:#?}");
    }
    let ns = load_standalone(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: a.example.com\n  trafficPolicy:\n    tunnel: {targetHost: 10.0.0.1, targetPort: 1}\n    proxyProtocol: {}\n",
        "dr.yaml",
    );
    let all: Vec<String> = ns.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        all.iter()
            .any(|d| d.contains("tunnel and proxyProtocol cannot both be set")),
        "{all:#?}"
    );
    // Across levels too: the subset's layers over the top level's.
    let ns = load_standalone(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: a.example.com\n  trafficPolicy:\n    tunnel: {targetHost: 10.0.0.1, targetPort: 1}\n  subsets:\n  - name: s\n    labels: {v: s}\n    trafficPolicy: {proxyProtocol: {}}\n",
        "dr.yaml",
    );
    let all: Vec<String> = ns.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        all.iter().any(|d| d.contains("spec.subsets[0].trafficPolicy: tunnel and proxyProtocol cannot both be set (one at the top level, the other in this subset)")),
        "{all:#?}"
    );
}
