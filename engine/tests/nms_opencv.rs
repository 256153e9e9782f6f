//! Non-maximum suppression against OpenCV's `cv2.dnn.NMSBoxesBatched` (class-aware) on generated
//! candidates: none, ties of equal score, every box overlapping every other, thousands of
//! candidates over several classes, and boxes on integer corners. The kept indices must be the
//! same, in the same order.

mod common;

use engine::backends::detect::nms::{nms, Candidate};

/// A small deterministic generator (the test needs reproducible boxes, not good randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
}

fn random_boxes(n: usize, classes: usize, seed: u64, integer: bool) -> Vec<Candidate> {
    let mut r = Lcg(seed);
    (0..n)
        .map(|_| {
            let (mut x, mut y) = (r.next() * 600.0, r.next() * 600.0);
            let (mut w, mut h) = (10.0 + r.next() * 120.0, 10.0 + r.next() * 120.0);
            if integer {
                (x, y, w, h) = (x.round(), y.round(), w.round(), h.round());
            }
            Candidate {
                x1: x,
                y1: y,
                x2: x + w,
                y2: y + h,
                score: r.next(),
                class: (r.next() * classes as f32) as usize % classes,
            }
        })
        .collect()
}

#[test]
fn nms_keeps_what_opencv_keeps() {
    let mut cases: Vec<(&str, Vec<Candidate>, f32, f32)> = vec![
        ("empty", Vec::new(), 0.25, 0.45),
        ("thousands", random_boxes(5000, 8, 1, false), 0.25, 0.45),
        ("one-class", random_boxes(2000, 1, 2, false), 0.1, 0.5),
        ("integer-corners", random_boxes(1500, 3, 3, true), 0.3, 0.6),
        ("low-iou", random_boxes(1000, 2, 4, false), 0.0, 0.1),
    ];
    // Every box overlapping every other: one survives per class.
    let nested: Vec<Candidate> = (0..50)
        .map(|i| Candidate {
            x1: 100.0 - i as f32 * 0.1,
            y1: 100.0,
            x2: 200.0 + i as f32 * 0.1,
            y2: 200.0,
            score: 0.3 + (i % 7) as f32 * 0.1,
            class: i % 2,
        })
        .collect();
    cases.push(("all-overlapping", nested, 0.25, 0.45));
    // Equal scores: the earlier box wins, as OpenCV's stable sort has it.
    let mut ties = random_boxes(300, 2, 5, false);
    for (i, b) in ties.iter_mut().enumerate() {
        b.score = [0.5, 0.75][i % 2];
    }
    cases.push(("ties", ties, 0.25, 0.45));

    let dir = common::temp_dir("nms-opencv");
    let mut files = Vec::new();
    for (name, boxes, score_t, iou_t) in &cases {
        let mut text = format!("{score_t} {iou_t}\n");
        for b in boxes {
            text += &format!(
                "{} {} {} {} {} {}\n",
                b.x1, b.y1, b.x2, b.y2, b.score, b.class
            );
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path.to_str().unwrap().to_string());
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    println!("OpenCV {}", common::python("nms_ref.py", &args).trim());

    for (name, boxes, score_t, iou_t) in &cases {
        let ours = nms(boxes, *score_t, *iou_t, usize::MAX);
        let text = std::fs::read_to_string(dir.join(format!("{name}.kept"))).unwrap();
        let theirs: Vec<usize> = text
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        println!("{name}: {} candidates, {} kept", boxes.len(), theirs.len());
        assert_eq!(ours, theirs, "{name}: kept boxes differ from OpenCV's");
    }
}
