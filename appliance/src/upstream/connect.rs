//! Opening upstream connections: bind the egress source address, connect with a timeout,
//! originate TLS.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why an upstream connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP connect refused, unreachable, or the source address could not be bound.
    #[error("connect to {}: {source}", super::unix::Shown(*addr))]
    Io {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No connection within the connect timeout.
    #[error("connect to {}: timed out", super::unix::Shown(*.0))]
    Timeout(SocketAddr),
    /// The HTTP CONNECT proxy of a `tunnel` did not open the tunnel.
    #[error("tunnel through {addr}: {reason}")]
    Tunnel {
        /// The proxy.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The TLS handshake with the upstream failed.
    #[error("TLS to {}: {source}", super::unix::Shown(*addr))]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Connects to `addr`, leaving from `source` when given (egress groups), with TCP
/// keepalive when the cluster asks for it.
pub async fn tcp(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    keepalive: Option<&socket2::TcpKeepalive>,
) -> Result<TcpStream, ConnectError> {
    let io_err = |source| ConnectError::Io { addr, source };
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io_err)?;
    if let Some(src) = source
        && src.is_ipv4() == addr.is_ipv4()
    {
        sock.bind(SocketAddr::new(src, 0)).map_err(io_err)?;
    }
    let s = match tokio::time::timeout(timeout, sock.connect(addr)).await {
        Ok(r) => r.map_err(io_err)?,
        Err(_) => return Err(ConnectError::Timeout(addr)),
    };
    let _ = s.set_nodelay(true);
    if let Some(k) = keepalive {
        socket2::SockRef::from(&s)
            .set_tcp_keepalive(k)
            .map_err(io_err)?;
    }
    Ok(s)
}

/// Connects to the unix socket `path` (a platform `unix://` endpoint; `\0name` is an
/// abstract socket), which `addr` stands in for.
pub async fn unix(
    path: &std::path::Path,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<UnixStream, ConnectError> {
    match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Ok(r) => r.map_err(|source| ConnectError::Io { addr, source }),
        Err(_) => Err(ConnectError::Timeout(addr)),
    }
}

/// Writes the PROXY protocol header for `via` on a new connection to `addr` (within the
/// connect timeout: a backend that does not read it fails the connect, not the request
/// later).
pub async fn proxy_header<S: tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    version: tenants::model::ProxyVersion,
    via: super::proxy_protocol::Via,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), ConnectError> {
    use tokio::io::AsyncWriteExt;
    let h = super::proxy_protocol::header(version, via);
    match tokio::time::timeout(timeout, s.write_all(&h)).await {
        Ok(r) => r.map_err(|source| ConnectError::Io { addr, source }),
        Err(_) => Err(ConnectError::Timeout(addr)),
    }
}

/// Performs a TLS handshake with the upstream as `sni`.
pub async fn tls<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    config: Arc<ClientConfig>,
    sni: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TlsStream<S>, ConnectError> {
    let name = ServerName::try_from(sni.to_string()).map_err(|e| ConnectError::Tls {
        addr,
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    let c = TlsConnector::from(config);
    match tokio::time::timeout(timeout, c.connect(name, stream)).await {
        Ok(r) => r.map_err(|source| ConnectError::Tls { addr, source }),
        Err(_) => Err(ConnectError::Timeout(addr)),
    }
}

/// Connects to `host:port` by name (DNS, each address in turn), leaving from `source`: the
/// original-destination path of an egress group whose outbound policy is ALLOW_ANY.
pub async fn tcp_by_name(
    target: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Option<(TcpStream, SocketAddr)> {
    let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host(target))
        .await
        .ok()?
        .ok()?;
    for a in addrs {
        if let Ok(s) = tcp(a, source, timeout, None).await {
            return Some((s, a));
        }
    }
    None
}
