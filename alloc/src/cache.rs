//! A per-thread last-in-first-out cache of small blocks, in front of mimalloc, on the threads
//! that ask for it (gatehouse's workers).
//!
//! Why: mimalloc puts a freed block on its page's *local* free list and hands out blocks from
//! the page's other list until that is empty ("free-list sharding"). A request that allocates
//! and frees the same dozen objects as the one before it therefore gets blocks that cycle
//! through whole pages — memory the data cache no longer holds — and every first write to them
//! misses. Measured with `CACHE_SIM=1 bench/instructions.sh`: the allocator's free-list reads
//! and the first writes into fresh blocks were the largest single source of L1 data misses
//! after the request's own moves. A LIFO cache returns the block the last request just freed,
//! still in L1, as jemalloc's and tcmalloc's thread caches and HAProxy's pools do.
//!
//! Sizes up to [`MAX`] are rounded up to a bin (16-byte steps to 1 KiB, 256-byte steps above)
//! and always allocated at the bin's size, so any block in a bin can serve any request of it.
//! Each bin holds at most [`cap`] blocks (about 32 KiB a bin); past that a free goes to
//! mimalloc. The cache is never emptied: it belongs to threads that live as long as the
//! process (a thread that enabled it and exits keeps its blocks, which is why only workers
//! enable it), and it makes no allocation of its own, so it cannot recurse into the allocator.

use std::cell::UnsafeCell;
use std::ptr;

/// Largest size served from the cache.
pub(crate) const MAX: usize = 8192;
const SMALL: usize = 1024;
const SMALL_STEP: usize = 16;
const LARGE_STEP: usize = 256;
const BINS: usize = SMALL / SMALL_STEP + (MAX - SMALL) / LARGE_STEP;
/// Bytes a bin may hold.
const BIN_BYTES: usize = 32 * 1024;
const BIN_BLOCKS: usize = 32;

/// The bin of a size: its index and the size its blocks have.
#[inline]
pub(crate) fn bin(size: usize) -> Option<(usize, usize)> {
    if size == 0 {
        None
    } else if size <= SMALL {
        let r = size.next_multiple_of(SMALL_STEP);
        Some((r / SMALL_STEP - 1, r))
    } else if size <= MAX {
        let r = size.next_multiple_of(LARGE_STEP);
        Some((SMALL / SMALL_STEP + (r - SMALL) / LARGE_STEP - 1, r))
    } else {
        None
    }
}

/// Most blocks a bin of `size`-byte blocks keeps.
#[inline]
fn cap(size: usize) -> u32 {
    (BIN_BYTES / size).clamp(1, BIN_BLOCKS) as u32
}

#[derive(Clone, Copy)]
struct Bin {
    /// The last freed block; its first word points to the one freed before it.
    head: *mut u8,
    len: u32,
}

struct Cache {
    on: bool,
    bins: [Bin; BINS],
}

thread_local! {
    // No destructor and a constant initialiser: reaching it never allocates.
    static CACHE: UnsafeCell<Cache> = const {
        UnsafeCell::new(Cache {
            on: false,
            bins: [Bin { head: ptr::null_mut(), len: 0 }; BINS],
        })
    };
}

/// Turns the cache on for the calling thread (for the rest of its life).
pub(crate) fn enable() {
    let _ = CACHE.try_with(|c| {
        // SAFETY: the cell is this thread's and no reference into it outlives this closure;
        // the allocator below never calls back into itself while holding one.
        unsafe { (*c.get()).on = true }
    });
}

/// A cached block of bin `i`, if the thread caches and the bin holds one.
#[inline]
pub(crate) fn take(i: usize) -> Option<*mut u8> {
    CACHE
        .try_with(|c| {
            // SAFETY: as in `enable`; `i < BINS` (from `bin`); a cached block is at least a
            // word long (bins start at 16 bytes) and its first word was written by `give`.
            unsafe {
                let c = &mut *c.get();
                let b = c.bins.get_mut(i)?;
                if !c.on || b.head.is_null() {
                    return None;
                }
                let p = b.head;
                b.head = p.cast::<*mut u8>().read();
                b.len -= 1;
                Some(p)
            }
        })
        .ok()
        .flatten()
}

/// Keeps a freed block of bin `i` (`size` bytes): false when the thread does not cache or the
/// bin is full, and the block must go back to mimalloc.
///
/// # Safety
/// `p` is a block of at least `size` bytes that nothing uses any more, 16-byte aligned.
#[inline]
pub(crate) unsafe fn give(p: *mut u8, i: usize, size: usize) -> bool {
    CACHE
        .try_with(|c| {
            // SAFETY: as in `enable`; `p` is free and at least 16 bytes, aligned for a pointer.
            unsafe {
                let c = &mut *c.get();
                let Some(b) = c.bins.get_mut(i) else {
                    return false;
                };
                if !c.on || b.len >= cap(size) {
                    return false;
                }
                p.cast::<*mut u8>().write(b.head);
                b.head = p;
                b.len += 1;
                true
            }
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_every_size_once_and_round_up() {
        let mut last = (0, 0);
        for size in 1..=MAX {
            let (i, r) = bin(size).expect("a bin");
            assert!(
                r >= size && r.is_multiple_of(SMALL_STEP),
                "size {size} → {r}"
            );
            assert!(i < BINS, "size {size} → bin {i}");
            assert!(i == last.0 || i == last.0 + 1 || size == 1, "size {size}");
            assert_eq!(bin(r), Some((i, r)), "a bin's own size maps to it");
            last = (i, r);
        }
        assert_eq!(last.0, BINS - 1);
        assert_eq!(bin(0), None);
        assert_eq!(bin(MAX + 1), None);
    }
}
