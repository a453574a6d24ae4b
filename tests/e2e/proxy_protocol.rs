//! DestinationRule `trafficPolicy.proxyProtocol`: upstream connections start with a PROXY
//! protocol header naming the client, read by real servers that trust it: nginx
//! (`listen ... proxy_protocol`) behind an HTTP route with version 1, HAProxy
//! (`bind ... accept-proxy`) behind a TCP route with version 2.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::git::Proc;
use crate::harness::tools::Curl;
use crate::harness::{Gateway, Repo, free_port, platform, tenant, wait_for};

/// nginx answering each request with the addresses its connection's PROXY header gave.
fn nginx(dir: &Path, port: u16) -> Proc {
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
         server {{ listen 127.0.0.1:{port} proxy_protocol; default_type text/plain;\n\
         location / {{ return 200 \"$proxy_protocol_addr:$proxy_protocol_port -> $proxy_protocol_server_addr:$proxy_protocol_server_port\"; }} }} }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("conf");
    let mut c = Command::new("nginx");
    c.args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")]);
    Proc::spawn(c, dir.join("nginx.log"))
}

/// HAProxy answering HTTP with the addresses the PROXY header gave (`src`, `dst`).
fn haproxy(dir: &Path, port: u16) -> Proc {
    let conf = format!(
        "global\n  log stderr format raw local0 err\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend pp\n  bind 127.0.0.1:{port} accept-proxy\n  http-request return status 200 content-type text/plain lf-string \"%[src]:%[src_port] -> %[dst]:%[dst_port]\"\n"
    );
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, conf).expect("conf");
    let mut c = Command::new("haproxy");
    c.arg("-db").arg("-f").arg(&cfg);
    Proc::spawn(c, dir.join("haproxy.log"))
}

fn service(name: &str, port: u16, protocol: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{name}.team-a.internal]\n  location: MESH_INTERNAL\n  ports: [{{number: 80, name: p, protocol: {protocol}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{p: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: {name}.team-a.internal\n  trafficPolicy: {{proxyProtocol: {{version: {}}}}}\n---\n",
        if name == "nginx" { "V1" } else { "V2" }
    )
}

#[test]
fn backends_see_the_client_through_the_proxy_protocol() {
    let (web, tcp, ng_port, hap_port) = (free_port(), free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("tmp")).expect("tmp");
    let _nginx = nginx(dir.path(), ng_port);
    let _haproxy = haproxy(dir.path(), hap_port);
    for p in [ng_port, hap_port] {
        wait_for("backend listening", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", p))
                .ok()
                .map(|_| ())
        });
    }
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &platform(
            &[(80, web), (31400, tcp)],
            &tenant("team-a", &["web.example.com"], "  tcpPorts: [31400]\n"),
        ),
    );
    repo.write(
        "tenants/team-a/all.yaml",
        &(String::from(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [web.example.com]\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web.example.com]\n  gateways: [gw]\n  http: [{route: [{destination: {host: nginx.team-a.internal}}]}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: raw}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  tcp: [{route: [{destination: {host: haproxy.team-a.internal}}]}]\n---\n",
        ) + &service("nginx", ng_port, "HTTP")
            + &service("haproxy", hap_port, "TCP")),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let _gw = Gateway::start(&repo, creds.path());

    // HTTP route, version 1: nginx names the client and the gateway port it reached.
    let first = Curl::new(&format!("http://web.example.com:{web}/")).run();
    assert_eq!(first.status, 200, "{first:?}");
    let (client, server) = first.body.split_once(" -> ").expect("addresses");
    assert!(client.starts_with("127.0.0.1:"), "{}", first.body);
    assert_eq!(server, format!("127.0.0.1:{web}"));
    // Another client (another source port) gets its own upstream connection: a pooled one
    // would carry the first client's header.
    let second = Curl::new(&format!("http://web.example.com:{web}/")).run();
    assert_eq!(second.status, 200, "{second:?}");
    let (client2, _) = second.body.split_once(" -> ").expect("addresses");
    assert_ne!(client, client2, "a second client was reported as the first");

    // TCP route, version 2: HAProxy decodes the binary header.
    let raw = Curl::new(&format!("http://127.0.0.1:{tcp}/")).run();
    assert_eq!(raw.status, 200, "{raw:?}");
    let (client, server) = raw.body.split_once(" -> ").expect("addresses");
    assert!(client.starts_with("127.0.0.1:"), "{}", raw.body);
    assert_eq!(server, format!("127.0.0.1:{tcp}"));
}
