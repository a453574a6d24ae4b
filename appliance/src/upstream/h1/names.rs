//! The header names of the last response a connection read.
//!
//! A server sends the same header names in the same order on every response of a kind, so
//! most response heads on a pooled connection repeat the previous head's names. What a header
//! line costs most is not its value but its name: parsing it into a `HeaderName` and hashing
//! it into a new map (about 200 instructions a line, `bench/instructions.sh`). When a head's
//! names match, byte for byte, those of the head before it, the map built for that head is
//! cloned (names and hashes in place) and only the values are replaced.
//!
//! The map is kept only once the same names came twice in a row, so a connection whose
//! responses alternate between header sets never pays for the copy; and only for heads the
//! replay reads exactly as the general path does: no repeated name (the map would order them
//! by name, not by line), no `Transfer-Encoding`, and no `Connection` naming other headers.

use http::header::{HeaderMap, HeaderValue};

/// Heads with more name bytes or lines than this are not kept: a pooled connection's memory
/// stays small whatever an upstream sends (a head may be 60 KiB).
const MAX_RAW: usize = 2048;
const MAX_LINES: usize = 64;

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

/// The last head's header names, and the map to replay them into.
#[derive(Debug, Default)]
pub(super) struct Names {
    /// The names as received, back to back.
    raw: Vec<u8>,
    /// Per line, where its name ends in `raw`, and what the line is. Empty: nothing to match.
    lines: Vec<(usize, Line)>,
    /// The kept lines' names in order, with empty values: set once the same names came in
    /// two heads in a row.
    map: Option<HeaderMap>,
    /// Scratch for the head being read: the kept lines' value offsets in the buffer.
    pub(super) values: Vec<(usize, usize)>,
}

impl Names {
    /// Whether `lines` have the last head's names, in the same order, byte for byte.
    pub(super) fn matches(&self, lines: &[httparse::Header<'_>]) -> bool {
        if lines.len() != self.lines.len() || lines.is_empty() {
            return false;
        }
        let mut start = 0;
        for (h, &(end, _)) in lines.iter().zip(&self.lines) {
            if self.raw.get(start..end) != Some(h.name.as_bytes()) {
                return false;
            }
            start = end;
        }
        true
    }

    /// What each line of a matching head is.
    pub(super) fn kinds(&self) -> impl Iterator<Item = Line> + '_ {
        self.lines.iter().map(|&(_, l)| l)
    }

    /// A copy of the kept map, when there is one.
    pub(super) fn map(&self) -> Option<HeaderMap> {
        self.map.clone()
    }

    /// Whether there is a map to replay into.
    pub(super) fn ready(&self) -> bool {
        self.map.is_some()
    }

    /// Starts recording a head read on the general path.
    pub(super) fn clear(&mut self) {
        if self.raw.capacity() > MAX_RAW || self.lines.capacity() > MAX_LINES {
            *self = Self::default();
            return;
        }
        self.raw.clear();
        self.lines.clear();
        self.map = None;
    }

    /// Records the next line of the head being read.
    pub(super) fn push(&mut self, name: &[u8], line: Line) {
        self.raw.extend_from_slice(name);
        self.lines.push((self.raw.len(), line));
    }

    /// Ends recording: `map` is what the general path built for the head (before framing
    /// touched it). With `repeated`, the names are the same as the head's before, so the map
    /// is kept to replay.
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
        if repeated {
            let mut m = map.clone();
            // The values share the buffer the head was read into; kept, they would pin it.
            for v in m.values_mut() {
                *v = HeaderValue::from_static("");
            }
            self.map = Some(m);
        }
    }

    /// Forgets the head: it cannot be replayed.
    pub(super) fn forget(&mut self) {
        self.clear();
    }
}
