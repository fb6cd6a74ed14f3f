/*
 * amsim_gemm.h -- the approximate GEMM engine's public C interface.
 *
 * The only header a caller of the engine includes: amsim.gemm's cffi binding
 * (which reads its declarations from the block between AMSIM_CDEF_BEGIN and
 * AMSIM_CDEF_END below, so they are never restated in Python) and the
 * TensorFlow ops of amsim.keras. docs/numerics.md section 3 is the contract:
 *
 *     C[i, j] = sum over k, in increasing k from +0, in float32, of A[i, k] (x) B[k, j]
 *
 * where (x) is amsim_product.h's approximate product. Every kernel, plan and
 * thread count gives the same bits (the order of accumulation is fixed), and
 * every function may be called from several threads at once.
 *
 * Usage:
 *     struct amsim_lut lut;
 *     void *storage = aligned_alloc(64, amsim_lut_storage_bytes(m));
 *     amsim_lut_init(&lut, table, m, storage);      (table: 2^M x 2^M float32, row = A's mantissa)
 *     struct amsim_gemm_args g = {.M = M, .N = N, .K = K, .a = a, .ars = K, .acs = 1,
 *                                 .b = b, .brs = N, .bcs = 1, .c = c, .ldc = N,
 *                                 .rounding = AMSIM_TRUNCATE, .mode = AMSIM_MODE_IEEE,
 *                                 .kernel = AMSIM_KERNEL_AUTO, .threads = 0};
 *     int rc = amsim_gemm(&lut, &g);                (0, or a negative enum amsim_status)
 */
#ifndef AMSIM_GEMM_H
#define AMSIM_GEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* AMSIM_CDEF_BEGIN: plain declarations only (cffi parses them; no preprocessor lines inside) */

/* Operand conversion to M bits (numerics.md 2.1) and product semantics (numerics.md 2.2). */
enum amsim_rounding { AMSIM_TRUNCATE = 0, AMSIM_RNE = 1 };
enum amsim_mode { AMSIM_MODE_IEEE = 0, AMSIM_MODE_APPROXTRAIN = 1 };

/* The kernels. AUTO lets the planner choose among the exact fast kernels (falling back to
 * DIRECT outside their window); any other value forces that kernel. */
enum amsim_kernel {
    AMSIM_KERNEL_AUTO = -1,
    AMSIM_KERNEL_DIRECT = 0,  /* one amsim_mul_split per product, every rule applied */
    AMSIM_KERNEL_EXPAND = 1,  /* LUT expanded into B (M <= 8, positive finite entries) */
    AMSIM_KERNEL_LOOKUP = 2   /* LUT rows looked up in registers (same conditions) */
};

enum amsim_status {
    AMSIM_OK = 0,
    AMSIM_ERR_MEMORY = -1,    /* a work buffer could not be allocated */
    AMSIM_ERR_ARGS = -2       /* an argument out of range (negative size, bad enum, kernel the LUT cannot take) */
};

/* A LUT made ready for the kernels: the table in both orientations (C^T = B^T A^T uses it
 * transposed), the prepared layouts of the fast kernels, and what the planner needs to know
 * of it. Filled by amsim_lut_init; read-only afterwards, so one LUT serves concurrent GEMMs. */
struct amsim_lut {
    int m;                     /* mantissa fraction bits M */
    int fast;                  /* the expand and lookup kernels can take it (M <= 8, entries > 0, finite) */
    int dot_products;          /* the fast kernels take it with bfloat16 dot products in this build */
    int v_lo, v_hi;            /* smallest and largest biased exponent of its entries */
    const float *table[2];     /* [0]: row = A's mantissa; [1]: transposed (M <= 8 only) */
    const void *prepared[2];   /* amsim_prepare_lut's layout of each, NULL unless fast */
};

/* Bytes of 64-byte aligned storage that amsim_lut_init needs for an M-bit LUT. */
size_t amsim_lut_storage_bytes(int m);
/* Copy a (2^M x 2^M) float32 table into storage and fill *lut. Returns an amsim_status. */
int amsim_lut_init(struct amsim_lut *lut, const float *table, int m, void *storage);

/* One GEMM: C = A (x) B. A is M x K and B is K x N with element strides (any non-negative
 * strides: transposed views need no copy); C is M x N, row-major with leading dimension ldc. */
