//! gatehouse's own HTTP/1.1 server connection, for the requests that are nearly all of an
//! edge gateway's HTTP/1 traffic: heads parsed by `httparse` into `http` types, bodies framed
//! by length or chunked (`Expect: 100-continue` included), responses written with their head.
//! An upgrade (websocket, h2c) or CONNECT is handed to hyper with the bytes read so far, and
//! hyper serves the rest of that connection.
//!
//! Why not hyper for all of it: hyper keeps an 8 KiB read buffer, a write buffer and room for
//! a service future in every connection for its whole life, and runs a dispatcher around each
//! request. Here a connection between requests holds no buffer at all (it waits for bytes
//! with a read into the stack), and a request costs one parse and, for a small response, one
//! write. BENCHMARKS.md, "Own HTTP/1.1 server", has the figures.

mod body;
mod encode;
pub(crate) mod head;

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

pub(crate) use body::RequestBody;
use body::Returned;
use encode::Asked;
use head::{Framing, Head, Refused};
pub(crate) use head::{content_length, is_h2c, last_is_chunked};

use super::layout::{Aligned, pinned};
use super::service::{ConnInfo, handle};
use crate::io::Prefixed;

/// What the connection's owner (`server::serve`) and the connection share.
#[derive(Debug, Default)]
pub(crate) struct Ctl {
    /// Draining: every response says `Connection: close`, and the connection ends after it.
    pub(crate) closing: AtomicBool,
    /// A request is in flight (or hyper serves the connection): it is not idle, so a drain
    /// must let it finish instead of dropping it.
    pub(crate) busy: AtomicBool,
    /// Asks a connection handed to hyper to shut down gracefully.
    pub(crate) shutdown: Notify,
    /// Requests the hyper service is answering (HTTP/2 streams, a handed-over request).
    pub(crate) streams: AtomicUsize,
}

impl Ctl {
    /// Whether a request is in flight on the connection.
    pub(crate) fn in_flight(&self) -> bool {
        self.busy.load(Ordering::Relaxed) || self.streams.load(Ordering::Relaxed) > 0
    }
}

/// The connection's request limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest request head; larger gets 431.
    pub(crate) max_head: usize,
    /// Time from a head's first byte to its end; a slower client is disconnected.
    pub(crate) header_read: Duration,
}

/// Serves HTTP/1.1 on `io`, whose first bytes (already read) are `first`, until the client
/// closes, a request or response ends the connection, or `ctl` says it is draining.
pub(crate) async fn serve<I>(
    io: I,
    first: Bytes,
    info: Arc<ConnInfo>,
    limits: Limits,
    ctl: Arc<Ctl>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    let mut rd = Some(rd);
    let mut buf = BytesMut::from(&first[..]);
    let end = loop {
        let Some(reader) = rd.as_mut() else {
            break End::Closed;
        };
        if buf.is_empty() {
            // Drops the last head's allocation, which an empty remainder still points into.
            buf = BytesMut::new();
        }
        // The head and request are taken apart in `start`, outside this function's state:
        // only the boxed exchange and the body's return channel live across the await below,
        // so they are no part of what an idle connection holds.
        let served = match read_head(reader, &mut buf, limits).await {
            Ok(Some(head)) if head.hand_over => break End::HandOver(head.raw.unwrap_or_default()),
            Ok(Some(head)) => start(head, &mut rd, &mut buf, &mut wr, &info, &ctl, limits),
            Ok(None) => break End::Closed,
            Err(refused) => break End::Refused(refused),
        };
        let (keep, back) = served.await;
        ctl.busy.store(false, Ordering::Relaxed);
        // The body hands the read half back when it ends; one unread past what was buffered
        // ends the connection, and one still held by someone closes it.
        let returned = match back {
            None if keep => continue,
            None => break End::Done,
            Some(Back::Got(r)) => Ok(r),
            Some(Back::Waiting(mut rx)) => rx.try_recv(),
        };
        match returned {
            Ok(r) if r.whole && keep => {
                rd = Some(r.rd);
                buf = r.rest;
            }
            Ok(r) => {
                rd = Some(r.rd);
                break End::Done;
            }
            Err(_) => break End::Closed,
        }
    };
    match end {
        End::Closed => {}
        // The response said `Connection: close` (or could not be sent): FIN, and on TLS a
        // close_notify, so the client knows the response ended where it did.
        End::Done => {
            let _ = wr.shutdown().await;
            if let Some(reader) = rd.take() {
                Box::pin(linger(reader)).await;
            }
        }
        End::Refused(refused) => {
            tracing::debug!(peer = %info.peer, ?refused, "request head refused");
            let _ = wr.write_all(encode::refusal(refused)).await;
            let _ = wr.shutdown().await;
            if let Some(reader) = rd.take() {
                Box::pin(linger(reader)).await;
            }
        }
        End::HandOver(raw) => {
            let Some(reader) = rd.take() else { return };
            ctl.busy.store(true, Ordering::Relaxed);
            let mut replay = BytesMut::from(&raw[..]);
            replay.extend_from_slice(&buf);
            let io = Prefixed::new(replay.freeze(), reader.unsplit(wr));
            // Boxed: hyper's connection state would otherwise size every connection's future.
            Box::pin(super::server::hyper_h1(io, info, limits, ctl)).await;
        }
    }
}

