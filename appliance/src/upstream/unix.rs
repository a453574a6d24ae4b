//! Platform `unix://` endpoints. Inside the data plane a socket goes by the address that
//! stands in for it (`tenants::snapshot::unix_stand_in`), so balancing, pools and outlier
//! state treat it as any endpoint; only connecting and logging need its name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

/// The names of the sockets stand-ins were made for. Entries are never removed: there is
/// one per socket the platform ever declared.
fn names() -> &'static RwLock<HashMap<SocketAddr, Arc<str>>> {
    static NAMES: OnceLock<RwLock<HashMap<SocketAddr, Arc<str>>>> = OnceLock::new();
    NAMES.get_or_init(RwLock::default)
}

/// The path to connect to for a ServiceEntry's `unix://` address (`@name` is an abstract
/// socket), remembering the name for logs.
pub fn path(address: &str) -> PathBuf {
    let stand_in = tenants::snapshot::unix_stand_in(address);
    if let Ok(mut n) = names().write() {
        n.entry(stand_in).or_insert_with(|| Arc::from(address));
    }
    match address.strip_prefix('@') {
        Some(abstract_name) => PathBuf::from(format!("\0{abstract_name}")),
        None => PathBuf::from(address),
    }
}

/// An upstream address as logs show it: a unix socket by its name, as Envoy shows a pipe.
#[derive(Debug, Clone, Copy)]
pub struct Shown(pub SocketAddr);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if tenants::snapshot::is_unix_stand_in(&self.0)
            && let Some(name) = names().read().ok().and_then(|n| n.get(&self.0).cloned())
        {
            return f.write_str(&name);
        }
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_shown_by_name_and_abstract_ones_get_a_nul() {
        assert_eq!(path("/run/app.sock"), PathBuf::from("/run/app.sock"));
        assert_eq!(path("@app"), PathBuf::from("\0app"));
        let s = tenants::snapshot::unix_stand_in("/run/app.sock");
        assert_eq!(Shown(s).to_string(), "/run/app.sock");
        assert_eq!(
            Shown(tenants::snapshot::unix_stand_in("@app")).to_string(),
            "@app"
        );
        let tcp: SocketAddr = ([127, 0, 0, 1], 8080).into();
        assert_eq!(Shown(tcp).to_string(), "127.0.0.1:8080");
    }
}
