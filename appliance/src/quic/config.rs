//! The quinn server configuration of one endpoint: TLS 1.3 with the listener's hooks, ALPN
//! `h3`, the group's 0-RTT choice, stream and idle limits.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use tenants::model::Http3;

use super::certs::ListenerTls;

/// Why an endpoint's configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicConfigError {
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the suite QUIC's Initial packets need.
    #[error(transparent)]
    Initial(#[from] NoInitialCipherSuite),
    /// QUIC encodes the idle timeout in milliseconds as a varint.
    #[error("idle timeout {0:?} is too long for QUIC")]
    IdleTimeout(Duration),
}

/// Unidirectional streams a client may open: HTTP/3 uses three (control, QPACK encoder and
/// decoder); the rest is room for extensions a client announces and we ignore.
const UNI_STREAMS: u32 = 8;

/// Builds the server configuration.
pub(super) fn build(
    tls: Arc<ListenerTls>,
    h3: &Http3,
) -> Result<quinn::ServerConfig, QuicConfigError> {
    let mut c = rustls::ServerConfig::builder_with_provider(tls.provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(tls.clone())
        .with_cert_resolver(tls);
    c.alpn_protocols = vec![b"h3".to_vec()];
    // QUIC allows none or unlimited. rustls' default stateful session cache hands each
    // ticket out once, so a replayed 0-RTT flight is refused by TLS itself in this process;
    // `http::early` covers what single use cannot (another process, another worker).
    c.max_early_data_size = if h3.early_data { u32::MAX } else { 0 };
    let crypto = QuicServerConfig::try_from(c)?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(h3.max_concurrent_streams));
    t.max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS));
    let idle = IdleTimeout::try_from(h3.idle_timeout)
        .map_err(|_| QuicConfigError::IdleTimeout(h3.idle_timeout))?;
    t.max_idle_timeout(Some(idle));
    sc.transport_config(Arc::new(t));
    Ok(sc)
}
