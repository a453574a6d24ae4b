//! One accepted connection: classify it by the listener's kind (and, for TLS, by the SNI of
//! the ClientHello read before any TLS state exists), then serve HTTP, terminate TLS, or
//! proxy bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tenants::snapshot::{ChainAction, ListenerKind};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::http::server::{self, Proto};
use crate::http::service::ConnInfo;
use crate::io::Prefixed;
use crate::quota::{ConnPermit, ConnTenant};
use crate::shared::{Shared, WantedListener};
use crate::tcp::proxy;
use crate::tcp::session::Session;
use crate::tls::client_hello::{self, Parse};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts a connection in the process total while it lives.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads a complete ClientHello (bounded, within `limit`) without interpreting TLS further.
/// `limit` is the group's `headerReadTimeout`: a client that connects and sends nothing (or
/// drips its ClientHello) is the TLS form of a slowloris and gets the same time as one
/// sending its request headers.
async fn read_hello(
    s: &mut TcpStream,
    limit: Duration,
) -> Result<(Bytes, client_hello::Hello), &'static str> {
    let mut buf = BytesMut::with_capacity(2048);
    let read = async {
        loop {
            match client_hello::parse(&buf) {
                Parse::Done(h) => return Ok(h),
                Parse::Invalid(why) => return Err(why),
                Parse::NeedMore(n) => {
                    if n > client_hello::MAX_HELLO + 64 {
                        return Err("ClientHello too large");
                    }
                    buf.reserve(n.saturating_sub(buf.len()).max(512));
                    match s.read_buf(&mut buf).await {
                        Ok(0) => return Err("client closed before sending a ClientHello"),
                        Ok(_) => {}
                        Err(_) => return Err("read error before the ClientHello"),
                    }
                }
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(h)) => Ok((buf.freeze(), h)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no ClientHello within the header read timeout"),
    }
}

/// Serves one accepted connection.
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    l: WantedListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    shared.connections.fetch_add(1, Ordering::AcqRel);
    let _open = Open(shared.clone());
    let rt = shared.runtime.load_full();
    let Some(group) = rt.groups.get(&*l.group) else {
        return;
    };
    let Some(listener) = group.listeners.get(&l.addr).cloned() else {
        return;
    };
    let Some(_group_permit) =
        ConnPermit::group(group.connections.clone(), group_max(&rt, &l.group))
    else {
        tracing::debug!(%peer, group = %l.group, "group connection limit reached; refused");
        return;
    };
    let _ = stream.set_nodelay(true);
    let local = local_addr(&stream, l.addr);
    let drain = shared.drain.subscribe();
    match &listener.kind {
        ListenerKind::Http(_) => {
            let info = Arc::new(ConnInfo {
                group: l.group.clone(),
                listener: l.addr,
                local,
                peer,
                peer_ip: crate::http::headers::ip_value(peer.ip()),
                tls: false,
                sni: None,
                chain: None,
                client_cert: None,
                shared: shared.clone(),
                framing: Arc::default(),
                tenant: ConnTenant::default(),
                cut: tokio::sync::Notify::new(),
            });
            drop(rt);
            Box::pin(server::serve(
                stream,
                info,
                Proto::Auto,
                &l.limits,
                drain,
                stop,
            ))
            .await;
        }
        ListenerKind::Tcp(tcp) => {
            let tenant = rt.tenant(&tcp.tenant).cloned();
            let _permit = match tenant.map(ConnPermit::tenant) {
                Some(None) => return,
                Some(Some(p)) => Some(p),
                None => None,
            };
            let Some((cluster, name)) = proxy::choose(tcp, group, peer, local) else {
                tracing::debug!(%peer, rule = %tcp.name, "no tcp rule admits the connection's addresses; closed");
                return;
            };
            let cluster = cluster.clone();
            let session = Session::new(&shared, group, &tcp.tenant, peer, local, None);
            drop(rt);
            Box::pin(session.run(stream, Bytes::new(), &cluster, name, true)).await;
        }
        ListenerKind::Tls(_) => {
            drop(rt);
            // Boxed: the ClientHello read and the handshake are large states, and inline they
            // would size every connection's task, plain HTTP ones included, for its whole life.
            Box::pin(tls(stream, (peer, local), &l, &shared, drain, stop)).await;
        }
    }
}

/// The connection's local address: the listener's, unless it listens on a wildcard address
/// (then asked of the socket, a system call only those listeners pay).
fn local_addr(s: &TcpStream, bind: SocketAddr) -> SocketAddr {
    if bind.ip().is_unspecified() {
        s.local_addr().unwrap_or(bind)
    } else {
        bind
    }
}

