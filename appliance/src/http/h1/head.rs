//! Request heads: parsed by `httparse` straight into `http` types, header values sharing the
//! bytes read (no copy), and the body's framing decided as RFC 9112 §6.3 and hyper do.

use std::cell::RefCell;
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
    /// 501: a transfer coding other than a single `chunked`.
    NotImplemented,
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete (read more). On success the
/// head's bytes are taken off `buf`; what follows them (body, pipelined requests) stays.
pub(super) fn parse(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, Refused> {
    let lines = match LAST.with_borrow(|last| last.scan(buf)) {
        Some(l) if l.len <= max_head => l,
        _ => match general(buf, max_head)? {
            Some(l) => l,
            None => return Ok(None),
        },
    };
    build(buf, lines).map(Some)
}

/// A head found at the start of a buffer: its parts as offsets into it.
struct Lines {
    /// The head's length, through its blank line.
    len: usize,
    /// Read by `Recent::scan`, whose target has no `#`.
    scanned: bool,
    method: Method,
    target: (usize, usize),
    version: Version,
    /// Each header line's name, and where its value is.
    names: Vec<(HeaderName, (usize, usize))>,
}

/// Reads a head with `httparse`, and records its names for [`Recent::scan`].
fn general(buf: &[u8], max_head: usize) -> Result<Option<Lines>, Refused> {
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
    // Offsets into `buf`, so the values can share the bytes once they are frozen.
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
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Refused::Bad)?;
        names.push((name, at(h.value)));
    }
    LAST.with_borrow_mut(|last| {
        last.clear();
        for (h, (name, _)) in parsed.headers.iter().zip(&names) {
            last.push(h.name.as_bytes(), name);
        }
        last.finish();
    });
    Ok(Some(Lines {
        len,
        scanned: false,
        method,
        target,
        version,
        names,
    }))
}

