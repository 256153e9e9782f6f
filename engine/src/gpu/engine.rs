//! The GPU engine: a `Plan` on cuDNN. The model (weights, kernels, tuned algorithms) is shared;
//! each instance owns a stream, a cuDNN handle, a workspace, its activation buffers, pinned
//! staging and one CUDA graph per batch size, so instances run concurrently with no lock.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::cudnn::sys as dnn;
use cudarc::driver::{sys as cu, CudaContext, CudaGraph, CudaStream, PushKernelArg};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::cache::{self, CacheFile};
use super::cuda::{
    copy_dtod_async, copy_dtoh_async, copy_htod_async, cudnn_version, dnn_call, open_device,
    ActDesc, Call, ConvDesc, DeviceBuf, Dnn, FilterDesc, GpuError, PinnedBuf, PoolDesc, Result,
    TensorDesc, Timer,
};
use super::graph_api;
use super::kernels::{self, Kernels};
use super::plan::{self, ConvStep, Plan, PoolKind, Step};
use crate::backends::model::Input;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    Fp16,
    Fp32,
}

impl Precision {
    fn bytes(self) -> usize {
        match self {
            Precision::Fp16 => 2,
            Precision::Fp32 => 4,
        }
    }

    fn dtype(self) -> dnn::cudnnDataType_t {
        match self {
            Precision::Fp16 => dnn::cudnnDataType_t::CUDNN_DATA_HALF,
            Precision::Fp32 => dnn::cudnnDataType_t::CUDNN_DATA_FLOAT,
        }
    }

    /// fp16 runs NHWC (what the tensor-core kernels read); fp32 runs NCHW on FMA kernels,
    /// so that it stays a true fp32 reference (no TF32).
    fn format(self) -> dnn::cudnnTensorFormat_t {
        match self {
            Precision::Fp16 => dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
            Precision::Fp32 => dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
        }
    }

    fn math(self) -> dnn::cudnnMathType_t {
        match self {
            Precision::Fp16 => dnn::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            Precision::Fp32 => dnn::cudnnMathType_t::CUDNN_FMA_MATH,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Fp32 => "fp32",
        }
    }
}

/// How one convolution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// cudnnConvolutionBiasActivationForward with legacy algorithm `algo`.
    Fused,
    /// cudnnConvolutionForward with legacy algorithm `algo`, then our bias/residual/ReLU kernel.
    Split,
    /// cuDNN's graph API: the whole conv+bias+add+ReLU graph on engine configuration number
    /// `algo` of the heuristics' list (mode A).
    Graph,
}

/// The algorithm chosen for one convolution at one batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Algo {
    pub mode: Mode,
    pub algo: u32,
    pub workspace: usize,
}

/// How many of the heuristics' engine configurations the tuner times per convolution, out of
/// the first GRAPH_SCAN it looks at.
const GRAPH_CONFIGS: usize = 3;
const GRAPH_SCAN: usize = 12;

/// The most workspace one convolution may take while tuning (cuDNN's FFT algorithms ask for
/// gigabytes; they are never the fastest for these shapes on Hopper anyway).
const WORKSPACE_LIMIT: usize = 256 << 20;

const ALGOS: [dnn::cudnnConvolutionFwdAlgo_t; 8] = {
    use dnn::cudnnConvolutionFwdAlgo_t::*;
    [
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    ]
};

fn algo_from(id: u32) -> Result<dnn::cudnnConvolutionFwdAlgo_t> {
    ALGOS
        .get(id as usize)
        .copied()
        .ok_or_else(|| GpuError::Plan(format!("unknown cuDNN algorithm id {id}")))
}

/// What start-up measured, for logs and the model-check tool.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub cache: String,
    pub tuned_batches: Vec<usize>,
    pub tune_seconds: f64,
}

