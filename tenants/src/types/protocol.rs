//! Port protocols, parsed case-insensitively as Istio's `protocol.Parse` does.

use std::fmt;

use serde::Serialize;

/// A port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Protocol {
    /// HTTP/1.1 (and h2c upgrade) plaintext.
    Http,
    /// HTTP/2 plaintext.
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// gRPC-Web (HTTP).
    GrpcWeb,
    /// HTTP over TLS terminated here.
    Https,
    /// TLS, routed by SNI (passthrough) or terminated into TCP.
    Tls,
    /// Opaque TCP.
    Tcp,
    /// UDP (not served by a gateway).
    Udp,
    /// Mongo (treated as TCP).
    Mongo,
    /// Redis (treated as TCP).
    Redis,
    /// MySQL (treated as TCP).
    Mysql,
    /// HTTP proxy.
    HttpProxy,
}

// === impl Protocol ===

impl Protocol {
    /// Parses a protocol name case-insensitively; `None` is Istio's `Unsupported`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Self::Http,
            "http2" => Self::Http2,
            "grpc" => Self::Grpc,
            "grpc-web" => Self::GrpcWeb,
            "https" => Self::Https,
            "tls" => Self::Tls,
            "tcp" => Self::Tcp,
            "udp" => Self::Udp,
            "mongo" => Self::Mongo,
            "redis" => Self::Redis,
            "mysql" => Self::Mysql,
            "http_proxy" => Self::HttpProxy,
            _ => return None,
        })
    }

    /// HTTP, HTTP2, GRPC, GRPC-WEB: served by the HTTP connection manager in plaintext.
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Http2 | Self::Grpc | Self::GrpcWeb)
    }

    /// Whether an upstream speaking this protocol wants HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Self::Http2 | Self::Grpc)
    }

    /// TCP, MONGO, REDIS, MYSQL: opaque TCP.
    pub fn is_tcp(self) -> bool {
        matches!(self, Self::Tcp | Self::Mongo | Self::Redis | Self::Mysql)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "HTTP",
            Self::Http2 => "HTTP2",
            Self::Grpc => "GRPC",
            Self::GrpcWeb => "GRPC-WEB",
            Self::Https => "HTTPS",
            Self::Tls => "TLS",
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Mongo => "MONGO",
            Self::Redis => "REDIS",
            Self::Mysql => "MYSQL",
            Self::HttpProxy => "HTTP_PROXY",
        })
    }
}

/// Infers a protocol from a port name as Istio does (`http-foo`, `grpc`, `tls-x`, ...).
pub fn from_port_name(name: &str) -> Option<Protocol> {
    let prefix = name.split('-').next().unwrap_or(name);
    Protocol::parse(prefix)
}
