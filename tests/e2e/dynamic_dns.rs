//! ServiceEntry `resolution: DYNAMIC_DNS`: one ServiceEntry for `*.partner.test` reaches
//! whichever partner host a request names, resolved when asked and kept for the answer's
//! TTL, as Envoy's dynamic forward proxy does. A name outside the wildcard is never looked up.

use crate::harness::dns::{Answer, Dns};
use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, tenant};

fn routes(p: u16, tp: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: egress}}
spec:
  selector: {{istio: public-gw}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*.partner.test"]
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: ["*.partner.test"]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: partners}}
spec:
  hosts: ["*.partner.test"]
  location: MESH_EXTERNAL
  ports:
  - {{number: {p}, name: http, protocol: HTTP}}
  - {{number: {tp}, name: tls, protocol: TLS}}
  resolution: DYNAMIC_DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: partners}}
spec:
  hosts: ["*.partner.test"]
  gateways: [egress]
  http:
  - match: [{{uri: {{prefix: /elsewhere}}}}]
    rewrite: {{authority: internal.example.org}}
    route: [{{destination: {{host: "*.partner.test", port: {{number: {p}}}}}}}]
  - route: [{{destination: {{host: "*.partner.test", port: {{number: {p}}}}}}}]
  tls:
  - match: [{{sniHosts: ["*.partner.test"]}}]
    route: [{{destination: {{host: "*.partner.test", port: {{number: {tp}}}}}}}]
---
"#
    )
}

#[test]
fn dynamic_dns_reaches_the_requested_partner_host_and_nothing_else() {
    let dns = Dns::start(
        "api.partner.test",
        Answer::A(std::net::Ipv4Addr::LOCALHOST),
        300,
    );
    let be = Backends::new();
    let p = free_port();
    be.http("partner", p);
    // The partner's TLS server, reached by SNI passthrough: the client checks its certificate.
    let ca = crate::harness::certs::Ca::new("partner CA");
    let leaf = ca.server(&["api.partner.test"], 0xd1);
    let tp = free_port();
    be.tls_http("partner-tls", tp, &leaf.cert, &leaf.key);
    let ca_file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(ca_file.path(), &ca.pem).expect("write ca");
    let (port, tls_port) = (free_port(), free_port());
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &platform(
            &[(80, port), (443, tls_port)],
            &tenant("team-a", &["*.partner.test"], ""),
        ),
    );
    repo.write("tenants/team-a/egress.yaml", &routes(p, tp));
    let creds = tempfile::tempdir().expect("tmp");
    let wrap = dns.wrap();
    let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let _gw = Gateway::start_wrapped(&repo, creds.path(), &wrap);

    // The name the request asks for is resolved, and reached on the ServiceEntry's port.
    let r = Curl::new(&format!("http://api.partner.test:{port}/orders")).run();
    assert_eq!((r.status, r.backend().as_str()), (200, "partner"), "{r:?}");
    assert_eq!(r.json()["path"], "/orders");
    assert_eq!(
        r.json()["headers"]["host"],
        format!("api.partner.test:{port}").as_str()
    );
    // The answer is kept for its TTL: more requests, no more queries (one lookup asks for
    // A and AAAA records). The cluster's own cache, and its single lookup for requests that
    // ask at once, are unit-tested in `upstream/dynamic.rs`; here the resolver's cache would
    // answer too.
    let first = dns.queries();
    assert!((1..=2).contains(&first), "{first} queries for one lookup");
    for _ in 0..3 {
        let r = Curl::new(&format!("http://api.partner.test:{port}/")).run();
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(dns.queries(), first, "no lookup while the answer is fresh");

    // A covered name that does not resolve: 503, as Envoy's `dns_resolution_failure`.
    let r = Curl::new(&format!("http://nowhere.partner.test:{port}/")).run();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("DNS resolution failure"), "{r:?}");
    assert_eq!(be.counters.get("partner"), 4);

    // A route that sends another name to the cluster (here by rewriting the authority) does
    // not make the gateway look that name up or connect to it.
    let before = dns.queries();
    let r = Curl::new(&format!("http://api.partner.test:{port}/elsewhere")).run();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("no healthy upstream"), "{r:?}");
    assert_eq!(dns.queries(), before);
    assert_eq!(be.counters.get("partner"), 4);

    // TLS passthrough: the SNI names the host; the partner's own certificate reaches the
    // client, which checks it.
    let r = Curl::new(&format!("https://api.partner.test:{tls_port}/tls"))
        .cacert(ca_file.path())
        .run();
    assert_eq!(
        (r.status, r.backend().as_str()),
        (200, "partner-tls"),
        "{r:?}"
    );
    let r = Curl::new(&format!("https://nowhere.partner.test:{tls_port}/"))
        .arg("-k")
        .run();
    assert_eq!(
        r.status, 0,
        "a name that does not resolve closes the connection: {r:?}"
    );
}
