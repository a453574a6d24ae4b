//! TLS termination end to end: curl and openssl against HTTPS servers whose certificates come
//! from `<credentials>/<tenant>/<credentialName>/`, SNI choosing the certificate, MUTUAL
//! with client certificates, `subjectAltNames`, and `minProtocolVersion`.

use std::path::{Path, PathBuf};

use crate::harness::certs::{Ca, Leaf, write_credential};
use crate::harness::tools::{Curl, Reply, served_subject};
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant};
use crate::protocol::wait_listening;

/// A gateway on one HTTPS port, its backends, and the files the clients use.
struct Fx {
    _repo: Repo,
    dir: tempfile::TempDir,
    _be: Backends,
    _gw: Gateway,
    port: u16,
}

impl Fx {
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    /// A file next to the credentials (client certificates, the CA for curl).
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// curl trusting the test CA.
    fn curl(&self, host: &str, path: &str) -> Curl {
        Curl::new(&self.url(host, path)).cacert(&self.file("ca.pem"))
    }

    /// curl presenting the client certificate written as `<name>.crt`/`<name>.key`.
    fn curl_as(&self, client: &str, host: &str, path: &str) -> Curl {
        self.curl(host, path)
            .arg("--cert")
            .arg(&self.file(&format!("{client}.crt")).display().to_string())
            .arg("--key")
            .arg(&self.file(&format!("{client}.key")).display().to_string())
    }
}

/// One HTTPS server entry of a Gateway.
struct Server<'a> {
    /// Port name (unique in the Gateway).
    name: &'a str,
    host: &'a str,
    /// The `tls` block, flow style.
    tls: &'a str,
}

/// A tenant: its hosts, its HTTPS servers (one Gateway), and one echo backend per host named
/// after the host's first label.
struct TenantSpec<'a> {
    name: &'a str,
    servers: &'a [Server<'a>],
}

fn write_pem(dir: &Path, name: &str, leaf: &Leaf) {
    std::fs::write(dir.join(format!("{name}.crt")), &leaf.cert).expect("write cert");
    std::fs::write(dir.join(format!("{name}.key")), &leaf.key).expect("write key");
}

/// The SHA-256 of a PEM certificate's DER, lower-case hex, as openssl computes it.
fn sha256_fingerprint(pem: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().rsplit('=').next().unwrap_or_default();
    hex.replace(':', "").to_ascii_lowercase()
}

/// Starts a gateway serving `tenants` on one HTTPS port. `creds` writes the credential
/// folders (it gets the credentials root and the scratch directory for client files).
fn fixture(tenants: &[TenantSpec<'_>], ca: &Ca, creds: impl FnOnce(&Path, &Path)) -> Fx {
    let port = free_port();
    let be = Backends::new();
    let repo = Repo::new();
    let dir = tempfile::tempdir().expect("tmp");
    let cred_root = dir.path().join("credentials");
    std::fs::create_dir_all(&cred_root).expect("mkdir");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write ca");
    creds(&cred_root, dir.path());

    let mut registry = String::new();
    for t in tenants {
        let hosts: Vec<&str> = t.servers.iter().map(|s| s.host).collect();
        registry.push_str(&tenant(t.name, &hosts, ""));
        let mut gw = String::from(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: https}\nspec:\n  selector: {istio: public-gw}\n  servers:\n",
        );
        let mut rest = String::new();
        for s in t.servers {
            gw.push_str(&format!(
                "  - port: {{number: 443, name: {}, protocol: HTTPS}}\n    hosts: [\"{}\"]\n    tls: {}\n",
                s.name, s.host, s.tls
            ));
            let label = s.host.split('.').next().expect("label");
            let bp = free_port();
            be.http(label, bp);
            let svc_host = format!("{label}.{}.internal", t.name);
            rest.push_str(&service(label, &svc_host, &[(bp, "")]));
            rest.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {label}}}\nspec:\n  hosts: [\"{}\"]\n  gateways: [https]\n  http:\n  - route: [{{destination: {{host: {svc_host}}}}}]\n---\n",
                s.host
            ));
        }
        repo.write(&format!("tenants/{}/gateway.yaml", t.name), &gw);
        repo.write(&format!("tenants/{}/routes.yaml", t.name), &rest);
    }
    repo.write("gatehouse.yaml", &platform(&[(443, port)], &registry));
    let gw = Gateway::start(&repo, &cred_root);
    wait_listening(&[port]);
    Fx {
        _repo: repo,
        dir,
        _be: be,
        _gw: gw,
        port,
    }
}

