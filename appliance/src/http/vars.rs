//! Envoy's variables in header values (`%DOWNSTREAM_REMOTE_ADDRESS%`, `%REQ(x-id)%`, …):
//! Istio passes VirtualService header values to Envoy as written, and Envoy fills these in.
//! The names gatehouse knows are [`tenants::model::HEADER_VARIABLES`]; the compiler warns
//! about any other. As in Envoy, a header whose value comes out empty is not added.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Instant, SystemTime};

use http::HeaderMap;

/// What the variables of one request read.
pub struct Vars<'a> {
    /// The client.
    pub peer: SocketAddr,
    /// The connection's local address.
    pub local: SocketAddr,
    /// The TLS server name the client asked for.
    pub sni: Option<&'a str>,
    /// The downstream protocol (`HTTP/1.1`).
    pub protocol: &'static str,
    /// When the request started (`START_TIME`, on the response too).
    pub started: Instant,
}

/// The machine's host name, read once.
static HOSTNAME: LazyLock<String> = LazyLock::new(|| {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
});

/// `v` with `%%` unescaped and each variable filled in, `%REQ(..)%` from `request` (the
/// request's headers). Borrowed when there is nothing to do (a
/// plain value, the common case: no allocation).
pub fn render<'v>(v: &'v str, vars: &Vars<'_>, request: Option<&HeaderMap>) -> Cow<'v, str> {
    if !v.contains('%') {
        return Cow::Borrowed(v);
    }
    Cow::Owned(fill(v, vars, request))
}

/// [`render`] of a value with a `%` in it: out of line, as few values have one.
#[cold]
#[inline(never)]
fn fill(v: &str, vars: &Vars<'_>, request: Option<&HeaderMap>) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
            continue;
        }
        let Some(end) = after.find('%') else {
            // Unterminated (the compiler refuses these): kept as written.
            out.push_str(&rest[i..]);
            return out;
        };
        variable(&after[..end], vars, request, &mut out);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Appends the value of `var` (between its `%`s); nothing for an unknown one or one without
/// a value here.
fn variable(var: &str, vars: &Vars<'_>, request: Option<&HeaderMap>, out: &mut String) {
    use std::fmt::Write;
    let _ = match var {
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
            write!(out, "{}", vars.peer)
        }
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
        | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            write!(out, "{}", vars.peer.ip())
        }
        "DOWNSTREAM_REMOTE_PORT" | "DOWNSTREAM_DIRECT_REMOTE_PORT" => {
            write!(out, "{}", vars.peer.port())
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => write!(out, "{}", vars.local),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => write!(out, "{}", vars.local.ip()),
        "DOWNSTREAM_LOCAL_PORT" => write!(out, "{}", vars.local.port()),
        "REQUESTED_SERVER_NAME" => {
            out.push_str(vars.sni.unwrap_or_default());
            Ok(())
        }
        "HOSTNAME" => {
            out.push_str(&HOSTNAME);
            Ok(())
        }
        "PROTOCOL" => {
            out.push_str(vars.protocol);
            Ok(())
        }
        "START_TIME" => {
            // Checked: a wall clock set near the epoch must not panic a request.
            let now = SystemTime::now();
            let start = now.checked_sub(vars.started.elapsed()).unwrap_or(now);
            out.push_str(&crate::telemetry::entry::rfc3339_millis(start));
            Ok(())
        }
        _ => {
            // `REQ(name)`, `REQ(name?fallback)`, either with `:N` (at most N characters).
            if let Some((names, rest)) = var.strip_prefix("REQ(").and_then(|r| r.split_once(')')) {
                let max = rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok());
                request_header(names, request, max, out);
            }
            Ok(())
        }
    };
}

/// `REQ(name)` or `REQ(name?fallback)`: the first value of the request header, cut to `max`
/// characters.
fn request_header(names: &str, request: Option<&HeaderMap>, max: Option<usize>, out: &mut String) {
    let Some(h) = request else {
        return;
    };
    let value = names
        .split('?')
        .find_map(|n| h.get(n.trim().to_ascii_lowercase().as_str()))
        .and_then(|v| v.to_str().ok());
    if let Some(v) = value {
        match max {
            Some(n) => out.extend(v.chars().take(n)),
            None => out.push_str(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            peer: "10.1.2.3:4567".parse().expect("addr"),
            local: "127.0.0.1:8080".parse().expect("addr"),
            sni: Some("web.example.com"),
            protocol: "HTTP/2",
            started: Instant::now(),
        }
    }

    #[test]
    fn fills_in_every_variable_the_compiler_accepts() {
        let mut h = HeaderMap::new();
        h.insert("x-id", http::HeaderValue::from_static("abc"));
        for name in tenants::model::HEADER_VARIABLES {
            let var = if *name == "REQ" {
                "%REQ(x-id)%".to_string()
            } else {
                format!("%{name}%")
            };
            assert!(!render(&var, &vars(), Some(&h)).is_empty(), "{name}");
        }
    }

    #[test]
    fn values() {
        let mut h = HeaderMap::new();
        h.insert("x-b", http::HeaderValue::from_static("bee"));
        let v = vars();
        let cases = [
            ("plain", "plain"),
            ("100%% sure", "100% sure"),
            ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.1.2.3:4567"),
            (
                "ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%;",
                "ip=10.1.2.3;",
            ),
            ("%DOWNSTREAM_LOCAL_PORT%/%PROTOCOL%", "8080/HTTP/2"),
            ("%REQUESTED_SERVER_NAME%", "web.example.com"),
            ("%REQ(X-A?x-b)%", "bee"),
            ("%REQ(x-b):2%", "be"),
            ("%REQ(x-missing)%", ""),
            ("%NOT_A_VARIABLE%x", "x"),
        ];
        for (input, want) in cases {
            assert_eq!(render(input, &v, Some(&h)), want, "{input}");
        }
        assert!(matches!(render("plain", &v, Some(&h)), Cow::Borrowed(_)));
        assert_eq!(
            render("%REQ(x-b)%", &v, None),
            "",
            "no request headers given"
        );
    }
}
