//! The agent's HTTP endpoint: `POST /hook` (also `/hooks/<anything>`, for per-repository
//! paths) triggers a fetch, `GET /status` is the status document, `GET /healthz` answers ok.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::agent::Trigger;
use crate::config::HttpSettings;
use crate::status::Status;
use crate::webhook::{self, HookError, RateLimit};

/// What the handlers share.
pub struct Shared {
    /// Settings.
    pub settings: HttpSettings,
    /// The status the loop keeps.
    pub status: Arc<Mutex<Status>>,
    /// Wakes the loop.
    pub trigger: Arc<Trigger>,
    /// Deliveries budget.
    pub limit: Mutex<RateLimit>,
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn message(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        serde_json::json!({ "ok": status.is_success(), "message": msg }).to_string() + "\n",
    )
}

async fn hook(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let max = shared.settings.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let provider =
        match webhook::authenticate(&parts.headers, &body, shared.settings.secret.as_deref()) {
            Ok(p) => p,
            Err(e @ HookError::NoSecret) => return message(StatusCode::FORBIDDEN, &e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "webhook refused");
                return message(StatusCode::UNAUTHORIZED, &e.to_string());
            }
        };
    let allowed = shared
        .limit
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .allow(Instant::now());
    if !allowed {
        return message(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limited; a fetch is already due",
        );
    }
    tracing::info!(?provider, "webhook: fetching now");
    shared.trigger.fire();
    message(StatusCode::ACCEPTED, "fetch triggered")
}

async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let r = match (req.method(), path.as_str()) {
        (&Method::POST, p) if p == "/hook" || p.starts_with("/hooks/") => hook(req, &shared).await,
        (&Method::GET, "/status") => {
            let st = shared
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            reply(
                StatusCode::OK,
                serde_json::to_string_pretty(&st).unwrap_or_default() + "\n",
            )
        }
        (&Method::GET, "/healthz") => message(StatusCode::OK, "ok"),
        _ => message(
            StatusCode::NOT_FOUND,
            "endpoints: POST /hook, GET /status, GET /healthz",
        ),
    };
    Ok(r)
}

/// Binds `addr` now (so a bad address fails at start), then serves on a thread of its own.
pub fn start(shared: Shared) -> std::io::Result<SocketAddr> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr = shared.settings.listen;
    let listener = rt.block_on(TcpListener::bind(addr))?;
    let local = listener.local_addr()?;
    let shared = Arc::new(shared);
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let Ok((s, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| route(req, shared.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(std::time::Duration::from_secs(10))
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    });
                }
            });
        })?;
    tracing::info!(%local, "webhook and status endpoint listening");
    Ok(local)
}
