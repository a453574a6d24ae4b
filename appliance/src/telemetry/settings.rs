//! OTLP export settings: the local settings file, then the standard `OTEL_*` environment
//! variables for whatever the file leaves unset.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The wire protocol to a collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, `/v1/logs`, `/v1/metrics`).
    HttpProtobuf,
}

impl Protocol {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" | "http" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

/// Where and how one signal is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port` (gRPC) or the full URL of the signal (HTTP).
    pub url: String,
    /// gRPC or HTTP/protobuf.
    pub protocol: Protocol,
    /// Extra headers (authentication).
    pub headers: Vec<(String, String)>,
    /// Per-export timeout.
    pub timeout: Duration,
}

/// Everything the telemetry exporters need.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Metrics export target (`None`: only `/metrics`).
    pub metrics: Option<Endpoint>,
    /// Interval between metric exports.
    pub metric_interval: Duration,
    /// Protocol and headers for `envoyOtelAls` log providers (their address comes from the
    /// provider).
    pub logs_protocol: Protocol,
    /// Headers for log exports.
    pub logs_headers: Vec<(String, String)>,
    /// Batch delay for logs (`OTEL_BLRP_SCHEDULE_DELAY`).
    pub log_delay: Duration,
    /// Queue size (`OTEL_BLRP_MAX_QUEUE_SIZE`): entries beyond it are dropped and counted.
    pub log_queue: usize,
    /// Batch size (`OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`).
    pub log_batch: usize,
    /// Export timeout (`OTEL_BLRP_EXPORT_TIMEOUT`).
    pub log_timeout: Duration,
    /// Resource attributes (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`).
    pub resource: BTreeMap<String, String>,
}

/// The `[telemetry]` table of the local settings file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FileSettings {
    /// `endpoint = "http://127.0.0.1:4317"`.
    pub endpoint: Option<String>,
    /// `protocol = "grpc" | "http/protobuf"`.
    pub protocol: Option<String>,
    /// `headers = { authorization = "..." }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `metric_interval = "60s"`.
    pub metric_interval: Option<String>,
    /// `log_delay = "1s"`.
    pub log_delay: Option<String>,
    /// `log_queue = 2048`.
    pub log_queue: Option<usize>,
    /// `resource = { "deployment.environment" = "prod" }`.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
}

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A value does not parse.
    #[error("telemetry setting {name}: {message}")]
    Invalid {
        /// The setting (file key or variable).
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// The local settings file (`--config`): TOML, with a `[telemetry]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    telemetry: FileSettings,
}

/// Reads the `[telemetry]` table of the settings file at `path`.
pub fn load_file(path: &std::path::Path) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Invalid {
        name: path.display().to_string(),
        message: e.to_string(),
    })?;
    toml::from_str::<ConfigFile>(&text)
        .map(|c| c.telemetry)
        .map_err(|e| SettingsError::Invalid {
            name: path.display().to_string(),
            message: e.to_string(),
        })
}

fn env_any(names: &[&str], env: &dyn Fn(&str) -> Option<String>) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        env(n)
            .filter(|v| !v.trim().is_empty())
            .map(|v| ((*n).to_string(), v))
    })
}

fn duration_ms(name: &str, v: &str) -> Result<Duration, SettingsError> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| SettingsError::Invalid {
            name: name.into(),
            message: format!("{v:?} is not a number of milliseconds"),
        })
}

fn go_duration(name: &str, v: &str) -> Result<Duration, SettingsError> {
    tenants::types::parse_go_duration(v).map_err(|e| SettingsError::Invalid {
        name: name.into(),
        message: e.to_string(),
    })
}

