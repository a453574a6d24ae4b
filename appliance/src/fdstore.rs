//! Listening sockets that outlive the process, through systemd's file-descriptor store.
//!
//! Each worker owns one `SO_REUSEPORT` socket per listener address. Every socket a worker
//! binds is also handed to systemd (`FDSTORE=1` with a unique `FDNAME=`); systemd keeps a
//! duplicate and passes the whole store to the unit's next process (`LISTEN_FDS`,
//! `LISTEN_FDNAMES`). Because the store holds a reference, a restart never closes the
//! sockets: while the old process drains and the new one starts, the kernel keeps completing
//! handshakes into the accept queues, and the new process accepts what queued there. No
//! connection is refused and none that queued is reset.
//!
//! A listener a reload removes is also removed from the store (`FDSTOREREMOVE=1`); otherwise
//! the stored duplicate would keep its port accepting connections that nobody serves.
//!
//! Outside systemd (no `NOTIFY_SOCKET`, no `LISTEN_FDS`) every function here does nothing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sd_notify::NotifyState;

/// One inherited socket, until a worker claims it.
struct Entry {
    name: String,
    listener: Option<TcpListener>,
}

/// Inherited sockets by local address, in the order systemd passed them (stable, so that
/// workers can split them by index without coordinating).
static INHERITED: Mutex<BTreeMap<SocketAddr, Vec<Entry>>> = Mutex::new(BTreeMap::new());

/// Makes names unique within the process; with the process id, unique within the store.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn inherited() -> std::sync::MutexGuard<'static, BTreeMap<SocketAddr, Vec<Entry>>> {
    INHERITED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes the listening sockets systemd passed in (`LISTEN_FDS`, `LISTEN_FDNAMES`) into the
/// registry `bind` consults. Must run before any other thread starts: reading the variables
/// also removes them from the environment, so no child inherits them.
pub fn adopt_from_env() -> usize {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut map = inherited();
    let mut adopted = 0;
    for idx in 0..fds.len() {
        let name = names
            .get(idx)
            .cloned()
            .unwrap_or_else(|| format!("unnamed-{idx}"));
        match fds.take_tcp_listener(idx) {
            Ok(Some(l)) => match l
                .local_addr()
                .and_then(|a| l.set_nonblocking(true).map(|()| a))
            {
                Ok(addr) => {
                    tracing::info!(listener = %addr, fdname = %name, "adopted a listening socket from systemd");
                    map.entry(addr).or_default().push(Entry {
                        name,
                        listener: Some(l),
                    });
                    adopted += 1;
                }
                Err(e) => {
                    tracing::warn!(fdname = %name, error = %e, "inherited socket unusable; dropped");
                    forget(&name);
                }
            },
            Ok(None) => {}
            // Not a TCP socket (another kind of stored descriptor): leave it alone.
            Err(e) => tracing::debug!(fdname = %name, error = %e, "inherited descriptor skipped"),
        }
    }
    adopted
}

/// Claims the inherited sockets for `addr` that belong to worker `worker` of `workers`:
/// every index `i` with `i % workers == worker`, so that all of them are served whether the
/// worker count grew or shrank since the previous process.
pub fn take(addr: SocketAddr, worker: usize, workers: usize) -> Vec<(String, TcpListener)> {
    let workers = workers.max(1);
    let mut map = inherited();
    let Some(entries) = map.get_mut(&addr) else {
        return Vec::new();
    };
    entries
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| i % workers == worker)
        .filter_map(|(_, e)| e.listener.take().map(|l| (e.name.clone(), l)))
        .collect()
}

/// Closes the inherited sockets no worker claimed (listeners the new configuration no
/// longer has) and removes them from the store.
pub fn release_unclaimed() {
    let released = std::mem::take(&mut *inherited());
    for e in released.into_values().flatten() {
        if e.listener.is_some() {
            tracing::info!(fdname = %e.name, "closing an inherited socket no listener wants");
            forget(&e.name);
        }
    }
}

/// A store name for a socket this process binds. `:` separates names in `LISTEN_FDNAMES`, so
/// it cannot appear; the address and worker are there for people reading `systemctl status`.
pub fn name_for(addr: SocketAddr, worker: usize) -> String {
    let ip = addr.ip().to_string().replace(':', "_");
    format!(
        "listen_{ip}_{}_w{worker}_{}_{}",
        addr.port(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Hands a listening socket to the store under `name`.
pub fn store(listener: &TcpListener, name: &str) {
    if let Err(e) = sd_notify::notify_with_fds(
        &[NotifyState::FdStore, NotifyState::FdName(name)],
        &[listener.as_fd()],
    ) {
        tracing::warn!(fdname = %name, error = %e, "cannot store a listening socket with systemd; a restart will rebind it");
    }
}

/// Removes a socket from the store, so that closing it here really closes it.
pub fn forget(name: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]) {
        tracing::warn!(fdname = %name, error = %e, "cannot remove a socket from the systemd store");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_contain_the_separator() {
        for a in ["127.0.0.1:80", "[::1]:443", "[fe80::1]:8080"] {
            let addr: SocketAddr = a.parse().expect("address");
            let n = name_for(addr, 3);
            assert!(!n.contains(':'), "{n}");
            assert!(n.len() < 255, "{n}");
            assert!(n.chars().all(|c| c.is_ascii_graphic()), "{n}");
        }
    }

    #[test]
    fn inherited_sockets_are_split_across_workers_without_loss() {
        // The registry is keyed by address; the sockets' own ports do not matter here.
        let key: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let entries = (0..5)
            .map(|i| Entry {
                name: format!("n{i}"),
                listener: Some(TcpListener::bind("127.0.0.1:0").expect("bind")),
            })
            .collect();
        inherited().insert(key, entries);
        // Five sockets from a process with five workers, taken by one with two.
        let w0: Vec<String> = take(key, 0, 2).into_iter().map(|(n, _)| n).collect();
        let w1: Vec<String> = take(key, 1, 2).into_iter().map(|(n, _)| n).collect();
        assert_eq!(w0, ["n0", "n2", "n4"]);
        assert_eq!(w1, ["n1", "n3"]);
        assert!(take(key, 0, 2).is_empty(), "a socket is claimed once");
        release_unclaimed();
        assert!(inherited().is_empty());
    }
}
