/*
 * depthwise.c -- depthwise conv2d and its two gradients as direct loops over the geometry: NHWC
 * input x (C channels), filter W (KH, KW, C, Q), output channel j = c * Q + q (amsim_gemm.h).
 *
 * Each pass gives the bits of the per-channel GEMMs it replaces (amsim.gemm's conv2d on channel
 * c alone, x[..., c:c+1] with W[:, :, c:c+1, :]), because every GEMM kernel sums each output in
 * increasing k from +0 (docs/gemm-internals.md), and so does each loop here, over the same k:
 *   forward          y[r, j]        = sum over taps (kh, kw)       of  P[r, tap, c] (x) W[tap, j]
 *   input gradient   dx[n, h, w, c] = sum over the taps covering it, in increasing (kh, kw)
 *                                     (col2im's order), of  sum over q of dy[r, j] (x) W[tap, j]
 *   filter gradient  dW[tap, j]     = sum over output positions r   of  P[r, tap, c] (x) dy[r, j]
 * where P[r, tap, c] is the input under the tap, +0 in the padding (as im2col writes it: a
 * padding tap still multiplies, which matters when the other operand is inf or NaN), and r runs
 * over (n, oh, ow). The left operand of each product (the LUT's row) is the GEMM's: the patches,
 * or dy for the input gradient.
 *
 * A product is the engine's: both operands split once (amsim_split_f32), then, inside the fast
 * kernels' exactness window (amsim_window_exact, with a LUT they can take), their form s_x * T
 * with T = s_y * LUT[i_x][i_y], equal bit for bit to amsim_mul_split there; outside it,
 * amsim_mul_split itself, as the direct kernel. (A NaN's payload is the one bit pattern that may
 * differ: the window is tested on the whole operands here and per channel by the GEMMs, and the
 * two forms make different NaNs, as the GEMM's own plans do; numerics.md leaves it open.) The
 * vector loops (AVX-512) run 16 output channels at once, looking the entries up with a gather
 * (each lane has its own LUT row); the portable build and operands outside the window take the
 * scalar loops. Work is split between threads by whole outputs, each summed by one thread, so
 * the thread count changes no bit.
 */
#include "engine.h"

#define DW_PARALLEL_MIN 32768   /* products: fewer are computed by the caller alone */

/* One pass: the geometry, the split operands, the LUT and where the result goes. A is the
 * products' left operand (x, or dy for the input gradient), B the right one (W, or dy for the
 * filter gradient); their layouts are each pass's (see the pass functions). */
struct dw_job {
    struct amsim_conv_geometry g;
    int64_t q, cq;              /* depth multiplier, output channels C * Q */
    const float *as, *bs;
    const uint16_t *ai, *bi;
    const float *table;         /* row = A's mantissa, 2^m entries a row */
    int m, mode, fast;          /* fast: inside the window (the fast kernels' form of the product) */
    int vector;                 /* the vector loops (fast, and dw_channels' division exact) */
    float *out;
    int64_t units, nparts;
};

/* acc + a (x) b on split operands (the scalar loops' product). */
static inline float dw_add_product(float acc, float sa, uint32_t ia, float sb, uint32_t ib, const float *table,
                                   int m, int mode, int fast)
{
    const float v = table[((int64_t)ia << m) + ib];
    return fast ? acc + sa * (sb * v) : acc + amsim_mul_split(sa, sb, v, mode);
}

/* The units [*u0, *u1) of part p. */
static inline void dw_units(const struct dw_job *j, int p, int64_t *u0, int64_t *u1)
{
    const int64_t per = (j->units + j->nparts - 1) / j->nparts;
    *u0 = p * per;
    *u1 = *u0 + per < j->units ? *u0 + per : j->units;
}

#if AMSIM_AVX512
/* acc + a (x) b in 16 lanes, the fast kernels' form: T = s_b * LUT[i_a][i_b], fma(s_a, T, acc). */
static inline __attribute__((always_inline)) __m512 dw_fma16(__m512 acc, __m512 sa, __m512i ia, __m512 sb,
                                                          __m512i ib, const float *table, int m)
{
    const __m512 v = _mm512_i32gather_ps(_mm512_add_epi32(_mm512_sll_epi32(ia, _mm_cvtsi32_si128(m)), ib), table, 4);
    return _mm512_fmadd_ps(sa, _mm512_mul_ps(sb, v), acc);
}

