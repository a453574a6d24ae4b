//! Platform certificates given by file path, as Istio's file-mounted gateway certificates:
//! `serverCertificate`, `privateKey`, `caCertificates` and `caCrl` on a Gateway, and
//! `caCertificates` with `caCrl` on a DestinationRule. Each file is read by its own name,
//! wherever it lies, and re-read when it changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::certs::{Ca, Leaf};
use crate::harness::tools::{Curl, Reply};
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, wait_for};

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, text).expect("write");
    p
}

/// A platform Gateway, VirtualService and ServiceEntry serving `portal.example.com` on 443.
fn portal(tls: &str, backend: u16, upstream: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: portal}}
spec:
  selector: {{istio: public-gw}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [portal.example.com]
    tls: {tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: portal}}
spec:
  hosts: [portal.example.com]
  gateways: [portal]
  http:
  - match: [{{uri: {{prefix: /upstream}}}}]
    route: [{{destination: {{host: upstream.platform.internal}}}}]
  - route: [{{destination: {{host: app.platform.internal}}}}]
---
{app}{upstream}"#,
        app = service("app", "app.platform.internal", &[(backend, "")]),
    )
}

fn curl_as(port: u16, dir: &Path, client: Option<&str>, path: &str) -> Reply {
    let mut c =
        Curl::new(&format!("https://portal.example.com:{port}{path}")).cacert(&dir.join("ca.pem"));
    if let Some(who) = client {
        c = c
            .arg("--cert")
            .arg(&dir.join(format!("{who}.crt")).display().to_string())
            .arg("--key")
            .arg(&dir.join(format!("{who}.key")).display().to_string());
    }
    c.run()
}

/// One request over `openssl s_client` as `who`, saving the session to `out` or resuming
/// the one in `resume`: (whether the session was resumed, whether the request got 200).
fn openssl_get(
    port: u16,
    dir: &Path,
    who: &str,
    resume: Option<&Path>,
    out: Option<&Path>,
) -> (bool, bool) {
    use std::io::Write;
    let mut c = std::process::Command::new("openssl");
    c.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "portal.example.com", "-ign_eof"])
        .arg("-CAfile")
        .arg(dir.join("ca.pem"))
        .arg("-cert")
        .arg(dir.join(format!("{who}.crt")))
        .arg("-key")
        .arg(dir.join(format!("{who}.key")));
    if let Some(r) = resume {
        c.arg("-sess_in").arg(r);
    }
    if let Some(o) = out {
        c.arg("-sess_out").arg(o);
    }
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"GET / HTTP/1.1\r\nHost: portal.example.com\r\nConnection: close\r\n\r\n")
        .expect("write request");
    let out = child.wait_with_output().expect("openssl output");
    let text = String::from_utf8_lossy(&out.stdout);
    (text.contains("Reused,"), text.contains("HTTP/1.1 200"))
}

fn write_client(dir: &Path, name: &str, leaf: &Leaf) {
    write(dir, &format!("{name}.crt"), &leaf.cert);
    write(dir, &format!("{name}.key"), &leaf.key);
}

