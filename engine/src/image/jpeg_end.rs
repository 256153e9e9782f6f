//! Whether a JPEG's data reaches its end-of-image marker: OpenCV's imdecode (the reference
//! for DecodeMat, and what the seed's services call) refuses a file cut short anywhere before
//! EOI, where libjpeg's own memory source and nvJPEG pad it and decode gray. Walks the marker
//! segments by their lengths and each scan's entropy-coded data to the marker that ends it,
//! so an EOI inside a segment (an EXIF thumbnail) does not count.

/// `true` when the data holds the whole image: an EOI marker follows the last scan, or a scan
/// that every component has had ends at a marker libjpeg does not know (it stops reading there
/// and outputs the image, as OpenCV then returns it); `false` when the data runs out first.
/// Bytes after the EOI (trailing garbage) are allowed, as OpenCV allows them.
pub fn reaches_eoi(bytes: &[u8]) -> bool {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return false;
    }
    // Component ids of the frame, and those some scan has coded.
    let (mut frame, mut scanned): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut i = 2;
    let mut after_scan = false;
    loop {
        // A marker: bytes before it are skipped as libjpeg skips them (with a warning), then
        // 0xFF fill bytes, then its code.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return false;
        };
        i += 1;
        match code {
            0xD9 => return true,
            // Markers without a length: TEM, RSTn.
            0x01 | 0xD0..=0xD7 => continue,
            0xC0..=0xFE => {}
            // Not a marker at all: the scan before it ended there.
            _ if after_scan => return frame.iter().all(|c| scanned.contains(c)),
            _ => return false,
        }
        let (Some(&hi), Some(&lo)) = (bytes.get(i), bytes.get(i + 1)) else {
            return false;
        };
        let len = usize::from(hi) << 8 | usize::from(lo);
        if len < 2 || i + len > bytes.len() {
            return false;
        }
        let seg = &bytes[i + 2..i + len];
        match code {
            // Start of frame (every SOFn): its component ids.
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                let n = usize::from(*seg.get(5).unwrap_or(&0));
                frame = (0..n).filter_map(|k| seg.get(6 + 3 * k).copied()).collect();
            }
            0xDA => {
                let n = usize::from(*seg.first().unwrap_or(&0));
                scanned.extend((0..n).filter_map(|k| seg.get(1 + 2 * k).copied()));
            }
            _ => {}
        }
        i += len;
        after_scan = false;
        if code == 0xDA {
            // Entropy-coded data: 0xFF 0x00 is a stuffed byte, 0xFF 0xD0..0xD7 a restart;
            // any other 0xFF xx ends the scan at that marker.
            loop {
                let Some(off) = memchr::memchr(0xFF, &bytes[i..]) else {
                    return false;
                };
                i += off;
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] == 0xFF {
                    j += 1;
                }
                match bytes.get(j) {
                    None => return false,
                    Some(0x00 | 0xD0..=0xD7) => i = j + 1,
                    Some(_) => {
                        i = j - 1;
                        break;
                    }
                }
            }
            after_scan = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP1 holding a thumbnail's EOI, a one-byte-data scan with a stuffed byte and a
    /// restart, then EOI.
    fn tiny() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend([0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD8, 0xFF, 0xD9]);
        v.extend([0xFF, 0xDA, 0x00, 0x03, 0x01]);
        v.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        v.extend([0xFF, 0xD9]);
        v
    }

    #[test]
    fn a_complete_file_reaches_eoi_and_trailing_bytes_are_allowed() {
        let v = tiny();
        assert!(reaches_eoi(&v));
        let mut t = v.clone();
        t.extend(b"trailing garbage");
        assert!(reaches_eoi(&t));
    }

    #[test]
    fn a_file_cut_anywhere_before_its_eoi_does_not() {
        let v = tiny();
        // Every cut, including inside the APP1 whose thumbnail holds an EOI of its own.
        for cut in 0..v.len() - 1 {
            assert!(!reaches_eoi(&v[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn junk_between_segments_is_skipped_and_an_unknown_marker_ends_its_scan() {
        // SOF of one component (id 1), junk before the next marker (skipped, as libjpeg
        // skips it), a scan of component 1, then 0xFF 0xAE: not a marker libjpeg knows, it
        // stops reading the scan there and outputs the image: complete, whatever follows.
        let mut v = vec![0xFF, 0xD8];
        v.extend([
            0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00,
        ]);
        v.extend([0x42, 0x42]);
        v.extend([
            0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, 0x11, 0x22,
        ]);
        v.extend([0xFF, 0xAE, 0x12, 0x34]);
        assert!(reaches_eoi(&v));
        assert!(reaches_eoi(&v[..v.len() - 2]));
        // Cut inside the scan, before that marker: the data ran out.
        assert!(!reaches_eoi(&v[..v.len() - 5]));
        // Three components, the scan codes one: the image is not complete at that marker.
        let mut w = v.clone();
        w[11] = 0x03;
        w[5] = 0x11;
        w.splice(15..15, [0x02, 0x11, 0x00, 0x03, 0x11, 0x00]);
        assert!(!reaches_eoi(&w));
    }
}
