//! WarpAffineMat against OpenCV's `warpAffine` (engine/tests/py/warp_affine_ref.py) on the
//! committed photos: a rotation with scaling about the photo's centre, a shear, a zoom and a
//! reduction partly outside, the pixels within 1 (OpenCV samples through fixed-point or float
//! coordinates of its own; where a neighbour lies outside the photo both read 0).

mod common;

use std::path::Path;

use engine::{Config, Item, Mat, Pipeline, PipelineOptions, Registry, Tensor, Value};

const H: usize = 192;
const W: usize = 256;

/// The matrices for a `w`×`h` photo: cv2.getRotationMatrix2D's (30°, the photo fitted into the
/// output) moved to the output's centre, a shear, a 2.3× zoom, a 0.37× reduction half outside.
fn matrices(w: f32, h: f32) -> Vec<[f32; 6]> {
    let fit = 0.9 * (W as f32 / w).min(H as f32 / h);
    let (c, s) = (
        fit * 30f32.to_radians().cos(),
        fit * 30f32.to_radians().sin(),
    );
    let (cx, cy) = (w / 2.0, h / 2.0);
    vec![
        [
            c,
            s,
            W as f32 / 2.0 - c * cx - s * cy,
            -s,
            c,
            H as f32 / 2.0 + s * cx - c * cy,
        ],
        [fit, 0.2 * fit, 3.5, -0.1 * fit, fit, 12.25],
        [2.3, 0.0, -0.3 * w, 0.0, 2.3, -0.3 * h],
        [
            0.37,
            0.0,
            0.8 * W as f32 - 0.37 * w * 0.5,
            0.0,
            0.37,
            -0.1 * h,
        ],
    ]
}

#[test]
fn warp_affine_matches_opencv() {
    let dir = common::temp_dir("warp-affine-opencv");
    let p = Pipeline::build(
        Config::parse(
            &format!("[n]\nbackend = \"WarpAffineMat\"\ntarget_h = {H}\ntarget_w = {W}\n"),
            Path::new("warp.toml"),
        )
        .unwrap(),
        Registry::with_defaults(),
        PipelineOptions::default(),
    )
    .unwrap();
    let (mut worst, mut compared) = (0, 0);
    // The odd sizes (1×1, 1×10000) land too little of themselves in the output to judge.
    for path in common::test_images()
        .into_iter()
        .filter(|p| !p.to_str().unwrap().contains("odd_"))
    {
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let decoded = engine::image::decode_bgr(&bytes, engine::image::DEFAULT_MAX_PIXELS).unwrap();
        let ms = matrices(decoded.width as f32, decoded.height as f32);
        let list = dir.join(format!("{name}.matrices"));
        let text: String = ms
            .iter()
            .map(|m| m.map(|v| v.to_string()).join(" ") + "\n")
            .collect();
        std::fs::write(&list, text).unwrap();
        common::python(
            "warp_affine_ref.py",
            &[
                dir.to_str().unwrap(),
                list.to_str().unwrap(),
                &H.to_string(),
                &W.to_string(),
                path.to_str().unwrap(),
            ],
        );
        // OpenCV's decode in, so that only the warp is judged.
        let (dh, dw, dc, pixels) = common::read_raw(&dir.join(format!("{name}.decoded")));
        for (k, m) in ms.iter().enumerate() {
            let mut item = Item::new(Value::Mat(Mat::new(dh, dw, dc, pixels.clone())));
            item.set(
                "affine_matrix",
                Value::Tensor(Tensor::new(vec![6], m.to_vec())),
            );
            let out = p.run(vec![item]).unwrap().remove(0).unwrap();
            let Some(Value::Mat(ours)) = &out.result else {
                panic!("{name} m{k}: no image: {:?}", out.error);
            };
            let (th, tw, tc, theirs) = common::read_raw(&dir.join(format!("{name}.m{k}")));
            assert_eq!((ours.height, ours.width, ours.channels), (th, tw, tc));
            let max = ours
                .data
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            println!("{name} m{k}: max abs diff {max}");
            assert!(max <= 1, "{name} m{k} {m:?}: max abs diff {max}");
            assert!(
                theirs.iter().any(|&v| v != 0),
                "{name} m{k}: OpenCV's is blank"
            );
            worst = worst.max(max);
            compared += 1;
        }
    }
    assert!(compared >= 30, "only {compared} warps compared");
    println!("worst {worst}");
}
