//! L4 end to end: TCP routes (weights, 100 MB both ways, half-close), TLS passthrough beside
//! termination on one port (and AUTO_PASSTHROUGH), the egress group (fixed source address,
//! registry-only, HTTP CONNECT), and per-tenant connection quotas with a noisy neighbour.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::certs::{Ca, write_credential};
use crate::harness::tools::{keepalive_within_a_minute, served_subject, timers_to};
use crate::harness::{Backends, Gateway, Repo, free_port, wait_for};
use crate::protocol::wait_listening;

const T: Duration = Duration::from_secs(20);

fn group(kind: &str, name: &str, ports: &[(u16, u16)], appliance: &str) -> String {
    let mut s = format!(
        "    - name: {name}\n      label: {{istio: {name}}}\n      k8s:\n        service:\n          loadBalancerIP: 127.0.0.1\n          ports:\n"
    );
    for (p, t) in ports {
        s.push_str(&format!(
            "          - {{name: p{p}, port: {p}, targetPort: {t}}}\n"
        ));
    }
    s.push_str(appliance);
    format!("    {kind}:\n{s}")
}

fn operator(groups: &str, tenants: &str) -> String {
    format!(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {{name: appliance}}\nspec:\n  profile: empty\n  components:\n{groups}---\n{tenants}"
    )
}

fn tenant(name: &str, hosts: &str, gateways: &str, extra: &str) -> String {
    format!(
        "apiVersion: gatehouse.dev/v1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n{extra}---\n"
    )
}

fn se(name: &str, host: &str, port: u16, proto: &str, target: u16, labels: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  ports: [{{number: {port}, name: p, protocol: {proto}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{p: {target}}}{labels}}}]\n---\n"
    )
}

fn start(repo: &Repo, creds: &std::path::Path, ports: &[u16]) -> Gateway {
    let gw = Gateway::start(repo, creds);
    wait_listening(ports);
    gw
}

// --- TCP ----------------------------------------------------------------------------------

struct TcpFx {
    _repo: Repo,
    _creds: tempfile::TempDir,
    _be: Backends,
    _gw: Gateway,
    port: u16,
    half_port: u16,
    half_got: Arc<Mutex<Vec<u8>>>,
}

/// A backend that greets, closes its write half at once, and keeps reading until the
/// client's EOF: what it read is kept for the test.
fn half_closer(port: u16) -> Arc<Mutex<Vec<u8>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let l = crate::harness::bind_loopback(port);
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                let _ = s.write_all(b"closing my side\n");
                let _ = s.shutdown(Shutdown::Write);
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                g.lock().expect("lock").extend_from_slice(&buf);
            });
        }
    });
    got
}

/// A repository whose group `public-gw` listens for TCP on 31400 and 31401 (served on
/// `first` and `second`) for team-tcp, and the team's Gateway for both ports, to which the
/// test adds its routes and services.
fn tcp_repo(first: u16, second: u16) -> (Repo, String) {
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &operator(
            &group(
                "ingressGateways",
                "public-gw",
                &[(31400, first), (31401, second)],
                "",
            ),
            &tenant(
                "team-tcp",
                "[\"tcp.example.com\"]",
                "[public-gw]",
                "  tcpPorts: [31400, 31401]\n",
            ),
        ),
    );
    let gateway = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tcp}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n  - port: {number: 31401, name: tcp-second, protocol: TCP}\n    hosts: [\"*\"]\n---\n",
    );
    (repo, gateway)
}

fn tcp_fixture() -> TcpFx {
    let (port, half_port) = (free_port(), free_port());
    let (pa, pb, ph) = (free_port(), free_port(), free_port());
    let be = Backends::new();
    be.tcp_echo("echo-a", pa);
    be.tcp_echo("echo-b", pb);
    let half_got = half_closer(ph);
    let (repo, mut t) = tcp_repo(port, half_port);
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp}\nspec:\n  hosts: [\"*\"]\n  gateways: [tcp]\n  tcp:\n  - match: [{port: 31400}]\n    route:\n    - {destination: {host: echo.team-tcp.internal, subset: a}, weight: 20}\n    - {destination: {host: echo.team-tcp.internal, subset: b}, weight: 80}\n  - match: [{port: 31401}]\n    route: [{destination: {host: half.team-tcp.internal}}]\n---\n",
    );
    t.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo}}\nspec:\n  hosts: [echo.team-tcp.internal]\n  location: MESH_INTERNAL\n  ports: [{{number: 9000, name: p, protocol: TCP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{p: {pa}}}, labels: {{v: a}}}}\n  - {{address: 127.0.0.1, ports: {{p: {pb}}}, labels: {{v: b}}}}\n---\n"
    ));
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo}\nspec:\n  host: echo.team-tcp.internal\n  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 2s, idleTimeout: 1h}}}\n  subsets:\n  - {name: a, labels: {v: a}}\n  - {name: b, labels: {v: b}}\n---\n",
    );
    t.push_str(&se("half", "half.team-tcp.internal", 9001, "TCP", ph, ""));
    repo.write("tenants/team-tcp/tcp.yaml", &t);
    let creds = tempfile::tempdir().expect("tmp");
    let gw = start(&repo, creds.path(), &[port, half_port]);
    TcpFx {
        _repo: repo,
        _creds: creds,
        _be: be,
        _gw: gw,
        port,
        half_port,
        half_got,
    }
}

