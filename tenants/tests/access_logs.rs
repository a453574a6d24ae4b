//! Access-log policy per (group, tenant), as Istio merges Telemetry resources: root namespace,
//! root with a selector, tenant namespace, tenant with a selector; `meshConfig` switches.

use tenants::snapshot::AccessLogPolicy;
use tenants::{LoadOptions, SourceFile};

const OPERATOR: &str = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: appliance}
spec:
  profile: empty
  meshConfig:
    extensionProviders:
    - name: file
      envoyFileAccessLog: {path: /var/log/gatehouse/access.log}
    - name: otel
      envoyOtelAls: {service: collector.example.internal, port: 4317}
MESH
  components:
    ingressGateways:
    - name: public-gw
      label: {istio: public-gw, tier: edge}
      k8s: {service: {ports: [{name: http, port: 80, targetPort: 18080}]}}
    - name: partner-gw
      label: {istio: partner-gw}
      k8s: {service: {ports: [{name: http, port: 80, targetPort: 18081}]}}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-a}
spec: {hosts: ["a.example.com"], gateways: [public-gw, partner-gw]}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-b}
spec: {hosts: ["b.example.com"], gateways: [public-gw, partner-gw]}
"#;

fn telemetry(name: &str, rule: &str, selector: Option<&str>) -> String {
    let sel = selector.map_or(String::new(), |s| {
        format!("  selector: {{matchLabels: {{{s}}}}}\n")
    });
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}}}\nspec:\n{sel}  accessLogging: [{rule}]\n---\n"
    )
}

/// Builds a repository with `mesh` under `meshConfig` and `(path, yaml)` files; returns the
/// sink names of (group, tenant).
fn sinks(mesh: &str, files: &[(&str, String)]) -> impl Fn(&str, &str) -> Vec<String> + use<> {
    let mut all = vec![SourceFile {
        path: "gatehouse.yaml".into(),
        bytes: OPERATOR.replace("MESH\n", mesh).into_bytes(),
    }];
    for (p, y) in files {
        all.push(SourceFile {
            path: (*p).into(),
            bytes: y.clone().into_bytes(),
        });
    }
    let loaded = tenants::load(&all, &LoadOptions::default());
    let out = tenants::build(&loaded, "test", None).expect("builds");
    let errors: Vec<String> = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == tenants::Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    move |group: &str, tenant: &str| {
        let p: Option<&std::sync::Arc<AccessLogPolicy>> = out
            .snapshot
            .groups
            .get(group)
            .and_then(|g| g.access_logs.get(tenant));
        p.map(|p| p.sinks.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }
}

const NONE: &[String] = &[];

#[test]
fn default_off_and_mesh_access_log_file_turns_envoy_on_everywhere() {
    let s = sinks("", &[]);
    assert_eq!(s("public-gw", "team-a"), NONE);
    assert_eq!(s("public-gw", "istio-system"), NONE);
    let s = sinks("    accessLogFile: /dev/stdout\n", &[]);
    for g in ["public-gw", "partner-gw"] {
        for t in ["team-a", "team-b", "istio-system"] {
            assert_eq!(s(g, t), ["envoy"], "{g} {t}");
        }
    }
}

#[test]
fn a_tenant_telemetry_applies_to_that_tenant_only() {
    let s = sinks(
        "",
        &[(
            "tenants/team-a/telemetry.yaml",
            telemetry("logs", "{providers: [{name: otel}]}", None),
        )],
    );
    assert_eq!(s("public-gw", "team-a"), ["otel"]);
    assert_eq!(s("partner-gw", "team-a"), ["otel"]);
    assert_eq!(s("public-gw", "team-b"), NONE);
}

#[test]
fn root_applies_everywhere_a_selector_narrows_and_the_narrower_level_wins() {
    let s = sinks(
        "",
        &[
            (
                "platform/telemetry.yaml",
                telemetry("mesh-default", "{providers: [{name: file}]}", None)
                    + &telemetry(
                        "edge-only",
                        "{providers: [{name: otel}], disabled: false}",
                        Some("tier: edge"),
                    ),
            ),
            (
                "tenants/team-b/telemetry.yaml",
                telemetry("quiet", "{providers: [{name: file}], disabled: true}", None),
            ),
        ],
    );
    assert_eq!(s("public-gw", "team-a"), ["file", "otel"]);
    assert_eq!(s("partner-gw", "team-a"), ["file"]);
    assert_eq!(s("public-gw", "team-b"), ["otel"]);
    assert_eq!(s("partner-gw", "team-b"), NONE);
}

#[test]
fn a_child_must_say_disabled_false_to_undo_a_parent_disable() {
    let root = telemetry("off", "{providers: [{name: file}], disabled: true}", None);
    let s = sinks(
        "    accessLogFile: /dev/stdout\n",
        &[
            ("platform/telemetry.yaml", root),
            (
                "tenants/team-a/telemetry.yaml",
                telemetry("silent-about-it", "{providers: [{name: file}]}", None),
            ),
            (
                "tenants/team-b/telemetry.yaml",
                telemetry(
                    "back-on",
                    "{providers: [{name: file}], disabled: false}",
                    None,
                ),
            ),
        ],
    );
    // meshConfig.accessLogFile keeps `envoy` on; `file` stays off for team-a (no explicit
    // `disabled: false`), and is back on for team-b.
    assert_eq!(s("public-gw", "team-a"), ["envoy"]);
    assert_eq!(s("public-gw", "team-b"), ["envoy", "file"]);
}

#[test]
fn default_providers_pick_the_provider_of_a_rule_that_names_none() {
    let s = sinks(
        "    defaultProviders: {accessLogging: [otel]}\n",
        &[(
            "tenants/team-a/telemetry.yaml",
            telemetry("logs", "{}", None),
        )],
    );
    assert_eq!(s("public-gw", "team-a"), ["otel"]);
    assert_eq!(s("public-gw", "team-b"), NONE);
}

#[test]
fn a_filter_naming_an_attribute_gatehouse_lacks_is_a_warning_that_names_it() {
    let all = vec![
        SourceFile {
            path: "gatehouse.yaml".into(),
            bytes: OPERATOR.replace("MESH\n", "").into_bytes(),
        },
        SourceFile {
            path: "tenants/team-a/telemetry.yaml".into(),
            bytes: telemetry(
                "logs",
                "{providers: [{name: envoy}], filter: {expression: \"response.code >= 400 && connection.mtls\"}}",
                None,
            )
            .into_bytes(),
        },
    ];
    let loaded = tenants::load(&all, &LoadOptions::default());
    let out = tenants::build(&loaded, "test", None).expect("builds");
    let warned: Vec<String> = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == tenants::Severity::Warning)
        .map(|d| d.to_string())
        .filter(|d| d.contains("connection.mtls"))
        .collect();
    assert_eq!(warned.len(), 1, "{:#?}", out.diagnostics);
    assert!(
        warned[0].contains("tenants/team-a/telemetry.yaml")
            && warned[0].contains("not known to gatehouse"),
        "{}",
        warned[0]
    );
}

