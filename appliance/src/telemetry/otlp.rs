//! OTLP export with the official protobuf messages (`opentelemetry-proto`): access-log
//! records and Istio's metrics, over gRPC (tonic) or HTTP/protobuf (hyper).
//!
//! Aggregation stays in gatehouse's own lock-free registry (the request path must not go
//! through an SDK's per-record machinery on a thread-per-core proxy); this module only turns
//! a registry snapshot or a batch of entries into export requests.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::entry::Entry;
use super::registry::{Histogram as Hist, Registry};
use super::settings::{Endpoint, Protocol};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The endpoint URL is not usable.
    #[error("invalid OTLP endpoint {0:?}")]
    Endpoint(String),
    /// gRPC transport or status.
    #[error("OTLP gRPC export to {url}: {message}")]
    Grpc {
        /// Where.
        url: String,
        /// What.
        message: String,
    },
    /// HTTP transport or status.
    #[error("OTLP HTTP export to {url}: {message}")]
    Http {
        /// Where.
        url: String,
        /// What.
        message: String,
    },
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

fn s(k: &str, v: impl Into<String>) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn i(k: &str, v: i64) -> KeyValue {
    kv(k, any_value::Value::IntValue(v))
}

fn resource(attrs: &BTreeMap<String, String>) -> Resource {
    Resource {
        attributes: attrs.iter().map(|(k, v)| s(k, v.clone())).collect(),
        ..Resource::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "gatehouse".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    }
}

/// One log record per entry: the rendered line as body, the fields as attributes with
/// semantic-convention names where they exist.
pub fn log_record(e: &Entry, body: String) -> LogRecord {
    let t = e
        .start
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let mut a = vec![
        s("gatehouse.tenant", e.tenant.to_string()),
        s("gatehouse.gateway", e.group.to_string()),
    ];
    if !e.method.is_empty() {
        a.push(s("http.request.method", e.method.clone()));
        a.push(s(
            "url.path",
            e.path.split('?').next().unwrap_or("").to_string(),
        ));
        if let Some(q) = e.path.split_once('?').map(|(_, q)| q) {
            a.push(s("url.query", q.to_string()));
        }
        a.push(s("network.protocol.name", "http"));
        a.push(s(
            "network.protocol.version",
            e.protocol.trim_start_matches("HTTP/").to_string(),
        ));
        a.push(i("http.response.status_code", i64::from(e.status)));
        // Semantic conventions: the host alone (the raw authority is in the body).
        a.push(s("server.address", host_of(&e.authority).to_string()));
    } else {
        a.push(s("network.transport", "tcp"));
    }
    a.push(s(
        "envoy.response_flags",
        if e.flags.is_empty() {
            "-".to_string()
        } else {
            e.flags.clone()
        },
    ));
    a.push(i("http.request.body.size", e.bytes_in as i64));
    a.push(i("http.response.body.size", e.bytes_out as i64));
    a.push(i("gatehouse.duration_ms", e.duration.as_millis() as i64));
    if let Some(d) = e.upstream_time {
        a.push(i(
            "gatehouse.upstream_service_time_ms",
            d.as_millis() as i64,
        ));
    }
    if let Some(v) = &e.xff {
        a.push(s("http.request.header.x-forwarded-for", v.clone()));
    }
    if let Some(v) = &e.user_agent {
        a.push(s("user_agent.original", v.clone()));
    }
    if let Some(v) = &e.request_id {
        a.push(s("http.request.header.x-request-id", v.clone()));
    }
    if let Some(u) = e.upstream {
        if tenants::snapshot::is_unix_stand_in(&u) {
            a.push(s(
                "upstream.address",
                crate::upstream::unix::Shown(u).to_string(),
            ));
        } else {
            a.push(s("upstream.address", u.ip().to_string()));
            a.push(i("upstream.port", i64::from(u.port())));
        }
    }
    if let Some(c) = &e.cluster {
        a.push(s("gatehouse.upstream_cluster", &**c));
    }
    if let Some(r) = &e.route {
        a.push(s("gatehouse.route", &**r));
    }
    if let Some(p) = e.peer {
        a.push(s("client.address", p.ip().to_string()));
        a.push(i("client.port", i64::from(p.port())));
    }
    if let Some(l) = e.local {
        a.push(s("server.socket.address", l.ip().to_string()));
        a.push(i("server.port", i64::from(l.port())));
    }
    if let Some(n) = &e.sni {
        a.push(s("tls.server.name", n.clone()));
    }
    LogRecord {
        time_unix_nano: t,
        observed_time_unix_nano: now_nanos(),
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes: a,
        event_name: "gatehouse.access".into(),
        ..LogRecord::default()
    }
}

