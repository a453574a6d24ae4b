//! Header handling as Envoy does at an edge gateway: hop-by-hop headers dropped,
//! `x-forwarded-for`/`-proto` and `x-request-id`, and the VirtualService header operations.

use std::net::IpAddr;
use std::sync::LazyLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::RngCore;
use tenants::model::HeaderOp;

use super::vars::{self, Vars};

/// Headers that only concern one hop. `HeaderName`s rather than strings: a lookup by `&str`
/// parses and validates the name on every call, and this runs twice per request.
const HOP_COUNT: usize = 8;
const HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Set on every response from an upstream: milliseconds from sending the request to its
/// response head, as Envoy's router sets it (before the route's response header operations,
/// which may remove it).
pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// Which of [`HOP`] `name` is. A `match` on the name's text compiles to a switch on its
/// length and one comparison, where comparing against each `HeaderName` in turn costs eight.
fn hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "transfer-encoding" => 3,
        "te" => 4,
        "trailer" => 5,
        "upgrade" => 6,
        "proxy-authenticate" => 7,
        _ => return None,
    })
}

/// Whether a `content-type` is gRPC's (`application/grpc`, `+proto` and the like), as Envoy's
/// `hasGrpcContentType` reads it: gRPC-Web (`application/grpc-web…`) is not.
pub fn is_grpc(content_type: &[u8]) -> bool {
    content_type
        .strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || matches!(rest[0], b'+' | b';'))
}

/// Whether Envoy, at an edge with `use_remote_address` as Istio's gateways run, takes a client
/// at `ip` for internal: loopback, RFC 1918 and IPv6 unique-local addresses (Envoy's classic
/// `internal_address_config`).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unique_local()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    }
}

/// Removes the `x-envoy-*` headers of an external client's request, as Envoy sanitises
/// them: they steer the Envoys behind the gateway (retries, timeouts, forced traces), which
/// only the mesh may do.
pub fn strip_envoy(h: &mut HeaderMap) {
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

/// A gRPC client's deadline for its call.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A `grpc-timeout` value (`<1-8 digits><H|M|S|m|u|n>`), as Envoy's `getGrpcTimeout` reads
/// it: sub-millisecond units round up to the next millisecond; anything else is no timeout.
pub fn grpc_timeout(v: &[u8]) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let ceil_ms = |nanos: u64| Duration::from_millis(nanos.div_ceil(1_000_000));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => ceil_ms(n * 1_000),
        b'n' => ceil_ms(n),
        _ => return None,
    })
}

/// `grpc-timeout` for `ms` milliseconds, in the finest unit its eight digits hold.
pub fn grpc_timeout_value(ms: u64) -> HeaderValue {
    const MAX: u64 = 99_999_999;
    let s = if ms <= MAX {
        format!("{ms}m")
    } else if ms / 1000 <= MAX {
        format!("{}S", ms.div_ceil(1000).min(MAX))
    } else {
        format!("{}H", ms.div_ceil(3_600_000).min(MAX))
    };
    HeaderValue::try_from(s).unwrap_or(HeaderValue::from_static("99999999H"))
}

/// Set on a 503 a circuit breaker answered.
pub const X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");

/// The settings header of an h2c upgrade request.
pub const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// What an HTTP/1.1 request's `Upgrade` header asks for. Istio's gateways configure
/// websocket upgrades only: Envoy strips an h2c one and refuses any other with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// No upgrade (or not HTTP/1.1).
    None,
    /// `websocket`.
    Websocket,
    /// `h2c`: served as a plain HTTP/1.1 request.
    H2c,
    /// Any other protocol.
    Other,
}

impl Upgrade {
    /// What a request asks for: an upgrade only with both `Upgrade` and a `Connection` that
    /// lists `upgrade` (Envoy's `isUpgrade`); a bare `Upgrade` is a hop-by-hop header to drop.
    pub fn of_request(h: &HeaderMap) -> Self {
        let Some(v) = h.get(header::UPGRADE) else {
            return Self::None;
        };
        let listed = h
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|c| c.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        if listed {
            Self::of(v.as_bytes())
        } else {
            Self::None
        }
    }

    /// Reads an `Upgrade` value.
    pub fn of(v: &[u8]) -> Self {
        if super::h1::is_h2c(v) {
            Self::H2c
        } else if v.trim_ascii().eq_ignore_ascii_case(b"websocket") {
            Self::Websocket
        } else {
            Self::Other
        }
    }
}