/// A handshake failure as curl reports it: no HTTP response, and exit 35 (handshake). With
/// TLS 1.3 the client finishes its side of the handshake before the server checks the client
/// certificate, so the server's alert may instead surface while curl sends its request (55)
/// or reads the response (56). 98 is curl's name for the server's `certificate_required`
/// alert.
fn assert_refused(r: &Reply, what: &str) {
    assert_eq!(r.status, 0, "{what}: expected no HTTP response, got {r:?}");
    assert!(
        [35, 55, 56, 98].contains(&r.exit),
        "{what}: expected curl exit 35, 55, 56 or 98, got {r:?}"
    );
}

#[test]
fn https_simple_routes_and_sni_chooses_each_hosts_certificate() {
    let ca = Ca::new("gatehouse test CA");
    let fx = fixture(
        &[
            TenantSpec {
                name: "team-a",
                servers: &[Server {
                    name: "https-web",
                    host: "web.example.com",
                    tls: "{mode: SIMPLE, credentialName: web-cert}",
                }],
            },
            TenantSpec {
                name: "team-b",
                servers: &[Server {
                    name: "https-shop",
                    host: "shop.example.com",
                    tls: "{mode: SIMPLE, credentialName: shop-cert}",
                }],
            },
        ],
        &ca,
        |root, _| {
            write_credential(
                &root.join("team-a/web-cert"),
                &ca.server(&["web.example.com"], 0x1001),
                None,
            );
            write_credential(
                &root.join("team-b/shop-cert"),
                &ca.server(&["shop.example.com"], 0x2002),
                None,
            );
        },
    );

    // curl verifies the chain and the name against the test CA and reaches each host's backend.
    let r = fx.curl("web.example.com", "/hello?x=1").run();
    assert_eq!((r.status, r.exit), (200, 0), "{r:?}");
    assert_eq!(r.backend(), "web");
    let j = r.json();
    assert_eq!(j["path"], "/hello?x=1");
    assert_eq!(j["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        j["headers"]["host"],
        format!("web.example.com:{}", fx.port).as_str()
    );
    let r = fx.curl("shop.example.com", "/").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "shop"), "{r:?}");

    // SNI picks the certificate: each host gets its own subject and serial.
    let web = served_subject(fx.port, "web.example.com", &[]).expect("web certificate");
    assert!(
        web.contains("web.example.com") && web.contains("serial=1001"),
        "{web}"
    );
    let shop = served_subject(fx.port, "shop.example.com", &[]).expect("shop certificate");
    assert!(
        shop.contains("shop.example.com") && shop.contains("serial=2002"),
        "{shop}"
    );

    // An SNI no chain serves: closed before any certificate is sent.
    assert_eq!(served_subject(fx.port, "nobody.example.com", &[]), None);
    let r = fx.curl("nobody.example.com", "/").run();
    assert_eq!(r.status, 0, "{r:?}");
    assert_ne!(r.exit, 0, "{r:?}");

    // The refused connections did not disturb the listener.
    let r = fx.curl("web.example.com", "/after").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca_and_an_allowed_san() {
    let ca = Ca::new("gatehouse test CA");
    let rogue = Ca::new("some other CA");
    let fx = fixture(
        &[TenantSpec {
            name: "team-a",
            servers: &[
                Server {
                    name: "https-partner",
                    host: "partner.example.com",
                    tls: "{mode: MUTUAL, credentialName: partner-cert}",
                },
                Server {
                    name: "https-strict",
                    host: "strict.example.com",
                    tls: "{mode: MUTUAL, credentialName: strict-cert, subjectAltNames: [allowed.client.example]}",
                },
            ],
        }],
        &ca,
        |root, scratch| {
            write_credential(
                &root.join("team-a/partner-cert"),
                &ca.server(&["partner.example.com"], 0x3003),
                Some(&ca.pem),
            );
            write_credential(
                &root.join("team-a/strict-cert"),
                &ca.server(&["strict.example.com"], 0x4004),
                Some(&ca.pem),
            );
            write_pem(scratch, "client", &ca.client("client.example", 0x5005));
            write_pem(scratch, "rogue", &rogue.client("client.example", 0x6006));
            write_pem(
                scratch,
                "allowed",
                &ca.client("allowed.client.example", 0x7007),
            );
            write_pem(scratch, "other", &ca.client("other.client.example", 0x8008));
        },
    );

    // A certificate signed by the CA in ca.crt: admitted.
    let r = fx.curl_as("client", "partner.example.com", "/").run();
    assert_eq!((r.status, r.exit), (200, 0), "{r:?}");
    assert_eq!(r.backend(), "partner");
    // The backend is told which certificate the client presented, as an Istio gateway tells
    // it (x-forwarded-client-cert, SANITIZE_SET); a client's own copy is dropped.
    let r = fx
        .curl_as("client", "partner.example.com", "/")
        .header("x-forwarded-client-cert: Hash=00;Subject=\"CN=admin\"")
        .run();
    assert_eq!(
        r.json()["headers"]["x-forwarded-client-cert"],
        format!(
            "Hash={};Subject=\"CN=client.example\";URI=;DNS=client.example",
            sha256_fingerprint(&fx.file("client.crt"))
        ),
        "{r:?}"
    );
    // No client certificate, or one from another CA: the handshake fails.
    assert_refused(
        &fx.curl("partner.example.com", "/").run(),
        "without a client certificate",
    );
    assert_refused(
        &fx.curl_as("rogue", "partner.example.com", "/").run(),
        "with a certificate from another CA",
    );
    // Over TLS 1.2 too (the refusal is then inside the handshake proper).
    let r = fx
        .curl("partner.example.com", "/")
        .arg("--tls-max")
        .arg("1.2")
        .run();
    assert_refused(&r, "without a client certificate over TLS 1.2");

    // subjectAltNames: the CA is not enough, the certificate must carry an allowed name.
    let r = fx.curl_as("allowed", "strict.example.com", "/").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "strict"), "{r:?}");
    assert_refused(
        &fx.curl_as("other", "strict.example.com", "/").run(),
        "a certificate without the allowed SAN",
    );
    assert_refused(
        &fx.curl_as("client", "strict.example.com", "/").run(),
        "a certificate without the allowed SAN",
    );
    // The server without subjectAltNames takes that same certificate.
    let r = fx.curl_as("other", "partner.example.com", "/").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "partner"), "{r:?}");
}

