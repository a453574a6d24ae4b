//! TLS: reading the ClientHello before choosing a chain, server configs for terminating
//! chains, client configs for TLS origination.

pub mod client;
pub mod client_hello;
pub mod server;
pub mod tickets;
