//! `model-check`: runs the GPU engine and the CPU engine on the same inputs and reports the
//! error, times the GPU engine per batch size, drives several instances concurrently and
//! checks their results against a single instance's. Built with `--features cuda`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use engine::backends::model::{CpuModel, InstanceSpec, ModelEngine, ModelOutput};
use engine::gpu::{GpuInstance, GpuModel, OutputTo, Precision, Replay};
use engine::image::{decode_bgr, resize_bilinear, swap_red_blue, to_chw_f32, DEFAULT_MAX_PIXELS};
use engine::Tensor;

#[derive(Parser, Debug)]
#[command(
    name = "model-check",
    about = "Checks the GPU engine against the CPU engine on the same ONNX and images, times it \
             per batch size (CUDA-graph replays, median), and runs several instances at once.",
    after_help = "Example: model-check --model models/resnet50.onnx --images benches/imgs \
                  --batches 1,4,8,16,32 --json out.json"
)]
struct Args {
    /// The ONNX model (input [N, 3, H, W]).
    #[arg(long, required_unless_present = "write_models")]
    model: Option<PathBuf>,
    /// Only write the generated test models (resnet50.onnx, tiny_cnn.onnx) into this folder.
    #[arg(long)]
    write_models: Option<PathBuf>,
    /// Folder of JPEG/PNG images; each is resized to the model input and converted to RGB.
    #[arg(long, default_value = "benches/imgs")]
    images: PathBuf,
    /// fp16 (NHWC, tensor cores) or fp32 (NCHW, FMA: the reference mode).
    #[arg(long, default_value = "fp16")]
    precision: String,
    /// Batch sizes to check and time (comma-separated).
    #[arg(long, default_value = "1,4,8,16,32", value_delimiter = ',')]
    batches: Vec<usize>,
    /// Per-channel mean and std on 0..255 pixels (the seed's ImageNet values by default).
    #[arg(long, default_value = "123.675,116.28,103.53", value_delimiter = ',')]
    mean: Vec<f32>,
    #[arg(long, default_value = "58.395,57.12,57.375", value_delimiter = ',')]
    std: Vec<f32>,
    /// `model::cache` file: used when it matches, (re)written otherwise.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The tuner's bound on a convolution algorithm's relative L2 against cuDNN's implicit
    /// GEMM (default 1e-3 in fp16, 1e-5 in fp32): how much the choice of algorithms adds to
    /// the model's error. Not with --cache.
    #[arg(long, conflicts_with = "cache")]
    tune_tolerance: Option<f64>,
    /// Only load and build one instance for all batch sizes, print the time to ready, exit.
    #[arg(long)]
    ready_only: bool,
    /// Timing: rounds (median taken) of `reps` graph replays each, after `warmup` replays.
    #[arg(long, default_value_t = 31)]
    rounds: usize,
    #[arg(long, default_value_t = 20)]
    reps: usize,
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Concurrency check: this many instances, each driven by its own thread ...
    #[arg(long, default_value_t = 4)]
    instances: usize,
    /// ... for this many batches in total (0 skips the check).
    #[arg(long, default_value_t = 10_000)]
    concurrent_batches: usize,
    /// The concurrency check's inputs from the host (copied through pinned memory) instead of
    /// from the GPU, where a pipeline's GPU preprocessing leaves them.
    #[arg(long)]
    host_inputs: bool,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Before checking, run the first image step by step in this precision and in fp32 and
    /// print each step's relative L2 difference and largest magnitude: where a precision goes
    /// wrong.
    #[arg(long)]
    trace: bool,
    /// After timing each batch size, run it step by step with an event between steps and
    /// print where the time goes: every step's median device time, and the totals by kind
    /// (eager runs, so read it at batch sizes whose kernels outlast their launches).
    #[arg(long)]
    profile: bool,
    /// Write every image's raw input and CPU logits here (f32 little-endian, inputs first,
    /// with a `.json` beside describing shapes), for other tools to compare against.
    #[arg(long)]
    dump_reference: Option<PathBuf>,
    /// For each batch size, run the same batch `N` times each as the captured graph, eagerly
    /// and eagerly with the stream synchronised between steps, and print each way's error
    /// against the CPU engine and how far the ways differ from each other: a step whose result
    /// depends on timing shows as a difference (0 = off).
    #[arg(long, default_value_t = 0, value_name = "N")]
    replay_check: usize,
    /// Raw inputs instead of --images: f32 little-endian pixels (0..255, before mean/std),
    /// `[k, C, H, W]` with `[C, H, W]` the model's input; `k` is the file size over one item's.
    /// Other tools (onnxruntime, PyTorch) can then be run on exactly these inputs.
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// Reference outputs instead of the CPU engine's: f32 little-endian, one row per input in
    /// order (for instance onnxruntime's on the same file and --inputs). The CPU engine is not
    /// run for the reference then.
    #[arg(long, value_name = "FILE")]
    reference: Option<PathBuf>,
    /// Also run the CPU engine on every input (first, before the GPU engine loads) and write
    /// its outputs here (f32 little-endian, one row per input); when it cannot load the model,
    /// its error goes to the JSON's `cpu_error` and the check goes on. With --inputs and
    /// --reference (without, the CPU engine is the reference and --dump-reference writes its
    /// outputs).
    #[arg(long, value_name = "FILE", requires_all = ["reference", "inputs"])]
    cpu_outputs: Option<PathBuf>,
    /// Write this engine's outputs per batch size checked, as `<PREFIX>.b<N>.f32`: one row per
    /// input in order (f32 little-endian), each from the first batch that held that input.
    #[arg(long, value_name = "PREFIX")]
    dump_outputs: Option<PathBuf>,
}