/// Removes hop-by-hop headers, including those `Connection` lists. With `keep_upgrade`, the
/// `Connection: upgrade` / `Upgrade` pair survives (websockets).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) names present instead of a hashed lookup per hop-by-hop
    // name: most requests and responses carry none of them.
    let mut present = [false; HOP_COUNT];
    let mut any = false;
    for k in h.keys() {
        if let Some(i) = hop_index(k) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        if keep_upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    if present[0] {
        let listed: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual tokens: `close` names no header, and the others are in `HOP` anyway.
            .filter(|t| {
                !["close", "keep-alive", "upgrade"]
                    .iter()
                    .any(|c| t.eq_ignore_ascii_case(c))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in listed {
            if keep_upgrade && n == header::UPGRADE {
                continue;
            }
            h.remove(&n);
        }
    }
    for (n, _) in HOP.iter().zip(present).filter(|(_, p)| *p) {
        if keep_upgrade && (n == header::UPGRADE || n == header::CONNECTION) {
            continue;
        }
        // `te: trailers` is the one TE value that may cross (gRPC needs it).
        if n == header::TE
            && h.get(header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            continue;
        }
        h.remove(n);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Appends the client address to `x-forwarded-for`, sets `x-forwarded-proto`, replaces any
/// `x-forwarded-client-cert` with the connection's own (`client_cert`, or none: a client
/// cannot vouch for itself), and makes sure `x-request-id` is set (returned for the access
/// log). Each name is hashed once (`entry`), not once to look and again to store.
pub fn forwarded<'h>(
    h: &'h mut HeaderMap,
    client: &HeaderValue,
    scheme: &str,
    client_cert: Option<&HeaderValue>,
) -> &'h HeaderValue {
    use http::header::Entry;
    match client_cert {
        Some(v) => {
            h.insert(super::xfcc::XFCC, v.clone());
        }
        None => {
            h.remove(super::xfcc::XFCC);
        }
    }
    match h.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut e) => {
            let prev = e.get().as_bytes().trim_ascii();
            let v = if prev.is_empty() {
                Some(client.clone())
            } else {
                let mut v = Vec::with_capacity(prev.len() + 2 + client.len());
                v.extend_from_slice(prev);
                v.extend_from_slice(b", ");
                v.extend_from_slice(client.as_bytes());
                HeaderValue::from_bytes(&v).ok()
            };
            if let Some(v) = v {
                e.insert(v);
            }
        }
        Entry::Vacant(e) => {
            e.insert(client.clone());
        }
    }
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    // Borrowed: only a request that is logged keeps a handle on it.
    match h.entry(X_REQUEST_ID) {
        Entry::Occupied(mut e) => {
            if e.get().is_empty() {
                e.insert(request_id());
            }
            e.into_mut()
        }
        Entry::Vacant(e) => e.insert(request_id()),
    }
}

/// A client address as `x-forwarded-for` carries it (IPv4-mapped IPv6 as IPv4).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A random UUIDv4, as Envoy generates for `x-request-id`.
pub fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each byte's two digits go in `8-4-4-4-12`: a fixed table, so the loop has no
    // branch for the dashes.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = [b'-'; 36];
    for (&x, &at) in b.iter().zip(&AT) {
        s[at] = HEX[usize::from(x >> 4)];
        s[at + 1] = HEX[usize::from(x & 0x0f)];
    }
    HeaderValue::from_bytes(&s)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

/// A count of milliseconds as a header value. Values under 256 (nearly every upstream service
/// time) are made once and shared: formatting one allocates twice, on every response.
pub fn millis_value(ms: u64) -> HeaderValue {
    static SMALL: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
        (0..256u64)
            .map(|n| HeaderValue::from_static(Box::leak(n.to_string().into_boxed_str())))
            .collect()
    });
    usize::try_from(ms)
        .ok()
        .and_then(|i| SMALL.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(ms))
}

/// Where `%REQ(..)%` reads from when header operations are applied.
#[derive(Clone, Copy)]
pub enum ReqHeaders<'a> {
    /// The map being changed: the request's own headers.
    Changed,
    /// The request's headers, beside the response's being changed.
    Of(&'a HeaderMap),
    /// None at hand.
    Unknown,
}

