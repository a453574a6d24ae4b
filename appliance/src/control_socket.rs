//! The control socket (`gatehouse run --control-socket PATH`): the sync agent's fast path to
//! a reload. One JSON line each way, versioned:
//!
//! ```text
//! → {"version":1,"kind":"apply","release":"000042-1a2b3c4d5e6f","revision":"<sha>"}
//! ← {"version":1,"ok":true,"generation":7,"revision":"<sha>","release":"000042-...","tenantErrors":0}
//! ← {"version":1,"ok":false,"error":"...","diagnostics":[...]}
//! ```
//!
//! `apply` reloads `<releases>/current` (the agent swaps the link before it sends). `status`
//! answers with what is served. The socket is a fast path only: the appliance also watches
//! `current` by itself. File permissions (0660) are the access control.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::control::{ConfigSource, Control, ReloadError};

/// The protocol version this appliance speaks.
pub const VERSION: u64 = 1;
/// Longest request line.
const MAX_LINE: u64 = 64 * 1024;

/// Binds `path` (replacing a stale socket file), mode 0660.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Serves the control socket until the process exits.
pub async fn serve(listener: UnixListener, path: PathBuf, control: Arc<Control>) {
    tracing::info!(path = %path.display(), "control socket listening");
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(s, &control).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn connection(s: UnixStream, control: &Control) -> std::io::Result<()> {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        let n = (&mut r).take(MAX_LINE).read_line(&mut line).await?;
        if n == 0 {
            return Ok(());
        }
        let answer = if line.ends_with('\n') {
            answer(&line, control).await
        } else {
            refuse(&format!("request line longer than {MAX_LINE} bytes"))
        };
        let mut out = answer.to_string();
        out.push('\n');
        w.write_all(out.as_bytes()).await?;
        if !line.ends_with('\n') {
            return Ok(());
        }
    }
}

fn refuse(error: &str) -> Value {
    json!({"version": VERSION, "ok": false, "error": error})
}

fn served_release(control: &Control) -> Option<String> {
    match control.source() {
        ConfigSource::Releases(dir) => std::fs::read_link(dir.join("current"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
        ConfigSource::Repo(_) => None,
    }
}

/// The answer to one request line.
pub async fn answer(line: &str, control: &Control) -> Value {
    let Ok(msg) = serde_json::from_str::<Value>(line) else {
        return refuse("not a JSON object");
    };
    match msg.get("version").and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(v) => {
            return refuse(&format!(
                "unsupported control protocol version {v}; this appliance speaks version {VERSION}"
            ));
        }
        None => return refuse("missing \"version\""),
    }
    match msg.get("kind").and_then(Value::as_str) {
        Some("apply") => {
            let wanted = msg
                .get("release")
                .and_then(Value::as_str)
                .map(str::to_string);
            match control.reload().await {
                Ok(rep) => json!({
                    "version": VERSION,
                    "ok": true,
                    "generation": rep.generation,
                    "revision": rep.revision,
                    "release": served_release(control),
                    "requested": wanted,
                    "tenantErrors": rep.tenant_errors,
                }),
                Err(ReloadError::Platform {
                    diagnostics,
                    serving,
                }) => json!({
                    "version": VERSION,
                    "ok": false,
                    "error": format!("the platform configuration has errors; still serving generation {serving}"),
                    "generation": serving,
                    "diagnostics": diagnostics,
                }),
                Err(e) => refuse(&e.to_string()),
            }
        }
        Some("status") => {
            let st = control.shared().with_status(|s| s.clone());
            json!({
                "version": VERSION,
                "ok": true,
                "generation": st.generation,
                "revision": st.revision,
                "release": served_release(control),
            })
        }
        Some(k) => refuse(&format!("unknown kind {k:?}; expected apply or status")),
        None => refuse("missing \"kind\""),
    }
}
