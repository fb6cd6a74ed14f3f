/*
 * quantize.c -- the two element-wise ends of a quantized product (docs/quantized.md, "Quantizing
 * and scaling back"), each one pass where TensorFlow's own ops took one pass, and one buffer, per
 * step:
 *
 * amsim_quantize: float32 to 8-bit integers, q = clip(round(x / scale) + zero, qmin, qmax), per
 *   tensor or per trailing channel; round to nearest, ties to even (rint), one IEEE division.
 * amsim_int_dequantize: an integer GEMM's sums of circuit products, corrected for the operands'
 *   zero points and scaled back to float32. For output (r, f) of a rows x n result whose column f
 *   belongs to group g = f / (n / groups):
 *       s = acc[r, f] - zw * row_sums[r, g] - zx * col_sums[f] + k * zx * zw      (exact)
 *       y[r, f] = (float)s * scale[f]   (scale[0] for a single scale)
 *   The conversion rounds to nearest and the product is one float32 multiplication, so y is what
 *   TensorFlow's Cast and Mul give for the same exact s and scale.
 */

#include <math.h>

#define QUANTIZE_PARALLEL_MIN ((int64_t)1 << 16)  /* elements: fewer are done by the caller alone */

struct quantize_job {
    const float *x, *scale;
    const int32_t *zero;
    int64_t rows, channels;
    float lo, hi;
    uint8_t *q;
    int nparts;
};

/* One value: NaN (no number to stand for) becomes the zero point, the value 0. Division, rounding
 * and addition are each one IEEE operation (no contraction: there is no product to fuse). */
static inline uint8_t quantize_one(float x, float scale, float zero, float lo, float hi)
{
    float v = rintf(x / scale) + zero;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    v = v == v ? v : zero;
    return (uint8_t)(int32_t)v;  /* the value's byte: two's complement when negative */
}

static void quantize_part(void *ctx, int part)
{
    const struct quantize_job *j = ctx;
    /* locals, restrict: q's bytes may alias anything, which would keep the loops scalar */
    const float *restrict x = j->x, *restrict scale = j->scale;
    const int32_t *restrict zero = j->zero;
    uint8_t *restrict q = j->q;
    const int64_t r0 = j->rows * part / j->nparts, r1 = j->rows * (part + 1) / j->nparts, c = j->channels;
    const float lo = j->lo, hi = j->hi;
    if (c == 1) {  /* one scale: the rows are one run */
        const float s = scale[0], z = (float)zero[0];
        for (int64_t e = r0; e < r1; ++e)
            q[e] = quantize_one(x[e], s, z, lo, hi);
        return;
    }
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t f = 0; f < c; ++f)
            q[r * c + f] = quantize_one(x[r * c + f], scale[f], (float)zero[f], lo, hi);
}

int amsim_quantize(int64_t count, int64_t channels, const float *x, const float *scale, const int32_t *zero,
                   int qmin, int qmax, uint8_t *q, int threads)
{
    if (count < 0 || channels < 1 || count % channels != 0 || threads < 0 || qmin > qmax ||
        !((qmin >= 0 && qmax <= 255) || (qmin >= -128 && qmax <= 127)))
        return AMSIM_ERR_ARGS;
    if (count == 0)
        return AMSIM_OK;
    if (!x || !scale || !zero || !q)
        return AMSIM_ERR_ARGS;
    for (int64_t f = 0; f < channels; ++f)
        if (zero[f] < qmin || zero[f] > qmax)
            return AMSIM_ERR_ARGS;
    /* per tensor, the elements are the rows (one run, split anywhere) */
    struct quantize_job j = {x, scale, zero, channels == 1 ? count : count / channels, channels, (float)qmin,
                             (float)qmax, q, 0};
    int use = count >= QUANTIZE_PARALLEL_MIN ? (threads > 0 ? threads : default_threads()) : 1;
    use = use > MAX_THREADS ? MAX_THREADS : use;
    j.nparts = j.rows < use ? (int)j.rows : use;
    run_parts(quantize_part, &j, j.nparts, use);
    return AMSIM_OK;
}

