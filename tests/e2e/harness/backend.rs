//! Backends the tests route to: an HTTP echo server that says who it is, a TLS server with
//! its own certificate, a TCP echo server, and a websocket echo server. They run on a tokio
//! runtime owned by the test.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Per-backend request counters, by backend name.
#[derive(Default, Clone)]
pub struct Counters(Arc<Mutex<HashMap<String, u64>>>);

impl Counters {
    /// Requests `name` received.
    pub fn get(&self, name: &str) -> u64 {
        self.0.lock().expect("lock").get(name).copied().unwrap_or(0)
    }

    pub(crate) fn bump(&self, name: &str) {
        *self
            .0
            .lock()
            .expect("lock")
            .entry(name.to_string())
            .or_default() += 1;
    }
}

/// Bumps a counter when dropped while still armed.
struct Unanswered(Option<(Counters, String)>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some((c, name)) = self.0.take() {
            c.bump(&name);
        }
    }
}

/// The test's backends and the runtime they run on.
pub struct Backends {
    /// The runtime.
    pub rt: tokio::runtime::Runtime,
    /// Request counters.
    pub counters: Counters,
    fail_first: Arc<Mutex<HashMap<String, u64>>>,
    /// Peer addresses seen by each backend (source-address checks).
    pub peers: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>,
    /// What the scripted backend's `/held-body` waits on before it sends its body.
    pub held_body: Arc<tokio::sync::Notify>,
}

/// Total bytes seen by a TCP echo backend.
pub static TCP_BYTES: AtomicU64 = AtomicU64::new(0);

impl Backends {
    /// A runtime with two workers.
    pub fn new() -> Self {
        Self {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
            counters: Counters::default(),
            held_body: Arc::default(),
            fail_first: Arc::default(),
            peers: Arc::default(),
        }
    }

    /// The echo service's shared state, for one backend named `name`.
    fn echo_state(&self, name: &str) -> EchoState {
        EchoState {
            name: Arc::from(name),
            counters: self.counters.clone(),
            fails: self.fail_first.clone(),
            peers: self.peers.clone(),
        }
    }

