//! `preprocess-check`: checks the GPU image path (DecodeTensor, ResizeTensor, cvtColorTensor)
//! against the CPU path on the same files, times it per node batch size, shows what each
//! awkward file (PNG, CMYK, progressive, corrupt) gets, and compares the classes that the GPU
//! pipeline and the CPU-preprocessing pipeline give every image. Built with `--features cuda`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use engine::{Backend, Config, Item, Pipeline, Registry, Value};
use engine::{DeviceLayout, DeviceValue};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "preprocess-check",
    about = "Checks GPU decode+resize+cvtColor against the CPU path (u8 differences), times it \
             per node batch size, and compares the classes of the GPU TOML with the CPU one.",
    after_help = "Example: preprocess-check --images benches/imgs --extra engine/tests/fixtures/jpeg \
                  --gpu-toml configs/resnet50_gpu.toml --cpu-toml configs/resnet50.toml --json out.json"
)]
struct Args {
    /// Folder of test photos (JPEG, PNG, BMP).
    #[arg(long, default_value = "benches/imgs")]
    images: PathBuf,
    /// More files to classify and to show the decode outcome of (CMYK, progressive JPEGs).
    #[arg(long)]
    extra: Option<PathBuf>,
    /// Output size of the resize.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Node batch sizes to time (comma-separated).
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    batches: Vec<usize>,
    /// Timing: rounds (median taken) of at least this many seconds each, after warm-up.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    #[arg(long, default_value_t = 0.5)]
    round_secs: f64,
    /// Also time the fused node with this many instances at once, each on its own thread with
    /// its own stream, as a pipeline node with `instance_num` runs them (0 skips it).
    #[arg(long, default_value_t = 4)]
    instances: usize,
    /// The GPU pipeline and the CPU-preprocessing pipeline whose classes are compared.
    #[arg(long)]
    gpu_toml: Option<PathBuf>,
    #[arg(long)]
    cpu_toml: Option<PathBuf>,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only write the generated test models (resnet50.onnx, tiny_cnn.onnx) into this folder.
    #[arg(long)]
    write_models: Option<PathBuf>,
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One backend built from a one-node TOML.
fn backend(toml: &str) -> Result<Box<dyn Backend>> {
    let config = Config::parse(toml, Path::new("preprocess-check.toml"))?;
    let node = config.nodes.first().context("no node")?;
    Ok(Registry::with_defaults().build_detached(node)?)
}

/// The CPU path: decode (BGR), resize, to RGB: HWC u8.
fn cpu_rgb(bytes: &[u8], size: usize) -> std::result::Result<Vec<u8>, String> {
    use engine::image::{decode_bgr, resize_bilinear, swap_red_blue, DEFAULT_MAX_PIXELS};
    let decoded = decode_bgr(bytes, DEFAULT_MAX_PIXELS).map_err(|e| e.to_string())?;
    let mut m = resize_bilinear(&decoded, size, size);
    swap_red_blue(&mut m);
    Ok(m.into_data())
}

/// Runs `b` on one batch of `bytes`; per item its result or its error.
fn run(
    b: &mut dyn Backend,
    bytes: &[Arc<[u8]>],
) -> Result<Vec<std::result::Result<Value, String>>> {
    Ok(run_with_decoder(b, bytes)?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// As `run`, with the decoder DecodeTensor says it used (its `decoder` extra).
fn run_with_decoder(
    b: &mut dyn Backend,
    bytes: &[Arc<[u8]>],
) -> Result<Vec<(std::result::Result<Value, String>, String)>> {
    let mut batch: Vec<Item> = bytes
        .iter()
        .map(|x| Item::new(Value::Bytes(x.clone())))
        .collect();
    b.forward(&mut batch)?;
    Ok(batch
        .into_iter()
        .map(|it| {
            let by = match it.extras.get("decoder") {
                Some(Value::Text(t)) => t.clone(),
                _ => "-".into(),
            };
            let r = match (it.result, it.error) {
                (Some(v), _) => Ok(v),
                (None, e) => Err(e.unwrap_or_else(|| "no result".into())),
            };
            (r, by)
        })
        .collect())
}

/// Ten batches before timing one backend.
fn warm_up(b: &mut dyn Backend, batch: &[Arc<[u8]>]) -> Result<()> {
    for _ in 0..10 {
        run(b, batch)?;
    }
    Ok(())
}

/// Runs `batch` through `b` until `secs` after `started`; the images it decoded. Every image
/// must decode (a failure would time the error path).
fn images_until(
    b: &mut dyn Backend,
    batch: &[Arc<[u8]>],
    started: Instant,
    secs: f64,
) -> Result<usize> {
    let mut done = 0;
    while started.elapsed().as_secs_f64() < secs {
        if run(b, batch)?.iter().any(|o| o.is_err()) {
            bail!("an image failed during timing");
        }
        done += batch.len();
    }
    Ok(done)
}

/// Images per second of `instances` copies of the node in `toml`, each driven by its own thread
/// with `batch` over and over for `rounds × round_secs` after a warm-up.
fn concurrent_rate(toml: &str, batch: &[Arc<[u8]>], instances: usize, args: &Args) -> Result<f64> {
    let mut backends = (0..instances)
        .map(|_| backend(toml))
        .collect::<Result<Vec<_>>>()?;
    for b in backends.iter_mut() {
        warm_up(b.as_mut(), batch)?;
    }
    let secs = args.rounds as f64 * args.round_secs;
    let started = Instant::now();
    let done = std::thread::scope(|s| {
        let threads: Vec<_> = backends
            .iter_mut()
            .map(|b| s.spawn(move || images_until(b.as_mut(), batch, started, secs)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a timing thread panicked"))?
            })
            .sum::<Result<usize>>()
    })?;
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

#[derive(Default)]
struct Histogram(BTreeMap<u32, u64>);

impl Histogram {
    fn add(&mut self, d: u32) {
        *self.0.entry(d).or_default() += 1;
    }
    fn max(&self) -> u32 {
        self.0.keys().next_back().copied().unwrap_or(0)
    }
    fn json(&self) -> serde_json::Value {
        json!(self
            .0
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>())
    }
}

fn main() -> Result<()> {
    tools::init_logging();
    let args = Args::parse();
    if let Some(dir) = &args.write_models {
        return tools::write_models(dir);
    }
    engine::gpu::check_libraries()?;
    // One context for every read-back of a GPU value to the host.
    let gpu_ctx = engine::gpu::open_device(0)?;
    let read_back =
        |v: &DeviceValue| -> Result<Vec<u8>> { Ok(engine::gpu::pool::read_back(&gpu_ctx, v)?) };
    let size = args.size;
    let mut paths = tools::photo_files(&args.images)?;
    if let Some(extra) = &args.extra {
        paths.extend(tools::photo_files(extra)?);
    }
    let all: Vec<(String, Arc<[u8]>)> = paths
        .iter()
        .map(|p| Ok((name(p), std::fs::read(p)?.into())))
        .collect::<Result<_>>()?;
    // Corrupt variants of the first JPEG: each must fail alone.
    let jpeg = all
        .iter()
        .find(|(n, _)| n.ends_with(".jpg"))
        .map(|(_, b)| b.clone())
        .context("no JPEG among the images")?;
    let mut flipped = jpeg.to_vec();
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 64] {
        *b = !*b;
    }
    let corrupt: Vec<(String, Arc<[u8]>)> = vec![
        (
            "corrupt_truncated_half".into(),
            jpeg[..jpeg.len() / 2].into(),
        ),
        (
            "corrupt_header_only".into(),
            jpeg[..600.min(jpeg.len())].into(),
        ),
        ("corrupt_garbage".into(), vec![0x5a; 4096].into()),
        ("corrupt_flipped_scan".into(), flipped.into()),
    ];

    let fused_toml = format!(
        "[pre]\nbackend = \"SyncTensor[Sequential[DecodeTensor,ResizeTensor,cvtColorTensor]]\"\n\
         resize_h = {size}\nresize_w = {size}\ncolor = \"rgb\"\n"
    );
    let mut fused = backend(&fused_toml)?;
    let mut hybrid = backend(&format!("{fused_toml}nvjpeg_hardware = false\n"))?;
    let mut decode_only = backend("[dec]\nbackend = \"DecodeTensor\"\n")?;

    // 1. Correctness: u8 values of the GPU path vs the CPU path, per file.
    let mut hist = Histogram::default();
    let mut hist_hybrid = Histogram::default();
    let mut hist_decode = Histogram::default();
    let mut per_file = Vec::new();
    let bytes: Vec<Arc<[u8]>> = all.iter().map(|(_, b)| b.clone()).collect();
    let (gpu, decoders): (Vec<_>, Vec<_>) = run_with_decoder(fused.as_mut(), &bytes)?
        .into_iter()
        .unzip();
    let gpu_hybrid = run(hybrid.as_mut(), &bytes)?;
    let decoded = run(decode_only.as_mut(), &bytes)?;
    let plane = size * size;
    let mut gpu_ok = Vec::new();
    for (i, (n, b)) in all.iter().enumerate() {
        let cpu = cpu_rgb(b, size);
        let mut row = json!({"file": n, "decoder": decoders[i]});
        let compare = |out: &std::result::Result<Value, String>,
                       hist: &mut Histogram|
         -> Result<serde_json::Value> {
            Ok(match (out, &cpu) {
                (Ok(Value::Device(v)), Ok(cpu)) => {
                    let raw = read_back(v)?;
                    let vals: Vec<f32> = raw
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    if vals.len() != 3 * plane {
                        bail!("{n}: {} values from the GPU", vals.len());
                    }
                    let mut max = 0u32;
                    for p in 0..plane {
                        for c in 0..3 {
                            let g = vals[c * plane + p];
                            if g.fract() != 0.0 || !(0.0..=255.0).contains(&g) {
                                bail!("{n}: GPU value {g} is not a u8");
                            }
                            let d = (g as i32 - i32::from(cpu[p * 3 + c])).unsigned_abs();
                            hist.add(d);
                            max = max.max(d);
                        }
                    }
                    json!({"max_abs_diff": max})
                }
                (Ok(other), _) => json!({"error": format!("unexpected {}", other.kind())}),
                (Err(e), Ok(_)) => json!({"gpu_error": e}),
                (Err(e), Err(c)) => json!({"gpu_error": e, "cpu_error": c}),
            })
        };
        row["hardware_path"] = compare(&gpu[i], &mut hist)?;
        row["hybrid_path"] = compare(&gpu_hybrid[i], &mut hist_hybrid)?;
        // Decode alone: the GPU's BGR image against the CPU's.
        if let (Ok(Value::Device(v)), Ok(mat)) = (
            &decoded[i],
            engine::image::decode_bgr(b, engine::image::DEFAULT_MAX_PIXELS),
        ) {
            if let DeviceLayout::Image { height, width, .. } = v.layout {
                let raw = read_back(v)?;
                if (height, width) == (mat.height, mat.width) && raw.len() >= mat.data.len() {
                    let mut max = 0;
                    for (g, c) in raw.iter().zip(mat.data.iter()) {
                        let d = (i32::from(*g) - i32::from(*c)).unsigned_abs();
                        hist_decode.add(d);
                        max = max.max(d);
                    }
                    row["decode_max_abs_diff"] = json!(max);
                } else {
                    row["decode_size_mismatch"] = json!([height, width, mat.height, mat.width]);
                }
            }
        }
        if gpu[i].is_ok() && n.ends_with(".jpg") {
            gpu_ok.push((n.clone(), b.clone()));
        }
        println!("{row}");
        per_file.push(row);
    }
    println!(
        "GPU vs CPU after resize+cvtColor: max abs diff {} (hardware path), {} (hybrid path); \
         decode alone: {}",
        hist.max(),
        hist_hybrid.max(),
        hist_decode.max()
    );

    // 2. Awkward and corrupt files: each outcome alone, then all in one batch with good ones.
    let mut corrupt_rows = Vec::new();
    let mut mixed: Vec<Arc<[u8]>> = Vec::new();
    for (n, b) in &corrupt {
        let out = run(fused.as_mut(), std::slice::from_ref(b))?;
        let row = json!({"file": n, "gpu": match &out[0] { Ok(_) => "decoded".to_string(), Err(e) => e.clone() },
                         "cpu": match cpu_rgb(b, size) { Ok(_) => "decoded".to_string(), Err(e) => e }});
        println!("{row}");
        corrupt_rows.push(row);
        mixed.push(b.clone());
        mixed.push(jpeg.clone());
    }
    let mixed_out = run(fused.as_mut(), &mixed)?;
    let good_in_mixed = mixed_out
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|o| o.is_ok())
        .count();
    println!(
        "mixed batch of {}: the {} good JPEGs between corrupt ones: {} decoded",
        mixed.len(),
        corrupt.len(),
        good_in_mixed
    );

    // 3. Throughput per node batch size: the fused node, and decode alone.
    let mut timings = Vec::new();
    for &n in &args.batches {
        let batch: Vec<Arc<[u8]>> = gpu_ok.iter().cycle().take(n).map(|f| f.1.clone()).collect();
        let mut entry = json!({"batch": n});
        // The hybrid decoder alone too: where it beats the hardware one is the size rule to set.
        for (label, b) in [
            ("decode_resize_cvtcolor", fused.as_mut()),
            ("decode_resize_cvtcolor_hybrid_only", hybrid.as_mut()),
            ("decode_only", decode_only.as_mut()),
        ] {
            warm_up(b, &batch)?;
            let mut rates = Vec::new();
            for _ in 0..args.rounds {
                let started = Instant::now();
                let done = images_until(b, &batch, started, args.round_secs)?;
                rates.push(done as f64 / started.elapsed().as_secs_f64());
            }
            rates.sort_by(|a, b| a.total_cmp(b));
            let median = rates[rates.len() / 2];
            println!(
                "batch {n:>2} {label}: {median:.0} images/s (median of {})",
                rates.len()
            );
            entry[label] = json!(median);
        }
        if args.instances > 0 {
            let rate = concurrent_rate(&fused_toml, &batch, args.instances, &args)?;
            println!(
                "batch {n:>2} decode_resize_cvtcolor × {} instances: {rate:.0} images/s",
                args.instances
            );
            entry["decode_resize_cvtcolor_instances"] = json!(args.instances);
            entry["decode_resize_cvtcolor_concurrent"] = json!(rate);
        }
        timings.push(entry);
    }

    // 4. Classes: the GPU TOML against the CPU-preprocessing TOML, every file.
    let mut classes = Vec::new();
    if let (Some(g), Some(c)) = (&args.gpu_toml, &args.cpu_toml) {
        let gp = Pipeline::from_toml(g)?;
        let cp = Pipeline::from_toml(c)?;
        let classify = |p: &Pipeline, b: &Arc<[u8]>| -> std::result::Result<(usize, f64), String> {
            let out = p
                .run(vec![Item::new(Value::Bytes(b.clone()))])
                .map_err(|e| e.to_string())?;
            let item = out
                .into_iter()
                .next()
                .ok_or("nothing")?
                .map_err(|e| e.to_string())?;
            match item.result {
                Some(Value::Tensor(t)) => engine::backends::control::softmax_argmax(&t.data)
                    .map(|c| (c.index, c.score))
                    .ok_or_else(|| "empty output".to_string()),
                Some(Value::Class(c)) => Ok((c.index, c.score)),
                other => Err(format!("{other:?}")),
            }
        };
        let mut differ = 0;
        for (n, b) in all.iter().chain(&corrupt) {
            let (gc, cc) = (classify(&gp, b), classify(&cp, b));
            let same = match (&gc, &cc) {
                (Ok(a), Ok(b)) => a.0 == b.0,
                (Err(_), Err(_)) => true,
                _ => false,
            };
            if !same {
                differ += 1;
            }
            let row = json!({"file": n, "gpu_pipeline": format!("{gc:?}"), "cpu_pipeline": format!("{cc:?}"), "same_class": same});
            println!("{row}");
            classes.push(row);
        }
        println!("classes: {differ} of {} differ", classes.len());
    }

    if let Some(path) = &args.json {
        let out = json!({
            "size": size,
            "per_file": per_file,
            "diff_histogram_hardware_path": hist.json(),
            "diff_histogram_hybrid_path": hist_hybrid.json(),
            "diff_histogram_decode_only": hist_decode.json(),
            "max_abs_diff": hist.max(),
            "corrupt": corrupt_rows,
            "mixed_batch_good_decoded": good_in_mixed,
            "mixed_batch_good_total": corrupt.len(),
            "timing_files": gpu_ok.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
            "timings": timings,
            "classes": classes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
