//! Signatures made by the real tools (ssh-keygen through git, gpg through git), verified here.

use std::path::Path;
use std::process::Command;

use super::*;

fn run(dir: &Path, cmd: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut c = Command::new(cmd);
    c.args(args).current_dir(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git_repo(dir: &Path) {
    run(dir, "git", &["init", "-q", "-b", "main"], &[]);
    for (k, v) in [
        ("user.name", "t"),
        ("user.email", "t@example.com"),
        ("commit.gpgsign", "false"),
    ] {
        run(dir, "git", &["config", k, v], &[]);
    }
}

fn ssh_key(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    (key, public.trim().to_string())
}

fn commit_ssh_signed(repo: &Path, key: Option<&Path>, file: &str) -> Oid {
    std::fs::create_dir_all(repo.join(file).parent().expect("parent")).expect("mkdir");
    std::fs::write(repo.join(file), format!("# {file}\n")).expect("write");
    run(repo, "git", &["add", "-A"], &[]);
    match key {
        Some(k) => {
            let signing = format!("user.signingkey={}", k.display());
            run(
                repo,
                "git",
                &[
                    "-c",
                    "gpg.format=ssh",
                    "-c",
                    &signing,
                    "commit",
                    "-q",
                    "-S",
                    "-m",
                    file,
                ],
                &[],
            )
        }
        None => run(repo, "git", &["commit", "-q", "-m", file], &[]),
    };
    let id = run(repo, "git", &["rev-parse", "HEAD"], &[]);
    Oid::from_str(id.trim()).expect("oid")
}

#[test]
fn ssh_signed_commits_verify_against_the_trust_store_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (k1, p1) = ssh_key(tmp.path(), "alice");
    let (k2, _p2) = ssh_key(tmp.path(), "mallory");
    let repo_dir = tmp.path().join("r");
    std::fs::create_dir(&repo_dir).expect("mkdir");
    git_repo(&repo_dir);
    let good = commit_ssh_signed(&repo_dir, Some(&k1), "a.yaml");
    let other = commit_ssh_signed(&repo_dir, Some(&k2), "b.yaml");
    let unsigned = commit_ssh_signed(&repo_dir, None, "c.yaml");
    let repo = Repository::open(&repo_dir).expect("open");
    let store = TrustStore {
        keys: keys::parse(&p1, "test").expect("keys"),
    };
    let v = commit(&repo, good, &store).expect("verifies");
    assert!(v.key.matches_entry(&p1));
    let e = commit(&repo, other, &store).expect_err("untrusted");
    assert!(e.to_string().contains("not in the trust store"), "{e}");
    let e = commit(&repo, unsigned, &store).expect_err("unsigned");
    assert!(matches!(e, VerifyError::Unsigned { .. }), "{e}");
}

#[test]
fn a_tampered_commit_body_fails() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (k1, p1) = ssh_key(tmp.path(), "alice");
    let repo_dir = tmp.path().join("r");
    std::fs::create_dir(&repo_dir).expect("mkdir");
    git_repo(&repo_dir);
    let good = commit_ssh_signed(&repo_dir, Some(&k1), "a.yaml");
    let repo = Repository::open(&repo_dir).expect("open");
    let (sig, data) = repo.extract_signature(&good, None).expect("signed");
    let mut data = data.to_vec();
    data.extend_from_slice(b"tampered");
    let store = TrustStore {
        keys: keys::parse(&p1, "test").expect("keys"),
    };
    let e = check(&sig, &data, &store).expect_err("tampered");
    assert!(e.contains("invalid"), "{e}");
}

