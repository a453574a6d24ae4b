//! gatehouse's own HTTP/1.1 client, driven by the request's task. hyper's client runs each
//! connection as a task of its own and hands requests and responses to it over channels, so
//! every proxied request cost a second task's wake-ups and the dispatch between them (about a
//! third of the instructions per request, measured with `bench/instructions.sh`). Here the
//! request is written, and the response read, by whoever polls the exchange: first
//! [`send`], then the response body. A request body still uploading when the response head
//! arrives goes on being sent from the response body's polls.
//!
//! A connection has no task while it is idle in the pool; [`Conn::is_closed`] tells, without
//! a system call unless the socket became readable, whether the upstream closed it meanwhile.

mod body;
mod names;
mod request;
mod response;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::BytesMut;
use http::{Method, Response};
use tokio::io::{AsyncRead, ReadBuf};

pub use body::ResponseBody;
pub use request::Head;

use super::pool::{Io, Lease};
use crate::http::body::{Body, BoxError};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;

/// A client connection: the transport, and what was read from it but not yet used.
pub struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// The last response head's header names ([`names`]); boxed, as a lease moves the
    /// connection around.
    names: Box<names::Names>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Conn {
    /// A connection over `io`.
    pub fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            names: Box::default(),
        }
    }

    /// Whether the upstream closed this idle connection, or sent something unasked (which
    /// makes it unusable too). tokio answers from the readiness it has recorded, so this is
    /// no system call unless the socket became readable.
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        !matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut rb),
            Poll::Pending
        )
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the connection failed.
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before the whole response.
    #[error("upstream closed the connection before the whole response")]
    Closed,
    /// The upstream's bytes are not an HTTP/1 response.
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
    /// The request body failed (the client went away inside it, or sent a bad one).
    #[error("request body: {0}")]
    Body(#[source] BoxError),
}

/// Whether a failed request may be sent again on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// No.
    Never,
    /// Nothing of it reached the connection.
    Unsent,
    /// It went out on a reused connection that the upstream closed without a byte of
    /// response: the race with the upstream's keep-alive timeout. Safe for idempotent
    /// methods (RFC 9110 §9.2.2), which is when nginx's `proxy_next_upstream` retries too.
    Unanswered,
}

/// A failed exchange.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: Error,
    /// Whether the request may go to a new connection.
    pub again: Again,
}

/// Sends the request on the leased connection and reads the response head. The response
/// body reads the rest and returns the connection to the pool when it ends.
///
/// The headers may end with an empty `x-envoy-upstream-service-time`: the slot the caller
/// sets, as forwarding does on every response ([`names`]).
pub async fn send(mut lease: Lease, head: Head<'_>, body: Body) -> Result<Response<Body>, Failure> {
    let head_request = head.method == Method::HEAD;
    let reused = lease.reused();
    let mut pump = Some(request::encode(head, body));
    let conn = lease.conn();
    // Buffer length when the head was last parsed: a head ends in LF, so bytes without one
    // cannot complete it.
    let mut parsed_at = None;
    let mut answered = false;
    // The upstream may answer before the request is in, then close (an early 413): the
    // write fails, but its answer is there to read, and it is what the client should get.
    let mut cut: Option<Error> = None;
    let got = poll_fn(|cx| {
        if let Some(p) = pump.as_mut() {
            match p.poll(&mut conn.io, cx) {
                Poll::Ready(Ok(())) => pump = None,
                Poll::Ready(Err(e @ Error::Io(_))) if p.wrote() => {
                    cut = Some(e);
                    pump = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err((e, p.wrote()))),
                Poll::Pending => {}
            }
        }
        loop {
            // Past the size limit it is parsed regardless, to be refused: an upstream sending
            // no LF must not grow the buffer without bound.
            let fresh = parsed_at.is_none_or(|at: usize| conn.buf[at..].contains(&b'\n'))
                || conn.buf.len() > response::MAX_HEAD;
            if fresh && !conn.buf.is_empty() {
                match response::parse(&mut conn.buf, head_request, &mut conn.names) {
                    Ok(response::Parsed::Final(h)) => return Poll::Ready(Ok(h)),
                    Ok(response::Parsed::Interim) => {
                        parsed_at = None;
                        continue;
                    }
                    Ok(response::Parsed::Partial) => parsed_at = Some(conn.buf.len()),
                    Err(e) => return Poll::Ready(Err((e, true))),
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err((Error::Closed, true))),
                Ok(_) => answered = true,
                Err(e) => return Poll::Ready(Err((Error::Io(e), true))),
            }
        }
    })
    .await;
    match got {
        Ok(h) => {
            let (parts, ()) = h.resp.into_parts();
            let keep_alive = h.keep_alive && cut.is_none();
            let body = ResponseBody::new(lease, h.body, pump, keep_alive);
            Ok(Response::from_parts(parts, crate::http::body::boxed(body)))
        }
        Err((error, wrote)) => {
            // No answer after all: the write's failure is the better account.
            let error = match (cut, error) {
                (Some(w), Error::Io(_) | Error::Closed) => w,
                (_, e) => e,
            };
            let lost = matches!(error, Error::Io(_) | Error::Closed);
            let again = if !lost {
                Again::Never
            } else if !wrote {
                Again::Unsent
            } else if reused && !answered {
                Again::Unanswered
            } else {
                Again::Never
            };
            Err(Failure { error, again })
        }
    }
}
