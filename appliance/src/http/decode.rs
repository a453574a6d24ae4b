//! HTTP/1 message bodies off the wire: by length, chunked, or to the end of the connection.
//! One decoder for request bodies (the server) and response bodies (the upstream client), so
//! both end a body at the same byte.

use bytes::{Buf, Bytes, BytesMut};

use super::chunk::{self, Chunk, Step};

/// Where a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// `Content-Length`: bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Delimited by the end of the connection (a response without a length).
    Eof,
    /// The body ended.
    Done,
}

/// What the buffered bytes give.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body ended.
    End,
    /// Read more.
    More,
    /// Not valid chunked framing.
    Bad,
}

impl Decoder {
    /// A chunked body at its start.
    pub(crate) const CHUNKED: Self = Self::Chunked(chunk::START);

    /// A body of `n` bytes.
    pub(crate) fn length(n: u64) -> Self {
        if n == 0 { Self::Done } else { Self::Length(n) }
    }

    /// Decodes from the buffered bytes only; body bytes are split off `buf`, framing bytes
    /// consumed.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Decoded {
        loop {
            match *self {
                Self::Done => return Decoded::End,
                Self::Length(0) => *self = Self::Done,
                Self::Length(left) => {
                    if buf.is_empty() {
                        return Decoded::More;
                    }
                    let n = left.min(buf.len() as u64);
                    *self = Self::length(left - n);
                    return Decoded::Data(buf.split_to(n as usize).freeze());
                }
                Self::Eof => {
                    if buf.is_empty() {
                        return Decoded::More;
                    }
                    return Decoded::Data(buf.split().freeze());
                }
                Self::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Decoded::More;
                    }
                    let n = left.min(buf.len() as u64);
                    *self = Self::Chunked(if n == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left - n)
                    });
                    return Decoded::Data(buf.split_to(n as usize).freeze());
                }
                Self::Chunked(c) => {
                    let Some(&b) = buf.first() else {
                        return Decoded::More;
                    };
                    buf.advance(1);
                    match chunk::step(c, b) {
                        Step::Next(n) => *self = Self::Chunked(n),
                        Step::End => *self = Self::Done,
                        Step::Bad => return Decoded::Bad,
                    }
                }
            }
        }
    }

    /// The end of the connection: whether that ends the body (rather than cutting it).
    pub(crate) fn eof(&mut self) -> bool {
        if matches!(self, Self::Eof | Self::Done) {
            *self = Self::Done;
            true
        } else {
            false
        }
    }

    /// Skips what is buffered of the body; whether that reached its end.
    pub(crate) fn skip_buffered(&mut self, buf: &mut BytesMut) -> bool {
        loop {
            match self.decode(buf) {
                Decoded::Data(_) => {}
                Decoded::End => return true,
                Decoded::More | Decoded::Bad => return false,
            }
        }
    }

    /// The body's size hint.
    pub(crate) fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Done => http_body::SizeHint::with_exact(0),
            Self::Length(n) => http_body::SizeHint::with_exact(*n),
            Self::Chunked(_) | Self::Eof => http_body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut d: Decoder, wire: &[u8]) -> (Vec<u8>, Decoder, BytesMut) {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End | Decoded::More | Decoded::Bad => return (out, d, buf),
            }
        }
    }

    #[test]
    fn length_chunked_and_eof_bodies_end_where_their_framing_says() {
        let (body, d, rest) = all(Decoder::length(3), b"abcNEXT");
        assert_eq!(
            (&body[..], d, &rest[..]),
            (&b"abc"[..], Decoder::Done, &b"NEXT"[..])
        );
        let (body, d, rest) = all(Decoder::CHUNKED, b"3\r\nabc\r\n0\r\nx: y\r\n\r\nNEXT");
        assert_eq!(
            (&body[..], d, &rest[..]),
            (&b"abc"[..], Decoder::Done, &b"NEXT"[..])
        );
        let (body, mut d, _) = all(Decoder::Eof, b"all of it");
        assert_eq!(&body[..], b"all of it");
        assert!(
            d.eof(),
            "the end of the connection ends a close-delimited body"
        );
        let (_, mut d, _) = all(Decoder::length(10), b"short");
        assert!(
            !d.eof(),
            "the end of the connection cuts a body with a length"
        );
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        let mut d = Decoder::CHUNKED;
        assert!(matches!(d.decode(&mut buf), Decoded::Bad));
    }
}