/// The host of an authority: `[::1]:8080` → `::1`, `a.example.com:80` → `a.example.com`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// A logs export request.
pub fn logs_request(
    records: Vec<LogRecord>,
    attrs: &BTreeMap<String, String>,
    log_name: Option<&str>,
) -> ExportLogsServiceRequest {
    let mut sc = scope();
    if let Some(n) = log_name {
        // The provider's `logName` names the scope, so a collector can route by it.
        sc.name = n.to_string();
        sc.attributes.push(s("log.name", n.to_string()));
    }
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource(attrs)),
            scope_logs: vec![ScopeLogs {
                scope: Some(sc),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn sum(name: &str, desc: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: desc.into(),
        unit: unit.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Metric::default()
    }
}

fn point(attrs: Vec<KeyValue>, v: u64, start: u64, now: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsInt(v as i64)),
        ..NumberDataPoint::default()
    }
}

fn hist_point(attrs: Vec<KeyValue>, h: &Hist, start: u64, now: u64) -> HistogramDataPoint {
    let (bounds, counts) = h.buckets();
    let (_, total, n) = h.snapshot();
    HistogramDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: n,
        sum: Some(total),
        bucket_counts: counts,
        explicit_bounds: bounds.to_vec(),
        ..HistogramDataPoint::default()
    }
}

fn hist(name: &str, desc: &str, unit: &str, points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: desc.into(),
        unit: unit.into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Metric::default()
    }
}

