//! HTTP/3 beside every HTTPS server: quinn for QUIC, h3 for HTTP/3, and the same request path
//! (`http::service::handle`) as HTTP/1.1 and HTTP/2, so routing, header operations, retries,
//! faults, rate limits, access logs and metrics cannot drift apart.
//!
//! Shape (ARCHITECTURE.md, "QUIC"):
//! - one quinn endpoint per HTTPS listener address, on the UDP port of the same number, run by
//!   one worker (`endpoint`): QUIC demultiplexes by connection id inside an endpoint, so
//!   splitting a port across `SO_REUSEPORT` sockets would send a migrating client's packets
//!   to an endpoint that does not know its connection;
//! - one rustls config per endpoint whose hooks read the current generation (`certs`): the
//!   certificate comes from the resolver of the chain the SNI picks, so rotation applies;
//!   MUTUAL is checked again per chain once the handshake has told the SNI;
//! - per connection: permits, 0-RTT policy, h3, GOAWAY on drain (`conn`); per request: the
//!   h3 stream as a body, the shared service, the response back (`request`, `body`).

mod body;
mod certs;
mod config;
mod conn;
mod endpoint;
mod request;

pub use body::BodyError;
pub use config::QuicConfigError;
pub use endpoint::Endpoints;

use tenants::snapshot::{ChainAction, Listener, ListenerKind};

/// Whether `l` terminates TLS for HTTP on some chain, i.e. is an HTTPS server that also
/// answers HTTP/3.
pub fn serves_https(l: &Listener) -> bool {
    match &l.kind {
        ListenerKind::Tls(chains) => chains
            .iter()
            .any(|c| matches!(c.action, ChainAction::TerminateHttp { .. })),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
