//! Refusals: a broken tenant is refused with an error on the right file, line and field,
//! keeps its last good configuration when there is one, and never moves another tenant.
//!
//! Each row adds `tenants/team-a/broken.yaml` to a repository where team-a (`web.yaml`) and
//! team-b (`app.yaml`) are good, and builds it three ways: the good repository (the baseline,
//! revision `good`), the broken one with no previous build, and the broken one with the
//! baseline's `Accepted` as the previous build.

use tenants::build::Output;
use tenants::find::{Decision, RequestView};
use tenants::snapshot::{ListenerKind, RouteAction, TenantState};
use tenants::{Accepted, Diagnostic, LoadOptions, SourceFile};

const GATEHOUSE: &str = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: appliance}
spec:
  profile: empty
  components:
    ingressGateways:
    - name: public-gw
      label: {istio: public-gw}
      enabled: true
      k8s:
        service:
          loadBalancerIP: 127.0.0.1
          ports:
          - {name: http2, port: 80, targetPort: 18080}
          - {name: https, port: 443, targetPort: 18443}
    - name: partner-gw
      label: {istio: partner-gw}
      enabled: true
      k8s:
        service:
          loadBalancerIP: 127.0.0.1
          ports:
          - {name: http2, port: 80, targetPort: 28080}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-a}
spec:
  hosts: ["*.a.example.com", "shared.example.com"]
  gateways: [public-gw]
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-b}
spec:
  hosts: ["*.b.example.com"]
  gateways: [public-gw, partner-gw]
  tcpPorts: [31400]
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-c}
spec:
  hosts: ["*.c.example.com", "shared.example.com"]
  gateways: [public-gw]
"#;

const TEAM_A: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["www.a.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["www.a.example.com"]
  gateways: [web]
  http:
  - route:
    - destination: {host: web.team-a.internal, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.team-a.internal]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web.team-a.internal
  subsets: [{name: v1, labels: {version: v1}}]
"#;

const TEAM_B: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: app}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["www.b.example.com"]
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ["www.b.example.com"]
  gateways: [app]
  http:
  - route:
    - destination: {host: app.team-b.internal}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp}
spec:
  hosts: ["*"]
  gateways: [app]
  tcp:
  - route:
    - destination: {host: tcp.team-b.internal}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app}
spec:
  hosts: [app.team-b.internal]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp}
spec:
  hosts: [tcp.team-b.internal]
  location: MESH_INTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
"#;

const A_WEB: &str = "outbound|8080|v1|web.team-a.internal";
const B_APP: &str = "outbound|8080||app.team-b.internal";
const B_TCP: &str = "outbound|9000||tcp.team-b.internal";
const C_APP: &str = "outbound|8080||app.team-c.internal";
const PUB80: &str = "127.0.0.1:18080";
const PUB31400: &str = "127.0.0.1:31400";
const BROKEN: &str = "tenants/team-a/broken.yaml";

// --- harness ---------------------------------------------------------------------------------

fn repo(extra: &[(&str, &str)]) -> Vec<SourceFile> {
    let mut files = vec![
        ("gatehouse.yaml", GATEHOUSE),
        ("tenants/team-a/web.yaml", TEAM_A),
        ("tenants/team-b/app.yaml", TEAM_B),
    ];
    files.extend_from_slice(extra);
    files
        .into_iter()
        .map(|(p, y)| SourceFile {
            path: p.into(),
            bytes: y.as_bytes().to_vec(),
        })
        .collect()
}

fn build(files: &[SourceFile], revision: &str, prev: Option<&Accepted>) -> Output {
    let loaded = tenants::load(files, &LoadOptions::default());
    match tenants::build(&loaded, revision, prev) {
        Ok(o) => o,
        Err(e) => panic!("{e}: {e:?}"),
    }
}

fn show(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn errors<'o>(out: &'o Output, tenant: &str) -> Vec<&'o Diagnostic> {
    out.snapshot.tenants[tenant]
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .collect()
}

fn state<'o>(out: &'o Output, tenant: &str) -> (TenantState, Option<&'o str>) {
    let st = &out.snapshot.tenants[tenant];
    (st.state, st.applied_revision.as_deref())
}

/// Where `GET http://<authority>/` on the public group's port 80 goes: the cluster, or why not.
fn http_cluster(out: &Output, authority: &str) -> String {
    let Some(l) = listener(out, PUB80) else {
        return "no listener".into();
    };
    let headers = http::HeaderMap::new();
    let req = RequestView {
        method: "GET",
        scheme: "http",
        authority,
        path: "/",
        headers: &headers,
    };
    match tenants::find::find_on(l, None, &req) {
        Some(Decision::Route(_, r)) => match &r.body.action {
            RouteAction::Forward(cs) if cs.len() == 1 => cs[0].cluster.to_string(),
            other => format!("{other:?}"),
        },
        Some(Decision::NotFound(None)) => "404 no vhost".into(),
        Some(d) => format!("status {:?}", d.local_status()),
        None => "no decision".into(),
    }
}

