//! The fetch itself (runs inside the `fetch-worker` child process): list the server's
//! references, choose one, download it shallowly into the bare repository, and point
//! `refs/gatehouse/target` at its commit.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use git2::{AutotagOption, FetchOptions, ObjectType, Oid, Repository};
use serde::{Deserialize, Serialize};

use super::auth::{self, Secrets, Seen};
use super::url::{self, RepoUrl, Scheme};
use super::{FetchError, FetchRequest, Fetched, human};
use crate::refs::{self, Advertised, RefSelector};

/// The reference the agent reads after a fetch.
pub const TARGET_REF: &str = "refs/gatehouse/target";
/// A refspec no server advertises.
const LIST_ONLY: &str = "refs/gatehouse-list-only/*:refs/gatehouse-list-only/*";

/// The worker's answer on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkerReply {
    /// Success.
    Ok(Fetched),
    /// Failure.
    Error(FetchError),
    /// The host key of an ssh server (`known-hosts`).
    Scanned(String),
}

/// Entry point of `gatehouse-sync fetch-worker`: request on stdin, reply on stdout.
/// Returns the process exit code.
pub fn main() -> u8 {
    let mut input = String::new();
    let reply = match std::io::stdin().take(1 << 20).read_to_string(&mut input) {
        Err(e) => WorkerReply::Error(FetchError::Worker(format!("reading the request: {e}"))),
        Ok(_) => match serde_json::from_str::<FetchRequest>(&input) {
            Err(e) => WorkerReply::Error(FetchError::Worker(format!("bad request: {e}"))),
            Ok(req) => {
                watchdog(Duration::from_millis(req.timeout_ms));
                if req.scan {
                    match scan(&req) {
                        Ok(k) => WorkerReply::Scanned(k),
                        Err(e) => WorkerReply::Error(e),
                    }
                } else {
                    match fetch(&req) {
                        Ok(f) => WorkerReply::Ok(f),
                        Err(e) => WorkerReply::Error(e),
                    }
                }
            }
        },
    };
    let ok = !matches!(reply, WorkerReply::Error(_));
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, &reply);
    let _ = out.flush();
    if ok { 0 } else { 1 }
}

/// Ends the process at the deadline even when libgit2 is blocked in a read that no callback
/// interrupts (the agent kills the worker too; this makes the reply say why).
fn watchdog(timeout: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let reply = WorkerReply::Error(FetchError::Timeout(human(timeout)));
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &reply);
        let _ = out.flush();
        std::process::exit(1);
    });
}

/// Opens the bare repository, creating it on first use.
pub fn open_or_init(path: &Path) -> Result<Repository, FetchError> {
    let git = |e: git2::Error| FetchError::Git(format!("{}: {}", path.display(), e.message()));
    if path.join("HEAD").exists() {
        Repository::open_bare(path).map_err(git)
    } else {
        std::fs::create_dir_all(path)
            .map_err(|e| FetchError::Git(format!("{}: {e}", path.display())))?;
        Repository::init_bare(path).map_err(git)
    }
}

/// Removes lock files a killed worker may have left. Only one worker runs at a time (the
/// agent holds the repository lock around it), so any lock found here is stale.
fn clean_locks(repo: &Path) {
    let mut stack = vec![repo.to_path_buf(), repo.join("refs")];
    let mut first = true;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !first {
                stack.push(p);
            } else if !is_dir && p.extension().is_some_and(|x| x == "lock") {
                let _ = std::fs::remove_file(&p);
            }
        }
        first = false;
    }
}

