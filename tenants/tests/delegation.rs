//! VirtualService delegation (istio-api.md §3.7): a root rule's `delegate` is replaced by
//! the rules of a VirtualService without hosts, each merged with the root rule; within a
//! tenant, from the platform to a tenant, and across tenants through `exportTo`.

use std::sync::Arc;

use http::HeaderMap;
use tenants::find::{self, Decision, RequestView};
use tenants::snapshot::{Listener, Route, RouteAction, TenantState};
use tenants::{LoadOptions, Output, Severity, SourceFile};

const GATEHOUSE: &str = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: appliance}
spec:
  profile: empty
  components:
    ingressGateways:
    - name: public-gw
      label: {istio: public-gw}
      k8s: {service: {loadBalancerIP: 127.0.0.1, ports: [{name: http2, port: 80, targetPort: 18080}]}}
    - name: partner-gw
      label: {istio: partner-gw}
      k8s: {service: {loadBalancerIP: 127.0.0.1, ports: [{name: http2, port: 80, targetPort: 28080}]}}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-a}
spec: {hosts: ["shop.example.com"], gateways: [public-gw], quotas: {maxRoutes: 11}}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-b}
spec: {hosts: ["b.example.com"], gateways: [public-gw]}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-c}
spec: {hosts: ["c.example.com"], gateways: [partner-gw]}
"#;

/// The platform's Gateway (every host) and its root VirtualService for `portal.example.com`.
const PLATFORM: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: portal}
spec:
  hosts: [portal.example.com]
  gateways: [public]
  http:
  - name: a
    match: [{uri: {prefix: /a}}]
    delegate: {name: a-portal, namespace: team-a}
  - name: b
    match: [{uri: {prefix: /b}}]
    delegate: {name: b-portal, namespace: team-b}
    timeout: 7s
  - name: c
    match: [{uri: {prefix: /c}}]
    delegate: {name: c-portal, namespace: team-c}
  - directResponse: {status: 418}
"#;

fn service(name: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.internal]\n  location: MESH_INTERNAL\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n---\n"
    )
}

fn build(files: &[(&str, String)]) -> Output {
    let mut src = vec![
        SourceFile {
            path: "gatehouse.yaml".into(),
            bytes: GATEHOUSE.as_bytes().to_vec(),
        },
        SourceFile {
            path: "platform/portal.yaml".into(),
            bytes: PLATFORM.as_bytes().to_vec(),
        },
    ];
    src.extend(files.iter().map(|(p, y)| SourceFile {
        path: (*p).into(),
        bytes: y.as_bytes().to_vec(),
    }));
    tenants::build(&tenants::load(&src, &LoadOptions::default()), "test", None)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn diags(out: &Output, severity: Severity) -> Vec<String> {
    out.diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .map(ToString::to_string)
        .collect()
}

fn listener(out: &Output) -> &Arc<Listener> {
    out.snapshot.groups["public-gw"]
        .listeners
        .iter()
        .find(|l| l.address.to_string() == "127.0.0.1:18080")
        .expect("listener on 18080")
}

/// The route a GET takes, if any.
fn route<'o>(out: &'o Output, host: &str, path: &str) -> Option<&'o Route> {
    route_with(out, "GET", host, path)
}

fn route_with<'o>(out: &'o Output, method: &str, host: &str, path: &str) -> Option<&'o Route> {
    let headers = HeaderMap::new();
    let req = RequestView {
        method,
        scheme: "http",
        authority: host,
        path,
        headers: &headers,
    };
    match find::find_on(listener(out), None, &req)? {
        Decision::Route(_, r) => Some(r),
        _ => None,
    }
}

fn cluster(r: &Route) -> String {
    match &r.body.action {
        RouteAction::Forward(cs) => cs[0].cluster.to_string(),
        RouteAction::Direct { status, .. } => format!("direct {status}"),
        RouteAction::Redirect(_) => "redirect".into(),
    }
}

/// team-a's own root on shop.example.com and its delegate, plus its delegate for the
/// platform's portal (exported to istio-system).
fn team_a(delegate_rules: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public]
  http:
  - name: api
    match: [{{uri: {{prefix: /api}}}}, {{uri: {{prefix: /v1/api}}}}]
    delegate: {{name: api}}
    timeout: 3s
    headers: {{request: {{set: {{x-root: "1"}}}}}}
    mirrorPercentage: {{value: 10}}
  - route: [{{destination: {{host: web.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api}}
spec:
  http:
{delegate_rules}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a-portal}}
spec:
  exportTo: [".", istio-system]
  http:
  - route: [{{destination: {{host: web.internal}}}}]
---
{}{}{}"#,
        service("web"),
        service("api-v1"),
        service("api-v2")
    )
}