/// Where a connection to the TCP listener goes.
fn tcp_cluster(out: &Output, addr: &str) -> String {
    match listener(out, addr).map(|l| &l.kind) {
        Some(ListenerKind::Tcp(p)) => p
            .clusters
            .iter()
            .map(|c| &*c.cluster)
            .collect::<Vec<_>>()
            .join(","),
        Some(_) => "not TCP".into(),
        None => "no listener".into(),
    }
}

fn listener<'o>(out: &'o Output, addr: &str) -> Option<&'o tenants::snapshot::Listener> {
    out.snapshot
        .groups
        .values()
        .flat_map(|g| g.listeners.iter())
        .find(|l| l.address.to_string() == addr)
        .map(|l| &**l)
}

/// The 1-based line of the only line of `text` whose trimmed content is `line`.
fn line_of(text: &str, line: &str) -> u32 {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == line)
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{line:?} must be on exactly one line of:\n{text}"
    );
    u32::try_from(hits[0]).unwrap_or(u32::MAX)
}

// --- the table -------------------------------------------------------------------------------

/// A broken `tenants/team-a/broken.yaml` and the error it must get.
struct Refusal {
    name: &'static str,
    yaml: &'static str,
    /// The expected line, and its text (checked against `yaml` so the table cannot drift).
    line: u32,
    on: &'static str,
    field: &'static str,
    message: &'static str,
}

