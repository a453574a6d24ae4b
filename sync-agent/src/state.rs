//! What the agent remembers between runs, kept in the releases folder: suspension (whole
//! agent or per tenant), commits refused as a whole (not retried until the reference moves),
//! and the history of applied commits (a branch moving back to one of them is a rewind).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::release::{self, ReleaseError};

/// File name inside the releases folder.
pub const FILE: &str = "sync-state.json";
/// Applied commits remembered.
const HISTORY: usize = 200;
/// Refused commits remembered.
const BAD: usize = 50;

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct State {
    /// The whole agent is suspended, with the reason.
    pub suspended: Option<String>,
    /// Tenants whose changes are not applied.
    pub suspended_tenants: BTreeSet<String>,
    /// Commits refused as a whole → why.
    pub refused: BTreeMap<String, String>,
    /// Commits published, oldest first.
    pub applied: Vec<String>,
}

// === impl State ===

impl State {
    /// Reads the state (default when missing or unreadable).
    pub fn read(releases: &Path) -> Self {
        std::fs::read_to_string(releases.join(FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Writes it atomically.
    pub fn write(&self, releases: &Path) -> Result<(), ReleaseError> {
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        release::write_atomic(&releases.join(FILE), &json)
    }

    /// Records a published commit.
    pub fn applied(&mut self, revision: &str) {
        self.applied.retain(|r| r != revision);
        self.applied.push(revision.to_string());
        let excess = self.applied.len().saturating_sub(HISTORY);
        self.applied.drain(..excess);
    }

    /// Records a commit refused as a whole.
    pub fn refuse(&mut self, revision: &str, why: &str) {
        if self.refused.len() >= BAD
            && let Some(first) = self.refused.keys().next().cloned()
        {
            self.refused.remove(&first);
        }
        self.refused.insert(revision.to_string(), why.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounded_history() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut s = State::default();
        for i in 0..(HISTORY + 5) {
            s.applied(&i.to_string());
        }
        s.applied("3");
        assert_eq!(s.applied.len(), HISTORY);
        assert_eq!(s.applied.last().map(String::as_str), Some("3"));
        s.suspended_tenants.insert("team-a".into());
        s.write(tmp.path()).expect("write");
        assert_eq!(State::read(tmp.path()), s);
    }
}
