//! Responses onto the wire: the head, then the body framed by `Content-Length`, chunked, or
//! by closing the connection (HTTP/1.0 with no known length). A small body that is ready goes
//! out in the same write as the head, and a head whose body is not ready waits briefly for it
//! ([`HOLD_HEAD`]).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::head::Refused;
use crate::http::body::Body;

/// Data frames at least this large are written from their own buffer, not copied.
const DIRECT: usize = 8 * 1024;

/// Buffered response bytes written once this many are pending.
const FLUSH_AT: usize = 16 * 1024;

/// How long a buffered head waits for its body's first bytes before it is written alone:
/// 1–2 ms, as the runtime's timers tick in milliseconds and round a deadline up to the next
/// tick. Shorter would mean nothing to the timer.
const HOLD_HEAD: Duration = Duration::from_millis(1);

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delimit {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// What the response depends on from its request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asked {
    /// A HEAD request: the head only.
    pub(super) head: bool,
    /// The request's version.
    pub(super) version: Version,
    /// Whether the connection may stay open afterwards (the client's wish and ours).
    pub(super) keep_alive: bool,
}

/// Writes `resp`; returns whether the connection can carry another request. An error means
/// the response could not be sent whole, and the connection must close.
pub(super) async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    resp: Response<Body>,
    asked: Asked,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let mut keep_alive = asked.keep_alive;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // 1xx and 204 never carry a length (RFC 9110 §8.6); HEAD and 304 keep the one given.
    let lengthless = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodiless = asked.head || lengthless || status == StatusCode::NOT_MODIFIED;
    let (mut length, mut connection, mut date) = (None, false, false);
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if lengthless || n.is_none() {
                continue;
            }
            length = n;
        } else if name == header::CONNECTION {
            connection = true;
            keep_alive &= !lists_close(value);
        } else if name == header::DATE {
            date = true;
        }
        line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    let delimit = if bodiless {
        Delimit::None
    } else if let Some(n) = length {
        Delimit::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        line(&mut out, b"content-length", n.to_string().as_bytes());
        Delimit::Length(n)
    } else if asked.version == Version::HTTP_11 {
        line(&mut out, b"transfer-encoding", b"chunked");
        Delimit::Chunked
    } else {
        keep_alive = false;
        Delimit::Close
    };
    if !connection {
        if !keep_alive {
            line(&mut out, b"connection", b"close");
        } else if asked.version == Version::HTTP_10 {
            line(&mut out, b"connection", b"keep-alive");
        }
    }
    if !date {
        DATE.with_borrow_mut(|d| line(&mut out, b"date", d.now()));
    }
    out.extend_from_slice(b"\r\n");
    if delimit != Delimit::None {
        send_body(w, &mut out, &mut body, delimit).await?;
    }
    drop(body);
    if !out.is_empty() {
        w.write_all(&out).await?;
    }
    w.flush().await?;
    Ok(keep_alive)
}