#[test]
fn file_certificates_serve_mutual_tls_with_a_crl_and_check_upstreams_against_theirs() {
    let ca = Ca::new("platform CA");
    let upstream_ca = Ca::new("upstream CA");
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    write(d, "ca.pem", &ca.pem);
    // Names and folders as an operator lays them out, none of them tls.crt/tls.key/ca.crt.
    let server = ca.server(&["portal.example.com"], 0x9100);
    let cert = write(d, "etc/certs/portal.pem", &server.cert);
    let key = write(d, "etc/private/portal-key.pem", &server.key);
    let clients_ca = write(d, "etc/clients/bundle.pem", &ca.pem);
    let crl = write(d, "etc/clients/revoked.pem", &ca.crl(&[0x9102]));
    write_client(d, "alice", &ca.client("alice.client.example", 0x9101));
    write_client(d, "mallory", &ca.client("mallory.client.example", 0x9102));

    // Two TLS upstreams from another CA; the second one's certificate is revoked.
    let be = Backends::new();
    let (app, good_up, revoked_up) = (free_port(), free_port(), free_port());
    be.http("app", app);
    let good = upstream_ca.server(&["upstream.internal"], 0x9201);
    let revoked = upstream_ca.server(&["upstream.internal"], 0x9202);
    be.tls_http("good-upstream", good_up, &good.cert, &good.key);
    be.tls_http("revoked-upstream", revoked_up, &revoked.cert, &revoked.key);
    let up_ca = write(d, "etc/upstream/ca.pem", &upstream_ca.pem);
    let up_crl = write(d, "etc/upstream/crl.pem", &upstream_ca.crl(&[0x9202]));
    let upstream = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: upstream}}\nspec:\n  host: upstream.platform.internal\n  trafficPolicy:\n    loadBalancer: {{simple: ROUND_ROBIN}}\n    connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}\n    tls: {{mode: SIMPLE, sni: upstream.internal, caCertificates: \"{}\", caCrl: \"{}\"}}\n---\n",
        service(
            "upstream",
            "upstream.platform.internal",
            &[(good_up, ""), (revoked_up, "")]
        ),
        up_ca.display(),
        up_crl.display()
    );

    let tls = format!(
        "{{mode: MUTUAL, serverCertificate: \"{}\", privateKey: \"{}\", caCertificates: \"{}\", caCrl: \"{}\"}}",
        cert.display(),
        key.display(),
        clients_ca.display(),
        crl.display()
    );
    let port = free_port();
    let repo = Repo::new();
    repo.write("gatehouse.yaml", &platform(&[(443, port)], ""));
    repo.write("platform/portal.yaml", &portal(&tls, app, &upstream));
    let creds = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(&repo, creds.path());

    // The server certificate came from portal.pem, the client CA from bundle.pem.
    let r = curl_as(port, d, Some("alice"), "/");
    assert_eq!((r.status, r.backend().as_str()), (200, "app"), "{r:?}");
    // Mallory's certificate is from the same CA, but revoked.pem lists it.
    let r = curl_as(port, d, Some("mallory"), "/");
    assert_eq!(r.status, 0, "a revoked client: {r:?}");
    let r = curl_as(port, d, None, "/");
    assert_eq!(r.status, 0, "no client certificate: {r:?}");

    // Upstreams: the revoked one fails the handshake (503, never plaintext), so of four
    // requests in turn two reach the good one and two fail.
    let statuses: Vec<(u16, String)> = (0..4)
        .map(|_| {
            let r = curl_as(port, d, Some("alice"), "/upstream");
            (r.status, r.backend())
        })
        .collect();
    let ok = statuses.iter().filter(|s| s.0 == 200).count();
    assert!(
        statuses
            .iter()
            .all(|s| s.0 != 200 || s.1 == "good-upstream"),
        "{statuses:?}"
    );
    assert!(ok >= 1, "{statuses:?}");
    assert_eq!(be.counters.get("revoked-upstream"), 0, "{statuses:?}");

    // The upstream CRL is watched too: once it revokes the good upstream as well, new
    // connections (one per request here) are refused, without a reload.
    std::fs::write(&up_crl, upstream_ca.crl(&[0x9201, 0x9202])).expect("rewrite upstream crl");
    wait_for(
        "the good upstream refused after its CRL changed",
        Duration::from_secs(20),
        || (curl_as(port, d, Some("alice"), "/upstream").status == 503).then_some(()),
    );

    // Alice keeps a TLS session, and can resume it.
    let session = d.join("alice.session");
    assert_eq!(
        openssl_get(port, d, "alice", None, Some(&session)),
        (false, true)
    );
    assert_eq!(
        openssl_get(port, d, "alice", Some(&session), None),
        (true, true),
        "a resumed session while nothing changed"
    );

    // Revoking Alice too is a file write: the next handshakes refuse her, no reload.
    std::fs::write(&crl, ca.crl(&[0x9101, 0x9102])).expect("rewrite crl");
    wait_for(
        "alice refused after the CRL changed",
        Duration::from_secs(20),
        || (curl_as(port, d, Some("alice"), "/").status == 0).then_some(()),
    );
    // Her saved session does not get her in either: a resumed session skips the
    // certificate check, so it ends with the CRL it began under.
    assert_eq!(
        openssl_get(port, d, "alice", Some(&session), None),
        (false, false),
        "the session from before the revocation"
    );

    // An emptied CRL file (a rewrite caught half-way, or a mistake) does not turn revocation
    // off: the last lists stay, and /status says why.
    std::fs::write(&crl, "").expect("empty crl");
    wait_for("the empty CRL reported", Duration::from_secs(20), || {
        gw.status()
            .to_string()
            .contains("the CRL file held CRLs and is empty now")
            .then_some(())
    });
    let r = curl_as(port, d, Some("mallory"), "/");
    assert_eq!(r.status, 0, "still revoked: {r:?}");
}
