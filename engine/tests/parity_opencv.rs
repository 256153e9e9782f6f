//! Preprocessing parity with OpenCV (docs/architecture.md#backends): our decode and resize against
//! opencv-python-headless on the committed photos. Tolerance: max abs diff ≤ 1 on u8.

mod common;

use engine::image::{decode_bgr, resize_bilinear, DEFAULT_MAX_PIXELS};

const SIZES: &[(usize, usize)] = &[(224, 224), (100, 37), (480, 640), (7, 9)];

fn max_abs_diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len());
    let mut max = 0;
    let mut off = 0;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        off += usize::from(d > 0);
    }
    (max, off)
}

#[test]
fn decode_and_resize_match_opencv() {
    let mut images = common::test_images();
    // The corpus's unusual but valid JPEGs: CMYK (our conversion is OpenCV's) and progressive.
    for name in ["cmyk.jpg", "progressive.jpg"] {
        images.push(
            common::repo_root()
                .join("engine/tests/fixtures/jpeg")
                .join(name),
        );
    }
    let dir = common::temp_dir("parity-opencv");
    let sizes: Vec<String> = SIZES.iter().map(|(h, w)| format!("{h}x{w}")).collect();
    let mut args = vec![dir.to_str().unwrap().to_string(), sizes.join(",")];
    args.extend(images.iter().map(|p| p.to_str().unwrap().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cv_version = common::python("opencv_ref.py", &args);
    println!("OpenCV {}", cv_version.trim());

    for path in &images {
        let name = path.file_name().unwrap().to_str().unwrap();
        let ours = decode_bgr(&std::fs::read(path).unwrap(), DEFAULT_MAX_PIXELS).unwrap();
        let (h, w, c, theirs) = common::read_raw(&dir.join(format!("{name}.decoded")));
        assert_eq!(
            (ours.height, ours.width, ours.channels),
            (h, w, c),
            "{name}: decoded shape"
        );
        let (max, off) = max_abs_diff(&ours.data, &theirs);
        println!(
            "{name}: decode max abs diff {max}, {off} of {} values differ",
            theirs.len()
        );
        assert!(max <= 1, "{name}: decode differs from OpenCV by {max}");

        // Resize OpenCV's own decode, so the resize is judged on its own.
        let cv_mat = engine::Mat::new(h, w, c, theirs);
        for &(rh, rw) in SIZES {
            let ours = resize_bilinear(&cv_mat, rh, rw);
            let (_, _, _, theirs) = common::read_raw(&dir.join(format!("{name}.{rh}x{rw}")));
            let (max, off) = max_abs_diff(&ours.data, &theirs);
            println!("{name}: resize {rh}x{rw} max abs diff {max}, {off} differ");
            assert!(
                max <= 1,
                "{name}: resize to {rh}x{rw} differs from OpenCV by {max}"
            );
        }
    }
}