/// Istio applies one namespace-wide Telemetry per namespace (an empty selector is
/// namespace-wide too), then every one whose selector matches; the repository's order stands
/// in for creation time. The namespace-wide ones left out are said to have no effect, at
/// their file and line.
#[test]
fn one_namespace_wide_telemetry_applies_the_first_in_the_repository() {
    let files = [(
        "tenants/team-a/telemetry.yaml",
        telemetry("first", "{providers: [{name: file}]}", None)
            + &telemetry("second", "{providers: [{name: otel}]}", None)
            + &telemetry("empty-selector", "{providers: [{name: envoy}]}", Some(""))
            + &telemetry(
                "edge",
                "{providers: [{name: otel}]}",
                Some("istio: public-gw"),
            )
            + &telemetry(
                "edge-again",
                "{providers: [{name: envoy}]}",
                Some("tier: edge"),
            ),
    )];
    let s = sinks("", &files);
    assert_eq!(s("partner-gw", "team-a"), ["file"]);
    assert_eq!(s("public-gw", "team-a"), ["envoy", "file", "otel"]);

    let mut all = vec![SourceFile {
        path: "gatehouse.yaml".into(),
        bytes: OPERATOR.replace("MESH\n", "").into_bytes(),
    }];
    all.push(SourceFile {
        path: files[0].0.into(),
        bytes: files[0].1.clone().into_bytes(),
    });
    let out = tenants::build(&tenants::load(&all, &LoadOptions::default()), "test", None)
        .expect("builds");
    let warned: Vec<String> = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == tenants::Severity::Warning)
        .map(|d| d.to_string())
        .filter(|d| d.contains("only one Telemetry without a selector"))
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(
        warned[0].starts_with("tenants/team-a/telemetry.yaml:10:")
            && warned[0].contains("team-a/Telemetry/second")
            && warned[0].contains("first comes first"),
        "{warned:?}"
    );
    assert!(
        warned[1].contains("team-a/Telemetry/empty-selector"),
        "{warned:?}"
    );
}
