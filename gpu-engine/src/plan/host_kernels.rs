//! `kernels.cu` compiled for the host, so the plan tests and the kernel tests run the
//! GPU's own kernel code on machines without a GPU.

use super::reference;
use super::view;
use super::PoolStep;

/// `kernels.cu` compiled for the host with the system C++ compiler (CUDA's qualifiers
/// defined away, its fp16 conversions as `_Float16`), loaded as a shared library; the grid of a
/// launch runs thread by thread.
pub struct HostKernels {
    pub lib: libloading::Library,
    /// Map launches that ran in 16-byte chunks.
    pub chunked: std::cell::Cell<usize>,
}

const KERNELS_PRELUDE: &str = r#"
#include <algorithm>
#include <cmath>
#include <cstring>
using std::max;
using std::min;
#define KERNELS_HOST
#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
static inline void __syncthreads() {}
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, blockDim, threadIdx;
extern "C" void tp_set_thread(unsigned b, unsigned t) {
    blockIdx.x = b; blockDim.x = 256; threadIdx.x = t;
}
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static inline float __shfl_xor_sync(unsigned, float v, int) { return v; }
static inline unsigned short f2h(float f) {
    _Float16 h = (_Float16)f; unsigned short u; std::memcpy(&u, &h, 2); return u;
}
static inline float h2f(unsigned short u) { _Float16 h; std::memcpy(&h, &u, 2); return (float)h; }
"#;

type MapFn = unsafe extern "C" fn(
    view::View,
    view::View,
    view::View,
    view::View,
    *const f32,
    *const f32,
    *const f32,
    *mut f32,
    i32,
    i32,
    f32,
    f32,
    u32,
    u32,
    i32,
);
type PoolFn = unsafe extern "C" fn(
    view::View,
    view::View,
    *const f32,
    *mut f32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    u32,
);

/// `source` compiled for the host with the system C++ compiler (`-O1`, no FMA contraction so
/// that roundings are the kernels' separate multiply and add, plus `extra` flags) and loaded.
/// One folder per call: tests run in parallel threads of one process, and a library rewritten
/// while another test has it loaded would run the wrong code.
pub fn compile(name: &str, source: &str, extra: &[&str]) -> libloading::Library {
    static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tp-host-{name}-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, lib) = (dir.join("kernels.cpp"), dir.join("libkernels.so"));
    std::fs::write(&src, source).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = std::process::Command::new(&cxx)
        .args(["-O1", "-shared", "-fPIC", "-ffp-contract=off"])
        .args(extra)
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler `{cxx}`: {e}"));
    assert!(
        out.status.success(),
        "{name} does not compile for the host:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: a library we just built from our own source; its initialisers do nothing.
    let lib = unsafe { libloading::Library::new(&lib) }.unwrap();
    // Mapped already: the folder can go.
    let _ = std::fs::remove_dir_all(dir);
    lib
}

impl HostKernels {
    pub fn load() -> HostKernels {
        let kernels = include_str!("../kernels.cu");
        HostKernels {
            lib: compile("kernels", &format!("{KERNELS_PRELUDE}\n{kernels}"), &[]),
            chunked: std::cell::Cell::new(0),
        }
    }

    pub fn grid(&self, n: usize, mut launch: impl FnMut()) {
        // SAFETY: the prelude's setter, `extern "C" void(unsigned, unsigned)`.
        let set: libloading::Symbol<unsafe extern "C" fn(u32, u32)> =
            unsafe { self.lib.get(b"tp_set_thread") }.unwrap();
        for b in 0..n.div_ceil(256) {
            for t in 0..256 {
                // SAFETY: sets plain globals of the library.
                unsafe { set(b as u32, t) };
                launch();
            }
        }
    }
}

impl reference::Kernels for HostKernels {
    fn map(&self, l: &view::MapLaunch, [a, b, c]: [*const f32; 3], y: *mut f32) {
        let name: &[u8] = if l.vec > 1 {
            b"map_chunk_float"
        } else {
            b"map_float"
        };
        // SAFETY: `map_float`'s and `map_chunk_float`'s signature, as MapFn declares it.
        let f: libloading::Symbol<MapFn> = unsafe { self.lib.get(name) }.unwrap();
        let n = l.y.len();
        self.chunked.set(self.chunked.get() + (l.vec > 1) as usize);
        self.grid(n, || {
            // SAFETY: the views stay inside the reference executor's buffers (the plan sized
            // them), as on the GPU.
            unsafe {
                f(
                    l.a,
                    l.b,
                    l.c,
                    l.y,
                    a,
                    b,
                    c,
                    y,
                    l.binary as i32,
                    l.unary as i32,
                    l.p0,
                    l.p1,
                    n as u32,
                    l.linear,
                    l.has_c as i32,
                )
            }
        });
    }

    fn pool(&self, p: &PoolStep, l: &view::PoolLaunch, cl: bool, x: *const f32, y: *mut f32) {
        // SAFETY: `pool_float`'s signature, as PoolFn declares it.
        let f: libloading::Symbol<PoolFn> = unsafe { self.lib.get(b"pool_float") }.unwrap();
        let n = l.y.len();
        let [kind, kh, kw, sh, sw, pt, pl, pb, pr, cl] = p.kernel_args(cl);
        self.grid(n, || {
            // SAFETY: as for `map`.
            unsafe {
                f(
                    l.x, l.y, x, y, kind, kh, kw, sh, sw, pt, pl, pb, pr, cl, n as u32,
                )
            }
        });
    }

    fn concat(&self, l: &view::ConcatLaunch, parts: &[*const f32], y: *mut f32) {
        // The 16-byte units wherever the layout allows (the engine uses them for large
        // copies only), so that path is the one tested.
        let unit = l.vec;
        let ptrs: Vec<u64> = parts.iter().map(|&p| p as u64).collect();
        let (cat, row, base, units) = l.args(&ptrs, unit).unwrap();
        let name: &[u8] = if unit > 1 {
            b"concat_chunk_float"
        } else {
            b"concat_float"
        };
        self.chunked.set(self.chunked.get() + (unit > 1) as usize);
        // SAFETY: `concat_float`'s and `concat_chunk_float`'s signature, as ConcatFn says.
        let f: libloading::Symbol<ConcatFn> = unsafe { self.lib.get(name) }.unwrap();
        self.grid(units as usize, || {
            // SAFETY: as for `map`; the parts hold `outer` runs each (view::concat).
            unsafe { f(cat, y, row, base, units) }
        });
    }
}

type ConcatFn = unsafe extern "C" fn(view::ConcatArgs, *mut f32, u32, u32, u32);
