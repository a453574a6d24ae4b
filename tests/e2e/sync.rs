//! GitOps with `gatehouse-sync`: real git servers on loopback (a bare repository over
//! file://, `git daemon`, smart HTTP through `git http-backend` behind nginx, sshd with a
//! deploy key), the real agent publishing releases, the real appliance serving them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::free_port;
use crate::harness::git::{GitDaemon, Hang, HttpAuth, HttpGit, Origin, Sshd, run, ssh_keygen};
use crate::harness::sync::{Dirs, file, gatehouse_yaml, gateway_doc, get, routes_doc, wait_body};

/// Writes the standard two-tenant configuration: team-a and team-b with one route each.
fn seed(o: &Origin, port: u16, a: &[(&str, &str)], b: &[(&str, &str)], extra: [&str; 2]) {
    o.write(
        "gatehouse.yaml",
        &gatehouse_yaml(port, &[("team-a", extra[0]), ("team-b", extra[1])]),
    );
    o.write("tenants/team-a/gateway.yaml", &gateway_doc("team-a"));
    o.write("tenants/team-a/routes.yaml", &routes_doc("team-a", a));
    o.write("tenants/team-b/gateway.yaml", &gateway_doc("team-b"));
    o.write("tenants/team-b/routes.yaml", &routes_doc("team-b", b));
}

fn flags(url: &str, more: &[&str]) -> Vec<String> {
    let mut f = vec![
        "--url".to_string(),
        url.to_string(),
        "--jitter".into(),
        "0".into(),
    ];
    f.extend(more.iter().map(|s| (*s).to_string()));
    f
}

fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[test]
fn a_pushed_route_is_served_within_the_poll_interval() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "a1")], &[("/b", "b1")], ["", ""]);
    o.commit_push("seed", None);
    let d = Dirs::new();
    let _agent = d.start(&flags(&o.file_url(), &["--interval", "3s"]));
    let _gw = d.gateway(false);
    wait_body(port, "team-a", "/a", "a1", Duration::from_secs(20));

    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "a1"), ("/new", "fresh")]),
    );
    o.commit_push("team-a: /new", None);
    let pushed = Instant::now();
    wait_body(port, "team-a", "/new", "fresh", Duration::from_secs(3 + 2));
    println!(
        "poll (interval 3s, file://): push to serving in {:?}",
        pushed.elapsed()
    );
}

#[test]
fn a_webhook_push_is_served_within_two_seconds() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "a1")], &[("/b", "b1")], ["", ""]);
    o.commit_push("seed", None);
    let d = Dirs::new();
    let daemon = GitDaemon::start(&o.base, &d.scratch);
    let secret = file(&d.scratch, "hook-secret", "hunter2-hook\n");
    let listen = format!("127.0.0.1:{}", free_port());
    let _agent = d.start(&flags(
        &daemon.url(),
        &[
            "--interval",
            "60s",
            "--listen",
            &listen,
            "--webhook-secret-file",
            &secret.display().to_string(),
        ],
    ));
    let _gw = d.gateway(false);
    wait_body(port, "team-a", "/a", "a1", Duration::from_secs(20));

    let post = |body: &str, headers: &[String]| -> u16 {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"]);
        for h in headers {
            c.args(["-H", h]);
        }
        let payload = file(&d.scratch, "payload", body);
        c.args([
            "--data-binary",
            &format!("@{}", payload.display()),
            &format!("http://{listen}/hook"),
        ]);
        let out = c.output().expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    // The payload names a commit that does not exist: it is never trusted, only a trigger.
    let body = r#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;
    let hmac = run(
        &d.scratch,
        "sh",
        &[
            "-c",
            &format!(
                "printf '%s' '{body}' | openssl dgst -sha256 -hmac hunter2-hook -r | cut -d' ' -f1"
            ),
        ],
    );
    let sig = format!("X-Hub-Signature-256: sha256={}", hmac.trim());
    assert_eq!(post(body, &[]), 401, "unsigned deliveries are refused");
    assert_eq!(
        post(body, &["X-Hub-Signature-256: sha256=00".into()]),
        401,
        "a wrong signature is refused"
    );
    let big = "x".repeat(2 << 20);
    assert_eq!(
        post(&big, std::slice::from_ref(&sig)),
        413,
        "the body is capped"
    );

    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "a1"), ("/hooked", "yes")]),
    );
    o.commit_push("team-a: /hooked", None);
    let pushed = Instant::now();
    assert_eq!(post(body, &[sig, "X-GitHub-Event: push".into()]), 202);
    wait_body(port, "team-a", "/hooked", "yes", Duration::from_secs(2));
    println!(
        "webhook (git daemon): push + delivery to serving in {:?}",
        pushed.elapsed()
    );
    // The status endpoint serves what status.json holds.
    let out = Command::new("curl")
        .args(["-s", &format!("http://{listen}/status")])
        .output()
        .expect("curl");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(s(&st["source"]["fetchedRevision"]), o.head());
    assert_eq!(s(&st["tenants"]["team-a"]["appliedRevision"]), o.head());
}

