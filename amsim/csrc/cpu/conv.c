/*
 * conv.c -- patch extraction for conv2d (im2col) and its adjoint (col2im), NHWC input, HWIO
 * filters, TensorFlow's geometry (amsim_gemm.h). Both are copies and float32 additions in a
 * fixed order, so any split between threads gives the same bits: col2im adds, into each input
 * position, the patch columns that cover it in increasing (kh, kw), starting from +0.
 *
 * Both read the geometry into locals and find the ranges inside the input up front (im2col the
 * filter rows once per output row, col2im the output positions of each tap) instead of testing
 * every tap: the copies' stores may alias anything a pointer reaches, so fields read through `g`
 * were reloaded after every copy, and those reloads and tests cost more than the 5-float runs of
 * a one-channel input themselves.
 *
 * amsim_int_im2col is im2col of one-byte integer patterns for the integer GEMM (int_gemm.c): the
 * padding is a given pattern (a quantized input's zero point) instead of zero, the columns of a
 * grouped convolution come out as one patch matrix per group, and each row's sum of values is
 * taken in the same pass, while the rows are in L1 (the uint8 scheme's zero-point correction
 * needs it).
 */
#include "engine.h"

#define CONV_PARALLEL_MIN 65536  /* floats written: less is done by the caller alone */

struct conv_job {
    const struct amsim_conv_geometry *g;
    const float *in;
    float *out;
    int64_t units, nparts;  /* im2col: output rows (n, oh); col2im: images */
};

/*
 * Copy a run of n floats (a patch row's taps: a few floats to a few thousand) as two
 * overlapping moves of the widest power-of-two size that fits, or moves of 16 and a last
 * overlapping one. A libc call per run cost more than the copy for small channel counts; the
 * size class is the same for every run of a call, so its branches predict.
 */
static inline __attribute__((always_inline)) void copy_run(float *restrict d, const float *restrict s, int64_t n)
{
    if (n >= 16) {
        for (int64_t t = 0; t + 16 < n; t += 16)
            memcpy(d + t, s + t, 64);
        memcpy(d + n - 16, s + n - 16, 64);
    } else if (n >= 8) {
        memcpy(d, s, 32);
        memcpy(d + n - 8, s + n - 8, 32);
    } else if (n >= 4) {
        memcpy(d, s, 16);
        memcpy(d + n - 4, s + n - 4, 16);
    } else if (n >= 2) {
        memcpy(d, s, 8);
        memcpy(d + n - 2, s + n - 2, 8);
    } else if (n == 1) {
        d[0] = s[0];
    }
}

static inline void zero_run(float *d, int64_t n)
{
    for (int64_t t = 0; t < n; ++t)
        d[t] = 0.0f;
}

/* The steps t in [0, count) whose position start + t * step (step >= 1) lies in [0, size): [*t0, *t1). */
static inline void inside(int64_t start, int64_t step, int64_t count, int64_t size, int64_t *t0, int64_t *t1)
{
    const int64_t first = start >= 0 ? 0 : (-start + step - 1) / step;
    const int64_t end = size - 1 - start >= 0 ? (size - 1 - start) / step + 1 : 0;
    *t0 = first < count ? first : count;
    *t1 = end < *t0 ? *t0 : (end < count ? end : count);
}

