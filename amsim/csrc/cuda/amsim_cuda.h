/*
 * amsim_cuda.h -- the C ABI of the bundled CUDA code, for every caller: the TensorFlow GPU ops
 * (amsim/csrc/tf/gpu.cc) include it, amsim.gemm.cuda and the tests mirror it in ctypes.
 *
 * Two layers: the kernels (gemm_cuda.cu: split, GEMM, patches, transpose; int_gemm_cuda.cu: the
 * integer LUT GEMM), and whole ops built on them (ops_cuda.cu: the TensorFlow ops' sequences of
 * kernel calls, host code only).
 *
 * Pointers are device pointers unless named host or said otherwise; `stream` is a cudaStream_t
 * passed as void * (NULL: the legacy default stream). Each function returns a cudaError_t
 * (0 = success) and only queues work on the stream, except the memory helpers, which are
 * synchronous, and the ops' _workspace queries, which touch no device.
 */
#ifndef AMSIM_CUDA_H
#define AMSIM_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <amsim_gemm.h> /* struct amsim_conv_geometry, enum amsim_rounding, enum amsim_mode */

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices (0 without a driver or a device). */
int amsim_cuda_device_count(void);

/* ---- Kernels (gemm_cuda.cu) ------------------------------------------------------------------ */

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

/* ---- The integer LUT GEMM (int_gemm_cuda.cu) ------------------------------------------------- */

/* amsim_int_gemm (amsim_gemm.h) on the device: for n-bit operand patterns (1 <= bits <= 8; a is
 * M x K and b is K x N, row-major uint8: unsigned operands' values, signed ones' two's-complement
 * patterns), C[i, j] = sum over k of lut[a[i, k]][b[k, j]] (amsim_int_lut_row_offset), exactly.
 * lut: the device copy of the (2^bits x 2^bits) int32 table, row = A's pattern, whose entries are
 * 16-bit circuit outputs: in [-2^15, 2^15) when is_signed, else in [0, 2^16). c: M x N row-major,
 * int32_t (wide = 0) or int64_t (wide = 1): the caller picks the width so that no sum overflows
 * it. A pattern's bits above `bits` are ignored, so no byte reads outside the table. */
int amsim_cuda_int_gemm(const int32_t *lut, int bits, int is_signed, int64_t M, int64_t N, int64_t K,
                        const uint8_t *a, const uint8_t *b, void *c, int wide, void *stream);

/* ---- Whole ops (ops_cuda.cu) --------------------------------------------------------------
 *
 * The TensorFlow ops' sequences of the calls above, defined once for every caller. Each checks
 * its arguments, lays its buffers out in the caller's device workspace and queues its kernels
 * on `stream`, with the CPU ops' operands, roles and order of calls: the results are the CPU
 * ops' bits. Structs and offset arrays are host memory, read during the call.
 *
 * An op's workspace must hold at least the bytes its _workspace function reports for the same
 * sizes, and stay allocated until the stream has run the op. An op with an empty output queues
 * nothing (its workspace is 0 bytes). Arguments an op refuses return AMSIM_CUDA_INVALID_VALUE,
 * before anything is queued; its _workspace function refuses the same sizes.
 */

/* cudaErrorInvalidValue, named for callers without the CUDA headers. */
#define AMSIM_CUDA_INVALID_VALUE 1

/* How an op forms its products: lut is the device copy of the 2^m x 2^m table (row = the left
 * operand's mantissa); fast, v_lo and v_hi are struct amsim_lut's (amsim_gemm.h) for that table;
 * rounding and mode are enum amsim_rounding and enum amsim_mode. */
struct amsim_cuda_arith {
    const float *lut;
    int m, fast, v_lo, v_hi;
    int rounding, mode;
};

/* AmsimMatMul: for t < batch, the row-major M x N matrix at c + t*M*N is A_t (x) B_t, where A_t is
 * the M x K view of a at element offset a_offset[t] with element strides (ars, acs) and B_t is the
 * K x N view of b at b_offset[t] with strides (brs, bcs): a transposed operand is a swap of its
 * strides, a broadcast one repeats its offset. a_offset and b_offset are host arrays of `batch`
 * offsets; an operand whose offset repeats the previous matrix's is not split again. */
int amsim_cuda_matmul_workspace(int64_t M, int64_t N, int64_t K, size_t *bytes);
int amsim_cuda_matmul(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars, int64_t acs, const float *b,
                      int64_t brs, int64_t bcs, int64_t batch, const int64_t *a_offset, const int64_t *b_offset,
                      float *c, const struct amsim_cuda_arith *arith, void *workspace, size_t workspace_bytes,
                      void *stream);

/* The passes of the conv2d family: what each reads and what it writes. */
enum amsim_cuda_conv_pass {
    AMSIM_CUDA_CONV_FORWARD = 0,        /* input x, filter w -> output y */
    AMSIM_CUDA_CONV_BACKPROP_INPUT = 1, /* filter w, output gradient dy -> input gradient dx */
    AMSIM_CUDA_CONV_BACKPROP_FILTER = 2 /* input x, output gradient dy -> filter gradient dw */
};

/* One pass of AmsimConv2D (depthwise = 0: filter (KH, KW, C, Q), HWIO, Q output channels) or of
 * AmsimDepthwiseConv2D (depthwise = 1: filter (KH, KW, C, Q), output channel c*Q + q is input
 * channel c convolved with w[:, :, c, q]). x, y, dx and dy are NHWC; the pointer the pass does
 * not read is ignored; `out` is y, dx or dw. g: the geometry, amsim_conv_geometry_valid and every
 * field below 2^31 (the kernels take ints); q: the filter's last dimension. */
int amsim_cuda_conv2d_workspace(int pass, int depthwise, const struct amsim_conv_geometry *g, int64_t q,
                                size_t *bytes);
int amsim_cuda_conv2d(int pass, int depthwise, const struct amsim_conv_geometry *g, int64_t q, const float *x,
                      const float *w, const float *dy, float *out, const struct amsim_cuda_arith *arith,
                      void *workspace, size_t workspace_bytes, void *stream);

/* ---- Memory and devices (gemm_cuda.cu) ------------------------------------------------------ */

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
