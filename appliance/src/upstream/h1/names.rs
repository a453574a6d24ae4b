//! The header names of the last response a connection read.
//!
//! A server sends the same header names in the same order on every response of a kind, so
//! most response heads on a pooled connection repeat the previous head's names. What a header
//! line costs most is not its value but its name: parsing it into a `HeaderName` and hashing
//! it into a new map (about 200 instructions a line, `bench/instructions.sh`). When a head's
//! names match, byte for byte, those of the head before it, a map built once for those names is
//! cloned (names and hashes in place) and only the values are replaced.
//!
//! Such a head is not parsed by `httparse` either: [`Names::scan`] checks that each line starts
//! with the expected name and a colon, and finds its end eight bytes at a time (`head::find_lf`;
//! with `memchr`, the scan saved 688 instructions a response, `bench/instructions.sh`, and the
//! eight-byte search a part of another 421). Anything it does not read
//! exactly as `httparse` would — a bare LF, a partial head, another name, a 1xx — goes to the
//! general path, which reads it with `httparse`.
//!
//! A map is built only once the same names came twice in a row on one of the worker's
//! connections, so responses that alternate between header sets do not make a map per head
//! (a connection alternating between two sets that both have one pays a failed scan, which
//! stops at the first name that differs); and only for heads the
//! replay reads exactly as the general path does: no repeated name (the map would order them
//! by name, not by line), no `Transfer-Encoding`, and no `Connection` naming other headers.
//!
//! The kept names and map are a [`Template`] that a worker's connections share: every pooled
//! connection to a backend sees the same names, and a worker keeps many of them in flight
//! (32 with `bench/run.sh`'s 64 clients), so a template per connection was cold by the time
//! its response came: copying it missed the L1 data cache 12 times a response (`CACHE_SIM=1
//! bench/instructions.sh`). A connection whose names a template of its worker already has
//! adopts it after one head; the copy then reads lines every response keeps warm.

use std::cell::RefCell;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};

use crate::http::h1::head::{find_lf, ows};
use crate::http::headers::X_ENVOY_UPSTREAM_SERVICE_TIME;

/// Heads with more name bytes or lines than this are not kept: a pooled connection's memory
/// stays small whatever an upstream sends (a head may be 60 KiB).
const MAX_RAW: usize = 2048;
pub(super) const MAX_LINES: usize = 64;

/// Templates a worker thread keeps: one per distinct set of names its backends send, so a
/// few; past this the oldest made is forgotten (connections holding it keep using it).
const TEMPLATES: usize = 16;

thread_local! {
    /// This worker's templates, newest last.
    static KEPT: RefCell<Vec<Arc<Template>>> = const { RefCell::new(Vec::new()) };
}

/// What a header line is, for the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// Carried on in the map.
    Kept,
    /// `Content-Length`, carried on; it also frames the body.
    Length,
    /// `Connection` naming no header: read for persistence, then dropped.
    Connection,
    /// `Keep-Alive`: dropped.
    KeepAlive,
}

/// What [`Names::scan`] read besides the kept values.
#[derive(Debug)]
pub(super) struct Scanned {
    /// The head's length, through its blank line.
    pub(super) len: usize,
    /// `Connection: close`.
    pub(super) close: bool,
    /// `Connection: keep-alive`.
    pub(super) keep: bool,
    /// Where the `Content-Length` value is.
    pub(super) length: Option<(usize, usize)>,
}

/// Where each kept line's value is in the buffer, in line order: [`Names::scan`]'s output, on
/// the caller's stack (warm, unlike anything a connection owns). Offsets fit 16 bits: a longer
/// head is refused (`response::MAX_HEAD`), and a scan that meets one gives up to the general path.
pub(super) struct Values {
    at: [(u16, u16); MAX_LINES],
    n: usize,
}

impl Values {
    pub(super) fn new() -> Self {
        Self {
            at: [(0, 0); MAX_LINES],
            n: 0,
        }
    }

