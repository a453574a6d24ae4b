//! CORS as Envoy's filter does it for an Istio `corsPolicy`.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use tenants::model::CorsPolicy;

use super::body::{self, Body};

/// The request's `Origin`, when the policy allows it. A matcher that matches the literal `*`
/// (`exact: "*"`, or the deprecated `allowOrigin: ["*"]`) allows every origin, as in Envoy's
/// `CorsFilter::isOriginAllowed`; the answer still names the request's origin.
pub fn allowed_origin<'a>(p: &CorsPolicy, h: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = h.get(header::ORIGIN)?;
    let s = origin.to_str().ok()?;
    p.allow_origins
        .iter()
        .any(|m| m.matches("*", false) || m.matches(s, false))
        .then_some(origin)
}

/// Whether the request is a CORS preflight.
pub fn is_preflight(method: &Method, h: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && h.contains_key(header::ORIGIN)
        && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: with the origin when the policy allows it, without (so the
/// browser refuses the request) when it does not and the policy keeps such preflights from
/// the backend.
pub fn preflight(p: &CorsPolicy, origin: Option<&HeaderValue>) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
    }
    let join = |v: &[String]| HeaderValue::from_str(&v.join(",")).ok();
    if let Some(v) = join(&p.allow_methods).filter(|v| !v.is_empty()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = join(&p.allow_headers).filter(|v| !v.is_empty()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(age) = p.max_age
        && let Ok(v) = HeaderValue::from_str(&age.as_secs().to_string())
    {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, v);
    }
    if p.allow_credentials == Some(true) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
    r
}

/// Adds CORS headers to an actual (non-preflight) response.
pub fn decorate(p: &CorsPolicy, origin: &HeaderValue, h: &mut HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if !p.expose_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&p.expose_headers.join(","))
    {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    if p.allow_credentials == Some(true) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}