struct amsim_gemm_args {
    int64_t M, N, K;
    const float *a;
    int64_t ars, acs;
    const float *b;
    int64_t brs, bcs;
    float *c;
    int64_t ldc;
    int rounding;              /* enum amsim_rounding */
    int mode;                  /* enum amsim_mode */
    int kernel;                /* enum amsim_kernel */
    int threads;               /* at most this many threads; 0: the engine's default */
};

/* Plan (for AUTO) and run one GEMM on the engine's thread pool. Returns an amsim_status. */
int amsim_gemm(const struct amsim_lut *lut, const struct amsim_gemm_args *args);

/* Model mode, for M > 12 where no LUT fits: each product calls the compiled model at fn
 * (float NAME(float, float) when is_float, else int64_t NAME(int64_t, int64_t) lifted to
 * width M + 1). args->kernel is ignored. */
int amsim_gemm_model(const struct amsim_gemm_args *args, int m, uintptr_t fn, int is_float);

/* Patch extraction for conv2d on NHWC input and HWIO filters (TensorFlow's geometry):
 * im2col writes the (N*OH*OW) x (KH*KW*C) patch matrix, rows in NHW order, columns in
 * (kh, kw, c) order, zeros in the padding; col2im is its adjoint: it overwrites dx (N, H, W, C)
 * with, at each input position, the float32 sum from +0 of the patch columns that cover it,
 * in increasing (kh, kw) order. Both return an amsim_status. */
struct amsim_conv_geometry {
    int64_t n, h, w, c;        /* input */
    int64_t kh, kw;            /* filter */
    int64_t sh, sw, dh, dw;    /* strides, dilations (>= 1) */
    int64_t pad_top, pad_left; /* padding before the first row and column (bottom/right follow) */
    int64_t oh, ow;            /* output */
};
int amsim_im2col(const struct amsim_conv_geometry *g, const float *x, float *cols);
int amsim_col2im(const struct amsim_conv_geometry *g, const float *cols, float *dx);

/* im2col of one-byte integer patterns (amsim_int_gemm's operands) for a grouped conv2d: input
 * channel group q (of `groups`, each C / groups channels) gets its own patch matrix, block q of
 * cols: (N*OH*OW) x (KH*KW*C/groups), rows in NHW order, columns in (kh, kw, c) order, the byte
 * `pad` in the padding (a quantized input's zero point). sums, unless NULL: (N*OH*OW) x groups
 * int32, each patch row's sum of the values its patterns hold, pad included: the patterns
 * themselves (signed_bits = 0), or n-bit two's-complement values (signed_bits = n, 1..8). groups = 1
 * is the patch matrix of amsim_im2col. threads: at most this many threads (0: the engine's
 * default). Returns an amsim_status (AMSIM_ERR_ARGS also when groups does not divide C, or when a
 * row's sum could leave int32). */
int amsim_int_im2col(const struct amsim_conv_geometry *g, const uint8_t *x, uint8_t pad, int64_t groups,
                     uint8_t *cols, int32_t *sums, int signed_bits, int threads);

/* Depthwise conv2d on NHWC input x (geometry g, C = g->c channels) and a filter w of shape
 * (KH, KW, C, q): output channel c * q + j is input channel c convolved with w[:, :, c, j]. Each
 * pass gives the bits of its per-channel GEMMs (amsim_gemm on channel c's patch matrix, and
 * col2im), the sums in their order: y (N, OH, OW, C*q) = patches (x) w, per channel;
 * dx (N, H, W, C) = col2im(dy (x) w^T); dw (KH, KW, C, q) = patches^T (x) dy, the patches the
 * left operand. Directly, without patch matrices (depthwise.c). Return an amsim_status. */
int amsim_depthwise_conv2d(const struct amsim_lut *lut, const struct amsim_conv_geometry *g, int64_t q,
                           const float *x, const float *w, float *y, int rounding, int mode, int threads);
int amsim_depthwise_backprop_input(const struct amsim_lut *lut, const struct amsim_conv_geometry *g, int64_t q,
                                   const float *w, const float *dy, float *dx, int rounding, int mode, int threads);
int amsim_depthwise_backprop_filter(const struct amsim_lut *lut, const struct amsim_conv_geometry *g, int64_t q,
                                    const float *x, const float *dy, float *dw, int rounding, int mode, int threads);

/* The planner's cost model: nanoseconds per count of each item of work (docs/gemm-internals.md).
 * The engine starts with neutral costs; amsim.gemm sets the ones fitted on this machine. */