#[test]
fn openpgp_signed_commits_verify_with_gpg_made_keys() {
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path().join("gnupg");
    std::fs::create_dir(&home).expect("mkdir");
    let env = [("GNUPGHOME", home.as_path())];
    run(
        tmp.path(),
        "gpg",
        &[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Tester <tester@example.com>",
            "ed25519",
            "sign",
            "never",
        ],
        &env,
    );
    let listing = run(
        tmp.path(),
        "gpg",
        &["--batch", "--with-colons", "--list-keys"],
        &env,
    );
    let fpr = listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .map(|l| l.trim_end_matches(':').to_string())
        .expect("fingerprint");
    let armored = run(
        tmp.path(),
        "gpg",
        &["--batch", "--armor", "--export", &fpr],
        &env,
    );
    let repo_dir = tmp.path().join("r");
    std::fs::create_dir(&repo_dir).expect("mkdir");
    git_repo(&repo_dir);
    std::fs::write(repo_dir.join("x.yaml"), "# x\n").expect("write");
    run(&repo_dir, "git", &["add", "-A"], &env);
    let signing = format!("user.signingkey={fpr}");
    run(
        &repo_dir,
        "git",
        &["-c", &signing, "commit", "-q", "-S", "-m", "signed"],
        &env,
    );
    let id = Oid::from_str(run(&repo_dir, "git", &["rev-parse", "HEAD"], &[]).trim()).expect("oid");
    let repo = Repository::open(&repo_dir).expect("open");
    let store = TrustStore {
        keys: keys::parse(&armored, "gpg").expect("armored key"),
    };
    let v = commit(&repo, id, &store).expect("verifies");
    assert!(v.key.matches_entry(&fpr), "fingerprint entry");
    assert!(v.key.matches_entry(&fpr[fpr.len() - 16..]), "long key id");
    assert!(v.key.matches_entry(&armored), "armored entry");
    assert!(!v.key.matches_entry("ssh-ed25519 AAAA"), "not an ssh key");
    // An unrelated trust store refuses it.
    let (_, p1) = ssh_key(tmp.path(), "alice");
    let other = TrustStore {
        keys: keys::parse(&p1, "test").expect("keys"),
    };
    assert!(commit(&repo, id, &other).is_err());
}

#[test]
fn tenant_keys_change_only_their_own_folders() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_, pa) = ssh_key(tmp.path(), "a");
    let (_, pb) = ssh_key(tmp.path(), "b");
    let (_, pp) = ssh_key(tmp.path(), "platform");
    let ident = |p: &str| Verified {
        key: match &keys::parse(p, "t").expect("key")[0] {
            TrustedKey::Ssh(k) => KeyIdent::Ssh(k.clone()),
            TrustedKey::Pgp(_) => unreachable!("ssh"),
        },
    };
    let signers: BTreeMap<String, Vec<String>> = [
        ("team-a".to_string(), vec![pa.clone()]),
        ("team-b".to_string(), vec![pb.clone()]),
        ("team-c".to_string(), vec![]),
    ]
    .into();
    let change = |platform: bool, ts: &[&str]| Changes {
        platform,
        tenants: ts.iter().map(|s| s.to_string()).collect(),
    };
    assert!(authorize(&ident(&pa), &change(false, &["team-a"]), &signers, &signers).is_ok());
    let e = authorize(
        &ident(&pa),
        &change(false, &["team-a", "team-b"]),
        &signers,
        &signers,
    )
    .expect_err("a touches b");
    assert!(e.to_string().contains("tenants/team-b/"), "{e}");
    assert!(authorize(&ident(&pa), &change(true, &[]), &signers, &signers).is_err());
    assert!(
        authorize(&ident(&pa), &change(false, &["team-c"]), &signers, &signers).is_err(),
        "an empty signer list is platform-only"
    );
    assert!(
        authorize(
            &ident(&pp),
            &change(true, &["team-a", "team-b"]),
            &signers,
            &signers
        )
        .is_ok(),
        "platform keys change anything"
    );
    // The served list decides: a commit adding a's key to team-b's signers does not help.
    let mut new = signers.clone();
    new.insert("team-b".into(), vec![pb, pa.clone()]);
    assert!(authorize(&ident(&pa), &change(false, &["team-b"]), &signers, &new).is_err());
}

#[test]
fn ssh_signed_annotated_tags_verify() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (k1, p1) = ssh_key(tmp.path(), "release-manager");
    let repo_dir = tmp.path().join("r");
    std::fs::create_dir(&repo_dir).expect("mkdir");
    git_repo(&repo_dir);
    commit_ssh_signed(&repo_dir, None, "a.yaml");
    let signing = format!("user.signingkey={}", k1.display());
    run(
        &repo_dir,
        "git",
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing,
            "tag",
            "-s",
            "-m",
            "v1",
            "v1.0.0",
        ],
        &[],
    );
    run(
        &repo_dir,
        "git",
        &["tag", "-a", "-m", "unsigned", "v1.0.1"],
        &[],
    );
    let id =
        |t: &str| Oid::from_str(run(&repo_dir, "git", &["rev-parse", t], &[]).trim()).expect("oid");
    let repo = Repository::open(&repo_dir).expect("open");
    let store = TrustStore {
        keys: keys::parse(&p1, "test").expect("keys"),
    };
    let v = tag(&repo, id("v1.0.0"), &store).expect("signed tag verifies");
    assert!(v.key.matches_entry(&p1));
    let e = tag(&repo, id("v1.0.1"), &store).expect_err("unsigned tag");
    assert!(matches!(e, VerifyError::Unsigned { .. }), "{e}");
}
