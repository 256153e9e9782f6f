// The model engine's own kernels, compiled at start-up by NVRTC (kernels.rs) or taken from
// model::cache: the input conversion, a convolution's epilogue when cuDNN's fusion is not
// used, and every op that is not a convolution or a matrix product. Operands are addressed
// through strided views (plan/view.rs), so one kernel serves every layout, broadcast,
// transpose and concatenation. fp16 values are raw 16-bit words converted with the PTX
// instructions, so the source needs no CUDA headers on the machine that runs it.

#define RANK 6
#define INF __int_as_float(0x7f800000)

struct View {
    int dims[RANK];
    long long strides[RANK];
    long long offset;
};

// The host build of the tests (plan/tests.rs) defines KERNELS_HOST and its own conversions.
#ifndef KERNELS_HOST
__device__ __forceinline__ unsigned short f2h(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float h2f(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
#endif
__device__ __forceinline__ float ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ld(const unsigned short* p, long long i) { return h2f(p[i]); }
__device__ __forceinline__ void st(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(unsigned short* p, long long i, float v) { p[i] = f2h(v); }

// Element i (row-major over the view's dims) → its offset.
__device__ __forceinline__ long long at(const View& v, unsigned int i) {
    long long off = v.offset;
#pragma unroll
    for (int k = RANK - 1; k >= 0; k--) {
        unsigned int d = (unsigned int)v.dims[k];
        // Leading dims are mostly 1: skip their divisions (a uniform branch).
        if (d == 1) continue;
        off += (long long)(i % d) * v.strides[k];
        i /= d;
    }
    return off;
}

// NCHW f32 (raw pixels) -> NHWC f16 normalised, channels padded with zeros to cpad.
extern "C" __global__ void to_input_half(const float* __restrict__ x, unsigned short* __restrict__ y,
        const float* __restrict__ mean, const float* __restrict__ inv_std,
        int n, int c, int hw, int cpad) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n * hw) return;
    long b = i / hw, p = i - b * hw;
    const float* src = x + b * c * (long)hw + p;
    unsigned short* dst = y + i * cpad;
    for (int k = 0; k < cpad; k++) {
        float v = k < c ? (src[(long)k * hw] - mean[k]) * inv_std[k] : 0.0f;
        dst[k] = f2h(v);
    }
}

// NCHW f32 (raw pixels) -> NCHW f32 normalised, channels padded with zeros to cpad.
extern "C" __global__ void to_input_float(const float* __restrict__ x, float* __restrict__ y,
        const float* __restrict__ mean, const float* __restrict__ inv_std,
        int n, int c, int hw, int cpad) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n * hw) return;
    long b = i / hw, p = i - b * hw;
    for (int k = 0; k < cpad; k++) {
        float v = k < c ? (x[(b * c + k) * (long)hw + p] - mean[k]) * inv_std[k] : 0.0f;
        y[(b * cpad + k) * (long)hw + p] = v;
    }
}


// Binary codes (plan::Binary) and unary codes (plan::Unary), in declaration order.
__device__ __forceinline__ float binary_op(int op, float a, float b) {
    switch (op) {
        case 1: return a + b;
        case 2: return a - b;
        case 3: return a * b;
        case 4: return a / b;
        case 5: return powf(a, b);
        case 6: return fmaxf(a, b);
        case 7: return fminf(a, b);
        case 8: return a < 0.0f ? a * b : a;
        default: return a;
    }
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
// ln(1 + e^x) without overflowing e^x (past 20, the correction is below f32's resolution).
__device__ __forceinline__ float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

__device__ __forceinline__ float unary_op(int op, float x, float p0, float p1) {
    switch (op) {
        case 1: return fmaxf(x, 0.0f);
        case 2: return sigmoidf(x);
        case 3: return fminf(fmaxf(p0 * x + p1, 0.0f), 1.0f);
        case 4: return x * fminf(fmaxf(x / 6.0f + 0.5f, 0.0f), 1.0f);
        case 5: return x * sigmoidf(x);
        case 6: return erff(x);
        case 7: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
        case 8: return sqrtf(x);
        case 9: return fminf(fmaxf(x, p0), p1);
        case 10: return expf(x);
        case 11: return tanhf(x);
        case 12: return -x;
        case 13: return 1.0f / x;
        case 14: return fabsf(x);
        case 15: return x >= 0.0f ? x : p0 * x;
        case 16: return x > 0.0f ? x : p0 * expm1f(x);
        case 17: return p1 * (x > 0.0f ? x : p0 * expm1f(x));
        case 18: return fmaxf(x, 0.0f) + fminf(0.0f, p0 * expm1f(x / p0));
        case 19: return softplusf(x);
        case 20: return x / (1.0f + fabsf(x));
        case 21: return x * tanhf(softplusf(x));
        case 22: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
        case 23: return logf(x);
        case 24: return x > p0 ? x : 0.0f;
        case 25: return rsqrtf(x);
        default: return x;
    }
}

// The epilogue of a convolution run without cuDNN's fusion: y = act(y + bias[c] + z), act a
// unary code with its parameters (ConvStep::act); without the bias where cuDNN added it.
extern "C" __global__ void bias_act_half(unsigned short* y, const unsigned short* z,
        const unsigned short* bias, long n, int cout, int act, float p0, float p1, int has_z,
        int has_bias) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = h2f(y[i]) + (has_bias ? h2f(bias[i % cout]) : 0.0f);
    if (has_z) v += h2f(z[i]);
    y[i] = f2h(unary_op(act, v, p0, p1));
}