#[test]
fn a_broken_tenant_keeps_its_routes_while_the_other_goes_live() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "a1")], &[("/b", "b1")], ["", ""]);
    o.commit_push("seed", None);
    let d = Dirs::new();
    let url = o.file_url();
    let (code, out) = d.once(&flags(&url, &[]));
    assert_eq!(code, 0, "{out}");
    let gw = d.gateway(true);
    assert_eq!(get(port, "team-b", "/b").body, "b1");
    let first = o.head();

    // One commit: team-a adds a route, team-b misspells a field.
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "a1"), ("/second", "a2")]),
    );
    o.write(
        "tenants/team-b/routes.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: team-b-routes}\nspec:\n  hosts: [\"team-b.example.com\"]\n  gateways: [web]\n  http:\n  - match: [{uri: {prefix: /b}}]\n    directRespons: {status: 200}\n",
    );
    let second = o.commit_push("a adds /a2, b breaks", None);
    let (code, out) = d.once(&flags(&url, &[]));
    assert_eq!(code, 0, "{out}");
    wait_body(port, "team-a", "/second", "a2", Duration::from_secs(5));
    assert_eq!(
        get(port, "team-b", "/b").body,
        "b1",
        "team-b keeps its routes"
    );

    let st = d.status();
    let b = &st["tenants"]["team-b"];
    assert_eq!(s(&b["state"]), "lastGood", "{st:#}");
    assert_eq!(s(&b["appliedRevision"]), first);
    assert_eq!(s(&b["attemptedRevision"]), second);
    let err = &b["errors"][0];
    assert_eq!(s(&err["file"]), "tenants/team-b/routes.yaml");
    let line = err["line"].as_u64().unwrap_or(0);
    assert!((8..=10).contains(&line), "the broken rule's line: {err:#}");
    assert!(
        s(&err["text"]).starts_with(&format!("tenants/team-b/routes.yaml:{line}:")),
        "{err:#}"
    );
    let a = &st["tenants"]["team-a"];
    assert_eq!(s(&a["state"]), "applied");
    assert_eq!(s(&a["appliedRevision"]), second);
    assert!(
        st["appliances"][0]["ok"].as_bool().unwrap_or(false),
        "{st:#}"
    );

    // The CLI reads the same from the releases folder alone.
    let (code, text, _) = d.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!("tenants/team-b/routes.yaml:{line}:")),
        "status shows file:line: {text}"
    );
    drop(gw);
}

