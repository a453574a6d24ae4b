//! HTTP protocol handling end to end: HTTP/2 (ALPN and prior knowledge), `httpsRedirect`,
//! websocket upgrades, and bad or hostile clients (oversized headers, `Content-Length` with
//! `Transfer-Encoding`, slowloris, silent or garbage TLS clients), each followed by proof that
//! the gateway still serves.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::certs::{Ca, write_credential};
use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant, wait_for};

/// The group's limits in every test here: 8 KiB of request headers, 1 s to send them.
const LIMITS: &str = "{limits: {maxRequestHeadersKb: 8, headerReadTimeout: 1s}}";

/// Tenant `team-a` on a plain port (web.example.com; secure.example.com redirects to HTTPS)
/// and an HTTPS port serving both hosts. Backends: `web` (default route), `smuggle`
/// (`/smuggle`), `ws` (websocket upgrades on `/chat`).
struct Fx {
    _repo: Repo,
    dir: tempfile::TempDir,
    be: Backends,
    gw: Gateway,
    plain: u16,
    tls: u16,
}

impl Fx {
    fn http(&self, host: &str, path: &str) -> Curl {
        Curl::new(&format!("http://{host}:{}{path}", self.plain))
    }

    fn https(&self, host: &str, path: &str) -> Curl {
        Curl::new(&format!("https://{host}:{}{path}", self.tls)).cacert(&self.ca())
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A normal request on each listener is answered by the `web` backend.
    fn assert_serving(&self, after: &str) {
        let r = self.http("web.example.com", "/still-there").run();
        assert_eq!(
            (r.status, r.backend().as_str()),
            (200, "web"),
            "{after}: {r:?}"
        );
        let r = self.https("web.example.com", "/still-there").run();
        assert_eq!(
            (r.status, r.backend().as_str()),
            (200, "web"),
            "{after}: {r:?}"
        );
    }
}

fn fixture() -> Fx {
    fixture_with(LIMITS)
}

/// The fixture with the group's `appliance` settings set to `limits`.
fn fixture_with(limits: &str) -> Fx {
    let (plain, tls) = (free_port(), free_port());
    let (pw, ps, pws) = (free_port(), free_port(), free_port());
    let be = Backends::new();
    be.http("web", pw);
    be.http("smuggle", ps);
    be.websocket("ws", pws);
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("gatehouse test CA");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write ca");
    let creds = dir.path().join("credentials");
    write_credential(
        &creds.join("team-a/web-cert"),
        &ca.server(&["web.example.com", "secure.example.com"], 0x77),
        None,
    );
    let repo = Repo::new();
    let gatehouse = platform(
        &[(80, plain), (443, tls)],
        &tenant("team-a", &["web.example.com", "secure.example.com"], ""),
    )
    .replacen(
        "      label: {istio: public-gw}\n",
        &format!("      label: {{istio: public-gw}}\n      appliance: {limits}\n"),
        1,
    );
    repo.write("gatehouse.yaml", &gatehouse);
    repo.write(
        "tenants/team-a/gateway.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["web.example.com"]
  - port: {number: 80, name: http-redirect, protocol: HTTP}
    hosts: ["secure.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["web.example.com", "secure.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert}
"#,
    );
    let mut routes = service("web", "web.team-a.internal", &[(pw, "")]);
    routes.push_str(&service("smuggle", "smuggle.team-a.internal", &[(ps, "")]));
    routes.push_str(&service("ws", "ws.team-a.internal", &[(pws, "")]));
    routes.push_str(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ["web.example.com", "secure.example.com"]
  gateways: [public]
  http:
  - name: websocket
    match: [{uri: {prefix: /chat}, headers: {upgrade: {exact: websocket}}}]
    route: [{destination: {host: ws.team-a.internal}}]
  - name: smuggle
    match: [{uri: {prefix: /smuggle}}]
    route: [{destination: {host: smuggle.team-a.internal}}]
  - name: default
    route: [{destination: {host: web.team-a.internal}}]
"#,
    );
    repo.write("tenants/team-a/routes.yaml", &routes);
    let gw = Gateway::start(&repo, &creds);
    wait_listening(&[plain, tls]);
    Fx {
        _repo: repo,
        dir,
        be,
        gw,
        plain,
        tls,
    }
}

/// Waits until every port accepts connections. `/ready` (which `Gateway::start` waits for)
/// only says a configuration generation is loaded; the worker threads bind its listeners a
/// moment later, so a client racing them would be refused.
pub(crate) fn wait_listening(ports: &[u16]) {
    for &p in ports {
        wait_for("the listener to be bound", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", p)).ok()
        });
    }
}

