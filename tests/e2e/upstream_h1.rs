//! The HTTP/1.1 upstream client end to end, against a backend that writes exact bytes
//! (`harness::scripted`): response framings, interim responses, connection reuse, a kept-alive
//! connection the upstream closed, an upload that goes on while its response streams, a head
//! sent before its body, and a malformed response. curl drives each sequence over one client
//! connection, so every request lands on the same worker and its connection pool.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::tools::Curl;
use crate::harness::{Backends, free_port, wait_for};
use crate::upstream::{Fx, HOST, fixture, se};

/// One response of a sequence: status, backend connection and request number, body.
#[derive(Debug)]
struct Step {
    status: u16,
    conn: String,
    req: String,
    body: String,
}

/// Runs the requests (curl arguments each, URL path last) in order on one client connection.
fn on_one_connection(fx: &Fx, requests: &[&[&str]]) -> Vec<Step> {
    let mut c = Command::new("curl");
    for (i, args) in requests.iter().enumerate() {
        if i > 0 {
            c.arg("--next");
        }
        c.args(["-s", "--max-time", "30", "--resolve"])
            .arg(format!("{HOST}:{}:127.0.0.1", fx.port))
            .args(["-w", "##%{http_code} %header{x-conn} %header{x-req}\\n"]);
        let (path, rest) = args.split_last().expect("a path");
        c.args(rest).arg(fx.url(path));
    }
    let out = c.stdin(Stdio::null()).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut bodies = text.split("##");
    let mut body = bodies.next().unwrap_or("").to_string();
    let mut steps = Vec::new();
    for part in bodies {
        let (line, next_body) = part.split_once('\n').unwrap_or((part, ""));
        let mut f = line.split(' ');
        steps.push(Step {
            status: f.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            conn: f.next().unwrap_or("").to_string(),
            req: f.next().unwrap_or("").to_string(),
            body,
        });
        body = next_body.to_string();
    }
    assert_eq!(
        steps.len(),
        requests.len(),
        "curl output: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    steps
}

fn scripted_fixture(http: &str) -> Fx {
    scripted_with_policy(http, None)
}

/// The scripted backend as `raw.team-a.internal`, with a DestinationRule `policy` if given.
fn scripted_with_policy(http: &str, policy: Option<&str>) -> Fx {
    let be = Backends::new();
    let port = free_port();
    be.scripted(port);
    let mut services = se("raw", "raw.team-a.internal", &[port]);
    if let Some(p) = policy {
        services.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: raw}}\nspec:\n  host: raw.team-a.internal\n  trafficPolicy: {p}\n---\n"
        ));
    }
    fixture(be, &services, http)
}

const ROUTE: &str = "  - route: [{destination: {host: raw.team-a.internal}}]\n";

#[test]
fn chunked_close_delimited_and_interim_responses_reach_the_client_whole() {
    let fx = scripted_fixture(ROUTE);
    let s = on_one_connection(
        &fx,
        &[
            &["/chunked"],
            &["/chunked"],
            &["--head", "/chunked"],
            &["/interim"],
            &["/eof"],
            &["/"],
        ],
    );
    let statuses: Vec<u16> = s.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [200; 6], "{s:?}");
    assert_eq!(
        s[0].body, "hello world",
        "chunk extension and trailer dropped"
    );
    assert_eq!(s[1].body, "hello world");
    assert_eq!(
        s[3].body, "ok",
        "the 100 and 103 before the 200 are not the response"
    );
    assert_eq!(
        s[4].body, "until the end",
        "a body delimited by the connection's end"
    );
    // One upstream connection carried the first five: a chunked body, a HEAD answered with
    // a chunked head and no body, and interim responses leave it reusable. The
    // close-delimited body ended it, so the last request needed a new one.
    let conns: Vec<&str> = s.iter().map(|s| s.conn.as_str()).collect();
    let reqs: Vec<&str> = s.iter().map(|s| s.req.as_str()).collect();
    assert_eq!(conns[..5], [conns[0]; 5], "{s:?}");
    assert_eq!(reqs[..5], ["0", "1", "2", "3", "4"], "{s:?}");
    assert_ne!(conns[5], conns[0], "{s:?}");
    assert_eq!(reqs[5], "0", "{s:?}");
}

