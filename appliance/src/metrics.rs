//! `/metrics` in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::control::Control;

/// Renders the current metrics.
pub fn render(control: &Control) -> String {
    let shared = control.shared();
    let rt = shared.runtime.load_full();
    let st = shared.with_status(|s| s.clone());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# TYPE gatehouse_config_generation gauge\ngatehouse_config_generation {}",
        st.generation
    );
    let _ = writeln!(
        out,
        "# TYPE gatehouse_reloads_total counter\ngatehouse_reloads_total {}",
        st.reloads
    );
    let _ = writeln!(
        out,
        "# TYPE gatehouse_reload_failures_total counter\ngatehouse_reload_failures_total {}",
        st.reload_failures
    );
    let _ = writeln!(
        out,
        "# TYPE gatehouse_downstream_connections gauge\ngatehouse_downstream_connections {}",
        shared.connections.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# TYPE gatehouse_tenant_rate_limited_total counter");
    for (name, t) in &rt.tenants {
        let _ = writeln!(
            out,
            "gatehouse_tenant_rate_limited_total{{tenant=\"{name}\"}} {}",
            t.rate_limited.load(Ordering::Relaxed)
        );
    }
    out
}
