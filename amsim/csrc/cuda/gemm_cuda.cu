/*
 * CUDA kernels of the approximate GEMM (specs/numerics.md section 3).
 *
 * The product is amsim_product.h's, the same header the CPU engine uses.
 * Every output is accumulated by one thread in increasing k from +0, the
 * order of amsim/reference.py, so results equal the CPU backend's bit for bit.
 *
 * C-ABI entry points (declared in amsim_cuda.h) take device pointers and a
 * cudaStream_t (as void *), so TensorFlow custom ops, CuPy (RawModule/ctypes)
 * and numba-cuda can call them directly; all return a cudaError_t (0 = success).
 *
 *   amsim_cuda_split      float32 operand (any strides) -> scales + mantissa indices, and the
 *                         exponent range of its normal scales (device memory, 2 x int32)
 *   amsim_cuda_gemm       C = A (x) B on split operands (row-major, ldc)
 *   amsim_cuda_im2col     NHWC patches for conv2d (rows N*OH*OW, columns KH*KW*C)
 *   amsim_cuda_col2im     its adjoint, amsim_col2im's order of additions (one thread per input element)
 *
 * Tiling: 64 x 64 output tiles, 256 threads with 4 x 4 register blocks, k in
 * steps of 16 through shared memory; the LUT lives in shared memory for
 * M <= 7 (64 KiB; a 256 x 256 table for M = 8 would exceed the 227 KiB a
 * block may have) and is read through the read-only cache otherwise.
 * Each block takes the exact shortcut sa * (sb * v) when the operands'
 * exponent ranges, which the split kernels reduced on the device, lie in the
 * window where both multiplications are exact (amsim_window_exact, the test
 * the CPU kernels use): no round trip to the host decides it.
 */
#include <stdint.h>

#include <amsim_product.h>

#include "amsim_cuda.h"
#include "launch.h"

#define BM 64
#define BN 64
#define BK 16
#define TM 4
#define TN 4
#define THREADS 256
#define SHARED_LUT_MAX_BITS 7

__global__ void range_init_kernel(int32_t *range)
{
    range[0] = 255;  /* empty: lo > hi */
    range[1] = 0;
}

/* Splits x and, when range is given, folds the biased exponents of the normal scales into
 * range[0..1] (min, max): per thread, then per warp, then one atomic per warp. */
__global__ void split_kernel(const float *__restrict__ x, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                             int m, int rounding, float *__restrict__ scale, uint16_t *__restrict__ idx,
                             int32_t *__restrict__ range)
{
    const int64_t n = rows * cols;
    int lo = 255, hi = 0;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = t / cols, c = t % cols;
        uint32_t i;
        const float sc = amsim_split(x[r * rs + c * cs], m, rounding, &i);
        scale[t] = sc;
        idx[t] = (uint16_t)i;
        if (amsim_scale_is_normal(sc)) {
            const int e = (int)((amsim_f2u(sc) >> 23) & 0xFFu);
            lo = min(lo, e);
            hi = max(hi, e);
        }
    }
    if (range == nullptr)
        return;
    for (int offset = AMSIM_MUTANT(SHUFFLE_OFFSET) ? 8 : 16; offset > 0; offset /= 2) {
        lo = min(lo, __shfl_down_sync(0xFFFFFFFFu, lo, offset));
        hi = max(hi, __shfl_down_sync(0xFFFFFFFFu, hi, offset));
    }
    if ((threadIdx.x & 31) == 0 && lo <= hi) {
        atomicMin(range, lo);
        atomicMax(range + 1, hi);
    }
}

struct tiles {
    float as[BK][BM];
    uint16_t ap[BK][BM];
    float bs[BK][BN];
    uint16_t bp[BK][BN];
};