fn greeting(port: u16) -> (TcpStream, String) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("greeting");
    (s, line.trim().to_string())
}

/// The greeting of a TCP echo reached through `port`, connecting from `source`.
fn greeting_from(source: [u8; 4], port: u16) -> String {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from((source, 0)).into())
        .expect("bind");
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(0) => "closed".into(),
        Ok(_) => line.trim().to_string(),
        Err(e) => format!("no answer: {e}"),
    }
}

/// `sourceSubnet` and `destinationSubnets` steer a TCP connection by its addresses: rules
/// are tried in order, those that depend on addresses first, and the first that does not
/// serves the rest.
#[test]
fn tcp_rules_by_source_and_destination_subnet() {
    let (port, other) = (free_port(), free_port());
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let be = Backends::new();
    be.tcp_echo("echo-a", pa);
    be.tcp_echo("echo-b", pb);
    be.tcp_echo("echo-c", pc);
    let (repo, mut t) = tcp_repo(port, other);
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp}\nspec:\n  hosts: [\"*\"]\n  gateways: [tcp]\n  tcp:\n  - match: [{port: 31400, sourceSubnet: 127.0.0.2/32}, {port: 31400, sourceSubnet: 127.0.0.4}]\n    route: [{destination: {host: a.team-tcp.internal}}]\n  - match: [{port: 31400, destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: c.team-tcp.internal}}]\n  - match: [{port: 31400, sourceSubnet: 127.0.0.3, destinationSubnets: [\"127.0.0.0/8\"]}]\n    route: [{destination: {host: c.team-tcp.internal}}]\n  - match: [{port: 31400}]\n    route: [{destination: {host: b.team-tcp.internal}}]\n  - match: [{port: 31401, sourceSubnet: 127.0.0.2}]\n    route: [{destination: {host: a.team-tcp.internal}}]\n---\n",
    );
    t.push_str(&se("a", "a.team-tcp.internal", 9000, "TCP", pa, ""));
    t.push_str(&se("b", "b.team-tcp.internal", 9000, "TCP", pb, ""));
    t.push_str(&se("c", "c.team-tcp.internal", 9000, "TCP", pc, ""));
    repo.write("tenants/team-tcp/tcp.yaml", &t);
    let creds = tempfile::tempdir().expect("tmp");
    let _gw = start(&repo, creds.path(), &[port, other]);

    assert_eq!(greeting_from([127, 0, 0, 2], port), "echo-a");
    assert_eq!(
        greeting_from([127, 0, 0, 4], port),
        "echo-a",
        "the rule's second match"
    );
    assert_eq!(
        greeting_from([127, 0, 0, 3], port),
        "echo-c",
        "source and destination"
    );
    assert_eq!(
        greeting_from([127, 0, 0, 1], port),
        "echo-b",
        "the rule for the rest"
    );
    assert_eq!(greeting_from([127, 0, 0, 5], port), "echo-b");
    // A port whose only rule depends on the source: other clients are closed.
    assert_eq!(greeting_from([127, 0, 0, 2], other), "echo-a");
    assert_eq!(
        greeting_from([127, 0, 0, 1], other),
        "closed",
        "no rule admits it"
    );
    assert_eq!(be.counters.get("echo-c"), 1);
}

