//! DestinationRule `tunnel` (`protocol: CONNECT`): a TCP route's bytes carried through an
//! HTTP/1.1 CONNECT proxy, the cluster's endpoints being the proxy, as Envoy's TCP proxy
//! `tunneling_config` does. The connection to the proxy is made as any (PROXY header, TLS
//! origination); then `CONNECT target HTTP/1.1` and a 2xx answer, and the bytes follow.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tenants::model::Tunnel;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::connect::ConnectError;
use super::pool::Io;

/// The largest answer head accepted from the proxy.
const MAX_HEAD: usize = 16 * 1024;

/// Asks the proxy on `io` for a tunnel to `t`'s target; the stream carries the tunnel's
/// bytes once it answers 2xx. Any other answer, a head past 16 KiB, or no answer within
/// `timeout` fails the connect (flag UF).
pub async fn open(
    mut io: Box<dyn Io>,
    t: &Tunnel,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Box<dyn Io>, ConnectError> {
    let fail = |reason: String| ConnectError::Tunnel { addr, reason };
    let target = authority(t);
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let handshake = async {
        io.write_all(request.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            if io
                .read_buf(&mut buf)
                .await
                .map_err(|e| fail(e.to_string()))?
                == 0
            {
                return Err(fail(
                    "the proxy closed the connection before answering".into(),
                ));
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = resp.code.unwrap_or(0);
                    if !(200..300).contains(&code) {
                        let reason = resp.reason.unwrap_or("");
                        return Err(fail(format!(
                            "the proxy answered CONNECT {target} with {code} {reason}"
                        )));
                    }
                    buf.advance(len);
                    return Ok(buf.freeze());
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(fail("the proxy's answer head is too large".into()));
                }
                Err(e) => return Err(fail(format!("the proxy's answer is not HTTP: {e}"))),
            }
        }
    };
    let early = match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r?,
        Err(_) => return Err(ConnectError::Timeout(addr)),
    };
    Ok(if early.is_empty() {
        io
    } else {
        Box::new(Rewound { early, io })
    })
}

/// `host:port`, an IPv6 address in brackets.
fn authority(t: &Tunnel) -> String {
    if t.target_host.contains(':') {
        format!("[{}]:{}", t.target_host, t.target_port)
    } else {
        format!("{}:{}", t.target_host, t.target_port)
    }
}

/// A tunnel whose first bytes (a server that speaks first, its greeting in the segment
/// that carried the proxy's answer) were read with the answer.
struct Rewound {
    early: Bytes,
    io: Box<dyn Io>,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Io for Rewound {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(host: &str, port: u16) -> Tunnel {
        Tunnel {
            target_host: host.into(),
            target_port: port,
        }
    }

    /// A proxy on loopback that reads the CONNECT head, answers `answer`, and records the
    /// head it got.
    async fn proxy(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 256];
                let n = s.read(&mut b).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&b[..n]);
            }
            s.write_all(answer).await.expect("write");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            String::from_utf8_lossy(&got).into_owned()
        });
        (addr, h)
    }

    async fn dial(addr: SocketAddr) -> Box<dyn Io> {
        Box::new(tokio::net::TcpStream::connect(addr).await.expect("connect"))
    }

    #[tokio::test]
    async fn a_2xx_opens_the_tunnel_and_early_bytes_are_kept() {
        let (addr, h) =
            proxy(b"HTTP/1.1 200 Connection established\r\n\r\n220 smtp ready\r\n").await;
        let mut io = open(
            dial(addr).await,
            &tunnel("::1", 25),
            addr,
            Duration::from_secs(5),
        )
        .await
        .expect("tunnel");
        let mut greeting = [0u8; 16];
        io.read_exact(&mut greeting).await.expect("greeting");
        assert_eq!(&greeting, b"220 smtp ready\r\n");
        drop(io);
        assert_eq!(
            h.await.expect("proxy"),
            "CONNECT [::1]:25 HTTP/1.1\r\nHost: [::1]:25\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn any_other_answer_fails_the_connect_and_says_why() {
        let (addr, _h) = proxy(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        let e = open(
            dial(addr).await,
            &tunnel("db.internal", 5432),
            addr,
            Duration::from_secs(5),
        )
        .await
        .err()
        .expect("refused");
        assert!(
            e.to_string()
                .contains("the proxy answered CONNECT db.internal:5432 with 403 Forbidden"),
            "{e}"
        );
        let (addr, _h) = proxy(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        let e = open(
            dial(addr).await,
            &tunnel("db.internal", 5432),
            addr,
            Duration::from_secs(5),
        )
        .await
        .err()
        .expect("not HTTP");
        assert!(e.to_string().contains("not HTTP"), "{e}");
    }
}