/// Reads until the peer closes the connection (EOF or reset), polling with short read
/// timeouts; panics if it is still open after `deadline`. Returns what was received.
fn read_until_closed<S: Read>(s: &mut S, deadline: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    wait_for("the gateway to close the connection", deadline, || {
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Some(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Reset (or a TLS close without close_notify): closed all the same.
                Err(_) => return Some(()),
            }
        }
    });
    got
}

/// Reads (polling, keeping what arrives) until `ready` holds for the bytes received so far;
/// panics naming `what` if it does not within 10 s. Returns the bytes received.
fn read_until(s: &mut TcpStream, what: &str, ready: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    wait_for(what, Duration::from_secs(10), || {
        if let Ok(n) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        ready(&got).then_some(())
    });
    got
}

/// A TCP connection to the gateway whose reads give up after 50 ms (for polling).
fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    s
}

/// The status codes of the HTTP/1.1 responses in `raw`, in order.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| raw[i + m.len()..].get(..3)?.parse().ok())
        .collect()
}

/// h2load's summary lines: (requests succeeded, 2xx responses).
fn h2load_counts(out: &std::process::Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |prefix: &str, suffix: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split(", ").find(|p| p.ends_with(suffix)))
            .and_then(|p| p.split_whitespace().rev().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num("requests:", "succeeded"), num("status codes:", "2xx"))
}

