//! With `--features opencv`: the OpenCV-served kernels (what DecodeMat/ResizeMat/cvtColorMat
//! use in that build) against our pure-Rust ones, in process, on the committed photos.
#![cfg(feature = "opencv")]

mod common;

use engine::image::{self, cv, DEFAULT_MAX_PIXELS};

#[test]
fn opencv_kernels_agree_with_the_pure_rust_ones() {
    for path in common::test_images() {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.display();
        let ours = image::decode_bgr(&bytes, DEFAULT_MAX_PIXELS).unwrap();
        let theirs = cv::decode_bgr(&bytes, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(
            (ours.height, ours.width, ours.channels),
            (theirs.height, theirs.width, theirs.channels)
        );
        let max = ours
            .data
            .iter()
            .zip(theirs.data.iter())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(max <= 1, "{name}: decode differs by {max}");
        for (h, w) in [(224, 224), (31, 77)] {
            let a = image::resize_bilinear(&theirs, h, w);
            let b = cv::resize(&theirs, h, w).unwrap();
            let max = a
                .data
                .iter()
                .zip(b.data.iter())
                .map(|(x, y)| x.abs_diff(*y))
                .max()
                .unwrap_or(0);
            assert!(max <= 1, "{name}: resize {h}x{w} differs by {max}");
        }
        let mut swapped = theirs.clone();
        image::swap_red_blue(&mut swapped);
        assert_eq!(cv::swap_red_blue(theirs).unwrap(), swapped);
    }
    assert!(cv::decode_bgr(b"not an image", DEFAULT_MAX_PIXELS).is_err());
    assert!(cv::decode_bgr(&[], DEFAULT_MAX_PIXELS).is_err());
}