pub struct GpuModel {
    ctx: Arc<CudaContext>,
    plan: Plan,
    precision: Precision,
    /// Per convolution (in plan order): weights in the device layout, bias.
    weights: Vec<(DeviceBuf, DeviceBuf)>,
    kernels: Kernels,
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
    /// Loads an ONNX for the GPU: parses, folds and fuses it, uploads the weights, compiles (or
    /// takes from `cache`) the kernels. Tuning happens per batch size as instances ask for it.
    pub fn load(path: &Path, precision: Precision, cache_path: Option<&Path>) -> Result<GpuModel> {
        let ctx = open_device()?;
        let device = ctx.name().call("cuDeviceGetName")?;
        let bytes = std::fs::read(path)
            .map_err(|e| GpuError::Plan(format!("cannot read {}: {e}", path.display())))?;
        let onnx_sha256 = cache::sha256_hex(&bytes);
        let proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice())
            .map_err(|e| GpuError::Plan(format!("not an ONNX model: {e}")))?;
        drop(bytes);
        let mut plan = plan::build(&proto).map_err(GpuError::Plan)?;
        drop(proto);
        let key = cache::Key {
            onnx_sha256: onnx_sha256.clone(),
            device: device.clone(),
            cudnn: cudnn_version(),
            precision,
        };
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
        let weights = upload_weights(&ctx, &plan, precision, &host_weights)?;
        // The device holds the weights now; the plan keeps only the structure.
        for c in plan.convs_mut() {
            c.weight = Vec::new();
            c.bias = Vec::new();
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
        let item_shape = vec![plan.input.c, plan.input.h, plan.input.w];
        Ok(GpuModel {
            ctx,
            plan,
            precision,
            weights,
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
        self.plan.values[self.plan.output].len()
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn report(&self) -> LoadReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        let v = cudnn_version();
        format!(
            "GPU engine on {} (cuDNN {}.{}.{}, {} {}, {} fused convolutions, one CUDA graph per \
             batch size), input [N, {}]",
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
            self.item_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The algorithm of every convolution at batch size `n`, once tuned.
    fn algos(&self, n: usize) -> Result<Vec<Algo>> {
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
        let tuner = Tuner::new(self, *missing.iter().max().unwrap_or(&1))?;
        for &b in &missing {
            let (algos, jsons) = tuner.tune(self, b)?;
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
                key: cache::Key {
                    onnx_sha256: self.onnx_sha256.clone(),
                    device: self.device.clone(),
                    cudnn: cudnn_version(),
                    precision: self.precision,
                },
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
/// bias, convolution after convolution.
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
    out
}

fn conv_sizes(c: &ConvStep, precision: Precision) -> (usize, usize) {
    let w = c.cout * (c.cin / c.groups) * c.kernel[0] * c.kernel[1];
    (w * precision.bytes(), c.cout * precision.bytes())
}

fn upload_weights(
    ctx: &Arc<CudaContext>,
    plan: &Plan,
    precision: Precision,
    blob: &[u8],
) -> Result<Vec<(DeviceBuf, DeviceBuf)>> {
    let mut at = 0;
    let mut out = Vec::new();
    for c in plan.convs() {
        let (wb, bb) = conv_sizes(c, precision);
        let (Some(w), Some(b)) = (blob.get(at..at + wb), blob.get(at + wb..at + wb + bb)) else {
            return Err(GpuError::Plan(
                "the weight blob is shorter than the plan".into(),
            ));
        };
        out.push((DeviceBuf::from_host(ctx, w)?, DeviceBuf::from_host(ctx, b)?));
        at += wb + bb;
    }
    Ok(out)
}

fn tensor_desc(precision: Precision, n: usize, s: plan::Shape) -> Result<TensorDesc> {
    let d = TensorDesc::new()?;
    dnn_call!(cudnnSetTensor4dDescriptor(
        d.0,
        precision.format(),
        precision.dtype(),
        n as i32,
        s.c as i32,
        s.h as i32,
        s.w as i32
    ))?;
    Ok(d)
}

/// The batch-independent descriptors of one convolution.
struct ConvDescs {
    filter: FilterDesc,
    conv: ConvDesc,
    bias: TensorDesc,
    act: ActDesc,
}

impl ConvDescs {
    fn new(c: &ConvStep, precision: Precision) -> Result<ConvDescs> {
        let filter = FilterDesc::new()?;
        dnn_call!(cudnnSetFilter4dDescriptor(
            filter.0,
            precision.dtype(),
            precision.format(),
            c.cout as i32,
            (c.cin / c.groups) as i32,
            c.kernel[0] as i32,
            c.kernel[1] as i32
        ))?;
        let conv = ConvDesc::new()?;
        dnn_call!(cudnnSetConvolution2dDescriptor(
            conv.0,
            c.pad[0] as i32,
            c.pad[1] as i32,
            c.stride[0] as i32,
            c.stride[1] as i32,
            c.dilation[0] as i32,
            c.dilation[1] as i32,
            dnn::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            dnn::cudnnDataType_t::CUDNN_DATA_FLOAT
        ))?;
        dnn_call!(cudnnSetConvolutionMathType(conv.0, precision.math()))?;
        if c.groups > 1 {
            dnn_call!(cudnnSetConvolutionGroupCount(conv.0, c.groups as i32))?;
        }
        let bias = TensorDesc::new()?;
        dnn_call!(cudnnSetTensor4dDescriptor(
            bias.0,
            dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            precision.dtype(),
            1,
            c.cout as i32,
            1,
            1
        ))?;
        let act = ActDesc::new()?;
        let mode = if c.relu {
            dnn::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU
        } else {
            dnn::cudnnActivationMode_t::CUDNN_ACTIVATION_IDENTITY
        };
        dnn_call!(cudnnSetActivationDescriptor(
            act.0,
            mode,
            dnn::cudnnNanPropagation_t::CUDNN_NOT_PROPAGATE_NAN,
            0.0
        ))?;
        Ok(ConvDescs {
            filter,
            conv,
            bias,
            act,
        })
    }
}

fn pool_desc(p: &plan::PoolStep) -> Result<PoolDesc> {
    let d = PoolDesc::new()?;
    let mode = match p.kind {
        PoolKind::Max => dnn::cudnnPoolingMode_t::CUDNN_POOLING_MAX_DETERMINISTIC,
        PoolKind::AvgIncludePad => {
            dnn::cudnnPoolingMode_t::CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING
        }
        PoolKind::AvgExcludePad => {
            dnn::cudnnPoolingMode_t::CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING
        }
    };
    dnn_call!(cudnnSetPooling2dDescriptor(
        d.0,
        mode,
        dnn::cudnnNanPropagation_t::CUDNN_NOT_PROPAGATE_NAN,
        p.kernel[0] as i32,
        p.kernel[1] as i32,
        p.pad[0] as i32,
        p.pad[1] as i32,
        p.stride[0] as i32,
        p.stride[1] as i32
    ))?;
    Ok(d)
}

/// One convolution at one batch size, with its buffers: y = act(conv(x) + bias + z).
struct ConvCall<'a> {
    h: dnn::cudnnHandle_t,
    stream: &'a CudaStream,
    kernels: &'a Kernels,
    precision: Precision,
    step: &'a ConvStep,
    d: &'a ConvDescs,
    x_desc: &'a TensorDesc,
    y_desc: &'a TensorDesc,
    x: u64,
    w: &'a DeviceBuf,
    bias: &'a DeviceBuf,
    z: Option<u64>,
    y: u64,
    ws: u64,
    /// Elements of y, and its spatial size (for the NCHW epilogue).
    y_len: usize,
    y_hw: usize,
}

/// A graph-API plan bound to one set of buffers.
struct GraphExec {
    _graph: Option<graph_api::ConvGraph>,
    plan: graph_api::Plan,
    pack: graph_api::BDesc,
}

impl ConvCall<'_> {
    /// The plan for engine configuration `cfg_index`: from its saved JSON when there is one
    /// (no heuristics, no operation graph), else through the heuristics.
    fn graph_exec(
        &self,
        cfg_index: usize,
        n: usize,
        x_shape: plan::Shape,
        y_shape: plan::Shape,
        json: Option<&str>,
    ) -> Result<GraphExec> {
        let pack =
            || graph_api::variant_pack(self.x, self.w.ptr, self.bias.ptr, self.z, self.y, self.ws);
        if let Some(json) = json {
            match graph_api::plan_from_json(self.h, json) {
                Ok(plan) => {
                    return Ok(GraphExec {
                        _graph: None,
                        plan,
                        pack: pack()?,
                    })
                }
                Err(e) => tracing::warn!(
                    "{}: cannot load the saved cuDNN plan ({e}); asking the heuristics again",
                    self.step.name
                ),
            }
        }
        let g = graph_api::conv_graph(self.h, self.step, n, x_shape, y_shape)?;
        let cfgs = graph_api::engine_configs(&g, cfg_index + 1)?;
        let cfg = cfgs.get(cfg_index).ok_or_else(|| {
            GpuError::Plan(format!(
                "heuristics offer no engine configuration #{cfg_index}"
            ))
        })?;
        let plan = graph_api::plan(self.h, cfg)?;
        Ok(GraphExec {
            _graph: Some(g),
            plan,
            pack: pack()?,
        })
    }

    fn run(&self, algo: Algo, graph: Option<&GraphExec>) -> Result<()> {
        let one = 1.0f32;
        let zero = 0.0f32;
        match algo.mode {
            Mode::Fused => {
                let alpha2 = if self.z.is_some() { 1.0f32 } else { 0.0 };
                dnn_call!(cudnnConvolutionBiasActivationForward(
                    self.h,
                    &one as *const f32 as *const c_void,
                    self.x_desc.0,
                    self.x as *const c_void,
                    self.d.filter.0,
                    self.w.ptr as *const c_void,
                    self.d.conv.0,
                    algo_from(algo.algo)?,
                    self.ws as *mut c_void,
                    algo.workspace,
                    &alpha2 as *const f32 as *const c_void,
                    self.y_desc.0,
                    self.z.unwrap_or(self.y) as *const c_void,
                    self.d.bias.0,
                    self.bias.ptr as *const c_void,
                    self.d.act.0,
                    self.y_desc.0,
                    self.y as *mut c_void
                ))
            }
            Mode::Split => {
                dnn_call!(cudnnConvolutionForward(
                    self.h,
                    &one as *const f32 as *const c_void,
                    self.x_desc.0,
                    self.x as *const c_void,
                    self.d.filter.0,
                    self.w.ptr as *const c_void,
                    self.d.conv.0,
                    algo_from(algo.algo)?,
                    self.ws as *mut c_void,
                    algo.workspace,
                    &zero as *const f32 as *const c_void,
                    self.y_desc.0,
                    self.y as *mut c_void
                ))?;
                let (len, cout) = (self.y_len as i64, self.step.cout as i32);
                let (relu, has_z) = (self.step.relu as i32, self.z.is_some() as i32);
                let z = self.z.unwrap_or(self.y);
                let hw = self.y_hw as i32;
                let mut l = match self.precision {
                    Precision::Fp16 => self.stream.launch_builder(&self.kernels.bias_act_half),
                    Precision::Fp32 => self.stream.launch_builder(&self.kernels.bias_act_float),
                };
                l.arg(&self.y)
                    .arg(&z)
                    .arg(&self.bias.ptr)
                    .arg(&len)
                    .arg(&cout);
                if self.precision == Precision::Fp32 {
                    l.arg(&hw);
                }
                l.arg(&relu).arg(&has_z);
                // SAFETY: argument types match the kernel; y and z hold `len` elements.
                unsafe { l.launch(kernels::launch_1d(self.y_len)) }.call("cuLaunchKernel")?;
                Ok(())
            }
            Mode::Graph => {
                let g = graph.ok_or_else(|| {
                    GpuError::Plan("graph-API convolution without its plan".into())
                })?;
                graph_api::execute(self.h, &g.plan, &g.pack)
            }
        }
    }
}

/// The fastest candidate so far for one convolution, its saved plan if it runs on the graph
/// API, and what every candidate measured (for the debug log).
struct Choice {
    best: Option<(f32, Algo)>,
    json: Option<String>,
    report: Vec<String>,
}

impl Choice {
    /// Records a measured candidate; true when it is the fastest so far.
    fn offer(&mut self, ms: f32, algo: Algo, line: String) -> bool {
        self.report.push(line);
        let better = self.best.is_none_or(|(t, _)| ms < t);
        if better {
            self.best = Some((ms, algo));
        }
        better
    }
}

/// A batch size's algorithms (one per convolution) and its graph-API plans by convolution.
type Tuned = (Vec<Algo>, Vec<(usize, String)>);

/// Chooses each convolution's algorithm per batch size by timing the fused call itself on
/// scratch buffers filled with non-zero data.
struct Tuner {
    stream: Arc<CudaStream>,
    dnn: Dnn,
    x: DeviceBuf,
    y: DeviceBuf,
    z: DeviceBuf,
    ws: DeviceBuf,
    timer: Timer,
}

impl Tuner {
    fn new(m: &GpuModel, max_batch: usize) -> Result<Tuner> {
        let stream = m.ctx.new_stream().call("cuStreamCreate")?;
        let dnn = Dnn::new(&stream)?;
        let largest = m.plan.values.iter().map(|s| s.len()).max().unwrap_or(1);
        let bytes = largest * max_batch * m.precision.bytes();
        // Small values of both signs, as activations have; never zeros (METHOD.md).
        let fill: Vec<u8> = match m.precision {
            Precision::Fp16 => (0..bytes / 2)
                .flat_map(|i| {
                    half::f16::from_f32(((i * 7919) % 200) as f32 / 100.0 - 1.0).to_le_bytes()
                })
                .collect(),
            Precision::Fp32 => (0..bytes / 4)
                .flat_map(|i| (((i * 7919) % 200) as f32 / 100.0 - 1.0).to_le_bytes())
                .collect(),
        };
        Ok(Tuner {
            x: DeviceBuf::from_host(&m.ctx, &fill)?,
            y: DeviceBuf::new(&m.ctx, bytes)?,
            z: DeviceBuf::from_host(&m.ctx, &fill)?,
            ws: DeviceBuf::new(&m.ctx, WORKSPACE_LIMIT)?,
            timer: Timer::new()?,
            stream,
            dnn,
        })
    }

    /// Times one candidate: a warm-up call, then REPS calls between events.
    fn time(&self, call: &ConvCall<'_>, algo: Algo, graph: Option<&GraphExec>) -> Result<f32> {
        call.run(algo, graph)?;
        self.stream.synchronize().call("cuStreamSynchronize")?;
        const REPS: usize = 5;
        self.timer.start(&self.stream)?;
        for _ in 0..REPS {
            call.run(algo, graph)?;
        }
        Ok(self.timer.stop(&self.stream)? / REPS as f32)
    }

    /// Times the graph API's precompiled engine configurations (the heuristics' first
    /// GRAPH_CONFIGS of them; runtime-compiled ones cost tens of ms per plan and start, and are
    /// tried only when no precompiled one exists).
    fn tune_graph(
        &self,
        call: &ConvCall<'_>,
        n: usize,
        xs: plan::Shape,
        ys: plan::Shape,
        choice: &mut Choice,
    ) -> Result<()> {
        let g = graph_api::conv_graph(call.h, call.step, n, xs, ys)?;
        let cfgs = graph_api::engine_configs(&g, GRAPH_SCAN)?;
        let mut picks: Vec<usize> = cfgs
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                // Unknown notes count against a config: determinism is a promise we test.
                graph_api::notes(c).is_ok_and(|n| !n.runtime_compiled && !n.nondeterministic)
            })
            .map(|(i, _)| i)
            .take(GRAPH_CONFIGS)
            .collect();
        if picks.is_empty() {
            // Compile one at plan time rather than give up on the graph API, if deterministic.
            picks.extend(
                cfgs.iter()
                    .position(|c| graph_api::notes(c).is_ok_and(|n| !n.nondeterministic)),
            );
        }
        drop(cfgs);
        for i in picks {
            let built = Instant::now();
            let exec = match call.graph_exec(i, n, xs, ys, None) {
                Ok(e) => e,
                Err(e) => {
                    choice.report.push(format!("Graph/{i} plan failed: {e}"));
                    continue;
                }
            };
            if exec.plan.workspace > WORKSPACE_LIMIT {
                continue;
            }
            let algo = Algo {
                mode: Mode::Graph,
                algo: i as u32,
                workspace: exec.plan.workspace,
            };
            match self.time(call, algo, Some(&exec)) {
                Ok(ms) => {
                    let line = format!(
                        "Graph/{i} {ms:.4} (plan built in {:.1} ms)",
                        built.elapsed().as_secs_f64() * 1e3
                    );
                    if choice.offer(ms, algo, line) {
                        choice.json = graph_api::plan_json(&exec.plan).ok();
                    }
                }
                Err(e) => choice.report.push(format!("Graph/{i} failed: {e}")),
            }
        }
        Ok(())
    }

    /// The algorithm of every convolution at batch `n`, and the saved plans of those that run
    /// on the graph API.
    fn tune(&self, m: &GpuModel, n: usize) -> Result<Tuned> {
        let mut chosen = Vec::new();
        let mut jsons = Vec::new();
        let mut total_ms = 0f32;
        let mut modes = [0usize; 3];
        for (c, (w, b)) in m.plan.convs().zip(&m.weights) {
            let d = ConvDescs::new(c, m.precision)?;
            let (xs, ys) = (m.plan.values[c.input], m.plan.values[c.output]);
            let xd = tensor_desc(m.precision, n, xs)?;
            let yd = tensor_desc(m.precision, n, ys)?;
            let call = ConvCall {
                h: self.dnn.h,
                stream: &self.stream,
                kernels: &m.kernels,
                precision: m.precision,
                step: c,
                d: &d,
                x_desc: &xd,
                y_desc: &yd,
                x: self.x.ptr,
                w,
                bias: b,
                z: c.residual.map(|_| self.z.ptr),
                y: self.y.ptr,
                ws: self.ws.ptr,
                y_len: ys.len() * n,
                y_hw: ys.h * ys.w,
            };
            let mut perf: [dnn::cudnnConvolutionFwdAlgoPerf_t; 8] =
                // SAFETY: a plain C struct; every field is overwritten by cuDNN or unused.
                unsafe { std::mem::zeroed() };
            let mut found = 0i32;
            dnn_call!(cudnnGetConvolutionForwardAlgorithm_v7(
                self.dnn.h,
                xd.0,
                d.filter.0,
                d.conv.0,
                yd.0,
                8,
                &mut found,
                perf.as_mut_ptr()
            ))?;
            let mut candidates = Vec::new();
            for p in perf.iter().take(found.max(0) as usize) {
                let ok = p.status == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && p.determinism == dnn::cudnnDeterminism_t::CUDNN_DETERMINISTIC
                    && p.memory <= WORKSPACE_LIMIT;
                if ok {
                    for mode in [Mode::Fused, Mode::Split] {
                        candidates.push(Algo {
                            mode,
                            algo: p.algo as u32,
                            workspace: p.memory,
                        });
                    }
                }
            }
            let mut choice = Choice {
                best: None,
                json: None,
                report: Vec::new(),
            };
            for algo in candidates {
                // The fused call supports fewer algorithms than the plain one: skip refusals.
                if let Ok(ms) = self.time(&call, algo, None) {
                    choice.offer(ms, algo, format!("{:?}/{} {ms:.4}", algo.mode, algo.algo));
                }
            }
            if m.precision == Precision::Fp16 {
                if let Err(e) = self.tune_graph(&call, n, xs, ys, &mut choice) {
                    choice.report.push(format!("graph API unavailable: {e}"));
                }
            }
            let Choice {
                best,
                json: mut best_json,
                report,
            } = choice;
            tracing::debug!(
                batch = n,
                conv = %c.name,
                "tuning (ms): {} -> {:?}",
                report.join(", "),
                best.map(|(t, a)| (a.mode, a.algo, t))
            );
            match best {
                Some((t, a)) => {
                    total_ms += t;
                    modes[a.mode as usize] += 1;
                    if a.mode == Mode::Graph {
                        if let Some(j) = best_json.take() {
                            jsons.push((chosen.len(), j));
                        }
                    }
                    chosen.push(a)
                }
                None => {
                    return Err(GpuError::Plan(format!(
                        "{}: cuDNN offers no working algorithm at batch {n} ({})",
                        c.name,
                        report.join(", ")
                    )))
                }
            }
        }
        tracing::info!(
            "GPU engine: batch {n}: convolutions sum to {total_ms:.3} ms as tuned \
             (fused {}, split {}, graph API {})",
            modes[0],
            modes[1],
            modes[2]
        );
        Ok((chosen, jsons))
    }
}

/// Descriptors of every step at one batch size.
enum StepDescs {
    Conv {
        x: TensorDesc,
        y: TensorDesc,
        graph: Option<GraphExec>,
    },
    Pool {
        x: TensorDesc,
        y: TensorDesc,
        pool: PoolDesc,
    },
    Softmax {
        x: TensorDesc,
    },
    Elementwise,
}

pub struct GpuInstance {
    model: Arc<GpuModel>,
    stream: Arc<CudaStream>,
    dnn: Dnn,
    conv_descs: Vec<ConvDescs>,
    by_batch: BTreeMap<usize, (Vec<StepDescs>, Option<CudaGraph>)>,
    slots: Vec<DeviceBuf>,
    slot_of: Vec<usize>,
    workspace: DeviceBuf,
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
    /// yet, and captures one CUDA graph per batch size.
    pub fn new(
        model: Arc<GpuModel>,
        min: usize,
        max: usize,
        mean: &[f32],
        std: &[f32],
    ) -> Result<GpuInstance> {
        let (min, max) = (min.max(1), max.max(min.max(1)));
        model.ensure_tuned(min..=max)?;
        let ctx = model.ctx.clone();
        ctx.bind_to_thread().call("cuCtxSetCurrent")?;
        let stream = ctx.new_stream().call("cuStreamCreate")?;
        let dnn = Dnn::new(&stream)?;
        let p = &model.plan;
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
        let item = p.input.len();
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
        let out_bytes = p.values[p.output].len() * model.precision.bytes();
        let mut inst = GpuInstance {
            workspace: DeviceBuf::new(&ctx, workspace_bytes)?,
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
            model,
            min,
            max,
        };
        for n in min..=max {
            let descs = inst.step_descs(n)?;
            inst.by_batch.insert(n, (descs, None));
            // Run once outside capture: cuDNN loads its kernels lazily on the first call.
            inst.enqueue(n)?;
            inst.stream.synchronize().call("cuStreamSynchronize")?;
            inst.stream
                .begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .call("cuStreamBeginCapture")?;
            let enqueued = inst.enqueue(n);
            let graph = inst
                .stream
                .end_capture(cu::CUgraphInstantiate_flags(0))
                .call("cuStreamEndCapture")?;
            enqueued?;
            let graph =
                graph.ok_or_else(|| GpuError::Plan("graph capture recorded nothing".into()))?;
            graph.upload().call("cuGraphUpload")?;
            if let Some(e) = inst.by_batch.get_mut(&n) {
                e.1 = Some(graph);
            }
        }
        inst.stream.synchronize().call("cuStreamSynchronize")?;
        Ok(inst)
    }

    fn step_descs(&self, n: usize) -> Result<Vec<StepDescs>> {
        let m = &self.model;
        let v = |id: usize| tensor_desc(m.precision, n, m.plan.values[id]);
        let algos = self.model.algos(n)?;
        let mut conv_i = 0;
        let mut out = Vec::new();
        for s in &m.plan.steps {
            out.push(match s {
                Step::Conv(c) => {
                    let (x, y) = (v(c.input)?, v(c.output)?);
                    let algo = algos[conv_i];
                    let graph = if algo.mode == Mode::Graph {
                        let call = self.conv_call(conv_i, c, &x, &y, n);
                        let (xs, ys) = (m.plan.values[c.input], m.plan.values[c.output]);
                        let json = m
                            .plans
                            .lock()
                            .ok()
                            .and_then(|p| p.get(&(conv_i, n)).cloned());
                        Some(call.graph_exec(algo.algo as usize, n, xs, ys, json.as_deref())?)
                    } else {
                        None
                    };
                    conv_i += 1;
                    StepDescs::Conv { x, y, graph }
                }
                Step::Pool(p) => StepDescs::Pool {
                    x: v(p.input)?,
                    y: v(p.output)?,
                    pool: pool_desc(p)?,
                },
                Step::Softmax { input, .. } => {
                    let s = m.plan.values[*input];
                    let d = TensorDesc::new()?;
                    dnn_call!(cudnnSetTensor4dDescriptor(
                        d.0,
                        dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                        m.precision.dtype(),
                        n as i32,
                        s.len() as i32,
                        1,
                        1
                    ))?;
                    StepDescs::Softmax { x: d }
                }
                Step::Add { .. } | Step::Clamp { .. } => StepDescs::Elementwise,
            });
        }
        Ok(out)
    }

    fn conv_call<'a>(
        &'a self,
        conv_i: usize,
        c: &'a ConvStep,
        x: &'a TensorDesc,
        y: &'a TensorDesc,
        n: usize,
    ) -> ConvCall<'a> {
        let m = &self.model;
        let (w, b) = &m.weights[conv_i];
        let ys = m.plan.values[c.output];
        ConvCall {
            h: self.dnn.h,
            stream: &self.stream,
            kernels: &m.kernels,
            precision: m.precision,
            step: c,
            d: &self.conv_descs[conv_i],
            x_desc: x,
            y_desc: y,
            x: self.ptr(c.input),
            w,
            bias: b,
            z: c.residual.map(|r| self.ptr(r)),
            y: self.ptr(c.output),
            ws: self.workspace.ptr,
            y_len: ys.len() * n,
            y_hw: ys.h * ys.w,
        }
    }