static inline __attribute__((always_inline)) void dw_load16(const float *s, const uint16_t *i, __mmask16 lanes,
                                                         __m512 *sv, __m512i *iv)
{
    *sv = _mm512_maskz_loadu_ps(lanes, s);
    *iv = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes, i));
}

static inline __mmask16 dw_lanes(int64_t n) { return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }

/* Output channels j0 .. j0 + 15 of an input row (channels c = j / Q): the channels to load from
 * c0 = j0 / Q (*lanes) and each output lane's place among them (*perm, identity for Q = 1). */
static inline void dw_channels(int64_t j0, int64_t q, int64_t c, __mmask16 *lanes, __m512i *perm)
{
    const int64_t c0 = j0 / q, jl = j0 + 15 < c * q ? j0 + 15 : c * q - 1;
    *lanes = dw_lanes(jl / q - c0 + 1);
    const __m512i j = _mm512_add_epi32(_mm512_set1_epi32((int)(j0 - c0 * q)),
                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    /* j / q, j < q + 16: float division truncated is exact while q < 2^22 (struct dw_job's vector) */
    *perm = q == 1 ? _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
                   : _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(j), _mm512_set1_ps((float)q)));
}

/* The input row at channel c0 spread over output lanes (q > 1), or zeros for a padding tap. */
static inline __attribute__((always_inline)) void dw_input16(const float *s, const uint16_t *i, int inside,
                                                          __mmask16 lanes, __m512i perm, int64_t q, __m512 *sv,
                                                          __m512i *iv)
{
    if (!inside) {
        *sv = _mm512_setzero_ps();
        *iv = _mm512_setzero_si512();
        return;
    }
    dw_load16(s, i, lanes, sv, iv);
    if (q > 1) {
        *sv = _mm512_permutexvar_ps(perm, *sv);
        *iv = _mm512_permutexvar_epi32(perm, *iv);
    }
}

/* One tap of the vector loops (the forward pass and the filter gradient): acc + A's input row at
 * (n, ih, iw) from channel c0 (zeros where the tap falls in the padding) times B's 16 operands
 * from b. */
static inline __attribute__((always_inline)) __m512 dw_tap16(const struct dw_job *j, __m512 acc, int64_t n,
                                                          int64_t ih, int64_t iw, int64_t c0, int64_t b,
                                                          __mmask16 xl, __m512i perm, __mmask16 yl)
{
    const struct amsim_conv_geometry *g = &j->g;
    const int inside = ih >= 0 && ih < g->h && iw >= 0 && iw < g->w;
    const int64_t e = inside ? ((n * g->h + ih) * g->w + iw) * g->c + c0 : 0;
    __m512 sa, sb;
    __m512i ia, ib;
    dw_input16(j->as + e, j->ai + e, inside, xl, perm, j->q, &sa, &ia);
    dw_load16(j->bs + b, j->bi + b, yl, &sb, &ib);
    return dw_fma16(acc, sa, ia, sb, ib, j->table, j->m);
}
#endif

/* ---- forward: A = x split as (N*H*W) x C, B = W split as (KH*KW) x (C*Q); units: rows (n, oh) ---- */

