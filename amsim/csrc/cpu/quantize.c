/*
 * quantize.c -- the element-wise steps around a quantized product's integer GEMM (docs/quantized.md,
 * "Quantizing and scaling back"), each one pass where TensorFlow's own ops take one pass, and one
 * buffer, per step:
 *
 * amsim_minmax: the range a scale is set from, per tensor or per trailing channel (NaN left out).
 * amsim_quantize: float32 to 8-bit integers, q = clip(round(x / scale) + zero, qmin, qmax), per
 *   tensor or per trailing channel; round to nearest, ties to even (rint), one IEEE division; and,
 *   asked for, the integers' sums per position of the last axis (the uint8 correction's sum_k q_w).
 * amsim_dequantize: 8-bit integers back to the float32 values they stand for, (q - zero) * scale.
 * amsim_clipped_gradient: the straight-through gradient of the quantizer's clip, dy where
 *   lo <= x <= hi, else 0.
 * amsim_int_dequantize: an integer GEMM's sums of circuit products, corrected for the operands'
 *   zero points and scaled back to float32. For output (r, f) of a rows x n result whose column f
 *   belongs to group g = f / (n / groups):
 *       s = acc[r, f] - zw * row_sums[r, g] - zx * col_sums[f] + k * zx * zw      (exact)
 *       y[r, f] = (float)s * scale[f]   (scale[0] for a single scale)
 *       y[r, f] += bias[f]              (a layer's bias, where one is given)
 *   The conversion rounds to nearest, the product is one float32 multiplication and the bias one
 *   float32 add after it, so y is what TensorFlow's Cast, Mul and Add give for the same exact s.
 */

#include <math.h>

#define QUANTIZE_PARALLEL_MIN ((int64_t)1 << 16)  /* elements of a pass: fewer are done by the caller alone */

/* ---- amsim_minmax ---- */

/* A tensor's single range is taken over rows of this many lanes, each lane's extremes kept apart
 * (so that the loop runs on vectors: a float reduction to one accumulator would not), then merged. */
#define MINMAX_LANES 64

struct minmax_job {
    const float *x;
    int64_t rows, channels;
    float *lo, *hi;  /* nparts x channels partial extremes */
    int nparts;
};

static void minmax_part(void *ctx, int part)
{
    const struct minmax_job *j = ctx;
    const float *restrict x = j->x;
    const int64_t c = j->channels, r0 = j->rows * part / j->nparts, r1 = j->rows * (part + 1) / j->nparts;
    float *restrict lo = j->lo + part * c, *restrict hi = j->hi + part * c;
    for (int64_t f = 0; f < c; ++f) {
        lo[f] = INFINITY;
        hi[f] = -INFINITY;
    }
    /* a comparison with NaN is false: NaN never replaces an extreme */
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t f = 0; f < c; ++f) {
            const float v = x[r * c + f];
            lo[f] = v < lo[f] ? v : lo[f];
            hi[f] = v > hi[f] ? v : hi[f];
        }
}

int amsim_minmax(int64_t count, int64_t channels, const float *x, float *lo, float *hi, int threads)
{
    if (count < 0 || channels < 1 || count % channels != 0 || threads < 0 || !lo || !hi || (count > 0 && !x))
        return AMSIM_ERR_ARGS;
    /* one range over the whole tensor: lanes of a row, merged at the end (the tail after them alone) */
    const int64_t lanes = channels == 1 && count >= MINMAX_LANES ? MINMAX_LANES : channels;
    const int64_t rows = count / lanes, tail = count - rows * lanes;
    const int use = pass_threads(count, QUANTIZE_PARALLEL_MIN, threads);
    const int nparts = pass_parts(rows, use);
    float *part_lo = malloc(sizeof(float) * (size_t)(2 * nparts * lanes));
    if (!part_lo)
        return AMSIM_ERR_MEMORY;
    struct minmax_job j = {x, rows, lanes, part_lo, part_lo + nparts * lanes, nparts};
    run_parts(minmax_part, &j, nparts, use);
    for (int64_t f = 0; f < channels; ++f) {
        lo[f] = INFINITY;
        hi[f] = -INFINITY;
    }
    for (int p = 0; p < nparts; ++p)
        for (int64_t f = 0; f < lanes; ++f) {
            const int64_t to = channels == 1 ? 0 : f;
            lo[to] = j.lo[p * lanes + f] < lo[to] ? j.lo[p * lanes + f] : lo[to];
            hi[to] = j.hi[p * lanes + f] > hi[to] ? j.hi[p * lanes + f] : hi[to];
        }
    for (int64_t e = count - tail; e < count; ++e) {
        lo[0] = x[e] < lo[0] ? x[e] : lo[0];
        hi[0] = x[e] > hi[0] ? x[e] : hi[0];
    }
    free(part_lo);
    return AMSIM_OK;
}