    /// An HTTP/1.1 + HTTP/2 (prior knowledge) echo backend named `name` on `port`.
    /// Request headers steer it: `x-test-status`, `x-test-delay-ms`, `x-test-fail-times`
    /// (answer 503, or `x-test-fail-status`, that many times per `x-test-key`, then 200).
    pub fn http(&self, name: &str, port: u16) {
        let state = self.echo_state(name);
        let l = super::bind_loopback_tokio(&self.rt, port);
        self.rt.spawn(async move {
            loop {
                let Ok((s, peer)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(state.clone().serve(s, peer));
            }
        });
    }

    /// [`Backends::http`] on the unix socket `path` (`\0name` for an abstract one). Its
    /// peers are recorded as `0.0.0.0:0`: a unix socket's client has no address.
    pub fn http_unix(&self, name: &str, path: &std::path::Path) {
        self.unix_http(name, path, None);
    }

    /// [`Backends::tls_http`] on the unix socket `path`.
    pub fn tls_http_unix(&self, name: &str, path: &std::path::Path, cert_pem: &str, key_pem: &str) {
        self.unix_http(
            name,
            path,
            Some(acceptor(cert_pem, key_pem, &[b"http/1.1"])),
        );
    }

    fn unix_http(
        &self,
        name: &str,
        path: &std::path::Path,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let state = self.echo_state(name);
        let l = {
            let _g = self.rt.enter();
            tokio::net::UnixListener::bind(path).expect("bind unix socket")
        };
        let nobody = SocketAddr::from(([0, 0, 0, 0], 0));
        self.rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (state, tls) = (state.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => state.serve(s, nobody).await,
                        Some(a) => {
                            if let Ok(t) = a.accept(s).await {
                                state.serve(t, nobody).await;
                            }
                        }
                    }
                });
            }
        });
    }

    /// [`Backends::tcp_echo`] on the unix socket `path`.
    pub fn tcp_echo_unix(&self, name: &str, path: &std::path::Path) {
        let name = name.to_string();
        let counters = self.counters.clone();
        let l = {
            let _g = self.rt.enter();
            tokio::net::UnixListener::bind(path).expect("bind unix socket")
        };
        self.rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                counters.bump(&name);
                tokio::spawn(echo_bytes(s, name.clone()));
            }
        });
    }

    /// A TCP echo backend that first sends `<name>\n`, echoes everything, and on the
    /// client's half-close answers `bye <n bytes>\n` and closes.
    pub fn tcp_echo(&self, name: &str, port: u16) {
        let name = name.to_string();
        let counters = self.counters.clone();
        let peers = self.peers.clone();
        let l = super::bind_loopback_tokio(&self.rt, port);
        self.rt.spawn(async move {
            loop {
                let Ok((s, peer)) = l.accept().await else {
                    continue;
                };
                counters.bump(&name);
                peers
                    .lock()
                    .expect("lock")
                    .entry(name.clone())
                    .or_default()
                    .push(peer);
                tokio::spawn(echo_bytes(s, name.clone()));
            }
        });
    }

    /// A TLS backend presenting `cert`/`key` and answering HTTP/1.1 with `name`.
    pub fn tls_http(&self, name: &str, port: u16, cert_pem: &str, key_pem: &str) {
        self.tls_serve(
            name,
            port,
            acceptor(cert_pem, key_pem, &[b"http/1.1"]),
            false,
        );
    }

    /// A TLS backend like most web servers: it offers `h2` and `http/1.1` by ALPN, answers
    /// HTTP/2 with the echo, and takes websockets over HTTP/1.1 (replying `<name>: <text>`).
    pub fn tls_h2_and_websocket(&self, name: &str, port: u16, cert_pem: &str, key_pem: &str) {
        let acceptor = acceptor(cert_pem, key_pem, &[b"h2", b"http/1.1"]);
        self.tls_serve(name, port, acceptor, true);
    }

    /// Serves TLS connections: the echo over HTTP/2 when ALPN chose it, otherwise websockets
    /// (`websockets`) or the echo over HTTP/1.1.
    fn tls_serve(
        &self,
        name: &str,
        port: u16,
        acceptor: tokio_rustls::TlsAcceptor,
        websockets: bool,
    ) {
        let name: Arc<str> = Arc::from(name);
        let counters = self.counters.clone();
        let fails = self.fail_first.clone();
        let peers = self.peers.clone();
        let l = super::bind_loopback_tokio(&self.rt, port);
        self.rt.spawn(async move {
            loop {
                let Ok((s, peer)) = l.accept().await else {
                    continue;
                };
                let (acceptor, name, counters, fails, peers) = (
                    acceptor.clone(),
                    name.clone(),
                    counters.clone(),
                    fails.clone(),
                    peers.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    if websockets && !h2 {
                        match tokio_tungstenite::accept_async(tls).await {
                            Ok(ws) => ws_echo(ws, &name).await,
                            Err(_) => counters.bump(&format!("bad-handshake:{name}")),
                        }
                        return;
                    }
                    let svc = service_fn(move |req| {
                        echo(
                            req,
                            name.clone(),
                            counters.clone(),
                            fails.clone(),
                            peers.clone(),
                            peer,
                        )
                    });
                    let io = TokioIo::new(tls);
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                    };
                });
            }
        });
    }

    /// A websocket echo server named `name`.
    pub fn websocket(&self, name: &str, port: u16) {
        let name = name.to_string();
        let l = super::bind_loopback_tokio(&self.rt, port);
        self.rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(s).await {
                        ws_echo(ws, &name).await;
                    }
                });
            }
        });
    }
}

/// A TLS acceptor presenting `cert_pem`/`key_pem` and offering `alpn`.
fn acceptor(cert_pem: &str, key_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certs");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// Echoes each text message as `<name>: <text>` until the socket closes.
async fn ws_echo<S>(mut ws: tokio_tungstenite::WebSocketStream<S>, name: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(m)) = ws.next().await {
        if m.is_text() {
            let t = format!("{name}: {}", m.into_text().unwrap_or_default());
            if ws
                .send(tokio_tungstenite::tungstenite::Message::text(t))
                .await
                .is_err()
            {
                break;
            }
        } else if m.is_close() {
            break;
        }
    }
}

/// What an echo backend's connections share.
#[derive(Clone)]
struct EchoState {
    name: Arc<str>,
    counters: Counters,
    fails: Arc<Mutex<HashMap<String, u64>>>,
    peers: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>,
}

