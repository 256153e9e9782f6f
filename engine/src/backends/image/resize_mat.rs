use crate::backend::{Backend, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Value};

/// Bilinear resize to `resize_h`×`resize_w`, as `cv::resize(..., INTER_LINEAR)`.
pub struct ResizeMat {
    h: usize,
    w: usize,
}

const MAX_SIDE: usize = 16384;

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let p = ctx.params();
    let side = |key: &str| -> Result<usize, ConfigError> {
        match p.usize(key)? {
            Some(v) if (1..=MAX_SIDE).contains(&v) => Ok(v),
            Some(_) => Err(p.error(
                key,
                p.raw(key).unwrap_or_default(),
                format!("an integer from 1 to {MAX_SIDE}"),
            )),
            None => Err(p.error(key, "", "the output size in pixels, required by ResizeMat")),
        }
    };
    Ok(Box::new(ResizeMat {
        h: side("resize_h")?,
        w: side("resize_w")?,
    }))
}

impl Backend for ResizeMat {
    fn forward(&self, batch: &mut [Item]) -> Result<(), BackendError> {
        super::for_each_mat(batch, "ResizeMat", |mat, _| {
            image::active::resize(&mat, self.h, self.w).map(Value::Mat)
        });
        Ok(())
    }
}
