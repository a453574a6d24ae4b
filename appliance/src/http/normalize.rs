//! Path normalization before routing, as Istio's default `pathNormalization: BASE` asks of
//! Envoy (`normalize_path: true`, Chromium's path canonicalizer): otherwise
//! `/public/../admin` matches `prefix: /public` and reaches whatever serves `/admin`, and
//! route-based access rules are bypassed.
//!
//! What it does, as that canonicalizer does: a percent-encoded unreserved character
//! (RFC 3986 §2.3: letters, digits, `-`, `.`, `_`, `~`) is decoded, so `%2e%2e` is `..`; a
//! backslash is a slash; `.` and `..` segments are removed (RFC 3986 §5.2.4), never above the
//! root. Other escapes, `%2F` included, stay as they are (BASE decodes no slash), and slashes
//! are not merged. The query is left alone.
//!
//! The other settings of `meshConfig.pathNormalization` are Envoy's other two steps, in
//! Envoy's order (`maybeNormalizePath`): `DECODE_AND_MERGE_SLASHES` first decodes `%2F` and
//! `%5C` (`path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`), then both it and
//! `MERGE_SLASHES` merge runs of slashes after the BASE step (`merge_slashes`). `NONE` leaves
//! the path as sent.

use http::uri::PathAndQuery;
use tenants::model::PathNormalization;

/// A path normalization could not settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsettled;

/// Passes after which a path that still changes is refused: each pass decodes one level of
/// escapes spelled out of escapes (`%%32e` is `%2e`, then `.`), and a path nested deeper
/// than any client writes would otherwise cost a pass per level.
const MAX_PASSES: usize = 4;

/// The normalized form of `pq`, `Ok(None)` when it is normal already (nearly always: the
/// check is one pass over the path's bytes, with no allocation), or `Err` when it does not
/// settle (answered 400, as Envoy answers a path it cannot normalize).
///
/// Passes repeat until nothing changes, where Envoy makes one: so the path routed is the one
/// a backend that decodes what it gets ends up with (`/public/%%32e%%32e/admin` would
/// otherwise be routed under `/public` and reach `/admin`).
pub fn path(pq: &PathAndQuery, mode: PathNormalization) -> Result<Option<PathAndQuery>, Unsettled> {
    let p = pq.path();
    let (decode, merge) = match mode {
        PathNormalization::None => return Ok(None),
        PathNormalization::Base => (false, false),
        PathNormalization::MergeSlashes => (false, true),
        PathNormalization::DecodeAndMergeSlashes => (true, true),
    };
    let changes = |b: &[u8]| {
        needs_work(b)
            || merge && b.windows(2).any(|w| w == b"//")
            || decode && escaped_slash(b).is_some()
    };
    if !p.starts_with('/') || !changes(p.as_bytes()) {
        return Ok(None);
    }
    let mut out = pass(p, decode, merge);
    let mut passes = 1;
    while changes(out.as_bytes()) {
        let next = pass(&out, decode, merge);
        if next == out {
            break;
        }
        if passes == MAX_PASSES {
            return Err(Unsettled);
        }
        out = next;
        passes += 1;
    }
    if out == p {
        return Ok(None);
    }
    if let Some(q) = pq.query() {
        out.push('?');
        out.push_str(q);
    }
    // Only characters of the original path are written, so this parses; were it not to, the
    // request is refused rather than routed on a path that was not normalized.
    PathAndQuery::try_from(out).map(Some).map_err(|_| Unsettled)
}

/// One pass, in Envoy's order.
fn pass(p: &str, decode: bool, merge: bool) -> String {
    let out = if decode {
        normalize(&unescape_slashes(p))
    } else {
        normalize(p)
    };
    if merge { merge_slashes(&out) } else { out }
}

/// Whether the path changes: it has a backslash, an escaped unreserved character, or a `.`
/// or `..` segment. Exact, so that `/.well-known/x` or `/My%20Doc` are not copied for
/// nothing.
fn needs_work(p: &[u8]) -> bool {
    // One scan for the three bytes that can matter (a table lookup a byte: `memchr3` costs
    // more on paths this short); most paths have none, or only dots inside names (`/app.js`).
    let mut at_special = p
        .iter()
        .enumerate()
        .filter(|(_, b)| SPECIAL[usize::from(**b)])
        .map(|(i, _)| i);
    at_special.any(|at| match p[at] {
        b'\\' => true,
        b'%' => p
            .get(at + 1..at + 3)
            .and_then(|x| hex(x[0]).zip(hex(x[1])))
            .is_some_and(|(h, l)| is_unreserved(h * 16 + l)),
        // A dot starting a segment: a dot segment if the segment is `.` or `..`.
        _ => {
            at > 0 && p[at - 1] == b'/' && {
                let seg = p[at..].split(|&b| b == b'/').next().unwrap_or_default();
                seg == b"." || seg == b".."
            }
        }
    })
}