/// A metrics export request with every series (cumulative since `start`).
pub fn metrics_request(
    reg: &Registry,
    extra: Vec<Metric>,
    attrs: &BTreeMap<String, String>,
    start: u64,
) -> ExportMetricsServiceRequest {
    let now = now_nanos();
    let (mut req, mut dur, mut reqb, mut respb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (l, series) in reg.http.all().iter() {
        let series = series.totals();
        let a = || {
            vec![
                s("reporter", "source"),
                s("tenant", l.tenant.to_string()),
                s("gateway", l.gateway.to_string()),
                s("destination_service", l.destination_service.to_string()),
                s("response_code", l.response_code.to_string()),
                s("response_flags", l.response_flags.to_string()),
                s("request_protocol", l.request_protocol),
            ]
        };
        req.push(point(a(), series.requests, start, now));
        dur.push(hist_point(a(), &series.duration, start, now));
        reqb.push(hist_point(a(), &series.request_bytes, start, now));
        respb.push(hist_point(a(), &series.response_bytes, start, now));
    }
    let (mut sent, mut recv, mut opened, mut closed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (l, series) in reg.tcp.all().iter() {
        let a = || {
            vec![
                s("reporter", "source"),
                s("tenant", l.tenant.to_string()),
                s("gateway", l.gateway.to_string()),
                s("destination_service", l.destination_service.to_string()),
                s("response_flags", l.response_flags.to_string()),
            ]
        };
        sent.push(point(a(), series.sent.load(Ordering::Relaxed), start, now));
        recv.push(point(
            a(),
            series.received.load(Ordering::Relaxed),
            start,
            now,
        ));
        opened.push(point(
            a(),
            series.opened.load(Ordering::Relaxed),
            start,
            now,
        ));
        closed.push(point(
            a(),
            series.closed.load(Ordering::Relaxed),
            start,
            now,
        ));
    }
    let mut metrics = vec![
        sum(
            "istio_requests_total",
            "Requests through the gateway",
            "1",
            req,
        ),
        hist(
            "istio_request_duration_milliseconds",
            "Request duration",
            "ms",
            dur,
        ),
        hist("istio_request_bytes", "Request body sizes", "By", reqb),
        hist("istio_response_bytes", "Response body sizes", "By", respb),
        sum(
            "istio_tcp_sent_bytes_total",
            "Bytes sent to clients on TCP connections",
            "By",
            sent,
        ),
        sum(
            "istio_tcp_received_bytes_total",
            "Bytes received from clients on TCP connections",
            "By",
            recv,
        ),
        sum(
            "istio_tcp_connections_opened_total",
            "TCP connections opened",
            "1",
            opened,
        ),
        sum(
            "istio_tcp_connections_closed_total",
            "TCP connections closed",
            "1",
            closed,
        ),
    ];
    metrics.extend(extra);
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(attrs)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

/// A counter or gauge point for extra metrics (quotas, reloads, runtime).
pub fn int_metric(
    name: &str,
    desc: &str,
    monotonic: bool,
    points: Vec<(Vec<(&str, String)>, i64)>,
) -> Metric {
    let now = now_nanos();
    let dps: Vec<NumberDataPoint> = points
        .into_iter()
        .map(|(labels, v)| NumberDataPoint {
            attributes: labels.into_iter().map(|(k, v)| s(k, v)).collect(),
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsInt(v)),
            ..NumberDataPoint::default()
        })
        .collect();
    let data = if monotonic {
        metric::Data::Sum(Sum {
            data_points: dps,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })
    } else {
        metric::Data::Gauge(opentelemetry_proto::tonic::metrics::v1::Gauge { data_points: dps })
    };
    Metric {
        name: name.into(),
        description: desc.into(),
        data: Some(data),
        ..Metric::default()
    }
}

/// Sends a logs request.
pub async fn send_logs(ep: &Endpoint, req: ExportLogsServiceRequest) -> Result<(), ExportError> {
    match ep.protocol {
        Protocol::Grpc => {
            let ch = channel(ep)?;
            let mut c = LogsServiceClient::new(ch);
            let r = c.export(grpc_request(ep, req)?).await;
            r.map(|_| ()).map_err(|e| ExportError::Grpc {
                url: ep.url.clone(),
                message: e.to_string(),
            })
        }
        Protocol::HttpProtobuf => post(ep, req.encode_to_vec()).await,
    }
}

/// Sends a metrics request.
pub async fn send_metrics(
    ep: &Endpoint,
    req: ExportMetricsServiceRequest,
) -> Result<(), ExportError> {
    match ep.protocol {
        Protocol::Grpc => {
            let ch = channel(ep)?;
            let mut c = MetricsServiceClient::new(ch);
            let r = c.export(grpc_request(ep, req)?).await;
            r.map(|_| ()).map_err(|e| ExportError::Grpc {
                url: ep.url.clone(),
                message: e.to_string(),
            })
        }
        Protocol::HttpProtobuf => post(ep, req.encode_to_vec()).await,
    }
}

fn channel(ep: &Endpoint) -> Result<tonic::transport::Channel, ExportError> {
    let e = tonic::transport::Endpoint::from_shared(ep.url.clone())
        .map_err(|_| ExportError::Endpoint(ep.url.clone()))?;
    Ok(e.connect_timeout(ep.timeout)
        .timeout(ep.timeout)
        .connect_lazy())
}

fn grpc_request<T>(ep: &Endpoint, msg: T) -> Result<tonic::Request<T>, ExportError> {
    let mut r = tonic::Request::new(msg);
    for (k, v) in &ep.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| ExportError::Endpoint(format!("header {k}")))?;
        let val = tonic::metadata::MetadataValue::try_from(v.as_str())
            .map_err(|_| ExportError::Endpoint(format!("header {k}")))?;
        r.metadata_mut().insert(key, val);
    }
    Ok(r)
}

async fn post(ep: &Endpoint, body: Vec<u8>) -> Result<(), ExportError> {
    let http_err = |m: String| ExportError::Http {
        url: ep.url.clone(),
        message: m,
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::post(&ep.url)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| http_err(e.to_string()))?;
    for (k, v) in &ep.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            req.headers_mut().insert(n, v);
        }
    }
    let resp = tokio::time::timeout(ep.timeout, client.request(req))
        .await
        .map_err(|_| http_err("timed out".into()))?
        .map_err(|e| http_err(e.to_string()))?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(http_err(format!("status {status}")))
    }
}
