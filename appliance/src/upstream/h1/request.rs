//! Requests onto the wire: the head (with the body's framing decided here, as hyper's client
//! does), then the body, pumped from whoever polls the exchange: first the response-head wait,
//! then the response body, so an upload and its response share one task.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::Method;
use http::header::{self, HeaderMap};
use http_body::Body as _;
use tokio::io::AsyncWrite;

use super::Error;
use crate::http::body::Body;

/// Bytes gathered before a write while the body's frames keep coming.
const GATHER: usize = 16 * 1024;

/// Whether a body of no bytes is still announced with `Content-Length: 0`: for methods whose
/// requests normally carry one (hyper's rule), so a bodiless POST is not left unframed.
fn announces_empty(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT | Method::OPTIONS
    )
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Length(u64),
    Chunked,
}

/// What the request line and header block say.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request target (path and query).
    pub target: &'a str,
    /// The `Host` header's value.
    pub host: &'a str,
    /// The other headers (hop-by-hop already removed); `Host`, `Content-Length` and
    /// `Transfer-Encoding` here are ignored.
    pub headers: &'a HeaderMap,
}

/// Encodes the request for the wire: its head now, its body as the returned pump runs. The
/// body's first ready frames go out in the same write as the head. The head is borrowed, not
/// built into a `Request`: the proxy keeps it for retries, so this saves a copy per request.
pub(super) fn encode(head: Head<'_>, body: Body) -> Pump {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // A configured authority (a rewrite) is not a checked header value: one with a byte a
    // header value may not hold (controls but tab, DEL; CR and LF would end the line early)
    // is not written, and the client's own `Host` goes instead.
    let host_ok = !head
        .host
        .bytes()
        .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
    if host_ok {
        line(&mut out, b"host", head.host.as_bytes());
    }
    for (name, value) in head.headers {
        if (name == header::HOST && host_ok)
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    let frame = match body.size_hint().exact() {
        Some(0) if body.is_end_stream() => {
            if announces_empty(head.method) {
                line(&mut out, b"content-length", b"0");
            }
            None
        }
        Some(n) => {
            line(&mut out, b"content-length", n.to_string().as_bytes());
            Some(Frame::Length(n))
        }
        None => {
            line(&mut out, b"transfer-encoding", b"chunked");
            Some(Frame::Chunked)
        }
    };
    out.extend_from_slice(b"\r\n");
    Pump {
        body: frame.map(|f| (body, f)),
        sent: 0,
        head: Some(out),
        out: Out::Frame(Bytes::new()),
        next: None,
        wrote: false,
    }
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Bytes to write: this side's buffer (the head, and frames gathered with it) from an offset,
/// or a body frame from its own. The buffer is written where it is: made into `Bytes`, a
/// vector whose length is not its capacity costs an allocation, on every request.
enum Out {
    Buf(Vec<u8>, usize),
    Frame(Bytes),
}

impl Out {
    fn rest(&self) -> &[u8] {
        match self {
            Self::Buf(b, at) => b.get(*at..).unwrap_or_default(),
            Self::Frame(b) => b,
        }
    }

    fn is_empty(&self) -> bool {
        self.rest().is_empty()
    }

    fn advance(&mut self, n: usize) {
        match self {
            Self::Buf(_, at) => *at += n,
            Self::Frame(b) => b.advance(n.min(b.len())),
        }
    }
}

/// A request on its way out.
pub(super) struct Pump {
    /// The body still to send and its framing; `None` once it ended.
    body: Option<(Body, Frame)>,
    sent: u64,
    /// The head, until the first write.
    head: Option<Vec<u8>>,
    /// Bytes not yet written.
    out: Out,
    /// A large frame to write after `out`, from its own buffer.
    next: Option<Bytes>,
    /// Whether any byte reached the connection.
    wrote: bool,
}

impl Pump {
    /// Whether any of the request reached the connection: if not, it can go to another one.
    pub(super) fn wrote(&self) -> bool {
        self.wrote
    }

    /// Moves the request onto `io` as far as it goes now. `Ready(Ok)`: all of it is written.
    pub(super) fn poll<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        if let Some(head) = self.head.take() {
            // Whatever of the body is ready joins the head's write.
            if let Poll::Ready(Err(e)) = self.gather(cx, head) {
                return Poll::Ready(Err(e));
            }
        }
        loop {
            while !self.out.is_empty() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, self.out.rest()))?;
                if n == 0 {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                }
                self.wrote = true;
                self.out.advance(n);
                if self.out.is_empty()
                    && let Some(next) = self.next.take()
                {
                    self.out = Out::Frame(next);
                }
            }
            if self.body.is_none() {
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            }
            ready!(self.gather(cx, Vec::new()))?;
        }
    }

    /// Puts into `out` what `buf` holds and the body frames that are ready. `Pending` only
    /// when there is nothing to write.
    fn gather(&mut self, cx: &mut Context<'_>, mut buf: Vec<u8>) -> Poll<Result<(), Error>> {
        while let Some((body, frame)) = self.body.as_mut() {
            let polled = match Pin::new(body).poll_frame(cx) {
                Poll::Pending if buf.is_empty() => return Poll::Pending,
                Poll::Pending => break,
                Poll::Ready(f) => f,
            };
            let data = match polled {
                None => {
                    match *frame {
                        Frame::Length(n) if self.sent != n => {
                            return Poll::Ready(Err(Error::Body(
                                "request body shorter than its length".into(),
                            )));
                        }
                        Frame::Chunked => buf.extend_from_slice(b"0\r\n\r\n"),
                        Frame::Length(_) => {}
                    }
                    self.body = None;
                    break;
                }
                Some(Err(e)) => return Poll::Ready(Err(Error::Body(e))),
                // Trailers are not sent over HTTP/1.1.
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) if !d.is_empty() => d,
                    _ => continue,
                },
            };
            self.sent += data.len() as u64;
            match *frame {
                Frame::Length(n) if self.sent > n => {
                    return Poll::Ready(Err(Error::Body(
                        "request body longer than its length".into(),
                    )));
                }
                Frame::Length(_) if buf.is_empty() => {
                    // Written from its own buffer, no copy.
                    self.out = Out::Frame(data);
                    return Poll::Ready(Ok(()));
                }
                Frame::Length(_) if data.len() >= GATHER => {
                    self.out = Out::Buf(buf, 0);
                    self.next = Some(data);
                    return Poll::Ready(Ok(()));
                }
                Frame::Length(_) => buf.extend_from_slice(&data),
                Frame::Chunked => {
                    buf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    buf.extend_from_slice(&data);
                    buf.extend_from_slice(b"\r\n");
                }
            }
            if buf.len() >= GATHER {
                break;
            }
        }
        self.out = Out::Buf(buf, 0);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body;
    use std::future::poll_fn;

    async fn wire(method: Method, headers: &[(&'static str, &'static str)], b: Body) -> String {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        let head = Head {
            method: &method,
            target: "/a?b=1",
            host: "x",
            headers: &h,
        };
        let mut out = Vec::new();
        let mut p = encode(head, b);
        poll_fn(|cx| p.poll(&mut out, cx)).await.expect("request");
        String::from_utf8(out).expect("utf-8")
    }

    /// A body of unknown length, one frame per poll.
    struct Frames(Vec<&'static [u8]>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = body::BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, body::BoxError>>> {
            Poll::Ready(
                self.0
                    .pop()
                    .map(|b| Ok(http_body::Frame::data(Bytes::from_static(b)))),
            )
        }
    }

    #[tokio::test]
    async fn heads_and_bodies_are_framed_as_hyper_frames_them() {
        let get = wire(
            Method::GET,
            &[("host", "client"), ("content-length", "0"), ("a", "1")],
            body::empty(),
        );
        assert_eq!(get.await, "GET /a?b=1 HTTP/1.1\r\nhost: x\r\na: 1\r\n\r\n");
        let mut h = HeaderMap::new();
        h.insert("host", http::HeaderValue::from_static("client"));
        let bad = Head {
            method: &Method::GET,
            target: "/",
            host: "x\r\ninjected: 1",
            headers: &h,
        };
        let mut out = Vec::new();
        let mut p = encode(bad, body::empty());
        poll_fn(|cx| p.poll(&mut out, cx)).await.expect("request");
        assert_eq!(
            out, b"GET / HTTP/1.1\r\nhost: client\r\n\r\n",
            "the client's Host, not the bad one"
        );
        let post = wire(Method::POST, &[], body::empty()).await;
        assert_eq!(
            post,
            "POST /a?b=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
        );
        let put = wire(Method::PUT, &[], body::full("abc")).await;
        assert_eq!(
            put,
            "PUT /a?b=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
        );
        let chunked = wire(
            Method::POST,
            &[("transfer-encoding", "chunked")],
            body::boxed(Frames(vec![b"cde", b"ab"])),
        )
        .await;
        assert_eq!(
            chunked,
            "POST /a?b=1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );
    }
}
