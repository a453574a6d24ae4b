//! `retries.retryIgnorePreviousHosts` and `retries.backoff`: where a retry goes, and how long
//! it waits first. A hashing cluster makes the endpoint of every try known in advance.

use crate::harness::tools::{Curl, Reply};
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant, web_routes};

const RULES: &str = r#"  - match: [{uri: {prefix: /sticky}}]
    route: [{destination: {host: api.team-a.internal}}]
    retries: {attempts: 2, retryOn: 5xx}
  - match: [{uri: {prefix: /elsewhere}}]
    route: [{destination: {host: api.team-a.internal}}]
    retries: {attempts: 2, retryOn: 5xx, retryIgnorePreviousHosts: true}
  - match: [{uri: {prefix: /patient}}]
    route: [{destination: {host: api.team-a.internal}}]
    timeout: 1s
    retries: {attempts: 1, retryOn: 5xx, backoff: 1000h}
"#;

const DESTINATION_RULES: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.team-a.internal
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
---
"#;

fn get(port: u16, path: &str, user: &str) -> Reply {
    Curl::new(&format!("http://web.example.com:{port}{path}"))
        .header(&format!("x-user: {user}"))
        .run()
}

#[test]
fn retry_ignore_previous_hosts_and_backoff_steer_retries() {
    let port = free_port();
    let be = Backends::new();
    let (bad, good) = (free_port(), free_port());
    be.failing("bad", bad);
    be.http("good", good);
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &platform(&[(80, port)], &tenant("team-a", &["web.example.com"], "")),
    );
    repo.write(
        "tenants/team-a/web.yaml",
        &((web_routes(RULES) + DESTINATION_RULES)
            + &service("api", "api.team-a.internal", &[(bad, ""), (good, "")])),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let _gw = Gateway::start(&repo, creds.path());

    // A key the ring gives to the failing endpoint. Unset `retryIgnorePreviousHosts` on a
    // hashing cluster is Istio's default: every retry keeps to that endpoint, so all three
    // tries fail there.
    let user = (0..64)
        .map(|i| format!("user-{i}"))
        .find(|u| get(port, "/sticky", u).status == 503)
        .expect("some key hashes to the failing endpoint");
    let before = be.counters.get("bad");
    let r = get(port, "/sticky", &user);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        be.counters.get("bad") - before,
        3,
        "three tries, all on the key's endpoint"
    );

    // `retryIgnorePreviousHosts: true`: the retry leaves the endpoint that failed, whatever
    // the hash says.
    let (bad0, good0) = (be.counters.get("bad"), be.counters.get("good"));
    let r = get(port, "/elsewhere", &user);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("good"), "{r:?}");
    assert_eq!(
        (
            be.counters.get("bad") - bad0,
            be.counters.get("good") - good0
        ),
        (1, 1)
    );

    // `backoff: 1000h`: the retry's wait (drawn from zero to the base) outlasts the route's
    // one-second timeout, so the route times out (504) before a second try is made. With
    // Envoy's default 25 ms base, the retry would reach the endpoint and the answer would be
    // its 503.
    let bad0 = be.counters.get("bad");
    let r = get(port, "/patient", &user);
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(be.counters.get("bad") - bad0, 1, "no retry was made");
}
