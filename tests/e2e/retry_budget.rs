//! `trafficPolicy.retryBudget`: retries in flight to a cluster are held to a share of its
//! requests in flight, never below a floor, as Envoy's retry budget holds them.

use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant, web_routes};

const RULES: &str = r#"  - match: [{uri: {prefix: /unbudgeted}}]
    route: [{destination: {host: unbudgeted.team-a.internal}}]
    retries: {attempts: 2, retryOn: 5xx}
  - match: [{uri: {prefix: /floor}}]
    route: [{destination: {host: floor.team-a.internal}}]
    retries: {attempts: 2, retryOn: 5xx}
  - match: [{uri: {prefix: /half}}]
    route: [{destination: {host: half.team-a.internal}}]
    retries: {attempts: 2, retryOn: 5xx}
"#;

const DESTINATION_RULES: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: floor}
spec:
  host: floor.team-a.internal
  trafficPolicy:
    retryBudget: {percent: 0, minRetryConcurrency: 1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: half}
spec:
  host: half.team-a.internal
  trafficPolicy:
    retryBudget: {percent: 50, minRetryConcurrency: 1}
---
"#;

#[test]
fn a_retry_budget_holds_retries_to_a_share_of_the_requests_in_flight() {
    let port = free_port();
    let be = Backends::new();
    let mut services = String::new();
    for name in ["unbudgeted", "floor", "half"] {
        let p = free_port();
        be.http(name, p);
        services.push_str(&service(
            name,
            &format!("{name}.team-a.internal"),
            &[(p, "")],
        ));
    }
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &platform(&[(80, port)], &tenant("team-a", &["web.example.com"], "")),
    );
    repo.write(
        "tenants/team-a/web.yaml",
        &((web_routes(RULES) + DESTINATION_RULES) + &services),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let _gw = Gateway::start(&repo, creds.path());

    // Four requests to each cluster at once. Every answer is a 503 after two seconds, so
    // the four are in flight together when their first answers come back and each wants a
    // retry, even on a loaded machine where the four curls start far apart; a retry that
    // gets its share keeps it for both of its retries (four seconds).
    let clients: Vec<_> = ["unbudgeted", "floor", "half"]
        .iter()
        .flat_map(|name| (0..4).map(move |i| (*name, i)))
        .map(|(name, i)| {
            let url = format!("http://web.example.com:{port}/{name}/{i}");
            std::thread::spawn(move || {
                Curl::new(&url)
                    .header("x-test-status: 503")
                    .header("x-test-delay-ms: 2000")
                    .run()
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().expect("client"), 503, "every answer stays a 503");
    }
    // Without a budget, each request is tried three times.
    assert_eq!(be.counters.get("unbudgeted"), 12);
    // 0 % of four requests is none, so the floor of one: one request retries (three tries),
    // the other three get their first answer.
    assert_eq!(be.counters.get("floor"), 3 + 1 + 1 + 1);
    // Half of four in flight: two requests retry.
    assert_eq!(be.counters.get("half"), 3 + 3 + 1 + 1);
}
