//! gatehouse's own HTTP/1.1 server connection, for the requests that are nearly all of an
//! edge gateway's HTTP/1 traffic: heads parsed by `httparse` into `http` types, bodies framed
//! by length or chunked, responses written with their head. Anything else — an upgrade
//! (websocket, h2c), CONNECT, `Expect: 100-continue` — is handed to hyper with the bytes read
//! so far, and hyper serves the rest of that connection.
//!
//! Why not hyper for all of it: hyper keeps an 8 KiB read buffer, a write buffer and room for
//! a service future in every connection for its whole life, and runs a dispatcher around each
//! request. Here a connection between requests holds no buffer at all (it waits for bytes
//! with a read into the stack), and a request costs one parse and, for a small response, one
//! write. BENCHMARKS.md, "Own HTTP/1 server", has the figures.

mod body;
mod encode;
mod head;

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use body::RequestBody;
use encode::Asked;
use head::{Framing, Head, Refused};
pub(crate) use head::{content_length, last_is_chunked};

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
    loop {
        let Some(reader) = rd.as_mut() else { return };
        if buf.is_empty() {
            // Drops the last head's allocation, which an empty remainder still points into.
            buf = BytesMut::new();
        }
        let head = match read_head(reader, &mut buf, limits).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(refused) => {
                tracing::debug!(peer = %info.peer, ?refused, "request head refused");
                let _ = wr.write_all(encode::refusal(refused)).await;
                let _ = wr.shutdown().await;
                return;
            }
        };
        ctl.busy.store(true, Ordering::Relaxed);
        if head.hand_over {
            let Some(reader) = rd.take() else { return };
            let mut replay = BytesMut::from(&head.raw.unwrap_or_default()[..]);
            replay.extend_from_slice(&buf);
            let io = Prefixed::new(replay.freeze(), reader.unsplit(wr));
            // Boxed: hyper's connection state would otherwise size every connection's future.
            Box::pin(super::server::hyper_h1(io, info, limits, ctl)).await;
            return;
        }
        let Head {
            req,
            framing,
            keep_alive,
            ambiguous,
            ..
        } = head;
        if ambiguous {
            // The service answers it (400, logged and counted like any request).
            info.framing.flag_next();
        }
        let asked = Asked {
            head: req.method() == Method::HEAD,
            version: req.version(),
            keep_alive: keep_alive && !ambiguous,
        };
        let (req, back) = match (framing, rd.take()) {
            (Framing::None, reader) => {
                rd = reader;
                (req.map(|()| RequestBody::empty()), None)
            }
            (framing, Some(reader)) => {
                let (body, back) = RequestBody::new(framing, reader, std::mem::take(&mut buf));
                (req.map(|()| body), Some(back))
            }
            (_, None) => return,
        };
        // Boxed: the request path's future exists only while a request is in flight.
        let keep = Box::pin(exchange(req, &info, &mut wr, asked, &ctl)).await;
        ctl.busy.store(false, Ordering::Relaxed);
        if !keep {
            return;
        }
        if let Some(mut back) = back {
            // The body hands the read half back when it ends; one still out (unread past what
            // was buffered, or held by someone) ends the connection.
            match back.try_recv() {
                Ok(r) if r.whole => {
                    rd = Some(r.rd);
                    buf = r.rest;
                }
                _ => return,
            }
        }
    }
}

/// One request through the service, and its response onto the wire; whether the connection
/// can carry another.
async fn exchange<R, W>(
    req: Request<RequestBody<R>>,
    info: &Arc<ConnInfo>,
    wr: &mut W,
    asked: Asked,
    ctl: &Ctl,
) -> bool
where
    R: AsyncRead + Unpin + Send + Sync + 'static,
    W: AsyncWrite + Unpin,
{
    let resp = match handle(req, info.clone()).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let asked = Asked {
        keep_alive: asked.keep_alive && !ctl.closing.load(Ordering::Relaxed),
        ..asked
    };
    encode::write(wr, resp, asked).await.unwrap_or(false)
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
    loop {
        if !buf.is_empty()
            && let Some(h) = head::parse(buf, limits.max_head)?
        {
            return Ok(Some(h));
        }
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