impl EchoState {
    /// Serves one connection (HTTP/1.1, or HTTP/2 by prior knowledge) with the echo.
    async fn serve<S>(self, io: S, peer: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let svc = service_fn(move |req| {
            echo(
                req,
                self.name.clone(),
                self.counters.clone(),
                self.fails.clone(),
                self.peers.clone(),
                peer,
            )
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .await;
    }
}

/// The TCP echo: `<name>\n`, then every byte back, then `bye <n bytes>\n` on half-close.
async fn echo_bytes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    name: String,
) {
    if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                TCP_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.write_all(format!("bye {total}\n").as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn echo(
    req: Request<Incoming>,
    name: Arc<str>,
    counters: Counters,
    fails: Arc<Mutex<HashMap<String, u64>>>,
    peers: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counters.bump(&name);
    // Counts `cancelled:<name>` if this request is dropped before its answer (the gateway
    // closed the upstream connection: its client went away).
    let mut unanswered = Unanswered(Some((counters.clone(), format!("cancelled:{name}"))));
    peers
        .lock()
        .expect("lock")
        .entry(name.to_string())
        .or_default()
        .push(peer);
    let h = req.headers().clone();
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(ms) = get("x-test-delay-ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut status: u16 = get("x-test-status")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if let (Some(times), Some(key)) = (
        get("x-test-fail-times").and_then(|v| v.parse::<u64>().ok()),
        get("x-test-key"),
    ) {
        let mut f = fails.lock().expect("lock");
        let seen = f.entry(key).or_default();
        if *seen < times {
            *seen += 1;
            status = get("x-test-fail-status")
                .and_then(|v| v.parse().ok())
                .unwrap_or(503);
        }
    }
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
    let headers: serde_json::Map<String, serde_json::Value> = h
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "backend": &*name,
        "method": method,
        "path": path,
        "version": version,
        "headers": headers,
        "body_len": body.len(),
        "body_sum": sum,
    });
    unanswered.0 = None;
    let mut r = Response::new(Full::new(Bytes::from(doc.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        "x-backend",
        http::HeaderValue::from_str(&name).expect("name"),
    );
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    // As a real backend names its software (nginx, gunicorn): the gateway does not pass it on.
    r.headers_mut()
        .insert("server", http::HeaderValue::from_static("echo/1.0"));
    Ok(r)
}

/// Fixed behaviour of a steered backend: what it does when the request's own `x-test-*`
/// headers do not say otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Behaviour {
    /// Status to answer (`x-test-status`).
    pub(crate) status: Option<u16>,
    /// Delay before answering, ms (`x-test-delay-ms`).
    pub(crate) delay_ms: Option<u64>,
}

impl Backends {
    /// An echo backend like [`http`](Self::http) with a fixed [`Behaviour`]: for instance a
    /// backend that always answers 503, or one that is always slow.
    pub(crate) fn http_with(&self, name: &str, port: u16, behaviour: Behaviour) {
        let name: Arc<str> = Arc::from(name);
        let counters = self.counters.clone();
        let fails = self.fail_first.clone();
        let peers = self.peers.clone();
        let l = super::bind_loopback_tokio(&self.rt, port);
        self.rt.spawn(async move {
            loop {
                let Ok((s, peer)) = l.accept().await else {
                    continue;
                };
                let (name, counters, fails, peers) =
                    (name.clone(), counters.clone(), fails.clone(), peers.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |mut req: Request<Incoming>| {
                        let h = req.headers_mut();
                        if let Some(s) = behaviour.status {
                            h.entry("x-test-status")
                                .or_insert_with(|| http::HeaderValue::from(s));
                        }
                        if let Some(d) = behaviour.delay_ms {
                            h.entry("x-test-delay-ms")
                                .or_insert_with(|| http::HeaderValue::from(d));
                        }
                        echo(
                            req,
                            name.clone(),
                            counters.clone(),
                            fails.clone(),
                            peers.clone(),
                            peer,
                        )
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    }

    /// A backend named `name` that reads each request's head and never answers: it holds
    /// the connection (`reset: false`) or closes it with a reset (`reset: true`). Counts
    /// connections as `name`.
    pub(crate) fn unanswering(&self, name: &str, port: u16, reset: bool) {
        let name = name.to_string();
        let counters = self.counters.clone();
        let l = super::bind_loopback_tokio(&self.rt, port);
        self.rt.spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                counters.bump(&name);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if reset {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        return;
                    }
                    // Held until the gateway gives up on it.
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
    }

    /// An echo backend named `name` that answers every request with 503.
    pub(crate) fn failing(&self, name: &str, port: u16) {
        self.http_with(
            name,
            port,
            Behaviour {
                status: Some(503),
                delay_ms: None,
            },
        );
    }

    /// A TLS backend like [`tls_http`](Self::tls_http) that requires a client certificate
    /// issued by `client_ca_pem`. Handshakes without one (or with another CA's) fail and are
    /// counted in [`Counters`] under `<name>-rejected`.
    pub(crate) fn tls_http_mutual(
        &self,
        name: &str,
        port: u16,
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
    ) {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("certs");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
            roots.add(c.expect("client CA")).expect("add client CA");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .expect("server config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let name: Arc<str> = Arc::from(name);
        let counters = self.counters.clone();
        let fails = self.fail_first.clone();
        let peers = self.peers.clone();
        let l = super::bind_loopback_tokio(&self.rt, port);
        self.rt.spawn(async move {
            loop {
                let Ok((s, peer)) = l.accept().await else {
                    continue;
                };
                let (acceptor, name, counters, fails, peers) = (
                    acceptor.clone(),
                    name.clone(),
                    counters.clone(),
                    fails.clone(),
                    peers.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        counters.bump(&format!("{name}-rejected"));
                        return;
                    };
                    let svc = service_fn(move |req| {
                        echo(
                            req,
                            name.clone(),
                            counters.clone(),
                            fails.clone(),
                            peers.clone(),
                            peer,
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
    }
}