/* ---- amsim_quantize ---- */

struct quantize_job {
    const float *x, *scale;
    const int32_t *zero;
    int64_t rows, width, channels;  /* rows of width elements; channels: 1 or width */
    float lo, hi;
    uint8_t *q;
    int32_t *partial;  /* nparts x width sums of each row position, when they are asked for */
    int nparts;
};

/* One value: NaN (no number to stand for) becomes the zero point, the value 0. Division, rounding
 * and addition are each one IEEE operation (no contraction: there is no product to fuse). */
static inline int32_t quantize_one(float x, float scale, float zero, float lo, float hi)
{
    float v = rintf(x / scale) + zero;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    v = v == v ? v : zero;
    return (int32_t)v;
}

static void quantize_part(void *ctx, int part)
{
    const struct quantize_job *j = ctx;
    /* locals, restrict: q's bytes may alias anything, which would keep the loops scalar */
    const float *restrict x = j->x, *restrict scale = j->scale;
    const int32_t *restrict zero = j->zero;
    uint8_t *restrict q = j->q;
    const int64_t r0 = j->rows * part / j->nparts, r1 = j->rows * (part + 1) / j->nparts, w = j->width;
    const float lo = j->lo, hi = j->hi;
    if (j->partial) {  /* rows of w values, each position's sum kept (in int32: the caller bounds the rows) */
        int32_t *restrict sums = j->partial + part * w;
        const int per_channel = j->channels > 1;
        for (int64_t f = 0; f < w; ++f)
            sums[f] = 0;
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t f = 0; f < w; ++f) {
                const int32_t v = quantize_one(x[r * w + f], scale[per_channel ? f : 0],
                                               (float)zero[per_channel ? f : 0], lo, hi);
                q[r * w + f] = (uint8_t)v;  /* the value's byte: two's complement when negative */
                sums[f] += v;
            }
        return;
    }
    if (j->channels == 1) {  /* one scale: the rows are one run */
        const float s = scale[0], z = (float)zero[0];
        for (int64_t e = r0 * w; e < r1 * w; ++e)
            q[e] = (uint8_t)quantize_one(x[e], s, z, lo, hi);
        return;
    }
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t f = 0; f < w; ++f)
            q[r * w + f] = (uint8_t)quantize_one(x[r * w + f], scale[f], (float)zero[f], lo, hi);
}

