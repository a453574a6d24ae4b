//! How the request path's futures are made, so that making them copies little.
//!
//! A future is built on the stack and then moved where it runs. `Box::pin(fut)` copies all of
//! it, however little of it is in use before its first poll: 6.4 KB per HTTP/1.1 exchange.
//! Written into an allocation that already exists (`pinned`), only the bytes up to the end of
//! its first state are copied.
//!
//! Those bytes are its arguments, but not only those. An async fn's arguments live in the
//! part of its future that every state shares, and the compiler orders that part by
//! alignment: the 8-byte arguments first, then the locals kept across more than one `.await`,
//! then the 1-byte arguments. A `bool` argument thus lands behind the largest locals and
//! stretches the first state to almost the whole future (the exchange's `Asked` sat at byte
//! 5,400). Wrapped in `Aligned`, it sits with the other arguments at the front.
//!
//! Measured with `gdb` (a breakpoint on `memcpy` for sizes over 100 bytes) and
//! `bench/instructions.sh`: the exchange's copy went from 6,464 bytes to 336, and the
//! instructions per request from 28,738 to 28,242 (BENCHMARKS.md, stop 19). Either change
//! alone left the copy at 5,403 or 6,464 bytes.

use std::pin::Pin;

/// `T`, aligned to 8 bytes.
#[derive(Debug, Clone, Copy)]
#[repr(align(8))]
pub(crate) struct Aligned<T>(pub T);

/// `Box::pin(make())`, allocated before the value is made, so that only its first state is
/// copied into the box.
pub(crate) fn pinned<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_byte_argument_is_aligned_as_a_pointer() {
        assert_eq!(align_of::<Aligned<bool>>(), 8);
        assert_eq!(size_of::<Aligned<bool>>(), 8);
    }

    #[tokio::test]
    async fn a_future_made_in_its_box_runs_as_one_boxed_after() {
        let x = Aligned(20u64);
        let fut = pinned(|| async move {
            tokio::task::yield_now().await;
            x.0 + 22
        });
        assert_eq!(fut.await, 42);
    }
}