fn refusals() -> Vec<Refusal> {
    vec![
        Refusal {
            name: "server host outside the allowlist",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: stolen
spec:
  selector:
    istio: public-gw
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - www.a.example.com
    - www.b.example.com
"#,
            line: 15,
            on: "- www.b.example.com",
            field: "spec.servers[0].hosts[1]",
            message: r#"host "www.b.example.com" is outside tenant "team-a"'s allowed hosts"#,
        },
        Refusal {
            name: "VirtualService host outside the allowlist",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: stolen
spec:
  hosts:
  - api.a.example.com
  - api.c.example.com
  gateways: [web]
  http:
  - route:
    - destination:
        host: web.team-a.internal
"#,
            line: 8,
            on: "- api.c.example.com",
            field: "spec.hosts[1]",
            message: r#"host "api.c.example.com" is outside tenant "team-a"'s allowed hosts"#,
        },
        Refusal {
            name: "a group the tenant may not use",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: partner
spec:
  selector:
    istio: partner-gw
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - partner.a.example.com
"#,
            line: 6,
            on: "selector:",
            field: "spec.selector",
            message: r#"selects gateway group "partner-gw", which tenant "team-a" may not use"#,
        },
        Refusal {
            name: "a TCP port granted to another tenant",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: tcp
spec:
  selector:
    istio: public-gw
  servers:
  - port:
      number: 31400
      name: tcp
      protocol: TCP
    hosts: ["*"]
"#,
            line: 10,
            on: "number: 31400",
            field: "spec.servers[0].port.number",
            message: r#"TCP port 31400 is not granted to tenant "team-a""#,
        },
        Refusal {
            name: "another tenant's namespace",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: sneaky
  namespace: team-b
spec:
  hosts: [sneaky.team-b.internal]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: DNS
"#,
            line: 5,
            on: "namespace: team-b",
            field: "metadata.namespace",
            message: r#"files under tenants/team-a/ are in namespace "team-a""#,
        },
        Refusal {
            name: "a destination another tenant does not export",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: borrow
spec:
  hosts: [borrow.a.example.com]
  gateways: [web]
  http:
  - route:
    - destination:
        host: app.team-b.internal
"#,
            line: 11,
            on: "host: app.team-b.internal",
            field: "spec.http[0].route[0].destination.host",
            message: r#"declared by tenant "team-b" but not exported to "team-a""#,
        },
        Refusal {
            name: "an undeclared subset",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: canary
spec:
  hosts: [canary.a.example.com]
  gateways: [web]
  http:
  - route:
    - destination:
        host: web.team-a.internal
        subset: v9
"#,
            line: 12,
            on: "subset: v9",
            field: "spec.http[0].route[0].destination.subset",
            message: r#"subset "v9" is not defined for host "web.team-a.internal""#,
        },
        Refusal {
            name: "a duplicate subset name",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: dup
spec:
  host: web.team-a.internal
  subsets:
  - name: v1
    labels: {version: v1}
  - {name: v1, labels: {version: v2}}
"#,
            line: 10,
            on: "- {name: v1, labels: {version: v2}}",
            field: "spec.subsets[1].name",
            message: r#"duplicate subset name "v1""#,
        },
        Refusal {
            name: "a negative weight",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: split
spec:
  hosts: [split.a.example.com]
  gateways: [web]
  http:
  - route:
    - destination:
        host: web.team-a.internal
      weight: 110
    - destination:
        host: web.team-a.internal
      weight: -10
"#,
            line: 15,
            on: "weight: -10",
            field: "spec.http[0].route[1].weight",
            message: "weight -10 must not be negative",
        },
        Refusal {
            name: "redirect together with rewrite",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: moved
spec:
  hosts: [moved.a.example.com]
  gateways: [web]
  http:
  - match:
    - uri:
        prefix: /old
    redirect:
      uri: /new
    rewrite:
      uri: /newer
"#,
            line: 14,
            on: "rewrite:",
            field: "spec.http[0].rewrite",
            message: "cannot contain both redirect and fault or rewrite",
        },
        Refusal {
            name: "an invalid regex",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: items
spec:
  hosts: [items.a.example.com]
  gateways: [web]
  http:
  - match:
    - uri:
        regex: "/items/([0-9]+"
    route:
    - destination:
        host: web.team-a.internal
"#,
            line: 11,
            on: r#"regex: "/items/([0-9]+""#,
            field: "spec.http[0].match[0].uri.regex",
            message: r#"invalid regex "/items/([0-9]+""#,
        },
        Refusal {
            name: "an HTTPS server without tls",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: notls
spec:
  selector:
    istio: public-gw
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - secure.a.example.com
"#,
            // `tls` is missing: the diagnostic points at the server that lacks it.
            line: 9,
            on: "- port:",
            field: "spec.servers[0].tls",
            message: "server must have TLS settings for HTTPS protocol",
        },
        Refusal {
            name: "duplicate server port names",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: twice
spec:
  selector:
    istio: public-gw
  servers:
  - port:
      number: 80
      name: web
      protocol: HTTP
    hosts:
    - one.a.example.com
  - port: {number: 8080, name: web, protocol: HTTP}
    hosts:
    - two.a.example.com
"#,
            line: 15,
            on: "- port: {number: 8080, name: web, protocol: HTTP}",
            field: "spec.servers[1].port.name",
            message: r#"port names in servers must be unique: duplicate name "web""#,
        },
        Refusal {
            name: "resolution NONE with endpoints",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy
spec:
  hosts: [legacy.team-a.internal]
  location: MESH_INTERNAL
  ports:
  - number: 8080
    name: http
    protocol: HTTP
  resolution: NONE
  endpoints:
  - address: 10.0.0.1
"#,
            line: 13,
            on: "endpoints:",
            field: "spec.endpoints",
            message: "NONE mode cannot set endpoints",
        },
        Refusal {
            name: "a misspelt field",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: typo
spec:
  hosts: [typo.a.example.com]
  gateways: [web]
  http:
  - route:
    - destnation:
        host: web.team-a.internal
"#,
            line: 10,
            on: "- destnation:",
            field: "spec.http[0].route[0].destnation",
            message: r#"unknown field (did you mean "destination"?)"#,
        },
        Refusal {
            name: "three credentialNames",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: dual
spec:
  selector:
    istio: public-gw
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [secure.a.example.com]
    tls:
      mode: SIMPLE
      credentialNames: [rsa-cert, ecdsa-cert, spare-cert]
"#,
            line: 13,
            on: "credentialNames: [rsa-cert, ecdsa-cert, spare-cert]",
            field: "spec.servers[0].tls.credentialNames",
            message: "credentialNames takes at most two certificates (one RSA, one ECDSA); it has 3",
        },
        Refusal {
            name: "tlsCertificates in a tenant",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: files
spec:
  selector:
    istio: public-gw
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [secure.a.example.com]
    tls:
      mode: SIMPLE
      tlsCertificates:
      - {serverCertificate: /etc/ssl/a.crt, privateKey: /etc/ssl/a.key}
"#,
            line: 13,
            on: "tlsCertificates:",
            field: "spec.servers[0].tls.tlsCertificates",
            message: "tenants reference certificates by credentialName or credentialNames, not by file path",
        },
        Refusal {
            name: "a client-certificate pin that is not a SHA-256 digest",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: pinned
spec:
  selector:
    istio: public-gw
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [secure.a.example.com]
    tls:
      mode: MUTUAL
      credentialName: secure-cert
      verifyCertificateHash:
      - "AB:CD:EF"
"#,
            line: 15,
            on: r#"- "AB:CD:EF""#,
            field: "spec.servers[0].tls.verifyCertificateHash[0]",
            message: r#""AB:CD:EF" is not a hex SHA-256 digest"#,
        },
        Refusal {
            name: "DYNAMIC_DNS on a TCP port",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: partners
spec:
  hosts: ["*.partner.example"]
  location: MESH_EXTERNAL
  ports:
  - number: 5432
    name: db
    protocol: TCP
  resolution: DYNAMIC_DNS
"#,
            line: 11,
            on: "protocol: TCP",
            field: "spec.ports[0].protocol",
            message: "DYNAMIC_DNS resolution needs HTTP, HTTP2, GRPC, HTTPS or TLS ports (the request or its SNI names the host), not TCP",
        },
        Refusal {
            name: "a retry backoff under a millisecond",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hasty
spec:
  hosts: [hasty.a.example.com]
  gateways: [web]
  http:
  - route:
    - destination:
        host: web.team-a.internal
    retries:
      attempts: 3
      backoff: 500us
"#,
            line: 14,
            on: "backoff: 500us",
            field: "spec.http[0].retries.backoff",
            message: r#"duration "500us" is shorter than 1ms"#,
        },
        Refusal {
            name: "broken YAML syntax",
            yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: broken
   labels: {app: web}
spec:
  hosts: [broken.a.example.com]
"#,
            line: 5,
            on: "labels: {app: web}",
            field: "",
            message: "invalid YAML: mapping values are not allowed in this context",
        },
    ]
}