struct amsim_costs {
    double build, build_op, fma, row_k, row_vec, lookup, lookup_group, lookup_op;
    double prep, prep_t, out, split, split_t, threads, threads_awake;
};
/* plain: for LUTs without dot products; dp: for those with (struct amsim_lut.dot_products); NULL:
 * the engine's start values. Costs choose among plans, which all give the same bits. */
void amsim_set_costs(const struct amsim_costs *plain, const struct amsim_costs *dp);

/* An integer circuit's product table made ready for amsim_int_gemm: for n-bit operands
 * (1 <= bits <= 8), the (2^bits x 2^bits) int32 table, row = A's pattern, with what the kernels
 * need of it made once rather than on every call (at M = 64 it is as much work as the GEMM).
 * Filled by amsim_int_lut_init; read-only afterwards, so one table serves concurrent GEMMs. */
struct amsim_int_lut {
    int bits;                  /* operand width n */
    int bias;                  /* the fast kernels' 16-bit encoding: 0 (entries 0..65535) or 32768
                                  (-32768..32767); -1: entries fit neither, only the direct kernel */
    int64_t largest;           /* the largest magnitude of its entries */
    const int32_t *table;      /* the table */
    const uint8_t *planes[2];  /* what the fast kernels read on C and on C^T (bias >= 0): with
                                  AVX512-VBMI, byte planes of its rows and of its transpose's; with
                                  AVX2, 16-bit entries of its transpose's rows and of its rows;
                                  else NULL */
};

/* Bytes of 64-byte aligned storage that amsim_int_lut_init needs for a table of n-bit operands. */
size_t amsim_int_lut_storage_bytes(int bits);
/* Copy a (2^bits x 2^bits) int32 table into storage and fill *lut. Returns an amsim_status. */
int amsim_int_lut_init(struct amsim_int_lut *lut, const int32_t *table, int bits, void *storage);

/* The integer LUT GEMM (docs/gemm-internals.md, "The integer GEMM"): for n-bit operands given as
 * their bit patterns (unsigned: the value; signed: the two's-complement pattern,
 * value & (2^bits - 1)), C[i, j] = sum over k of lut[a[i, k]][b[k, j]] (amsim_int_lut_row),
 * exactly. a: M x K and b: K x N, row-major; c: M x N row-major, int32_t (wide = 0) or int64_t
 * (wide = 1). Returns an amsim_status: AMSIM_ERR_ARGS also for a pattern of 2^bits or more, and
 * for a width that K products of the table's largest magnitude could overflow. */
int amsim_int_gemm(const struct amsim_int_lut *lut, int64_t M, int64_t N, int64_t K, const uint8_t *a,
                   const uint8_t *b, void *c, int wide, int threads);

/* The range a quantized layer sets a scale from (docs/quantized.md, "Quantizing and scaling back"):
 * of count float32 values x, in runs of `channels` (1: the whole tensor), the smallest and largest
 * of each channel f (the values x[e], e mod channels = f) into lo[f] and hi[f]; NaN is left out,
 * and a channel without numbers gets lo = +inf, hi = -inf. Returns an amsim_status. */
int amsim_minmax(int64_t count, int64_t channels, const float *x, float *lo, float *hi, int threads);

/* The quantized layers' quantizer (docs/quantized.md, "Quantizing and scaling back"): count
 * float32 values x, in runs of `channels` (1: one scale), to 8-bit integers
 *     q[e] = clip(rint(x[e] / scale[f]) + zero[f], qmin, qmax), f = e mod channels,
 * rounding to nearest with ties to even; NaN becomes the zero point. q holds each value's byte (two's
 * complement when negative). qmin..qmax within 0..255 or -128..127, each zero point inside it. sums,
 * unless NULL: the int32 sums of the integers q[e] with e mod sum_width = p, for each p < sum_width
 * (channels then 1 or sum_width, and count / sum_width at most INT32_MAX / 255). Returns an
 * amsim_status. */
int amsim_quantize(int64_t count, int64_t channels, const float *x, const float *scale, const int32_t *zero,
                   int qmin, int qmax, uint8_t *q, int64_t sum_width, int32_t *sums, int threads);

