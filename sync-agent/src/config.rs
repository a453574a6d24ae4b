//! Settings: a TOML file (`/etc/gatehouse/sync.toml`), every field of which is also a flag;
//! a flag wins over the file. Resolved once into typed [`Settings`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::refs::RefSelector;

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// The file, as written: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[source]`.
    #[serde(default)]
    pub source: SourceFile,
    /// `[sync]`.
    #[serde(default)]
    pub sync: SyncFile,
    /// `[http]`.
    #[serde(default)]
    pub http: HttpFile,
    /// `[verify]`.
    #[serde(default)]
    pub verify: VerifyFile,
}

/// `[source]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    url: Option<String>,
    branch: Option<String>,
    tag: Option<String>,
    semver: Option<String>,
    commit: Option<String>,
    username: Option<String>,
    token_file: Option<PathBuf>,
    bearer_token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    ssh_key_file: Option<PathBuf>,
    ssh_key_passphrase_file: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    depth: Option<u32>,
    timeout: Option<String>,
}

/// `[sync]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFile {
    interval: Option<String>,
    jitter: Option<f64>,
    releases: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    keep: Option<usize>,
    control_sockets: Option<Vec<PathBuf>>,
    notify_timeout: Option<String>,
    allow_rewind: Option<bool>,
}

/// `[http]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    listen: Option<SocketAddr>,
    webhook_secret_file: Option<PathBuf>,
    max_body: Option<usize>,
    webhook_per_minute: Option<u32>,
}

/// `[verify]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    mode: Option<String>,
    trusted_keys: Option<Vec<PathBuf>>,
}

/// Command-line flags: the same settings as the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Flags {
    /// Settings file (TOML).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Repository URL: https://, http://, ssh://, git:// or file://.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Track this branch (default: main).
    #[arg(long, global = true)]
    pub branch: Option<String>,
    /// Track this tag.
    #[arg(long, global = true)]
    pub tag: Option<String>,
    /// Track the highest tag in this semver range, e.g. ">=1.2, <2".
    #[arg(long, global = true)]
    pub semver: Option<String>,
    /// Serve this commit (full id).
    #[arg(long, global = true)]
    pub commit: Option<String>,
    /// User name for https basic auth or ssh (default: git).
    #[arg(long, global = true)]
    pub username: Option<String>,
    /// File holding a token sent as the https basic-auth password.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// File holding a token sent as `Authorization: Bearer`.
    #[arg(long, global = true)]
    pub bearer_token_file: Option<PathBuf>,
    /// CA bundle for https (replaces the system roots for fetches).
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// SSH private key (deploy key).
    #[arg(long, global = true)]
    pub ssh_key_file: Option<PathBuf>,
    /// File holding the SSH key's passphrase.
    #[arg(long, global = true)]
    pub ssh_key_passphrase_file: Option<PathBuf>,
    /// known_hosts file for ssh:// (required for ssh; unknown hosts are refused).
    #[arg(long, global = true)]
    pub known_hosts: Option<PathBuf>,
    /// Fetch depth (default 1; 0 fetches full history).
    #[arg(long, global = true)]
    pub depth: Option<u32>,
    /// Overall fetch timeout (default 60s).
    #[arg(long, global = true)]
    pub timeout: Option<String>,
    /// Poll interval (default 60s).
    #[arg(long, global = true)]
    pub interval: Option<String>,
    /// Poll jitter as a fraction of the interval (default 0.1).
    #[arg(long, global = true)]
    pub jitter: Option<f64>,
    /// Releases folder (default /var/lib/gatehouse/releases).
    #[arg(long, global = true)]
    pub releases: Option<PathBuf>,
    /// State folder holding the bare repository (default /var/lib/gatehouse/sync).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Releases kept on disk (default 10).
    #[arg(long, global = true)]
    pub keep: Option<usize>,
    /// An appliance control socket to notify (repeatable).
    #[arg(long = "control-socket", global = true)]
    pub control_sockets: Vec<PathBuf>,
    /// How long an appliance may take to acknowledge a release (default 30s).
    #[arg(long, global = true)]
    pub notify_timeout: Option<String>,
    /// Accept a branch moving back to an older commit (refused by default).
    #[arg(long, global = true)]
    pub allow_rewind: bool,
    /// Address of the webhook and status endpoint, e.g. 127.0.0.1:9292.
    #[arg(long, global = true)]
    pub listen: Option<SocketAddr>,
    /// File holding the webhook secret (HMAC key, or GitLab token).
    #[arg(long, global = true)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Largest webhook body accepted, in bytes (default 1 MiB).
    #[arg(long, global = true)]
    pub max_body: Option<usize>,
    /// Webhook deliveries accepted per minute (default 60).
    #[arg(long, global = true)]
    pub webhook_per_minute: Option<u32>,
    /// Signature verification: off, head (the commit) or tag (default off).
    #[arg(long, global = true)]
    pub verify: Option<String>,
    /// A trusted signing key file: SSH public keys or an armored OpenPGP key (repeatable).
    #[arg(long = "trusted-key", global = true)]
    pub trusted_keys: Vec<PathBuf>,
}

