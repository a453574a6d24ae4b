//! `gatehouse demo`: serves the example repository with built-in backends on loopback and a
//! freshly generated test PKI, and prints the commands that show what it does.

use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// HTTP backends of examples/repo: (name, port).
const HTTP: &[(&str, u16)] = &[
    ("web-api-v1", 19001),
    ("web-api-v2", 19002),
    ("web-default", 19003),
    ("partner-api", 19004),
];
/// TCP echo backends: (name, port).
const TCP: &[(&str, u16)] = &[("tcp-echo-v1", 19101), ("tcp-echo-v2", 19102)];
/// TLS backends with their own certificates: (name, port, host).
const TLS: &[(&str, u16, &str)] = &[
    ("db", 19201, "db.example.com"),
    ("mq", 19202, "q1.mq.internal"),
    ("mysql", 19301, "mysql.data.internal"),
    ("kafka", 19302, "kafka.data.internal"),
];

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Files or sockets.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Certificate generation.
    #[error("certificate generation failed: {0}")]
    Pki(#[from] rcgen::Error),
}

/// The generated PKI.
pub struct Pki {
    /// Folder holding `ca.crt`, `client.crt`, `client.key` and `credentials/`.
    pub dir: PathBuf,
    tls_backends: Vec<(String, String)>,
}

fn write(p: &Path, s: &str) -> std::io::Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(p, s)
}

/// Generates the demo CA, the gateway credentials the example repository names, a client
/// certificate for the partner group, and the passthrough backends' own certificates.
pub fn pki(dir: &Path) -> Result<Pki, DemoError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "gatehouse demo CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate()?)?;
    let leaf = |cn: &str, names: &[&str]| -> Result<(String, String), DemoError> {
        let mut p =
            CertificateParams::new(names.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        let k = KeyPair::generate()?;
        let c = p.signed_by(&k, &ca)?;
        Ok((c.pem(), k.serialize_pem()))
    };
    let creds = dir.join("credentials");
    write(&dir.join("ca.crt"), &ca.pem())?;
    let (c, k) = leaf(
        "web.example.com",
        &["web.example.com", "secure.a.example.com"],
    )?;
    write(&creds.join("team-a/web-cert/tls.crt"), &c)?;
    write(&creds.join("team-a/web-cert/tls.key"), &k)?;
    let (c, k) = leaf("partner.example.com", &["partner.example.com"])?;
    write(&creds.join("team-b/partner-cert/tls.crt"), &c)?;
    write(&creds.join("team-b/partner-cert/tls.key"), &k)?;
    write(&creds.join("team-b/partner-cert/ca.crt"), &ca.pem())?;
    let (c, k) = leaf("partner-client", &["partner-client"])?;
    write(&dir.join("client.crt"), &c)?;
    write(&dir.join("client.key"), &k)?;
    let mut tls_backends = Vec::new();
    for (name, _, host) in TLS {
        tls_backends.push(leaf(&format!("{name} backend ({host})"), &[host])?);
    }
    Ok(Pki {
        dir: dir.to_path_buf(),
        tls_backends,
    })
}

async fn echo(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!(
        "{{\"backend\": \"{name}\", \"path\": \"{}\", \"host\": \"{}\"}}\n",
        req.uri().path(),
        req.headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert("x-backend", http::HeaderValue::from_static(name));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Starts the built-in backends on the current runtime.
pub async fn backends(pki: &Pki) -> Result<(), DemoError> {
    for (name, port) in HTTP {
        let l = TcpListener::bind(("127.0.0.1", *port)).await?;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), service_fn(move |r| echo(r, name)))
                        .await;
                });
            }
        });
    }
    for (name, port) in TCP {
        let l = TcpListener::bind(("127.0.0.1", *port)).await?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    for ((name, port, _), (cert, key)) in TLS.iter().zip(&pki.tls_backends) {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(std::io::Error::other)?;
        let cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind(("127.0.0.1", *port)).await?;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service_fn(move |r| echo(r, name)))
                        .await;
                });
            }
        });
    }
    Ok(())
}

/// The commands printed when the demo is up.
pub fn guide(pki: &Pki, admin: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let d = pki.dir.display();
    writeln!(
        out,
        "gatehouse demo is serving examples/repo on 127.0.0.1. Try:\n"
    )?;
    writeln!(
        out,
        "# host routing: web.example.com on the public group's port 80 (listening on 18080)"
    )?;
    writeln!(
        out,
        "curl -s --resolve web.example.com:18080:127.0.0.1 http://web.example.com:18080/"
    )?;
    writeln!(
        out,
        "\n# /api is split 70/30 between web-api-v2 and web-api-v1"
    )?;
    writeln!(
        out,
        "for i in $(seq 100); do curl -s --resolve web.example.com:18080:127.0.0.1 http://web.example.com:18080/api | grep -o 'web-api-v[12]'; done | sort | uniq -c"
    )?;
    writeln!(
        out,
        "\n# TLS terminated with team-a's certificate (SIMPLE), HTTP/2 by ALPN"
    )?;
    writeln!(
        out,
        "curl -s --http2 --cacert {d}/ca.crt --resolve web.example.com:18443:127.0.0.1 https://web.example.com:18443/api"
    )?;
    writeln!(
        out,
        "\n# the same port passes db.example.com through untouched: the backend's own certificate"
    )?;
    writeln!(
        out,
        "openssl s_client -connect 127.0.0.1:18443 -servername db.example.com </dev/null 2>/dev/null | grep subject="
    )?;
    writeln!(
        out,
        "\n# mutual TLS on the partner group: with and without a client certificate"
    )?;
    writeln!(
        out,
        "curl -s --cacert {d}/ca.crt --cert {d}/client.crt --key {d}/client.key --resolve partner.example.com:18444:127.0.0.1 https://partner.example.com:18444/"
    )?;
    writeln!(
        out,
        "curl -s --cacert {d}/ca.crt --resolve partner.example.com:18444:127.0.0.1 https://partner.example.com:18444/ || echo refused"
    )?;
    writeln!(out, "\n# TCP on 31400, 80/20 between two echo servers")?;
    writeln!(
        out,
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/31400; echo hello >&3; head -2 <&3'"
    )?;
    writeln!(out, "\n# what is configured, and how it is doing")?;
    writeln!(out, "gatehouse routes examples/repo --group public-gw")?;
    writeln!(out, "curl -s http://{admin}/status")?;
    writeln!(
        out,
        "\n# edit a manifest under examples/repo, then: curl -X POST http://{admin}/reload"
    )?;
    Ok(())
}

