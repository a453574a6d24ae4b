//! Route choice, table-driven: manifests + request → cluster, route, status or listener
//! outcome, following istio-api.md §3 (gateway merge, VirtualService binding, vhost and route
//! choice, SNI filter chains, TCP and TLS passthrough).
//!
//! Every row compiles a repository made of [`GATEHOUSE`] and [`SERVICES`] plus the row's
//! tenant files, checks that nothing was refused, finds the listener by its bound address and
//! runs the request through [`tenants::find::find_on`] or [`Listener::chain`].

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use tenants::find::{self, Decision, RequestView};
use tenants::snapshot::{ChainAction, Listener, ListenerKind, RouteAction, WeightedCluster};
use tenants::{LoadOptions, Snapshot, SourceFile};

// --- the platform every row shares -------------------------------------------------------

/// Two groups: `public-gw` bound to 127.0.0.1 with 80→18080 and 443→18443 (8080, 31400 and
/// 31401 unmapped), and `partner-gw` with no loadBalancerIP (0.0.0.0 and ::) and 80→28080.
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
          ports:
          - {name: http2, port: 80, targetPort: 28080}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-a}
spec:
  hosts: ["*"]
  gateways: [public-gw, partner-gw]
  tcpPorts: [31400, 31401]
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-b}
spec:
  hosts: ["*"]
  gateways: [public-gw, partner-gw]
"#;

/// Services every tenant may route to (exported to all), and subsets v1/v2 of a.svc.internal.
const SERVICES: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: http-backends}
spec:
  hosts: [a.svc.internal, b.svc.internal, c.svc.internal, d.svc.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-subsets}
spec:
  host: a.svc.internal
  exportTo: ["*"]
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: t1}
spec:
  hosts: [t1.svc.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: t2}
spec:
  hosts: [t2.svc.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db1}
spec:
  hosts: [db1.svc.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{number: 5432, name: tls-pg, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db2}
spec:
  hosts: [db2.svc.internal]
  exportTo: ["*"]
  location: MESH_INTERNAL
  ports: [{number: 5432, name: tls-pg, protocol: TLS}]
  resolution: DNS
"#;

const A: &str = "outbound|8080||a.svc.internal";
const A_V1: &str = "outbound|8080|v1|a.svc.internal";
const A_V2: &str = "outbound|8080|v2|a.svc.internal";
const B: &str = "outbound|8080||b.svc.internal";
const C: &str = "outbound|8080||c.svc.internal";
const D: &str = "outbound|8080||d.svc.internal";
const T1: &str = "outbound|9000||t1.svc.internal";
const T2: &str = "outbound|9000||t2.svc.internal";
const DB1: &str = "outbound|5432||db1.svc.internal";
const DB2: &str = "outbound|5432||db2.svc.internal";

/// Listening addresses: the Gateway port after the group's targetPort mapping.
const PUB80: &str = "127.0.0.1:18080";
const PUB443: &str = "127.0.0.1:18443";
const PUB8080: &str = "127.0.0.1:8080";
const PUB31400: &str = "127.0.0.1:31400";
const PUB31401: &str = "127.0.0.1:31401";
const PARTNER80: &str = "0.0.0.0:28080";
const PARTNER80_V6: &str = "[::]:28080";

// --- manifest builders ---------------------------------------------------------------------

type Files = Vec<(String, String)>;

fn file(path: &str, yaml: String) -> (String, String) {
    (path.to_string(), yaml)
}

/// A Gateway selecting `group` with the given servers (see [`server`]).
fn gateway(name: &str, group: &str, servers: &[String]) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  selector: {{istio: {group}}}\n  servers:\n{}",
        servers.concat()
    )
}

/// One server: `port` (number, name, protocol) and flow-style `hosts`.
fn server(number: u16, name: &str, protocol: &str, hosts: &str) -> String {
    format!(
        "  - port: {{number: {number}, name: {name}, protocol: {protocol}}}\n    hosts: {hosts}\n"
    )
}

/// A server with a flow-style `tls` block.
fn server_tls(number: u16, name: &str, protocol: &str, hosts: &str, tls: &str) -> String {
    format!("{}    tls: {tls}\n", server(number, name, protocol, hosts))
}

/// A VirtualService; `rules` is one flow-style line such as `http: [...]` or `tcp: [...]`.
fn vs(name: &str, hosts: &str, gateways: &str, rules: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n  {rules}\n"
    )
}

/// `http: [rule, ...]`.
fn http(rules: &[String]) -> String {
    format!("http: [{}]", rules.join(", "))
}

/// A rule without match that forwards to `host`.
fn fwd(host: &str) -> String {
    format!("{{route: [{{destination: {{host: {host}}}}}]}}")
}

/// A rule with one match block that forwards to `host`.
fn when(m: &str, host: &str) -> String {
    format!("{{match: [{m}], route: [{{destination: {{host: {host}}}}}]}}")
}

/// A named rule with one match block that forwards to `host`.
fn named(name: &str, m: &str, host: &str) -> String {
    format!("{{name: {name}, match: [{m}], route: [{{destination: {{host: {host}}}}}]}}")
}

/// Concatenates documents of one file.
fn docs(d: &[String]) -> String {
    d.join("---\n")
}

// --- requests and expectations -------------------------------------------------------------

#[derive(Debug, Clone)]
struct Req {
    addr: &'static str,
    sni: Option<&'static str>,
    scheme: &'static str,
    method: &'static str,
    authority: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

/// Plain HTTP GET.
fn get(addr: &'static str, authority: &'static str, path: &'static str) -> Req {
    Req {
        addr,
        sni: None,
        scheme: "http",
        method: "GET",
        authority,
        path,
        headers: Vec::new(),
    }
}

/// HTTPS GET with an SNI.
fn https(
    addr: &'static str,
    sni: &'static str,
    authority: &'static str,
    path: &'static str,
) -> Req {
    Req {
        sni: Some(sni),
        scheme: "https",
        ..get(addr, authority, path)
    }
}

/// A TLS connection (passthrough) with an optional SNI.
fn tls(addr: &'static str, sni: Option<&'static str>) -> Req {
    Req {
        sni,
        scheme: "https",
        ..get(addr, "", "")
    }
}

/// A TCP connection.
fn tcp(addr: &'static str) -> Req {
    get(addr, "", "")
}

impl Req {
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }

    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.push((k, v));
        self
    }
}