#[test]
fn optional_mutual_admits_clients_without_a_certificate_and_checks_those_with_one() {
    let ca = Ca::new("gatehouse test CA");
    let rogue = Ca::new("some other CA");
    let fx = fixture(
        &[TenantSpec {
            name: "team-a",
            servers: &[Server {
                name: "https-optional",
                host: "optional.example.com",
                tls: "{mode: OPTIONAL_MUTUAL, credentialName: optional-cert}",
            }],
        }],
        &ca,
        |root, scratch| {
            write_credential(
                &root.join("team-a/optional-cert"),
                &ca.server(&["optional.example.com"], 0x9009),
                Some(&ca.pem),
            );
            write_pem(scratch, "client", &ca.client("client.example", 0x900a));
            write_pem(scratch, "rogue", &rogue.client("client.example", 0x900b));
        },
    );
    let r = fx
        .curl("optional.example.com", "/")
        .header("x-forwarded-client-cert: Hash=00;Subject=\"CN=admin\"")
        .run();
    assert_eq!((r.status, r.backend().as_str()), (200, "optional"), "{r:?}");
    // No certificate presented: a client's claim to one does not reach the backend.
    assert!(
        r.json()["headers"].get("x-forwarded-client-cert").is_none(),
        "{r:?}"
    );
    let r = fx.curl_as("client", "optional.example.com", "/").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "optional"), "{r:?}");
    assert_refused(
        &fx.curl_as("rogue", "optional.example.com", "/").run(),
        "a certificate from another CA, presented",
    );
}