/// Checks one refused build; returns what is wrong.
fn check_refused(r: &Refusal, out: &Output, baseline: &Output, with_prev: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let errs = errors(out, "team-a");
    let want_line = r.line;
    let found = errs.iter().any(|d| {
        d.file == BROKEN
            && d.field == r.field
            && d.pos.line == want_line
            && d.message.contains(r.message)
    });
    if !found {
        bad.push(format!(
            "no error at {BROKEN}:{want_line} field {:?} containing {:?}; team-a errors:\n{}",
            r.field,
            r.message,
            show(&errs.iter().map(|d| (*d).clone()).collect::<Vec<_>>())
        ));
    }
    if let Some(d) = errs.iter().find(|d| d.file != BROKEN) {
        bad.push(format!("error outside the broken file: {d}"));
    }
    if !out
        .diagnostics
        .iter()
        .any(|d| d.is_error() && d.file == BROKEN && d.field == r.field)
    {
        bad.push("the error is missing from Output.diagnostics".into());
    }
    // team-a: refused, or its last good configuration still served.
    let (st, applied) = state(out, "team-a");
    let (want_state, want_applied, want_web) = if with_prev {
        (TenantState::LastGood, Some("good"), A_WEB)
    } else {
        (TenantState::Refused, None, "404 no vhost")
    };
    if (st, applied) != (want_state, want_applied) {
        bad.push(format!(
            "team-a is {st:?} at {applied:?}, want {want_state:?} at {want_applied:?}"
        ));
    }
    if out.snapshot.tenants["team-a"].attempted_revision != "bad" {
        bad.push("team-a's attempted revision is not \"bad\"".into());
    }
    let web = http_cluster(out, "www.a.example.com");
    if web != want_web {
        bad.push(format!("www.a.example.com -> {web}, want {want_web}"));
    }
    // team-b: unchanged.
    if state(out, "team-b") != (TenantState::Applied, Some("bad")) {
        bad.push(format!("team-b is {:?}", state(out, "team-b")));
    }
    if !errors(out, "team-b").is_empty() {
        bad.push(format!(
            "team-b has errors: {}",
            show(
                &errors(out, "team-b")
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            )
        ));
    }
    for (what, got, base) in [
        (
            "www.b.example.com",
            http_cluster(out, "www.b.example.com"),
            http_cluster(baseline, "www.b.example.com"),
        ),
        (
            "tcp 31400",
            tcp_cluster(out, PUB31400),
            tcp_cluster(baseline, PUB31400),
        ),
    ] {
        if got != base {
            bad.push(format!("team-b {what} -> {got}, baseline {base}"));
        }
    }
    bad
}

#[test]
fn baseline_serves_both_tenants() {
    let good = build(&repo(&[]), "good", None);
    assert!(
        !good.diagnostics.iter().any(Diagnostic::is_error),
        "{}",
        show(&good.diagnostics)
    );
    assert_eq!(state(&good, "team-a"), (TenantState::Applied, Some("good")));
    assert_eq!(state(&good, "team-b"), (TenantState::Applied, Some("good")));
    assert_eq!(http_cluster(&good, "www.a.example.com"), A_WEB);
    assert_eq!(http_cluster(&good, "www.b.example.com"), B_APP);
    assert_eq!(tcp_cluster(&good, PUB31400), B_TCP);
}

