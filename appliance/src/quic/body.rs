//! An HTTP/3 request stream's receiving half as an `http_body::Body`: data is streamed to the
//! upstream as it arrives, never buffered whole, and its length is held to `content-length`
//! (RFC 9114 §4.1.2: a mismatch makes the request malformed).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body::{Frame, SizeHint};

/// The receiving half of a request stream.
pub(super) type Recv = RequestStream<h3_quinn::RecvStream, Bytes>;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The stream failed (reset by the client, connection lost).
    #[error("HTTP/3 request stream: {0}")]
    Stream(#[from] h3::error::StreamError),
    /// The body and its `content-length` disagree.
    #[error("request body of {got} bytes, content-length says {declared}")]
    Length {
        /// `content-length`.
        declared: u64,
        /// Bytes received (so far, when too many).
        got: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

/// A request body read from an h3 stream.
pub(super) struct H3Body {
    recv: Recv,
    /// Data read by [`H3Body::new`]'s first look.
    first: Option<Bytes>,
    state: State,
    declared: Option<u64>,
    got: u64,
}

impl H3Body {
    /// Wraps `recv`, looking once (without waiting) for data or the end: a request whose
    /// stream ended with its headers (a GET) is then known to be empty and goes upstream
    /// without a body, rather than as a streamed one of unknown length.
    pub(super) async fn new(mut recv: Recv, declared: Option<u64>) -> Self {
        let first = std::future::poll_fn(|cx| Poll::Ready(recv.poll_recv_data(cx))).await;
        let mut b = Self {
            recv,
            first: None,
            state: State::Data,
            declared,
            got: 0,
        };
        match first {
            Poll::Ready(Ok(Some(mut buf))) => b.first = Some(buf.copy_to_bytes(buf.remaining())),
            // No data: empty, unless content-length says otherwise (the next read reports
            // the mismatch). Trailers on a request without data are not forwarded.
            Poll::Ready(Ok(None)) if declared.unwrap_or(0) == 0 => b.state = State::Done,
            // An error shows again on the next read.
            Poll::Ready(Ok(None) | Err(_)) | Poll::Pending => {}
        }
        b
    }

    fn count(&mut self, n: usize) -> Result<(), BodyError> {
        self.got += n as u64;
        match self.declared {
            Some(d) if self.got > d => Err(BodyError::Length {
                declared: d,
                got: self.got,
            }),
            _ => Ok(()),
        }
    }
}

impl http_body::Body for H3Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(b) = this.first.take() {
            return Poll::Ready(Some(this.count(b.len()).map(|()| Frame::data(b))));
        }
        loop {
            match this.state {
                State::Data => match ready!(this.recv.poll_recv_data(cx)) {
                    Ok(Some(mut buf)) => {
                        let b = buf.copy_to_bytes(buf.remaining());
                        return Poll::Ready(Some(this.count(b.len()).map(|()| Frame::data(b))));
                    }
                    Ok(None) => {
                        this.state = State::Trailers;
                        if let Some(d) = this.declared
                            && d != this.got
                        {
                            this.state = State::Done;
                            let e = BodyError::Length {
                                declared: d,
                                got: this.got,
                            };
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    Err(e) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                State::Trailers => {
                    let r = ready!(this.recv.poll_recv_trailers(cx));
                    this.state = State::Done;
                    return Poll::Ready(match r {
                        Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
                        Ok(None) => None,
                        Err(e) => Some(Err(e.into())),
                    });
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.state, self.declared) {
            (State::Done, _) => SizeHint::with_exact(0),
            (_, Some(d)) => SizeHint::with_exact(d.saturating_sub(self.got)),
            _ => SizeHint::default(),
        }
    }
}
