//! Access logs and metrics end to end: real requests through the gateway, log records and
//! metric points read back from a real OTLP receiver (gRPC and HTTP/protobuf), access-log
//! files, and Debian's Prometheus server scraping `/metrics`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::otlp::{Log, Receiver};
use crate::harness::tools::{Curl, have};
use crate::harness::{Backends, Gateway, Repo, free_port, platform, tenant, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// Two tenants on `public-gw`: team-a (`web.example.com`, `/down` routed to a closed port,
/// TCP on gateway port 31400) and team-b (`b.example.com`).
struct Fx {
    repo: Repo,
    _creds: tempfile::TempDir,
    _be: Backends,
    gw: Gateway,
    http: u16,
    tcp: u16,
    dir: tempfile::TempDir,
}

impl Fx {
    fn get(&self, host: &str, path: &str, rid: &str) -> u16 {
        Curl::new(&format!("http://{host}:{}{path}", self.http))
            .header(&format!("x-request-id: {rid}"))
            .run()
            .status
    }

    /// One TCP session through team-a's TCP route: greeting, 5 bytes up, the echo's goodbye.
    fn tcp_session(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.tcp)).expect("connect tcp");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"hello").expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    fn log_file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

fn operator(ports: &[(u16, u16)], mesh: &str, extra: &str) -> String {
    platform(ports, extra).replacen(
        "spec:\n  profile: empty\n",
        &format!("spec:\n  profile: empty\n  meshConfig:\n{mesh}"),
        1,
    )
}

fn team_a(api: u16, down: u16, tcp: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public}}
spec:
  selector: {{istio: public-gw}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["web.example.com"]
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: ["web.example.com"]
  gateways: [public]
  http:
  - name: down
    match: [{{uri: {{prefix: /down}}}}]
    route: [{{destination: {{host: down.team-a.internal}}}}]
  - name: api
    route: [{{destination: {{host: api.team-a.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp}}
spec:
  hosts: ["*"]
  gateways: [public]
  tcp:
  - route: [{{destination: {{host: tcp.team-a.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api}}
spec:
  hosts: [api.team-a.internal]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {api}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: down}}
spec:
  hosts: [down.team-a.internal]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {down}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp}}
spec:
  hosts: [tcp.team-a.internal]
  location: MESH_INTERNAL
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {tcp}}}}}]
"#
    )
}

fn team_b(app: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public}}
spec:
  selector: {{istio: public-gw}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["b.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app}}
spec:
  hosts: ["b.example.com"]
  gateways: [public]
  http:
  - route: [{{destination: {{host: app.team-b.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: app}}
spec:
  hosts: [app.team-b.internal]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {app}}}}}]
"#
    )
}

/// A Telemetry document turning `provider` on (or, with `disabled`, off).
fn telemetry(name: &str, provider: &str, disabled: bool, selector: Option<&str>) -> String {
    let sel = selector.map_or(String::new(), |s| {
        format!("  selector:\n    matchLabels: {{{s}}}\n")
    });
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}}}\nspec:\n{sel}  accessLogging:\n  - providers: [{{name: {provider}}}]\n    disabled: {disabled}\n"
    )
}