#[test]
fn refusals_table() {
    let table = refusals();
    let good = build(&repo(&[]), "good", None);
    assert_eq!(http_cluster(&good, "www.b.example.com"), B_APP);
    let mut failures = Vec::new();
    for r in &table {
        assert_eq!(
            line_of(r.yaml, r.on),
            r.line,
            "{}: the table's line and text disagree",
            r.name
        );
        let files = repo(&[(BROKEN, r.yaml)]);
        let mut bad = Vec::new();
        let fresh = build(&files, "bad", None);
        bad.extend(
            check_refused(r, &fresh, &good, false)
                .into_iter()
                .map(|m| format!("[no previous build] {m}")),
        );
        let fallback = build(&files, "bad", Some(&good.accepted));
        bad.extend(
            check_refused(r, &fallback, &good, true)
                .into_iter()
                .map(|m| format!("[previous build] {m}")),
        );
        if !bad.is_empty() {
            failures.push(format!("{}:\n  {}", r.name, bad.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} refusals wrong:\n\n{}",
        failures.len(),
        table.len(),
        failures.join("\n\n")
    );
}

// --- two tenants, one host -------------------------------------------------------------------

const SHARED_A: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shared}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shared.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shared}
spec:
  hosts: ["shared.example.com"]
  gateways: [shared]
  http:
  - route:
    - destination: {host: web.team-a.internal, subset: v1}
"#;

const SHARED_C: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shared}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shared.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shared}
spec:
  hosts: ["shared.example.com"]
  gateways: [shared]
  http:
  - route:
    - destination: {host: app.team-c.internal}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app}
spec:
  hosts: [app.team-c.internal]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
"#;

const SHARED_A_FILE: &str = "tenants/team-a/shared.yaml";
const SHARED_C_FILE: &str = "tenants/team-c/shared.yaml";
const CLAIM: &str = "public-gw|127.0.0.1:18080|shared.example.com";

fn claim_error<'o>(out: &'o Output, tenant: &str) -> Vec<&'o Diagnostic> {
    errors(out, tenant)
        .into_iter()
        .filter(|d| d.field == "spec.hosts")
        .collect()
}

