//! HTTP/1 request-framing guard: spots a request head carrying both `Content-Length` and
//! `Transfer-Encoding`, which Envoy refuses with 400.
//!
//! It watches only connections hyper serves for HTTP/1 (those `h1` hands over after an
//! upgrade or CONNECT request); `h1` decides framing from its own parse.
//!
//! Why a wrapper over the raw bytes: hyper accepts such a request, drops `Content-Length` and
//! decodes the body as chunked, so by the time the service sees the request the evidence is
//! gone. The guard watches the bytes hyper reads, follows the request framing the same way
//! hyper does (head, then a `Content-Length` or chunked body, then the next head) and records
//! which request, counted from 1 on the connection, was ambiguous. The service counts the
//! requests it is handed and refuses that one (see `Framing::refuse_next`).
//!
//! Cost on the normal path: a look at each head's line starts (a head without framing headers
//! needs no more), else one `httparse` pass over it (on the stack, no allocation), and O(1)
//! per body chunk. Only a head split across reads is copied, into a buffer (a client that
//! sends its head in pieces; the 24 bytes read to tell HTTP/2 from HTTP/1 are replayed
//! together with what follows them, see `io::Prefixed`). A small buffer is kept for the
//! connection, a large one freed, so idle keep-alive connections do not each hold a read's
//! worth of memory.
//!
//! The guard stops watching for good (and frees that buffer) whenever following the framing
//! would mean guessing: HTTP/2, an upgrade or CONNECT (tunnel bytes follow), or anything
//! hyper itself refuses (hyper then answers 400/431 and closes).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::chunk::{self, Chunk, Step};
use super::h1;

/// hyper's default header count limit; a head with more is refused by hyper anyway.
const MAX_HEADERS: usize = 100;

/// Capacity of the split-head buffer kept between requests.
const KEEP_PENDING: usize = 1024;

/// What the guard found, shared between the connection's IO and its service.
#[derive(Debug, Default)]
pub struct Framing {
    /// The 1-based index of the first ambiguous request head; 0: none.
    bad: AtomicU64,
    /// HTTP/1 requests handed to the service so far.
    served: AtomicU64,
}

impl Framing {
    /// Called by the service once per HTTP/1 request, in order (hyper serves HTTP/1 requests
    /// one at a time): whether this request is the ambiguous one. One relaxed counter bump and
    /// one load on the normal path.
    pub fn refuse_next(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let bad = self.bad.load(Ordering::Acquire);
        // `>=`: fail closed should hyper ever hand over a request after the ambiguous one.
        bad != 0 && n >= bad
    }

    /// Marks the next request the service is handed as ambiguous: the own HTTP/1 server
    /// (`h1`) found it so, and the service answers it as it answers the guard's findings.
    pub(crate) fn flag_next(&self) {
        self.flag(self.served.load(Ordering::Relaxed) + 1);
    }

    /// Counts from zero again: a guard starts watching a connection between requests (one
    /// that `h1` hands to hyper), and numbers its heads from 1.
    pub(crate) fn rebase(&self) {
        self.served.store(0, Ordering::Relaxed);
        self.bad.store(0, Ordering::Release);
    }

    fn flag(&self, head: u64) {
        // Only the first one matters: the connection closes after it.
        let _ = self
            .bad
            .compare_exchange(0, head, Ordering::Release, Ordering::Relaxed);
    }
}

/// Where the byte stream is in the request framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At (or inside) a request head.
    Head,
    /// Inside a `Content-Length` body: bytes left.
    Fixed(u64),
    /// Inside a chunked body.
    Chunk(Chunk),
    /// Not watching any more.
    Off,
}

/// Follows the request framing of one connection's inbound bytes.
#[derive(Debug)]
pub(crate) struct Tracker {
    state: State,
    /// The start of a head that did not fit in one read.
    pending: Vec<u8>,
    /// Largest head gathered; past it hyper answers 431 itself.
    max_head: usize,
    /// Request heads seen.
    heads: u64,
}

/// The verdict on a complete head.
enum Head {
    /// More bytes needed.
    Partial,
    /// Stop watching (hyper refuses the head, or tunnel bytes follow).
    Stop,
    /// A head of `len` bytes followed by `body`; `ambiguous`: both CL and TE.
    Complete {
        len: usize,
        body: State,
        ambiguous: bool,
    },
}

impl Tracker {
    /// A tracker at the start of a connection.
    pub(crate) fn new(max_head: usize) -> Self {
        Self {
            state: State::Head,
            pending: Vec::new(),
            max_head,
            heads: 0,
        }
    }

