//! nvJPEG, loaded at run time like the rest of CUDA (cudarc has no binding for it): the few
//! entry points DecodeTensor uses, each checked, and a per-instance decoder that sends a batch
//! to the hardware JPEG engines where the chip has them and nvJPEG accepts the image, and the
//! rest through nvJPEG's default (hybrid CPU/GPU) decoder one at a time.

use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{result::DriverError, sys as cu, CudaContext, CudaStream};
use libloading::Library;

type Status = c_int;
type Handle = *mut c_void;
type State = *mut c_void;
type Stream = *mut c_void;

const SUCCESS: Status = 0;
const BACKEND_DEFAULT: c_int = 0;
const BACKEND_HARDWARE: c_int = 3;
const OUTPUT_RGBI: c_int = 5;
const OUTPUT_BGRI: c_int = 6;

/// `nvjpegImage_t`: up to four planes; interleaved output uses the first only.
#[repr(C)]
struct Image {
    channel: [*mut u8; 4],
    pitch: [usize; 4],
}

impl Image {
    fn interleaved(ptr: u64, width: usize) -> Image {
        Image {
            channel: [
                ptr as *mut u8,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ],
            pitch: [width * 3, 0, 0, 0],
        }
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        1 => "NOT_INITIALIZED",
        2 => "INVALID_PARAMETER",
        3 => "BAD_JPEG",
        4 => "JPEG_NOT_SUPPORTED",
        5 => "ALLOCATOR_FAILURE",
        6 => "EXECUTION_FAILED",
        7 => "ARCH_MISMATCH",
        8 => "INTERNAL_ERROR",
        9 => "IMPLEMENTATION_NOT_SUPPORTED",
        10 => "INCOMPLETE_BITSTREAM",
        _ => "unknown status",
    }
}

