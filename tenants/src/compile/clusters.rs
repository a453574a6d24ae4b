//! Clusters: `outbound|port|subset|host`, built only when a route references them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::ClusterMap;
use crate::model::{
    ClientTlsMode, Credential, Destination, Endpoint, EndpointAddress, GatewayGroup, Resolution,
};
use crate::snapshot::{
    Cluster, CredentialRef, Endpoints, StaticEndpoint, UpstreamProtocol, UpstreamTls, cluster_name,
};
use crate::types::Protocol;
use crate::world::World;

/// Builds the clusters of one group on demand.
pub(crate) struct ClusterBuilder<'g> {
    group: &'g GatewayGroup,
    clusters: BTreeMap<String, Arc<Cluster>>,
}

impl<'g> ClusterBuilder<'g> {
    pub(crate) fn new(group: &'g GatewayGroup) -> Self {
        Self {
            group,
            clusters: BTreeMap::new(),
        }
    }

    pub(crate) fn finish(self) -> ClusterMap {
        self.clusters
    }

    /// The cluster for `dest` as routed from namespace `from` on a listener whose Gateway port
    /// is `listener_port`. A destination nothing declares still gets a name: requests to it
    /// answer 503 with no healthy upstream, as in Envoy.
    pub(crate) fn resolve(
        &mut self,
        world: &World<'_>,
        from: &str,
        dest: &Destination,
        listener_port: u16,
    ) -> String {
        let Some(found) = world.service(from, &dest.host) else {
            return cluster_name(
                dest.port.unwrap_or(listener_port),
                dest.subset.as_deref(),
                &dest.host,
            );
        };
        let se = found.entry;
        let svc_port = match dest.port {
            Some(p) => se.port(Some(p)),
            None => se.port(None).or_else(|| se.port(Some(listener_port))),
        };
        let port = svc_port.map_or_else(|| dest.port.unwrap_or(listener_port), |p| p.number);
        // A wildcard entry keeps the requested host so DNS and SNI use the real name.
        let host = if found.host.is_wildcard() {
            dest.host.clone()
        } else {
            found.host.clone()
        };
        let name = cluster_name(port, dest.subset.as_deref(), &host);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let dr = world.destination_rule(from, found.namespace, found.host);
        let policy = dr.effective(port, dest.subset.as_deref());
        let subset_labels = dest
            .subset
            .as_deref()
            .and_then(|s| dr.subset(s))
            .map(|s| s.labels.clone())
            .unwrap_or_default();
        let service_protocol = svc_port.map_or(Protocol::Http, |p| p.protocol);
        let target_port = svc_port.and_then(|p| p.target_port).unwrap_or(port);
        let port_name = svc_port.map(|p| p.name.clone()).unwrap_or_default();
        let mut members: Vec<&Endpoint> = se.endpoints.iter().collect();
        if let Some(sel) = &se.workload_selector
            && let Some(objs) = world.namespaces.get(found.namespace)
        {
            members.extend(
                objs.workload_entries
                    .iter()
                    .filter(|we| {
                        sel.iter()
                            .all(|(k, v)| we.endpoint.labels.get(k) == Some(v))
                    })
                    .map(|we| &we.endpoint),
            );
        }
        let members: Vec<&Endpoint> = members
            .into_iter()
            .filter(|e| {
                subset_labels
                    .iter()
                    .all(|(k, v)| e.labels.get(k) == Some(v))
            })
            .collect();
        let ep_port = |e: &Endpoint| e.ports.get(&port_name).copied().unwrap_or(target_port);
        let endpoints = match se.resolution {
            Resolution::Static => Endpoints::Static(
                members
                    .iter()
                    .filter_map(|e| match &e.address {
                        Some(EndpointAddress::Ip(ip)) => Some(StaticEndpoint {
                            address: SocketAddr::new(*ip, ep_port(e)),
                            weight: e.weight,
                            unix: None,
                        }),
                        Some(EndpointAddress::Unix(path)) => Some(StaticEndpoint {
                            address: crate::snapshot::unix_stand_in(path),
                            weight: e.weight,
                            unix: Some(path.clone()),
                        }),
                        _ => None,
                    })
                    .collect(),
            ),
            Resolution::Dns | Resolution::DnsRoundRobin => {
                let names: Vec<(String, u16, u32)> = if members.is_empty()
                    && se.endpoints.is_empty()
                    && se.workload_selector.is_none()
                {
                    vec![(host.as_str().to_string(), target_port, 1)]
                } else {
                    members
                        .iter()
                        .filter_map(|e| match &e.address {
                            Some(EndpointAddress::Ip(ip)) => {
                                Some((ip.to_string(), ep_port(e), e.weight))
                            }
                            Some(EndpointAddress::Dns(n)) => {
                                Some((n.clone(), ep_port(e), e.weight))
                            }
                            _ => None,
                        })
                        .collect()
                };
                Endpoints::Dns {
                    names,
                    first_only: se.resolution == Resolution::DnsRoundRobin,
                }
            }
            Resolution::DynamicDns => Endpoints::Dynamic {
                hosts: se.hosts.iter().map(|h| h.as_str().to_string()).collect(),
                name: (!host.is_wildcard()).then(|| host.as_str().to_string()),
                port: target_port,
            },
            Resolution::None => Endpoints::None,
        };
        let tls = policy.tls.as_ref().and_then(|t| match t.mode {
            ClientTlsMode::Simple | ClientTlsMode::Mutual => Some(UpstreamTls {
                mode: t.mode,
                credential: match (&t.credential_name, &t.client_certificate, &t.private_key) {
                    (Some(n), _, _) => Some(CredentialRef {
                        namespace: found.namespace.to_string(),
                        source: Credential::Name(n.clone()),
                    }),
                    (None, Some(c), Some(k)) => Some(CredentialRef {
                        namespace: found.namespace.to_string(),
                        source: Credential::Files {
                            cert: c.clone(),
                            key: k.clone(),
                            ca: t.ca_certificates.clone(),
                            crl: t.ca_crl.clone(),
                        },
                    }),
                    _ => None,
                },
                ca_file: t.ca_certificates.clone(),
                crl_file: t.ca_crl.clone(),
                sni: t.sni.clone(),
                subject_alt_names: if t.subject_alt_names.is_empty() {
                    se.subject_alt_names.clone()
                } else {
                    t.subject_alt_names.clone()
                },
                insecure_skip_verify: t.insecure_skip_verify,
            }),
            ClientTlsMode::Disable | ClientTlsMode::IstioMutual => None,
        });
        let pool = policy.connection_pool.as_ref();
        // The HTTP protocol spoken when an HTTP route uses the cluster; TCP and TLS routes
        // copy bytes whatever this says.
        let protocol = if pool.is_some_and(|p| p.use_client_protocol) {
            UpstreamProtocol::ClientProtocol
        } else if service_protocol.is_http2() || pool.is_some_and(|p| p.h2_upgrade == Some(true)) {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Http1
        };
        let cluster = Cluster {
            name: name.clone(),
            tenant: found.namespace.to_string(),
            host,
            port,
            subset: dest.subset.clone(),
            service_protocol,
            protocol,
            endpoints,
            policy,
            tls,
            source_address: self.group.source_address,
        };
        self.clusters.insert(name.clone(), Arc::new(cluster));
        name
    }
}