/// The request from a head's parts, sharing the buffer's bytes: values are checked as
/// `HeaderValue`s, the target as a `Uri`.
fn build(buf: &mut BytesMut, l: Lines) -> Result<Head, Refused> {
    let mut facts = Facts::default();
    for (name, (off, n)) in &l.names {
        facts.note(name, buf.get(*off..off + n).unwrap_or_default())?;
    }
    let head = buf.split_to(l.len).freeze();
    let slice = |(off, n): (usize, usize)| head.slice(off..off + n);
    let target = slice(l.target);
    // A fragment is no part of a request target (RFC 9112 §3.2): `http` would cut it off, and
    // `/a#/../admin` be routed as `/a`. Envoy refuses it too.
    if !l.scanned && memchr::memchr(b'#', &target).is_some() {
        return Err(Refused::Bad);
    }
    let origin_form = target.first() == Some(&b'/');
    let uri = Uri::from_maybe_shared(target).map_err(|_| Refused::Bad)?;
    // The authority form is CONNECT's alone, `*` OPTIONS's (RFC 9112 §3.2.3, §3.2.4):
    // `GET internal:80` would otherwise be routed by that authority instead of the Host.
    // Nearly every request is origin-form and no CONNECT: nothing to look at.
    if !origin_form || l.method == Method::CONNECT {
        let form_ok = match (uri.scheme(), uri.authority()) {
            (None, Some(_)) => l.method == Method::CONNECT,
            _ if uri.path() == "*" => l.method == Method::OPTIONS,
            _ => l.method != Method::CONNECT || uri.authority().is_some(),
        };
        if !form_ok {
            return Err(Refused::Bad);
        }
    }
    // Room for what the proxy adds (x-forwarded-for, x-forwarded-proto, x-request-id): a
    // map that grows rehashes every entry.
    let mut headers = HeaderMap::with_capacity(l.names.len() + 4);
    for (name, value) in l.names {
        let value = HeaderValue::from_maybe_shared(slice(value)).map_err(|_| Refused::Bad)?;
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = l.method;
    *req.uri_mut() = uri;
    *req.version_mut() = l.version;
    *req.headers_mut() = headers;
    let mut h = decide(req, l.version, &facts)?;
    if h.hand_over {
        h.raw = Some(head);
    }
    Ok(h)
}

thread_local! {
    /// The names of the last head this worker read with `httparse`.
    static LAST: RefCell<Recent> = const { RefCell::new(Recent::new()) };
}

/// Heads with more name bytes or lines than this are not kept.
const MAX_RAW: usize = 2048;
const MAX_LINES: usize = 64;

/// The header names of the last request head a worker thread read with `httparse`.
///
/// A client sends the same names in the same order on every request (a browser, a service's
/// HTTP client, a load generator), and a worker's clients are often of one kind. A head whose
/// names repeat the last one's byte for byte is read by [`scan`](Self::scan) instead: each
/// line is checked to start with its name and a colon, its end found eight bytes at a time,
/// and the `HeaderName` is the one already parsed. Anything the scan does not read exactly as
/// `httparse` would — another method than the usual seven, a target byte outside visible
/// ASCII, a bare LF, other names, a partial head — goes to `httparse`, which records the new
/// names. Per thread, not per connection: an idle connection holds none of it.
#[derive(Debug)]
struct Recent {
    /// The names as received, back to back.
    raw: Vec<u8>,
    /// Per line, where its name ends in `raw`, and the name. Empty: nothing to match.
    names: Vec<(usize, HeaderName)>,
}

impl Recent {
    const fn new() -> Self {
        Self {
            raw: Vec::new(),
            names: Vec::new(),
        }
    }

    fn clear(&mut self) {
        if self.raw.capacity() > MAX_RAW || self.names.capacity() > MAX_LINES {
            *self = Self::new();
        }
        self.raw.clear();
        self.names.clear();
    }

    fn push(&mut self, raw: &[u8], name: &HeaderName) {
        self.raw.extend_from_slice(raw);
        self.names.push((self.raw.len(), name.clone()));
    }

    /// Ends recording: heads too large to keep are forgotten.
    fn finish(&mut self) {
        if self.raw.len() > MAX_RAW || self.names.len() > MAX_LINES {
            *self = Self::new();
        }
    }

    /// Reads the head at the start of `buf` when it is `METHOD SP target SP HTTP/1.x CRLF`
    /// with one of the usual methods, a target of visible ASCII, and the last head's names in
    /// the same order, each line `name:` OWS value OWS CRLF, then the blank line. Values are
    /// not checked here: `build` makes them `HeaderValue`s, which refuses what `httparse`
    /// would.
    fn scan(&self, buf: &[u8]) -> Option<Lines> {
        if self.names.is_empty() {
            return None;
        }
        let sp = buf.iter().take(8).position(|&b| b == b' ')?;
        let method = match buf.get(..sp)? {
            b"GET" => Method::GET,
            b"POST" => Method::POST,
            b"PUT" => Method::PUT,
            b"HEAD" => Method::HEAD,
            b"DELETE" => Method::DELETE,
            b"OPTIONS" => Method::OPTIONS,
            b"PATCH" => Method::PATCH,
            _ => return None,
        };
        let mut at = sp + 1;
        // A `#` ends the scan too: such a target is refused by `build` after `httparse` read
        // it, so this path, most requests', needs no second look for one.
        let n = buf
            .get(at..)?
            .iter()
            .position(|b| !(b'!'..=b'~').contains(b) || *b == b'#')?;
        if n == 0 || buf.get(at + n) != Some(&b' ') {
            return None;
        }
        let target = (at, n);
        at += n + 1;
        let version = match buf.get(at..at + 10)? {
            b"HTTP/1.1\r\n" => Version::HTTP_11,
            b"HTTP/1.0\r\n" => Version::HTTP_10,
            _ => return None,
        };
        at += 10;
        let mut names = Vec::with_capacity(self.names.len());
        let mut start = 0;
        for (end, name) in &self.names {
            let raw = self.raw.get(start..*end)?;
            start = *end;
            let rest = buf.get(at..)?;
            if !rest.starts_with(raw) || rest.get(raw.len()) != Some(&b':') {
                return None;
            }
            let from = at + raw.len() + 1;
            let nl = from + find_lf(buf.get(from..)?)?;
            // `from` is past the colon, so a CR before the LF is at `from` or later.
            if nl == from || buf.get(nl - 1) != Some(&b'\r') {
                return None;
            }
            let (lead, trail) = ows(buf.get(from..nl - 1)?);
            let len = (nl - 1 - trail).saturating_sub(from + lead);
            names.push((name.clone(), (from + lead, len)));
            at = nl + 1;
        }
        if buf.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        Some(Lines {
            len: at + 2,
            scanned: true,
            method,
            target,
            version,
            names,
        })
    }
}

/// What framing, persistence and hand-over depend on, noted line by line as the names are
/// parsed: comparing a parsed name with a standard one is an integer compare, where looking
/// each up in the finished map afterwards hashes it (five lookups per request).
#[derive(Debug, Default)]
struct Facts {
    /// The `Content-Length`, when every such line agrees.
    length: Option<u64>,
    /// `Transfer-Encoding` lines seen, and whether the last one is exactly `chunked`.
    te_lines: u8,
    chunked: bool,
    /// `Connection` lists `close`.
    close: bool,
    /// `Connection` lists `keep-alive`.
    keep_alive: bool,
    /// An `Upgrade` line other than `h2c`.
    upgrade: bool,
    /// `Connection` lists `upgrade`: with `upgrade`, the request asks for one.
    conn_upgrade: bool,
    /// Whether the first `Expect` line is `100-continue`.
    expect_continue: Option<bool>,
    /// Whether a `Host` line was seen.
    host: bool,
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
            self.te_lines = self.te_lines.saturating_add(1);
            self.chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if *name == header::CONNECTION {
            for t in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                self.conn_upgrade |= t.eq_ignore_ascii_case(b"upgrade");
            }
        } else if *name == header::UPGRADE {
            // Envoy strips an h2c upgrade (`curl --http2` on http://) and serves the request
            // as HTTP/1.1; every other upgrade goes to hyper and the service.
            self.upgrade |= !is_h2c(value);
        } else if *name == header::HOST {
            // One, and an authority (RFC 9112 §3.2: 400 otherwise): the gateway routes on it,
            // and a proxy in front that read another of two would route elsewhere.
            if self.host || !is_authority(value) {
                return Err(Refused::Bad);
            }
            self.host = true;
        } else if *name == header::EXPECT && self.expect_continue.is_none() {
            self.expect_continue = Some(value.eq_ignore_ascii_case(b"100-continue"));
        }
        Ok(())
    }
}

