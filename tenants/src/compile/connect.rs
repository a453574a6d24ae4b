//! HTTP CONNECT targets of an egress group — a gatehouse extension for bare-metal clients
//! that cannot be pointed at the gateway by DNS. A client may CONNECT to `host:port` only when
//! a tenant attached to the group owns `host` (its Tenant `hosts`) and declares it, with that
//! port, in a ServiceEntry: the same registry that decides what the egress group reaches.

use std::collections::BTreeMap;

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
            for host in se.hosts.iter().filter(|h| !h.is_wildcard()) {
                if !def.hosts.iter().any(|own| own.covers(host.as_str())) {
                    continue;
                }
                for port in &se.ports {
                    let dest = Destination {
                        host: host.clone(),
                        subset: None,
                        port: Some(port.number),
                        path: FieldPath::root(),
                    };
                    let cluster = clusters.resolve(world, name, &dest, port.number);
                    out.entry(format!("{}:{}", host.as_str(), port.number))
                        .or_insert_with(|| ConnectTarget {
                            tenant: (*name).to_string(),
                            cluster,
                        });
                }
            }
        }
    }
    out
}
