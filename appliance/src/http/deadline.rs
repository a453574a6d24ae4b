//! The route `timeout` and `perTryTimeout` as Envoy runs them: the clock starts when the
//! client's request has been received whole (its body included) and stops when the response
//! has been received whole (its body included). A slow upload is not cut short by a timeout
//! meant for the backend; a response body still streaming at the deadline is cut off
//! (HTTP/2 stream reset, HTTP/1.1 connection closed) and logged UT.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::body::{Body, BoxError};

/// When the downstream request ended (its last body frame read), once known.
#[derive(Debug, Default)]
pub struct RequestEnd {
    at: OnceLock<Instant>,
    notify: Notify,
    /// A response body's task waiting for the end to arm its timer.
    waker: Mutex<Option<Waker>>,
}

impl RequestEnd {
    /// A request already received whole.
    pub fn now() -> Arc<Self> {
        let e = Self::default();
        let _ = e.at.set(Instant::now());
        Arc::new(e)
    }

    /// Marks the end (the first call counts).
    fn ended(&self) {
        if self.at.set(Instant::now()).is_ok() {
            self.notify.notify_waiters();
            let w = self
                .waker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// Wakes `w` when the request ends.
    fn wake_on_end(&self, w: &Waker) {
        let mut g = self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.as_ref() {
            Some(old) if old.will_wake(w) => {}
            _ => *g = Some(w.clone()),
        }
    }

    /// When the request ended, if it has.
    pub fn at(&self) -> Option<Instant> {
        self.at.get().copied()
    }

    /// Waits for the end of the request.
    pub async fn wait(&self) -> Instant {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            // Registered before the check, so an end in between is not missed.
            n.as_mut().enable();
            if let Some(t) = self.at() {
                return t;
            }
            n.await;
        }
    }
}

/// A request body that marks its [`RequestEnd`] when read to the end.
pub struct Ending {
    inner: Body,
    end: Arc<RequestEnd>,
}

impl Ending {
    /// Wraps `inner`; returns the body and its end marker.
    pub fn wrap(inner: Body) -> (Body, Arc<RequestEnd>) {
        let end = Arc::new(RequestEnd::default());
        let b = super::body::boxed(Self {
            inner,
            end: end.clone(),
        });
        (b, end)
    }
}

impl HttpBody for Ending {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.end.ended(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.end.ended(),
            _ => {}
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

/// The timeouts of one request.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// The route's `timeout`.
    pub route: Option<Duration>,
    /// The retry policy's `perTryTimeout`.
    pub per_try: Option<Duration>,
    /// The end of the request; `None` when neither timeout is set.
    pub end: Option<Arc<RequestEnd>>,
}

impl Timeouts {
    /// No timeout at all.
    pub const NONE: Self = Self {
        route: None,
        per_try: None,
        end: None,
    };

    /// Whether any timeout applies.
    pub fn any(&self) -> bool {
        self.end.is_some() && (self.route.is_some() || self.per_try.is_some())
    }

    /// The route deadline, once the request has ended.
    pub fn route_deadline(&self) -> Option<Instant> {
        Some(self.end.as_ref()?.at()? + self.route?)
    }

    /// The deadline of an attempt started at `attempt`, given the request ended at `end`:
    /// the earlier of the route's and the attempt's own.
    fn deadline(
        route: Option<Duration>,
        per_try: Option<Duration>,
        end: Instant,
        attempt: Instant,
    ) -> Option<Instant> {
        let r = route.map(|t| end + t);
        let p = per_try.map(|t| end.max(attempt) + t);
        match (r, p) {
            (Some(r), Some(p)) => Some(r.min(p)),
            (r, p) => r.or(p),
        }
    }

    /// Resolves when an attempt started at `attempt` runs out of time (never, without a
    /// timeout).
    pub fn expiry(&self, attempt: Instant) -> impl Future<Output = ()> + Send + 'static {
        let (route, per_try, end) = (self.route, self.per_try, self.end.clone());
        async move {
            let Some(end) = end else {
                return std::future::pending().await;
            };
            let at = end.wait().await;
            match Self::deadline(route, per_try, at, attempt) {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        }
    }
}

/// The response body ran past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("upstream request timeout")]
pub struct ResponseTimeout;

/// When a bounded body's deadline is: the route's and the attempt's timeouts, counted from
/// the end of the request.
struct Due {
    route: Option<Duration>,
    per_try: Option<Duration>,
    end: Arc<RequestEnd>,
    attempt: Instant,
}

/// A response body cut off at its deadline.
struct Bounded {
    inner: Body,
    due: Due,
    /// Armed once the deadline is known.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    fired: bool,
}

/// `body` (a response's) bounded by the timeouts of the attempt started at `attempt`.
pub fn bound(body: Body, t: &Timeouts, attempt: Instant) -> Body {
    let Some(end) = t.end.clone() else {
        return body;
    };
    if !t.any() || body.is_end_stream() {
        return body;
    }
    Bounded::wrap(
        body,
        Due {
            route: t.route,
            per_try: t.per_try,
            end,
            attempt,
        },
    )
}

impl Bounded {
    fn wrap(inner: Body, due: Due) -> Body {
        super::body::boxed(Self {
            inner,
            due,
            sleep: None,
            fired: false,
        })
    }

