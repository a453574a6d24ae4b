//! Requests that arrived in TLS early data (QUIC 0-RTT, `appliance.http3.earlyData`). Early
//! data can be replayed by anyone who captured it, so only idempotent methods are served from
//! it; the rest get `425 Too Early` (RFC 8470) and the client retries after the handshake.

use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::body::Body;
use super::errors::local;

/// Marks a request (an extension) received before the handshake completed.
#[derive(Debug, Clone, Copy)]
pub struct EarlyData;

/// Whether the method may be repeated without changing the outcome (RFC 9110 §9.2.2).
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `req` came in early data with a method a replay could harm.
pub fn refused<B>(req: &Request<B>) -> bool {
    req.extensions().get::<EarlyData>().is_some() && !idempotent(req.method())
}

/// Marks an early request for the upstream (`Early-Data: 1`, RFC 8470 §5.1), so it can
/// refuse too.
pub fn mark<B>(req: &mut Request<B>) {
    req.extensions_mut().insert(EarlyData);
    req.headers_mut()
        .insert("early-data", HeaderValue::from_static("1"));
}

/// The answer to a refused early request.
pub fn too_early() -> Response<Body> {
    local(
        StatusCode::TOO_EARLY,
        "too early: retry after the handshake".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_idempotent_early_requests_are_refused() {
        let mut post = Request::post("/").body(()).expect("request");
        let mut get = Request::get("/").body(()).expect("request");
        assert!(!refused(&post) && !refused(&get));
        mark(&mut post);
        mark(&mut get);
        assert!(refused(&post));
        assert!(!refused(&get));
        assert_eq!(get.headers()["early-data"], "1");
        assert_eq!(too_early().status(), StatusCode::TOO_EARLY);
    }
}
