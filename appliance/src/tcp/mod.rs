//! Opaque TCP proxying: TCP routes, TLS passthrough, TLS-terminated TCP.

pub mod proxy;
pub mod session;