    /// Arms the timer once the request has ended; until then, its end wakes this body's
    /// task.
    fn arm(&mut self, cx: &Context<'_>) {
        if self.sleep.is_some() || self.fired {
            return;
        }
        let Due {
            route,
            per_try,
            end,
            attempt,
        } = &self.due;
        let at = match end.at() {
            Some(a) => a,
            None => {
                end.wake_on_end(cx.waker());
                match end.at() {
                    Some(a) => a,
                    None => return,
                }
            }
        };
        if let Some(d) = Timeouts::deadline(*route, *per_try, at, *attempt) {
            self.sleep = Some(Box::pin(tokio::time::sleep_until(d)));
        }
    }
}

impl HttpBody for Bounded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.fired {
            return Poll::Ready(None);
        }
        this.arm(cx);
        if let Some(s) = this.sleep.as_mut()
            && s.as_mut().poll(cx).is_ready()
        {
            this.sleep = None;
            this.fired = true;
            return Poll::Ready(Some(Err(Box::new(ResponseTimeout))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.fired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body whose next frame never comes.
    struct Silent;

    impl HttpBody for Silent {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    fn timeouts(route: Option<u64>, per_try: Option<u64>, end: Arc<RequestEnd>) -> Timeouts {
        Timeouts {
            route: route.map(Duration::from_millis),
            per_try: per_try.map(Duration::from_millis),
            end: Some(end),
        }
    }

    #[tokio::test]
    async fn the_clock_starts_at_the_end_of_the_request_and_covers_the_response_body() {
        let (mut req, end) = Ending::wrap(super::super::body::full("upload"));
        let t = timeouts(Some(20), None, end.clone());
        let mut resp = bound(super::super::body::boxed(Silent), &t, Instant::now());
        // The request is still being read: no deadline yet, however long the wait.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), resp.frame())
                .await
                .is_err()
        );
        assert!(end.at().is_none());
        // Its last frame read: the 20 ms start, and the silent response body is cut off.
        let f = req.frame().await.expect("a frame").expect("data");
        assert_eq!(f.into_data().ok().as_deref(), Some(&b"upload"[..]));
        assert!(end.at().is_some(), "a Full body ends with its one frame");
        let e = resp.frame().await.expect("an error").expect_err("cut off");
        assert!(e.is::<ResponseTimeout>(), "{e}");
        assert!(resp.frame().await.is_none(), "nothing after the cut");
    }

    #[tokio::test]
    async fn the_per_try_deadline_counts_from_the_later_of_attempt_and_request_end() {
        let end = RequestEnd::now();
        let e = end.at().expect("ended");
        let later = e + Duration::from_secs(5);
        let d = |r, p, a| Timeouts::deadline(r, p, e, a);
        let s = Duration::from_secs;
        assert_eq!(d(Some(s(10)), None, later), Some(e + s(10)));
        assert_eq!(d(None, Some(s(2)), e), Some(e + s(2)));
        assert_eq!(d(None, Some(s(2)), later), Some(later + s(2)));
        // The earlier of the two.
        assert_eq!(d(Some(s(6)), Some(s(2)), later), Some(e + s(6)));
        assert_eq!(d(Some(s(10)), Some(s(2)), later), Some(later + s(2)));
        assert_eq!(d(None, None, later), None);
        // A body received whole: the expiry resolves after the route's time.
        let t = timeouts(Some(10), None, end);
        tokio::time::timeout(Duration::from_secs(10), t.expiry(Instant::now()))
            .await
            .expect("expired");
    }

    #[tokio::test]
    async fn without_a_timeout_nothing_is_wrapped_or_cut() {
        let b = bound(
            super::super::body::full("x"),
            &Timeouts::NONE,
            Instant::now(),
        );
        let got = b.collect().await.expect("whole").to_bytes();
        assert_eq!(&got[..], b"x");
        assert!(!Timeouts::NONE.any());
        assert_eq!(Timeouts::NONE.route_deadline(), None);
    }
}