const TEAM_A_RULES: &str = r#"  - name: v2
    match: [{uri: {prefix: /api/v2}}, {uri: {prefix: /v1/api/v2}}]
    route: [{destination: {host: api-v2.internal}}]
    timeout: 9s
    mirror: {host: api-v1.internal}
  - match: [{method: {exact: PUT}}]
    route: [{destination: {host: api-v2.internal}}]
    timeout: 0s
  - name: old
    match: [{uri: {prefix: /legacy}}]
    route: [{destination: {host: api-v2.internal}}]
  - match: [{method: {exact: POST}}]
    route: [{destination: {host: api-v2.internal}}]
    headers: {request: {set: {x-leaf: "1"}}}
  - route: [{destination: {host: api-v1.internal}}]
"#;

fn team_b(export: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: b-portal}}\nspec:\n  exportTo: [{export}]\n  http:\n  - match: [{{uri: {{prefix: /b/x}}}}]\n    route: [{{destination: {{host: b.internal}}}}]\n  - route: [{{destination: {{host: b.internal}}}}]\n    timeout: 2s\n---\n{}",
        service("b")
    )
}

fn both(export_b: &str) -> Output {
    build(&[
        ("tenants/team-a/all.yaml", team_a(TEAM_A_RULES)),
        ("tenants/team-b/all.yaml", team_b(export_b)),
    ])
}

#[test]
fn a_delegate_replaces_the_root_rule_merged_with_it() {
    let out = both("istio-system");
    assert!(
        diags(&out, Severity::Error).is_empty(),
        "{:#?}",
        out.diagnostics
    );
    let shop = "shop.example.com";
    // The delegate's rules in order, each within the root rule's matches.
    let v2 = route(&out, shop, "/api/v2/x").expect("route");
    assert_eq!(cluster(v2), "outbound|80||api-v2.internal");
    assert_eq!(&*v2.name, "api-v2", "names join as root-delegate");
    assert_eq!(v2.virtual_service, "team-a/api");
    assert_eq!(&*v2.body.tenant, "team-a");
    // The delegate's own timeout wins; the root's headers fill what it left unset.
    assert_eq!(
        v2.body.rule.timeout,
        Some(std::time::Duration::from_secs(9))
    );
    assert!(format!("{:?}", v2.body.rule.headers).contains("x-root"));
    // Its `mirror` takes the root's `mirrorPercentage`, part by part as Istio fills them.
    assert_eq!(
        v2.body.mirrors,
        [("outbound|80||api-v1.internal".to_string(), 10.0)]
    );
    // A delegate rule's `timeout: 0s` turns the root's off rather than taking it.
    let put = route_with(&out, "PUT", shop, "/api/x").expect("route");
    assert_eq!(put.body.rule.timeout, None);
    // Both root match blocks carry the delegate's block that fits each.
    let v1_prefixed = route(&out, shop, "/v1/api/v2/x").expect("route");
    assert_eq!(&*v1_prefixed.name, "api-v2");
    // A delegate block with no uri fits every root block: POST under either root prefix.
    let post = route_with(&out, "POST", shop, "/v1/api/x").expect("route");
    assert_eq!(cluster(post), "outbound|80||api-v2.internal");
    assert!(format!("{:?}", post.body.rule.headers).contains("x-leaf"));
    assert!(!format!("{:?}", post.body.rule.headers).contains("x-root"));
    assert_eq!(
        post.body.rule.timeout,
        Some(std::time::Duration::from_secs(3))
    );
    // The delegate's catch-all is the root rule's catch-all: only under /api.
    let rest = route(&out, shop, "/api/other").expect("route");
    assert_eq!(cluster(rest), "outbound|80||api-v1.internal");
    // Outside the root's matches the next root rule answers, never the delegate's.
    let web = route(&out, shop, "/legacy").expect("route");
    assert_eq!(cluster(web), "outbound|80||web.internal");
    // The delegate's rule that fits no root match is dropped, and says so where it is.
    let warnings = diags(&out, Severity::Warning);
    assert!(
        warnings.iter().any(|w| w.starts_with("tenants/team-a/all.yaml:")
            && w.contains("team-a/VirtualService/api: spec.http[2].match: no match of the root rule team-a/shop: spec.http[0] contains this rule's match: the rule is skipped")),
        "{warnings:#?}"
    );
}