/// `mesh` is the indented body of `meshConfig:`; `{dir}` in it is replaced with a temporary
/// directory (for access-log files).
fn fixture(mesh: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Fx {
    let dir = tempfile::tempdir().expect("tmp");
    let mesh = mesh.replace("{dir}", &dir.path().display().to_string());
    let (http, tcp) = (free_port(), free_port());
    let (api, down, tcp_be, app) = (free_port(), free_port(), free_port(), free_port());
    let be = Backends::new();
    be.http("api-a", api);
    be.http("app-b", app);
    be.tcp_echo("tcp-a", tcp_be);
    let repo = Repo::new();
    let tenants = tenant("team-a", &["web.example.com"], "  tcpPorts: [31400]")
        + &tenant("team-b", &["b.example.com"], "");
    repo.write(
        "gatehouse.yaml",
        &operator(&[(80, http), (31400, tcp)], &mesh, &tenants),
    );
    repo.write("tenants/team-a/app.yaml", &team_a(api, down, tcp_be));
    repo.write("tenants/team-b/app.yaml", &team_b(app));
    let creds = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start_env(&repo, creds.path(), extra_args, env);
    Fx {
        repo,
        _creds: creds,
        _be: be,
        gw,
        http,
        tcp,
        dir,
    }
}

fn otel_mesh(port: u16) -> String {
    format!(
        "    extensionProviders:\n    - name: otel\n      envoyOtelAls:\n        service: 127.0.0.1\n        port: {port}\n        logName: gatehouse-access\n"
    )
}

fn find<'l>(logs: &'l [Log], rid: &str) -> Option<&'l Log> {
    logs.iter().find(|l| {
        l.attrs
            .get("http.request.header.x-request-id")
            .map(String::as_str)
            == Some(rid)
    })
}

/// Drives requests and a TCP session, then checks what the receiver got over `via`.
fn check_otlp(fx: &Fx, rx: &Receiver, via: &str) {
    // team-b has no Telemetry: its request must not be logged (it is sent first, so a wrongly
    // queued entry would arrive before team-a's).
    assert_eq!(fx.get("b.example.com", "/", "b-1"), 200);
    assert_eq!(fx.get("web.example.com", "/ok?x=1", "a-ok"), 200);
    assert_eq!(fx.get("web.example.com", "/down", "a-down"), 503);
    assert!(fx.tcp_session().starts_with("tcp-a\n"));

    let logs = wait_for("team-a's log records", WAIT, || {
        let logs = rx.logs();
        let tcp = logs
            .iter()
            .any(|l| l.attrs.get("network.transport").map(String::as_str) == Some("tcp"));
        (find(&logs, "a-ok").is_some() && find(&logs, "a-down").is_some() && tcp).then_some(logs)
    });
    let ok = find(&logs, "a-ok").expect("a-ok");
    assert_eq!(ok.via, via);
    assert_eq!(ok.scope, "gatehouse-access");
    assert_eq!(ok.attrs["server.address"], "web.example.com");
    assert_eq!(ok.attrs["http.response.status_code"], "200");
    assert_eq!(ok.attrs["http.request.method"], "GET");
    assert_eq!(ok.attrs["url.path"], "/ok");
    assert_eq!(ok.attrs["url.query"], "x=1");
    assert_eq!(ok.attrs["envoy.response_flags"], "-");
    assert_eq!(ok.attrs["gatehouse.tenant"], "team-a");
    assert_eq!(ok.attrs["gatehouse.gateway"], "public-gw");
    assert_eq!(ok.attrs["gatehouse.route"], "api");
    assert_eq!(
        ok.attrs["gatehouse.upstream_cluster"],
        "outbound|80||api.team-a.internal"
    );
    assert_eq!(ok.attrs["upstream.address"], "127.0.0.1");
    assert!(ok.attrs.contains_key("gatehouse.upstream_service_time_ms"));
    assert!(ok.attrs["user_agent.original"].starts_with("curl/"));
    assert_eq!(ok.resource["deployment.environment"], "test");
    assert!(
        ok.body.contains("\"GET /ok?x=1 HTTP/1.1\" 200"),
        "{}",
        ok.body
    );

    let down = find(&logs, "a-down").expect("a-down");
    assert_eq!(down.attrs["http.response.status_code"], "503");
    assert!(
        down.attrs["envoy.response_flags"]
            .split(',')
            .any(|f| f == "UF"),
        "{:?}",
        down.attrs
    );
    assert_eq!(down.attrs["gatehouse.tenant"], "team-a");

    let tcp = logs
        .iter()
        .find(|l| l.attrs.get("network.transport").map(String::as_str) == Some("tcp"))
        .expect("tcp record");
    assert_eq!(tcp.attrs["gatehouse.tenant"], "team-a");
    assert_eq!(
        tcp.attrs["gatehouse.upstream_cluster"],
        "outbound|9000||tcp.team-a.internal"
    );
    assert_eq!(tcp.attrs["http.request.body.size"], "5");
    assert!(
        logs.iter()
            .all(|l| l.attrs.get("gatehouse.tenant").map(String::as_str) != Some("team-b")),
        "team-b logged without a Telemetry: {logs:#?}"
    );

    // Metrics: every tenant is counted, logging or not.
    let has = |name: &str, want: &[(&str, &str)], min: f64| {
        rx.points().iter().any(|(v, p)| {
            *v == via
                && p.name == name
                && p.value >= min
                && want
                    .iter()
                    .all(|(k, val)| p.attrs.get(*k).map(String::as_str) == Some(*val))
        })
    };
    wait_for("metric points", WAIT, || {
        (has(
            "istio_requests_total",
            &[
                ("tenant", "team-a"),
                ("gateway", "public-gw"),
                ("response_code", "503"),
                ("response_flags", "UF,URX"),
                ("destination_service", "down.team-a.internal"),
                ("reporter", "source"),
            ],
            1.0,
        ) && has(
            "istio_requests_total",
            &[("tenant", "team-b"), ("response_code", "200")],
            1.0,
        ) && has(
            "istio_request_duration_milliseconds",
            &[("tenant", "team-a"), ("response_code", "200")],
            1.0,
        ) && has(
            "istio_tcp_connections_closed_total",
            &[("tenant", "team-a")],
            1.0,
        ) && has("istio_tcp_sent_bytes_total", &[("tenant", "team-a")], 5.0)
            && has("gatehouse_config_generation", &[], 1.0)
            && has(
                "gatehouse_runtime_live_tasks",
                &[("runtime", "worker-0")],
                0.0,
            ))
        .then_some(())
    });
    // Bounded cardinality: no path or client address ever becomes a label.
    for (_, p) in rx.points() {
        for (k, v) in &p.attrs {
            assert!(
                !v.contains("/ok") && !v.contains("/down") && k != "client_address",
                "{} has a raw label {k}={v}",
                p.name
            );
        }
    }
}

