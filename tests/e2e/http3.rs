//! HTTP/3 end to end, with aioquic (an HTTP/3 client no one here wrote) against the HTTPS
//! servers of a gateway: the same routing, faults and access logs as over TCP, request
//! bodies streamed to the backend, MUTUAL, Alt-Svc on TCP, certificate rotation seen over
//! QUIC, and QUIC connections that survive reloads and finish their requests at shutdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::harness::certs::{Ca, write_credential};
use crate::harness::h3::{H3, get_once};
use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, service, tenant, wait_for};
use crate::protocol::wait_listening;

const WAIT: Duration = Duration::from_secs(10);

/// A gateway with one HTTPS port (SIMPLE and MUTUAL servers of three tenants), its backends,
/// and the files clients use.
struct Fx {
    repo: Repo,
    dir: tempfile::TempDir,
    be: Backends,
    gw: Gateway,
    port: u16,
    ca: Ca,
}

impl Fx {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_pem(&self) -> PathBuf {
        self.file("ca.pem")
    }

    fn creds(&self) -> PathBuf {
        self.file("credentials")
    }

    fn h3(&self, sni: &str) -> H3 {
        H3::connect(self.port, sni, &self.ca_pem(), None)
    }

    fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.file("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn platform(port: u16, dir: &Path, appliance: &str) -> String {
    format!(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {{name: appliance}}\nspec:\n  profile: empty\n  meshConfig: {{accessLogFile: {}/access.log, accessLogEncoding: JSON}}\n  components:\n    ingressGateways:\n    - name: public-gw\n      label: {{istio: public-gw}}\n      k8s: {{service: {{loadBalancerIP: 127.0.0.1, ports: [{{name: https, port: 443, targetPort: {port}}}]}}}}\n{appliance}---\n",
        dir.display()
    )
}

fn gateway(server: &str, hosts: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: https}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 443, name: {server}, protocol: HTTPS}}\n    hosts: {hosts}\n    tls: {tls}\n---\n"
    )
}

/// A VirtualService on the `https` Gateway for `host` to `dest`, with `/fault` aborted (418).
fn routes(name: &str, host: &str, dest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [https]\n  http:\n  - match: [{{uri: {{prefix: /fault}}}}]\n    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}\n    route: [{{destination: {{host: {dest}}}}}]\n  - route: [{{destination: {{host: {dest}}}}}]\n---\n"
    )
}

/// A tenant with a backend named `label` (service `<label>.<tenant>.internal`).
fn backend(be: &Backends, label: &str, tenant: &str) -> (String, String) {
    let port = free_port();
    be.http(label, port);
    let host = format!("{label}.{tenant}.internal");
    (service(label, &host, &[(port, "")]), host)
}

/// team-a: web.example.com and api.example.com (SIMPLE, one certificate); team-m:
/// mtls.example.com (MUTUAL); team-c: registered, nothing served yet.
fn fixture(appliance: &str) -> Fx {
    let port = free_port();
    let be = Backends::new();
    let repo = Repo::new();
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("gatehouse h3 test CA");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("ca");
    let creds = dir.path().join("credentials");
    write_credential(
        &creds.join("team-a/web-cert"),
        &ca.server(&["web.example.com", "api.example.com"], 0x1001),
        None,
    );
    write_credential(
        &creds.join("team-m/m-cert"),
        &ca.server(&["mtls.example.com"], 0x3003),
        Some(&ca.pem),
    );
    let client = ca.client("client-m", 0x51);
    std::fs::write(dir.path().join("client.crt"), &client.cert).expect("crt");
    std::fs::write(dir.path().join("client.key"), &client.key).expect("key");
    let stranger = Ca::new("someone else").client("client-m", 0x52);
    std::fs::write(dir.path().join("stranger.crt"), &stranger.cert).expect("crt");
    std::fs::write(dir.path().join("stranger.key"), &stranger.key).expect("key");

    let registry = tenant("team-a", &["web.example.com", "api.example.com"], "")
        + &tenant("team-m", &["mtls.example.com"], "")
        + &tenant("team-c", &["other.example.com"], "");
    repo.write(
        "gatehouse.yaml",
        &(platform(port, dir.path(), appliance) + &registry),
    );
    let (web_svc, web) = backend(&be, "web", "team-a");
    let (api_svc, api) = backend(&be, "api", "team-a");
    repo.write(
        "tenants/team-a/all.yaml",
        &(gateway(
            "https-web",
            "[\"web.example.com\", \"api.example.com\"]",
            "{mode: SIMPLE, credentialName: web-cert}",
        ) + &web_svc
            + &api_svc
            + &routes("web", "web.example.com", &web)
            + &routes("api", "api.example.com", &api)),
    );
    let (m_svc, m) = backend(&be, "mtls", "team-m");
    repo.write(
        "tenants/team-m/all.yaml",
        &(gateway(
            "https-m",
            "[\"mtls.example.com\"]",
            "{mode: MUTUAL, credentialName: m-cert}",
        ) + &m_svc
            + &routes("m", "mtls.example.com", &m)),
    );
    let gw = Gateway::start(&repo, &creds);
    wait_listening(&[port]);
    Fx {
        repo,
        dir,
        be,
        gw,
        port,
        ca,
    }
}

