use crate::backend::{Backend, Fusable, InitContext, Key, Settings, Takes};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Value};

pub struct CvtColorMatSettings {
    /// The channel order produced: RGB, else BGR.
    pub rgb: bool,
}

impl Settings for CvtColorMatSettings {
    const KEYS: &'static [Key] = &[crate::backends::image::REQUIRED_COLOR];

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(CvtColorMatSettings {
            rgb: super::required_color(p, "the channel order cvtColorMat produces")?,
        })
    }
}

/// Channel order: `color = "rgb"` or `"bgr"`. The current order travels in the item's `color`
/// extra (DecodeMat sets `bgr`); an image without it is taken as BGR, as OpenCV's are.
pub struct CvtColorMat {
    rgb: bool,
}

pub fn new(ctx: &InitContext<'_>, s: CvtColorMatSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(CvtColorMat { rgb: s.rgb }))
}

impl Backend for CvtColorMat {
    fn takes(&self) -> Takes {
        Takes::Image
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
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
