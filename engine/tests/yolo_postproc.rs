//! PostProcYoloV8 against the same post-processing written with numpy and OpenCV's
//! `cv2.dnn.NMSBoxesBatched` (engine/tests/py/yolo_ref.py), on a generated head output of
//! YOLOv8's shape (84 rows: a box and 80 classes, 8400 anchors) with clusters of overlapping
//! boxes, mapped back through a letterbox. Same detections in the same order, corners within
//! 1e-3 pixel.

mod common;

use std::path::Path;

use engine::{Config, Item, Pipeline, PipelineOptions, Registry, Tensor, Value};

const CLASSES: usize = 80;
const ANCHORS: usize = 8400;

/// A head output with 60 objects, each seen by several anchors with jittered boxes and scores.
fn head() -> Vec<f32> {
    let mut t = vec![0.0f32; (4 + CLASSES) * ANCHORS];
    let mut s: u64 = 7;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32) / (1u64 << 24) as f32
    };
    for a in 0..ANCHORS {
        // Background: low scores everywhere.
        for c in 0..CLASSES {
            t[(4 + c) * ANCHORS + a] = next() * 0.2;
        }
        let object = a % 140;
        if object < 60 {
            let (ocx, ocy) = (
                40.0 + (object * 97 % 560) as f32,
                40.0 + (object * 53 % 560) as f32,
            );
            let j = |v: f32, r: &mut dyn FnMut() -> f32| v + (r() - 0.5) * 12.0;
            t[a] = j(ocx, &mut next);
            t[ANCHORS + a] = j(ocy, &mut next);
            t[2 * ANCHORS + a] = 30.0 + (object % 7) as f32 * 20.0 + next() * 8.0;
            t[3 * ANCHORS + a] = 30.0 + (object % 5) as f32 * 25.0 + next() * 8.0;
            t[(4 + object % CLASSES) * ANCHORS + a] = 0.2 + next() * 0.8;
        } else {
            t[a] = next() * 640.0;
            t[ANCHORS + a] = next() * 640.0;
            t[2 * ANCHORS + a] = 5.0 + next() * 50.0;
            t[3 * ANCHORS + a] = 5.0 + next() * 50.0;
        }
    }
    t
}

#[test]
fn postproc_yolov8_matches_numpy_and_opencv() {
    let t = head();
    // A 1280×720 photo letterboxed onto 640×640.
    let (scale, ox, oy, h, w) = (0.5f32, 0.0f32, 140.0f32, 720.0f32, 1280.0f32);
    let dir = common::temp_dir("yolo-postproc");
    let mut text = format!("{} {}\n", 4 + CLASSES, ANCHORS);
    for v in &t {
        text += &format!("{v} ");
    }
    std::fs::write(dir.join("head"), text).unwrap();
    std::fs::write(
        dir.join("letterbox"),
        format!("{scale} {ox} {oy} {h} {w}\n"),
    )
    .unwrap();
    for (conf, iou, max_det) in [(0.25, 0.7, 300), (0.5, 0.45, 20), (0.9, 0.5, 300)] {
        let out = dir.join(format!("ref-{conf}-{iou}-{max_det}"));
        let args = [
            dir.join("head").to_str().unwrap().to_string(),
            dir.join("letterbox").to_str().unwrap().to_string(),
            conf.to_string(),
            iou.to_string(),
            max_det.to_string(),
            out.to_str().unwrap().to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::python("yolo_ref.py", &args);
        let theirs: Vec<Vec<f32>> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect();

        let toml = format!(
            "[d]\nbackend = \"PostProcYoloV8\"\nconf_thres = {conf}\niou_thres = {iou}\nmax_det = {max_det}\n"
        );
        let p = Pipeline::build(
            Config::parse(&toml, Path::new("yolo.toml")).unwrap(),
            Registry::with_defaults(),
            PipelineOptions::default(),
        )
        .unwrap();
        let mut item = Item::new(Value::Tensor(Tensor::new(
            vec![1, 4 + CLASSES, ANCHORS],
            t.clone(),
        )));
        for (k, v) in [
            ("scale", vec![scale]),
            ("offset", vec![ox, oy]),
            ("orig_shape", vec![h, w]),
        ] {
            item.extras
                .insert(k.into(), Value::Tensor(Tensor::new(vec![v.len()], v)));
        }
        let done = p.run(vec![item]).unwrap().remove(0).unwrap();
        let Some(Value::Tensor(ours)) = &done.result else {
            panic!("no detections tensor");
        };
        println!(
            "conf {conf} iou {iou} max_det {max_det}: {} detections",
            theirs.len()
        );
        assert!(!theirs.is_empty() || conf >= 0.9);
        common::assert_same_detections(ours, &theirs, 1e-3);
    }
}

#[test]
fn a_head_of_the_wrong_shape_fails_its_item() {
    let p = Pipeline::build(
        Config::parse("[d]\nbackend = \"PostProcYoloV8\"\n", Path::new("y.toml")).unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    let error_of = |shape: Vec<usize>| {
        let n = shape.iter().product();
        let item = Item::new(Value::Tensor(Tensor::new(shape, vec![0.0; n])));
        p.run(vec![item])
            .unwrap()
            .remove(0)
            .unwrap_err()
            .to_string()
    };
    let err = error_of(vec![4, 10]);
    assert!(
        err.contains("PostProcYoloV8") && err.contains("at least 5 rows"),
        "{err}"
    );
    // A flat output that 4 + 80 rows do not divide names the key that says how it does.
    let err = error_of(vec![7 * 81]);
    assert!(err.contains("set `classes`"), "{err}");
}

/// ResizePadMat's per-axis scale: x through the first value, y through the second.
#[test]
fn boxes_map_back_through_an_x_and_a_y_scale() {
    let toml = "[n]\nbackend = \"PostProcYoloV8\"\nclasses = 1\n";
    let p = Pipeline::build(
        Config::parse(toml, Path::new("yolo.toml")).unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    // One anchor: centre (20, 40), 10 wide, 8 high, score 0.9.
    let head = vec![20.0, 40.0, 10.0, 8.0, 0.9];
    let mut item = Item::new(Value::Tensor(Tensor::new(vec![5, 1], head)));
    item.extras.insert(
        "scale".into(),
        Value::Tensor(Tensor::new(vec![2], vec![2.0, 4.0])),
    );
    let done = p.run(vec![item]).unwrap().remove(0).unwrap();
    let Some(Value::Tensor(t)) = &done.result else {
        panic!("no detections tensor");
    };
    assert_eq!(t.data, [7.5, 9.0, 12.5, 11.0, 0.9, 0.0]);
}