/// team-a with two servers on one port: `host` with its own `tls` block and credential
/// `<host's first label>-cert` (serial `serial`), and web.example.com with plain SIMPLE
/// (serial `web_serial`).
fn beside_web(ca: &Ca, host: &str, tls: &str, serial: u64, web_serial: u64) -> Fx {
    let cred = format!("{}-cert", host.split('.').next().unwrap_or(host));
    let tls = tls.replace("{cred}", &cred);
    fixture(
        &[TenantSpec {
            name: "team-a",
            servers: &[
                Server {
                    name: "https-own",
                    host,
                    tls: &tls,
                },
                Server {
                    name: "https-web",
                    host: "web.example.com",
                    tls: "{mode: SIMPLE, credentialName: web-cert}",
                },
            ],
        }],
        ca,
        |root, _| {
            write_credential(
                &root.join(format!("team-a/{cred}")),
                &ca.server(&[host], serial),
                None,
            );
            write_credential(
                &root.join("team-a/web-cert"),
                &ca.server(&["web.example.com"], web_serial),
                None,
            );
        },
    )
}

#[test]
fn min_protocol_version_tls13_refuses_tls12_per_server() {
    let ca = Ca::new("gatehouse test CA");
    let fx = beside_web(
        &ca,
        "modern.example.com",
        "{mode: SIMPLE, credentialName: {cred}, minProtocolVersion: TLSV1_3}",
        0x1313,
        0x1212,
    );

    // TLS 1.2 at most: refused by the TLS 1.3-only server.
    let r = fx
        .curl("modern.example.com", "/")
        .arg("--tls-max")
        .arg("1.2")
        .run();
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(r.exit, 35, "{r:?}");
    assert_eq!(
        served_subject(fx.port, "modern.example.com", &["-tls1_2"]),
        None
    );
    // TLS 1.3: accepted.
    let r = fx.curl("modern.example.com", "/").arg("--tlsv1.3").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "modern"), "{r:?}");
    let s = served_subject(fx.port, "modern.example.com", &["-tls1_3"]).expect("TLS 1.3");
    assert!(s.contains("serial=1313"), "{s}");
    // The other server on the same port keeps accepting TLS 1.2.
    let r = fx
        .curl("web.example.com", "/")
        .arg("--tls-max")
        .arg("1.2")
        .run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
    let s = served_subject(fx.port, "web.example.com", &["-tls1_2"]).expect("TLS 1.2");
    assert!(s.contains("serial=1212"), "{s}");
}

/// What `openssl s_client` negotiated with the server for `sni`: the cipher, or `None` when
/// the handshake failed.
fn negotiated_cipher(port: u16, sni: &str, extra: &[&str]) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", sni])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    // "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384"; "New, (NONE), Cipher is
    // (NONE)" when the handshake failed.
    text.lines()
        .find_map(|l| l.split_once("Cipher is ").map(|(_, c)| c.trim()))
        .map(str::to_string)
        .filter(|c| c != "(NONE)" && c != "0000")
}

