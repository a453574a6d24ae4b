//! The HTTP/3 client: `tests/e2e/h3client.py` on aioquic (from PyPI, installed into
//! `target/h3venv` by `scripts/test.sh`), one QUIC connection per [`H3`], requests as JSON
//! lines on its stdin, answers as JSON lines on its stdout.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The virtualenv's Python with aioquic.
pub fn python() -> PathBuf {
    // Beside the binaries' target directory, or the workspace's `target/` (where
    // scripts/test.sh puts it) when CARGO_TARGET_DIR points elsewhere.
    let near = super::bin_dir()
        .parent()
        .map(|t| t.join("h3venv/bin/python"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/h3venv/bin/python");
    near.into_iter()
        .chain([repo])
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("target/h3venv/bin/python missing: scripts/test.sh installs aioquic there")
        })
}

/// One QUIC connection to the gateway, kept open between requests.
pub struct H3 {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The `:authority` requests use unless they name one.
    pub authority: String,
}

impl H3 {
    /// Connects to `127.0.0.1:port` with SNI `sni`, trusting `ca`, presenting `client`
    /// (certificate, key) when given.
    pub fn connect(port: u16, sni: &str, ca: &Path, client: Option<(&Path, &Path)>) -> Self {
        Self::spawn(port, sni, ca, client, None)
    }

    /// Like [`connect`](Self::connect), resuming with the session ticket in `ticket` when
    /// there is one (the first request then goes as 0-RTT if the server allows it), and
    /// saving the server's next ticket there.
    pub fn resume(port: u16, sni: &str, ca: &Path, ticket: &Path) -> Self {
        Self::spawn(port, sni, ca, None, Some(ticket))
    }

    fn spawn(
        port: u16,
        sni: &str,
        ca: &Path,
        client: Option<(&Path, &Path)>,
        ticket: Option<&Path>,
    ) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/h3client.py");
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .args(["--connect", &format!("127.0.0.1:{port}")])
            .args(["--server-name", sni])
            .arg("--cacert")
            .arg(ca);
        if let Some((cert, key)) = client {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(t) = ticket {
            cmd.arg("--ticket").arg(t);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start h3client.py");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
            authority: format!("{sni}:{port}"),
        }
    }

    /// Sends one request (`spec` as h3client.py reads it; `authority` defaults to the
    /// connection's) and returns the answer: status, headers, body... or `error`.
    pub fn send(&mut self, mut spec: serde_json::Value) -> serde_json::Value {
        if spec.get("authority").is_none() {
            spec["authority"] = self.authority.clone().into();
        }
        if let Some(stdin) = self.stdin.as_mut() {
            // A client that already gave up (a refused handshake) has closed its stdin.
            let _ = writeln!(stdin, "{spec}").and_then(|()| stdin.flush());
        }
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read h3client");
        if n == 0 {
            return serde_json::json!({"error": "h3client exited"});
        }
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("h3client said {line:?}: {e}"))
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> serde_json::Value {
        self.send(serde_json::json!({"method": "GET", "path": path}))
    }
}

impl Drop for H3 {
    fn drop(&mut self) {
        // EOF on stdin ends the client, which closes its connection (so the gateway does not
        // hold it until the idle timeout); kill it if it is stuck.
        drop(self.stdin.take());
        let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a new connection.
pub fn get_once(port: u16, sni: &str, ca: &Path, path: &str) -> serde_json::Value {
    H3::connect(port, sni, ca, None).get(path)
}
