use crate::backend::{Backend, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::item::Item;

/// `SyncTensor[X]`: X's init and forward on one thread (our instances already give each backend
/// its own thread), then a stream sync so the next node can read the result anywhere. On the
/// CPU there is no stream, so forward is X's.
pub struct SyncTensor {
    inner: Box<dyn Backend>,
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    let inner = ctx.build(ctx.single_arg()?)?;
    Ok(Box::new(SyncTensor { inner }))
}

impl Backend for SyncTensor {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        self.inner.forward(batch)
    }
}