extern "C" __global__ void bias_act_float(float* y, const float* z, const float* bias, long n,
        int cout, int hw, int act, float p0, float p1, int has_z, int has_bias) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = y[i] + (has_bias ? bias[(i / hw) % cout] : 0.0f);
    if (has_z) v += z[i];
    y[i] = unary_op(act, v, p0, p1);
}

// 16 bytes of T, moved by one 128-bit load or store where the address allows it.
struct alignas(16) Chunk { unsigned int w[4]; };

// The K = 16 / sizeof(T) elements at `off` (stride 1), or one element repeated (stride 0).
template <typename T>
__device__ __forceinline__ void ld_chunk(const T* p, long long off, long long stride, float* v) {
    const int K = 16 / sizeof(T);
    if (stride == 0) {
        float x = ld(p, off);
        for (int k = 0; k < K; k++) v[k] = x;
        return;
    }
    Chunk c = *reinterpret_cast<const Chunk*>(p + off);
    const T* e = reinterpret_cast<const T*>(&c);
    for (int k = 0; k < K; k++) v[k] = ld(e, k);
}

template <typename T>
__device__ __forceinline__ void st_chunk(T* p, long long off, const float* v) {
    const int K = 16 / sizeof(T);
    Chunk c;
    T* e = reinterpret_cast<T*>(&c);
    for (int k = 0; k < K; k++) st(e, k, v[k]);
    *reinterpret_cast<Chunk*>(p + off) = c;
}

// The convolution epilogue K = 16 / sizeof(T) elements per thread: NHWC (hw = 1, cout a
// multiple of K, K consecutive channels) or NCHW (hw a multiple of K, one channel).
template <typename T>
__device__ void bias_act_chunk_impl(T* y, const T* z, const T* bias, long long n, int cout,
        int hw, int act, float p0, float p1, int has_z, int has_bias) {
    const int K = 16 / sizeof(T);
    long long e = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * K;
    if (e >= n) return;
    float v[K], b[K], r[K];
    ld_chunk(y, e, 1, v);
    if (!has_bias) for (int k = 0; k < K; k++) b[k] = 0.0f;
    else if (hw == 1) ld_chunk(bias, e % cout, 1, b);
    else ld_chunk(bias, (e / hw) % cout, 0, b);
    if (has_z) ld_chunk(z, e, 1, r);
    for (int k = 0; k < K; k++)
        r[k] = unary_op(act, v[k] + b[k] + (has_z ? r[k] : 0.0f), p0, p1);
    st_chunk(y, e, r);
}

extern "C" __global__ void bias_act_chunk_half(unsigned short* y, const unsigned short* z,
        const unsigned short* bias, long long n, int cout, int hw, int act, float p0, float p1,
        int has_z, int has_bias) {
    bias_act_chunk_impl(y, z, bias, n, cout, hw, act, p0, p1, has_z, has_bias);
}
extern "C" __global__ void bias_act_chunk_float(float* y, const float* z, const float* bias,
        long long n, int cout, int hw, int act, float p0, float p1, int has_z, int has_bias) {
    bias_act_chunk_impl(y, z, bias, n, cout, hw, act, p0, p1, has_z, has_bias);
}

