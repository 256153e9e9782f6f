//! Every CUDA, cuDNN and NVRTC call of the GPU engine goes through this module: each one is
//! checked and turned into a typed error naming the call, and every handle is freed on drop.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::sync::Arc;

use parking_lot::Mutex;

use cudarc::cudnn::sys as dnn;
use cudarc::driver::{result as drv, sys as cu, CudaContext, CudaStream};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{0}")]
    Missing(String),
    #[error("CUDA call {call} failed: {msg}")]
    Driver { call: &'static str, msg: String },
    #[error("cuDNN call {call} failed: {status}")]
    Cudnn { call: &'static str, status: String },
    #[error("cuBLAS call {call} failed: {status}")]
    Cublas { call: &'static str, status: String },
    #[error("NVRTC could not compile the engine's kernels: {0}")]
    Nvrtc(String),
    #[error("{0}")]
    Plan(String),
    #[error(transparent)]
    Layout(#[from] super::plan::view::LayoutError),
    /// An ONNX model the GPU engine cannot plan.
    #[error(transparent)]
    Build(#[from] super::plan::BuildError),
    /// A model file that cannot be read as ONNX.
    #[error(transparent)]
    File(#[from] onnx_front::OnnxError),
    #[error(transparent)]
    Nvjpeg(#[from] super::nvjpeg::NvjpegError),
    /// A once-per-process set-up's failure (the image kernels'), given to every caller.
    #[error(transparent)]
    Shared(Arc<GpuError>),
    /// A `device_id` beyond the GPUs the driver reports.
    #[error(transparent)]
    NoSuchGpu(#[from] super::devices::MissingGpu),
}

pub type Result<T> = std::result::Result<T, GpuError>;

/// Adds the call's name to a driver error.
pub trait Call<T> {
    fn call(self, name: &'static str) -> Result<T>;
}

impl<T> Call<T> for std::result::Result<T, drv::DriverError> {
    fn call(self, name: &'static str) -> Result<T> {
        self.map_err(|e| GpuError::Driver {
            call: name,
            msg: format!("{e:?}"),
        })
    }
}

pub fn dnn_check(status: dnn::cudnnStatus_t, call: &'static str) -> Result<()> {
    if status == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    // SAFETY: cudnnGetErrorString returns a static, NUL-terminated string for any status.
    let text = unsafe { CStr::from_ptr(dnn::cudnnGetErrorString(status)) }
        .to_string_lossy()
        .into_owned();
    Err(GpuError::Cudnn {
        call,
        status: format!("{text} ({status:?})"),
    })
}

/// `dnn_call!(cudnnFoo(args))`: calls and checks, naming the call in the error.
macro_rules! dnn_call {
    ($f:ident($($arg:expr),* $(,)?)) => {
        $crate::cuda::dnn_check(
            // SAFETY: the arguments are live handles and device pointers owned by the caller.
            unsafe { cudarc::cudnn::sys::$f($($arg),*) },
            stringify!($f),
        )
    };
}
pub(crate) use dnn_call;

/// The libraries beyond the driver that a GPU backend needs.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    pub cudnn: bool,
    pub nvrtc: bool,
}

impl Needs {
    /// The model engine: cuDNN and NVRTC.
    pub const MODEL: Needs = Needs {
        cudnn: true,
        nvrtc: true,
    };
}

/// Checks the shared libraries the model engine loads (driver, cuDNN, NVRTC).
pub fn check_libraries() -> Result<()> {
    check_needs(Needs::MODEL)
}

/// Checks the driver and what `needs` names before the first call: cudarc would panic on a
/// missing one.
pub fn check_needs(needs: Needs) -> Result<()> {
    // Each probe only tries to dlopen its library and drops it.
    type Probe = unsafe fn() -> bool;
    let probes: [(&str, bool, Probe); 3] = [
        (
            "libcuda (the NVIDIA driver)",
            true,
            cudarc::driver::sys::is_culib_present,
        ),
        (
            "libcudnn (cuDNN 9)",
            needs.cudnn,
            cudarc::cudnn::sys::is_culib_present,
        ),
        (
            "libnvrtc (CUDA's run-time compiler)",
            needs.nvrtc,
            cudarc::nvrtc::sys::is_culib_present,
        ),
    ];
    let missing: Vec<&str> = probes
        .into_iter()
        .filter(|(_, needed, _)| *needed)
        // SAFETY: the probes take no arguments and only load and drop a library.
        .filter(|(_, _, present)| !unsafe { present() })
        .map(|(name, _, _)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(GpuError::Missing(format!(
            "no usable GPU: cannot load {} (is this a machine with an NVIDIA GPU, and are the \
             CUDA libraries on LD_LIBRARY_PATH?)",
            missing.join(", ")
        )))
    }
}

/// The name of every GPU the driver reports, by index (the index `device_id` takes, as CUDA
/// numbers the GPUs `CUDA_VISIBLE_DEVICES` leaves).
pub fn gpus() -> Result<Vec<String>> {
    check_needs(Needs {
        cudnn: false,
        nvrtc: false,
    })?;
    gpu_names()
}

/// `gpus` once the driver is known to load.
fn gpu_names() -> Result<Vec<String>> {
    let count = CudaContext::device_count().map_err(|e| {
        GpuError::Missing(format!(
            "no usable GPU: the CUDA driver reports {e:?} (no device, or a driver that does \
             not match)"
        ))
    })?;
    (0..count)
        .map(|i| {
            let dev = drv::device::get(i).call("cuDeviceGet")?;
            drv::device::get_name(dev).call("cuDeviceGetName")
        })
        .collect()
}

/// Checks the libraries `needs` names, then that every GPU in `ids` exists: a node checks its
/// whole `device_id` list, so that one naming a missing GPU fails at start-up even when no
/// instance would run there.
pub fn check_gpus(needs: Needs, ids: &[usize]) -> Result<()> {
    check_needs(needs)?;
    let found = gpu_names()?;
    if found.is_empty() {
        return Err(GpuError::Missing(
            "no usable GPU: the driver sees no device".into(),
        ));
    }
    super::devices::check(ids, &found)?;
    Ok(())
}

/// Opens GPU `ordinal` for the model engine.
pub fn open_device(ordinal: usize) -> Result<Arc<CudaContext>> {
    open_device_for(Needs::MODEL, ordinal)
}

/// Opens GPU `ordinal` (its primary context), checking first the libraries `needs` names and
/// that the GPU exists.
pub fn open_device_for(needs: Needs, ordinal: usize) -> Result<Arc<CudaContext>> {
    check_gpus(needs, &[ordinal])?;
    context(ordinal)
}

/// How a host thread waits for the GPU (`cuStreamSynchronize`, `cuEventSynchronize`): CUDA's
/// scheduling flag of the device's primary context, set before the process first opens it.
/// CUDA's default (`auto`) spins whenever the machine has more cores than active contexts, so
/// every thread waiting on a GPU (each model instance, each decoder) holds a core while the
/// GPU works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuWait {
    /// Busy-wait: the lowest wake-up latency, a core per waiting thread.
    Spin,
    /// Busy-wait, yielding the core between polls to any thread that wants it.
    Yield,
    /// Sleep until the GPU's interrupt wakes the thread: no core while waiting.
    Block,
}

impl GpuWait {
    const ALL: [GpuWait; 3] = [GpuWait::Spin, GpuWait::Yield, GpuWait::Block];

    fn flags(self) -> u32 {
        let f = match self {
            GpuWait::Spin => cu::CUctx_flags::CU_CTX_SCHED_SPIN,
            GpuWait::Yield => cu::CUctx_flags::CU_CTX_SCHED_YIELD,
            GpuWait::Block => cu::CUctx_flags::CU_CTX_SCHED_BLOCKING_SYNC,
        };
        f as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            GpuWait::Spin => "spin",
            GpuWait::Yield => "yield",
            GpuWait::Block => "block",
        }
    }
}

impl std::str::FromStr for GpuWait {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        GpuWait::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("{s:?}: expected spin, yield or block"))
    }
}

static WAIT: Mutex<GpuWait> = Mutex::new(GpuWait::Block);

/// Sets how threads wait for the GPUs this process opens from now on (contexts already open
/// keep theirs). The default is `Block`.
pub fn set_wait(wait: GpuWait) {
    *WAIT.lock() = wait;
}

/// The wait strategy contexts are opened with.
pub fn wait() -> GpuWait {
    *WAIT.lock()
}

/// The process's context on GPU `ordinal`, made on first use and kept for the life of the
/// process: every backend on that GPU shares it (it is CUDA's primary context of the device,
/// which they would share anyway), and a peer copy finds the context of a value's GPU here.
/// Callers check first that the GPU exists (`open_device_for`). The context is left current on
/// the calling thread, as `CudaContext::new` leaves a new one.
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>> {
    static CONTEXTS: Mutex<BTreeMap<usize, Arc<CudaContext>>> = Mutex::new(BTreeMap::new());
    let mut contexts = CONTEXTS.lock();
    if let Some(ctx) = contexts.get(&ordinal) {
        ctx.bind_to_thread().call("cuCtxSetCurrent")?;
        return Ok(ctx.clone());
    }
    drv::init().call("cuInit")?;
    let dev = drv::device::get(ordinal as i32).call("cuDeviceGet")?;
    let w = wait();
    // SAFETY: a plain driver call on a device handle cuDeviceGet returned. The primary context
    // may already be active (another library in the process opened it): the driver then keeps
    // its flags, which is reported, not fatal.
    if let Err(e) = unsafe { cu::cuDevicePrimaryCtxSetFlags_v2(dev, w.flags()) }.result() {
        tracing::warn!(
            "GPU {ordinal}: could not set the wait strategy to {}: {e}",
            w.name()
        );
    }
    let ctx = CudaContext::new(ordinal).call("cuDevicePrimaryCtxRetain")?;
    // Streams are ordered by hand and buffers are raw allocations: cudarc's per-slice
    // event tracking would only add event records to every launch (and to graph captures).
    // SAFETY: called on the context's first opening in this process, before any allocation
    // or stream of ours exists in it.
    unsafe { ctx.disable_event_tracking() };
    contexts.insert(ordinal, ctx.clone());
    Ok(ctx)
}

/// A raw device allocation, freed on drop.
pub struct DeviceBuf {
    pub ptr: cu::CUdeviceptr,
    ctx: Arc<CudaContext>,
}

// SAFETY: a device pointer is a plain address; the context it belongs to is thread-safe.
unsafe impl Send for DeviceBuf {}
// SAFETY: as for Send, above.
unsafe impl Sync for DeviceBuf {}

impl DeviceBuf {
    pub fn new(ctx: &Arc<CudaContext>, bytes: usize) -> Result<DeviceBuf> {
        ctx.bind_to_thread().call("cuCtxSetCurrent")?;
        // SAFETY: a plain allocation of at least one byte.
        let ptr = unsafe { drv::malloc_sync(bytes.max(256)) }.call("cuMemAlloc")?;
        Ok(DeviceBuf {
            ptr,
            ctx: ctx.clone(),
        })
    }

    pub fn from_host<T>(ctx: &Arc<CudaContext>, data: &[T]) -> Result<DeviceBuf> {
        let buf = DeviceBuf::new(ctx, std::mem::size_of_val(data))?;
        // SAFETY: the allocation holds exactly `data`'s bytes.
        unsafe { drv::memcpy_htod_sync(buf.ptr, data) }.call("cuMemcpyHtoD")?;
        Ok(buf)
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_sync and freed once; users synchronise their stream
            // before dropping the buffers its work uses.
            let _ = unsafe { drv::free_sync(self.ptr) };
        }
    }
}

/// Page-locked host memory for asynchronous copies (and for copies inside CUDA graphs).
pub struct PinnedBuf<T: Copy> {
    ptr: *mut T,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: owned host memory; access goes through &self/&mut self.
unsafe impl<T: Copy + Send> Send for PinnedBuf<T> {}

impl<T: Copy> PinnedBuf<T> {
    pub fn new(ctx: &Arc<CudaContext>, len: usize, write_combined: bool) -> Result<PinnedBuf<T>> {
        ctx.bind_to_thread().call("cuCtxSetCurrent")?;
        let flags = if write_combined {
            cu::CU_MEMHOSTALLOC_WRITECOMBINED
        } else {
            0
        };
        let bytes = (len * std::mem::size_of::<T>()).max(64);
        // SAFETY: a plain allocation; the memory is written before it is read.
        let ptr = unsafe { drv::malloc_host(bytes, flags) }.call("cuMemHostAlloc")? as *mut T;
        Ok(PinnedBuf {
            ptr,
            len,
            ctx: ctx.clone(),
        })
    }

    /// The address, for copies the device makes later (inside a graph, say).
    pub fn ptr(&self) -> *mut T {
        self.ptr
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `len` elements were allocated; T is Copy (plain data).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Copy> Drop for PinnedBuf<T> {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_host, freed once.
            let _ = unsafe { drv::free_host(self.ptr as *mut std::ffi::c_void) };
        }
    }
}

/// Enqueues a host → device copy.
///
/// # Safety
/// `src` must stay valid (pinned, for a truly asynchronous copy) until the stream reaches it,
/// and `dst` must hold `bytes`.
pub unsafe fn copy_htod_async(
    dst: cu::CUdeviceptr,
    src: *const u8,
    bytes: usize,
    stream: &CudaStream,
) -> Result<()> {
    // SAFETY: the ranges are as the caller promises; the stream is live.
    unsafe {
        cu::cuMemcpyHtoDAsync_v2(
            dst,
            src as *const std::ffi::c_void,
            bytes,
            stream.cu_stream(),
        )
    }
    .result()
    .call("cuMemcpyHtoDAsync")
}

/// Enqueues a device → device copy.
///
/// # Safety
/// Both ranges must hold `bytes` until the stream has passed the copy.
pub unsafe fn copy_dtod_async(
    dst: cu::CUdeviceptr,
    src: cu::CUdeviceptr,
    bytes: usize,
    stream: &CudaStream,
) -> Result<()> {
    // SAFETY: the ranges are as the caller promises; the stream is live.
    unsafe { cu::cuMemcpyDtoDAsync_v2(dst, src, bytes, stream.cu_stream()) }
        .result()
        .call("cuMemcpyDtoDAsync")
}

/// Enqueues a device → device copy of a rectangle: `height` rows of `width` bytes, read at
/// `src_pitch` intervals from `src` and written at `dst_pitch` intervals to `dst` (a crop of an
/// image into a packed buffer).
///
/// # Safety
/// Both rectangles must lie in memory that stays allocated until the stream has passed the
/// copy, and `width` must not exceed either pitch.
pub unsafe fn copy_2d_dtod_async(
    dst: cu::CUdeviceptr,
    dst_pitch: usize,
    src: cu::CUdeviceptr,
    src_pitch: usize,
    width: usize,
    height: usize,
    stream: &CudaStream,
) -> Result<()> {
    let copy = cu::CUDA_MEMCPY2D_st {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: cu::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: src,
        srcArray: std::ptr::null_mut(),
        srcPitch: src_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: cu::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: dst,
        dstArray: std::ptr::null_mut(),
        dstPitch: dst_pitch,
        WidthInBytes: width,
        Height: height,
    };
    // SAFETY: the rectangles are as the caller promises; `copy` lives through the call (the
    // driver reads the descriptor before returning); the stream is live.
    unsafe { cu::cuMemcpy2DAsync_v2(&copy, stream.cu_stream()) }
        .result()
        .call("cuMemcpy2DAsync")
}

/// Enqueues a device → host copy.
///
/// # Safety
/// `dst` must stay valid and unread until the stream has passed the copy.
pub unsafe fn copy_dtoh_async(
    dst: *mut u8,
    src: cu::CUdeviceptr,
    bytes: usize,
    stream: &CudaStream,
) -> Result<()> {
    // SAFETY: the ranges are as the caller promises; the stream is live.
    unsafe {
        cu::cuMemcpyDtoHAsync_v2(dst as *mut std::ffi::c_void, src, bytes, stream.cu_stream())
    }
    .result()
    .call("cuMemcpyDtoHAsync")
}

/// A cuDNN handle bound to one stream.
pub struct Dnn {
    pub h: dnn::cudnnHandle_t,
}

// SAFETY: each handle is used by one thread at a time (its instance's, or the tuner's).
unsafe impl Send for Dnn {}

impl Dnn {
    pub fn new(stream: &CudaStream) -> Result<Dnn> {
        stream.context().bind_to_thread().call("cuCtxSetCurrent")?;
        let mut h = std::ptr::null_mut();
        dnn_call!(cudnnCreate(&mut h))?;
        let d = Dnn { h };
        dnn_call!(cudnnSetStream(d.h, stream.cu_stream() as dnn::cudaStream_t))?;
        Ok(d)
    }
}

impl Drop for Dnn {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreate, destroyed once.
        unsafe { dnn::cudnnDestroy(self.h) };
    }
}

pub fn cudnn_version() -> usize {
    // SAFETY: no arguments; the library was checked by `check_libraries`.
    unsafe { dnn::cudnnGetVersion() }
}

/// Defines an owned cuDNN descriptor type with its create/destroy pair.
macro_rules! descriptor {
    ($name:ident, $raw:ty, $create:ident, $destroy:ident) => {
        pub struct $name(pub $raw);
        // SAFETY: descriptors are plain host structures, used by one thread at a time.
        unsafe impl Send for $name {}
        // SAFETY: as for Send, above.
        unsafe impl Sync for $name {}
        impl $name {
            pub fn new() -> Result<$name> {
                let mut d = std::ptr::null_mut();
                dnn_call!($create(&mut d))?;
                Ok($name(d))
            }
        }
        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: created by the matching create call, destroyed once.
                unsafe { dnn::$destroy(self.0) };
            }
        }
    };
}