#[test]
fn tcp_weighted_split_100mb_both_ways_and_half_close() {
    let fx = tcp_fixture();
    // 20/80 over 1,000 connections.
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..1000 {
        let (_s, name) = greeting(fx.port);
        *seen.entry(name).or_default() += 1;
    }
    let a = f64::from(seen.get("echo-a").copied().unwrap_or(0)) / 10.0;
    let b = f64::from(seen.get("echo-b").copied().unwrap_or(0)) / 10.0;
    println!("tcp weighted split over 1000 connections: a {a:.1}% b {b:.1}%");
    assert!((a - 20.0).abs() <= 5.0, "{seen:?}");
    assert!((b - 80.0).abs() <= 5.0, "{seen:?}");

    // 100 MB up and the same 100 MB echoed down, byte for byte.
    const N: usize = 100 * 1024 * 1024;
    let s = TcpStream::connect(("127.0.0.1", fx.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut chunk = vec![0u8; 1 << 20];
        let mut hash = Fnv::default();
        for _ in 0..N / chunk.len() {
            for b in &mut chunk {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            hash.update(&chunk);
            w.write_all(&chunk).expect("write");
        }
        w.shutdown(Shutdown::Write).expect("half-close");
        hash.0
    });
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut line = String::new();
    r.read_line(&mut line).expect("greeting");
    let mut echoed = vec![0u8; N];
    r.read_exact(&mut echoed).expect("100 MB echoed back");
    let mut tail = String::new();
    r.read_to_string(&mut tail).expect("tail");
    let sent = writer.join().expect("writer");
    let mut h = Fnv::default();
    h.update(&echoed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "tcp 100 MB each way through the gateway (debug build): {secs:.2} s, {:.0} MB/s per direction",
        100.0 / secs
    );
    assert_eq!(h.0, sent, "echoed bytes differ from the bytes sent");
    // The backend saw all 100 MB and the client's half-close ("bye <n>" comes after EOF).
    assert_eq!(tail.trim(), format!("bye {N}"));

    // The other direction: the backend closes its write half first; the client still sends.
    let (mut s, line) = greeting(fx.half_port);
    assert_eq!(line, "closing my side");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("EOF passed on to the client");
    assert!(rest.is_empty());
    s.write_all(b"still talking after your EOF")
        .expect("the client's half stays open");
    s.shutdown(Shutdown::Write).expect("close");
    wait_for("the backend to read after its half-close", T, || {
        (fx.half_got.lock().expect("lock").as_slice() == b"still talking after your EOF")
            .then_some(())
    });
}

/// FNV-1a, enough to compare 100 MB without keeping two copies around.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn update(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

// --- SNI: terminate and pass through on one port -----------------------------------------

/// A TCP route whose DestinationRule sets `maxConnectionDuration`, beside one whose rule
/// sets `tcpKeepalive`.
#[test]
fn tcp_keepalive_and_max_connection_duration_from_the_destination_rule() {
    let (port, plain_port) = (free_port(), free_port());
    let (pl, pp) = (free_port(), free_port());
    let be = Backends::new();
    be.tcp_echo("limited", pl);
    be.tcp_echo("plain", pp);
    let (repo, mut t) = tcp_repo(port, plain_port);
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp}\nspec:\n  hosts: [\"*\"]\n  gateways: [tcp]\n  tcp:\n  - match: [{port: 31400}]\n    route: [{destination: {host: limited.team-tcp.internal}}]\n  - match: [{port: 31401}]\n    route: [{destination: {host: plain.team-tcp.internal}}]\n---\n",
    );
    t.push_str(&se(
        "limited",
        "limited.team-tcp.internal",
        9000,
        "TCP",
        pl,
        "",
    ));
    t.push_str(&se("plain", "plain.team-tcp.internal", 9001, "TCP", pp, ""));
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: limited}\nspec:\n  host: limited.team-tcp.internal\n  trafficPolicy: {connectionPool: {tcp: {maxConnectionDuration: 1500ms}}}\n---\n",
    );
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: plain}\nspec:\n  host: plain.team-tcp.internal\n  trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {time: 7s, interval: 2s, probes: 3}}}}\n---\n",
    );
    repo.write("tenants/team-tcp/tcp.yaml", &t);
    let creds = tempfile::tempdir().expect("tmp");
    let _gw = start(&repo, creds.path(), &[port, plain_port]);

    let (mut limited, hello) = greeting(port);
    assert_eq!(hello, "limited");
    let (mut plain, hello) = greeting(plain_port);
    assert_eq!(hello, "plain");
    // `tcpKeepalive`: the gateway's connection to the backend has a keepalive timer on the
    // 7 s asked for (the system's default is two hours).
    let timers = timers_to(pp);
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert!(keepalive_within_a_minute(&timers[0]), "{timers:?}");

    // `maxConnectionDuration`: the connection is closed once it has lasted that long,
    // however busy it is; the other route's stays open.
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let closed = loop {
        if limited.write_all(b"ping\n").is_err() {
            break true;
        }
        match limited.read(&mut buf) {
            Ok(0) | Err(_) => break true,
            Ok(_) => {}
        }
        if t0.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(closed, "still open 15 s into a 1.5 s maximum duration");
    plain.write_all(b"still here\n").expect("write");
    let mut r = BufReader::new(plain.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("echo");
    assert_eq!(line, "still here\n");
}

/// A `tcp` route to a cluster whose DestinationRule originates TLS gets TLS to its backend
/// (as Envoy's TCP proxy uses the cluster's transport socket), and `consistentHash:
/// {useSourceIp: true}` keeps a client's connections on one endpoint.
#[test]
fn tcp_routes_originate_the_rule_s_tls_and_hash_by_source_ip() {
    let ca = Ca::new("upstream CA");
    let server = ca.server(&["backend.internal"], 31);
    let (port, hashed_port) = (free_port(), free_port());
    let (pt, e1, e2, e3) = (free_port(), free_port(), free_port(), free_port());
    let be = Backends::new();
    be.tls_http("tls", pt, &server.cert, &server.key);
    for (name, p) in [("h1", e1), ("h2", e2), ("h3", e3)] {
        be.tcp_echo(name, p);
    }
    let (repo, mut t) = tcp_repo(port, hashed_port);
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp}\nspec:\n  hosts: [\"*\"]\n  gateways: [tcp]\n  tcp:\n  - match: [{port: 31400}]\n    route: [{destination: {host: secure.team-tcp.internal}}]\n  - match: [{port: 31401}]\n    route: [{destination: {host: hashed.team-tcp.internal}}]\n---\n",
    );
    t.push_str(&se(
        "secure",
        "secure.team-tcp.internal",
        9443,
        "TCP",
        pt,
        "",
    ));
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: secure}\nspec:\n  host: secure.team-tcp.internal\n  trafficPolicy: {tls: {mode: SIMPLE, credentialName: upstream-ca, sni: backend.internal}}\n---\n",
    );
    t.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: hashed}}\nspec:\n  hosts: [hashed.team-tcp.internal]\n  location: MESH_INTERNAL\n  ports: [{{number: 9000, name: p, protocol: TCP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{p: {e1}}}}}\n  - {{address: 127.0.0.1, ports: {{p: {e2}}}}}\n  - {{address: 127.0.0.1, ports: {{p: {e3}}}}}\n---\n"
    ));
    t.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: hashed}\nspec:\n  host: hashed.team-tcp.internal\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}\n---\n",
    );
    repo.write("tenants/team-tcp/tcp.yaml", &t);
    let creds = tempfile::tempdir().expect("tmp");
    let ca_dir = creds.path().join("team-tcp").join("upstream-ca");
    std::fs::create_dir_all(&ca_dir).expect("mkdir");
    std::fs::write(ca_dir.join("ca.crt"), &ca.pem).expect("write ca");
    let _gw = start(&repo, creds.path(), &[port, hashed_port]);

    // Plain bytes in, TLS to the backend: an HTTP/1.1 request written over the TCP route is
    // answered by the TLS backend (which would drop a plaintext connection).
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(b"GET /over-tls HTTP/1.1\r\nHost: secure\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = String::new();
    s.read_to_string(&mut got).expect("read");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("x-backend: tls\r\n"), "{got}");
    assert!(got.contains("\"path\":\"/over-tls\""), "{got}");

    // useSourceIp: every connection from 127.0.0.1 greets the same one of three backends.
    let names: std::collections::BTreeSet<String> =
        (0..12).map(|_| greeting(hashed_port).1).collect();
    assert_eq!(names.len(), 1, "one source address spread over {names:?}");
}

