//! Response heads: parsed by `httparse` into `http` types (values share the bytes read), and
//! the body's length decided as RFC 9112 §6.3 says a client must.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::Error;
use super::names::{Line, Names, Scanned, Values};
use crate::http::decode::Decoder;
use crate::http::h1::head::{content_length, find_lf};

/// Envoy's default limit on upstream header lines.
const MAX_HEADERS: usize = 100;

/// Largest response head accepted (Envoy's `max_request_headers_kb` default is 60 KiB).
pub(super) const MAX_HEAD: usize = 60 * 1024;

/// A final response head.
#[derive(Debug)]
pub(super) struct Head {
    /// The response, without its body.
    pub(super) resp: Response<()>,
    /// The body's framing.
    pub(super) body: Decoder,
    /// Whether the connection can carry another request after this response.
    pub(super) keep_alive: bool,
}

/// What the buffered bytes hold.
#[derive(Debug)]
pub(super) enum Parsed {
    /// A final response head (taken off the buffer).
    Final(Head),
    /// An interim 1xx response (taken off the buffer): a final one follows.
    Interim,
    /// Not a whole head yet.
    Partial,
}

/// Parses the response head at the start of `buf`, for a request that was a HEAD when
/// `head_request`. `names` holds the connection's last head's names ([`Names`]).
pub(super) fn parse(
    buf: &mut BytesMut,
    head_request: bool,
    names: &mut Names,
) -> Result<Parsed, Error> {
    let mut values = Values::new();
    if let Some((status, version, at)) = status_line(buf)
        && let Some(s) = names.scan(buf, at, &mut values)
        && s.len <= MAX_HEAD
    {
        return replayed(buf, names, (status, version), (&s, &values), head_request)
            .map(Parsed::Final);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Malformed("response head too large"));
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(Error::Malformed("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err(Error::Malformed("not an HTTP/1 response")),
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or_default())
        .map_err(|_| Error::Malformed("bad status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // The proxy path never asks for an upgrade (websockets have their own).
        return Err(Error::Malformed("unrequested protocol switch"));
    }
    if status.is_informational() {
        let _ = buf.split_to(len);
        return Ok(Parsed::Interim);
    }
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let base = buf.as_ptr() as usize;
    let repeated = names.matches(parsed.headers);
    names.clear();
    let mut replayable = true;
    let mut kept = Vec::with_capacity(parsed.headers.len());
    let (mut close, mut keep) = (false, false);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::Malformed("bad header name"))?;
        // Persistence is decided here, and a `Connection` (or `Keep-Alive`) that names no
        // other header is not kept: the proxy would only remove it again (a hashed removal
        // per response, for the `Connection: keep-alive` most servers send).
        let line = if name == header::CONNECTION {
            let (c, k, others) = connection_tokens(h.value);
            (close, keep) = (close || c, keep || k);
            if !others {
                names.push(h.name.as_bytes(), Line::Connection);
                continue;
            }
            replayable = false;
            Line::Kept
        } else if name.as_str() == "keep-alive" {
            names.push(h.name.as_bytes(), Line::KeepAlive);
            continue;
        } else if name == header::CONTENT_LENGTH {
            Line::Length
        } else {
            replayable &= name != header::TRANSFER_ENCODING;
            Line::Kept
        };
        names.push(h.name.as_bytes(), line);
        kept.push((name, h.value.as_ptr() as usize - base, h.value.len()));
    }
    let raw = buf.split_to(len).freeze();
    // Room for what the proxy adds (x-envoy-upstream-service-time, a route's headers).
    let mut headers = HeaderMap::with_capacity(kept.len() + 4);
    for (name, off, n) in kept {
        let value = HeaderValue::from_maybe_shared(raw.slice(off..off + n))
            .map_err(|_| Error::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    if replayable {
        names.finish(&headers, repeated);
    } else {
        names.forget();
    }
    let (body, keep_alive) = framing(&mut headers, version, status, head_request)?;
    Ok(Parsed::Final(head_of(
        status,
        version,
        headers,
        body,
        keep_alive && persists(version, close, keep),
    )))
}

/// The status line of a final response when it is the plain `HTTP/1.x DDD reason CRLF`, and
/// where it ends. `None` for anything else (1xx, no reason phrase, a bare LF), which `httparse`
/// reads.
fn status_line(buf: &[u8]) -> Option<(StatusCode, Version, usize)> {
    let version = match buf.get(..9)? {
        b"HTTP/1.1 " => Version::HTTP_11,
        b"HTTP/1.0 " => Version::HTTP_10,
        _ => return None,
    };
    let code = buf.get(9..13)?;
    if code.get(3) != Some(&b' ') {
        return None;
    }
    let status = StatusCode::from_bytes(code.get(..3)?).ok()?;
    if status.as_u16() < 200 {
        return None;
    }
    let nl = 13 + find_lf(buf.get(13..)?)?;
    if buf.get(nl.checked_sub(1)?) != Some(&b'\r') {
        return None;
    }
    // What `httparse` accepts in a reason phrase: HTAB, SP, visible ASCII, obs-text.
    let reason = buf.get(13..nl - 1)?;
    reason
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        .then_some((status, version, nl + 1))
}

/// A head [`Names::scan`] read: the kept map's copy with this head's values.
fn replayed(
    buf: &mut BytesMut,
    names: &Names,
    (status, version): (StatusCode, Version),
    (s, values): (&Scanned, &Values),
    head_request: bool,
) -> Result<Head, Error> {
    let raw = buf.split_to(s.len).freeze();
    let mut headers = names.map().unwrap_or_default();
    for (v, (off, n)) in headers.values_mut().zip(values.iter()) {
        *v = HeaderValue::from_maybe_shared(raw.slice(off..off + n))
            .map_err(|_| Error::Malformed("bad header value"))?;
    }
    let (body, keep_alive) = if bodiless(status, head_request) {
        (Decoder::Done, true)
    } else {
        match s.length {
            Some((off, n)) => match raw.get(off..off + n).and_then(content_length) {
                Some(n) => (Decoder::length(n), true),
                None => return Err(Error::Malformed("invalid Content-Length")),
            },
            None => (Decoder::Eof, false),
        }
    };
    Ok(head_of(
        status,
        version,
        headers,
        body,
        keep_alive && persists(version, s.close, s.keep),
    ))
}

/// Whether the connection may carry another request, by what the response's version and
/// `Connection` say.
fn persists(version: Version, close: bool, keep: bool) -> bool {
    match version {
        Version::HTTP_11 => !close,
        _ => keep,
    }
}

/// Whether the response has no body whatever its headers say.
fn bodiless(status: StatusCode, head_request: bool) -> bool {
    head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

fn head_of(
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Decoder,
    keep_alive: bool,
) -> Head {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Head {
        resp,
        body,
        keep_alive,
    }
}

/// The body's framing (RFC 9112 §6.3) and whether it leaves the connection reusable.
fn framing(
    headers: &mut HeaderMap,
    version: Version,
    status: StatusCode,
    head_request: bool,
) -> Result<(Decoder, bool), Error> {
    if bodiless(status, head_request) {
        return Ok((Decoder::Done, true));
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        // Only `chunked`, once, as Envoy's codec: any other coding would be dropped with the
        // hop-by-hop header, and the client given bytes nobody labelled.
        if codings.next().is_some()
            || !first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(Error::Malformed("unsupported transfer coding"));
        }
        // A length beside a coding is ignored, and the connection not reused (§6.3 ¶3):
        // the two disagree about where the next response starts. HTTP/1.0 has no codings:
        // its framing is faulty, and the connection closes after (RFC 9112 §6.1).
        let both = headers.remove(header::CONTENT_LENGTH).is_some();
        return Ok((Decoder::CHUNKED, !both && version == Version::HTTP_11));
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        match content_length(v.as_bytes()) {
            Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
            _ => return Err(Error::Malformed("invalid Content-Length")),
        }
    }
    Ok(match length {
        Some(n) => (Decoder::length(n), true),
        None => (Decoder::Eof, false),
    })
}

/// A `Connection` value's tokens: whether it lists `close`, `keep-alive`, and anything else
/// (names of hop-by-hop headers, which the proxy removes).
pub(super) fn connection_tokens(v: &[u8]) -> (bool, bool, bool) {
    // What nearly every server sends, without splitting (and most in lower case: an exact
    // compare is a tenth of a case-insensitive one).
    if v == b"keep-alive" || v.eq_ignore_ascii_case(b"keep-alive") {
        return (false, true, false);
    }
    if v.eq_ignore_ascii_case(b"close") {
        return (true, false, false);
    }
    let (mut close, mut keep, mut others) = (false, false, false);
    for t in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if t.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            keep = true;
        } else if !t.is_empty() {
            others = true;
        }
    }
    (close, keep, others)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_head(wire: &str, head_request: bool) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(wire.as_bytes());
        match parse(&mut buf, head_request, &mut Names::default()) {
            Ok(Parsed::Final(h)) => (h, buf),
            other => panic!("{wire:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_and_reuse_follow_rfc_9112() {
        let (h, rest) = final_head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false);
        assert_eq!(h.resp.status(), 200);
        assert_eq!((h.body, h.keep_alive), (Decoder::Length(3), true));
        assert_eq!(&rest[..], b"abc");
        let (h, _) = final_head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert_eq!((h.body, h.keep_alive), (Decoder::CHUNKED, false));
        assert!(h.resp.headers().get("content-length").is_none());
        let (h, _) = final_head("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.body, h.keep_alive), (Decoder::Eof, false));
        let (h, _) = final_head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert_eq!((h.body, h.keep_alive), (Decoder::Done, true));
        let (h, _) = final_head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(h.body, Decoder::Done);
        let (h, _) = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            false,
        );
        assert_eq!((h.body, h.keep_alive), (Decoder::Done, false));
        let (h, _) = final_head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let (h, _) = final_head(
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
        assert!(h.resp.headers().get("connection").is_none());
        let (h, _) = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive, x-hop\r\nx-hop: 1\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
        // Kept: it names a header the proxy must remove.
        assert_eq!(h.resp.headers()["connection"], "Keep-Alive, x-hop");
    }

    #[test]
    fn interim_responses_are_skipped_and_bad_heads_refused() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"[..]);
        assert!(matches!(
            parse(&mut buf, false, &mut Names::default()),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            parse(&mut buf, false, &mut Names::default()),
            Ok(Parsed::Final(_))
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad.as_bytes());
            assert!(
                parse(&mut buf, false, &mut Names::default()).is_err(),
                "{bad:?}"
            );
        }
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: y"[..]);
        assert!(matches!(
            parse(&mut buf, false, &mut Names::default()),
            Ok(Parsed::Partial)
        ));
        let mut big = String::from("HTTP/1.1 200 OK\r\n");
        while big.len() <= MAX_HEAD {
            big.push_str("x-filler: 0123456789012345678901234567890123456789\r\n");
        }
        let mut buf = BytesMut::from(big.as_bytes());
        assert!(parse(&mut buf, false, &mut Names::default()).is_err());
    }

    fn on(names: &mut Names, wire: &str, head_request: bool) -> Head {
        let mut buf = BytesMut::from(wire.as_bytes());
        match parse(&mut buf, head_request, names) {
            Ok(Parsed::Final(h)) => h,
            other => panic!("{wire:?}: {other:?}"),
        }
    }

    /// The header lines, without the service-time slot a replayed map ends with.
    fn lines(h: &Head) -> Vec<(String, String)> {
        let slot = |k: &HeaderName, v: &HeaderValue| {
            k == crate::http::headers::X_ENVOY_UPSTREAM_SERVICE_TIME && v.is_empty()
        };
        h.resp
            .headers()
            .iter()
            .filter(|(k, v)| !slot(k, v))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
            .collect()
    }

    #[test]
    fn a_head_with_the_last_heads_names_is_replayed_into_a_copy_of_its_map() {
        let mut names = Names::default();
        let wire = |date: &str, len: usize, conn: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: {date}\r\nContent-Length: {len}\r\nConnection: {conn}\r\nX-Custom: {date}\r\n\r\n"
            )
        };
        on(&mut names, &wire("d1", 1, "keep-alive"), false);
        assert!(!names.ready(), "kept only once the names came twice");
        on(&mut names, &wire("d2", 2, "keep-alive"), false);
        assert!(names.ready());
        // Replayed: every value is this head's, in line order; Connection is read, not kept.
        let h = on(&mut names, &wire("third", 3, "keep-alive"), false);
        assert!(names.ready());
        let last = h
            .resp
            .headers()
            .iter()
            .last()
            .map(|(k, v)| (k.as_str(), v.is_empty()));
        assert_eq!(
            last,
            Some(("x-envoy-upstream-service-time", true)),
            "the slot forwarding sets"
        );
        assert_eq!(
            lines(&h),
            [
                ("server", "nginx"),
                ("date", "third"),
                ("content-length", "3"),
                ("x-custom", "third"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!((h.body, h.keep_alive), (Decoder::Length(3), true));
        let h = on(&mut names, &wire("d", 4, "close"), false);
        assert_eq!((h.body, h.keep_alive), (Decoder::Length(4), false));
        let h = on(&mut names, &wire("d", 5, "keep-alive"), true);
        assert_eq!((h.body, h.keep_alive), (Decoder::Done, true));
        let mut buf = BytesMut::from(wire("d", 0, "keep-alive").replace(": 0", ": x").as_bytes());
        assert!(
            parse(&mut buf, false, &mut names).is_err(),
            "a bad length is refused"
        );
        // A Connection naming a header this time: the general path keeps it.
        let h = on(&mut names, &wire("d", 6, "x-hop"), false);
        assert_eq!(h.resp.headers()["connection"], "x-hop");
        assert!(!names.ready());
        // Other names: the general path, and the new names are recorded.
        let h = on(
            &mut names,
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nServer: nginx\r\n\r\n",
            false,
        );
        assert_eq!(h.resp.headers()["server"], "nginx");
        assert_eq!(h.body, Decoder::Length(7));
    }

    #[test]
    fn a_workers_connections_share_the_template_for_the_same_names() {
        let wire = |server: &str, len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nServer: {server}\r\nDate: d\r\nContent-Length: {len}\r\n\r\n"
            )
        };
        let mut a = Names::default();
        on(&mut a, &wire("a", 1), false);
        assert!(!a.ready());
        on(&mut a, &wire("a", 1), false);
        assert!(a.ready());
        let mut b = Names::default();
        on(&mut b, &wire("b", 2), false);
        assert!(b.ready(), "the worker had a template for these names");
        assert!(a.shares(&b));
        let h = on(&mut b, &wire("b2", 3), false);
        assert_eq!(
            lines(&h),
            [("server", "b2"), ("date", "d"), ("content-length", "3")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(h.body, Decoder::Length(3));
        // Other names on one connection leave the other's replay alone.
        on(
            &mut b,
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(!b.ready());
        let h = on(&mut a, &wire("a2", 4), false);
        assert_eq!(h.resp.headers()["server"], "a2");
        assert!(a.ready());
        // Another worker thread has its own.
        let other = std::thread::spawn(move || {
            let mut c = Names::default();
            on(&mut c, &wire("c", 1), false);
            c.ready()
        });
        assert!(!other.join().expect("thread"));
    }

    #[test]
    fn a_worker_keeps_a_bounded_number_of_templates() {
        let wire = |i: usize, v: &str| {
            format!("HTTP/1.1 200 OK\r\nX-Set-{i}: {v}\r\nContent-Length: 0\r\n\r\n")
        };
        let mut first = Names::default();
        for i in 0..40 {
            let mut n = Names::default();
            on(&mut n, &wire(i, "v"), false);
            on(&mut n, &wire(i, "v"), false);
            assert!(n.ready());
            if i == 0 {
                first = n;
            }
        }
        assert_eq!(super::super::names::kept(), 16);
        // The oldest made are forgotten: 24 to 39 are kept, and a new connection with their
        // names replays after one head; with older names it needs two.
        for (i, kept) in [(0, false), (23, false), (24, true), (39, true)] {
            let mut n = Names::default();
            on(&mut n, &wire(i, "v"), false);
            assert_eq!(n.ready(), kept, "X-Set-{i}");
        }
        // A forgotten template stays with the connection that holds it.
        let h = on(&mut first, &wire(0, "w"), false);
        assert!(first.ready());
        assert_eq!(h.resp.headers()["x-set-0"], "w");
    }

    /// A connection whose last two heads had `Server`, `Date`, `Content-Length`, `Connection`.
    fn primed() -> Names {
        let mut names = Names::default();
        for _ in 0..2 {
            on(
                &mut names,
                "HTTP/1.1 200 OK\r\nServer: a\r\nDate: b\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
                false,
            );
        }
        assert!(names.ready());
        names
    }

    /// Status, version, header lines, framing, reuse and what is left in the buffer; or the error.
    fn outcome(wire: &[u8], names: &mut Names, head_request: bool) -> String {
        let mut buf = BytesMut::from(wire);
        match parse(&mut buf, head_request, names) {
            Ok(Parsed::Final(h)) => format!(
                "{} {:?} {:?} {:?} {} rest={:?}",
                h.resp.status(),
                h.resp.version(),
                lines(&h),
                h.body,
                h.keep_alive,
                &buf[..]
            ),
            Ok(Parsed::Interim) => "interim".into(),
            Ok(Parsed::Partial) => "partial".into(),
            Err(_) => "error".into(),
        }
    }

    #[test]
    fn a_scanned_head_reads_as_httparse_reads_it() {
        const N: &str =
            "Server: nginx\r\nDate: d\r\nContent-Length: 3\r\nConnection: keep-alive\r\n";
        // (wire, whether the scan reads it rather than httparse)
        let cases: Vec<(String, bool)> = vec![
            (format!("HTTP/1.1 200 OK\r\n{N}\r\nabcNEXT"), true),
            (
                format!("HTTP/1.0 503 Service Unavailable\r\n{N}\r\nabc"),
                true,
            ),
            (
                format!("HTTP/1.1 404 Nicht gef\u{fc}nden\r\n{N}\r\nabc"),
                true,
            ),
            (
                N.replace("d\r", " \t d e \t \r")
                    .replace(": nginx", ":nginx"),
                true,
            ),
            (
                N.replace("nginx", "")
                    .replace("3", "  3 ")
                    .replace(": keep-alive", ":keep-alive , close"),
                true,
            ),
            (N.replace("nginx", "caf\u{e9}"), true),
            (N.replace("keep-alive", "close"), true),
            (N.replace("keep-alive", "Keep-Alive"), true),
            // Kept by the scan, refused when made a `HeaderValue`, as httparse refuses them.
            (N.replace("nginx", "ng\x01inx"), true),
            (N.replace("nginx", "ng\rinx"), true),
            (N.replace("nginx", "nginx\x7f"), true),
            (N.replace("3\r", "3x\r"), true),
            (N.replace("3\r", "\r"), true),
            // Read by httparse.
            (N.replace("keep-alive", "keep-alive\x7f"), false),
            (N.replace("keep-alive", "x-hop"), false),
            (
                N.replace("Server: nginx\r\n", "Server: nginx\r\n folded\r\n"),
                false,
            ),
            (N.replace("Server:", "Server :"), false),
            (N.replace("Server:", "server:"), false),
            (N.replace("Date: d\r\n", ""), false),
            (format!("{N}X-Extra: 1\r\n"), false),
            (N.replace("\r\n", "\n"), false),
            (N.replace("d\r\n", "d\n"), false),
        ]
        .into_iter()
        .map(|(w, scanned)| {
            if w.starts_with("HTTP/") {
                (w, scanned)
            } else {
                (format!("HTTP/1.1 200 OK\r\n{w}\r\nabc"), scanned)
            }
        })
        .chain(
            [
                "HTTP/1.1 200\r\n",
                "HTTP/1.1 200 O\x7fK\r\n",
                "HTTP/1.1 2000 OK\r\n",
                "HTTP/1.1 099 OK\r\n",
                "HTTP/1.1 100 Continue\r\n",
                "HTTP/1.1 101 Switching Protocols\r\n",
                "HTTP/2.0 200 OK\r\n",
                "HTTP/1.1 200 OK\n",
            ]
            .map(|s| (format!("{s}{N}\r\nabc"), false)),
        )
        .collect();
        for (wire, scanned) in &cases {
            let w = wire.as_bytes();
            let names = primed();
            let read = status_line(w)
                .and_then(|(_, _, at)| names.scan(w, at, &mut Values::new()))
                .is_some();
            assert_eq!(read, *scanned, "{wire:?}");
            for head_request in [false, true] {
                let general = outcome(w, &mut Names::default(), head_request);
                assert_eq!(outcome(w, &mut primed(), head_request), general, "{wire:?}");
            }
            // Every cut of the head is partial on both paths.
            let end = wire.find("\r\n\r\n").map_or(0, |i| i + 3);
            for cut in 0..end.min(w.len()) {
                let general = outcome(&w[..cut], &mut Names::default(), false);
                assert_eq!(
                    outcome(&w[..cut], &mut primed(), false),
                    general,
                    "{wire:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn heads_with_repeated_names_transfer_codings_or_too_many_names_are_never_replayed() {
        let mut names = Names::default();
        let cookies =
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\nSet-Cookie: b=2\r\n\r\n";
        for _ in 0..3 {
            let h = on(&mut names, cookies, false);
            let c: Vec<_> = h.resp.headers().get_all("set-cookie").iter().collect();
            assert_eq!(c, ["a=1", "b=2"]);
            assert!(!names.ready());
        }
        let mut big = String::from("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
        for i in 0..70 {
            big.push_str(&format!("x-a-rather-long-header-name-{i:03}: v\r\n"));
        }
        big.push_str("\r\n");
        for _ in 0..3 {
            let h = on(&mut names, &big, false);
            assert_eq!(h.resp.headers().len(), 71);
            assert!(!names.ready(), "too many name bytes to keep");
        }
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        for _ in 0..3 {
            let h = on(&mut names, chunked, false);
            assert_eq!((h.body, h.keep_alive), (Decoder::CHUNKED, false));
            assert!(h.resp.headers().get("content-length").is_none());
            assert!(!names.ready());
        }
    }
}