static void dw_forward_part(void *ctx, int p)
{
    const struct dw_job *j = ctx;
    const struct amsim_conv_geometry g = j->g;
    const int64_t C = g.c, Q = j->q, CQ = j->cq;
    int64_t u0, u1;
    dw_units(j, p, &u0, &u1);
    for (int64_t u = u0; u < u1; ++u) {
        const int64_t n = u / g.oh, oh = u % g.oh, h0 = oh * g.sh - g.pad_top;
        for (int64_t ow = 0; ow < g.ow; ++ow) {
            const int64_t w0 = ow * g.sw - g.pad_left;
            float *y = j->out + (u * g.ow + ow) * CQ;
#if AMSIM_AVX512
            if (j->vector) {
                for (int64_t j0 = 0; j0 < CQ; j0 += 16) {
                    __mmask16 xl;
                    __m512i perm;
                    dw_channels(j0, Q, C, &xl, &perm);
                    const __mmask16 yl = dw_lanes(CQ - j0);
                    const int64_t c0 = j0 / Q;
                    __m512 acc = _mm512_setzero_ps();
                    for (int64_t kh = 0; kh < g.kh; ++kh) {
                        const int64_t ih = h0 + kh * g.dh;
                        for (int64_t kw = 0; kw < g.kw; ++kw)
                            acc = dw_tap16(j, acc, n, ih, w0 + kw * g.dw, c0, (kh * g.kw + kw) * CQ + j0, xl, perm,
                                           yl);
                    }
                    _mm512_mask_storeu_ps(y + j0, yl, acc);
                }
                continue;
            }
#endif
            for (int64_t jj = 0; jj < CQ; ++jj) {
                const int64_t c = jj / Q;
                float acc = 0.0f;
                for (int64_t kh = 0; kh < g.kh; ++kh) {
                    const int64_t ih = h0 + kh * g.dh;
                    for (int64_t kw = 0; kw < g.kw; ++kw) {
                        const int64_t iw = w0 + kw * g.dw, b = (kh * g.kw + kw) * CQ + jj;
                        const int inside = ih >= 0 && ih < g.h && iw >= 0 && iw < g.w;
                        const int64_t e = inside ? ((n * g.h + ih) * g.w + iw) * C + c : 0;
                        acc = dw_add_product(acc, inside ? j->as[e] : 0.0f, inside ? j->ai[e] : 0u, j->bs[b],
                                             j->bi[b], j->table, j->m, j->mode, j->fast);
                    }
                }
                y[jj] = acc;
            }
        }
    }
}

/* ---- input gradient: A = dy split as Q x (N*OH*OW) x C, B = W split as Q x (KH*KW) x C (q-major,
 * so that channel c's operands are contiguous for each q); units: rows (n, h) of dx ---- */

/* The output position that tap i of a filter step covers input position `pos` from, or -1. */
static inline int64_t dw_source(int64_t pos, int64_t pad, int64_t i, int64_t dil, int64_t stride, int64_t size)
{
    const int64_t t = pos + pad - i * dil;
    if (t < 0 || t % stride != 0 || t / stride >= size)
        return -1;
    return t / stride;
}