#[test]
fn the_platform_delegates_paths_to_tenants_that_export_to_it() {
    let out = both("istio-system");
    let portal = "portal.example.com";
    let a = route(&out, portal, "/a/page").expect("route");
    assert_eq!(cluster(a), "outbound|80||web.internal");
    assert_eq!(
        &*a.body.tenant, "team-a",
        "the delegate's tenant owns its routes"
    );
    let bx = route(&out, portal, "/b/x/1").expect("route");
    assert_eq!(cluster(bx), "outbound|80||b.internal");
    assert_eq!(&*bx.body.tenant, "team-b");
    // The root's timeout fills the delegate rule that has none; its own stays.
    assert_eq!(
        bx.body.rule.timeout,
        Some(std::time::Duration::from_secs(7))
    );
    let b = route(&out, portal, "/b/y").expect("route");
    assert_eq!(b.body.rule.timeout, Some(std::time::Duration::from_secs(2)));
    assert_eq!(
        cluster(route(&out, portal, "/c").expect("route")),
        "direct 418"
    );

    // team-b stops exporting: only the platform's rule for team-b is skipped, with a
    // warning at the platform's delegate; team-a's path is untouched.
    let out = both("\".\"");
    assert!(
        diags(&out, Severity::Error).is_empty(),
        "{:#?}",
        out.diagnostics
    );
    assert_eq!(
        cluster(route(&out, portal, "/b/x/1").expect("route")),
        "direct 418"
    );
    assert_eq!(
        cluster(route(&out, portal, "/a/page").expect("route")),
        "outbound|80||web.internal"
    );
    let warnings = diags(&out, Severity::Warning);
    assert!(
        warnings.iter().any(|w| w.starts_with("platform/portal.yaml:")
            && w.contains("spec.http[1].delegate: delegate VirtualService team-b/b-portal is not exported to namespace \"istio-system\" (add \"istio-system\" to its exportTo): the rule is skipped")),
        "{warnings:#?}"
    );
}

#[test]
fn a_tenant_may_delegate_only_to_what_is_exported_to_it() {
    let root = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public]
  http:
  - match: [{uri: {prefix: /b}}]
    delegate: {name: b-portal, namespace: team-b}
  - match: [{uri: {prefix: /c}}]
    delegate: {name: nothing-here}
"#;
    let out = build(&[
        ("tenants/team-a/all.yaml", root.to_string()),
        ("tenants/team-b/all.yaml", team_b("istio-system")),
    ]);
    // Its own delegate must be there: an error before apply.
    let errors = diags(&out, Severity::Error);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("tenants/team-a/all.yaml:11:")
            && errors[0].ends_with(
                "spec.http[1].delegate: delegate VirtualService team-a/nothing-here not found"
            ),
        "{errors:#?}"
    );
    assert_eq!(out.snapshot.tenants["team-a"].state, TenantState::Refused);
    assert_eq!(out.snapshot.tenants["team-b"].state, TenantState::Applied);

    // Another tenant's delegate may come and go with that tenant's commits: not exported,
    // the rule is skipped with a warning, and the rest of team-a is served.
    let only_b = root.replace(
        "  - match: [{uri: {prefix: /c}}]\n    delegate: {name: nothing-here}\n",
        "  - directResponse: {status: 204}\n",
    );
    let out = build(&[
        ("tenants/team-a/all.yaml", only_b.clone()),
        ("tenants/team-b/all.yaml", team_b("istio-system")),
    ]);
    assert!(
        diags(&out, Severity::Error).is_empty(),
        "{:#?}",
        out.diagnostics
    );
    assert_eq!(out.snapshot.tenants["team-a"].state, TenantState::Applied);
    assert_eq!(
        cluster(route(&out, "shop.example.com", "/b/x").expect("route")),
        "direct 204"
    );
    let warnings = diags(&out, Severity::Warning);
    assert!(
        warnings.iter().any(|w| w.starts_with("tenants/team-a/all.yaml:9:")
            && w.ends_with("spec.http[0].delegate: delegate VirtualService team-b/b-portal is not exported to namespace \"team-a\" (add \"team-a\" to its exportTo): the rule is skipped")),
        "{warnings:#?}"
    );
    // Another tenant's VirtualService that has hosts is "not found": names are not told.
    let out = build(&[
        (
            "tenants/team-a/all.yaml",
            only_b.replace("b-portal", "b-site"),
        ),
        (
            "tenants/team-b/all.yaml",
            team_b("istio-system")
                + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b-site}\nspec:\n  hosts: [b.example.com]\n  gateways: [istio-system/public]\n  http: [{route: [{destination: {host: b.internal}}]}]\n",
        ),
    ]);
    assert!(
        diags(&out, Severity::Warning)
            .iter()
            .any(|w| w
                .contains("delegate VirtualService team-b/b-site not found: the rule is skipped")),
        "{:#?}",
        out.diagnostics
    );

    // Exported to team-a, the same root is served and the routes are team-b's.
    let out = build(&[
        ("tenants/team-a/all.yaml", only_b),
        ("tenants/team-b/all.yaml", team_b("team-a")),
    ]);
    assert!(
        diags(&out, Severity::Error).is_empty(),
        "{:#?}",
        out.diagnostics
    );
    let r = route(&out, "shop.example.com", "/b/x").expect("route");
    assert_eq!(cluster(r), "outbound|80||b.internal");
    assert_eq!(&*r.body.tenant, "team-b");
}