/// Streams the body after the head already in `out`.
async fn send_body<W: AsyncWrite + Unpin>(
    w: &mut W,
    out: &mut Vec<u8>,
    body: &mut Body,
    delimit: Delimit,
) -> io::Result<()> {
    let mut sent = 0u64;
    // Whether the head may still wait for the body's first bytes: once, and only while
    // `out` holds the head alone (no body byte buffered or written yet).
    let mut wait = delimit != Delimit::Length(0) && !body.is_end_stream();
    loop {
        // A frame that is ready joins what is buffered; otherwise the buffer goes out first,
        // so a slow body holds back neither earlier data nor, beyond HOLD_HEAD, the head.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(f) => f,
            Poll::Pending if sent == 0 && std::mem::take(&mut wait) => {
                // Backends often send the head and the body in two writes (nginx: `writev`,
                // then `sendfile`), and the upstream read can fall between them. Writing the
                // head alone then costs a second segment, and the client's ACK of it, for a
                // body a few microseconds behind. So the head waits up to HOLD_HEAD for the
                // body's first bytes, as nginx's `postpone_output` holds a short head (without
                // a limit) and HAProxy corks it with MSG_MORE (BENCHMARKS.md, stop 26).
                match tokio::time::timeout(
                    HOLD_HEAD,
                    poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)),
                )
                .await
                {
                    Ok(f) => f,
                    Err(_) => continue,
                }
            }
            Poll::Pending => {
                if !out.is_empty() {
                    w.write_all(out).await?;
                    out.clear();
                    w.flush().await?;
                }
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                // What is buffered (the head at least) still goes out, so the client sees a
                // response cut short rather than a connection closed without one, which on a
                // reused connection it could take for an idle close and retry.
                if !out.is_empty() {
                    let _ = w.write_all(out).await;
                    out.clear();
                }
                return Err(io::Error::other(e));
            }
            // Trailers are not sent over HTTP/1.1.
            Some(Ok(f)) => match f.into_data() {
                Ok(d) if !d.is_empty() => d,
                _ => continue,
            },
        };
        let n = data.len() as u64;
        sent += n;
        match delimit {
            Delimit::Length(max) if sent > max => {
                return Err(io::Error::other(
                    "response body longer than its Content-Length",
                ));
            }
            Delimit::Chunked => {
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            }
            _ => {}
        }
        if data.len() >= DIRECT {
            if !out.is_empty() {
                w.write_all(out).await?;
                out.clear();
            }
            w.write_all(&data).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if delimit == Delimit::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= FLUSH_AT {
            w.write_all(out).await?;
            out.clear();
        }
    }
    match delimit {
        Delimit::Length(max) if sent != max => Err(io::Error::other(
            "response body shorter than its Content-Length",
        )),
        Delimit::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            Ok(())
        }
        _ => Ok(()),
    }
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn lists_close(v: &HeaderValue) -> bool {
    v.as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// The answer to a head refused before it reached the service; the connection closes after.
pub(super) fn refusal(r: Refused) -> &'static [u8] {
    match r {
        Refused::TooLarge => {
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        }
        Refused::Bad => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        Refused::NotImplemented => {
            b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        }
    }
}

/// The `Date` header, formatted once a second per thread.
struct Date {
    second: u64,
    text: String,
}

impl Date {
    fn now(&mut self) -> &[u8] {
        let second = crate::clock::unix_seconds();
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        }
        self.text.as_bytes()
    }
}