/* The inverse of amsim_quantize (docs/quantized.md, "Quantizing and scaling back"): the float32 values
 * x[e] = (q[e] - zero[f]) * scale[f], f = e mod channels, that count 8-bit integers q stand for (their
 * bytes: int8 when is_signed, else uint8), the subtraction exact and the product one float32
 * multiplication. Returns an amsim_status. */
int amsim_dequantize(int64_t count, int64_t channels, const uint8_t *q, int is_signed, const float *scale,
                     const int32_t *zero, float *x, int threads);

/* The straight-through gradient of the quantizer's clip (docs/quantized.md, "Gradients"): of count
 * float32 inputs x and their output gradients dy, dx[e] = dy[e] where lo <= x[e] <= hi (the values
 * the quantizer does not clip), else 0 (NaN too). Returns an amsim_status. */
int amsim_clipped_gradient(int64_t count, const float *x, const float *dy, float lo, float hi, float *dx, int threads);

/* The quantized layers' epilogue (docs/quantized.md, "Quantizing and scaling back"): an integer
 * GEMM's sums of circuit products corrected for the operands' zero points and scaled to float32,
 * in one pass. acc and y: rows x n, row-major. For output (r, f), column f in group
 * g = f / (n / groups):
 *     s = acc[r, f] - zw * row_sums[r, g] - zx * col_sums[f] + k * zx * zw, exactly;
 *     y[r, f] = (float)s * scale[f], or scale[0] when scales = 1;
 *     then y[r, f] + bias[f] where bias is not NULL (a second float32 rounding, as an add after it).
 * row_sums: rows x groups sums of k input values, read only when zw != 0; col_sums: n sums of k
 * kernel values, read only when zx != 0 (each value of magnitude at most 255, each product at most
 * 65535: the bounds within which s is exact). Zero points in -255..255. Returns an amsim_status. */
int amsim_int_dequantize(int64_t rows, int64_t n, const int32_t *acc, const int32_t *row_sums, int64_t groups,
                         const int32_t *col_sums, int32_t zx, int32_t zw, int64_t k, const float *scale,
                         int64_t scales, const float *bias, float *y, int threads);

/* AMSIM_CDEF_END */

/* The rules of a conv2d geometry, for every caller that walks one: the engine (conv.c), the
 * TensorFlow ops and the CUDA ops (amsim/csrc/cuda/ops_cuda.cu). Inline, so outside the cffi block. */

/* Sizes that amsim_im2col and amsim_col2im take: none negative, filter and steps at least 1. */
static inline int amsim_conv_geometry_valid(const struct amsim_conv_geometry *g)
{
    return g && g->n >= 0 && g->h >= 0 && g->w >= 0 && g->c >= 0 && g->kh >= 1 && g->kw >= 1 && g->sh >= 1 &&
           g->sw >= 1 && g->dh >= 1 && g->dw >= 1 && g->pad_top >= 0 && g->pad_left >= 0 && g->oh >= 0 &&
           g->ow >= 0;
}

/* True when the patch matrix is the input itself (1x1 filter, stride 1, no padding, output of
 * the input's size): im2col is then the identity, and col2im a copy, since a sum from +0 is never
 * -0 and adding it to +0 changes nothing; callers skip both. */
static inline int amsim_conv_patches_are_input(const struct amsim_conv_geometry *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pad_top == 0 && g->pad_left == 0 &&
           g->oh == g->h && g->ow == g->w;
}

/* Inline helpers that the CUDA kernels call too: host and device functions under nvcc. */
#ifdef __CUDACC__
#define AMSIM_GEMM_INLINE static inline __host__ __device__
#else
#define AMSIM_GEMM_INLINE static inline
#endif

/* The one definition of the integer product: LUT[a][b] is entry b of row a of the
 * (2^bits x 2^bits) table, a and b the operands' n-bit patterns. Row a starts at entry
 * amsim_int_lut_row_offset(bits, a) of the table, whatever its entries' type (the CUDA kernel
 * reads a 16-bit copy in shared memory); below 2^16 for bits <= 8, hence 32-bit. */
AMSIM_GEMM_INLINE uint32_t amsim_int_lut_row_offset(int bits, uint32_t a)
{
    return a << bits;
}

AMSIM_GEMM_INLINE const int32_t *amsim_int_lut_row(const int32_t *lut, int bits, uint8_t a)
{
    return lut + amsim_int_lut_row_offset(bits, a);
}

#ifdef __cplusplus
}
#endif

#endif /* AMSIM_GEMM_H */
