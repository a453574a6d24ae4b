//! `/metrics` (Prometheus text) and the OTLP metrics push: Istio's standard metrics from the
//! telemetry registry, plus per-tenant quota rejections, credential expiry, reload status and
//! the tokio runtimes' own metrics (tokio-metrics).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_metrics::RuntimeMonitor;

use crate::control::Control;
use crate::telemetry::otlp;
use crate::telemetry::prometheus::esc;

/// Cumulative totals of one worker runtime, built from tokio-metrics intervals.
#[derive(Default, Clone, Copy)]
struct RuntimeTotals {
    live_tasks: usize,
    parks: u64,
    busy: Duration,
    global_queue: usize,
}

/// The runtimes being observed.
#[derive(Default)]
pub struct Runtimes {
    monitors: Mutex<Vec<(String, tokio_metrics::RuntimeIntervals, RuntimeTotals)>>,
}

impl Runtimes {
    /// Observes the runtime behind `handle`, labelled `name`.
    pub fn register(&self, name: String, handle: &tokio::runtime::Handle) {
        let m = RuntimeMonitor::new(handle);
        if let Ok(mut v) = self.monitors.lock() {
            v.push((name, m.intervals(), RuntimeTotals::default()));
        }
    }

    fn sample(&self) -> Vec<(String, RuntimeTotals)> {
        let Ok(mut v) = self.monitors.lock() else {
            return Vec::new();
        };
        v.iter_mut()
            .map(|(name, it, tot)| {
                if let Some(i) = it.next() {
                    tot.live_tasks = i.live_tasks_count;
                    tot.parks += i.total_park_count;
                    tot.busy += i.total_busy_duration;
                    tot.global_queue = i.global_queue_depth;
                }
                (name.clone(), *tot)
            })
            .collect()
    }
}