#[test]
fn http2_under_load_answers_every_multiplexed_request() {
    let fx = fixture();
    let before = fx.be.counters.get("web");
    // Prior knowledge on the plain port and ALPN on the TLS one: 4 connections, 20 streams
    // at once on each, 4,000 requests.
    for (url, port) in [
        (
            format!("http://web.example.com:{}/load", fx.plain),
            fx.plain,
        ),
        (format!("https://web.example.com:{}/load", fx.tls), fx.tls),
    ] {
        let out = std::process::Command::new("h2load")
            .args(["-n", "4000", "-c", "4", "-m", "20", "-N", "15"])
            .arg(format!("--connect-to=127.0.0.1:{port}"))
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("h2load");
        assert_eq!(
            h2load_counts(&out),
            (4000, 4000),
            "{url}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(fx.be.counters.get("web") - before, 8000);
    fx.assert_serving("the load");
}

#[test]
fn http2_by_alpn_over_tls_and_by_prior_knowledge_on_plain() {
    let fx = fixture();
    // TLS + ALPN h2.
    let r = fx.https("web.example.com", "/h2").arg("--http2").run();
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(r.backend(), "web");
    assert_eq!(r.json()["path"], "/h2");
    // A body over HTTP/2 reaches the backend whole.
    let r = fx
        .https("web.example.com", "/h2-post")
        .arg("--http2")
        .arg("--data-binary")
        .arg("0123456789")
        .run();
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{r:?}");
    let j = r.json();
    assert_eq!(
        (j["method"].as_str(), j["body_len"].as_u64()),
        (Some("POST"), Some(10))
    );
    // The same listener still speaks HTTP/1.1 to a client that asks for it.
    let r = fx.https("web.example.com", "/h1").arg("--http1.1").run();
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{r:?}");
    // Plain listener: HTTP/2 with prior knowledge, and HTTP/1.1.
    let r = fx
        .http("web.example.com", "/h2c")
        .arg("--http2-prior-knowledge")
        .run();
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(r.backend(), "web");
    assert_eq!(r.json()["path"], "/h2c");
    let r = fx.http("web.example.com", "/h1").run();
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{r:?}");
}

#[test]
fn https_redirect_answers_301_to_the_https_url() {
    let fx = fixture();
    let r = fx.http("secure.example.com", "/some/path?q=1").run();
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://secure.example.com/some/path?q=1")
    );
    assert_eq!(fx.be.counters.get("web"), 0, "a redirect is not forwarded");
    // The same host over HTTPS is served; the other plain host is not redirected.
    let r = fx.https("secure.example.com", "/some/path").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
    let r = fx.http("web.example.com", "/some/path").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
}

#[test]
fn websocket_upgrade_is_spliced_and_plain_http_on_the_path_still_works() {
    let fx = fixture();
    let port = fx.plain;
    let echoed: Vec<String> = fx.be.rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let req = format!("ws://web.example.com:{port}/chat/room1")
            .into_client_request()
            .expect("request");
        let (mut ws, resp) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::client_async(req, tcp),
        )
        .await
        .expect("handshake in time")
        .expect("websocket handshake through the gateway");
        assert_eq!(resp.status(), 101);
        let mut out = Vec::new();
        for text in ["hello", "second message"] {
            ws.send(Message::text(text)).await.expect("send");
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("echo in time")
                .expect("a message")
                .expect("not an error");
            out.push(m.into_text().expect("text").to_string());
        }
        ws.close(None).await.expect("close");
        out
    });
    assert_eq!(echoed, ["ws: hello", "ws: second message"]);
    // Without the upgrade the same path is ordinary HTTP, routed by the next rule.
    let r = fx.http("web.example.com", "/chat/room1").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
    assert_eq!(r.json()["path"], "/chat/room1");
    // `curl --http2` on http:// asks for an h2c upgrade: Envoy strips it and serves the
    // request as HTTP/1.1, its body included, with no upgrade headers passed on.
    let r = fx
        .http("web.example.com", "/h2c")
        .arg("--http2")
        .arg("--data-binary")
        .arg("ten bytes!")
        .run();
    assert_eq!(
        (r.status, r.backend().as_str(), r.version.as_str()),
        (200, "web", "1.1"),
        "{r:?}"
    );
    let j = r.json();
    assert_eq!(
        (j["method"].as_str(), j["body_len"].as_u64()),
        (Some("POST"), Some(10))
    );
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(j["headers"].get(h).is_none(), "{h} forwarded: {j}");
    }
    // An `Upgrade` header without `Connection: upgrade` asks for nothing: dropped, served.
    let r = fx
        .http("web.example.com", "/bare")
        .header("upgrade: foo/1")
        .run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
    assert!(r.json()["headers"].get("upgrade").is_none(), "{r:?}");
    // Any other upgrade: 403, as Envoy refuses upgrades Istio did not configure; the
    // backend never sees it.
    let before = fx.be.counters.get("web");
    let r = fx
        .http("web.example.com", "/other")
        .header("connection: upgrade")
        .header("upgrade: foo/1")
        .run();
    assert_eq!((r.status, r.body.as_str()), (403, ""), "{r:?}");
    assert_eq!(fx.be.counters.get("web"), before);
}