template <bool SHARED_LUT, bool FAST>
__device__ __forceinline__ void gemm_tile(int64_t M, int64_t N, int64_t K, const float *__restrict__ sa,
                                          const uint16_t *__restrict__ pa, const float *__restrict__ sb,
                                          const uint16_t *__restrict__ pb, const float *__restrict__ table, int m,
                                          int mode, float *__restrict__ c, int64_t ldc, int64_t row0, tiles &sh)
{
    float (&as)[BK][BM] = sh.as;
    uint16_t (&ap)[BK][BM] = sh.ap;
    float (&bs)[BK][BN] = sh.bs;
    uint16_t (&bp)[BK][BN] = sh.bp;
    const int P = 1 << m;

    const int64_t col0 = (int64_t)blockIdx.x * BN;
    const int tr = threadIdx.x / (BN / TN), tc = threadIdx.x % (BN / TN);
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;

    for (int64_t k0 = 0; k0 < K; k0 += BK) {
        /* Load the A tile (BM x BK) transposed and the B tile (BK x BN); pad with zeros. */
        for (int t = threadIdx.x; t < BM * BK; t += THREADS) {
            const int r = t / BK, kk = t % BK;
            const int64_t gr = row0 + r, gk = k0 + kk;
            const bool in = gr < M && gk < K - AMSIM_MUTANT(TILE_BOUND);
            as[kk][r] = in ? sa[gr * K + gk] : 0.0f;
            ap[kk][r] = in ? pa[gr * K + gk] : 0;
        }
        for (int t = threadIdx.x; t < BK * BN; t += THREADS) {
            const int kk = t / BN, cc = t % BN;
            const int64_t gk = k0 + kk, gc = col0 + cc;
            const bool in = gk < K && gc < N;
            bs[kk][cc] = in ? sb[gk * N + gc] : 0.0f;
            bp[kk][cc] = in ? pb[gk * N + gc] : 0;
        }
        if (!AMSIM_MUTANT(DROPPED_SYNC))
            __syncthreads();
        const int kn = (K - k0 < BK) ? (int)(K - k0) : BK;
        for (int step = 0; step < kn; ++step) {
            const int kk = AMSIM_MUTANT(REVERSED_SUM) ? kn - 1 - step : step;
            float a_s[TM], b_s[TN];
            int a_p[TM], b_p[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                a_s[i] = as[kk][tr * TM + i];
                a_p[i] = ap[kk][tr * TM + i];
            }
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                b_s[j] = bs[kk][tc * TN + j];
                b_p[j] = bp[kk][tc * TN + j];
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    const float v = SHARED_LUT ? table[a_p[i] * P + b_p[j]] : __ldg(table + a_p[i] * P + b_p[j]);
                    /* Both branches give the exact product; FAST only inside the window. */
                    const float prod = FAST ? __fmul_rn(a_s[i], __fmul_rn(b_s[j], v)) : amsim_mul_split(a_s[i], b_s[j], v, mode);
                    acc[i][j] = __fadd_rn(acc[i][j], prod);
                }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int64_t r = row0 + tr * TM + i, cc = col0 + tc * TN + j;
            if (r < M && cc < N)
                c[r * ldc + cc] = acc[i][j];
        }
}

/* range_a, range_b: the operands' exponent ranges from amsim_cuda_split; null, or fast_allowed = 0
 * (a LUT with zero or non-finite entries), always applies every rule of amsim_mul_split. */
template <bool SHARED_LUT>
__global__ void __launch_bounds__(THREADS)
gemm_kernel(int64_t M, int64_t N, int64_t K, const float *__restrict__ sa, const uint16_t *__restrict__ pa,
            const int32_t *__restrict__ range_a, const float *__restrict__ sb, const uint16_t *__restrict__ pb,
            const int32_t *__restrict__ range_b, const float *__restrict__ lut, int m, int v_lo, int v_hi, int mode,
            int fast_allowed, float *__restrict__ c, int64_t ldc)
{
    AMSIM_DYNAMIC_SHARED(float, shared_lut);
    __shared__ tiles sh;
    const int P = 1 << m;
    if (SHARED_LUT) {
        for (int t = threadIdx.x; t < P * P; t += THREADS)
            shared_lut[t] = lut[t];
    }
    const float *table = SHARED_LUT ? shared_lut : lut;
    /* the same answer in every thread: the branch is uniform */
    const bool fast = fast_allowed && range_a && range_b &&
                      amsim_window_exact(range_a[0], range_a[1], range_b[0], range_b[1], v_lo, v_hi, mode);
    /* Each tile ends with a barrier, so the next one may load into the shared tiles at once. */
    for (int64_t row0 = (int64_t)blockIdx.y * BM; row0 < M; row0 += (int64_t)gridDim.y * BM) {
        if (fast)
            gemm_tile<SHARED_LUT, true>(M, N, K, sa, pa, sb, pb, table, m, mode, c, ldc, row0, sh);
        else
            gemm_tile<SHARED_LUT, false>(M, N, K, sa, pa, sb, pb, table, m, mode, c, ldc, row0, sh);
    }
}

