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
use crate::item::{Item, Tensor, Value};

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
    /// The GPU pass's state, made when the first head on the GPU arrives.
    #[cfg(feature = "cuda")]
    gpu: Option<super::yolo_gpu::GpuHeads>,
    #[cfg(feature = "cuda")]
    stage: crate::graph::Stage,
}

pub fn new(ctx: &InitContext<'_>, s: YoloSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(PostProcYoloV8 {
        s,
        #[cfg(feature = "cuda")]
        gpu: None,
        #[cfg(feature = "cuda")]
        stage: ctx.stage,
    }))
}

impl PostProcYoloV8 {
    /// A head's `[channels, anchors]`, from its shape and `classes`.
    fn head_dims(&self, shape: &[usize]) -> Result<(usize, usize), String> {
        let (channels, anchors) = match (shape, self.s.t.classes) {
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
        Ok((channels, anchors))
    }

    /// The candidates of one head output, on the model's input, in anchor order.
    fn candidates(&self, t: &Tensor) -> Result<Vec<Candidate>, String> {
        let (channels, anchors) = self.head_dims(&t.shape)?;
        if t.data.len() != channels * anchors {
            return Err(format!(
                "expects {channels} × {anchors} values, got {}",
                t.data.len()
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
                out.push(candidate(
                    [row(0)[a], row(1)[a], row(2)[a], row(3)[a]],
                    score,
                    class,
                ));
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

/// A candidate from its box (centre x, centre y, width, height), best score and class.
fn candidate([cx, cy, w, h]: [f32; 4], score: f32, class: u32) -> Candidate {
    Candidate {
        x1: cx - w / 2.0,
        y1: cy - h / 2.0,
        x2: cx + w / 2.0,
        y2: cy + h / 2.0,
        score,
        class: class as usize,
    }
}

/// The candidates of the GPU pass's records (detect_kernels.cu's `yolo_candidates`: anchor,
/// class, then score, cx, cy, w, h as f32 bits, in no particular order), in anchor order: the
/// list the host pass makes of the same head.
#[cfg(any(feature = "cuda", test))]
fn from_records(words: &[u32]) -> Vec<Candidate> {
    let mut records: Vec<&[u32]> = words.chunks_exact(7).collect();
    records.sort_unstable_by_key(|r| r[0]);
    records
        .iter()
        .map(|r| {
            let f = |i: usize| f32::from_bits(r[i]);
            candidate([f(3), f(4), f(5), f(6)], f(2), r[1])
        })
        .collect()
}

impl Backend for PostProcYoloV8 {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        #[cfg(feature = "cuda")]
        self.forward_gpu(batch);
        // Heads on the GPU were read above (a build without the GPU module has none).
        let on_host = batch
            .iter_mut()
            .filter(|item| !(cfg!(feature = "cuda") && matches!(item.data, Value::Device(_))));
        for_each_head(on_host, "PostProcYoloV8", |item, t| self.detect(item, t));
        Ok(())
    }
}

#[cfg(feature = "cuda")]
impl PostProcYoloV8 {
    /// The items whose head is on the GPU (the detector's `output = "gpu"`): candidates picked
    /// there (`yolo_gpu`), NMS here.
    fn forward_gpu(&mut self, batch: &mut [Item]) {
        use crate::item::{DeviceLayout, DeviceValue};
        // Per GPU, its items: (index in the batch, channels, anchors).
        type OnGpu = (usize, Vec<(usize, usize, usize)>);
        let mut by_gpu: Vec<OnGpu> = Vec::new();
        for (i, item) in batch.iter_mut().enumerate() {
            let checked = match &item.data {
                Value::Device(DeviceValue {
                    layout: DeviceLayout::Tensor { shape },
                    mem,
                }) => self.head_dims(shape).and_then(|(c, a)| {
                    if mem.bytes() < c * a * 4 {
                        Err(format!(
                            "expects {c} × {a} f32 on the GPU, got {} bytes",
                            mem.bytes()
                        ))
                    } else {
                        Ok((mem.device(), c, a))
                    }
                }),
                Value::Device(_) => Err("expects the model's output tensor, got an image on \
                                         the GPU"
                    .to_string()),
                _ => continue,
            };
            match checked {
                Ok((gpu, c, a)) => match by_gpu.iter_mut().find(|(g, _)| *g == gpu) {
                    Some((_, items)) => items.push((i, c, a)),
                    None => by_gpu.push((gpu, vec![(i, c, a)])),
                },
                Err(e) => item.fail(format!("PostProcYoloV8 {e}")),
            }
        }
        let stage = self.stage;
        let gpu = self
            .gpu
            .get_or_insert_with(|| super::yolo_gpu::GpuHeads::new(stage));
        for (_, items) in by_gpu {
            let heads: Vec<super::yolo_gpu::Head<'_>> = items
                .iter()
                .filter_map(|&(i, channels, anchors)| match &batch[i].data {
                    Value::Device(v) => Some(super::yolo_gpu::Head {
                        mem: v.mem.as_ref(),
                        channels,
                        anchors,
                    }),
                    _ => None,
                })
                .collect();
            let found = gpu.candidates(&heads, self.s.t.conf);
            drop(heads);
            match found {
                Ok(per_item) => {
                    for (&(i, ..), boxes) in items.iter().zip(per_item) {
                        let item = &mut batch[i];
                        match boxes {
                            Ok(records) => {
                                let t = &self.s.t;
                                let boxes = from_records(&records);
                                let out = detections(item, &boxes, t.conf, t.iou, t.max_det);
                                item.result = Some(Value::Tensor(out));
                            }
                            Err(e) => item.fail(format!("PostProcYoloV8 {e}")),
                        }
                    }
                }
                Err(e) => {
                    for &(i, ..) in &items {
                        batch[i].fail(format!("PostProcYoloV8 on the GPU: {e}"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "yolo_kernel_tests.rs"]
mod kernel_tests;
