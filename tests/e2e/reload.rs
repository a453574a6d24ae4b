//! Reload: configuration changes apply with one swap, bad tenants keep their last good
//! configuration, listeners are diffed, nothing in flight is dropped, shutdown drains.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant, wait_for};

struct Fx {
    repo: Repo,
    _creds: tempfile::TempDir,
    be: Backends,
    gw: Gateway,
    /// Listening port for Gateway port 80.
    web: u16,
    /// Listening port for Gateway port 8080 (team-b's own listener when present).
    extra: u16,
    pa: u16,
    pb: u16,
}

fn gateway_doc(name: &str, port: u16, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}\n    hosts: [\"{host}\"]\n---\n"
    )
}

fn route_doc(name: &str, host: &str, gw: &str, prefix: &str, dest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [{gw}]\n  http:\n  - match: [{{uri: {{prefix: {prefix}}}}}]\n    route: [{{destination: {{host: {dest}}}}}]\n---\n"
    )
}

fn fixture() -> Fx {
    let (web, extra, pa, pb) = (free_port(), free_port(), free_port(), free_port());
    let be = Backends::new();
    be.http("a", pa);
    be.http("b", pb);
    let repo = Repo::new();
    let tenants =
        tenant("team-a", &["a.example.com"], "") + &tenant("team-b", &["b.example.com"], "");
    repo.write(
        "gatehouse.yaml",
        &platform(&[(80, web), (8080, extra)], &tenants),
    );
    repo.write(
        "tenants/team-a/all.yaml",
        &(gateway_doc("web", 80, "a.example.com")
            + &service("a", "a.team-a.internal", &[(pa, "")])
            + &route_doc("a", "a.example.com", "web", "/", "a.team-a.internal")),
    );
    repo.write(
        "tenants/team-b/all.yaml",
        &(gateway_doc("web", 80, "b.example.com")
            + &service("b", "b.team-b.internal", &[(pb, "")])
            + &route_doc("b", "b.example.com", "web", "/", "b.team-b.internal")),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(&repo, creds.path());
    Fx {
        repo,
        _creds: creds,
        be,
        gw,
        web,
        extra,
        pa,
        pb,
    }
}

fn generation(gw: &Gateway) -> u64 {
    gw.status()["generation"].as_u64().unwrap_or(0)
}

#[test]
fn reload_applies_changes_and_a_broken_tenant_keeps_its_last_good_config() {
    let fx = fixture();
    let a = |p: &str| Curl::new(&format!("http://a.example.com:{}{p}", fx.web)).run();
    let b = |p: &str| Curl::new(&format!("http://b.example.com:{}{p}", fx.web)).run();
    assert_eq!(a("/").backend(), "a");
    assert_eq!(b("/").backend(), "b");

    // team-a adds a second VirtualService on its host; it merges before the catch-all.
    fx.repo.write(
        "tenants/team-a/extra.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a-extra}\nspec:\n  hosts: [\"a.example.com\"]\n  gateways: [web]\n  http:\n  - match: [{uri: {prefix: /new}}]\n    directResponse: {status: 202, body: {string: fresh}}\n",
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    assert_eq!(a("/new").status, 202);

    // team-b breaks its file: it keeps its last good routes; team-a still moves on.
    fx.repo.write("tenants/team-b/broken.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [\"b.example.com\"]\n  gateways: [web]\n  http:\n  - route:\n    - destnation: {host: b.team-b.internal}\n");
    fx.repo.write(
        "tenants/team-a/extra.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a-extra}\nspec:\n  hosts: [\"a.example.com\"]\n  gateways: [web]\n  http:\n  - match: [{uri: {prefix: /new}}]\n    directResponse: {status: 203, body: {string: fresher}}\n",
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        a("/new").status,
        203,
        "team-a's change applies despite team-b's error"
    );
    assert_eq!(b("/").backend(), "b", "team-b keeps its last good routes");
    let st = fx.gw.status();
    let tb = &st["tenants"]["team-b"];
    assert_eq!(tb["state"], "lastGood");
    let errors: Vec<String> = tb["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    let err = errors
        .iter()
        .find(|e| e.contains("unknown field"))
        .cloned()
        .unwrap_or_else(|| format!("{errors:?}"));
    assert!(err.starts_with("tenants/team-b/broken.yaml:9:7: error: team-b/VirtualService/bad: spec.http[0].route[0].destnation: unknown field"), "{err}");
    assert!(err.contains("did you mean \"destination\""), "{err}");
    assert_eq!(st["tenants"]["team-a"]["state"], "applied");

    // A broken platform refuses the whole revision: everything keeps serving.
    let good_platform =
        std::fs::read_to_string(fx.repo.path().join("gatehouse.yaml")).expect("read");
    fx.repo.write(
        "gatehouse.yaml",
        &good_platform.replace("kind: IstioOperator", "kind: IstioOperatr"),
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("platform configuration has errors"), "{body}");
    assert_eq!(a("/new").status, 203);
    assert_eq!(b("/").backend(), "b");
    assert!(
        fx.gw.status()["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("platform"))
    );

    // Fixed again: team-b recovers, without a restart.
    fx.repo.write("gatehouse.yaml", &good_platform);
    fx.repo.remove("tenants/team-b/broken.yaml");
    let (code, _) = fx.gw.reload();
    assert_eq!(code, 200);
    assert_eq!(fx.gw.status()["tenants"]["team-b"]["state"], "applied");
    let _ = (fx.pa, fx.pb);
}

#[test]
fn sighup_reloads() {
    let fx = fixture();
    let g0 = generation(&fx.gw);
    fx.repo.write(
        "tenants/team-a/extra.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a-extra}\nspec:\n  hosts: [\"a.example.com\"]\n  gateways: [web]\n  http:\n  - match: [{uri: {prefix: /hup}}]\n    directResponse: {status: 204}\n",
    );
    fx.gw.signal(1);
    wait_for("generation after SIGHUP", Duration::from_secs(10), || {
        (generation(&fx.gw) > g0).then_some(())
    });
    assert_eq!(
        Curl::new(&format!("http://a.example.com:{}/hup", fx.web))
            .run()
            .status,
        204
    );
}

/// Sends `GET path` on an open keep-alive connection and returns the status.
fn keepalive_get(s: &mut TcpStream, host: &str, path: &str) -> u16 {
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
}

#[test]
fn listeners_are_diffed_and_unchanged_connections_survive() {
    let fx = fixture();
    let mut conn = TcpStream::connect(("127.0.0.1", fx.web)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(keepalive_get(&mut conn, "a.example.com", "/"), 200);
    // team-b opens a listener of its own on Gateway port 8080.
    fx.repo.write(
        "tenants/team-b/port8080.yaml",
        &(gateway_doc("alt", 8080, "b.example.com")
            + &route_doc("b-alt", "b.example.com", "alt", "/", "b.team-b.internal")),
    );
    assert_eq!(fx.gw.reload().0, 200);
    let r = wait_for("new listener", Duration::from_secs(5), || {
        let r = Curl::new(&format!("http://b.example.com:{}/", fx.extra)).run();
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.backend(), "b");
    // The unchanged listener kept its connection.
    assert_eq!(keepalive_get(&mut conn, "a.example.com", "/"), 200);
    // Removing it closes the port; the first listener and its connection are untouched.
    fx.repo.remove("tenants/team-b/port8080.yaml");
    assert_eq!(fx.gw.reload().0, 200);
    wait_for("listener removed", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", fx.extra))
            .is_err()
            .then_some(())
    });
    assert_eq!(keepalive_get(&mut conn, "a.example.com", "/"), 200);
}

#[test]
fn reload_under_load_drops_nothing() {
    let fx = fixture();
    let url = format!("http://127.0.0.1:{}/load", fx.web);
    let load = std::thread::spawn(move || {
        Command::new("h2load")
            .args([
                "--h1",
                "-D",
                "30",
                "-c",
                "8",
                "-H",
                ":authority: a.example.com",
            ])
            .arg(url)
            .output()
            .expect("h2load")
    });
    // 20 reloads spread over the run, alternately adding and removing team-b's listener
    // and routes.
    let start = Instant::now();
    let mut last_gen = generation(&fx.gw);
    for i in 0..20u32 {
        let at = Duration::from_millis(1000 + u64::from(i) * 1400);
        while start.elapsed() < at {
            std::thread::sleep(Duration::from_millis(20));
        }
        if i % 2 == 0 {
            fx.repo.write(
                "tenants/team-b/port8080.yaml",
                &(gateway_doc("alt", 8080, "b.example.com")
                    + &route_doc(
                        "b-alt",
                        "b.example.com",
                        "alt",
                        &format!("/r{i}"),
                        "b.team-b.internal",
                    )),
            );
        } else {
            fx.repo.remove("tenants/team-b/port8080.yaml");
        }
        let (code, body) = fx.gw.reload();
        assert_eq!(code, 200, "reload {i}: {body}");
        let g = generation(&fx.gw);
        assert!(g > last_gen, "reload {i} did not produce a new generation");
        last_gen = g;
    }
    let out = load.join().expect("load thread");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_default()
        .to_string();
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains(" 0 failed, 0 errored, 0 timeout"), "{line}");
    assert!(codes.contains(" 0 3xx, 0 4xx, 0 5xx"), "{codes}");
    let done: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(done > 1000, "too few requests: {line}");
    assert_eq!(fx.be.counters.get("b"), 0);
    assert!(fx.be.counters.get("a") >= done);
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let mut fx = fixture();
    let url = format!("http://a.example.com:{}/slow", fx.web);
    let slow = std::thread::spawn(move || Curl::new(&url).header("x-test-delay-ms: 1500").run());
    // Wait until the request reached the backend, then ask the gateway to stop.
    wait_for(
        "slow request at the backend",
        Duration::from_secs(5),
        || (fx.be.counters.get("a") > 0).then_some(()),
    );
    fx.gw.signal(15);
    let r = slow.join().expect("client");
    assert_eq!(r.status, 200, "in-flight request finished during drain");
    assert_eq!(r.backend(), "a");
    assert_eq!(fx.gw.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(TcpStream::connect(("127.0.0.1", fx.web)).is_err());
}

#[test]
fn a_request_in_flight_finishes_on_the_configuration_it_started_with() {
    let fx = fixture();
    let doc = |tag: &str, timeout: &str| {
        gateway_doc("web", 80, "a.example.com")
            + &service("a", "a.team-a.internal", &[(fx.pa, "")])
            + &service("b", "b.team-a.internal", &[(fx.pb, "")])
            + &format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a}}\nspec:\n  hosts: [\"a.example.com\"]\n  gateways: [web]\n  http:\n  - timeout: {timeout}\n    headers:\n      request: {{set: {{x-config: {tag}}}}}\n      response: {{set: {{x-config: {tag}}}}}\n    route: [{{destination: {{host: {tag}.team-a.internal}}}}]\n"
            )
    };
    fx.repo.write("tenants/team-a/all.yaml", &doc("a", "10s"));
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    let url = format!("http://a.example.com:{}/slow", fx.web);
    let before = fx.be.counters.get("a");
    let slow = {
        let url = url.clone();
        std::thread::spawn(move || Curl::new(&url).header("x-test-delay-ms: 4000").run())
    };
    wait_for(
        "the slow request at backend a",
        Duration::from_secs(10),
        || (fx.be.counters.get("a") > before).then_some(()),
    );

    // The next configuration sends the route to b, with another tag and a 300 ms timeout.
    fx.repo.write("tenants/team-a/all.yaml", &doc("b", "300ms"));
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    assert!(
        !slow.is_finished(),
        "the slow request must still be in flight when the new configuration is served"
    );
    let now = Curl::new(&url).run();
    assert_eq!(now.backend(), "b");
    assert_eq!(now.header("x-config"), Some("b"));
    let late = Curl::new(&url).header("x-test-delay-ms: 1500").run();
    assert_eq!(late.status, 504, "the new 300 ms timeout: {}", late.body);

    // The request that started before the swap keeps its route's timeout (10 s, not
    // 300 ms), its backend and its header rules, both ways.
    let r = slow.join().expect("slow request");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), "a");
    assert_eq!(r.json()["headers"]["x-config"], "a");
    assert_eq!(r.header("x-config"), Some("a"));
}