/// Finds the example repository: `./examples/repo`, or the packaged copy.
pub fn find_repo() -> Option<PathBuf> {
    ["examples/repo", "/usr/share/gatehouse/examples/repo"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("gatehouse.yaml").exists())
}

/// Starts the demo backends on their own thread; returns once they listen.
pub fn start_backends(pki: &Pki) -> Result<(), DemoError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(backends(pki))?;
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    Ok(())
}

/// The demo's GitOps loop: a local Git repository made from the example, and a
/// `gatehouse-sync` child process publishing releases from it.
pub struct GitOps {
    /// The repository a newcomer edits and commits to.
    pub work: PathBuf,
    /// The releases folder the appliance serves.
    pub releases: PathBuf,
    /// The appliance's control socket.
    pub socket: PathBuf,
    /// The agent's settings as flags (for the printed commands).
    pub flags: Vec<String>,
    sync: PathBuf,
    child: Option<std::process::Child>,
}

/// `gatehouse-sync` next to this executable, if there is one.
pub fn sync_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("gatehouse-sync");
    p.is_file().then_some(p)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let ft = e.file_type()?;
        let dest = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else if ft.is_file() {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<(), DemoError> {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=gatehouse demo",
            "-c",
            "user.email=demo@gatehouse.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DemoError::Io(std::io::Error::other(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))))
    }
}

// === impl GitOps ===

impl GitOps {
    /// Creates `<dir>/repo` from `example`, publishes the first release with
    /// `gatehouse-sync once`, then starts the agent polling every 2 s.
    pub fn start(sync: &Path, example: &Path, dir: &Path) -> Result<Self, DemoError> {
        let work = dir.join("repo");
        copy_tree(example, &work)?;
        git(&work, &["init", "-q", "-b", "main"])?;
        // The guide prints a `git commit` to run here: it must work for a user without a
        // Git identity or with signing configured.
        git(&work, &["config", "user.name", "gatehouse demo"])?;
        git(&work, &["config", "user.email", "demo@gatehouse.invalid"])?;
        git(&work, &["config", "commit.gpgsign", "false"])?;
        git(&work, &["add", "-A"])?;
        git(&work, &["commit", "-q", "-m", "examples/repo"])?;
        let releases = dir.join("releases");
        let socket = dir.join("gatehouse.sock");
        let flags = vec![
            format!("--url=file://{}", work.display()),
            "--branch=main".into(),
            "--interval=2s".into(),
            "--jitter=0".into(),
            format!("--releases={}", releases.display()),
            format!("--state-dir={}", dir.join("sync").display()),
            format!("--control-socket={}", socket.display()),
        ];
        let once = std::process::Command::new(sync)
            .arg("once")
            .args(&flags)
            .stdout(std::process::Stdio::null())
            .output()?;
        if !once.status.success() {
            return Err(DemoError::Io(std::io::Error::other(format!(
                "gatehouse-sync once: {}",
                String::from_utf8_lossy(&once.stderr).trim()
            ))));
        }
        let log = std::fs::File::create(dir.join("gatehouse-sync.log"))?;
        let child = std::process::Command::new(sync)
            .args(&flags)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self {
            work,
            releases,
            socket,
            flags,
            sync: sync.to_path_buf(),
            child: Some(child),
        })
    }

    /// How to change the configuration and watch it go live.
    pub fn guide(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let w = self.work.display();
        let s = self.sync.display();
        let r = self.releases.display();
        writeln!(
            out,
            "\n# GitOps: gatehouse-sync polls {w} every 2 s and publishes releases into {r}."
        )?;
        writeln!(
            out,
            "# Add a route and commit it; it is served within about 2 seconds:"
        )?;
        writeln!(
            out,
            "cat >> {w}/tenants/team-a/web.yaml <<'YAML'\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: hello}}\nspec:\n  hosts: [\"web.example.com\"]\n  gateways: [public]\n  http:\n  - match: [{{uri: {{prefix: /hello}}}}]\n    directResponse: {{status: 200, body: {{string: \"hello from git\\n\"}}}}\nYAML"
        )?;
        writeln!(out, "git -C {w} commit -qam 'team-a: /hello'")?;
        writeln!(
            out,
            "curl -s --resolve web.example.com:18080:127.0.0.1 http://web.example.com:18080/hello"
        )?;
        writeln!(
            out,
            "\n# per-tenant status (a broken manifest shows here with file:line, and its tenant keeps its last good routes)"
        )?;
        writeln!(out, "{s} status --releases {r}")?;
        writeln!(out, "{s} plan {}", self.flags.join(" "))?;
        writeln!(out, "{s} rollback --releases {r}")
    }
}

impl Drop for GitOps {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