thread_local! {
    static DATE: RefCell<Date> = const { RefCell::new(Date { second: 0, text: String::new() }) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    async fn written(resp: Response<Body>, asked: Asked) -> (String, bool) {
        let mut out = Vec::new();
        let keep = write(&mut out, resp, asked).await.expect("written");
        (String::from_utf8(out).expect("utf-8"), keep)
    }

    const GET11: Asked = Asked {
        head: false,
        version: Version::HTTP_11,
        keep_alive: true,
    };

    #[tokio::test]
    async fn known_length_goes_out_with_the_head() {
        let resp = Response::new(body::full("hello"));
        let (w, keep) = written(resp, GET11).await;
        assert!(
            w.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: "),
            "{w}"
        );
        assert!(w.ends_with("\r\n\r\nhello"), "{w}");
        assert!(keep);
    }

    #[tokio::test]
    async fn unknown_length_is_chunked_for_http11_and_closes_for_http10() {
        let frames = futures_stream(vec!["ab", "cde"]);
        let (w, keep) = written(Response::new(frames), GET11).await;
        assert!(w.contains("transfer-encoding: chunked\r\n"), "{w}");
        assert!(
            w.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "{w}"
        );
        assert!(keep);
        let asked = Asked {
            version: Version::HTTP_10,
            ..GET11
        };
        let (w, keep) = written(Response::new(futures_stream(vec!["ab"])), asked).await;
        assert!(
            w.contains("connection: close\r\n") && w.ends_with("\r\n\r\nab"),
            "{w}"
        );
        assert!(!keep);
    }

    #[tokio::test]
    async fn head_and_204_carry_no_body_and_a_close_ends_the_connection() {
        let mut resp = Response::new(body::full("hello"));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let (w, _) = written(
            resp,
            Asked {
                head: true,
                ..GET11
            },
        )
        .await;
        assert!(
            w.contains("content-length: 5\r\n") && w.ends_with("\r\n\r\n"),
            "{w}"
        );
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        let (w, keep) = written(resp, GET11).await;
        assert!(
            w.starts_with("HTTP/1.1 204 No Content\r\nconnection: close\r\n"),
            "{w}"
        );
        assert!(!w.contains("content-length"), "{w}");
        assert!(!keep);
    }

    #[tokio::test]
    async fn a_body_shorter_than_its_length_is_an_error() {
        let mut resp = Response::new(body::full("hi"));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let mut out = Vec::new();
        assert!(write(&mut out, resp, GET11).await.is_err());
    }

    /// A writer that keeps each write apart, and says when the first one happened.
    struct Writes {
        writes: Vec<Vec<u8>>,
        first: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            if let Some(first) = self.first.take() {
                let _ = first.send(());
            }
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A 5-byte response whose body comes through the returned sender, as an upstream's
    /// body comes after its head.
    fn later_body() -> (Response<Body>, tokio::sync::mpsc::Sender<Bytes>) {
        struct Later(tokio::sync::mpsc::Receiver<Bytes>);
        impl http_body::Body for Later {
            type Data = Bytes;
            type Error = body::BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> Poll<Option<Result<http_body::Frame<Bytes>, body::BoxError>>> {
                self.0
                    .poll_recv(cx)
                    .map(|d| d.map(|d| Ok(http_body::Frame::data(d))))
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut resp = Response::new(Later(rx).boxed());
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        (resp, tx)
    }

    #[tokio::test]
    async fn a_body_just_behind_its_head_leaves_in_the_same_write() {
        let (resp, tx) = later_body();
        // Runs once the writer waits (the test's runtime has one thread), so the body is not
        // there when the head is ready; and it takes a few turns of the runtime, so a head
        // that waited only for the next poll of the socket events would leave alone.
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            tx.send(Bytes::from_static(b"hello")).await
        });
        let mut w = Writes {
            writes: Vec::new(),
            first: None,
        };
        assert!(write(&mut w, resp, GET11).await.expect("written"));
        assert_eq!(w.writes.len(), 1, "{:?}", w.writes);
        let text = String::from_utf8(w.writes.concat()).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    }

    #[tokio::test]
    async fn a_head_whose_body_does_not_come_is_written_alone_after_the_hold() {
        let (resp, tx) = later_body();
        let (first, written) = tokio::sync::oneshot::channel();
        // The body comes only once the head is out: a head held until its body would never
        // be written, and the test would time out.
        tokio::spawn(async move {
            if written.await.is_ok() {
                let _ = tx.send(Bytes::from_static(b"hello")).await;
            }
        });
        let mut w = Writes {
            writes: Vec::new(),
            first: Some(first),
        };
        let keep = tokio::time::timeout(Duration::from_secs(10), write(&mut w, resp, GET11))
            .await
            .expect("the head was not held back for good")
            .expect("written");
        assert!(keep);
        let head = String::from_utf8(w.writes[0].clone()).expect("utf-8");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert_eq!(w.writes[1..].concat(), b"hello");
    }

    #[tokio::test]
    async fn a_body_that_fails_behind_its_head_still_lets_the_head_out() {
        /// Not ready at first, then an error: an upstream that resets after its head.
        struct Fails(bool);
        impl http_body::Body for Fails {
            type Data = Bytes;
            type Error = body::BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> Poll<Option<Result<http_body::Frame<Bytes>, body::BoxError>>> {
                if std::mem::replace(&mut self.0, true) {
                    return Poll::Ready(Some(Err("reset".into())));
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
        let mut resp = Response::new(Fails(false).boxed());
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let mut w = Writes {
            writes: Vec::new(),
            first: None,
        };
        assert!(write(&mut w, resp, GET11).await.is_err());
        let text = String::from_utf8(w.writes.concat()).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
    }

    /// A body of `parts` with no size hint, as a streamed upstream response has.
    fn futures_stream(parts: Vec<&'static str>) -> Body {
        struct Parts(std::collections::VecDeque<&'static str>);
        impl http_body::Body for Parts {
            type Data = Bytes;
            type Error = body::BoxError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> Poll<Option<Result<http_body::Frame<Bytes>, body::BoxError>>> {
                Poll::Ready(
                    self.0
                        .pop_front()
                        .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes())))),
                )
            }
        }
        Parts(parts.into()).boxed()
    }
}