descriptor!(
    TensorDesc,
    dnn::cudnnTensorDescriptor_t,
    cudnnCreateTensorDescriptor,
    cudnnDestroyTensorDescriptor
);
descriptor!(
    FilterDesc,
    dnn::cudnnFilterDescriptor_t,
    cudnnCreateFilterDescriptor,
    cudnnDestroyFilterDescriptor
);
descriptor!(
    PoolDesc,
    dnn::cudnnPoolingDescriptor_t,
    cudnnCreatePoolingDescriptor,
    cudnnDestroyPoolingDescriptor
);
descriptor!(
    ConvDesc,
    dnn::cudnnConvolutionDescriptor_t,
    cudnnCreateConvolutionDescriptor,
    cudnnDestroyConvolutionDescriptor
);
descriptor!(
    ActDesc,
    dnn::cudnnActivationDescriptor_t,
    cudnnCreateActivationDescriptor,
    cudnnDestroyActivationDescriptor
);

/// A CUDA event pair for timing work on a stream.
pub struct Timer {
    start: cu::CUevent,
    end: cu::CUevent,
}

impl Timer {
    pub fn new() -> Result<Timer> {
        let flags = cu::CUevent_flags::CU_EVENT_DEFAULT;
        let start = drv::event::create(flags).call("cuEventCreate")?;
        let end = drv::event::create(flags).call("cuEventCreate")?;
        Ok(Timer { start, end })
    }

