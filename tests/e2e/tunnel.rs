//! DestinationRule `tunnel` (`CONNECT`): a TCP route's bytes reach their target through a
//! real HTTP CONNECT proxy (Debian's tinyproxy), the cluster's endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::git::Proc;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, tenant, wait_for};

fn tinyproxy(dir: &Path, port: u16) -> Proc {
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!("Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nAllow 127.0.0.1\nLogLevel Info\n"),
    )
    .expect("conf");
    let mut c = Command::new("tinyproxy");
    c.arg("-d").arg("-c").arg(&conf);
    Proc::spawn(c, dir.join("tinyproxy.log"))
}

/// A TCP ServiceEntry whose endpoint is the proxy, and its DestinationRule's tunnel.
fn through_proxy(name: &str, proxy: u16, target: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.team-a.internal]\n  location: MESH_EXTERNAL\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {proxy}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: {name}.team-a.internal\n  trafficPolicy:\n    tunnel: {{protocol: CONNECT, targetHost: 127.0.0.1, targetPort: {target}}}\n---\n"
    )
}

#[test]
fn a_tcp_route_reaches_its_target_through_an_http_connect_proxy() {
    let (good, bad, proxy, echo, closed) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let be = Backends::new();
    be.tcp_echo("echo", echo);
    let dir = tempfile::tempdir().expect("tmp");
    let tp = tinyproxy(dir.path(), proxy);
    wait_for("tinyproxy listening", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", proxy)).ok().map(|_| ())
    });
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &platform(
            &[(31400, good), (31401, bad)],
            &tenant("team-a", &["a.example.com"], "  tcpPorts: [31400, 31401]\n"),
        ),
    );
    repo.write(
        "tenants/team-a/all.yaml",
        &(String::from(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n  - port: {number: 31401, name: tcp-closed, protocol: TCP}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: raw}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tcp:\n  - match: [{port: 31400}]\n    route: [{destination: {host: echo.team-a.internal}}]\n  - match: [{port: 31401}]\n    route: [{destination: {host: nowhere.team-a.internal}}]\n---\n",
        ) + &through_proxy("echo", proxy, echo)
            + &through_proxy("nowhere", proxy, closed)),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let _gw = Gateway::start(&repo, creds.path());

    // The echo backend speaks first: its greeting comes back through the tunnel, then what
    // was sent. (tinyproxy ends both directions at the first end of stream, so the client's
    // half-close is not carried further: the echo is read before it.)
    let s = TcpStream::connect(("127.0.0.1", good)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("greeting");
    assert_eq!(line, "echo\n");
    (&s).write_all(b"through the proxy\n").expect("write");
    let mut echoed = String::new();
    r.read_line(&mut echoed).expect("echo");
    assert_eq!(echoed, "through the proxy\n");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert_eq!(be.counters.get("echo"), 1);
    assert!(
        tp.log()
            .contains(&format!("CONNECT 127.0.0.1:{echo} HTTP/1.1")),
        "the proxy saw no CONNECT to the target:\n{}",
        tp.log()
    );

    // A target the proxy cannot reach: the proxy answers 500, the gateway closes the
    // client's connection (UF), and the working route goes on.
    let mut s = TcpStream::connect(("127.0.0.1", bad)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("closed by the gateway, not left waiting");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let s = TcpStream::connect(("127.0.0.1", good)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("greeting");
    assert_eq!(line, "echo\n");
}