// y[region] = unary(binary(a, b) + c), one thread per element of the region (c where has_c).
// linear: bit 0/1/2/3 set where a/b/y/c is dense in the region's order (offset + i, no
// division).
template <typename T>
__device__ void map_impl(View a, View b, View c, View y, const T* pa, const T* pb, const T* pc,
        T* py, int binary, int unary, float p0, float p1, unsigned int n, unsigned int linear,
        int has_c) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float va = ld(pa, (linear & 1) ? a.offset + i : at(a, i));
    float vb = binary ? ld(pb, (linear & 2) ? b.offset + i : at(b, i)) : 0.0f;
    float v = binary_op(binary, va, vb);
    if (has_c) v += ld(pc, (linear & 8) ? c.offset + i : at(c, i));
    st(py, (linear & 4) ? y.offset + i : at(y, i), unary_op(unary, v, p0, p1));
}

// The same, each thread taking K = 16 / sizeof(T) elements along the innermost dim with one
// 16-byte load or store per operand (view.rs checks that dim is whole chunks, dense in y,
// dense or broadcast in a, b and c, every row aligned): the index arithmetic is paid once a
// chunk.
template <typename T>
__device__ void map_chunk_impl(View a, View b, View c, View y, const T* pa, const T* pb,
        const T* pc, T* py, int binary, int unary, float p0, float p1, unsigned int n,
        unsigned int linear, int has_c) {
    const int K = 16 / sizeof(T);
    unsigned int e = (blockIdx.x * blockDim.x + threadIdx.x) * K;
    if (e >= n) return;
    float va[K], vb[K], vc[K], r[K];
    ld_chunk(pa, (linear & 1) ? a.offset + e : at(a, e), a.strides[RANK - 1], va);
    if (binary) ld_chunk(pb, (linear & 2) ? b.offset + e : at(b, e), b.strides[RANK - 1], vb);
    if (has_c) ld_chunk(pc, (linear & 8) ? c.offset + e : at(c, e), c.strides[RANK - 1], vc);
    for (int k = 0; k < K; k++) {
        float v = binary_op(binary, va[k], binary ? vb[k] : 0.0f);
        r[k] = unary_op(unary, has_c ? v + vc[k] : v, p0, p1);
    }
    st_chunk(py, (linear & 4) ? y.offset + e : at(y, e), r);
}

#define MAP_ENTRY(name, impl, T) \
extern "C" __global__ void name(View a, View b, View c, View y, const T* pa, const T* pb, \
        const T* pc, T* py, int binary, int unary, float p0, float p1, unsigned int n, \
        unsigned int linear, int has_c) { \
    impl(a, b, c, y, pa, pb, pc, py, binary, unary, p0, p1, n, linear, has_c); \
}
MAP_ENTRY(map_half, map_impl, unsigned short)
MAP_ENTRY(map_float, map_impl, float)
MAP_ENTRY(map_chunk_half, map_chunk_impl, unsigned short)
MAP_ENTRY(map_chunk_float, map_chunk_impl, float)

// A copy whose reads would be strided where its writes are dense (a transpose: NHWC ↔ NCHW,
// ShuffleNet's channel shuffle), in 32 × 32 tiles through shared memory so that both sides are
// coalesced (view::transpose). Dim d0 is dense in a, d1 in y; `outer` (and `outer_y`) address
// the tile's origin for outer index o (the views with both tile dims set to 1); a0/a1 and
// y0/y1 are the two operands' strides along d0 and d1. 32 × 8 threads per block.
#define TILE 32
template <typename T>
__device__ void transpose_impl(View outer, View outer_y, const T* pa, T* py, unsigned int d0,
        unsigned int d1, long long a0, long long a1, long long y0, long long y1,
        unsigned int tiles0, unsigned int tiles1) {
    __shared__ T tile[TILE][TILE + 1];
    const unsigned int tx = threadIdx.x % TILE, ty = threadIdx.x / TILE;
    unsigned int b = blockIdx.x;
    const unsigned int t1 = b % tiles1;
    b /= tiles1;
    const unsigned int t0 = b % tiles0;
    const unsigned int o = b / tiles0;
    const long long ba = at(outer, o), by = at(outer_y, o);
    // Read along d0 (consecutive threads, consecutive addresses of a).
    const unsigned int i0 = t0 * TILE + tx;
    for (unsigned int r = ty; r < TILE; r += blockDim.x / TILE) {
        const unsigned int i1 = t1 * TILE + r;
        if (i0 < d0 && i1 < d1) tile[r][tx] = pa[ba + i0 * a0 + i1 * a1];
    }
    __syncthreads();
    // Write along d1 (consecutive threads, consecutive addresses of y).
    const unsigned int j1 = t1 * TILE + tx;
    for (unsigned int r = ty; r < TILE; r += blockDim.x / TILE) {
        const unsigned int j0 = t0 * TILE + r;
        if (j0 < d0 && j1 < d1) py[by + j0 * y0 + j1 * y1] = tile[tx][r];
    }
}

