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

// Output pixel (x, y) of `src` (sh × sw, HWC u8, 3 channels) resized to dh × dw, per channel.
__device__ __forceinline__ void resize_pixel(const unsigned char* src, int sh, int sw, int x,
        int y, int dh, int dw, int out[3]) {
    if (sh == dh && sw == dw) {
        const unsigned char* p = src + ((long)y * sw + x) * 3;
        out[0] = p[0]; out[1] = p[1]; out[2] = p[2];
    } else if (sh == 2 * dh && sw == 2 * dw) {
        // OpenCV averages 2x2 blocks for an exact halving.
        const unsigned char* r0 = src + ((long)(2 * y) * sw + 2 * x) * 3;
        const unsigned char* r1 = r0 + (long)sw * 3;
        for (int c = 0; c < 3; c++)
            out[c] = ((int)r0[c] + r0[c + 3] + r1[c] + r1[c + 3] + 2) >> 2;
    } else {
        int xf, xs, xw0, xw1, yf, ys, yw0, yw1;
        taps(x, dw, sw, 0, &xf, &xs, &xw0, &xw1);
        taps(y, dh, sh, 1, &yf, &ys, &yw0, &yw1);
        const unsigned char* a = src + (long)yf * sw * 3;
        const unsigned char* b = src + (long)ys * sw * 3;
        for (int c = 0; c < 3; c++) {
            int r0 = a[xf * 3 + c] * xw0 + a[xs * 3 + c] * xw1;
            int r1 = b[xf * 3 + c] * xw0 + b[xs * 3 + c] * xw1;
            int v = (((r0 >> 4) * yw0) >> 16) + (((r1 >> 4) * yw1) >> 16);
            out[c] = min(max((v + 2) >> 2, 0), 255);
        }
    }
}

// grid: (ceil(dh*dw/256), n). One thread per output pixel, three channels.
extern "C" __global__ void resize_to_chw(const Job* jobs, int dh, int dw) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dh * dw) return;
    const Job j = jobs[blockIdx.y];
    int y = i / dw, x = i - y * dw;
    int plane = dh * dw;
    int out[3];
    resize_pixel(j.src, j.sh, j.sw, x, y, dh, dw, out);
    long o = (long)y * dw + x;
    for (int c = 0; c < 3; c++)
        j.dst[(long)c * plane + o] = (float)out[j.swap ? 2 - c : c];
}

// One item of a letterbox or resize-and-pad: the image resized to nh × nw at (left, top) of a
// canvas of `pad` (per source channel), as LetterBoxMat / ResizePadMat then Mat2Tensor make it.
struct CanvasJob {
    const unsigned char* src;   // HWC u8, 3 channels, rows packed
    float* dst;                 // CHW f32, 3 planes of the canvas
    int sh, sw;
    int nh, nw;                 // the resized image
    int top, left;              // its corner on the canvas
    int swap;                   // write channel 2-c to plane c
    int pad[3];
};

// grid: (ceil(ch*cw/256), n). One thread per canvas pixel, three channels.
extern "C" __global__ void canvas_to_chw(const CanvasJob* jobs, int ch, int cw) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= ch * cw) return;
    const CanvasJob j = jobs[blockIdx.y];
    int y = i / cw, x = i - y * cw;
    int ry = y - j.top, rx = x - j.left;
    int out[3];
    if (ry < 0 || rx < 0 || ry >= j.nh || rx >= j.nw) {
        out[0] = j.pad[0]; out[1] = j.pad[1]; out[2] = j.pad[2];
    } else {
        resize_pixel(j.src, j.sh, j.sw, rx, ry, j.nh, j.nw, out);
    }
    int plane = ch * cw;
    long o = (long)y * cw + x;
    for (int c = 0; c < 3; c++)
        j.dst[(long)c * plane + o] = (float)out[j.swap ? 2 - c : c];
}

// One item of an affine warp (WarpAffineTensor): the source point of each output pixel is
// m · (x, y, 1), the inverse of the user's matrix, computed on the host.
struct WarpJob {
    const unsigned char* src;   // HWC u8, 3 channels, rows packed
    unsigned char* dst;         // HWC u8, 3 channels, h × w
    int sh, sw;
    double m[6];
};

__device__ __forceinline__ float warp_tap(const WarpJob& j, long x, long y, int c) {
    if (x < 0 || y < 0 || x >= j.sw || y >= j.sh) return 0.0f;
    return (float)j.src[(y * j.sw + x) * 3 + c];
}

// grid: (ceil(h*w/256), n). One thread per output pixel, three channels: image/warp.rs `warp`
// operation for operation (no contracted multiply-adds), so the CPU's WarpAffineMat and this
// agree bit for bit: bilinear from the four neighbours, a neighbour outside the image 0.
extern "C" __global__ void warp_affine_hwc(const WarpJob* jobs, int h, int w) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= h * w) return;
    const WarpJob j = jobs[blockIdx.y];
    int y = i / w, x = i - y * w;
    double xf = (double)x, yf = (double)y;
    double sx = __dadd_rn(__dadd_rn(__dmul_rn(j.m[0], xf), __dmul_rn(j.m[1], yf)), j.m[2]);
    double sy = __dadd_rn(__dadd_rn(__dmul_rn(j.m[3], xf), __dmul_rn(j.m[4], yf)), j.m[5]);
    unsigned char* o = j.dst + (long)i * 3;
    if (!(fabs(sx) < 1e9 && fabs(sy) < 1e9)) {
        o[0] = 0; o[1] = 0; o[2] = 0;
        return;
    }
    double fx = floor(sx), fy = floor(sy);
    float ax = __double2float_rn(__dsub_rn(sx, fx));
    float ay = __double2float_rn(__dsub_rn(sy, fy));
    long x0 = (long)fx, y0 = (long)fy;
    float bx = __fsub_rn(1.0f, ax), by = __fsub_rn(1.0f, ay);
    for (int c = 0; c < 3; c++) {
        float top = __fadd_rn(__fmul_rn(warp_tap(j, x0, y0, c), bx),
                              __fmul_rn(warp_tap(j, x0 + 1, y0, c), ax));
        float bottom = __fadd_rn(__fmul_rn(warp_tap(j, x0, y0 + 1, c), bx),
                                 __fmul_rn(warp_tap(j, x0 + 1, y0 + 1, c), ax));
        float v = __fadd_rn(__fmul_rn(top, by), __fmul_rn(bottom, ay));
        o[c] = (unsigned char)fminf(fmaxf(roundf(v), 0.0f), 255.0f);
    }
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
