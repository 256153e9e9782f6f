//! Detection post-processing: non-maximum suppression (`nms`), the YOLOv8 / YOLO11 head's
//! decoding (`PostProcYoloV8`) and YOLOX's (`PostProcYolox`), and what they share (`output`).

use crate::backend::Registry;

pub mod nms;
mod output;
mod yolo;
#[cfg(feature = "cuda")]
mod yolo_gpu;
mod yolox;

pub fn register(r: &mut Registry) {
    r.register_typed("PostProcYoloV8", yolo::new);
    r.register_typed("PostProcYolox", yolox::new);
}
