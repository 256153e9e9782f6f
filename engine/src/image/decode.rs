use std::io::Cursor;

use std::cell::RefCell;

use super::turbo::Handle;
use super::ImageError;

use crate::item::Mat;

/// Images above this many pixels are refused before any pixel is decoded: 50 megapixels is a
/// 150 MB BGR buffer, above any photo a classifier is sent, below what a 2-core box can spare.
/// A node can change it with `max_pixels`.
pub const DEFAULT_MAX_PIXELS: usize = 50_000_000;

/// Decodes JPEG, PNG or BMP bytes into HWC u8 BGR, like `cv2.imdecode(buf, cv2.IMREAD_COLOR)`:
/// grayscale becomes 3 equal channels, alpha is dropped.
pub fn decode_bgr(bytes: &[u8], max_pixels: usize) -> Result<Mat, ImageError> {
    match bytes {
        [] => Err(ImageError::Empty),
        [0xFF, 0xD8, ..] => decode_jpeg(bytes, max_pixels),
        [0x89, b'P', b'N', b'G', ..] => decode_other(bytes, image::ImageFormat::Png, max_pixels),
        [b'B', b'M', ..] => decode_other(bytes, image::ImageFormat::Bmp, max_pixels),
        _ => {
            let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            Err(ImageError::UnknownFormat(head.join(" ")))
        }
    }
}

/// Reads only the header and refuses what `decode_bgr` would refuse for its size.
#[allow(dead_code)] // used by the OpenCV path
pub(crate) fn check_header(bytes: &[u8], max_pixels: usize) -> Result<(), ImageError> {
    match bytes {
        [0xFF, 0xD8, ..] => {
            let header = Handle::new()?.header(bytes)?;
            check_size(header.width, header.height, max_pixels)
        }
        [0x89, b'P', b'N', b'G', ..] => other_dims(bytes, image::ImageFormat::Png)
            .and_then(|(w, h)| check_size(w, h, max_pixels)),
        [b'B', b'M', ..] => other_dims(bytes, image::ImageFormat::Bmp)
            .and_then(|(w, h)| check_size(w, h, max_pixels)),
        _ => decode_bgr(bytes, 0).map(|_| ()),
    }
}

fn other_dims(bytes: &[u8], format: image::ImageFormat) -> Result<(usize, usize), ImageError> {
    image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map(|(w, h)| (w as usize, h as usize))
        .map_err(|e| corrupt(format, e))
}

fn corrupt(format: image::ImageFormat, e: image::ImageError) -> ImageError {
    ImageError::Corrupt {
        format: if format == image::ImageFormat::Png {
            "PNG"
        } else {
            "BMP"
        },
        reason: e.to_string(),
    }
}

fn check_size(width: usize, height: usize, max_pixels: usize) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::NoPixels { width, height });
    }
    match width.checked_mul(height) {
        Some(n) if n <= max_pixels => Ok(()),
        _ => Err(ImageError::TooLarge {
            width,
            height,
            max_pixels,
        }),
    }
}

thread_local! {
    // A TurboJPEG handle holds its error state and scratch buffers; one per thread saves an
    // allocation per image and is never shared.
    static DECOMPRESSOR: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// libjpeg-turbo (built from the turbojpeg-sys crate's bundled source), the decoder OpenCV
/// itself uses: its integer IDCT and fancy upsampling make our pixels OpenCV's pixels.
fn decode_jpeg(bytes: &[u8], max_pixels: usize) -> Result<Mat, ImageError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let mut d = match slot.take() {
            Some(d) => d,
            None => Handle::new()?,
        };
        let out = decode_with(&mut d, bytes, max_pixels);
        // A handle that has seen an error can refuse the next good image (measured with a
        // corrupt SOF marker), so only a clean handle goes back for reuse.
        if let Ok((mat, clean)) = out {
            if clean {
                *slot = Some(d);
            }
            return Ok(mat);
        }
        out.map(|(m, _)| m)
    })
}

/// The image, and whether it decoded without a warning. As OpenCV's imdecode: a file whose
/// data ends before its end-of-image marker is refused (libjpeg would pad it with gray); damage
/// libjpeg recovers from (extraneous bytes, an unknown marker or a bad Huffman code inside a
/// scan) is a warning, and the image it recovers is returned.
fn decode_with(d: &mut Handle, bytes: &[u8], max_pixels: usize) -> Result<(Mat, bool), ImageError> {
    let header = d.header(bytes)?;
    let (w, h) = (header.width, header.height);
    check_size(w, h, max_pixels)?;
    if !super::jpeg_end::reaches_eoi(bytes) {
        return Err(ImageError::TruncatedJpeg);
    }
    let channels = if header.cmyk { 4 } else { 3 };
    let mut pixels = vec![0u8; w * h * channels];
    let warning = d.decode(bytes, &header, &mut pixels)?;
    if let Some(w) = &warning {
        tracing::debug!("JPEG decoded with libjpeg's warning `{w}` (OpenCV decodes it too)");
    }
    if header.cmyk {
        pixels = cmyk_to_bgr(&pixels);
    }
    Ok((Mat::new(h, w, 3, pixels), warning.is_none()))
}

/// OpenCV's conversion for the (Adobe, inverted) CMYK JPEGs libjpeg hands back.
fn cmyk_to_bgr(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let k = i32::from(px[3]);
        let f = |v: u8| (k - (((255 - i32::from(v)) * k) >> 8)) as u8;
        out.extend_from_slice(&[f(px[2]), f(px[1]), f(px[0])]);
    }
    out
}

fn decode_other(
    bytes: &[u8],
    format: image::ImageFormat,
    max_pixels: usize,
) -> Result<Mat, ImageError> {
    let (w, h) = other_dims(bytes, format)?;
    check_size(w, h, max_pixels)?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some((max_pixels as u64).saturating_mul(16));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| corrupt(format, e))?;
    let mut rgb = img.into_rgb8().into_raw();
    for px in rgb.chunks_exact_mut(3) {
        px.swap(0, 2);
    }
    Ok(Mat::new(h, w, 3, rgb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_images_and_empty_data() {
        assert_eq!(decode_bgr(&[], 100).unwrap_err(), ImageError::Empty);
        let e = decode_bgr(b"GIF89a", 100).unwrap_err().to_string();
        assert!(e.contains("not a JPEG, PNG or BMP"), "{e}");
        let e = decode_bgr(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10], 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("corrupt JPEG"), "{e}");
    }

    #[test]
    fn a_corrupt_jpeg_does_not_spoil_the_next_one_on_the_thread() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/imgs/chelsea.jpg");
        let good = std::fs::read(path).unwrap();
        let mut bad = good.clone();
        let sof = bad.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bad[sof + 1] = 0x01;
        assert!(decode_bgr(&bad, DEFAULT_MAX_PIXELS).is_err());
        assert!(decode_bgr(&good, DEFAULT_MAX_PIXELS).is_ok());
    }

    #[test]
    fn png_round_trip_is_bgr() {
        let mut png = Vec::new();
        let img = image::RgbImage::from_raw(2, 1, vec![10, 20, 30, 40, 50, 60]).unwrap();
        img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let m = decode_bgr(&png, 100).unwrap();
        assert_eq!((m.height, m.width, m.channels), (1, 2, 3));
        assert_eq!(*m.data, [30, 20, 10, 60, 50, 40]);
        let e = decode_bgr(&png, 1).unwrap_err();
        assert_eq!(
            e,
            ImageError::TooLarge {
                width: 2,
                height: 1,
                max_pixels: 1
            }
        );
        assert!(e.to_string().contains("above the limit"), "{e}");
    }
}