/// Authentication material (file paths; the fetch worker reads them, so secrets never
/// travel on a command line or through the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Auth {
    /// User name (https basic auth, ssh).
    pub username: Option<String>,
    /// Token sent as the basic-auth password.
    pub token_file: Option<PathBuf>,
    /// Token sent as a bearer header.
    pub bearer_token_file: Option<PathBuf>,
    /// SSH private key.
    pub ssh_key_file: Option<PathBuf>,
    /// Its passphrase.
    pub ssh_key_passphrase_file: Option<PathBuf>,
}

/// Where and how to fetch.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Repository URL.
    pub url: String,
    /// What to track.
    pub selector: RefSelector,
    /// Credentials.
    pub auth: Auth,
    /// CA bundle for https.
    pub ca_file: Option<PathBuf>,
    /// known_hosts for ssh.
    pub known_hosts: Option<PathBuf>,
    /// Fetch depth (0: full).
    pub depth: u32,
    /// Overall fetch timeout.
    pub timeout: Duration,
}

/// The webhook and status endpoint.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Listening address.
    pub listen: SocketAddr,
    /// The shared secret; without one, webhooks are refused.
    pub secret: Option<Vec<u8>>,
    /// Largest body accepted.
    pub max_body: usize,
    /// Deliveries per minute.
    pub per_minute: u32,
}

/// Signature verification mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// No verification.
    Off,
    /// The fetched commit must be signed.
    Head,
    /// The fetched annotated tag must be signed (requires a tag or semver ref).
    Tag,
}

/// Everything the agent needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The source.
    pub source: SourceSettings,
    /// Poll interval.
    pub interval: Duration,
    /// Jitter fraction.
    pub jitter: f64,
    /// Releases folder.
    pub releases: PathBuf,
    /// State folder (bare repository).
    pub state_dir: PathBuf,
    /// Releases kept.
    pub keep: usize,
    /// Appliance control sockets.
    pub control_sockets: Vec<PathBuf>,
    /// Acknowledgement timeout.
    pub notify_timeout: Duration,
    /// Accept branch rewinds.
    pub allow_rewind: bool,
    /// Webhook and status endpoint.
    pub http: Option<HttpSettings>,
    /// Verification mode.
    pub verify: VerifyMode,
    /// Trust store files.
    pub trusted_keys: Vec<PathBuf>,
}

fn duration(what: &str, s: &str) -> Result<Duration, ConfigError> {
    tenants::types::parse_go_duration(s)
        .map_err(|e| ConfigError::Invalid(format!("{what}: {e} (use e.g. 60s, 5m)")))
}