int amsim_quantize(int64_t count, int64_t channels, const float *x, const float *scale, const int32_t *zero,
                   int qmin, int qmax, uint8_t *q, int64_t sum_width, int32_t *sums, int threads)
{
    /* the rows a split and the sums go by: of sum_width values, else of the channels */
    const int64_t width = sums ? sum_width : channels;
    if (count < 0 || channels < 1 || width < 1 || count % width != 0 || (channels != 1 && channels != width) ||
        threads < 0 || qmin > qmax || !((qmin >= 0 && qmax <= 255) || (qmin >= -128 && qmax <= 127)) ||
        (sums && count / width > INT32_MAX / 255))
        return AMSIM_ERR_ARGS;
    if (count > 0 && (!x || !scale || !zero || !q))
        return AMSIM_ERR_ARGS;
    for (int64_t f = 0; f < channels && count > 0; ++f)
        if (zero[f] < qmin || zero[f] > qmax)
            return AMSIM_ERR_ARGS;
    /* one scale and no sums: the elements are the rows (one run, split anywhere) */
    const int64_t w = !sums && channels == 1 ? 1 : width, rows = count / w;
    const int use = pass_threads(count, QUANTIZE_PARALLEL_MIN, threads);
    const int nparts = pass_parts(rows, use);
    int32_t *partial = NULL;
    if (sums && !(partial = malloc(sizeof(int32_t) * (size_t)(nparts * w))))
        return AMSIM_ERR_MEMORY;
    struct quantize_job j = {x, scale, zero, rows, w, channels, (float)qmin, (float)qmax, q, partial, nparts};
    run_parts(quantize_part, &j, nparts, use);
    if (sums) {
        for (int64_t f = 0; f < w; ++f)
            sums[f] = 0;
        for (int p = 0; p < nparts; ++p)
            for (int64_t f = 0; f < w; ++f)
                sums[f] += partial[p * w + f];
        free(partial);
    }
    return AMSIM_OK;
}

/* ---- amsim_dequantize ---- */

struct dequantize_job {
    const uint8_t *q;
    const float *scale;
    const int32_t *zero;
    int64_t rows, channels;
    int is_signed;
    float *x;
    int nparts;
};

static void dequantize_part(void *ctx, int part)
{
    const struct dequantize_job *j = ctx;
    const uint8_t *restrict q = j->q;
    const int8_t *restrict qs = (const int8_t *)j->q;
    const float *restrict scale = j->scale;
    const int32_t *restrict zero = j->zero;
    float *restrict x = j->x;
    const int64_t r0 = j->rows * part / j->nparts, r1 = j->rows * (part + 1) / j->nparts, c = j->channels;
    /* the subtraction of small integers is exact; the product is one float32 multiplication */
    if (c == 1) {
        const float s = scale[0], z = (float)zero[0];
        if (j->is_signed)
            for (int64_t e = r0; e < r1; ++e)
                x[e] = ((float)qs[e] - z) * s;
        else
            for (int64_t e = r0; e < r1; ++e)
                x[e] = ((float)q[e] - z) * s;
        return;
    }
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t f = 0; f < c; ++f)
            x[r * c + f] = ((float)(j->is_signed ? qs[r * c + f] : q[r * c + f]) - (float)zero[f]) * scale[f];
}

int amsim_dequantize(int64_t count, int64_t channels, const uint8_t *q, int is_signed, const float *scale,
                     const int32_t *zero, float *x, int threads)
{
    if (count < 0 || channels < 1 || count % channels != 0 || threads < 0)
        return AMSIM_ERR_ARGS;
    if (count == 0)
        return AMSIM_OK;
    if (!q || !scale || !zero || !x)
        return AMSIM_ERR_ARGS;
    struct dequantize_job j = {q, scale, zero, channels == 1 ? count : count / channels, channels, is_signed != 0,
                               x, 0};
    const int use = pass_threads(count, QUANTIZE_PARALLEL_MIN, threads);
    j.nparts = pass_parts(j.rows, use);
    run_parts(dequantize_part, &j, j.nparts, use);
    return AMSIM_OK;
}

/* ---- amsim_clipped_gradient ---- */

struct clipped_job {
    const float *x, *dy;
    float lo, hi;
    float *dx;
    int64_t count;
    int nparts;
};

static void clipped_part(void *ctx, int part)
{
    const struct clipped_job *j = ctx;
    const float *restrict x = j->x, *restrict dy = j->dy;
    float *restrict dx = j->dx;
    const float lo = j->lo, hi = j->hi;
    const int64_t e0 = j->count * part / j->nparts, e1 = j->count * (part + 1) / j->nparts;
    for (int64_t e = e0; e < e1; ++e)  /* NaN x compares false: no gradient */
        dx[e] = x[e] >= lo && x[e] <= hi ? dy[e] : 0.0f;
}