    pub fn start(&self, stream: &CudaStream) -> Result<()> {
        // SAFETY: a live event and stream.
        unsafe { drv::event::record(self.start, stream.cu_stream()) }.call("cuEventRecord")
    }

    /// Records the end, waits for it and returns the milliseconds between the two.
    pub fn stop(&self, stream: &CudaStream) -> Result<f32> {
        // SAFETY: live events and stream.
        unsafe {
            drv::event::record(self.end, stream.cu_stream()).call("cuEventRecord")?;
            drv::event::synchronize(self.end).call("cuEventSynchronize")?;
            drv::event::elapsed(self.start, self.end).call("cuEventElapsedTime")
        }
    }
}

/// A row of events recorded on one stream, for the time between consecutive ones.
pub struct Events(Vec<cu::CUevent>);

impl Events {
    pub fn new(k: usize) -> Result<Events> {
        let mut v = Vec::with_capacity(k);
        for _ in 0..k {
            let flags = cu::CUevent_flags::CU_EVENT_DEFAULT;
            v.push(drv::event::create(flags).call("cuEventCreate")?);
        }
        Ok(Events(v))
    }

    pub fn record(&self, i: usize, stream: &CudaStream) -> Result<()> {
        let e = self
            .0
            .get(i)
            .copied()
            .ok_or_else(|| GpuError::Plan(format!("event {i} of {} recorded", self.0.len())))?;
        // SAFETY: a live event and stream.
        unsafe { drv::event::record(e, stream.cu_stream()) }.call("cuEventRecord")
    }

