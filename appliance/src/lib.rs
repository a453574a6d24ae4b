//! `appliance`: the gatehouse gateway. Listeners, TLS, HTTP/1.1, HTTP/2 and HTTP/3, the TCP and SNI
//! proxy, routing, upstreams, credentials, admin and reload, around the immutable
//! [`tenants::Snapshot`] the control path compiles.
//!
//! Architecture invariant: the data path (worker threads) only reads state published through
//! one `ArcSwap` and atomics; it never takes a lock the control path holds.

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod control;
pub mod control_socket;
pub mod credentials;
pub mod demo;
pub mod fdstore;
pub mod gated;
pub mod http;
pub mod idle;
pub mod io;
pub mod listener;
pub mod metrics;
pub mod quic;
pub mod quota;
pub mod repo;
pub mod runtime;
pub mod shared;
pub mod systemd;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod watch;
pub mod workers;
