//! Decode and resize per image, and the JPEG end check before decoding: our default kernels (libjpeg-turbo from the turbojpeg crate,
//! our OpenCV-exact bilinear resize) against zune-jpeg (the pure-Rust candidate) and, with
//! `--features opencv`, OpenCV itself in the same process. Single thread: per-core figures.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::image::{
    decode_bgr, resize_bilinear, resize_to_chw, swap_red_blue, to_chw_f32, DEFAULT_MAX_PIXELS,
};

fn photos() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("imgs");
    [
        "astronaut.jpg",
        "chelsea.jpg",
        "coffee.jpg",
        "rocket.jpg",
        "hubble_deep_field.jpg",
        "retina.jpg",
    ]
    .iter()
    .map(|n| std::fs::read(dir.join(n)).unwrap())
    .collect()
}

fn zune_decode(bytes: &[u8]) -> Vec<u8> {
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::BGR);
    zune_jpeg::JpegDecoder::new_with_options(bytes, opts)
        .decode()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    // Per-core figures: OpenCV would otherwise spread a resize over every core.
    #[cfg(feature = "opencv")]
    opencv::core::set_num_threads(1).unwrap();
    let photos = photos();
    let n = photos.len() as u64;
    let mut g = c.benchmark_group("decode_6_photos");
    g.throughput(Throughput::Elements(n));
    g.bench_function("turbojpeg (default)", |b| {
        b.iter(|| {
            photos
                .iter()
                .map(|p| decode_bgr(p, DEFAULT_MAX_PIXELS).unwrap().data.len())
                .sum::<usize>()
        })
    });
    g.bench_function("zune-jpeg", |b| {
        b.iter(|| photos.iter().map(|p| zune_decode(p).len()).sum::<usize>())
    });
    #[cfg(feature = "opencv")]
    g.bench_function("opencv imdecode", |b| {
        b.iter(|| {
            photos
                .iter()
                .map(|p| {
                    engine::image::cv::decode_bgr(p, DEFAULT_MAX_PIXELS)
                        .unwrap()
                        .data
                        .len()
                })
                .sum::<usize>()
        })
    });
    g.finish();

    // The check every request's JPEG gets before decoding (DecodeMat and DecodeTensor): that
    // its data reaches the end-of-image marker, walking the entropy-coded bytes for 0xFF.
    let mut g = c.benchmark_group("jpeg_end_check_6_photos");
    g.throughput(Throughput::Elements(n));
    g.bench_function("reaches_eoi", |b| {
        b.iter(|| {
            photos
                .iter()
                .filter(|p| engine::image::jpeg_end::reaches_eoi(p))
                .count()
        })
    });
    g.finish();

    let decoded: Vec<_> = photos
        .iter()
        .map(|p| decode_bgr(p, DEFAULT_MAX_PIXELS).unwrap())
        .collect();
    let mut g = c.benchmark_group("resize_6_photos_to_224");
    g.throughput(Throughput::Elements(n));
    g.bench_function("ours (default)", |b| {
        b.iter(|| {
            decoded
                .iter()
                .map(|m| resize_bilinear(m, 224, 224).data.len())
                .sum::<usize>()
        })
    });
    #[cfg(feature = "opencv")]
    g.bench_function("opencv resize", |b| {
        b.iter(|| {
            decoded
                .iter()
                .map(|m| engine::image::cv::resize(m, 224, 224).unwrap().data.len())
                .sum::<usize>()
        })
    });
    g.finish();

    // The seed's [cpu_posdecoder]: ResizeMat, cvtColorMat, Mat2Tensor as three passes, and as
    // the one pass a Sequential of them now runs.
    let mut g = c.benchmark_group("posdecoder_6_photos_to_224_rgb_chw");
    g.throughput(Throughput::Elements(n));
    g.bench_function("three passes", |b| {
        b.iter(|| {
            decoded
                .iter()
                .map(|m| {
                    let mut r = resize_bilinear(m, 224, 224);
                    swap_red_blue(&mut r);
                    to_chw_f32(&r).data.len()
                })
                .sum::<usize>()
        })
    });
    g.bench_function("one pass (default)", |b| {
        b.iter(|| {
            decoded
                .iter()
                .map(|m| resize_to_chw(m, 224, 224, true).data.len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
