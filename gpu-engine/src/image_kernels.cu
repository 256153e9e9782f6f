// The GPU image kernels (gpu-engine/src/image_kernels.rs compiles them with NVRTC; the test
// engine/tests/resize_kernel_host.rs compiles them for the host to check the arithmetic).
struct Job {
    const unsigned char* src;   // HWC u8, 3 channels, rows packed
    float* dst;                 // CHW f32, 3 planes of dh*dw
    int sh, sw;
    int swap;                   // write channel 2-c to plane c
    int pad;
};

__device__ __forceinline__ int round_coef(float v) {
    int r = (int)rintf(v);
    return min(max(r, -32768), 32767);
}

// One output coordinate's two source indices and 11-bit weights, as image/resize.rs `taps`.
__device__ __forceinline__ void taps(int d, int dst_len, int src_len, int vertical,
        int* first, int* second, int* w0, int* w1) {
    double scale = __ddiv_rn(1.0, __ddiv_rn((double)dst_len, (double)src_len));
    float f = __double2float_rn(__dadd_rn(__dmul_rn(__dadd_rn((double)d, 0.5), scale), -0.5));
    float fl = floorf(f);
    int s = (int)fl;
    float frac = __fsub_rn(f, fl);
    int last = src_len - 1;
    if (vertical) {
        *first = min(max(s, 0), last);
        *second = min(max(s + 1, 0), last);
    } else {
        if (s < 0) { s = 0; frac = 0.0f; }
        else if (s >= last) { s = last; frac = 0.0f; }
        *first = s;
        *second = min(s + 1, last);
    }
    *w0 = round_coef(__fmul_rn(__fsub_rn(1.0f, frac), 2048.0f));
    *w1 = round_coef(__fmul_rn(frac, 2048.0f));
}

// grid: (ceil(dh*dw/256), n). One thread per output pixel, three channels.
extern "C" __global__ void resize_to_chw(const Job* jobs, int dh, int dw) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dh * dw) return;
    const Job j = jobs[blockIdx.y];
    int y = i / dw, x = i - y * dw;
    int plane = dh * dw;
    int out[3];
    if (j.sh == dh && j.sw == dw) {
        const unsigned char* p = j.src + ((long)y * j.sw + x) * 3;
        out[0] = p[0]; out[1] = p[1]; out[2] = p[2];
    } else if (j.sh == 2 * dh && j.sw == 2 * dw) {
        // OpenCV averages 2x2 blocks for an exact halving.
        const unsigned char* r0 = j.src + ((long)(2 * y) * j.sw + 2 * x) * 3;
        const unsigned char* r1 = r0 + (long)j.sw * 3;
        for (int c = 0; c < 3; c++)
            out[c] = ((int)r0[c] + r0[c + 3] + r1[c] + r1[c + 3] + 2) >> 2;
    } else {
        int xf, xs, xw0, xw1, yf, ys, yw0, yw1;
        taps(x, dw, j.sw, 0, &xf, &xs, &xw0, &xw1);
        taps(y, dh, j.sh, 1, &yf, &ys, &yw0, &yw1);
        const unsigned char* a = j.src + (long)yf * j.sw * 3;
        const unsigned char* b = j.src + (long)ys * j.sw * 3;
        for (int c = 0; c < 3; c++) {
            int r0 = a[xf * 3 + c] * xw0 + a[xs * 3 + c] * xw1;
            int r1 = b[xf * 3 + c] * xw0 + b[xs * 3 + c] * xw1;
            int v = (((r0 >> 4) * yw0) >> 16) + (((r1 >> 4) * yw1) >> 16);
            out[c] = min(max((v + 2) >> 2, 0), 255);
        }
    }
    long o = (long)y * dw + x;
    for (int c = 0; c < 3; c++)
        j.dst[(long)c * plane + o] = (float)out[j.swap ? 2 - c : c];
}

// Swaps planes 0 and 2 of a 3-plane CHW f32 tensor of `plane` values per channel.
extern "C" __global__ void swap_planes(const float* x, float* y, long plane) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    float r = x[i], g = x[plane + i], b = x[2 * plane + i];
    y[i] = b; y[plane + i] = g; y[2 * plane + i] = r;
}

// Swaps the first and third channel of packed HWC u8 pixels.
extern "C" __global__ void swap_pixels(const unsigned char* x, unsigned char* y, long pixels) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= pixels) return;
    unsigned char a = x[3 * i], g = x[3 * i + 1], b = x[3 * i + 2];
    y[3 * i] = b; y[3 * i + 1] = g; y[3 * i + 2] = a;
}