    fn push(&mut self, (off, len): (usize, usize)) -> Option<()> {
        let slot = self.at.get_mut(self.n)?;
        *slot = (u16::try_from(off).ok()?, u16::try_from(len).ok()?);
        self.n += 1;
        Some(())
    }

    /// The values' (offset, length) pairs.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.at[..self.n]
            .iter()
            .map(|&(o, n)| (usize::from(o), usize::from(n)))
    }
}

/// A head's header names and the map built for them, to replay heads with the same names into.
#[derive(Debug)]
struct Template {
    /// The names as received, back to back.
    raw: Vec<u8>,
    /// Per line, where its name ends in `raw`, and what the line is.
    lines: Vec<(usize, Line)>,
    /// The kept lines' names in order, with empty values.
    map: HeaderMap,
}

impl Template {
    fn same(&self, raw: &[u8], lines: &[(usize, Line)]) -> bool {
        self.raw == raw && self.lines == lines
    }
}

/// This worker's template for these names, if it has one.
fn shared(raw: &[u8], lines: &[(usize, Line)]) -> Option<Arc<Template>> {
    KEPT.with(|k| {
        k.borrow()
            .iter()
            .rev()
            .find(|t| t.same(raw, lines))
            .cloned()
    })
}

/// How many templates this thread keeps.
#[cfg(test)]
pub(super) fn kept() -> usize {
    KEPT.with(|k| k.borrow().len())
}

/// Makes `t` one of this worker's templates.
fn keep(t: &Arc<Template>) {
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() >= TEMPLATES {
            k.remove(0);
        }
        k.push(t.clone());
    });
}

