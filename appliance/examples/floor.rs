//! The floor for a tokio + hyper HTTP/1.1 proxy on this machine: one `current_thread` runtime,
//! a per-thread pool of `http1::SendRequest`, nothing else (no routing, headers, metrics, logs,
//! limits). `bench/instructions.sh` counts its instructions per request beside gatehouse's, so
//! the difference is what gatehouse's own request path costs. Not a product.
//!
//!   cargo run --release -p appliance --example floor -- LISTEN BACKEND READY
//!
//! READY answers 200 to anything, as gatehouse's admin `/ready` does.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;

// The allocator gatehouse is built with, so the comparison is of request paths only.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: gatehouse_alloc::MiMalloc = gatehouse_alloc::MiMalloc;

thread_local! {
    static POOL: RefCell<Vec<SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

/// Gives the sender back to the pool when the response body is done with.
struct Back {
    inner: Incoming,
    tx: Option<SendRequest<Incoming>>,
}

impl http_body::Body for Back {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for Back {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take()
            && http_body::Body::is_end_stream(&self.inner)
        {
            POOL.with(|p| p.borrow_mut().push(tx));
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    backend: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let mut tx = match POOL.with(|p| p.borrow_mut().pop()) {
        Some(tx) => tx,
        None => {
            let Ok(s) = TcpStream::connect(backend).await else {
                return Ok(bad());
            };
            let _ = s.set_nodelay(true);
            let Ok((tx, conn)) = hyper::client::conn::http1::Builder::new()
                .handshake(TokioIo::new(s))
                .await
            else {
                return Ok(bad());
            };
            tokio::spawn(conn);
            tx
        }
    };
    if tx.ready().await.is_err() {
        return Ok(bad());
    }
    match tx.send_request(req).await {
        Ok(resp) => Ok(resp.map(|b| {
            Back {
                inner: b,
                tx: Some(tx),
            }
            .boxed()
        })),
        Err(_) => Ok(bad()),
    }
}

fn bad() -> Response<Body> {
    let mut r = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *r.status_mut() = http::StatusCode::BAD_GATEWAY;
    r
}

async fn ready(addr: SocketAddr) -> std::io::Result<()> {
    let l = TcpListener::bind(addr).await?;
    loop {
        let (s, _) = l.accept().await?;
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
            TokioIo::new(s),
            hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }),
        ));
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let [listen, backend, admin] = args[..] else {
        return Err(std::io::Error::other("usage: floor LISTEN BACKEND READY"));
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            tokio::spawn(ready(admin));
            let l = TcpListener::bind(listen).await?;
            loop {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .writev(false)
                        .serve_connection(
                            TokioIo::new(s),
                            hyper::service::service_fn(move |req| forward(req, backend)),
                        ),
                );
            }
        })
}
