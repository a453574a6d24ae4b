//! VirtualService delegation served end to end: the platform's root VirtualService hands
//! paths of one host to two tenants' delegates; each tenant's change or mistake moves only
//! its own paths.

use std::time::Duration;

use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant, wait_for};

const PORTAL: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/portal.example.com"]
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
    delegate: {name: portal-a, namespace: team-a}
  - name: b
    match: [{uri: {prefix: /b}}]
    delegate: {name: portal-b, namespace: team-b}
    headers: {response: {set: {x-root: portal}}}
  - name: f
    match: [{uri: {prefix: /f}}]
    delegate: {name: portal-f, namespace: team-a}
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
  - directResponse: {status: 418, body: {string: "no team here"}}
"#;

fn delegate(name: &str, export: &str, rules: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  exportTo: [{export}]\n  http:\n{rules}---\n"
    )
}

const A_RULES: &str = "  - name: v2\n    match: [{uri: {prefix: /a/v2}}]\n    route: [{destination: {host: a2.team-a.internal}}]\n  - route: [{destination: {host: a.team-a.internal}}]\n";
const B_RULES: &str = "  - route: [{destination: {host: b.team-b.internal}}]\n";

#[test]
fn the_platform_delegates_paths_and_each_team_moves_only_its_own() {
    let web = free_port();
    let (pa, pa2, pb, pb2) = (free_port(), free_port(), free_port(), free_port());
    let be = Backends::new();
    be.http("a", pa);
    be.http("a2", pa2);
    be.http("b", pb);
    be.http("b2", pb2);
    let repo = Repo::new();
    let tenants =
        tenant("team-a", &["a.example.com"], "") + &tenant("team-b", &["b.example.com"], "");
    repo.write("gatehouse.yaml", &platform(&[(80, web)], &tenants));
    repo.write("platform/portal.yaml", PORTAL);
    let team_a = |export: &str| {
        delegate("portal-a", export, A_RULES)
            + &delegate(
                "portal-f",
                "istio-system",
                "  - directResponse: {status: 200, body: {string: fine}}\n",
            )
            + &service("a", "a.team-a.internal", &[(pa, "")])
            + &service("a2", "a2.team-a.internal", &[(pa2, "")])
    };
    repo.write("tenants/team-a/portal.yaml", &team_a("istio-system"));
    repo.write(
        "tenants/team-b/portal.yaml",
        &(delegate("portal-b", "istio-system", B_RULES)
            + &service("b", "b.team-b.internal", &[(pb, "")])),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(&repo, creds.path());
    let get = |p: &str| Curl::new(&format!("http://portal.example.com:{web}{p}")).run();

    // One host, three owners: the delegates' rules answer under the root's prefixes.
    assert_eq!(get("/a/page").backend(), "a");
    assert_eq!(get("/a/v2/page").backend(), "a2");
    let b = get("/b/page");
    assert_eq!(b.backend(), "b");
    assert_eq!(
        b.header("x-root"),
        Some("portal"),
        "the root's headers fill the delegate's"
    );
    assert_eq!(get("/a/page").header("x-root"), None);
    // The root's fault applies to the delegate's direct response (Envoy's fault filter runs
    // before the router that answers it).
    assert_eq!(get("/f").status, 503);
    let other = get("/c");
    assert_eq!((other.status, other.body.as_str()), (418, "no team here"));
    assert_eq!(
        b.json()["path"],
        "/b/page",
        "the path reaches the backend as the client sent it"
    );
    // `gatehouse routes` says whose each delegated route is.
    let listing = std::process::Command::new(crate::harness::bin("gatehouse"))
        .arg("routes")
        .arg(repo.path())
        .output()
        .expect("gatehouse routes");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains("route a-v2"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(line.ends_with("(tenant team-a, team-a/portal-a)"), "{line}");

    // team-b pushes a broken delegate (to a new backend): it keeps its last good one; team-a
    // moves on.
    repo.write(
        "tenants/team-b/portal.yaml",
        &(delegate(
            "portal-b",
            "istio-system",
            "  - route: [{destination: {host: b2.team-b.internal}}]\n    timeuot: 1s\n",
        ) + &service("b", "b.team-b.internal", &[(pb, "")])
            + &service("b2", "b2.team-b.internal", &[(pb2, "")])),
    );
    repo.write(
        "tenants/team-a/portal.yaml",
        &(delegate(
            "portal-a",
            "istio-system",
            "  - route: [{destination: {host: a2.team-a.internal}}]\n",
        ) + &service("a", "a.team-a.internal", &[(pa, "")])
            + &service("a2", "a2.team-a.internal", &[(pa2, "")])),
    );
    let (code, body) = gw.reload();
    assert_eq!(code, 200, "{body}");
    assert_eq!(get("/a/page").backend(), "a2", "team-a's change applies");
    assert_eq!(
        get("/b/page").backend(),
        "b",
        "team-b keeps its last good delegate"
    );
    let st = gw.status();
    assert_eq!(st["tenants"]["team-b"]["state"], "lastGood");
    let errors = st["tenants"]["team-b"]["errors"].to_string();
    assert!(
        errors.contains("tenants/team-b/portal.yaml:8:5: error: team-b/VirtualService/portal-b: spec.http[0].timeuot: unknown field"),
        "{errors}"
    );

    // team-a stops exporting its delegate: only the root's rule for team-a goes (the next
    // root rule answers), with a warning naming the platform's delegate field.
    repo.write("tenants/team-a/portal.yaml", &team_a("\".\""));
    let (code, body) = gw.reload();
    assert_eq!(code, 200, "{body}");
    assert_eq!(get("/a/page").status, 418);
    assert_eq!(get("/b/page").backend(), "b");
    let want = "platform/portal.yaml:19:5: warning: istio-system/VirtualService/portal: spec.http[0].delegate: delegate VirtualService team-a/portal-a is not exported to namespace \"istio-system\" (add \"istio-system\" to its exportTo): the rule is skipped";
    let st = gw.status();
    let warnings = st["platformWarnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        warnings.iter().any(|w| w.as_str() == Some(want)),
        "{warnings:#?}"
    );
    wait_for(
        "the skipped rule's warning in the log",
        Duration::from_secs(10),
        || gw.log().contains(want).then_some(()),
    );
}