static void dw_backprop_input_part(void *ctx, int p)
{
    const struct dw_job *j = ctx;
    const struct amsim_conv_geometry g = j->g;
    const int64_t C = g.c, Q = j->q, R = g.n * g.oh * g.ow, KHW = g.kh * g.kw;
    int64_t u0, u1;
    dw_units(j, p, &u0, &u1);
    for (int64_t u = u0; u < u1; ++u) {
        const int64_t n = u / g.h, h = u % g.h;
        for (int64_t w = 0; w < g.w; ++w) {
            float *dx = j->out + (u * g.w + w) * C;
#if AMSIM_AVX512
            if (j->vector) {
                for (int64_t c0 = 0; c0 < C; c0 += 16) {
                    const __mmask16 l = dw_lanes(C - c0);
                    __m512 acc = _mm512_setzero_ps();
                    for (int64_t kh = 0; kh < g.kh; ++kh) {
                        const int64_t oh = dw_source(h, g.pad_top, kh, g.dh, g.sh, g.oh);
                        if (oh < 0)
                            continue;
                        for (int64_t kw = 0; kw < g.kw; ++kw) {
                            const int64_t ow = dw_source(w, g.pad_left, kw, g.dw, g.sw, g.ow);
                            if (ow < 0)
                                continue;
                            const int64_t r = (n * g.oh + oh) * g.ow + ow, k = kh * g.kw + kw;
                            __m512 sum = _mm512_setzero_ps(), sa, sb;  /* the GEMM's output, summed over q */
                            __m512i ia, ib;
                            for (int64_t q = 0; q < Q; ++q) {
                                const int64_t a = (q * R + r) * C + c0, b = (q * KHW + k) * C + c0;
                                dw_load16(j->as + a, j->ai + a, l, &sa, &ia);
                                dw_load16(j->bs + b, j->bi + b, l, &sb, &ib);
                                /* for Q = 1, col2im's acc + (+0 + p) is acc + p: acc is never -0 */
                                if (Q == 1)
                                    acc = dw_fma16(acc, sa, ia, sb, ib, j->table, j->m);
                                else
                                    sum = dw_fma16(sum, sa, ia, sb, ib, j->table, j->m);
                            }
                            if (Q > 1)
                                acc = _mm512_add_ps(acc, sum);
                        }
                    }
                    _mm512_mask_storeu_ps(dx + c0, l, acc);
                }
                continue;
            }
#endif
            for (int64_t c = 0; c < C; ++c) {
                float acc = 0.0f;
                for (int64_t kh = 0; kh < g.kh; ++kh) {
                    const int64_t oh = dw_source(h, g.pad_top, kh, g.dh, g.sh, g.oh);
                    if (oh < 0)
                        continue;
                    for (int64_t kw = 0; kw < g.kw; ++kw) {
                        const int64_t ow = dw_source(w, g.pad_left, kw, g.dw, g.sw, g.ow);
                        if (ow < 0)
                            continue;
                        const int64_t r = (n * g.oh + oh) * g.ow + ow, k = kh * g.kw + kw;
                        float sum = 0.0f;
                        for (int64_t q = 0; q < Q; ++q) {
                            const int64_t a = (q * R + r) * C + c, b = (q * KHW + k) * C + c;
                            sum = dw_add_product(sum, j->as[a], j->ai[a], j->bs[b], j->bi[b], j->table, j->m,
                                                 j->mode, j->fast);
                        }
                        acc += sum;
                    }
                }
                dx[c] = acc;
            }
        }
    }
}

/* ---- filter gradient: A = x split as (N*H*W) x C, B = dy split as (N*OH*OW) x (C*Q); units:
 * (tap, block of 16 output channels), each summed over every output position ---- */

static void dw_backprop_filter_part(void *ctx, int p)
{
    const struct dw_job *j = ctx;
    const struct amsim_conv_geometry g = j->g;
    const int64_t C = g.c, Q = j->q, CQ = j->cq, blocks = (CQ + 15) / 16;
    int64_t u0, u1;
    dw_units(j, p, &u0, &u1);
    for (int64_t u = u0; u < u1; ++u) {
        const int64_t k = u / blocks, j0 = (u % blocks) * 16, kh = k / g.kw, kw = k % g.kw;
        const int64_t j1 = j0 + 16 < CQ ? j0 + 16 : CQ;
        float *dw = j->out + k * CQ;
#if AMSIM_AVX512
        if (j->vector) {
            __mmask16 xl;
            __m512i perm;
            dw_channels(j0, Q, C, &xl, &perm);
            const __mmask16 yl = dw_lanes(CQ - j0);
            const int64_t c0 = j0 / Q;
            __m512 acc = _mm512_setzero_ps();
            for (int64_t n = 0; n < g.n; ++n)
                for (int64_t oh = 0; oh < g.oh; ++oh) {
                    const int64_t ih = oh * g.sh - g.pad_top + kh * g.dh;
                    for (int64_t ow = 0; ow < g.ow; ++ow)
                        acc = dw_tap16(j, acc, n, ih, ow * g.sw - g.pad_left + kw * g.dw, c0,
                                       ((n * g.oh + oh) * g.ow + ow) * CQ + j0, xl, perm, yl);
                }
            _mm512_mask_storeu_ps(dw + j0, yl, acc);
            continue;
        }
#endif
        for (int64_t jj = j0; jj < j1; ++jj) {
            const int64_t c = jj / Q;
            float acc = 0.0f;
            for (int64_t n = 0; n < g.n; ++n)
                for (int64_t oh = 0; oh < g.oh; ++oh) {
                    const int64_t ih = oh * g.sh - g.pad_top + kh * g.dh;
                    for (int64_t ow = 0; ow < g.ow; ++ow) {
                        const int64_t iw = ow * g.sw - g.pad_left + kw * g.dw;
                        const int inside = ih >= 0 && ih < g.h && iw >= 0 && iw < g.w;
                        const int64_t e = inside ? ((n * g.h + ih) * g.w + iw) * C + c : 0;
                        const int64_t b = ((n * g.oh + oh) * g.ow + ow) * CQ + jj;
                        acc = dw_add_product(acc, inside ? j->as[e] : 0.0f, inside ? j->ai[e] : 0u, j->bs[b],
                                             j->bi[b], j->table, j->m, j->mode, j->fast);
                    }
                }
            dw[jj] = acc;
        }
    }
}