#define TRANSPOSE_ENTRY(name, T) \
extern "C" __global__ void name(View outer, View outer_y, const T* pa, T* py, unsigned int d0, \
        unsigned int d1, long long a0, long long a1, long long y0, long long y1, \
        unsigned int tiles0, unsigned int tiles1) { \
    transpose_impl(outer, outer_y, pa, py, d0, d1, a0, a1, y0, y1, tiles0, tiles1); \
}
TRANSPOSE_ENTRY(transpose_half, unsigned short)
TRANSPOSE_ENTRY(transpose_float, float)

// Concat in storage order (plan::ConcatStep, view::ConcatLaunch): one thread per unit W of
// the output (an element, or a 16-byte Chunk); part i fills units [start[i], start[i + 1]) of
// every output row from its own rows.
#define CAT_MAX 32
struct Cat {
    unsigned long long src[CAT_MAX];
    unsigned int start[CAT_MAX + 1];
    int parts;
};

template <typename W>
__device__ void concat_impl(Cat c, W* y, unsigned int row, unsigned int base, unsigned int n) {
    unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    unsigned int width = c.start[c.parts];
    unsigned int o = t / width, j = t - o * width;
    int i = 0;
    while (i + 1 < c.parts && c.start[i + 1] <= j) i++;
    unsigned int run = c.start[i + 1] - c.start[i];
    const W* src = reinterpret_cast<const W*>(c.src[i]);
    y[(long long)o * row + base + j] = src[(long long)o * run + (j - c.start[i])];
}

#define CONCAT_ENTRY(name, W) \
extern "C" __global__ void name(Cat c, W* y, unsigned int row, unsigned int base, unsigned int n) { \
    concat_impl(c, y, row, base, n); \
}
CONCAT_ENTRY(concat_half, unsigned short)
CONCAT_ENTRY(concat_float, float)
// 16-byte units: the same kernel for both precisions.
CONCAT_ENTRY(concat_chunk_half, Chunk)
CONCAT_ENTRY(concat_chunk_float, Chunk)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// kind (plan::ReduceKind): 0 mean, 1 sum, 2 max, 3 min, 4 root mean square, 5 sum of
// squares, 6 L2 norm (the square root of the sum of squares), 7 sum of absolute values.
__device__ __forceinline__ float reduce_start(int kind) {
    return kind == 2 ? -INF : (kind == 3 ? INF : 0.0f);
}
__device__ __forceinline__ float reduce_add(int kind, float acc, float v) {
    switch (kind) {
    case 2: return fmaxf(acc, v);
    case 3: return fminf(acc, v);
    case 4: case 5: case 6: return acc + v * v;
    case 7: return acc + fabsf(v);
    default: return acc + v;
    }
}
__device__ __forceinline__ float reduce_merge(int kind, float a, float b) {
    return kind == 2 ? fmaxf(a, b) : (kind == 3 ? fminf(a, b) : a + b);
}
__device__ __forceinline__ float reduce_finish(int kind, float acc, unsigned int count) {
    switch (kind) {
    case 0: return acc / (float)count;
    case 4: return sqrtf(acc / (float)count);
    case 6: return sqrtf(acc);
    default: return acc;
    }
}