#[test]
fn cipher_suites_limit_tls12_per_server_and_leave_tls13_alone() {
    let ca = Ca::new("gatehouse test CA");
    let fx = beside_web(
        &ca,
        "strict.example.com",
        "{mode: SIMPLE, credentialName: {cred}, cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]}",
        0x5151,
        0x5252,
    );
    let tls12 =
        |sni: &str, cipher: &str| negotiated_cipher(fx.port, sni, &["-tls1_2", "-cipher", cipher]);
    // The listed suite is negotiated; one left out is refused, even if the client offers
    // nothing else.
    assert_eq!(
        tls12("strict.example.com", "ECDHE-ECDSA-AES256-GCM-SHA384").as_deref(),
        Some("ECDHE-ECDSA-AES256-GCM-SHA384")
    );
    assert_eq!(
        tls12("strict.example.com", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        None
    );
    assert_eq!(
        tls12("strict.example.com", "ECDHE-ECDSA-CHACHA20-POLY1305"),
        None
    );
    // Offered everything, the client gets the one suite.
    assert_eq!(
        negotiated_cipher(fx.port, "strict.example.com", &["-tls1_2"]).as_deref(),
        Some("ECDHE-ECDSA-AES256-GCM-SHA384")
    );
    // TLS 1.3 suites are not filtered (as in Envoy).
    assert_eq!(
        negotiated_cipher(
            fx.port,
            "strict.example.com",
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"]
        )
        .as_deref(),
        Some("TLS_AES_128_GCM_SHA256")
    );
    // The other server on the same port keeps the default list.
    assert_eq!(
        tls12("web.example.com", "ECDHE-ECDSA-AES128-GCM-SHA256").as_deref(),
        Some("ECDHE-ECDSA-AES128-GCM-SHA256")
    );
    // And requests go through on the restricted server.
    let r = fx
        .curl("strict.example.com", "/")
        .arg("--tls-max")
        .arg("1.2")
        .run();
    assert_eq!((r.status, r.backend().as_str()), (200, "strict"), "{r:?}");
}

#[test]
fn credential_names_serve_ecdsa_to_clients_that_take_it_and_rsa_to_the_rest() {
    let ca = Ca::new("gatehouse test CA");
    let fx = fixture(
        &[TenantSpec {
            name: "team-a",
            servers: &[
                Server {
                    name: "https-web",
                    host: "web.example.com",
                    tls: "{mode: SIMPLE, credentialNames: [web-rsa, web-ecdsa]}",
                },
                Server {
                    name: "https-legacy",
                    host: "legacy.example.com",
                    tls: "{mode: SIMPLE, credentialNames: [legacy-rsa, legacy-ecdsa], maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}",
                },
            ],
        }],
        &ca,
        |root, _| {
            write_credential(
                &root.join("team-a/legacy-rsa"),
                &ca.server_rsa(&["legacy.example.com"], 0x7003),
                None,
            );
            write_credential(
                &root.join("team-a/legacy-ecdsa"),
                &ca.server(&["legacy.example.com"], 0x7004),
                None,
            );
            write_credential(
                &root.join("team-a/web-rsa"),
                &ca.server_rsa(&["web.example.com"], 0x7001),
                None,
            );
            write_credential(
                &root.join("team-a/web-ecdsa"),
                &ca.server(&["web.example.com"], 0x7002),
                None,
            );
        },
    );
    let served = |extra: &[&str]| served_subject(fx.port, "web.example.com", extra);
    // A client that verifies both gets the ECDSA certificate, though it is listed second.
    let s = served(&[]).expect("default client");
    assert!(s.contains("serial=7002"), "{s}");
    // A client that signs only with RSA gets the RSA one, over TLS 1.3 and TLS 1.2 both.
    for v in ["-tls1_3", "-tls1_2"] {
        let s = served(&[v, "-sigalgs", "rsa_pss_rsae_sha256:RSA+SHA256"]).expect("RSA client");
        assert!(s.contains("serial=7001"), "{v}: {s}");
    }
    // TLS 1.2 with only ECDHE-RSA suites: RSA too, even though ECDSA signatures are offered.
    let s = served(&["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]).expect("RSA suites");
    assert!(s.contains("serial=7001"), "{s}");
    assert_eq!(
        negotiated_cipher(
            fx.port,
            "web.example.com",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]
        )
        .as_deref(),
        Some("ECDHE-RSA-AES128-GCM-SHA256")
    );
    let s = served(&["-tls1_2", "-sigalgs", "ECDSA+SHA256"]).expect("ECDSA client");
    assert!(s.contains("serial=7002"), "{s}");
    // And requests go through with either.
    let r = fx.curl("web.example.com", "/").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
    let r = fx
        .curl("web.example.com", "/")
        .arg("--tls-max")
        .arg("1.2")
        .arg("--ciphers")
        .arg("ECDHE-RSA-AES128-GCM-SHA256")
        .run();
    assert_eq!((r.status, r.backend().as_str()), (200, "web"), "{r:?}");
    // A server capped at TLS 1.2 with RSA suites only: a client that also speaks TLS 1.3
    // (whose suites suit any key) still gets the RSA certificate, the one it can use here.
    let s = served_subject(fx.port, "legacy.example.com", &[]).expect("legacy server");
    assert!(s.contains("serial=7003"), "{s}");
    let r = fx.curl("legacy.example.com", "/").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "legacy"), "{r:?}");
}

