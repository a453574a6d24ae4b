//! Prometheus text exposition (format 0.0.4) of the registry.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::registry::{Histogram, Registry};

/// Escapes a label value.
pub fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", esc(v));
    }
    s.push('}');
    s
}

fn histogram(out: &mut String, name: &str, l: &str, h: &Histogram) {
    let (buckets, sum, count) = h.snapshot();
    let base = &l[..l.len() - 1];
    for (le, c) in buckets {
        let le = if le.is_infinite() {
            "+Inf".to_string()
        } else {
            format!("{le}")
        };
        let _ = writeln!(out, "{name}_bucket{base},le=\"{le}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_sum{l} {sum}");
    let _ = writeln!(out, "{name}_count{l} {count}");
}

/// Renders Istio's standard metrics.
pub fn render(reg: &Registry, out: &mut String) {
    let http = reg.http.all();
    let _ = writeln!(
        out,
        "# HELP istio_requests_total Requests through the gateway.\n# TYPE istio_requests_total counter"
    );
    let label_sets: Vec<(String, super::registry::HttpTotals)> = http
        .iter()
        .map(|(k, s)| {
            let code = k.response_code.to_string();
            (
                labels(&[
                    ("reporter", "source"),
                    ("tenant", &k.tenant),
                    ("gateway", &k.gateway),
                    ("destination_service", &k.destination_service),
                    ("response_code", &code),
                    ("response_flags", &k.response_flags),
                    ("request_protocol", k.request_protocol),
                ]),
                s.totals(),
            )
        })
        .collect();
    for (l, s) in &label_sets {
        let _ = writeln!(out, "istio_requests_total{l} {}", s.requests);
    }
    for (name, help, pick) in [
        (
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds.",
            0,
        ),
        ("istio_request_bytes", "Request body size in bytes.", 1),
        ("istio_response_bytes", "Response body size in bytes.", 2),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (l, s) in &label_sets {
            let h = match pick {
                0 => &s.duration,
                1 => &s.request_bytes,
                _ => &s.response_bytes,
            };
            histogram(out, name, l, h);
        }
    }
    let tcp = reg.tcp.all();
    let tcp_sets: Vec<(String, &std::sync::Arc<super::registry::TcpSeries>)> = tcp
        .iter()
        .map(|(k, s)| {
            (
                labels(&[
                    ("reporter", "source"),
                    ("tenant", &k.tenant),
                    ("gateway", &k.gateway),
                    ("destination_service", &k.destination_service),
                    ("response_flags", &k.response_flags),
                ]),
                s,
            )
        })
        .collect();
    for (name, help, pick) in [
        (
            "istio_tcp_sent_bytes_total",
            "Bytes sent to clients on TCP connections.",
            0,
        ),
        (
            "istio_tcp_received_bytes_total",
            "Bytes received from clients on TCP connections.",
            1,
        ),
        (
            "istio_tcp_connections_opened_total",
            "TCP connections opened.",
            2,
        ),
        (
            "istio_tcp_connections_closed_total",
            "TCP connections closed.",
            3,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (l, s) in &tcp_sets {
            let v = match pick {
                0 => &s.sent,
                1 => &s.received,
                2 => &s.opened,
                _ => &s.closed,
            };
            let _ = writeln!(out, "{name}{l} {}", v.load(Ordering::Relaxed));
        }
    }
    let _ = writeln!(
        out,
        "# HELP gatehouse_access_log_entries_total Access-log entries by outcome.\n# TYPE gatehouse_access_log_entries_total counter\ngatehouse_access_log_entries_total{{outcome=\"written\"}} {}\ngatehouse_access_log_entries_total{{outcome=\"dropped\"}} {}\ngatehouse_access_log_export_errors_total {}",
        reg.log_written.load(Ordering::Relaxed),
        reg.log_dropped.load(Ordering::Relaxed),
        reg.log_export_errors.load(Ordering::Relaxed)
    );
}
