//! Non-maximum suppression as detectors' post-processing runs it (and OpenCV's
//! `cv::dnn::NMSBoxes` / `NMSBoxesBatched`, which the tests compare against): candidates above
//! a score threshold, by descending score (equal scores in their original order), each kept
//! unless a kept box of the same class overlaps it by an IoU above the threshold.

/// A candidate box in pixels: corners `(x1, y1)` (top-left) and `(x2, y2)`, its score and class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub class: usize,
}

impl Candidate {
    fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// Intersection over union; 0 for two empty boxes.
    pub fn iou(&self, o: &Candidate) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + o.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// The indices of the boxes kept, best first: those scoring above `score_threshold`, less
/// every one that overlaps a better-scoring kept box of its class by an IoU above
/// `iou_threshold`; at most `max` (`usize::MAX` for all).
pub fn nms(
    boxes: &[Candidate],
    score_threshold: f32,
    iou_threshold: f32,
    max: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len())
        .filter(|&i| boxes[i].score > score_threshold)
        .collect();
    // Stable: equal scores keep their original order, as OpenCV's stable sort does.
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.len() >= max {
            break;
        }
        let b = &boxes[i];
        let clear = kept
            .iter()
            .all(|&k| boxes[k].class != b.class || boxes[k].iou(b) <= iou_threshold);
        if clear {
            kept.push(i);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x1: f32, y1: f32, x2: f32, y2: f32, score: f32, class: usize) -> Candidate {
        Candidate {
            x1,
            y1,
            x2,
            y2,
            score,
            class,
        }
    }

    #[test]
    fn overlapping_boxes_of_one_class_keep_the_best_and_other_classes_are_apart() {
        let boxes = [
            b(0.0, 0.0, 10.0, 10.0, 0.8, 0),
            b(1.0, 1.0, 11.0, 11.0, 0.9, 0),
            b(1.0, 1.0, 11.0, 11.0, 0.7, 1),
            b(50.0, 50.0, 60.0, 60.0, 0.6, 0),
            b(0.0, 0.0, 10.0, 10.0, 0.2, 0),
        ];
        assert_eq!(nms(&boxes, 0.25, 0.5, usize::MAX), [1, 2, 3]);
        assert_eq!(nms(&boxes, 0.25, 0.5, 2), [1, 2]);
        assert!(nms(&[], 0.25, 0.5, 10).is_empty());
    }

    #[test]
    fn iou_of_half_overlapping_squares_is_a_third() {
        let a = b(0.0, 0.0, 2.0, 2.0, 1.0, 0);
        let c = b(1.0, 0.0, 3.0, 2.0, 1.0, 0);
        assert!((a.iou(&c) - 1.0 / 3.0).abs() < 1e-6);
        let empty = b(1.0, 1.0, 1.0, 1.0, 1.0, 0);
        assert_eq!(empty.iou(&empty), 0.0);
    }
}
