//! The access-log writer: its own thread and runtime, fed through a bounded queue, so a slow
//! disk or collector never holds up a request (entries beyond the queue are dropped and
//! counted). Writes each entry to every sink its tenant's policy enables, after the sink's
//! CEL filter.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use tenants::model::{LogFormat, Provider};
use tenants::snapshot::AccessLogPolicy;

use super::entry::{DEFAULT_JSON, DEFAULT_TEXT, Entry};
use super::otlp;
use super::registry::Registry;
use super::settings::{Endpoint, Settings};
use super::template::{JsonTemplate, Template};

/// One entry and the policy that says where it goes.
pub struct Job {
    /// The entry.
    pub entry: Entry,
    /// Where it goes.
    pub policy: Arc<AccessLogPolicy>,
}

/// The writer's parsed formats: the defaults once, custom ones on first use.
pub struct Formats {
    text: Template,
    json: JsonTemplate,
    /// Custom text formats by the address of their text in the policy, checked against the
    /// text itself (a reload may reuse an address for another format).
    custom: HashMap<usize, (String, Template)>,
}

impl Default for Formats {
    fn default() -> Self {
        Self {
            text: Template::parse(DEFAULT_TEXT),
            json: JsonTemplate::parse(DEFAULT_JSON.iter().copied()),
            custom: HashMap::new(),
        }
    }
}

impl Formats {
    /// Appends `e` in format `f` to `out`, one line.
    pub fn render(&mut self, e: &Entry, f: &LogFormat, out: &mut String) {
        match f {
            LogFormat::Text(None) => self.text.render(e, out),
            LogFormat::Text(Some(t)) => {
                let key = t.as_ptr() as usize;
                if self.custom.get(&key).is_none_or(|(text, _)| text != t) {
                    if self.custom.len() >= 256 {
                        self.custom.clear();
                    }
                    self.custom.insert(key, (t.clone(), Template::parse(t)));
                }
                if let Some((_, tpl)) = self.custom.get(&key) {
                    tpl.render(e, out);
                }
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            LogFormat::Json(None) => self.json.render(e, out),
            LogFormat::Json(Some(keys)) => {
                JsonTemplate::parse(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .render(e, out);
            }
        }
    }
}

/// Renders an entry in a provider's format (tests and one-off use).
pub fn render(e: &Entry, f: &LogFormat) -> String {
    let mut s = String::with_capacity(512);
    Formats::default().render(e, f, &mut s);
    s
}

/// Where entries are written. Buffered, all of them: stdout is line-buffered by default,
/// which would cost a write(2) per entry; buffers are flushed on the batch tick and when the
/// queue runs dry.
enum Out {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Stderr(std::io::BufWriter<std::io::Stderr>),
    File(std::io::BufWriter<std::fs::File>),
}

/// Buffer size of each log output.
const OUT_BUFFER: usize = 64 * 1024;

impl Out {
    fn write(&mut self, s: &str) -> std::io::Result<()> {
        match self {
            Self::Stdout(w) => w.write_all(s.as_bytes()),
            Self::Stderr(w) => w.write_all(s.as_bytes()),
            Self::File(f) => f.write_all(s.as_bytes()),
        }
    }

    fn flush(&mut self) {
        let _ = match self {
            Self::Stdout(w) => w.flush(),
            Self::Stderr(w) => w.flush(),
            Self::File(f) => f.flush(),
        };
    }
}

fn open(path: &str) -> std::io::Result<Out> {
    Ok(match path {
        "/dev/stdout" | "" => Out::Stdout(std::io::BufWriter::with_capacity(
            OUT_BUFFER,
            std::io::stdout(),
        )),
        "/dev/stderr" => Out::Stderr(std::io::BufWriter::with_capacity(
            OUT_BUFFER,
            std::io::stderr(),
        )),
        p => Out::File(std::io::BufWriter::with_capacity(
            OUT_BUFFER,
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        )),
    })
}

/// How often the writer drains the queue. Workers never wake the writer: a wake-up per entry
/// (a futex call and a context switch on a busy two-core machine) cost more than writing the
/// entry. Entries reach their sink within this interval (files) or the batch delay (OTLP).
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Starts the writer thread; returns the queue's sender.
pub fn start(settings: Arc<ArcSwap<Settings>>, registry: Arc<Registry>) -> SyncSender<Job> {
    let cap = settings.load().log_queue;
    let (tx, rx) = sync_channel(cap);
    let spawned = std::thread::Builder::new()
        .name("gatehouse-log".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "access-log writer not started");
                    return;
                }
            };
            rt.block_on(run(rx, settings, registry));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "access-log writer not started");
    }
    tx
}

