//! A streamed request body that a retry can send again, as Envoy's router buffers one: the
//! body goes to the upstream as it arrives, and a copy of what was read is kept, up to a
//! limit. A retry gets a body that replays the copy and then goes on reading the client's
//! body where the previous attempt stopped; the previous attempt's body, if its connection
//! still polls it, fails from then on. Past the limit the copy is given up, and with it any
//! further retry (Envoy: the retry buffer overflowed).
//!
//! Used for bodies of unknown length (chunked HTTP/1.1, HTTP/2 and HTTP/3 without
//! `content-length`: gRPC calls), where collecting the body before sending would hold a
//! streaming call until its client ended it. A mirror of such a request waits for the copy
//! to be complete and sends it then (`whole`): the main request never waits for the mirror.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use tokio::sync::Notify;

use super::body::{self, Body, BoxError};

struct State {
    /// The client's body, not yet read further (`None` once it ended or failed).
    rest: Option<Body>,
    /// What was read so far, while it fits in `limit`.
    copy: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    len: usize,
    limit: usize,
    /// The copy was given up: no attempt after the current one.
    overflow: bool,
    /// The client's body ended.
    ended: bool,
    /// Which attempt's body may read on.
    epoch: u64,
    /// Told when the copy is complete or given up, and when the state goes (mirrors wait).
    done: Arc<Notify>,
    /// The attempt waiting on `rest`: woken when a retry takes the body over, so that it
    /// fails at once (an HTTP/2 upstream's body pipe then resets its stream).
    waiting: Option<Waker>,
    /// A mirror waits for the copy.
    mirrored: bool,
    /// The response was accepted: no retry will come, so the copy is only kept for a mirror.
    settled: bool,
}

impl Drop for State {
    fn drop(&mut self) {
        self.done.notify_waiters();
    }
}

/// The shared body of a request's attempts.
pub struct Tee(Arc<Mutex<State>>);

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tee {
    /// Keeps up to `limit` bytes of `body` for retries.
    pub fn new(body: Body, limit: usize) -> Self {
        Self(Arc::new(Mutex::new(State {
            rest: Some(body),
            copy: Vec::new(),
            trailers: None,
            len: 0,
            limit,
            overflow: false,
            ended: false,
            epoch: 0,
            done: Arc::new(Notify::new()),
            waiting: None,
            mirrored: false,
            settled: false,
        })))
    }

    /// The body of the next attempt, or `None` when the copy was given up. Any earlier
    /// attempt's body stops here.
    pub fn attempt(&self) -> Option<Body> {
        let mut s = lock(&self.0);
        if s.overflow && s.epoch > 0 {
            return None;
        }
        s.epoch += 1;
        if let Some(w) = s.waiting.take() {
            w.wake();
        }
        Some(body::boxed(TeeBody {
            state: self.0.clone(),
            epoch: s.epoch,
            next: 0,
            trailers_sent: false,
        }))
    }

    /// The whole body once the attempts have read it to its end, for a mirror; `None` if it
    /// did not fit the copy, failed, or was never read to its end (the request is gone).
    /// Holds no strong reference while it waits.
    pub fn whole(&self) -> impl Future<Output = Option<Bytes>> + Send + 'static {
        let weak = Arc::downgrade(&self.0);
        let done = {
            let mut s = lock(&self.0);
            s.mirrored = true;
            s.done.clone()
        };
        async move {
            loop {
                let notified = done.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                {
                    let st = weak.upgrade()?;
                    let s = lock(&st);
                    if s.overflow || (s.rest.is_none() && !s.ended) {
                        return None;
                    }
                    if s.ended {
                        let mut all = bytes::BytesMut::with_capacity(s.len);
                        for b in &s.copy {
                            all.extend_from_slice(b);
                        }
                        return Some(all.freeze());
                    }
                }
                notified.await;
            }
        }
    }

    /// No retry will follow (the response was accepted): what is still to come is copied
    /// only if a mirror waits for it, and without one the copy so far is let go.
    pub fn settle(&self) {
        let mut s = lock(&self.0);
        s.settled = true;
        if !s.mirrored {
            s.overflow = true;
            s.copy = Vec::new();
            s.done.notify_waiters();
        }
    }

    /// Whether another attempt could send the whole body.
    pub fn replayable(&self) -> bool {
        let s = lock(&self.0);
        !(s.overflow && s.epoch > 0)
    }
}