/// From the third response on, a head with the same header names as the one before is
/// replayed into a copy of its map (`upstream/h1/names.rs`): each must still carry its own
/// values.
#[test]
fn responses_with_repeated_header_names_carry_their_own_values() {
    let fx = scripted_fixture(ROUTE);
    let s = on_one_connection(
        &fx,
        &[&["/"], &["/"], &["/"], &["/"], &["/chunked"], &["/"]],
    );
    assert!(s.iter().all(|s| s.status == 200), "{s:?}");
    let conns: Vec<&str> = s.iter().map(|s| s.conn.as_str()).collect();
    let reqs: Vec<&str> = s.iter().map(|s| s.req.as_str()).collect();
    assert_eq!(conns, [conns[0]; 6], "one upstream connection: {s:?}");
    assert_eq!(reqs, ["0", "1", "2", "3", "4", "5"], "{s:?}");
    let bodies: Vec<&str> = s.iter().map(|s| s.body.as_str()).collect();
    assert_eq!(
        bodies,
        ["ok", "ok", "ok", "ok", "hello world", "ok"],
        "{s:?}"
    );
}

#[test]
fn connections_carry_max_requests_per_connection_and_close_after_the_idle_timeout() {
    let fx = scripted_with_policy(
        ROUTE,
        Some("{connectionPool: {http: {maxRequestsPerConnection: 2, idleTimeout: 1s}}}"),
    );
    let s = on_one_connection(&fx, &[&["/"], &["/"], &["/"], &["/"], &["/"]]);
    assert!(s.iter().all(|s| s.status == 200), "{s:?}");
    let conns: Vec<&str> = s.iter().map(|s| s.conn.as_str()).collect();
    let reqs: Vec<&str> = s.iter().map(|s| s.req.as_str()).collect();
    assert_eq!(
        reqs,
        ["0", "1", "0", "1", "0"],
        "two requests per connection: {s:?}"
    );
    assert!(
        conns[0] == conns[1]
            && conns[1] != conns[2]
            && conns[2] == conns[3]
            && conns[3] != conns[4],
        "{s:?}"
    );
    // The two used-up connections are closed at once; the third idles, and the pool closes
    // it once it has been idle for a second.
    let closed = || fx.be.counters.get("scripted:closed");
    wait_for(
        "the used-up connections to close",
        Duration::from_secs(10),
        || (closed() >= 2).then_some(()),
    );
    wait_for(
        "the idle connection to close after its idle timeout",
        Duration::from_secs(10),
        || (closed() == 3).then_some(()),
    );
    let s = on_one_connection(&fx, &[&["/"]]);
    assert_eq!((s[0].status, s[0].req.as_str()), (200, "0"), "{s:?}");
    assert_ne!(s[0].conn, conns[4], "{s:?}");
}

