use crate::backend::{key, Backend, InitContext, Key, Settings, Takes};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::image;
use crate::item::{Item, Value};

pub struct DecodeMatSettings {
    pub max_pixels: usize,
}

impl Settings for DecodeMatSettings {
    const KEYS: &'static [Key] = &[key(
        "max_pixels",
        "a positive integer",
        "50,000,000",
        "larger images are refused from their header",
    )];

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(DecodeMatSettings {
            max_pixels: p.usize_or("max_pixels", image::DEFAULT_MAX_PIXELS)?,
        })
    }
}

/// JPEG/PNG/BMP bytes → HWC u8 BGR, like `cv2.imdecode(..., IMREAD_COLOR)`.
/// `max_pixels` (default 50,000,000) refuses larger images before decoding them.
pub struct DecodeMat {
    max_pixels: usize,
}

pub fn new(ctx: &InitContext<'_>, s: DecodeMatSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(DecodeMat {
        max_pixels: s.max_pixels,
    }))
}

impl Backend for DecodeMat {
    fn takes(&self) -> Takes {
        Takes::Encoded
    }

    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for item in batch {
            let decoded = match &item.data {
                Value::Bytes(bytes) => {
                    image::active::decode_bgr(bytes, self.max_pixels).map_err(|e| e.to_string())
                }
                other => Err(format!(
                    "DecodeMat expects encoded bytes as data, got {}",
                    other.kind()
                )),
            };
            match decoded {
                Ok(mat) => {
                    item.result = Some(Value::Mat(mat));
                    item.set_color(false);
                }
                Err(e) => item.fail(e),
            }
        }
        Ok(())
    }
}