#[test]
fn request_headers_over_the_group_limit_get_431() {
    let fx = fixture();
    let big = format!("x-big: {}", "a".repeat(12 * 1024));
    let r = fx.http("web.example.com", "/big").header(&big).run();
    assert_eq!(r.status, 431, "{r:?}");
    // Under the limit: served.
    let fits = format!("x-big: {}", "a".repeat(6 * 1024));
    let r = fx.http("web.example.com", "/fits").header(&fits).run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
    assert_eq!(
        r.json()["headers"]["x-big"].as_str().map(str::len),
        Some(6 * 1024)
    );
    // Over TLS too.
    let r = fx
        .https("web.example.com", "/big")
        .arg("--http1.1")
        .header(&big)
        .run();
    assert_eq!(r.status, 431, "{r:?}");
    // HTTP/2 (the limit is the header list size there): 431 as well.
    let r = fx
        .https("web.example.com", "/big")
        .arg("--http2")
        .header(&big)
        .run();
    assert_eq!((r.status, r.version.as_str()), (431, "2"), "{r:?}");
    let r = fx
        .http("web.example.com", "/big")
        .arg("--http2-prior-knowledge")
        .header(&big)
        .run();
    assert_eq!((r.status, r.version.as_str()), (431, "2"), "{r:?}");
    assert_eq!(
        fx.be.counters.get("web"),
        1,
        "only the request that fits was forwarded"
    );
    fx.assert_serving("after oversized headers");
}

/// A request whose `Content-Length` covers a smuggled second request that chunked framing
/// would expose.
fn ambiguous_request() -> String {
    let smuggled = "0\r\n\r\nGET /smuggle/hidden HTTP/1.1\r\nHost: web.example.com\r\n\r\n";
    format!(
        "POST /smuggle/ambiguous HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{smuggled}",
        smuggled.len()
    )
}

#[test]
fn content_length_with_transfer_encoding_is_refused_with_400() {
    let fx = fixture();
    const BODY: &str = "bad request: both Content-Length and Transfer-Encoding";

    // Plain: a normal request pipelined ahead of the ambiguous one is served; the ambiguous
    // one gets 400 and the connection closes, so the smuggled request is never read.
    let mut s = connect(fx.plain);
    let raw = format!(
        "GET /first HTTP/1.1\r\nHost: web.example.com\r\n\r\n{}",
        ambiguous_request()
    );
    s.write_all(raw.as_bytes()).expect("write");
    let got =
        String::from_utf8_lossy(&read_until_closed(&mut s, Duration::from_secs(10))).into_owned();
    assert_eq!(statuses(&got), [200, 400], "{got}");
    assert!(got.contains("x-backend: web"), "{got}");
    assert!(got.ends_with(BODY), "{got}");

    // TLS (HTTP/1.1 by ALPN): the same.
    let got =
        String::from_utf8_lossy(&tls_exchange(&fx, ambiguous_request().as_bytes())).into_owned();
    assert_eq!(statuses(&got), [400], "{got}");
    assert!(got.ends_with(BODY), "{got}");

    // Neither the ambiguous request nor the smuggled one reached the backend...
    assert_eq!(fx.be.counters.get("smuggle"), 0);
    // ...which does serve that path, with either framing alone.
    let r = fx
        .http("web.example.com", "/smuggle/ok")
        .arg("--data-binary")
        .arg("hello")
        .run();
    assert_eq!((r.status, r.backend().as_str()), (200, "smuggle"), "{r:?}");
    assert_eq!(r.json()["body_len"], 5);
    let r = fx
        .http("web.example.com", "/smuggle/chunked")
        .header("Transfer-Encoding: chunked")
        .arg("--data-binary")
        .arg("Content-Length: 3")
        .run();
    assert_eq!((r.status, r.backend().as_str()), (200, "smuggle"), "{r:?}");
    assert_eq!(r.json()["body_len"], 17);
    assert_eq!(fx.be.counters.get("smuggle"), 2);
    fx.assert_serving("after ambiguous framing");
}

