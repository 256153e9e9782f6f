use crate::backend::{Backend, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::item::Item;

/// `result = data`.
pub struct Identity;

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(Identity))
}

impl Backend for Identity {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for item in batch {
            item.result = Some(std::mem::take(&mut item.data));
        }
        Ok(())
    }
}
