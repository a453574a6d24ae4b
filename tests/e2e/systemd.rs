//! The systemd service protocol, without systemd: the real `gatehouse` binary with
//! `NOTIFY_SOCKET` pointing at a datagram socket the test reads (READY, RELOADING, STOPPING,
//! WATCHDOG, FDSTORE, FDSTOREREMOVE), and `systemd-socket-activate` handing it listening
//! sockets the way systemd's file-descriptor store does after a restart. The whole flow on a
//! real systemd is `packaging/test-nspawn.sh`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Repo, bin, free_port, platform, raw_http, tenant, wait_for};

/// The datagrams the process sent to its "service manager".
struct Manager {
    sock: UnixDatagram,
    seen: Vec<String>,
    dir: tempfile::TempDir,
}

impl Manager {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = UnixDatagram::bind(dir.path().join("notify")).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Self {
            sock,
            seen: Vec::new(),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn socket_path(&self) -> String {
        self.path().join("notify").display().to_string()
    }

    /// Reads messages until one satisfies `f` (which it returns), or `deadline` passes.
    fn until(&mut self, what: &str, deadline: Duration, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + deadline;
        let mut buf = vec![0u8; 4096];
        loop {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if f(&msg) {
                    return msg;
                }
            }
            assert!(
                Instant::now() < end,
                "no {what} within {deadline:?}; got: {:?}",
                self.seen
            );
        }
    }
}

fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| l.strip_prefix(key))
}

/// A repository with one HTTP listener on `port` (when `listener`).
fn repo_with(repo: &Repo, port: u16, listener: bool) {
    repo.write(
        "gatehouse.yaml",
        &platform(&[(80, port)], &tenant("team-a", &["a.example.com"], "")),
    );
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: web}\nspec:\n  selector: {istio: public-gw}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"a.example.com\"]\n";
    if listener {
        repo.write("tenants/team-a/gateway.yaml", gateway);
    } else {
        repo.remove("tenants/team-a/gateway.yaml");
    }
}

struct Proc {
    child: Child,
    log: std::path::PathBuf,
    admin: SocketAddr,
}

impl Proc {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        wait_for("exit", deadline, || {
            self.child.try_wait().ok().flatten().map(|s| s.code())
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gatehouse log ----\n{}", self.log());
        }
    }
}

/// `gatehouse run` on `repo` with 2 workers (or under `wrap`, e.g. systemd-socket-activate,
/// with 1) and the given environment.
fn start(repo: &Repo, m: &Manager, wrap: &[String]) -> Proc {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let log = m.path().join("gatehouse.log");
    let out = std::fs::File::create(&log).expect("log file");
    let creds = m.path().join("credentials");
    let gatehouse = bin("gatehouse").display().to_string();
    let workers = if wrap.is_empty() { "2" } else { "1" };
    let mut argv: Vec<String> = wrap.to_vec();
    argv.extend([
        gatehouse,
        "run".into(),
        "--repo".into(),
        repo.path().display().to_string(),
        "--credentials".into(),
        creds.display().to_string(),
        "--admin".into(),
        admin.to_string(),
        "--workers".into(),
        workers.into(),
    ]);
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("NOTIFY_SOCKET", m.socket_path())
        .env("WATCHDOG_USEC", "200000")
        .env("GATEHOUSE_LOG", "info")
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn gatehouse");
    Proc { child, log, admin }
}

