//! The README's first command: `gatehouse demo`, and every command it prints, run as a user
//! would paste them, with what each must show.
//!
//! The demo listens on fixed ports (examples/repo: 18080, 18443-18445, 19443, 31400; backends
//! 19001-19302), outside what `free_port` hands out; their port locks are held while it runs,
//! so two test runs on one machine take turns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{bin, bin_dir, free_port, lock_ports, raw_http, wait_for};

/// Every port the demo listens on: examples/repo's listeners and the demo's backends.
const DEMO_PORTS: &[u16] = &[
    18080, 18443, 18444, 18445, 19443, 31400, 19001, 19002, 19003, 19004, 19101, 19102, 19201,
    19202, 19301, 19302,
];

/// The running demo; stopped with SIGTERM so it stops its sync agent too.
struct Demo {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gatehouse demo output ----\n{}", self.output());
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs one block of the guide with bash, from the workspace root, with the built binaries
/// first on PATH: (exit code, stdout and stderr).
fn run_block(script: &str) -> (i32, String) {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(workspace_root())
        .env("PATH", path)
        .output()
        .expect("bash");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The guide split into (comment, commands) blocks: a block starts at a `#` line after a
/// blank one; the text before the first comment is the banner.
fn blocks(guide: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for para in guide.split("\n\n") {
        let mut comment = String::new();
        let mut script = String::new();
        for line in para.lines() {
            if script.is_empty() && line.starts_with('#') {
                comment.push_str(line);
                comment.push('\n');
            } else {
                script.push_str(line);
                script.push('\n');
            }
        }
        if !comment.is_empty() {
            out.push((comment, script));
        }
    }
    out
}

fn block<'a>(blocks: &'a [(String, String)], comment: &str) -> &'a str {
    blocks
        .iter()
        .find(|(c, _)| c.contains(comment))
        .map(|(_, s)| s.as_str())
        .unwrap_or_else(|| panic!("the guide has no block \"{comment}\": {blocks:#?}"))
}

#[test]
fn the_demo_serves_everything_its_guide_shows() {
    let _ports = lock_ports(DEMO_PORTS);
    let admin = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("demo.out");
    let file = std::fs::File::create(&out).expect("output file");
    let child = Command::new(bin("gatehouse"))
        .args(["demo", "--admin", &admin])
        .current_dir(workspace_root())
        .env("GATEHOUSE_LOG", "warn")
        .stdout(Stdio::from(file.try_clone().expect("dup")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("spawn gatehouse demo");
    let demo = Demo {
        child,
        out,
        _dir: dir,
    };
    let addr = admin.parse().expect("admin address");
    wait_for("the demo ready", Duration::from_secs(30), || {
        matches!(raw_http(addr, "GET", "/ready"), Some((200, _))).then_some(())
    });
    let guide = demo.output();
    let blocks = blocks(&guide);

    let (rc, text) = run_block(block(&blocks, "# host routing"));
    assert_eq!(rc, 0, "{text}");
    let body: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON body");
    assert_eq!(body["backend"], "web-default", "host routing: {text}");
    assert_eq!(
        body["host"], "web.example.com:18080",
        "Host preserved: {text}"
    );

    // The printed loop: `uniq -c` counts of web-api-v1 and web-api-v2 over 100 requests.
    let (rc, text) = run_block(block(&blocks, "split 70/30"));
    assert_eq!(rc, 0, "{text}");
    let count = |name: &str| -> u32 {
        text.lines()
            .find(|l| l.trim_end().ends_with(name))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (v1, v2) = (count("web-api-v1"), count("web-api-v2"));
    assert_eq!(v1 + v2, 100, "{text}");
    assert!((55..=85).contains(&v2), "70/30 split, v2 got {v2}: {text}");

    let (rc, text) = run_block(block(&blocks, "TLS terminated"));
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("web-api-v"), "TLS, HTTP/2: {text}");

    let (rc, text) = run_block(block(&blocks, "passes db.example.com through"));
    assert_eq!(rc, 0, "{text}");
    assert!(
        text.contains("subject=") && text.contains("db.example.com"),
        "passthrough shows the backend's own certificate: {text}"
    );

    let (rc, text) = run_block(block(&blocks, "mutual TLS"));
    assert_eq!(rc, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        text.contains("partner-api") && lines.last() == Some(&"refused"),
        "with a client certificate the partner API answers, without one it is refused: {text}"
    );

    let (rc, text) = run_block(block(&blocks, "TCP on 31400"));
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("hello"), "the TCP echo: {text}");
    assert!(
        text.contains("tcp-echo-v"),
        "an echo backend names itself: {text}"
    );

    let (rc, text) = run_block(block(&blocks, "what is configured"));
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("web.example.com"), "routes: {text}");
    assert!(text.contains("\"generation\""), "status: {text}");

    // GitOps: the printed edit and commit, then the route is served by the sync agent's
    // next release. The block's own curl may run before that release; the test polls it.
    let gitops = block(&blocks, "Add a route and commit it");
    let (rc, text) = run_block(gitops);
    assert_eq!(rc, 0, "the printed edit and commit: {text}");
    let check = gitops
        .lines()
        .rfind(|l| l.starts_with("curl "))
        .expect("the block ends with a curl");
    wait_for(
        "the committed route served",
        Duration::from_secs(20),
        || {
            let (_, t) = run_block(check);
            (t.trim() == "hello from git").then_some(())
        },
    );

    // Status, plan and rollback as printed. Status asks the appliance what it serves now.
    // Rollback returns to the first release, where /hello falls to the catch-all route.
    let per_tenant = block(&blocks, "per-tenant status");
    let (rc, text) = run_block(per_tenant.lines().next().expect("status"));
    assert_eq!(rc, 0, "{text}");
    let appliance = text
        .lines()
        .find(|l| l.starts_with("appliance:"))
        .unwrap_or_else(|| panic!("status names the appliance: {text}"));
    assert!(
        appliance.contains("generation") && !appliance.contains("no appliance listening"),
        "the demo's appliance is listening: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("team-a") && l.contains("applied")),
        "{text}"
    );
    let (rc, text) = run_block(per_tenant);
    assert_eq!(rc, 0, "status, plan and rollback: {text}");
    assert!(text.contains("current -> 000001-"), "rolled back: {text}");
    wait_for("the rollback served", Duration::from_secs(20), || {
        let (_, t) = run_block(check);
        t.contains("web-default").then_some(())
    });
    let (_, text) = run_block(per_tenant.lines().next().expect("status"));
    let first = text
        .lines()
        .find(|l| l.starts_with("release:"))
        .and_then(|l| l.split("revision ").nth(1))
        .map(|r| r.trim_end_matches(')').to_string())
        .unwrap_or_else(|| panic!("status names the release: {text}"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("appliance:") && l.ends_with(&format!("revision {first}"))),
        "after the rollback the appliance serves the first release's revision {first}: {text}"
    );
}
