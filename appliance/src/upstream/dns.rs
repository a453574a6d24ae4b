//! `resolution: DNS`: endpoints resolved in the background and refreshed when their TTL
//! runs out. A failed lookup keeps the previous addresses.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;

use super::{ClusterRt, Endpoint, replace_endpoints};

/// Shortest and longest wait between refreshes.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);

fn resolver() -> Option<&'static TokioResolver> {
    static R: OnceLock<Option<TokioResolver>> = OnceLock::new();
    R.get_or_init(|| match TokioResolver::builder_tokio() {
        Ok(b) => Some(b.build().ok()?),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the system DNS configuration");
            None
        }
    })
    .as_ref()
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
            loop {
                let mut eps: Vec<Arc<Endpoint>> = Vec::new();
                let mut wait = MAX_TTL;
                let mut failed = false;
                for (name, port, weight) in &names {
                    if let Ok(ip) = name.parse::<IpAddr>() {
                        eps.push(Arc::new(Endpoint::new(SocketAddr::new(ip, *port), *weight)));
                        continue;
                    }
                    let Some(r) = resolver() else {
                        failed = true;
                        break;
                    };
                    match r.lookup_ip(name.as_str()).await {
                        Ok(l) => {
                            let ttl = l.valid_until().saturating_duration_since(std::time::Instant::now());
                            wait = wait.min(ttl.clamp(MIN_TTL, MAX_TTL));
                            for ip in l.iter() {
                                eps.push(Arc::new(Endpoint::new(SocketAddr::new(ip, *port), *weight)));
                                if first_only {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            failed = true;
                            wait = wait.min(Duration::from_secs(5));
                            tracing::warn!(host = %name, error = %e, "DNS lookup failed; keeping the previous addresses");
                        }
                    }
                }
                let Some(rt) = cluster.upgrade() else { return };
                if !failed || !eps.is_empty() {
                    replace_endpoints(&rt, eps);
                }
                drop(rt);
                tokio::time::sleep(wait).await;
            }
        })
        .abort_handle()
}