#[test]
fn one_port_terminates_web_and_passes_db_and_mq_through_by_sni() {
    let (https, auto) = (free_port(), free_port());
    let (web_be, db_be, mq_be, auto_be) = (free_port(), free_port(), free_port(), free_port());
    let gw_ca = Ca::new("gateway ca");
    let be_ca = Ca::new("backend ca");
    let be = Backends::new();
    be.http("web", web_be);
    let db = be_ca.server(&["db-backend", "db.example.com"], 11);
    be.tls_http("db", db_be, &db.cert, &db.key);
    let mq = be_ca.server(&["mq-backend", "q1.mq.internal"], 12);
    be.tls_http("mq", mq_be, &mq.cert, &mq.key);
    let au = be_ca.server(&["auto-backend", "db.team-b.internal"], 13);
    be.tls_http("auto", auto_be, &au.cert, &au.key);
    let creds = tempfile::tempdir().expect("tmp");
    write_credential(
        &creds.path().join("team-a/web-cert"),
        &gw_ca.server(&["gateway-web", "web.example.com"], 21),
        None,
    );
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &operator(
            &group(
                "ingressGateways",
                "public-gw",
                &[(443, https), (15443, auto)],
                "",
            ),
            &(tenant("team-a", "[web.example.com]", "[public-gw]", "")
                + &tenant(
                    "team-b",
                    "[db.example.com, \"*.mq.internal\", \"*.team-b.internal\"]",
                    "[public-gw]",
                    "",
                )),
        ),
    );
    repo.write(
        "tenants/team-a/web.yaml",
        &(String::from(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: https}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls: {mode: SIMPLE, credentialName: web-cert}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web.example.com]\n  gateways: [https]\n  http:\n  - route: [{destination: {host: web.team-a.internal}}]\n---\n",
        ) + &se("web", "web.team-a.internal", 80, "HTTP", web_be, "")),
    );
    repo.write(
        "tenants/team-b/passthrough.yaml",
        &(String::from(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tls}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [db.example.com, \"*.mq.internal\"]\n    tls: {mode: PASSTHROUGH}\n  - port: {number: 15443, name: tls-auto, protocol: TLS}\n    hosts: [\"*.team-b.internal\"]\n    tls: {mode: AUTO_PASSTHROUGH}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tls}\nspec:\n  hosts: [db.example.com, \"*.mq.internal\"]\n  gateways: [tls]\n  tls:\n  - match: [{sniHosts: [db.example.com]}]\n    route: [{destination: {host: db.team-b.internal, port: {number: 9443}}}]\n  - match: [{sniHosts: [\"*.mq.internal\"]}]\n    route: [{destination: {host: mq.team-b.internal, port: {number: 9443}}}]\n---\n",
        ) + &se("db", "db.team-b.internal", 9443, "TLS", db_be, "")
            + &se("mq", "mq.team-b.internal", 9443, "TLS", mq_be, "")
            + &se("auto", "auto.team-b.internal", 9443, "TLS", auto_be, "")),
    );
    let gw = start(&repo, creds.path(), &[https, auto]);

    let web = served_subject(https, "web.example.com", &[]).expect("web handshake");
    assert!(
        web.contains("CN=gateway-web") || web.contains("CN = gateway-web"),
        "{web}"
    );
    let db = served_subject(https, "db.example.com", &[]).expect("db handshake");
    assert!(
        db.contains("db-backend"),
        "passthrough must reach db's own certificate: {db}"
    );
    let mq = served_subject(https, "q1.mq.internal", &[]).expect("mq handshake");
    assert!(mq.contains("mq-backend"), "{mq}");
    // Istio's AUTO_PASSTHROUGH SNI form picks the service from the name itself.
    let au = served_subject(auto, "outbound_.9443_._.auto.team-b.internal", &[])
        .expect("auto passthrough handshake");
    assert!(au.contains("auto-backend"), "{au}");
    // No route for the SNI, and no SNI at all: closed without a certificate.
    assert_eq!(served_subject(https, "nobody.example.com", &[]), None);
    assert_eq!(served_subject(https, "", &["-noservername"]), None);

    // Garbage and truncated hellos are closed and leave no task behind.
    let live = || -> Option<u64> {
        let (_, m) = gw.admin_get("/metrics")?;
        Some(
            m.lines()
                .filter(|l| l.starts_with("gatehouse_runtime_live_tasks{runtime=\"worker-"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum(),
        )
    };
    let before = wait_for("a task count", T, &live);
    let hello_start = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for i in 0..100 {
        let mut c = TcpStream::connect(("127.0.0.1", https)).expect("connect");
        let bytes: &[u8] = if i % 2 == 0 {
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        } else {
            &hello_start
        };
        c.write_all(bytes).expect("write");
        if i % 2 == 0 {
            // Not TLS at all: the gateway closes.
            c.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink);
        }
        // Truncated hellos: the client gives up and closes.
    }
    wait_for("connection tasks to end", T, || {
        live().filter(|n| *n <= before).map(|_| ())
    });
}

