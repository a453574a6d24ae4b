//! The end of a request, as the access log and metrics see it: bytes are counted each way,
//! and when the response body is finished — or dropped because the client went away — the
//! request is recorded once (Envoy logs at stream end, so `%DURATION%` covers the body).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tenants::snapshot::AccessLogPolicy;

use super::body::{Body, BoxError};
use super::deadline::ResponseTimeout;
use super::record::Record;
use super::service::ConnInfo;

/// Request body bytes seen so far, shared by the request and response wrappers.
#[derive(Debug, Default)]
pub struct Meter {
    bytes_in: AtomicU64,
}

/// A request body that counts its data bytes into a [`Meter`].
pub struct Counted<B> {
    inner: B,
    meter: Arc<Meter>,
}

impl<B> Counted<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            self.meter
                .bytes_in
                .fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is needed to record the request once its response is done.
pub struct Finish {
    /// What the request did; the entry is made from it at the end.
    pub rec: Record,
    /// The connection (its addresses, group and SNI, and the process's telemetry).
    pub conn: Arc<ConnInfo>,
    /// When the request arrived.
    pub started: Instant,
    /// Request bytes (`None`: the request had no body).
    pub meter: Option<Arc<Meter>>,
    /// The tenant's access-log policy in this group.
    pub policy: Option<Arc<AccessLogPolicy>>,
    /// Whether no body is expected (HEAD, 204, 304): dropping it unread is no client abort.
    pub bodiless: bool,
}

impl Finish {
    /// Records a request dropped before it had a response (status 0, DC).
    pub fn abandoned(self) {
        self.record(0, true, Failed::No);
    }

    fn record(self, bytes_out: u64, aborted: bool, failed: Failed) {
        let Self {
            rec,
            conn,
            started,
            meter,
            policy,
            ..
        } = self;
        // A response the route timer cut off while the client was not reading ends with the
        // connection, not with an error read from the body: still UT, not DC.
        let failed = match (&rec.cut, failed) {
            (Some(c), Failed::No) if c.fired() => Failed::Timeout,
            (_, f) => f,
        };
        // Made here, on the stack, not carried with the response body.
        let mut e = rec.into_entry(&conn, policy.is_some());
        e.bytes_out = bytes_out;
        e.bytes_in = meter
            .as_ref()
            .map_or(0, |m| m.bytes_in.load(Ordering::Relaxed));
        e.duration = started.elapsed();
        if policy.is_some() {
            // The wall clock is read only for a log line: metrics need the duration alone.
            e.start = SystemTime::now().checked_sub(e.duration);
        }
        // Envoy: DC when the client went away mid-response, UPE/UC when the upstream did, UT
        // when the route's timeout cut the response body off.
        let late = match failed {
            Failed::Upstream => Some("UC"),
            Failed::Timeout => Some("UT"),
            Failed::No if aborted => Some("DC"),
            Failed::No => None,
        };
        if let Some(f) = late {
            let mut codes: Vec<&str> = e.flags.split(',').filter(|x| !x.is_empty()).collect();
            if !codes.contains(&f) {
                codes.push(f);
                codes.sort_unstable();
                e.flags = codes.join(",");
            }
        }
        let telemetry = &conn.shared.telemetry;
        telemetry.http(&e);
        if let Some(p) = &policy {
            telemetry.log(e, p);
        }
    }
}

/// How a response body failed, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    No,
    /// The upstream's body broke off.
    Upstream,
    /// The route's timeout ran out mid-body.
    Timeout,
}

/// A response body that records the request when it ends.
pub struct Observed {
    inner: Body,
    bytes_out: u64,
    failed: Failed,
    finish: Option<Finish>,
}

impl Observed {
    /// Wraps the response body `inner`.
    pub fn new(inner: Body, finish: Finish) -> Self {
        Self {
            inner,
            bytes_out: 0,
            failed: Failed::No,
            finish: Some(finish),
        }
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes_out += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                self.failed = if e.is::<ResponseTimeout>() {
                    Failed::Timeout
                } else {
                    Failed::Upstream
                };
            }
            Poll::Ready(None) => {
                if let Some(f) = self.finish.take() {
                    f.record(self.bytes_out, false, Failed::No);
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            let aborted = !f.bodiless && !self.inner.is_end_stream();
            let failed = self.failed;
            f.record(self.bytes_out, aborted && failed == Failed::No, failed);
        }
    }
}
