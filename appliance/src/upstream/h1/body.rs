//! Response bodies: read from the leased connection by whoever polls them (the downstream
//! writer), which also finishes sending a request body that was still uploading when the
//! response began. When the body ends on a connection that can carry another request, the
//! connection goes back to the pool at once; otherwise it is closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::Error;
use super::request::Pump;
use crate::http::body::BoxError;
use crate::http::decode::{Decoded, Decoder};
use crate::upstream::pool::Lease;

/// A response body on a leased HTTP/1.1 connection.
pub struct ResponseBody {
    /// `None` once the body ended or failed.
    lease: Option<Lease>,
    decoder: Decoder,
    /// What is left of the request.
    pump: Option<Pump>,
    /// Whether the response lets the connection be reused.
    keep_alive: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

/// What one step of reading gave.
enum Step {
    Data(Bytes),
    End,
    Failed(Error),
}

impl ResponseBody {
    pub(super) fn new(
        lease: Lease,
        decoder: Decoder,
        pump: Option<Pump>,
        keep_alive: bool,
    ) -> Self {
        let mut b = Self {
            lease: Some(lease),
            decoder,
            pump,
            keep_alive,
        };
        if b.decoder == Decoder::Done {
            b.finish();
        }
        b
    }

    /// The response ended: the connection goes back to the pool if the request went out
    /// whole and nothing follows the response.
    fn finish(&mut self) {
        if let Some(mut lease) = self.lease.take()
            && self.keep_alive
            && self.pump.is_none()
            && lease.conn().buf.is_empty()
        {
            lease.release();
        }
        self.pump = None;
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let Some(lease) = self.lease.as_mut() else {
            return Poll::Ready(Step::End);
        };
        let conn = lease.conn();
        if let Some(p) = self.pump.as_mut() {
            match p.poll(&mut conn.io, cx) {
                Poll::Ready(Ok(())) => self.pump = None,
                // The upstream answered; the rest of the request is not needed, but the
                // connection cannot carry another request.
                Poll::Ready(Err(_)) => {
                    self.pump = None;
                    self.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match self.decoder.decode(&mut conn.buf) {
                Decoded::Data(d) => return Poll::Ready(Step::Data(d)),
                Decoded::End => return Poll::Ready(Step::End),
                Decoded::Bad => {
                    return Poll::Ready(Step::Failed(Error::Malformed(
                        "bad chunked response body",
                    )));
                }
                Decoded::More => {}
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if self.decoder.eof() => {
                    self.keep_alive = false;
                    return Poll::Ready(Step::End);
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Step::Failed(Error::Closed)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Step::Failed(Error::Io(e))),
            }
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.step(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Step::Data(d)) => {
                // The last bytes: the connection is free before they are even written on.
                if this.decoder == Decoder::Done {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            Poll::Ready(Step::End) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Step::Failed(e)) => {
                this.lease = None;
                this.pump = None;
                this.decoder = Decoder::Done;
                Poll::Ready(Some(Err(io::Error::other(e).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder == Decoder::Done
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }
}
