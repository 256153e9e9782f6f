use crate::backend::{key, Key};

pub(super) const KEYS: &[Key] = &[key(
    "color",
    "`rgb` or `bgr`",
    "required",
    "the channel order written",
)];

use crate::backend::{Backend, Fusable, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Value};

/// Channel order: `color = "rgb"` or `"bgr"`. The current order travels in the item's `color`
/// extra (DecodeMat sets `bgr`); an image without it is taken as BGR, as OpenCV's are.
pub struct CvtColorMat {
    rgb: bool,
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let rgb = super::required_color(ctx, "the channel order cvtColorMat produces")?;
    Ok(Box::new(CvtColorMat { rgb }))
}

impl Backend for CvtColorMat {
    fn forward(&self, batch: &mut [Item]) -> Result<(), BackendError> {
        super::for_each_mat(batch, "cvtColorMat", |mat, item| {
            let out = if item.is_rgb() != self.rgb {
                image::active::swap_red_blue(mat)?
            } else {
                mat
            };
            item.set_color(self.rgb);
            Ok(Value::Mat(out))
        });
        Ok(())
    }

    fn fusable(&self) -> Option<Fusable> {
        Some(Fusable::MatColor { rgb: self.rgb })
    }
}
