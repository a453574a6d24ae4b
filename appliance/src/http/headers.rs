//! Header handling as Envoy does at an edge gateway: hop-by-hop headers dropped,
//! `x-forwarded-for`/`-proto` and `x-request-id`, and the VirtualService header operations.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::RngCore;
use tenants::model::HeaderOp;

/// Headers that only concern one hop.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// Removes hop-by-hop headers, including those `Connection` lists. With `keep_upgrade`, the
/// `Connection: upgrade` / `Upgrade` pair survives (websockets).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        if keep_upgrade && n == header::UPGRADE {
            continue;
        }
        h.remove(&n);
    }
    for n in HOP {
        if keep_upgrade && (*n == "upgrade" || *n == "connection") {
            continue;
        }
        // `te: trailers` is the one TE value that may cross (gRPC needs it).
        if *n == "te"
            && h.get(header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            continue;
        }
        h.remove(*n);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Appends the client address to `x-forwarded-for`, sets `x-forwarded-proto`, and makes sure
/// `x-request-id` is set (returned for the access log).
pub fn forwarded(h: &mut HeaderMap, client: IpAddr, scheme: &str) -> HeaderValue {
    let client = client.to_canonical().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {client}"),
        _ => client,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    match h.get("x-request-id") {
        Some(v) if !v.is_empty() => v.clone(),
        _ => {
            let id = request_id();
            h.insert("x-request-id", id.clone());
            id
        }
    }
}

/// A random UUIDv4, as Envoy generates for `x-request-id`.
pub fn request_id() -> HeaderValue {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    let s = format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    );
    HeaderValue::from_str(&s)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

/// Applies set/add/remove. Returns an authority override (`set`/`add` of `:authority` or
/// `host`), which the caller applies to the request target.
pub fn apply(h: &mut HeaderMap, op: &HeaderOp) -> Option<String> {
    let mut authority = None;
    for (k, v) in &op.set {
        if k == ":authority" || k == "host" {
            authority = Some(v.clone());
            continue;
        }
        if let (Ok(n), Ok(val)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&unescape(v)),
        ) {
            h.insert(n, val);
        }
    }
    for (k, v) in &op.add {
        if k == ":authority" || k == "host" {
            authority = Some(v.clone());
            continue;
        }
        if let (Ok(n), Ok(val)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&unescape(v)),
        ) {
            h.append(n, val);
        }
    }
    for k in &op.remove {
        h.remove(k.as_str());
    }
    authority
}

/// Istio header values escape `%` as `%%`; `%VAR%` expressions are Envoy's and are passed
/// through as written.
fn unescape(v: &str) -> String {
    v.replace("%%", "%")
}
