//! The GPU engine: a `Plan` on cuDNN. The model (weights, kernels, tuned algorithms) is shared;
//! each instance owns a stream, a cuDNN handle, a workspace, its activation buffers, pinned
//! staging and one CUDA graph per batch size, so instances run concurrently with no lock.

mod launch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::{sys as cu, CudaContext, CudaStream, PushKernelArg};

use super::blas::Blas;
use super::blas_lt::Lt;
use super::cache::{self, CacheFile};
use super::capture::Captured;
use super::conv::{
    self, conv_shapes, conv_views, tensor_desc, Algo, ConvCall, ConvDescs, ConvWeights,
    DepthwiseWeights, Exec, Mode, TuneInput, Tuner, LT_CONFIGS,
};
use super::cuda::{
    copy_dtod_async, copy_dtoh_async, copy_htod_async, cudnn_version, open_device, Call, DeviceBuf,
    Dnn, Events, GpuError, PinnedBuf, Result, TensorDesc, Timer,
};
use super::kernels::{self, Kernels};
use super::plan::view;
use super::plan::{self, AttentionStep, ConvStep, HeadView, Operand, Plan, RowKind, Step};
use super::pooling::CudnnPool;
use super::precision::Precision;
use launch::Launch;

/// GPU memory holding one input item: the pipeline's GPU values (decoded and resized on the
/// GPU by earlier nodes) implement it.
pub trait DeviceBytes {
    /// The device address (a `CUdeviceptr`) on the instance's GPU, written by a stream that has
    /// been synchronised.
    fn ptr(&self) -> u64;
    /// How many bytes at `ptr` belong to the item.
    fn bytes(&self) -> usize;
}

/// One item of a batch: raw f32 values on the host, or on the GPU. The borrow keeps the
/// memory alive while the batch is copied in.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    Host(&'a [f32]),
    Device(&'a dyn DeviceBytes),
}

/// A batch item as `Input`: lets a caller hand its own item type to `run_inputs` without
/// collecting a second list per batch.
pub trait AsInput {
    fn as_input(&self) -> Input<'_>;
}

impl AsInput for Input<'_> {
    fn as_input(&self) -> Input<'_> {
        *self
    }
}

/// What start-up measured, for logs and the model-check tool.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub cache: String,
    pub tuned_batches: Vec<usize>,
    pub tune_seconds: f64,
}

pub struct GpuModel {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) plan: Plan,
    pub(super) precision: Precision,
    /// The tuner's bound on a candidate's error (`conv::default_tolerance` unless set).
    pub(super) tune_tolerance: f64,
    /// Per convolution, in plan order.
    pub(super) weights: Vec<ConvWeights>,
    /// The plan's other constants (scales, biases, matrices), in the engine's precision.
    consts: Vec<DeviceBuf>,
    pub(super) kernels: Kernels,
    ptx: String,
    tuning: Mutex<BTreeMap<usize, Vec<Algo>>>,
    /// cuDNN's JSON of each graph-API plan the tuner chose, by (convolution, batch size).
    plans: Mutex<std::collections::HashMap<(usize, usize), String>>,
    cache_path: Option<PathBuf>,
    /// The folded weights in the device layout, kept on the host only for writing the cache.
    host_weights: Option<Vec<u8>>,
    onnx_sha256: String,
    device: String,
    item_shape: Vec<usize>,
    report: Mutex<LoadReport>,
}

