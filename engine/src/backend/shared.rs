use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::ConfigError;

/// Objects built once and shared by a node's instances, keyed by what they were built from.
/// Instances start on their own threads at once; the first to ask builds, the others wait.
#[derive(Default)]
pub struct SharedCache {
    map: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
}

impl SharedCache {
    pub fn get_or_try_init<T: Any + Send + Sync>(
        &self,
        key: &str,
        init: impl FnOnce() -> Result<T, ConfigError>,
    ) -> Result<Arc<T>, ConfigError> {
        // Held across `init` on purpose: a second instance must not load the same model again.
        let mut map = crate::sync::lock(&self.map);
        if let Some(found) = map.get(key) {
            if let Ok(typed) = Arc::clone(found).downcast::<T>() {
                return Ok(typed);
            }
        }
        let value = Arc::new(init()?);
        map.insert(key.to_string(), value.clone());
        Ok(value)
    }
}