/// Applies set/add/remove, with Envoy's variables filled in (`%REQ(..)%` from `req`).
/// Returns an authority override (`set`/`add` of `:authority` or `host`), which the caller
/// applies to the request target. A value that comes out empty adds no header (and sets no
/// authority), as in Envoy.
pub fn apply(
    h: &mut HeaderMap,
    op: &HeaderOp,
    vars: &Vars<'_>,
    req: ReqHeaders<'_>,
) -> Option<String> {
    let mut authority = None;
    for (set, list) in [(true, &op.set), (false, &op.add)] {
        for (k, v) in list {
            let from = match req {
                ReqHeaders::Changed => Some(&*h),
                ReqHeaders::Of(r) => Some(r),
                ReqHeaders::Unknown => None,
            };
            let val = vars::render(v, vars, from);
            if val.is_empty() {
                continue;
            }
            if k == ":authority" || k == "host" {
                authority = Some(val.into_owned());
                continue;
            }
            if let (Ok(n), Ok(val)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&val),
            ) {
                if set {
                    h.insert(n, val);
                } else {
                    h.append(n, val);
                }
            }
        }
    }
    for k in &op.remove {
        h.remove(k.as_str());
    }
    authority
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_clients_and_the_envoy_headers_of_external_ones() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip(internal)), "{internal}");
        }
        for external in [
            "8.8.8.8",
            "172.32.0.1",
            "198.51.100.7",
            "2001:db8::1",
            "fe80::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip(external)), "{external}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-envoy-retry-on", HeaderValue::from_static("5xx"));
        h.insert(
            "x-envoy-upstream-rq-timeout-ms",
            HeaderValue::from_static("1"),
        );
        h.append("x-envoy-force-trace", HeaderValue::from_static("1"));
        h.insert("x-envoyish", HeaderValue::from_static("kept"));
        h.insert("host", HeaderValue::from_static("a"));
        strip_envoy(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-envoyish"]);
    }

    #[test]
    fn grpc_timeout_values_read_as_envoy_reads_them() {
        use std::time::Duration;
        let ms = Duration::from_millis;
        assert_eq!(grpc_timeout(b"100m"), Some(ms(100)));
        assert_eq!(grpc_timeout(b"2S"), Some(ms(2000)));
        assert_eq!(grpc_timeout(b"1M"), Some(ms(60_000)));
        assert_eq!(grpc_timeout(b"1H"), Some(ms(3_600_000)));
        assert_eq!(grpc_timeout(b"1500u"), Some(ms(2)));
        assert_eq!(grpc_timeout(b"1n"), Some(ms(1)));
        assert_eq!(grpc_timeout(b"0m"), Some(ms(0)));
        assert_eq!(
            grpc_timeout(b"99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        for bad in [
            &b""[..],
            b"m",
            b"100",
            b"100x",
            b"123456789m",
            b"-1m",
            b"1.5S",
            b" 1S",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn shared_millisecond_values_read_as_formatted_ones() {
        for ms in [0, 7, 99, 255, 256, 12_345, u64::MAX] {
            assert_eq!(millis_value(ms), HeaderValue::from(ms), "{ms}");
        }
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let mut seen = std::collections::HashSet::new();
        // Per position, which characters came up: every random digit must vary.
        let mut chars = vec![std::collections::HashSet::new(); 36];
        for _ in 0..1000 {
            let a = request_id();
            let s = a.to_str().expect("ascii").to_string();
            let parts: Vec<&str> = s.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
            assert!(parts[2].starts_with('4'), "{s}");
            assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{s}");
            for (i, c) in s.chars().enumerate() {
                chars[i].insert(c);
            }
            assert!(seen.insert(s));
        }
        for (i, c) in chars.iter().enumerate() {
            let want = match i {
                8 | 13 | 18 | 23 | 14 => 1,
                19 => 4,
                _ => 16,
            };
            assert_eq!(c.len(), want, "position {i}: {c:?}");
        }
    }

    #[test]
    fn forwarded_appends_and_keeps_an_existing_request_id() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        let id = forwarded(
            &mut h,
            &ip_value("::ffff:127.0.0.9".parse().expect("ip")),
            "https",
            None,
        )
        .clone();
        assert_eq!(id, "abc");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");

        let mut h = HeaderMap::new();
        let id = forwarded(&mut h, &ip_value("::1".parse().expect("ip")), "http", None).clone();
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-request-id"], id);
    }

    #[test]
    fn grpc_content_types_but_not_grpc_web() {
        for (ct, grpc) in [
            (&b"application/grpc"[..], true),
            (b"application/grpc+proto", true),
            (b"application/grpc;charset=utf-8", true),
            (b"application/grpc-web", false),
            (b"application/grpc-web-text+proto", false),
            (b"application/grpcx", false),
            (b"application/json", false),
        ] {
            assert_eq!(is_grpc(ct), grpc, "{}", String::from_utf8_lossy(ct));
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_but_te_trailers_and_upgrades_survive() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("accept", "*/*"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "te"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(!h.contains_key(header::TE));
    }
}
