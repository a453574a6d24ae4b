//! An OpenTelemetry receiver on loopback, built on the official opentelemetry-proto messages:
//! OTLP/gRPC (`/opentelemetry.proto.collector.{logs,metrics}.v1.*Service/Export`, gRPC
//! framing over HTTP/2) and OTLP/HTTP (`POST /v1/logs`, `/v1/metrics` with protobuf bodies)
//! on one port, as the OpenTelemetry Collector's receivers would accept them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One received log record, flattened: resource and record attributes as strings.
#[derive(Debug, Clone)]
pub struct Log {
    /// `grpc` or `http`.
    pub via: &'static str,
    /// The scope name (`logName`).
    pub scope: String,
    /// The record body.
    pub body: String,
    /// Record attributes.
    pub attrs: BTreeMap<String, String>,
    /// Resource attributes.
    pub resource: BTreeMap<String, String>,
}

/// One received metric point: name, attributes, value (sum/gauge value or histogram count).
#[derive(Debug, Clone)]
pub struct Point {
    /// Metric name.
    pub name: String,
    /// Point attributes.
    pub attrs: BTreeMap<String, String>,
    /// The value (histograms: the count).
    pub value: f64,
}

#[derive(Default)]
struct Store {
    logs: Vec<Log>,
    metrics: Vec<(&'static str, ExportMetricsServiceRequest)>,
}

/// The receiver and the runtime it runs on.
pub struct Receiver {
    /// Where it listens (both protocols).
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    _rt: tokio::runtime::Runtime,
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

impl Receiver {
    /// Starts listening on `127.0.0.1:port`.
    pub fn start(port: u16) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let store = Arc::new(Mutex::new(Store::default()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let l = super::bind_loopback_tokio(&rt, port);
        let s = store.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = l.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, s.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            store,
            _rt: rt,
        }
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<Log> {
        self.store.lock().expect("lock").logs.clone()
    }

    /// Every metric point received so far, with the protocol it came over.
    pub fn points(&self) -> Vec<(&'static str, Point)> {
        let st = self.store.lock().expect("lock");
        let mut out = Vec::new();
        for (via, req) in &st.metrics {
            for rm in &req.resource_metrics {
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        for p in points(m) {
                            out.push((*via, p));
                        }
                    }
                }
            }
        }
        out
    }
}

fn points(m: &opentelemetry_proto::tonic::metrics::v1::Metric) -> Vec<Point> {
    let num = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => f64::NAN,
    };
    match &m.data {
        Some(metric::Data::Sum(s)) => s
            .data_points
            .iter()
            .map(|p| Point {
                name: m.name.clone(),
                attrs: attrs(&p.attributes),
                value: num(&p.value),
            })
            .collect(),
        Some(metric::Data::Gauge(g)) => g
            .data_points
            .iter()
            .map(|p| Point {
                name: m.name.clone(),
                attrs: attrs(&p.attributes),
                value: num(&p.value),
            })
            .collect(),
        Some(metric::Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| Point {
                name: m.name.clone(),
                attrs: attrs(&p.attributes),
                value: p.count as f64,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn record_logs(store: &Mutex<Store>, via: &'static str, req: ExportLogsServiceRequest) {
    let mut st = store.lock().expect("lock");
    for rl in req.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        for sl in rl.scope_logs {
            let scope = sl
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for r in sl.log_records {
                st.logs.push(Log {
                    via,
                    scope: scope.clone(),
                    body: text(r.body.as_ref()),
                    attrs: attrs(&r.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
}

fn full(b: Bytes) -> Body {
    Full::new(b).boxed()
}

async fn handle(
    req: Request<Incoming>,
    store: Arc<Mutex<Store>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let Ok(body) = req.into_body().collect().await.map(|c| c.to_bytes()) else {
        return Ok(Response::builder()
            .status(400)
            .body(full(Bytes::new()))
            .expect("response"));
    };
    if grpc {
        // gRPC framing: 1 byte compressed flag, 4 bytes big-endian length, the message.
        let mut b = body;
        let msg = if b.len() >= 5 && b[0] == 0 {
            b.advance(1);
            let n = b.get_u32() as usize;
            b.slice(..n.min(b.len()))
        } else {
            Bytes::new()
        };
        let ok = match path.as_str() {
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export" => {
                ExportLogsServiceRequest::decode(msg)
                    .map(|r| record_logs(&store, "grpc", r))
                    .is_ok()
            }
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export" => {
                ExportMetricsServiceRequest::decode(msg)
                    .map(|r| store.lock().expect("lock").metrics.push(("grpc", r)))
                    .is_ok()
            }
            _ => false,
        };
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            "grpc-status",
            http::HeaderValue::from_static(if ok { "0" } else { "12" }),
        );
        // An empty Export*ServiceResponse: a zero-length message.
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        return Ok(Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .expect("response"));
    }
    let ok = match path.as_str() {
        "/v1/logs" => ExportLogsServiceRequest::decode(body)
            .map(|r| record_logs(&store, "http", r))
            .is_ok(),
        "/v1/metrics" => ExportMetricsServiceRequest::decode(body)
            .map(|r| store.lock().expect("lock").metrics.push(("http", r)))
            .is_ok(),
        _ => false,
    };
    Ok(Response::builder()
        .status(if ok { 200 } else { 400 })
        .header("content-type", "application/x-protobuf")
        .body(full(Bytes::new()))
        .expect("response"))
}
