//! Decode outcomes as OpenCV's: on a corpus of damaged JPEGs this test makes from
//! a committed photo, `decode_bgr` (DecodeMat) returns an image exactly when
//! `cv2.imdecode(…, IMREAD_COLOR)` does, with the same pixels (max abs diff ≤ 1, as the other
//! parity tests), and the check the GPU path makes before nvJPEG (`jpeg_end::reaches_eoi`)
//! refuses exactly the truncated files OpenCV refuses.

mod common;

use engine::image::{decode_bgr, jpeg_end, DEFAULT_MAX_PIXELS};

/// (name, bytes): extraneous bytes before markers, unknown markers inside the scan, bad
/// Huffman codes, and truncation at several points (cut inside the headers, early and late in
/// the scan, just the EOI missing).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let good = std::fs::read(common::repo_root().join("benches/imgs/chelsea.jpg")).unwrap();
    let sos = good
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .expect("chelsea.jpg has a scan");
    let scan = good.len() - sos;
    let mut v = vec![("intact.jpg".to_string(), good.clone())];
    let mut put = |name: &str, bytes: Vec<u8>| v.push((format!("{name}.jpg"), bytes));
    let eoi = good.len() - 2;
    put(
        "extraneous_before_eoi",
        [&good[..eoi], &[0u8; 260][..], &good[eoi..]].concat(),
    );
    put(
        "extraneous_before_sos",
        [&good[..sos], &[0x11u8; 7][..], &good[sos..]].concat(),
    );
    for (k, at) in [
        (1, sos + scan / 3),
        (2, sos + scan / 2),
        (3, sos + 4 * scan / 5),
    ] {
        let mut b = good[..at].to_vec();
        b.extend([0xFF, 0xAE]);
        b.extend(&good[at..]);
        put(&format!("marker_in_scan_{k}"), b);
    }
    for (k, (from, len)) in [(sos + 600, 40), (sos + scan / 2, 8), (eoi - 300, 200)]
        .into_iter()
        .enumerate()
    {
        let mut b = good.clone();
        for x in &mut b[from..from + len] {
            // Flipping bits but never making a 0xFF (which would be a marker).
            *x = (*x ^ 0x5A).min(0xFE);
        }
        put(&format!("bad_huffman_{k}"), b);
    }
    for (k, cut) in [
        sos / 2,
        sos + 10,
        sos + scan / 4,
        sos + scan / 2,
        eoi - 1,
        eoi,
    ]
    .into_iter()
    .enumerate()
    {
        put(&format!("truncated_{k}"), good[..cut].to_vec());
    }
    put(
        "trailing_garbage",
        [&good[..], &b"not part of the image"[..]].concat(),
    );
    v
}

#[test]
fn damaged_jpegs_decode_exactly_when_opencv_decodes_them_with_its_pixels() {
    let dir = common::temp_dir("damaged");
    let files = corpus();
    let mut paths = Vec::new();
    for (name, bytes) in &files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        paths.push(p.to_str().unwrap().to_string());
    }
    let mut args = vec![dir.to_str().unwrap().to_string()];
    args.extend(paths);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!(
        "OpenCV {}",
        common::python("opencv_damaged.py", &args).trim()
    );
    let (mut decoded, mut refused) = (0, 0);
    for (name, bytes) in &files {
        let ours = decode_bgr(bytes, DEFAULT_MAX_PIXELS);
        let theirs = dir.join(format!("{name}.decoded"));
        if dir.join(format!("{name}.refused")).exists() {
            refused += 1;
            assert!(ours.is_err(), "{name}: OpenCV refuses it, we decoded it");
            assert!(
                !jpeg_end::reaches_eoi(bytes) || name.starts_with("bad"),
                "{name}"
            );
            continue;
        }
        decoded += 1;
        let ours = ours.unwrap_or_else(|e| panic!("{name}: OpenCV decodes it, we refused: {e}"));
        let (h, w, c, theirs) = common::read_raw(&theirs);
        assert_eq!(
            (ours.height, ours.width, ours.channels),
            (h, w, c),
            "{name}"
        );
        let max = ours
            .data
            .iter()
            .zip(&theirs)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(max <= 1, "{name}: pixels differ from OpenCV's by {max}");
        assert!(
            jpeg_end::reaches_eoi(bytes),
            "{name}: decoded, yet not complete"
        );
    }
    println!("{decoded} decoded as OpenCV decodes them, {refused} refused as it refuses them");
    // The corpus holds both outcomes, or the comparison would prove little.
    assert!(
        decoded >= 8 && refused >= 5,
        "{decoded} decoded, {refused} refused"
    );
}