/// Renders the current metrics.
pub fn render(control: &Control) -> String {
    let shared = control.shared();
    let rt = shared.runtime.load_full();
    let st = shared.with_status(|s| s.clone());
    let mut out = String::new();
    crate::telemetry::prometheus::render(&shared.telemetry.registry, &mut out);
    let _ = writeln!(
        out,
        "# HELP gatehouse_config_generation Configuration generation served.\n# TYPE gatehouse_config_generation gauge\ngatehouse_config_generation {}",
        st.generation
    );
    let _ = writeln!(
        out,
        "# HELP gatehouse_reloads_total Reloads attempted.\n# TYPE gatehouse_reloads_total counter\ngatehouse_reloads_total {}",
        st.reloads
    );
    let _ = writeln!(
        out,
        "# HELP gatehouse_reload_failures_total Reloads refused (the previous generation kept serving).\n# TYPE gatehouse_reload_failures_total counter\ngatehouse_reload_failures_total {}",
        st.reload_failures
    );
    let _ = writeln!(
        out,
        "# HELP gatehouse_downstream_connections Open downstream connections.\n# TYPE gatehouse_downstream_connections gauge\ngatehouse_downstream_connections {}",
        shared.connections.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP gatehouse_quic_connections Open HTTP/3 (QUIC) connections.\n# TYPE gatehouse_quic_connections gauge\ngatehouse_quic_connections {}",
        shared.quic_connections.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP gatehouse_tenant_rate_limited_total Requests refused with 429 by the tenant's requestsPerSecond.\n# TYPE gatehouse_tenant_rate_limited_total counter"
    );
    let mut tenants: Vec<_> = rt.tenants.iter().collect();
    tenants.sort_by(|a, b| a.0.cmp(b.0));
    for (name, t) in &tenants {
        let _ = writeln!(
            out,
            "gatehouse_tenant_rate_limited_total{{tenant=\"{}\"}} {}",
            esc(name),
            t.rate_limited.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_tenant_connections_refused_total Connections refused by the tenant's maxConnections.\n# TYPE gatehouse_tenant_connections_refused_total counter"
    );
    for (name, t) in &tenants {
        let _ = writeln!(
            out,
            "gatehouse_tenant_connections_refused_total{{tenant=\"{}\"}} {}",
            esc(name),
            t.refused_connections.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_tenant_connections Open connections attributed to the tenant.\n# TYPE gatehouse_tenant_connections gauge"
    );
    for (name, t) in &tenants {
        let _ = writeln!(
            out,
            "gatehouse_tenant_connections{{tenant=\"{}\"}} {}",
            esc(name),
            t.connections.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_tenant_config_state 1 for the tenant's current state (applied, lastGood, refused).\n# TYPE gatehouse_tenant_config_state gauge"
    );
    for (name, t) in &rt.snapshot.tenants {
        let state = serde_json::to_value(t.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "gatehouse_tenant_config_state{{tenant=\"{}\",state=\"{state}\"}} 1",
            esc(name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_credential_expiry_seconds Seconds until the served certificate expires.\n# TYPE gatehouse_credential_expiry_seconds gauge"
    );
    for c in shared.store.statuses() {
        if let Some(s) = c.expires_in_seconds {
            let serial = c
                .certificate
                .as_ref()
                .map(|x| x.serial.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "gatehouse_credential_expiry_seconds{{credential=\"{}\",serial=\"{serial}\"}} {s}",
                esc(&c.name)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_credential_load_error 1 when the credential's last load failed (the last good one keeps serving).\n# TYPE gatehouse_credential_load_error gauge"
    );
    for c in shared.store.statuses() {
        let _ = writeln!(
            out,
            "gatehouse_credential_load_error{{credential=\"{}\"}} {}",
            esc(&c.name),
            u8::from(c.error.is_some())
        );
    }
    let samples = shared.runtimes.sample();
    let _ = writeln!(
        out,
        "# HELP gatehouse_runtime_live_tasks Tasks alive on the runtime (tokio-metrics).\n# TYPE gatehouse_runtime_live_tasks gauge"
    );
    for (n, t) in &samples {
        let _ = writeln!(
            out,
            "gatehouse_runtime_live_tasks{{runtime=\"{n}\"}} {}",
            t.live_tasks
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_runtime_busy_seconds_total Time the runtime's workers were busy.\n# TYPE gatehouse_runtime_busy_seconds_total counter"
    );
    for (n, t) in &samples {
        let _ = writeln!(
            out,
            "gatehouse_runtime_busy_seconds_total{{runtime=\"{n}\"}} {}",
            t.busy.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_runtime_parks_total Times the runtime's workers parked.\n# TYPE gatehouse_runtime_parks_total counter"
    );
    for (n, t) in &samples {
        let _ = writeln!(
            out,
            "gatehouse_runtime_parks_total{{runtime=\"{n}\"}} {}",
            t.parks
        );
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_runtime_global_queue_depth Tasks waiting in the runtime's injection queue.\n# TYPE gatehouse_runtime_global_queue_depth gauge"
    );
    for (n, t) in &samples {
        let _ = writeln!(
            out,
            "gatehouse_runtime_global_queue_depth{{runtime=\"{n}\"}} {}",
            t.global_queue
        );
    }
    out
}

/// The non-Istio metrics as OTLP points.
fn extra(control: &Control) -> Vec<opentelemetry_proto::tonic::metrics::v1::Metric> {
    let shared = control.shared();
    let rt = shared.runtime.load_full();
    let st = shared.with_status(|s| s.clone());
    let tenants: Vec<(String, Arc<crate::quota::TenantRt>)> = rt
        .tenants
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let runtimes = shared.runtimes.sample();
    let per_runtime = |f: fn(&RuntimeTotals) -> i64| {
        runtimes
            .iter()
            .map(|(n, t)| (vec![("runtime", n.clone())], f(t)))
            .collect::<Vec<_>>()
    };
    vec![
        otlp::int_metric(
            "gatehouse_runtime_live_tasks",
            "Tasks alive on the runtime (tokio-metrics)",
            false,
            per_runtime(|t| t.live_tasks as i64),
        ),
        otlp::int_metric(
            "gatehouse_runtime_parks_total",
            "Times the runtime's workers parked",
            true,
            per_runtime(|t| t.parks as i64),
        ),
        otlp::int_metric(
            "gatehouse_runtime_global_queue_depth",
            "Tasks waiting in the runtime's injection queue",
            false,
            per_runtime(|t| t.global_queue as i64),
        ),
        otlp::int_metric(
            "gatehouse_tenant_rate_limited_total",
            "Requests refused with 429 by the tenant's requestsPerSecond",
            true,
            tenants
                .iter()
                .map(|(n, t)| {
                    (
                        vec![("tenant", n.clone())],
                        t.rate_limited.load(Ordering::Relaxed) as i64,
                    )
                })
                .collect(),
        ),
        otlp::int_metric(
            "gatehouse_tenant_connections_refused_total",
            "Connections refused by the tenant's maxConnections",
            true,
            tenants
                .iter()
                .map(|(n, t)| {
                    (
                        vec![("tenant", n.clone())],
                        t.refused_connections.load(Ordering::Relaxed) as i64,
                    )
                })
                .collect(),
        ),
        otlp::int_metric(
            "gatehouse_config_generation",
            "Configuration generation served",
            false,
            vec![(vec![], st.generation as i64)],
        ),
        otlp::int_metric(
            "gatehouse_reload_failures_total",
            "Reloads refused",
            true,
            vec![(vec![], st.reload_failures as i64)],
        ),
        otlp::int_metric(
            "gatehouse_credential_expiry_seconds",
            "Seconds until the served certificate expires",
            false,
            shared
                .store
                .statuses()
                .into_iter()
                .filter_map(|c| {
                    c.expires_in_seconds
                        .map(|s| (vec![("credential", c.name.clone())], s))
                })
                .collect(),
        ),
    ]
}

/// Pushes metrics over OTLP every interval while an endpoint is configured.
pub async fn push(control: Arc<Control>) {
    loop {
        let telemetry = control.shared().telemetry.clone();
        let settings = telemetry.settings.load_full();
        tokio::time::sleep(settings.metric_interval).await;
        let Some(ep) = &settings.metrics else {
            continue;
        };
        let req = otlp::metrics_request(
            &telemetry.registry,
            extra(&control),
            &settings.resource,
            telemetry.start_nanos,
        );
        if let Err(e) = otlp::send_metrics(ep, req).await {
            tracing::warn!(error = %e, "metrics export failed");
        }
    }
}
