//! `gatehouse routes DIR [--group G]`: the compiled listeners, hosts, routes and clusters.

use std::io::{self, Write};
use std::path::Path;

use tenants::LoadOptions;
use tenants::model::HttpMatch;
use tenants::snapshot::{
    ChainAction, Endpoints, GroupSnapshot, ListenerKind, RouteAction, RouteTable, TcpProxy,
    WeightedCluster,
};

use crate::repo;

/// Prints the compiled configuration of `dir`; returns false when nothing could be compiled.
pub fn routes(dir: &Path, group: Option<&str>, out: &mut dyn Write) -> io::Result<bool> {
    let files = repo::read_dir(dir).map_err(io::Error::other)?;
    let loaded = tenants::load(&files, &LoadOptions::default());
    let built = match tenants::build(&loaded, "local", None) {
        Ok(b) => b,
        Err(tenants::BuildError::Platform { diagnostics }) => {
            for d in diagnostics.iter().filter(|d| d.is_error()) {
                writeln!(out, "{d}")?;
            }
            return Ok(false);
        }
        Err(e) => return Err(io::Error::other(e)),
    };
    let errors = built.diagnostics.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        writeln!(
            out,
            "# {errors} errors: those tenants are not shown (run `gatehouse validate`)"
        )?;
    }
    let mut shown = false;
    for (name, g) in &built.snapshot.groups {
        if group.is_some_and(|want| want != name) {
            continue;
        }
        shown = true;
        print_group(name, g, out)?;
    }
    if let (Some(want), false) = (group, shown) {
        writeln!(out, "no enabled group named {want:?}")?;
        return Ok(false);
    }
    Ok(true)
}

