//! ServiceEntry endpoints on unix sockets (`unix:///path`, `unix://@abstract`): a local
//! service on the appliance itself, reached without a TCP port. Only the platform may
//! declare them (they reach the appliance's own sockets) and shares them with `exportTo`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, wait_for};

fn platform_yaml(dir: &std::path::Path, http: u16, tcp: u16, abstract_name: &str) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {{name: appliance}}
spec:
  profile: empty
  meshConfig: {{accessLogFile: {d}/access.log}}
  components:
    ingressGateways:
    - name: public-gw
      label: {{istio: public-gw}}
      k8s:
        service:
          loadBalancerIP: 127.0.0.1
          ports:
          - {{name: http, port: 80, targetPort: {http}}}
          - {{name: tcp, port: 31400, targetPort: {tcp}}}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {{name: team-a}}
spec:
  hosts: [web.example.com]
  gateways: [public-gw]
  tcpPorts: [31400]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: local-app}}
spec:
  hosts: [local-app.platform.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: "unix://{d}/app.sock", labels: {{socket: file}}}}
  - {{address: "unix://@{abstract_name}", labels: {{socket: abstract}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: local-app}}
spec:
  host: local-app.platform.internal
  exportTo: ["*"]
  subsets:
  - {{name: file, labels: {{socket: file}}}}
  - {{name: abstract, labels: {{socket: abstract}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: gone}}
spec:
  hosts: [gone.platform.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: "unix://{d}/nobody-listens.sock"}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tls-app}}
spec:
  hosts: [tls-app.platform.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  resolution: STATIC
  endpoints: [{{address: "unix://{d}/tls.sock"}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tls-app}}
spec:
  host: tls-app.platform.internal
  exportTo: ["*"]
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: "{d}/ca.pem", sni: backend.internal}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: local-echo}}
spec:
  hosts: [echo.platform.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: "unix://{d}/echo.sock"}}]
---
"#
    )
}

const ROUTES: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [web.example.com]
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web.example.com]
  gateways: [web]
  http:
  - match: [{uri: {prefix: /file}}]
    route: [{destination: {host: local-app.platform.internal, subset: file}}]
  - match: [{uri: {prefix: /abstract}}]
    route: [{destination: {host: local-app.platform.internal, subset: abstract}}]
  - match: [{uri: {prefix: /tls}}]
    route: [{destination: {host: tls-app.platform.internal}}]
  - match: [{uri: {prefix: /gone}}]
    route: [{destination: {host: gone.platform.internal}}]
    retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: ["*"]
  gateways: [web]
  tcp:
  - route: [{destination: {host: echo.platform.internal, port: {number: 9000}}}]
---
"#;

#[test]
fn platform_unix_socket_endpoints_serve_http_and_tcp_and_a_tenant_may_not_declare_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let (http, tcp) = (free_port(), free_port());
    let abstract_name = format!("gatehouse-e2e-{}-{http}", std::process::id());
    let be = Backends::new();
    be.http_unix("file-socket", &dir.path().join("app.sock"));
    be.http_unix(
        "abstract-socket",
        std::path::Path::new(&format!("\0{abstract_name}")),
    );
    be.tcp_echo_unix("echo-socket", &dir.path().join("echo.sock"));
    let ca = crate::harness::certs::Ca::new("local CA");
    let leaf = ca.server(&["backend.internal"], 0x50c);
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write ca");
    be.tls_http_unix(
        "tls-socket",
        &dir.path().join("tls.sock"),
        &leaf.cert,
        &leaf.key,
    );
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &platform_yaml(dir.path(), http, tcp, &abstract_name),
    );
    repo.write("tenants/team-a/web.yaml", ROUTES);
    let creds = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(&repo, creds.path());

    // HTTP to a socket file and to an abstract socket.
    // TLS origination over a socket: the local server's certificate is checked as any.
    for (path, backend) in [
        ("/file/a", "file-socket"),
        ("/abstract/b", "abstract-socket"),
        ("/tls/c", "tls-socket"),
    ] {
        for _ in 0..2 {
            let r = Curl::new(&format!("http://web.example.com:{http}{path}"))
                .arg("--resolve")
                .arg(&format!("web.example.com:{http}:127.0.0.1"))
                .run();
            assert_eq!((r.status, r.backend().as_str()), (200, backend), "{r:?}");
            assert_eq!(r.json()["path"], path);
            assert_eq!(
                r.json()["headers"]["host"],
                format!("web.example.com:{http}").as_str()
            );
        }
    }
    assert_eq!(be.counters.get("file-socket"), 2);
    assert_eq!(be.counters.get("abstract-socket"), 2);
    assert_eq!(be.counters.get("tls-socket"), 2);

    // Nobody listens on the socket: 503 with Envoy's connect-failure answer.
    let r = Curl::new(&format!("http://web.example.com:{http}/gone"))
        .arg("--resolve")
        .arg(&format!("web.example.com:{http}:127.0.0.1"))
        .run();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("connection failure"), "{r:?}");

    // The access log names the socket as Envoy names a pipe, not the address standing in.
    let log = dir.path().join("access.log");
    let sock = dir.path().join("app.sock").display().to_string();
    let lines = wait_for(
        "access log lines naming the sockets",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            (text.contains(&format!("\"{sock}\""))
                && text.contains(&format!("\"@{abstract_name}\""))
                && text.contains(" 503 UF "))
            .then_some(text)
        },
    );
    assert!(!lines.contains("[100::"), "{lines}");

    // TCP bytes both ways through the socket, with half-close.
    let mut s = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"hello over a unix socket").expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut got = String::new();
    BufReader::new(&mut s)
        .read_to_string(&mut got)
        .expect("read");
    assert_eq!(got, "echo-socket\nhello over a unix socketbye 24\n");

    // A tenant that declares a socket is refused at the line, and the rest keeps serving.
    repo.write(
        "tenants/team-a/sneaky.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: sneaky}\nspec:\n  hosts: [sneaky.team-a.internal]\n  location: MESH_INTERNAL\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n  - {address: \"unix:///run/gatehouse/control.sock\"}\n",
    );
    let (code, body) = gw.reload();
    assert_eq!(code, 200, "{body}");
    let st = gw.status();
    assert_eq!(st["tenants"]["team-a"]["state"], "lastGood");
    let errors = st["tenants"]["team-a"]["errors"].to_string();
    assert!(
        errors.contains("tenants/team-a/sneaky.yaml:10:6: error: team-a/ServiceEntry/sneaky: spec.endpoints[0].address: unix:// endpoints reach sockets on the appliance itself"),
        "{errors}"
    );
    let r = Curl::new(&format!("http://web.example.com:{http}/file/again"))
        .arg("--resolve")
        .arg(&format!("web.example.com:{http}:127.0.0.1"))
        .run();
    assert_eq!(
        (r.status, r.backend().as_str()),
        (200, "file-socket"),
        "{r:?}"
    );
    let mut line = String::new();
    let mut s = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    BufReader::new(&mut s)
        .read_line(&mut line)
        .expect("greeting");
    assert_eq!(line, "echo-socket\n");
}
