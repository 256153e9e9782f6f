//! What every YOLO post-processing does once its head is decoded into candidate boxes on the
//! model's input: non-maximum suppression, the boxes back through the item's letterbox or
//! resize (`offset`, `scale`: `(p - offset) / scale`), clipped to `orig_shape`, as a `[n, 6]`
//! tensor (x1, y1, x2, y2, score, class), best first. And the two settings' readers they share.

use super::nms::{nms, Candidate};
use crate::config::Params;
use crate::error::ConfigError;
use crate::item::{Item, Tensor, Value};

/// An extra the letterbox wrote: a tensor of `n` values.
fn extra<const N: usize>(item: &Item, key: &str) -> Option<[f32; N]> {
    match item.extras.get(key) {
        Some(Value::Tensor(t)) => t.data.as_slice().try_into().ok(),
        _ => None,
    }
}

/// The detections kept among `boxes`, in the original image's pixels.
pub fn detections(item: &Item, boxes: &[Candidate], conf: f32, iou: f32, max_det: usize) -> Tensor {
    let kept = nms(boxes, conf, iou, max_det);
    let [ox, oy] = extra::<2>(item, "offset").unwrap_or([0.0, 0.0]);
    // One scale (LetterBoxMat), or x and y (ResizePadMat); none: the model saw the photo.
    let (sx, sy) = match (extra::<1>(item, "scale"), extra::<2>(item, "scale")) {
        (Some([s]), _) => (s, s),
        (_, Some([x, y])) => (x, y),
        _ => (1.0, 1.0),
    };
    let clip = extra::<2>(item, "orig_shape");
    let mut data = Vec::with_capacity(kept.len() * 6);
    for i in kept {
        let b = &boxes[i];
        let mut corners = [
            (b.x1 - ox) / sx,
            (b.y1 - oy) / sy,
            (b.x2 - ox) / sx,
            (b.y2 - oy) / sy,
        ];
        if let Some([h, w]) = clip {
            for (j, v) in corners.iter_mut().enumerate() {
                *v = v.clamp(0.0, if j % 2 == 0 { w } else { h });
            }
        }
        data.extend(corners);
        data.extend([b.score, b.class as f32]);
    }
    Tensor::new(vec![data.len() / 6, 6], data)
}

/// The keys every YOLO head reads, with each head's defaults.
pub struct Thresholds {
    /// Classes of a flat output (`None`: 80, COCO's, unless the tensor's shape says).
    pub classes: Option<usize>,
    pub conf: f32,
    pub iou: f32,
    pub max_det: usize,
}

impl Thresholds {
    /// `classes`, `conf_thres`, `iou_thres` and `max_det` (300 when absent).
    pub fn parse(p: &Params, conf: f32, iou: f32) -> Result<Thresholds, ConfigError> {
        Ok(Thresholds {
            classes: p.usize_in("classes", 1, 100_000)?,
            conf: unit(p, "conf_thres", conf)?,
            iou: unit(p, "iou_thres", iou)?,
            max_det: p.usize_in("max_det", 1, 100_000)?.unwrap_or(300),
        })
    }
}

/// A threshold key: a number from 0 to 1, `default` when absent.
fn unit(p: &Params, key: &str, default: f32) -> Result<f32, ConfigError> {
    match p.f64(key)? {
        None => Ok(default),
        Some(v) if (0.0..=1.0).contains(&v) => Ok(v as f32),
        Some(v) => Err(p.error(key, &v.to_string(), "a number from 0 to 1")),
    }
}

/// Runs `detect` on each item's tensor, failing the items it refuses with `backend`'s name.
pub fn for_each_head<'a>(
    batch: impl IntoIterator<Item = &'a mut Item>,
    backend: &str,
    mut detect: impl FnMut(&Item, &Tensor) -> Result<Tensor, String>,
) {
    for item in batch {
        let out = match &item.data {
            Value::Tensor(t) => detect(item, t),
            Value::Device(_) => Err("expects the model's output on the host; its model's \
                                     `output` is \"gpu\", which only PostProcYoloV8 reads"
                .to_string()),
            other => Err(format!(
                "expects the model's output tensor, got {}",
                other.kind()
            )),
        };
        match out {
            Ok(t) => item.result = Some(Value::Tensor(t)),
            Err(e) => item.fail(format!("{backend} {e}")),
        }
    }
}
