//! HTTP routing end to end: curl against the gateway, echo backends saying who answered.

use std::time::{Duration, Instant};

use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant, wait_for};

/// One tenant `team-a` on `web.example.com`, backends `v1`, `v2`, `default`, `other`.
struct Fx {
    _repo: Repo,
    _creds: tempfile::TempDir,
    be: Backends,
    _gw: Gateway,
    port: u16,
}

impl Fx {
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }
}

fn fixture(routes: &str, tenant_extra: &str) -> Fx {
    let port = free_port();
    let (p1, p2, p3, p4) = (free_port(), free_port(), free_port(), free_port());
    let be = Backends::new();
    be.http("v1", p1);
    be.http("v2", p2);
    be.http("default", p3);
    be.http("other", p4);
    let repo = Repo::new();
    repo.write(
        "gatehouse.yaml",
        &platform(
            &[(80, port)],
            &tenant(
                "team-a",
                &["web.example.com", "*.a.example.com"],
                tenant_extra,
            ),
        ),
    );
    repo.write(
        "tenants/team-a/gateway.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: public}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"web.example.com\", \"*.a.example.com\"]\n",
    );
    let mut svc = service(
        "api",
        "api.team-a.internal",
        &[(p1, "version: v1"), (p2, "version: v2")],
    );
    svc.push_str(&service("default", "default.team-a.internal", &[(p3, "")]));
    svc.push_str(&service("other", "other.team-a.internal", &[(p4, "")]));
    svc.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api.team-a.internal\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
    );
    repo.write("tenants/team-a/services.yaml", &svc);
    repo.write("tenants/team-a/routes.yaml", routes);
    let creds = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(&repo, creds.path());
    Fx {
        _repo: repo,
        _creds: creds,
        be,
        _gw: gw,
        port,
    }
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [\"web.example.com\"]\n  gateways: [public]\n  http:\n{http}"
    )
}

#[test]
fn matches_uri_headers_method_query_and_falls_back() {
    let fx = fixture(
        &vs(r#"  - name: exact
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: api.team-a.internal, subset: v1}}]
  - name: regex
    match: [{uri: {regex: "/items/[0-9]+"}}]
    route: [{destination: {host: api.team-a.internal, subset: v2}}]
  - name: header
    match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: other.team-a.internal}}]
  - name: method-query
    match: [{method: {exact: DELETE}, queryParams: {force: {exact: "true"}}}]
    route: [{destination: {host: other.team-a.internal}}]
  - name: prefix
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: api.team-a.internal, subset: v2}}]
  - name: default
    route: [{destination: {host: default.team-a.internal}}]
