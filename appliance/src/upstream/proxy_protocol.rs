//! The PROXY protocol header an upstream connection starts with when its DestinationRule
//! asks (`trafficPolicy.proxyProtocol`, Envoy's upstream `proxy_protocol` transport socket):
//! the client's address and the address it reached, so that a backend behind the gateway
//! sees who connected. Written right after the TCP connect, before any TLS.
//! Format: haproxy's `proxy-protocol.txt` (version 1 text, version 2 binary).

use std::net::{IpAddr, SocketAddr};

use tenants::model::ProxyVersion;

/// The downstream connection an upstream one is made for: where the client came from and
/// the address it connected to. Connections that carry a PROXY header are pooled per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Via {
    /// The client.
    pub peer: SocketAddr,
    /// The gateway address the client connected to.
    pub local: SocketAddr,
}

/// Version 2's signature.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for `via`. A client and a local address of different families (one of them
/// IPv4-mapped is taken as IPv4) cannot be described: version 1 says `UNKNOWN` and version 2
/// `UNSPEC`, as the specification asks.
pub fn header(version: ProxyVersion, via: Via) -> Vec<u8> {
    let src = SocketAddr::new(via.peer.ip().to_canonical(), via.peer.port());
    let dst = SocketAddr::new(via.local.ip().to_canonical(), via.local.port());
    match version {
        ProxyVersion::V1 => {
            let family = match (src.ip(), dst.ip()) {
                (IpAddr::V4(_), IpAddr::V4(_)) => "TCP4",
                (IpAddr::V6(_), IpAddr::V6(_)) => "TCP6",
                _ => return b"PROXY UNKNOWN\r\n".to_vec(),
            };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => {
            let mut out = Vec::with_capacity(16 + 36);
            out.extend_from_slice(&SIGNATURE);
            // Version 2, command PROXY.
            out.push(0x21);
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    out.push(0x21);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                _ => {
                    out.push(0x00);
                    out.extend_from_slice(&0u16.to_be_bytes());
                    return out;
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(peer: &str, local: &str) -> Via {
        Via {
            peer: peer.parse().expect("addr"),
            local: local.parse().expect("addr"),
        }
    }

    #[test]
    fn version_1_is_one_text_line() {
        let v4 = via("192.0.2.7:51234", "127.0.0.1:443");
        assert_eq!(
            header(ProxyVersion::V1, v4),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 443\r\n"
        );
        let v6 = via("[2001:db8::1]:4000", "[::1]:80");
        assert_eq!(
            header(ProxyVersion::V1, v6),
            b"PROXY TCP6 2001:db8::1 ::1 4000 80\r\n"
        );
        // An IPv4 client on a dual-stack socket is an IPv4 client.
        let mapped = via("[::ffff:10.0.0.1]:1", "[::ffff:10.0.0.2]:2");
        assert_eq!(
            header(ProxyVersion::V1, mapped),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"
        );
        let mixed = via("10.0.0.1:1", "[::1]:2");
        assert_eq!(header(ProxyVersion::V1, mixed), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn version_2_is_the_binary_block() {
        let v4 = via("192.0.2.7:51234", "127.0.0.1:443");
        let h = header(ProxyVersion::V2, v4);
        assert_eq!(
            &h[..12],
            b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
        );
        assert_eq!(&h[12..16], [0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], [192, 0, 2, 7]);
        assert_eq!(&h[20..24], [127, 0, 0, 1]);
        assert_eq!(&h[24..], [0xc8, 0x22, 0x01, 0xbb]);
        let v6 = header(ProxyVersion::V2, via("[2001:db8::1]:4000", "[::1]:80"));
        assert_eq!(&v6[12..16], [0x21, 0x21, 0, 36]);
        assert_eq!(v6.len(), 16 + 36);
        let mixed = header(ProxyVersion::V2, via("10.0.0.1:1", "[::1]:2"));
        assert_eq!(&mixed[12..], [0x21, 0x00, 0, 0]);
    }
}