type BatchKey = (String, u16, Option<String>);

/// The writer's open files and pending OTLP batches.
struct Sinks {
    files: HashMap<String, Out>,
    batches: HashMap<BatchKey, Vec<LogRecord>>,
    formats: Formats,
    /// The line being rendered, reused.
    line: String,
}

async fn run(rx: Receiver<Job>, settings: Arc<ArcSwap<Settings>>, registry: Arc<Registry>) {
    let mut sinks = Sinks {
        files: HashMap::new(),
        batches: HashMap::new(),
        formats: Formats::default(),
        line: String::with_capacity(1024),
    };
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_export = std::time::Instant::now();
    loop {
        drain.tick().await;
        let mut wrote = false;
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(job) => {
                    write(&mut sinks, &job, &settings, &registry).await;
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if wrote {
            for o in sinks.files.values_mut() {
                o.flush();
            }
        }
        if closed || last_export.elapsed() >= settings.load().log_delay {
            last_export = std::time::Instant::now();
            let keys: Vec<BatchKey> = sinks
                .batches
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                let records = sinks
                    .batches
                    .get_mut(&k)
                    .map(std::mem::take)
                    .unwrap_or_default();
                export(&settings, &registry, &k, records).await;
            }
        }
        if closed {
            break;
        }
    }
}

/// Writes one entry to every sink of its policy whose filter accepts it.
async fn write(sinks: &mut Sinks, job: &Job, settings: &ArcSwap<Settings>, registry: &Registry) {
    let batch_size = settings.load().log_batch;
    for sink in &job.policy.sinks {
        if sink.filter.as_ref().is_some_and(|f| !f.matches(&job.entry)) {
            continue;
        }
        match &sink.provider {
            Provider::File { path, format } => {
                sinks.line.clear();
                sinks.formats.render(&job.entry, format, &mut sinks.line);
                let out = match sinks.files.get_mut(path) {
                    Some(o) => o,
                    None => match open(path) {
                        Ok(o) => sinks.files.entry(path.clone()).or_insert(o),
                        Err(e) => {
                            registry.log_export_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(path = %path, error = %e, "cannot open access log");
                            continue;
                        }
                    },
                };
                if out.write(&sinks.line).is_ok() {
                    registry.log_written.fetch_add(1, Ordering::Relaxed);
                } else {
                    registry.log_export_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Provider::Otel {
                service,
                port,
                log_name,
                format,
            } => {
                sinks.line.clear();
                sinks.formats.render(&job.entry, format, &mut sinks.line);
                let body = sinks.line.trim_end().to_string();
                let key = (service.clone(), *port, log_name.clone());
                let b = sinks.batches.entry(key.clone()).or_default();
                b.push(otlp::log_record(&job.entry, body));
                if b.len() >= batch_size {
                    let records = std::mem::take(b);
                    export(settings, registry, &key, records).await;
                }
            }
            Provider::Other(_) => {}
        }
    }
}

async fn export(
    settings: &ArcSwap<Settings>,
    registry: &Registry,
    key: &BatchKey,
    records: Vec<LogRecord>,
) {
    if records.is_empty() {
        return;
    }
    let st = settings.load();
    let (service, port, log_name) = key;
    let url = match st.logs_protocol {
        super::settings::Protocol::Grpc => format!("http://{service}:{port}"),
        super::settings::Protocol::HttpProtobuf => format!("http://{service}:{port}/v1/logs"),
    };
    let ep = Endpoint {
        url,
        protocol: st.logs_protocol,
        headers: st.logs_headers.clone(),
        timeout: st.log_timeout,
    };
    let n = records.len() as u64;
    let req = otlp::logs_request(records, &st.resource, log_name.as_deref());
    match otlp::send_logs(&ep, req).await {
        Ok(()) => {
            registry.log_written.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            registry.log_export_errors.fetch_add(1, Ordering::Relaxed);
            registry.log_dropped.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(error = %e, dropped = n, "access-log export failed");
        }
    }
}