/// Without a previous build, the tenant first in repository order (tenants/team-a before
/// tenants/team-c) keeps the host; team-c is refused with an error on its VirtualService.
#[test]
fn contested_host_goes_to_the_first_in_repository_order() {
    let out = build(
        &repo(&[(SHARED_A_FILE, SHARED_A), (SHARED_C_FILE, SHARED_C)]),
        "r1",
        None,
    );
    assert_eq!(http_cluster(&out, "shared.example.com"), A_WEB);
    assert_eq!(
        out.snapshot.claims.get(CLAIM).map(String::as_str),
        Some("team-a")
    );
    assert_eq!(state(&out, "team-a"), (TenantState::Applied, Some("r1")));
    assert!(
        errors(&out, "team-a").is_empty(),
        "{}",
        show(&out.diagnostics)
    );
    assert_eq!(state(&out, "team-c"), (TenantState::Refused, None));
    let errs = claim_error(&out, "team-c");
    assert_eq!(errs.len(), 1, "{}", show(&out.diagnostics));
    let d = errs[0];
    assert_eq!(d.file, SHARED_C_FILE);
    assert_eq!(
        d.pos.line,
        line_of(SHARED_C, r#"hosts: ["shared.example.com"]"#)
    );
    assert_eq!(d.pos.line, 14);
    assert_eq!(
        d.object
            .as_ref()
            .map(|o| (o.kind.as_str(), o.name.as_str())),
        Some(("VirtualService", "shared"))
    );
    assert!(
        d.message.contains(r#"host shared.example.com"#)
            && d.message.contains(r#"is already claimed by "team-a""#)
            && d.message
                .contains("the first claimant in repository order keeps it"),
        "{}",
        d.message
    );
    // Nothing of team-c is served; team-b does not notice.
    assert_eq!(state(&out, "team-b"), (TenantState::Applied, Some("r1")));
    assert_eq!(http_cluster(&out, "www.b.example.com"), B_APP);
    assert_eq!(tcp_cluster(&out, PUB31400), B_TCP);
    assert!(
        !out.snapshot
            .groups
            .values()
            .any(|g| g.clusters.contains_key(C_APP))
    );
}

/// With a previous build in which only team-c had the host, team-c keeps it although team-a
/// comes first in repository order; team-a is refused and falls back to its last good
/// configuration (www.a.example.com still served, shared.example.com not).
#[test]
fn contested_host_stays_with_the_incumbent() {
    let before = build(&repo(&[(SHARED_C_FILE, SHARED_C)]), "r1", None);
    assert!(
        !before.diagnostics.iter().any(Diagnostic::is_error),
        "{}",
        show(&before.diagnostics)
    );
    assert_eq!(http_cluster(&before, "shared.example.com"), C_APP);
    assert_eq!(
        before.accepted.claims.get(CLAIM).map(String::as_str),
        Some("team-c")
    );

    let out = build(
        &repo(&[(SHARED_A_FILE, SHARED_A), (SHARED_C_FILE, SHARED_C)]),
        "r2",
        Some(&before.accepted),
    );
    assert_eq!(http_cluster(&out, "shared.example.com"), C_APP);
    assert_eq!(
        out.snapshot.claims.get(CLAIM).map(String::as_str),
        Some("team-c")
    );
    assert_eq!(state(&out, "team-c"), (TenantState::Applied, Some("r2")));
    assert!(
        errors(&out, "team-c").is_empty(),
        "{}",
        show(&out.diagnostics)
    );

    assert_eq!(state(&out, "team-a"), (TenantState::LastGood, Some("r1")));
    assert_eq!(http_cluster(&out, "www.a.example.com"), A_WEB);
    let errs = claim_error(&out, "team-a");
    assert_eq!(errs.len(), 1, "{}", show(&out.diagnostics));
    let d = errs[0];
    assert_eq!(d.file, SHARED_A_FILE);
    assert_eq!(
        d.pos.line,
        line_of(SHARED_A, r#"hosts: ["shared.example.com"]"#)
    );
    assert!(
        d.message.contains(r#"is already claimed by "team-c""#)
            && d.message.contains("the tenant that held it keeps it"),
        "{}",
        d.message
    );
    assert_eq!(state(&out, "team-b"), (TenantState::Applied, Some("r2")));
    assert_eq!(http_cluster(&out, "www.b.example.com"), B_APP);

    // The next build with the same repository gives the same answer: team-c still holds it.
    let again = build(
        &repo(&[(SHARED_A_FILE, SHARED_A), (SHARED_C_FILE, SHARED_C)]),
        "r3",
        Some(&out.accepted),
    );
    assert_eq!(http_cluster(&again, "shared.example.com"), C_APP);
    assert_eq!(state(&again, "team-a"), (TenantState::LastGood, Some("r1")));
}

/// An `httpsRedirect` server naming a host another tenant already serves on the port is a
/// contest like a route would be: it does not silently turn the other tenant's vhost into a
/// redirect, and the loser is told why.
#[test]
fn redirect_server_on_another_tenants_host_is_contested() {
    const REDIRECT_C: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: redirect}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts:
    - shared.example.com
    tls: {httpsRedirect: true}
"#;
    let file = "tenants/team-c/redirect.yaml";
    let out = build(
        &repo(&[(SHARED_A_FILE, SHARED_A), (file, REDIRECT_C)]),
        "r1",
        None,
    );
    assert_eq!(http_cluster(&out, "shared.example.com"), A_WEB);
    assert_eq!(state(&out, "team-a"), (TenantState::Applied, Some("r1")));
    assert_eq!(state(&out, "team-c"), (TenantState::Refused, None));
    let errs = errors(&out, "team-c");
    assert_eq!(errs.len(), 1, "{}", show(&out.diagnostics));
    let d = errs[0];
    assert_eq!(
        (d.file.as_str(), d.pos.line, d.field.as_str()),
        (file, 9, "spec.servers[0].hosts[0]")
    );
    assert!(
        d.message.contains(r#"is already claimed by "team-a""#),
        "{}",
        d.message
    );
}

/// The warnings of `out` that contain `text`.
fn warnings(out: &Output, text: &str) -> Vec<String> {
    out.diagnostics
        .iter()
        .filter(|d| !d.is_error())
        .map(ToString::to_string)
        .filter(|d| d.contains(text))
        .collect()
}

#[test]
fn unix_socket_endpoints_are_the_platform_s_and_a_tenant_s_are_refused_at_their_line() {
    // A tenant's: refused at the address's line, whichever object declares it.
    let we = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: uds}\nspec:\n  address: unix:///run/app.sock\n  labels: {app: uds}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: uds}\nspec:\n  hosts: [uds.team-a.internal]\n  location: MESH_INTERNAL\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n  - {address: \"unix://@control\"}\n";
    let out = build(&repo(&[("tenants/team-a/uds.yaml", we)]), "uds", None);
    let errs: Vec<String> = errors(&out, "team-a")
        .iter()
        .map(ToString::to_string)
        .filter(|d| d.contains("only the platform configuration"))
        .collect();
    assert_eq!(errs.len(), 2, "{}", show(&out.diagnostics));
    assert!(
        errs.iter().any(|e| e.contains("tenants/team-a/uds.yaml:5")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("tenants/team-a/uds.yaml:17")),
        "{errs:?}"
    );
    assert_eq!(state(&out, "team-a"), (TenantState::Refused, None));
    assert_eq!(state(&out, "team-b"), (TenantState::Applied, Some("uds")));

    // The platform's, shared with exportTo: team-a routes to it, and its endpoint is the
    // socket, under an address that stands in for it.
    let platform = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: local-app}\nspec:\n  hosts: [local-app.platform.internal]\n  exportTo: [\"*\"]\n  location: MESH_INTERNAL\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n  - {address: unix:///run/app.sock}\n  - {address: \"unix://@app\", weight: 3}\n";
    let vs = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: local}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"local.a.example.com\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: local}\nspec:\n  hosts: [\"local.a.example.com\"]\n  gateways: [local]\n  http:\n  - route: [{destination: {host: local-app.platform.internal}}]\n";
    let out = build(
        &repo(&[
            ("platform/local-app.yaml", platform),
            ("tenants/team-a/local.yaml", vs),
        ]),
        "uds",
        None,
    );
    assert_eq!(
        state(&out, "team-a"),
        (TenantState::Applied, Some("uds")),
        "{}",
        show(&out.diagnostics)
    );
    let cluster = http_cluster(&out, "local.a.example.com");
    assert_eq!(cluster, "outbound|80||local-app.platform.internal");
    let eps = match &out.snapshot.groups["public-gw"].clusters[&cluster].endpoints {
        tenants::snapshot::Endpoints::Static(v) => v.clone(),
        other => panic!("{other:?}"),
    };
    let got: Vec<(Option<&str>, u32)> = eps.iter().map(|e| (e.unix.as_deref(), e.weight)).collect();
    assert_eq!(got, vec![(Some("/run/app.sock"), 1), (Some("@app"), 3)]);
    for e in &eps {
        assert!(
            tenants::snapshot::is_unix_stand_in(&e.address),
            "{}",
            e.address
        );
        assert_eq!(
            e.address,
            tenants::snapshot::unix_stand_in(e.unix.as_deref().unwrap_or_default())
        );
    }
    assert_ne!(eps[0].address, eps[1].address);
    assert!(!tenants::snapshot::is_unix_stand_in(
        &"[::1]:0".parse().expect("addr")
    ));
}

#[test]
fn a_header_variable_gatehouse_does_not_fill_in_is_a_warning() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vars}\nspec:\n  hosts: [\"vars.a.example.com\"]\n  gateways: [web]\n  http:\n  - headers:\n      request:\n        set: {x-ok: \"%DOWNSTREAM_REMOTE_ADDRESS%\", x-odd: \"%UPSTREAM_METADATA([\\\"a\\\"])%\"}\n    route: [{destination: {host: web.team-a.internal, subset: v1}}]\n";
    let out = build(&repo(&[("tenants/team-a/vars.yaml", vs)]), "vars", None);
    let warned = warnings(&out, "not filled in by gatehouse");
    assert_eq!(warned.len(), 1, "{}", show(&out.diagnostics));
    assert!(warned[0].contains("UPSTREAM_METADATA"), "{}", warned[0]);
    assert_eq!(state(&out, "team-a"), (TenantState::Applied, Some("vars")));
}

#[test]
fn relative_platform_certificate_paths_are_warnings_naming_their_lines() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: portal}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [portal.example.com]\n    tls:\n      mode: SIMPLE\n      serverCertificate: certs/portal.crt\n      privateKey: /etc/gatehouse/portal.key\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: up}\nspec:\n  host: web.team-a.internal\n  exportTo: [\".\"]\n  trafficPolicy:\n    tls: {mode: SIMPLE, caCertificates: ca.pem}\n";
    let out = build(&repo(&[("platform/portal.yaml", gw)]), "rel", None);
    let warned = warnings(&out, "is a relative path");
    assert_eq!(warned.len(), 2, "{}", show(&out.diagnostics));
    assert!(
        warned.iter().any(|w| w.starts_with("platform/portal.yaml:11:")
            && w.contains("spec.servers[0].tls.serverCertificate: \"certs/portal.crt\" is a relative path, read from /")),
        "{warned:?}"
    );
    assert!(
        warned
            .iter()
            .any(|w| w.starts_with("platform/portal.yaml:21:")
                && w.contains("spec.trafficPolicy.tls.caCertificates")),
        "{warned:?}"
    );
}