/// Whether a field value has only the bytes `httparse` and `HeaderValue` accept: HTAB, SP,
/// visible ASCII and obs-text.
fn visible(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A connection's record of its last head's header names, and the template it replays into.
#[derive(Debug, Default)]
pub(super) struct Names {
    /// The names of the last head the general path read, back to back.
    raw: Vec<u8>,
    /// Per line, where its name ends in `raw`, and what the line is. Empty: nothing to match.
    lines: Vec<(usize, Line)>,
    /// Set once the same names came in two heads in a row, or when the worker has a template
    /// for them: the names then live only here.
    template: Option<Arc<Template>>,
}

impl Names {
    /// Reads the header lines of `buf` from `at` (where the status line ends) when they are the
    /// template's names in the same order, each line `name:` OWS value OWS CRLF, and the
    /// blank line follows. The kept lines' value offsets go to `values`, unchecked: making them
    /// `HeaderValue`s checks them, and a bad one refuses the response as `httparse` would.
    /// `None` for anything else, which the general path reads.
    pub(super) fn scan(&self, buf: &[u8], mut at: usize, values: &mut Values) -> Option<Scanned> {
        // Nothing to replay into: the general path reads the head and records it.
        let t = self.template.as_deref()?;
        let mut s = Scanned {
            len: 0,
            close: false,
            keep: false,
            length: None,
        };
        values.n = 0;
        let mut start = 0;
        for &(end, line) in &t.lines {
            let name = t.raw.get(start..end)?;
            start = end;
            let rest = buf.get(at..)?;
            if !rest.starts_with(name) || rest.get(name.len()) != Some(&b':') {
                return None;
            }
            let from = at + name.len() + 1;
            let nl = from + find_lf(buf.get(from..)?)?;
            // `from` is past the colon, so a CR before the LF is at `from` or later.
            if nl == from || buf.get(nl - 1) != Some(&b'\r') {
                return None;
            }
            let (lead, trail) = ows(buf.get(from..nl - 1)?);
            let value = buf.get(from + lead..nl - 1 - trail)?;
            let v = (from + lead, value.len());
            match line {
                Line::Kept => values.push(v)?,
                Line::Length => {
                    s.length = Some(v);
                    values.push(v)?;
                }
                Line::Connection => {
                    if !visible(value) {
                        return None;
                    }
                    let (c, k, others) = super::response::connection_tokens(value);
                    if others {
                        return None;
                    }
                    (s.close, s.keep) = (s.close || c, s.keep || k);
                }
                Line::KeepAlive if !visible(value) => return None,
                Line::KeepAlive => {}
            }
            at = nl + 1;
        }
        if buf.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        s.len = at + 2;
        Some(s)
    }

    /// The last head's names: the template's, or the record's.
    fn last(&self) -> (&[u8], &[(usize, Line)]) {
        match &self.template {
            Some(t) => (&t.raw, &t.lines),
            None => (&self.raw, &self.lines),
        }
    }

    /// Whether `lines` have the last head's names, in the same order, byte for byte.
    pub(super) fn matches(&self, lines: &[httparse::Header<'_>]) -> bool {
        let (raw, names) = self.last();
        if lines.len() != names.len() || lines.is_empty() {
            return false;
        }
        let mut start = 0;
        for (h, &(end, _)) in lines.iter().zip(names) {
            if raw.get(start..end) != Some(h.name.as_bytes()) {
                return false;
            }
            start = end;
        }
        true
    }

    /// A copy of the kept map, when there is one: the names of the last head's kept lines, in
    /// order, each value to be replaced by the `values` [`scan`](Self::scan) found.
    pub(super) fn map(&self) -> Option<HeaderMap> {
        self.template.as_ref().map(|t| t.map.clone())
    }

    /// Whether there is a map to replay into.
    #[cfg(test)]
    pub(super) fn ready(&self) -> bool {
        self.template.is_some()
    }

    /// Whether both replay into the same template.
    #[cfg(test)]
    pub(super) fn shares(&self, other: &Self) -> bool {
        matches!((&self.template, &other.template), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
    }

    /// Starts recording a head read on the general path.
    pub(super) fn clear(&mut self) {
        if self.raw.capacity() > MAX_RAW || self.lines.capacity() > MAX_LINES {
            *self = Self::default();
            return;
        }
        self.raw.clear();
        self.lines.clear();
        self.template = None;
    }

    /// Records the next line of the head being read.
    pub(super) fn push(&mut self, name: &[u8], line: Line) {
        self.raw.extend_from_slice(name);
        self.lines.push((self.raw.len(), line));
    }

    /// Ends recording: `map` is what the general path built for the head (before framing
    /// touched it). The worker's template for these names is used if it has one; if not, and
    /// `repeated` (the names are the same as the head's before), a template is made of them.
    pub(super) fn finish(&mut self, map: &HeaderMap, repeated: bool) {
        if self.raw.len() > MAX_RAW || self.lines.len() > MAX_LINES {
            *self = Self::default();
            return;
        }
        if map.len() != map.keys_len() {
            // A repeated name: the replay fills values in map order, which is not line order.
            self.clear();
            return;
        }
        if let Some(t) = shared(&self.raw, &self.lines) {
            self.adopt(t);
            return;
        }
        if repeated {
            let mut m = map.clone();
            // The values share the buffer the head was read into; kept, they would pin it.
            for v in m.values_mut() {
                *v = HeaderValue::from_static("");
            }
            // The slot of the header forwarding sets on every response: set in place, it does
            // not grow the copy (a clone has no spare room), which cost 660 instructions a
            // response (`bench/instructions.sh`). Last, so the values still go in line order.
            m.insert(X_ENVOY_UPSTREAM_SERVICE_TIME, HeaderValue::from_static(""));
            let t = Arc::new(Template {
                raw: std::mem::take(&mut self.raw),
                lines: std::mem::take(&mut self.lines),
                map: m,
            });
            keep(&t);
            self.adopt(t);
        }
    }

    /// Replays into `t` from now on; its names are the record's, which is given up.
    fn adopt(&mut self, t: Arc<Template>) {
        self.raw = Vec::new();
        self.lines = Vec::new();
        self.template = Some(t);
    }

    /// Forgets the head: it cannot be replayed.
    pub(super) fn forget(&mut self) {
        self.clear();
    }
}