/// Where the first `%2F` or `%5C` (either case) starts.
fn escaped_slash(b: &[u8]) -> Option<usize> {
    b.windows(3).position(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_uppercase()),
                (b'2', b'F') | (b'5', b'C')
            )
    })
}

/// `%2F` → `/` and `%5C` → `\\` (Envoy's `unescapeSlashes`); other escapes stay.
fn unescape_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut rest = p;
    while let Some(at) = escaped_slash(rest.as_bytes()) {
        out.push_str(&rest[..at]);
        out.push(if rest.as_bytes()[at + 1] == b'2' {
            '/'
        } else {
            '\\'
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

/// Runs of slashes become one (Envoy's `mergeSlashes`).
fn merge_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// The bytes `needs_work` stops at: dot, percent sign, backslash.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'.' as usize] = true;
    t[b'%' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `p` starts with `/`.
fn normalize(p: &str) -> String {
    // Decode unreserved escapes and turn backslashes into slashes first, so that `%2e` and
    // `\` are seen as the dots and slashes they stand for.
    let b = p.as_bytes();
    let mut flat = String::with_capacity(p.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let escaped = b
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .zip(b.get(i + 2).copied().and_then(hex));
                match escaped {
                    Some((h, l)) if is_unreserved(h * 16 + l) => {
                        flat.push(char::from(h * 16 + l));
                        i += 3;
                        continue;
                    }
                    _ => flat.push('%'),
                }
            }
            b'\\' => flat.push('/'),
            _ => {
                // Copies the run up to the next byte of interest in one go (and keeps UTF-8
                // sequences whole: they never contain `%` or `\`).
                let end = b[i..]
                    .iter()
                    .position(|c| matches!(c, b'%' | b'\\'))
                    .map_or(b.len(), |n| i + n);
                flat.push_str(&p[i..end]);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    remove_dot_segments(&flat)
}

/// RFC 3986 §5.2.4 on an absolute path: segments are kept on a stack, `.` is dropped, `..`
/// drops the one before it (none above the root); a path ending in a dot segment keeps its
/// trailing slash.
fn remove_dot_segments(p: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = p[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing = false;
    for (i, s) in segments.iter().enumerate() {
        match *s {
            "." => trailing = i == last,
            ".." => {
                kept.pop();
                trailing = i == last;
            }
            _ => {
                kept.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(p.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &'static str) -> String {
        with(PathNormalization::Base, p)
    }

    fn with(mode: PathNormalization, p: &str) -> String {
        let pq = PathAndQuery::try_from(p).expect("a path");
        match path(&pq, mode).expect("settles") {
            Some(x) => x.to_string(),
            None => p.to_string(),
        }
    }

    #[test]
    fn normal_paths_are_left_alone() {
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/a//b",
            "/a.b/c.d",
            "/a/b?x=../y",
            "*",
            "/a%2Fb",
            "/.well-known/acme",
            "/My%20Doc.pdf",
            "/a/...",
            "/100%",
        ] {
            let pq = PathAndQuery::from_static(p);
            assert!(!needs_work(pq.path().as_bytes()), "{p}");
            assert_eq!(path(&pq, PathNormalization::Base), Ok(None), "{p}");
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/b/."), "/a/b/");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/..?q=1"), "/?q=1");
        assert_eq!(n("/a/.hidden/b"), "/a/.hidden/b");
        assert_eq!(n("/a/...b/"), "/a/...b/");
    }

    #[test]
    fn escaped_dots_and_backslashes_count() {
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/public/%2E./admin"), "/admin");
        assert_eq!(n("/public\\..\\admin"), "/admin");
        assert_eq!(n("/%61dmin"), "/admin");
    }

    /// Istio's own expectations for each setting (`tests/integration/pilot`
    /// `TestPathNormalization`), path in and path the backend sees.
    #[test]
    fn each_setting_does_what_istio_expects() {
        use PathNormalization::*;
        let rows: &[(&str, [&str; 4])] = &[
            // in; NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES
            ("/", ["/", "/", "/", "/"]),
            ("/app/", ["/app/", "/app/", "/app/", "/app/"]),
            (
                "/app/../admin",
                ["/app/../admin", "/admin", "/admin", "/admin"],
            ),
            ("/app", ["/app", "/app", "/app", "/app"]),
            ("/app//", ["/app//", "/app//", "/app/", "/app/"]),
            ("/app/%2f", ["/app/%2f", "/app/%2f", "/app/%2f", "/app/"]),
            ("/app%2f/", ["/app%2f/", "/app%2f/", "/app%2f/", "/app/"]),
            (
                "/xyz%30..//abc",
                [
                    "/xyz%30..//abc",
                    "/xyz0..//abc",
                    "/xyz0../abc",
                    "/xyz0../abc",
                ],
            ),
            (
                "/app/%2E./admin",
                ["/app/%2E./admin", "/admin", "/admin", "/admin"],
            ),
            (
                "/app\\admin",
                ["/app\\admin", "/app/admin", "/app/admin", "/app/admin"],
            ),
            (
                "/app/\\/\\/\\admin",
                [
                    "/app/\\/\\/\\admin",
                    "/app//////admin",
                    "/app/admin",
                    "/app/admin",
                ],
            ),
            (
                "/%2Fapp%5cadmin%5Cabc",
                [
                    "/%2Fapp%5cadmin%5Cabc",
                    "/%2Fapp%5cadmin%5Cabc",
                    "/%2Fapp%5cadmin%5Cabc",
                    "/app/admin/abc",
                ],
            ),
            (
                "/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc",
                [
                    "/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc",
                    "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
                    "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
                    "/app/admin/abc",
                ],
            ),
            (
                "/app//../admin",
                ["/app//../admin", "/app/admin", "/app/admin", "/app/admin"],
            ),
            (
                "/app//../../admin",
                ["/app//../../admin", "/admin", "/admin", "/admin"],
            ),
        ];
        for (input, want) in rows {
            for (mode, want) in [None, Base, MergeSlashes, DecodeAndMergeSlashes]
                .iter()
                .zip(want)
            {
                assert_eq!(with(*mode, input), *want, "{mode:?} {input}");
            }
        }
        // The query is never touched.
        assert_eq!(
            with(DecodeAndMergeSlashes, "//a%2Fb?x=//%2F"),
            "/a/b?x=//%2F"
        );
    }

    /// Every path of up to six bytes over the characters that matter, under each setting:
    /// normalizing ends, keeps a leading slash, leaves no dot segment (nor, where the setting
    /// says, a run of slashes or an escaped slash), and is idempotent.
    #[test]
    fn every_short_path_normalizes_to_a_fixed_point() {
        for mode in [
            PathNormalization::Base,
            PathNormalization::MergeSlashes,
            PathNormalization::DecodeAndMergeSlashes,
        ] {
            every_short_path(mode);
        }
    }

    fn every_short_path(mode: PathNormalization) {
        const ALPHABET: &[u8] = b"/.%235eEFC\\?";
        let merge = mode != PathNormalization::Base;
        let decode = mode == PathNormalization::DecodeAndMergeSlashes;
        let mut p = vec![b'/'];
        let mut count = 0;
        let mut check = |p: &[u8]| {
            let Ok(pq) = PathAndQuery::try_from(p) else {
                return;
            };
            count += 1;
            let Ok(Some(once)) = path(&pq, mode) else {
                return;
            };
            let s = once.path();
            assert!(s.starts_with('/'), "{pq} -> {once}");
            assert!(
                !s.split('/').any(|seg| seg == "." || seg == ".."),
                "{pq} -> {once}"
            );
            assert!(!merge || !s.contains("//"), "{mode:?}: {pq} -> {once}");
            assert!(
                !decode || escaped_slash(s.as_bytes()).is_none(),
                "{mode:?}: {pq} -> {once}"
            );
            assert_eq!(
                path(&once, mode),
                Ok(None),
                "{mode:?}: {pq} -> {once} is not normal"
            );
        };
        fn walk(p: &mut Vec<u8>, left: usize, f: &mut dyn FnMut(&[u8])) {
            f(p);
            if left == 0 {
                return;
            }
            for &c in ALPHABET {
                p.push(c);
                walk(p, left - 1, f);
                p.pop();
            }
        }
        walk(&mut p, 5, &mut check);
        assert!(count > 100_000, "{count}");
    }

    /// Each unreserved character escaped: one more level for a pass to undo.
    fn wrap(p: &str) -> String {
        p.bytes()
            .map(|b| {
                if is_unreserved(b) {
                    format!("%{b:02X}")
                } else {
                    char::from(b).to_string()
                }
            })
            .collect()
    }

    #[test]
    fn escapes_spelled_out_of_escapes_are_undone_to_the_end_or_refused() {
        use PathNormalization::*;
        // One pass (Envoy's) would route `/public/%2e%2e/admin` under `/public`; a backend
        // that decodes it serves `/admin`.
        assert_eq!(n("/public/%%32e%%32e/admin"), "/admin");
        assert_eq!(with(DecodeAndMergeSlashes, "/%%32Fadmin"), "/admin");
        assert_eq!(with(DecodeAndMergeSlashes, "/%2%46admin"), "/admin");
        let mut p = "/x/%2e%2e/admin".to_string();
        for _ in 0..3 {
            p = wrap(&p);
        }
        assert_eq!(with(Base, &p), "/admin", "{p}");
        let deeper = PathAndQuery::try_from(wrap(&p)).expect("a path");
        assert_eq!(path(&deeper, Base), Err(Unsettled));
        assert_eq!(path(&deeper, None), Ok(Option::None));
    }

    #[test]
    fn other_escapes_stay() {
        assert_eq!(n("/a%2Fb/../c"), "/c");
        assert_eq!(n("/a%2fb"), "/a%2fb");
        assert_eq!(n("/a%20b/./c"), "/a%20b/c");
        assert_eq!(n("/bad%zz/./x"), "/bad%zz/x");
        assert_eq!(n("/end%"), "/end%");
        assert_eq!(n("/end%4"), "/end%4");
    }
}