    /// Milliseconds between each recorded event and the next (waits for the last).
    pub fn gaps(&self) -> Result<Vec<f32>> {
        let Some(&last) = self.0.last() else {
            return Ok(Vec::new());
        };
        // SAFETY: live events, every one recorded before this call.
        unsafe {
            drv::event::synchronize(last).call("cuEventSynchronize")?;
            self.0
                .windows(2)
                .map(|w| drv::event::elapsed(w[0], w[1]).call("cuEventElapsedTime"))
                .collect()
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        for &e in &self.0 {
            // SAFETY: created in `new`, destroyed once.
            unsafe {
                let _ = drv::event::destroy(e);
            }
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: created above, destroyed once.
        unsafe {
            let _ = drv::event::destroy(self.start);
            let _ = drv::event::destroy(self.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GpuWait;

    #[test]
    fn wait_strategies_parse_by_name_and_map_to_cuda_flags() {
        for (name, flag) in [("spin", 1), ("yield", 2), ("block", 4)] {
            let w: GpuWait = name.parse().unwrap();
            assert_eq!(w.name(), name);
            assert_eq!(w.flags(), flag);
        }
        let e = "busy".parse::<GpuWait>().unwrap_err();
        assert!(e.contains("expected spin, yield or block"), "{e}");
    }
}