/* Rows of output positions (n, oh) [u0, u1) of the patch matrix. */
static void im2col_part(void *ctx, int part)
{
    const struct conv_job *j = ctx;
    const struct amsim_conv_geometry g = *j->g;
    const float *in = j->in;
    float *out = j->out;
    const int64_t per = (j->units + j->nparts - 1) / j->nparts, u0 = part * per;
    const int64_t u1 = u0 + per < j->units ? u0 + per : j->units;
    const int64_t C = g.c, run = g.kw * C, row_len = g.kh * run, tap_step = g.dh * g.w * C;
    for (int64_t u = u0; u < u1; ++u) {
        const int64_t n = u / g.oh, oh = u % g.oh, h0 = oh * g.sh - g.pad_top;
        int64_t i0, i1;  /* the filter rows inside the input, for the whole output row */
        inside(h0, g.dh, g.kh, g.h, &i0, &i1);
        const float *first = i0 < i1 ? in + ((n * g.h + h0 + i0 * g.dh) * g.w) * C : in;
        float *dst = out + u * g.ow * row_len;
        for (int64_t ow = 0; ow < g.ow; ++ow, dst += row_len) {
            const int64_t w0 = ow * g.sw - g.pad_left;
            zero_run(dst, i0 * run);
            zero_run(dst + i1 * run, (g.kh - i1) * run);
            float *d = dst + i0 * run;
            const float *src = first;
            if (g.dw == 1 && w0 >= 0 && w0 + g.kw <= g.w) {
                /* the row's kw taps are adjacent in NHWC: one run per filter row */
                for (int64_t i = i0; i < i1; ++i, d += run, src += tap_step)
                    copy_run(d, src + w0 * C, run);
                continue;
            }
            for (int64_t i = i0; i < i1; ++i, src += tap_step)
                for (int64_t jw = 0; jw < g.kw; ++jw, d += C) {
                    const int64_t w = w0 + jw * g.dw;
                    if (w >= 0 && w < g.w)
                        copy_run(d, src + w * C, C);
                    else
                        zero_run(d, C);
                }
        }
    }
}

/* Images [u0, u1) of dx: each image's positions are summed by one part, in (kh, kw) order (a
 * filter tap covers each position at most once, so the order within a tap is free). */
static void col2im_part(void *ctx, int part)
{
    const struct conv_job *j = ctx;
    const struct amsim_conv_geometry g = *j->g;
    const int64_t per = (j->units + j->nparts - 1) / j->nparts, u0 = part * per;
    const int64_t u1 = u0 + per < j->units ? u0 + per : j->units;
    const int64_t C = g.c, row_len = g.kh * g.kw * C, image = g.h * g.w * C;
    for (int64_t n = u0; n < u1; ++n) {
        float *restrict dx = j->out + n * image;
        zero_run(dx, image);
        for (int64_t i = 0; i < g.kh; ++i) {
            int64_t oh0, oh1;
            inside(i * g.dh - g.pad_top, g.sh, g.oh, g.h, &oh0, &oh1);
            for (int64_t jw = 0; jw < g.kw; ++jw) {
                int64_t ow0, ow1;
                inside(jw * g.dw - g.pad_left, g.sw, g.ow, g.w, &ow0, &ow1);
                if (ow0 == ow1)
                    continue;
                for (int64_t oh = oh0; oh < oh1; ++oh) {
                    const int64_t h = oh * g.sh - g.pad_top + i * g.dh;
                    float *restrict d = dx + (h * g.w + ow0 * g.sw - g.pad_left + jw * g.dw) * C;
                    const float *restrict src = j->in + ((n * g.oh + oh) * g.ow + ow0) * row_len + (i * g.kw + jw) * C;
                    for (int64_t ow = ow0; ow < ow1; ++ow, d += g.sw * C, src += row_len)
                        for (int64_t c = 0; c < C; ++c)
                            d[c] += src[c];
                }
            }
        }
    }
}

static void run_conv(part_fn fn, struct conv_job *j, int64_t written)
{
    const int threads = written >= CONV_PARALLEL_MIN ? default_threads() : 1;
    j->nparts = j->units < threads ? j->units : threads;
    if (j->nparts > 0)
        run_parts(fn, j, (int)j->nparts, threads);
}

int amsim_im2col(const struct amsim_conv_geometry *g, const float *x, float *cols)
{
    if (!amsim_conv_geometry_valid(g))
        return AMSIM_ERR_ARGS;
    const int64_t written = g->n * g->oh * g->ow * g->kh * g->kw * g->c;
    if (written > 0 && (!x || !cols))
        return AMSIM_ERR_ARGS;
    struct conv_job j = {g, x, cols, g->n * g->oh, 0};
    if (written > 0)
        run_conv(im2col_part, &j, written);
    return AMSIM_OK;
}

int amsim_col2im(const struct amsim_conv_geometry *g, const float *cols, float *dx)
{
    if (!amsim_conv_geometry_valid(g))
        return AMSIM_ERR_ARGS;
    const int64_t written = g->n * g->h * g->w * g->c;
    if (written > 0 && (!dx || (g->oh * g->ow * g->kh * g->kw > 0 && !cols)))
        return AMSIM_ERR_ARGS;
    struct conv_job j = {g, cols, dx, g->n, 0};
    if (written > 0)
        run_conv(col2im_part, &j, written);
    return AMSIM_OK;
}

