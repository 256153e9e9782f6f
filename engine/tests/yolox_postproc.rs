//! PostProcYolox against YOLOX's post-processing written with numpy and OpenCV's
//! `cv2.dnn.NMSBoxesBatched` (engine/tests/py/yolox_ref.py), on a generated head output of
//! YOLOX's shape for a 320×320 input (2100 anchors, 80 classes, boxes in grid units) with
//! clusters of overlapping boxes, mapped back through a top-left resize. Same detections in the
//! same order, corners within 1e-3 pixel; and an export that decoded the boxes already.

mod common;

use std::path::Path;

use engine::{Config, Item, Pipeline, PipelineOptions, Registry, Tensor, Value};

const CLASSES: usize = 80;
const NET: usize = 320;
const ANCHORS: usize = 40 * 40 + 20 * 20 + 10 * 10;
const WIDTH: usize = 5 + CLASSES;

/// One row per anchor; every 35th anchor of the finest grid and its neighbours see an object.
fn head() -> Vec<f32> {
    let mut t = vec![0.0f32; ANCHORS * WIDTH];
    let mut s: u64 = 11;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32) / (1u64 << 24) as f32
    };
    for a in 0..ANCHORS {
        let row = &mut t[a * WIDTH..(a + 1) * WIDTH];
        row[0] = next() - 0.5;
        row[1] = next() - 0.5;
        row[2] = 1.0 + next() * 1.5;
        row[3] = 1.0 + next() * 1.5;
        let object = a / 3 % 35 == 0;
        row[4] = if object {
            0.5 + next() * 0.5
        } else {
            next() * 0.3
        };
        for c in 0..CLASSES {
            row[5 + c] = next() * 0.3;
        }
        if object {
            row[5 + (a / 105) % CLASSES] = 0.4 + next() * 0.6;
        }
    }
    t
}

fn pipeline(keys: &str) -> Pipeline {
    let toml = format!("[n]\nbackend = \"PostProcYolox\"\n{keys}");
    Pipeline::build(
        Config::parse(&toml, Path::new("yolox.toml")).unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap()
}

fn item(data: Vec<f32>, shape: Vec<usize>, scale: f32, h: f32, w: f32) -> Item {
    let mut item = Item::new(Value::Tensor(Tensor::new(shape, data)));
    for (k, v) in [
        ("scale", vec![scale]),
        ("offset", vec![0.0, 0.0]),
        ("orig_shape", vec![h, w]),
    ] {
        item.extras
            .insert(k.into(), Value::Tensor(Tensor::new(vec![v.len()], v)));
    }
    item
}

#[test]
fn postproc_yolox_matches_numpy_and_opencv() {
    let t = head();
    // A 640×480 photo resized to the top-left of 320×320.
    let (scale, h, w) = (0.5f32, 480.0f32, 640.0f32);
    let dir = common::temp_dir("yolox-postproc");
    let mut text = format!("{ANCHORS} {WIDTH}\n");
    for v in &t {
        text.push_str(&format!("{v:e} "));
    }
    let head_path = dir.join("head.txt");
    std::fs::write(&head_path, text).unwrap();
    for (conf, iou, max_det) in [(0.3f32, 0.45f32, 300usize), (0.2, 0.6, 10)] {
        let out = dir.join(format!("ref-{conf}-{iou}-{max_det}.txt"));
        common::python(
            "yolox_ref.py",
            &[
                head_path.to_str().unwrap(),
                &NET.to_string(),
                &scale.to_string(),
                &h.to_string(),
                &w.to_string(),
                &conf.to_string(),
                &iou.to_string(),
                &max_det.to_string(),
                out.to_str().unwrap(),
            ],
        );
        let theirs: Vec<Vec<f32>> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect();
        let p = pipeline(&format!(
            "net_h = {NET}\nnet_w = {NET}\nconf_thres = {conf}\niou_thres = {iou}\nmax_det = {max_det}\n"
        ));
        let done = p
            .run(vec![item(t.clone(), vec![1, ANCHORS, WIDTH], scale, h, w)])
            .unwrap()
            .remove(0)
            .unwrap();
        let Some(Value::Tensor(ours)) = &done.result else {
            panic!("no detections tensor");
        };
        println!(
            "conf {conf} iou {iou} max_det {max_det}: {} detections",
            theirs.len()
        );
        assert!(!theirs.is_empty());
        common::assert_same_detections(ours, &theirs, 1e-3);
    }
}

/// `decoded = true`: the rows' boxes are centres and sizes in input pixels already.
#[test]
fn a_decoded_export_needs_no_grid() {
    let mut row = vec![0.0f32; 5 + 2];
    row[..5].copy_from_slice(&[100.0, 50.0, 20.0, 10.0, 0.9]);
    row[6] = 0.8;
    let p = pipeline("decoded = true\nclasses = 2\n");
    let done = p
        .run(vec![item(row, vec![7], 2.0, 100.0, 100.0)])
        .unwrap()
        .remove(0)
        .unwrap();
    let Some(Value::Tensor(t)) = &done.result else {
        panic!("no detections tensor")
    };
    let want = [45.0, 22.5, 55.0, 27.5, 0.9 * 0.8, 1.0];
    for (a, b) in t.data.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{:?}", t.data);
    }
}

#[test]
fn the_grid_and_its_keys_are_checked() {
    // The anchors of a 320 input at 8, 16, 32 are 2100, not 100.
    let p = pipeline("net_h = 320\nnet_w = 320\nclasses = 2\n");
    let e = p
        .run(vec![item(
            vec![0.0; 100 * 7],
            vec![100, 7],
            1.0,
            10.0,
            10.0,
        )])
        .unwrap()
        .remove(0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("PostProcYolox") && e.contains("2100"), "{e}");
    for (keys, want) in [
        ("", "net_h"),
        ("net_h = 320\n", "net_w"),
        ("net_h = 100\nnet_w = 100\n", "strides"),
        ("net_h = 320\nnet_w = 320\nstrides = \"8,x\"\n", "strides"),
    ] {
        let toml = format!("[n]\nbackend = \"PostProcYolox\"\n{keys}");
        let e = common::start_error(Config::parse(&toml, Path::new("y.toml")).unwrap());
        assert!(e.contains(want), "{keys:?}: {e}");
    }
}