/// The sum of the bytes h3client.py sends for a body of `n` bytes.
fn pattern_sum(n: u64) -> u64 {
    (0..n).map(|i| i % 256).sum()
}

#[test]
fn http3_serves_https_through_the_same_request_path() {
    let fx = fixture("");
    let mut c = fx.h3("web.example.com");

    let r = c.get("/hello?x=1");
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["headers"]["x-backend"], "web", "{r}");
    assert!(r["headers"].get("alt-svc").is_none(), "{r}");
    let seen: serde_json::Value =
        serde_json::from_str(r["body"].as_str().expect("body")).expect("echo");
    assert_eq!(seen["path"], "/hello?x=1");
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["body_len"], 0);
    // Upstreams keep their own protocol.
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        seen["headers"]["host"],
        format!("web.example.com:{}", fx.port)
    );

    // 10 MB streamed through to the backend, on the same connection.
    let size = 10 * 1024 * 1024;
    let r = c.send(json!({"method": "POST", "path": "/upload", "body_size": size}));
    assert_eq!(r["status"], 200, "{r}");
    let seen: serde_json::Value =
        serde_json::from_str(r["body"].as_str().expect("body")).expect("echo");
    assert_eq!(seen["body_len"], size, "{seen}");
    assert_eq!(seen["body_sum"], pattern_sum(size), "{seen}");
    assert_eq!(seen["headers"]["content-length"], size.to_string());

    // Routing by :authority: another host of the same server, same connection.
    let r = c.send(json!({"path": "/a", "authority": format!("api.example.com:{}", fx.port)}));
    assert_eq!(
        (r["status"].clone(), r["headers"]["x-backend"].clone()),
        (json!(200), json!("api")),
        "{r}"
    );
    // A host this server does not serve.
    let r = c.send(json!({"path": "/", "authority": format!("nobody.example.com:{}", fx.port)}));
    assert_eq!(r["status"], 404, "{r}");

    // Faults apply: aborted before the backend.
    let before = fx.be.counters.get("web");
    let r = c.get("/fault/x");
    assert_eq!(r["status"], 418, "{r}");
    assert_eq!(fx.be.counters.get("web"), before);

    // TCP responses of the same server advertise HTTP/3 on the same port.
    let tcp = Curl::new(&format!("https://web.example.com:{}/tcp", fx.port))
        .cacert(&fx.ca_pem())
        .run();
    assert_eq!(tcp.status, 200, "{tcp:?}");
    assert_eq!(
        tcp.header("alt-svc"),
        Some(format!("h3=\":{}\"", fx.port).as_str())
    );

    // Access logs record HTTP/3 requests as such.
    let lines = wait_for("the requests in the access log", WAIT, || {
        let l = fx.access_log();
        let h3 = l.iter().filter(|e| e["protocol"] == "HTTP/3").count();
        (h3 >= 5 && l.iter().any(|e| e["path"] == "/tcp")).then_some(l)
    });
    let post = lines
        .iter()
        .find(|e| e["path"] == "/upload")
        .expect("the POST");
    assert_eq!(post["protocol"], "HTTP/3");
    assert_eq!(post["bytes_received"], size);
    assert_eq!(post["tenant"], "team-a");
    assert_eq!(post["requested_server_name"], "web.example.com");
    let fault = lines
        .iter()
        .find(|e| e["path"] == "/fault/x")
        .expect("the fault");
    assert_eq!(fault["response_flags"], "FI");
    let tcp_line = lines
        .iter()
        .find(|e| e["path"] == "/tcp")
        .expect("the TCP request");
    assert_ne!(tcp_line["protocol"], "HTTP/3");
}

