//! nvJPEG's own device and pinned buffers, kept by the decoder that asked for them.
//!
//! Left to its default allocators, nvJPEG frees a buffer it outgrows with `cudaFree` or
//! `cudaFreeHost`, and each of those waits for the whole device: every other decoder, resize
//! and model instance on the GPU stalls behind it. Its buffers grow with the largest image and
//! batch a decode state has met, so under a new load (more clients, larger batches) a server
//! would pay those waits again and again before settling.
//!
//! Here every decoder has a cache. A buffer nvJPEG frees during one of that decoder's calls goes
//! to the decoder's `pending` list; at the start of its next decode, when the decoder's stream
//! has been synchronised since (the decoder or the `SyncTensor` around it synchronises after
//! every batch), pending buffers become free for that decoder's next request of their size
//! class. Reuse never crosses decoders, so no buffer is written by the host or another stream
//! while work of the decoder that freed it may still read it. Real frees happen only when a
//! decoder is dropped.
//!
//! nvJPEG's allocator interface carries no context pointer, so the decoder whose call is under
//! way is found through a thread-local set around each call into nvJPEG (`Scope`); an
//! allocation outside any scope is a plain, uncached one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::result as drv;

/// Device (`u64` address) or pinned host memory, with cudaHostAlloc's flags for the latter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Device,
    Pinned(c_uint),
}

/// A buffer's size class: 4 steps per power of two, at least 4 KiB, so that a buffer nvJPEG
/// regrows by a little is met by the class above.
fn class_of(bytes: usize) -> usize {
    let bytes = bytes.max(1 << 12);
    let top = usize::BITS - 1 - bytes.leading_zeros();
    let step = 1usize << (top - 2);
    bytes.div_ceil(step) * step
}

#[derive(Default)]
struct Lists {
    /// Buffers nvJPEG may be given again, by kind and class.
    free: HashMap<(Kind, usize), Vec<usize>>,
    /// Buffers freed since the decoder's stream was last synchronised.
    pending: Vec<(Kind, usize, usize)>,
    /// Every buffer this cache made that nvJPEG holds now: address → (kind, class).
    lent: HashMap<usize, (Kind, usize)>,
}

/// One decoder's buffers.
#[derive(Default)]
pub(crate) struct Cache {
    lists: Mutex<Lists>,
}

/// Allocations made and reused by every decoder in the process (for the log).
static MADE: AtomicU64 = AtomicU64::new(0);
static MADE_BYTES: AtomicU64 = AtomicU64::new(0);
static REUSED: AtomicU64 = AtomicU64::new(0);

/// How many buffers nvJPEG's calls have needed: made (allocated from the driver), their bytes,
/// and reused from a decoder's cache.
pub fn counts() -> (u64, u64, u64) {
    (
        MADE.load(Ordering::Relaxed),
        MADE_BYTES.load(Ordering::Relaxed),
        REUSED.load(Ordering::Relaxed),
    )
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Cache>>> = const { RefCell::new(None) };
}

/// While alive, nvJPEG's allocations on this thread go through `cache`.
pub(crate) struct Scope {
    previous: Option<Arc<Cache>>,
}

impl Scope {
    pub(crate) fn enter(cache: &Arc<Cache>) -> Scope {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(cache.clone()));
        Scope { previous }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

impl Cache {
    /// The decoder's stream has been synchronised: what nvJPEG freed before is free to reuse.
    pub(crate) fn synchronised(&self) {
        let mut l = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let pending = std::mem::take(&mut l.pending);
        for (kind, class, ptr) in pending {
            l.free.entry((kind, class)).or_default().push(ptr);
        }
    }

    fn take(&self, kind: Kind, bytes: usize) -> Option<usize> {
        let class = class_of(bytes);
        let mut l = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let ptr = match l.free.get_mut(&(kind, class)).and_then(Vec::pop) {
            Some(p) => {
                REUSED.fetch_add(1, Ordering::Relaxed);
                p
            }
            None => {
                let p = allocate(kind, class)?;
                MADE.fetch_add(1, Ordering::Relaxed);
                MADE_BYTES.fetch_add(class as u64, Ordering::Relaxed);
                tracing::debug!(?kind, class, "nvJPEG buffer made");
                p
            }
        };
        l.lent.insert(ptr, (kind, class));
        Some(ptr)
    }

