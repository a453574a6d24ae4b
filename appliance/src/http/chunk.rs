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
    /// A chunk extension, up to CR (`len`: its bytes so far).
    Ext { size: u64, len: u32 },
    /// LF after the size line.
    SizeLf { size: u64 },
    /// Chunk data: bytes left.
    Data(u64),
    /// CR after the data.
    DataCr,
    /// LF after the data.
    DataLf,
    /// After the last chunk: CR of the final empty line, or a trailer's first byte. `len`
    /// counts the trailer section's bytes so far, in this state and the three below.
    EndCr { len: u32 },
    /// A trailer's field name, up to the colon.
    TrailerName { len: u32 },
    /// A trailer's value, up to CR.
    TrailerValue { len: u32 },
    /// LF after a trailer line.
    TrailerLf { len: u32 },
    /// LF of the final empty line.
    EndLf,
}

/// The most bytes a size line's extensions, or the whole trailer section, may take: hyper's
/// limits (16 KiB each), so neither buffers nor spins on an endless line.
const MAX_EXT: u32 = 16 * 1024;
const MAX_TRAILERS: u32 = 16 * 1024;

/// RFC 9110 §5.6.2 `tchar`, of which field names are made.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A field value's or extension's bytes: visible ASCII, obs-text, space and tab; never a
/// control byte, a bare CR or LF.
fn is_field_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x21..=0x7e | 0x80..=0xff)
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
        (Chunk::Size { size, .. } | Chunk::Lws { size }, b';') => Some(Chunk::Ext { size, len: 1 }),
        (Chunk::Size { size, .. } | Chunk::Lws { size } | Chunk::Ext { size, .. }, b'\r') => {
            Some(Chunk::SizeLf { size })
        }
        (Chunk::Ext { size, len }, _) if is_field_byte(b) && len < MAX_EXT => {
            Some(Chunk::Ext { size, len: len + 1 })
        }
        (Chunk::SizeLf { size: 0 }, b'\n') => Some(Chunk::EndCr { len: 0 }),
        (Chunk::SizeLf { size }, b'\n') => Some(Chunk::Data(size)),
        (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
        (Chunk::DataLf, b'\n') => Some(START),
        (Chunk::EndCr { .. }, b'\r') => Some(Chunk::EndLf),
        // A trailer is a field line (RFC 9112 §7.1.2): a name of tchars, a colon, a value,
        // CRLF. A bare LF or a line without a colon would end the body where a proxy in front
        // of this one, reading the same bytes more leniently, does not.
        (_, _) if trailer_len(c).is_some_and(|n| n >= MAX_TRAILERS) => None,
        (Chunk::EndCr { len } | Chunk::TrailerName { len }, _) if is_tchar(b) => {
            Some(Chunk::TrailerName { len: len + 1 })
        }
        (Chunk::TrailerName { len }, b':') => Some(Chunk::TrailerValue { len: len + 1 }),
        (Chunk::TrailerValue { len }, b'\r') => Some(Chunk::TrailerLf { len: len + 1 }),
        (Chunk::TrailerValue { len }, _) if is_field_byte(b) => {
            Some(Chunk::TrailerValue { len: len + 1 })
        }
        (Chunk::TrailerLf { len }, b'\n') => Some(Chunk::EndCr { len: len + 1 }),
        (Chunk::EndLf, b'\n') => return Step::End,
        _ => None,
    };
    next.map_or(Step::Bad, Step::Next)
}

fn trailer_len(c: Chunk) -> Option<u32> {
    match c {
        Chunk::EndCr { len }
        | Chunk::TrailerName { len }
        | Chunk::TrailerValue { len }
        | Chunk::TrailerLf { len } => Some(len),
        _ => None,
    }
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
            &b"\r\n"[..],                      // no size digits
            b"g\r\n",                          // not hex
            b"5\nhello\r\n0\r\n\r\n",          // bare LF after the size
            b"2\r\nhello\r\n0\r\n\r\n",        // data longer than the size
            b"1;a\nb\r\nx\r\n0\r\n\r\n",       // LF inside an extension
            b"10000000000000000\r\n",          // size overflows 64 bits
            b"0\r\n\nPOST / HTTP/1.1\r\n\r\n", // bare LF where the trailers end
            b"0\r\nx-t: 1\n\r\n",              // bare LF after a trailer
            b"0\r\nno colon\r\n\r\n",          // a trailer that is no field line
            b"0\r\nx-t: a\0b\r\n\r\n",         // NUL in a trailer value
            b"1;a\0\r\nx\r\n0\r\n\r\n",        // NUL in an extension
        ] {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(decode(b"0\r\n: v\r\n\r\n"), None, "empty trailer name");
    }

    #[test]
    fn extensions_and_trailers_are_bounded() {
        let mut ext = b"1;".to_vec();
        ext.extend(std::iter::repeat_n(b'a', 20_000));
        ext.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode(&ext), None);
        let mut tr = b"0\r\n".to_vec();
        for i in 0..2_000 {
            tr.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        tr.extend_from_slice(b"\r\n");
        assert_eq!(decode(&tr), None);
        // Many small ones within the limit are fine.
        let mut ok = b"0\r\n".to_vec();
        for i in 0..100 {
            ok.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        ok.extend_from_slice(b"\r\n");
        assert_eq!(decode(&ok).as_deref(), Some(&b""[..]));
    }
}
