//! The admin endpoint's `/config` (the compiled snapshot as JSON) and `gatehouse run
//! --group`, which serves only the named groups of the repository.

use std::net::TcpStream;
use std::time::Duration;

use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, service};

fn group(name: &str, port: u16, target: u16, enabled: bool) -> String {
    format!(
        "    - name: {name}\n      label: {{istio: {name}}}\n      enabled: {enabled}\n      k8s:\n        service:\n          loadBalancerIP: 127.0.0.1\n          ports:\n          - {{name: http, port: {port}, targetPort: {target}}}\n"
    )
}

fn team(name: &str, host: &str, group: &str, port: u16, be: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: {group}}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: [\"{host}\"]\n---\n{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [gw]\n  http:\n  - match: [{{uri: {{prefix: /}}}}]\n    headers: {{response: {{set: {{x-team: {name}}}}}}}\n    route: [{{destination: {{host: svc.{name}.internal}}}}]\n",
        service("svc", &format!("svc.{name}.internal"), &[(be, "")])
    )
}

struct Fx {
    repo: Repo,
    _creds: tempfile::TempDir,
    _be: Backends,
    /// Listening ports of public-gw, partner-gw and the disabled internal-gw.
    public: u16,
    partner: u16,
    internal: u16,
    /// team-a's backend.
    pa: u16,
}

/// Three groups on their own ports (internal-gw disabled), team-a on public-gw, team-b on
/// partner-gw, team-c on internal-gw.
fn fixture() -> Fx {
    let (public, partner, internal) = (free_port(), free_port(), free_port());
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let be = Backends::new();
    be.http("a", pa);
    be.http("b", pb);
    be.http("c", pc);
    let repo = Repo::new();
    let tenant = |name: &str, host: &str, g: &str| {
        format!(
            "apiVersion: gatehouse.dev/v1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [{g}]\n---\n"
        )
    };
    repo.write(
        "gatehouse.yaml",
        &format!(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {{name: appliance}}\nspec:\n  profile: empty\n  components:\n    ingressGateways:\n{}{}{}---\n{}{}{}",
            group("public-gw", 80, public, true),
            group("partner-gw", 80, partner, true),
            group("internal-gw", 80, internal, false),
            tenant("team-a", "a.example.com", "public-gw"),
            tenant("team-b", "b.example.com", "partner-gw"),
            tenant("team-c", "c.example.com", "internal-gw"),
        ),
    );
    repo.write(
        "tenants/team-a/all.yaml",
        &team("team-a", "a.example.com", "public-gw", 80, pa),
    );
    repo.write(
        "tenants/team-b/all.yaml",
        &team("team-b", "b.example.com", "partner-gw", 80, pb),
    );
    repo.write(
        "tenants/team-c/all.yaml",
        &team("team-c", "c.example.com", "internal-gw", 80, pc),
    );
    Fx {
        repo,
        _creds: tempfile::tempdir().expect("tmp"),
        _be: be,
        public,
        partner,
        internal,
        pa,
    }
}

fn refused(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_secs(2),
    )
    .is_err()
}

fn config(gw: &Gateway) -> serde_json::Value {
    let (code, body) = gw.admin_get("/config").expect("admin reachable");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/config is JSON")
}

