// Scaled dot-product attention in one step (plan::AttentionStep), fp16 in and out with fp32
// accumulation on the tensor cores (mma.sync m16n8k16), the scores kept in registers: for
// each item n and head h, o = softmax(scale · q · kᵀ) · v over rows of D values. Appended to
// kernels.cu by kernels.rs (it uses that file's f2h, h2f and Chunk).
//
// A block is four warps; each warp owns 16 query rows and walks the keys in tiles of 64 that
// the block stages in shared memory (K and V as they are), keeping the running maximum
// and sum of each row (the online softmax), so any number of keys fits.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"):
// lane = 4·g + t; A (16 × 16, row-major) holds rows g and g + 8, columns 2t, 2t + 1 and
// 2t + 8, 2t + 9 in four 32-bit registers (row g cols 2t.., row g + 8 cols 2t.., row g cols
// 2t + 8.., row g + 8 cols 2t + 8..); B (16 × 8, k by n) holds k = 2t, 2t + 1 and 2t + 8,
// 2t + 9 of column g in two; C/D (16 × 8, f32) holds row g cols 2t, 2t + 1, then row g + 8.
// Each 32-bit register packs two fp16 values, the lower index in the low half.
//
// The host build of the tests (plan/attention_kernel_tests.rs) defines ATTENTION_HOST and
// emulates a warp's mma and shuffles with real threads.

#define ATT_BQ 64
#define ATT_BK 64
#define ATT_THREADS 128

// Where element (n, h, row, j) of a [N, heads, rows, D] operand is: offset + n·batch + h·head
// + row·row_stride + j (plan::HeadView). Every field is a multiple of 8 (16 bytes).
struct Heads {
    long long offset, batch, head, row;
};