#[test]
fn a_delegate_serves_only_on_groups_its_tenant_may_use() {
    // team-c may use partner-gw only; the platform's root is on public-gw.
    let team_c = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: c-portal}}\nspec:\n  exportTo: [istio-system]\n  http:\n  - route: [{{destination: {{host: c.internal}}}}]\n---\n{}",
        service("c")
    );
    let out = build(&[("tenants/team-c/all.yaml", team_c)]);
    assert!(
        diags(&out, Severity::Error).is_empty(),
        "{:#?}",
        out.diagnostics
    );
    assert_eq!(
        cluster(route(&out, "portal.example.com", "/c/x").expect("route")),
        "direct 418"
    );
    let warnings = diags(&out, Severity::Warning);
    assert!(
        warnings.iter().any(|w| w.contains("spec.http[2].delegate: delegate VirtualService team-c/c-portal belongs to tenant \"team-c\", which may not use gateway group \"public-gw\": the rule is skipped there")),
        "{warnings:#?}"
    );
}

#[test]
fn max_routes_counts_the_routes_a_delegation_expands_to() {
    // The delegate's five rules under the root rule's two blocks: each fits one block (v2)
    // or both (PUT, POST, the catch-all), and /legacy fits neither: 8 routes, then the root's
    // catch-all and the platform's delegate (its rules as written, as no root of team-a
    // names it): 10, within team-a's 11. The delegate itself counts nothing more.
    let out = both("istio-system");
    assert!(
        diags(&out, Severity::Error).is_empty(),
        "{:#?}",
        out.diagnostics
    );
    // One more delegate rule without a uri expands under both root blocks: 12 > 11.
    let more = format!(
        "{TEAM_A_RULES}  - match: [{{method: {{exact: DELETE}}}}]\n    route: [{{destination: {{host: api-v1.internal}}}}]\n"
    );
    let out = build(&[
        ("tenants/team-a/all.yaml", team_a(&more)),
        ("tenants/team-b/all.yaml", team_b("istio-system")),
    ]);
    let errors = diags(&out, Severity::Error);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("tenant \"team-a\" exceeds its maxRoutes quota (12 > 11)")),
        "{errors:#?}"
    );
    assert_eq!(out.snapshot.tenants["team-b"].state, TenantState::Applied);
}

#[test]
fn delegation_is_validated_as_istio_does_and_names_the_field() {
    let bad = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public]
  http:
  - match: [{uri: {regex: "/a.*"}}]
    delegate: {name: d}
    route: [{destination: {host: web.internal}}]
  - match: [{uri: {prefix: /b}, gateways: [istio-system/public]}]
    delegate: {}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: d}
spec:
  gateways: [istio-system/public]
  http:
  - delegate: {name: other}
  - match: [{headers: {x: {regex: "a+"}}}]
    route: [{destination: {host: web.internal}}]
---
"#;
    let out = build(&[(
        "tenants/team-a/all.yaml",
        format!("{bad}{}", service("web")),
    )]);
    let errors = diags(&out, Severity::Error);
    for want in [
        "team-a/VirtualService/shop: spec.http[0].match[0].uri: uri match does not support regex match for delegating",
        "team-a/VirtualService/shop: spec.http[0].route: root HTTP route must not specify route",
        "team-a/VirtualService/shop: spec.http[1].match[0].gateways: gateways match can not specify on delegate",
        "team-a/VirtualService/shop: spec.http[1].delegate.name: delegate name must not be empty",
        "team-a/VirtualService/d: spec.gateways: delegate virtual service (one without hosts) must have no gateways",
        "team-a/VirtualService/d: spec.http[0].delegate: delegate HTTP route cannot contain delegate",
        "team-a/VirtualService/d: spec.http[1].match[0].headers.x: headers match \"x\" does not support regex match for delegating",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
}

#[test]
fn a_delegate_nobody_names_is_reported_and_its_routes_are_still_checked() {
    let lone = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: lone}\nspec:\n  http:\n  - route: [{destination: {host: missing.internal}}]\n";
    let out = build(&[("tenants/team-a/all.yaml", lone.to_string())]);
    let all: Vec<String> = out.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        all.iter().any(|d| d.contains("warning: team-a/VirtualService/lone: spec.hosts: a VirtualService without hosts is a delegate, and no root rule names it yet")),
        "{all:#?}"
    );
    assert!(
        all.iter().any(|d| d.contains("error: team-a/VirtualService/lone: spec.http[0].route[0].destination.host: destination host \"missing.internal\" is not declared")),
        "{all:#?}"
    );
}