#[test]
fn group_flag_serves_only_the_named_groups_and_disabled_groups_are_not_served() {
    let fx = fixture();
    let creds = fx._creds.path();

    // Without --group: every enabled group.
    let gw = Gateway::start(&fx.repo, creds);
    let a = Curl::new(&format!("http://a.example.com:{}/", fx.public)).run();
    assert_eq!((a.status, a.backend()), (200, "a".to_string()));
    let b = Curl::new(&format!("http://b.example.com:{}/", fx.partner)).run();
    assert_eq!((b.status, b.backend()), (200, "b".to_string()));
    assert!(refused(fx.internal), "a disabled group listens on nothing");
    let groups: Vec<String> = config(&gw)["snapshot"]["groups"]
        .as_object()
        .expect("groups")
        .keys()
        .cloned()
        .collect();
    assert_eq!(groups, ["partner-gw", "public-gw"]);
    drop(gw);

    // --group partner-gw: only its listener; public-gw's port is not bound.
    let gw = Gateway::start_with(&fx.repo, creds, &["--group", "partner-gw"]);
    let b = Curl::new(&format!("http://b.example.com:{}/", fx.partner)).run();
    assert_eq!((b.status, b.backend()), (200, "b".to_string()));
    assert!(
        refused(fx.public),
        "public-gw is not served by this process"
    );
    let c = config(&gw);
    let groups = c["snapshot"]["groups"].as_object().expect("groups");
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["partner-gw"]);
    let addrs: Vec<&str> = groups["partner-gw"]["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(|l| l["address"].as_str())
        .collect();
    assert_eq!(addrs, [format!("127.0.0.1:{}", fx.partner)]);
    drop(gw);

    // Two processes, one group each, side by side on one repository.
    let pub_gw = Gateway::start_with(&fx.repo, creds, &["--group", "public-gw"]);
    let part_gw = Gateway::start_with(&fx.repo, creds, &["--group", "partner-gw"]);
    let a = Curl::new(&format!("http://a.example.com:{}/", fx.public)).run();
    assert_eq!(a.backend(), "a");
    let b = Curl::new(&format!("http://b.example.com:{}/", fx.partner)).run();
    assert_eq!(b.backend(), "b");
    drop((pub_gw, part_gw));
}

/// The routes of `host` in the served snapshot: (route name, action) pairs.
fn routes_of(c: &serde_json::Value, group: &str, host: &str) -> Vec<(String, serde_json::Value)> {
    c["snapshot"]["groups"][group]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| {
            l["kind"]["http"]["vhosts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|v| v["domain"] == host)
        .flat_map(|v| v["routes"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["body"]["action"].clone(),
            )
        })
        .collect()
}

#[test]
fn config_shows_the_compiled_snapshot_of_the_generation_served() {
    let fx = fixture();
    let gw = Gateway::start(&fx.repo, fx._creds.path());
    let c = config(&gw);
    let generation = gw.status()["generation"].as_u64().expect("generation");
    assert_eq!(c["generation"].as_u64(), Some(generation));
    // team-a's route, its cluster and the endpoint the test's backend listens on.
    let routes = routes_of(&c, "public-gw", "a.example.com");
    assert_eq!(routes.len(), 1, "{routes:?}");
    let cluster = routes[0].1["forward"][0]["cluster"]
        .as_str()
        .expect("a forward action")
        .to_string();
    assert_eq!(cluster, "outbound|80||svc.team-a.internal");
    let cl = &c["snapshot"]["groups"]["public-gw"]["clusters"][&cluster];
    assert_eq!(cl["tenant"], "team-a");
    let a = Curl::new(&format!("http://a.example.com:{}/", fx.public)).run();
    assert_eq!(a.backend(), "a");
    assert_eq!(
        cl["endpoints"]["static"][0]["address"],
        format!("127.0.0.1:{}", fx.pa)
    );

    // A reload that adds a route shows in /config with the next generation.
    fx.repo.write(
        "tenants/team-a/extra.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: extra}\nspec:\n  hosts: [\"a.example.com\"]\n  gateways: [gw]\n  http:\n  - name: teapot\n    match: [{uri: {exact: /tea}}]\n    directResponse: {status: 418, body: {string: short and stout}}\n",
    );
    let (code, body) = gw.reload();
    assert_eq!(code, 200, "{body}");
    let c = config(&gw);
    assert_eq!(c["generation"].as_u64(), Some(generation + 1));
    let routes = routes_of(&c, "public-gw", "a.example.com");
    let names: Vec<&str> = routes.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"teapot"), "{names:?}");
    let tea = Curl::new(&format!("http://a.example.com:{}/tea", fx.public)).run();
    assert_eq!((tea.status, tea.body.as_str()), (418, "short and stout"));

    // A broken team-a: /config still holds its last good routes, as they are served.
    fx.repo
        .write("tenants/team-a/extra.yaml", "kind: [unclosed\n");
    let (code, body) = gw.reload();
    assert_eq!(code, 200, "{body}");
    let c = config(&gw);
    let routes = routes_of(&c, "public-gw", "a.example.com");
    assert!(routes.iter().any(|(n, _)| n == "teapot"), "{routes:?}");
    assert_eq!(gw.status()["tenants"]["team-a"]["state"], "lastGood");
}
