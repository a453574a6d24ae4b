//! A backend that writes exact bytes, for what a well-behaved hyper backend never does:
//! chunked and close-delimited responses, interim 1xx responses, closing a kept-alive
//! connection, answering before the upload ends, malformed framing. Each response says which
//! backend connection (`x-conn`, numbered from 0) and which request on it (`x-req`) it is;
//! connections that ended are counted as `scripted:closed`.
//!
//! Paths: `/chunked`, `/eof` (no length, then close), `/interim` (100 and 103 first),
//! `/close-after` (closes after answering, without saying so), `/drop-reused` (closes
//! without answering any request but a connection's first), `/drop` (reads the request and
//! closes without answering), `/early` (answers at once, then
//! reads the upload and reports its length), `/early-close` (413 at the head, then closes with
//! the upload unread), `/malformed` (two lengths), `/endless-head` (1 MiB of header line
//! without a line feed), `/held-body` (the head at once, its 5-byte body only once
//! `Backends::held_body` is notified), `/firehose` (an endless chunked body, written until the
//! connection fails); anything else: `ok`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Backends;

impl Backends {
    /// Starts the scripted backend on `port`.
    pub fn scripted(&self, port: u16) {
        let l = super::bind_loopback_tokio(&self.rt, port);
        let conns = Arc::new(AtomicU64::new(0));
        let counters = self.counters.clone();
        let held = self.held_body.clone();
        self.rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let n = conns.fetch_add(1, Ordering::SeqCst);
                let counters = counters.clone();
                let held = held.clone();
                tokio::spawn(async move {
                    let _ = serve(s, n, &held).await;
                    counters.bump("scripted:closed");
                });
            }
        });
    }
}

struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    /// Reads until `buf` holds `n` bytes; false at the end of the connection.
    async fn fill(&mut self, n: usize) -> std::io::Result<bool> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 16 * 1024];
            let got = self.s.read(&mut chunk).await?;
            if got == 0 {
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(true)
    }

    /// The next line (without CRLF); `None` at the end of the connection.
    async fn line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(Some(l));
            }
            if !self.fill(self.buf.len() + 1).await? {
                return Ok(None);
            }
        }
    }

    /// Reads a body of `len` bytes, or a chunked one; returns its length.
    async fn body(&mut self, len: usize, chunked: bool) -> std::io::Result<usize> {
        if !chunked {
            self.fill(len).await?;
            self.buf.drain(..len.min(self.buf.len()));
            return Ok(len);
        }
        let mut total = 0;
        loop {
            let Some(size) = self.line().await? else {
                return Ok(total);
            };
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                // Trailers, then the empty line.
                while let Some(l) = self.line().await? {
                    if l.is_empty() {
                        break;
                    }
                }
                return Ok(total);
            }
            self.fill(size + 2).await?;
            self.buf.drain(..(size + 2).min(self.buf.len()));
            total += size;
        }
    }
}

async fn serve(s: TcpStream, conn: u64, held: &tokio::sync::Notify) -> std::io::Result<()> {
    let mut r = Reader { s, buf: Vec::new() };
    for req in 0u64.. {
        let Some(request_line) = r.line().await? else {
            return Ok(());
        };
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let (mut len, mut chunked) = (0usize, false);
        while let Some(l) = r.line().await? {
            if l.is_empty() {
                break;
            }
            let l = l.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
        }
        let ids = format!("x-conn: {conn}\r\nx-req: {req}\r\n");
        if path == "/early" {
            r.s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\n{ids}transfer-encoding: chunked\r\n\r\n6\r\nearly\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
            let got = r.body(len, chunked).await?;
            let tail = format!("received {got}\n");
            r.s.write_all(format!("{:x}\r\n{tail}\r\n0\r\n\r\n", tail.len()).as_bytes())
                .await?;
            continue;
        }
        if path == "/held-body" {
            r.s.write_all(format!("HTTP/1.1 200 OK\r\n{ids}content-length: 5\r\n\r\n").as_bytes())
                .await?;
            held.notified().await;
            r.s.write_all(b"hello").await?;
            continue;
        }
        if path == "/firehose" {
            // An endless chunked body, written until the connection fails.
            r.s.write_all(
                format!("HTTP/1.1 200 OK\r\n{ids}transfer-encoding: chunked\r\n\r\n").as_bytes(),
            )
            .await?;
            let chunk = format!("4000\r\n{}\r\n", "f".repeat(0x4000));
            loop {
                r.s.write_all(chunk.as_bytes()).await?;
            }
        }
        if path == "/early-close" {
            // Refuses the upload at its head and closes with it unread: the kernel then
            // resets the connection, as a server that will not read a large body does.
            r.s.write_all(
                format!("HTTP/1.1 413 Payload Too Large\r\n{ids}content-length: 9\r\nconnection: close\r\n\r\ntoo large").as_bytes(),
            )
            .await?;
            return Ok(());
        }
        r.body(len, chunked).await?;
        let head_only = method == "HEAD";
        let reply = match path.as_str() {
            "/chunked" if head_only => {
                format!("HTTP/1.1 200 OK\r\n{ids}transfer-encoding: chunked\r\n\r\n")
            }
            "/chunked" => format!(
                "HTTP/1.1 200 OK\r\n{ids}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
            ),
            "/eof" => {
                r.s.write_all(format!("HTTP/1.1 200 OK\r\n{ids}\r\nuntil the end").as_bytes())
                    .await?;
                return r.s.shutdown().await;
            }
            "/interim" => format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\n{ids}content-length: 2\r\n\r\nok"
            ),
            "/close-after" => {
                // The answer and the FIN leave in one segment (corked until the shutdown), so
                // the gateway learns of the close no later than it gets the answer. A gap
                // between them is a different case, the one `/drop-reused` stands for.
                socket2::SockRef::from(&r.s).set_tcp_cork(true)?;
                r.s.write_all(
                    format!("HTTP/1.1 200 OK\r\n{ids}content-length: 2\r\n\r\nok").as_bytes(),
                )
                .await?;
                return r.s.shutdown().await;
            }
            "/drop-reused" if req > 0 => return Ok(()),
            // The whole request read, then the connection closed without a byte of answer.
            "/drop" => return Ok(()),
            // A head that never ends: 1 MiB without a line feed.
            "/endless-head" => {
                format!("HTTP/1.1 200 OK\r\n{ids}x-long: {}", "a".repeat(1 << 20))
            }
            "/malformed" => {
                format!("HTTP/1.1 200 OK\r\n{ids}content-length: 3\r\ncontent-length: 4\r\n\r\nabc")
            }
            _ => format!("HTTP/1.1 200 OK\r\n{ids}content-length: 2\r\n\r\nok"),
        };
        r.s.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}
