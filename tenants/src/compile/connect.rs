//! HTTP CONNECT targets of an egress group — a gatehouse extension for bare-metal clients
//! that cannot be pointed at the gateway by DNS. A client may CONNECT to `host:port` only when
//! a tenant attached to the group owns `host` (its Tenant `hosts`) and declares it, with that
//! port, in a ServiceEntry: the same registry that decides what the egress group reaches.
//! The entry's `addresses` are targets too, for the service of its first owned host.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::ClusterBuilder;
use crate::FieldPath;
use crate::model::{Destination, GatewayGroup, GroupKind};
use crate::snapshot::ConnectTarget;
use crate::world::World;

/// `host:port` → target, for an egress group; empty for ingress groups.
pub(crate) fn build(
    world: &World<'_>,
    group: &GatewayGroup,
    clusters: &mut ClusterBuilder<'_>,
) -> BTreeMap<String, ConnectTarget> {
    let mut out = BTreeMap::new();
    if group.kind != GroupKind::Egress {
        return out;
    }
    for (name, def) in &world.tenant_defs {
        if !def.gateways.contains(&group.name) {
            continue;
        }
        let Some(objs) = world.namespaces.get(name) else {
            continue;
        };
        for se in &objs.service_entries {
            // The ports and clusters of the entry's first host the tenant owns.
            let mut vip_targets: Option<Vec<(u16, String)>> = None;
            for host in se.hosts.iter().filter(|h| !h.is_wildcard()) {
                if !def.hosts.iter().any(|own| own.covers(host.as_str())) {
                    continue;
                }
                let first = vip_targets.is_none();
                let mut targets = Vec::new();
                for port in &se.ports {
                    let dest = Destination {
                        host: host.clone(),
                        subset: None,
                        port: Some(port.number),
                        path: FieldPath::root(),
                    };
                    let cluster = clusters.resolve(world, name, &dest, port.number);
                    if first {
                        targets.push((port.number, cluster.clone()));
                    }
                    out.entry(format!("{}:{}", host.as_str(), port.number))
                        .or_insert_with(|| ConnectTarget {
                            tenant: (*name).to_string(),
                            cluster,
                        });
                }
                if first {
                    vip_targets = Some(targets);
                }
            }
            // The entry's `addresses` (single IPs; a CIDR names no one target) reach the
            // service as its hosts do, as Istio routes traffic to a ServiceEntry's VIPs.
            for (port, cluster) in vip_targets.unwrap_or_default() {
                for ip in se.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    out.entry(SocketAddr::new(ip, port).to_string())
                        .or_insert_with(|| ConnectTarget {
                            tenant: (*name).to_string(),
                            cluster: cluster.clone(),
                        });
                }
            }
        }
    }
    out
}
