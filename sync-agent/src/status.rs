//! The status document: per tenant the applied and attempted revision, errors with
//! file:line:column, the last success; the source's last fetch; why a commit was refused.
//! Written to `<releases>/status.json` after every attempt, so `gatehouse-sync status` works
//! from the releases folder alone, and served on the agent's HTTP endpoint.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tenants::Diagnostic;

use crate::release::{self, ReleaseError};

/// File name inside the releases folder.
pub const FILE: &str = "status.json";

/// One error or warning, placed in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Repository-relative path.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// `error` or `warning`.
    pub severity: String,
    /// `Kind/name`, when about an object.
    pub object: Option<String>,
    /// Field path.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The whole line as `gatehouse validate` prints it.
    pub text: String,
}

impl From<&Diagnostic> for Finding {
    fn from(d: &Diagnostic) -> Self {
        Self {
            file: d.file.clone(),
            line: d.pos.line,
            column: d.pos.col,
            severity: d.severity.to_string(),
            object: d.object.as_ref().map(|o| format!("{}/{}", o.kind, o.name)),
            field: d.field.clone(),
            message: d.message.clone(),
            text: d.to_string(),
        }
    }
}

/// The fetch side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// Repository URL (credentials removed).
    pub url: String,
    /// What is tracked.
    pub reference: String,
    /// Last fetch attempt.
    pub last_fetch: Option<String>,
    /// Last successful fetch.
    pub last_success: Option<String>,
    /// Commit of the last successful fetch.
    pub fetched_revision: Option<String>,
    /// Error of the last fetch, if it failed.
    pub error: Option<String>,
}

/// Why a whole commit was refused (signature, platform errors, rewind, appliance refusal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRefusal {
    /// The commit.
    pub revision: String,
    /// Why, in words.
    pub reason: String,
    /// Findings in gatehouse.yaml or platform/, when that is why.
    pub errors: Vec<Finding>,
    /// When.
    pub at: String,
}

/// State of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TenantState {
    /// Serving the attempted revision.
    Applied,
    /// The attempted revision has errors; serving its last good configuration.
    LastGood,
    /// Never had a good configuration; nothing served.
    Refused,
    /// Suspended: changes are not applied.
    Suspended,
}

/// One tenant's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// State.
    pub state: TenantState,
    /// The commit whose files of this tenant are served.
    pub applied_revision: Option<String>,
    /// The last commit tried.
    pub attempted_revision: Option<String>,
    /// When this tenant last moved to a new revision successfully.
    pub last_success: Option<String>,
    /// Errors of the attempted revision.
    pub errors: Vec<Finding>,
    /// Number of warnings.
    pub warnings: usize,
}

/// The answer of one appliance to the last release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplianceStatus {
    /// The control socket.
    pub socket: String,
    /// Acknowledged?
    pub ok: bool,
    /// Generation it serves now.
    pub generation: Option<u64>,
    /// Revision it serves now.
    pub revision: Option<String>,
    /// Its error, or why it could not be told.
    pub error: Option<String>,
}

// === impl ApplianceStatus ===