#[test]
fn http3_mutual_verifies_the_client_certificate() {
    let fx = fixture("");
    let ca = fx.ca_pem();
    let (cert, key) = (fx.file("client.crt"), fx.file("client.key"));
    let r = H3::connect(fx.port, "mtls.example.com", &ca, Some((&cert, &key))).get("/m");
    assert_eq!(
        (r["status"].clone(), r["headers"]["x-backend"].clone()),
        (json!(200), json!("mtls")),
        "{r}"
    );

    // Without a certificate, and with one another CA signed: no response.
    let r = H3::connect(fx.port, "mtls.example.com", &ca, None).get("/m");
    assert!(r.get("error").is_some(), "{r}");
    let (cert, key) = (fx.file("stranger.crt"), fx.file("stranger.key"));
    let r = H3::connect(fx.port, "mtls.example.com", &ca, Some((&cert, &key))).get("/m");
    assert!(r.get("error").is_some(), "{r}");
    assert_eq!(fx.be.counters.get("mtls"), 1);

    // The SIMPLE server on the same port still needs no certificate.
    let r = get_once(fx.port, "web.example.com", &ca, "/");
    assert_eq!(r["status"], 200, "{r}");
}

#[test]
fn http3_sees_a_rotated_certificate() {
    let fx = fixture("");
    let r = get_once(fx.port, "web.example.com", &fx.ca_pem(), "/");
    assert_eq!(
        (r["status"].clone(), r["peer_serial"].clone()),
        (json!(200), json!("1001")),
        "{r}"
    );
    write_credential(
        &fx.creds().join("team-a/web-cert"),
        &fx.ca
            .server(&["web.example.com", "api.example.com"], 0x1002),
        None,
    );
    // The next QUIC handshake serves the new certificate, with no reload.
    wait_for("the rotated certificate over QUIC", WAIT, || {
        let r = get_once(fx.port, "web.example.com", &fx.ca_pem(), "/");
        (r["peer_serial"] == "1002" && r["status"] == 200).then_some(())
    });
}

