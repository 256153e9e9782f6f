//! Why an image could not be decoded or processed: the message a failed item carries.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImageError {
    #[error("empty data: expected JPEG, PNG or BMP bytes")]
    Empty,
    /// The first bytes, in hex.
    #[error("not a JPEG, PNG or BMP image (first bytes {0})")]
    UnknownFormat(String),
    /// libjpeg's or the PNG/BMP decoder's own words.
    #[error("corrupt {format}: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error("truncated JPEG: the data ends before the image does (OpenCV refuses it too)")]
    TruncatedJpeg,
    #[error("image has no pixels ({width}x{height})")]
    NoPixels { width: usize, height: usize },
    #[error(
        "image of {width}x{height} pixels is above the limit of {max_pixels} pixels (max_pixels)"
    )]
    TooLarge {
        width: usize,
        height: usize,
        max_pixels: usize,
    },
    #[error("cannot start the JPEG decoder")]
    DecoderStart,
    /// An OpenCV call failed (the `opencv` feature): what it said.
    #[error("OpenCV {call} failed: {reason}")]
    OpenCv { call: &'static str, reason: String },
}
