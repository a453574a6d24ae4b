//! Real clients: curl, openssl s_client, h2load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A curl invocation.
#[derive(Default, Clone)]
pub struct Curl {
    args: Vec<String>,
}

/// What curl got.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status (0 when the connection failed).
    pub status: u16,
    /// Response headers (lowercase names; last value wins).
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: String,
    /// curl's exit code.
    pub exit: i32,
    /// `HTTP/1.1` or `2`.
    pub version: String,
}

impl Reply {
    /// The body as JSON (echo backends).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status, self.body
            )
        })
    }

    /// Which echo backend answered.
    pub fn backend(&self) -> String {
        self.headers.get("x-backend").cloned().unwrap_or_default()
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

impl Curl {
    /// `curl URL` resolving `host:port` to 127.0.0.1.
    pub fn new(url: &str) -> Self {
        let mut c = Self::default();
        c.args.push(url.to_string());
        if let Some((host, port)) = host_port(url) {
            c.args.push("--resolve".into());
            c.args.push(format!("{host}:{port}:127.0.0.1"));
        }
        c
    }

    /// Adds raw arguments.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// Adds a request header.
    pub fn header(self, h: &str) -> Self {
        self.arg("-H").arg(h)
    }

    /// Trusts `ca` for TLS.
    pub fn cacert(self, ca: &Path) -> Self {
        self.arg("--cacert").arg(&ca.display().to_string())
    }

    /// Runs it.
    pub fn run(&self) -> Reply {
        let hdr = tempfile::NamedTempFile::new().expect("tmp");
        let out = Command::new("curl")
            .args(["-s", "-S", "--max-time", "30", "-D"])
            .arg(hdr.path())
            .args(["-w", "\n%{http_version}"])
            .args(&self.args)
            .stdin(Stdio::null())
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, version) = match text.rsplit_once('\n') {
            Some((b, v)) => (b.to_string(), v.trim().to_string()),
            None => (String::new(), text.trim().to_string()),
        };
        let raw = std::fs::read_to_string(hdr.path()).unwrap_or_default();
        // With redirects or 100-continue there are several header blocks: keep the last.
        let block = raw
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .last()
            .unwrap_or("");
        let mut lines = block.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Reply {
            status,
            headers,
            body,
            exit: out.status.code().unwrap_or(-1),
            version,
        }
    }
}

fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (h, p) = authority.rsplit_once(':')?;
    Some((h.to_string(), p.parse().ok()?))
}

/// The subject of the certificate served on `127.0.0.1:port` for `sni`, via
/// `openssl s_client`; `None` when the handshake failed.
pub fn served_subject(port: u16, sni: &str, extra: &[&str]) -> Option<String> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            sni,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let cert_start = text.find("-----BEGIN CERTIFICATE-----")?;
    let cert_end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let pem = &text[cert_start..cert_end];
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    x.stdin.take()?.write_all(pem.as_bytes()).ok()?;
    let o = x.wait_with_output().ok()?;
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Whether a tool is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Path of a file next to the test sources.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("e2e")
        .join("data")
        .join(name)
}

/// The TCP timer (`ss -o`) of each established loopback connection to `port`, such as
/// `timer:(keepalive,6.9sec,0)`; empty for a connection without one.
pub fn timers_to(port: u16) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-tnoH", "state", "established", "dst"])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("timer:"))
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Whether `timer` (from [`timers_to`]) is a keepalive timer due within a minute: `ss`
/// prints the system's default two hours as `119min`, seven seconds as `6.992ms` (sic).
pub fn keepalive_within_a_minute(timer: &str) -> bool {
    timer
        .strip_prefix("timer:(keepalive,")
        .and_then(|t| t.split(',').next())
        .is_some_and(|t| !t.contains("min"))
}

/// Whether a loopback TCP connection from port `from` to port `to` is established (on the
/// side whose local port is `from`).
pub fn established(from: u16, to: u16) -> bool {
    let out = Command::new("ss")
        .args(["-tnH", "state", "established", "src"])
        .arg(format!("127.0.0.1:{from}"))
        .arg("dst")
        .arg(format!("127.0.0.1:{to}"))
        .output()
        .expect("ss (iproute2)");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}