// Blocks of 256 threads; `group` threads (a power of two, at most 256) share each output, each
// taking every group-th of its elements, and their partials meet in shared memory. `adjacent`:
// the block's outputs are its fastest-varying threads, for outputs adjacent in memory whose
// elements lie far apart (a sum over H and W of an NHWC map: a warp's loads then fall on
// neighbouring addresses); otherwise an output's threads are neighbours (its elements are).
// One warp per output, or one thread per output, left either too few threads on a short
// batch or thousands of serial loads per thread (ConvNeXt V2's response norm at batch 32:
// 3,136 per thread).
template <typename T>
__device__ void reduce_impl(View outer, View inner, View y, const T* x, T* py, int kind,
        unsigned int outputs, unsigned int group, int adjacent) {
    __shared__ float part[256];
    unsigned int count = 1;
    for (int k = 0; k < RANK; k++) count *= (unsigned int)inner.dims[k];
    const unsigned int per_block = 256 / group, t = threadIdx.x;
    const unsigned int local = adjacent ? t % per_block : t / group;
    const unsigned int split = adjacent ? t / per_block : t % group;
    const unsigned int o = blockIdx.x * per_block + local;
    // Elements along one dim (view.rs merges the reduced dims where it can): found by a
    // multiplication, not at()'s divisions, which cost more than the loads.
    int dims = 0;
    long long stride = 0;
    for (int k = 0; k < RANK; k++)
        if (inner.dims[k] != 1) {
            dims++;
            stride = inner.strides[k];
        }
    float acc = reduce_start(kind);
    if (o < outputs) {
        const long long base = at(outer, o);
        if (dims <= 1)
            for (unsigned int j = split; j < count; j += group)
                acc = reduce_add(kind, acc, ld(x, base + (long long)j * stride));
        else
            for (unsigned int j = split; j < count; j += group)
                acc = reduce_add(kind, acc, ld(x, base + at(inner, j)));
    }
    part[t] = acc;
    __syncthreads();
    // Halving: split s < h takes split s + h's partial, until split 0 holds the output's.
    const unsigned int step = adjacent ? per_block : 1;
    for (unsigned int h = group / 2; h > 0; h >>= 1) {
        if (split < h) part[t] = reduce_merge(kind, part[t], part[t + h * step]);
        __syncthreads();
    }
    if (split == 0 && o < outputs) st(py, at(y, o), reduce_finish(kind, part[t], count));
}

extern "C" __global__ void reduce_half(View outer, View inner, View y, const unsigned short* x,
        unsigned short* py, int kind, unsigned int outputs, unsigned int group, int adjacent) {
    reduce_impl(outer, inner, y, x, py, kind, outputs, group, adjacent);
}
extern "C" __global__ void reduce_float(View outer, View inner, View y, const float* x,
        float* py, int kind, unsigned int outputs, unsigned int group, int adjacent) {
    reduce_impl(outer, inner, y, x, py, kind, outputs, group, adjacent);
}

// kind: 0 softmax, 1 log-softmax, 2 layer norm. One warp per row of `len` elements.
template <typename T>
__device__ void row_impl(View xv, View yv, const T* x, T* y, int len, long long xs,
        long long ys, int kind, const T* scale, const T* bias, int has_bias, float eps,
        unsigned int rows) {
    unsigned int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    long long xb = at(xv, r), yb = at(yv, r);
    if (kind == 2) {
        float s = 0.0f;
        for (int k = lane; k < len; k += 32) s += ld(x, xb + k * xs);
        float mean = warp_sum(s) / (float)len;
        float q = 0.0f;
        for (int k = lane; k < len; k += 32) {
            float d = ld(x, xb + k * xs) - mean;
            q += d * d;
        }
        float inv = rsqrtf(warp_sum(q) / (float)len + eps);
        for (int k = lane; k < len; k += 32) {
            float v = (ld(x, xb + k * xs) - mean) * inv * ld(scale, k);
            if (has_bias) v += ld(bias, k);
            st(y, yb + k * ys, v);
        }
        return;
    }
    float m = -INF;
    for (int k = lane; k < len; k += 32) m = fmaxf(m, ld(x, xb + k * xs));
    m = warp_max(m);
    float s = 0.0f;
    for (int k = lane; k < len; k += 32) s += expf(ld(x, xb + k * xs) - m);
    s = warp_sum(s);
    float ls = logf(s);
    for (int k = lane; k < len; k += 32) {
        float d = ld(x, xb + k * xs) - m;
        st(y, yb + k * ys, kind == 1 ? d - ls : expf(d) / s);
    }
}

extern "C" __global__ void row_half(View xv, View yv, const unsigned short* x, unsigned short* y,
        int len, long long xs, long long ys, int kind, const unsigned short* scale,
        const unsigned short* bias, int has_bias, float eps, unsigned int rows) {
    row_impl(xv, yv, x, y, len, xs, ys, kind, scale, bias, has_bias, eps, rows);
}
extern "C" __global__ void row_float(View xv, View yv, const float* x, float* y, int len,
        long long xs, long long ys, int kind, const float* scale, const float* bias,
        int has_bias, float eps, unsigned int rows) {
    row_impl(xv, yv, x, y, len, xs, ys, kind, scale, bias, has_bias, eps, rows);
}