/// Body framing, persistence and hand-over from what the header lines said.
fn decide(req: Request<()>, version: Version, facts: &Facts) -> Result<Head, Refused> {
    let ambiguous = facts.te_lines > 0 && facts.length.is_some();
    let framing = match (facts.te_lines, facts.chunked) {
        (0, _) => match facts.length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        },
        // HTTP/1.0 has no transfer codings (RFC 9112 §6.1).
        _ if version != Version::HTTP_11 => return Err(Refused::Bad),
        (1, true) => Framing::Chunked,
        // Any other coding, or a list of them (`gzip, chunked`, `chunked, chunked`), as
        // Envoy: 501. The coding would be dropped with the hop-by-hop header and the upstream
        // given bytes nobody labelled.
        _ => return Err(Refused::NotImplemented),
    };
    let keep_alive = match version {
        Version::HTTP_11 => !facts.close,
        _ => facts.keep_alive,
    };
    let hand_over = req.method() == Method::CONNECT || (facts.upgrade && facts.conn_upgrade);
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

/// Whether an `Upgrade` value asks for HTTP/2 over cleartext (`h2c`), which Envoy strips
/// (with `HTTP2-Settings`) instead of upgrading or refusing.
pub(crate) fn is_h2c(v: &[u8]) -> bool {
    v.trim_ascii().eq_ignore_ascii_case(b"h2c")
}

