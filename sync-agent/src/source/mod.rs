//! Fetching the configuration repository into one persistent bare repository.
//!
//! libgit2 has no overall timeout and no way to cancel a blocked read (an SSH handshake that
//! never completes hangs forever), so every fetch runs in a child process — this same binary
//! with the hidden `fetch-worker` command — that the agent kills at the deadline or on
//! cancellation. Inside the worker a watchdog ends the process at the deadline too, and the
//! progress callbacks stop the transfer cooperatively. The isolation also contains libgit2
//! crashes and memory growth over long runs.

pub mod auth;
pub mod isolate;
pub mod known_hosts;
pub mod url;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Auth;
use crate::refs::{Chosen, RefError, RefSelector};

/// One fetch, as the agent asks the worker for it (JSON on the worker's stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    /// Repository URL.
    pub url: String,
    /// The bare repository to fetch into (created when missing).
    pub repo: PathBuf,
    /// What to track.
    pub selector: RefSelector,
    /// Depth (0: full history).
    pub depth: u32,
    /// Credentials (file paths).
    pub auth: Auth,
    /// known_hosts for ssh.
    pub known_hosts: Option<PathBuf>,
    /// Overall timeout in milliseconds.
    pub timeout_ms: u64,
    /// Only read the server's SSH host key (for `gatehouse-sync known-hosts`).
    #[serde(default)]
    pub scan: bool,
}

/// What a fetch produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    /// The reference the server advertised and the agent chose.
    pub chosen: Chosen,
    /// The commit to serve (a tag peeled to its commit).
    pub commit: String,
    /// The annotated tag object, when the reference is one.
    pub tag: Option<String>,
}

/// Why a fetch failed. The message is what status shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "message")]
#[non_exhaustive]
pub enum FetchError {
    /// The overall deadline passed.
    #[error("fetch timed out after {0}")]
    Timeout(String),
    /// Cancelled (shutdown or suspend).
    #[error("fetch cancelled")]
    Cancelled,
    /// The server refused the credentials, or asked for ones that are not configured.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The SSH host key was not accepted.
    #[error("{0}")]
    HostKey(String),
    /// The reference could not be resolved.
    #[error("{0}")]
    Ref(String),
    /// The URL is unusable.
    #[error("{0}")]
    Url(String),
    /// libgit2 failed (network, protocol, repository).
    #[error("git: {0}")]
    Git(String),
    /// The worker process failed.
    #[error("fetch worker: {0}")]
    Worker(String),
}

impl From<RefError> for FetchError {
    fn from(e: RefError) -> Self {
        Self::Ref(e.to_string())
    }
}

/// Formats a duration the way settings are written (`60s`, `1.5s`).
pub fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