/// How long, and how many bytes, a connection this side ended is still read from.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;

/// Reads and discards what the client still sends after this side ended the connection
/// (its FIN is out), until the client closes too, for at most [`LINGER`]. Closing a socket
/// with unread bytes makes the kernel answer with a reset, which can destroy the response
/// before the client reads it: an early 413 or 431 while an upload is still coming. Envoy's
/// delayed close (1 s) and nginx's lingering close do the same. Boxed where it runs: its
/// buffer is no part of an idle connection.
async fn linger<R: AsyncRead + Unpin>(mut rd: R) {
    let deadline = Instant::now() + LINGER;
    let mut scratch = vec![0u8; 16 * 1024];
    let mut total = 0;
    while total < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, rd.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => return,
        }
    }
}

/// How a connection's own serving ends.
enum End {
    /// Closed by the client, or it failed or stalled.
    Closed,
    /// This side ends the connection after a response.
    Done,
    /// A head refused before the service (400, 431).
    Refused(Refused),
    /// A request hyper serves, with the head's bytes to replay.
    HandOver(Bytes),
}

/// A request in flight: the exchange; whether the connection can carry another, and for a
/// request with a body, where its read half comes back.
type Started<'a, I> = Pin<Box<dyn Future<Output = (bool, Option<Back<ReadHalf<I>>>)> + Send + 'a>>;

/// Where a request body's read half comes back: the receiver, or what it received when the
/// exchange had to know whether the body had ended.
enum Back<R> {
    Waiting(oneshot::Receiver<Returned<R>>),
    Got(Returned<R>),
}

/// Hands `head` to the service: its body (if any) borrows the read half, which comes back
/// through the exchange's `Back`, and a request without one leaves the read half watched for
/// the client going away.
fn start<'a, I>(
    head: Head,
    rd: &'a mut Option<ReadHalf<I>>,
    buf: &'a mut BytesMut,
    wr: &'a mut WriteHalf<I>,
    info: &'a Arc<ConnInfo>,
    ctl: &'a Ctl,
    limits: Limits,
) -> Started<'a, I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    ctl.busy.store(true, Ordering::Relaxed);
    let Head {
        mut req,
        framing,
        keep_alive,
        expects_continue,
        ambiguous,
        ..
    } = head;
    if expects_continue {
        // Answered here, as Envoy does: the upstream gets the body without waiting.
        req.headers_mut().remove(http::header::EXPECT);
    }
    if ambiguous {
        // The service answers it (400, logged and counted like any request).
        info.framing.flag_next();
    }
    let asked = Asked {
        head: req.method() == Method::HEAD,
        version: req.version(),
        keep_alive: keep_alive && !ambiguous,
    };
    let (req, side, back) = match (framing, rd.take()) {
        (Framing::None, reader) => {
            *rd = reader;
            let side = match rd.as_mut() {
                Some(rd) => Side::Watch(Watch {
                    rd,
                    buf,
                    max: limits.max_head,
                }),
                None => Side::Nothing,
            };
            (req.map(|()| super::body::empty()), side, None)
        }
        (framing, Some(reader)) => {
            let (mut body, rx) = RequestBody::new(framing, reader, std::mem::take(buf));
            let side = match expects_continue.then(|| body.expect_continue()).flatten() {
                Some(want) => Side::Continue(want),
                None => Side::Nothing,
            };
            (
                req.map(|()| super::body::boxed(body)),
                side,
                Some(Back::Waiting(rx)),
            )
        }
        (_, None) => return Box::pin(std::future::ready((false, None))),
    };
    pinned(|| exchange(req, info, wr, Aligned(asked), ctl, side, back))
}