#[test]
fn a_platform_unix_workload_entry_selected_by_a_dns_service_entry_is_a_warning() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: local}\nspec:\n  address: unix:///run/app.sock\n  labels: {app: local}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: local}\nspec:\n  hosts: [local.platform.internal]\n  location: MESH_INTERNAL\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  workloadSelector: {labels: {app: local}}\n";
    let out = build(&repo(&[("platform/local.yaml", yaml)]), "dns", None);
    let warned = warnings(&out, "which needs an IP address or a host name");
    assert_eq!(warned.len(), 1, "{}", show(&out.diagnostics));
    assert!(
        warned[0].starts_with("platform/local.yaml:5:"),
        "{warned:?}"
    );
}

#[test]
fn tcp_rules_by_subnet_compile_in_order_and_a_bad_subnet_names_its_line() {
    let app = |source: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: app}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 31400, name: tcp, protocol: TCP}}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp}}\nspec:\n  hosts: [\"*\"]\n  gateways: [app]\n  tcp:\n  - match: [{{sourceSubnet: {source}}}]\n    route: [{{destination: {{host: a.team-b.internal}}}}]\n  - route: [{{destination: {{host: b.team-b.internal}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: a}}\nspec:\n  hosts: [a.team-b.internal]\n  location: MESH_INTERNAL\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: b}}\nspec:\n  hosts: [b.team-b.internal]\n  location: MESH_INTERNAL\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n"
        )
    };
    let files = |source: &str| -> Vec<SourceFile> {
        [
            ("gatehouse.yaml", GATEHOUSE.to_string()),
            ("tenants/team-b/app.yaml", app(source)),
        ]
        .into_iter()
        .map(|(p, y)| SourceFile {
            path: p.into(),
            bytes: y.into_bytes(),
        })
        .collect()
    };
    let out = build(&files("10.0.0.0/8"), "subnets", None);
    assert_eq!(
        state(&out, "team-b"),
        (TenantState::Applied, Some("subnets")),
        "{}",
        show(&out.diagnostics)
    );
    let Some(ListenerKind::Tcp(p)) = listener(&out, PUB31400).map(|l| &l.kind) else {
        panic!("no TCP listener");
    };
    assert_eq!(p.by_address.len(), 1);
    assert_eq!(p.by_address[0].name, "team-b/tcp.tcp.0");
    let ip = |s: &str| -> std::net::IpAddr { s.parse().expect("ip") };
    let local = ip("127.0.0.1");
    let (name, cs) = p.clusters_for(ip("10.1.2.3"), local);
    assert_eq!(
        (name, &*cs[0].cluster),
        ("team-b/tcp.tcp.0", "outbound|9000||a.team-b.internal")
    );
    let (name, cs) = p.clusters_for(ip("192.0.2.1"), local);
    assert_eq!(
        (name, &*cs[0].cluster),
        ("team-b/tcp.tcp.1", "outbound|9000||b.team-b.internal")
    );

    // The rules of one VirtualService: a later one's catch-all is not consulted, so the
    // port's connections stay one owner's.
    let split = files("10.0.0.0/8")
        .into_iter()
        .map(|mut f| {
            let text = String::from_utf8(f.bytes).expect("utf-8");
            f.bytes = text
                .replace(
                    "  - route: [{destination: {host: b.team-b.internal}}]\n",
                    "",
                )
                .replace(
                    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}",
                    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp-later}\nspec:\n  hosts: [\"*\"]\n  gateways: [app]\n  tcp:\n  - route: [{destination: {host: b.team-b.internal}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}",
                )
                .into_bytes();
            f
        })
        .collect::<Vec<_>>();
    let out = build(&split, "split", None);
    let Some(ListenerKind::Tcp(p)) = listener(&out, PUB31400).map(|l| &l.kind) else {
        panic!("no TCP listener: {}", show(&out.diagnostics));
    };
    assert_eq!((p.by_address.len(), p.clusters.len()), (1, 0), "{p:?}");
    assert!(p.clusters_for(ip("192.0.2.1"), local).1.is_empty());
    let warned = warnings(&out, "Istio's gateways ignore sourceSubnet");
    assert_eq!(warned.len(), 1, "{}", show(&out.diagnostics));

    let out = build(&files("10.0.0.0/33"), "bad", None);
    let errs: Vec<String> = errors(&out, "team-b")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errs.iter().any(|e| e.starts_with("tenants/team-b/app.yaml:17:")
            && e.contains("spec.tcp[0].match[0].sourceSubnet: \"10.0.0.0/33\": the prefix length must be 0 to 32")),
        "{errs:?}"
    );
}
