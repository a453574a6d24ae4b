//! Real Git servers on loopback for the sync agent: a bare repository (file://), `git
//! daemon` (git://), smart HTTP through `git http-backend` behind nginx + fcgiwrap (with
//! basic auth, a bearer token, and TLS from a test CA), and sshd with a deploy key on a
//! non-22 port; plus a server that accepts connections and never answers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

/// Runs a command in `dir`, panicking with its stderr on failure; returns stdout.
pub fn run(dir: &Path, prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An origin repository (bare, `<base>/origin.git`) and a work clone that commits and pushes.
pub struct Origin {
    /// Folder holding `origin.git` and `work/` (servers export it).
    pub base: PathBuf,
    /// The bare repository.
    pub bare: PathBuf,
    /// The working clone.
    pub work: PathBuf,
    _dir: tempfile::TempDir,
    /// Seconds added to commit dates, so each commit is strictly newer than the last.
    clock: std::cell::Cell<i64>,
}

impl Origin {
    /// An empty origin with branch `main`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().to_path_buf();
        let bare = base.join("origin.git");
        run(
            &base,
            "git",
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        // Lets a pinned commit be fetched by id over git:// and http.
        run(
            &bare,
            "git",
            &["config", "uploadpack.allowAnySHA1InWant", "true"],
        );
        let work = base.join("work");
        run(&base, "git", &["init", "-q", "-b", "main", "work"]);
        for (k, v) in [
            ("user.name", "tester"),
            ("user.email", "tester@example.com"),
            ("commit.gpgsign", "false"),
            ("gpg.format", "ssh"),
        ] {
            run(&work, "git", &["config", k, v]);
        }
        run(
            &work,
            "git",
            &["remote", "add", "origin", &bare.display().to_string()],
        );
        Self {
            base,
            bare,
            work,
            _dir: dir,
            clock: std::cell::Cell::new(1_700_000_000),
        }
    }

    /// Writes a file in the work tree.
    pub fn write(&self, path: &str, content: &str) -> &Self {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
        self
    }

    /// Removes a file or folder from the work tree.
    pub fn remove(&self, path: &str) -> &Self {
        let p = self.work.join(path);
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_dir_all(&p);
        self
    }

    /// Commits everything (signed with the SSH key `sign`, if given); returns the id.
    pub fn commit(&self, msg: &str, sign: Option<&Path>) -> String {
        run(&self.work, "git", &["add", "-A"]);
        self.clock.set(self.clock.get() + 10);
        let date = format!("{} +0000", self.clock.get());
        let mut args: Vec<String> = Vec::new();
        if let Some(k) = sign {
            args.extend(["-c".into(), format!("user.signingkey={}", k.display())]);
        }
        args.extend(["commit".into(), "-q".into(), "--allow-empty".into()]);
        if sign.is_some() {
            args.push("-S".into());
        }
        args.extend(["-m".into(), msg.into()]);
        let out = Command::new("git")
            .args(&args)
            .current_dir(&self.work)
            .env("GIT_COMMITTER_DATE", &date)
            .env("GIT_AUTHOR_DATE", &date)
            .output()
            .expect("git commit");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.head()
    }

    /// The work clone's HEAD.
    pub fn head(&self) -> String {
        run(&self.work, "git", &["rev-parse", "HEAD"])
            .trim()
            .to_string()
    }

    /// Pushes `main` (forced).
    pub fn push(&self) {
        run(
            &self.work,
            "git",
            &["push", "-q", "-f", "origin", "HEAD:main"],
        );
    }

    /// Commits and pushes; returns the id.
    pub fn commit_push(&self, msg: &str, sign: Option<&Path>) -> String {
        let id = self.commit(msg, sign);
        self.push();
        id
    }

    /// Force-pushes `main` back to `id`.
    pub fn force_main_to(&self, id: &str) {
        run(
            &self.work,
            "git",
            &[
                "push",
                "-q",
                "-f",
                "origin",
                &format!("{id}:refs/heads/main"),
            ],
        );
    }

    /// Deletes `main` on the origin.
    pub fn delete_main(&self) {
        run(&self.bare, "git", &["update-ref", "-d", "refs/heads/main"]);
    }

    /// `file://` URL of the origin.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// A child process killed on drop.
pub struct Proc {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd`, logging to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).expect("log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().expect("dup")))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Self { child, log }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_port(port: u16, what: &str, p: &Proc) {
    wait_for(what, Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    let _ = p;
}

/// `git daemon` exporting a folder.
pub struct GitDaemon {
    /// Port.
    pub port: u16,
    proc: Proc,
}

impl GitDaemon {
    /// Serves every repository under `base`.
    pub fn start(base: &Path, logdir: &Path) -> Self {
        let port = free_port();
        // `git daemon` runs `git-daemon` as a child, and killing the wrapper would leave the
        // daemon serving: start it directly.
        let exec = run(base, "git", &["--exec-path"]);
        let mut cmd = Command::new(Path::new(exec.trim()).join("git-daemon"));
        cmd.args([
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
        ]);
        let proc = Proc::spawn(cmd, logdir.join(format!("git-daemon-{port}.log")));
        wait_port(port, "git daemon", &proc);
        Self { port, proc }
    }

    /// URL of `origin.git`.
    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}/origin.git", self.port)
    }

    /// Stops the daemon.
    pub fn stop(&mut self) {
        self.proc.stop();
    }
}

/// How the HTTP server wants clients to authenticate.
#[derive(Clone)]
pub enum HttpAuth {
    /// Basic auth: user and password (the token).
    Basic(String, String),
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

/// nginx + fcgiwrap + `git http-backend`, on plain HTTP and on HTTPS with a test CA.
pub struct HttpGit {
    /// Plain HTTP port.
    pub port: u16,
    /// HTTPS port.
    pub tls_port: u16,
    /// The CA that signed the server certificate (PEM file).
    pub ca_file: PathBuf,
    /// The access log (one line per request).
    pub access_log: PathBuf,
    _fcgi: Proc,
    _nginx: Proc,
}

impl HttpGit {
    /// Serves repositories under `base`, requiring `auth`.
    pub fn start(base: &Path, dir: &Path, auth: &HttpAuth) -> Self {
        let (port, tls_port) = (free_port(), free_port());
        std::fs::create_dir_all(dir.join("tmp")).expect("mkdir");
        let sock = dir.join("fcgi.sock");
        let _ = std::fs::remove_file(&sock);
        let mut fc = Command::new("fcgiwrap");
        // One process (no -c): a preforked pool would outlive a killed parent.
        fc.args(["-s", &format!("unix:{}", sock.display())]);
        let fcgi = Proc::spawn(fc, dir.join("fcgiwrap.log"));
        wait_for("fcgiwrap socket", Duration::from_secs(10), || {
            sock.exists().then_some(())
        });
        let ca = super::certs::Ca::new("git test CA");
        let leaf = ca.server(&["localhost", "127.0.0.1"], 7);
        std::fs::write(dir.join("tls.crt"), &leaf.cert).expect("cert");
        std::fs::write(dir.join("tls.key"), &leaf.key).expect("key");
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, &ca.pem).expect("ca");
        let guard = match auth {
            HttpAuth::Basic(user, pass) => {
                let hash = run(dir, "openssl", &["passwd", "-apr1", pass]);
                std::fs::write(dir.join("htpasswd"), format!("{user}:{}", hash.trim()))
                    .expect("htpasswd");
                format!(
                    "auth_basic \"git\"; auth_basic_user_file {}/htpasswd;",
                    dir.display()
                )
            }
            HttpAuth::Bearer(t) => format!(
                "if ($http_authorization != \"Bearer {t}\") {{ add_header WWW-Authenticate 'Basic realm=\"git\"' always; return 401; }}"
            ),
        };
        let access_log = dir.join("access.log");
        let d = dir.display();
        let location = format!(
            "location / {{ {guard} include /etc/nginx/fastcgi_params; fastcgi_pass unix:{}; fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend; fastcgi_param GIT_PROJECT_ROOT {}; fastcgi_param GIT_HTTP_EXPORT_ALL \"\"; fastcgi_param PATH_INFO $uri; fastcgi_param REMOTE_USER $remote_user; }}",
            sock.display(),
            base.display()
        );
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log {}; client_body_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; proxy_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen 127.0.0.1:{port}; {location} }}\n\
             server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {d}/tls.crt; ssl_certificate_key {d}/tls.key; {location} }} }}\n",
            access_log.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("conf");
        let mut ng = Command::new("nginx");
        ng.args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")]);
        let nginx = Proc::spawn(ng, dir.join("nginx.log"));
        wait_port(port, "nginx", &nginx);
        wait_port(tls_port, "nginx tls", &nginx);
        Self {
            port,
            tls_port,
            ca_file,
            access_log,
            _fcgi: fcgi,
            _nginx: nginx,
        }
    }

    /// Requests logged so far.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

/// sshd on a loopback port, serving the repositories through `git-upload-pack` to one
/// deploy key.
pub struct Sshd {
    /// Port.
    pub port: u16,
    /// The server's host public key (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    _proc: Proc,
}

/// Generates an ed25519 key pair at `path`; returns the public key line.
pub fn ssh_keygen(path: &Path, comment: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("pub")
        .trim()
        .to_string()
}

impl Sshd {
    /// Starts sshd accepting `deploy_pub` for the current user.
    pub fn start(dir: &Path, deploy_pub: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        // sshd's privilege separation folder.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let host = dir.join("host_ed25519");
        let host_key = ssh_keygen(&host, "host");
        std::fs::write(dir.join("authorized_keys"), format!("{deploy_pub}\n")).expect("keys");
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}/sshd.pid\nAuthorizedKeysFile {}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            host.display(),
            dir.display(),
            dir.display()
        );
        std::fs::write(dir.join("sshd_config"), cfg).expect("cfg");
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"]).arg(dir.join("sshd_config"));
        let proc = Proc::spawn(cmd, dir.join("sshd.log"));
        wait_port(port, "sshd", &proc);
        Self {
            port,
            host_key,
            _proc: proc,
        }
    }

    /// `ssh://` URL of `origin.git` under `base`.
    pub fn url(&self, base: &Path) -> String {
        let user = run(Path::new("/"), "id", &["-un"]).trim().to_string();
        format!(
            "ssh://{user}@127.0.0.1:{}{}/origin.git",
            self.port,
            base.display()
        )
    }

    /// The known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key)
    }
}

/// Accepts connections and never answers (a hung server). Connections are held open until
/// the test process exits.
pub struct Hang {
    /// Port.
    pub port: u16,
}

impl Hang {
    /// Starts it.
    pub fn start() -> Self {
        let port = free_port();
        let l = super::bind_loopback(port);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in l.incoming().flatten() {
                held.push(c);
            }
        });
        Self { port }
    }
}
