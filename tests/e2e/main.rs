//! End-to-end tests: the real `gatehouse` binary on loopback, real clients, real backends.
//! One test binary; each module is one capability.

#[allow(dead_code)]
mod harness;

mod http_routing;
mod protocol;
mod reload;
mod tls;
mod upstream;