/* ---- the split of the operands, and the entry points ---- */

/* The split of a strided rows x cols operand, row-major, on up to `threads` threads. */
struct dw_split {
    const float *x;
    int64_t rows, cols, rs, cs;
    int m, rounding, nparts;
    float *scale;
    uint16_t *idx;
    int32_t range[2 * MAX_THREADS];
};

static void dw_split_part(void *ctx, int p)
{
    struct dw_split *s = ctx;
    const int64_t per = (s->rows + s->nparts - 1) / s->nparts, r0 = p * per;
    const int64_t r1 = r0 + per < s->rows ? r0 + per : s->rows;
    s->range[2 * p] = 255, s->range[2 * p + 1] = 0;
    if (r0 < r1)
        amsim_split_f32(s->x, s->rows, s->cols, s->rs, s->cs, s->m, s->rounding, 0, s->scale, s->idx, r0, r1,
                        s->range + 2 * p);
}

/* Split `count` strided rows x cols operands, operand t at x + t * step, into consecutive row-major
 * blocks of scale and idx; widens range[0..1] by their exponents. */
static void dw_split(const float *x, int64_t count, int64_t step, int64_t rows, int64_t cols, int64_t rs,
                     int64_t cs, int m, int rounding, int threads, float *scale, uint16_t *idx, int32_t range[2])
{
    for (int64_t t = 0; t < count; ++t) {
        struct dw_split s = {x + t * step, rows, cols, rs, cs, m, rounding, 1, scale + t * rows * cols,
                             idx + t * rows * cols, {0}};
        const int64_t parts = rows * cols / 65536;
        s.nparts = parts < 1 ? 1 : (parts < threads ? (int)parts : threads);
        if (s.nparts > rows)
            s.nparts = rows < 1 ? 1 : (int)rows;
        run_parts(dw_split_part, &s, s.nparts, threads);
        for (int p = 0; p < s.nparts; ++p) {
            range[0] = s.range[2 * p] < range[0] ? s.range[2 * p] : range[0];
            range[1] = s.range[2 * p + 1] > range[1] ? s.range[2 * p + 1] : range[1];
        }
    }
}

enum { DW_FORWARD, DW_BACKPROP_INPUT, DW_BACKPROP_FILTER };

