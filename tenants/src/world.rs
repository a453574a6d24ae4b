//! The set of namespaces being compiled together, with Istio's lookup rules for services,
//! DestinationRules and Gateways across namespaces.

use std::collections::BTreeMap;

use crate::load::Objects;
use crate::model::{
    DelegateRef, DestinationRule, Gateway, GatewayGroup, GatewayRef, PLATFORM_NAMESPACE,
    PortPolicy, ServiceEntry, Subset, TenantDef, TrafficPolicy, VirtualService,
};
use crate::types::Host;

/// Every namespace's effective objects (new, or last good), plus the platform's settings.
pub(crate) struct World<'a> {
    /// Gateway groups.
    pub groups: &'a [GatewayGroup],
    /// Tenant registry.
    pub tenant_defs: BTreeMap<&'a str, &'a TenantDef>,
    /// Effective objects by namespace, `istio-system` included.
    pub namespaces: BTreeMap<&'a str, &'a Objects>,
}

/// A service found for a destination.
pub(crate) struct Found<'a> {
    /// The namespace that declares it.
    pub namespace: &'a str,
    /// The entry.
    pub entry: &'a ServiceEntry,
    /// The entry's host that matched.
    pub host: &'a Host,
}

/// Why a root rule's `delegate` names nothing it can use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DelegateMiss {
    #[error("delegate VirtualService {0} not found")]
    NotFound(String),
    #[error("VirtualService {0} has hosts: only a VirtualService without hosts can be a delegate")]
    HasHosts(String),
    #[error(
        "delegate VirtualService {name} is not exported to namespace {from:?} (add {from:?} to its exportTo)"
    )]
    NotExported { name: String, from: String },
}

/// DestinationRules merged for one host as Istio merges them.
#[derive(Default)]
pub(crate) struct MergedRule<'a> {
    /// First top-level policy wins.
    pub policy: Option<&'a TrafficPolicy>,
    /// Subsets concatenated, first of a name wins.
    pub subsets: Vec<&'a Subset>,
}

impl MergedRule<'_> {
    /// The subset called `name`.
    pub(crate) fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().copied().find(|s| s.name == name)
    }

    /// The effective policy for `port` and `subset`.
    pub(crate) fn effective(&self, port: u16, subset: Option<&str>) -> PortPolicy {
        let sub = subset
            .and_then(|s| self.subset(s))
            .and_then(|s| s.policy.as_ref());
        TrafficPolicy::effective(self.policy, sub, port)
    }
}

impl<'a> World<'a> {
    /// Whether tenant `ns` may attach to group `group` (the platform may use every group).
    pub(crate) fn may_use_group(&self, ns: &str, group: &str) -> bool {
        ns == PLATFORM_NAMESPACE
            || self
                .tenant_defs
                .get(ns)
                .is_some_and(|t| t.gateways.iter().any(|g| g == group))
    }

