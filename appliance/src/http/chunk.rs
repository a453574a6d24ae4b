//! The chunked transfer coding's framing (RFC 9112 §7.1), byte by byte: shared by the HTTP/1
//! server's body decoder and the framing guard in front of hyper, so both end a body exactly
//! where hyper's decoder does. Chunk data is the caller's to skip or hand on; trailers are
//! read and dropped.

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Chunk size digits (`digits`: at least one seen).
    Size { size: u64, digits: bool },
    /// Blanks after the size.
    Lws { size: u64 },
    /// A chunk extension, up to CR.
    Ext { size: u64 },
    /// LF after the size line.
    SizeLf { size: u64 },
    /// Chunk data: bytes left.
    Data(u64),
    /// CR after the data.
    DataCr,
    /// LF after the data.
    DataLf,
    /// After the last chunk: CR of the final empty line, or a trailer.
    EndCr,
    /// Inside a trailer line.
    Trailer,
    /// LF after a trailer line.
    TrailerLf,
    /// LF of the final empty line.
    EndLf,
}

/// The state at the start of a chunked body.
pub(crate) const START: Chunk = Chunk::Size {
    size: 0,
    digits: false,
};

/// What one framing byte does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The body goes on in this state.
    Next(Chunk),
    /// That byte ended the body.
    End,
    /// Not chunked framing: the body (and the connection) is refused.
    Bad,
}

/// Advances over one framing byte; never called in [`Chunk::Data`] (data bytes are counted,
/// not stepped).
pub(crate) fn step(c: Chunk, b: u8) -> Step {
    let next = match (c, b) {
        (Chunk::Size { size, .. }, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
            let d = u64::from((b as char).to_digit(16).unwrap_or(0));
            size.checked_mul(16)
                .and_then(|s| s.checked_add(d))
                .map(|size| Chunk::Size { size, digits: true })
        }
        (Chunk::Size { digits: false, .. }, _) => None,
        (Chunk::Size { size, .. } | Chunk::Lws { size }, b' ' | b'\t') => Some(Chunk::Lws { size }),
        (Chunk::Size { size, .. } | Chunk::Lws { size } | Chunk::Ext { size }, b';') => {
            Some(Chunk::Ext { size })
        }
        (Chunk::Size { size, .. } | Chunk::Lws { size } | Chunk::Ext { size }, b'\r') => {
            Some(Chunk::SizeLf { size })
        }
        (Chunk::Ext { .. }, b'\n') => None,
        (Chunk::Ext { size }, _) => Some(Chunk::Ext { size }),
        (Chunk::SizeLf { size: 0 }, b'\n') => Some(Chunk::EndCr),
        (Chunk::SizeLf { size }, b'\n') => Some(Chunk::Data(size)),
        (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
        (Chunk::DataLf, b'\n') => Some(START),
        (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
        (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
        (Chunk::EndCr | Chunk::Trailer, _) => Some(Chunk::Trailer),
        (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
        (Chunk::EndLf, b'\n') => return Step::End,
        _ => None,
    };
    next.map_or(Step::Bad, Step::Next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` through the framing; `Some(data)` if it ends exactly at its last byte.
    fn decode(body: &[u8]) -> Option<Vec<u8>> {
        let (mut c, mut out) = (START, Vec::new());
        let mut i = 0;
        while i < body.len() {
            if let Chunk::Data(left) = c {
                let n = (left as usize).min(body.len() - i);
                out.extend_from_slice(&body[i..i + n]);
                i += n;
                c = if n as u64 == left {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - n as u64)
                };
                continue;
            }
            match step(c, body[i]) {
                Step::Next(n) => c = n,
                Step::End => return (i + 1 == body.len()).then_some(out),
                Step::Bad => return None,
            }
            i += 1;
        }
        None
    }

    #[test]
    fn decodes_sizes_extensions_and_trailers() {
        assert_eq!(
            decode(b"5\r\nhello\r\n0\r\n\r\n").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            decode(b"A;name=v\r\n0123456789\r\n1 \r\n!\r\n0\r\nx-t: 1\r\n\r\n").as_deref(),
            Some(&b"0123456789!"[..])
        );
    }

    #[test]
    fn refuses_what_is_not_chunked_framing() {
        for bad in [
            &b"\r\n"[..],                // no size digits
            b"g\r\n",                    // not hex
            b"5\nhello\r\n0\r\n\r\n",    // bare LF after the size
            b"2\r\nhello\r\n0\r\n\r\n",  // data longer than the size
            b"1;a\nb\r\nx\r\n0\r\n\r\n", // LF inside an extension
            b"10000000000000000\r\n",    // size overflows 64 bits
        ] {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