/// Whether the last coding a `Transfer-Encoding` value lists is `chunked` (as hyper reads it,
/// only the last line's last coding counts).
pub(crate) fn last_is_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether `v` is made of what an authority may hold (RFC 3986 §3.2: unreserved, `%`,
/// sub-delims, `:`, `@` and the brackets of an IP literal), the set Envoy checks `:authority`
/// against (nghttp2's `check_authority`). A table: every request's Host goes through it.
fn is_authority(v: &[u8]) -> bool {
    v.iter().all(|&b| AUTHORITY[usize::from(b)])
}

const AUTHORITY: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~%!$&'()*+,;=:@[]";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

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

/// Where the first LF in `b` is, eight bytes at a time. A head's lines are short: `memchr`'s
/// setup cost as much as its search, about 80 instructions a line (`bench/instructions.sh`).
pub(crate) fn find_lf(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const LFS: u64 = u64::from_le_bytes([b'\n'; 8]);
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().ok()?) ^ LFS;
        // A byte of `x` is zero where `w` has an LF. The lowest set bit marks the first such
        // byte (a borrow can only mark bytes above a zero one).
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'\n')
        .map(|i| at + i)
}

/// How many bytes of optional whitespace (SP, HTAB: RFC 9110 §5.5) lead and trail a field
/// value, which `httparse` trims too. Other controls stay in the value and are refused.
pub(crate) fn ows(v: &[u8]) -> (usize, usize) {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let lead = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let trail = v
        .iter()
        .rev()
        .take(v.len() - lead)
        .take_while(|b| is_ows(b))
        .count();
    (lead, trail)
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
            h("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n").framing,
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
        // The other request-target forms where they belong, and authorities with ports and IP
        // literals.
        assert_eq!(
            h("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").req.uri().path(),
            "*"
        );
        assert_eq!(
            h("GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n")
                .req
                .uri()
                .path(),
            "/x"
        );
        h("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
        h("GET / HTTP/1.1\r\nHost: api.example:443\r\n\r\n");
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
                Refused::NotImplemented,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Refused::NotImplemented,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refused::NotImplemented,
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refused::Bad,
            ),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", Refused::Bad),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Refused::Bad),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Refused::Bad),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Refused::Bad),
            (
                "GET internal.svc:80 HTTP/1.1\r\nHost: a\r\n\r\n",
                Refused::Bad,
            ),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", Refused::Bad),
            ("GET /a#/../admin HTTP/1.1\r\nHost: a\r\n\r\n", Refused::Bad),
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

    /// Mutations of real heads (bytes flipped, inserted, dropped): parsing never panics, and
    /// reads each the same whether the seed's names were recorded (the scan) or not (`httparse`).
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
        let mut scanned = 0;
        for _ in 0..50_000 {
            let seed = seeds[(next() % 3) as usize];
            let mut v = seed.to_vec();
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
            for max in [64, 8192] {
                forget();
                let general = outcome(&v, max);
                prime(seed);
                scanned += usize::from(LAST.with_borrow(|l| l.scan(&v)).is_some());
                assert_eq!(
                    outcome(&v, max),
                    general,
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
        // Mutations that leave the request line and names alone are read by the scan: 12,752
        // of the 100,000 reads here.
        assert!(scanned > 10_000, "{scanned}");
    }

    /// Forgets the names this thread recorded: the next head goes to `httparse`.
    fn forget() {
        LAST.with_borrow_mut(Recent::clear);
    }

    /// Records `seed`'s names, as reading it on this thread does.
    fn prime(seed: &[u8]) {
        forget();
        let _ = parse(&mut BytesMut::from(seed), 8192);
        assert!(LAST.with_borrow(|l| !l.names.is_empty()));
    }

    /// What parsing `wire` gives, and what it leaves in the buffer (a refused head ends the
    /// connection: what is left then is never read).
    fn outcome(wire: &[u8], max: usize) -> String {
        let mut buf = BytesMut::from(wire);
        match parse(&mut buf, max) {
            Err(e) => format!("{e:?}"),
            Ok(h) => format!("{h:?} rest={:?}", &buf[..]),
        }
    }

    #[test]
    fn a_scanned_head_reads_as_httparse_reads_it() {
        const SEED: &str =
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n";
        const N: &str = "Host: example.com\r\nContent-Length: 3\r\nConnection: keep-alive\r\n";
        let line =
            |first: &str, lines: &str| format!("{first}\r\n{lines}\r\nabcGET / HTTP/1.1\r\n");
        let get = |lines: &str| line("GET /a?b=1 HTTP/1.1", lines);
        // (wire, whether the scan reads it rather than httparse)
        let cases: Vec<(String, bool)> = vec![
            (get(N), true),
            (line("POST /upload HTTP/1.0", N), true),
            (line("OPTIONS * HTTP/1.1", N), true),
            (line("DELETE http://example.com/x HTTP/1.1", N), true),
            (get(&N.replace(": example.com", ":example.com \t")), true),
            (get(&N.replace("keep-alive", "close")), true),
            (get(&N.replace("keep-alive", "Upgrade")), true),
            (get(&N.replace("example.com", "")), true),
            // Read by the scan, refused as httparse refuses them.
            (get(&N.replace("example.com", "exa\x01mple")), true),
            (get(&N.replace("example.com", "exa\rmple")), true),
            (get(&N.replace("example.com", "exa\x7fmple")), true),
            (get(&N.replace(": 3", ": 3x")), true),
            (get(&N.replace(": 3", ": +3")), true),
            (get(&N.replace(": 3", ": ")), true),
            (line("GET /a\"b HTTP/1.1", N), true),
            (line("GET http://[::1 HTTP/1.1", N), true),
            // Read by httparse.
            (line("get / HTTP/1.1", N), false),
            (line("PURGE / HTTP/1.1", N), false),
            (line("CONNECT example.com:443 HTTP/1.1", N), false),
            (line("GET /caf\u{e9} HTTP/1.1", N), false),
            (line("GET  / HTTP/1.1", N), false),
            (line("GET / HTTP/1.2", N), false),
            (line("GET / HTTP/2.0", N), false),
            (line("GET /", N), false),
            (line("GET / HTTP/1.1\n", N), false),
            (get(&N.replace("\r\n", "\n")), false),
            (get(&N.replace("Host:", "Host :")), false),
            (get(&N.replace("Host:", "host:")), false),
            (
                get(&N.replace("Host: example.com\r\n", "Host: a\r\n b\r\n")),
                false,
            ),
            (get(&format!("{N}Transfer-Encoding: chunked\r\n")), false),
            (get(&format!("{N}Content-Length: 4\r\n")), false),
            (get(&N.replace("Connection: keep-alive\r\n", "")), false),
        ];
        for (wire, scanned) in &cases {
            let w = wire.as_bytes();
            prime(SEED.as_bytes());
            assert_eq!(
                LAST.with_borrow(|l| l.scan(w)).is_some(),
                *scanned,
                "{wire:?}"
            );
            for max in [32, 8192] {
                forget();
                let general = outcome(w, max);
                prime(SEED.as_bytes());
                assert_eq!(outcome(w, max), general, "{wire:?} {max}");
            }
            // Every cut of the head is incomplete (or refused) alike on both paths.
            let end = wire.find("\r\n\r\n").map_or(0, |i| i + 3);
            for cut in 0..end.min(w.len()) {
                forget();
                let general = outcome(&w[..cut], 8192);
                prime(SEED.as_bytes());
                assert_eq!(outcome(&w[..cut], 8192), general, "{wire:?} cut {cut}");
            }
        }
    }

    #[test]
    fn the_first_lf_is_found_wherever_it_is() {
        for len in 0..40 {
            for lf in 0..len {
                // Bytes that look like an LF to a careless bit trick: 0x0b, 0x8a, 0x09.
                let mut b: Vec<u8> = (0..len).map(|i| [0x0b, 0x8a, 0x09, b'a'][i % 4]).collect();
                assert_eq!(find_lf(&b), None, "{len}");
                b[lf] = b'\n';
                if lf + 1 < len {
                    b[lf + 1] = b'\n';
                }
                assert_eq!(find_lf(&b), Some(lf), "{len} {lf}");
            }
        }
    }
}