/// Reads the settings file, if any.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads the releases folder setting alone (for commands that only need it).
pub fn releases_dir(flags: &Flags) -> Result<PathBuf, ConfigError> {
    if let Some(r) = &flags.releases {
        return Ok(r.clone());
    }
    let file = match &flags.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    Ok(file
        .sync
        .releases
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RELEASES)))
}

/// Default releases folder.
pub const DEFAULT_RELEASES: &str = "/var/lib/gatehouse/releases";

/// Resolves flags over the file over defaults.
pub fn resolve(flags: &Flags) -> Result<Settings, ConfigError> {
    let file = match &flags.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let s = file.source;
    let url =
        flags.url.clone().or(s.url).ok_or_else(|| {
            ConfigError::Invalid("no repository: give --url or [source] url".into())
        })?;
    let pick = |f: &Option<String>, v: Option<String>| f.clone().or(v);
    let branch = pick(&flags.branch, s.branch);
    let tag = pick(&flags.tag, s.tag);
    let semver = pick(&flags.semver, s.semver);
    let commit = pick(&flags.commit, s.commit);
    let selector = match (branch, tag, semver, commit) {
        (b, None, None, None) => RefSelector::Branch(b.unwrap_or_else(|| "main".into())),
        (None, Some(t), None, None) => RefSelector::Tag(t),
        (None, None, Some(r), None) => RefSelector::Semver(r),
        (None, None, None, Some(c)) => RefSelector::Commit(c),
        _ => {
            return Err(ConfigError::Invalid(
                "give one of branch, tag, semver or commit".into(),
            ));
        }
    };
    selector
        .check()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let auth = Auth {
        username: flags.username.clone().or(s.username),
        token_file: flags.token_file.clone().or(s.token_file),
        bearer_token_file: flags.bearer_token_file.clone().or(s.bearer_token_file),
        ssh_key_file: flags.ssh_key_file.clone().or(s.ssh_key_file),
        ssh_key_passphrase_file: flags
            .ssh_key_passphrase_file
            .clone()
            .or(s.ssh_key_passphrase_file),
    };
    let timeout = duration(
        "timeout",
        &pick(&flags.timeout, s.timeout).unwrap_or_else(|| "60s".into()),
    )?;
    let source = SourceSettings {
        url,
        selector,
        auth,
        ca_file: flags.ca_file.clone().or(s.ca_file),
        known_hosts: flags.known_hosts.clone().or(s.known_hosts),
        depth: flags.depth.or(s.depth).unwrap_or(1),
        timeout,
    };
    let y = file.sync;
    let interval = duration(
        "interval",
        &pick(&flags.interval, y.interval).unwrap_or_else(|| "60s".into()),
    )?;
    if interval < Duration::from_millis(100) {
        return Err(ConfigError::Invalid(
            "interval must be at least 100ms".into(),
        ));
    }
    let jitter = flags.jitter.or(y.jitter).unwrap_or(0.1);
    if !(0.0..=0.5).contains(&jitter) {
        return Err(ConfigError::Invalid(
            "jitter must be between 0 and 0.5".into(),
        ));
    }
    let keep = flags.keep.or(y.keep).unwrap_or(10);
    if keep < 2 {
        return Err(ConfigError::Invalid(
            "keep must be at least 2 (current and one to roll back to)".into(),
        ));
    }
    let mut control_sockets = flags.control_sockets.clone();
    if control_sockets.is_empty() {
        control_sockets = y.control_sockets.unwrap_or_default();
    }
    let h = file.http;
    let http = match flags.listen.or(h.listen) {
        None => None,
        Some(listen) => {
            let secret = match flags.webhook_secret_file.clone().or(h.webhook_secret_file) {
                None => None,
                Some(p) => {
                    let s = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                        path: p.clone(),
                        source,
                    })?;
                    let s = s.trim().as_bytes().to_vec();
                    if s.is_empty() {
                        return Err(ConfigError::Invalid(format!(
                            "{}: the webhook secret is empty",
                            p.display()
                        )));
                    }
                    Some(s)
                }
            };
            Some(HttpSettings {
                listen,
                secret,
                max_body: flags.max_body.or(h.max_body).unwrap_or(1 << 20),
                per_minute: flags
                    .webhook_per_minute
                    .or(h.webhook_per_minute)
                    .unwrap_or(60)
                    .max(1),
            })
        }
    };
    let v = file.verify;
    let verify = match pick(&flags.verify, v.mode).as_deref() {
        None | Some("off") => VerifyMode::Off,
        Some("head") => VerifyMode::Head,
        Some("tag") => VerifyMode::Tag,
        Some(other) => {
            return Err(ConfigError::Invalid(format!(
                "verify mode {other:?}: use off, head or tag"
            )));
        }
    };
    let mut trusted_keys = flags.trusted_keys.clone();
    if trusted_keys.is_empty() {
        trusted_keys = v.trusted_keys.unwrap_or_default();
    }
    if verify != VerifyMode::Off && trusted_keys.is_empty() {
        return Err(ConfigError::Invalid(
            "signature verification needs at least one trusted key file".into(),
        ));
    }
    if verify == VerifyMode::Tag
        && !matches!(
            source.selector,
            RefSelector::Tag(_) | RefSelector::Semver(_)
        )
    {
        return Err(ConfigError::Invalid(
            "verify = tag needs a tag or semver reference".into(),
        ));
    }
    Ok(Settings {
        source,
        interval,
        jitter,
        releases: flags
            .releases
            .clone()
            .or(y.releases)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RELEASES)),
        state_dir: flags
            .state_dir
            .clone()
            .or(y.state_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/gatehouse/sync")),
        keep,
        control_sockets,
        notify_timeout: duration(
            "notify_timeout",
            &pick(&flags.notify_timeout, y.notify_timeout).unwrap_or_else(|| "30s".into()),
        )?,
        allow_rewind: flags.allow_rewind || y.allow_rewind.unwrap_or(false),
        http,
        verify,
        trusted_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("sync.toml");
        std::fs::write(
            &f,
            "[source]\nurl = \"https://git.example/cfg.git\"\nbranch = \"prod\"\n[sync]\ninterval = \"5m\"\nkeep = 4\n",
        )
        .expect("write");
        let flags = Flags {
            config: Some(f),
            interval: Some("30s".into()),
            ..Flags::default()
        };
        let s = resolve(&flags).expect("settings");
        assert_eq!(s.source.url, "https://git.example/cfg.git");
        assert_eq!(s.source.selector, RefSelector::Branch("prod".into()));
        assert_eq!(s.interval, Duration::from_secs(30));
        assert_eq!(s.keep, 4);
        assert_eq!(s.source.depth, 1);
        assert_eq!(s.source.timeout, Duration::from_secs(60));
        assert_eq!(s.verify, VerifyMode::Off);
    }

    #[test]
    fn unknown_fields_and_conflicting_refs_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("sync.toml");
        std::fs::write(&f, "[source]\nurl = \"x\"\nbrnach = \"main\"\n").expect("write");
        let e = resolve(&Flags {
            config: Some(f),
            ..Flags::default()
        })
        .expect_err("typo");
        assert!(e.to_string().contains("brnach"), "{e}");
        let e = resolve(&Flags {
            url: Some("file:///x".into()),
            branch: Some("a".into()),
            tag: Some("b".into()),
            ..Flags::default()
        })
        .expect_err("two refs");
        assert!(e.to_string().contains("one of"), "{e}");
        let e = resolve(&Flags {
            url: Some("file:///x".into()),
            verify: Some("head".into()),
            ..Flags::default()
        })
        .expect_err("no keys");
        assert!(e.to_string().contains("trusted key"), "{e}");
    }
}
