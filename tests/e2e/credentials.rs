//! Credentials end to end: rotation without restart and without a failed handshake, bad files
//! keep the last good certificate, CA rotation for MUTUAL, isolation between tenants.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::certs::{Ca, Leaf, write_credential};
use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant, wait_for};

/// The serial of the certificate a TLS handshake for `sni` gets, and the HTTP status of a GET.
async fn handshake(
    port: u16,
    sni: &str,
    ca_pem: &str,
    client: Option<&Leaf>,
) -> Result<(String, u16), String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let cfg = match client {
        Some(l) => {
            let certs = rustls_pki_types::CertificateDer::pem_slice_iter(l.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(l.key.as_bytes())
                .map_err(|e| e.to_string())?;
            b.with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())?
        }
        None => b.with_no_client_auth(),
    };
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let serial = {
        let (_, conn) = tls.get_ref();
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no certificate")?;
        let (_, x) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
        x.raw_serial_as_string()
            .replace(':', "")
            .trim_start_matches('0')
            .to_string()
    };
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response (read {} bytes)", buf.len()))?;
    Ok((serial, status))
}

struct Fx {
    repo: Repo,
    creds: tempfile::TempDir,
    _be: Backends,
    gw: Gateway,
    port: u16,
    ca: Ca,
}

impl Fx {
    fn cred_dir(&self, tenant: &str, name: &str) -> PathBuf {
        self.creds.path().join(tenant).join(name)
    }
}

fn https_gateway(name: &str, host: &str, mode: &str, cred: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 443, name: https-{name}, protocol: HTTPS}}\n    hosts: [\"{host}\"]\n    tls: {{mode: {mode}, credentialName: {cred}}}\n---\n"
    )
}

fn vs(name: &str, host: &str, gw: &str, dest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [{gw}]\n  http:\n  - route: [{{destination: {{host: {dest}}}}}]\n---\n"
    )
}

/// team-a serves a.example.com (mode_a) and team-b serves b.example.com (SIMPLE), both on 443.
fn fixture(mode_a: &str, write_b: bool) -> Fx {
    let (port, pa, pb) = (free_port(), free_port(), free_port());
    let be = Backends::new();
    be.http("a", pa);
    be.http("b", pb);
    let repo = Repo::new();
    let tenants =
        tenant("team-a", &["a.example.com"], "") + &tenant("team-b", &["b.example.com"], "");
    repo.write("gatehouse.yaml", &platform(&[(443, port)], &tenants));
    repo.write(
        "tenants/team-a/all.yaml",
        &(https_gateway("gw", "a.example.com", mode_a, "a-cert")
            + &service("a", "a.team-a.internal", &[(pa, "")])
            + &vs("a", "a.example.com", "gw", "a.team-a.internal")),
    );
    repo.write(
        "tenants/team-b/all.yaml",
        &(https_gateway("gw", "b.example.com", "SIMPLE", "b-cert")
            + &service("b", "b.team-b.internal", &[(pb, "")])
            + &vs("b", "b.example.com", "gw", "b.team-b.internal")),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("credentials test CA");
    write_credential(
        &creds.path().join("team-a/a-cert"),
        &ca.server(&["a.example.com"], 1),
        Some(&ca.pem),
    );
    if write_b {
        write_credential(
            &creds.path().join("team-b/b-cert"),
            &ca.server(&["b.example.com"], 2),
            None,
        );
    }
    let gw = Gateway::start(&repo, creds.path());
    Fx {
        repo,
        creds,
        _be: be,
        gw,
        port,
        ca,
    }
}

/// Writes a new certificate the way a given tool would.
fn rotate(dir: &Path, leaf: &Leaf, how: usize) {
    match how % 3 {
        // In place (cp, most scripts).
        0 => {
            std::fs::write(dir.join("tls.key"), &leaf.key).expect("key");
            std::fs::write(dir.join("tls.crt"), &leaf.cert).expect("crt");
        }
        // Write to a temporary name, then rename over (certbot, Vault Agent).
        1 => {
            std::fs::write(dir.join(".tls.key.tmp"), &leaf.key).expect("key");
            std::fs::write(dir.join(".tls.crt.tmp"), &leaf.cert).expect("crt");
            std::fs::rename(dir.join(".tls.key.tmp"), dir.join("tls.key")).expect("rename");
            std::fs::rename(dir.join(".tls.crt.tmp"), dir.join("tls.crt")).expect("rename");
        }
        // Kubernetes projected volumes: files are links into ..data, a link swapped atomically.
        _ => {
            let stamp = format!("..{}", std::process::id() as u64 * 1000 + how as u64);
            let target = dir.join(&stamp);
            std::fs::create_dir_all(&target).expect("mkdir");
            std::fs::write(target.join("tls.key"), &leaf.key).expect("key");
            std::fs::write(target.join("tls.crt"), &leaf.cert).expect("crt");
            if let Ok(ca) = std::fs::read(dir.join("ca.crt")) {
                std::fs::write(target.join("ca.crt"), ca).expect("ca");
            }
            let tmp = dir.join("..data_tmp");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&stamp, &tmp).expect("symlink");
            std::fs::rename(&tmp, dir.join("..data")).expect("swap");
            for f in ["tls.key", "tls.crt", "ca.crt"] {
                let link = dir.join(f);
                let is_link =
                    std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink());
                if !is_link {
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(format!("..data/{f}"), &link).expect("link");
                }
            }
        }
    }
}