impl ApplianceStatus {
    /// What each appliance on `sockets` serves now, asked over its control socket, all at
    /// once. The entries in `recorded` are what they answered when last told of a release,
    /// which a rollback through the `current` link, or an appliance started since, leaves out
    /// of date. An appliance that cannot be asked (permissions, no answer in time) keeps its
    /// recorded entry, with why it could not be asked.
    pub fn refresh(
        recorded: &[Self],
        sockets: &[String],
        timeout: std::time::Duration,
    ) -> Vec<Self> {
        std::thread::scope(|scope| {
            let asks: Vec<_> = sockets
                .iter()
                .map(|s| scope.spawn(move || crate::notify::ask(Path::new(s), timeout)))
                .collect();
            asks.into_iter()
                .zip(sockets)
                .map(|(ask, socket)| {
                    let failed = |why: String| match recorded.iter().find(|r| &r.socket == socket) {
                        Some(r) => Self {
                            error: Some(format!(
                                "{} (recorded; asking now failed: {why})",
                                r.error.as_deref().unwrap_or("served")
                            )),
                            ..r.clone()
                        },
                        None => Self {
                            socket: socket.clone(),
                            ok: false,
                            generation: None,
                            revision: None,
                            error: Some(why),
                        },
                    };
                    match ask.join() {
                        Ok(Ok(r)) => Self {
                            socket: socket.clone(),
                            ok: r.ok,
                            generation: r.generation,
                            revision: r.revision,
                            error: r.error,
                        },
                        Ok(Err(e @ crate::notify::NotifyError::Absent(_))) => Self {
                            socket: socket.clone(),
                            ok: false,
                            generation: None,
                            revision: None,
                            error: Some(e.to_string()),
                        },
                        Ok(Err(e)) => failed(e.to_string()),
                        Err(_) => failed("the question failed".into()),
                    }
                })
                .collect()
        })
    }
}

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Format version.
    pub version: u32,
    /// When written.
    pub updated: Option<String>,
    /// The fetch side.
    pub source: SourceStatus,
    /// The served release.
    pub release: Option<String>,
    /// The commit it was composed at.
    pub revision: Option<String>,
    /// The last commit tried.
    pub attempted_revision: Option<String>,
    /// Why the last commit tried was refused as a whole, if it was.
    pub refused: Option<CommitRefusal>,
    /// Whether the whole agent is suspended (and why).
    pub suspended: Option<String>,
    /// Per tenant.
    pub tenants: BTreeMap<String, TenantStatus>,
    /// Per appliance, for the last release.
    pub appliances: Vec<ApplianceStatus>,
}

/// Now, as RFC 3339 (UTC, seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

// === impl Status ===

impl Status {
    /// Reads `<releases>/status.json`.
    pub fn read(releases: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(releases.join(FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes `<releases>/status.json` atomically.
    pub fn write(&self, releases: &Path) -> Result<(), ReleaseError> {
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        release::write_atomic(&releases.join(FILE), &json)
    }

    /// Prints the human form.
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let short = |r: &Option<String>| {
            r.as_deref()
                .map_or_else(|| "-".to_string(), |s| s.chars().take(12).collect())
        };
        writeln!(
            out,
            "source:    {} ({})",
            self.source.url, self.source.reference
        )?;
        writeln!(
            out,
            "fetched:   {} at {}{}",
            short(&self.source.fetched_revision),
            self.source.last_success.as_deref().unwrap_or("never"),
            self.source
                .error
                .as_ref()
                .map_or_else(String::new, |e| format!("\nfetch err: {e}"))
        )?;
        writeln!(
            out,
            "release:   {} (revision {})",
            self.release.as_deref().unwrap_or("none"),
            short(&self.revision)
        )?;
        if let Some(s) = &self.suspended {
            writeln!(out, "SUSPENDED: {s}")?;
        }
        if let Some(r) = &self.refused {
            writeln!(
                out,
                "refused:   {} at {}: {}",
                short(&Some(r.revision.clone())),
                r.at,
                r.reason
            )?;
            for e in &r.errors {
                writeln!(out, "  {}", e.text)?;
            }
        }
        for a in &self.appliances {
            match &a.error {
                None => writeln!(
                    out,
                    "appliance: {} generation {} revision {}",
                    a.socket,
                    a.generation.unwrap_or(0),
                    short(&a.revision)
                )?,
                Some(e) => writeln!(out, "appliance: {} {e}", a.socket)?,
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:<20} {:<10} {:<13} {:<13} {:<21} errors",
            "TENANT", "STATE", "APPLIED", "ATTEMPTED", "LAST SUCCESS"
        )?;
        for (t, s) in &self.tenants {
            let state = match s.state {
                TenantState::Applied => "applied",
                TenantState::LastGood => "lastGood",
                TenantState::Refused => "refused",
                TenantState::Suspended => "suspended",
            };
            writeln!(
                out,
                "{t:<20} {state:<10} {:<13} {:<13} {:<21} {}",
                short(&s.applied_revision),
                short(&s.attempted_revision),
                s.last_success.as_deref().unwrap_or("-"),
                s.errors.len()
            )?;
            for e in &s.errors {
                writeln!(out, "  {}", e.text)?;
            }
        }
        Ok(())
    }
}