#[test]
fn http3_connection_survives_a_reload_of_another_tenant() {
    let fx = fixture("");
    let mut c = fx.h3("web.example.com");
    let first = c.get("/before");
    assert_eq!(first["status"], 200, "{first}");

    // team-c adds an HTTPS server on the same port: the listener changes, the web server
    // does not.
    write_credential(
        &fx.creds().join("team-c/other-cert"),
        &fx.ca.server(&["other.example.com"], 0x4004),
        None,
    );
    let (svc, other) = backend(&fx.be, "other", "team-c");
    fx.repo.write(
        "tenants/team-c/all.yaml",
        &(gateway(
            "https-other",
            "[\"other.example.com\"]",
            "{mode: SIMPLE, credentialName: other-cert}",
        ) + &svc
            + &routes("other", "other.example.com", &other)),
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");

    // Same connection, still serving.
    let after = c.get("/after");
    assert_eq!(after["status"], 200, "{after}");
    assert_eq!(after["conn"], first["conn"]);
    // And the new server answers over HTTP/3 too.
    let r = get_once(fx.port, "other.example.com", &fx.ca_pem(), "/");
    assert_eq!(
        (r["status"].clone(), r["headers"]["x-backend"].clone()),
        (json!(200), json!("other")),
        "{r}"
    );
}

#[test]
fn http3_shutdown_finishes_requests_in_flight() {
    let mut fx = fixture("");
    let port = fx.port;
    let ca = fx.ca_pem();
    let slow = std::thread::spawn(move || {
        let mut c = H3::connect(port, "web.example.com", &ca, None);
        c.send(json!({"path": "/slow", "headers": {"x-test-delay-ms": "1500"}}))
    });
    wait_for("the slow request at the backend", WAIT, || {
        (fx.be.counters.get("web") == 1).then_some(())
    });
    fx.gw.signal(15);
    let r = slow.join().expect("client thread");
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(fx.gw.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn http3_alt_svc_can_be_turned_off() {
    let fx = fixture("      appliance: {http3: {altSvc: false}}\n");
    let tcp = Curl::new(&format!("https://web.example.com:{}/", fx.port))
        .cacert(&fx.ca_pem())
        .run();
    assert_eq!(tcp.status, 200, "{tcp:?}");
    assert_eq!(tcp.header("alt-svc"), None, "{tcp:?}");
    // HTTP/3 is still served; it is only not advertised.
    let r = get_once(fx.port, "web.example.com", &fx.ca_pem(), "/");
    assert_eq!(r["status"], 200, "{r}");
}

#[test]
fn http3_reload_removing_the_https_port_drains_its_connections() {
    let fx = fixture("");
    let (port, ca) = (fx.port, fx.ca_pem());
    let client = std::thread::spawn(move || {
        let mut c = H3::connect(port, "web.example.com", &ca, None);
        let slow = c.send(json!({"path": "/slow", "headers": {"x-test-delay-ms": "1500"}}));
        (slow, c.get("/next"))
    });
    wait_for("the slow request at the backend", WAIT, || {
        (fx.be.counters.get("web") == 1).then_some(())
    });
    // No HTTPS server is left on the port: its QUIC endpoint goes, after a GOAWAY.
    fx.repo.remove("tenants/team-a/all.yaml");
    fx.repo.remove("tenants/team-m/all.yaml");
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    let (slow, next) = client.join().expect("client thread");
    assert_eq!(
        slow["status"], 200,
        "the request in flight finishes: {slow}"
    );
    assert!(
        next.get("error").is_some(),
        "no new request after GOAWAY: {next}"
    );
    assert_eq!(fx.be.counters.get("web"), 1);
}

#[test]
fn http3_early_data_is_off_by_default_and_allowed_per_group() {
    for (appliance, allowed) in [
        ("", false),
        ("      appliance: {http3: {earlyData: true}}\n", true),
    ] {
        let fx = fixture(appliance);
        let ticket = fx.file("ticket");
        let r = H3::resume(fx.port, "web.example.com", &fx.ca_pem(), &ticket).get("/first");
        assert_eq!(
            (r["status"].clone(), r["resumed"].clone()),
            (json!(200), json!(false)),
            "{r}"
        );
        wait_for("a session ticket", WAIT, || ticket.exists().then_some(()));
        // Resumed either way; the first request rides in 0-RTT only when the group allows it.
        let r = H3::resume(fx.port, "web.example.com", &fx.ca_pem(), &ticket).get("/second");
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["resumed"], true, "{r}");
        assert_eq!(r["early_data"], allowed, "{appliance:?}: {r}");
    }
}

#[test]
fn http3_early_post_gets_425_and_succeeds_after_the_handshake() {
    let fx = fixture("      appliance: {http3: {earlyData: true}}\n");
    let ticket = fx.file("ticket");
    let r = H3::resume(fx.port, "web.example.com", &fx.ca_pem(), &ticket).get("/first");
    assert_eq!(r["status"], 200, "{r}");
    wait_for("a session ticket", WAIT, || ticket.exists().then_some(()));
    let mut h3 = H3::resume(fx.port, "web.example.com", &fx.ca_pem(), &ticket);
    // The first request of a resumed connection rides in 0-RTT: a POST could be replayed by
    // an attacker, so it is refused with 425 (RFC 8470), never forwarded.
    let post = json!({"method": "POST", "path": "/pay", "body_size": 1000});
    let r = h3.send(post.clone());
    assert_eq!(
        (r["status"].clone(), r["early_data"].clone()),
        (json!(425), json!(true)),
        "{r}"
    );
    // The client retries once the handshake is done, as RFC 8470 says: served.
    let r = h3.send(post);
    assert_eq!(r["status"], 200, "{r}");
}

/// `gatehouse_quic_connections` from `/metrics`.
fn quic_connections(gw: &Gateway) -> Option<u64> {
    let (_, body) = gw.admin_get("/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix("gatehouse_quic_connections "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn http3_idle_connections_close_after_the_group_idle_timeout() {
    let fx = fixture("      appliance: {http3: {idleTimeout: 1s}}\n");
    let mut h3 = fx.h3("web.example.com");
    assert_eq!(h3.get("/one")["status"], 200);
    assert_eq!(quic_connections(&fx.gw), Some(1));
    // aioquic's own idle timeout is 60 s: the gateway's 1 s is what closes it.
    wait_for("the idle QUIC connection closed", WAIT, || {
        (quic_connections(&fx.gw) == Some(0)).then_some(())
    });
    let r = h3.get("/two");
    assert!(
        r.get("error").is_some(),
        "the idle connection still answered: {r}"
    );
    // A new connection is served.
    assert_eq!(fx.h3("web.example.com").get("/three")["status"], 200);
}

#[test]
fn http3_connection_limit_refuses_the_connection_over_it() {
    let fx = fixture("      appliance: {http3: {maxConnections: 1}}\n");
    let mut first = fx.h3("web.example.com");
    assert_eq!(first.get("/one")["status"], 200);
    let r = get_once(fx.port, "web.example.com", &fx.ca_pem(), "/two");
    assert!(r.get("error").is_some(), "a second connection: {r}");
    // TCP is not limited by the QUIC count.
    let tcp = Curl::new(&format!("https://web.example.com:{}/", fx.port))
        .cacert(&fx.ca_pem())
        .run();
    assert_eq!(tcp.status, 200, "{tcp:?}");
    drop(first);
    wait_for("room for a new QUIC connection", WAIT, || {
        let r = get_once(fx.port, "web.example.com", &fx.ca_pem(), "/three");
        (r["status"] == 200).then_some(())
    });
}