/// Connects to an ssh server only to read its host key (`known_hosts` form, no host).
pub fn scan(req: &FetchRequest) -> Result<String, FetchError> {
    let parsed = url::parse(&req.url).map_err(|e| FetchError::Url(e.to_string()))?;
    if parsed.scheme != Scheme::Ssh {
        return Err(FetchError::Url(format!(
            "{}: host keys exist only for ssh:// sources",
            url::redact(&req.url)
        )));
    }
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms);
    let repo = open_or_init(&req.repo)?;
    let mut remote = repo
        .remote_anonymous(&req.url)
        .map_err(|e| FetchError::Url(e.message().to_string()))?;
    let seen = Rc::new(RefCell::new(Seen::default()));
    let secrets = Secrets::default();
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(auth::callbacks(
        &parsed,
        &secrets,
        None,
        seen.clone(),
        deadline,
        true,
    ));
    let r = remote.download(&[LIST_ONLY], Some(&mut fo));
    drop(fo);
    let scanned = seen.borrow_mut().scanned.take();
    match (scanned, r) {
        (Some(k), _) => Ok(k),
        (None, Err(e)) => Err(FetchError::Git(e.message().to_string())),
        (None, Ok(())) => Err(FetchError::HostKey("the server offered no host key".into())),
    }
}

