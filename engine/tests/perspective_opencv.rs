//! PerspectiveTransformMat against OpenCV (engine/tests/py/perspective_ref.py): rotated,
//! skewed and partly outside quadrilaterals cut from the committed photos, the same size and
//! pixels within 1 (OpenCV samples through float coordinates of its own; where a neighbour
//! lies outside the photo both read 0).

mod common;

use std::path::Path;

use engine::{Config, Item, Mat, Pipeline, PipelineOptions, Registry, Tensor, Value, BOX};

/// Quadrilaterals in a photo's pixels, as fractions of its width and height (the photos differ
/// in size): a rotated text line, a trapezoid, an axis-aligned box, one half outside.
const QUADS: &[[f32; 8]] = &[
    [0.10, 0.30, 0.70, 0.20, 0.72, 0.32, 0.12, 0.42],
    [0.20, 0.20, 0.80, 0.25, 0.75, 0.70, 0.25, 0.80],
    [0.25, 0.25, 0.75, 0.25, 0.75, 0.50, 0.25, 0.50],
    [-0.20, 0.60, 0.40, 0.60, 0.40, 1.10, -0.20, 1.10],
];

#[test]
fn perspective_transform_matches_opencv() {
    let images = common::test_images();
    let dir = common::temp_dir("perspective-opencv");
    let p = Pipeline::build(
        Config::parse(
            "[n]\nbackend = \"PerspectiveTransformMat\"\n",
            Path::new("perspective.toml"),
        )
        .unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    let mut worst = 0;
    let mut compared = 0;
    // The odd sizes (1×1, 1×10000) leave no quadrilateral with an area.
    for path in images
        .iter()
        .filter(|p| !p.to_str().unwrap().contains("odd_"))
    {
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(path).unwrap();
        let decoded = engine::image::decode_bgr(&bytes, engine::image::DEFAULT_MAX_PIXELS).unwrap();
        let (h, w) = (decoded.height as f32, decoded.width as f32);
        let quads: Vec<Vec<f32>> = QUADS
            .iter()
            .map(|q| {
                q.iter()
                    .enumerate()
                    .map(|(i, v)| (v * if i % 2 == 0 { w } else { h }).round())
                    .collect()
            })
            .collect();
        let list = dir.join(format!("{name}.quads"));
        let text: String = quads
            .iter()
            .map(|q| {
                q.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
                    + "\n"
            })
            .collect();
        std::fs::write(&list, text).unwrap();
        common::python(
            "perspective_ref.py",
            &[
                dir.to_str().unwrap(),
                list.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        // OpenCV's decode in, so that only the warp is judged.
        let (dh, dw, dc, pixels) = common::read_raw(&dir.join(format!("{name}.decoded")));
        for (k, q) in quads.iter().enumerate() {
            let mut item = Item::new(Value::Mat(Mat::new(dh, dw, dc, pixels.clone())));
            item.extras
                .insert(BOX.into(), Value::Tensor(Tensor::new(vec![8], q.clone())));
            let out = p.run(vec![item]).unwrap().remove(0).unwrap();
            let Some(Value::Mat(ours)) = &out.result else {
                panic!("{name} q{k}: no image: {:?}", out.error);
            };
            let (th, tw, tc, theirs) = common::read_raw(&dir.join(format!("{name}.q{k}")));
            assert_eq!(
                (ours.height, ours.width, ours.channels),
                (th, tw, tc),
                "{name} q{k}"
            );
            let max = ours
                .data
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            println!("{name} q{k} {th}x{tw}: max abs diff {max}");
            assert!(max <= 1, "{name} q{k}: max abs diff {max}");
            worst = worst.max(max);
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} crops compared");
    println!("worst {worst}");
}

/// A box that is not a quadrilateral fails its item, naming the backend.
#[test]
fn a_box_of_four_numbers_is_not_a_quadrilateral() {
    let p = Pipeline::build(
        Config::parse(
            "[n]\nbackend = \"PerspectiveTransformMat\"\n",
            Path::new("p.toml"),
        )
        .unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    let mut item = Item::new(Value::Mat(Mat::new(4, 4, 3, vec![0; 48])));
    item.extras.insert(
        BOX.into(),
        Value::Tensor(Tensor::new(vec![4], vec![0.0, 0.0, 2.0, 2.0])),
    );
    let e = p
        .run(vec![item])
        .unwrap()
        .remove(0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("PerspectiveTransformMat") && e.contains("four points"),
        "{e}"
    );
}