    /// Whether the tracker stopped watching.
    pub(crate) fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Feeds bytes read from the client; returns the 1-based index of an ambiguous head.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Option<u64> {
        while !data.is_empty() {
            match self.state {
                State::Off => return None,
                State::Fixed(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Fixed(left - n)
                    };
                }
                State::Chunk(c) => data = self.chunk(c, data),
                State::Head => {
                    if self.pending.is_empty()
                        && let Some(len) = quick(data)
                    {
                        self.heads += 1;
                        data = &data[len..];
                        continue;
                    }
                    let (verdict, already) = if self.pending.is_empty() {
                        (inspect(data), 0)
                    } else {
                        let already = self.pending.len();
                        self.pending.extend_from_slice(data);
                        (inspect(&self.pending), already)
                    };
                    match verdict {
                        Head::Partial => {
                            if already == 0 {
                                self.pending.extend_from_slice(data);
                            }
                            if self.pending.len() > self.max_head {
                                self.stop();
                            }
                            return None;
                        }
                        Head::Stop => {
                            self.stop();
                            return None;
                        }
                        Head::Complete {
                            len,
                            body,
                            ambiguous,
                        } => {
                            self.heads += 1;
                            self.pending.clear();
                            if self.pending.capacity() > KEEP_PENDING {
                                self.pending = Vec::new();
                            }
                            data = &data[len.saturating_sub(already).min(data.len())..];
                            if ambiguous {
                                // The connection is closed after the 400: nothing to follow.
                                self.stop();
                                return Some(self.heads);
                            }
                            self.state = body;
                        }
                    }
                }
            }
        }
        None
    }

    fn stop(&mut self) {
        self.state = State::Off;
        self.pending = Vec::new();
    }

    /// Advances through a chunked body; returns what is left of `data`.
    fn chunk<'d>(&mut self, mut c: Chunk, mut data: &'d [u8]) -> &'d [u8] {
        while let Some((&b, rest)) = data.split_first() {
            if let Chunk::Data(left) = c {
                let n = left.min(data.len() as u64);
                data = &data[n as usize..];
                c = if n == left {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - n)
                };
                continue;
            }
            data = rest;
            match chunk::step(c, b) {
                Step::Next(n) => c = n,
                Step::End => {
                    self.state = State::Head;
                    return data;
                }
                Step::Bad => {
                    // hyper refuses this body and closes the connection.
                    self.stop();
                    return &[];
                }
            }
        }
        self.state = State::Chunk(c);
        data
    }
}

/// The length of a complete head that frames no body and switches no protocol — no
/// `Content-Length`, `Transfer-Encoding` or `Upgrade` line, not CONNECT or an HTTP/2 preface,
/// CRLF line ends only — found by looking at line starts instead of parsing (most requests
/// are such GETs). `None`: let [`inspect`] decide. Lines that are not well-formed headers are
/// hyper's to refuse (400, and the connection closes), so they need no look here.
fn quick(buf: &[u8]) -> Option<usize> {
    const FRAMING: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"upgrade"];
    // Leading empty lines are skipped by httparse, and would be miscounted here.
    if matches!(buf.first(), None | Some(b'\r' | b'\n'))
        || buf.starts_with(b"CONNECT ")
        || buf.starts_with(b"PRI ")
    {
        return None;
    }
    let mut line = 0;
    loop {
        let nl = line + memchr::memchr(b'\n', &buf[line..])?;
        // A bare LF: httparse accepts it, and the full parse handles it.
        if nl == line || buf[nl - 1] != b'\r' {
            return None;
        }
        if nl == line + 1 {
            return Some(nl + 1);
        }
        let l = &buf[line..nl];
        if line > 0
            && FRAMING
                .iter()
                .any(|n| l.len() > n.len() && l[..n.len()].eq_ignore_ascii_case(n))
        {
            return None;
        }
        line = nl + 1;
    }
}

/// Parses a request head the way hyper does (same parser, default settings) and decides how
/// its body is framed.
fn inspect(buf: &[u8]) -> Head {
    // Uninitialised slots: no 3 KiB memset per head.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        // Not HTTP/1 (an HTTP/2 preface), or a head hyper refuses too.
        Err(_) => return Head::Stop,
    };
    let http11 = req.version == Some(1);
    let (mut length, mut te, mut chunked, mut upgrade) = (None, false, false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match h1::content_length(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                // hyper refuses a bad or conflicting length, unless TE came first and made
                // it irrelevant; either way the head is ambiguous or refused.
                _ if te => length = Some(0),
                _ => return Head::Stop,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            // As hyper: only the last coding of the last header line counts.
            chunked = h1::last_is_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            // As `h1`: an h2c upgrade is stripped and the request served as it is.
            upgrade |= !h1::is_h2c(h.value);
        }
    }
    if te && (!http11 || !chunked) {
        // hyper answers 400 itself.
        return Head::Stop;
    }
    if te && length.is_some() {
        return Head::Complete {
            len,
            body: State::Off,
            ambiguous: true,
        };
    }
    if (upgrade && http11) || req.method == Some("CONNECT") {
        // What follows may be another protocol's bytes.
        return Head::Stop;
    }
    let body = if te {
        State::Chunk(chunk::START)
    } else {
        match length {
            Some(n) if n > 0 => State::Fixed(n),
            _ => State::Head,
        }
    };
    Head::Complete {
        len,
        body,
        ambiguous: false,
    }
}