/// What the exchange minds besides the service.
enum Side<'a, R> {
    Nothing,
    /// A request without a body: the client going away.
    Watch(Watch<'a, R>),
    /// A request that expects 100-continue: its body asking for it.
    Continue(oneshot::Receiver<()>),
}

/// The client side of a connection while its request (without a body) is in flight.
struct Watch<'a, R> {
    rd: &'a mut R,
    /// Where bytes that arrive meanwhile (a pipelined request) are kept.
    buf: &'a mut BytesMut,
    /// Most bytes kept; past that the client is not read until the response is out.
    max: usize,
}

/// One request through the service, and its response onto the wire; whether the connection
/// can carry another.
async fn exchange<R, W>(
    mut req: Request<super::body::Body>,
    info: &Arc<ConnInfo>,
    wr: &mut W,
    Aligned(asked): Aligned<Asked>,
    ctl: &Ctl,
    side: Side<'_, R>,
    mut back: Option<Back<R>>,
) -> (bool, Option<Back<R>>)
where
    R: AsyncRead + Unpin + Send + Sync + 'static,
    W: AsyncWrite + Unpin,
{
    // Pinned where it is: the service future is large, and moving it into a match arm to
    // await it there copied it per request (10 k instructions of memcpy, `bench/instructions.sh`).
    let resp = {
        let served = handle(&mut req, info.clone());
        tokio::pin!(served);
        match side {
            Side::Nothing => served.await,
            Side::Continue(want) => {
                tokio::select! {
                    biased;
                    r = &mut served => r,
                    Ok(()) = want => {
                        if wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
                            || wr.flush().await.is_err()
                        {
                            return (false, back);
                        }
                        served.await
                    }
                }
            }
            Side::Watch(w) => tokio::select! {
                biased;
                r = &mut served => r,
                () = gone(w) => {
                    // As hyper (without half-close) and Envoy: a client that closes its side has
                    // abandoned the request, and dropping the service future cancels the upstream
                    // request instead of letting it run to an answer nobody reads.
                    tracing::debug!(peer = %info.peer, "client closed the connection with a request in flight; cancelled");
                    return (false, back);
                }
            },
        }
    };
    let resp = match resp {
        Ok(r) => r,
        Err(never) => match never {},
    };
    // A body the service left unread (a local answer) is let go now, so that whether it was
    // sent whole is known before the head says whether the connection stays open.
    if back.is_some() {
        drop(std::mem::replace(req.body_mut(), super::body::empty()));
    }
    let asked = Asked {
        keep_alive: asked.keep_alive
            && !ctl.closing.load(Ordering::Relaxed)
            && body_ended(&mut back),
        ..asked
    };
    (encode::write(wr, resp, asked).await.unwrap_or(false), back)
}

/// Whether the connection may stay open as far as the request's body is concerned, as the
/// response head goes out. A body let go of before its end with bytes still on the wire (a
/// local answer to an upload) ends the connection, and the head says so: a client must not
/// send another request on it. A body still being read (an upload the upstream answered
/// early and goes on taking, a stream in both directions) may yet end whole: the head does
/// not promise a close, and the loop decides once the body is back (a close without notice
/// if it was not whole, as before).
fn body_ended<R>(back: &mut Option<Back<R>>) -> bool {
    match back.take() {
        None => true,
        Some(Back::Got(r)) => {
            let whole = r.whole;
            *back = Some(Back::Got(r));
            whole
        }
        Some(Back::Waiting(mut rx)) => match rx.try_recv() {
            Ok(r) => {
                let whole = r.whole;
                *back = Some(Back::Got(r));
                whole
            }
            Err(_) => {
                *back = Some(Back::Waiting(rx));
                true
            }
        },
    }
}

