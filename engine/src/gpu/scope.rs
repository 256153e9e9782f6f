//! The one stream of a `SyncTensor[...]` instance's GPU backends, synchronised once per batch.
//!
//! Each GPU backend on its own makes a stream and waits for it before returning, so that the
//! next backend may read its values from any stream. Inside `SyncTensor[Sequential[DecodeTensor,
//! ResizeTensor]]` that is one wait per backend per batch, each a wake-up of the instance's
//! thread by the driver, with the GPU idle for this instance in between. With a scope, the
//! backends enqueue on one stream in order and `SyncTensor` waits once at the end: values made
//! on the stream are read by later work on the same stream, and what that work reads (the
//! inputs the `Sequential` drops between stages, the request bytes nvJPEG reads) is kept alive
//! here until the wait.

use std::any::Any;
use std::sync::Mutex;

use crate::error::BackendError;

#[cfg(feature = "cuda")]
use {
    cudarc::driver::{CudaContext, CudaStream},
    std::sync::Arc,
};

/// Created by `SyncTensor` for each instance; GPU backends built inside it find it in their
/// `InitContext`. Without the `cuda` feature it holds nothing and `sync` does nothing.
#[derive(Default)]
pub struct StreamScope {
    inner: Mutex<Inner>,
    /// The node's place in the pipeline: the stream's priority (`gpu::priority`).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    stage: crate::graph::Stage,
}

#[derive(Default)]
struct Inner {
    #[cfg(feature = "cuda")]
    stream: Option<Arc<CudaStream>>,
    /// What enqueued work reads, dropped after the wait.
    keep: Vec<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for StreamScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamScope")
    }
}

impl StreamScope {
    /// A scope for the backends of a node at `stage`.
    pub fn new(stage: crate::graph::Stage) -> StreamScope {
        StreamScope {
            stage,
            ..StreamScope::default()
        }
    }

    /// The scope's stream on `ctx`'s GPU, made on first use. `None` when the scope already has
    /// a stream on another GPU (a backend there keeps a stream of its own and waits for it).
    #[cfg(feature = "cuda")]
    pub fn stream(&self, ctx: &Arc<CudaContext>) -> super::cuda::Result<Option<Arc<CudaStream>>> {
        let mut inner = self.lock();
        if let Some(s) = &inner.stream {
            let same = s.context().ordinal() == ctx.ordinal();
            return Ok(same.then(|| s.clone()));
        }
        let s = super::priority::new_stream(ctx, self.stage)?;
        inner.stream = Some(s.clone());
        Ok(Some(s))
    }

    /// Keeps `value` alive until the next `sync`: work enqueued on the scope's stream reads it.
    pub fn keep(&self, value: impl Any + Send) {
        self.lock().keep.push(Box::new(value));
    }

    /// Waits for the stream (if a backend made one), then lets go of what was kept.
    pub fn sync(&self) -> Result<(), BackendError> {
        let mut inner = self.lock();
        #[cfg(feature = "cuda")]
        if let Some(s) = &inner.stream {
            use super::cuda::Call;
            let waited = s
                .context()
                .bind_to_thread()
                .and_then(|()| s.synchronize())
                .call("cuStreamSynchronize");
            if let Err(e) = waited {
                // What was kept may still be read by the failed work: a GPU error of this
                // kind leaves the context unusable anyway, so leak it rather than free it.
                std::mem::forget(std::mem::take(&mut inner.keep));
                return Err(BackendError::new(e.to_string()));
            }
        }
        inner.keep.clear();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn what_is_kept_lives_until_the_sync() {
        let scope = StreamScope::default();
        let value = Arc::new(7u32);
        scope.keep(value.clone());
        assert_eq!(Arc::strong_count(&value), 2);
        scope.sync().unwrap();
        assert_eq!(Arc::strong_count(&value), 1);
    }
}