// --- egress ---------------------------------------------------------------------------------

struct EgressFx {
    repo: Repo,
    creds: tempfile::TempDir,
    be: Backends,
    gw: Gateway,
    tls: u16,
    proxy_port: u16,
    http: u16,
    api_be: u16,
    ca: std::path::PathBuf,
}

fn egress_fixture(appliance_extra: &str) -> EgressFx {
    let (tls, proxy_port, http) = (free_port(), free_port(), free_port());
    let api_be = free_port();
    let be_ca = Ca::new("stripe ca");
    let be = Backends::new();
    let api = be_ca.server(&["api.stripe.com", "localhost"], 31);
    be.tls_http("stripe", api_be, &api.cert, &api.key);
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &operator(
            &group(
                "egressGateways",
                "egress-fixed",
                &[(443, tls), (3128, proxy_port), (80, http)],
                &format!("      appliance:\n        sourceAddress: 127.0.0.2\n{appliance_extra}"),
            ),
            &tenant("team-pay", "[api.stripe.com]", "[egress-fixed]", ""),
        ),
    );
    // The platform's CONNECT port (the gatehouse extension).
    repo.write(
        "platform/connect.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: connect}\nspec:\n  selector: {istio: egress-fixed}\n  servers:\n  - port: {number: 3128, name: http-connect, protocol: HTTP}\n    hosts: [\"*\"]\n",
    );
    // The seed's egress pattern: ServiceEntry, Gateway PASSTHROUGH, VirtualService bound to
    // [mesh, egress gateway], DestinationRule.
    repo.write(
        "tenants/team-pay/egress.yaml",
        &(se("stripe", "api.stripe.com", 443, "TLS", api_be, "")
            .replace("  location:", "  addresses: [240.0.0.10]\n  location:")
            + r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress}
spec:
  selector: {istio: egress-fixed}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [api.stripe.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [api.stripe.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: stripe}
spec:
  hosts: [api.stripe.com]
  gateways: [mesh, egress]
  tls:
  - match: [{gateways: [egress], port: 443, sniHosts: [api.stripe.com]}]
    route: [{destination: {host: api.stripe.com, port: {number: 443}}}]
  http:
  - match: [{gateways: [egress], port: 80}]
    route: [{destination: {host: api.stripe.com, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: stripe}
spec:
  host: api.stripe.com
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 2s}}
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, credentialName: stripe-ca, sni: api.stripe.com}
"#),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let ca_dir = creds.path().join("team-pay/stripe-ca");
    std::fs::create_dir_all(&ca_dir).expect("mkdir");
    std::fs::write(ca_dir.join("ca.crt"), &be_ca.pem).expect("ca");
    let gw = start(&repo, creds.path(), &[tls, proxy_port, http]);
    let ca = creds.path().join("stripe-ca.pem");
    std::fs::write(&ca, &be_ca.pem).expect("ca");
    EgressFx {
        repo,
        creds,
        be,
        gw,
        tls,
        proxy_port,
        http,
        api_be,
        ca,
    }
}