#[test]
fn rewinds_deleted_branches_and_hung_servers_leave_the_last_release_serving() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "v1")], &[("/b", "b1")], ["", ""]);
    let c1 = o.commit_push("v1", None);
    let d = Dirs::new();
    let url = o.file_url();
    assert_eq!(d.once(&flags(&url, &[])).0, 0);
    let _gw = d.gateway(true);
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "v2")]),
    );
    let c2 = o.commit_push("v2", None);
    assert_eq!(d.once(&flags(&url, &[])).0, 0);
    wait_body(port, "team-a", "/a", "v2", Duration::from_secs(5));
    let served = d.current();

    // A force-push back to the older commit is refused.
    o.force_main_to(&c1);
    let (code, out) = d.once(&flags(&url, &[]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("moved back"), "{out}");
    let st = d.status();
    assert!(
        s(&st["refused"]["reason"]).contains("older commit"),
        "{st:#}"
    );
    assert_eq!(s(&st["revision"]), c2);
    assert_eq!(d.current(), served);
    assert_eq!(get(port, "team-a", "/a").body, "v2");

    // The branch is deleted: a fetch error, nothing changes.
    o.delete_main();
    let (code, out) = d.once(&flags(&url, &[]));
    assert_eq!(code, 2, "{out}");
    let st = d.status();
    assert!(
        s(&st["source"]["error"]).contains("branch \"main\" does not exist"),
        "{st:#}"
    );
    assert_eq!(d.current(), served);
    assert_eq!(get(port, "team-a", "/a").body, "v2");

    // A server that accepts and never answers: the overall timeout fires.
    let hang = Hang::start();
    let started = Instant::now();
    let (code, out) = d.once(&flags(
        &format!("http://127.0.0.1:{}/origin.git", hang.port),
        &["--timeout", "2s"],
    ));
    let took = started.elapsed();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("timed out after 2s"), "{out}");
    assert!(took < Duration::from_secs(8), "gave up after {took:?}");
    println!("hung http server: gave up after {took:?} (timeout 2s)");
    // ... and the same over ssh, where libgit2 has no timeout of its own.
    let kh = file(&d.scratch, "known_hosts", "");
    let started = Instant::now();
    let (code, out) = d.once(&flags(
        &format!("ssh://git@127.0.0.1:{}/origin.git", hang.port),
        &[
            "--timeout",
            "2s",
            "--known-hosts",
            &kh.display().to_string(),
        ],
    ));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("timed out after 2s"), "{out}");
    println!("hung ssh server: gave up after {:?}", started.elapsed());
    assert!(s(&d.status()["source"]["error"]).contains("timed out"));
    assert_eq!(d.current(), served);
    assert_eq!(get(port, "team-a", "/a").body, "v2");
}

#[test]
fn smart_http_with_tokens_and_a_private_ca_and_wrong_credentials_fail_once() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "http1")], &[("/b", "b1")], ["", ""]);
    o.commit_push("seed", None);
    let d = Dirs::new();
    let http = HttpGit::start(
        &o.base,
        &d.scratch.join("nginx"),
        &HttpAuth::Basic("deploy".into(), "t0ken".into()),
    );
    let good = file(&d.scratch, "token", "t0ken\n");
    let bad = file(&d.scratch, "bad-token", "wrong\n");
    let url = format!("http://127.0.0.1:{}/origin.git", http.port);
    let auth = |t: &Path| {
        vec![
            "--username".to_string(),
            "deploy".into(),
            "--token-file".into(),
            t.display().to_string(),
        ]
    };
    let with = |u: &str, extra: Vec<String>| {
        let mut f = flags(u, &[]);
        f.extend(extra);
        f
    };
    let (code, out) = d.once(&with(&url, auth(&good)));
    assert_eq!(code, 0, "{out}");
    let _gw = d.gateway(true);
    assert_eq!(get(port, "team-a", "/a").body, "http1");

    // Wrong credentials: one rejection, a clear error, no retry loop.
    let before = http.requests();
    let started = Instant::now();
    let (code, out) = d.once(&with(&url, auth(&bad)));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    let sent = http.requests() - before;
    assert!(
        sent <= 3,
        "{sent} requests for one fetch with a rejected token"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(s(&d.status()["source"]["error"]).contains("rejected"));
    assert_eq!(get(port, "team-a", "/a").body, "http1", "still serving");

    // HTTPS with the repository's private CA; without it the certificate is refused.
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "https2")]),
    );
    o.commit_push("https", None);
    let tls = format!("https://127.0.0.1:{}/origin.git", http.tls_port);
    let (code, out) = d.once(&with(&tls, auth(&good)));
    assert_eq!(code, 2, "an unknown CA is refused: {out}");
    let mut f = auth(&good);
    f.extend(["--ca-file".to_string(), http.ca_file.display().to_string()]);
    let (code, out) = d.once(&with(&tls, f));
    assert_eq!(code, 0, "{out}");
    wait_body(port, "team-a", "/a", "https2", Duration::from_secs(5));

    // A bearer token sent as a header.
    let bearer = HttpGit::start(
        &o.base,
        &d.scratch.join("nginx-bearer"),
        &HttpAuth::Bearer("b3arer".into()),
    );
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "bearer3")]),
    );
    o.commit_push("bearer", None);
    let tok = file(&d.scratch, "bearer", "b3arer\n");
    let burl = format!("http://127.0.0.1:{}/origin.git", bearer.port);
    let (code, out) = d.once(&with(
        &burl,
        vec!["--bearer-token-file".into(), tok.display().to_string()],
    ));
    assert_eq!(code, 0, "{out}");
    wait_body(port, "team-a", "/a", "bearer3", Duration::from_secs(5));
}

