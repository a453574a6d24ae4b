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

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// `MI_MAX_ALIGN_SIZE` on the 64-bit targets gatehouse ships for.
const PLAIN_ALIGN: usize = 16;

// The rule above is mimalloc's layout on 64-bit targets (16-byte `max_align_t`, 8-byte words).
#[cfg(not(target_pointer_width = "64"))]
compile_error!(
    "gatehouse-alloc assumes a 64-bit target: check PLAIN_ALIGN against mimalloc's MI_MAX_ALIGN_SIZE"
);

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
                mi::mi_malloc(layout.size()).cast()
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
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, so by mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by this allocator with `layout`; the new block keeps the
        // old alignment by the same rule as `alloc`, applied to the new size.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            if plain(new) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
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
}
