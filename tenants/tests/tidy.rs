//! The `tenants` crate stays pure: no async runtime, no sockets, no TLS, no git in its normal
//! dependency graph (STYLE.md, "Keep 'no I/O' checked"; rust-analyzer `xtask/src/tidy.rs`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Crates that would mean I/O (or an I/O runtime) inside the model.
const FORBIDDEN: &[&str] = &[
    "tokio", "hyper", "rustls", "quinn", "git2", "h3", "mio", "socket2",
];

/// Crate names in `cargo tree -e normal -p tenants --prefix none`.
fn normal_dependencies() -> BTreeSet<String> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-e", "normal", "-p", "tenants", "--prefix", "none"])
        .current_dir(manifest_dir)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("cargo tree prints UTF-8");
    // Each line is `name vX.Y.Z [(path)] [(*)]`.
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn tenants_has_no_io_dependencies() {
    let deps = normal_dependencies();
    // Not vacuous: the tree was really printed and parsed.
    assert!(
        deps.contains("tenants"),
        "cargo tree output lacks tenants itself: {deps:?}"
    );
    assert!(
        deps.contains("serde"),
        "cargo tree output lacks serde: {deps:?}"
    );
    assert!(
        deps.len() > 5,
        "suspiciously small dependency tree: {deps:?}"
    );
    let found: Vec<&str> = FORBIDDEN
        .iter()
        .copied()
        .filter(|f| deps.contains(*f))
        .collect();
    assert!(
        found.is_empty(),
        "tenants must do no I/O, but depends on {found:?} (full tree: {deps:?})"
    );
}