/// What gatehouse's own HTTP/1.1 server does on the wire, on one plain connection: pipelined
/// requests answered in order, a chunked request body (extension, trailer) forwarded whole, an
/// unread body of a refused request skipped so the connection stays usable, and HTTP/1.0
/// closing after its response.
#[test]
fn pipelined_requests_chunked_bodies_and_http10_on_one_connection() {
    let fx = fixture();
    let mut s = connect(fx.plain);
    let raw = concat!(
        "POST /one HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
        "GET /two HTTP/1.1\r\nHost: web.example.com\r\n\r\n",
        "POST /three HTTP/1.1\r\nHost: nowhere.example.com\r\nContent-Length: 4\r\n\r\nabcd",
        "GET /four HTTP/1.0\r\nHost: web.example.com\r\n\r\n",
    );
    s.write_all(raw.as_bytes()).expect("write");
    let got =
        String::from_utf8_lossy(&read_until_closed(&mut s, Duration::from_secs(10))).into_owned();
    assert_eq!(statuses(&got), [200, 200, 404, 200], "{got}");
    let paths: Vec<&str> = ["/one", "/two", "/four"]
        .into_iter()
        .filter(|p| got.contains(&format!("\"path\":\"{p}\"")))
        .collect();
    assert_eq!(paths, ["/one", "/two", "/four"], "{got}");
    // The chunked body reached the backend as its 11 bytes.
    assert!(got.contains("\"body_len\":11"), "{got}");
    // HTTP/1.0 without keep-alive: the last response says so, and the gateway closed.
    let last = &got[got.rfind("HTTP/1.1 ").unwrap_or(0)..];
    assert!(last.contains("connection: close\r\n"), "{last}");
    assert_eq!(fx.be.counters.get("web"), 3);
}

/// Request heads an edge proxy must not read leniently, each on its own connection: a transfer
/// coding other than one `chunked` (501, as Envoy), two `Host` lines or one that is no
/// authority, the authority form outside CONNECT, a fragment (400); a chunked body whose
/// trailer section ends with a bare LF, where a lenient proxy in front would see the body end
/// and a second request start (refused, not served). Blank lines before a request line are
/// ignored. None of it reaches a backend, and the gateway serves on.
#[test]
fn odd_codings_hosts_targets_and_trailers_are_refused() {
    let fx = fixture();
    let exchange = |raw: &str| {
        let mut s = connect(fx.plain);
        s.write_all(raw.as_bytes()).expect("write");
        String::from_utf8_lossy(&read_until_closed(&mut s, Duration::from_secs(10))).into_owned()
    };
    for (raw, want) in [
        (
            "POST /smuggle/a HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            "POST /smuggle/a HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            "GET /smuggle/a HTTP/1.1\r\nHost: web.example.com\r\nHost: other.example.com\r\n\r\n",
            400,
        ),
        (
            "GET /smuggle/a HTTP/1.1\r\nHost: web.example.com/smuggle\r\n\r\n",
            400,
        ),
        (
            "GET web.example.com:80 HTTP/1.1\r\nHost: web.example.com\r\n\r\n",
            400,
        ),
        (
            "GET /a#/../smuggle/a HTTP/1.1\r\nHost: web.example.com\r\n\r\n",
            400,
        ),
    ] {
        let got = exchange(raw);
        assert_eq!(statuses(&got), [want], "{raw:?}: {got}");
    }
    let got = exchange(
        "POST /smuggle/trailer HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /smuggle/hidden HTTP/1.1\r\nHost: web.example.com\r\n\r\n",
    );
    assert!(!statuses(&got).contains(&200), "{got}");
    assert!(!got.contains("/smuggle/hidden"), "{got}");
    assert_eq!(fx.be.counters.get("smuggle"), 0);
    // A request handed to hyper (an upgrade) is the connection's last unless it switches
    // protocols: hyper's lenient parser never reads the next one.
    let got = exchange(
        "GET /x HTTP/1.1\r\nHost: web.example.com\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\nGET web.example.com:80 HTTP/1.1\r\nHost: web.example.com\r\n\r\n",
    );
    assert_eq!(statuses(&got), [403], "{got}");
    let got = exchange(
        "\r\n\r\n\nGET /blank-lines HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&got), [200], "{got}");
    assert!(got.contains("\"path\":\"/blank-lines\""), "{got}");
    fx.assert_serving("after odd heads");
}

/// A client that closes its connection while its request waits on a slow upstream has
/// abandoned it: the gateway cancels the upstream request (as Envoy and hyper do) instead of
/// letting it run to an answer nobody reads.
#[test]
fn a_client_that_goes_away_cancels_its_request_upstream() {
    let fx = fixture();
    let mut s = connect(fx.plain);
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: web.example.com\r\nx-test-delay-ms: 20000\r\n\r\n")
        .expect("write");
    wait_for(
        "the request to reach the backend",
        Duration::from_secs(10),
        || (fx.be.counters.get("web") == 1).then_some(()),
    );
    drop(s);
    wait_for(
        "the backend's request to be cancelled",
        Duration::from_secs(10),
        || (fx.be.counters.get("cancelled:web") == 1).then_some(()),
    );
    // Counted as Istio counts it: response code 0, flag DC (downstream connection termination).
    // Recorded as the request is dropped, which may finish just after the backend saw it go.
    let dc = wait_for("a DC series in /metrics", Duration::from_secs(10), || {
        let (_, metrics) = fx.gw.admin_get("/metrics")?;
        metrics
            .lines()
            .find(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("response_code=\"0\"")
                    && l.contains("response_flags=\"DC\"")
            })
            .map(str::to_string)
    });
    assert!(dc.ends_with(" 1"), "{dc}");
    fx.assert_serving("after a cancelled request");
}