#[test]
fn idle_connections_of_a_cluster_a_reload_replaced_are_closed() {
    let fx = scripted_fixture(ROUTE);
    let s = on_one_connection(&fx, &[&["/"]]);
    assert_eq!(s[0].status, 200, "{s:?}");
    // The connection idles in the pool (idle timeout: an hour). A new DestinationRule makes
    // a new cluster runtime; the old one's idle connection goes with it, not an hour later.
    let port = free_port();
    fx.be.scripted(port);
    fx.repo.write(
        "tenants/team-a/services.yaml",
        &se("raw", "raw.team-a.internal", &[port]),
    );
    let (status, body) = fx.gw.reload();
    assert_eq!(status, 200, "{body}");
    wait_for(
        "the replaced cluster's idle connection to close",
        Duration::from_secs(10),
        || (fx.be.counters.get("scripted:closed") == 1).then_some(()),
    );
    let s = on_one_connection(&fx, &[&["/"]]);
    assert_eq!((s[0].status, s[0].req.as_str()), (200, "0"), "{s:?}");
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_not_used_again() {
    let fx = scripted_fixture(
        "  - retries: {attempts: 0}\n    route: [{destination: {host: raw.team-a.internal}}]\n",
    );
    // POSTs, and no retries: a request written to the closed connection would fail, so
    // only noticing the close before sending lets all of them through.
    let post: &[&str] = &["-d", "x", "/close-after"];
    let s = on_one_connection(&fx, &[post, post, post, post, post]);
    assert!(s.iter().all(|s| s.status == 200 && s.req == "0"), "{s:?}");
    let mut conns: Vec<&str> = s.iter().map(|s| s.conn.as_str()).collect();
    conns.dedup();
    assert_eq!(conns.len(), 5, "each on a new connection: {s:?}");
}

#[test]
fn a_kept_alive_connection_closed_unanswered_is_retried_only_for_idempotent_requests() {
    let fx = scripted_fixture(
        "  - retries: {attempts: 0}\n    route: [{destination: {host: raw.team-a.internal}}]\n",
    );
    let s = on_one_connection(
        &fx,
        &[
            &["/drop-reused"],
            &["/drop-reused"],
            &["-d", "x", "/drop-reused"],
            &["/"],
        ],
    );
    // The second GET went out on the kept-alive connection, which the backend closed
    // without answering (as a backend whose keep-alive timeout fires at that moment does):
    // it goes again on a new connection, which is not a retry (retries are off).
    assert_eq!((s[0].status, s[1].status), (200, 200), "{s:?}");
    assert_ne!(s[1].conn, s[0].conn, "{s:?}");
    assert_eq!(s[1].req, "0", "{s:?}");
    // A POST is not repeated (RFC 9110 §9.2.2): the client learns what happened.
    assert_eq!(s[2].status, 503, "{s:?}");
    assert!(
        s[2].body.contains("connection termination")
            && s[2]
                .body
                .contains("closed the connection before the whole response"),
        "{s:?}"
    );
    assert_eq!(s[3].status, 200, "{s:?}");
    wait_for(
        "a 503 UC series in /metrics",
        Duration::from_secs(10),
        || {
            let (_, m) = fx.gw.admin_get("/metrics")?;
            m.lines()
                .any(|l| l.contains("response_code=\"503\"") && l.contains("response_flags=\"UC\""))
                .then_some(())
        },
    );
}

#[test]
fn an_upload_goes_on_while_its_response_streams() {
    let fx = scripted_fixture(ROUTE);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("upload");
    std::fs::write(&file, vec![b'u'; 2 * 1024 * 1024]).expect("write upload");
    let data = format!("@{}", file.display());
    // The backend answers as soon as it has the head, then reads the upload (chunked: a
    // length the gateway does not know), then ends the response with what it received.
    let s = on_one_connection(
        &fx,
        &[
            &[
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &data,
                "/early",
            ],
            &["/"],
        ],
    );
    assert_eq!(s[0].status, 200, "{s:?}");
    assert_eq!(s[0].body, "early\nreceived 2097152\n");
    assert_eq!(
        (s[1].status, s[1].conn.as_str()),
        (200, s[0].conn.as_str()),
        "{s:?}"
    );
}

#[test]
fn an_answer_before_the_upload_ends_reaches_the_client() {
    let fx = scripted_fixture(ROUTE);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("upload");
    std::fs::write(&file, vec![b'u'; 8 * 1024 * 1024]).expect("write upload");
    let data = format!("@{}", file.display());
    // The backend answers 413 to the head and closes with the upload unread, so the gateway's
    // writes fail (a reset). The 413 is still what the client gets, whole, and the gateway
    // then ends the client's connection without resetting it (its upload unread).
    for _ in 0..5 {
        let r = Curl::new(&fx.url("/early-close"))
            .header("Transfer-Encoding: chunked")
            .arg("--data-binary")
            .arg(&data)
            .run();
        assert_eq!((r.status, r.body.as_str()), (413, "too large"), "{r:?}");
        assert_eq!(r.exit, 0, "curl failed: {r:?}");
    }
    assert_eq!(fx.get("/").status, 200);
}

#[test]
fn a_head_reaches_the_client_while_its_body_is_still_to_come() {
    use std::io::{Read, Write};
    let fx = scripted_fixture(ROUTE);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", fx.port)).expect("connect");
    // The gateway holds a head at most a millisecond for its body; a head held until the
    // body came would never arrive here, as the backend sends the body only after it did.
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET /held-body HTTP/1.1\r\nHost: {HOST}\r\n\r\n").expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s
            .read(&mut chunk)
            .expect("the head, before its body was sent");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("content-length: 5\r\n"), "{head}");
    assert_eq!(&got[end..], b"", "a body before the backend sent it");
    fx.be.held_body.notify_one();
    while got.len() < end + 5 {
        let n = s.read(&mut chunk).expect("the body");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(&got[end..], b"hello");
}

#[test]
fn a_malformed_upstream_response_is_a_503_naming_the_fault() {
    let fx = scripted_fixture(ROUTE);
    // The second: a head that never ends is refused at the size limit (60 KiB), not
    // buffered whole.
    for (path, fault) in [
        ("/malformed", "invalid Content-Length"),
        ("/endless-head", "response head too large"),
    ] {
        let s = on_one_connection(&fx, &[&[path], &["/"]]);
        assert_eq!(s[0].status, 503, "{path}: {s:?}");
        assert!(
            s[0].body
                .contains(&format!("malformed upstream response: {fault}")),
            "{path}: {s:?}"
        );
        assert_eq!(s[1].status, 200, "{path}: {s:?}");
    }
}

#[test]
fn the_route_timeout_cuts_off_a_response_body_still_to_come() {
    use std::io::{Read, Write};
    let fx = scripted_fixture(
        "  - timeout: 400ms\n    route: [{destination: {host: raw.team-a.internal}}]\n",
    );
    // Envoy's route timeout runs until the response has been received whole: a head in
    // time does not stop it. The client gets the head, then the connection closes with the
    // body short (Envoy resets the stream).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", fx.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let t = std::time::Instant::now();
    write!(s, "GET /held-body HTTP/1.1\r\nHost: {HOST}\r\n\r\n").expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("the head, then the close");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.contains("content-length: 5\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body came: {text}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cut off at the 400 ms timeout, not later: {:?}",
        t.elapsed()
    );
    fx.be.held_body.notify_one();
    // The gateway keeps serving on the route.
    assert_eq!(fx.get("/").status, 200);
}

#[test]
fn the_route_timeout_frees_the_upstream_of_a_client_that_stops_reading() {
    use std::io::Write;
    let fx = scripted_fixture(
        "  - timeout: 1s\n    route: [{destination: {host: raw.team-a.internal}}]\n",
    );
    // The client asks for an endless body and reads none of it: the buffers between fill
    // and nobody polls the response. Envoy's route timer fires regardless and resets the
    // upstream; so must the gateway's, or a client that stops reading holds the backend's
    // connection (and its share of `maxConnections`) for as long as it likes.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", fx.port)).expect("connect");
    write!(s, "GET /firehose HTTP/1.1\r\nHost: {HOST}\r\n\r\n").expect("write");
    let client = s.local_addr().expect("local").port();
    // (Checked well within the second, so that the check below can tell.)
    assert!(crate::harness::tools::established(fx.port, client));
    wait_for(
        "the gateway to close the backend's connection at the 1 s timeout",
        Duration::from_secs(15),
        || (fx.be.counters.get("scripted:closed") > 0).then_some(()),
    );
    // And the client's: Envoy resets the response's stream, which for HTTP/1.1 is the
    // connection, though its writer waits on a full socket.
    wait_for(
        "the gateway to close the client's connection at the timeout",
        Duration::from_secs(15),
        || (!crate::harness::tools::established(fx.port, client)).then_some(()),
    );
    // The unread client did not stop the gateway serving the route.
    assert_eq!(fx.get("/").status, 200);
    drop(s);
}

#[test]
fn connections_retire_at_max_connection_duration_and_keep_alive_by_the_rule() {
    let be = Backends::new();
    let port = free_port();
    be.scripted(port);
    let mut services = se("raw", "raw.team-a.internal", &[port]);
    services.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: raw}\nspec:\n  host: raw.team-a.internal\n  trafficPolicy: {connectionPool: {tcp: {maxConnectionDuration: 1s}}}\n---\n",
    );
    let pk = free_port();
    be.http("ka", pk);
    services.push_str(&se("ka", "ka.team-a.internal", &[pk]));
    services.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ka}\nspec:\n  host: ka.team-a.internal\n  trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {time: 9s}}}}\n---\n",
    );
    let p2 = free_port();
    be.http("e2", p2);
    services.push_str(&se("e2", "e2.team-a.internal", &[p2]));
    services.push_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: e2}\nspec:\n  host: e2.team-a.internal\n  trafficPolicy: {connectionPool: {tcp: {maxConnectionDuration: 1s}, http: {h2UpgradePolicy: UPGRADE}}}\n---\n",
    );
    let fx = fixture(
        be,
        &services,
        &format!(
            "  - match: [{{uri: {{prefix: /h2}}}}]\n    route: [{{destination: {{host: e2.team-a.internal}}}}]\n  - match: [{{uri: {{prefix: /ka}}}}]\n    route: [{{destination: {{host: ka.team-a.internal}}}}]\n{ROUTE}"
        ),
    );
    let conn = |fx: &Fx| {
        let r = fx.get("/");
        assert_eq!(r.status, 200, "{r:?}");
        r.header("x-conn").expect("x-conn").to_string()
    };
    let first = conn(&fx);
    // `tcpKeepalive`: the pooled connection's keepalive timer runs on the 9 s asked for, not
    // the system's two hours.
    assert_eq!(fx.get("/ka").status, 200);
    let timers = crate::harness::tools::timers_to(pk);
    assert!(
        timers
            .iter()
            .any(|t| crate::harness::tools::keepalive_within_a_minute(t)),
        "no keepalive timer within a minute: {timers:?}"
    );
    // `maxConnectionDuration`: a connection older than 1 s takes no new request, however
    // often it is used; a request every 100 ms soon lands on a new one.
    let next = wait_for(
        "a request on a new connection after the 1 s maximum duration",
        Duration::from_secs(15),
        || {
            std::thread::sleep(Duration::from_millis(100));
            let c = conn(&fx);
            (c != first).then_some(c)
        },
    );
    assert_ne!(next, first);
    // The same over HTTP/2: the backend sees a second connection (another source port).
    let ports = |fx: &Fx| {
        let r = fx.get("/h2");
        assert_eq!(
            (r.status, r.json()["version"].as_str()),
            (200, Some("HTTP/2.0"))
        );
        let peers = fx.be.peers.lock().expect("lock");
        peers["e2"]
            .iter()
            .map(|a| a.port())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(ports(&fx).len(), 1);
    wait_for(
        "an HTTP/2 request on a new connection after the 1 s maximum duration",
        Duration::from_secs(15),
        || {
            std::thread::sleep(Duration::from_millis(100));
            (ports(&fx).len() > 1).then_some(())
        },
    );
}

