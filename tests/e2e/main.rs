//! End-to-end tests: the real `gatehouse` binary on loopback, real clients, real backends.
//! One test binary; each module is one capability.

// Harness items are `pub` for the test modules of this one binary; figures tests measure are
// printed for the log.
#![allow(unreachable_pub, clippy::print_stderr, clippy::print_stdout)]

#[allow(dead_code)]
mod harness;

mod admin;
mod credentials;
mod delegation;
mod dynamic_dns;
mod http3;
mod http_routing;
mod l4;
mod paths;
mod platform_files;
mod protocol;
mod proxy_protocol;
mod quickstart;
mod reload;
mod retry_budget;
mod retry_policy;
mod sync;
mod systemd;
mod telemetry;
mod tls;
mod tunnel;
mod unix_endpoints;
mod upstream;
mod upstream_h1;