/// `Expect: 100-continue` (curl sends it for large uploads): the interim 100 comes before the
/// body is sent, the upload is forwarded whole (without the expectation), and the connection
/// serves on afterwards.
#[test]
fn expect_100_continue_gets_the_interim_response_and_the_connection_serves_on() {
    let fx = fixture();
    let mut s = connect(fx.plain);
    s.write_all(
        b"PUT /up HTTP/1.1\r\nHost: web.example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .expect("write head");
    let mut got = read_until(&mut s, "100 Continue", |got| {
        got.starts_with(b"HTTP/1.1 100 Continue\r\n")
    });
    s.write_all(b"12345GET /after HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        .expect("write body");
    got.extend(read_until_closed(&mut s, Duration::from_secs(10)));
    let got = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(statuses(&got), [100, 200, 200], "{got}");
    assert!(got.contains("\"body_len\":5"), "{got}");
    assert!(got.contains("\"path\":\"/after\""), "{got}");
    // The gateway answered the expectation; the backend is not asked to.
    assert!(!got.contains("\"expect\""), "{got}");
}

/// A response sent before the request's body was read (a 404 for an upload to a host no
/// route serves) ends the connection without resetting it. The gateway sends its FIN, then
/// reads and discards what the client still sends until the client closes (at most 1 s), as
/// Envoy's delayed close and nginx's lingering close do. Closing with the upload unread would
/// make the kernel send a reset, and a client still sending (curl, for one) can fail on it
/// before it reads the response.
#[test]
fn an_early_answer_to_an_upload_closes_without_a_reset() {
    let fx = fixture();
    let mut s = connect(fx.plain);
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: nowhere.example.com\r\nContent-Length: 100000000\r\n\r\n",
    )
    .expect("write head");
    let chunk = vec![b'x'; 16 * 1024];
    s.write_all(&chunk).expect("first body bytes");
    let head = read_until(&mut s, "the 404", |got| {
        statuses(&String::from_utf8_lossy(got)) == [404]
    });
    // The answer says the connection ends (as Envoy's does when it answers before the request
    // is complete): the client must not send another request on it.
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.contains("connection: close\r\n"), "{head}");
    let mut buf = [0u8; 4096];
    // The client goes on sending, as one that has not looked at the answer yet would.
    for i in 0..32 {
        if let Err(e) = s.write_all(&chunk) {
            panic!("write {i} after the answer failed: {e} (the gateway reset the connection)");
        }
    }
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let end = wait_for(
        "the end of the connection",
        Duration::from_secs(10),
        || match s.read(&mut buf) {
            Ok(0) => Some(Ok(())),
            Ok(_) => None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => Some(Err(e)),
        },
    );
    assert!(
        end.is_ok(),
        "the connection ended with {end:?}, not a clean close"
    );
    fx.assert_serving("after an early answer");
}

