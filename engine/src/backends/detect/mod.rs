//! Detection post-processing: non-maximum suppression (`nms`) and the YOLOv8 / YOLO11 head's
//! decoding (`PostProcYoloV8`).

use crate::backend::Registry;

pub mod nms;
mod yolo;

pub fn register(r: &mut Registry) {
    r.register_typed("PostProcYoloV8", yolo::new);
}
