use crate::backend::{key, Key};

pub(super) const KEYS: &[Key] = &[key(
    "sleep_ms",
    "milliseconds",
    "10",
    "how long each batch sleeps",
)];

use std::time::Duration;

use crate::backend::{Backend, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::item::Item;

/// Sleeps `sleep_ms` (default 10) per batch, then `result = data`: a stand-in for a slow model
/// in scheduler tests and overload drills.
pub struct Sleep {
    time: Duration,
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let time = ctx
        .params()
        .millis_or("sleep_ms", Duration::from_millis(10))?;
    Ok(Box::new(Sleep { time }))
}

impl Backend for Sleep {
    fn forward(&self, batch: &mut [Item]) -> Result<(), BackendError> {
        std::thread::sleep(self.time);
        for item in batch {
            item.result = Some(std::mem::take(&mut item.data));
        }
        Ok(())
    }
}