/// Sends `raw` over a TLS connection (ALPN http/1.1) and returns everything received until
/// the gateway closes.
fn tls_exchange(fx: &Fx, raw: &[u8]) -> Vec<u8> {
    let mut tls = tls_client(fx, raw);
    read_until_closed(&mut tls, Duration::from_secs(10))
}

/// A TLS connection (ALPN http/1.1) to the HTTPS listener that has sent `raw`; reads poll
/// with 50 ms timeouts.
fn tls_client(fx: &Fx, raw: &[u8]) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(fx.ca()).expect("ca");
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from("web.example.com").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    // Generous timeouts for the handshake (done by the first write), short ones for polling.
    let tcp = connect(fx.tls);
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(raw).expect("write over TLS");
    tls.flush().expect("flush");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    tls
}

/// A response after which the gateway closes the connection ends, over TLS, with
/// close_notify: the client can tell a whole response from a cut one (which matters most for
/// an HTTP/1.0 body delimited by the close).
#[test]
fn a_tls_connection_the_gateway_closes_ends_with_close_notify() {
    let fx = fixture();
    let mut tls = tls_client(&fx, b"GET /last HTTP/1.0\r\nHost: web.example.com\r\n\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = wait_for("the gateway to close", Duration::from_secs(10), || {
        loop {
            match tls.read(&mut buf) {
                Ok(0) => return Some(Ok(())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // rustls: the peer closed without close_notify.
                Err(e) => return Some(Err(e.kind())),
            }
        }
    });
    let got = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(end, Ok(()), "closed without close_notify after: {got}");
    assert_eq!(statuses(&got), [200], "{got}");
    assert!(got.contains("connection: close\r\n"), "{got}");
    assert!(got.contains("\"path\":\"/last\""), "{got}");
}

/// One keep-alive GET of `path` on `s`, answered 200 by the `web` backend.
fn get_on(s: &mut TcpStream, path: &str) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: web.example.com\r\n\r\n").expect("write");
    let got = read_until(s, "a response", |b| {
        String::from_utf8_lossy(b).contains(&format!("\"path\":\"{path}\""))
    });
    let got = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(statuses(&got), [200], "{got}");
    assert!(!got.contains("connection: close"), "{got}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let fx =
        fixture_with("{limits: {maxRequestHeadersKb: 8, headerReadTimeout: 1s, idleTimeout: 2s}}");
    let mut idle = connect(fx.plain);
    get_on(&mut idle, "/idle");
    let quiet_since = Instant::now();
    // Another connection stays busy for longer than the idle timeout: the timer counts quiet
    // time, not the connection's age.
    let mut busy = connect(fx.plain);
    let mut n = 0;
    while quiet_since.elapsed() < Duration::from_secs(3) {
        n += 1;
        get_on(&mut busy, &format!("/busy{n}"));
    }
    read_until_closed(&mut idle, Duration::from_secs(6));
    assert!(
        quiet_since.elapsed() >= Duration::from_millis(1500),
        "closed before the 2 s idle timeout"
    );
    get_on(&mut busy, "/still-open");
}

