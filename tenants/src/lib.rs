//! `tenants`: gatehouse's declarative model.
//!
//! Istio manifests from a Git repository go in as (path, bytes) pairs; a validated,
//! immutable [`Snapshot`] per gateway group comes out, with every finding placed at its file,
//! line, column and field. This crate does no I/O: no sockets, no files, no clocks, no async
//! runtime. Both daemons use it, so the sync agent can never publish what the appliance
//! would refuse.

pub mod cel;
pub mod diag;
pub mod load;
pub mod model;
pub mod raw;
pub mod types;
pub mod yaml;

pub use diag::{Diagnostic, FieldPath, ObjectRef, Pos, Severity};
pub use load::{LoadOptions, Loaded, Namespace, Objects, SourceFile, load, load_standalone};
pub mod snapshot;

mod compile;
mod policy;
mod world;

pub use snapshot::Snapshot;
pub mod build;
pub mod find;

pub use build::{Accepted, BuildError, Output, build};
pub use find::{Decision, RequestView, find};