/// Runs one fetch in this process.
pub fn fetch(req: &FetchRequest) -> Result<Fetched, FetchError> {
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms);
    let parsed: RepoUrl = url::parse(&req.url).map_err(|e| FetchError::Url(e.to_string()))?;
    let secrets = Secrets::read(&req.auth)?;
    let repo = open_or_init(&req.repo)?;
    clean_locks(&req.repo);
    let mut remote = repo
        .remote_anonymous(&req.url)
        .map_err(|e| FetchError::Url(format!("{}: {}", url::redact(&req.url), e.message())))?;
    let seen = Rc::new(RefCell::new(Seen::default()));
    let headers: Vec<String> = secrets
        .bearer
        .iter()
        .map(|t| format!("Authorization: Bearer {t}"))
        .collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let options = |depth: u32| {
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(auth::callbacks(
            &parsed,
            &secrets,
            req.known_hosts.as_deref(),
            seen.clone(),
            deadline,
            req.scan,
        ));
        fo.download_tags(AutotagOption::None);
        fo.update_fetchhead(false);
        fo.custom_headers(&header_refs);
        // The local transport does not do shallow fetches; it copies objects directly.
        if depth > 0 && parsed.scheme != Scheme::File {
            fo.depth(i32::try_from(depth).unwrap_or(i32::MAX));
        }
        fo
    };
    let classify = |e: git2::Error| -> FetchError {
        if let Some(f) = seen.borrow_mut().failure.take() {
            return f;
        }
        if Instant::now() >= deadline {
            return FetchError::Timeout(human(Duration::from_millis(req.timeout_ms)));
        }
        FetchError::Git(e.message().to_string())
    };

    // Connect and list: a download whose refspec matches no reference wants nothing, so it
    // only reads the server's advertisement, with the same options (headers, credentials)
    // as the real download; `connect_auth` cannot carry custom headers. (No refspec at all
    // would make libgit2 fetch the remote HEAD's whole history.)
    remote
        .download(&[LIST_ONLY], Some(&mut options(0)))
        .map_err(classify)?;
    let heads: Vec<Advertised> = remote
        .list()
        .map_err(classify)?
        .iter()
        .map(|h| Advertised {
            name: h.name().to_string(),
            oid: h.oid().to_string(),
        })
        .collect();
    let chosen = refs::choose(&req.selector, &heads)?;
    let want = chosen
        .oid
        .as_deref()
        .and_then(|o| Oid::from_str(o).ok())
        .ok_or_else(|| FetchError::Ref(format!("{}: no object id", chosen.label)))?;

    if repo.find_object(want, None).is_err() {
        let spec = match &req.selector {
            RefSelector::Commit(_) => chosen.fetch.clone(),
            _ => format!("+{}:refs/gatehouse/fetched", chosen.fetch),
        };
        remote
            .download(&[spec], Some(&mut options(req.depth)))
            .map_err(classify)?;
    }
    let _ = remote.disconnect();
    let obj = repo.find_object(want, None).map_err(|_| {
        FetchError::Ref(format!(
            "{}: the server did not send {want} (a pinned commit must be reachable and the server must allow fetching it by id)",
            chosen.label
        ))
    })?;
    let (commit, tag) = match obj.kind() {
        Some(ObjectType::Commit) => (want, None),
        Some(ObjectType::Tag) => {
            let target = obj
                .peel(ObjectType::Commit)
                .map_err(|e| FetchError::Ref(format!("{}: {}", chosen.label, e.message())))?;
            (target.id(), Some(want.to_string()))
        }
        other => {
            return Err(FetchError::Ref(format!(
                "{} points at a {}, not a commit",
                chosen.label,
                other.map_or("unknown object", |k| k.str())
            )));
        }
    };
    repo.reference(TARGET_REF, commit, true, "gatehouse-sync fetch")
        .map_err(|e| FetchError::Git(e.message().to_string()))?;
    Ok(Fetched {
        chosen,
        commit: commit.to_string(),
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Auth;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A bare origin with three commits on main and tags v1.0.0 (annotated), v1.1.0, v2.0.0.
    fn origin(dir: &Path) -> (std::path::PathBuf, Vec<String>) {
        let work = dir.join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        git(&work, &["init", "-q", "-b", "main"]);
        let mut ids = Vec::new();
        for (i, tag) in ["v1.0.0", "v1.1.0", "v2.0.0"].iter().enumerate() {
            std::fs::write(work.join("gatehouse.yaml"), format!("# {i}\n")).expect("write");
            git(&work, &["add", "-A"]);
            git(&work, &["commit", "-q", "-m", tag]);
            if i == 0 {
                git(&work, &["tag", "-a", "-m", "release", tag]);
            } else {
                git(&work, &["tag", tag]);
            }
            ids.push(git(&work, &["rev-parse", "HEAD"]));
        }
        git(dir, &["clone", "-q", "--bare", "work", "origin.git"]);
        git(
            &dir.join("origin.git"),
            &["config", "uploadpack.allowAnySHA1InWant", "true"],
        );
        (dir.join("origin.git"), ids)
    }

    fn req(url: &str, repo: &Path, selector: RefSelector) -> FetchRequest {
        FetchRequest {
            url: url.into(),
            repo: repo.to_path_buf(),
            selector,
            depth: 1,
            auth: Auth::default(),
            known_hosts: None,
            timeout_ms: 20_000,
            scan: false,
        }
    }

    #[test]
    fn branch_tag_semver_and_pin_over_file_and_git_daemon() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (bare, ids) = origin(tmp.path());
        let file_url = format!("file://{}", bare.display());
        let local = tmp.path().join("state/repo.git");
        let f = fetch(&req(&file_url, &local, RefSelector::Branch("main".into()))).expect("main");
        assert_eq!(f.commit, ids[2]);
        let f = fetch(&req(&file_url, &local, RefSelector::Tag("v1.0.0".into()))).expect("tag");
        assert_eq!(f.commit, ids[0], "annotated tag peeled to its commit");
        assert!(f.tag.is_some());
        let f = fetch(&req(&file_url, &local, RefSelector::Semver("^1".into()))).expect("semver");
        assert_eq!(f.commit, ids[1]);
        let e =
            fetch(&req(&file_url, &local, RefSelector::Branch("gone".into()))).expect_err("gone");
        assert!(matches!(e, FetchError::Ref(_)), "{e}");

        // git daemon: a shallow fetch into a fresh repository, then a pin by id.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        // git-daemon itself: killing a `git daemon` wrapper would orphan it.
        let exec = git(tmp.path(), &["--exec-path"]);
        let mut daemon = Command::new(Path::new(&exec).join("git-daemon"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", tmp.path().display()))
            .spawn()
            .expect("git daemon");
        let url = format!("git://127.0.0.1:{port}/origin.git");
        let shallow = tmp.path().join("state2/repo.git");
        let deadline = Instant::now() + Duration::from_secs(10);
        let f = loop {
            match fetch(&req(&url, &shallow, RefSelector::Branch("main".into()))) {
                Ok(f) => break f,
                // The daemon may not listen yet; a refused connection fails fast.
                Err(_) if Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("git daemon fetch: {e}"),
            }
        };
        assert_eq!(f.commit, ids[2]);
        let shallow_file = std::fs::read_to_string(shallow.join("shallow")).unwrap_or_default();
        assert!(shallow_file.contains(&ids[2]), "depth 1: {shallow_file:?}");
        let f = fetch(&req(&url, &shallow, RefSelector::Commit(ids[0].clone()))).expect("pin");
        assert_eq!(f.commit, ids[0]);
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}
