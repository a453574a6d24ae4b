//! Worker threads: one single-threaded tokio runtime per core, each with its own
//! `SO_REUSEPORT` socket per listener (no cross-thread wake-ups on the data path). Listener
//! changes arrive as a desired set: new addresses are bound, removed ones stop accepting and
//! drain, unchanged ones are never touched.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::shared::{Shared, Wanted, WantedListener};

/// Binds a listening socket shared by the workers through `SO_REUSEPORT`.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A non-blocking socket bound to `addr` with `SO_REUSEPORT` (IPv6 sockets IPv6 only).
pub fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

struct Bound {
    stop: watch::Sender<bool>,
    /// Names of its sockets in systemd's store (see `fdstore`).
    stored: Vec<String>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts `n` worker threads; they run until `shared.drain` is set and their connections
/// are gone (or `grace` passed).
pub fn start(n: usize, shared: Arc<Shared>, grace: Duration) -> Vec<std::thread::JoinHandle<()>> {
    let n = n.clamp(1, crate::shared::MAX_WORKERS);
    shared.workers.store(n, Ordering::Release);
    (0..n)
        .map(|id| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("gatehouse-w{id}"))
                .spawn(move || worker(id, shared, grace))
                .unwrap_or_else(|e| panic!("cannot start worker thread: {e}"))
        })
        .collect()
}

fn worker(id: usize, shared: Arc<Shared>, grace: Duration) {
    crate::telemetry::registry::pin_shard(id);
    // Workers live as long as the process: their small blocks come back warm (gatehouse-alloc).
    #[cfg(feature = "mimalloc")]
    gatehouse_alloc::cache_this_thread();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot start worker runtime");
            return;
        }
    };
    shared
        .runtimes
        .register(format!("worker-{id}"), rt.handle());
    rt.block_on(async move {
        let mut wanted = shared.wanted.subscribe();
        let mut drain = shared.drain.subscribe();
        let mut bound: HashMap<(Arc<str>, SocketAddr), Bound> = HashMap::new();
        let mut quic = crate::quic::Endpoints::default();
        loop {
            let w: Arc<Wanted> = wanted.borrow_and_update().clone();
            apply(id, &shared, &w, &mut bound);
            quic.apply(id, &shared, &w);
            if let Some(g) = shared.bound.get(id) {
                g.store(w.generation, Ordering::Release);
            }
            tokio::select! {
                r = wanted.changed() => if r.is_err() { break },
                r = drain.changed() => if r.is_err() || *drain.borrow() { break },
            }
        }
        // Shutdown: stop accepting, let connections finish within the grace period.
        bound.clear();
        quic.clear();
        let deadline = tokio::time::Instant::now() + grace;
        while shared.connections.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

fn apply(
    id: usize,
    shared: &Arc<Shared>,
    w: &Wanted,
    bound: &mut HashMap<(Arc<str>, SocketAddr), Bound>,
) {
    bound.retain(|k, b| {
        let keep = w.listeners.iter().any(|l| l.group == k.0 && l.addr == k.1);
        if !keep {
            // Removed by the configuration: the store must let go too, or the port stays open.
            b.stored.iter().for_each(|n| crate::fdstore::forget(n));
        }
        keep
    });
    let workers = shared.workers.load(Ordering::Acquire);
    for l in &w.listeners {
        let key = (l.group.clone(), l.addr);
        if bound.contains_key(&key) {
            continue;
        }
        let sockets = match open(l.addr, id, workers) {
            Ok(x) => x,
            Err(e) => {
                if id == 0 {
                    tracing::error!(listener = %l.addr, group = %l.group, error = %e, "cannot bind listener");
                    shared.with_status(|s| {
                        s.bind_errors
                            .insert(format!("{}/{}", l.group, l.addr), e.to_string());
                    });
                }
                continue;
            }
        };
        if id == 0 {
            shared.with_status(|s| {
                s.bind_errors.remove(&format!("{}/{}", l.group, l.addr));
            });
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut stored = Vec::with_capacity(sockets.len());
        for (name, listener) in sockets {
            tokio::spawn(accept_loop(
                listener,
                l.clone(),
                shared.clone(),
                stop_rx.clone(),
            ));
            stored.push(name);
        }
        bound.insert(key, Bound { stop, stored });
    }
}

/// This worker's sockets for `addr`: those inherited from the previous process of the unit
/// if there are any, else a new one, handed to systemd's store so the next process gets it.
fn open(addr: SocketAddr, id: usize, workers: usize) -> io::Result<Vec<(String, TcpListener)>> {
    let inherited = crate::fdstore::take(addr, id, workers);
    let sockets = if inherited.is_empty() {
        let l = bind(addr)?;
        let name = crate::fdstore::name_for(addr, id);
        crate::fdstore::store(&l, &name);
        vec![(name, l)]
    } else {
        inherited
    };
    sockets
        .into_iter()
        .map(|(n, l)| Ok((n, TcpListener::from_std(l)?)))
        .collect()
}

async fn accept_loop(
    listener: TcpListener,
    l: WantedListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    tokio::spawn(crate::listener::handle(s, peer, l.clone(), shared.clone(), stop.clone()));
                    // One connection per turn: without this, a flood of new connections is
                    // accepted in batches of up to 128 (tokio's budget) whose tasks all run
                    // before the requests of connections already open, and one tenant's
                    // connection flood becomes every tenant's latency. `yield_now` lets the
                    // runtime poll for I/O before the next accept.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %l.addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}