/* ---- integer patches ---- */

#define INT_IM2COL_PARALLEL_MIN ((int64_t)1 << 18)  /* bytes written: less is done by the caller alone */

struct int_im2col_job {
    const struct amsim_conv_geometry *g;
    const uint8_t *in;
    uint8_t *cols;
    int32_t *sums;
    uint8_t pad;
    int shift;                 /* value_sum's: -1 unsigned, else 8 - the signed values' width */
    int64_t groups, nparts;
};

/* copy_run and a fill for bytes: overlapping fixed-size moves, no libc call per run (the runs of
 * a few-channel input are a few bytes each). */
static inline __attribute__((always_inline)) void copy_bytes(uint8_t *restrict d, const uint8_t *restrict s,
                                                             int64_t n)
{
    if (n >= 32) {
        for (int64_t t = 0; t + 32 < n; t += 32)
            memcpy(d + t, s + t, 32);
        memcpy(d + n - 32, s + n - 32, 32);
    } else if (n >= 8) {
        const int64_t half = n >= 16 ? 16 : 8;
        memcpy(d, s, half);
        memcpy(d + n - half, s + n - half, half);
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else if (n >= 2) {
        memcpy(d, s, 2);
        memcpy(d + n - 2, s + n - 2, 2);
    } else if (n == 1) {
        d[0] = s[0];
    }
}

/* d[0..n) = the byte whose copies fill v8. */
static inline __attribute__((always_inline)) void fill_bytes(uint8_t *d, uint64_t v8, int64_t n)
{
    if (n >= 8) {
        for (int64_t t = 0; t + 8 < n; t += 8)
            memcpy(d + t, &v8, 8);
        memcpy(d + n - 8, &v8, 8);
    } else if (n >= 4) {
        memcpy(d, &v8, 4);
        memcpy(d + n - 4, &v8, 4);
    } else if (n >= 2) {
        memcpy(d, &v8, 2);
        memcpy(d + n - 2, &v8, 2);
    } else if (n == 1) {
        d[0] = (uint8_t)v8;
    }
}

/* The sum of the values of n patterns: the patterns themselves (shift < 0), or the two's-complement
 * values of (8 - shift)-bit ones, sign-extended by a shift up to the byte's top and back. Its
 * magnitude is below 2^31 for the patch rows amsim_int_im2col accepts. */
static inline int32_t value_sum(const uint8_t *p, int64_t n, int shift)
{
    int32_t s = 0;
    if (shift < 0) {
        for (int64_t t = 0; t < n; ++t)
            s += p[t];
    } else {
        for (int64_t t = 0; t < n; ++t)
            s += (int8_t)(uint8_t)(p[t] << shift) >> shift;
    }
    return s;
}

/* inside(), without its divisions where every step is inside (the input's interior): it is found
 * for every output position, where a division per position cost more than the copies. */
static inline void taps_inside(int64_t start, int64_t step, int64_t count, int64_t size, int64_t *t0, int64_t *t1)
{
    if (start >= 0 && start + (count - 1) * step < size) {
        *t0 = 0;
        *t1 = count;
    } else {
        inside(start, step, count, size, t0, t1);
    }
}

#if AMSIM_AVX512 && defined(__AVX512BW__)
/* The lanes [lo, hi) of a 64-lane mask, lo and hi clipped to 0..64. */
static inline __mmask64 lanes_between(int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > 64 ? 64 : hi;
    if (hi <= lo)
        return 0;
    const __mmask64 below_hi = hi == 64 ? ~(__mmask64)0 : (((__mmask64)1 << hi) - 1);
    return below_hi & ~(((__mmask64)1 << lo) - 1);
}

/* What int_im2col_row_avx512 adds up for a position's sum (value_sum's, shift as there): the
 * bytes' sum of absolute differences from zero, and the count of negative values. */
struct patch_sum {
    __m512i sad;
    int64_t negatives;
};

static inline __attribute__((always_inline)) void patch_sum_add(struct patch_sum *p, __m512i v, int shift,
                                                                __m512i low, __m512i sign)
{
    if (shift < 0) {
        p->sad = _mm512_add_epi64(p->sad, _mm512_sad_epu8(v, _mm512_setzero_si512()));
    } else {  /* signed values of 8 - shift bits: the low bits' sum less 2^bits for each negative one */
        p->sad = _mm512_add_epi64(p->sad, _mm512_sad_epu8(_mm512_and_si512(v, low), _mm512_setzero_si512()));
        p->negatives += __builtin_popcountll(_mm512_test_epi8_mask(v, sign));
    }
}

/* A narrow run's piece v (its `lanes`, zeros past them) at d, whole where it ends before `end`
 * (the stores that follow overwrite what lies past the run), else masked; added into p. */
static inline __attribute__((always_inline)) void put_narrow(uint8_t *d, const uint8_t *end, __mmask16 lanes,
                                                             __m128i v, struct patch_sum *p, int shift,
                                                             __m512i low, __m512i sign)
{
    if (d + 16 <= end)
        _mm_storeu_si128((__m128i *)d, v);
    else
        _mm_mask_storeu_epi8(d, lanes, v);
    patch_sum_add(p, _mm512_zextsi128_si512(v), shift, low, sign);
}

/*
 * One output row's patch rows where a filter row's taps and all channels are adjacent in NHWC
 * (one group, dw = 1), and their sums (value_sum's, shift as there), with AVX-512. A filter row's
 * run of kw * C bytes goes in 64-byte pieces, or one 16-byte piece for a run of at most 16 bytes
 * (64-byte stores 5 bytes apart are each split across two cache lines). A piece
 * is loaded with the lanes outside the input set to the pad pattern (a masked load reads none of
 * them: no padded copy of the input), and stored whole, since the stores that follow overwrite
 * what lies past the run, except at the end of the output row (masked: the next row may be
 * another thread's). Each sum comes from the loaded vectors, not from the row just stored. A
 * narrow run's lanes inside the input are found once per position, and a position wholly inside
 * takes them with no merge. A one-channel input's 5-byte runs are then one load and one store
 * each, where the scalar path copies and fills them in pieces and reads the sums back
 * (docs/performance.md has the timings).
 */
static void int_im2col_row_avx512(const struct amsim_conv_geometry *g, const uint8_t *image, int64_t h0,
                                  int vertical_pad, uint8_t pad, int shift, uint8_t *dst, int32_t *sums)
{
    const int64_t C = g->c, run = g->kw * C, row_len = g->kh * run, width = g->w * C;
    const int64_t tap_step = g->dh * width;
    const uint8_t *const end = dst + g->ow * row_len;
    const int bits = shift < 0 ? 8 : 8 - shift;
    const __m512i padv = _mm512_set1_epi8((char)pad);
    const __m512i low = _mm512_set1_epi8((char)(uint8_t)((1u << bits) - 1));
    const __m512i sign = _mm512_set1_epi8((char)(uint8_t)(1u << (bits - 1)));
    const int narrow = run <= 16;
    const __mmask64 whole = lanes_between(0, narrow ? run : 64);
    const __m512i pad_run = _mm512_maskz_mov_epi8(whole, padv);
    for (int64_t ow = 0; ow < g->ow; ++ow, dst += row_len) {
        const int64_t start = (ow * g->sw - g->pad_left) * C;  /* the run's first byte in an input row */
        struct patch_sum sum = {_mm512_setzero_si512(), 0};
        if (narrow && !vertical_pad && start >= 0 && start + run <= width) {
            /* inside the input: the run's lanes alone, loaded with zeros past them (no merge with
             * the pad pattern: a merge-masked load is a load and a blend) */
            const uint8_t *src = image + h0 * width + start;
            uint8_t *d = dst;
            for (int64_t i = 0; i < g->kh; ++i, src += tap_step, d += run)
                put_narrow(d, end, (__mmask16)whole, _mm_maskz_loadu_epi8((__mmask16)whole, src), &sum, shift, low,
                           sign);
        } else if (narrow) {  /* the same lanes inside the input for every filter row */
            const __mmask16 inside = (__mmask16)(whole & lanes_between(-start, width - start));
            const __m128i pad16 = _mm512_castsi512_si128(pad_run);
            uint8_t *d = dst;
            for (int64_t i = 0, h = h0; i < g->kh; ++i, h += g->dh, d += run) {
                const __m128i v = h >= 0 && h < g->h
                                      ? _mm_mask_loadu_epi8(pad16, inside,
                                                            (const void *)((uintptr_t)(image + h * width) +
                                                                           (uintptr_t)start))
                                      : pad16;
                put_narrow(d, end, (__mmask16)whole, v, &sum, shift, low, sign);
            }
        } else {
            for (int64_t i = 0, h = h0; i < g->kh; ++i, h += g->dh) {
                const int inside_rows = h >= 0 && h < g->h;
                const uintptr_t row = (uintptr_t)(image + (inside_rows ? h : 0) * width);
                uint8_t *d = dst + i * run;
                for (int64_t t = 0; t < run; t += 64) {
                    const __mmask64 piece = lanes_between(0, run - t);
                    const __mmask64 inside = inside_rows ? piece & lanes_between(-(start + t), width - (start + t)) : 0;
                    const __m512i v = _mm512_mask_loadu_epi8(_mm512_maskz_mov_epi8(piece, padv), inside,
                                                             (const void *)(row + (uintptr_t)(start + t)));
                    if (d + t + 64 <= end)
                        _mm512_storeu_si512(d + t, v);
                    else
                        _mm512_mask_storeu_epi8(d + t, piece, v);
                    patch_sum_add(&sum, v, shift, low, sign);
                }
            }
        }
        if (sums) {  /* a narrow run's sums are in the low 128 bits alone */
            const __m128i s2 = _mm512_castsi512_si128(sum.sad);
            const int64_t total = narrow ? _mm_cvtsi128_si64(_mm_add_epi64(s2, _mm_unpackhi_epi64(s2, s2)))
                                         : _mm512_reduce_add_epi64(sum.sad);
            sums[ow] = (int32_t)(total - (sum.negatives << bits));
        }
    }
}
#endif

/*
 * Rows of output positions (n, oh) [u0, u1): for each output position and group, the group's
 * patch row (kh, kw, c) in block g of cols, the pad pattern outside the input, and its sum. The
 * filter rows inside the input are found once per output row, its columns once per position;
 * everything else is the pad. Each group writes its rows of an output row before the next group
 * starts, so that its stores are sequential while the input rows they read stay in L1 (a depthwise
 * convolution's groups are one channel each: interleaving them wrote as many streams as channels,
 * a byte at a time).
 */
static void int_im2col_part(void *ctx, int part)
{
    const struct int_im2col_job *j = ctx;
    const struct amsim_conv_geometry g = *j->g;
    const uint8_t *in = j->in;
    uint8_t *cols = j->cols;
    int32_t *sums = j->sums;
    const int shift = j->shift;
    const int64_t G = j->groups, per = (g.n * g.oh + j->nparts - 1) / j->nparts, u0 = part * per;
    const int64_t u1 = u0 + per < g.n * g.oh ? u0 + per : g.n * g.oh;
    const int64_t C = g.c, Cg = C / G, run = g.kw * Cg, row_len = g.kh * run, tap_step = g.dh * g.w * C;
    const int64_t block = g.n * g.oh * g.ow * row_len;  /* one group's patch matrix */
    const uint64_t v8 = j->pad * UINT64_C(0x0101010101010101);
    /* one copy per filter row when its taps and a group's channels are adjacent in NHWC */
    const int adjacent = G == 1 && g.dw == 1;
    for (int64_t u = u0; u < u1; ++u) {
        const int64_t n = u / g.oh, oh = u % g.oh, h0 = oh * g.sh - g.pad_top;
        int64_t i0, i1;  /* the filter rows inside the input, for the whole output row */
        inside(h0, g.dh, g.kh, g.h, &i0, &i1);
        const uint8_t *first = i0 < i1 ? in + ((n * g.h + h0 + i0 * g.dh) * g.w) * C : in;
        const int vertical_pad = i0 > 0 || i1 < g.kh;
#if AMSIM_AVX512 && defined(__AVX512BW__)
        if (adjacent) {
            int_im2col_row_avx512(&g, in + n * g.h * g.w * C, h0, vertical_pad, j->pad, shift,
                                  cols + u * g.ow * row_len, sums ? sums + u * g.ow : NULL);
            continue;
        }
#endif
        for (int64_t gi = 0; gi < G; ++gi) {
            uint8_t *dst = cols + gi * block + u * g.ow * row_len;
            for (int64_t ow = 0; ow < g.ow; ++ow, dst += row_len) {
                const int64_t w0 = ow * g.sw - g.pad_left;
                if (adjacent && !vertical_pad && w0 >= 0 && w0 + g.kw <= g.w) {
                    /* inside the input: one run per filter row (the general steps below, taken for
                     * every position, kept the compiler from holding the geometry in registers) */
                    const uint8_t *src = first + w0 * C;
                    for (int64_t i = 0; i < g.kh; ++i, src += tap_step)
                        copy_bytes(dst + i * run, src, run);
                    continue;
                }
                int64_t j0, j1;  /* the filter columns inside the input */
                taps_inside(w0, g.dw, g.kw, g.w, &j0, &j1);
                const int padded = i0 > 0 || i1 < g.kh || j0 > 0 || j1 < g.kw;
                if (padded) {
                    fill_bytes(dst, v8, i0 * run);
                    fill_bytes(dst + i1 * run, v8, (g.kh - i1) * run);
                }
                const uint8_t *src = first + gi * Cg;  /* the group's channels of filter row i0 */
                for (int64_t i = i0; i < i1; ++i, src += tap_step) {
                    uint8_t *d = dst + i * run;
                    if (padded) {
                        fill_bytes(d, v8, j0 * Cg);
                        fill_bytes(d + j1 * Cg, v8, (g.kw - j1) * Cg);
                    }
                    if (adjacent) {
                        copy_bytes(d + j0 * Cg, src + (w0 + j0) * C, (j1 - j0) * Cg);
                    } else if (Cg == 1) {
                        for (int64_t jw = j0; jw < j1; ++jw)
                            d[jw] = src[(w0 + jw * g.dw) * C];
                    } else {
                        for (int64_t jw = j0; jw < j1; ++jw)
                            copy_bytes(d + jw * Cg, src + (w0 + jw * g.dw) * C, Cg);
                    }
                }
            }
            /* the sums once the output row's stores have drained: a vector load of a row just
             * written by smaller stores waits for them (store forwarding fails) */
            if (sums) {
                const uint8_t *row = cols + gi * block + u * g.ow * row_len;
                for (int64_t ow = 0; ow < g.ow; ++ow, row += row_len)
                    sums[(u * g.ow + ow) * G + gi] = value_sum(row, row_len, shift);
            }
        }
    }
}

int amsim_int_im2col(const struct amsim_conv_geometry *g, const uint8_t *x, uint8_t pad, int64_t groups,
                     uint8_t *cols, int32_t *sums, int signed_bits, int threads)
{
    if (!amsim_conv_geometry_valid(g) || groups < 1 || g->c % groups != 0 || signed_bits < 0 || signed_bits > 8 ||
        threads < 0)
        return AMSIM_ERR_ARGS;
    const int64_t rows = g->n * g->oh * g->ow, row_len = g->kh * g->kw * (g->c / groups);
    if (row_len > INT32_MAX / 255)  /* a row's sum of values must fit int32 */
        return AMSIM_ERR_ARGS;
    const int64_t written = rows * groups * row_len;
    if (written > 0 && (!x || !cols))
        return AMSIM_ERR_ARGS;
    if (written == 0) {  /* no patch columns (or no rows): every sum is empty */
        if (sums && rows > 0)
            memset(sums, 0, sizeof(int32_t) * (size_t)(rows * groups));
        return AMSIM_OK;
    }
    struct int_im2col_job j = {g, x, cols, sums, pad, signed_bits ? 8 - signed_bits : -1, groups, 0};
    const int use = pass_threads(written, INT_IM2COL_PARALLEL_MIN, threads);
    j.nparts = pass_parts(g->n * g->oh, use);
    run_parts(int_im2col_part, &j, (int)j.nparts, use);
    return AMSIM_OK;
}