fn print_group(name: &str, g: &GroupSnapshot, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "group {name} ({:?})", g.group.kind)?;
    for l in &g.listeners {
        let kind = match &l.kind {
            ListenerKind::Http(_) => "HTTP",
            ListenerKind::Tls(_) => "TLS",
            ListenerKind::Tcp(_) => "TCP",
        };
        writeln!(
            out,
            "  listener {} {kind} (gateway port {})",
            l.address, l.gateway_port
        )?;
        match &l.kind {
            ListenerKind::Http(t) => print_table(t, "    ", out)?,
            ListenerKind::Tcp(p) => print_tcp(p, "    ", out)?,
            ListenerKind::Tls(chains) => {
                for c in chains {
                    let sni = if c.server_names.is_empty() {
                        "*".to_string()
                    } else {
                        c.server_names
                            .iter()
                            .map(|h| h.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    match &c.action {
                        ChainAction::TerminateHttp { tls, routes } => {
                            writeln!(
                                out,
                                "    sni {sni}  tenant {}  terminate {:?} ({})",
                                c.tenant,
                                tls.mode,
                                credentials(tls)
                            )?;
                            print_table(routes, "      ", out)?;
                        }
                        ChainAction::TerminateTcp { tls, tcp } => {
                            writeln!(
                                out,
                                "    sni {sni}  tenant {}  terminate {:?} ({}) then tcp",
                                c.tenant,
                                tls.mode,
                                credentials(tls)
                            )?;
                            print_tcp(tcp, "      ", out)?;
                        }
                        ChainAction::Passthrough(p) => {
                            writeln!(out, "    sni {sni}  tenant {}  passthrough", c.tenant)?;
                            print_tcp(p, "      ", out)?;
                        }
                    }
                }
            }
        }
    }
    for (name, c) in &g.clusters {
        let eps = match &c.endpoints {
            Endpoints::Static(v) if v.is_empty() => "no endpoints".to_string(),
            Endpoints::Static(v) => v
                .iter()
                .map(|e| match &e.unix {
                    Some(path) => format!("unix://{path}"),
                    None => e.address.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
            Endpoints::Dns { names, .. } => format!(
                "dns {}",
                names
                    .iter()
                    .map(|(n, p, _)| format!("{n}:{p}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Endpoints::Dynamic {
                name: Some(n),
                port,
                ..
            } => format!("{n}:{port}, resolved when asked (DYNAMIC_DNS)"),
            Endpoints::Dynamic { hosts, port, .. } => format!(
                "the requested name, if {} covers it, port {port} (DYNAMIC_DNS)",
                hosts.join(" or ")
            ),
            Endpoints::None => "no endpoints (resolution NONE)".into(),
        };
        let tls = c
            .tls
            .as_ref()
            .map(|t| format!("  tls {:?}", t.mode))
            .unwrap_or_default();
        let lb = c
            .policy
            .load_balancer
            .as_ref()
            .map_or_else(|| "LEAST_REQUEST".to_string(), |l| format!("{l:?}"));
        writeln!(
            out,
            "  cluster {name}  tenant {}  {:?}  lb {lb}{tls}  {eps}",
            c.tenant, c.protocol
        )?;
    }
    Ok(())
}

/// The chain's certificate source, or both of them (`credentialNames`).
fn credentials(tls: &tenants::snapshot::TlsContext) -> String {
    match &tls.second_credential {
        Some(s) => format!("{} + {}", credential(&tls.credential), credential(s)),
        None => credential(&tls.credential),
    }
}

fn credential(c: &tenants::snapshot::CredentialRef) -> String {
    match &c.source {
        tenants::model::Credential::Name(n) => format!("credential {}/{n}", c.namespace),
        tenants::model::Credential::Files { cert, .. } => format!("file {cert}"),
    }
}

fn print_table(t: &RouteTable, indent: &str, out: &mut dyn Write) -> io::Result<()> {
    if t.vhosts.is_empty() {
        writeln!(out, "{indent}(no virtual hosts: every request gets 404)")?;
    }
    for vh in &t.vhosts {
        let redirect = if vh.require_tls {
            "  [301 to https]"
        } else {
            ""
        };
        writeln!(
            out,
            "{indent}host {}  tenant {}{redirect}",
            vh.name, vh.tenant
        )?;
        for r in &vh.routes {
            let action = match &r.body.action {
                RouteAction::Forward(cs) => clusters(cs),
                RouteAction::Redirect(rd) => format!("redirect {}", rd.code),
                RouteAction::Direct { status, .. } => format!("respond {status}"),
            };
            // A delegated route belongs to its delegate's tenant, not the host's.
            let owner = if *r.body.tenant == *vh.tenant {
                String::new()
            } else {
                format!("  (tenant {}, {})", r.body.tenant, r.virtual_service)
            };
            writeln!(
                out,
                "{indent}  route {:<20} {:<36} -> {action}{owner}",
                r.name,
                describe(r.matcher.as_deref())
            )?;
        }
    }
    Ok(())
}

fn print_tcp(p: &TcpProxy, indent: &str, out: &mut dyn Write) -> io::Result<()> {
    for r in &p.by_address {
        let when: Vec<String> = r
            .matches
            .iter()
            .map(|m| {
                let mut w = Vec::new();
                if let Some(s) = m.source {
                    w.push(format!("from {s}"));
                }
                if !m.destination.is_empty() {
                    let d: Vec<String> = m.destination.iter().map(ToString::to_string).collect();
                    w.push(format!("to {}", d.join("|")));
                }
                w.join(" ")
            })
            .collect();
        writeln!(
            out,
            "{indent}tcp {}  tenant {}  {} -> {}",
            r.name,
            p.tenant,
            when.join(" or "),
            clusters(&r.clusters)
        )?;
    }
    if p.clusters.is_empty() && !p.by_address.is_empty() {
        return writeln!(out, "{indent}tcp  any other connection is closed");
    }
    writeln!(
        out,
        "{indent}tcp {}  tenant {} -> {}",
        p.name,
        p.tenant,
        clusters(&p.clusters)
    )
}

fn clusters(cs: &[WeightedCluster]) -> String {
    let total: u64 = cs.iter().map(|c| u64::from(c.weight)).sum();
    cs.iter()
        .map(|c| {
            if cs.len() == 1 || total == 0 {
                c.cluster.to_string()
            } else {
                format!("{}% {}", u64::from(c.weight) * 100 / total, c.cluster)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(m: Option<&HttpMatch>) -> String {
    let Some(m) = m else { return "match *".into() };
    let mut parts = Vec::new();
    if let Some(u) = &m.uri {
        parts.push(format!("uri {u}"));
    }
    if let Some(x) = &m.method {
        parts.push(format!("method {x}"));
    }
    if let Some(x) = &m.authority {
        parts.push(format!("authority {x}"));
    }
    for (k, v) in &m.headers {
        parts.push(format!("header {k} {v}"));
    }
    for (k, v) in &m.query_params {
        parts.push(format!("query {k} {v}"));
    }
    if let Some(p) = m.port {
        parts.push(format!("port {p}"));
    }
    if parts.is_empty() {
        "match *".into()
    } else {
        format!("match {}", parts.join(" & "))
    }
}
