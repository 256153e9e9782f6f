//! The engine's CUDA sources compiled for the host with their warp-collective instructions
//! emulated: every CUDA thread of a warp (or block) is a real thread, and `__shfl_xor_sync`,
//! `mma.sync` and `__syncthreads` meet at barriers, so kernels whose lanes exchange values run
//! unchanged on machines without a GPU (host_kernels.rs runs threads one after another, which
//! only kernels without such exchanges allow).

/// Definitions the sources expect from CUDA, for a host build with `-std=c++20 -pthread`.
/// Launchers set `block_bar` / `warp_bar` (per warp of the block) before starting threads.
pub const PRELUDE: &str = r#"
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
using std::max;
using std::min;
#define KERNELS_HOST
#define ATTENTION_HOST
#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
struct Dim3 { unsigned x, y, z; };
static thread_local Dim3 blockIdx, blockDim, threadIdx;
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static inline unsigned short f2h(float f) {
    _Float16 h = (_Float16)f; unsigned short u; std::memcpy(&u, &h, 2); return u;
}
static inline float h2f(unsigned short u) { _Float16 h; std::memcpy(&h, &u, 2); return (float)h; }

// Up to 8 warps per block (256 threads), one block at a time.
static std::barrier<> *block_bar;
static std::barrier<> *warp_bar[8];
static inline void __syncthreads() { block_bar->arrive_and_wait(); }
static unsigned int xa[8][32][4], xb[8][32][2];
static float xc[8][32][4], xs[8][32];

static float __shfl_xor_sync(unsigned, float v, int m) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    xs[w][lane] = v;
    warp_bar[w]->arrive_and_wait();
    const float r = xs[w][lane ^ m];
    warp_bar[w]->arrive_and_wait();
    return r;
}

static inline float half_lo(unsigned int r) { return h2f((unsigned short)(r & 0xffffu)); }
static inline float half_hi(unsigned int r) { return h2f((unsigned short)(r >> 16)); }

// d = a·b + c for the warp (m16n8k16, f16 in, f32 accumulate), every lane handing in its
// fragments in the PTX ISA's layouts.
static void mma16816(float* c, const unsigned int* a, const unsigned int* b) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int i = 0; i < 4; i++) { xa[w][lane][i] = a[i]; xc[w][lane][i] = c[i]; }
    xb[w][lane][0] = b[0]; xb[w][lane][1] = b[1];
    warp_bar[w]->arrive_and_wait();
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        const int g = l / 4, t = l % 4;
        for (int r = 0; r < 4; r++) {
            const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
            A[row][col] = half_lo(xa[w][l][r]);
            A[row][col + 1] = half_hi(xa[w][l][r]);
        }
        for (int r = 0; r < 2; r++) {
            B[2 * t + 8 * r][g] = half_lo(xb[w][l][r]);
            B[2 * t + 8 * r + 1][g] = half_hi(xb[w][l][r]);
        }
    }
    const int g = lane / 4, t = lane % 4;
    float d[4];
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float acc = xc[w][lane][i];
        for (int k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
        d[i] = acc;
    }
    warp_bar[w]->arrive_and_wait();
    for (int i = 0; i < 4; i++) c[i] = d[i];
}

// ldmatrix .x4 .trans: lane l hands in the address of row l % 8 of matrix l / 8; lane 4g + t
// gets, in r[i], elements [2t][g] and [2t + 1][g] of matrix i.
static const unsigned short* xp[8][32];
static void ldsm_x4_trans(unsigned int* r, const unsigned short* p) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    xp[w][lane] = p;
    warp_bar[w]->arrive_and_wait();
    const int g = lane / 4, t = lane % 4;
    unsigned int got[4];
    for (int i = 0; i < 4; i++)
        got[i] = (unsigned int)xp[w][8 * i + 2 * t][g] |
                 ((unsigned int)xp[w][8 * i + 2 * t + 1][g] << 16);
    warp_bar[w]->arrive_and_wait();
    for (int i = 0; i < 4; i++) r[i] = got[i];
}

// Runs `body` on `threads` threads (a multiple of 32, at most 256) as one block.
template <typename F>
static void run_block(Dim3 block, unsigned int threads, F body) {
    std::barrier<> bb(threads);
    std::vector<std::barrier<>*> ws;
    for (unsigned int w = 0; w < threads / 32; w++) ws.push_back(new std::barrier<>(32));
    block_bar = &bb;
    for (unsigned int w = 0; w < threads / 32; w++) warp_bar[w] = ws[w];
    std::vector<std::thread> ts;
    for (unsigned int t = 0; t < threads; t++)
        ts.emplace_back([=] {
            blockIdx = block;
            blockDim = {threads, 1, 1};
            threadIdx = {t, 0, 0};
            body();
        });
    for (auto& th : ts) th.join();
    for (auto* w : ws) delete w;
}

extern "C" unsigned short host_to_half(float f) { return f2h(f); }
extern "C" float host_from_half(unsigned short h) { return h2f(h); }
"#;

/// `PRELUDE`, then `source`, then `launcher`, compiled with the system C++ compiler and
/// loaded.
pub fn build(name: &str, source: &str, launcher: &str) -> libloading::Library {
    super::host_kernels::compile(
        name,
        &format!("{PRELUDE}\n{source}\n{launcher}"),
        &["-std=c++20", "-pthread", "-Wno-unknown-pragmas"],
    )
}

/// fp16 conversions as the emulated kernels make them.
pub struct Halves {
    to: unsafe extern "C" fn(f32) -> u16,
    from: unsafe extern "C" fn(u16) -> f32,
}

impl Halves {
    pub fn of(lib: &libloading::Library) -> Halves {
        // SAFETY: the prelude's `extern "C"` conversions of plain values.
        unsafe {
            let to: libloading::Symbol<unsafe extern "C" fn(f32) -> u16> =
                lib.get(b"host_to_half").unwrap();
            let from: libloading::Symbol<unsafe extern "C" fn(u16) -> f32> =
                lib.get(b"host_from_half").unwrap();
            Halves {
                to: *to,
                from: *from,
            }
        }
    }

    pub fn to(&self, x: f32) -> u16 {
        // SAFETY: a plain conversion (see `of`).
        unsafe { (self.to)(x) }
    }

    pub fn from(&self, x: u16) -> f32 {
        // SAFETY: as above.
        unsafe { (self.from)(x) }
    }
}

/// Pseudo-random values in [-1, 1).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
