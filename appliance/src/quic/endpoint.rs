//! The QUIC endpoints of one worker. Each HTTPS listener address gets one endpoint on the
//! UDP port of the same number, run by the worker the address hashes to (see `mod.rs` for why
//! not one per worker). Endpoints are diffed like TCP listeners: a reload that keeps an HTTPS
//! listener keeps its endpoint and every QUIC connection on it; changed settings or client
//! authentication only replace the config new connections get.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Protocol, Type};
use tenants::model::{DownstreamLimits, Http3};
use tokio::sync::watch;

use super::certs::ListenerTls;
use super::conn::{self, Ctx};
use super::{config, serves_https};
use crate::http::server::turned_true;
use crate::shared::{Shared, Wanted};

/// What connections read from their endpoint's group settings (current after a reload).
pub(super) struct Settings {
    /// `appliance.http3`.
    pub(super) h3: Http3,
    /// `appliance.limits` (header size).
    pub(super) limits: Arc<DownstreamLimits>,
    /// `appliance.drainTimeout`: how long a removed endpoint waits for its connections.
    pub(super) drain: Duration,
}

/// What the endpoint's server config was built from.
#[derive(PartialEq)]
struct ConfigKey {
    h3: Http3,
    client_auth: (bool, bool),
}

struct Bound {
    endpoint: quinn::Endpoint,
    key: ConfigKey,
    settings: Arc<ArcSwap<Settings>>,
    stop: watch::Sender<bool>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A worker's QUIC endpoints, by (group, address).
#[derive(Default)]
pub struct Endpoints {
    bound: HashMap<(Arc<str>, SocketAddr), Bound>,
}

/// The worker that runs the endpoint for `addr`: spread by port over the workers.
pub(super) fn owner(addr: SocketAddr, workers: usize) -> usize {
    usize::from(addr.port()) % workers.max(1)
}

impl Endpoints {
    /// Brings this worker's endpoints in line with `w` and the current generation: binds the
    /// new, drains the removed (GOAWAY), updates the kept.
    pub fn apply(&mut self, id: usize, shared: &Arc<Shared>, w: &Wanted) {
        let workers = shared.workers.load(Ordering::Acquire);
        let rt = shared.runtime.load_full();
        let mut wanted = HashMap::new();
        for l in w.listeners.iter().filter(|l| owner(l.addr, workers) == id) {
            let Some(g) = rt.snapshot.groups.get(&*l.group) else {
                continue;
            };
            if !g.group.http3.enabled
                || !rt
                    .listener(&l.group, &l.addr)
                    .is_some_and(|x| serves_https(x))
            {
                continue;
            }
            let settings = Settings {
                h3: g.group.http3.clone(),
                limits: l.limits.clone(),
                drain: g.group.drain_timeout,
            };
            wanted.insert((l.group.clone(), l.addr), settings);
        }
        self.bound.retain(|k, _| wanted.contains_key(k));
        for (key, settings) in wanted {
            let tls = Arc::new(ListenerTls::new(shared.clone(), key.0.clone(), key.1, &rt));
            let ck = ConfigKey {
                h3: settings.h3.clone(),
                client_auth: tls.client_auth(),
            };
            let label = format!("{}/udp:{}", key.0, key.1);
            if let Some(b) = self.bound.get_mut(&key) {
                b.settings.store(Arc::new(settings));
                if b.key != ck {
                    match config::build(tls, &ck.h3) {
                        Ok(sc) => {
                            b.endpoint.set_server_config(Some(sc));
                            b.key = ck;
                        }
                        Err(e) => {
                            tracing::warn!(listener = %label, error = %e, "QUIC settings refused; the previous ones stay")
                        }
                    }
                }
                continue;
            }
            let bound = config::build(tls, &ck.h3)
                .map_err(io::Error::other)
                .and_then(|sc| bind(key.1, sc));
            let endpoint = match bound {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(listener = %label, error = %e, "cannot serve HTTP/3");
                    shared.with_status(|s| s.bind_errors.insert(label, e.to_string()));
                    continue;
                }
            };
            shared.with_status(|s| s.bind_errors.remove(&label));
            let (stop, stop_rx) = watch::channel(false);
            let settings = Arc::new(ArcSwap::from_pointee(settings));
            let cx = Arc::new(Ctx {
                shared: shared.clone(),
                group: key.0.clone(),
                addr: key.1,
                settings: settings.clone(),
                live: Arc::new(AtomicU32::new(0)),
                stop: stop_rx,
            });
            tokio::spawn(accept_loop(endpoint.clone(), cx));
            self.bound.insert(
                key,
                Bound {
                    endpoint,
                    key: ck,
                    settings,
                    stop,
                },
            );
        }
    }

    /// Drains every endpoint (shutdown).
    pub fn clear(&mut self) {
        self.bound.clear();
    }
}

/// A UDP socket on `addr` and a quinn endpoint on it. `SO_REUSEPORT` lets a restarted
/// process bind while the previous one drains (TCP sockets are handed over instead; a QUIC
/// connection's state lives in the process and cannot be).
fn bind(addr: SocketAddr, sc: quinn::ServerConfig) -> io::Result<quinn::Endpoint> {
    let s = crate::workers::socket(addr, Type::DGRAM, Protocol::UDP)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(sc),
        s.into(),
        Arc::new(quinn::TokioRuntime),
    )
}

/// Accepts connections until the endpoint is removed or the process drains, then lets the
/// open ones finish (each sends GOAWAY itself) and waits for their close to reach clients.
async fn accept_loop(endpoint: quinn::Endpoint, cx: Arc<Ctx>) {
    let mut stop = cx.stop.clone();
    let mut drain = cx.shared.drain.subscribe();
    loop {
        tokio::select! {
            i = endpoint.accept() => {
                let Some(incoming) = i else { break };
                let max = cx.settings.load().h3.max_connections;
                if cx.live.load(Ordering::Acquire) >= max {
                    tracing::debug!(listener = %cx.addr, "HTTP/3 connection limit reached; refused");
                    incoming.refuse();
                    continue;
                }
                // Counted here, not in the task: a burst must not pass the limit.
                let live = conn::Live::new(&cx.live, &cx.shared);
                tokio::spawn(conn::serve(incoming, cx.clone(), live));
            }
            () = turned_true(&mut stop) => break,
            () = turned_true(&mut drain) => break,
        }
    }
    endpoint.set_server_config(None);
    // Counted like a connection, so shutdown waits for the closes to be sent.
    let _open = cx.shared.open();
    let grace = cx.settings.load().drain;
    let _ = tokio::time::timeout(grace, endpoint.wait_idle()).await;
}
