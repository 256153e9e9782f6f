//! `PostProcYolox`: a YOLOX head's raw output → the detections after non-maximum suppression,
//! in the original image's pixels. YOLOX's head differs from YOLOv8's: one row per anchor
//! (`[anchors, 5 + classes]`, or `[1, …]`, or flat), each the box, an objectness and a score
//! per class (both already sigmoid), and as YOLOX's ONNX export writes it by default
//! (`decode_in_inference` off) the box is still in grid units: for the anchors of stride s,
//! row-major over the `net_h / s` × `net_w / s` grid (strides 8, 16, 32 in order), centre
//! `(x + gx) · s`, `(y + gy) · s`, size `exp(w) · s`, `exp(h) · s`. As YOLOX's own
//! `postprocess`: an anchor's class is its best-scoring one, its score objectness × that class's
//! score, candidates at or above `conf_thres`, class-aware NMS at `iou_thres`. Then as
//! `PostProcYoloV8`: at most `max_det`, back through the item's resize (`TopLeftResizeMat`,
//! `ResizePadMat`: YOLOX's preprocessing) and clipped to the photo.

use super::nms::Candidate;
use super::output::{detections, for_each_head, Thresholds};
use crate::backend::{key, Backend, InitContext, Key, Settings};
use crate::config::Params;
use crate::error::{BackendError, ConfigError};
use crate::item::{Item, Tensor};

pub struct YoloxSettings {
    /// The model's input, for the grids (`None` with `decoded`).
    net: Option<(usize, usize)>,
    strides: Vec<usize>,
    decoded: bool,
    t: Thresholds,
}

const KEYS: &[Key] = &[
    key(
        "net_h",
        "pixels",
        "required unless `decoded`",
        "the model's input height, for the anchors' grids",
    ),
    key(
        "net_w",
        "pixels",
        "required unless `decoded`",
        "the model's input width, for the anchors' grids",
    ),
    key(
        "strides",
        "a list, `\"8,16,32\"`",
        "8,16,32",
        "the head's strides, in the order of its outputs",
    ),
    key(
        "decoded",
        "`true` or `false`",
        "false",
        "the export decoded the boxes already (YOLOX's `--decode_in_inference`)",
    ),
    key(
        "classes",
        "1 to 100000",
        "80, or the output's shape where it has one",
        "how many classes the head scores (a flat output is anchors × (5 + classes))",
    ),
    key(
        "conf_thres",
        "a number from 0 to 1",
        "0.3",
        "the objectness × class score an anchor needs (YOLOX's demo: 0.3)",
    ),
    key(
        "iou_thres",
        "a number from 0 to 1",
        "0.45",
        "the overlap above which the lower-scoring box of a class is dropped (YOLOX's 0.45)",
    ),
    key(
        "max_det",
        "1 to 100000",
        "300",
        "the most detections kept per image",
    ),
];

impl Settings for YoloxSettings {
    const KEYS: &'static [Key] = KEYS;

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        let decoded = p.one_of(
            "decoded",
            &[("true", true), ("false", false)],
            "`true` or `false`",
        )?;
        let decoded = decoded.unwrap_or(false);
        let strides: Vec<usize> = match p.raw("strides") {
            None => vec![8, 16, 32],
            Some(text) => text
                .split(',')
                .map(|v| v.trim().parse::<usize>().ok().filter(|&s| s > 0))
                .collect::<Option<_>>()
                .filter(|v: &Vec<usize>| !v.is_empty())
                .ok_or_else(|| p.error("strides", text, "positive integers, `\"8,16,32\"`"))?,
        };
        let side = |k: &str| p.usize_in(k, 1, 16_384);
        let net = match (side("net_h")?, side("net_w")?, decoded) {
            (Some(h), Some(w), _) => Some((h, w)),
            (_, _, true) => None,
            (h, _, false) => {
                let missing = if h.is_none() { "net_h" } else { "net_w" };
                return Err(p.error(
                    missing,
                    "",
                    "the model's input size (`net_h`, `net_w`) to decode the anchors' grids, \
                     or `decoded = true` for an export that decoded them",
                ));
            }
        };
        if let Some((h, w)) = net {
            if let Some(s) = strides.iter().find(|&&s| h % s != 0 || w % s != 0) {
                return Err(p.error(
                    "strides",
                    p.raw("strides").unwrap_or("8,16,32"),
                    format!("strides that divide the input {h}×{w}; {s} does not"),
                ));
            }
        }
        Ok(YoloxSettings {
            net,
            strides,
            decoded,
            t: Thresholds::parse(p, 0.3, 0.45)?,
        })
    }
}

