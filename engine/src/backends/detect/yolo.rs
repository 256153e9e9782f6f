//! `PostProcYoloV8`: a YOLOv8 / YOLO11 detection head's raw output → the detections after
//! non-maximum suppression, in the original image's pixels. The head is one tensor of
//! `[4 + classes, anchors]` (or `[1, 4 + classes, anchors]`, or flat as the model engines hand
//! each item its output, with `classes` saying how it divides): per anchor the box's centre,
//! width and height on the model's input, then one score per class (already sigmoid; these
//! heads have no objectness). As ultralytics' own `non_max_suppression` with its defaults: an
//! anchor's class is its best-scoring one, anchors scoring above `conf_thres` are candidates,
//! class-aware NMS at `iou_thres`, at most `max_det` kept. The boxes then go back through the
//! letterbox the item records (`offset`, `scale`: `(p - offset) / scale`) and are clipped to
//! `orig_shape`, where the item has them (LetterBoxMat, TopLeftResizeMat).
//!
//! The result is a tensor `[n, 6]`, one row per detection, best first: x1, y1, x2, y2, score,
//! class.

use super::nms::Candidate;
use super::output::{detections, for_each_head, Thresholds};
use crate::backend::{key, Backend, InitContext, Key, Settings};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::item::{Item, Tensor};

pub struct YoloSettings {
    t: Thresholds,
}

const KEYS: &[Key] = &[
    key(
        "classes",
        "1 to 100000",
        "80, or the output's shape where it has one",
        "how many classes the head scores (a flat output is (4 + classes) × anchors)",
    ),
    key(
        "conf_thres",
        "a number from 0 to 1",
        "0.25",
        "the class score an anchor needs to be a candidate",
    ),
    key(
        "iou_thres",
        "a number from 0 to 1",
        "0.7",
        "the overlap above which the lower-scoring box of a class is dropped",
    ),
    key(
        "max_det",
        "1 to 100000",
        "300",
        "the most detections kept per image",
    ),
];

impl Settings for YoloSettings {
    const KEYS: &'static [Key] = KEYS;

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(YoloSettings {
            t: Thresholds::parse(p, 0.25, 0.7)?,
        })
    }
}

pub struct PostProcYoloV8 {
    s: YoloSettings,
}

pub fn new(ctx: &InitContext<'_>, s: YoloSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(PostProcYoloV8 { s }))
}

impl PostProcYoloV8 {
    /// The detections of one head output, on the model's input.
    fn candidates(&self, t: &Tensor) -> Result<Vec<Candidate>, String> {
        let (channels, anchors) = match (t.shape.as_slice(), self.s.t.classes) {
            ([c, a] | [1, c, a], None) => (*c, *a),
            ([c, a] | [1, c, a], Some(k)) if *c == 4 + k => (*c, *a),
            ([c, _] | [1, c, _], Some(k)) => {
                return Err(format!(
                    "was told `classes = {k}`, but the output has {c} rows, not 4 + {k}"
                ))
            }
            ([len], k) => {
                let c = 4 + k.unwrap_or(80);
                if *len == 0 || len % c != 0 {
                    return Err(format!(
                        "cannot split a flat output of {len} values into {c} rows (4 + `classes`) \
                         of anchors; set `classes` to the head's class count"
                    ));
                }
                (c, len / c)
            }
            (other, _) => {
                return Err(format!(
                    "expects a YOLOv8 head's output [4 + classes, anchors], got shape {other:?}"
                ))
            }
        };
        if channels < 5 {
            return Err(format!(
                "expects at least 5 rows (a box and one class), got {channels}"
            ));
        }
        let row = |r: usize| &t.data[r * anchors..(r + 1) * anchors];
        // Each anchor's best class, one class row at a time: the rows are contiguous, an
        // anchor's scores lie a row apart (8400 values for YOLOv8 at 640). Reading them anchor by
        // anchor took 1.6 ms a photo on the H100 box. Strictly greater: the first best class wins.
        let mut best = vec![f32::NEG_INFINITY; anchors];
        let mut best_class = vec![0u32; anchors];
        for r in 4..channels {
            for ((b, k), &s) in best.iter_mut().zip(&mut best_class).zip(row(r)) {
                if s > *b {
                    *b = s;
                    *k = (r - 4) as u32;
                }
            }
        }
        let mut out = Vec::new();
        for (a, (&score, &class)) in best.iter().zip(&best_class).enumerate() {
            if score > self.s.t.conf {
                let (cx, cy, w, h) = (row(0)[a], row(1)[a], row(2)[a], row(3)[a]);
                out.push(Candidate {
                    x1: cx - w / 2.0,
                    y1: cy - h / 2.0,
                    x2: cx + w / 2.0,
                    y2: cy + h / 2.0,
                    score,
                    class: class as usize,
                });
            }
        }
        Ok(out)
    }

    fn detect(&self, item: &Item, t: &Tensor) -> Result<Tensor, String> {
        let boxes = self.candidates(t)?;
        Ok(detections(
            item,
            &boxes,
            self.s.t.conf,
            self.s.t.iou,
            self.s.t.max_det,
        ))
    }
}

impl Backend for PostProcYoloV8 {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for_each_head(batch, "PostProcYoloV8", |item, t| self.detect(item, t));
        Ok(())
    }
}
