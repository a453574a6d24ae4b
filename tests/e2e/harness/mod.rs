//! The end-to-end harness: a `gatehouse` process on a repository written by the test, real
//! backends on loopback, and helpers to drive real clients (curl, openssl, h2load, aioquic).

pub mod backend;
pub mod certs;
pub mod dns;
pub mod git;
pub mod h3;
pub mod otlp;
pub mod scripted;
pub mod sync;
pub mod tools;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use backend::Backends;

/// A free loopback port, below the kernel's ephemeral range (32768+ on Linux) and above the
/// benches' block (`bench/`: 18000..=20999).
///
/// Not `bind(:0)`: that draws from the ephemeral range, where the source port of every
/// client connection (curl, h2load, the gateway's upstream connections, other test
/// processes) also comes from, so the port could be taken between the pick and the gateway's
/// or backend's bind (seen as "Address already in use", or a test talking to another test's
/// server). Ports are handed out in sequence from a per-process start and each is reserved
/// across processes by an exclusive lock on `$TMPDIR/gatehouse-test-ports/<port>`, held until
/// this process exits: two test runs at once (two checkouts, CI beside a developer's run) saw
/// the same port free, and the second bind failed. The bind check (TCP and UDP) still skips
/// ports something else holds.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 21_000;
    const SPAN: u32 = 11_700;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("gatehouse-test-ports");
    std::fs::create_dir_all(&dir).expect("port lock directory");
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + n) % SPAN).expect("port");
        // The demo's TCP listener (examples/repo), which its test locks with `lock_ports`.
        if port == 31400 {
            continue;
        }
        let Ok(lock) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        // UDP too: HTTPS servers also listen for QUIC on the same port.
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            HELD.lock().expect("lock").push(lock);
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Holds the port locks of [`free_port`] for fixed `ports` (a server whose ports are not the
/// test's to choose, such as `gatehouse demo`), waiting while another test run holds them.
pub fn lock_ports(ports: &[u16]) -> Vec<std::fs::File> {
    let dir = std::env::temp_dir().join("gatehouse-test-ports");
    std::fs::create_dir_all(&dir).expect("port lock directory");
    ports
        .iter()
        .map(|p| {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(p.to_string()))
                .expect("port lock file");
            f.lock().expect("port lock");
            f
        })
        .collect()
}

/// A listener on `127.0.0.1:port` (a port from [`free_port`]), for servers the test process
/// runs itself. `free_port` only saw the port free an instant earlier, and once (stop 26, CI)
/// the bind that followed failed with "Address already in use" without a cause being found:
/// so a refused bind is tried again for a few seconds, and if it still fails the panic names
/// the port and what `ss` shows on it.
pub fn bind_loopback(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let holders = Command::new("ss")
                    .args(["-tanp", &format!("( sport = :{port} )")])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("bind 127.0.0.1:{port}: {e}\nss on the port:\n{holders}");
            }
        }
    }
}