    fn ptr(&self, value: usize) -> u64 {
        self.slots[self.slot_of[value]].ptr
    }

    /// Enqueues one whole inference of `n` items on the stream, from the staged input: convert,
    /// every step, copy out. Called once eagerly and once under graph capture per batch size.
    /// The input is staged outside the graph, since items come from the host or the GPU.
    fn enqueue(&self, n: usize) -> Result<()> {
        let m = &self.model;
        let p = &m.plan;
        let k = &m.kernels;
        let (descs, _) = self
            .by_batch
            .get(&n)
            .ok_or_else(|| GpuError::Plan(format!("batch size {n} is not prepared")))?;
        let algos = self.model.algos(n)?;
        let hw = (p.input.h * p.input.w) as i32;
        let (c, cpad, ni) = (p.input.c as i32, p.input_padded_c as i32, n as i32);
        let x0 = self.ptr(0);
        let f = match m.precision {
            Precision::Fp16 => &k.to_input_half,
            Precision::Fp32 => &k.to_input_float,
        };
        let mut launch = self.stream.launch_builder(f);
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
        let mut conv_i = 0;
        let one = 1.0f32;
        let zero = 0.0f32;
        for (step, d) in p.steps.iter().zip(descs) {
            match (step, d) {
                (Step::Conv(c), StepDescs::Conv { x, y, graph }) => {
                    self.conv_call(conv_i, c, x, y, n)
                        .run(algos[conv_i], graph.as_ref())?;
                    conv_i += 1;
                }
                (Step::Pool(pl), StepDescs::Pool { x, y, pool }) => {
                    dnn_call!(cudnnPoolingForward(
                        self.dnn.h,
                        pool.0,
                        &one as *const f32 as *const c_void,
                        x.0,
                        self.ptr(pl.input) as *const c_void,
                        &zero as *const f32 as *const c_void,
                        y.0,
                        self.ptr(pl.output) as *mut c_void
                    ))?;
                }
                (Step::Softmax { input, output }, StepDescs::Softmax { x }) => {
                    dnn_call!(cudnnSoftmaxForward(
                        self.dnn.h,
                        dnn::cudnnSoftmaxAlgorithm_t::CUDNN_SOFTMAX_ACCURATE,
                        dnn::cudnnSoftmaxMode_t::CUDNN_SOFTMAX_MODE_CHANNEL,
                        &one as *const f32 as *const c_void,
                        x.0,
                        self.ptr(*input) as *const c_void,
                        &zero as *const f32 as *const c_void,
                        x.0,
                        self.ptr(*output) as *mut c_void
                    ))?;
                }
                (Step::Add { a, b, output, relu }, _) => {
                    let len = (p.values[*output].len() * n) as i64;
                    let (pa, pb, po) = (self.ptr(*a), self.ptr(*b), self.ptr(*output));
                    let relu = *relu as i32;
                    let f = match m.precision {
                        Precision::Fp16 => &k.add_half,
                        Precision::Fp32 => &k.add_float,
                    };
                    let mut l = self.stream.launch_builder(f);
                    l.arg(&pa).arg(&pb).arg(&po).arg(&len).arg(&relu);
                    // SAFETY: argument types match; buffers hold `len` elements.
                    unsafe { l.launch(kernels::launch_1d(len as usize)) }.call("cuLaunchKernel")?;
                }
                (
                    Step::Clamp {
                        input,
                        output,
                        lo,
                        hi,
                    },
                    _,
                ) => {
                    let len = (p.values[*output].len() * n) as i64;
                    let (pi, po) = (self.ptr(*input), self.ptr(*output));
                    let f = match m.precision {
                        Precision::Fp16 => &k.clamp_half,
                        Precision::Fp32 => &k.clamp_float,
                    };
                    let mut l = self.stream.launch_builder(f);
                    l.arg(&pi).arg(&po).arg(&len).arg(lo).arg(hi);
                    // SAFETY: argument types match; buffers hold `len` elements.
                    unsafe { l.launch(kernels::launch_1d(len as usize)) }.call("cuLaunchKernel")?;
                }
                _ => return Err(GpuError::Plan("step and descriptors out of order".into())),
            }
        }
        let out_bytes = p.values[p.output].len() * m.precision.bytes() * n;
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

    pub fn batch_range(&self) -> (usize, usize) {
        (self.min, self.max)
    }

    /// Runs `n` items of raw (un-normalised) input, `[n, c, h, w]` f32. The output buffer is
    /// poisoned with NaN first, so an element the GPU did not write cannot pass as a result.
    pub fn run(&mut self, n: usize, input: &[f32]) -> Result<Vec<f32>> {
        let item = self.model.plan.input.len();
        if input.len() != n * item {
            return Err(GpuError::Plan(format!(
                "{} input values for a batch of {n} items of {item}",
                input.len()
            )));
        }
        let items: Vec<&[f32]> = input.chunks_exact(item.max(1)).collect();
        self.run_items(&items)
    }

    /// As `run`, with each item's values in its own slice: they are copied once, straight into
    /// the pinned staging buffer.
    pub fn run_items(&mut self, items: &[&[f32]]) -> Result<Vec<f32>> {
        let inputs: Vec<Input<'_>> = items.iter().map(|x| Input::Host(x)).collect();
        self.run_inputs(&inputs)
    }

    /// Runs a batch whose items are on the host (copied through pinned memory) or already on
    /// the GPU (copied device to device), each `[c, h, w]` f32 raw values.
    pub fn run_inputs(&mut self, items: &[Input<'_>]) -> Result<Vec<f32>> {
        let n = items.len();
        let item = self.model.plan.input.len();
        if n > self.max {
            return Err(GpuError::Plan(format!(
                "a batch of {n} is above this instance's max = {}",
                self.max
            )));
        }
        let staging = self.host_in.as_mut_slice();
        for (i, x) in items.iter().enumerate() {
            let len = match x {
                Input::Host(values) => {
                    if values.len() == item {
                        staging[i * item..(i + 1) * item].copy_from_slice(values);
                    }
                    values.len()
                }
                Input::Device(v) => v.mem.bytes() / 4,
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
            match items[i] {
                Input::Host(_) => {
                    // One copy for each run of host items.
                    let run = items[i..]
                        .iter()
                        .take_while(|x| matches!(x, Input::Host(_)))
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
                            v.mem.ptr(),
                            bytes,
                            &self.stream,
                        )?
                    };
                    i += 1;
                }
            }
        }
        let out_bytes = self.model.outputs() * self.model.precision.bytes() * n;
        self.host_out.as_mut_slice()[..out_bytes].fill(0xFF);
        self.launch(n)?;
        self.stream.synchronize().call("cuStreamSynchronize")?;
        self.read_output(n)
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
        graph.launch().call("cuGraphLaunch")
    }

    fn read_output(&self, n: usize) -> Result<Vec<f32>> {
        let m = &self.model;
        let s = m.plan.values[m.plan.output];
        let per = s.len();
        let raw = &self.host_out.as_slice()[..per * n * m.precision.bytes()];
        let flat: Vec<f32> = match m.precision {
            Precision::Fp16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Precision::Fp32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        };
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(GpuError::Plan(format!(
                "the GPU output is not finite at element {i} (unwritten, or an fp16 overflow)"
            )));
        }
        // NHWC → NCHW for a spatial output (a c × 1 × 1 output is the same in both).
        if m.precision == Precision::Fp16 && (s.h > 1 || s.w > 1) {
            let mut out = vec![0.0; flat.len()];
            let hw = s.h * s.w;
            for b in 0..n {
                for p in 0..hw {
                    for c in 0..s.c {
                        out[(b * s.c + c) * hw + p] = flat[(b * hw + p) * s.c + c];
                    }
                }
            }
            return Ok(out);
        }
        Ok(flat)
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