__global__ void im2col_kernel(const float *__restrict__ x, int n, int h, int w, int ch, int kh, int kw, int sh,
                              int sw, int dh, int dw, int pt, int pl, int oh, int ow, float *__restrict__ out)
{
    const int64_t cols = (int64_t)kh * kw * ch, total = (int64_t)n * oh * ow * cols;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = t / cols, col = t % cols;
        const int c = (int)(col % ch), j = (int)((col / ch) % kw), i = (int)(col / ((int64_t)ch * kw));
        const int ox = (int)(row % ow), oy = (int)((row / ow) % oh), b = (int)(row / ((int64_t)ow * oh));
        const int y = oy * sh + i * dh - pt, xx = ox * sw + j * dw - pl;
        out[t] = (y >= 0 && y < h && xx >= 0 && xx < w) ? x[(((int64_t)b * h + y) * w + xx) * ch + c] : 0.0f;
    }
}

/* dx[b, y, x, c] = +0 + the patch entries that read it, in increasing (i, j): the order of
 * amsim_col2im, so the sums are the CPU's bit for bit. Tap (i, j) reads (y, x) from output
 * position (oy, ox) when y = oy * sh + i * dh - pt (and likewise for x): at most one per tap. */
__global__ void col2im_kernel(const float *__restrict__ cols, int n, int h, int w, int ch, int kh, int kw, int sh,
                              int sw, int dh, int dw, int pt, int pl, int oh, int ow, float *__restrict__ dx)
{
    const int64_t row_len = (int64_t)kh * kw * ch, total = (int64_t)n * h * w * ch;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(t % ch), x = (int)((t / ch) % w), y = (int)((t / ((int64_t)ch * w)) % h);
        const int64_t b = t / ((int64_t)ch * w * h);
        float acc = 0.0f;
        for (int i = 0; i < kh; ++i) {
            const int ty = y + pt - i * dh;
            if (ty < 0 || ty % sh != 0 || ty / sh >= oh)
                continue;
            const int64_t row0 = (b * oh + ty / sh) * ow;
            for (int j = 0; j < kw; ++j) {
                const int tx = x + pl - j * dw;
                if (tx < 0 || tx % sw != 0 || tx / sw >= ow)
                    continue;
                acc = __fadd_rn(acc, cols[(row0 + tx / sw) * row_len + ((int64_t)i * kw + j) * ch + c]);
            }
        }
        dx[t] = acc;
    }
}

/* dst[j][i][0:block] = src[i][j][0:block] for i < rows, j < cols: a transpose of blocks, a
 * exact copy. One thread per element of dst, so its stores are contiguous. */
__global__ void transpose_kernel(const float *__restrict__ src, int64_t rows, int64_t cols, int64_t block,
                                 float *__restrict__ dst)
{
    const int64_t total = rows * cols * block;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t e = t % block, i = (t / block) % rows, j = t / (block * rows);
        dst[t] = src[(i * cols + j) * block + e];
    }
}