/// A raw CONNECT: the status line.
fn connect_status(proxy_port: u16, target: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").expect("write");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("status");
    line
}

#[test]
fn egress_leaves_from_the_source_address_refuses_unregistered_names_and_connects() {
    let fx = egress_fixture("");
    let (be, tls, proxy_port, ca) = (&fx.be, fx.tls, fx.proxy_port, &fx.ca);
    let _ = &fx.creds;
    // Passthrough: the partner's certificate, reached from 127.0.0.2.
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("api.stripe.com:{tls}:127.0.0.1")])
        .arg(format!("https://api.stripe.com:{tls}/charge"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
    let peers = be
        .peers
        .lock()
        .expect("lock")
        .get("stripe")
        .cloned()
        .unwrap_or_default();
    assert!(!peers.is_empty());
    assert!(
        peers.iter().all(|p| p.ip().to_string() == "127.0.0.2"),
        "the backend must see the group's source address: {peers:?}"
    );
    // An unregistered SNI is refused (REGISTRY_ONLY).
    assert_eq!(served_subject(tls, "evil.example.com", &[]), None);

    // CONNECT to the registered host: a tunnel to the partner, from 127.0.0.2.
    let before = peers.len();
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-p", "-x", &format!("http://127.0.0.1:{proxy_port}")])
        .arg("https://api.stripe.com/charge")
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "CONNECT tunnel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers = be
        .peers
        .lock()
        .expect("lock")
        .get("stripe")
        .cloned()
        .unwrap_or_default();
    assert_eq!(peers.len(), before + 1);
    assert_eq!(peers[before].ip().to_string(), "127.0.0.2");
    // CONNECT anywhere else: 403, and a registered host on a port it did not declare too.
    let line = connect_status(proxy_port, "evil.example.com:443");
    assert!(line.starts_with("HTTP/1.1 403"), "{line}");
    let line = connect_status(proxy_port, "api.stripe.com:8443");
    assert!(line.starts_with("HTTP/1.1 403"), "{line}");
    // The ServiceEntry's address is a target as its host is; another address is not.
    let line = connect_status(proxy_port, "240.0.0.10:443");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let line = connect_status(proxy_port, "240.0.0.11:443");
    assert!(line.starts_with("HTTP/1.1 403"), "{line}");

    // Plain HTTP in, TLS out: the DestinationRule originates TLS (verified against the
    // partner's CA, SNI api.stripe.com), still from 127.0.0.2.
    let r =
        crate::harness::tools::Curl::new(&format!("http://api.stripe.com:{}/v1/charges", fx.http))
            .run();
    assert_eq!(r.status, 200, "{r:?}");
    let peers = be
        .peers
        .lock()
        .expect("lock")
        .get("stripe")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        peers.last().map(|p| p.ip().to_string()).as_deref(),
        Some("127.0.0.2")
    );
}

