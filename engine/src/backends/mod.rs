//! Every backend this build provides, one file per TOML name (docs/architecture.md#backends).

pub mod control;
pub mod detect;
pub mod gpu_image;
pub mod image;
pub mod model;

use crate::backend::Registry;

impl Registry {
    /// Every backend this build provides.
    pub fn with_defaults() -> Self {
        let mut r = Registry::empty();
        register_all(&mut r);
        r
    }
}

pub fn register_all(r: &mut Registry) {
    control::register(r);
    detect::register(r);
    gpu_image::register(r);
    image::register(r);
    model::register(r);
}