int amsim_clipped_gradient(int64_t count, const float *x, const float *dy, float lo, float hi, float *dx, int threads)
{
    if (count < 0 || threads < 0 || (count > 0 && (!x || !dy || !dx)))
        return AMSIM_ERR_ARGS;
    const int use = pass_threads(count, QUANTIZE_PARALLEL_MIN, threads);
    struct clipped_job j = {x, dy, lo, hi, dx, count, pass_parts(count, use)};
    run_parts(clipped_part, &j, j.nparts, use);
    return AMSIM_OK;
}

/* ---- amsim_int_dequantize ---- */

/* Sums whose every partial sum stays in int32: |acc| <= 65535 k and each of the three zero-point
 * terms <= 255^2 k (docs/quantized.md: K <= 8240). */
#define DEQUANT_INT32_TERMS ((int64_t)INT32_MAX / (65535 + 3 * 255 * 255))

/* Rows are scaled a chunk at a time: as many whole rows as make DEQUANT_CHUNK elements (one row where
 * it is longer), in one loop over the chunk's elements, the per-column and per-row terms laid out
 * beside them. A loop per row, at a few columns a row (LeNet-5's first convolution: 6), cost more
 * in its own overhead than in its arithmetic. */
#define DEQUANT_CHUNK 64

struct dequant_job {
    int64_t rows, n, groups;
    const int32_t *acc, *row_sums, *col_sums;
    int32_t zx, zw;
    int64_t kzz;  /* k * zx * zw */
    const float *scale;
    int64_t scales;
    const float *bias;
    float *y;
    int wide, nparts;
    int64_t chunk_rows;  /* rows of a chunk */
    char *work;          /* per part, dequant_work_bytes: its chunk's terms */
};

/* Bytes of a part's terms for chunks of `len` elements: the column and row terms (64-bit at most),
 * the scales and the biases. */
static size_t dequant_work_bytes(int64_t len)
{
    return (size_t)len * (2 * sizeof(uint64_t) + 2 * sizeof(float));
}

/* y[f] += bias[f], over the chunk just scaled (in L1): in a loop of its own, not inlined, so that
 * the compiler cannot contract the scale's multiply and this add into one FMA (two roundings, as
 * TensorFlow's separate multiply and add). */
static __attribute__((noinline)) void add_bias(float *restrict y, const float *restrict bias, int64_t n)
{
    for (int64_t f = 0; f < n; ++f)
        y[f] += bias[f];
}

/* A corrected sum scaled: acc + row term - column term in U, read as S, converted to float32 and
 * multiplied by the scale (the one definition for both loops below). */
#define DEQUANT_VALUE(U, S, acc, row, col, scale) ((float)(S)((U)(acc) + (row) - (col)) * (scale))

/* Rows r0..r1 in one width of arithmetic: U (unsigned: a caller's sums beyond the bounds wrap, never
 * overflow) read as the signed S; 32 bits where no partial sum can leave int32. Rows of at least
 * DEQUANT_CHUNK columns a row at a time; shorter ones in chunks of several rows, the column terms,
 * scales and biases laid out once for a chunk, the row terms beside them per chunk. */