/// What a platform engineer pastes into `verifyCertificateSpki` for `cert_pem`: the base64
/// SHA-256 of its public key, computed by openssl.
fn spki_pin(cert_pem: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl enc -base64",
            cert_pem.display()
        ))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What `openssl x509 -fingerprint -sha256` prints for `cert_pem`: colon-separated upper-case
/// hex.
fn colon_fingerprint(cert_pem: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert_pem)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn client_certificate_pins_admit_only_the_pinned_clients_of_the_ca() {
    let ca = Ca::new("gatehouse test CA");
    let pem_dir = tempfile::tempdir().expect("tmp");
    let (alice, bob, carol) = (
        ca.client("alice.client.example", 0x8101),
        ca.client("bob.client.example", 0x8102),
        ca.client("carol.client.example", 0x8103),
    );
    for (name, leaf) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        write_pem(pem_dir.path(), name, leaf);
    }
    // Alice by her certificate's fingerprint as openssl prints it, Bob by his key.
    let alice_hash = colon_fingerprint(&pem_dir.path().join("alice.crt"));
    let bob_spki = spki_pin(&pem_dir.path().join("bob.crt"));
    let bob_hash = sha256_fingerprint(&pem_dir.path().join("bob.crt"));
    let pinned = format!(
        "{{mode: MUTUAL, credentialName: pinned-cert, verifyCertificateHash: [\"{alice_hash}\"], verifyCertificateSpki: [\"{bob_spki}\"]}}"
    );
    let by_hash = format!(
        "{{mode: MUTUAL, credentialName: hashed-cert, verifyCertificateHash: [\"{bob_hash}\"]}}"
    );
    let fx = fixture(
        &[TenantSpec {
            name: "team-a",
            servers: &[
                Server {
                    name: "https-pinned",
                    host: "pinned.example.com",
                    tls: &pinned,
                },
                Server {
                    name: "https-hashed",
                    host: "hashed.example.com",
                    tls: &by_hash,
                },
            ],
        }],
        &ca,
        |root, scratch| {
            for (cred, host, serial) in [
                ("pinned-cert", "pinned.example.com", 0x8201),
                ("hashed-cert", "hashed.example.com", 0x8202),
            ] {
                write_credential(
                    &root.join("team-a").join(cred),
                    &ca.server(&[host], serial),
                    Some(&ca.pem),
                );
            }
            for (name, leaf) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
                write_pem(scratch, name, leaf);
            }
        },
    );

    // Either list admits: Alice by hash, Bob by key. Carol has a certificate from the same
    // CA, but no pin names it.
    for who in ["alice", "bob"] {
        let r = fx.curl_as(who, "pinned.example.com", "/").run();
        assert_eq!(
            (r.status, r.backend().as_str()),
            (200, "pinned"),
            "{who}: {r:?}"
        );
    }
    assert_refused(
        &fx.curl_as("carol", "pinned.example.com", "/").run(),
        "an unpinned client of the CA",
    );
    assert_refused(
        &fx.curl("pinned.example.com", "/").run(),
        "no client certificate",
    );
    // The pins are the server's own: on the next server only Bob's hash is pinned.
    let r = fx.curl_as("bob", "hashed.example.com", "/").run();
    assert_eq!((r.status, r.backend().as_str()), (200, "hashed"), "{r:?}");
    assert_refused(
        &fx.curl_as("alice", "hashed.example.com", "/").run(),
        "Alice on the server that pins only Bob",
    );
}