#[test]
fn fifty_rotations_under_a_handshake_loop_fail_nothing() {
    let fx = fixture("SIMPLE", true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let ca_pem = fx.ca.pem.clone();
    let loop_task = {
        let (stop, failures, done, seen, first_failure) = (
            stop.clone(),
            failures.clone(),
            done.clone(),
            seen.clone(),
            first_failure.clone(),
        );
        let port = fx.port;
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match handshake(port, "a.example.com", &ca_pem, None).await {
                    Ok((serial, 200)) => {
                        *seen.lock().expect("lock") = serial;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((_, s)) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_failure
                            .lock()
                            .expect("lock")
                            .get_or_insert(format!("status {s}"));
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_failure.lock().expect("lock").get_or_insert(e);
                    }
                }
            }
        })
    };
    let dir = fx.cred_dir("team-a", "a-cert");
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    for i in 0..50u64 {
        let serial = 100 + i;
        let leaf = fx.ca.server(&["a.example.com"], serial);
        let t = Instant::now();
        rotate(&dir, &leaf, i as usize);
        let want = format!("{serial:x}");
        wait_for(
            &format!("rotation {i} (serial {want}) to be served"),
            Duration::from_secs(2),
            || (*seen.lock().expect("lock") == want).then_some(()),
        );
        let took = t.elapsed();
        worst = worst.max(took);
        total += took;
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(loop_task).expect("loop");
    let f = failures.load(Ordering::Relaxed);
    assert_eq!(
        f,
        0,
        "failed handshakes or requests: {f}; first: {:?}",
        first_failure.lock().expect("lock")
    );
    let n = done.load(Ordering::Relaxed);
    assert!(n > 100, "too few handshakes: {n}");
    eprintln!(
        "50 rotations, {n} handshakes, 0 failures; new serial served after {:?} on average, {worst:?} at worst",
        total / 50
    );
    let st = fx.gw.status();
    let cred = st["credentials"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "team-a/a-cert"))
        .cloned()
        .expect("credential status");
    assert_eq!(
        cred["certificate"]["serial"]
            .as_str()
            .map(|s| s.trim_start_matches('0').to_string()),
        Some(format!("{:x}", 149))
    );
    assert!(cred["expires_in_seconds"].as_i64().is_some_and(|s| s > 0));
}

