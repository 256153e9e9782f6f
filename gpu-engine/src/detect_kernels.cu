// The detection post-processing's kernels, compiled once per GPU by NVRTC (detect_kernels.rs):
// a model's fp16 output widened to f32 where it stays on the GPU, and the first pass over a
// YOLOv8 / YOLO11 head, so that only the anchors above the confidence threshold come back to
// the host (a few hundred of 8,400 at 640) instead of the whole [4 + classes, anchors] tensor.
// fp16 values are raw 16-bit words converted with the PTX instruction, as in kernels.cu.

// The host build of the tests (engine/tests/yolo_kernel_host.rs) defines DETECT_HOST and its
// own conversion and atomics.
#ifndef DETECT_HOST
__device__ __forceinline__ float h2f(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
#endif

// Neither infinite nor NaN (NaN compares false).
__device__ __forceinline__ bool finite(float x) { return fabsf(x) <= 3.402823466e38f; }

// n fp16 words -> n f32 values.
extern "C" __global__ void half_to_float(const unsigned short* __restrict__ x,
        float* __restrict__ y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = h2f(x[i]);
}

// What the host reads back per item, in 32-bit words: a header of 8 words (the number of
// candidates, then 1 where the head holds a value that is not finite), then one record of 7
// words per candidate: anchor, class, score, cx, cy, w, h (the last five as f32 bits).
#define HEADER_WORDS 8
#define RECORD_WORDS 7

// One thread per anchor of one item's head, row-major f32 [channels, anchors]: rows 0-3 the
// box (centre, width, height), the others one score per class. An anchor's class is its best
// scoring one, the first of equal scores (a strictly greater score replaces it), as the host's
// PostProcYoloV8 picks it; above `conf` the anchor takes the next record from the header's
// counter. Records come back in no particular order: the host sorts them by anchor, so the
// candidates are the host path's, value for value. `out`'s header must be zero at launch and
// hold room for `anchors` records.
extern "C" __global__ void yolo_candidates(const float* __restrict__ head, int channels,
        int anchors, float conf, unsigned int* __restrict__ out) {
    int a = blockIdx.x * blockDim.x + threadIdx.x;
    if (a >= anchors) return;
    bool ok = true;
    float best = -__int_as_float(0x7f800000);
    int cls = 0;
    for (int r = 4; r < channels; r++) {
        // Consecutive threads read consecutive anchors of one row: coalesced.
        float s = head[(long long)r * anchors + a];
        ok = ok && finite(s);
        if (s > best) {
            best = s;
            cls = r - 4;
        }
    }
    float box[4];
    for (int r = 0; r < 4; r++) {
        box[r] = head[(long long)r * anchors + a];
        ok = ok && finite(box[r]);
    }
    if (!ok) atomicOr(&out[1], 1u);
    if (!(best > conf)) return;
    unsigned int slot = atomicAdd(&out[0], 1u);
    if (slot >= (unsigned int)anchors) return;
    unsigned int* rec = out + HEADER_WORDS + (long long)slot * RECORD_WORDS;
    rec[0] = (unsigned int)a;
    rec[1] = (unsigned int)cls;
    rec[2] = __float_as_uint(best);
    for (int r = 0; r < 4; r++) rec[3 + r] = __float_as_uint(box[r]);
}