#[test]
fn ssh_with_a_deploy_key_on_a_non_22_port_and_unknown_host_keys_are_refused() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "ssh1")], &[("/b", "b1")], ["", ""]);
    o.commit_push("seed", None);
    let d = Dirs::new();
    let key = d.scratch.join("deploy");
    let deploy_pub = ssh_keygen(&key, "deploy");
    let sshd = Sshd::start(&d.scratch.join("sshd"), &deploy_pub);
    let url = sshd.url(&o.base);
    // gatehouse manages the known_hosts file: `known-hosts --add` records the server's key
    // (an operator compares the printed fingerprint with one obtained out of band).
    let kh = d.scratch.join("known_hosts");
    let out = d
        .command(
            Some("known-hosts"),
            &flags(&url, &["--known-hosts", &kh.display().to_string(), "--add"]),
        )
        .output()
        .expect("known-hosts");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("SHA256:"), "{printed}");
    let recorded = std::fs::read_to_string(&kh).expect("known_hosts written");
    assert_eq!(
        recorded.split_whitespace().take(3).collect::<Vec<_>>(),
        sshd.known_hosts_line()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
    );
    let ssh = |k: &Path, known: &Path| {
        flags(
            &url,
            &[
                "--ssh-key-file",
                &k.display().to_string(),
                "--known-hosts",
                &known.display().to_string(),
            ],
        )
    };
    let (code, out) = d.once(&ssh(&key, &kh));
    assert_eq!(
        code,
        0,
        "{out}\n{}",
        std::fs::read_to_string(d.scratch.join("sshd/sshd.log")).unwrap_or_default()
    );
    let _gw = d.gateway(true);
    assert_eq!(get(port, "team-a", "/a").body, "ssh1");
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "ssh2")]),
    );
    o.commit_push("ssh2", None);

    // The host is not in known_hosts (only another host is): refused, fail closed.
    let other = ssh_keygen(&d.scratch.join("other-host"), "other");
    let unknown = file(
        &d.scratch,
        "kh-unknown",
        &format!(
            "[127.0.0.1]:22 {other}\ngit.example.com {}\n",
            sshd.host_key
        ),
    );
    let (code, out) = d.once(&ssh(&key, &unknown));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown ssh host [127.0.0.1]:"), "{out}");
    // Known, but with another key: a possible man in the middle.
    let wrong = file(
        &d.scratch,
        "kh-wrong",
        &format!("[127.0.0.1]:{} {other}\n", sshd.port),
    );
    let (code, out) = d.once(&ssh(&key, &wrong));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("host key mismatch"), "{out}");
    // A key the server does not accept: one attempt, a clear error.
    let stranger = d.scratch.join("stranger");
    ssh_keygen(&stranger, "stranger");
    let started = Instant::now();
    let (code, out) = d.once(&ssh(&stranger, &kh));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("refused the ssh key"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        get(port, "team-a", "/a").body,
        "ssh1",
        "the last release still serves"
    );

    let (code, out) = d.once(&ssh(&key, &kh));
    assert_eq!(code, 0, "{out}");
    wait_body(port, "team-a", "/a", "ssh2", Duration::from_secs(5));
}