/// A downstream stream watched by a [`Tracker`] (HTTP/1 only; `None` passes bytes through).
pub struct Guard<S> {
    inner: S,
    tracker: Option<Tracker>,
    framing: Arc<Framing>,
}

impl<S> Guard<S> {
    /// Watches `inner` when `watch`; heads larger than `max_head` are left to hyper.
    pub fn new(inner: S, framing: Arc<Framing>, watch: bool, max_head: usize) -> Self {
        Self {
            inner,
            tracker: watch.then(|| Tracker::new(max_head)),
            framing,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Some(t), Poll::Ready(Ok(()))) = (&mut this.tracker, &r) {
            if let Some(head) = t.feed(&buf.filled()[before..]) {
                this.framing.flag(head);
            }
            if t.is_off() {
                this.tracker = None;
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `parts` one read at a time; returns the flagged head and the final state.
    fn run(parts: &[&[u8]]) -> (Option<u64>, State, u64) {
        let mut t = Tracker::new(64 * 1024);
        let mut flagged = None;
        for p in parts {
            if let Some(h) = t.feed(p) {
                flagged.get_or_insert(h);
            }
        }
        (flagged, t.state, t.heads)
    }

    /// Every split of `bytes` into two reads, and byte by byte, must agree with one read.
    fn all_splits(bytes: &[u8]) -> (Option<u64>, State, u64) {
        let whole = run(&[bytes]);
        for i in 0..=bytes.len() {
            assert_eq!(run(&[&bytes[..i], &bytes[i..]]), whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles), whole, "byte by byte");
        whole
    }

    #[test]
    fn pipelined_plain_requests_are_counted_and_pass() {
        let b = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
                  POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                  GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(all_splits(b), (None, State::Head, 3));
    }

    #[test]
    fn ambiguous_head_is_flagged_with_its_index() {
        let b = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n\
                  POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(all_splits(b), (Some(2), State::Off, 2));
        // Either order, any case.
        let b = b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 4\r\n\r\n";
        assert_eq!(run(&[b]).0, Some(1));
    }

    #[test]
    fn chunked_body_mentioning_content_length_is_data() {
        let body = b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n";
        let mut b = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        b.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(b"\r\n3\r\nabc\r\n0\r\nx-trailer: Content-Length: 1\r\n\r\n");
        b.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(all_splits(&b), (None, State::Head, 2));
    }

    #[test]
    fn content_length_body_mentioning_both_headers_is_data() {
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut b =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        b.extend_from_slice(body);
        assert_eq!(all_splits(&b), (None, State::Head, 1));
    }

    #[test]
    fn head_split_across_reads_is_gathered() {
        let (f, s, n) = run(&[
            b"POST / HTTP/1.1\r\nContent-Le",
            b"ngth: 3\r\nTransfer-Enc",
            b"oding: chunked\r\n\r\n",
        ]);
        assert_eq!((f, s, n), (Some(1), State::Off, 1));
    }

    #[test]
    fn stops_watching_where_it_would_guess() {
        // HTTP/2 preface.
        let (_, s, _) = run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert_eq!(s, State::Off);
        // Upgrade: websocket frames follow.
        let (_, s, n) = run(&[
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05",
        ]);
        assert_eq!((s, n), (State::Off, 0));
        // A chunked body hyper would refuse (LF without CR after the size).
        let (_, s, _) = run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello"]);
        assert_eq!(s, State::Off);
        // A head larger than the limit is left to hyper (431).
        let mut t = Tracker::new(64);
        assert_eq!(t.feed(&[b'G'; 100]), None);
        assert!(t.is_off());
        assert_eq!(t.pending.capacity(), 0);
    }

    #[test]
    fn the_quick_look_passes_only_heads_without_framing() {
        assert_eq!(quick(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"), Some(27));
        for head in [
            &b"POST / HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert_eq!(quick(head), None, "{}", String::from_utf8_lossy(head));
        }
        // Pipelined GETs after a bare-LF head still agree with the full parse.
        let b = b"GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(all_splits(b), (None, State::Head, 2));
    }

    #[test]
    fn service_refuses_only_the_flagged_request() {
        let f = Framing::default();
        f.flag(2);
        f.flag(3);
        assert!(!f.refuse_next());
        assert!(f.refuse_next());
    }
}
