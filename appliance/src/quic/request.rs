//! One HTTP/3 request: headers from h3, the body as a stream, the shared service
//! (`http::service::handle`, the same as for HTTP/1.1 and HTTP/2), the response back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use h3::error::Code;
use h3::server::RequestResolver;
use http::Response;
use http_body_util::BodyExt;

use super::body::H3Body;
use crate::http::early;
use crate::http::service::{ConnInfo, handle};

/// Serves the request `resolver` brings. `confirmed` turns true when the handshake is done;
/// a request seen before is early data (0-RTT).
pub(super) async fn serve(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    info: Arc<ConnInfo>,
    confirmed: Arc<AtomicBool>,
) {
    let (req, stream) = match resolver.resolve_request().await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(peer = %info.peer, error = %e, "HTTP/3 request refused");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = H3Body::new(recv, declared).await;
    let mut req = req.map(|()| crate::http::body::boxed(body));
    if !confirmed.load(Ordering::Acquire) {
        early::mark(&mut req);
    }
    let Ok(resp) = handle(&mut req, info).await;
    let (parts, mut body) = resp.into_parts();
    if send
        .send_response(Response::from_parts(parts, ()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(frame) = body.frame().await {
        let sent = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) if d.is_empty() => Ok(()),
                Ok(d) => send.send_data(d).await,
                Err(f) => match f.into_trailers() {
                    Ok(t) => send.send_trailers(t).await,
                    Err(_) => Ok(()),
                },
            },
            Err(_) => {
                // The upstream response broke off: so does ours (the client must not take a
                // truncated body for a whole one).
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = send.finish().await;
}
