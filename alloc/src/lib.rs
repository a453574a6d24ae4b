//! The global allocator of the `gatehouse` binary: mimalloc, reached through `mi_malloc` when
//! the layout's alignment is one every mimalloc block already has.
//!
//! Why not `mimalloc::MiMalloc`: it calls `mi_malloc_aligned` for every layout. That entry point
//! checks the alignment and looks up the page itself, and any block over 1 KiB (a header map, a
//! request's future) takes its generic aligned path, which over-allocates. Measured with
//! `bench/instructions.sh`: the allocator cost about 1,900 instructions per proxied request
//! that way, for 22 allocations (BENCHMARKS.md, "The allocator's entry point").
//!
//! Why the shortcut is sound: on x86_64 and aarch64 mimalloc rounds every size class above
//! one word to whole double words and starts every page's first block on 16 bytes
//! (`MI_ALIGN2W` and `MI_PAGE_MIN_START_BLOCK_ALIGN` in its sources), so a block of at least
//! `align` bytes, `align <= 16`, is `align`-aligned. That is the rule std's own `System`
//! allocator applies to `malloc`. Larger alignments still go through `mi_malloc_aligned`.
//!
//! Threads that call [`cache_this_thread`] (gatehouse's workers) first look in a LIFO cache of
//! the small blocks they freed last ([`cache`]), which keeps a request's allocations in the
//! data cache where mimalloc would hand out cold ones.

mod cache;

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Serves the calling thread's small allocations from a LIFO cache of the blocks it freed
/// last ([`cache`]'s comment says why). For threads that live as long as the process: a thread
/// that exits keeps its cached blocks.
pub fn cache_this_thread() {
    cache::enable();
}

/// The size to ask mimalloc for: a cacheable size is rounded up to its bin on every thread, so
/// that a block freed into a cache serves any size of its bin.
#[inline]
fn rounded(size: usize) -> usize {
    cache::bin(size).map_or(size, |(_, r)| r)
}

/// `MI_MAX_ALIGN_SIZE` on the 64-bit targets gatehouse ships for.
const PLAIN_ALIGN: usize = 16;

// The rule above is mimalloc's layout on 64-bit targets (16-byte `max_align_t`, 8-byte words).
#[cfg(not(target_pointer_width = "64"))]
compile_error!(
    "gatehouse-alloc assumes a 64-bit target: check PLAIN_ALIGN against mimalloc's MI_MAX_ALIGN_SIZE"
);

// The cache's paths are out of line: inlined into every allocation and drop site of the
// program, they took more instruction-cache misses than they saved data-cache misses
// (`CACHE_SIM=1 bench/instructions.sh`: 426 → 530 L1i misses per request).
#[inline(never)]
fn alloc_plain(size: usize) -> *mut u8 {
    // SAFETY: plain FFI calls; mimalloc returns null on failure, as GlobalAlloc expects.
    unsafe {
        match cache::bin(size) {
            Some((i, r)) => match cache::take(i) {
                Some(p) => p,
                None => mi::mi_malloc(r).cast(),
            },
            None => mi::mi_malloc(size).cast(),
        }
    }
}

/// # Safety
/// `ptr` came from [`alloc_plain`] (or a plain `alloc_zeroed`/`realloc`) for `size` bytes and
/// is no longer used.
#[inline(never)]
unsafe fn free_plain(ptr: *mut u8, size: usize) {
    // SAFETY: as `dealloc`: a plain block of a cacheable size was allocated at its bin's size,
    // so it can serve any request of that bin; any other goes back to mimalloc.
    unsafe {
        if let Some((i, r)) = cache::bin(size)
            && cache::give(ptr, i, r)
        {
            return;
        }
        mi::mi_free(ptr.cast::<c_void>());
    }
}

/// mimalloc with its unaligned entry points for ordinary layouts.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