#[derive(Debug, Clone)]
enum Want {
    /// Forwarded to exactly this cluster.
    Cluster(&'static str),
    /// Forwarded to these weighted clusters, in order.
    ClusterSplit(Vec<(&'static str, u32)>),
    /// This route matched (whatever its action).
    Route(&'static str),
    /// The gateway answers itself with this status (redirect, direct response, 301, 404).
    Status(u16),
    /// 404 because no virtual host matches the authority (`NotFound(None)`).
    NoVhost,
    /// 404 because no route of the chosen virtual host matches (`NotFound(Some)`).
    NoRoute,
    /// 301 from `httpsRedirect` (`Decision::HttpsRedirect`).
    HttpsRedirect,
    /// Forwarded; `find::pick(clusters, r)` chooses these for these values of `r`.
    Picks(Vec<(u64, &'static str)>),
    /// A passthrough chain to exactly this cluster.
    Passthrough(&'static str),
    /// A TCP listener with these weighted clusters.
    Tcp(Vec<(&'static str, u32)>),
    /// A TLS listener exists but no filter chain takes this SNI.
    NoChain,
    /// Nothing listens on the address.
    NoListener,
}

use Want::*;

struct Case {
    name: &'static str,
    files: Files,
    req: Req,
    want: Want,
}

fn case(name: &'static str, files: Files, req: Req, want: Want) -> Case {
    Case {
        name,
        files,
        req,
        want,
    }
}

// --- the harness ---------------------------------------------------------------------------

fn compile(files: &Files) -> Snapshot {
    let mut src = vec![
        SourceFile {
            path: "gatehouse.yaml".into(),
            bytes: GATEHOUSE.as_bytes().to_vec(),
        },
        SourceFile {
            path: "platform/services.yaml".into(),
            bytes: SERVICES.as_bytes().to_vec(),
        },
    ];
    src.extend(files.iter().map(|(p, y)| SourceFile {
        path: p.clone(),
        bytes: y.as_bytes().to_vec(),
    }));
    let loaded = tenants::load(&src, &LoadOptions::default());
    let out = match tenants::build(&loaded, "test", None) {
        Ok(o) => o,
        Err(tenants::BuildError::Platform { diagnostics }) => panic!(
            "platform refused:\n{}",
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(e) => panic!("build failed: {e}"),
    };
    let errors: Vec<String> = out
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "unexpected error diagnostics:\n{}",
        errors.join("\n")
    );
    for (t, st) in &out.snapshot.tenants {
        assert_eq!(
            st.state,
            tenants::snapshot::TenantState::Applied,
            "tenant {t} not applied"
        );
    }
    out.snapshot
}

fn listener<'s>(snap: &'s Snapshot, addr: &str) -> Option<&'s Arc<Listener>> {
    snap.groups
        .values()
        .flat_map(|g| g.listeners.iter())
        .find(|l| l.address.to_string() == addr)
}

fn weighted(cs: &[WeightedCluster]) -> Vec<(String, u32)> {
    cs.iter()
        .map(|c| (c.cluster.to_string(), c.weight))
        .collect()
}

fn owned(v: &[(&str, u32)]) -> Vec<(String, u32)> {
    v.iter().map(|(c, w)| (c.to_string(), *w)).collect()
}

/// Runs one case; returns a description of the mismatch, if any.
fn run(c: &Case) -> Result<(), String> {
    let snap = compile(&c.files);
    let Some(l) = listener(&snap, c.req.addr) else {
        let all: Vec<String> = snap
            .groups
            .values()
            .flat_map(|g| g.listeners.iter().map(|l| l.address.to_string()))
            .collect();
        return match c.want {
            NoListener => Ok(()),
            _ => Err(format!(
                "no listener on {} (listeners: {all:?})",
                c.req.addr
            )),
        };
    };
    let dump = || serde_json::to_string_pretty(&**l).unwrap_or_default();
    let fail = |got: String| Err(format!("got {got}\nlistener: {}", dump()));
    if matches!(c.want, NoListener) {
        return fail(format!("a listener {}", l.name));
    }
    // L4 outcomes first.
    match (&l.kind, &c.want) {
        (ListenerKind::Tcp(p), Tcp(want)) => {
            let got = weighted(&p.clusters);
            return if got == owned(want) {
                Ok(())
            } else {
                fail(format!("tcp {got:?}"))
            };
        }
        (ListenerKind::Tcp(p), _) => return fail(format!("tcp {:?}", weighted(&p.clusters))),
        (ListenerKind::Tls(_), _) => match l.chain(c.req.sni) {
            None => {
                return if matches!(c.want, NoChain) {
                    Ok(())
                } else {
                    fail("no filter chain".into())
                };
            }
            Some(ch) => match (&ch.action, &c.want) {
                (ChainAction::Passthrough(p), Passthrough(want)) => {
                    let got = weighted(&p.clusters);
                    return if got == owned(&[(want, 100)]) {
                        Ok(())
                    } else {
                        fail(format!("passthrough {got:?}"))
                    };
                }
                (ChainAction::Passthrough(p), _) => {
                    return fail(format!("passthrough {:?}", weighted(&p.clusters)));
                }
                (ChainAction::TerminateTcp { tcp, .. }, _) => {
                    return fail(format!("terminated tcp {:?}", weighted(&tcp.clusters)));
                }
                (ChainAction::TerminateHttp { .. }, _) => {}
            },
        },
        (ListenerKind::Http(_), _) => {}
    }
    // HTTP.
    let mut headers = HeaderMap::new();
    for (k, v) in &c.req.headers {
        headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let req = RequestView {
        method: c.req.method,
        scheme: c.req.scheme,
        authority: c.req.authority,
        path: c.req.path,
        headers: &headers,
    };
    let Some(d) = find::find_on(l, c.req.sni, &req) else {
        return fail("no HTTP decision".into());
    };
    let got = match d {
        Decision::Route(vh, r) => match &r.body.action {
            RouteAction::Forward(cs) => {
                format!("route {} in {} -> {:?}", r.name, vh.name, weighted(cs))
            }
            _ => format!(
                "route {} in {} -> local {:?}",
                r.name,
                vh.name,
                d.local_status()
            ),
        },
        Decision::HttpsRedirect(vh) => format!("https redirect in {}", vh.name),
        Decision::NotFound(None) => "404 no virtual host".into(),
        Decision::NotFound(Some(vh)) => format!("404 no route in {}", vh.name),
    };
    let forward = match d {
        Decision::Route(_, r) => match &r.body.action {
            RouteAction::Forward(cs) => Some(cs),
            _ => None,
        },
        _ => None,
    };
    let ok = match &c.want {
        Cluster(want) => forward.is_some_and(|cs| weighted(cs) == owned(&[(want, 100)])),
        ClusterSplit(want) => forward.is_some_and(|cs| weighted(cs) == owned(want)),
        Route(want) => matches!(d, Decision::Route(_, r) if &*r.name == *want),
        Status(want) => d.local_status() == Some(*want),
        NoVhost => matches!(d, Decision::NotFound(None)) && d.local_status() == Some(404),
        NoRoute => matches!(d, Decision::NotFound(Some(_))) && d.local_status() == Some(404),
        HttpsRedirect => matches!(d, Decision::HttpsRedirect(_)) && d.local_status() == Some(301),
        Picks(want) => forward.is_some_and(|cs| {
            want.iter()
                .all(|(r, name)| find::pick(cs, *r).is_some_and(|p| &*p.cluster == *name))
        }),
        Passthrough(_) | Tcp(_) | NoChain | NoListener => false,
    };
    if ok { Ok(()) } else { fail(got) }
}

// --- fixtures: one repository shape, several requests ----------------------------------------

fn gw_file(servers: &[String]) -> (String, String) {
    file(
        "tenants/team-a/gw.yaml",
        gateway("gw", "public-gw", servers),
    )
}

fn http80(hosts: &str) -> String {
    server(80, "http", "HTTP", hosts)
}

/// Server `*.example.com`, VirtualService `a.example.com`.
fn wild_server_exact_vs() -> Files {
    vec![
        gw_file(&[http80(r#"["*.example.com"]"#)]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "vs",
                "[a.example.com]",
                "[gw]",
                &http(&[fwd("a.svc.internal")]),
            ),
        ),
    ]
}

/// Server `a.example.com`, VirtualService `*`.
fn exact_server_star_vs() -> Files {
    vec![
        gw_file(&[http80("[a.example.com]")]),
        file(
            "tenants/team-a/vs.yaml",
            vs("vs", r#"["*"]"#, "[gw]", &http(&[fwd("b.svc.internal")])),
        ),
    ]
}

/// Server `*.example.com`, VirtualService `example.com`: no intersection.
fn wild_server_apex_vs() -> Files {
    vec![
        gw_file(&[http80(r#"["*.example.com"]"#)]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "vs",
                "[example.com]",
                "[gw]",
                &http(&[fwd("a.svc.internal")]),
            ),
        ),
    ]
}

/// Server and VirtualService both `*.example.com`.
fn wild_both() -> Files {
    vec![
        gw_file(&[http80(r#"["*.example.com"]"#)]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "vs",
                r#"["*.example.com"]"#,
                "[gw]",
                &http(&[fwd("a.svc.internal")]),
            ),
        ),
    ]
}

/// Vhosts `*.example.com` (a), `a.example.com` (b), `*.b.example.com` (c) on one server.
fn vhost_precedence() -> Files {
    vec![
        gw_file(&[http80(r#"["*.example.com"]"#)]),
        file(
            "tenants/team-a/vs.yaml",
            docs(&[
                vs(
                    "wild",
                    r#"["*.example.com"]"#,
                    "[gw]",
                    &http(&[fwd("a.svc.internal")]),
                ),
                vs(
                    "exact",
                    "[a.example.com]",
                    "[gw]",
                    &http(&[fwd("b.svc.internal")]),
                ),
                vs(
                    "deeper",
                    r#"["*.b.example.com"]"#,
                    "[gw]",
                    &http(&[fwd("c.svc.internal")]),
                ),
            ]),
        ),
    ]
}

/// A platform Gateway whose hosts carry namespace prefixes.
fn ns_prefixes() -> Files {
    let shared = "[istio-system/shared]";
    vec![
        file(
            "platform/shared.yaml",
            docs(&[
                gateway(
                    "shared",
                    "public-gw",
                    &[http80(
                        r#"["./p.example.com", "*/any.example.com", "team-a/a.example.com"]"#,
                    )],
                ),
                vs(
                    "platform-p",
                    "[p.example.com]",
                    "[shared]",
                    &http(&[fwd("d.svc.internal")]),
                ),
            ]),
        ),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "ta",
                "[a.example.com]",
                shared,
                &http(&[fwd("a.svc.internal")]),
            ),
        ),
        file(
            "tenants/team-b/vs.yaml",
            docs(&[
                vs(
                    "tb",
                    "[a.example.com, any.example.com]",
                    shared,
                    &http(&[fwd("b.svc.internal")]),
                ),
                vs(
                    "tb-p",
                    "[p.example.com]",
                    shared,
                    &http(&[fwd("b.svc.internal")]),
                ),
            ]),
        ),
    ]
}

/// A tenant Gateway with `./a.example.com`.
fn dot_prefix_tenant() -> Files {
    vec![
        gw_file(&[http80(r#"["./a.example.com"]"#)]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "vs",
                "[a.example.com]",
                "[gw]",
                &http(&[fwd("a.svc.internal")]),
            ),
        ),
    ]
}

/// Two VirtualServices on one host in two files: file path order, not name order.
fn merged_file_order() -> Files {
    vec![
        gw_file(&[http80("[m.example.com]")]),
        file(
            "tenants/team-a/10-api.yaml",
            vs(
                "zz-api",
                "[m.example.com]",
                "[gw]",
                &http(&[when("{uri: {prefix: /api}}", "a.svc.internal")]),
            ),
        ),
        file(
            "tenants/team-a/20-v2.yaml",
            vs(
                "aa-v2",
                "[m.example.com]",
                "[gw]",
                &http(&[when("{uri: {prefix: /api/v2}}", "b.svc.internal")]),
            ),
        ),
    ]
}

/// Two VirtualServices on one host in one file: document order.
fn merged_doc_order() -> Files {
    vec![
        gw_file(&[http80("[m.example.com]")]),
        file(
            "tenants/team-a/vs.yaml",
            docs(&[
                vs(
                    "zz-v2",
                    "[m.example.com]",
                    "[gw]",
                    &http(&[when("{uri: {prefix: /api/v2}}", "b.svc.internal")]),
                ),
                vs(
                    "aa-api",
                    "[m.example.com]",
                    "[gw]",
                    &http(&[when("{uri: {prefix: /api}}", "a.svc.internal")]),
                ),
            ]),
        ),
    ]
}

/// The first VirtualService is a catch-all (no match); the second has `/special`.
fn catch_all_last() -> Files {
    vec![
        gw_file(&[http80("[m.example.com]")]),
        file(
            "tenants/team-a/1.yaml",
            vs(
                "first",
                "[m.example.com]",
                "[gw]",
                &http(&[fwd("a.svc.internal")]),
            ),
        ),
        file(
            "tenants/team-a/2.yaml",
            vs(
                "second",
                "[m.example.com]",
                "[gw]",
                &http(&[when("{uri: {prefix: /special}}", "b.svc.internal")]),
            ),
        ),
    ]
}

/// The first VirtualService's catch-all is `prefix: /`; the second matches a header.
fn catch_all_slash_last() -> Files {
    vec![
        gw_file(&[http80("[m.example.com]")]),
        file(
            "tenants/team-a/1.yaml",
            vs(
                "first",
                "[m.example.com]",
                "[gw]",
                &http(&[when("{uri: {prefix: /}}", "a.svc.internal")]),
            ),
        ),
        file(
            "tenants/team-a/2.yaml",
            vs(
                "second",
                "[m.example.com]",
                "[gw]",
                &http(&[when(
                    "{headers: {x-canary: {exact: \"yes\"}}}",
                    "b.svc.internal",
                )]),
            ),
        ),
    ]
}

/// Rules after a catch-all in one VirtualService are never generated.
fn stop_after_catch_all() -> Files {
    vec![
        gw_file(&[http80("[m.example.com]")]),
        file(
            "tenants/team-a/1.yaml",
            vs(
                "first",
                "[m.example.com]",
                "[gw]",
                &http(&[
                    when("{uri: {prefix: /x}}", "a.svc.internal"),
                    fwd("b.svc.internal"),
                    when("{uri: {prefix: /z}}", "c.svc.internal"),
                ]),
            ),
        ),
        file(
            "tenants/team-a/2.yaml",
            vs(
                "second",
                "[m.example.com]",
                "[gw]",
                &http(&[when("{uri: {prefix: /z}}", "d.svc.internal")]),
            ),
        ),
    ]
}

/// Port 443: team-a terminates web and api (SIMPLE), team-b passes `*.db.example.com` through.
fn sni_mixed() -> Files {
    vec![
        file(
            "tenants/team-a/gw.yaml",
            gateway(
                "web",
                "public-gw",
                &[
                    server_tls(
                        443,
                        "https",
                        "HTTPS",
                        "[web.example.com]",
                        "{mode: SIMPLE, credentialName: web-cert}",
                    ),
                    server_tls(
                        443,
                        "https-api",
                        "HTTPS",
                        "[api.example.com]",
                        "{mode: SIMPLE, credentialName: api-cert}",
                    ),
                ],
            ),
        ),
        file(
            "tenants/team-a/vs.yaml",
            docs(&[
                vs(
                    "web",
                    "[web.example.com]",
                    "[web]",
                    &http(&[fwd("a.svc.internal")]),
                ),
                vs(
                    "api",
                    "[api.example.com]",
                    "[web]",
                    &http(&[fwd("c.svc.internal")]),
                ),
            ]),
        ),
        file(
            "tenants/team-b/pt.yaml",
            docs(&[
                gateway(
                    "pt",
                    "public-gw",
                    &[server_tls(
                        443,
                        "tls",
                        "TLS",
                        r#"["*.db.example.com"]"#,
                        "{mode: PASSTHROUGH}",
                    )],
                ),
                vs(
                    "pt",
                    r#"["*.db.example.com"]"#,
                    "[pt]",
                    concat!(
                        "tls: [",
                        "{match: [{sniHosts: [a.db.example.com]}], route: [{destination: {host: db1.svc.internal}}]}, ",
                        "{match: [{sniHosts: [\"*.db.example.com\"]}], route: [{destination: {host: db2.svc.internal}}]}]"
                    ),
                ),
            ]),
        ),
    ]
}

/// Passthrough sniHosts `*.example.com` and `*.db.example.com`: the longest wildcard wins.
fn sni_longest_wildcard() -> Files {
    vec![file(
        "tenants/team-b/pt.yaml",
        docs(&[
            gateway(
                "pt",
                "public-gw",
                &[server_tls(
                    443,
                    "tls",
                    "TLS",
                    r#"["*.example.com"]"#,
                    "{mode: PASSTHROUGH}",
                )],
            ),
            vs(
                "pt",
                r#"["*.example.com"]"#,
                "[pt]",
                concat!(
                    "tls: [",
                    "{match: [{sniHosts: [\"*.example.com\"]}], route: [{destination: {host: db1.svc.internal}}]}, ",
                    "{match: [{sniHosts: [\"*.db.example.com\"]}], route: [{destination: {host: db2.svc.internal}}]}]"
                ),
            ),
        ]),
    )]
}

/// Two terminating servers, `*.example.com` and `web.example.com`, in two Gateways.
fn https_wildcard_and_exact() -> Files {
    vec![
        file(
            "tenants/team-a/gw.yaml",
            docs(&[
                gateway(
                    "wild",
                    "public-gw",
                    &[server_tls(
                        443,
                        "https",
                        "HTTPS",
                        r#"["*.example.com"]"#,
                        "{mode: SIMPLE, credentialName: wild-cert}",
                    )],
                ),
                gateway(
                    "web",
                    "public-gw",
                    &[server_tls(
                        443,
                        "https",
                        "HTTPS",
                        "[web.example.com]",
                        "{mode: SIMPLE, credentialName: web-cert}",
                    )],
                ),
            ]),
        ),
        file(
            "tenants/team-a/vs.yaml",
            docs(&[
                vs(
                    "wild",
                    r#"["*.example.com"]"#,
                    "[wild]",
                    &http(&[fwd("a.svc.internal")]),
                ),
                vs(
                    "web",
                    "[web.example.com]",
                    "[web]",
                    &http(&[fwd("b.svc.internal")]),
                ),
            ]),
        ),
    ]
}

/// TCP 31400 (80/20 to t1/t2) and 31401 (t2), told apart by `match.port`.
fn tcp_ports() -> Files {
    vec![
        gw_file(&[
            server(31400, "tcp", "TCP", r#"["*"]"#),
            server(31401, "tcp2", "TCP", r#"["*"]"#),
        ]),
        file(
            "tenants/team-a/tcp.yaml",
            vs(
                "tcp",
                r#"["*"]"#,
                "[gw]",
                concat!(
                    "tcp: [",
                    "{match: [{port: 31400}], route: [{destination: {host: t1.svc.internal}, weight: 80}, {destination: {host: t2.svc.internal}, weight: 20}]}, ",
                    "{match: [{port: 31401}], route: [{destination: {host: t2.svc.internal}}]}]"
                ),
            ),
        ),
    ]
}

/// A TCP server whose only VirtualService matches another port.
fn tcp_other_port() -> Files {
    vec![
        gw_file(&[server(31400, "tcp", "TCP", r#"["*"]"#)]),
        file(
            "tenants/team-a/tcp.yaml",
            vs(
                "tcp",
                r#"["*"]"#,
                "[gw]",
                "tcp: [{match: [{port: 31401}], route: [{destination: {host: t1.svc.internal}}]}]",
            ),
        ),
    ]
}

/// One VirtualService on a public and a partner Gateway; a rule for the partner one only.
fn match_gateways() -> Files {
    vec![
        file(
            "tenants/team-a/gw.yaml",
            docs(&[
                gateway("pub", "public-gw", &[http80("[g.example.com]")]),
                gateway("partner", "partner-gw", &[http80("[g.example.com]")]),
            ]),
        ),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "g",
                "[g.example.com]",
                "[pub, partner]",
                &http(&[
                    when("{gateways: [partner], uri: {prefix: /}}", "b.svc.internal"),
                    fwd("a.svc.internal"),
                ]),
            ),
        ),
    ]
}

/// Servers on 80 and 8080; a rule for port 8080 only.
fn match_port() -> Files {
    vec![
        gw_file(&[
            http80("[p.example.com]"),
            server(8080, "http-alt", "HTTP", "[p.example.com]"),
        ]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "p",
                "[p.example.com]",
                "[gw]",
                &http(&[
                    when("{port: 8080, uri: {prefix: /}}", "b.svc.internal"),
                    fwd("a.svc.internal"),
                ]),
            ),
        ),
    ]
}

/// `r.example.com` redirects on 80 and is served on 443; `plain.example.com` is served on 80.
fn https_redirect() -> Files {
    vec![
        gw_file(&[
            server_tls(
                80,
                "http",
                "HTTP",
                "[r.example.com]",
                "{httpsRedirect: true}",
            ),
            server(80, "http-plain", "HTTP", "[plain.example.com]"),
            server_tls(
                443,
                "https",
                "HTTPS",
                "[r.example.com]",
                "{mode: SIMPLE, credentialName: r-cert}",
            ),
        ]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "r",
                "[r.example.com, plain.example.com]",
                "[gw]",
                &http(&[fwd("a.svc.internal")]),
            ),
        ),
    ]
}

/// A redirecting server with no VirtualService.
fn https_redirect_alone() -> Files {
    vec![gw_file(&[server_tls(
        80,
        "http",
        "HTTP",
        "[only.example.com]",
        "{httpsRedirect: true}",
    )])]
}

/// Istio's "mixed httpsRedirect with routes": Gateway `a-routes` (first in file order) has the
/// routes, Gateway `b-redirect` only redirects the same host.
fn https_redirect_mixed() -> Files {
    vec![
        file(
            "tenants/team-a/a-routes.yaml",
            docs(&[
                gateway("routes", "public-gw", &[http80("[mix.example.com]")]),
                vs(
                    "mix",
                    "[mix.example.com]",
                    "[routes]",
                    &http(&[fwd("a.svc.internal")]),
                ),
            ]),
        ),
        file(
            "tenants/team-a/b-redirect.yaml",
            gateway(
                "redirect",
                "public-gw",
                &[server_tls(
                    80,
                    "http",
                    "HTTP",
                    "[mix.example.com]",
                    "{httpsRedirect: true}",
                )],
            ),
        ),
    ]
}

/// A vhost whose only route matches `/api`, and a server host nothing binds.
fn no_route() -> Files {
    vec![
        gw_file(&[http80("[n.example.com, x.example.com]")]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "n",
                "[n.example.com]",
                "[gw]",
                &http(&[when("{uri: {exact: /api}}", "a.svc.internal")]),
            ),
        ),
    ]
}

/// One named rule per kind of match, then a default.
fn matchers() -> Files {
    vec![
        gw_file(&[http80(r#"["*.example.com"]"#)]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "m",
                r#"["*.example.com"]"#,
                "[gw]",
                &http(&[
                    named(
                        "hdr",
                        "{headers: {x-env: {exact: canary}}}",
                        "b.svc.internal",
                    ),
                    named(
                        "re-hdr",
                        "{headers: {x-user: {regex: \"user-[0-9]+\"}}}",
                        "c.svc.internal",
                    ),
                    named("post", "{method: {exact: POST}}", "d.svc.internal"),
                    named(
                        "query",
                        "{queryParams: {q: {exact: rust}}}",
                        "b.svc.internal",
                    ),
                    named(
                        "authority",
                        "{authority: {prefix: \"api.\"}}",
                        "c.svc.internal",
                    ),
                    named(
                        "regex",
                        "{uri: {regex: \"/items/[0-9]+\"}}",
                        "d.svc.internal",
                    ),
                    named("exact", "{uri: {exact: /health}}", "b.svc.internal"),
                    named(
                        "search",
                        "{uri: {prefix: \"/search?q=\"}}",
                        "c.svc.internal",
                    ),
                    named("apis", "{uri: {prefix: /api}}", "d.svc.internal"),
                    named(
                        "upper",
                        "{uri: {prefix: /CASE}, ignoreUriCase: true}",
                        "b.svc.internal",
                    ),
                    "{name: default, route: [{destination: {host: a.svc.internal}}]}".into(),
                ]),
            ),
        ),
    ]
}

/// 70/30 between two subsets.
fn weights() -> Files {
    vec![
        gw_file(&[http80("[w.example.com]")]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "w",
                "[w.example.com]",
                "[gw]",
                "http: [{route: [{destination: {host: a.svc.internal, subset: v1}, weight: 70}, {destination: {host: a.svc.internal, subset: v2}, weight: 30}]}]",
            ),
        ),
    ]
}

/// 100/0: the zero-weight destination is dropped.
fn zero_weight() -> Files {
    vec![
        gw_file(&[http80("[w.example.com]")]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "w",
                "[w.example.com]",
                "[gw]",
                "http: [{route: [{destination: {host: a.svc.internal}, weight: 100}, {destination: {host: b.svc.internal}, weight: 0}]}]",
            ),
        ),
    ]
}

/// Redirects and direct responses.
fn local_replies() -> Files {
    vec![
        gw_file(&[http80("[l.example.com]")]),
        file(
            "tenants/team-a/vs.yaml",
            vs(
                "l",
                "[l.example.com]",
                "[gw]",
                &http(&[
                    "{match: [{uri: {prefix: /old}}], redirect: {uri: /new, redirectCode: 302}}".into(),
                    "{match: [{uri: {prefix: /moved}}], redirect: {authority: new.example.com}}".into(),
                    "{match: [{uri: {prefix: /gone}}], directResponse: {status: 410, body: {string: gone}}}".into(),
                    "{match: [{uri: {exact: /teapot}}], directResponse: {status: 418}}".into(),
                ]),
            ),
        ),
    ]
}

/// `host: api` in team-a and in team-b: each finds its own `hosts: ["api"]`.
fn short_names() -> Files {
    let se = |port: u16, export: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api}}\nspec:\n  hosts: [api]\n  exportTo: {export}\n  location: MESH_INTERNAL\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1}}]\n"
        )
    };
    vec![
        file(
            "tenants/team-a/api.yaml",
            docs(&[
                gateway("gw", "public-gw", &[http80("[s.example.com]")]),
                vs("s", "[s.example.com]", "[gw]", &http(&[fwd("api")])),
                se(8080, r#"["."]"#),
            ]),
        ),
        file(
            "tenants/team-b/api.yaml",
            docs(&[
                gateway("gw", "public-gw", &[http80("[t.example.com]")]),
                vs("t", "[t.example.com]", "[gw]", &http(&[fwd("api")])),
                // Exported to everyone, and still never what team-a's `api` means.
                se(9090, r#"["*"]"#),
            ]),
        ),
    ]
}

/// A short VirtualService host on a `*` server: it means `web.team-a.svc.cluster.local`.
fn short_vs_host() -> Files {
    vec![
        gw_file(&[http80(r#"["*"]"#)]),
        file(
            "tenants/team-a/vs.yaml",
            vs("web", "[web]", "[gw]", &http(&[fwd("a.svc.internal")])),
        ),
    ]
}

// --- the table -------------------------------------------------------------------------------

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        // §3.2 host intersection and wildcards.
        case("server *.example.com, VS a.example.com: a.example.com", wild_server_exact_vs(), get(PUB80, "a.example.com", "/"), Cluster(A)),
        case("server *.example.com, VS a.example.com: b.example.com has no vhost", wild_server_exact_vs(), get(PUB80, "b.example.com", "/"), NoVhost),
        case("authority port ignored and case folded", wild_server_exact_vs(), get(PUB80, "A.Example.COM:18080", "/"), Cluster(A)),
        case("server a.example.com, VS *: a.example.com", exact_server_star_vs(), get(PUB80, "a.example.com", "/"), Cluster(B)),
        case("server a.example.com, VS *: vhost is only a.example.com", exact_server_star_vs(), get(PUB80, "other.example.com", "/"), NoVhost),
        case("server *.example.com, VS example.com: no match", wild_server_apex_vs(), get(PUB80, "example.com", "/"), NoVhost),
        case("*.example.com covers several labels", wild_both(), get(PUB80, "deep.sub.example.com", "/"), Cluster(A)),
        case("*.example.com does not cover example.com", wild_both(), get(PUB80, "example.com", "/"), NoVhost),
        case("exact vhost beats wildcard", vhost_precedence(), get(PUB80, "a.example.com", "/"), Cluster(B)),
        case("wildcard vhost for other names", vhost_precedence(), get(PUB80, "z.example.com", "/"), Cluster(A)),
        case("longest wildcard vhost wins", vhost_precedence(), get(PUB80, "x.b.example.com", "/"), Cluster(C)),
        // Namespace-prefixed server hosts.
        case("team-a/h binds team-a, not team-b", ns_prefixes(), get(PUB80, "a.example.com", "/"), Cluster(A)),
        case("*/h binds any namespace", ns_prefixes(), get(PUB80, "any.example.com", "/"), Cluster(B)),
        case("./h on a platform Gateway binds istio-system only", ns_prefixes(), get(PUB80, "p.example.com", "/"), Cluster(D)),
        case("./h on a tenant Gateway binds the tenant", dot_prefix_tenant(), get(PUB80, "a.example.com", "/"), Cluster(A)),
        // §3.3 merged VirtualServices, catch-alls.
        case("merged VSs: file path order, not name order", merged_file_order(), get(PUB80, "m.example.com", "/api/v2/x"), Cluster(A)),
        case("merged VSs: first file's rule by name", merged_file_order(), get(PUB80, "m.example.com", "/api/v2/x"), Route("zz-api.0")),
        case("merged VSs: document order within a file", merged_doc_order(), get(PUB80, "m.example.com", "/api/v2/x"), Cluster(B)),
        case("merged VSs: later document still reachable", merged_doc_order(), get(PUB80, "m.example.com", "/api/v1"), Cluster(A)),
        case("catch-all of the first VS moved last", catch_all_last(), get(PUB80, "m.example.com", "/special/1"), Cluster(B)),
        case("catch-all still serves the rest", catch_all_last(), get(PUB80, "m.example.com", "/other"), Cluster(A)),
        case("prefix / is a catch-all too", catch_all_slash_last(), get(PUB80, "m.example.com", "/").header("x-canary", "yes"), Cluster(B)),
        case("prefix / catch-all without the header", catch_all_slash_last(), get(PUB80, "m.example.com", "/"), Cluster(A)),
        case("rules after a catch-all are not generated", stop_after_catch_all(), get(PUB80, "m.example.com", "/z"), Cluster(D)),
        case("rule before the catch-all", stop_after_catch_all(), get(PUB80, "m.example.com", "/x"), Cluster(A)),
        case("the catch-all rule, default name", stop_after_catch_all(), get(PUB80, "m.example.com", "/y"), Route("first.1")),
        // §3.4 SNI chooses the chain; the Host header is matched within it.
        case("SNI web: SIMPLE terminate", sni_mixed(), https(PUB443, "web.example.com", "web.example.com", "/"), Cluster(A)),
        case("SNI api: its own server", sni_mixed(), https(PUB443, "api.example.com", "api.example.com", "/"), Cluster(C)),
        case("SNI web with Host api: 404", sni_mixed(), https(PUB443, "web.example.com", "api.example.com", "/"), NoVhost),
        case("passthrough: exact sniHost beats wildcard", sni_mixed(), tls(PUB443, Some("a.db.example.com")), Passthrough(DB1)),
        case("passthrough: wildcard sniHost", sni_mixed(), tls(PUB443, Some("x.db.example.com")), Passthrough(DB2)),
        case("unknown SNI: no chain", sni_mixed(), tls(PUB443, Some("nope.example.org")), NoChain),
        case("no SNI: no chain", sni_mixed(), tls(PUB443, None), NoChain),
        case("passthrough: longest wildcard sniHost", sni_longest_wildcard(), tls(PUB443, Some("x.db.example.com")), Passthrough(DB2)),
        case("passthrough: shorter wildcard for the rest", sni_longest_wildcard(), tls(PUB443, Some("x.example.com")), Passthrough(DB1)),
        case("terminating: exact SNI chain beats wildcard", https_wildcard_and_exact(), https(PUB443, "web.example.com", "web.example.com", "/"), Cluster(B)),
        case("terminating: wildcard SNI chain", https_wildcard_and_exact(), https(PUB443, "shop.example.com", "shop.example.com", "/"), Cluster(A)),
        case("wildcard chain also covers Host web", https_wildcard_and_exact(), https(PUB443, "shop.example.com", "web.example.com", "/"), Cluster(A)),
        // §3.5 TCP by port.
        case("TCP 31400: weighted", tcp_ports(), tcp(PUB31400), Tcp(vec![(T1, 80), (T2, 20)])),
        case("TCP 31401: match.port", tcp_ports(), tcp(PUB31401), Tcp(vec![(T2, 100)])),
        case("TCP server with no matching tcp rule: no listener", tcp_other_port(), tcp(PUB31400), NoListener),
        // §3.2 match.gateways and match.port.
        case("match.gateways for another gateway does not apply", match_gateways(), get(PUB80, "g.example.com", "/"), Cluster(A)),
        case("match.gateways applies on its gateway", match_gateways(), get(PARTNER80, "g.example.com", "/"), Cluster(B)),
        case("no loadBalancerIP: also bound on ::", match_gateways(), get(PARTNER80_V6, "g.example.com", "/"), Cluster(B)),
        case("match.port for another port does not apply", match_port(), get(PUB80, "p.example.com", "/"), Cluster(A)),
        case("match.port applies on its port (unmapped 8080)", match_port(), get(PUB8080, "p.example.com", "/"), Cluster(B)),
        case("Gateway port 80 listens on targetPort 18080 only", match_port(), get("127.0.0.1:80", "p.example.com", "/"), NoListener),
        case("public group binds loadBalancerIP only", match_port(), get("0.0.0.0:18080", "p.example.com", "/"), NoListener),
        // §3.3.4 httpsRedirect.
        case("httpsRedirect: 301", https_redirect(), get(PUB80, "r.example.com", "/x"), HttpsRedirect),
        case("httpsRedirect: other server's host is served", https_redirect(), get(PUB80, "plain.example.com", "/"), Cluster(A)),
        case("httpsRedirect is a no-op on HTTPS", https_redirect(), https(PUB443, "r.example.com", "r.example.com", "/"), Cluster(A)),
        case("httpsRedirect without a VirtualService", https_redirect_alone(), get(PUB80, "only.example.com", "/"), Status(301)),
        case("httpsRedirect on another Gateway wins over routes", https_redirect_mixed(), get(PUB80, "mix.example.com", "/"), HttpsRedirect),
        // 404s.
        case("no route in the vhost", no_route(), get(PUB80, "n.example.com", "/other"), NoRoute),
        case("no route is a 404", no_route(), get(PUB80, "n.example.com", "/other"), Status(404)),
        case("server host without VirtualService", no_route(), get(PUB80, "x.example.com", "/api"), NoVhost),
        // Match conditions.
        case("header exact", matchers(), get(PUB80, "m.example.com", "/").header("x-env", "canary"), Route("hdr")),
        case("header exact, other value", matchers(), get(PUB80, "m.example.com", "/").header("x-env", "prod"), Route("default")),
        case("header regex", matchers(), get(PUB80, "m.example.com", "/").header("x-user", "user-42"), Route("re-hdr")),
        case("header regex is a full match", matchers(), get(PUB80, "m.example.com", "/").header("x-user", "user-42x"), Route("default")),
        case("method", matchers(), get(PUB80, "m.example.com", "/").method("POST"), Route("post")),
        case("query parameter", matchers(), get(PUB80, "m.example.com", "/?q=rust"), Route("query")),
        case("query parameter exact, other value", matchers(), get(PUB80, "m.example.com", "/x?q=rusty"), Route("default")),
        case("authority prefix", matchers(), get(PUB80, "api.example.com", "/"), Route("authority")),
        case("uri regex", matchers(), get(PUB80, "m.example.com", "/items/42"), Route("regex")),
        case("uri regex ignores the query", matchers(), get(PUB80, "m.example.com", "/items/42?page=2"), Route("regex")),
        case("uri regex is a full match", matchers(), get(PUB80, "m.example.com", "/items/abc"), Route("default")),
        case("uri exact ignores the query", matchers(), get(PUB80, "m.example.com", "/health?verbose=1"), Route("exact")),
        case("uri exact is exact", matchers(), get(PUB80, "m.example.com", "/healthz"), Route("default")),
        case("uri prefix compares the query too", matchers(), get(PUB80, "m.example.com", "/search?q=gatehouse"), Route("search")),
        case("uri prefix /api matches /apis", matchers(), get(PUB80, "m.example.com", "/apis"), Route("apis")),
        case("ignoreUriCase", matchers(), get(PUB80, "m.example.com", "/case/x"), Route("upper")),
        case("matched rule forwards", matchers(), get(PUB80, "m.example.com", "/apis"), Cluster(D)),
        // Weights.
        case("weighted destinations", weights(), get(PUB80, "w.example.com", "/"), ClusterSplit(vec![(A_V1, 70), (A_V2, 30)])),
        case("pick at the boundaries", weights(), get(PUB80, "w.example.com", "/"), Picks(vec![(0, A_V1), (69, A_V1), (70, A_V2), (99, A_V2), (100, A_V1), (170, A_V2)])),
        case("zero-weight destination dropped", zero_weight(), get(PUB80, "w.example.com", "/"), ClusterSplit(vec![(A, 100)])),
        // Local replies.
        case("redirect with redirectCode", local_replies(), get(PUB80, "l.example.com", "/old"), Status(302)),
        case("redirect default code", local_replies(), get(PUB80, "l.example.com", "/moved"), Status(301)),
        case("directResponse", local_replies(), get(PUB80, "l.example.com", "/gone"), Status(410)),
        case("directResponse without body", local_replies(), get(PUB80, "l.example.com", "/teapot"), Status(418)),
        // Short names.
        case("host: api in team-a", short_names(), get(PUB80, "s.example.com", "/"), Cluster("outbound|8080||api.team-a.svc.cluster.local")),
        case("host: api in team-b", short_names(), get(PUB80, "t.example.com", "/"), Cluster("outbound|9090||api.team-b.svc.cluster.local")),
        case("short VS host never matches the bare name", short_vs_host(), get(PUB80, "web", "/"), NoVhost),
        case("short VS host is the expanded name", short_vs_host(), get(PUB80, "web.team-a.svc.cluster.local", "/"), Cluster(A)),
    ]
}

#[test]
fn routing_table() {
    let cases = cases();
    assert!(cases.len() >= 45);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            run(c)
                .err()
                .map(|e| format!("case {:?}: want {:?}\n{e}", c.name, c.want))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// `find::pick` on its own: `r` is reduced modulo the total weight.
#[test]
fn pick_boundaries() {
    let wc = |c: &str, w: u32| WeightedCluster {
        cluster: c.into(),
        weight: w,
        headers: Default::default(),
    };
    let three = [wc("x", 1), wc("y", 2), wc("z", 3)];
    let picks: Vec<&str> = (0..7)
        .map(|r| find::pick(&three, r).map_or("-", |c| &*c.cluster))
        .collect();
    assert_eq!(picks, ["x", "y", "y", "z", "z", "z", "x"]);
    // No overflow at the top of the range: u64::MAX % 6 == 3.
    assert_eq!(find::pick(&three, u64::MAX).map(|c| &*c.cluster), Some("z"));
    // All weights 0: the first; nothing: nothing.
    let zero = [wc("x", 0), wc("y", 0)];
    assert_eq!(find::pick(&zero, 5).map(|c| &*c.cluster), Some("x"));
    assert!(find::pick(&[], 0).is_none());
}

/// Every listener the public and partner groups get, by address: the targetPort mapping,
/// the loadBalancerIP bind, and `::` beside `0.0.0.0` when there is none.
#[test]
fn listener_addresses() {
    let mut files = match_port();
    files.push(file(
        "tenants/team-b/gw.yaml",
        docs(&[
            gateway("partner", "partner-gw", &[http80("[q.example.com]")]),
            gateway(
                "tls",
                "public-gw",
                &[server_tls(
                    443,
                    "https",
                    "HTTPS",
                    "[q.example.com]",
                    "{mode: SIMPLE, credentialName: q}",
                )],
            ),
            vs(
                "q",
                "[q.example.com]",
                "[partner, tls]",
                &http(&[fwd("b.svc.internal")]),
            ),
        ]),
    ));
    let snap = compile(&files);
    let addrs = |g: &str| -> Vec<(String, u16)> {
        snap.groups[g]
            .listeners
            .iter()
            .map(|l| (l.address.to_string(), l.gateway_port))
            .collect()
    };
    assert_eq!(
        addrs("public-gw"),
        [
            ("127.0.0.1:8080".to_string(), 8080),
            ("127.0.0.1:18080".to_string(), 80),
            ("127.0.0.1:18443".to_string(), 443),
        ]
    );
    assert_eq!(
        addrs("partner-gw"),
        [
            ("0.0.0.0:28080".to_string(), 80),
            ("[::]:28080".to_string(), 80)
        ]
    );
    assert_eq!(
        listener(&snap, PUB80).map(|l| l.name.as_str()),
        Some("127.0.0.1_18080")
    );
}
