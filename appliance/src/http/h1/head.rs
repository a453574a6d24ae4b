//! Request heads: parsed by `httparse` straight into `http` types, header values sharing the
//! bytes read (no copy), and the body's framing decided as RFC 9112 §6.3 and hyper do.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

/// hyper's default header count limit; more get 431.
const MAX_HEADERS: usize = 100;

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete request head.
#[derive(Debug)]
pub(super) struct Head {
    /// The request, without its body.
    pub(super) req: Request<()>,
    /// The body's framing.
    pub(super) framing: Framing,
    /// Whether the client keeps the connection open after this exchange.
    pub(super) keep_alive: bool,
    /// Something this server leaves to hyper: an upgrade or CONNECT. The bytes are replayed
    /// to hyper, head included.
    pub(super) hand_over: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body: the client waits for an
    /// interim 100 before sending the body (or for a while). HTTP/1.0 expectations are
    /// ignored (RFC 9110 §10.1.1).
    pub(super) expects_continue: bool,
    /// Both `Content-Length` and `Transfer-Encoding`: refused with 400 (Envoy's answer, and
    /// the smuggling vector RFC 9112 §6.3 warns of).
    pub(super) ambiguous: bool,
    /// The head's bytes, kept only for a hand-over.
    pub(super) raw: Option<Bytes>,
}

/// Why a head is refused before it reaches the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// 431: the head is larger than the limit, or has too many header lines.
    TooLarge,
    /// 400: not an HTTP/1 request head.
    Bad,
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete (read more). On success the
/// head's bytes are taken off `buf`; what follows them (body, pipelined requests) stays.
pub(super) fn parse(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, Refused> {
    // Uninitialised slots: no 3 KiB memset per head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Refused::TooLarge);
        }
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Err(Refused::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Refused::Bad),
    };
    // Offsets into `buf`, so the values can share the bytes once they are frozen below.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refused::Bad)?;
    let target = at(parsed.path.unwrap_or_default().as_bytes());
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut names = Vec::with_capacity(parsed.headers.len());
    let mut facts = Facts::default();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Refused::Bad)?;
        facts.note(&name, h.value)?;
        names.push((name, at(h.value)));
    }
    let head = buf.split_to(len).freeze();
    let slice = |(off, n): (usize, usize)| head.slice(off..off + n);
    let uri = Uri::from_maybe_shared(slice(target)).map_err(|_| Refused::Bad)?;
    // Room for what the proxy adds (x-forwarded-for, x-forwarded-proto, x-request-id): a
    // map that grows rehashes every entry.
    let mut headers = HeaderMap::with_capacity(names.len() + 4);
    for (name, value) in names {
        let value = HeaderValue::from_maybe_shared(slice(value)).map_err(|_| Refused::Bad)?;
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    let mut h = decide(req, version, &facts)?;
    if h.hand_over {
        h.raw = Some(head);
    }
    Ok(Some(h))
}

/// What framing, persistence and hand-over depend on, noted line by line as the names are
/// parsed: comparing a parsed name with a standard one is an integer compare, where looking
/// each up in the finished map afterwards hashes it (five lookups per request).
#[derive(Debug, Default)]
struct Facts {
    /// The `Content-Length`, when every such line agrees.
    length: Option<u64>,
    /// Whether the last `Transfer-Encoding` line ends in `chunked` (`None`: no such line).
    chunked: Option<bool>,
    /// `Connection` lists `close`.
    close: bool,
    /// `Connection` lists `keep-alive`.
    keep_alive: bool,
    /// An `Upgrade` line.
    upgrade: bool,
    /// Whether the first `Expect` line is `100-continue`.
    expect_continue: Option<bool>,
}

impl Facts {
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), Refused> {
        if *name == header::CONTENT_LENGTH {
            // Repeated identical values are one length (RFC 9110 §8.6); anything else is
            // refused.
            match content_length(value) {
                Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                _ => return Err(Refused::Bad),
            }
        } else if *name == header::TRANSFER_ENCODING {
            // As hyper: only the last coding of the last line counts.
            self.chunked = Some(last_is_chunked(value));
        } else if *name == header::CONNECTION {
            for t in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if *name == header::UPGRADE {
            self.upgrade = true;
        } else if *name == header::EXPECT && self.expect_continue.is_none() {
            self.expect_continue = Some(value.eq_ignore_ascii_case(b"100-continue"));
        }
        Ok(())
    }
}

