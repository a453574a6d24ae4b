//! The sync agent side of the harness: `gatehouse-sync` processes and their folders, the
//! appliance serving their releases, and the configuration repository's documents.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::git::Proc;
use super::tools::{Curl, Reply};
use super::{Gateway, bin, platform, tenant, wait_for};

/// The folders one agent uses.
pub struct Dirs {
    /// Releases folder.
    pub releases: PathBuf,
    /// State folder (bare repository).
    pub state: PathBuf,
    /// The appliance's control socket.
    pub socket: PathBuf,
    /// Credentials folder (empty).
    pub creds: PathBuf,
    /// Logs and scratch files.
    pub scratch: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dirs {
    /// Fresh folders.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path();
        for d in ["releases", "state", "creds", "scratch"] {
            std::fs::create_dir_all(p.join(d)).expect("mkdir");
        }
        Self {
            releases: p.join("releases"),
            state: p.join("state"),
            socket: p.join("gatehouse.sock"),
            creds: p.join("creds"),
            scratch: p.join("scratch"),
            _dir: dir,
        }
    }

    /// `gatehouse-sync` with these folders and `flags`.
    pub fn command(&self, sub: Option<&str>, flags: &[String]) -> Command {
        let mut c = Command::new(bin("gatehouse-sync"));
        if let Some(s) = sub {
            c.arg(s);
        }
        c.arg("--releases")
            .arg(&self.releases)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--control-socket")
            .arg(&self.socket)
            .args(flags)
            .env("GATEHOUSE_LOG", "info");
        c
    }

    /// Runs `gatehouse-sync once`: (exit code, stdout and stderr).
    pub fn once(&self, flags: &[String]) -> (i32, String) {
        let out = self
            .command(Some("once"), flags)
            .output()
            .expect("gatehouse-sync once");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Runs a `gatehouse-sync` subcommand: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin("gatehouse-sync"))
            .args(args)
            .arg("--releases")
            .arg(&self.releases)
            .output()
            .expect("gatehouse-sync");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts the agent daemon.
    pub fn start(&self, flags: &[String]) -> Proc {
        let log = self.scratch.join(format!(
            "sync-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        Proc::spawn(self.command(None, flags), log)
    }

    /// Starts the appliance on the releases folder with the control socket.
    pub fn gateway(&self, wait_ready: bool) -> Gateway {
        let sock = self.socket.display().to_string();
        Gateway::start_releases(
            &self.releases,
            &self.creds,
            &["--control-socket", &sock],
            wait_ready,
        )
    }

    /// `status.json`.
    pub fn status(&self) -> serde_json::Value {
        std::fs::read_to_string(self.releases.join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `status.json` satisfies `pred`.
    pub fn wait_status(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(what, deadline, || {
            let s = self.status();
            pred(&s).then_some(s)
        })
    }

    /// The release `current` points at.
    pub fn current(&self) -> Option<String> {
        std::fs::read_link(self.releases.join("current"))
            .ok()
            .map(|p| p.display().to_string())
    }
}

/// gatehouse.yaml: group `public-gw` (port 80 → `port`) and tenants with extra spec lines.
pub fn gatehouse_yaml(port: u16, tenants: &[(&str, &str)]) -> String {
    let docs: String = tenants
        .iter()
        .map(|(t, extra)| tenant(t, &[&format!("{t}.example.com")], extra))
        .collect();
    platform(&[(80, port)], &docs)
}

/// A tenant's Gateway `web` on port 80 for its host.
pub fn gateway_doc(t: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"{t}.example.com\"]\n"
    )
}

/// A VirtualService answering each `(prefix, body)` directly.
pub fn routes_doc(t: &str, routes: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {t}-routes}}\nspec:\n  hosts: [\"{t}.example.com\"]\n  gateways: [web]\n  http:\n"
    );
    for (prefix, body) in routes {
        s.push_str(&format!(
            "  - match: [{{uri: {{prefix: {prefix}}}}}]\n    directResponse: {{status: 200, body: {{string: \"{body}\"}}}}\n"
        ));
    }
    s
}

/// GET `http://<t>.example.com:<port><path>` through the appliance.
pub fn get(port: u16, t: &str, path: &str) -> Reply {
    Curl::new(&format!("http://{t}.example.com:{port}{path}"))
        .arg("--max-time")
        .arg("5")
        .run()
}

/// Waits until `path` on tenant `t` answers `body`.
pub fn wait_body(port: u16, t: &str, path: &str, body: &str, deadline: Duration) {
    wait_for(&format!("{t}{path} to answer {body:?}"), deadline, || {
        let r = get(port, t, path);
        (r.status == 200 && r.body == body).then_some(())
    });
}

/// Path inside `dir` written with `content`.
pub fn file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p
}
