//! Request bodies. Whoever polls the body (usually the upstream connection's task) reads it
//! from the client connection's read half, which the body borrows for the purpose and hands
//! back, with any bytes read past its end, as soon as it ends or is dropped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncRead;
use tokio::sync::oneshot;

use super::head::Framing;
use crate::http::body::BoxError;
use crate::http::decode::{Decoded, Decoder};

/// Bytes asked of the socket per read while a body streams.
const READ_SIZE: usize = 16 * 1024;

/// A borrowed read half, back with the connection.
pub(super) struct Returned<R> {
    /// The read half.
    pub(super) rd: R,
    /// Bytes read past the body's end (a pipelined request).
    pub(super) rest: BytesMut,
    /// The body was read to its end, so the connection can serve another request.
    pub(super) whole: bool,
}

/// A request body as the service sees it.
pub(crate) struct RequestBody<R> {
    /// `None`: no body, or it ended.
    reading: Option<Reading<R>>,
}

struct Reading<R> {
    rd: R,
    buf: BytesMut,
    state: Decoder,
    back: oneshot::Sender<Returned<R>>,
    /// Asks for the interim 100 the first time the body must be read from the client.
    want: Option<oneshot::Sender<()>>,
}

impl<R> RequestBody<R> {
    /// A body framed by `framing`, read from `rd` after the bytes already in `buf`; the read
    /// half comes back through the returned receiver.
    pub(super) fn new(
        framing: Framing,
        rd: R,
        buf: BytesMut,
    ) -> (Self, oneshot::Receiver<Returned<R>>) {
        let (back, rx) = oneshot::channel();
        let state = match framing {
            Framing::None => Decoder::Done,
            Framing::Length(n) => Decoder::length(n),
            Framing::Chunked => Decoder::CHUNKED,
        };
        let reading = Reading {
            rd,
            buf,
            state,
            back,
            want: None,
        };
        (
            Self {
                reading: Some(reading),
            },
            rx,
        )
    }

    /// For a client that sent `Expect: 100-continue`: the returned receiver fires when the
    /// body first needs bytes the client has not sent, which is when it should get its 100.
    /// A body never read (the service answered first) never asks.
    pub(super) fn expect_continue(&mut self) -> Option<oneshot::Receiver<()>> {
        let r = self.reading.as_mut()?;
        let (tx, rx) = oneshot::channel();
        r.want = Some(tx);
        Some(rx)
    }

    fn give_back(&mut self) {
        if let Some(r) = self.reading.take() {
            let whole = r.state == Decoder::Done;
            let _ = r.back.send(Returned {
                rd: r.rd,
                rest: r.buf,
                whole,
            });
        }
    }
}

impl<R: AsyncRead + Unpin> http_body::Body for RequestBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(r) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match r.state.decode(&mut r.buf) {
                Decoded::Data(data) => {
                    if r.state == Decoder::Done {
                        this.give_back();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::End => {
                    this.give_back();
                    return Poll::Ready(None);
                }
                Decoded::Bad => {
                    this.give_back();
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed chunked request body",
                    )
                    .into())));
                }
                Decoded::More => {
                    if let Some(want) = r.want.take() {
                        let _ = want.send(());
                    }
                    r.buf.reserve(READ_SIZE);
                    let read = ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut r.rd),
                        cx,
                        &mut r.buf
                    ));
                    match read {
                        Ok(0) => {
                            this.give_back();
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "client closed the connection inside the request body",
                            )
                            .into())));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            this.give_back();
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reading
            .as_ref()
            .is_none_or(|r| r.state == Decoder::Done)
    }

    fn size_hint(&self) -> SizeHint {
        self.reading
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.state.size_hint())
    }
}

impl<R> Drop for RequestBody<R> {
    fn drop(&mut self) {
        // A body the service did not read (a 404 for a POST) costs the connection nothing
        // when it was sent whole, as most small bodies are.
        if let Some(r) = self.reading.as_mut()
            && r.state.skip_buffered(&mut r.buf)
        {
            r.state = Decoder::Done;
        }
        self.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(
        framing: Framing,
        first: &[u8],
        rest: &'static [u8],
    ) -> (Result<Bytes, BoxError>, Returned<&'static [u8]>) {
        let (body, rx) = RequestBody::new(framing, rest, BytesMut::from(first));
        let got = body.collect().await.map(|c| c.to_bytes());
        (got, rx.await.expect("read half back"))
    }

    #[tokio::test]
    async fn length_body_across_reads_keeps_the_pipelined_rest() {
        let (got, back) = collect(Framing::Length(10), b"01234", b"56789GET /next").await;
        assert_eq!(&got.expect("body")[..], b"0123456789");
        assert!(back.whole);
        assert_eq!(&back.rest[..], b"GET /next");
    }

    #[tokio::test]
    async fn chunked_body_with_trailers() {
        let (got, back) = collect(
            Framing::Chunked,
            b"3\r\nabc\r\n",
            b"2;x=y\r\nde\r\n0\r\nt: 1\r\n\r\nNEXT",
        )
        .await;
        assert_eq!(&got.expect("body")[..], b"abcde");
        assert!(back.whole);
        assert_eq!(&back.rest[..], b"NEXT");
    }

    #[tokio::test]
    async fn truncated_and_malformed_bodies_are_errors_and_end_the_connection() {
        let (got, back) = collect(Framing::Length(10), b"0123", b"").await;
        assert!(got.is_err());
        assert!(!back.whole);
        let (got, back) = collect(Framing::Chunked, b"zz\r\n", b"").await;
        assert!(got.is_err());
        assert!(!back.whole);
    }

    #[tokio::test]
    async fn an_unread_body_sent_whole_is_skipped() {
        let (body, rx) =
            RequestBody::new(Framing::Length(3), &b""[..], BytesMut::from(&b"abcGET"[..]));
        drop(body);
        let back = rx.await.expect("back");
        assert!(back.whole);
        assert_eq!(&back.rest[..], b"GET");
        let (body, rx) =
            RequestBody::new(Framing::Length(30), &b""[..], BytesMut::from(&b"abc"[..]));
        drop(body);
        assert!(!rx.await.expect("back").whole);
    }
}
