//! Raw serde types for every manifest kind, as Istio's protos define them.
//!
//! These mirror the YAML one to one. Scalars that need checking (hosts, durations, ports,
//! enums) stay strings or wide integers here; [`crate::model`] parses them into typed values
//! and reports every problem with its path. Known fields that gatehouse does not implement
//! are kept as [`Any`] so that they are reported, never silently dropped.

/// Shared attributes for raw types: camelCase names, every field optional.
macro_rules! raw {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        #[allow(missing_docs)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
    };
}

mod destination_rule;
mod gateway;
mod meta;
mod operator;
mod service_entry;
mod sidecar;
mod telemetry;
mod tenant;
mod virtual_service;

pub use destination_rule::*;
pub use gateway::*;
pub use meta::*;
pub use operator::*;
pub use service_entry::*;
pub use sidecar::*;
pub use telemetry::*;
pub use tenant::*;
pub use virtual_service::*;

/// A known field whose value gatehouse keeps only to report it.
pub type Any = Option<serde_json::Value>;

/// A string-keyed map (labels, header matches, ...). Sorted for deterministic output.
pub type Map<V> = std::collections::BTreeMap<String, V>;
