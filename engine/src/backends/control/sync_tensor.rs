use std::sync::Arc;

use crate::backend::{Backend, InitContext, Takes};
use crate::error::{BackendError, ConfigError};
use crate::gpu::scope::StreamScope;
use crate::item::Item;

/// `SyncTensor[X]`: X's init and forward on one thread (our instances already give each backend
/// its own thread), with one stream for the GPU backends inside X, waited for once after X's
/// forward so that the next node can read the results from any stream (`gpu::scope`). On the
/// CPU no backend makes the stream, and forward is X's.
pub struct SyncTensor {
    inner: Box<dyn Backend>,
    scope: Arc<StreamScope>,
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    let scope = Arc::new(StreamScope::new(ctx.stage));
    let inner = {
        let ctx = InitContext {
            stream_scope: Some(&scope),
            ..*ctx
        };
        ctx.build(ctx.single_arg()?)?
    };
    Ok(Box::new(SyncTensor { inner, scope }))
}

impl Backend for SyncTensor {
    fn takes(&self) -> Takes {
        self.inner.takes()
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        let ran = self.inner.forward(batch);
        // Waited for even when X failed part-way: its enqueued work reads what was kept.
        let waited = self.scope.sync();
        ran.and(waited)
    }
}