/// Why nvJPEG cannot be used, or did not decode one image. Cloned: the library's absence is
/// found once per process and told to every decoder, a failed batch to each of its images.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NvjpegError {
    #[error(
        "no usable GPU JPEG decoder: cannot load nvJPEG (CUDA's libnvjpeg; is the CUDA \
         toolkit's lib folder on LD_LIBRARY_PATH?): {}",
        tried(.0)
    )]
    NotLoaded(Vec<(&'static str, Arc<libloading::Error>)>),
    /// The library loaded but lacks an entry point this module calls.
    #[error("{library}: {why}")]
    Symbol {
        library: &'static str,
        why: Arc<libloading::Error>,
    },
    /// A batch sent to the hardware decoder of a decoder that has none.
    #[error("no hardware decoder")]
    NoHardwareDecoder,
    #[error("nvJPEG cannot read this image's header (NVJPEG_STATUS_{})", status_name(*.0))]
    Header(Status),
    #[error("nvJPEG read an image of zero size")]
    ZeroSize,
    #[error("nvJPEG could not decode this image (NVJPEG_STATUS_{})", status_name(*.0))]
    Decode(Status),
    /// An nvJPEG call other than a decode failed (set-up, state, buffers).
    #[error("nvJPEG call {call} failed: NVJPEG_STATUS_{} ({status})", status_name(*.status))]
    Call { call: &'static str, status: Status },
    #[error("cannot make the GPU context current: {0}")]
    Context(DriverError),
    #[error("the GPU failed while decoding: {0}")]
    Gpu(DriverError),
}

type Result<T> = std::result::Result<T, NvjpegError>;

/// The libraries `load` tried, each with the loader's answer.
fn tried(tried: &[(&'static str, Arc<libloading::Error>)]) -> String {
    let each: Vec<String> = tried
        .iter()
        .map(|(name, e)| format!("{name}: {e}"))
        .collect();
    each.join("; ")
}

fn check(s: Status, call: &'static str) -> Result<()> {
    if s == SUCCESS {
        Ok(())
    } else {
        Err(NvjpegError::Call { call, status: s })
    }
}

/// The entry points, resolved once per process.
struct Api {
    create_ex: unsafe extern "C" fn(c_int, *mut c_void, *mut c_void, c_uint, *mut Handle) -> Status,
    destroy: unsafe extern "C" fn(Handle) -> Status,
    state_create: unsafe extern "C" fn(Handle, *mut State) -> Status,
    state_destroy: unsafe extern "C" fn(State) -> Status,
    image_info: unsafe extern "C" fn(
        Handle,
        *const u8,
        usize,
        *mut c_int,
        *mut c_int,
        *mut c_int,
        *mut c_int,
    ) -> Status,
    decode: unsafe extern "C" fn(
        Handle,
        State,
        *const u8,
        usize,
        c_int,
        *mut Image,
        cu::CUstream,
    ) -> Status,
    batched_init: unsafe extern "C" fn(Handle, State, c_int, c_int, c_int) -> Status,
    batched: unsafe extern "C" fn(
        Handle,
        State,
        *const *const u8,
        *const usize,
        *mut Image,
        cu::CUstream,
    ) -> Status,
    stream_create: unsafe extern "C" fn(Handle, *mut Stream) -> Status,
    stream_destroy: unsafe extern "C" fn(Stream) -> Status,
    parse_header: unsafe extern "C" fn(Handle, *const u8, usize, Stream) -> Status,
    batched_supported: unsafe extern "C" fn(Handle, Stream, *mut c_int) -> Status,
    // Keeps the symbols above valid for the life of the process.
    _lib: Library,
}

// SAFETY: plain function pointers into a library that stays loaded.
unsafe impl Send for Api {}
// SAFETY: as for Send, above.
unsafe impl Sync for Api {}

const LIBRARIES: [&str; 3] = ["libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"];

fn api() -> Result<&'static Api> {
    static API: OnceLock<Result<Api>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(|e| e.clone())
}

fn load() -> Result<Api> {
    let mut tried = Vec::new();
    for name in LIBRARIES {
        // SAFETY: loading nvJPEG runs no initialisers beyond its own.
        match unsafe { Library::new(name) } {
            Ok(lib) => {
                return resolve(lib).map_err(|e| NvjpegError::Symbol {
                    library: name,
                    why: Arc::new(e),
                })
            }
            Err(e) => tried.push((name, Arc::new(e))),
        }
    }
    Err(NvjpegError::NotLoaded(tried))
}

fn resolve(lib: Library) -> std::result::Result<Api, libloading::Error> {
    // SAFETY: each symbol is looked up under nvJPEG's own name with the signature of
    // nvjpeg.h (CUDA 11–13 keep these stable).
    unsafe {
        Ok(Api {
            create_ex: *lib.get(b"nvjpegCreateEx\0")?,
            destroy: *lib.get(b"nvjpegDestroy\0")?,
            state_create: *lib.get(b"nvjpegJpegStateCreate\0")?,
            state_destroy: *lib.get(b"nvjpegJpegStateDestroy\0")?,
            image_info: *lib.get(b"nvjpegGetImageInfo\0")?,
            decode: *lib.get(b"nvjpegDecode\0")?,
            batched_init: *lib.get(b"nvjpegDecodeBatchedInitialize\0")?,
            batched: *lib.get(b"nvjpegDecodeBatched\0")?,
            stream_create: *lib.get(b"nvjpegJpegStreamCreate\0")?,
            stream_destroy: *lib.get(b"nvjpegJpegStreamDestroy\0")?,
            parse_header: *lib.get(b"nvjpegJpegStreamParseHeader\0")?,
            batched_supported: *lib.get(b"nvjpegDecodeBatchedSupported\0")?,
            _lib: lib,
        })
    }
}

/// Checks that nvJPEG can be loaded (start-up errors name it instead of failing later).
pub fn check_library() -> Result<()> {
    api().map(|_| ())
}

/// What nvJPEG reads from a JPEG's header.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    pub width: usize,
    pub height: usize,
    pub components: usize,
}

/// Which of nvJPEG's decoders handled an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Hardware,
    Hybrid,
}

/// A library handle with one decode state; freed on drop.
struct Session {
    api: &'static Api,
    handle: Handle,
    state: State,
}

impl Session {
    fn new(api: &'static Api, backend: c_int) -> Result<Session> {
        let mut handle = std::ptr::null_mut();
        check(
            // SAFETY: null allocators select nvJPEG's defaults; flags 0.
            unsafe {
                (api.create_ex)(
                    backend,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                    &mut handle,
                )
            },
            "nvjpegCreateEx",
        )?;
        let mut state = std::ptr::null_mut();
        // SAFETY: a live handle.
        let made = check(
            unsafe { (api.state_create)(handle, &mut state) },
            "nvjpegJpegStateCreate",
        );
        if let Err(e) = made {
            // SAFETY: created above, destroyed once.
            unsafe { (api.destroy)(handle) };
            return Err(e);
        }
        Ok(Session { api, handle, state })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once, state before handle.
        unsafe {
            (self.api.state_destroy)(self.state);
            (self.api.destroy)(self.handle);
        }
    }
}

/// The hardware decoder: one state per batch size (re-initialising a state for every change
/// of size would cost more than the decode), and a parsed-stream object for the support check.
struct Hardware {
    session: Session,
    by_size: HashMap<usize, State>,
    stream: Stream,
}

impl Hardware {
    /// The batched decode state for batches of `n`, made and initialised on first use.
    fn state(&mut self, api: &Api, n: usize, format: c_int) -> Result<State> {
        if let Some(&s) = self.by_size.get(&n) {
            return Ok(s);
        }
        let handle = self.session.handle;
        let mut s = std::ptr::null_mut();
        // SAFETY: a live handle; the state is destroyed with the decoder (or here, when its
        // initialisation fails).
        unsafe {
            check((api.state_create)(handle, &mut s), "nvjpegJpegStateCreate")?;
            if let Err(e) = check(
                (api.batched_init)(handle, s, n as c_int, 1, format),
                "nvjpegDecodeBatchedInitialize",
            ) {
                (api.state_destroy)(s);
                return Err(e);
            }
        }
        self.by_size.insert(n, s);
        Ok(s)
    }
}

impl Drop for Hardware {
    fn drop(&mut self) {
        let api = self.session.api;
        // SAFETY: created by this struct's owner, destroyed once, before the handle.
        unsafe {
            for (_, s) in self.by_size.drain() {
                (api.state_destroy)(s);
            }
            (api.stream_destroy)(self.stream);
        }
    }
}

/// One node instance's JPEG decoder, on a CUDA stream of its own or its owner's.
pub struct Decoder {
    api: &'static Api,
    hybrid: Session,
    hardware: Option<Hardware>,
    rgb: bool,
    stream: Arc<CudaStream>,
    /// Whether `decode` waits for the stream before returning (else its owner waits).
    waits: bool,
}

// SAFETY: nvJPEG handles and states may be used from any thread, one at a time; the decoder is
// owned by one node instance and driven through &mut self.
unsafe impl Send for Decoder {}

impl Drop for Decoder {
    /// On a shared stream, work of this decoder may still be queued: nvJPEG's states and
    /// handles (dropped after this) free the buffers it uses.
    fn drop(&mut self) {
        if self.stream.context().bind_to_thread().is_ok() {
            let _ = self.stream.synchronize();
        }
    }
}

impl Decoder {
    /// `rgb` picks the channel order nvJPEG writes (BGR otherwise, as DecodeMat).
    /// `hardware = false` keeps to the hybrid decoder even on chips with JPEG engines.
    /// `shared`: a stream of `ctx`'s that the owner waits for after each `decode` (the decoder
    /// then enqueues and returns); without one the decoder makes its own, of CUDA priority
    /// `priority` (0, CUDA's default, or a value of the context's range), and waits for it.
    pub fn new(
        ctx: &Arc<CudaContext>,
        rgb: bool,
        hardware: bool,
        shared: Option<Arc<CudaStream>>,
        priority: i32,
    ) -> Result<Decoder> {
        let api = api()?;
        ctx.bind_to_thread().map_err(NvjpegError::Context)?;
        let waits = shared.is_none();
        let stream = match shared {
            Some(s) => s,
            None => ctx
                .new_stream_with_priority(priority)
                .map_err(NvjpegError::Gpu)?,
        };
        let hybrid = Session::new(api, BACKEND_DEFAULT)?;
        let hardware = if hardware {
            // A chip without JPEG engines answers ARCH_MISMATCH / IMPLEMENTATION_NOT_SUPPORTED.
            match Session::new(api, BACKEND_HARDWARE) {
                Ok(session) => {
                    let mut js = std::ptr::null_mut();
                    check(
                        // SAFETY: a live handle.
                        unsafe { (api.stream_create)(session.handle, &mut js) },
                        "nvjpegJpegStreamCreate",
                    )?;
                    Some(Hardware {
                        session,
                        by_size: HashMap::new(),
                        stream: js,
                    })
                }
                Err(e) => {
                    tracing::info!(
                        "nvJPEG hardware decoder not available ({e}); using the hybrid decoder"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(Decoder {
            api,
            hybrid,
            hardware,
            rgb,
            stream,
            waits,
        })
    }

    /// Creates the hardware decoder's state for every batch size up to `max` now, at start-up:
    /// made on the first batch of each size, it cost a run of 100–250 ms on the H200 (23 such
    /// runs in 8 s at 20 clients, on sizes a node meets rarely), with every other request in
    /// the pipeline waiting behind it.
    pub fn prepare_batches(&mut self, max: usize) -> Result<()> {
        let api = self.api;
        let format = self.format();
        let Some(hw) = self.hardware.as_mut() else {
            return Ok(());
        };
        for n in 1..=max {
            hw.state(api, n, format)?;
        }
        Ok(())
    }

    pub fn has_hardware(&self) -> bool {
        self.hardware.is_some()
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn format(&self) -> c_int {
        if self.rgb {
            OUTPUT_RGBI
        } else {
            OUTPUT_BGRI
        }
    }

    /// Reads the header: size and component count. An error means nvJPEG cannot read it.
    pub fn info(&self, data: &[u8]) -> Result<Info> {
        let (mut n, mut sub) = (0, 0);
        let (mut w, mut h) = ([0 as c_int; 4], [0 as c_int; 4]);
        // SAFETY: `data` is a live slice; the arrays hold the 4 entries nvJPEG writes.
        let s = unsafe {
            (self.api.image_info)(
                self.hybrid.handle,
                data.as_ptr(),
                data.len(),
                &mut n,
                &mut sub,
                w.as_mut_ptr(),
                h.as_mut_ptr(),
            )
        };
        if s != SUCCESS {
            return Err(NvjpegError::Header(s));
        }
        if w[0] <= 0 || h[0] <= 0 {
            return Err(NvjpegError::ZeroSize);
        }
        Ok(Info {
            width: w[0] as usize,
            height: h[0] as usize,
            components: n as usize,
        })
    }

    /// Whether the hardware decoder takes this image (baseline, a subsampling it knows).
    fn hardware_takes(&self, data: &[u8]) -> bool {
        let Some(hw) = &self.hardware else {
            return false;
        };
        let mut unsupported: c_int = 1;
        // SAFETY: live handle and stream object; `data` outlives the call.
        unsafe {
            (self.api.parse_header)(hw.session.handle, data.as_ptr(), data.len(), hw.stream)
                == SUCCESS
                && (self.api.batched_supported)(hw.session.handle, hw.stream, &mut unsupported)
                    == SUCCESS
                && unsupported == 0
        }
    }

    /// Decodes `jobs` (JPEG bytes, destination of `width × height × 3` bytes, its width) into
    /// interleaved 3-channel images and waits for the GPU, or, on a shared stream, enqueues
    /// them. One result per job: a job that fails does not fail the others.
    ///
    /// # Safety
    /// Each destination must be a live device allocation of at least `width × height × 3`
    /// bytes, with `width` from `info` of the same bytes. On a shared stream, the owner keeps
    /// the sources and destinations alive and waits for the stream before the next `decode`.
    pub unsafe fn decode(&mut self, jobs: &[(&[u8], u64, usize)]) -> Vec<Result<Path>> {
        let mut out: Vec<Result<Path>> = vec![Ok(Path::Hybrid); jobs.len()];
        // nvJPEG works in the thread's current context: the primary one, as ours.
        if let Err(e) = self.stream.context().bind_to_thread() {
            return vec![Err(NvjpegError::Context(e)); jobs.len()];
        }
        let (hw_jobs, sw_jobs): (Vec<usize>, Vec<usize>) =
            (0..jobs.len()).partition(|&i| self.hardware_takes(jobs[i].0));
        let mut retry = Vec::new();
        if !hw_jobs.is_empty() {
            // SAFETY: the destinations are as this function's caller promises.
            match unsafe { self.decode_hardware(jobs, &hw_jobs) } {
                Ok(()) => hw_jobs.iter().for_each(|&i| out[i] = Ok(Path::Hardware)),
                // A batch fails as a whole; decoding its images one by one finds the bad one.
                Err(e) => {
                    // Once at warn (a chip or driver that refuses every batch shows at once),
                    // then at debug (a corrupt image in a batch is routine).
                    static WARNED: std::sync::atomic::AtomicBool =
                        std::sync::atomic::AtomicBool::new(false);
                    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!("nvJPEG hardware batch failed ({e}); decoding its images one by one with the hybrid decoder (logged once)");
                    } else {
                        tracing::debug!("hardware batch failed ({e}); decoding one by one");
                    }
                    retry = hw_jobs;
                }
            }
        }
        for i in sw_jobs.into_iter().chain(retry) {
            // SAFETY: the destination is as this function's caller promises.
            out[i] = unsafe { self.decode_hybrid(jobs[i]) }.map(|()| Path::Hybrid);
        }
        if self.waits {
            if let Err(e) = self.stream.synchronize() {
                out.iter_mut().for_each(|o| *o = Err(NvjpegError::Gpu(e)));
            }
        }
        out
    }

    /// The jobs `which` names, as one batch on the hardware decoder.
    ///
    /// # Safety
    /// As `decode`: each destination a live device allocation of `width × height × 3` bytes.
    unsafe fn decode_hardware(
        &mut self,
        jobs: &[(&[u8], u64, usize)],
        which: &[usize],
    ) -> Result<()> {
        let api = self.api;
        let format = self.format();
        let cu_stream = self.stream.cu_stream();
        let hw = self
            .hardware
            .as_mut()
            .ok_or(NvjpegError::NoHardwareDecoder)?;
        let n = which.len();
        let handle = hw.session.handle;
        let state = hw.state(api, n, format)?;
        let data: Vec<*const u8> = which.iter().map(|&i| jobs[i].0.as_ptr()).collect();
        let lengths: Vec<usize> = which.iter().map(|&i| jobs[i].0.len()).collect();
        let mut images: Vec<Image> = which
            .iter()
            .map(|&i| Image::interleaved(jobs[i].1, jobs[i].2))
            .collect();
        let done = check(
            // SAFETY: a live handle and a state made for batches of `n`; `n` sources with their
            // lengths, and `n` destinations as the caller promises; the stream is this context's.
            unsafe {
                (api.batched)(
                    handle,
                    state,
                    data.as_ptr(),
                    lengths.as_ptr(),
                    images.as_mut_ptr(),
                    cu_stream,
                )
            },
            "nvjpegDecodeBatched",
        );
        if done.is_err() {
            // nvJPEG asks for a fresh initialisation after a failed batch.
            if let Some(s) = hw.by_size.remove(&n) {
                // SAFETY: a state nvJPEG made, removed from the map: destroyed once.
                unsafe { (api.state_destroy)(s) };
            }
        }
        done
    }

    /// One job on the hybrid (CPU Huffman, GPU IDCT) decoder.
    ///
    /// # Safety
    /// As `decode`: the destination a live device allocation of `width × height × 3` bytes.
    unsafe fn decode_hybrid(&mut self, (data, dst, width): (&[u8], u64, usize)) -> Result<()> {
        let mut image = Image::interleaved(dst, width);
        // SAFETY: the hybrid session's live handle and state; the source bytes, and a
        // destination as the caller promises; the stream is this context's.
        let s = unsafe {
            (self.api.decode)(
                self.hybrid.handle,
                self.hybrid.state,
                data.as_ptr(),
                data.len(),
                self.format(),
                &mut image,
                self.stream.cu_stream(),
            )
        };
        if s != SUCCESS {
            return Err(NvjpegError::Decode(s));
        }
        // The state is reused by the next image: let this one finish first.
        self.stream.synchronize().map_err(NvjpegError::Gpu)
    }
}
