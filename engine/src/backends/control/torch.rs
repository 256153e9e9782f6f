use crate::backend::{Backend, InitContext, Takes};
use crate::error::{BackendError, ConfigError};
use crate::item::Item;

/// `Torch[X]`: TorchPipe's wrapper that moves tensors to X's device. The CPU engine's tensors
/// are already where X wants them, so it forwards to X.
pub struct Torch {
    inner: Box<dyn Backend>,
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    let inner = ctx.build(ctx.single_arg()?)?;
    Ok(Box::new(Torch { inner }))
}

impl Backend for Torch {
    fn takes(&self) -> Takes {
        self.inner.takes()
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        self.inner.forward(batch)
    }
}
