use std::time::Duration;

use crate::backend::{key, Backend, InitContext, Key, Settings};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::item::Item;

pub struct SleepSettings {
    time: Duration,
}

impl Settings for SleepSettings {
    const KEYS: &'static [Key] = &[key(
        "sleep_ms",
        "milliseconds",
        "10",
        "how long each batch sleeps",
    )];

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(SleepSettings {
            time: p.millis_or("sleep_ms", Duration::from_millis(10))?,
        })
    }
}

/// Sleeps `sleep_ms` (default 10) per batch, then `result = data`: a stand-in for a slow model
/// in scheduler tests and overload drills.
pub struct Sleep {
    time: Duration,
}

pub fn new(ctx: &InitContext<'_>, s: SleepSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(Sleep { time: s.time }))
}

impl Backend for Sleep {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        std::thread::sleep(self.time);
        for item in batch {
            item.result = Some(std::mem::take(&mut item.data));
        }
        Ok(())
    }
}
