//! End-to-end tests: the real `gatehouse` binary on loopback, real clients, real backends.
//! One test binary; each module is one capability.

mod harness;

mod http_routing;
mod reload;
