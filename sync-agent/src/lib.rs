//! `gatehouse-sync`: the GitOps agent. Fetches the configuration repository, verifies
//! signatures, validates every tenant with the `tenants` crate, composes and publishes an
//! immutable release (valid tenants at the new commit, broken ones at their last good
//! files), and tells the appliances over their control sockets.
//!
//! Architecture invariant: nothing is published that `tenants::build` would refuse or
//! report errors on; the appliance and the agent share that one crate and nothing else.

pub mod agent;
pub mod compose;
pub mod config;
pub mod http;
pub mod notify;
pub mod plan;
pub mod reconcile;
pub mod refs;
pub mod release;
pub mod source;
pub mod state;
pub mod status;
pub mod tree;
pub mod verify;
pub mod webhook;