#[test]
fn garbage_keeps_the_last_good_certificate_and_a_fix_recovers() {
    let fx = fixture("SIMPLE", true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (serial, status) = rt
        .block_on(handshake(fx.port, "a.example.com", &fx.ca.pem, None))
        .expect("first handshake");
    assert_eq!((serial.as_str(), status), ("1", 200));
    let dir = fx.cred_dir("team-a", "a-cert");
    std::fs::write(dir.join("tls.crt"), "this is not a certificate\n").expect("write");
    let err = wait_for("error on /status", Duration::from_secs(5), || {
        let st = fx.gw.status();
        st["credentials"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "team-a/a-cert")?["error"]
            .as_str()
            .map(str::to_string)
    });
    assert!(err.contains("tls.crt"), "{err}");
    assert!(err.contains("no certificate found"), "{err}");
    // Still served: the last good certificate.
    let (serial, status) = rt
        .block_on(handshake(fx.port, "a.example.com", &fx.ca.pem, None))
        .expect("handshake after garbage");
    assert_eq!((serial.as_str(), status), ("1", 200));
    // A key that does not match its certificate is refused the same way.
    let other = fx.ca.server(&["a.example.com"], 7);
    std::fs::write(dir.join("tls.crt"), &other.cert).expect("write");
    let err = wait_for("mismatch error", Duration::from_secs(5), || {
        let st = fx.gw.status();
        let e = st["credentials"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "team-a/a-cert")?["error"]
            .as_str()?
            .to_string();
        e.contains("does not match").then_some(e)
    });
    assert!(err.contains("tls.key"), "{err}");
    // Writing a valid pair recovers without a restart.
    write_credential(&dir, &fx.ca.server(&["a.example.com"], 9), None);
    wait_for("recovery", Duration::from_secs(5), || {
        let (s, st) = rt
            .block_on(handshake(fx.port, "a.example.com", &fx.ca.pem, None))
            .ok()?;
        (s == "9" && st == 200).then_some(())
    });
}

#[test]
fn mutual_ca_rotation_switches_which_clients_pass() {
    let fx = fixture("MUTUAL", true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let old_client = fx.ca.client("old-client", 50);
    assert_eq!(
        rt.block_on(handshake(
            fx.port,
            "a.example.com",
            &fx.ca.pem,
            Some(&old_client)
        ))
        .map(|x| x.1),
        Ok(200)
    );
    assert!(
        rt.block_on(handshake(fx.port, "a.example.com", &fx.ca.pem, None))
            .is_err(),
        "no client certificate must fail"
    );
    let new_ca = Ca::new("rotated client CA");
    let new_client = new_ca.client("new-client", 51);
    std::fs::write(fx.cred_dir("team-a", "a-cert").join("ca.crt"), &new_ca.pem).expect("write ca");
    wait_for("new CA in force", Duration::from_secs(5), || {
        rt.block_on(handshake(
            fx.port,
            "a.example.com",
            &fx.ca.pem,
            Some(&new_client),
        ))
        .ok()
        .filter(|x| x.1 == 200)
    });
    assert!(
        rt.block_on(handshake(
            fx.port,
            "a.example.com",
            &fx.ca.pem,
            Some(&old_client)
        ))
        .is_err(),
        "old CA's client must now fail"
    );
}

#[test]
fn a_missing_or_broken_credential_affects_only_its_own_tenant() {
    let fx = fixture("SIMPLE", false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    // team-b's folder is missing: its host gets no certificate; team-a on the same port serves.
    assert!(
        rt.block_on(handshake(fx.port, "b.example.com", &fx.ca.pem, None))
            .is_err()
    );
    assert_eq!(
        rt.block_on(handshake(fx.port, "a.example.com", &fx.ca.pem, None))
            .map(|x| x.1),
        Ok(200)
    );
    let st = fx.gw.status();
    let b = st["credentials"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "team-b/b-cert"))
        .cloned()
        .expect("b status");
    assert!(
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("credential folder not found")),
        "{b}"
    );
    // Broken instead of missing: the same.
    let dir = fx.cred_dir("team-b", "b-cert");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("tls.crt"), "garbage").expect("w");
    std::fs::write(dir.join("tls.key"), "garbage").expect("w");
    wait_for("b error updated", Duration::from_secs(5), || {
        let st = fx.gw.status();
        st["credentials"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "team-b/b-cert")?["error"]
            .as_str()?
            .contains("tls.crt")
            .then_some(())
    });
    assert!(
        rt.block_on(handshake(fx.port, "b.example.com", &fx.ca.pem, None))
            .is_err()
    );
    assert_eq!(
        rt.block_on(handshake(fx.port, "a.example.com", &fx.ca.pem, None))
            .map(|x| x.1),
        Ok(200)
    );
    // Fixed: team-b serves, no restart.
    write_credential(&dir, &fx.ca.server(&["b.example.com"], 3), None);
    wait_for("team-b serving", Duration::from_secs(5), || {
        rt.block_on(handshake(fx.port, "b.example.com", &fx.ca.pem, None))
            .ok()
            .filter(|x| x.1 == 200)
    });
    let _ = Curl::new("http://unused:1/");
    let _ = &fx.repo;
}

#[test]
fn a_credential_cannot_escape_its_tenant_folder() {
    let fx = fixture("SIMPLE", true);
    // team-b points its folder at team-a's through a symbolic link.
    let b = fx.cred_dir("team-b", "b-cert");
    std::fs::remove_dir_all(&b).expect("rm");
    std::os::unix::fs::symlink(fx.cred_dir("team-a", "a-cert"), &b).expect("symlink");
    fx.repo.write("tenants/team-b/touch.yaml", "# reload\n");
    assert_eq!(fx.gw.reload().0, 200);
    let err = wait_for("escape refused", Duration::from_secs(5), || {
        let st = fx.gw.status();
        let e = st["credentials"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "team-b/b-cert")?["error"]
            .as_str()?
            .to_string();
        e.contains("outside").then_some(e)
    });
    assert!(err.contains("refused"), "{err}");
    // team-b keeps its last good certificate (serial 2), never team-a's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    assert_eq!(
        rt.block_on(handshake(fx.port, "b.example.com", &fx.ca.pem, None))
            .map(|x| x.0),
        Ok("2".to_string())
    );
}