/// A TLS listener's connection: routed by the ClientHello's SNI to passthrough or termination.
async fn tls(
    mut stream: TcpStream,
    (peer, local): (SocketAddr, SocketAddr),
    l: &WantedListener,
    shared: &Arc<Shared>,
    drain: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    let limit = l.limits.header_read_timeout;
    let (hello_bytes, hello) = match read_hello(&mut stream, limit).await {
        Ok(x) => x,
        Err(why) => {
            tracing::info!(%peer, listener = %l.addr, reason = why, "connection closed before routing");
            return;
        }
    };
    let rt = shared.runtime.load_full();
    let Some(group) = rt.groups.get(&*l.group) else {
        return;
    };
    let Some(listener) = group.listeners.get(&l.addr).cloned() else {
        return;
    };
    let Some(chain) = listener.chain(hello.sni.as_deref()).cloned() else {
        if let Some(sni) = &hello.sni
            && let Some(source) = allow_any(&rt, &l.group)
        {
            let target = format!("{sni}:{}", listener.gateway_port);
            drop(rt);
            Box::pin(original_destination(stream, hello_bytes, &target, source)).await;
            return;
        }
        tracing::info!(%peer, listener = %l.addr, sni = ?hello.sni, "no filter chain for SNI; closed");
        return;
    };
    let _permit = match rt.tenant(&chain.tenant).cloned().map(ConnPermit::tenant) {
        Some(None) => return,
        Some(Some(p)) => Some(p),
        None => None,
    };
    match &chain.action {
        ChainAction::Passthrough(tcp) => {
            let Some((cluster, name)) = proxy::choose(tcp, group, peer, local) else {
                return;
            };
            let cluster = cluster.clone();
            let session = Session::new(shared, group, &chain.tenant, peer, local, hello.sni);
            drop(rt);
            Box::pin(session.run(stream, hello_bytes, &cluster, name, false)).await;
        }
        ChainAction::TerminateHttp { .. } | ChainAction::TerminateTcp { .. } => {
            let Some(state) = group.chains.get(&chain.name).cloned() else {
                tracing::warn!(chain = %chain.name, "no TLS configuration for chain; closed");
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.config.clone());
            let tcp_target = match &chain.action {
                ChainAction::TerminateTcp { tcp, .. } => proxy::choose(tcp, group, peer, local)
                    .map(|(c, n)| {
                        let s = Session::new(
                            shared,
                            group,
                            &chain.tenant,
                            peer,
                            local,
                            hello.sni.clone(),
                        );
                        (c.clone(), n, s)
                    }),
                _ => None,
            };
            if tcp_target.is_none() && matches!(chain.action, ChainAction::TerminateTcp { .. }) {
                tracing::debug!(%peer, chain = %chain.name, "no tcp rule admits the connection's addresses; closed");
                return;
            }
            drop(rt);
            let tls = match tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                Box::pin(acceptor.accept(Prefixed::new(hello_bytes, stream))),
            )
            .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    // Debug: scanners and health probes make this common and cheap to
                    // cause; at info it would let any client flood the journal.
                    tracing::debug!(%peer, chain = %chain.name, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            if let Some(client) = &state.tls.client
                && let Err(e) = crate::tls::server::recheck_resumed(client, tls.get_ref().1)
            {
                tracing::debug!(%peer, chain = %chain.name, error = %e, "resumed session's client certificate refused");
                return;
            }
            if let Some((cluster, name, session)) = tcp_target {
                Box::pin(session.run(tls, Bytes::new(), &cluster, name, true)).await;
                return;
            }
            let proto = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Proto::H2,
                _ => Proto::H1,
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::http::xfcc::value(c));
            let info = Arc::new(ConnInfo {
                group: l.group.clone(),
                listener: l.addr,
                local,
                peer,
                peer_ip: crate::http::headers::ip_value(peer.ip()),
                tls: true,
                sni: hello.sni.map(String::into_boxed_str),
                chain: Some(chain.name.clone().into_boxed_str()),
                client_cert,
                shared: shared.clone(),
                framing: Arc::default(),
                tenant: ConnTenant::default(),
                cut: tokio::sync::Notify::new(),
            });
            Box::pin(server::serve(tls, info, proto, &l.limits, drain, stop)).await;
        }
    }
}

/// For an egress group whose outbound policy is ALLOW_ANY: its source address (the outer
/// `Option` says whether unregistered names may pass at all).
fn allow_any(rt: &crate::runtime::Runtime, group: &str) -> Option<Option<std::net::IpAddr>> {
    let snap = rt.snapshot.groups.get(group)?;
    let g = &snap.group;
    (g.kind == tenants::model::GroupKind::Egress
        && snap.outbound == tenants::model::OutboundPolicy::AllowAny)
        .then_some(g.source_address)
}

/// Passes an unregistered SNI through to the name itself (ALLOW_ANY).
async fn original_destination(
    mut down: TcpStream,
    hello: Bytes,
    target: &str,
    source: Option<std::net::IpAddr>,
) {
    use tokio::io::AsyncWriteExt;
    let Some((mut up, addr)) =
        crate::upstream::connect::tcp_by_name(target, source, HANDSHAKE_TIMEOUT).await
    else {
        tracing::info!(%target, "ALLOW_ANY: destination unreachable; closed");
        return;
    };
    tracing::debug!(%target, %addr, "ALLOW_ANY passthrough");
    if up.write_all(&hello).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    }
}

fn group_max(rt: &crate::runtime::Runtime, group: &str) -> Option<u32> {
    rt.snapshot
        .groups
        .get(group)
        .and_then(|g| g.group.max_connections)
}