fn images(dir: &std::path::Path, hw: (usize, usize)) -> Result<Vec<Vec<f32>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_lowercase)
                    .as_deref(),
                Some("jpg" | "jpeg" | "png" | "bmp")
            )
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in &paths {
        let bytes = std::fs::read(p)?;
        let mut m = resize_bilinear(
            &decode_bgr(&bytes, DEFAULT_MAX_PIXELS).map_err(anyhow::Error::msg)?,
            hw.0,
            hw.1,
        );
        swap_red_blue(&mut m);
        out.push(to_chw_f32(&m).data);
    }
    if out.is_empty() {
        bail!("no images in {}", dir.display());
    }
    Ok(out)
}

/// `--profile` at batch `n`: prints the steps (in order) and the totals by kind, returns both.
fn profile(
    inst: &mut GpuInstance,
    n: usize,
    input: &[f32],
    rounds: usize,
    graph_ms: f64,
) -> Result<serde_json::Value> {
    let steps = inst.profile(n, input, rounds)?;
    let sum: f64 = steps.iter().map(|(_, t)| f64::from(*t)).sum();
    println!("profile, batch {n}: step, median ms, share of the steps' sum");
    let mut by_kind: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for (label, t) in &steps {
        let t = f64::from(*t);
        println!("{label} {t:>8.4} {:>5.1}%", 100.0 * t / sum.max(1e-12));
        let kind = label.split_whitespace().nth(1).unwrap_or("?").to_string();
        let e = by_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += t;
    }
    println!("profile, batch {n}: by kind (steps' sum {sum:.3} ms, graph replay {graph_ms:.3} ms)");
    for (kind, (count, t)) in &by_kind {
        println!(
            "  {kind:<12} {count:>4} steps {t:>8.3} ms {:>5.1}%",
            100.0 * t / sum.max(1e-12)
        );
    }
    Ok(serde_json::json!({
        "sum_ms": sum,
        "steps": steps.iter().map(|(l, t)| serde_json::json!({"step": l.trim(), "ms": t}))
            .collect::<Vec<_>>(),
        "by_kind": by_kind.iter().map(|(k, (c, t))| (k.clone(), serde_json::json!({"steps": c, "ms": t})))
            .collect::<serde_json::Map<_, _>>(),
    }))
}

/// `--replay-check`: the same batch as graph replays, eager runs and synchronised eager runs.
fn replay_check(
    inst: &mut GpuInstance,
    n: usize,
    imgs: &[Vec<f32>],
    reference: &[Vec<f32>],
    reps: usize,
) -> Result<()> {
    let input = batch(imgs, n, 0);
    // The CPU logits are one row per image, as the images: the same rows.
    let want = batch(reference, n, 0);
    let mut first: Option<Vec<f32>> = None;
    for how in [Replay::Graph, Replay::Eager, Replay::EagerSynced] {
        let mut errs = Vec::new();
        let mut worst_diff = 0f32;
        for _ in 0..reps {
            let got = inst.run_as(n, &input, how)?;
            errs.push(format!("{:.3e}", rel_l2(&got, &want)));
            let base = first.get_or_insert_with(|| got.clone());
            // NaN sticks (f32::max would drop it, and a race that writes NaN would read 0).
            let d = got.iter().zip(base.iter()).map(|(x, y)| (x - y).abs());
            worst_diff = d.fold(worst_diff, |m, v| {
                if m.is_nan() || v.is_nan() {
                    f32::NAN
                } else {
                    m.max(v)
                }
            });
        }
        println!(
            "replay-check batch {n} {how:?}: rel_l2 vs CPU [{}], max |diff| from the first \
             graph replay {worst_diff:.3e}",
            errs.join(", ")
        );
    }
    Ok(())
}

