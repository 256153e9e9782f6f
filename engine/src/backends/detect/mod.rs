//! Detection post-processing: non-maximum suppression (`nms`).

pub mod nms;
