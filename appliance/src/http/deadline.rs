//! The route `timeout` and `perTryTimeout` as Envoy runs them: the clock starts when the
//! client's request has been received whole (its body included) and stops when the response
//! has been received whole (its body included). A slow upload is not cut short by a timeout
//! meant for the backend; a response body still streaming at the deadline is cut off
//! (HTTP/2 stream reset, HTTP/1.1 connection closed) and logged UT.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::body::{Body, BoxError};
use super::record::Record;
use super::service::ConnInfo;

/// When the downstream request ended (its last body frame read), once known.
#[derive(Debug, Default)]
pub struct RequestEnd {
    at: OnceLock<Instant>,
    notify: Notify,
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
#[derive(Clone)]
pub struct Timeouts {
    /// The route's `timeout`.
    pub route: Option<Duration>,
    /// The retry policy's `perTryTimeout`.
    pub per_try: Option<Duration>,
    /// The end of the request; `None` when neither timeout is set.
    pub end: Option<Arc<RequestEnd>>,
    /// Who hears of a response cut off: the request's record and its connection.
    pub cut: Option<Arc<Cut>>,
}

/// A response cut off at its deadline, as the request's record and its downstream
/// connection learn of it.
pub struct Cut {
    fired: AtomicBool,
    conn: Arc<ConnInfo>,
}

impl std::fmt::Debug for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cut").field("fired", &self.fired()).finish()
    }
}

impl Cut {
    /// A cut of a request on `conn`, which `rec` will see.
    pub fn new(conn: &Arc<ConnInfo>, rec: &mut Record) -> Arc<Self> {
        let c = Arc::new(Self {
            fired: AtomicBool::new(false),
            conn: conn.clone(),
        });
        rec.cut = Some(c.clone());
        c
    }

    /// Whether the timer cut the response off.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.conn.cut.notify_one();
    }
}

impl Timeouts {
    /// No timeout at all.
    pub const NONE: Self = Self {
        route: None,
        per_try: None,
        end: None,
        cut: None,
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

/// A response body cut off at its deadline by a timer of its own, as Envoy's route timer
/// fires whether or not anyone reads. The body is not only checked when polled: a client
/// that stops reading (a full socket buffer, an HTTP/2 window at zero) would otherwise hold
/// the upstream connection, its pool permit and the backend's work past the deadline. At
/// the deadline the timer task drops the upstream body (closing or resetting the upstream
/// stream and giving its connection back), and the next poll reports [`ResponseTimeout`].
struct Bounded {
    slot: Arc<Mutex<Slot>>,
    /// The timer task, stopped when the body ends or is dropped first.
    timer: tokio::task::AbortHandle,
    /// Whether the timeout was reported.
    reported: bool,
}

/// What the body and its timer share.
struct Slot {
    /// The upstream body; `None` once cut off.
    body: Option<Body>,
    /// The task reading the body, woken when the timer cuts it off.
    waker: Option<Waker>,
    /// The body ended or failed by itself: nothing to cut.
    done: bool,
}

/// `body` (a response's) bounded by the timeouts of the attempt started at `attempt`.
pub fn bound(body: Body, t: &Timeouts, attempt: Instant) -> Body {
    if !t.any() || body.is_end_stream() {
        return body;
    }
    let slot = Arc::new(Mutex::new(Slot {
        body: Some(body),
        waker: None,
        done: false,
    }));
    let expiry = t.expiry(attempt);
    let cut = slot.clone();
    let tell = t.cut.clone();
    let timer = tokio::spawn(async move {
        expiry.await;
        let (body, waker) = {
            let mut g = lock(&cut);
            if g.done {
                return;
            }
            (g.body.take(), g.waker.take())
        };
        // Dropped outside the lock: closing the upstream stream may take a while.
        drop(body);
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(t) = tell {
            t.fire();
        }
    })
    .abort_handle();
    super::body::boxed(Bounded {
        slot,
        timer,
        reported: false,
    })
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Bounded {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

impl HttpBody for Bounded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut g = lock(&self.slot);
        let Some(body) = g.body.as_mut() else {
            drop(g);
            if self.reported {
                return Poll::Ready(None);
            }
            self.reported = true;
            return Poll::Ready(Some(Err(Box::new(ResponseTimeout))));
        };
        let r = Pin::new(&mut *body).poll_frame(cx);
        let done = match &r {
            Poll::Pending => {
                match g.waker.as_ref() {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => g.waker = Some(cx.waker().clone()),
                }
                false
            }
            Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
            Poll::Ready(None | Some(Err(_))) => true,
        };
        g.done = done;
        drop(g);
        if done {
            // Ended (or failed) in time: the timer has nothing left to cut.
            self.timer.abort();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &lock(&self.slot).body {
            Some(b) => b.is_end_stream(),
            None => self.reported,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &lock(&self.slot).body {
            Some(b) => b.size_hint(),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn timeouts(route: Option<u64>, per_try: Option<u64>, end: Arc<RequestEnd>) -> Timeouts {
        Timeouts {
            route: route.map(Duration::from_millis),
            per_try: per_try.map(Duration::from_millis),
            end: Some(end),
            cut: None,
        }
    }

    #[tokio::test]
    async fn the_clock_starts_at_the_end_of_the_request_and_covers_the_response_body() {
        let (mut req, end) = Ending::wrap(super::super::body::full("upload"));
        let t = timeouts(Some(20), None, end.clone());
        let mut resp = bound(
            super::super::body::boxed(Silent::default()),
            &t,
            Instant::now(),
        );
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

    /// A body whose next frame never comes, that says when it is dropped.
    #[derive(Default)]
    struct Silent(Arc<AtomicBool>);

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

    impl Drop for Silent {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_timer_drops_an_unread_upstream_body_at_the_deadline() {
        let dropped = Arc::new(AtomicBool::new(false));
        let t = timeouts(Some(20), None, RequestEnd::now());
        let mut resp = bound(
            super::super::body::boxed(Silent(dropped.clone())),
            &t,
            Instant::now(),
        );
        // Never polled (a client that stopped reading): cut all the same.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !dropped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the upstream body dropped at the deadline");
        let e = resp.frame().await.expect("an error").expect_err("cut off");
        assert!(e.is::<ResponseTimeout>(), "{e}");
        assert!(resp.frame().await.is_none(), "nothing after the cut");
        assert!(resp.is_end_stream());
    }

    #[tokio::test]
    async fn a_body_done_in_time_stops_its_timer() {
        let t = timeouts(Some(50), None, RequestEnd::now());
        let mut resp = bound(super::super::body::full("x"), &t, Instant::now());
        // A `Full` body is not yet at its end before its frame is read: it is bounded.
        let f = resp.frame().await.expect("a frame").expect("data");
        assert_eq!(f.into_data().ok().as_deref(), Some(&b"x"[..]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(resp.frame().await.is_none(), "ended, not cut off");
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
