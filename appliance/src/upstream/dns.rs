//! `resolution: DNS`: endpoints resolved in the background and refreshed when their TTL
//! runs out. A failed lookup (timeout, server failure) keeps that name's previous addresses;
//! an answer that the name has none (NXDOMAIN, no records) removes them.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::{ClusterRt, Endpoint, replace_endpoints};

/// Shortest and longest wait between refreshes.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);

/// The hosts file the resolver reads (hickory reads it once, when built).
const HOSTS: &str = "/etc/hosts";

/// Identifies a version of the hosts file: (mtime s, mtime ns, size, inode).
type Stamp = Option<(i64, i64, u64, u64)>;

fn hosts_stamp() -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(HOSTS).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
}

/// A resolver from the system configuration. Names in `/etc/hosts` resolve as with
/// getaddrinfo; without a readable `/etc/resolv.conf`, only they do.
fn build() -> Option<TokioResolver> {
    let builder = TokioResolver::builder_tokio().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the system DNS configuration; only names in /etc/hosts resolve");
        TokioResolver::builder_with_config(
            ResolverConfig::default(),
            TokioRuntimeProvider::default(),
        )
    });
    match builder.build() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the DNS resolver");
            None
        }
    }
}

/// The shared resolver, rebuilt when `/etc/hosts` changes so edits apply at the next
/// refresh.
pub(super) fn resolver() -> Option<Arc<TokioResolver>> {
    static R: Mutex<Option<(Stamp, Option<Arc<TokioResolver>>)>> = Mutex::new(None);
    let stamp = hosts_stamp();
    let mut g = R.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((s, r)) = g.as_ref()
        && *s == stamp
    {
        return r.clone();
    }
    let r = build().map(Arc::new);
    *g = Some((stamp, r.clone()));
    r
}

/// Resolves `names` now and whenever the shortest TTL expires, until the cluster is dropped.
pub fn spawn(
    handle: &tokio::runtime::Handle,
    cluster: Weak<ClusterRt>,
    names: Vec<(String, u16, u32)>,
    first_only: bool,
) -> tokio::task::AbortHandle {
    handle
        .spawn(async move {
            // Each name's last addresses: a name whose lookup fails keeps its own, while the
            // others take their fresh ones.
            let mut known: Vec<Vec<SocketAddr>> = vec![Vec::new(); names.len()];
            loop {
                let mut wait = MAX_TTL;
                for ((name, port, _), last) in names.iter().zip(known.iter_mut()) {
                    if let Ok(ip) = name.parse::<IpAddr>() {
                        *last = vec![SocketAddr::new(ip, *port)];
                        continue;
                    }
                    let Some(r) = resolver() else {
                        wait = wait.min(Duration::from_secs(5));
                        continue;
                    };
                    match r.lookup_ip(name.as_str()).await {
                        Ok(l) => {
                            let ttl = l.valid_until().saturating_duration_since(std::time::Instant::now());
                            wait = wait.min(ttl.clamp(MIN_TTL, MAX_TTL));
                            let n = if first_only { 1 } else { usize::MAX };
                            *last = l.iter().take(n).map(|ip| SocketAddr::new(ip, *port)).collect();
                        }
                        // The name has no address now (NXDOMAIN, no records): an answer,
                        // not a failure; Envoy's resolver takes it as an empty one.
                        Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                            wait = wait.min(Duration::from_secs(5));
                            if !last.is_empty() {
                                tracing::warn!(host = %name, error = %e, "DNS name has no addresses any more");
                            }
                            last.clear();
                        }
                        Err(e) => {
                            wait = wait.min(Duration::from_secs(5));
                            tracing::warn!(host = %name, error = %e, "DNS lookup failed; keeping the previous addresses");
                        }
                    }
                }
                let Some(rt) = cluster.upgrade() else { return };
                let eps: Vec<Arc<Endpoint>> = names
                    .iter()
                    .zip(&known)
                    .flat_map(|((_, _, w), addrs)| {
                        addrs.iter().map(|a| Arc::new(Endpoint::new(*a, *w)))
                    })
                    .collect();
                replace_endpoints(&rt, eps);
                drop(rt);
                tokio::time::sleep(wait).await;
            }
        })
        .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_in_the_hosts_file_resolve() {
        let r = resolver().expect("resolver");
        let ips: Vec<IpAddr> = r
            .lookup_ip("localhost")
            .await
            .expect("lookup")
            .iter()
            .collect();
        assert!(ips.contains(&IpAddr::from([127, 0, 0, 1])), "{ips:?}");
        // Without /etc/resolv.conf (no name servers), /etc/hosts still answers.
        let bare = TokioResolver::builder_with_config(
            ResolverConfig::default(),
            TokioRuntimeProvider::default(),
        )
        .build()
        .expect("resolver without name servers");
        let ips: Vec<IpAddr> = bare
            .lookup_ip("localhost")
            .await
            .expect("lookup")
            .iter()
            .collect();
        assert!(ips.contains(&IpAddr::from([127, 0, 0, 1])), "{ips:?}");
        // hickory answers `localhost` itself (RFC 6761); other names in the hosts file come
        // from the file. Every IPv4 entry of this machine's hosts file resolves.
        let text = std::fs::read_to_string(HOSTS).unwrap_or_default();
        for line in text.lines().map(|l| l.split('#').next().unwrap_or("")) {
            let mut words = line.split_whitespace();
            let Some(Ok(IpAddr::V4(ip))) = words.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            for name in words.filter(|n| !n.starts_with("localhost")) {
                let got: Vec<IpAddr> = r.lookup_ip(name).await.expect(name).iter().collect();
                assert!(got.contains(&IpAddr::V4(ip)), "{name}: {got:?}");
            }
        }
        // The same resolver is shared while the hosts file does not change.
        assert!(Arc::ptr_eq(&r, &resolver().expect("resolver")));
    }
}
