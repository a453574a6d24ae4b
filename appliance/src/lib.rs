//! `appliance`: the gatehouse gateway. Listeners, TLS, HTTP/1.1, HTTP/2 and HTTP/3, the TCP
//! and SNI proxy, routing, upstreams, credentials, telemetry, admin and reload, around the
//! immutable [`tenants::Snapshot`] the control path compiles.

pub mod cli;
pub mod repo;
