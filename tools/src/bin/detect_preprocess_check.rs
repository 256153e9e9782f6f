//! `detect-preprocess-check`: the GPU image backends of detection pipelines (UploadMat,
//! LetterBoxTensor, ResizePadTensor, CropTensor, WarpAffineTensor) against their CPU twins
//! (LetterBoxMat, ResizePadMat, CropMat, WarpAffineMat, each then cvtColorMat and Mat2Tensor
//! where the GPU backend makes a tensor) on the same decoded photos: every photo's GPU output
//! read back and compared value for value, and what the item keeps for the post-processing
//! (`scale`, `offset`, `orig_shape`). All photos of a check go through the GPU backend in one
//! batch, as a node's batch would. Then nvJPEG's decode followed by LetterBoxTensor against the
//! CPU decode and letterbox (two JPEG decoders: reported, not required equal). Built with
//! `--features cuda`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use engine::{Backend, Config, DeviceLayout, Item, Mat, Registry, Tensor, Value, BOX};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "detect-preprocess-check",
    about = "Checks the GPU detection preprocessing backends (UploadMat, LetterBoxTensor, \
             ResizePadTensor, CropTensor, WarpAffineTensor) against their CPU twins, value for \
             value, on the same decoded photos.",
    after_help = "Example: detect-preprocess-check --images benches/imgs --json out.json"
)]
struct Args {
    /// Folder of test photos (JPEG, PNG, BMP).
    #[arg(long, default_value = "benches/imgs")]
    images: PathBuf,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One backend built from a one-node TOML body.
fn backend(body: &str) -> Result<Box<dyn Backend>> {
    let toml = format!("[n]\n{body}\n");
    let config = Config::parse(&toml, Path::new("detect-preprocess-check.toml"))?;
    let node = config.nodes.first().context("no node")?;
    Ok(Registry::with_defaults().build_detached(node)?)
}

/// Per item of one photo, the extras it carries beside the photo.
type Extras = Vec<Vec<(&'static str, Value)>>;

/// A GPU backend, its CPU twin, and what each item gets beside the photo.
struct Check {
    name: &'static str,
    gpu: Box<dyn Backend>,
    cpu: Box<dyn Backend>,
    /// Extras per photo (width, height): one item per entry.
    extras: fn(usize, usize) -> Extras,
}

fn tensor(v: &[f32]) -> Value {
    Value::Tensor(Tensor::new(vec![v.len()], v.to_vec()))
}

fn no_extras(_: usize, _: usize) -> Extras {
    vec![vec![]]
}

/// Three boxes: a large one, one with fractional corners near the top-right edge, a 1-pixel one.
fn boxes(w: usize, h: usize) -> Extras {
    let (w, h) = (w as f32, h as f32);
    [
        [0.1 * w, 0.2 * h, 0.6 * w, 0.7 * h],
        [0.55 * w + 0.3, 0.05 * h + 0.6, 0.999 * w, 0.4 * h + 0.2],
        [0.3 * w + 0.2, 0.3 * h + 0.7, 0.3 * w + 0.6, 0.3 * h + 0.9],
    ]
    .iter()
    .map(|b| vec![(BOX, tensor(b))])
    .collect()
}

/// cv2.getRotationMatrix2D's 30° rotation, the photo fitted into 256×192; and a shear half
/// outside.
fn affines(w: usize, h: usize) -> Extras {
    let (w, h) = (w as f32, h as f32);
    let fit = 0.9 * (256.0 / w).min(192.0 / h);
    let (c, s) = (
        fit * 30f32.to_radians().cos(),
        fit * 30f32.to_radians().sin(),
    );
    [
        [
            c,
            s,
            128.0 - c * w / 2.0 - s * h / 2.0,
            -s,
            c,
            96.0 + s * w / 2.0 - c * h / 2.0,
        ],
        [1.7 * fit, 0.3 * fit, -40.5, -0.2 * fit, 1.7 * fit, 10.25],
    ]
    .iter()
    .map(|m| vec![("affine_matrix", tensor(m))])
    .collect()
}

/// Copies a GPU value to the host.
type ReadBack<'a> = dyn Fn(&engine::DeviceValue) -> Result<Vec<u8>> + 'a;

/// A value as numbers: a tensor's (read back from the GPU where it is there), an image's bytes.
fn numbers(read_back: &ReadBack, v: &Value) -> Result<(String, Vec<f32>)> {
    Ok(match v {
        Value::Tensor(t) => (format!("tensor {:?}", t.shape), t.data.clone()),
        Value::Mat(m) => (
            format!("image {}x{}x{}", m.height, m.width, m.channels),
            m.data.iter().map(|&b| f32::from(b)).collect(),
        ),
        Value::Device(d) => {
            let raw = read_back(d)?;
            match &d.layout {
                DeviceLayout::Tensor { shape } => (
                    format!("tensor {shape:?}"),
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                DeviceLayout::Image {
                    height,
                    width,
                    channels,
                } => (
                    format!("image {height}x{width}x{channels}"),
                    raw[..height * width * channels]
                        .iter()
                        .map(|&b| f32::from(b))
                        .collect(),
                ),
            }
        }
        other => bail!("unexpected {}", other.kind()),
    })
}

/// What LetterBox/ResizePad keep for the post-processing, as text to compare.
fn kept(item: &Item) -> String {
    ["scale", "offset", "orig_shape"]
        .iter()
        .map(|k| format!("{k}={:?}", item.get(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> Result<()> {
    tools::init_logging();
    let args = Args::parse();
    engine::gpu::check_libraries()?;
    let gpu_ctx = engine::gpu::open_device(0)?;
    let read_back = |v: &engine::DeviceValue| -> Result<Vec<u8>> {
        Ok(engine::gpu::pool::read_back(&gpu_ctx, v)?)
    };
    let ctx: &ReadBack = &read_back;
    let photos: Vec<(String, Vec<u8>, Mat)> = tools::photo_files(&args.images)?
        .into_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            let mat = engine::image::decode_bgr(&bytes, engine::image::DEFAULT_MAX_PIXELS).ok()?;
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, bytes, mat))
        })
        .collect();
    if photos.is_empty() {
        bail!("no photo decodes in {}", args.images.display());
    }
    let letterbox_keys = "resize_h = 640\nresize_w = 640\npad_val = \"114,50,7\"\ncolor = \"rgb\"";
    let pad_keys = "max_h = 640\nmax_w = 512\npad_value = \"114\"\ncolor = \"rgb\"";
    let mut checks = vec![
        Check {
            name: "LetterBoxTensor+cvtColorTensor",
            gpu: backend(&format!(
                "backend = \"Sequential[LetterBoxTensor,cvtColorTensor]\"\n{letterbox_keys}"
            ))?,
            cpu: backend(&format!(
                "backend = \"Sequential[LetterBoxMat,cvtColorMat,Mat2Tensor]\"\n{letterbox_keys}"
            ))?,
            extras: no_extras,
        },
        Check {
            name: "ResizePadTensor+cvtColorTensor",
            gpu: backend(&format!(
                "backend = \"Sequential[ResizePadTensor,cvtColorTensor]\"\n{pad_keys}"
            ))?,
            cpu: backend(&format!(
                "backend = \"Sequential[ResizePadMat,cvtColorMat,Mat2Tensor]\"\n{pad_keys}"
            ))?,
            extras: no_extras,
        },
        Check {
            name: "CropTensor",
            gpu: backend("backend = \"CropTensor\"")?,
            cpu: backend("backend = \"CropMat\"")?,
            extras: boxes,
        },
        Check {
            name: "CropTensor+ResizeTensor+cvtColorTensor",
            gpu: backend(
                "backend = \"Sequential[CropTensor,ResizeTensor,cvtColorTensor]\"\n\
                 resize_h = 224\nresize_w = 224\ncolor = \"rgb\"",
            )?,
            cpu: backend(
                "backend = \"Sequential[CropMat,ResizeMat,cvtColorMat,Mat2Tensor]\"\n\
                 resize_h = 224\nresize_w = 224\ncolor = \"rgb\"",
            )?,
            extras: boxes,
        },
        Check {
            name: "WarpAffineTensor",
            gpu: backend("backend = \"WarpAffineTensor\"\ntarget_h = 192\ntarget_w = 256")?,
            cpu: backend("backend = \"WarpAffineMat\"\ntarget_h = 192\ntarget_w = 256")?,
            extras: affines,
        },
    ];

    // UploadMat: every photo to the GPU in one batch, read back equal.
    let mut upload = backend("backend = \"UploadMat\"")?;
    let mut up: Vec<Item> = photos
        .iter()
        .map(|(_, _, m)| {
            let mut it = Item::new(Value::Mat(m.clone()));
            it.set_color(false);
            it
        })
        .collect();
    upload.forward(&mut up)?;
    let mut uploaded = Vec::new();
    let mut upload_equal = 0;
    for ((name, _, mat), it) in photos.iter().zip(&up) {
        let Some(v @ Value::Device(_)) = &it.result else {
            bail!("UploadMat: {name}: {:?}", it.error);
        };
        let (_, got) = numbers(ctx, v)?;
        let want: Vec<f32> = mat.data.iter().map(|&b| f32::from(b)).collect();
        if got == want {
            upload_equal += 1;
        } else {
            println!("UploadMat {name}: the image read back differs");
        }
        uploaded.push(v.clone());
    }
    println!(
        "UploadMat: {upload_equal} of {} photos read back equal",
        photos.len()
    );

    let mut results = Vec::new();
    let mut all_equal = upload_equal == photos.len();
    for check in &mut checks {
        let mut gpu_items = Vec::new();
        let mut cpu_items = Vec::new();
        let mut labels = Vec::new();
        for ((name, _, mat), on_gpu) in photos.iter().zip(&uploaded) {
            for (k, extras) in (check.extras)(mat.width, mat.height)
                .into_iter()
                .enumerate()
            {
                let mut g = Item::new(on_gpu.clone());
                let mut c = Item::new(Value::Mat(mat.clone()));
                for it in [&mut g, &mut c] {
                    it.set_color(false);
                    for (key, v) in &extras {
                        it.set(key, v.clone());
                    }
                }
                gpu_items.push(g);
                cpu_items.push(c);
                labels.push(format!("{name}#{k}"));
            }
        }
        check.gpu.forward(&mut gpu_items)?;
        check.cpu.forward(&mut cpu_items)?;
        let (mut equal, mut worst, mut differing) = (0usize, 0f32, 0usize);
        for ((label, g), c) in labels.iter().zip(&gpu_items).zip(&cpu_items) {
            let (Some(gv), Some(cv)) = (&g.result, &c.result) else {
                // Both refusing the item for the same reason (a box off a 1×1 photo) agree.
                let reason = |e: &Option<String>| {
                    e.as_deref()
                        .map(|e| e.split_once(": ").map_or(e, |(_, r)| r).to_string())
                };
                if g.result.is_none() && c.result.is_none() && reason(&g.error) == reason(&c.error)
                {
                    equal += 1;
                } else {
                    differing += 1;
                }
                println!(
                    "{} {label}: GPU {:?} / CPU {:?}",
                    check.name, g.error, c.error
                );
                continue;
            };
            let (gk, gn) = numbers(ctx, gv)?;
            let (ck, cn) = numbers(ctx, cv)?;
            let max = if gk == ck && gn.len() == cn.len() {
                gn.iter()
                    .zip(&cn)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max)
            } else {
                f32::INFINITY
            };
            let same_kept = kept(g) == kept(c);
            if max == 0.0 && same_kept {
                equal += 1;
            } else {
                differing += 1;
                println!(
                    "{} {label}: GPU {gk} / CPU {ck}, max abs diff {max}; kept equal: \
                     {same_kept} ({} / {})",
                    check.name,
                    kept(g),
                    kept(c)
                );
            }
            worst = worst.max(max);
        }
        all_equal &= differing == 0;
        println!(
            "{}: {equal} of {} items equal value for value, or refused alike (worst abs diff \
             {worst})",
            check.name,
            labels.len()
        );
        results.push(
            json!({"backend": check.name, "items": labels.len(), "equal": equal,
                            "max_abs_diff": worst}),
        );
    }

    // nvJPEG's decode then LetterBoxTensor, against the CPU's decode then LetterBoxMat.
    let mut decode = backend("backend = \"DecodeTensor\"")?;
    let mut lb_gpu = backend(&format!(
        "backend = \"Sequential[LetterBoxTensor,cvtColorTensor]\"\n{letterbox_keys}"
    ))?;
    let mut lb_cpu = backend(&format!(
        "backend = \"Sequential[LetterBoxMat,cvtColorMat,Mat2Tensor]\"\n{letterbox_keys}"
    ))?;
    let mut decoded: Vec<Item> = photos
        .iter()
        .map(|(_, b, _)| Item::new(Value::Bytes(b.clone().into())))
        .collect();
    decode.forward(&mut decoded)?;
    let mut nvjpeg = Vec::new();
    for ((name, _, mat), d) in photos.iter().zip(decoded) {
        let Some(v) = d.result.clone() else {
            nvjpeg.push(json!({"photo": name, "nvjpeg": d.error}));
            continue;
        };
        let mut g = [d];
        g[0].data = v;
        g[0].result = None;
        let mut c = [Item::new(Value::Mat(mat.clone()))];
        c[0].set_color(false);
        lb_gpu.forward(&mut g)?;
        lb_cpu.forward(&mut c)?;
        let (Some(gv), Some(cv)) = (&g[0].result, &c[0].result) else {
            bail!("letterbox after decode failed on {name}");
        };
        let (_, gn) = numbers(ctx, gv)?;
        let (_, cn) = numbers(ctx, cv)?;
        let max = gn
            .iter()
            .zip(&cn)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let mean = gn.iter().zip(&cn).map(|(a, b)| (a - b).abs()).sum::<f32>() / gn.len() as f32;
        println!("nvJPEG + LetterBoxTensor vs CPU decode + LetterBoxMat {name}: max abs diff {max}, mean {mean:.3}");
        nvjpeg.push(json!({"photo": name, "max_abs_diff": max, "mean_abs_diff": mean}));
    }

    println!("every GPU backend equal to its CPU twin: {all_equal}");
    if let Some(path) = &args.json {
        let out = json!({
            "photos": photos.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
            "upload_equal": upload_equal,
            "checks": results,
            "all_equal": all_equal,
            "after_nvjpeg": nvjpeg,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    if !all_equal {
        bail!("a GPU backend differs from its CPU twin");
    }
    Ok(())
}