#[test]
fn signatures_gate_commits_and_tenants_sign_only_their_own_folders() {
    let o = Origin::new();
    let port = free_port();
    let d = Dirs::new();
    let (pk, ak, bk) = (
        d.scratch.join("platform"),
        d.scratch.join("a"),
        d.scratch.join("b"),
    );
    let (pp, ap, bp) = (
        ssh_keygen(&pk, "platform"),
        ssh_keygen(&ak, "a"),
        ssh_keygen(&bk, "b"),
    );
    let trust = file(&d.scratch, "trusted.pub", &format!("{pp}\n{ap}\n{bp}\n"));
    let signer = |p: &str| format!("  signers: [\"{p}\"]");
    seed(
        &o,
        port,
        &[("/a", "a1")],
        &[("/b", "b1")],
        [&signer(&ap), &signer(&bp)],
    );
    o.commit_push("platform seeds", Some(&pk));
    let url = o.file_url();
    let f = flags(
        &url,
        &[
            "--verify",
            "head",
            "--trusted-key",
            &trust.display().to_string(),
        ],
    );
    let (code, out) = d.once(&f);
    assert_eq!(code, 0, "{out}");
    let _gw = d.gateway(true);
    let served = d.current();

    // Signed by team-a's key, but it touches team-b's folder.
    o.write(
        "tenants/team-b/routes.yaml",
        &routes_doc("team-b", &[("/b", "hijacked")]),
    );
    let hijack = o.commit_push("a edits b", Some(&ak));
    let (code, out) = d.once(&f);
    assert_eq!(code, 1, "{out}");
    let st = d.status();
    assert_eq!(s(&st["refused"]["revision"]), hijack);
    assert!(
        s(&st["refused"]["reason"]).contains("changes tenants/team-b/"),
        "{st:#}"
    );
    assert_eq!(get(port, "team-b", "/b").body, "b1");

    // Unsigned.
    o.write(
        "tenants/team-b/routes.yaml",
        &routes_doc("team-b", &[("/b", "b1")]),
    );
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "unsigned")]),
    );
    o.commit_push("unsigned", None);
    let (code, out) = d.once(&f);
    assert_eq!(code, 1, "{out}");
    assert!(s(&d.status()["refused"]["reason"]).contains("is not signed"));
    assert_eq!(d.current(), served);
    assert_eq!(get(port, "team-a", "/a").body, "a1");

    // Signed by team-a, touching only team-a (team-b is back to what is served).
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "a2")]),
    );
    o.commit_push("a signs its own change", Some(&ak));
    let (code, out) = d.once(&f);
    assert_eq!(code, 0, "{out}");
    wait_body(port, "team-a", "/a", "a2", Duration::from_secs(5));
    assert_eq!(get(port, "team-b", "/b").body, "b1");
}

