/*
 * amsim_cuda.h -- the C ABI of the bundled CUDA kernels (gemm_cuda.cu), for every caller:
 * the TensorFlow GPU ops (amsim/csrc/tf/gpu.cc) include it, amsim.gemm.cuda mirrors it in ctypes.
 *
 * Pointers are device pointers unless named host; `stream` is a cudaStream_t passed as void *
 * (NULL: the legacy default stream). Each function returns a cudaError_t (0 = success) and only
 * queues work on the stream, except the memory helpers, which are synchronous.
 */
#ifndef AMSIM_CUDA_H
#define AMSIM_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices (0 without a driver or a device). */
int amsim_cuda_device_count(void);

/* Splits the rows x cols float32 operand x (element strides rs, cs: a transposed view is a
 * swap of the strides) into row-major scales and M-bit mantissa indices. When range is not
 * NULL, range[0..1] receives the smallest and largest biased exponent of the normal scales,
 * which amsim_cuda_gemm's exactness test reads on the device. */
int amsim_cuda_split(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m, int rounding,
                     float *scale, uint16_t *idx, int32_t *range, void *stream);

/* C = A (x) B on split operands: A is M x K, B is K x N (row-major), C row-major with leading
 * dimension ldc. lut: the device copy of the 2^m x 2^m table; v_lo, v_hi and fast_allowed are
 * struct amsim_lut's v_lo, v_hi and fast. Each output is summed in increasing k from +0. */
int amsim_cuda_gemm(int64_t M, int64_t N, int64_t K, const float *sa, const uint16_t *pa, const int32_t *range_a,
                    const float *sb, const uint16_t *pb, const int32_t *range_b, const float *lut, int m, int v_lo,
                    int v_hi, int mode, int fast_allowed, float *c, int64_t ldc, void *stream);

/* conv2d patches of an NHWC input: out is (n*oh*ow) x (kh*kw*ch), amsim_im2col's layout. */
int amsim_cuda_im2col(const float *x, int n, int h, int w, int ch, int kh, int kw, int sh, int sw, int dh, int dw,
                      int pt, int pl, int oh, int ow, float *out, void *stream);

/* The adjoint of amsim_cuda_im2col, amsim_col2im's arithmetic exactly: each element of the
 * NHWC dx is +0 plus the patch-matrix entries that cover it, added in increasing (kh, kw). One
 * thread per element of dx: deterministic, no atomics. */
int amsim_cuda_col2im(const float *cols, int n, int h, int w, int ch, int kh, int kw, int sh, int sw, int dh, int dw,
                      int pt, int pl, int oh, int ow, float *dx, void *stream);

/* dst[j][i][0:block] = src[i][j][0:block] for i < rows, j < cols: a transpose of blocks of
 * `block` floats (an exact copy), e.g. a channel-major matrix back to NHWC's channel-minor layout. */
int amsim_cuda_transpose(const float *src, int64_t rows, int64_t cols, int64_t block, float *dst, void *stream);

/* Memory helpers (synchronous), so that callers without the CUDA runtime can drive the kernels. */
int amsim_cuda_malloc(void **ptr, size_t bytes);
int amsim_cuda_free(void *ptr);
int amsim_cuda_to_device(void *dst, const void *host_src, size_t bytes);
int amsim_cuda_to_host(void *host_dst, const void *src, size_t bytes);
int amsim_cuda_synchronize(void);
const char *amsim_cuda_error_string(int code);
/* Compute capability of the current device as major * 10 + minor (0 without one). */
int amsim_cuda_device_arch(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* AMSIM_CUDA_H */