static int grid_for(int64_t n)
{
    const int64_t blocks = (n + 255) / 256;
    return (int)(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

/* A runtime call's error, returned to the caller and cleared from cudaGetLastError: left there,
 * the next kernel launch's check would report it as its own. */
static int returned(cudaError_t rc)
{
    if (rc != cudaSuccess)
        cudaGetLastError();
    return (int)rc;
}

extern "C" {

int amsim_cuda_device_count(void)
{
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

int amsim_cuda_split(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m, int rounding,
                     float *scale, uint16_t *idx, int32_t *range, void *stream)
{
    const cudaStream_t s = (cudaStream_t)stream;
    if (range)
        AMSIM_LAUNCH(range_init_kernel, 1, 1, 0, s)(range);
    if (rows * cols > 0)
        AMSIM_LAUNCH(split_kernel, grid_for(rows * cols), 256, 0, s)(x, rows, cols, rs, cs, m, rounding, scale, idx, range);
    return (int)cudaGetLastError();
}

int amsim_cuda_gemm(int64_t M, int64_t N, int64_t K, const float *sa, const uint16_t *pa, const int32_t *range_a,
                    const float *sb, const uint16_t *pb, const int32_t *range_b, const float *lut, int m, int v_lo,
                    int v_hi, int mode, int fast_allowed, float *c, int64_t ldc, void *stream)
{
    if (M == 0 || N == 0)
        return 0;
    const int64_t row_tiles = (M + BM - 1) / BM;
    const dim3 grid((unsigned)((N + BN - 1) / BN),
                    (unsigned)(row_tiles < AMSIM_CUDA_GRID_Y_MAX ? row_tiles : AMSIM_CUDA_GRID_Y_MAX));
    const cudaStream_t s = (cudaStream_t)stream;
    if (m <= SHARED_LUT_MAX_BITS) {
        const size_t bytes = sizeof(float) << (2 * m);
        const cudaError_t rc = cudaFuncSetAttribute(gemm_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    (int)bytes);
        if (rc != cudaSuccess)
            return returned(rc);
        AMSIM_LAUNCH(gemm_kernel<true>, grid, THREADS, bytes, s)(M, N, K, sa, pa, range_a, sb, pb, range_b, lut, m,
                                                                 v_lo, v_hi, mode, fast_allowed, c, ldc);
    } else {
        AMSIM_LAUNCH(gemm_kernel<false>, grid, THREADS, 0, s)(M, N, K, sa, pa, range_a, sb, pb, range_b, lut, m,
                                                              v_lo, v_hi, mode, fast_allowed, c, ldc);
    }
    return (int)cudaGetLastError();
}

int amsim_cuda_im2col(const float *x, int n, int h, int w, int ch, int kh, int kw, int sh, int sw, int dh, int dw,
                      int pt, int pl, int oh, int ow, float *out, void *stream)
{
    const int64_t total = (int64_t)n * oh * ow * kh * kw * ch;
    if (total == 0)
        return 0;
    AMSIM_LAUNCH(im2col_kernel, grid_for(total), 256, 0, (cudaStream_t)stream)(x, n, h, w, ch, kh, kw, sh, sw, dh, dw,
                                                                               pt, pl, oh, ow, out);
    return (int)cudaGetLastError();
}

int amsim_cuda_col2im(const float *cols, int n, int h, int w, int ch, int kh, int kw, int sh, int sw, int dh, int dw,
                      int pt, int pl, int oh, int ow, float *dx, void *stream)
{
    const int64_t total = (int64_t)n * h * w * ch;
    if (total == 0)
        return 0;
    AMSIM_LAUNCH(col2im_kernel, grid_for(total), 256, 0, (cudaStream_t)stream)(cols, n, h, w, ch, kh, kw, sh, sw, dh,
                                                                               dw, pt, pl, oh, ow, dx);
    return (int)cudaGetLastError();
}

int amsim_cuda_transpose(const float *src, int64_t rows, int64_t cols, int64_t block, float *dst, void *stream)
{
    const int64_t total = rows * cols * block;
    if (total == 0)
        return 0;
    AMSIM_LAUNCH(transpose_kernel, grid_for(total), 256, 0, (cudaStream_t)stream)(src, rows, cols, block, dst);
    return (int)cudaGetLastError();
}

/* Small helpers so that Python can drive the kernels with ctypes alone. */
int amsim_cuda_malloc(void **ptr, size_t bytes) { return returned(cudaMalloc(ptr, bytes ? bytes : 1)); }
int amsim_cuda_free(void *ptr) { return returned(cudaFree(ptr)); }
int amsim_cuda_to_device(void *dst, const void *src, size_t bytes)
{
    return returned(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
int amsim_cuda_to_host(void *dst, const void *src, size_t bytes)
{
    return returned(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
int amsim_cuda_synchronize(void) { return returned(cudaDeviceSynchronize()); }
const char *amsim_cuda_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }
int amsim_cuda_device_arch(void)
{
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess)
        return 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    return major * 10 + minor;
}

} /* extern "C" */
