//! The same kernels through OpenCV (cargo feature `opencv`, Debian's libopencv-dev): for users
//! who want OpenCV's code path bit for bit, and as the in-process reference in tests.

use super::ImageError;
use opencv::core::{Mat as CvMat, MatTraitConst, MatTraitConstManual, Size, Vector};
use opencv::{imgcodecs, imgproc};

use crate::item::Mat;

fn to_cv(mat: &Mat) -> opencv::Result<CvMat> {
    let flat = CvMat::from_slice(&mat.data)?;
    let shaped = flat.reshape(mat.channels as i32, mat.height as i32)?;
    shaped.try_clone()
}

fn from_cv(mat: &CvMat) -> opencv::Result<Mat> {
    let (h, w, c) = (
        mat.rows() as usize,
        mat.cols() as usize,
        mat.channels() as usize,
    );
    let data = if mat.is_continuous() {
        mat.data_bytes()?.to_vec()
    } else {
        mat.try_clone()?.data_bytes()?.to_vec()
    };
    Ok(Mat::new(h, w, c, data))
}

/// `cv::imdecode(IMREAD_COLOR)`, with the same pixel limit checked from the header first.
pub fn decode_bgr(bytes: &[u8], max_pixels: usize) -> Result<Mat, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    // The pure-Rust header readers are cheap and refuse image bombs before OpenCV allocates.
    super::decode::check_header(bytes, max_pixels)?;
    let buf = Vector::<u8>::from_slice(bytes);
    let mat =
        imgcodecs::imdecode(&buf, imgcodecs::IMREAD_COLOR).map_err(|e| ImageError::OpenCv {
            call: "imdecode",
            reason: e.to_string(),
        })?;
    if mat.empty() {
        return Err(ImageError::OpenCv {
            call: "imdecode",
            reason: "no image (corrupt or unsupported)".into(),
        });
    }
    from_cv(&mat).map_err(|e| ImageError::OpenCv {
        call: "imdecode",
        reason: e.to_string(),
    })
}

pub fn resize(src: &Mat, dst_h: usize, dst_w: usize) -> Result<Mat, ImageError> {
    let run = || -> opencv::Result<Mat> {
        let input = to_cv(src)?;
        let mut out = CvMat::default();
        let size = Size::new(dst_w as i32, dst_h as i32);
        imgproc::resize(&input, &mut out, size, 0.0, 0.0, imgproc::INTER_LINEAR)?;
        from_cv(&out)
    };
    run().map_err(|e| ImageError::OpenCv {
        call: "resize",
        reason: e.to_string(),
    })
}

pub fn swap_red_blue(mat: Mat) -> Result<Mat, ImageError> {
    if mat.channels != 3 {
        return Ok(mat);
    }
    let run = || -> opencv::Result<Mat> {
        let input = to_cv(&mat)?;
        let mut out = CvMat::default();
        imgproc::cvt_color_def(&input, &mut out, imgproc::COLOR_BGR2RGB)?;
        from_cv(&out)
    };
    run().map_err(|e| ImageError::OpenCv {
        call: "cvtColor",
        reason: e.to_string(),
    })
}
