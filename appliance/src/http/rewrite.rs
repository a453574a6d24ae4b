//! Path and authority rewrites, and redirect `Location`s, with Envoy's semantics.

use tenants::model::{HttpMatch, Redirect, RedirectPort, Rewrite};
use tenants::types::StringMatch;

/// Envoy `prefix_rewrite` / `regex_rewrite`: a prefix match swaps the matched prefix; an
/// exact or regex match replaces the whole path, keeping the query string. A rule without a
/// `uri` match is Envoy's `prefix: /` to Istio (`TranslateRouteMatch`), so its leading `/`
/// is what is swapped: `/a/b` under `uri: /v2/` becomes `/v2/a/b`.
pub fn path(path_and_query: &str, m: Option<&HttpMatch>, rw: &Rewrite) -> String {
    let (p, q) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let with_query = |np: String| match q {
        Some(q) => format!("{np}?{q}"),
        None => np,
    };
    if let Some((re, with)) = &rw.uri_regex {
        return with_query(re.0.replace_all(p, with.as_str()).into_owned());
    }
    let Some(new) = &rw.uri else {
        return path_and_query.to_string();
    };
    match m.and_then(|m| m.uri.as_ref()) {
        Some(StringMatch::Prefix(pre)) => {
            let rest = if m.is_some_and(|m| m.ignore_uri_case) && p.len() >= pre.len() {
                &p[pre.len()..]
            } else {
                p.strip_prefix(pre.as_str()).unwrap_or(p)
            };
            with_query(format!("{new}{rest}"))
        }
        Some(_) => with_query(new.clone()),
        None => with_query(format!("{new}{}", p.strip_prefix('/').unwrap_or(p))),
    }
}

/// The `Location` of a redirect for a request to `scheme://authority/path`.
pub fn location(
    rd: &Redirect,
    m: Option<&HttpMatch>,
    scheme: &str,
    authority: &str,
    path_and_query: &str,
    listener_port: u16,
) -> String {
    let scheme_out = rd.scheme.as_deref().unwrap_or(scheme);
    let (host_in, port_in) = split_authority(authority);
    let host = rd
        .authority
        .as_deref()
        .map_or_else(|| host_in.to_string(), |a| split_authority(a).0.to_string());
    let port: Option<u16> = match rd.port {
        RedirectPort::Fixed(p) => Some(p),
        RedirectPort::FromProtocolDefault => None,
        RedirectPort::FromRequestPort => Some(port_in.unwrap_or(listener_port)),
        RedirectPort::Keep => {
            if rd.scheme.is_some() && rd.scheme.as_deref() != Some(scheme) {
                None
            } else {
                rd.authority
                    .as_deref()
                    .and_then(|a| split_authority(a).1)
                    .or(port_in)
            }
        }
    };
    let port = port
        .filter(|p| !((scheme_out == "http" && *p == 80) || (scheme_out == "https" && *p == 443)));
    let new_path = if let Some(u) = &rd.uri {
        u.clone()
    } else if let Some(pre) = &rd.prefix_rewrite {
        path(
            path_and_query,
            m,
            &Rewrite {
                uri: Some(pre.clone()),
                authority: None,
                uri_regex: None,
            },
        )
    } else {
        path_and_query.to_string()
    };
    match port {
        Some(p) => format!("{scheme_out}://{host}:{p}{new_path}"),
        None => format!("{scheme_out}://{host}{new_path}"),
    }
}

/// `host[:port]` → (host, port).
pub fn split_authority(a: &str) -> (&str, Option<u16>) {
    if a.starts_with('[')
        && let Some(end) = a.find(']')
    {
        let port = a[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
        return (&a[..=end], port);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(n) => (h, Some(n)),
            Err(_) => (a, None),
        },
        _ => (a, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> HttpMatch {
        HttpMatch {
            uri: Some(StringMatch::Prefix(p.into())),
            ..HttpMatch::default()
        }
    }

    fn exact(p: &str) -> HttpMatch {
        HttpMatch {
            uri: Some(StringMatch::Exact(p.into())),
            ..HttpMatch::default()
        }
    }

    fn rw(uri: &str) -> Rewrite {
        Rewrite {
            uri: Some(uri.into()),
            authority: None,
            uri_regex: None,
        }
    }

    #[test]
    fn prefix_rewrite_swaps_the_matched_prefix() {
        assert_eq!(
            path("/api/v1/x?a=1", Some(&prefix("/api")), &rw("/backend")),
            "/backend/v1/x?a=1"
        );
        // Istio's documented trailing-slash trap.
        assert_eq!(path("/foo/bar", Some(&prefix("/foo")), &rw("/")), "//bar");
        assert_eq!(
            path("/exact", Some(&exact("/exact")), &rw("/other")),
            "/other"
        );
        // No uri match is Envoy's `prefix: /`: only the leading slash is swapped.
        assert_eq!(path("/a/b?q", None, &rw("/v2/")), "/v2/a/b?q");
        assert_eq!(path("/exact", None, &rw("/other")), "/otherexact");
    }

    #[test]
    fn redirect_locations() {
        let rd = Redirect {
            uri: None,
            prefix_rewrite: None,
            authority: None,
            port: RedirectPort::Keep,
            scheme: Some("https".into()),
            code: 301,
        };
        assert_eq!(
            location(&rd, None, "http", "web.example.com:80", "/a?b", 80),
            "https://web.example.com/a?b"
        );
        assert_eq!(
            location(&rd, None, "http", "web.example.com:8080", "/a", 8080),
            "https://web.example.com/a"
        );
        let rd = Redirect {
            uri: Some("/new".into()),
            authority: Some("other.example.com".into()),
            port: RedirectPort::FromRequestPort,
            scheme: None,
            ..rd
        };
        assert_eq!(
            location(&rd, None, "http", "web.example.com:18080", "/a", 80),
            "http://other.example.com:18080/new"
        );
    }
}