// The same three kinds over dense rows (stride 1, a multiple of K = 16 / sizeof(T) long, every
// row starting 16-byte aligned), read once and written once in 16-byte chunks: a group of `g`
// lanes (a power of two ≤ 32; 32 / g rows per warp) holds a row in registers, CH chunks per
// lane. The strided kernel above reads each element three times, one 2-byte load at a time,
// which left LayerNorm at a third of the memory's speed (ViT, ConvNeXt).
template <typename T, int CH>
__device__ void row_dense_impl(View xv, View yv, const T* x, T* y, int len, int g, int kind,
        const T* scale, const T* bias, int has_bias, float eps, unsigned int rows) {
    const int K = 16 / sizeof(T);
    unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int r = t / (unsigned int)g;
    int lane = (int)(t % (unsigned int)g);
    // No early exit: every lane of the warp takes part in the shuffles below.
    bool live = r < rows;
    long long xb = live ? at(xv, r) : 0, yb = live ? at(yv, r) : 0;
    float v[CH][16 / sizeof(T)];
    bool in[CH];
#pragma unroll
    for (int j = 0; j < CH; j++) {
        int k = (j * g + lane) * K;
        in[j] = live && k < len;
        if (in[j]) ld_chunk(x, xb + k, 1, v[j]);
#pragma unroll
        for (int e = 0; e < K; e++) if (!in[j]) v[j][e] = 0.0f;
    }
    if (kind == 2) {
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < CH; j++)
#pragma unroll
            for (int e = 0; e < K; e++) s += v[j][e];
        for (int o = g / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        float mean = s / (float)len, q = 0.0f;
#pragma unroll
        for (int j = 0; j < CH; j++)
#pragma unroll
            for (int e = 0; e < K; e++) {
                float d = in[j] ? v[j][e] - mean : 0.0f;
                q += d * d;
            }
        for (int o = g / 2; o > 0; o >>= 1) q += __shfl_xor_sync(0xffffffffu, q, o);
        float inv = rsqrtf(q / (float)len + eps);
#pragma unroll
        for (int j = 0; j < CH; j++) {
            if (!in[j]) continue;
            int k = (j * g + lane) * K;
            float sc[16 / sizeof(T)], bi[16 / sizeof(T)];
            ld_chunk(scale, k, 1, sc);
            if (has_bias) ld_chunk(bias, k, 1, bi);
#pragma unroll
            for (int e = 0; e < K; e++)
                v[j][e] = (v[j][e] - mean) * inv * sc[e] + (has_bias ? bi[e] : 0.0f);
            st_chunk(y, yb + k, v[j]);
        }
        return;
    }
    float m = -INF;
#pragma unroll
    for (int j = 0; j < CH; j++)
#pragma unroll
        for (int e = 0; e < K; e++) if (in[j]) m = fmaxf(m, v[j][e]);
    for (int o = g / 2; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < CH; j++)
#pragma unroll
        for (int e = 0; e < K; e++) if (in[j]) s += expf(v[j][e] - m);
    for (int o = g / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    float ls = logf(s);
#pragma unroll
    for (int j = 0; j < CH; j++) {
        if (!in[j]) continue;
        int k = (j * g + lane) * K;
#pragma unroll
        for (int e = 0; e < K; e++) {
            float d = v[j][e] - m;
            v[j][e] = kind == 1 ? d - ls : expf(d) / s;
        }
        st_chunk(y, yb + k, v[j]);
    }
}

#define ROW_DENSE_ENTRY(name, T, CH) \
extern "C" __global__ void name(View xv, View yv, const T* x, T* y, int len, int g, int kind, \
        const T* scale, const T* bias, int has_bias, float eps, unsigned int rows) { \
    row_dense_impl<T, CH>(xv, yv, x, y, len, g, kind, scale, bias, has_bias, eps, rows); \
}
ROW_DENSE_ENTRY(row_dense1_half, unsigned short, 1)
ROW_DENSE_ENTRY(row_dense2_half, unsigned short, 2)
ROW_DENSE_ENTRY(row_dense3_half, unsigned short, 3)
ROW_DENSE_ENTRY(row_dense4_half, unsigned short, 4)
ROW_DENSE_ENTRY(row_dense1_float, float, 1)
ROW_DENSE_ENTRY(row_dense2_float, float, 2)
ROW_DENSE_ENTRY(row_dense3_float, float, 3)
ROW_DENSE_ENTRY(row_dense4_float, float, 4)

// 2-D pooling over views of [N, C, H, W]; kind: 0 max, 1 average counting padding, 2 average
// of the input elements only (plan::PoolKind). Windows are clipped to the padded input.
template <typename T>
__device__ void pool_impl(View xv, View yv, const T* x, T* y, int kind, int kh, int kw,
        int sh, int sw, int pth, int ptw, int pbh, int pbw, int cl, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int oh = yv.dims[4], ow = yv.dims[5], ih = xv.dims[4], iw = xv.dims[5];
    unsigned int C = yv.dims[3], c, b;
    int ox, oy;
    // Walk the output in its storage order (channels innermost when `cl`).
    if (cl) {
        c = i % C; ox = (i / C) % ow; oy = (i / (C * ow)) % oh; b = i / (C * ow * oh);
    } else {
        ox = i % ow; oy = (i / ow) % oh; c = (i / (ow * oh)) % C; b = i / (ow * oh * C);
    }
    long long base = xv.offset + b * xv.strides[2] + c * xv.strides[3];
    int y0 = oy * sh - pth, x0 = ox * sw - ptw;
    float acc = kind == 0 ? -INF : 0.0f;
    int cnt = 0, area = 0;
    for (int ky = 0; ky < kh; ky++) {
        int yy = y0 + ky;
        for (int kx = 0; kx < kw; kx++) {
            int xx = x0 + kx;
            if (yy < ih + pbh && xx < iw + pbw) area++;
            if (yy < 0 || xx < 0 || yy >= ih || xx >= iw) continue;
            float v = ld(x, base + yy * xv.strides[4] + xx * xv.strides[5]);
            cnt++;
            acc = kind == 0 ? fmaxf(acc, v) : acc + v;
        }
    }
    if (kind == 1) acc /= (float)max(area, 1);
    if (kind == 2) acc /= (float)max(cnt, 1);
    st(y, yv.offset + b * yv.strides[2] + c * yv.strides[3] + oy * yv.strides[4]
        + ox * yv.strides[5], acc);
}

extern "C" __global__ void pool_half(View xv, View yv, const unsigned short* x, unsigned short* y,
        int kind, int kh, int kw, int sh, int sw, int pth, int ptw, int pbh, int pbw, int cl,
        unsigned int n) {
    pool_impl(xv, yv, x, y, kind, kh, kw, sh, sw, pth, ptw, pbh, pbw, cl, n);
}
extern "C" __global__ void pool_float(View xv, View yv, const float* x, float* y, int kind,
        int kh, int kw, int sh, int sw, int pth, int ptw, int pbh, int pbw, int cl,
        unsigned int n) {
    pool_impl(xv, yv, x, y, kind, kh, kw, sh, sw, pth, ptw, pbh, pbw, cl, n);
}

// Depthwise convolution (groups = input channels, one filter per channel): y = act(conv(x) +
// bias + z) over views of [N, C, H, W]; weights [C, kh, kw]. Threads walk the output in its
// storage order (channels innermost when `cl`), so neighbouring threads touch neighbouring
// memory in either layout. Filters and bias are f32 in both precisions: a 3 × 3 filter's sum
// over a smooth region cancels, so rounding its nine taps to fp16 was the largest source of
// fp16 error in MobileNetV3 (emulated on the host: 4.8e-2 with fp16 filters, 9.0e-3 with f32
// ones), and the filters are a few kilobytes.
template <typename T>
__device__ void depthwise_impl(View xv, View yv, const T* x, const float* w, const float* bias,
        const T* z, T* y, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
        int act, int has_z, int cl, float p0, float p1, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int C = yv.dims[3], OH = yv.dims[4], OW = yv.dims[5];
    unsigned int c, oy, ox, b;
    if (cl) {
        c = i % C; ox = (i / C) % OW; oy = (i / (C * OW)) % OH; b = i / (C * OW * OH);
    } else {
        ox = i % OW; oy = (i / OW) % OH; c = (i / (OW * OH)) % C; b = i / (OW * OH * C);
    }
    int ih = xv.dims[4], iw = xv.dims[5];
    long long xb = xv.offset + b * xv.strides[2] + c * xv.strides[3];
    const float* wc = w + (long long)c * kh * kw;
    float acc = bias[c];
    for (int ky = 0; ky < kh; ky++) {
        int yy = (int)oy * sh - ph + ky * dh;
        if (yy < 0 || yy >= ih) continue;
        for (int kx = 0; kx < kw; kx++) {
            int xx = (int)ox * sw - pw + kx * dw;
            if (xx < 0 || xx >= iw) continue;
            acc += ld(x, xb + yy * xv.strides[4] + xx * xv.strides[5]) * wc[ky * kw + kx];
        }
    }
    long long yo = yv.offset + b * yv.strides[2] + c * yv.strides[3] + oy * yv.strides[4]
        + ox * yv.strides[5];
    if (has_z) acc += ld(z, yo);
    st(y, yo, unary_op(act, acc, p0, p1));
}

extern "C" __global__ void depthwise_half(View xv, View yv, const unsigned short* x,
        const float* w, const float* bias, const unsigned short* z,
        unsigned short* y, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
        int act, int has_z, int cl, float p0, float p1, unsigned int n) {
    depthwise_impl(xv, yv, x, w, bias, z, y, kh, kw, sh, sw, ph, pw, dh, dw, act, has_z, cl, p0,
        p1, n);
}
extern "C" __global__ void depthwise_float(View xv, View yv, const float* x, const float* w,
        const float* bias, const float* z, float* y, int kh, int kw, int sh, int sw, int ph,
        int pw, int dh, int dw, int act, int has_z, int cl, float p0, float p1, unsigned int n) {
    depthwise_impl(xv, yv, x, w, bias, z, y, kh, kw, sh, sw, ph, pw, dh, dw, act, has_z, cl, p0,
        p1, n);
}

// The same convolution over dense NHWC memory, C a multiple of K = 16 / sizeof(T): each thread
// takes K channels (16-byte loads and stores) of TX neighbouring outputs along a row, so the
// index arithmetic is paid once per K × TX outputs and the inputs the TX windows share come
// from L1. Weights `wt` are [kh, kw, C] in f32 (a transposed copy, 16-byte loads per tap).
#define DW_TX 4
// K consecutive f32 values from a 16-byte aligned offset (K a multiple of 4).
template <int K>
__device__ __forceinline__ void ld_f32s(const float* p, long long off, float* v) {
    for (int j = 0; j < K; j += 4) ld_chunk(p, off + j, 1, v + j);
}
template <typename T>
__device__ void depthwise_nhwc_impl(const T* x, const float* wt, const float* bias, const T* z, T* y,
        int C, int IH, int IW, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw,
        int dh, int dw, int act, int has_z, float p0, float p1, unsigned int n) {
    const int K = 16 / sizeof(T);
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int CK = C / K, OWT = (OW + DW_TX - 1) / DW_TX;
    unsigned int c0 = (i % CK) * K, r = i / CK;
    int ox0 = (int)(r % OWT) * DW_TX;
    r /= OWT;
    int oy = (int)(r % OH);
    long long b = r / OH;
    float acc[DW_TX][K], v[K], wv[K];
    ld_f32s<K>(bias, c0, v);
    for (int t = 0; t < DW_TX; t++)
        for (int k = 0; k < K; k++) acc[t][k] = v[k];
    const T* xb = x + b * IH * IW * (long long)C + c0;
    for (int ky = 0; ky < kh; ky++) {
        int yy = oy * sh - ph + ky * dh;
        if (yy < 0 || yy >= IH) continue;
        const T* xr = xb + (long long)yy * IW * C;
        for (int kx = 0; kx < kw; kx++) {
            ld_f32s<K>(wt, (long long)(ky * kw + kx) * C + c0, wv);
            for (int t = 0; t < DW_TX; t++) {
                int xx = (ox0 + t) * sw - pw + kx * dw;
                if (ox0 + t >= OW || xx < 0 || xx >= IW) continue;
                ld_chunk(xr, (long long)xx * C, 1, v);
                for (int k = 0; k < K; k++) acc[t][k] += v[k] * wv[k];
            }
        }
    }
    for (int t = 0; t < DW_TX && ox0 + t < OW; t++) {
        long long yo = ((b * OH + oy) * OW + ox0 + t) * (long long)C + c0;
        if (has_z) {
            ld_chunk(z, yo, 1, v);
            for (int k = 0; k < K; k++) acc[t][k] += v[k];
        }
        for (int k = 0; k < K; k++) acc[t][k] = unary_op(act, acc[t][k], p0, p1);
        st_chunk(y, yo, acc[t]);
    }
}

#define DW_NHWC_ENTRY(name, T) \
extern "C" __global__ void name(const T* x, const float* wt, const float* bias, const T* z, T* y, \
        int C, int IH, int IW, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw, \
        int dh, int dw, int act, int has_z, float p0, float p1, unsigned int n) { \
    depthwise_nhwc_impl(x, wt, bias, z, y, C, IH, IW, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, \
        act, has_z, p0, p1, n); \
}
DW_NHWC_ENTRY(depthwise_nhwc_half, unsigned short)
DW_NHWC_ENTRY(depthwise_nhwc_float, float)