#[test]
fn agent_and_appliance_restarted_while_git_is_down_serve_the_last_release() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "kept")], &[("/b", "b1")], ["", ""]);
    o.commit_push("seed", None);
    let d = Dirs::new();
    let mut daemon = GitDaemon::start(&o.base, &d.scratch);
    let f = flags(&daemon.url(), &["--interval", "1s"]);
    let agent = d.start(&f);
    let gw = d.gateway(false);
    wait_body(port, "team-a", "/a", "kept", Duration::from_secs(20));

    daemon.stop();
    drop(agent);
    drop(gw);
    let _gw = d.gateway(true);
    assert_eq!(
        get(port, "team-a", "/a").body,
        "kept",
        "served before any fetch"
    );
    let agent = d.start(&f);
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = d.status();
        if st["source"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
        {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "no fetch error in status:\n{st:#}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("git down: {}", s(&st["source"]["error"]));
    assert_eq!(get(port, "team-a", "/a").body, "kept");
}

#[test]
fn plan_rollback_suspend_and_the_control_socket() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "one")], &[("/b", "b1")], ["", ""]);
    o.commit_push("one", None);
    let d = Dirs::new();
    let url = o.file_url();
    let f = flags(&url, &[]);
    assert_eq!(d.once(&f).0, 0);
    let _gw = d.gateway(true);
    let first = d.current();

    // The appliance speaks a versioned protocol.
    let mut sock = UnixStream::connect(&d.socket).expect("control socket");
    writeln!(
        sock,
        r#"{{"version":2,"kind":"apply","release":"x","revision":"y"}}"#
    )
    .expect("send");
    let mut line = String::new();
    BufReader::new(&sock).read_line(&mut line).expect("reply");
    let reply: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(reply["ok"], false);
    assert!(s(&reply["error"]).contains("version 2"), "{reply}");

    // plan shows the change and publishes nothing.
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "two"), ("/extra", "x")]),
    );
    o.commit_push("two", None);
    let out = d.command(Some("plan"), &f).output().expect("plan");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("team-a: would apply: 1 added, 0 removed, 1 changed"),
        "{text}"
    );
    assert!(
        text.contains("team-b: would apply: 0 added, 0 removed, 0 changed"),
        "{text}"
    );
    assert_eq!(d.current(), first);

    assert_eq!(d.once(&f).0, 0);
    wait_body(port, "team-a", "/extra", "x", Duration::from_secs(5));

    // Roll back: the earlier release serves, and syncing stops until resume.
    let (code, out, err) = d.cli(&["rollback"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(d.current(), first);
    wait_body(port, "team-a", "/a", "one", Duration::from_secs(5));
    let (code, out) = d.once(&f);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("suspended"), "{out}");
    assert_eq!(d.cli(&["resume"]).0, 0);
    assert_eq!(d.once(&f).0, 0);
    wait_body(port, "team-a", "/a", "two", Duration::from_secs(5));

    // A suspended tenant's changes wait.
    assert_eq!(d.cli(&["suspend", "team-a"]).0, 0);
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "three")]),
    );
    o.commit_push("three", None);
    assert_eq!(d.once(&f).0, 0);
    assert_eq!(s(&d.status()["tenants"]["team-a"]["state"]), "suspended");
    assert_eq!(get(port, "team-a", "/a").body, "two");
    assert_eq!(d.cli(&["resume", "team-a"]).0, 0);
    assert_eq!(d.once(&f).0, 0);
    wait_body(port, "team-a", "/a", "three", Duration::from_secs(5));

    let (code, json, _) = d.cli(&["status", "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("status json");
    assert_eq!(s(&v["revision"]), o.head());
}

#[test]
fn a_release_an_appliance_refuses_is_rolled_back() {
    let o = Origin::new();
    let port = free_port();
    seed(&o, port, &[("/a", "one")], &[("/b", "b1")], ["", ""]);
    o.commit_push("one", None);
    let d = Dirs::new();
    let f = flags(&o.file_url(), &[]);
    assert_eq!(d.once(&f).0, 0);
    let first = d.current();

    // A stand-in appliance that refuses everything.
    let l = UnixListener::bind(&d.socket).expect("bind");
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (c, _) = l.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(&c).read_line(&mut line).expect("read");
            let mut c = c;
            writeln!(
                c,
                r#"{{"version":1,"ok":false,"error":"compile failed: test refusal"}}"#
            )
            .expect("reply");
        }
    });
    o.write(
        "tenants/team-a/routes.yaml",
        &routes_doc("team-a", &[("/a", "two")]),
    );
    let two = o.commit_push("two", None);
    let (code, out) = d.once(&f);
    server.join().expect("server");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("test refusal"), "{out}");
    assert_eq!(d.current(), first, "current is rolled back");
    let st = d.status();
    assert_eq!(s(&st["refused"]["revision"]), two);
    // The same commit is not retried.
    let (code, out) = d.once(&f);
    assert_eq!(code, 1);
    assert!(out.contains("not retried"), "{out}");
}