"#),
        "",
    );
    let get = |path: &str| Curl::new(&fx.url("web.example.com", path)).run();
    assert_eq!(get("/exact").backend(), "v1");
    assert_eq!(get("/exact/not").backend(), "default");
    assert_eq!(get("/items/42").backend(), "v2");
    assert_eq!(get("/items/x42").backend(), "default");
    // Istio prefixes are not segment-aware: /apis matches /api.
    assert_eq!(get("/apis").backend(), "v2");
    assert_eq!(
        Curl::new(&fx.url("web.example.com", "/x"))
            .header("x-canary: yes")
            .run()
            .backend(),
        "other"
    );
    assert_eq!(
        Curl::new(&fx.url("web.example.com", "/x?force=true"))
            .arg("-X")
            .arg("DELETE")
            .run()
            .backend(),
        "other"
    );
    assert_eq!(
        Curl::new(&fx.url("web.example.com", "/x?force=false"))
            .arg("-X")
            .arg("DELETE")
            .run()
            .backend(),
        "default"
    );
    // The backend sees the Host as sent and the proxy headers.
    let r = get("/anything");
    let j = r.json();
    assert_eq!(j["headers"]["host"], format!("web.example.com:{}", fx.port));
    assert_eq!(j["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(j["headers"]["x-forwarded-proto"], "http");
    assert_eq!(
        j["headers"]["x-request-id"].as_str().map(str::len),
        Some(36)
    );
    // Envoy's upstream service time, in whole milliseconds.
    let ms = r.header("x-envoy-upstream-service-time");
    assert!(
        ms.is_some_and(|v| v.parse::<u64>().is_ok()),
        "x-envoy-upstream-service-time: {ms:?}"
    );
    // An incoming request id is kept.
    let j = Curl::new(&fx.url("web.example.com", "/"))
        .header("x-request-id: abc-123")
        .run()
        .json();
    assert_eq!(j["headers"]["x-request-id"], "abc-123");
}

#[test]
fn unknown_host_is_404_and_known_host_without_route_is_404() {
    let fx = fixture(
        &vs(
            "  - match: [{uri: {prefix: /only}}]\n    route: [{destination: {host: default.team-a.internal}}]\n",
        ),
        "",
    );
    assert_eq!(
        Curl::new(&fx.url("nope.example.com", "/")).run().status,
        404
    );
    assert_eq!(
        Curl::new(&fx.url("web.example.com", "/elsewhere"))
            .run()
            .status,
        404
    );
    assert_eq!(
        Curl::new(&fx.url("web.example.com", "/only/x"))
            .run()
            .status,
        200
    );
}

#[test]
fn weighted_split_70_30_over_2000_requests() {
    let fx = fixture(
        &vs(
            "  - route:\n    - {destination: {host: api.team-a.internal, subset: v2}, weight: 70}\n    - {destination: {host: api.team-a.internal, subset: v1}, weight: 30}\n",
        ),
        "",
    );
    // h2load drives 2,000 requests over HTTP/1.1; the backends count who got what.
    let out = std::process::Command::new("h2load")
        .args([
            "--h1",
            "-n",
            "2000",
            "-c",
            "4",
            "-H",
            ":authority: web.example.com",
        ])
        .arg(fx.url("127.0.0.1", "/split"))
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2000 succeeded"), "h2load: {text}");
    let v2 = fx.be.counters.get("v2") as f64;
    let v1 = fx.be.counters.get("v1") as f64;
    assert_eq!(v1 + v2, 2000.0);
    let share = v2 / (v1 + v2) * 100.0;
    assert!(
        (65.0..=75.0).contains(&share),
        "v2 got {share:.1}% (v1 {v1}, v2 {v2})"
    );
}

#[test]
fn rewrite_redirect_and_header_operations() {
    let fx = fixture(
        &vs(r#"  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: backend.internal}
    headers:
      request:
        set: {x-set: "1"}
        add: {x-added: "yes"}
        remove: [x-remove-me]
      response:
        set: {x-resp: gatehouse}
        remove: [x-backend-secret, x-envoy-upstream-service-time]
    route:
    - destination: {host: default.team-a.internal}
      headers:
        request: {set: {x-dest: v}}
  - match: [{uri: {prefix: /vars}}]
    headers:
      request:
        set:
          x-client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
          x-copied: "id=%REQ(x-in)%"
          x-percent: "100%%"
          x-empty: "%REQ(x-absent)%"
      response:
        set: {x-proto: "%PROTOCOL%", x-served-on: "%DOWNSTREAM_LOCAL_PORT%", x-in-back: "%REQ(x-in)%"}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /elsewhere, authority: new.example.com, redirectCode: 308}
    headers: {response: {set: {x-moved-by: gatehouse}}}
    corsPolicy: {allowOrigins: [{exact: "https://app.example.com"}], allowMethods: [GET]}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
    headers: {response: {set: {content-type: text/plain}, add: {x-pot: tea}}}
  - match: [{headers: {x-version: {exact: "2"}}}]
    rewrite: {uri: /v2/}
    route: [{destination: {host: other.team-a.internal}}]
  - route: [{destination: {host: default.team-a.internal}}]
"#),
        "",
    );
    let r = Curl::new(&fx.url("web.example.com", "/old/page?q=1"))
        .header("x-remove-me: 1")
        .run();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["path"], "/new/page?q=1");
    assert_eq!(j["headers"]["host"], "backend.internal");
    assert_eq!(j["headers"]["x-set"], "1");
    assert_eq!(j["headers"]["x-added"], "yes");
    assert_eq!(j["headers"]["x-dest"], "v");
    assert!(j["headers"].get("x-remove-me").is_none());
    assert_eq!(r.header("x-resp"), Some("gatehouse"));
    // Set before the route's response operations, as Envoy's router sets it: removable.
    assert_eq!(r.header("x-envoy-upstream-service-time"), None);
    let r = Curl::new(&fx.url("web.example.com", "/other"))
        .header("x-envoy-retry-on: 5xx")
        .run();
    assert_eq!(r.status, 200);
    // The backend's `server: echo/1.0` is overwritten, as Envoy does by default.
    assert_eq!(r.header("server"), Some("gatehouse"));
    // A loopback client is internal (Envoy's classic internal addresses): its x-envoy-*
    // headers pass; an external client's are removed (unit-tested in `headers`).
    assert_eq!(r.json()["headers"]["x-envoy-retry-on"], "5xx");
    assert!(
        r.header("x-envoy-upstream-service-time")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "other routes keep it: {:?}",
        r.header("x-envoy-upstream-service-time")
    );
    // Envoy's variables in header values are filled in; `%%` is a percent sign; a value
    // that comes out empty adds no header.
    let r = Curl::new(&fx.url("web.example.com", "/vars"))
        .header("x-in: 42")
        .run();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["headers"]["x-client"], "127.0.0.1");
    assert_eq!(j["headers"]["x-copied"], "id=42");
    assert_eq!(j["headers"]["x-percent"], "100%");
    assert!(j["headers"].get("x-empty").is_none(), "{j}");
    assert_eq!(r.header("x-proto"), Some("HTTP/1.1"));
    assert_eq!(r.header("x-served-on"), Some(fx.port.to_string().as_str()));
    assert_eq!(
        r.header("x-in-back"),
        Some("42"),
        "REQ on the response side"
    );
    let r = Curl::new(&fx.url("web.example.com", "/moved/x")).run();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("http://new.example.com:{}/elsewhere", fx.port).as_str())
    );
    // A local answer carries the rule's response headers, as Envoy's direct-response route.
    assert_eq!(r.header("x-moved-by"), Some("gatehouse"));
    // A CORS preflight to a redirect rule gets the preflight answer (Envoy's CORS filter runs
    // before the router that makes the redirect).
    let r = Curl::new(&fx.url("web.example.com", "/moved/x"))
        .arg("-X")
        .arg("OPTIONS")
        .header("origin: https://app.example.com")
        .header("access-control-request-method: GET")
        .run();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("location"), None);
    let r = Curl::new(&fx.url("web.example.com", "/teapot")).run();
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-pot"), Some("tea"));
    // A rule without a uri match is Envoy's `prefix: /` to Istio: `rewrite.uri` replaces the
    // leading slash only.
    let r = Curl::new(&fx.url("web.example.com", "/a/b?q=1"))
        .header("x-version: 2")
        .run();
    assert_eq!(r.backend(), "other", "{r:?}");
    assert_eq!(r.json()["path"], "/v2/a/b?q=1");
    // Paths are normalized before routing and forwarding (Istio's default
    // `pathNormalization: BASE`): dot segments, escaped dots and unreserved characters.
    // `--path-as-is` keeps curl from doing it first.
    for raw in ["/old/../teapot", "/x/%2e%2e/teapot", "/%74eapot"] {
        for h2 in [false, true] {
            let mut c = Curl::new(&fx.url("web.example.com", raw)).arg("--path-as-is");
            if h2 {
                c = c.arg("--http2-prior-knowledge");
            }
            let r = c.run();
            assert_eq!(
                (r.status, r.body.as_str()),
                (418, "short and stout"),
                "{raw} (HTTP/2: {h2}): {r:?}"
            );
        }
    }
    let r = Curl::new(&fx.url("web.example.com", "/x/./y/../z?a=/../b"))
        .arg("--path-as-is")
        .run();
    assert_eq!(r.backend(), "default", "{r:?}");
    assert_eq!(r.json()["path"], "/x/z?a=/../b");
}