pub struct PostProcYolox {
    s: YoloxSettings,
}

pub fn new(ctx: &InitContext<'_>, s: YoloxSettings) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    Ok(Box::new(PostProcYolox { s }))
}

impl PostProcYolox {
    /// Each anchor's grid cell and stride, in the head's order.
    fn grid(&self, anchors: usize) -> Result<Vec<(f32, f32, f32)>, String> {
        let Some((h, w)) = self.s.net else {
            return Ok(Vec::new());
        };
        let mut cells = Vec::with_capacity(anchors);
        for &s in &self.s.strides {
            for gy in 0..h / s {
                for gx in 0..w / s {
                    cells.push((gx as f32, gy as f32, s as f32));
                }
            }
        }
        if cells.len() != anchors {
            return Err(format!(
                "has {anchors} anchors, but a {h}×{w} input at strides {:?} makes {}",
                self.s.strides,
                cells.len()
            ));
        }
        Ok(cells)
    }

    fn candidates(&self, t: &Tensor) -> Result<Vec<Candidate>, String> {
        let width = match (t.shape.as_slice(), self.s.t.classes) {
            ([_, c] | [1, _, c], None) => *c,
            ([_, c] | [1, _, c], Some(k)) if *c == 5 + k => *c,
            ([_, c] | [1, _, c], Some(k)) => {
                return Err(format!(
                    "was told `classes = {k}`, but the output's rows have {c} values, not 5 + {k}"
                ))
            }
            ([len], k) => {
                let c = 5 + k.unwrap_or(80);
                if *len == 0 || len % c != 0 {
                    return Err(format!(
                        "cannot split a flat output of {len} values into rows of {c} (5 + \
                         `classes`); set `classes` to the head's class count"
                    ));
                }
                c
            }
            (other, _) => {
                return Err(format!(
                    "expects a YOLOX head's output [anchors, 5 + classes], got shape {other:?}"
                ))
            }
        };
        if width < 6 {
            return Err(format!(
                "expects rows of at least 6 values (a box, objectness, one class), got {width}"
            ));
        }
        let anchors = t.data.len() / width;
        let grid = if self.s.decoded {
            Vec::new()
        } else {
            self.grid(anchors)?
        };
        let mut out = Vec::new();
        for (a, row) in t.data.chunks_exact(width).enumerate() {
            let (class, best) =
                row[5..]
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (c, &s)| if s > b.1 { (c, s) } else { b },
                    );
            let score = row[4] * best;
            if score < self.s.t.conf {
                continue;
            }
            let (cx, cy, w, h) = match grid.get(a) {
                Some(&(gx, gy, s)) => (
                    (row[0] + gx) * s,
                    (row[1] + gy) * s,
                    row[2].exp() * s,
                    row[3].exp() * s,
                ),
                None => (row[0], row[1], row[2], row[3]),
            };
            out.push(Candidate {
                x1: cx - w / 2.0,
                y1: cy - h / 2.0,
                x2: cx + w / 2.0,
                y2: cy + h / 2.0,
                score,
                class,
            });
        }
        Ok(out)
    }
}

impl Backend for PostProcYolox {
    fn forward(&mut self, batch: &mut [Item]) -> Result<(), BackendError> {
        for_each_head(batch, "PostProcYolox", |item, t| {
            let boxes = self.candidates(t)?;
            // The candidates are at or above `conf_thres` already (YOLOX's `>=`); NMS keeps them
            // all.
            Ok(detections(
                item,
                &boxes,
                f32::NEG_INFINITY,
                self.s.t.iou,
                self.s.t.max_det,
            ))
        });
        Ok(())
    }
}