#[test]
fn notifies_ready_reload_watchdog_stopping_and_stores_its_sockets() {
    let port = free_port();
    let repo = Repo::new();
    repo_with(&repo, port, true);
    let mut m = Manager::new();
    let mut p = start(&repo, &m, &[]);

    let ready = m.until("READY=1", Duration::from_secs(20), |s| has(s, "READY=1"));
    // Readiness means serving: /ready agrees, the port accepts.
    assert_eq!(
        raw_http(p.admin, "GET", "/ready").map(|r| r.0),
        Some(200),
        "/ready after READY=1"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(
        field(&ready, "STATUS=").is_some_and(|s| s.starts_with("serving generation 1")),
        "{ready}"
    );
    // Both workers' sockets went to the store before READY.
    let stored: Vec<String> = m
        .seen
        .iter()
        .filter(|s| has(s, "FDSTORE=1"))
        .filter_map(|s| field(s, "FDNAME=").map(str::to_string))
        .collect();
    assert_eq!(stored.len(), 2, "{:?}", m.seen);
    for (w, name) in stored.iter().enumerate() {
        assert!(
            name.starts_with(&format!("listen_127.0.0.1_{port}_w")),
            "{name}"
        );
        assert!(!name.contains(':'), "{name}");
        assert!(
            stored.iter().filter(|n| *n == name).count() == 1,
            "worker {w}: {name}"
        );
    }

    // WATCHDOG_USEC=200ms: pings every 100ms.
    for _ in 0..3 {
        m.until("WATCHDOG=1", Duration::from_secs(2), |s| {
            has(s, "WATCHDOG=1")
        });
    }

    p.signal("HUP");
    let reloading = m.until("RELOADING=1", Duration::from_secs(10), |s| {
        has(s, "RELOADING=1")
    });
    assert!(
        field(&reloading, "MONOTONIC_USEC=").is_some_and(|v| v.parse::<u64>().is_ok()),
        "{reloading}"
    );
    let again = m.until("READY=1 after the reload", Duration::from_secs(10), |s| {
        has(s, "READY=1")
    });
    assert!(
        field(&again, "STATUS=").is_some_and(|s| s.starts_with("serving generation 2")),
        "{again}"
    );

    // A reload that removes the listener takes its sockets out of the store.
    repo_with(&repo, port, false);
    assert_eq!(raw_http(p.admin, "POST", "/reload").map(|r| r.0), Some(200));
    let mut removed = Vec::new();
    while removed.len() < stored.len() {
        let msg = m.until("FDSTOREREMOVE=1", Duration::from_secs(10), |s| {
            has(s, "FDSTOREREMOVE=1")
        });
        removed.extend(field(&msg, "FDNAME=").map(str::to_string));
    }
    removed.sort();
    let mut want = stored;
    want.sort();
    assert_eq!(removed, want);

    p.signal("TERM");
    m.until("STOPPING=1", Duration::from_secs(10), |s| {
        has(s, "STOPPING=1")
    });
    assert_eq!(p.wait_exit(Duration::from_secs(15)), Some(0), "{}", p.log());
}

#[test]
fn adopts_inherited_sockets_and_closes_the_ones_no_listener_wants() {
    let (port, stale) = (free_port(), free_port());
    let repo = Repo::new();
    repo_with(&repo, port, true);
    let mut m = Manager::new();
    // systemd-socket-activate binds both ports, waits for a connection, then runs gatehouse
    // with them as LISTEN_FDS/LISTEN_FDNAMES: what systemd does with a stored socket.
    let wrap: Vec<String> = [
        "systemd-socket-activate".to_string(),
        format!("--listen=127.0.0.1:{port}"),
        format!("--listen=127.0.0.1:{stale}"),
        "--fdname=old-web:old-stale".into(),
        format!("--setenv=NOTIFY_SOCKET={}", m.socket_path()),
        "--setenv=WATCHDOG_USEC=200000".into(),
        "--setenv=GATEHOUSE_LOG=info".into(),
    ]
    .into();
    let p = start(&repo, &m, &wrap);

    // This connection exists before gatehouse does; gatehouse must answer it.
    let mut early = wait_for("the activator's socket", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    early
        .write_all(b"GET / HTTP/1.1\r\nHost: nowhere.example.com\r\nConnection: close\r\n\r\n")
        .expect("write");
    early
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = early.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "{answer:?}\n{}",
        p.log()
    );

    m.until("READY=1", Duration::from_secs(20), |s| has(s, "READY=1"));
    // The adopted socket is already in the store: not stored again. The stale one left it.
    assert!(!m.seen.iter().any(|s| has(s, "FDSTORE=1")), "{:?}", m.seen);
    assert!(
        m.seen
            .iter()
            .any(|s| has(s, "FDSTOREREMOVE=1") && field(s, "FDNAME=") == Some("old-stale")),
        "{:?}",
        m.seen
    );
    assert!(p.log().contains("adopted a listening socket from systemd"));
    wait_for("the stale port closed", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", stale))
            .is_err()
            .then_some(())
    });
    assert_eq!(
        raw_http(
            format!("127.0.0.1:{port}").parse().expect("addr"),
            "GET",
            "/"
        )
        .map(|r| r.0),
        Some(404)
    );
}