/// [`bind_loopback`] as a tokio listener, registered with `rt`.
pub fn bind_loopback_tokio(rt: &tokio::runtime::Runtime, port: u16) -> tokio::net::TcpListener {
    let l = bind_loopback(port);
    l.set_nonblocking(true).expect("non-blocking listener");
    let _guard = rt.enter();
    tokio::net::TcpListener::from_std(l).expect("tokio listener")
}

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/e2e-xxxx -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary, built by the test command before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Polls `f` until it returns `Some` or `deadline` passes.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A repository directory the test writes.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// An empty repository.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Writes `path` (relative) with `content`.
    pub fn write(&self, path: &str, content: &str) -> &Self {
        let p = self.dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        self
    }

    /// Removes `path`.
    pub fn remove(&self, path: &str) -> &Self {
        let _ = std::fs::remove_file(self.dir.path().join(path));
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A running `gatehouse run` process.
pub struct Gateway {
    child: Child,
    /// Admin address.
    pub admin: SocketAddr,
    /// Credentials directory.
    pub creds: PathBuf,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Gateway {
    /// Starts serving `repo` with credentials from `creds`, and waits for `/ready`.
    pub fn start(repo: &Repo, creds: &Path) -> Self {
        Self::start_with(repo, creds, &[])
    }

    /// Like [`start`](Self::start) with extra arguments.
    pub fn start_with(repo: &Repo, creds: &Path, extra: &[&str]) -> Self {
        Self::launch(&[], "--repo", repo.path(), creds, extra, &[], true)
    }

    /// Like [`start_with`](Self::start_with) with extra environment variables.
    pub fn start_env(repo: &Repo, creds: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(&[], "--repo", repo.path(), creds, extra, env, true)
    }

    /// Like [`start`](Self::start), run through `wrap` (a command that ends by executing
    /// its arguments, such as `unshare`).
    pub fn start_wrapped(repo: &Repo, creds: &Path, wrap: &[&str]) -> Self {
        Self::launch(wrap, "--repo", repo.path(), creds, &[], &[], true)
    }

    /// Serves the sync agent's releases folder (`gatehouse run --releases`); with
    /// `wait_ready`, waits until a release is served.
    pub fn start_releases(releases: &Path, creds: &Path, extra: &[&str], wait_ready: bool) -> Self {
        Self::launch(&[], "--releases", releases, creds, extra, &[], wait_ready)
    }

    fn launch(
        wrap: &[&str],
        flag: &str,
        source: &Path,
        creds: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        ready: bool,
    ) -> Self {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("gatehouse.log");
        let out = std::fs::File::create(&log).expect("log file");
        let gatehouse = bin("gatehouse");
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&gatehouse);
                c
            }
            None => Command::new(&gatehouse),
        };
        let child = cmd
            .arg("run")
            .arg(flag)
            .arg(source)
            .arg("--credentials")
            .arg(creds)
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--workers")
            .arg("2")
            .args(extra)
            .env("GATEHOUSE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out.try_clone().expect("dup")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn gatehouse");
        let mut g = Self {
            child,
            admin,
            creds: creds.to_path_buf(),
            log,
            _logdir: logdir,
        };
        if ready {
            g.wait_ready();
        }
        g
    }

    pub fn wait_ready(&mut self) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gatehouse exited with {status}:\n{}", self.log());
            }
            if let Some((200, _)) = self.admin_get("/ready") {
                return;
            }
            assert!(Instant::now() < end, "gatehouse not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET on the admin endpoint: (status, body).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        raw_http(self.admin, "GET", path)
    }

    /// `POST /reload`: (status, body).
    pub fn reload(&self) -> (u16, String) {
        raw_http(self.admin, "POST", "/reload").expect("admin reachable")
    }

    /// `/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (_, body) = self.admin_get("/status").expect("status");
        serde_json::from_str(&body).expect("status json")
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through the libc crate; the pid is our child's.
        let pid = i32::try_from(self.child.id()).expect("pid");
        unsafe_free_kill(pid, sig);
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// kill(2) without `unsafe` in the test crate: through the `kill` command.
fn unsafe_free_kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gatehouse log ----\n{}", self.log());
        }
    }
}

/// A minimal HTTP/1.1 exchange on a fresh connection: (status, body).
pub fn raw_http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The common head of a test's gatehouse.yaml: one ingress group `public-gw` on 127.0.0.1
/// with the given port mappings, plus `extra` YAML documents (Tenants, ...).
pub fn platform(ports: &[(u16, u16)], extra: &str) -> String {
    let mut s = String::from(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: appliance}\nspec:\n  profile: empty\n  components:\n    ingressGateways:\n    - name: public-gw\n      label: {istio: public-gw}\n      k8s:\n        service:\n          loadBalancerIP: 127.0.0.1\n          ports:\n",
    );
    for (p, t) in ports {
        s.push_str(&format!(
            "          - {{name: p{p}, port: {p}, targetPort: {t}}}\n"
        ));
    }
    s.push_str("---\n");
    s.push_str(extra);
    s
}

/// A Tenant document.
pub fn tenant(name: &str, hosts: &[&str], extra_spec: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: gatehouse.dev/v1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{}]\n  gateways: [public-gw]\n{extra_spec}\n---\n",
        hosts.join(", ")
    )
}

/// A Gateway `web` serving `web.example.com` on the public group's port 80, and a
/// VirtualService `web` bound to it with `http` rules (YAML list items indented by two
/// spaces): the usual start of a one-host tenant's routes.
pub fn web_routes(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [web.example.com]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\nspec:\n  hosts: [web.example.com]\n  gateways: [web]\n  http:\n{http}---\n"
    )
}

/// A STATIC ServiceEntry named `name` for host `host` with endpoints `(port, labels)`.
pub fn service(name: &str, host: &str, eps: &[(u16, &str)]) -> String {
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{host}\"]\n  location: MESH_INTERNAL\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: STATIC\n  endpoints:\n"
    );
    for (p, labels) in eps {
        s.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {p}}}, labels: {{{labels}}}}}\n"
        ));
    }
    s.push_str("---\n");
    s
}