fn plain(layout: Layout) -> bool {
    layout.align() <= PLAIN_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every pointer handed out comes from mimalloc with at least the layout's size and
// alignment (see the module comment for why `mi_malloc` meets the alignment), and every
// pointer given back goes to `mi_free`/`mi_realloc*`, which accept any mimalloc pointer.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; mimalloc returns null on failure, as GlobalAlloc expects.
        unsafe {
            if plain(layout) {
                alloc_plain(layout.size())
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain(layout) {
                mi::mi_zalloc(rounded(layout.size())).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, so by mimalloc, and for a plain
        // layout of a cacheable size at the bin's size (`alloc`, `alloc_zeroed`, `realloc` all
        // round it): it can serve any request of that bin.
        unsafe {
            if plain(layout) {
                free_plain(ptr, layout.size());
            } else {
                mi::mi_free(ptr.cast::<c_void>());
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by this allocator with `layout`; the new block keeps the
        // old alignment by the same rule as `alloc`, applied to the new size.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            if plain(new) {
                mi::mi_realloc(ptr.cast::<c_void>(), rounded(new_size)).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a Rust type can ask for up to 4 KiB comes back aligned, and
    /// holds what was written through a realloc that grows it.
    #[test]
    fn blocks_have_the_layouts_alignment() {
        let a = MiMalloc;
        // Small, medium (past 1 KiB and 64 KiB) and huge (past 32 MiB) blocks.
        let big = [64 << 10, (64 << 10) + 16, 1 << 20, (1 << 20) + 48, 33 << 20];
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            let sizes = (1..=4096).chain(big.iter().copied());
            for size in sizes.filter(|s| s % align == 0) {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                // SAFETY: non-zero size; freed below with the same layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write(0xa5);
                    let q = a.realloc(p, layout, size * 3);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert_eq!(q.read(), 0xa5);
                    a.dealloc(q, Layout::from_size_align(size * 3, align).expect("valid"));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                    let zeroed = std::slice::from_raw_parts(z, size);
                    let (head, tail) = (size.min(4096), size.saturating_sub(4096));
                    assert!(
                        zeroed[..head]
                            .iter()
                            .chain(&zeroed[tail..])
                            .all(|b| *b == 0)
                    );
                    a.dealloc(z, layout);
                }
            }
        }
    }

    /// With the cache on: blocks live at once never overlap, a freed block comes back first
    /// for its bin (LIFO), sizes of one bin share blocks safely, and blocks freed here that
    /// another thread allocated (and the reverse) are handled.
    #[test]
    fn the_thread_cache_hands_back_warm_blocks_that_fit() {
        let a = MiMalloc;
        let foreign: Vec<(usize, usize)> = std::thread::spawn(|| {
            // Allocated on a thread without the cache, freed on one with it.
            (1..=64)
                .map(|k| {
                    let size = k * 100;
                    let layout = Layout::from_size_align(size, 8).expect("layout");
                    // SAFETY: non-zero size; freed on the other thread with the same layout.
                    let p = unsafe { MiMalloc.alloc(layout) };
                    assert!(!p.is_null());
                    (p as usize, size)
                })
                .collect()
        })
        .join()
        .expect("thread");
        std::thread::spawn(move || {
            cache_this_thread();
            let a = MiMalloc;
            for (p, size) in foreign {
                // SAFETY: allocated above with this layout, not used since.
                unsafe { a.dealloc(p as *mut u8, Layout::from_size_align(size, 8).expect("l")) };
            }
            let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            for round in 0..20_000u32 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let size = 1 + (seed % 9000) as usize;
                let align = [1usize, 8, 16][(seed >> 20) as usize % 3];
                let layout = Layout::from_size_align(size, align.min(size.next_power_of_two()))
                    .expect("layout");
                // SAFETY: non-zero sizes; every block is written within its size, checked,
                // and freed once with its own layout.
                unsafe {
                    let p = if round.is_multiple_of(7) {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % layout.align(), 0);
                    if round.is_multiple_of(7) {
                        assert!(std::slice::from_raw_parts(p, size).iter().all(|b| *b == 0));
                    }
                    let mark = (round % 251) as u8;
                    p.write_bytes(mark, size);
                    live.push((p, layout, mark));
                    if live.len() > 40 || seed.is_multiple_of(3) {
                        let k = (seed >> 33) as usize % live.len();
                        let (q, l, m) = live.swap_remove(k);
                        let n = l.size();
                        assert!(std::slice::from_raw_parts(q, n).iter().all(|b| *b == m));
                        if seed.is_multiple_of(5) {
                            // Grown or shrunk, then freed at its new size.
                            let grown = (n * 3 / 2).max(1);
                            let g = a.realloc(q, l, grown);
                            assert!(
                                std::slice::from_raw_parts(g, n.min(grown))
                                    .iter()
                                    .all(|b| *b == m)
                            );
                            g.write_bytes(m, grown);
                            let gl = Layout::from_size_align(grown, l.align()).expect("layout");
                            live.push((g, gl, m));
                        } else {
                            a.dealloc(q, l);
                        }
                    }
                }
            }
            // LIFO: the block just freed is the next of its bin.
            // SAFETY: a 200-byte block freed and asked for again with the same layout.
            unsafe {
                let l = Layout::from_size_align(200, 8).expect("layout");
                let p = a.alloc(l);
                a.dealloc(p, l);
                assert_eq!(a.alloc(Layout::from_size_align(193, 8).expect("layout")), p);
                a.dealloc(p, Layout::from_size_align(193, 8).expect("layout"));
            }
            for (p, l, m) in live {
                // SAFETY: still live, written with `m` over its size.
                unsafe {
                    assert!(
                        std::slice::from_raw_parts(p, l.size())
                            .iter()
                            .all(|b| *b == m)
                    );
                    a.dealloc(p, l);
                }
            }
        })
        .join()
        .expect("cache thread");
        let _ = a;
    }
}