#define DEQUANT_ROWS(U, S)                                                                                    \
    if (j->chunk_rows == 1) {                                                                                 \
        for (int64_t r = r0; r < r1; ++r) {                                                                   \
            const int32_t *a = j->acc + r * n;                                                                \
            float *y = j->y + r * n;                                                                          \
            for (int64_t q = 0; q < j->groups; ++q) {                                                         \
                const U base = (U)j->kzz - (j->row_sums ? (U)j->zw * (U)j->row_sums[r * j->groups + q] : 0); \
                for (int64_t f = q * per_group; f < (q + 1) * per_group; ++f)                                 \
                    y[f] = DEQUANT_VALUE(U, S, a[f], base, j->col_sums ? (U)j->zx * (U)j->col_sums[f] : 0,    \
                                         j->scale[j->scales == 1 ? 0 : f]);                                   \
            }                                                                                                 \
            if (j->bias)                                                                                      \
                add_bias(y, j->bias, n);                                                                      \
        }                                                                                                     \
    } else {                                                                                                  \
        const int64_t len = j->chunk_rows * n;                                                                \
        U *col = (U *)work, *row = col + len;                                                                 \
        float *sc = (float *)(row + len), *b = sc + len;                                                      \
        for (int64_t e = 0; e < len; ++e) {                                                                   \
            const int64_t f = e % n;                                                                          \
            col[e] = j->col_sums ? (U)j->zx * (U)j->col_sums[f] : 0;                                          \
            sc[e] = j->scale[j->scales == 1 ? 0 : f];                                                         \
            b[e] = j->bias ? j->bias[f] : 0.0f;                                                               \
        }                                                                                                     \
        for (int64_t r = r0; r < r1; r += j->chunk_rows) {                                                    \
            const int64_t m = r1 - r < j->chunk_rows ? (r1 - r) * n : len;                                    \
            for (int64_t p = 0; p * n < m; ++p)                                                               \
                for (int64_t q = 0; q < j->groups; ++q) {                                                     \
                    const int64_t g = (r + p) * j->groups + q, f0 = p * n + q * per_group;                   \
                    const U base = (U)j->kzz - (j->row_sums ? (U)j->zw * (U)j->row_sums[g] : 0);              \
                    for (int64_t e = f0; e < f0 + per_group; ++e)                                             \
                        row[e] = base;                                                                        \
                }                                                                                             \
            const int32_t *a = j->acc + r * n;                                                                \
            float *y = j->y + r * n;                                                                          \
            for (int64_t e = 0; e < m; ++e)                                                                   \
                y[e] = DEQUANT_VALUE(U, S, a[e], row[e], col[e], sc[e]);                                      \
            if (j->bias)                                                                                      \
                add_bias(y, b, m);                                                                            \
        }                                                                                                     \
    }

static void dequant_part(void *ctx, int part)
{
    const struct dequant_job *j = ctx;
    const int64_t n = j->n, per_group = n / j->groups;
    const int64_t r0 = j->rows * part / j->nparts, r1 = j->rows * (part + 1) / j->nparts;
    char *work = j->work ? j->work + part * dequant_work_bytes(j->chunk_rows * n) : NULL;
    if (j->wide) {
        DEQUANT_ROWS(uint64_t, int64_t)
    } else {
        DEQUANT_ROWS(uint32_t, int32_t)
    }
}
#undef DEQUANT_ROWS
#undef DEQUANT_VALUE

int amsim_int_dequantize(int64_t rows, int64_t n, const int32_t *acc, const int32_t *row_sums, int64_t groups,
                         const int32_t *col_sums, int32_t zx, int32_t zw, int64_t k, const float *scale,
                         int64_t scales, const float *bias, float *y, int threads)
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
                            k * zx * zw, scale, scales, bias, y, k > DEQUANT_INT32_TERMS, 0,
                            n < DEQUANT_CHUNK ? (DEQUANT_CHUNK + n - 1) / n : 1, NULL};
    const int use = pass_threads(rows * n, QUANTIZE_PARALLEL_MIN, threads);
    j.nparts = pass_parts(rows, use);
    j.work = j.chunk_rows > 1 ? malloc(dequant_work_bytes(j.chunk_rows * n) * (size_t)j.nparts) : NULL;
    if (j.chunk_rows > 1 && !j.work)
        return AMSIM_ERR_MEMORY;
    run_parts(dequant_part, &j, j.nparts, use);
    free(j.work);
    return AMSIM_OK;
}