/// One attempt's view of the body.
struct TeeBody {
    state: Arc<Mutex<State>>,
    epoch: u64,
    /// The next frame of the copy to replay.
    next: usize,
    trailers_sent: bool,
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut s = lock(&this.state);
        if s.epoch != this.epoch {
            return Poll::Ready(Some(Err("request body handed to a retry".into())));
        }
        if let Some(b) = s.copy.get(this.next) {
            let b = b.clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let s = &mut *s;
        let Some(rest) = s.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => {
                s.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(None) => {
                s.ended = true;
                s.rest = None;
                this.trailers_sent = true;
                s.done.notify_waiters();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if !s.overflow {
                        if s.len + d.len() > s.limit {
                            s.overflow = true;
                            s.copy = Vec::new();
                            s.done.notify_waiters();
                        } else {
                            s.len += d.len();
                            s.copy.push(d.clone());
                        }
                    }
                    this.next = s.copy.len();
                } else if let Some(t) = frame.trailers_ref() {
                    // Trailers end a body: the reader (hyper's HTTP/2 pipe) may not poll for
                    // the end after them, so the copy is complete now.
                    this.trailers_sent = true;
                    s.trailers = Some(t.clone());
                    s.ended = true;
                    s.rest = None;
                    s.done.notify_waiters();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // What the client sent is lost: nothing can be sent again.
                s.rest = None;
                s.overflow = true;
                s.copy = Vec::new();
                s.done.notify_waiters();
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;

    /// A client body: these frames, then its end (or, `stall`ed, nothing more ever).
    struct Script {
        frames: VecDeque<Frame<Bytes>>,
        stall: bool,
    }

    impl HttpBody for Script {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let this = self.get_mut();
            match this.frames.pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None if this.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn script(frames: Vec<Frame<Bytes>>, stall: bool) -> Body {
        body::boxed(Script {
            frames: frames.into(),
            stall,
        })
    }

    fn chunks(parts: &[&'static str]) -> Body {
        let frames = parts
            .iter()
            .map(|p| Frame::data(Bytes::from_static(p.as_bytes())))
            .collect();
        script(frames, false)
    }

    async fn read(b: Body) -> Result<Bytes, BoxError> {
        Ok(b.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn a_retry_replays_what_was_read_and_reads_on() {
        let tee = Tee::new(chunks(&["ab", "cd", "ef"]), 64);
        let mut first = tee.attempt().expect("first");
        // The first attempt reads two frames, then fails (its upstream answered 503).
        for want in ["ab", "cd"] {
            let f = first.frame().await.expect("frame").expect("ok");
            assert_eq!(f.into_data().expect("data"), want);
        }
        let second = tee.attempt().expect("a retry");
        // The first attempt's body is done with.
        assert!(first.frame().await.expect("frame").is_err());
        assert_eq!(read(second).await.expect("body"), "abcdef");
        // And a third sends it all from the copy.
        assert_eq!(
            read(tee.attempt().expect("third")).await.expect("body"),
            "abcdef"
        );
    }

    #[tokio::test]
    async fn a_mirror_gets_the_whole_body_once_it_was_read_or_nothing() {
        let tee = Tee::new(chunks(&["ab", "cd"]), 64);
        let whole = tokio::spawn(tee.whole());
        assert_eq!(
            read(tee.attempt().expect("first")).await.expect("body"),
            "abcd"
        );
        assert_eq!(whole.await.expect("task").as_deref(), Some(&b"abcd"[..]));
        // Too long for the copy: nothing.
        let tee = Tee::new(chunks(&["abcd", "efgh"]), 6);
        let whole = tokio::spawn(tee.whole());
        let _ = read(tee.attempt().expect("first")).await;
        assert_eq!(whole.await.expect("task"), None);
        // The request dropped before its body was read: the mirror gives up.
        let tee = Tee::new(chunks(&["ab"]), 64);
        let whole = tokio::spawn(tee.whole());
        let first = tee.attempt().expect("first");
        drop((tee, first));
        assert_eq!(whole.await.expect("task"), None);
    }

    #[tokio::test]
    async fn trailers_end_the_copy_and_a_retry_sends_them_too() {
        let mut t = HeaderMap::new();
        t.insert("grpc-timeout", http::HeaderValue::from_static("1S"));
        let tee = Tee::new(
            script(
                vec![Frame::data(Bytes::from_static(b"msg")), Frame::trailers(t)],
                false,
            ),
            64,
        );
        let whole = tokio::spawn(tee.whole());
        let mut first = tee.attempt().expect("first");
        // The reader stops after the trailers, as hyper's HTTP/2 pipe does.
        assert!(first.frame().await.expect("data").expect("ok").is_data());
        assert!(
            first
                .frame()
                .await
                .expect("trailers")
                .expect("ok")
                .is_trailers()
        );
        assert_eq!(whole.await.expect("task").as_deref(), Some(&b"msg"[..]));
        let c = tee.attempt().expect("retry").collect().await.expect("body");
        assert_eq!(
            c.trailers().map(|t| t["grpc-timeout"].clone()),
            Some("1S".parse().expect("v"))
        );
        assert_eq!(c.to_bytes(), "msg");
    }

    #[tokio::test]
    async fn a_retry_wakes_the_attempt_it_takes_the_body_from() {
        // A client that has sent one frame and then waits.
        let tee = Tee::new(
            script(vec![Frame::data(Bytes::from_static(b"one"))], true),
            64,
        );
        let mut first = tee.attempt().expect("first");
        assert!(first.frame().await.expect("frame").expect("ok").is_data());
        // The first attempt now waits for more from the client, in a task of its own (as
        // hyper's HTTP/2 body pipe does); a retry takes over and it must end with an error.
        let pipe = tokio::spawn(async move { first.frame().await.map(|r| r.is_err()) });
        tokio::task::yield_now().await;
        let _second = tee.attempt().expect("retry");
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), pipe)
            .await
            .expect("the superseded attempt was woken")
            .expect("task");
        assert_eq!(ended, Some(true));
    }

    #[tokio::test]
    async fn once_settled_nothing_more_is_kept_unless_a_mirror_waits() {
        let tee = Tee::new(chunks(&["ab", "cd"]), 64);
        let mut first = tee.attempt().expect("first");
        let _ = first.frame().await;
        tee.settle();
        assert!(!tee.replayable());
        assert_eq!(read(first).await.expect("rest"), "cd");
        let tee = Tee::new(chunks(&["ab", "cd"]), 64);
        let whole = tokio::spawn(tee.whole());
        let first = tee.attempt().expect("first");
        tee.settle();
        assert_eq!(read(first).await.expect("body"), "abcd");
        assert_eq!(whole.await.expect("task").as_deref(), Some(&b"abcd"[..]));
    }

    #[tokio::test]
    async fn past_the_limit_the_body_streams_once_and_no_retry_follows() {
        let tee = Tee::new(chunks(&["abcd", "efgh", "ij"]), 6);
        assert_eq!(
            read(tee.attempt().expect("first")).await.expect("body"),
            "abcdefghij"
        );
        assert!(!tee.replayable());
        assert!(tee.attempt().is_none());
    }
}
