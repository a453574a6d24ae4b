//! Route choice as a pure function of (snapshot, request): what the data plane does, and
//! what the tests check without sockets.

use http::HeaderMap;

use crate::model::HttpMatch;
use crate::snapshot::{
    Listener, ListenerKind, Route, RouteAction, RouteTable, VirtualHost, WeightedCluster,
};
use crate::types::StringMatch;

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `:authority` / Host, port included if sent.
    pub authority: &'a str,
    /// `:path` with the query string.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// What routing decided.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'s> {
    /// A route matched.
    Route(&'s VirtualHost, &'s Route),
    /// The virtual host requires TLS: answer 301 to https.
    HttpsRedirect(&'s VirtualHost),
    /// No virtual host (404), or no route in it (404, Envoy flag NR).
    NotFound(Option<&'s VirtualHost>),
}

impl Decision<'_> {
    /// The HTTP status the gateway answers itself with, if any (404 or 301).
    pub fn local_status(&self) -> Option<u16> {
        match self {
            Self::Route(_, r) => match &r.body.action {
                RouteAction::Redirect(rd) => Some(rd.code),
                RouteAction::Direct { status, .. } => Some(*status),
                RouteAction::Forward(_) => None,
            },
            Self::HttpsRedirect(_) => Some(301),
            Self::NotFound(_) => Some(404),
        }
    }
}

/// Chooses the virtual host and route for a request.
pub fn find<'s>(table: &'s RouteTable, req: &RequestView<'_>) -> Decision<'s> {
    let Some(vh) = table.vhost(req.authority) else {
        return Decision::NotFound(None);
    };
    if vh.require_tls && req.scheme != "https" {
        return Decision::HttpsRedirect(vh);
    }
    match vh
        .routes
        .iter()
        .find(|r| r.matcher.as_ref().is_none_or(|m| matches(m, req)))
    {
        Some(r) => Decision::Route(vh, r),
        None => Decision::NotFound(Some(vh)),
    }
}

/// Chooses on a listener: the route table by SNI for TLS listeners, then the route.
pub fn find_on<'s>(
    listener: &'s Listener,
    sni: Option<&str>,
    req: &RequestView<'_>,
) -> Option<Decision<'s>> {
    match &listener.kind {
        ListenerKind::Http(t) => Some(find(t, req)),
        ListenerKind::Tls(_) => match &listener.chain(sni)?.action {
            crate::snapshot::ChainAction::TerminateHttp { routes, .. } => Some(find(routes, req)),
            _ => None,
        },
        ListenerKind::Tcp(_) => None,
    }
}

/// Whether one match block accepts the request (every condition holds).
pub fn matches(m: &HttpMatch, req: &RequestView<'_>) -> bool {
    let path_only = req.path.split_once('?').map_or(req.path, |(p, _)| p);
    if let Some(u) = &m.uri {
        // Envoy's prefix compares the raw :path; exact and regex compare the path alone.
        let subject = if matches!(u, StringMatch::Prefix(_)) {
            req.path
        } else {
            path_only
        };
        if !u.matches(subject, m.ignore_uri_case) {
            return false;
        }
    }
    if m.scheme
        .as_ref()
        .is_some_and(|s| !s.matches(req.scheme, false))
        || m.method
            .as_ref()
            .is_some_and(|s| !s.matches(req.method, false))
        || m.authority
            .as_ref()
            .is_some_and(|s| !s.matches(req.authority, false))
    {
        return false;
    }
    for (name, sm) in &m.headers {
        match header(req, name) {
            Some(v) if sm.matches(&v, false) => {}
            _ => return false,
        }
    }
    for (name, sm) in &m.without_headers {
        if header(req, name).is_some_and(|v| sm.matches(&v, false)) {
            return false;
        }
    }
    if !m.query_params.is_empty() {
        let query = req.path.split_once('?').map_or("", |(_, q)| q);
        for (name, sm) in &m.query_params {
            let v = query
                .split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then_some(v)
                })
                .next();
            match v {
                Some(v) if sm.matches(v, false) => {}
                _ => return false,
            }
        }
    }
    true
}

fn header(req: &RequestView<'_>, name: &str) -> Option<String> {
    match name {
        ":method" => return Some(req.method.to_string()),
        ":scheme" => return Some(req.scheme.to_string()),
        ":authority" | "host" => return Some(req.authority.to_string()),
        ":path" => return Some(req.path.to_string()),
        _ => {}
    }
    let mut values = req.headers.get_all(name).iter();
    let first = values.next()?;
    let mut s = String::from_utf8_lossy(first.as_bytes()).into_owned();
    // Envoy matches several values of one header joined with commas.
    for v in values {
        s.push(',');
        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(s)
}

/// Picks a weighted cluster: `r` is uniform in `0..total weight`.
pub fn pick(clusters: &[WeightedCluster], r: u64) -> Option<&WeightedCluster> {
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return clusters.first();
    }
    let mut r = r % total;
    for c in clusters {
        let w = u64::from(c.weight);
        if r < w {
            return Some(c);
        }
        r -= w;
    }
    clusters.last()
}