#[test]
fn a_request_waiting_for_its_answer_outlives_the_idle_timeout() {
    let fx =
        fixture_with("{limits: {maxRequestHeadersKb: 8, headerReadTimeout: 1s, idleTimeout: 1s}}");
    // The backend is silent for 2.5 s before it answers: the 1 s idle timeout counts only
    // time without a request in flight (Envoy's), over HTTP/1.1 and HTTP/2 alike.
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let r = fx
            .http("web.example.com", "/long-poll")
            .arg(proto)
            .header("x-test-delay-ms: 2500")
            .run();
        assert_eq!(
            (r.status, r.backend().as_str(), r.exit),
            (200, "web", 0),
            "{proto}: {r:?}"
        );
    }
    // A connection with nothing in flight still closes after the idle second.
    let mut idle = connect(fx.plain);
    get_on(&mut idle, "/idle");
    read_until_closed(&mut idle, Duration::from_secs(6));
}

#[test]
fn sigterm_closes_idle_keep_alive_connections() {
    let mut fx = fixture();
    let mut idle = connect(fx.plain);
    get_on(&mut idle, "/before");
    fx.gw.signal(15);
    // The drain reaches a connection waiting for its next request: closed after a quiet
    // second, not at the default idle timeout (minutes) or the drain deadline.
    read_until_closed(&mut idle, Duration::from_secs(5));
    assert_eq!(fx.gw.wait_exit(Duration::from_secs(15)), Some(0));
}

/// Opens a connection to `port`, sends `bytes`, stalls, and asserts the gateway closes it by
/// the group's 1 s header read timeout: not at once, and long before the idle timeout.
/// Returns what the gateway sent.
fn assert_timed_out(port: u16, bytes: &[u8], what: &str) -> Vec<u8> {
    let mut s = connect(port);
    s.write_all(bytes).expect("write");
    let t = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(6));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "{what}: closed too early ({took:?}), not by the timeout"
    );
    got
}

#[test]
fn slowloris_partial_header_is_closed_after_the_header_read_timeout() {
    let fx = fixture();
    let got = assert_timed_out(
        fx.plain,
        b"GET /slow HTTP/1.1\r\nHost: web.example.com\r\nX-Slow: 1",
        "partial HTTP/1.1 head",
    );
    assert!(
        !String::from_utf8_lossy(&got).contains("200"),
        "the partial request was answered: {got:?}"
    );
    // The same before the first byte, and with part of an HTTP/2 preface: the protocol
    // is not even known yet, the clock runs all the same.
    let got = assert_timed_out(fx.plain, b"", "silent plain client");
    assert!(got.is_empty(), "{got:?}");
    let got = assert_timed_out(fx.plain, b"PRI * HTTP/2.0\r\n", "partial HTTP/2 preface");
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(fx.be.counters.get("web"), 0);
    fx.assert_serving("after slowloris clients");
}

#[test]
fn silent_or_garbage_tls_clients_are_closed() {
    let fx = fixture();
    // Connects and sends nothing: closed once the header read timeout (1 s) passes.
    let got = assert_timed_out(fx.tls, b"", "silent TLS client");
    assert!(got.is_empty(), "{got:?}");
    // Garbage is refused at once (well before the 1 s timeout), without an answer: plain
    // HTTP on the TLS port, and a TLS record that is not a ClientHello.
    for (what, bytes) in [
        (
            "plain HTTP",
            &b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n"[..],
        ),
        (
            "a ServerHello",
            &b"\x16\x03\x01\x00\x08\x02\x00\x00\x04abcd"[..],
        ),
    ] {
        let mut s = connect(fx.tls);
        s.write_all(bytes).expect("write");
        let t = Instant::now();
        let got = read_until_closed(&mut s, Duration::from_secs(6));
        assert!(
            got.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{what}: not refused at once ({:?})",
            t.elapsed()
        );
    }
    // A truncated ClientHello, then silence: closed by the timeout as well.
    let got = assert_timed_out(
        fx.tls,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "truncated ClientHello",
    );
    assert!(got.is_empty(), "{got:?}");
    fx.assert_serving("after silent and garbage TLS clients");
}
