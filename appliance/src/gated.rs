//! A future that is polled only after its own waker fired.
//!
//! A connection's task waits on its I/O and, beside it, on signals that almost never come (the
//! drain and stop watches, the idle timer). `tokio::select!` polls every branch on every wake,
//! and polling a pending watch takes the lock of a `Notify` that all connections of both
//! workers share: measured at about 600 instructions per proxied request
//! (`bench/instructions.sh`), on two wakes per request. Wrapped in [`Gated`], such a branch
//! costs an atomic swap per wake until its own waker fires, which is how `FuturesUnordered`
//! avoids polling futures that were not woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// The inner future's waker: remembers that it fired, and wakes the task.
#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// `F`, polled only on its first poll and after its waker fired.
    pub struct Gated<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        waker: Waker,
    }
}

impl<F> Gated<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            // The first poll polls `inner`, which registers the waker.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Self { inner, flag, waker }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the check: a wake between the two still reaches this task.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready on the third, and wakes itself on each of the first two.
    struct Counting<'a> {
        polls: &'a AtomicUsize,
        wake_self: bool,
    }

    impl Future for Counting<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let n = self.polls.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= 3 {
                return Poll::Ready(());
            }
            if self.wake_self {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    /// Polls of the task that did not come from the inner future's waker do not reach it.
    #[test]
    fn polls_the_inner_future_only_when_it_was_woken() {
        let polls = AtomicUsize::new(0);
        let mut g = std::pin::pin!(Gated::new(Counting {
            polls: &polls,
            wake_self: false,
        }));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10 {
            assert!(g.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "only the first poll reached it"
        );
        g.flag.clone().wake();
        assert!(g.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    /// A wake of the inner future wakes the task, and the next poll reaches it.
    #[tokio::test]
    async fn an_inner_wake_reaches_the_task() {
        let polls = AtomicUsize::new(0);
        Gated::new(Counting {
            polls: &polls,
            wake_self: true,
        })
        .await;
        assert_eq!(polls.load(Ordering::Relaxed), 3);
    }

    /// A watch change seen through the gate, as `server::serve` uses it.
    #[tokio::test]
    async fn a_watch_change_completes_the_gated_wait() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let wait = tokio::spawn(async move {
            Gated::new(async { crate::http::server::turned_true(&mut rx).await }).await;
        });
        tokio::task::yield_now().await;
        tx.send(true).expect("receiver alive");
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("woken within 10 s")
            .expect("task ran");
    }
}
