//! The tuner: each convolution at each batch size offered to every library in turn
//! (`LIBRARIES`), each candidate run on scratch buffers filled with non-zero data, its output
//! checked against the implicit GEMM's, then timed; the fastest is kept.

use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::{
    conv_shapes, conv_views, is_rows_product, tensor_desc, Algo, ConvCall, ConvDescs, ConvWeights,
    Exec, Mode, TuneInput, LIBRARIES, WORKSPACE_LIMIT,
};
use crate::blas::Blas;
use crate::blas_lt::Lt;
use crate::cuda::{Call, DeviceBuf, Dnn, GpuError, Result, Timer};
use crate::precision::Precision;

/// The fastest candidate so far for one convolution, its saved plan if it runs on the graph
/// API, and what every candidate measured (for the debug log).
pub(super) struct Choice {
    pub(super) best: Option<(f32, Algo)>,
    pub(super) json: Option<String>,
    pub(super) report: Vec<String>,
}

impl Choice {
    /// Records a measured candidate; true when it is the fastest so far.
    pub(super) fn offer(&mut self, ms: f32, algo: Algo, line: String) -> bool {
        self.report.push(line);
        let better = self.best.is_none_or(|(t, _)| ms < t);
        if better {
            self.best = Some((ms, algo));
        }
        better
    }
}

/// A batch size's algorithms (one per convolution) and its graph-API plans by convolution.
pub(crate) type Tuned = (Vec<Algo>, Vec<(usize, String)>);

/// Chooses each convolution's algorithm per batch size by timing the fused call itself on
/// scratch buffers filled with non-zero data.
pub(crate) struct Tuner {
    stream: Arc<CudaStream>,
    dnn: Dnn,
    x: DeviceBuf,
    y: DeviceBuf,
    z: DeviceBuf,
    ws: DeviceBuf,
    timer: Timer,
    precision: Precision,
    /// A candidate further than this from the implicit GEMM's output is refused.
    tolerance: f64,
    blas: Option<Blas>,
    lt: Option<Lt>,
}

/// Output elements compared with the reference when tuning (enough to catch an engine that
/// computes something else anywhere in the batch; few enough to cost little).
const SAMPLE: usize = 65536;
const SAMPLE_ROWS: usize = 2048;