/// `k=v,k2=v2` with percent-decoding, as the OTEL spec writes headers and attributes.
fn pairs(v: &str) -> Vec<(String, String)> {
    v.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k.trim()), decode(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Bytes, not str slices: a '%' before a multi-byte character must not panic.
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        let escaped = (b[i] == b'%')
            .then_some(hex)
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(n) = escaped {
            out.push(n);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Settings {
    /// Resolves the settings: the file first, then the environment (`env` reads a variable).
    pub fn resolve(
        file: &FileSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let protocol = match file.protocol.as_deref() {
            Some(p) => Protocol::parse(p).ok_or_else(|| SettingsError::Invalid {
                name: "protocol".into(),
                message: format!("{p:?}: expected grpc or http/protobuf"),
            })?,
            None => match env_any(
                &[
                    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                ],
                env,
            ) {
                Some((n, v)) => Protocol::parse(&v).ok_or_else(|| SettingsError::Invalid {
                    name: n,
                    message: format!("{v:?}: expected grpc or http/protobuf"),
                })?,
                None => Protocol::Grpc,
            },
        };
        let file_protocol = file.protocol.as_deref().and_then(Protocol::parse);
        let logs_protocol = match (
            file_protocol,
            env_any(
                &[
                    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                ],
                env,
            ),
        ) {
            (Some(p), _) => p,
            (None, Some((n, v))) => Protocol::parse(&v).ok_or_else(|| SettingsError::Invalid {
                name: n,
                message: format!("{v:?}: expected grpc or http/protobuf"),
            })?,
            (None, None) => Protocol::Grpc,
        };
        let mut headers: Vec<(String, String)> = env_any(
            &[
                "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ],
            env,
        )
        .map(|(_, v)| pairs(&v))
        .unwrap_or_default();
        headers.extend(file.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        let logs_headers = env_any(
            &[
                "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ],
            env,
        )
        .map(|(_, v)| pairs(&v))
        .unwrap_or_default()
        .into_iter()
        .chain(file.headers.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
        let timeout = match env_any(
            &[
                "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
            env,
        ) {
            Some((n, v)) => duration_ms(&n, &v)?,
            None => Duration::from_secs(10),
        };
        let metrics = match (
            &file.endpoint,
            env_any(&["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"], env),
            env_any(&["OTEL_EXPORTER_OTLP_ENDPOINT"], env),
        ) {
            (Some(base), _, _) => Some(signal_url(base, protocol, "metrics", false)),
            (None, Some((_, url)), _) => Some(signal_url(&url, protocol, "metrics", true)),
            (None, None, Some((_, base))) => Some(signal_url(&base, protocol, "metrics", false)),
            (None, None, None) => None,
        }
        .map(|url| Endpoint {
            url,
            protocol,
            headers: headers.clone(),
            timeout,
        });
        let metric_interval = match (
            &file.metric_interval,
            env_any(&["OTEL_METRIC_EXPORT_INTERVAL"], env),
        ) {
            (Some(v), _) => go_duration("metric_interval", v)?,
            (None, Some((n, v))) => duration_ms(&n, &v)?,
            (None, None) => Duration::from_secs(60),
        };
        let log_delay = match (&file.log_delay, env_any(&["OTEL_BLRP_SCHEDULE_DELAY"], env)) {
            (Some(v), _) => go_duration("log_delay", v)?,
            (None, Some((n, v))) => duration_ms(&n, &v)?,
            (None, None) => Duration::from_millis(1000),
        };
        let num = |n: &str, default: usize| -> Result<usize, SettingsError> {
            match env(n) {
                Some(v) if !v.trim().is_empty() => {
                    v.trim().parse().map_err(|_| SettingsError::Invalid {
                        name: n.into(),
                        message: format!("{v:?} is not a number"),
                    })
                }
                _ => Ok(default),
            }
        };
        let log_queue = match file.log_queue {
            Some(q) => q,
            None => num("OTEL_BLRP_MAX_QUEUE_SIZE", 2048)?,
        }
        .max(1);
        let log_batch = num("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512)?.clamp(1, log_queue);
        let log_timeout = match env_any(&["OTEL_BLRP_EXPORT_TIMEOUT"], env) {
            Some((n, v)) => duration_ms(&n, &v)?,
            None => Duration::from_secs(30),
        };
        let mut resource: BTreeMap<String, String> = BTreeMap::new();
        resource.insert("service.name".into(), "gatehouse".into());
        if let Some((_, v)) = env_any(&["OTEL_RESOURCE_ATTRIBUTES"], env) {
            resource.extend(pairs(&v));
        }
        if let Some((_, v)) = env_any(&["OTEL_SERVICE_NAME"], env) {
            resource.insert("service.name".into(), v);
        }
        resource.extend(file.resource.clone());
        Ok(Self {
            metrics,
            metric_interval,
            logs_protocol,
            logs_headers,
            log_delay,
            log_queue,
            log_batch,
            log_timeout,
            resource,
        })
    }
}

/// The URL for one signal: gRPC uses the base as is; HTTP appends `/v1/<signal>` to a base
/// endpoint, and uses a signal-specific endpoint as given.
fn signal_url(base: &str, p: Protocol, signal: &str, specific: bool) -> String {
    match p {
        Protocol::Grpc => base.trim_end_matches('/').to_string(),
        Protocol::HttpProtobuf if specific => base.to_string(),
        Protocol::HttpProtobuf => format!("{}/v1/{signal}", base.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn environment_variables_are_honoured() {
        let s = Settings::resolve(
            &FileSettings::default(),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "x-api-key=s%3Dcret,tenant=ops",
                ),
                ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
                ("OTEL_BLRP_MAX_QUEUE_SIZE", "64"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,host.name=gw1",
                ),
                ("OTEL_SERVICE_NAME", "edge"),
            ]),
        )
        .expect("settings");
        let m = s.metrics.expect("metrics endpoint");
        assert_eq!(m.url, "http://collector:4318/v1/metrics");
        assert_eq!(m.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            m.headers,
            vec![
                ("x-api-key".to_string(), "s=cret".to_string()),
                ("tenant".into(), "ops".into())
            ]
        );
        assert_eq!(s.metric_interval, Duration::from_secs(5));
        assert_eq!(s.log_queue, 64);
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("edge")
        );
        assert_eq!(
            s.resource.get("deployment.environment").map(String::as_str),
            Some("prod")
        );
    }

    #[test]
    fn the_file_wins_and_bad_values_are_errors() {
        let f = FileSettings {
            endpoint: Some("http://127.0.0.1:4317".into()),
            metric_interval: Some("2s".into()),
            ..FileSettings::default()
        };
        let s = Settings::resolve(
            &f,
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4317")]),
        )
        .expect("settings");
        assert_eq!(
            s.metrics.map(|m| m.url),
            Some("http://127.0.0.1:4317".to_string())
        );
        assert_eq!(s.metric_interval, Duration::from_secs(2));
        let e = Settings::resolve(
            &FileSettings::default(),
            &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
    }
}