#ifndef ATTENTION_HOST
__device__ __forceinline__ void mma16816(float* c, const unsigned int* a, const unsigned int* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Four 8 × 8 fp16 matrices from shared memory, transposed: lanes 8i .. 8i + 7 hand in the
// addresses of matrix i's rows, and lane 4g + t receives, in r[i], matrix i's elements
// [2t][g] and [2t + 1][g] (PTX ISA, ldmatrix). Reading row-major V this way yields the B
// fragments of p · v, so V is staged as it is (16-byte stores) instead of transposed.
__device__ __forceinline__ void ldsm_x4_trans(unsigned int* r, const unsigned short* p) {
    unsigned int a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
        : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
#endif

// Across the four lanes that hold one row's columns (lanes 4g .. 4g + 3).
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

__device__ __forceinline__ unsigned int pack_h2(float lo, float hi) {
    return (unsigned int)f2h(lo) | ((unsigned int)f2h(hi) << 16);
}

template <int D>
__device__ void attention_impl(const unsigned short* q, const unsigned short* k,
        const unsigned short* v, unsigned short* o, Heads qv, Heads kv, Heads vv, Heads ov,
        int lq, int lk, float scale_log2) {
    // Rows of 16-byte multiples, so that a key's 16-byte chunks stay aligned.
    // Rows 144 bytes apart for D = 64 (D + 8 halves): the 8 rows one ldmatrix or one quad of
    // fragment loads touches fall in distinct banks.
    alignas(16) __shared__ unsigned short ks[ATT_BK][D + 8];
    alignas(16) __shared__ unsigned short vs[ATT_BK][D + 8];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const long long h = blockIdx.y, n = blockIdx.z;
    const int r0 = blockIdx.x * ATT_BQ + warp * 16;
    const unsigned short* qb = q + qv.offset + n * qv.batch + h * qv.head;
    const unsigned short* kb = k + kv.offset + n * kv.batch + h * kv.head;
    const unsigned short* vb = v + vv.offset + n * vv.batch + h * vv.head;
    unsigned short* ob = o + ov.offset + n * ov.batch + h * ov.head;

    // This warp's 16 rows of q as A fragments, D / 16 of them (rows past lq are zeros).
    unsigned int qa[D / 16][4];
#pragma unroll
    for (int c = 0; c < D / 16; c++) {
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int row = r0 + g + 8 * (r & 1), col = c * 16 + 2 * t + 8 * (r >> 1);
            qa[c][r] = row < lq
                ? *reinterpret_cast<const unsigned int*>(qb + (long long)row * qv.row + col)
                : 0u;
        }
    }
    float acc[D / 8][4];
#pragma unroll
    for (int c = 0; c < D / 8; c++)
        for (int i = 0; i < 4; i++) acc[c][i] = 0.0f;
    // Rows g and g + 8: the running maximum (of scale·log2(e)·score) and this thread's part of
    // the running sum.
    float m[2] = {-INF, -INF}, l[2] = {0.0f, 0.0f};

    for (int j0 = 0; j0 < lk; j0 += ATT_BK) {
        __syncthreads();
        // Stage keys j0 .. j0 + 63 of k and v, 16 bytes at a time; zeros past lk so that the
        // masked columns multiply zeros, never stale values.
        for (int e = threadIdx.x; e < ATT_BK * D / 8; e += ATT_THREADS) {
            const int r = e / (D / 8), c8 = (e % (D / 8)) * 8;
            Chunk kc = {{0u, 0u, 0u, 0u}}, vc = {{0u, 0u, 0u, 0u}};
            if (j0 + r < lk) {
                kc = *reinterpret_cast<const Chunk*>(kb + (long long)(j0 + r) * kv.row + c8);
                vc = *reinterpret_cast<const Chunk*>(vb + (long long)(j0 + r) * vv.row + c8);
            }
            *reinterpret_cast<Chunk*>(&ks[r][c8]) = kc;
            *reinterpret_cast<Chunk*>(&vs[r][c8]) = vc;
        }
        __syncthreads();
        // Scores of this warp's rows against the 64 keys: 8 C fragments of 16 × 8.
        float s[ATT_BK / 8][4];
#pragma unroll
        for (int nc = 0; nc < ATT_BK / 8; nc++) {
            for (int i = 0; i < 4; i++) s[nc][i] = 0.0f;
#pragma unroll
            for (int c = 0; c < D / 16; c++) {
                unsigned int b[2];
                b[0] = *reinterpret_cast<const unsigned int*>(&ks[nc * 8 + g][c * 16 + 2 * t]);
                b[1] = *reinterpret_cast<const unsigned int*>(&ks[nc * 8 + g][c * 16 + 2 * t + 8]);
                mma16816(s[nc], qa[c], b);
            }
        }
        float tmax[2] = {-INF, -INF};
#pragma unroll
        for (int nc = 0; nc < ATT_BK / 8; nc++) {
            for (int i = 0; i < 4; i++) {
                const int key = j0 + nc * 8 + 2 * t + (i & 1);
                const float x = key < lk ? s[nc][i] * scale_log2 : -INF;
                s[nc][i] = x;
                tmax[i >> 1] = fmaxf(tmax[i >> 1], x);
            }
        }
        float corr[2];
        for (int r = 0; r < 2; r++) {
            // At least one key of the tile is real (j0 < lk), so the new maximum is finite.
            const float mn = fmaxf(m[r], quad_max(tmax[r]));
            corr[r] = exp2f(m[r] - mn);
            m[r] = mn;
            l[r] *= corr[r];
        }
#pragma unroll
        for (int c = 0; c < D / 8; c++) {
            acc[c][0] *= corr[0];
            acc[c][1] *= corr[0];
            acc[c][2] *= corr[1];
            acc[c][3] *= corr[1];
        }
#pragma unroll
        for (int nc = 0; nc < ATT_BK / 8; nc++) {
            for (int i = 0; i < 4; i++) {
                const float p = exp2f(s[nc][i] - m[i >> 1]);
                s[nc][i] = p;
                l[i >> 1] += p;
            }
        }
        // o += p · v: p's C fragments are the A fragments of 16 keys each, v's columns the B.
#pragma unroll
        for (int kc = 0; kc < ATT_BK / 16; kc++) {
            unsigned int pa[4];
            pa[0] = pack_h2(s[2 * kc][0], s[2 * kc][1]);
            pa[1] = pack_h2(s[2 * kc][2], s[2 * kc][3]);
            pa[2] = pack_h2(s[2 * kc + 1][0], s[2 * kc + 1][1]);
            pa[3] = pack_h2(s[2 * kc + 1][2], s[2 * kc + 1][3]);
            // Keys kc·16 .. + 15 by dims c·8 .. + 15: matrices (keys + 0..7, dims c), (keys
            // + 8..15, dims c), then the same for dims c + 1.
#pragma unroll
            for (int c = 0; c < D / 8; c += 2) {
                unsigned int b[4];
                ldsm_x4_trans(b, &vs[kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8]
                                    [(c + (lane >> 4)) * 8]);
                mma16816(acc[c], pa, b);
                mma16816(acc[c + 1], pa, b + 2);
            }
        }
    }
    const float inv[2] = {1.0f / quad_sum(l[0]), 1.0f / quad_sum(l[1])};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = r0 + g + 8 * r;
        if (row >= lq) continue;
        unsigned short* out = ob + (long long)row * ov.row + 2 * t;
#pragma unroll
        for (int c = 0; c < D / 8; c++)
            *reinterpret_cast<unsigned int*>(out + c * 8) =
                pack_h2(acc[c][2 * r] * inv[r], acc[c][2 * r + 1] * inv[r]);
    }
}

#define ATTENTION_ENTRY(D) \
extern "C" __global__ void attention_d##D(const unsigned short* q, const unsigned short* k, \
        const unsigned short* v, unsigned short* o, Heads qv, Heads kv, Heads vv, Heads ov, \
        int lq, int lk, float scale_log2) { \
    attention_impl<D>(q, k, v, o, qv, kv, vv, ov, lq, lk, scale_log2); \
}
ATTENTION_ENTRY(16)
ATTENTION_ENTRY(32)
ATTENTION_ENTRY(64)
ATTENTION_ENTRY(128)