impl GpuModel {
    /// The GPU the model is loaded on.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// What the convolution tuner reads of this model.
    fn tune_input(&self) -> TuneInput<'_> {
        TuneInput {
            ctx: &self.ctx,
            plan: &self.plan,
            precision: self.precision,
            tolerance: self.tune_tolerance,
            weights: &self.weights,
            kernels: &self.kernels,
        }
    }

    /// Loads an ONNX for GPU `gpu`: parses, folds and fuses it, uploads the weights, compiles
    /// (or takes from `cache`) the kernels. Tuning happens per batch size as instances ask for
    /// it. A node on several GPUs loads one model per GPU.
    pub fn load(
        path: &Path,
        precision: Precision,
        cache_path: Option<&Path>,
        gpu: usize,
    ) -> Result<GpuModel> {
        let ctx = open_device(gpu)?;
        let device = ctx.name().call("cuDeviceGetName")?;
        // The cache holds the weights: its key covers the external data files too.
        let mut hasher = cache::Sha256Stream::default();
        let proto = onnx_front::read(path, &mut |bytes| hasher.update(bytes))?;
        let onnx_sha256 = hasher.hex();
        let mut plan = plan::build(&proto, precision == Precision::Fp16)?;
        drop(proto);
        let key = cache_key(&onnx_sha256, &device, precision);
        let (cached, cache_note) = match cache_path {
            Some(p) => match CacheFile::read(p, &key) {
                Ok(c) => (Some(c), format!("used {}", p.display())),
                Err(why) => (None, format!("rebuilt {} ({why})", p.display())),
            },
            None => (None, "none (no model::cache set)".into()),
        };
        let host_weights = match &cached {
            Some(c) => c.weights.clone(),
            None => device_weights(&plan, precision),
        };
        let (weights, consts) = upload_weights(&ctx, &plan, precision, &host_weights)?;
        // The device holds the weights now; the plan keeps only the structure.
        for c in plan.convs_mut() {
            c.weight = Vec::new();
            c.bias = Vec::new();
        }
        for c in &mut plan.consts {
            c.data = Vec::new();
        }
        let ptx = match &cached {
            Some(c) => c.header.ptx.clone(),
            None => kernels::compile(&ctx)?,
        };
        let kernels = kernels::load(&ctx, &ptx)?;
        let (tuning, plans) = cached
            .map(|c| {
                let plans = c
                    .header
                    .plans
                    .iter()
                    .map(|(conv, b, j)| ((*conv, *b), j.clone()))
                    .collect();
                (c.header.tuning, plans)
            })
            .unwrap_or_default();
        let item_shape = plan.input.to_vec();
        Ok(GpuModel {
            ctx,
            plan,
            precision,
            tune_tolerance: conv::default_tolerance(precision),
            weights,
            consts,
            kernels,
            ptx,
            tuning: Mutex::new(tuning),
            plans: Mutex::new(plans),
            cache_path: cache_path.map(Path::to_path_buf),
            host_weights: cache_path.map(|_| host_weights),
            onnx_sha256,
            device,
            item_shape,
            report: Mutex::new(LoadReport {
                cache: cache_note,
                ..Default::default()
            }),
        })
    }

    pub fn item_shape(&self) -> &[usize] {
        &self.item_shape
    }

    pub fn outputs(&self) -> usize {
        self.plan.output_len()
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Sets the tuner's bound on a convolution candidate's relative L2 against the implicit
    /// GEMM's output (`conv::default_tolerance` otherwise): a diagnostic of how much the choice
    /// of algorithms adds to the model's error. Refused with a `model::cache`, whose choices were
    /// made under the default bound.
    pub fn set_tune_tolerance(&mut self, tolerance: f64) -> Result<()> {
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return Err(GpuError::Plan(format!(
                "tuning tolerance {tolerance}: expected a positive number"
            )));
        }
        if self.cache_path.is_some() {
            return Err(GpuError::Plan(
                "a tuning tolerance other than the default cannot be used with a model::cache"
                    .into(),
            ));
        }
        self.tune_tolerance = tolerance;
        Ok(())
    }

    pub fn tune_tolerance(&self) -> f64 {
        self.tune_tolerance
    }

    pub fn report(&self) -> LoadReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        let v = cudnn_version();
        format!(
            "GPU engine on {} (cuDNN {}.{}.{}, {} {}, {} fused convolutions and {} other steps, \
             one CUDA graph per batch size), input [N, {}]",
            self.device,
            v / 10000,
            (v % 10000) / 100,
            v % 100,
            self.precision.name(),
            match self.precision {
                Precision::Fp16 => "NHWC",
                Precision::Fp32 => "NCHW",
            },
            self.plan.convs().count(),
            self.plan.steps.len() - self.plan.convs().count(),
            self.item_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The algorithm of every convolution at batch size `n`, once tuned.
    pub(super) fn algos(&self, n: usize) -> Result<Vec<Algo>> {
        let tuning = self
            .tuning
            .lock()
            .map_err(|_| GpuError::Plan("a tuning thread panicked".into()))?;
        tuning
            .get(&n)
            .cloned()
            .ok_or_else(|| GpuError::Plan(format!("batch size {n} is not tuned")))
    }

    /// Makes sure every batch size in `batches` has its algorithms chosen; writes the cache
    /// when something new was tuned.
    fn ensure_tuned(&self, batches: std::ops::RangeInclusive<usize>) -> Result<()> {
        let mut tuning = self
            .tuning
            .lock()
            .map_err(|_| GpuError::Plan("a tuning thread panicked".into()))?;
        let missing: Vec<usize> = batches.filter(|b| !tuning.contains_key(b)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let input = self.tune_input();
        let tuner = match self.plan.convs().next() {
            Some(_) => Some(Tuner::new(&input, *missing.iter().max().unwrap_or(&1))?),
            None => None,
        };
        for &b in &missing {
            let (algos, jsons) = match &tuner {
                Some(t) => t.tune(&input, b)?,
                None => Default::default(),
            };
            tuning.insert(b, algos);
            if let Ok(mut p) = self.plans.lock() {
                for (conv, json) in jsons {
                    p.insert((conv, b), json);
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            "GPU engine: tuned {} batch sizes ({:?}) in {secs:.1} s",
            missing.len(),
            missing
        );
        if let Ok(mut r) = self.report.lock() {
            r.tuned_batches.extend(&missing);
            r.tune_seconds += secs;
        }
        if let (Some(path), Some(weights)) = (&self.cache_path, &self.host_weights) {
            let header = cache::Header {
                format: cache::FORMAT,
                key: cache_key(&self.onnx_sha256, &self.device, self.precision),
                ptx: self.ptx.clone(),
                tuning: tuning.clone(),
                plans: self
                    .plans
                    .lock()
                    .map(|p| p.iter().map(|(&(c, b), j)| (c, b, j.clone())).collect())
                    .unwrap_or_default(),
            };
            match CacheFile::write(path, &header, weights) {
                Ok(()) => tracing::info!("GPU engine: wrote model::cache {}", path.display()),
                Err(e) => tracing::warn!(
                    "GPU engine: could not write model::cache {}: {e}",
                    path.display()
                ),
            }
        }
        Ok(())
    }
}

/// Converts the plan's folded f32 weights to the device layout and precision: for fp16,
/// `cout × kh × kw × cin` (the NHWC filter layout) in f16; for fp32, OIHW in f32. Weights then
/// bias, convolution after convolution; then the other constants, row-major.
fn device_weights(plan: &Plan, precision: Precision) -> Vec<u8> {
    let mut out = Vec::new();
    for c in plan.convs() {
        let cin_g = c.cin / c.groups;
        let (kh, kw) = (c.kernel[0], c.kernel[1]);
        let mut push = |v: f32| match precision {
            Precision::Fp16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            Precision::Fp32 => out.extend_from_slice(&v.to_le_bytes()),
        };
        match precision {
            Precision::Fp16 => {
                for o in 0..c.cout {
                    for y in 0..kh {
                        for x in 0..kw {
                            for i in 0..cin_g {
                                push(c.weight[((o * cin_g + i) * kh + y) * kw + x]);
                            }
                        }
                    }
                }
            }
            Precision::Fp32 => c.weight.iter().for_each(|&v| push(v)),
        }
        c.bias.iter().for_each(|&v| push(v));
    }
    for c in &plan.consts {
        for &v in &c.data {
            match precision {
                Precision::Fp16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                Precision::Fp32 => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
    }
    out
}

fn conv_sizes(c: &ConvStep, precision: Precision) -> (usize, usize) {
    let w = c.cout * (c.cin / c.groups) * c.kernel[0] * c.kernel[1];
    (w * precision.bytes(), c.cout * precision.bytes())
}

type Uploaded = (Vec<ConvWeights>, Vec<DeviceBuf>);

fn f32_bytes(v: impl Iterator<Item = f32>) -> Vec<u8> {
    v.flat_map(f32::to_le_bytes).collect()
}

/// A depthwise convolution's f32 filters and bias on the device, from the plan (which holds
/// them until the upload).
fn depthwise_weights(
    ctx: &Arc<CudaContext>,
    c: &ConvStep,
    channels_last: bool,
) -> Result<DepthwiseWeights> {
    let taps = c.kernel[0] * c.kernel[1];
    if c.weight.len() != c.cout * taps || c.bias.len() != c.cout {
        return Err(GpuError::Plan(format!(
            "{}: the depthwise filters were not kept for the upload",
            c.name
        )));
    }
    let transposed = (0..taps * c.cout).map(|i| c.weight[(i % c.cout) * taps + i / c.cout]);
    Ok(DepthwiseWeights {
        w: DeviceBuf::from_host(ctx, &f32_bytes(c.weight.iter().copied()))?,
        taps: if channels_last {
            Some(DeviceBuf::from_host(ctx, &f32_bytes(transposed))?)
        } else {
            None
        },
        bias: DeviceBuf::from_host(ctx, &f32_bytes(c.bias.iter().copied()))?,
    })
}

fn upload_weights(
    ctx: &Arc<CudaContext>,
    plan: &Plan,
    precision: Precision,
    blob: &[u8],
) -> Result<Uploaded> {
    let mut at = 0;
    let mut out = Vec::new();
    for c in plan.convs() {
        let (wb, bb) = conv_sizes(c, precision);
        let (Some(w), Some(b)) = (blob.get(at..at + wb), blob.get(at + wb..at + wb + bb)) else {
            return Err(GpuError::Plan(
                "the weight blob is shorter than the plan".into(),
            ));
        };
        let depthwise = if c.is_depthwise() {
            Some(depthwise_weights(ctx, c, plan.channels_last)?)
        } else {
            None
        };
        out.push(ConvWeights {
            w: DeviceBuf::from_host(ctx, w)?,
            bias: DeviceBuf::from_host(ctx, b)?,
            depthwise,
        });
        at += wb + bb;
    }
    let mut consts = Vec::new();
    for c in &plan.consts {
        let bytes = c.dims.iter().product::<usize>() * precision.bytes();
        let data = blob
            .get(at..at + bytes)
            .ok_or_else(|| GpuError::Plan("the weight blob is shorter than the plan".into()))?;
        consts.push(DeviceBuf::from_host(ctx, data)?);
        at += bytes;
    }
    if at != blob.len() {
        return Err(GpuError::Plan(
            "the weight blob is longer than the plan".into(),
        ));
    }
    Ok((out, consts))
}

/// How `run_as` runs a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// The captured CUDA graph (what serving does).
    Graph,
    /// Every step enqueued in order, as at capture.
    Eager,
    /// Every step enqueued, the stream synchronised before each (as `trace` runs).
    EagerSynced,
}

/// Where a run leaves the model's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputTo {
    /// Copied to the host by the captured graph, converted to f32 (`run_inputs`).
    Host,
    /// Left on the GPU, copied as f32 into buffers the caller gives (`run_inputs_to`): a
    /// detector's output is megabytes an item, which its post-processing reads on the GPU.
    Gpu,
}

pub struct GpuInstance {
    model: Arc<GpuModel>,
    /// Set when the output stays on the GPU (`OutputTo::Gpu`): the kernels `run_inputs_to`
    /// widens fp16 outputs with, looked up once here rather than on every run.
    on_gpu: Option<&'static super::detect_kernels::DetectKernels>,
    stream: Arc<CudaStream>,
    dnn: Dnn,
    /// cuBLAS on this instance's stream, when the plan has matrix products.
    blas: Option<Blas>,
    /// cuBLASLt, when a linear layer runs on it at some batch size.
    lt: Option<Lt>,
    conv_descs: Vec<ConvDescs>,
    by_batch: BTreeMap<usize, (Vec<Launch>, Option<Captured>)>,
    slots: Vec<DeviceBuf>,
    slot_of: Vec<usize>,
    workspace: DeviceBuf,
    workspace_bytes: usize,
    input: DeviceBuf,
    mean: DeviceBuf,
    inv_std: DeviceBuf,
    host_in: PinnedBuf<f32>,
    host_out: PinnedBuf<u8>,
    min: usize,
    max: usize,
}

impl GpuInstance {
    /// Builds an instance for batch sizes `min..=max`, tuning what the model has not tuned
    /// yet, and captures one CUDA graph per batch size. Its stream has CUDA priority
    /// `priority` (0, CUDA's default, or a value of the context's priority range); each run
    /// leaves the model's output where `output_to` says.
    pub fn new(
        model: Arc<GpuModel>,
        min: usize,
        max: usize,
        mean: &[f32],
        std: &[f32],
        priority: i32,
        output_to: OutputTo,
    ) -> Result<GpuInstance> {
        let (min, max) = (min.max(1), max.max(min.max(1)));
        let mut on_gpu = None;
        if output_to == OutputTo::Gpu {
            let (dims, strides) = view::value_layout(&model.plan, model.plan.output, 1);
            if strides != view::row_major(&dims) {
                return Err(GpuError::Plan(format!(
                    "the model's output {dims:?} is kept channels-last on the GPU; only a \
                     row-major output can stay there (copy it to the host)"
                )));
            }
            // Compiled now (once per GPU), not on the first request: `run_inputs_to` widens
            // fp16 outputs with it, and PostProcYoloV8 reads the heads with the same module.
            on_gpu = Some(super::detect_kernels::get(&model.ctx)?);
        }
        model.ensure_tuned(min..=max)?;
        let ctx = model.ctx.clone();
        ctx.bind_to_thread().call("cuCtxSetCurrent")?;
        let stream = ctx
            .new_stream_with_priority(priority)
            .call("cuStreamCreateWithPriority")?;
        let dnn = Dnn::new(&stream)?;
        let p = &model.plan;
        let (mut on_blas, mut on_lt) = (false, false);
        for b in min..=max {
            let algos = model.algos(b)?;
            on_blas |= algos.iter().any(|a| a.mode == Mode::Blas);
            on_lt |= algos.iter().any(|a| a.mode == Mode::Lt);
        }
        let lt = if on_lt { Some(Lt::new()?) } else { None };
        let blas = if on_blas || p.steps.iter().any(|s| matches!(s, Step::MatMul(_))) {
            Some(Blas::new(&stream)?)
        } else {
            None
        };
        let (sizes, slot_of) = p.slots();
        let slots = sizes
            .iter()
            .map(|&s| DeviceBuf::new(&ctx, s * max * model.precision.bytes()))
            .collect::<Result<Vec<_>>>()?;
        let mut workspace_bytes = 0;
        for b in min..=max {
            let most = model.algos(b)?.iter().map(|a| a.workspace).max();
            workspace_bytes = workspace_bytes.max(most.unwrap_or(0));
        }
        let item: usize = p.input.iter().product();
        let cpad = p.input_padded_c;
        let pad = |v: &[f32], fill: f32| {
            let mut out = v.to_vec();
            out.resize(cpad, fill);
            out
        };
        let inv: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
        let conv_descs = p
            .convs()
            .map(|c| ConvDescs::new(c, model.precision))
            .collect::<Result<Vec<_>>>()?;
        let out_bytes = p.output_len() * model.precision.bytes();
        let mut inst = GpuInstance {
            workspace: DeviceBuf::new(&ctx, workspace_bytes)?,
            workspace_bytes,
            input: DeviceBuf::new(&ctx, item * max * 4)?,
            mean: DeviceBuf::from_host(&ctx, &pad(mean, 0.0))?,
            inv_std: DeviceBuf::from_host(&ctx, &pad(&inv, 1.0))?,
            host_in: PinnedBuf::new(&ctx, item * max, true)?,
            host_out: PinnedBuf::new(&ctx, out_bytes * max, false)?,
            conv_descs,
            by_batch: BTreeMap::new(),
            slots,
            slot_of,
            stream,
            dnn,
            blas,
            lt,
            model,
            on_gpu,
            min,
            max,
        };
        for n in min..=max {
            let launches = inst.launches(n)?;
            inst.by_batch.insert(n, (launches, None));
            // Run once outside capture: cuDNN loads its kernels lazily on the first call.
            inst.enqueue(n)?;
            inst.stream.synchronize().call("cuStreamSynchronize")?;
            inst.stream
                .begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .call("cuStreamBeginCapture")?;
            let enqueued = inst.enqueue(n);
            // The capture ends either way; an enqueue error is the one worth reporting.
            let graph = Captured::end(&inst.stream);
            enqueued?;
            let graph = graph?;
            if graph.programmatic > 0 {
                tracing::info!(
                    "GPU engine: batch {n}: {} of the graph's {} edges were programmatic \
                     (a kernel allowed to start before the one it follows ends); made full",
                    graph.programmatic,
                    graph.edges
                );
            }
            graph.upload()?;
            if let Some(e) = inst.by_batch.get_mut(&n) {
                e.1 = Some(graph);
            }
        }
        inst.stream.synchronize().call("cuStreamSynchronize")?;
        Ok(inst)
    }

    /// Every step of the plan at batch `n` as it launches (`Launch`): descriptors, views and
    /// addresses resolved once, here.
    fn launches(&self, n: usize) -> Result<Vec<Launch>> {
        let m = &self.model;
        let plan = &m.plan;
        let algos = self.model.algos(n)?;
        let mut conv_i = 0;
        let mut out = Vec::new();
        for s in &plan.steps {
            if let Some(pool) = CudnnPool::new(plan, s, m.precision, n)? {
                let input = s
                    .inputs()
                    .first()
                    .copied()
                    .ok_or_else(|| GpuError::Plan("a pooling step without an input".into()))?;
                out.push(Launch::CudnnPool {
                    pool,
                    x: self.ptr(input),
                    y: self.ptr(s.output()),
                });
                continue;
            }
            out.push(match s {
                Step::Conv(c) => {
                    let launch = self.conv_launch(conv_i, c, algos[conv_i], n)?;
                    conv_i += 1;
                    launch
                }
                Step::Map(s) => {
                    let l = view::map(plan, s, n, m.precision.bytes())?;
                    let a = self.operand(s.a);
                    match view::transpose(&l) {
                        Some(t) => Launch::Transpose {
                            t,
                            a,
                            y: self.ptr(s.output),
                        },
                        None => Launch::Map {
                            l,
                            a,
                            b: s.b.map_or(a, |b| self.operand(b)),
                            c: s.c.map_or(a, |c| self.operand(c)),
                            y: self.ptr(s.output),
                        },
                    }
                }
                Step::Reduce(s) => Launch::Reduce {
                    l: view::reduce(plan, s, n)?,
                    kind: s.kind as i32,
                    x: self.ptr(s.input),
                    y: self.ptr(s.output),
                },
                Step::Row(s) => {
                    let (kind, scale, bias, eps) = match &s.kind {
                        RowKind::Softmax => (0i32, 0u64, None, 0f32),
                        RowKind::LogSoftmax => (1, 0, None, 0.0),
                        RowKind::LayerNorm { scale, bias, eps } => {
                            (2, m.consts[*scale].ptr, bias.map(|b| m.consts[b].ptr), *eps)
                        }
                    };
                    Launch::Row {
                        l: view::row(plan, s, n)?,
                        kind,
                        scale,
                        bias,
                        eps,
                        x: self.ptr(s.input),
                        y: self.ptr(s.output),
                    }
                }
                Step::Pool(s) => Launch::Pool {
                    l: view::pool(plan, s, n)?,
                    args: s.kernel_args(plan.values[s.output].channels_last),
                    x: self.ptr(s.input),
                    y: self.ptr(s.output),
                },
                Step::MatMul(s) => Launch::MatMul {
                    l: view::matmul(plan, s, n)?,
                    a: self.ptr(s.a),
                    b: self.operand(s.b),
                    y: self.ptr(s.output),
                },
                Step::Concat(s) => Launch::Concat {
                    l: view::concat(plan, s, n, m.precision.bytes())?,
                    parts: s.parts.iter().map(|&p| self.ptr(p)).collect(),
                    y: self.ptr(s.output),
                },
                Step::Attention(_) if m.precision != Precision::Fp16 => {
                    return Err(GpuError::Plan(
                        "a fused attention step in an fp32 plan (only fp16 plans fuse)".into(),
                    ))
                }
                Step::Attention(a) => self.attention_launch(a, n)?,
            });
        }
        Ok(out)
    }

    /// Convolution `conv_i` at batch `n` with its tuned algorithm: its descriptors and, for the
    /// graph-API and cuBLASLt algorithms, the plan it runs.
    fn conv_launch(&self, conv_i: usize, c: &ConvStep, algo: Algo, n: usize) -> Result<Launch> {
        let m = &self.model;
        let (xs, ys) = conv_shapes(&m.plan, c)?;
        let (x, y) = (
            tensor_desc(m.precision, n, xs)?,
            tensor_desc(m.precision, n, ys)?,
        );
        let call = self.conv_call(conv_i, c, &x, &y, n)?;
        let exec = match algo.mode {
            Mode::Graph | Mode::GraphAct => {
                let json = m
                    .plans
                    .lock()
                    .ok()
                    .and_then(|p| p.get(&(conv_i, n)).cloned());
                let cfg = algo.algo as usize;
                let g = call.graph_exec(algo.mode, cfg, n, xs, ys, json.as_deref())?;
                Some(Exec::Graph(g))
            }
            Mode::Lt => {
                let i = algo.algo as usize;
                // The same request as the tuner's, so index i names the same one.
                let plans = call.lt_plans(LT_CONFIGS)?;
                let plan = plans.into_iter().nth(i).ok_or_else(|| {
                    GpuError::Plan(format!(
                        "{}: cuBLASLt no longer offers the algorithm #{i} it was tuned with at \
                         batch {n}",
                        c.name
                    ))
                })?;
                Some(Exec::Lt(plan))
            }
            _ => None,
        };
        // A plan rebuilt through the heuristics may not be the one tuned: it must not write
        // past the workspace sized from the tuning.
        if let Some(e) = exec
            .as_ref()
            .filter(|e| e.workspace() > self.workspace_bytes)
        {
            return Err(GpuError::Plan(format!(
                "{}: the {} plan for batch {n} asks for {} bytes of workspace, more than the {} \
                 it was tuned with",
                c.name,
                e.library(),
                e.workspace(),
                self.workspace_bytes
            )));
        }
        Ok(Launch::Conv {
            conv: conv_i,
            step: c.clone(),
            algo,
            x,
            y,
            exec,
        })
    }

    fn conv_call<'a>(
        &'a self,
        conv_i: usize,
        c: &'a ConvStep,
        x: &'a TensorDesc,
        y: &'a TensorDesc,
        n: usize,
    ) -> Result<ConvCall<'a>> {
        let m = &self.model;
        let cw = &m.weights[conv_i];
        let (_, ys) = conv_shapes(&m.plan, c)?;
        Ok(ConvCall {
            h: self.dnn.h,
            stream: &self.stream,
            kernels: &m.kernels,
            precision: m.precision,
            step: c,
            d: &self.conv_descs[conv_i],
            x_desc: x,
            y_desc: y,
            x: self.ptr(c.input),
            weights: cw,
            z: c.residual.map(|r| self.ptr(r)),
            y: self.ptr(c.output),
            ws: self.workspace.ptr,
            y_len: ys.iter().product::<usize>() * n,
            y_hw: ys[1] * ys[2],
            views: Some(conv_views(&m.plan, c, n)?),
            blas: self.blas.as_ref(),
            lt: self.lt.as_ref(),
            ws_bytes: self.workspace_bytes,
        })
    }

    fn ptr(&self, value: usize) -> u64 {
        self.slots[self.slot_of[value]].ptr
    }

    fn operand(&self, o: Operand) -> u64 {
        match o {
            Operand::Value(v) => self.ptr(v),
            Operand::Const(c) => self.model.consts[c].ptr,
        }
    }

    /// A fused attention step for `n` items: one block per 64 query rows of each item's head.
    fn attention_launch(&self, a: &AttentionStep, n: usize) -> Result<Launch> {
        let kernel = plan::HEAD_DIMS
            .iter()
            .position(|&d| d == a.d)
            .filter(|&i| i < self.model.kernels.attention.len())
            .ok_or_else(|| GpuError::Plan(format!("no attention kernel for heads of {}", a.d)))?;
        let heads = |h: &HeadView| kernels::KHeads {
            offset: h.offset,
            batch: h.batch,
            head: h.head,
            row: h.row,
        };
        Ok(Launch::Attention {
            kernel,
            views: [heads(&a.q), heads(&a.k), heads(&a.v), heads(&a.o)],
            ptrs: [
                self.ptr(a.q.value),
                self.ptr(a.k.value),
                self.ptr(a.v.value),
                self.ptr(a.o.value),
            ],
            lq: a.lq as i32,
            lk: a.lk as i32,
            // The kernel takes exponents base 2.
            scale: a.alpha * std::f32::consts::LOG2_E,
            grid: (
                a.lq.div_ceil(kernels::ATTENTION_ROWS) as u32,
                a.heads as u32,
                n as u32,
            ),
        })
    }

    fn kernel<'k>(&self, pair: &'k kernels::Pair) -> &'k cudarc::driver::CudaFunction {
        match self.model.precision {
            Precision::Fp16 => &pair.half,
            Precision::Fp32 => &pair.float,
        }
    }

    /// Enqueues one whole inference of `n` items on the stream, from the staged input: convert,
    /// every step, copy out. Called once eagerly and once under graph capture per batch size.
    /// The input is staged outside the graph, since items come from the host or the GPU.
    fn enqueue(&self, n: usize) -> Result<()> {
        self.enqueue_traced(n, None)
    }

    /// `enqueue`, calling `at(k)` once the steps before step `k` are enqueued, for `k` from 0
    /// to the number of steps (the trace synchronises and reads step `k − 1`'s output there;
    /// the profile records an event).
    fn enqueue_traced(
        &self,
        n: usize,
        mut at: Option<&mut dyn FnMut(usize) -> Result<()>>,
    ) -> Result<()> {
        let m = &self.model;
        let p = &m.plan;
        let k = &m.kernels;
        let (launches, _) = self
            .by_batch
            .get(&n)
            .ok_or_else(|| GpuError::Plan(format!("batch size {n} is not prepared")))?;
        let [c, h, w] = p.input;
        let hw = (h * w) as i32;
        let (c, cpad, ni) = (c as i32, p.input_padded_c as i32, n as i32);
        let x0 = self.ptr(0);
        let mut launch = self.stream.launch_builder(self.kernel(&k.to_input));
        launch
            .arg(&self.input.ptr)
            .arg(&x0)
            .arg(&self.mean.ptr)
            .arg(&self.inv_std.ptr)
            .arg(&ni)
            .arg(&c)
            .arg(&hw)
            .arg(&cpad);
        // SAFETY: argument types match the kernel's signature; buffers are sized for n items.
        unsafe { launch.launch(kernels::launch_1d(n * hw as usize)) }.call("cuLaunchKernel")?;
        for (index, l) in launches.iter().enumerate() {
            if let Some(f) = at.as_mut() {
                f(index)?;
            }
            self.enqueue_launch(l, n)?;
        }
        if let Some(f) = at.as_mut() {
            f(p.steps.len())?;
        }
        if self.on_gpu.is_some() {
            return Ok(());
        }
        let out_bytes = p.output_len() * m.precision.bytes() * n;
        // SAFETY: pinned memory owned by this instance, sized for max ≥ n items; the host
        // reads it only after synchronising the stream.
        unsafe {
            copy_dtoh_async(
                self.host_out.ptr(),
                self.ptr(p.output),
                out_bytes,
                &self.stream,
            )?
        };
        Ok(())
    }

    /// Runs `n` items step by step and returns every step's label and output (in ONNX's
    /// logical order, as f32): comparing two precisions shows where one goes wrong.
    pub fn trace(&mut self, n: usize, input: &[f32]) -> Result<Vec<(String, Vec<f32>)>> {
        self.run(n, input)?;
        let m = self.model.clone();
        let mut lines = Vec::new();
        let mut after = |k: usize| -> Result<()> {
            let Some(i) = k.checked_sub(1) else {
                return Ok(());
            };
            self.stream.synchronize().call("cuStreamSynchronize")?;
            let step = &m.plan.steps[i];
            let out = step.output();
            let len = m.plan.values[out].len() * n;
            let mut raw = vec![0u8; len * m.precision.bytes()];
            // SAFETY: the value's slot holds `len` elements; the stream is idle.
            unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut raw, self.ptr(out)) }
                .call("cuMemcpyDtoH")?;
            let vals: Vec<f32> = m.precision.to_f32(&raw);
            let (dims, strides) = view::value_layout(&m.plan, out, n);
            let v = view::View::new(&dims, &strides, 0)?;
            let logical: Vec<f32> = (0..v.len()).map(|k| vals[v.at(k) as usize]).collect();
            lines.push((step_label(&m.plan, i), logical));
            Ok(())
        };
        self.enqueue_traced(n, Some(&mut after))?;
        self.stream.synchronize().call("cuStreamSynchronize")?;
        Ok(lines)
    }

    /// Each step's label and device time at batch `n` in ms, the median of `rounds` eager
    /// runs with an event between consecutive steps: where a model's time goes. Launch gaps
    /// count wherever the host enqueues more slowly than the GPU runs (small batches), so
    /// read it where kernels are long; the first step includes the input conversion.
    pub fn profile(
        &mut self,
        n: usize,
        input: &[f32],
        rounds: usize,
    ) -> Result<Vec<(String, f32)>> {
        self.run(n, input)?;
        let steps = self.model.plan.steps.len();
        let events = Events::new(steps + 1)?;
        let mut times: Vec<Vec<f32>> = vec![Vec::with_capacity(rounds); steps];
        for _ in 0..rounds.max(1) {
            let stream = self.stream.clone();
            let mut at = |k: usize| -> Result<()> {
                if k == 0 {
                    // The stream is idle before the first event, so no earlier work counts.
                    stream.synchronize().call("cuStreamSynchronize")?;
                }
                events.record(k, &stream)
            };
            self.enqueue_traced(n, Some(&mut at))?;
            for (t, g) in times.iter_mut().zip(events.gaps()?) {
                t.push(g);
            }
        }
        self.stream.synchronize().call("cuStreamSynchronize")?;
        Ok(times
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                t.sort_by(f32::total_cmp);
                (step_label(&self.model.plan, i), t[t.len() / 2])
            })
            .collect())
    }

    pub fn batch_range(&self) -> (usize, usize) {
        (self.min, self.max)
    }

    /// The instance's stream, on its model's GPU (for copies that must reach that GPU first).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Runs `n` items of raw (un-normalised) input, `[n, c, h, w]` f32. The output buffer is
    /// poisoned with NaN first, so an element the GPU did not write cannot pass as a result.
    pub fn run(&mut self, n: usize, input: &[f32]) -> Result<Vec<f32>> {
        self.run_as(n, input, Replay::Graph)
    }

    /// Runs a batch whose items are on the host (copied through pinned memory) or already on
    /// the GPU (copied device to device), each `[c, h, w]` f32 raw values.
    pub fn run_inputs(&mut self, items: &[impl AsInput]) -> Result<Vec<f32>> {
        self.run_inputs_as(items, Replay::Graph)
    }

    /// `run` as the captured graph, or without it: the same steps enqueued one by one, with
    /// the stream synchronised between steps or not. A result that differs from the graph's
    /// shows a step that depends on timing (a race between kernels, or in the graph's replay).
    pub fn run_as(&mut self, n: usize, input: &[f32], how: Replay) -> Result<Vec<f32>> {
        let item: usize = self.model.plan.input.iter().product();
        if input.len() != n * item {
            return Err(GpuError::Plan(format!(
                "{} input values for a batch of {n} items of {item}",
                input.len()
            )));
        }
        let items: Vec<Input<'_>> = input.chunks_exact(item.max(1)).map(Input::Host).collect();
        self.run_inputs_as(&items, how)
    }

    fn run_inputs_as(&mut self, items: &[impl AsInput], how: Replay) -> Result<Vec<f32>> {
        if self.on_gpu.is_some() {
            return Err(GpuError::Plan(
                "this instance leaves its output on the GPU: run it with run_inputs_to".into(),
            ));
        }
        self.stage(items)?;
        let n = items.len();
        let out_bytes = self.model.outputs() * self.model.precision.bytes() * n;
        self.host_out.as_mut_slice()[..out_bytes].fill(0xFF);
        match how {
            Replay::Graph => self.launch(n)?,
            Replay::Eager => self.enqueue(n)?,
            Replay::EagerSynced => {
                let stream = self.stream.clone();
                let mut sync = |_: usize| stream.synchronize().call("cuStreamSynchronize");
                self.enqueue_traced(n, Some(&mut sync))?
            }
        }
        self.stream.synchronize().call("cuStreamSynchronize")?;
        self.read_output(n)
    }

    /// Runs `items` through the captured graph and leaves each item's output on the GPU, as
    /// f32 in ONNX's order, at the matching address of `outputs` (each `outputs()` f32). Only
    /// for an instance made with `OutputTo::Gpu`. Returns once the outputs are written.
    ///
    /// # Safety
    /// Each of `outputs` must hold `outputs()` f32 values on this instance's GPU.
    pub unsafe fn run_inputs_to(&mut self, items: &[impl AsInput], outputs: &[u64]) -> Result<()> {
        let Some(kernels) = self.on_gpu else {
            return Err(GpuError::Plan(
                "this instance copies its output to the host: run it with run_inputs".into(),
            ));
        };
        let n = items.len();
        if outputs.len() != n {
            return Err(GpuError::Plan(format!(
                "{} output buffers for a batch of {n}",
                outputs.len()
            )));
        }
        self.stage(items)?;
        self.launch(n)?;
        let per = self.model.outputs();
        let src = self.ptr(self.model.plan.output);
        match self.model.precision {
            Precision::Fp16 => {
                for (i, &dst) in outputs.iter().enumerate() {
                    // SAFETY: the output slot holds max ≥ n items of `per` fp16 values; `dst`
                    // holds `per` f32 (the caller's promise); the stream is synchronised below.
                    unsafe {
                        kernels.half_to_float(&self.stream, src + (i * per * 2) as u64, dst, per)?
                    };
                }
            }
            Precision::Fp32 => {
                for (i, &dst) in outputs.iter().enumerate() {
                    // SAFETY: as above, `per` f32 on both sides.
                    unsafe {
                        copy_dtod_async(dst, src + (i * per * 4) as u64, per * 4, &self.stream)?
                    };
                }
            }
        }
        self.stream.synchronize().call("cuStreamSynchronize")
    }

    /// Checks `items` against the model's input and copies them into its input buffer on the
    /// stream.
    fn stage(&mut self, items: &[impl AsInput]) -> Result<()> {
        let n = items.len();
        let item: usize = self.model.plan.input.iter().product();
        if n > self.max {
            return Err(GpuError::Plan(format!(
                "a batch of {n} is above this instance's max = {}",
                self.max
            )));
        }
        let staging = self.host_in.as_mut_slice();
        for (i, x) in items.iter().enumerate() {
            let len = match x.as_input() {
                Input::Host(values) => {
                    if values.len() == item {
                        staging[i * item..(i + 1) * item].copy_from_slice(values);
                    }
                    values.len()
                }
                Input::Device(v) => v.bytes() / 4,
            };
            if len != item {
                return Err(GpuError::Plan(format!(
                    "item {i} has {len} values; the model takes {item}"
                )));
            }
        }
        self.model.ctx.bind_to_thread().call("cuCtxSetCurrent")?;
        let bytes = item * 4;
        let mut i = 0;
        while i < n {
            match items[i].as_input() {
                Input::Host(_) => {
                    // One copy for each run of host items.
                    let run = items[i..]
                        .iter()
                        .take_while(|x| matches!(x.as_input(), Input::Host(_)))
                        .count();
                    // SAFETY: pinned staging of max ≥ n items, read by the stream before the
                    // next run overwrites it (run_inputs waits for the stream).
                    unsafe {
                        copy_htod_async(
                            self.input.ptr + (i * bytes) as u64,
                            (self.host_in.ptr() as *const u8).add(i * bytes),
                            run * bytes,
                            &self.stream,
                        )?
                    };
                    i += run;
                }
                Input::Device(v) => {
                    // SAFETY: the source holds `bytes` (checked above) and its owner keeps it
                    // alive until this call returns, after the stream is synchronised.
                    unsafe {
                        copy_dtod_async(
                            self.input.ptr + (i * bytes) as u64,
                            v.ptr(),
                            bytes,
                            &self.stream,
                        )?
                    };
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// Launches the captured graph for `n` items (inputs already staged).
    pub fn launch(&self, n: usize) -> Result<()> {
        let graph = match self.by_batch.get(&n) {
            Some((_, Some(g))) => g,
            _ => {
                return Err(GpuError::Plan(format!(
                    "batch of {n} outside this instance's range {}..={}",
                    self.min, self.max
                )))
            }
        };
        graph.launch()
    }

    fn read_output(&self, n: usize) -> Result<Vec<f32>> {
        let m = &self.model;
        let per = m.plan.output_len();
        let raw = &self.host_out.as_slice()[..per * n * m.precision.bytes()];
        let flat: Vec<f32> = m.precision.to_f32(raw);
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(GpuError::Plan(format!(
                "the GPU output is not finite at element {i} (unwritten, or an fp16 overflow)"
            )));
        }
        // The output's storage layout (NHWC for a spatial fp16 output) → ONNX's order.
        let (dims, strides) = view::value_layout(&m.plan, m.plan.output, n);
        if strides == view::row_major(&dims) {
            return Ok(flat);
        }
        let v = view::View::new(&dims, &strides, 0)?;
        Ok((0..v.len()).map(|i| flat[v.at(i) as usize]).collect())
    }

    /// Device time of one graph replay at batch `n`, in ms: `reps` replays between two events.
    pub fn time_graph(&self, n: usize, reps: usize) -> Result<f32> {
        let timer = Timer::new()?;
        timer.start(&self.stream)?;
        for _ in 0..reps {
            self.launch(n)?;
        }
        Ok(timer.stop(&self.stream)? / reps.max(1) as f32)
    }
}

/// What a `model::cache` must have been written for to be used by this build.
fn cache_key(onnx_sha256: &str, device: &str, precision: Precision) -> cache::Key {
    cache::Key {
        onnx_sha256: onnx_sha256.to_string(),
        device: device.to_string(),
        cudnn: cudnn_version(),
        cublas_lt: super::blas_lt::version(),
        precision,
        kernels_sha256: cache::sha256_hex(kernels::SOURCE.as_bytes()),
    }
}

/// Elementwise steps this large run in 16-byte chunks where their views allow. Below it one
/// element per thread is faster: on the H200 (2026-12-01, model-check --profile) chunked steps
/// of 1k–500k fp16 elements took 1–2 µs longer (densenet121's batch-1 copies 5.2 → 6.3 µs),
/// from 500k on they were faster (ViT's batch-8 bias adds of 2–8M elements 26–38 → 15–19 µs).
const CHUNK_MIN_ELEMENTS: usize = 1 << 19;

/// Whether a step of `len` elements whose views allow chunks of `vec` runs chunked.
fn chunked(vec: usize, len: usize) -> bool {
    vec > 1 && len >= CHUNK_MIN_ELEMENTS
}

/// `index kind name dims` of step `i`, as the trace and the profile print it.
fn step_label(plan: &Plan, i: usize) -> String {
    let step = &plan.steps[i];
    format!(
        "{i:>4} {:<11} {:<48} {:?}",
        step.kind(),
        step.name(),
        plan.values[step.output()].dims
    )
}

// SAFETY: an instance is owned by one node instance and used by one thread at a time (&mut for
// runs); its graphs, cuDNN handle and descriptors are never shared. CUDA allows driving a
// stream, a graph and a cuDNN handle from any thread with the context current, which every
// call here makes sure of.
unsafe impl Send for GpuInstance {}

impl Drop for GpuInstance {
    fn drop(&mut self) {
        // Buffers must outlive the work queued on them.
        let _ = self.stream.synchronize();
    }
}