/// `retryOn: reset-before-request` retries only a failure that came before the request
/// reached the upstream: a POST the upstream read and then dropped is not sent again, where
/// `reset` sends it three times.
#[test]
fn reset_before_request_does_not_send_a_request_the_upstream_read_again() {
    let fx = scripted_fixture(
        "  - match: [{uri: {prefix: /before}}]\n    rewrite: {uri: /drop}\n    route: [{destination: {host: raw.team-a.internal}}]\n    retries: {attempts: 2, retryOn: reset-before-request}\n  - match: [{uri: {prefix: /any}}]\n    rewrite: {uri: /drop}\n    route: [{destination: {host: raw.team-a.internal}}]\n    retries: {attempts: 2, retryOn: reset}\n",
    );
    let closed = || fx.be.counters.get("scripted:closed");
    let post = |path: &str| {
        Curl::new(&fx.url(path))
            .arg("-X")
            .arg("POST")
            .arg("--data")
            .arg("pay=1")
            .run()
    };
    let r = post("/before");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("reset"), "{r:?}");
    wait_for("the dropped connection", Duration::from_secs(10), || {
        (closed() >= 1).then_some(())
    });
    assert_eq!(closed(), 1, "the request the upstream read was sent again");

    let r = post("/any");
    assert_eq!(r.status, 503, "{r:?}");
    wait_for("three dropped connections", Duration::from_secs(10), || {
        (closed() >= 4).then_some(())
    });
    assert_eq!(closed(), 4);
}