#[test]
fn otlp_grpc_logs_and_metrics_carry_authority_status_flags_and_tenant() {
    let rport = free_port();
    let rx = Receiver::start(rport);
    let endpoint = format!("http://127.0.0.1:{rport}");
    let fx = fixture(
        &otel_mesh(rport),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    );
    fx.repo.write(
        "tenants/team-a/telemetry.yaml",
        &telemetry("logs", "otel", false, None),
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    check_otlp(&fx, &rx, "grpc");
}

#[test]
fn otlp_http_protobuf_from_the_settings_file() {
    let rport = free_port();
    let rx = Receiver::start(rport);
    let settings = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(
        settings.path(),
        format!(
            "[telemetry]\nendpoint = \"http://127.0.0.1:{rport}\"\nprotocol = \"http/protobuf\"\nmetric_interval = \"300ms\"\nlog_delay = \"100ms\"\nresource = {{ \"deployment.environment\" = \"test\" }}\n"
        ),
    )
    .expect("write settings");
    let path = settings.path().display().to_string();
    let fx = fixture(&otel_mesh(rport), &["--config", &path], &[]);
    fx.repo.write(
        "tenants/team-a/telemetry.yaml",
        &telemetry("logs", "otel", false, None),
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    check_otlp(&fx, &rx, "http");
}

#[test]
fn a_bad_settings_file_is_refused_with_its_name() {
    let settings = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(
        settings.path(),
        "[telemetry]\nprotocol = \"carrier-pigeon\"\n",
    )
    .expect("write");
    let repo = Repo::new();
    repo.write("gatehouse.yaml", &platform(&[(80, free_port())], ""));
    let out = Command::new(crate::harness::bin("gatehouse"))
        .args(["run", "--admin", "127.0.0.1:0", "--repo"])
        .arg(repo.path())
        .arg("--config")
        .arg(settings.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("carrier-pigeon"), "{err}");
}

fn file_mesh() -> &'static str {
    "    extensionProviders:\n    - name: file\n      envoyFileAccessLog:\n        path: {dir}/access.log\n"
}

/// Sends team-b's request, then team-a's marker, waits for the marker in the file, and says
/// whether team-b's request was logged.
fn b_logged_before(fx: &Fx, b_rid: &str, a_rid: &str) -> bool {
    assert_eq!(fx.get("b.example.com", "/", b_rid), 200);
    assert_eq!(fx.get("web.example.com", "/", a_rid), 200);
    let text = wait_for(a_rid, WAIT, || {
        let t = fx.log_file();
        t.contains(a_rid).then_some(t)
    });
    text.contains(b_rid)
}

#[test]
fn tenant_telemetry_logs_that_tenant_only_and_a_narrower_disable_wins() {
    let fx = fixture(file_mesh(), &[], &[]);
    // Default off: nothing is logged without a Telemetry.
    assert_eq!(fx.get("web.example.com", "/", "off-a"), 200);

    // A tenant's own Telemetry: that tenant only.
    fx.repo.write(
        "tenants/team-a/telemetry.yaml",
        &telemetry("logs", "file", false, None),
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    assert!(!b_logged_before(&fx, "one-b", "one-a"));
    let text = fx.log_file();
    assert!(!text.contains("off-a"), "logged while off:\n{text}");
    let line = text.lines().find(|l| l.contains("one-a")).expect("line");
    assert!(line.contains("\"GET / HTTP/1.1\" 200 -"), "{line}");
    assert!(
        line.contains(&format!("\"web.example.com:{}\"", fx.http)),
        "{line}"
    );
    assert!(line.contains("tenant=team-a gateway=public-gw"), "{line}");

    // The platform turns logging on appliance-wide; team-b's `disabled: true` wins for team-b.
    fx.repo.write(
        "platform/telemetry.yaml",
        &telemetry("mesh-default", "file", false, None),
    );
    fx.repo.write(
        "tenants/team-b/telemetry.yaml",
        &telemetry("quiet", "file", true, None),
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    assert!(!b_logged_before(&fx, "two-b", "two-a"));

    // Without team-b's override the platform's Telemetry (here the seed's gateway-only form:
    // a selector for one group, `disabled: false`) logs team-b too.
    fx.repo.remove("tenants/team-b/telemetry.yaml");
    fx.repo.write(
        "platform/telemetry.yaml",
        &telemetry("mesh-default", "file", false, Some("istio: public-gw")),
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    assert!(b_logged_before(&fx, "three-b", "three-a"));
    let text = fx.log_file();
    let b = text
        .lines()
        .find(|l| l.contains("three-b"))
        .expect("b line");
    assert!(b.contains("tenant=team-b"), "{b}");

    // A selector for another group does not apply to public-gw.
    fx.repo.write(
        "platform/telemetry.yaml",
        &telemetry("mesh-default", "file", false, Some("istio: other-gw")),
    );
    let (code, body) = fx.gw.reload();
    assert_eq!(code, 200, "{body}");
    assert!(!b_logged_before(&fx, "four-b", "four-a"));
}

#[test]
fn mesh_access_log_file_json_logs_http_tcp_and_local_answers() {
    let fx = fixture(
        "    accessLogFile: {dir}/access.log\n    accessLogEncoding: JSON\n",
        &[],
        &[],
    );
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = Curl::new(&format!("http://web.example.com:{}/trace", fx.http))
        .header(&format!("traceparent: {traceparent}"))
        .header("tracestate: congo=t61rcWkgMzE")
        .header("x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7")
        .header("x-b3-spanid: e457b5a2e4d86bd1")
        .header("x-b3-sampled: 1")
        .run();
    assert_eq!(r.status, 200);
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(h["traceparent"], traceparent);
    assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(h["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(h["x-b3-spanid"], "e457b5a2e4d86bd1");
    let rid = h["x-request-id"]
        .as_str()
        .expect("x-request-id generated")
        .to_string();
    assert_eq!(rid.len(), 36, "{rid}");

    assert_eq!(
        Curl::new(&format!("http://nobody.example.com:{}/x", fx.http))
            .run()
            .status,
        404
    );
    assert!(fx.tcp_session().starts_with("tcp-a\n"));

    let lines: Vec<serde_json::Value> = wait_for("three JSON lines", WAIT, || {
        let v: Vec<serde_json::Value> = fx
            .log_file()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (v.len() >= 3).then_some(v)
    });
    let http = lines
        .iter()
        .find(|l| l["request_id"] == rid.as_str())
        .expect("the traced request, logged with its generated id");
    // As Envoy logs it: the Host header as sent, port included.
    assert_eq!(http["authority"], format!("web.example.com:{}", fx.http));
    assert_eq!(http["path"], "/trace");
    assert_eq!(http["method"], "GET");
    assert_eq!(http["response_code"], 200);
    assert_eq!(http["tenant"], "team-a");
    assert_eq!(http["gateway"], "public-gw");
    assert_eq!(http["route_name"], "api");
    assert_eq!(http["upstream_cluster"], "outbound|80||api.team-a.internal");
    assert!(http["bytes_sent"].as_u64().is_some_and(|n| n > 0), "{http}");
    let nr = lines
        .iter()
        .find(|l| l["response_code"] == 404)
        .expect("the 404");
    assert_eq!(nr["response_flags"], "NR");
    assert_eq!(nr["authority"], format!("nobody.example.com:{}", fx.http));
    assert!(nr["request_id"].as_str().is_some_and(|s| s.len() == 36));
    let tcp = lines
        .iter()
        .find(|l| l["upstream_cluster"] == "outbound|9000||tcp.team-a.internal")
        .expect("the TCP session");
    assert_eq!(tcp["bytes_received"], 5);
    assert_eq!(tcp["tenant"], "team-a");
}

/// Debian's Prometheus server, scraping one target every second.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: gatehouse\n  metrics_path: /metrics\n  static_configs:\n  - targets: ['{target}']\n"
            ),
        )
        .expect("config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("log")).expect("log"),
            ))
            .spawn()
            .expect("prometheus starts (Debian package `prometheus`)");
        Self { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The scalar result of an instant query, when there is one.
    fn query(&self, q: &str) -> Option<f64> {
        let r = Curl::new(&format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .arg("--data-urlencode")
            .arg(&format!("query={q}"))
            .run();
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log());
        }
    }
}

#[test]
fn prometheus_scrapes_metrics_and_counts_requests_per_tenant() {
    assert!(
        have("prometheus"),
        "prometheus missing: the test command installs Debian's package"
    );
    let fx = fixture("    accessLogEncoding: TEXT\n", &[], &[]);
    for i in 0..7 {
        assert_eq!(fx.get("web.example.com", "/", &format!("a{i}")), 200);
    }
    for i in 0..3 {
        assert_eq!(fx.get("b.example.com", "/", &format!("b{i}")), 200);
    }
    assert_eq!(fx.get("web.example.com", "/down", "a-down"), 503);
    let prom = Prometheus::start(&fx.gw.admin.to_string());
    let q = |tenant: &str| format!("sum(istio_requests_total{{tenant=\"{tenant}\"}})");
    wait_for(
        "prometheus to scrape team-a's 8 requests",
        Duration::from_secs(60),
        || (prom.query(&q("team-a")) == Some(8.0)).then_some(()),
    );
    assert_eq!(prom.query(&q("team-b")), Some(3.0));
    assert_eq!(
        prom.query("sum(istio_requests_total{tenant=\"team-a\",response_flags=\"UF,URX\"})"),
        Some(1.0)
    );
    assert_eq!(
        prom.query("count(istio_request_duration_milliseconds_bucket{tenant=\"team-b\"}) > 0")
            .map(|n| n > 0.0),
        Some(true)
    );
    // Each worker records into its own shard of a series; the scrape sums them.
    assert_eq!(
        prom.query("sum(istio_request_duration_milliseconds_count{tenant=\"team-a\"})"),
        Some(8.0)
    );
    assert_eq!(
        prom.query("sum(istio_response_bytes_count{tenant=\"team-b\"})"),
        Some(3.0)
    );
    assert_eq!(prom.query("up{job=\"gatehouse\"}"), Some(1.0));
    // The appliance's own series sit beside Istio's: reload state and the tokio runtimes.
    assert_eq!(prom.query("gatehouse_config_generation"), Some(1.0));
    assert!(
        prom.query("count(gatehouse_runtime_busy_seconds_total)")
            .is_some_and(|n| n >= 2.0),
        "one series per runtime (workers and control)"
    );
}

#[test]
fn mesh_access_log_format_names_any_request_header() {
    let fx = fixture(
        "    accessLogFile: {dir}/access.log\n    accessLogFormat: \"%REQ(:AUTHORITY)% team=%REQ(X-TEAM)% %RESPONSE_CODE% %TENANT% ua=%REQ(USER-AGENT)%\\n\"\n",
        &[],
        &[],
    );
    let r = Curl::new(&format!("http://web.example.com:{}/", fx.http))
        .header("x-team: blue")
        .header("user-agent: probe/1")
        .run();
    assert_eq!(r.status, 200);
    let line = wait_for("the custom line", WAIT, || {
        fx.log_file().lines().next().map(str::to_string)
    });
    assert_eq!(
        line,
        format!(
            "web.example.com:{} team=blue 200 team-a ua=probe/1",
            fx.http
        )
    );
}

/// The access log's `response_flags` for each of the gateway's own failures, as Envoy
/// writes them: UH (no healthy endpoint), UO (pool overflow), UT (upstream timeout), DC (the
/// client went away), RL (the tenant's rate limit).
#[test]
fn access_log_names_uh_uo_ut_dc_and_rl_and_a_body_cut_at_the_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let (http, api, raw) = (free_port(), free_port(), free_port());
    let be = Backends::new();
    be.http("api", api);
    be.scripted(raw);
    let repo = Repo::new();
    let tenants = tenant("team-a", &["web.example.com"], "")
        + &tenant(
            "team-b",
            &["b.example.com"],
            "  quotas: {requestsPerSecond: 1}",
        );
    repo.write(
        "gatehouse.yaml",
        &operator(
            &[(80, http)],
            &format!(
                "    accessLogFile: {}/access.log\n    accessLogEncoding: JSON\n",
                dir.path().display()
            ),
            &tenants,
        ),
    );
    let se = |name: &str, host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {api}}}, labels: {{version: v1}}}}]\n---\n"
        )
    };
    repo.write(
        "tenants/team-a/app.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public}}
spec:
  selector: {{istio: public-gw}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["web.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: ["web.example.com"]
  gateways: [public]
  http:
  - name: uh
    match: [{{uri: {{prefix: /uh}}}}]
    route: [{{destination: {{host: api.team-a.internal, subset: none}}}}]
  - name: uo
    match: [{{uri: {{prefix: /uo}}}}]
    route: [{{destination: {{host: small.team-a.internal}}}}]
  - name: ut-body
    match: [{{uri: {{prefix: /held-body}}}}]
    timeout: 300ms
    route: [{{destination: {{host: raw.team-a.internal}}}}]
  - name: ut
    match: [{{uri: {{prefix: /ut}}}}]
    timeout: 200ms
    route: [{{destination: {{host: api.team-a.internal}}}}]
  - name: api
    route: [{{destination: {{host: api.team-a.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api}}
spec:
  host: api.team-a.internal
  subsets:
  - name: none
    labels: {{version: v9}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: small}}
spec:
  host: small.team-a.internal
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 1}}
      http: {{http1MaxPendingRequests: 1}}
---
{}{}{}"#,
            se("api", "api.team-a.internal"),
            se("small", "small.team-a.internal"),
            crate::upstream::se("raw", "raw.team-a.internal", &[raw]),
        ),
    );
    repo.write(
        "tenants/team-b/app.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: public}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"b.example.com\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app}}\nspec:\n  hosts: [\"b.example.com\"]\n  gateways: [public]\n  http:\n  - route: [{{destination: {{host: api.team-b.internal}}}}]\n---\n{}",
            se("api", "api.team-b.internal")
        ),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let _gw = Gateway::start(&repo, creds.path());
    let url = |host: &str, path: &str| format!("http://{host}:{http}{path}");
    let get = |host: &str, path: &str, rid: &str| {
        Curl::new(&url(host, path))
            .header(&format!("x-request-id: {rid}"))
            .run()
    };

    // UH: the subset selects no endpoint.
    let r = get("web.example.com", "/uh", "f-uh");
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));

    // UO: one connection and one pending request; of six requests at once, the ones that
    // find both taken overflow.
    let burst: Vec<std::thread::JoinHandle<(String, u16, String)>> = (0..6)
        .map(|i| {
            let u = url("web.example.com", "/uo");
            std::thread::spawn(move || {
                let rid = format!("f-uo-{i}");
                let r = Curl::new(&u)
                    .header(&format!("x-request-id: {rid}"))
                    .header("x-test-delay-ms: 1000")
                    .run();
                (rid, r.status, r.body)
            })
        })
        .collect();
    let burst: Vec<(String, u16, String)> = burst
        .into_iter()
        .map(|t| t.join().expect("burst request"))
        .collect();
    let (uo, _, body) = burst
        .iter()
        .find(|(_, s, _)| *s == 503)
        .unwrap_or_else(|| panic!("no overflow: {burst:?}"));
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    assert!(burst.iter().any(|(_, s, _)| *s == 200), "{burst:?}");

    // UT: the route's 200 ms timeout against a backend that takes 2 s.
    let r = Curl::new(&url("web.example.com", "/ut"))
        .header("x-request-id: f-ut")
        .header("x-test-delay-ms: 2000")
        .run();
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "upstream request timeout")
    );

    // UT after the head: the response body is still to come at the deadline; the client
    // gets the 200 head and a body cut short (curl: 18, partial file).
    let r = Curl::new(&url("web.example.com", "/held-body"))
        .header("x-request-id: f-ut-body")
        .run();
    assert_eq!((r.status, r.exit), (200, 18), "{r:?}");

    // DC: the client gives up after 300 ms, before the backend answers.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "0.3"])
        .args(["-H", "x-request-id: f-dc", "-H", "x-test-delay-ms: 1500"])
        .args(["--resolve", &format!("web.example.com:{http}:127.0.0.1")])
        .arg(url("web.example.com", "/dc"))
        .output()
        .expect("curl");
    assert_eq!(out.status.code(), Some(28), "curl timed out");

    // RL: team-b's one request per second; the second at once is refused.
    let codes: Vec<u16> = (0..3)
        .map(|i| get("b.example.com", "/", &format!("f-rl-{i}")).status)
        .collect();
    assert!(codes.contains(&429), "{codes:?}");
    let limited = (0..3)
        .find(|i| codes[*i] == 429)
        .map(|i| format!("f-rl-{i}"))
        .expect("a 429");

    let want: [(&str, u64, &str); 6] = [
        ("f-uh", 503, "UH"),
        (uo.as_str(), 503, "UO"),
        ("f-ut", 504, "UT"),
        ("f-ut-body", 200, "UT"),
        ("f-dc", 0, "DC"),
        (limited.as_str(), 429, "RL"),
    ];
    let lines: Vec<serde_json::Value> = wait_for("every failure logged", WAIT, || {
        let v: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        want.iter()
            .all(|(rid, ..)| v.iter().any(|l| l["request_id"] == *rid))
            .then_some(v)
    });
    for (rid, code, flag) in want {
        let l = lines
            .iter()
            .find(|l| l["request_id"] == rid)
            .expect("logged");
        assert_eq!(
            (l["response_code"].as_u64(), l["response_flags"].as_str()),
            (Some(code), Some(flag)),
            "{rid}: {l}"
        );
    }
}
