//! Device memory for values that travel between nodes (decoded images, preprocessed tensors).
//! `cuMemFree` waits for the whole device, so buffers are never freed while serving: a dropped
//! buffer goes back to a free list of its size class and the next item of that class takes it.
//! Classes step by quarters of a power of two, so a class wastes at most a fifth of a buffer
//! and images of many sizes share few lists.
//!
//! A class that runs out gets a slab of several buffers from one allocation, so that a new load
//! makes few `cuMemAlloc` calls while the GPU is busy: on an H100, the first run at 128 clients
//! began with 128 of them (one per buffer) and was 16% below the two runs after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result as drv, CudaContext};

use super::cuda::{Call, Result};
use crate::item::DeviceMemory;

pub struct Pool {
    ctx: Arc<CudaContext>,
    free: Mutex<HashMap<usize, Vec<u64>>>,
}

/// The pool of `ctx`'s GPU: the GPU backends of every node on that GPU share it.
pub fn shared(ctx: &Arc<CudaContext>) -> Arc<Pool> {
    static POOLS: Mutex<BTreeMap<usize, Arc<Pool>>> = Mutex::new(BTreeMap::new());
    let mut pools = crate::sync::lock(&POOLS);
    pools
        .entry(ctx.ordinal())
        .or_insert_with(|| {
            Arc::new(Pool {
                ctx: ctx.clone(),
                free: Mutex::new(HashMap::new()),
            })
        })
        .clone()
}

/// A slab holds up to this many buffers of its class ...
const SLAB_BUFFERS: usize = 16;
/// ... within this many bytes (a larger class gets a slab of one).
const SLAB_BYTES: usize = 32 << 20;

/// How many buffers of `class` bytes one allocation makes.
fn slab_of(class: usize) -> usize {
    (SLAB_BYTES / class).clamp(1, SLAB_BUFFERS)
}

/// The smallest class holding `bytes`: 4 steps per power of two, at least 64 KiB.
fn class_of(bytes: usize) -> usize {
    let bytes = bytes.max(1 << 16);
    let top = usize::BITS - 1 - bytes.leading_zeros();
    let step = 1usize << (top - 2);
    bytes.div_ceil(step) * step
}

impl Pool {
    /// A buffer of at least `bytes`.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Result<PooledBuf> {
        let class = class_of(bytes);
        let reused = crate::sync::lock(&self.free)
            .get_mut(&class)
            .and_then(Vec::pop);
        let ptr = match reused {
            Some(p) => p,
            None => {
                self.ctx.bind_to_thread().call("cuCtxSetCurrent")?;
                let n = slab_of(class);
                let started = std::time::Instant::now();
                // SAFETY: a plain allocation, kept for the life of the process.
                let slab = unsafe { drv::malloc_sync(class * n) }.call("cuMemAlloc")?;
                tracing::debug!(
                    class,
                    buffers = n,
                    us = started.elapsed().as_micros() as u64,
                    "GPU value buffers made"
                );
                // The first buffer is this caller's, the others go to the class's list.
                let rest = (1..n).map(|i| slab + (i * class) as u64);
                crate::sync::lock(&self.free)
                    .entry(class)
                    .or_default()
                    .extend(rest);
                slab
            }
        };
        Ok(PooledBuf {
            ptr,
            bytes,
            class,
            pool: self.clone(),
        })
    }
}

/// A device buffer on loan from the pool; it returns there on drop. Whoever drops it must have
/// finished (synchronised) the GPU work that reads it, as with any device memory.
#[derive(Debug)]
pub struct PooledBuf {
    ptr: u64,
    bytes: usize,
    class: usize,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl DeviceMemory for PooledBuf {
    fn ptr(&self) -> u64 {
        self.ptr
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
    fn device(&self) -> usize {
        self.pool.ctx.ordinal()
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        crate::sync::lock(&self.pool.free)
            .entry(self.class)
            .or_default()
            .push(self.ptr);
    }
}

/// Copies a GPU value's bytes to the host (checks and tools; the serving path never does).
pub fn read_back(ctx: &Arc<CudaContext>, value: &crate::item::DeviceValue) -> Result<Vec<u8>> {
    ctx.bind_to_thread().call("cuCtxSetCurrent")?;
    let mut out = vec![0u8; value.mem.bytes()];
    // SAFETY: the value's memory holds `bytes()` bytes and its producer has synchronised.
    unsafe { drv::memcpy_dtoh_sync(&mut out, value.mem.ptr()) }.call("cuMemcpyDtoH")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{class_of, slab_of, SLAB_BYTES};

    #[test]
    fn a_slab_holds_several_small_buffers_and_one_large_one() {
        let input = class_of(3 * 224 * 224 * 4);
        assert_eq!(slab_of(input), 16);
        assert!(slab_of(input) * input <= SLAB_BYTES);
        assert_eq!(slab_of(class_of(40 << 20)), 1);
        let big = class_of(6 << 20);
        assert!((2..16).contains(&slab_of(big)) && slab_of(big) * big <= SLAB_BYTES);
    }

    #[test]
    fn classes_hold_the_size_and_waste_little() {
        for bytes in [
            1, 65_536, 65_537, 150_528, 602_112, 921_600, 4_000_000, 50_000_000,
        ] {
            let c = class_of(bytes);
            assert!(c >= bytes, "{bytes} → {c}");
            assert!(
                c <= (bytes.max(65_536) as f64 * 1.25) as usize,
                "{bytes} → {c}"
            );
            assert_eq!(class_of(c), c, "a class is its own class");
        }
    }
}