/// Completes when the client closes (or breaks) the connection; bytes it sends meanwhile are
/// kept for the next request.
async fn gone<R: AsyncRead + Unpin>(w: Watch<'_, R>) {
    loop {
        if w.buf.len() >= w.max {
            return std::future::pending().await;
        }
        match read_some(w.rd, w.buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Reads until `buf` starts with a whole head. `Ok(None)`: the client closed, failed, or took
/// longer than the header read timeout from a head's first byte to its last. That timer is
/// armed only for a head that did not come in one read; waiting for the next request on an
/// open connection is the idle timeout's business (`server::serve`).
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limits: Limits,
) -> Result<Option<Head>, Refused> {
    let mut deadline = None;
    let mut parse = !buf.is_empty();
    let mut blanks = 0;
    loop {
        // Blank lines before a request line are ignored (RFC 9112 §2.2) and dropped here: a
        // client sending only them would otherwise grow the buffer and make each parse
        // longer (quadratic CPU). A CRLF some clients send after a body is one; more than a
        // head's worth of them is no client's, and refused.
        let blank = blank_prefix(buf);
        if blank > 0 {
            bytes::Buf::advance(buf, blank);
            blanks += blank;
            if blanks > limits.max_head {
                return Err(Refused::Bad);
            }
            parse &= !buf.is_empty();
        }
        if parse && let Some(h) = head::parse(buf, limits.max_head)? {
            return Ok(Some(h));
        }
        let before = buf.len();
        let read = if buf.is_empty() {
            read_some(rd, buf).await
        } else {
            let at = *deadline.get_or_insert_with(|| Instant::now() + limits.header_read);
            // Boxed: the timer is needed only for a head split across reads, and inline it
            // would be part of every idle connection's state.
            match Box::pin(tokio::time::timeout_at(at, read_some(rd, buf))).await {
                Ok(r) => r,
                Err(_) => return Ok(None),
            }
        };
        match read {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        // A head ends with a LF, so bytes without one cannot complete it: parsing waits for
        // one (or for the size limit). A client dripping a long line byte by byte would
        // otherwise cost a parse of the whole buffer per byte.
        parse = memchr::memchr(b'\n', &buf[before..]).is_some() || buf.len() > limits.max_head;
    }
}

/// How many bytes of empty lines (CRLF or a bare LF) `buf` starts with.
fn blank_prefix(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// Bytes a read into an empty buffer may take: a request head and then some.
const FIRST_READ: usize = 4096;

/// Reads more into `buf`. An empty `buf` has no allocation: the read goes to the stack and only
/// what arrived is copied, so a connection waiting for its next request holds no buffer.
async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.is_empty() {
        return poll_fn(|cx| {
            let mut stack = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut rb = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut *rd).poll_read(cx, &mut rb))?;
            buf.extend_from_slice(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        })
        .await;
    }
    buf.reserve(FIRST_READ);
    poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *rd), cx, buf)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    /// A client that sends one byte per read.
    struct Drip(&'static [u8]);

    impl AsyncRead for Drip {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some((&b, rest)) = self.0.split_first() {
                buf.put_slice(&[b]);
                self.0 = rest;
            }
            Poll::Ready(Ok(()))
        }
    }

    const LIMITS: Limits = Limits {
        max_head: 8192,
        header_read: Duration::from_secs(5),
    };

    #[test]
    fn blank_lines_before_a_request_are_counted() {
        assert_eq!(blank_prefix(b"\r\n\nGET"), 3);
        assert_eq!(blank_prefix(b"\r\r\n"), 0);
        assert_eq!(blank_prefix(b"\r"), 0);
        assert_eq!(blank_prefix(b""), 0);
    }

    #[tokio::test]
    async fn a_head_dripped_byte_by_byte_is_parsed_when_its_last_lf_arrives() {
        let mut rd = Drip(b"GET /d HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaaaaa\r\n\r\nNEXT");
        let mut buf = BytesMut::new();
        let head = read_head(&mut rd, &mut buf, LIMITS)
            .await
            .expect("ok")
            .expect("head");
        assert_eq!(head.req.uri().path(), "/d");
        assert_eq!(head.req.headers()["x-long"], "aaaaaaaaaaaaaaaa");
        // Read one byte at a time, nothing past the head was taken.
        assert_eq!(rd.0, b"NEXT");
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn a_dripped_head_past_the_limit_is_refused_without_a_lf() {
        let mut rd =
            Drip(Box::leak(format!("GET /{}", "a".repeat(300)).into_boxed_str()).as_bytes());
        let mut buf = BytesMut::new();
        let limits = Limits {
            max_head: 128,
            ..LIMITS
        };
        assert_eq!(
            read_head(&mut rd, &mut buf, limits).await.err(),
            Some(Refused::TooLarge)
        );
    }
}
