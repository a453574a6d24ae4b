//! Access-log policy per (group, tenant) from Telemetry resources, with Istio's inheritance:
//! root namespace → root with a selector → tenant namespace → tenant with a selector (one
//! namespace-wide Telemetry per namespace); a later level overrides an earlier one provider
//! by provider
//! (`pilot/pkg/model/telemetry.go`).
//!
//! Istio applies a namespace's Telemetry only to workloads in that namespace; the appliance's
//! gateways all live in `istio-system`, so gatehouse instead applies a tenant's Telemetry to
//! that tenant's traffic at the gateway (DESIGN.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cel::Expr;
use crate::model::{GatewayGroup, LogMode, MeshSettings, PLATFORM_NAMESPACE, Provider, Telemetry};
use crate::snapshot::{AccessLogPolicy, LogSink};
use crate::world::World;

/// Computes the policy of every namespace for `group`.
pub(crate) fn build(
    world: &World<'_>,
    mesh: &MeshSettings,
    group: &GatewayGroup,
) -> BTreeMap<String, Arc<AccessLogPolicy>> {
    let root: Vec<&Telemetry> = world
        .namespaces
        .get(PLATFORM_NAMESPACE)
        .map(|o| o.telemetries.iter().collect())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for ns in world.namespaces.keys() {
        let own: Vec<&Telemetry> = if *ns == PLATFORM_NAMESPACE {
            Vec::new()
        } else {
            world.namespaces[ns].telemetries.iter().collect()
        };
        out.insert(ns.to_string(), Arc::new(policy(mesh, group, &root, &own)));
    }
    out
}

fn policy(
    mesh: &MeshSettings,
    group: &GatewayGroup,
    root: &[&Telemetry],
    own: &[&Telemetry],
) -> AccessLogPolicy {
    // provider name -> (enabled, filter, mode)
    let mut state: BTreeMap<String, (bool, Option<Expr>, LogMode)> = BTreeMap::new();
    if mesh.access_log_file.is_some() {
        // `meshConfig.accessLogFile` turns the built-in envoy provider on everywhere, as
        // `istioctl install --set meshConfig.accessLogFile=/dev/stdout` does.
        state.insert("envoy".into(), (true, None, LogMode::ClientAndServer));
    }
    let defaults: Vec<String> = if mesh.default_access_logging.is_empty() {
        vec!["envoy".into()]
    } else {
        mesh.default_access_logging.clone()
    };
    // As Istio's `applicableTelemetries`: one namespace-wide Telemetry per namespace (Istio
    // takes the oldest; the repository's order stands in for creation time here, and
    // `policy::check_telemetries` warns about the rest), then every one whose selector
    // matches, in order.
    let selected = |t: &&&Telemetry| t.selector.as_ref().is_some_and(|s| group.selected_by(s));
    let levels = root
        .iter()
        .find(|t| t.selector.is_none())
        .into_iter()
        .chain(root.iter().filter(selected))
        .chain(own.iter().find(|t| t.selector.is_none()))
        .chain(own.iter().filter(selected));
    for t in levels {
        for rule in &t.access_logging {
            if rule.mode == LogMode::Server {
                continue;
            }
            let providers = if rule.providers.is_empty() {
                &defaults
            } else {
                &rule.providers
            };
            for p in providers {
                // An unset `disabled` keeps what the parent level said: a child must
                // write `disabled: false` to turn back on what a parent turned off.
                let enabled = match rule.disabled {
                    Some(d) => !d,
                    None => state.get(p).is_none_or(|(on, _, _)| *on),
                };
                state.insert(p.clone(), (enabled, rule.filter.clone(), rule.mode));
            }
        }
    }
    let sinks = state
        .into_iter()
        .filter(|(_, (on, _, _))| *on)
        .filter_map(|(name, (_, filter, mode))| {
            let provider = if name == "envoy" {
                mesh.envoy_provider.clone()
            } else {
                mesh.providers.get(&name)?.clone()
            };
            if matches!(provider, Provider::Other(_)) {
                return None;
            }
            Some(LogSink {
                name,
                provider,
                filter,
                mode,
            })
        })
        .collect();
    AccessLogPolicy { sinks }
}
