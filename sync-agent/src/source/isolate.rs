//! Runs a fetch in a child process with a hard deadline and cancellation.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::worker::WorkerReply;
use super::{FetchError, FetchRequest, Fetched, human};
use crate::config::SourceSettings;

/// Time the worker gets past its own deadline to report before it is killed.
const GRACE: Duration = Duration::from_secs(2);
/// How often the agent looks at the worker and the cancel flag.
const TICK: Duration = Duration::from_millis(20);

/// A fetcher for one configured source.
#[derive(Debug, Clone)]
pub struct Source {
    /// The worker executable (this binary).
    pub exe: PathBuf,
    /// State folder: the bare repository lives in `repo.git` under it.
    pub state_dir: PathBuf,
    /// The configured source.
    pub settings: SourceSettings,
}

// === impl Source ===

impl Source {
    /// The bare repository.
    pub fn repo_path(&self) -> PathBuf {
        self.state_dir.join("repo.git")
    }

    /// The request for the configured reference (or `selector` instead).
    pub fn request(&self, selector: Option<crate::refs::RefSelector>) -> FetchRequest {
        FetchRequest {
            url: self.settings.url.clone(),
            repo: self.repo_path(),
            selector: selector.unwrap_or_else(|| self.settings.selector.clone()),
            depth: self.settings.depth,
            auth: self.settings.auth.clone(),
            known_hosts: self.settings.known_hosts.clone(),
            timeout_ms: u64::try_from(self.settings.timeout.as_millis()).unwrap_or(u64::MAX),
            scan: false,
        }
    }

    /// Reads the ssh server's host key (`known_hosts` form without the host), verifying
    /// nothing: the operator checks the fingerprint before trusting it.
    pub fn scan_host_key(&self) -> Result<String, FetchError> {
        let mut req = self.request(None);
        req.scan = true;
        match self.run_locked(&req, &AtomicBool::new(false))? {
            WorkerReply::Scanned(k) => Ok(k),
            WorkerReply::Error(e) => Err(e),
            WorkerReply::Ok(_) => Err(FetchError::Worker("unexpected reply".into())),
        }
    }

    /// Fetches in a worker process; gives up at the timeout or when `cancel` is set.
    pub fn fetch(&self, req: &FetchRequest, cancel: &AtomicBool) -> Result<Fetched, FetchError> {
        match self.run_locked(req, cancel)? {
            WorkerReply::Ok(f) => Ok(f),
            WorkerReply::Error(e) => Err(e),
            WorkerReply::Scanned(_) => Err(FetchError::Worker("unexpected reply".into())),
        }
    }

    fn run_locked(
        &self,
        req: &FetchRequest,
        cancel: &AtomicBool,
    ) -> Result<WorkerReply, FetchError> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| FetchError::Worker(format!("{}: {e}", self.state_dir.display())))?;
        // One fetch at a time per repository (the daemon, `plan` and `once` share it).
        let lock = lock(&self.state_dir.join("repo.lock"))?;
        let r = run(
            &self.exe,
            &self.state_dir,
            req,
            self.settings.ca_file.as_deref(),
            cancel,
        );
        drop(lock);
        r
    }
}

fn lock(path: &Path) -> Result<File, FetchError> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| FetchError::Worker(format!("{}: {e}", path.display())))?;
    f.lock()
        .map_err(|e| FetchError::Worker(format!("{}: {e}", path.display())))?;
    Ok(f)
}

fn run(
    exe: &Path,
    home: &Path,
    req: &FetchRequest,
    ca_file: Option<&Path>,
    cancel: &AtomicBool,
) -> Result<WorkerReply, FetchError> {
    let timeout = Duration::from_millis(req.timeout_ms);
    let mut cmd = Command::new(exe);
    cmd.arg("fetch-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // libgit2 reads the user's git configuration and ~/.ssh; the worker gets a home of
        // its own so only gatehouse's settings apply.
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home);
    if let Some(ca) = ca_file {
        // OpenSSL's default verify paths honour these; per child, not process-global.
        cmd.env("SSL_CERT_FILE", ca)
            .env("SSL_CERT_DIR", "/nonexistent");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| FetchError::Worker(format!("cannot start {}: {e}", exe.display())))?;
    let body = serde_json::to_vec(req).map_err(|e| FetchError::Worker(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body);
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let end = Instant::now() + timeout + GRACE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => return Err(FetchError::Worker(e.to_string())),
        }
        if cancel.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(FetchError::Cancelled);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(TICK);
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.is_none() {
        return Err(FetchError::Timeout(human(timeout)));
    }
    // The first reply wins (the worker's watchdog may race its main thread to write one).
    let first = serde_json::Deserializer::from_slice(&stdout)
        .into_iter::<WorkerReply>()
        .next();
    match first {
        Some(Ok(reply)) => Ok(reply),
        _ => {
            let tail: String = String::from_utf8_lossy(&stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("; ");
            Err(FetchError::Worker(format!(
                "exited with {} without a reply{}",
                status.map_or_else(String::new, |s| s.to_string()),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )))
        }
    }
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.by_ref().take(4 << 20).read_to_end(&mut buf);
        }
        buf
    })
}