/* One pass: checks, the split of both operands (a: the left one), the window, the loops. */
static int dw_run(int pass, const struct amsim_lut *lut, const struct amsim_conv_geometry *g, int64_t q,
                  const float *a, const float *b, float *out, int rounding, int mode, int threads)
{
    if (!lut || !amsim_conv_geometry_valid(g) || q < 1 || (rounding != AMSIM_TRUNCATE && rounding != AMSIM_RNE) ||
        (mode != AMSIM_MODE_IEEE && mode != AMSIM_MODE_APPROXTRAIN) || threads < 0 || lut->m < 1 ||
        lut->m > MAX_LUT_BITS || !lut->table[0])
        return AMSIM_ERR_ARGS;
    const int64_t C = g->c, CQ = C * q, KHW = g->kh * g->kw;
    const int64_t X = g->n * g->h * g->w, R = g->n * g->oh * g->ow;
    const int64_t outputs = pass == DW_FORWARD ? R * CQ : pass == DW_BACKPROP_INPUT ? X * C : KHW * CQ;
    if (outputs == 0)
        return AMSIM_OK;
    /* the left operand (rows x C or x CQ) and the right one, as each pass lays them out */
    const int64_t a_len = pass == DW_BACKPROP_INPUT ? R * CQ : X * C;
    const int64_t b_len = pass == DW_BACKPROP_FILTER ? R * CQ : KHW * CQ;
    if (!out || (a_len > 0 && !a) || (b_len > 0 && !b))
        return AMSIM_ERR_ARGS;
    threads = threads > 0 ? threads : default_threads();
    threads = threads > MAX_THREADS ? MAX_THREADS : threads;
    struct dw_job j = {*g, q, CQ, NULL, NULL, NULL, NULL, lut->table[0], lut->m, mode, 0, 0, out, 0, 0};
    float *as = work_buffer(SLOT_XS, sizeof(float) * (size_t)(a_len > 0 ? a_len : 1));
    uint16_t *ai = work_buffer(SLOT_XI, sizeof(uint16_t) * (size_t)(a_len > 0 ? a_len : 1));
    float *bs = work_buffer(SLOT_YS, sizeof(float) * (size_t)(b_len > 0 ? b_len : 1));
    uint16_t *bi = work_buffer(SLOT_YI, sizeof(uint16_t) * (size_t)(b_len > 0 ? b_len : 1));
    if (!as || !ai || !bs || !bi)
        return AMSIM_ERR_MEMORY;
    int32_t ra[2] = {255, 0}, rb[2] = {255, 0};
    const int m = lut->m;
    if (pass == DW_BACKPROP_INPUT) {  /* q-major: dy[:, c * Q + q] and W[:, :, c, q] as Q blocks of C columns */
        dw_split(a, q, 1, R, C, CQ, q, m, rounding, threads, as, ai, ra);
        dw_split(b, q, 1, KHW, C, CQ, q, m, rounding, threads, bs, bi, rb);
    } else {
        dw_split(a, 1, 0, X, C, C, 1, m, rounding, threads, as, ai, ra);
        if (pass == DW_FORWARD)
            dw_split(b, 1, 0, KHW, CQ, CQ, 1, m, rounding, threads, bs, bi, rb);
        else
            dw_split(b, 1, 0, R, CQ, CQ, 1, m, rounding, threads, bs, bi, rb);
    }
    j.as = as, j.ai = ai, j.bs = bs, j.bi = bi;
    j.fast = lut->fast && amsim_window_exact(ra[0], ra[1], rb[0], rb[1], lut->v_lo, lut->v_hi, mode);
    j.vector = AMSIM_AVX512 && j.fast && q < ((int64_t)1 << 22);
    part_fn fn = pass == DW_FORWARD ? dw_forward_part
                 : pass == DW_BACKPROP_INPUT ? dw_backprop_input_part : dw_backprop_filter_part;
    j.units = pass == DW_FORWARD ? g->n * g->oh : pass == DW_BACKPROP_INPUT ? g->n * g->h : KHW * ((CQ + 15) / 16);
    const int64_t products = (pass == DW_BACKPROP_INPUT ? X * C : R * CQ) * KHW;
    const int use = products >= DW_PARALLEL_MIN ? threads : 1;
    j.nparts = j.units < use ? j.units : use;
    run_parts(fn, &j, (int)j.nparts, use);
    return AMSIM_OK;
}

int amsim_depthwise_conv2d(const struct amsim_lut *lut, const struct amsim_conv_geometry *g, int64_t q,
                           const float *x, const float *w, float *y, int rounding, int mode, int threads)
{
    return dw_run(DW_FORWARD, lut, g, q, x, w, y, rounding, mode, threads);
}

int amsim_depthwise_backprop_input(const struct amsim_lut *lut, const struct amsim_conv_geometry *g, int64_t q,
                                   const float *w, const float *dy, float *dx, int rounding, int mode, int threads)
{
    return dw_run(DW_BACKPROP_INPUT, lut, g, q, dy, w, dx, rounding, mode, threads);
}

int amsim_depthwise_backprop_filter(const struct amsim_lut *lut, const struct amsim_conv_geometry *g, int64_t q,
                                    const float *x, const float *dy, float *dw, int rounding, int mode, int threads)
{
    return dw_run(DW_BACKPROP_FILTER, lut, g, q, x, dy, dw, rounding, mode, threads);
}