/* Dequantize: sums whose every partial sum stays in int32: |acc| <= 65535 k and each zero-point term <= 255^2 k
 * (the quantized layers' bound, amsim/keras/quantization.py's _INT32_CORRECTION_TERMS). */
#define DEQUANT_INT32_TERMS ((int64_t)INT32_MAX / (65535 + 3 * 255 * 255))
#define DEQUANT_PARALLEL_MIN ((int64_t)1 << 16)  /* outputs: fewer are done by the caller alone */

struct dequant_job {
    int64_t rows, n, groups;
    const int32_t *acc, *row_sums, *col_sums;
    int32_t zx, zw;
    int64_t kzz;  /* k * zx * zw */
    const float *scale;
    int64_t scales;
    float *y;
    int wide, nparts;
};

/* Rows r0..r1 in one width of arithmetic: U (unsigned: a caller's sums beyond the bounds wrap, never
 * overflow) read as the signed S; 32 bits where no partial sum can leave int32. */
#define DEQUANT_ROWS(U, S)                                                                                    \
    for (int64_t r = r0; r < r1; ++r) {                                                                      \
        const int32_t *a = j->acc + r * n;                                                                   \
        float *y = j->y + r * n;                                                                             \
        for (int64_t q = 0; q < j->groups; ++q) {                                                            \
            const U base = (U)j->kzz - (j->row_sums ? (U)j->zw * (U)j->row_sums[r * j->groups + q] : 0);   \
            for (int64_t f = q * per_group; f < (q + 1) * per_group; ++f) {                                 \
                const U s = (U)a[f] + base - (j->col_sums ? (U)j->zx * (U)j->col_sums[f] : 0);              \
                y[f] = (float)(S)s * j->scale[j->scales == 1 ? 0 : f];                                       \
            }                                                                                                \
        }                                                                                                    \
    }

static void dequant_part(void *ctx, int part)
{
    const struct dequant_job *j = ctx;
    const int64_t n = j->n, per_group = n / j->groups;
    const int64_t r0 = j->rows * part / j->nparts, r1 = j->rows * (part + 1) / j->nparts;
    if (j->wide) {
        DEQUANT_ROWS(uint64_t, int64_t)
    } else {
        DEQUANT_ROWS(uint32_t, int32_t)
    }
}
#undef DEQUANT_ROWS

int amsim_int_dequantize(int64_t rows, int64_t n, const int32_t *acc, const int32_t *row_sums, int64_t groups,
                         const int32_t *col_sums, int32_t zx, int32_t zw, int64_t k, const float *scale,
                         int64_t scales, float *y, int threads)
{
    if (rows < 0 || n < 0 || groups < 1 || (n > 0 && n % groups != 0) || k < 0 || threads < 0 || zx < -255 ||
        zx > 255 || zw < -255 || zw > 255 || (scales != 1 && scales != n))
        return AMSIM_ERR_ARGS;
    if (rows == 0 || n == 0)
        return AMSIM_OK;
    if (!acc || !scale || !y || (zw != 0 && !row_sums) || (zx != 0 && !col_sums))
        return AMSIM_ERR_ARGS;
    /* a term that is 0 is left out, its sums unread */
    struct dequant_job j = {rows, n, groups, acc, zw ? row_sums : NULL, zx ? col_sums : NULL, zx, zw,
                            k * zx * zw, scale, scales, y, k > DEQUANT_INT32_TERMS, 0};
    int use = rows * n >= DEQUANT_PARALLEL_MIN ? (threads > 0 ? threads : default_threads()) : 1;
    use = use > MAX_THREADS ? MAX_THREADS : use;
    j.nparts = rows < use ? (int)rows : use;
    run_parts(dequant_part, &j, j.nparts, use);
    return AMSIM_OK;
}