#[test]
fn timeout_retries_and_faults() {
    let fx = fixture(
        &vs(r#"  - match: [{uri: {prefix: /retry-deadline}}]
    timeout: 400ms
    retries: {attempts: 20, retryOn: 5xx}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /upload-streamed}}]
    timeout: 300ms
    retries: {attempts: 0}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /upload}}]
    timeout: 300ms
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 300ms
    retries: {attempts: 0}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /retry}}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /attempts-only}}]
    retries: {attempts: 2}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /gateway-error}}]
    retries: {attempts: 2, retryOn: gateway-error}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /codes}}]
    retries: {attempts: 2, retryOn: "409,retriable-status-codes"}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /noretry}}]
    retries: {attempts: 0}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 400ms, percentage: {value: 100}}}
    route: [{destination: {host: default.team-a.internal}}]
"#),
        "",
    );
    // The route timeout starts when the request has been received whole (Envoy): an upload
    // taking longer than the timeout still reaches the backend and is answered, and a backend
    // slow after the upload still times out. Both with the default retry policy (the body
    // streamed with a copy kept for retries) and without retries (streamed alone).
    for path in ["/upload", "/upload-streamed"] {
        for (delay, want) in [("0", 200), ("2000", 504)] {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", fx.port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked\r\nx-test-delay-ms: {delay}\r\nConnection: close\r\n\r\n"
            )
            .expect("head");
            let t = Instant::now();
            for i in 0..4u8 {
                // The client's own pace: a chunk every 150 ms, 600 ms in all.
                std::thread::sleep(Duration::from_millis(150));
                write!(s, "3\r\nab{i}\r\n").expect("chunk");
            }
            write!(s, "0\r\n\r\n").expect("end");
            let sent = Instant::now();
            assert!(sent - t >= Duration::from_millis(600));
            let mut out = String::new();
            s.read_to_string(&mut out).expect("the answer");
            assert!(
                out.starts_with(&format!("HTTP/1.1 {want} ")),
                "{path}, delay {delay}: {out}"
            );
            if want == 200 {
                assert!(out.contains("\"body_len\":12"), "{out}");
            } else {
                assert!(out.ends_with("upstream request timeout"), "{out}");
                assert!(
                    sent.elapsed() < Duration::from_millis(1500),
                    "{path}: the 300 ms after the upload's end, not the backend's 2 s"
                );
            }
        }
    }
    // Retries of a 503 until the route's deadline: the deadline ends them with Envoy's 504
    // UT, wherever it falls (in an attempt or in the backoff between two).
    for _ in 0..5 {
        let r = Curl::new(&fx.url("web.example.com", "/retry-deadline"))
            .header("x-test-status: 503")
            .header("x-test-delay-ms: 90")
            .run();
        assert_eq!(
            (r.status, r.body.as_str()),
            (504, "upstream request timeout"),
            "{r:?}"
        );
    }
    let t = Instant::now();
    let r = Curl::new(&fx.url("web.example.com", "/slow"))
        .header("x-test-delay-ms: 3000")
        .run();
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "upstream request timeout");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "timeout did not fire early: {:?}",
        t.elapsed()
    );
    // Two 503s then success: three attempts allowed, so the client sees 200.
    let r = Curl::new(&fx.url("web.example.com", "/retry"))
        .header("x-test-fail-times: 2")
        .header("x-test-key: k1")
        .run();
    assert_eq!(r.status, 200, "{}", r.body);
    // `attempts` alone keeps Istio's default conditions (503, connect failure, ...): two
    // 503s are retried, a third try's 503 is the answer, and a 500 is not retried.
    let fails = |path: &str, times: u32, status: u16, key: &str| {
        Curl::new(&fx.url("web.example.com", path))
            .header(&format!("x-test-fail-times: {times}"))
            .header(&format!("x-test-fail-status: {status}"))
            .header(&format!("x-test-key: {key}"))
            .run()
            .status
    };
    assert_eq!(fails("/attempts-only", 2, 503, "a1"), 200);
    assert_eq!(fails("/attempts-only", 3, 503, "a2"), 503);
    assert_eq!(fails("/attempts-only", 1, 500, "a3"), 500);
    // A body of unknown length (chunked; gRPC calls have none either) is streamed to the
    // upstream at once and still retried: the gateway kept a copy. Over HTTP/1.1 and
    // HTTP/2 (curl sends no content-length there for a chunked upload).
    let dir = tempfile::tempdir().expect("tmp");
    let (small, big) = (dir.path().join("small"), dir.path().join("big"));
    let small_body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&small, &small_body).expect("write");
    std::fs::write(&big, vec![7u8; 100 * 1024]).expect("write");
    let upload = |file: &std::path::Path, key: &str, h2: bool| {
        let mut c = Curl::new(&fx.url("web.example.com", "/attempts-only"))
            .header("transfer-encoding: chunked")
            .header("x-test-fail-times: 1")
            .header(&format!("x-test-key: {key}"))
            .arg("--data-binary")
            .arg(&format!("@{}", file.display()));
        if h2 {
            c = c.arg("--http2-prior-knowledge");
        }
        c.run()
    };
    for (h2, key) in [(false, "u1"), (true, "u2")] {
        let r = upload(&small, key, h2);
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.json();
        let sum: u64 = small_body.iter().map(|b| u64::from(*b)).sum();
        assert_eq!(
            (j["body_len"].as_u64(), j["body_sum"].as_u64()),
            (Some(3000), Some(sum)),
            "{j}"
        );
        assert!(j["headers"].get("content-length").is_none(), "{j}");
    }
    // Past the copy's 64 KiB the body was sent once and cannot be sent again: the 503 stands.
    assert_eq!(upload(&big, "u3", false).status, 503);
    // Its next request (the backend fails each key once) gets through whole.
    let r = upload(&big, "u3", false);
    assert_eq!(
        (r.status, r.json()["body_len"].as_u64()),
        (200, Some(100 * 1024))
    );
    // gateway-error: 502, 503 and 504, not 500.
    assert_eq!(fails("/gateway-error", 1, 502, "g1"), 200);
    assert_eq!(fails("/gateway-error", 2, 504, "g2"), 200);
    assert_eq!(fails("/gateway-error", 1, 500, "g3"), 500);
    // retriable-status-codes with the listed code only.
    assert_eq!(fails("/codes", 1, 409, "c1"), 200);
    assert_eq!(fails("/codes", 1, 503, "c2"), 503);
    let r = Curl::new(&fx.url("web.example.com", "/noretry"))
        .header("x-test-fail-times: 1")
        .header("x-test-key: k2")
        .run();
    assert_eq!(r.status, 503);
    let r = Curl::new(&fx.url("web.example.com", "/abort")).run();
    assert_eq!((r.status, r.body.as_str()), (418, "fault filter abort"));
    let t = Instant::now();
    let r = Curl::new(&fx.url("web.example.com", "/delay")).run();
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "delay not applied: {:?}",
        t.elapsed()
    );
}

