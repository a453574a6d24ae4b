//! One QUIC connection: permits, handshake, the chain the SNI chose (and its client
//! certificate check), 0-RTT policy, then h3 until the client leaves or a drain sends
//! GOAWAY and in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use quinn::VarInt;
use quinn::crypto::rustls::HandshakeData;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::certs;
use super::endpoint::Settings;
use crate::http::server::turned_true;
use crate::http::service::ConnInfo;
use crate::quota::{ConnPermit, ConnTenant};
use crate::shared::Shared;

/// How long a client may take to complete the handshake (as on TCP).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a drained connection with nothing in flight stays open after GOAWAY.
const LINGER: Duration = Duration::from_secs(1);

/// H3_GENERAL_PROTOCOL_ERROR: HTTP/3 has no code of its own for a refused client
/// certificate; the reason text says it.
const REFUSED: VarInt = VarInt::from_u32(0x0101);

/// What every connection of an endpoint shares.
pub(super) struct Ctx {
    pub(super) shared: Arc<Shared>,
    pub(super) group: Arc<str>,
    pub(super) addr: SocketAddr,
    pub(super) settings: Arc<ArcSwap<Settings>>,
    /// Open connections of the endpoint (`appliance.http3.maxConnections`).
    pub(super) live: Arc<AtomicU32>,
    /// Turns true when the endpoint is removed.
    pub(super) stop: watch::Receiver<bool>,
}

/// Counts a connection in [`Ctx::live`] and in the process total of QUIC connections.
pub(super) struct Live(Arc<AtomicU32>, Arc<Shared>);

impl Live {
    pub(super) fn new(c: &Arc<AtomicU32>, shared: &Arc<Shared>) -> Self {
        c.fetch_add(1, Ordering::AcqRel);
        shared.quic_connections.fetch_add(1, Ordering::Relaxed);
        Self(c.clone(), shared.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.quic_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one incoming connection; `_live` counts it from the moment it was let in.
pub(super) async fn serve(incoming: quinn::Incoming, cx: Arc<Ctx>, _live: Live) {
    let _open = cx.shared.open();
    let peer = incoming.remote_address();
    // The address the client reached (a wildcard listener's own is no address): for
    // `%DOWNSTREAM_LOCAL_ADDRESS%` and a PROXY protocol header.
    let local = incoming
        .local_ip()
        .map_or(cx.addr, |ip| SocketAddr::new(ip, cx.addr.port()));
    let rt = cx.shared.runtime.load_full();
    let Some(group) = rt.groups.get(&*cx.group) else {
        incoming.refuse();
        return;
    };
    let max = rt
        .snapshot
        .groups
        .get(&*cx.group)
        .and_then(|g| g.group.max_connections);
    // QUIC connections count against `appliance.maxConnections` like TCP ones.
    let Some(_group_permit) = ConnPermit::group(group.connections.clone(), max) else {
        tracing::debug!(%peer, group = %cx.group, "group connection limit reached; QUIC refused");
        incoming.refuse();
        return;
    };
    drop(rt);
    let mut connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC connection failed");
            return;
        }
    };
    // The ClientHello is processed: the SNI is known (the certificate was chosen by it).
    let sni = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting.handshake_data()).await {
        Ok(Ok(d)) => d
            .downcast::<HandshakeData>()
            .ok()
            .and_then(|h| h.server_name),
        _ => return,
    };
    let rt = cx.shared.runtime.load_full();
    let Some((chain, state)) = certs::chain_for(&rt, &cx.group, &cx.addr, sni.as_deref()) else {
        return;
    };
    let _tenant_permit = match rt.tenant(&chain.tenant).cloned().map(ConnPermit::tenant) {
        Some(None) => return,
        Some(Some(p)) => Some(p),
        None => None,
    };
    drop(rt);
    // 0-RTT: requests may arrive before the handshake completes (then `confirmed` is false
    // and `http::early` refuses non-idempotent ones). Never for MUTUAL: early data precedes
    // the client certificate; awaiting the handshake means a replayed flight, which cannot
    // finish it, is never served.
    let early = cx.settings.load().h3.early_data && state.tls.client.is_none();
    let confirmed = Arc::new(AtomicBool::new(!early));
    let attempt = if early {
        connecting.into_0rtt()
    } else {
        Err(connecting)
    };
    let conn = match attempt {
        Ok((conn, accepted)) => {
            let c = confirmed.clone();
            tokio::spawn(async move {
                let _ = accepted.await;
                c.store(true, Ordering::Release);
            });
            conn
        }
        Err(connecting) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Ok(Ok(c)) => {
                confirmed.store(true, Ordering::Release);
                c
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    let client_cert = match certs::check_client(&state, &conn) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, chain = %chain.name, error = %e, "client certificate refused; QUIC connection closed");
            conn.close(REFUSED, b"client certificate required");
            return;
        }
    };
    let info = Arc::new(ConnInfo {
        group: cx.group.clone(),
        listener: cx.addr,
        local,
        peer,
        peer_ip: crate::http::headers::ip_value(peer.ip()),
        tls: true,
        sni: sni.map(String::into_boxed_str),
        chain: Some(chain.name.clone().into_boxed_str()),
        client_cert,
        shared: cx.shared.clone(),
        framing: Arc::default(),
        // TLS connections are counted by their chain's tenant at accept (above).
        tenant: ConnTenant::default(),
        cut: tokio::sync::Notify::new(),
    });
    let header_bytes = u64::from(cx.settings.load().limits.max_request_headers_kb) * 1024;
    let h3 = h3::server::builder()
        .max_field_section_size(header_bytes)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await;
    match h3 {
        Ok(h3) => requests(h3, info, confirmed, &cx).await,
        Err(e) => tracing::debug!(%peer, error = %e, "HTTP/3 connection setup failed"),
    }
}

/// Accepts requests until the client goes away, or until a drain (shutdown, or the
/// endpoint removed by a reload) has sent GOAWAY and the requests in flight are done.
async fn requests(
    mut h3: h3::server::Connection<h3_quinn::Connection, Bytes>,
    info: Arc<ConnInfo>,
    confirmed: Arc<AtomicBool>,
    cx: &Ctx,
) {
    let mut drain = cx.shared.drain.subscribe();
    let mut stop = cx.stop.clone();
    let mut tasks = JoinSet::new();
    let mut draining = false;
    let mut goaway = false;
    loop {
        tokio::select! {
            r = h3.accept() => match r {
                Ok(Some(resolver)) => {
                    tasks.spawn(super::request::serve(resolver, info.clone(), confirmed.clone()));
                }
                // The client sent GOAWAY and its requests are done.
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(peer = %info.peer, error = %e, "HTTP/3 connection ended");
                    // The connection is gone: its requests cannot answer any more.
                    return;
                }
            },
            Some(_) = tasks.join_next() => {}
            () = turned_true(&mut drain), if !draining => draining = true,
            () = turned_true(&mut stop), if !draining => draining = true,
            // Idle after GOAWAY: time for the frame to arrive and the client to close first.
            () = tokio::time::sleep(LINGER), if goaway && tasks.is_empty() => break,
        }
        if draining && !goaway {
            // GOAWAY naming the last request accepted: later streams are refused (the
            // client retries them on a new connection), earlier ones finish.
            goaway = true;
            if let Err(e) = h3.shutdown(0).await {
                tracing::debug!(peer = %info.peer, error = %e, "HTTP/3 GOAWAY failed");
                return;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    // Dropping `h3` closes the connection with H3_NO_ERROR.
}