/// Body framing, persistence and hand-over from what the header lines said.
fn decide(req: Request<()>, version: Version, facts: &Facts) -> Result<Head, Refused> {
    let ambiguous = facts.chunked.is_some() && facts.length.is_some();
    let framing = match facts.chunked {
        // It must be chunked; HTTP/1.0 has no transfer codings.
        Some(true) if version == Version::HTTP_11 => Framing::Chunked,
        Some(_) => return Err(Refused::Bad),
        None => match facts.length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        },
    };
    let keep_alive = match version {
        Version::HTTP_11 => !facts.close,
        _ => facts.keep_alive,
    };
    let hand_over = req.method() == Method::CONNECT || facts.upgrade;
    let expects_continue = version == Version::HTTP_11
        && framing != Framing::None
        && facts.expect_continue == Some(true);
    Ok(Head {
        req,
        framing,
        keep_alive,
        hand_over,
        expects_continue,
        ambiguous,
        raw: None,
    })
}

/// Whether the last coding a `Transfer-Encoding` value lists is `chunked` (as hyper reads it,
/// only the last line's last coding counts).
pub(crate) fn last_is_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A `Content-Length` value: digits only, as hyper reads it.
pub(crate) fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Option<Head>, Refused> {
        parse(&mut BytesMut::from(s.as_bytes()), 8192)
    }

    #[test]
    fn a_get_with_pipelined_rest() {
        let mut buf = BytesMut::from(
            &b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /n"[..],
        );
        let h = parse(&mut buf, 8192).expect("ok").expect("complete");
        assert_eq!(h.req.method(), Method::GET);
        assert_eq!(
            h.req.uri().path_and_query().map(|p| p.as_str()),
            Some("/a?b=1")
        );
        assert_eq!(h.req.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(
            (h.framing, h.keep_alive, h.hand_over, h.ambiguous),
            (Framing::None, true, false, false)
        );
        assert_eq!(&buf[..], b"GET /n");
    }

    #[test]
    fn framing_and_persistence() {
        let h = |s: &str| parse_str(s).expect("ok").expect("complete");
        assert_eq!(
            h("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert_eq!(
            h("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert!(
            h("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .ambiguous
        );
        assert!(!h("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(h("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(h("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n").hand_over);
        assert!(h("CONNECT a:443 HTTP/1.1\r\n\r\n").hand_over);
        let put = h("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(put.expects_continue && !put.hand_over);
        assert!(
            !h("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expects_continue
        );
        assert!(!h("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expects_continue);
    }

    #[test]
    fn refusals() {
        for (s, want) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Refused::Bad,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                Refused::Bad,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Refused::Bad,
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refused::Bad,
            ),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", Refused::Bad),
            ("GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", Refused::Bad),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Refused::Bad),
        ] {
            assert_eq!(parse_str(s).err(), Some(want), "{s:?}");
        }
        let many: String = (0..101).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(
            parse_str(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
            Some(Refused::TooLarge)
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        assert_eq!(parse_str(&long).err(), Some(Refused::TooLarge));
        assert!(
            parse_str("GET / HTTP/1.1\r\nHost: x\r\n")
                .expect("ok")
                .is_none()
        );
    }

    /// Mutations of real heads (bytes flipped, inserted, dropped): parsing never panics, and a
    /// head it accepts has a framing the body decoder can follow.
    #[test]
    fn mutated_heads_never_panic() {
        let seeds: [&[u8]; 3] = [
            b"GET /a?b HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
            b"PUT http://x/ HTTP/1.0\r\nExpect: 100-continue\r\nUpgrade: h2c\r\n\r\n",
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50_000 {
            let mut v = seeds[(next() % 3) as usize].to_vec();
            for _ in 0..=next() % 4 {
                let at = (next() as usize) % (v.len() + 1);
                match next() % 3 {
                    0 if at < v.len() => v[at] = next() as u8,
                    1 => v.insert(at, next() as u8),
                    _ if at < v.len() => {
                        v.remove(at);
                    }
                    _ => {}
                }
            }
            let _ = parse(&mut BytesMut::from(&v[..]), 64);
            let _ = parse(&mut BytesMut::from(&v[..]), 8192);
        }
    }
}