    /// Takes back a buffer this cache lent; false if it did not lend it.
    fn give_back(&self, ptr: usize) -> bool {
        let mut l = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        match l.lent.remove(&ptr) {
            Some((kind, class)) => {
                l.pending.push((kind, class, ptr));
                true
            }
            None => false,
        }
    }
}

impl Drop for Cache {
    /// Runs after the decoder destroyed its nvJPEG states and handles (which gave back what
    /// they held) and synchronised its stream, with its context current.
    fn drop(&mut self) {
        let l = self.lists.get_mut().unwrap_or_else(|p| p.into_inner());
        let pending = l.pending.drain(..).map(|(k, _, p)| (k, p));
        let free = l
            .free
            .drain()
            .flat_map(|((k, _), ptrs)| ptrs.into_iter().map(move |p| (k, p)));
        // Anything still lent belongs to a handle that outlived its decoder: leave it.
        for (kind, ptr) in pending.chain(free).collect::<Vec<_>>() {
            release(kind, ptr);
        }
    }
}

fn allocate(kind: Kind, bytes: usize) -> Option<usize> {
    match kind {
        // SAFETY: plain allocations in the thread's current context (nvJPEG calls its
        // allocator inside our calls, which make the decoder's context current).
        Kind::Device => unsafe { drv::malloc_sync(bytes) }.ok().map(|p| p as usize),
        // SAFETY: as above; cudaHostAlloc's flags are the driver's CU_MEMHOSTALLOC_* values.
        Kind::Pinned(flags) => unsafe { drv::malloc_host(bytes, flags) }
            .ok()
            .map(|p| p as usize),
    }
}

fn release(kind: Kind, ptr: usize) {
    match kind {
        // SAFETY: made by `allocate`, freed once, its users finished (see `Cache::drop`).
        Kind::Device => {
            let _ = unsafe { drv::free_sync(ptr as u64) };
        }
        // SAFETY: as above.
        Kind::Pinned(_) => {
            let _ = unsafe { drv::free_host(ptr as *mut c_void) };
        }
    }
}

/// nvJPEG's allocation callbacks: through the current scope's cache, else plain.
fn alloc_in_scope(out: *mut *mut c_void, bytes: usize, kind: Kind) -> c_int {
    if out.is_null() {
        return 1;
    }
    let cache = CURRENT.with(|c| c.borrow().clone());
    let ptr = match cache {
        Some(cache) => cache.take(kind, bytes),
        None => allocate(kind, bytes.max(1)),
    };
    match ptr {
        Some(p) => {
            // SAFETY: nvJPEG passes a valid out-pointer (checked non-null above).
            unsafe { *out = p as *mut c_void };
            0
        }
        None => 1,
    }
}

fn free_in_scope(ptr: *mut c_void, kind: Kind) -> c_int {
    if ptr.is_null() {
        return 0;
    }
    let cache = CURRENT.with(|c| c.borrow().clone());
    if cache.is_some_and(|c| c.give_back(ptr as usize)) {
        return 0;
    }
    // Not lent by the decoder whose call this is (made outside a scope): free it as nvJPEG's
    // default would, waiting for the device.
    release(kind, ptr as usize);
    0
}

extern "C" fn dev_malloc(out: *mut *mut c_void, bytes: usize) -> c_int {
    alloc_in_scope(out, bytes, Kind::Device)
}

extern "C" fn dev_free(ptr: *mut c_void) -> c_int {
    free_in_scope(ptr, Kind::Device)
}

extern "C" fn pinned_malloc(out: *mut *mut c_void, bytes: usize, flags: c_uint) -> c_int {
    alloc_in_scope(out, bytes, Kind::Pinned(flags))
}

extern "C" fn pinned_free(ptr: *mut c_void) -> c_int {
    // Pinned blocks of any flags free alike; the flags only pick the cache list.
    free_in_scope(ptr, Kind::Pinned(0))
}

/// `nvjpegDevAllocator_t`.
#[repr(C)]
pub(crate) struct DevAllocator {
    malloc: extern "C" fn(*mut *mut c_void, usize) -> c_int,
    free: extern "C" fn(*mut c_void) -> c_int,
}

/// `nvjpegPinnedAllocator_t`.
#[repr(C)]
pub(crate) struct PinnedAllocator {
    malloc: extern "C" fn(*mut *mut c_void, usize, c_uint) -> c_int,
    free: extern "C" fn(*mut c_void) -> c_int,
}

/// The allocators every nvJPEG handle of ours is created with. nvJPEG keeps the pointers, so
/// they are statics.
pub(crate) static DEV: DevAllocator = DevAllocator {
    malloc: dev_malloc,
    free: dev_free,
};
pub(crate) static PINNED: PinnedAllocator = PinnedAllocator {
    malloc: pinned_malloc,
    free: pinned_free,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_hold_the_size_and_waste_at_most_a_quarter() {
        for bytes in [1, 4096, 4097, 100_000, 1 << 20, (1 << 20) + 1, 7_654_321] {
            let c = class_of(bytes);
            assert!(c >= bytes, "{bytes} → {c}");
            assert!(c <= (bytes.max(4096) * 5).div_ceil(4), "{bytes} → {c}");
        }
        assert_eq!(class_of(5000), class_of(5100));
    }

    #[test]
    fn a_freed_buffer_is_reused_only_after_the_stream_is_synchronised() {
        let cache = Arc::new(Cache::default());
        // Lend a fake address by hand (no GPU here): what `take` records.
        let kind = Kind::Pinned(0);
        cache
            .lists
            .lock()
            .unwrap()
            .lent
            .insert(0x1000, (kind, class_of(5000)));
        assert!(cache.give_back(0x1000));
        assert!(!cache.give_back(0x1000), "given back twice");
        {
            let l = cache.lists.lock().unwrap();
            assert!(l.free.is_empty(), "free before the stream was synchronised");
            assert_eq!(l.pending.len(), 1);
        }
        cache.synchronised();
        let mut l = cache.lists.lock().unwrap();
        assert_eq!(l.free[&(kind, class_of(5100))], vec![0x1000]);
        // Dropping the cache would free the fake address: empty it first.
        l.free.clear();
    }
}