/// `--inputs`/`--reference`: a file of f32 little-endian values cut into rows of `row` values.
fn f32_rows(path: &std::path::Path, row: usize, what: &str) -> Result<Vec<Vec<f32>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let item = row * 4;
    if item == 0 || bytes.is_empty() || bytes.len() % item != 0 {
        bail!(
            "{what} {}: {} bytes is not a whole number of rows of {row} f32 values",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(item)
        .map(|r| {
            r.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect())
}

fn write_f32(path: &std::path::Path, rows: &[Vec<f32>]) -> Result<()> {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The CPU engine's outputs, one image per thread (tract runs a model on one core); the CPU
/// instance applies mean/std to the raw inputs, as the server runs it.
fn cpu_outputs(
    cpu_model: &Arc<CpuModel>,
    imgs: &[Vec<f32>],
    spec: &InstanceSpec,
) -> Result<Vec<Vec<f32>>> {
    let shape = cpu_model.item_shape();
    std::thread::scope(|scope| {
        let handles: Vec<_> = imgs
            .iter()
            .map(|x| {
                let cpu_model = cpu_model.clone();
                scope.spawn(move || -> Result<Vec<f32>> {
                    let mut cpu = cpu_model.instance(spec).map_err(anyhow::Error::msg)?;
                    cpu.run(Tensor::new(
                        std::iter::once(1).chain(shape.iter().copied()).collect(),
                        x.clone(),
                    ))
                    .map(|t| t.data)
                    .map_err(anyhow::Error::msg)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a CPU reference thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })
}

/// The map size `h·w` of a traced step's `[c, h, w]` output (from its label), when larger than 1.
fn spatial(label: &str) -> Option<usize> {
    let dims = label.rsplit_once('[')?.1.split_once(']')?.0;
    let dims: Vec<usize> = dims
        .split(',')
        .map(|d| d.trim().parse().ok())
        .collect::<Option<_>>()?;
    match dims[..] {
        [_, h, w] if h * w > 1 => Some(h * w),
        _ => None,
    }
}

/// The mean of each run of `len` consecutive values (per channel of an NCHW map).
fn block_means(v: &[f32], len: usize) -> Vec<f32> {
    v.chunks(len.max(1))
        .map(|c| (c.iter().map(|&x| f64::from(x)).sum::<f64>() / c.len() as f64) as f32)
        .collect()
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Batch `n` starting at image `offset`, cycling through the images (or through their CPU
/// logits, one row per image).
/// One image's input values on the GPU.
struct OnGpu {
    buf: engine::gpu::cuda::DeviceBuf,
    bytes: usize,
}

impl engine::gpu::DeviceBytes for OnGpu {
    fn ptr(&self) -> u64 {
        self.buf.ptr
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

fn batch(imgs: &[Vec<f32>], n: usize, offset: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|i| imgs[(offset + i) % imgs.len()].iter().copied())
        .collect()
}

fn main() -> Result<()> {
    tools::init_logging();
    let a = Args::parse();
    if let Some(dir) = &a.write_models {
        return tools::write_models(dir);
    }
    let model_path = a.model.clone().context("--model is required")?;
    let precision = match a.precision.as_str() {
        "fp16" => Precision::Fp16,
        "fp32" => Precision::Fp32,
        p => bail!("--precision {p}: expected fp16 or fp32"),
    };
    let (min_b, max_b) = (
        *a.batches.iter().min().context("--batches is empty")?,
        *a.batches.iter().max().context("--batches is empty")?,
    );
    if min_b == 0 {
        bail!("--batches: sizes start at 1");
    }

    let spec = InstanceSpec {
        min: 1,
        max: 1,
        mean: a.mean.clone(),
        std: a.std.clone(),
        stage: Default::default(),
        output: ModelOutput::Host,
    };
    // The CPU engine's outputs first, so that they are written even when the GPU engine then
    // refuses the model.
    let mut cpu_error = None;
    if let (Some(out), Some(inputs)) = (&a.cpu_outputs, &a.inputs) {
        match CpuModel::load(&model_path) {
            Ok(cpu) => {
                let cpu = Arc::new(cpu);
                let item = cpu.item_shape().iter().product();
                write_f32(
                    out,
                    &cpu_outputs(&cpu, &f32_rows(inputs, item, "--inputs")?, &spec)?,
                )?;
            }
            Err(e) => {
                println!("the CPU engine: {e}");
                cpu_error = Some(e.to_string());
            }
        }
    }

    let started = Instant::now();
    let mut model = GpuModel::load(&model_path, precision, a.cache.as_deref(), 0)?;
    if let Some(t) = a.tune_tolerance {
        model
            .set_tune_tolerance(t)
            .with_context(|| format!("--tune-tolerance {t}"))?;
    }
    let model = Arc::new(model);
    // One instance per batch size checked, so only those sizes are tuned.
    let mut insts = std::collections::BTreeMap::new();
    for &n in &a.batches {
        insts.insert(
            n,
            GpuInstance::new(model.clone(), n, n, &a.mean, &a.std, 0, OutputTo::Host)?,
        );
    }
    let ready_s = started.elapsed().as_secs_f64();
    let report = model.report();
    println!(
        "ready in {ready_s:.2} s (model::cache: {}; tuned {} batch sizes in {:.2} s)\n{}",
        report.cache,
        report.tuned_batches.len(),
        report.tune_seconds,
        model.describe()
    );
    let mut json = serde_json::json!({
        "device": model.device(),
        "precision": precision.name(),
        "model": model_path.display().to_string(),
        "ready_s": ready_s,
        "cache": report.cache,
        "tune_s": report.tune_seconds,
        "tune_tolerance": model.tune_tolerance(),
    });
    if let Some(e) = cpu_error {
        json["cpu_error"] = e.into();
    }
    if a.ready_only {
        if let Some(p) = &a.json {
            std::fs::write(p, serde_json::to_string_pretty(&json)?)?;
        }
        return Ok(());
    }

    let shape = model.item_shape().to_vec();
    let item: usize = shape.iter().product();
    let imgs = match &a.inputs {
        Some(p) => f32_rows(p, item, "--inputs")?,
        None => images(&a.images, (shape[1], shape[2]))?,
    };
    let reference: Vec<Vec<f32>> = match &a.reference {
        Some(p) => {
            let want = std::fs::metadata(p)
                .with_context(|| format!("reading --reference {}", p.display()))?
                .len() as usize
                / 4;
            let rows = f32_rows(p, want / imgs.len().max(1), "--reference")?;
            if rows.len() != imgs.len() {
                bail!(
                    "--reference {}: {} rows for {} inputs",
                    p.display(),
                    rows.len(),
                    imgs.len()
                );
            }
            println!(
                "{} inputs; reference outputs from {}",
                imgs.len(),
                p.display()
            );
            rows
        }
        None => {
            println!("{} images; CPU reference (tract, fp32) ...", imgs.len());
            let cpu = Arc::new(CpuModel::load(&model_path).map_err(anyhow::Error::msg)?);
            cpu_outputs(&cpu, &imgs, &spec)?
        }
    };
    let outputs = reference[0].len();
    if let Some(path) = &a.dump_reference {
        let k = imgs.len();
        let mut bytes = Vec::new();
        for x in &imgs[..k] {
            x.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
        }
        for r in &reference[..k] {
            r.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
        }
        std::fs::write(path, bytes)?;
        std::fs::write(
            path.with_extension("json"),
            serde_json::to_string(&serde_json::json!({
                "images": k, "input_shape": shape, "outputs": outputs,
                "mean": a.mean, "std": a.std,
            }))?,
        )?;
    }

    if a.trace {
        let n = a.batches[0];
        let input = batch(&imgs, n, 0);
        let inst = insts.get_mut(&n).context("an instance per batch size")?;
        let got = inst.trace(n, &input)?;
        let reference = Arc::new(GpuModel::load(&model_path, Precision::Fp32, None, 0)?);
        let want = GpuInstance::new(reference, n, n, &a.mean, &a.std, 0, OutputTo::Host)?
            .trace(n, &input)?;
        // The two plans differ only by layout copies: match steps by label and size.
        let mut j = 0;
        for (label, g) in &got {
            let found = want[j..].iter().position(|(l, w)| {
                l.split_whitespace().nth(2) == label.split_whitespace().nth(2) && w.len() == g.len()
            });
            let max = g.iter().fold(0f32, |m, v| m.max(v.abs()));
            match found {
                Some(k) => {
                    j += k + 1;
                    let w = &want[j - 1].1;
                    // Per channel, the mean over the map: an error the same for a whole channel
                    // survives a global pool that the map's own error hides.
                    let means = match spatial(label) {
                        Some(hw) => format!(
                            "channel-means {:.3e} ",
                            rel_l2(&block_means(g, hw), &block_means(w, hw))
                        ),
                        None => String::new(),
                    };
                    println!(
                        "{label} max|x| {max:.3e} {means}vs fp32: rel_l2 {:.3e}",
                        rel_l2(g, w)
                    );
                }
                None => println!("{label} max|x| {max:.3e} (no fp32 counterpart)"),
            }
        }
    }

    if a.replay_check > 0 {
        for &n in &a.batches {
            let inst = insts.get_mut(&n).context("an instance per batch size")?;
            replay_check(inst, n, &imgs, &reference, a.replay_check)?;
        }
    }

    // Correctness per batch size: every image at least once in each, offsets varied.
    let mut rows = Vec::new();
    let mut all_agree = true;
    println!(
        "{:>5} {:>10} {:>10} {:>12} {:>8}",
        "batch", "graph_ms", "run_ms", "rel_l2", "argmax"
    );
    for &n in &a.batches {
        let inst = insts.get_mut(&n).context("an instance per batch size")?;
        let mut worst = 0f64;
        let mut agree = 0usize;
        let mut total = 0usize;
        let mut offset = 0;
        let mut firsts: Vec<Option<Vec<f32>>> = vec![None; imgs.len()];
        while total < imgs.len().max(n) {
            let got = inst.run(n, &batch(&imgs, n, offset))?;
            if got.len() != n * outputs {
                bail!(
                    "the engine gives {} values per input, the reference {outputs}",
                    got.len() / n
                );
            }
            for (i, row) in got.chunks(outputs).enumerate() {
                firsts[(offset + i) % imgs.len()].get_or_insert_with(|| row.to_vec());
            }
            let want = batch(&reference, n, offset);
            worst = worst.max(rel_l2(&got, &want));
            for (g, w) in got.chunks(outputs).zip(want.chunks(outputs)) {
                agree += (argmax(g) == argmax(w)) as usize;
                total += 1;
            }
            offset += n;
        }
        all_agree &= agree == total;
        if let Some(prefix) = &a.dump_outputs {
            let rows: Vec<Vec<f32>> = firsts.into_iter().flatten().collect();
            let mut name = prefix.as_os_str().to_owned();
            name.push(format!(".b{n}.f32"));
            write_f32(std::path::Path::new(&name), &rows)?;
        }
        // Timing: graph replays between events, median of rounds; then whole runs.
        inst.run(n, &batch(&imgs, n, 0))?;
        for _ in 0..a.warmup.div_ceil(a.reps.max(1)) {
            inst.time_graph(n, a.reps)?;
        }
        let graph_ms = median(
            (0..a.rounds)
                .map(|_| inst.time_graph(n, a.reps).map(f64::from))
                .collect::<std::result::Result<_, _>>()?,
        );
        let input = batch(&imgs, n, 0);
        let run_ms = median(
            (0..a.rounds)
                .map(|_| {
                    let t = Instant::now();
                    inst.run(n, &input).map(|_| t.elapsed().as_secs_f64() * 1e3)
                })
                .collect::<std::result::Result<_, _>>()?,
        );
        println!("{n:>5} {graph_ms:>10.3} {run_ms:>10.3} {worst:>12.3e} {agree:>4}/{total}");
        let mut row = serde_json::json!({
            "batch": n, "ours_ms": graph_ms, "ours_run_ms": run_ms,
            "rel_l2": worst, "argmax_agree": agree, "argmax_total": total,
        });
        if a.profile {
            row["profile"] = profile(inst, n, &input, a.rounds, graph_ms)?;
        }
        rows.push(row);
    }
    json["batches"] = serde_json::Value::Array(rows);
    json["argmax_all_agree"] = all_agree.into();

    if a.concurrent_batches > 0 && a.instances > 0 {
        // Expected results from the single instance, for every (batch, offset) used below.
        let sizes: Vec<usize> = a.batches.clone();
        let combos: Vec<(usize, usize)> = sizes
            .iter()
            .flat_map(|&n| (0..imgs.len()).map(move |o| (n, o)))
            .collect();
        let mut expected = std::collections::HashMap::new();
        for &(n, o) in &combos {
            let inst = insts.get_mut(&n).context("an instance per batch size")?;
            expected.insert((n, o), inst.run(n, &batch(&imgs, n, o))?);
        }
        let expected = Arc::new(expected);
        // Each image once on the GPU: the instances read their batches from there, as a
        // pipeline's model reads what the GPU preprocessing made (--host-inputs: from the host).
        let on_gpu = if a.host_inputs {
            None
        } else {
            let ctx = engine::gpu::open_device(0)?;
            let bufs = imgs
                .iter()
                .map(|img| {
                    Ok(OnGpu {
                        buf: engine::gpu::cuda::DeviceBuf::from_host(&ctx, img)?,
                        bytes: img.len() * 4,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Arc::new(bufs))
        };
        let imgs = Arc::new(imgs);
        let per_thread = a.concurrent_batches.div_ceil(a.instances);
        let mut runners = Vec::new();
        for _ in 0..a.instances {
            runners.push(GpuInstance::new(
                model.clone(),
                1,
                max_b,
                &a.mean,
                &a.std,
                0,
                OutputTo::Host,
            )?);
        }
        let t = Instant::now();
        let handles: Vec<_> = runners
            .into_iter()
            .enumerate()
            .map(|(k, mut r)| {
                let (expected, imgs, combos) = (expected.clone(), imgs.clone(), combos.clone());
                let on_gpu = on_gpu.clone();
                std::thread::spawn(move || -> (usize, usize, usize, usize, String, f32) {
                    let (mut done, mut mismatch, mut errors, mut first) = (0, 0, 0, String::new());
                    let mut images = 0;
                    let mut worst = 0f32;
                    for i in 0..per_thread {
                        let (n, o) = combos[(i * 7 + k * 13) % combos.len()];
                        let ran = match &on_gpu {
                            Some(g) => {
                                let items: Vec<engine::gpu::Input<'_>> = (0..n)
                                    .map(|i| engine::gpu::Input::Device(&g[(o + i) % g.len()]))
                                    .collect();
                                r.run_inputs(&items)
                            }
                            None => r.run(n, &batch(&imgs, n, o)),
                        };
                        match ran {
                            Ok(got) => {
                                let want = &expected[&(n, o)];
                                if got != *want {
                                    mismatch += 1;
                                    let d = got.iter().zip(want).map(|(a, b)| (a - b).abs());
                                    worst = d.fold(worst, f32::max);
                                }
                            }
                            Err(e) => {
                                errors += 1;
                                if first.is_empty() {
                                    first = e.to_string();
                                }
                            }
                        }
                        done += 1;
                        images += n;
                    }
                    (done, images, mismatch, errors, first, worst)
                })
            })
            .collect();
        let (mut done, mut images, mut mismatch, mut errors, mut worst) = (0, 0, 0, 0, 0f32);
        for h in handles {
            let (d, im, m, e, first, w) = h
                .join()
                .map_err(|_| anyhow::anyhow!("a concurrency thread panicked"))?;
            if !first.is_empty() {
                eprintln!("first error: {first}");
            }
            done += d;
            images += im;
            worst = worst.max(w);
            mismatch += m;
            errors += e;
        }
        let secs = t.elapsed().as_secs_f64();
        let rate = images as f64 / secs;
        println!(
            "concurrency: {} instances × {per_thread} batches = {done} batches ({images} images) \
             in {secs:.1} s, {rate:.0} images/s: {mismatch} differ from the single instance (max \
             abs diff {worst}), {errors} errors",
            a.instances
        );
        json["concurrency"] = serde_json::json!({
            "instances": a.instances, "inputs": if a.host_inputs { "host" } else { "device" },
            "batches": done, "images": images,
            "images_per_s": rate, "mismatches": mismatch,
            "errors": errors, "seconds": secs, "max_abs_diff": worst,
        });
    }
    let _ = min_b;
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_means_come_from_the_labels_map_size() {
        let label = "  12 conv        Conv `/features/features.1/Conv`  [2, 2, 3]";
        assert_eq!(spatial(label), Some(6));
        assert_eq!(spatial("   3 conv        Gemm `/fc/Gemm`  [1000]"), None);
        assert_eq!(spatial("   4 reduce      reduce  [960, 1, 1]"), None);
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 6.0, 6.0, 6.0];
        assert_eq!(block_means(&v, 6), vec![3.5, 3.0]);
    }
}
