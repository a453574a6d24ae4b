//! Idle-timeout tracking: a stream wrapper that stamps every read and write, and a future
//! that completes once nothing moved for a while.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock;

/// The last time bytes moved (ms on [`clock::now_ms`]).
#[derive(Clone, Debug)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    /// Starts now.
    pub fn new() -> Self {
        Self(Arc::new(AtomicU64::new(clock::now_ms())))
    }

    /// Stamps now.
    pub fn touch(&self) {
        self.0.store(clock::now_ms(), Ordering::Relaxed);
    }

    /// Completes once nothing moved for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            let last = self.0.load(Ordering::Relaxed);
            let now = clock::now_ms();
            let since = now.saturating_sub(last);
            if since >= limit_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(limit_ms - since)).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// A stream that stamps an [`Activity`] on every read and write.
pub struct Idle<S> {
    inner: S,
    activity: Activity,
}

impl<S> Idle<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