impl Tuner {
    pub(crate) fn new(m: &TuneInput<'_>, max_batch: usize) -> Result<Tuner> {
        let stream = m.ctx.new_stream().call("cuStreamCreate")?;
        let dnn = Dnn::new(&stream)?;
        let rows = m.plan.convs().any(|c| is_rows_product(m.plan, c));
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
            x: DeviceBuf::from_host(m.ctx, &fill)?,
            y: DeviceBuf::new(m.ctx, bytes)?,
            z: DeviceBuf::from_host(m.ctx, &fill)?,
            ws: DeviceBuf::new(m.ctx, WORKSPACE_LIMIT)?,
            timer: Timer::new()?,
            precision: m.precision,
            tolerance: m.tolerance,
            blas: if rows {
                Some(Blas::new(&stream)?)
            } else {
                None
            },
            lt: if rows { Some(Lt::new()?) } else { None },
            stream,
            dnn,
        })
    }

    /// About SAMPLE elements of the scratch output, as f32: all of it when small, else
    /// SAMPLE_ROWS runs of 64 bytes spread evenly over it (so every item of the batch and
    /// every part of the map is looked at).
    fn sample(&self, call: &ConvCall<'_>) -> Result<Vec<f32>> {
        use cudarc::driver::sys as cu;
        self.stream.synchronize().call("cuStreamSynchronize")?;
        let esize = self.precision.bytes();
        let total = call.y_len * esize;
        let raw = if call.y_len <= SAMPLE {
            let mut raw = vec![0u8; total];
            // SAFETY: the scratch output holds y_len elements; the stream is idle.
            unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut raw, self.y.ptr) }
                .call("cuMemcpyDtoH")?;
            raw
        } else {
            const WIDTH: usize = 64;
            let pitch = (total / SAMPLE_ROWS) / esize * esize;
            let mut raw = vec![0u8; WIDTH * SAMPLE_ROWS];
            let copy = cu::CUDA_MEMCPY2D_st {
                srcXInBytes: 0,
                srcY: 0,
                srcMemoryType: cu::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                srcHost: std::ptr::null(),
                srcDevice: self.y.ptr,
                srcArray: std::ptr::null_mut(),
                srcPitch: pitch,
                dstXInBytes: 0,
                dstY: 0,
                dstMemoryType: cu::CUmemorytype::CU_MEMORYTYPE_HOST,
                dstHost: raw.as_mut_ptr() as *mut std::ffi::c_void,
                dstDevice: 0,
                dstArray: std::ptr::null_mut(),
                dstPitch: WIDTH,
                WidthInBytes: WIDTH,
                Height: SAMPLE_ROWS,
            };
            // SAFETY: rows of WIDTH ≤ pitch bytes at pitch intervals stay inside the `total`
            // bytes of the scratch output (pitch × rows ≤ total); the host buffer holds them.
            unsafe { cu::cuMemcpy2D_v2(&copy) }
                .result()
                .call("cuMemcpy2D")?;
            raw
        };
        Ok(self.precision.to_f32(&raw))
    }

    /// Times one candidate: a warm-up call whose output is checked against the reference
    /// algorithm's (an engine that computes something else, or computes it less exactly than
    /// fp16 storage allows, is refused whatever its speed), then REPS calls between events.
    /// Returns the time and the relative L2 difference from the reference.
    fn time(
        &self,
        call: &ConvCall<'_>,
        algo: Algo,
        exec: Option<&Exec>,
        reference: Option<&[f32]>,
    ) -> Result<(f32, f64)> {
        call.run(algo, exec)?;
        let mut err = 0f64;
        if let Some(want) = reference {
            let got = self.sample(call)?;
            let num: f64 = got
                .iter()
                .zip(want)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
            err = (num / den.max(1e-30)).sqrt();
            if err.is_nan() || err > self.tolerance {
                return Err(GpuError::Plan(format!(
                    "{:?}/{} computes a different result (relative L2 {err:.2e} against \
                     IMPLICIT_GEMM)",
                    algo.mode, algo.algo
                )));
            }
        }
        self.stream.synchronize().call("cuStreamSynchronize")?;
        const REPS: usize = 5;
        self.timer.start(&self.stream)?;
        for _ in 0..REPS {
            call.run(algo, exec)?;
        }
        Ok((self.timer.stop(&self.stream)? / REPS as f32, err))
    }

    /// The algorithm of every convolution at batch `n`, and the saved plans of those that run
    /// on the graph API.
    pub(crate) fn tune(&self, m: &TuneInput<'_>, n: usize) -> Result<Tuned> {
        let mut chosen = Vec::new();
        let mut jsons = Vec::new();
        let mut total_ms = 0f32;
        let mut modes = [0usize; 7];
        for (c, cw) in m.plan.convs().zip(m.weights) {
            let d = ConvDescs::new(c, m.precision)?;
            let (xs, ys) = conv_shapes(m.plan, c)?;
            let xd = tensor_desc(m.precision, n, xs)?;
            let yd = tensor_desc(m.precision, n, ys)?;
            let call = ConvCall {
                h: self.dnn.h,
                stream: &self.stream,
                kernels: m.kernels,
                precision: m.precision,
                step: c,
                d: &d,
                x_desc: &xd,
                y_desc: &yd,
                x: self.x.ptr,
                weights: cw,
                z: c.residual.map(|_| self.z.ptr),
                y: self.y.ptr,
                ws: self.ws.ptr,
                y_len: ys.iter().product::<usize>() * n,
                y_hw: ys[1] * ys[2],
                views: Some(conv_views(m.plan, c, n)?),
                blas: self.blas.as_ref(),
                lt: self.lt.as_ref(),
                ws_bytes: WORKSPACE_LIMIT,
            };
            let mut choice = Choice {
                best: None,
                json: None,
                report: Vec::new(),
            };
            // The reference every candidate's output is compared with: the plain implicit GEMM
            // (no workspace, every layout) and our epilogue.
            let implicit = Algo {
                mode: Mode::Split,
                algo: 0,
                workspace: 0,
            };
            let reference = match call.run(implicit, None).and_then(|()| self.sample(&call)) {
                Ok(r) => Some(r),
                Err(e) => {
                    choice.report.push(format!("no reference output ({e})"));
                    None
                }
            };
            let t = Tuning {
                tuner: self,
                call: &call,
                input: m,
                weights: cw,
                n,
                shapes: (xs, ys),
                reference: reference.as_deref(),
            };
            for library in LIBRARIES {
                library.tune(&t, &mut choice)?;
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
                    if matches!(a.mode, Mode::Graph | Mode::GraphAct) {
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
             (fused {}, split {}, graph API {}, depthwise kernel {}, graph API + our activation {}, \
             cuBLAS + our epilogue {}, cuBLASLt {})",
            modes[0],
            modes[1],
            modes[2],
            modes[3],
            modes[4],
            modes[5],
            modes[6]
        );
        Ok((chosen, jsons))
    }
}

/// One convolution at one batch size as the tuner offers it to each library: the call on the
/// tuner's scratch buffers, the model, and the reference output candidates are checked against.
pub(super) struct Tuning<'a> {
    pub(super) tuner: &'a Tuner,
    pub(super) call: &'a ConvCall<'a>,
    pub(super) input: &'a TuneInput<'a>,
    pub(super) weights: &'a ConvWeights,
    pub(super) n: usize,
    /// The input's and output's `[C, H, W]`.
    pub(super) shapes: ([usize; 3], [usize; 3]),
    pub(super) reference: Option<&'a [f32]>,
}

impl Tuning<'_> {
    /// Checks and times `algo` with its prepared plan `exec`: its time and its relative L2
    /// difference from the reference.
    pub(super) fn time(&self, algo: Algo, exec: Option<&Exec>) -> Result<(f32, f64)> {
        self.tuner.time(self.call, algo, exec, self.reference)
    }

    /// Offers `algo` (which needs no prepared plan) to `choice`, or reports why it failed.
    pub(super) fn offer(&self, algo: Algo, choice: &mut Choice) {
        self.offer_with(algo, None, choice);
    }

    /// Offers `algo` with its prepared plan to `choice`, or reports why it failed. The fused
    /// call supports fewer algorithms than the plain one: refusals are expected, and reported
    /// beside the times.
    pub(super) fn offer_with(&self, algo: Algo, exec: Option<&Exec>, choice: &mut Choice) {
        match self.time(algo, exec) {
            Ok((ms, err)) => {
                let line = format!("{:?}/{} {ms:.4} ({err:.1e})", algo.mode, algo.algo);
                choice.offer(ms, algo, line);
            }
            Err(e) => choice
                .report
                .push(format!("{:?}/{} refused: {e}", algo.mode, algo.algo)),
        }
    }
}