    /// The groups a Gateway applies to: those its selector picks (all when none), limited to
    /// the groups its tenant may use.
    pub(crate) fn groups_of(&self, gw: &Gateway) -> Vec<&'a GatewayGroup> {
        self.groups
            .iter()
            .filter(|g| g.enabled)
            .filter(|g| gw.selector.as_ref().is_none_or(|s| g.selected_by(s)))
            .filter(|g| self.may_use_group(&gw.meta.namespace, &g.name))
            .collect()
    }

    /// The Gateway a reference names.
    pub(crate) fn gateway(&self, r: &GatewayRef) -> Option<&'a Gateway> {
        let GatewayRef::Named { namespace, name } = r else {
            return None;
        };
        self.namespaces
            .get(namespace.as_str())?
            .gateways
            .iter()
            .find(|g| &g.meta.name == name)
    }

    /// The service a destination host names, as seen from namespace `from`: the own
    /// namespace first, then the platform, then namespaces that export to `from`; within
    /// each, an exact host before the most specific wildcard.
    pub(crate) fn service(&self, from: &str, host: &Host) -> Option<Found<'a>> {
        let order = [from, PLATFORM_NAMESPACE];
        let own = order
            .iter()
            .filter_map(|ns| self.namespaces.get_key_value(*ns));
        let others = self
            .namespaces
            .iter()
            .filter(|(ns, _)| !order.contains(*ns));
        for (ns, objs) in own.chain(others) {
            let mut best: Option<Found<'a>> = None;
            for se in &objs.service_entries {
                if !se.export_to.visible(ns, from) && *ns != from {
                    continue;
                }
                for h in &se.hosts {
                    if !host.subset_of(h) {
                        continue;
                    }
                    let better = best.as_ref().is_none_or(|b| {
                        (b.host.is_wildcard() && !h.is_wildcard())
                            || h.as_str().len() > b.host.as_str().len()
                    });
                    if better {
                        best = Some(Found {
                            namespace: ns,
                            entry: se,
                            host: h,
                        });
                    }
                }
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// The delegate a root rule of namespace `from` names, if `from` may use it (Istio keeps
    /// only VirtualServices without hosts as delegates, and checks their `exportTo`).
    pub(crate) fn delegate(
        &self,
        from: &str,
        r: &DelegateRef,
    ) -> Result<&'a VirtualService, DelegateMiss> {
        let full = format!("{}/{}", r.namespace, r.name);
        let vs = self
            .namespaces
            .get(r.namespace.as_str())
            .and_then(|o| o.virtual_services.iter().find(|v| v.meta.name == r.name))
            .ok_or_else(|| DelegateMiss::NotFound(full.clone()))?;
        // Another tenant's VirtualService with hosts is "not found", as Istio's index of
        // delegates (those without hosts) has it: its name is not told across tenants.
        if !vs.is_delegate {
            return Err(if r.namespace == from {
                DelegateMiss::HasHosts(full)
            } else {
                DelegateMiss::NotFound(full)
            });
        }
        if !vs.export_to.visible(&r.namespace, from) {
            return Err(DelegateMiss::NotExported {
                name: full,
                from: from.to_string(),
            });
        }
        Ok(vs)
    }

    /// The namespaces whose root rules name `ns/name` as their delegate.
    pub(crate) fn delegated_by<'s>(
        &'s self,
        ns: &'s str,
        name: &'s str,
    ) -> impl Iterator<Item = &'a str> + 's {
        self.namespaces
            .iter()
            .filter(move |(_, o)| {
                o.virtual_services
                    .iter()
                    .flat_map(VirtualService::delegations)
                    .any(|(_, d)| d.namespace == ns && d.name == name)
            })
            .map(|(from, _)| *from)
    }

    /// Whether some namespace declares `host` but keeps it from `from` (for error messages).
    pub(crate) fn hidden_owner(&self, from: &str, host: &Host) -> Option<&'a str> {
        self.namespaces.iter().find_map(|(ns, objs)| {
            (*ns != from
                && objs.service_entries.iter().any(|se| {
                    !se.export_to.visible(ns, from) && se.hosts.iter().any(|h| host.subset_of(h))
                }))
            .then_some(*ns)
        })
    }

    /// DestinationRules for `host` of a service in `service_ns`, seen from `from`: the
    /// service's namespace, then the consumer's, then the root namespace; the most specific
    /// host within the first namespace that has one; same-host rules merged.
    pub(crate) fn destination_rule(
        &self,
        from: &str,
        service_ns: &str,
        host: &Host,
    ) -> MergedRule<'a> {
        for ns in [service_ns, from, PLATFORM_NAMESPACE] {
            let Some(objs) = self.namespaces.get(ns) else {
                continue;
            };
            let visible: Vec<&'a DestinationRule> = objs
                .destination_rules
                .iter()
                .filter(|dr| {
                    ns == from
                        || ns == PLATFORM_NAMESPACE
                        || dr.export_to.visible(ns, from)
                        || ns == service_ns && from == service_ns
                })
                .filter(|dr| host.subset_of(&dr.host))
                .collect();
            let best = visible
                .iter()
                .map(|dr| &dr.host)
                .max_by_key(|h| (!h.is_wildcard(), h.as_str().len()));
            let Some(best) = best else { continue };
            let mut merged = MergedRule::default();
            for dr in visible.iter().filter(|dr| &dr.host == best) {
                if merged.policy.is_none() {
                    merged.policy = dr.policy.as_ref();
                }
                for s in &dr.subsets {
                    if merged.subset(&s.name).is_none() {
                        merged.subsets.push(s);
                    }
                }
            }
            return merged;
        }
        MergedRule::default()
    }
}
