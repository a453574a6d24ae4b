//! What one request did, as the request path fills it in, and the access-log [`Entry`] made
//! from it once the response has ended.
//!
//! The record travels with the response body until the body ends (`observe.rs`), so it is
//! kept small: what metrics need inline, what only a log line shows in one box made only where
//! a tenant of the group logs. The 464-byte `Entry` is built at the end, on the stack, instead
//! of being carried in every response's box: per-request state that is written once and read
//! once is data-cache misses (BENCHMARKS.md, "User time: data-cache misses").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use tenants::model::PLATFORM_NAMESPACE;

use super::errors::Flags;
use super::headers;
use super::observe::{Finish, Meter};
use super::service::ConnInfo;
use crate::telemetry::entry::Entry;

/// What one request did, for metrics and, through [`LogFields`], the access log.
#[derive(Debug, Default)]
pub struct Record {
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'static str,
    /// Status sent.
    pub status: u16,
    /// The request's `Content-Type` says gRPC.
    pub grpc: bool,
    /// Response flags.
    pub flags: Flags,
    /// Tenant. The snapshot's names are shared, not copied: three allocations a request less.
    pub tenant: Option<Arc<str>>,
    /// Route name.
    pub route: Option<Arc<str>>,
    /// Upstream cluster.
    pub cluster: Option<Arc<str>>,
    /// Upstream endpoint.
    pub upstream: Option<SocketAddr>,
    /// Upstream service time.
    pub service_time: Option<Duration>,
    /// What only a log line shows; `None` where no tenant of the group logs.
    pub log: Option<Box<LogFields>>,
    /// Set on a route with a timeout: whether the response was cut off at it.
    pub cut: Option<Arc<super::deadline::Cut>>,
}

/// The request's own values only an access log shows: the request's types are kept (a shared
/// handle, not a copy) until a log line needs their text.
#[derive(Debug, Default)]
pub struct LogFields {
    /// Method.
    pub method: Option<Method>,
    /// Path and query as received.
    pub path: Option<PathAndQuery>,
    /// Authority.
    pub authority: Option<HeaderValue>,
    /// Request id (as received, or the one generated for the upstream request).
    pub request_id: Option<HeaderValue>,
    /// User agent.
    pub user_agent: Option<HeaderValue>,
    /// x-forwarded-for as received.
    pub xff: Option<HeaderValue>,
    /// The request headers, where a custom log format may name any of them.
    pub captured: Option<HeaderMap>,
}

impl Record {
    /// Where the request path notes what a log line shows, if anyone logs.
    pub fn log(&mut self) -> Option<&mut LogFields> {
        self.log.as_deref_mut()
    }

    /// The access-log entry of this request (byte counts and duration come at the end).
    /// The entry metrics record and, when `logged`, an access log writes: the texts only a log
    /// line shows are made only then.
    pub fn into_entry(self, conn: &ConnInfo, logged: bool) -> Entry {
        let entry = Entry {
            protocol: self.protocol,
            status: self.status,
            flags: if self.flags.is_empty() {
                String::new()
            } else {
                self.flags.to_string()
            },
            upstream_time: self.service_time,
            upstream: self.upstream,
            cluster: self.cluster,
            local: Some(conn.local),
            peer: Some(conn.peer),
            route: self.route,
            tenant: self.tenant.unwrap_or_else(|| Arc::from(PLATFORM_NAMESPACE)),
            group: conn.group.clone(),
            grpc: self.grpc,
            ..Entry::default()
        };
        if !logged {
            return entry;
        }
        let log = self.log.map(|l| *l).unwrap_or_default();
        let text = |v: Option<HeaderValue>| v.and_then(|v| v.to_str().ok().map(str::to_string));
        Entry {
            method: log
                .method
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            // `as_str`, not `to_string`: `Display` goes through the formatting machinery.
            path: log
                .path
                .as_ref()
                .map_or("/", PathAndQuery::as_str)
                .to_string(),
            xff: text(log.xff),
            user_agent: text(log.user_agent),
            // Envoy generates one for every request, answered locally or not.
            request_id: text(log.request_id.or_else(|| Some(headers::request_id()))),
            authority: text(log.authority).unwrap_or_default(),
            sni: conn.sni.as_deref().map(str::to_string),
            req_headers: log
                .captured
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| {
                            Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            ..entry
        }
    }
}

/// A request without a response yet. Dropped in that state — the client reset the stream or
/// went away, or the connection was torn down — it still records the request, as Envoy logs it
/// and Istio's metrics count it: status 0 with DC.
pub struct Unanswered<'a> {
    rec: Option<Record>,
    conn: &'a Arc<ConnInfo>,
    started: Instant,
    meter: Option<Arc<Meter>>,
}

impl<'a> Unanswered<'a> {
    /// A request of `conn` that arrived at `started`.
    pub fn new(
        rec: Record,
        conn: &'a Arc<ConnInfo>,
        started: Instant,
        meter: Option<Arc<Meter>>,
    ) -> Self {
        Self {
            rec: Some(rec),
            conn,
            started,
            meter,
        }
    }

    /// The record the request path fills in.
    pub fn rec(&mut self) -> &mut Record {
        self.rec.get_or_insert_with(Record::default)
    }

    /// There is a response: the record goes on with it.
    pub fn answered(mut self) -> Record {
        self.rec.take().unwrap_or_default()
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some(rec) = self.rec.take() else {
            return;
        };
        let rt = self.conn.shared.runtime.load();
        let tenant = rec.tenant.as_deref().unwrap_or(PLATFORM_NAMESPACE);
        let policy = rt
            .groups
            .get(&*self.conn.group)
            .and_then(|g| g.log_policy(tenant))
            .cloned();
        Finish {
            rec,
            conn: self.conn.clone(),
            started: self.started,
            meter: self.meter.take(),
            policy,
            bodiless: false,
        }
        .abandoned();
    }
}

#[cfg(test)]
mod tests {
    use super::super::observe::Observed;
    use super::*;

    /// Every response carries an `Observed` box until its body ends: what is added to the
    /// record is added to every request's cache footprint (544 bytes before `record.rs`,
    /// 232 after). A field only a log line shows goes into `LogFields`.
    #[test]
    fn the_record_that_rides_with_every_response_stays_small() {
        assert!(
            size_of::<Record>() <= 160,
            "Record: {} bytes",
            size_of::<Record>()
        );
        assert!(
            size_of::<Observed>() <= 240,
            "Observed: {} bytes",
            size_of::<Observed>()
        );
    }
}