#[test]
fn egress_allow_any_lets_unregistered_connect_targets_through_by_dns() {
    let fx = egress_fixture("        outboundTrafficPolicy: ALLOW_ANY\n");
    // `localhost` is registered by no one: ALLOW_ANY resolves it and tunnels, from 127.0.0.2.
    let line = connect_status(fx.proxy_port, &format!("localhost:{}", fx.api_be));
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(&fx.ca)
        .args(["-p", "-x", &format!("http://127.0.0.1:{}", fx.proxy_port)])
        .arg(format!("https://localhost:{}/any", fx.api_be))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "ALLOW_ANY tunnel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers = fx
        .be
        .peers
        .lock()
        .expect("lock")
        .get("stripe")
        .cloned()
        .unwrap_or_default();
    assert!(
        peers.iter().any(|p| p.ip().to_string() == "127.0.0.2"),
        "{peers:?}"
    );
}

#[test]
fn a_platform_sidecar_allow_any_opens_the_egress_on_reload_and_a_tenant_sidecar_does_not() {
    let fx = egress_fixture("");
    let target = format!("localhost:{}", fx.api_be);
    // REGISTRY_ONLY by default: `localhost` is declared by no ServiceEntry.
    let line = connect_status(fx.proxy_port, &target);
    assert!(line.starts_with("HTTP/1.1 403"), "{line}");
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n";
    // A tenant cannot open the shared egress for destinations no one owns: still refused,
    // and the status says why.
    fx.repo.write("tenants/team-pay/sidecar.yaml", sidecar);
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    let line = connect_status(fx.proxy_port, &target);
    assert!(line.starts_with("HTTP/1.1 403"), "{line}");
    let status = fx.gw.status().to_string();
    assert!(
        status.contains("does not open the egress gateway"),
        "{status}"
    );
    // The platform's Sidecar (Istio's root-namespace default) does, without a restart.
    fx.repo.write("platform/sidecar.yaml", sidecar);
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    let line = wait_for("CONNECT allowed", Duration::from_secs(10), || {
        let l = connect_status(fx.proxy_port, &target);
        l.starts_with("HTTP/1.1 200").then_some(l)
    });
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
}

// --- connection quotas ----------------------------------------------------------------------

/// A keep-alive HTTP/1.1 client on one connection.
struct Client {
    r: BufReader<TcpStream>,
    host: String,
}

impl Client {
    fn new(addr: SocketAddr, host: &str) -> Option<Self> {
        let s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.set_nodelay(true).ok()?;
        Some(Self {
            r: BufReader::new(s),
            host: host.to_string(),
        })
    }

