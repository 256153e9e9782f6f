//! LetterBoxMat, TopLeftResizeMat and ResizePadMat against OpenCV
//! (engine/tests/py/letterbox_ref.py): the same canvas, padding and placement on the committed
//! photos, and the same `scale` and `offset` in the item. Tolerance: the resize's own (max abs diff ≤ 1 on u8); the padding and
//! the placement are exact.

mod common;

use std::path::Path;

use engine::{Config, Item, Mat, Pipeline, PipelineOptions, Registry, Value};

const SIZES: &[(usize, usize)] = &[(640, 640), (320, 480), (97, 61)];
const PAD: u8 = 114;

fn pipeline(backend: &str, h: usize, w: usize) -> Pipeline {
    let toml = if backend == "ResizePadMat" {
        format!("[n]\nbackend = \"{backend}\"\nmax_h = {h}\nmax_w = {w}\npad_value = {PAD}\n")
    } else {
        format!(
            "[n]\nbackend = \"{backend}\"\nresize_h = {h}\nresize_w = {w}\npad_val = \"{PAD}\"\n"
        )
    };
    let config = Config::parse(&toml, Path::new("letterbox.toml")).unwrap();
    Pipeline::build(
        config,
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap()
}

fn tensor(item: &Item, key: &str) -> Vec<f32> {
    match item.extras.get(key) {
        Some(Value::Tensor(t)) => t.data.clone(),
        other => panic!("`{key}` is {other:?}, not a tensor"),
    }
}

#[test]
fn letterbox_top_left_and_resize_pad_match_opencv() {
    let images = common::test_images();
    let dir = common::temp_dir("letterbox-opencv");
    let sizes: Vec<String> = SIZES.iter().map(|(h, w)| format!("{h}x{w}")).collect();
    let mut args = vec![
        dir.to_str().unwrap().to_string(),
        PAD.to_string(),
        sizes.join(","),
    ];
    args.extend(images.iter().map(|p| p.to_str().unwrap().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!(
        "OpenCV {}",
        common::python("letterbox_ref.py", &args).trim()
    );

    for (backend, mode) in [
        ("LetterBoxMat", "centre"),
        ("TopLeftResizeMat", "corner"),
        ("ResizePadMat", "pad"),
    ] {
        for &(h, w) in SIZES {
            let p = pipeline(backend, h, w);
            for path in &images {
                let name = path.file_name().unwrap().to_str().unwrap();
                // OpenCV's own decode in, so that only the letterbox is judged.
                let (dh, dw, dc, decoded) = common::read_raw(&dir.join(format!("{name}.decoded")));
                let item = Item::new(Value::Mat(Mat::new(dh, dw, dc, decoded)));
                let out = p.run(vec![item]).unwrap().remove(0).unwrap();
                let Some(Value::Mat(ours)) = &out.result else {
                    panic!("{backend} gave no image for {name}");
                };
                let tag = format!("{name}.{mode}.{h}x{w}");
                let (th, tw, tc, theirs) = common::read_raw(&dir.join(&tag));
                assert_eq!(
                    (ours.height, ours.width, ours.channels),
                    (th, tw, tc),
                    "{tag}"
                );
                // Exact where OpenCV padded; within the resize's tolerance elsewhere.
                let mut max = 0;
                for (i, (a, b)) in ours.data.iter().zip(&theirs).enumerate() {
                    let d = a.abs_diff(*b);
                    max = max.max(d);
                    assert!(d <= 1, "{tag}: value {i} is {a}, OpenCV's {b}");
                }
                let text = std::fs::read_to_string(dir.join(format!("{tag}.txt"))).unwrap();
                let v: Vec<f64> = text
                    .split_whitespace()
                    .map(|x| x.parse().unwrap())
                    .collect();
                // One scale, or ResizePadMat's x and y; then the offset.
                let scale = tensor(&out, "scale");
                let (scales, offset) = v.split_at(v.len() - 2);
                assert_eq!(scale.len(), scales.len(), "{tag}: scale");
                for (ours, theirs) in scale.iter().zip(scales) {
                    assert!(
                        (f64::from(*ours) - theirs).abs() <= 1e-6 * theirs,
                        "{tag}: scale {scale:?} against {scales:?}"
                    );
                }
                assert_eq!(
                    tensor(&out, "offset"),
                    [offset[0] as f32, offset[1] as f32],
                    "{tag}: offset"
                );
                println!("{tag}: max abs diff {max}");
            }
        }
    }
}

/// The padding is exactly `pad_val`: a uniform image of another value leaves two bands of it.
#[test]
fn the_padding_is_pad_val_and_the_image_is_centred() {
    let p = pipeline("LetterBoxMat", 8, 8);
    // 2 rows × 4 columns of 7s onto 8×8: scale 2, a 4×8 image from row 2 to row 5.
    let item = Item::new(Value::Mat(Mat::new(2, 4, 3, vec![7; 2 * 4 * 3])));
    let out = p.run(vec![item]).unwrap().remove(0).unwrap();
    let Some(Value::Mat(m)) = &out.result else {
        panic!("no image");
    };
    for y in 0..8 {
        let expect = if (2..6).contains(&y) { 7 } else { PAD };
        assert!(
            m.data[y * 24..(y + 1) * 24].iter().all(|&v| v == expect),
            "row {y}"
        );
    }
    assert_eq!(tensor(&out, "offset"), [0.0, 2.0]);
    assert_eq!(tensor(&out, "scale"), [2.0]);
}

/// What is not an image fails its own item with the backend's name, not the batch.
#[test]
fn a_non_image_fails_its_item() {
    let p = pipeline("TopLeftResizeMat", 8, 8);
    let err = p
        .run(vec![Item::new(Value::Text("x".into()))])
        .unwrap()
        .remove(0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("TopLeftResizeMat expects an image"),
        "{err}"
    );
}