#[test]
fn mirror_and_cors() {
    let fx = fixture(
        &vs(r#"  - match: [{uri: {prefix: /mirror}}]
    route: [{destination: {host: default.team-a.internal}}]
    mirror: {host: other.team-a.internal}
    mirrorPercentage: {value: 100}
  - match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://app.example.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      exposeHeaders: [x-backend]
      maxAge: 60s
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /no-mirror}}]
    route: [{destination: {host: default.team-a.internal}}]
    mirror: {host: other.team-a.internal}
    mirrorPercent: 0
  - match: [{uri: {prefix: /any-cors}}]
    corsPolicy:
      allowOrigins: [{exact: "*"}]
      allowMethods: [GET]
    route: [{destination: {host: default.team-a.internal}}]
  - match: [{uri: {prefix: /strict-cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://app.example.com"}]
      allowMethods: [GET]
      unmatchedPreflights: IGNORE
    route: [{destination: {host: default.team-a.internal}}]
"#),
        "",
    );
    // Mirror: the client gets the main backend; the mirror backend sees a copy.
    let before = fx.be.counters.get("other");
    let r = Curl::new(&fx.url("web.example.com", "/mirror")).run();
    assert_eq!(r.backend(), "default");
    wait_for("mirrored request", Duration::from_secs(5), || {
        (fx.be.counters.get("other") > before).then_some(())
    });
    // A chunked upload (no length known) is mirrored too, once the main request has read it.
    let before = fx.be.counters.get("other");
    let r = Curl::new(&fx.url("web.example.com", "/mirror"))
        .header("transfer-encoding: chunked")
        .arg("--data-binary")
        .arg("a chunked body")
        .run();
    assert_eq!((r.status, r.backend().as_str()), (200, "default"), "{r:?}");
    assert_eq!(r.json()["body_len"], 14);
    wait_for("mirrored chunked request", Duration::from_secs(5), || {
        (fx.be.counters.get("other") > before).then_some(())
    });
    // The deprecated `mirrorPercent` still applies: 0 mirrors nothing. The mirrored request
    // sent after them is the only copy the mirror backend gets.
    let before = fx.be.counters.get("other");
    for _ in 0..5 {
        let r = Curl::new(&fx.url("web.example.com", "/no-mirror")).run();
        assert_eq!(r.backend(), "default");
    }
    Curl::new(&fx.url("web.example.com", "/mirror")).run();
    wait_for("the one mirrored request", Duration::from_secs(5), || {
        (fx.be.counters.get("other") > before).then_some(())
    });
    assert_eq!(fx.be.counters.get("other"), before + 1);
    // `exact: "*"` allows every origin (Envoy's `isOriginAllowed`), naming the request's.
    let r = Curl::new(&fx.url("web.example.com", "/any-cors"))
        .header("origin: https://whoever.example.net")
        .run();
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://whoever.example.net"),
        "{r:?}"
    );
    // CORS preflight answered by the gateway; actual response decorated.
    let r = Curl::new(&fx.url("web.example.com", "/cors"))
        .arg("-X")
        .arg("OPTIONS")
        .header("origin: https://app.example.com")
        .header("access-control-request-method: POST")
        .run();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(r.header("access-control-max-age"), Some("60"));
    let r = Curl::new(&fx.url("web.example.com", "/cors"))
        .header("origin: https://app.example.com")
        .run();
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = Curl::new(&fx.url("web.example.com", "/cors"))
        .header("origin: https://evil.example.com")
        .run();
    assert_eq!(r.header("access-control-allow-origin"), None);
    // A preflight from another origin: forwarded to the backend by default (FORWARD), and
    // answered at the gateway without the allow-origin header under IGNORE.
    let preflight = |path: &str| {
        Curl::new(&fx.url("web.example.com", path))
            .arg("-X")
            .arg("OPTIONS")
            .header("origin: https://evil.example.com")
            .header("access-control-request-method: GET")
            .run()
    };
    let r = preflight("/cors");
    assert_eq!((r.status, r.backend().as_str()), (200, "default"), "{r:?}");
    let before = fx.be.counters.get("default");
    let r = preflight("/strict-cors");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), None, "reached the backend: {r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(fx.be.counters.get("default"), before);
}
