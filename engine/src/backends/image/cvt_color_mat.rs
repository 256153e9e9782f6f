use crate::backend::{Backend, Fusable, InitContext};
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Value};

/// Channel order: `color = "rgb"` or `"bgr"`. The current order travels in the item's `color`
/// extra (DecodeMat sets `bgr`); an image without it is taken as BGR, as OpenCV's are.
pub struct CvtColorMat {
    target: &'static str,
}

pub fn new(ctx: &InitContext<'_>) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let p = ctx.params();
    let target = match p.raw("color").map(|s| s.trim().to_ascii_lowercase()) {
        Some(c) if c == "rgb" => "rgb",
        Some(c) if c == "bgr" => "bgr",
        other => {
            return Err(p.error(
                "color",
                other.as_deref().unwrap_or_default(),
                "`rgb` or `bgr`, the channel order cvtColorMat produces",
            ))
        }
    };
    Ok(Box::new(CvtColorMat { target }))
}

impl Backend for CvtColorMat {
    fn forward(&self, batch: &mut [Item]) -> Result<(), BackendError> {
        super::for_each_mat(batch, "cvtColorMat", |mat, item| {
            let current = match item.extras.get("color") {
                Some(Value::Text(c)) => c.as_str(),
                _ => "bgr",
            };
            let out = if current != self.target {
                image::active::swap_red_blue(mat)?
            } else {
                mat
            };
            item.extras
                .insert("color".into(), Value::Text(self.target.into()));
            Ok(Value::Mat(out))
        });
        Ok(())
    }

    fn fusable(&self) -> Option<Fusable> {
        Some(Fusable::MatColor {
            rgb: self.target == "rgb",
        })
    }
}
