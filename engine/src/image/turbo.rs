//! libjpeg-turbo's TurboJPEG 3 API, called directly for the one thing the turbojpeg crate does
//! not report: whether a decode that returned -1 ended with a warning (libjpeg recovered from
//! damage and the image is complete, as OpenCV's imdecode returns it) or with an error.

use std::ffi::CStr;

use turbojpeg_sys as tj;

use super::ImageError;

pub(super) struct Header {
    pub width: usize,
    pub height: usize,
    /// Adobe CMYK or YCCK: decoded as CMYK, converted as OpenCV converts it.
    pub cmyk: bool,
}

/// A decompression handle (one per thread in decode.rs: it holds scratch state).
pub(super) struct Handle(tj::tjhandle);

impl Handle {
    pub fn new() -> Result<Handle, ImageError> {
        // SAFETY: no preconditions; a null handle is checked.
        let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as libc::c_int) };
        if h.is_null() {
            return Err(ImageError::DecoderStart);
        }
        Ok(Handle(h))
    }

    /// The last call's message, and whether it was a warning.
    fn last(&self) -> (bool, String) {
        // SAFETY: a live handle; its message is a NUL-terminated string it owns, copied here.
        let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: a live handle.
        let code = unsafe { tj::tj3GetErrorCode(self.0) };
        (code == tj::TJERR_TJERR_WARNING as libc::c_int, msg)
    }

    pub fn header(&mut self, bytes: &[u8]) -> Result<Header, ImageError> {
        // SAFETY: `bytes` is readable for its length.
        let r =
            unsafe { tj::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as tj::size_t) };
        // A warning (extraneous bytes before a marker of the header) still reads it.
        if r != 0 {
            if let (false, e) = self.last() {
                return Err(corrupt(e));
            }
        }
        // SAFETY: a live handle that has just read a header.
        let get = |p: tj::TJPARAM| unsafe { tj::tj3Get(self.0, p as libc::c_int) };
        let (w, h) = (
            get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
            get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
        );
        let cs = get(tj::TJPARAM_TJPARAM_COLORSPACE);
        match (usize::try_from(w), usize::try_from(h)) {
            (Ok(width), Ok(height)) => Ok(Header {
                width,
                height,
                cmyk: cs == tj::TJCS_TJCS_CMYK as libc::c_int
                    || cs == tj::TJCS_TJCS_YCCK as libc::c_int,
            }),
            _ => Err(corrupt(format!("a header of {w}x{h} pixels"))),
        }
    }

    /// Decodes `bytes` (whose header `h` is) into `out`, BGR or, for CMYK files, CMYK: `Ok(None)`
    /// when clean, `Ok(Some(warning))` when libjpeg recovered from damage.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        h: &Header,
        out: &mut [u8],
    ) -> Result<Option<String>, ImageError> {
        let (format, channels) = if h.cmyk {
            (tj::TJPF_TJPF_CMYK, 4)
        } else {
            (tj::TJPF_TJPF_BGR, 3)
        };
        let pitch = h.width * channels;
        let too_large = || ImageError::TooLarge {
            width: h.width,
            height: h.height,
            max_pixels: out.len() / channels,
        };
        if out.len() < pitch * h.height {
            return Err(too_large());
        }
        let pitch = libc::c_int::try_from(pitch).map_err(|_| too_large())?;
        // SAFETY: `bytes` is readable for its length; `out` holds height rows of `pitch` bytes
        // (checked above) for the unscaled image of this header, all tj3Decompress8 writes.
        let r = unsafe {
            tj::tj3Decompress8(
                self.0,
                bytes.as_ptr(),
                bytes.len() as tj::size_t,
                out.as_mut_ptr(),
                pitch,
                format as libc::c_int,
            )
        };
        if r == 0 {
            return Ok(None);
        }
        match self.last() {
            (true, warning) => Ok(Some(warning)),
            (false, e) => Err(corrupt(e)),
        }
    }
}

fn corrupt(reason: String) -> ImageError {
    ImageError::Corrupt {
        format: "JPEG",
        reason,
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by tj3Init, destroyed once.
        unsafe { tj::tj3Destroy(self.0) };
    }
}
