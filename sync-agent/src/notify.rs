//! Telling an appliance about a release over its unix control socket: one JSON line each
//! way, versioned. `{"version":1,"kind":"apply","release":ID,"revision":SHA}` → the appliance
//! reloads `current` and answers `{"version":1,"ok":true,"generation":N,"revision":SHA}` or
//! `{"version":1,"ok":false,"error":...,"diagnostics":[...]}`. The appliance also watches
//! `current` by itself, so an appliance that is down or slow is not an error here.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The protocol version spoken.
pub const VERSION: u32 = 1;
/// Longest reply read.
const MAX_REPLY: u64 = 1 << 20;

/// The agent's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Apply {
    /// Protocol version.
    pub version: u32,
    /// Always `apply`.
    pub kind: String,
    /// The release id `current` points at.
    pub release: String,
    /// Its commit.
    pub revision: String,
}

/// The appliance's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// Protocol version.
    #[serde(default)]
    pub version: u32,
    /// Applied?
    pub ok: bool,
    /// The generation now served.
    #[serde(default)]
    pub generation: Option<u64>,
    /// The revision now served.
    #[serde(default)]
    pub revision: Option<String>,
    /// Tenants the appliance found errors in (it kept them at their last good config).
    #[serde(default)]
    pub tenant_errors: Option<usize>,
    /// Why not.
    #[serde(default)]
    pub error: Option<String>,
    /// Findings behind a refusal.
    #[serde(default)]
    pub diagnostics: Vec<serde_json::Value>,
}

/// Why an appliance could not be told.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// No appliance listens (not running): it will load `current` when it starts.
    #[error("no appliance listening on {0}")]
    Absent(String),
    /// The exchange failed or timed out.
    #[error("{socket}: {message}")]
    Failed {
        /// The socket.
        socket: String,
        /// What happened.
        message: String,
    },
}

// === impl Reply ===

impl Reply {
    /// Whether the appliance serves the release as published (a tenant error means it
    /// saw something the agent did not, and kept that tenant back).
    pub fn accepted(&self) -> bool {
        self.ok && self.tenant_errors.unwrap_or(0) == 0
    }

    /// The refusal in words.
    pub fn reason(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        match self.tenant_errors {
            Some(n) if n > 0 => format!("the appliance found errors in {n} tenant(s)"),
            _ => "refused without a reason".into(),
        }
    }
}

/// Sends `msg` to the appliance on `socket` and waits up to `timeout` for its answer.
pub fn send(socket: &Path, msg: &impl Serialize, timeout: Duration) -> Result<Reply, NotifyError> {
    let name = socket.display().to_string();
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            NotifyError::Absent(name.clone())
        }
        _ => NotifyError::Failed {
            socket: name.clone(),
            message: e.to_string(),
        },
    })?;
    let failed = |m: String| NotifyError::Failed {
        socket: name.clone(),
        message: m,
    };
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| failed(e.to_string()))?;
    let mut line = serde_json::to_vec(msg).map_err(|e| failed(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| failed(e.to_string()))?;
    let mut reply = String::new();
    BufReader::new(s.take(MAX_REPLY))
        .read_line(&mut reply)
        .map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                failed(format!(
                    "no answer within {}",
                    crate::source::human(timeout)
                ))
            } else {
                failed(e.to_string())
            }
        })?;
    if reply.trim().is_empty() {
        return Err(failed("closed without an answer".into()));
    }
    serde_json::from_str(&reply).map_err(|e| failed(format!("unreadable answer: {e}")))
}

/// The question "what do you serve now?" (`status`); the answer is a [`Reply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Query {
    /// Protocol version.
    pub version: u32,
    /// Always `status`.
    pub kind: &'static str,
}

/// Asks the appliance on `socket` what it serves now.
pub fn ask(socket: &Path, timeout: Duration) -> Result<Reply, NotifyError> {
    send(
        socket,
        &Query {
            version: VERSION,
            kind: "status",
        },
        timeout,
    )
}

/// The message for release `id` at `revision`.
pub fn apply(id: &str, revision: &str) -> Apply {
    Apply {
        version: VERSION,
        kind: "apply".into(),
        release: id.to_string(),
        revision: revision.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn one_line_each_way_and_absent_appliances_are_told_apart() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("a.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut line = String::new();
            r.read_line(&mut line).expect("read");
            let m: Apply = serde_json::from_str(&line).expect("apply message");
            let mut s = s;
            writeln!(
                s,
                "{{\"version\":1,\"ok\":false,\"error\":\"refused {}\",\"diagnostics\":[]}}",
                m.release
            )
            .expect("write");
        });
        let r = send(&path, &apply("000002-abc", "abc"), Duration::from_secs(5)).expect("reply");
        server.join().expect("server");
        assert!(!r.accepted());
        assert_eq!(r.reason(), "refused 000002-abc");
        let e = send(
            &tmp.path().join("none.sock"),
            &apply("x", "y"),
            Duration::from_secs(1),
        )
        .expect_err("absent");
        assert!(matches!(e, NotifyError::Absent(_)));
    }
}
