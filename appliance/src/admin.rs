//! The admin endpoint (loopback by default): `/ready`, `/status`, `/config`, `/metrics`,
//! `POST /reload`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::control::{Control, ReloadError};
use crate::http::body::{self, Body};

fn reply(status: StatusCode, ctype: &'static str, b: String) -> Response<Body> {
    let mut r = Response::new(body::full(b));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Body> {
    reply(
        status,
        "application/json",
        serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
    )
}

/// The `/status` document.
pub fn status(control: &Control) -> Value {
    let shared = control.shared();
    let rt = shared.runtime.load_full();
    let st = shared.with_status(|s| s.clone());
    let tenants: serde_json::Map<String, Value> = rt
        .snapshot
        .tenants
        .iter()
        .map(|(name, t)| {
            let counters = rt.tenant(name).map(|c| {
                json!({
                    "connections": c.connections.load(Ordering::Relaxed),
                    "rateLimited": c.rate_limited.load(Ordering::Relaxed),
                    "refusedConnections": c.refused_connections.load(Ordering::Relaxed),
                })
            });
            (
                name.clone(),
                json!({
                    "state": t.state,
                    "appliedRevision": t.applied_revision,
                    "attemptedRevision": t.attempted_revision,
                    "errors": t.diagnostics.iter().filter(|d| d.is_error()).map(ToString::to_string).collect::<Vec<_>>(),
                    "warnings": t.diagnostics.iter().filter(|d| !d.is_error()).map(ToString::to_string).collect::<Vec<_>>(),
                    "diagnostics": t.diagnostics,
                    "counters": counters,
                }),
            )
        })
        .collect();
    json!({
        "generation": st.generation,
        "revision": st.revision,
        "reloads": st.reloads,
        "reloadFailures": st.reload_failures,
        "lastError": st.last_error,
        "bindErrors": st.bind_errors,
        "problems": st.problems,
        "platformWarnings": st.platform_warnings,
        "draining": st.draining,
        "connections": shared.connections.load(Ordering::Relaxed),
        "groups": rt.groups.keys().collect::<Vec<_>>(),
        "tenants": tenants,
        "credentials": shared.store.statuses(),
    })
}

async fn route(
    req: Request<Incoming>,
    control: Arc<Control>,
) -> Result<Response<Body>, Infallible> {
    let shared = control.shared().clone();
    let path = req.uri().path().to_string();
    let r = match (req.method(), path.as_str()) {
        (&Method::GET, "/ready") => {
            // Ready once a configuration is applied and every worker has bound its listeners.
            let ready = shared.runtime.load().generation > 0
                && !*shared.drain.borrow()
                && shared.listeners_bound();
            if ready {
                reply(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        (&Method::GET, "/status") => json_reply(StatusCode::OK, &status(&control)),
        (&Method::GET, "/config") => {
            let rt = shared.runtime.load_full();
            let mut v = serde_json::to_value(&*rt.snapshot).unwrap_or_default();
            // With `--group`, the groups this process serves; the others are compiled (their
            // tenants' claims and status are shared) but are another process's to show.
            if let (Some(served), Some(groups)) = (
                shared.served.as_deref(),
                v.get_mut("groups").and_then(Value::as_object_mut),
            ) {
                groups.retain(|name, _| served.iter().any(|s| s == name));
            }
            json_reply(
                StatusCode::OK,
                &json!({"generation": rt.generation, "snapshot": v}),
            )
        }
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::render(&control),
        ),
        (&Method::POST, "/reload") => match control.reload().await {
            Ok(rep) => json_reply(StatusCode::OK, &json!({"ok": true, "report": rep})),
            Err(ReloadError::Platform {
                diagnostics,
                serving,
            }) => json_reply(
                StatusCode::CONFLICT,
                &json!({"ok": false, "serving": serving, "error": "platform configuration has errors", "diagnostics": diagnostics}),
            ),
            Err(e) => json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"ok": false, "error": e.to_string()}),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "endpoints: /ready /status /config /metrics POST /reload\n".into(),
        ),
    };
    Ok(r)
}

/// Serves the admin endpoint on `addr` until the process exits.
pub async fn serve(addr: SocketAddr, control: Arc<Control>) -> std::io::Result<()> {
    let l = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin endpoint listening");
    loop {
        let (s, _) = l.accept().await?;
        let control = control.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| route(req, control.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
