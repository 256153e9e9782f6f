use crate::backend::{Backend, Fusable, InitContext, Takes};
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Value};

/// HWC u8 image → CHW f32 tensor, values kept in 0..=255.
pub struct Mat2Tensor;

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(Mat2Tensor))
}

impl Backend for Mat2Tensor {
    fn takes(&self) -> Takes {
        Takes::Image
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        super::for_each_mat(batch, "Mat2Tensor", |mat, _| {
            Ok(Value::Tensor(image::to_chw_f32(&mat)))
        });
        Ok(())
    }

    fn fusable(&self) -> Option<Fusable> {
        Some(Fusable::MatToTensor)
    }
}