    /// One request; the status, or `None` when the connection is gone.
    fn get(&mut self) -> Option<u16> {
        write!(
            self.r.get_mut(),
            "GET / HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.host
        )
        .ok()?;
        let mut status = String::new();
        self.r.read_line(&mut status).ok()?;
        let code = status.split(' ').nth(1)?.parse().ok()?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).ok()?;
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).ok()?;
        Some(code)
    }
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// B's latencies over `n` requests on 4 keep-alive connections.
fn measure_b(addr: SocketAddr, n: usize) -> (Vec<Duration>, usize) {
    let per = n / 4;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::new(addr, "b.example.com").expect("B connects");
                let mut lat = Vec::with_capacity(per);
                let mut failed = 0;
                for _ in 0..per {
                    let t = Instant::now();
                    match c.get() {
                        Some(200) => lat.push(t.elapsed()),
                        _ => failed += 1,
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for h in handles {
        let (l, f) = h.join().expect("B thread");
        all.extend(l);
        failed += f;
    }
    (all, failed)
}

#[test]
fn noisy_neighbour_past_its_connection_quota_is_refused_and_b_is_unaffected() {
    let port = free_port();
    let (pa, pb) = (free_port(), free_port());
    let be = Backends::new();
    be.http("a", pa);
    be.http("b", pb);
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &operator(
            &group("ingressGateways", "public-gw", &[(80, port)], ""),
            &(tenant(
                "team-a",
                "[a.example.com]",
                "[public-gw]",
                "  quotas: {maxConnections: 10}\n",
            ) + &tenant("team-b", "[b.example.com]", "[public-gw]", "")),
        ),
    );
    for (t, host, p) in [
        ("team-a", "a.example.com", pa),
        ("team-b", "b.example.com", pb),
    ] {
        repo.write(
            &format!("tenants/{t}/web.yaml"),
            &(format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [{host}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [{host}]\n  gateways: [web]\n  http:\n  - route: [{{destination: {{host: web.{t}.internal}}}}]\n---\n")
                + &se("web", &format!("web.{t}.internal"), 80, "HTTP", p, "")),
        );
    }
    let creds = tempfile::tempdir().expect("tmp");
    let gw = start(&repo, creds.path(), &[port]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let _ = measure_b(addr, 400); // warm-up
    let (base, base_failed) = measure_b(addr, 2000);
    assert_eq!(base_failed, 0);

    // A holds 10 connections (its quota), then keeps trying to open more.
    let mut held: Vec<Client> = Vec::new();
    for _ in 0..10 {
        let mut c = Client::new(addr, "a.example.com").expect("A connects");
        assert_eq!(c.get(), Some(200), "A within its quota");
        held.push(c);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..1)
        .map(|_| {
            let (stop, refused, admitted) = (stop.clone(), refused.clone(), admitted.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(mut c) = Client::new(addr, "a.example.com") {
                        match c.get() {
                            Some(503) => refused.fetch_add(1, Ordering::Relaxed),
                            Some(_) => admitted.fetch_add(1, Ordering::Relaxed),
                            None => 0,
                        };
                    }
                }
            })
        })
        .collect();
    let (during, during_failed) = measure_b(addr, 2000);
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.join().expect("flood");
    }
    let (b0, b1) = (p99(base), p99(during));
    println!(
        "noisy neighbour: B p99 {:.2} ms alone, {:.2} ms while A is refused ({:+.1} %); A refused {} times, admitted {} past its quota",
        b0.as_secs_f64() * 1e3,
        b1.as_secs_f64() * 1e3,
        (b1.as_secs_f64() / b0.as_secs_f64() - 1.0) * 100.0,
        refused.load(Ordering::Relaxed),
        admitted.load(Ordering::Relaxed),
    );
    assert_eq!(during_failed, 0, "B must not lose requests to A's flood");
    assert!(refused.load(Ordering::Relaxed) > 0, "A was never refused");
    assert_eq!(admitted.load(Ordering::Relaxed), 0, "A got past its quota");
    // The refusals are visible per tenant on /metrics.
    let (_, metrics) = gw.admin_get("/metrics").expect("metrics");
    let refused = |tenant: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("gatehouse_tenant_connections_refused_total")
                    && l.contains(&format!("tenant=\"{tenant}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert!(refused("team-a").is_some_and(|n| n > 0.0), "{metrics}");
    assert!(refused("team-b").is_none_or(|n| n == 0.0), "{metrics}");
    // The held connections still work; releasing one lets A in again.
    assert_eq!(held[0].get(), Some(200));
    drop(held.pop());
    wait_for("A admitted after a connection closed", T, || {
        let mut c = Client::new(addr, "a.example.com")?;
        (c.get() == Some(200)).then_some(())
    });
}
