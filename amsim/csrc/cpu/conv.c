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
#elif AMSIM_AVX2
/* A window of 32 bytes at int_first_bytes + 32 - n (n = 0..32) has its first n bytes set. */
static const uint8_t int_first_bytes[64] = {[0 ... 31] = 0xFF};

/* The first n lanes of a 32-byte vector, n clipped to 0..32. */
static inline __m256i first_lanes(int64_t n)
{
    n = n < 0 ? 0 : n > 32 ? 32 : n;
    return _mm256_loadu_si256((const __m256i *)(int_first_bytes + 32 - n));
}

/* int_im2col_row_avx512's sum, in 256-bit vectors. */
struct patch_sum_avx2 {
    __m256i sad;
    int64_t negatives;
};

/* Add a piece v (its lanes past the piece zero) into p: the bytes' sum, or for signed values of
 * 8 - shift bits the low bits' sum and the count of negative ones (as patch_sum_add). */
static inline __attribute__((always_inline)) void patch_sum_add_avx2(struct patch_sum_avx2 *p, __m256i v, int shift,
                                                                     __m256i low, __m256i sign)
{
    if (shift < 0) {
        p->sad = _mm256_add_epi64(p->sad, _mm256_sad_epu8(v, _mm256_setzero_si256()));
    } else {
        p->sad = _mm256_add_epi64(p->sad, _mm256_sad_epu8(_mm256_and_si256(v, low), _mm256_setzero_si256()));
        p->negatives += __builtin_popcount((unsigned)_mm256_movemask_epi8(
            _mm256_cmpeq_epi8(_mm256_and_si256(v, sign), sign)));
    }
}

/* The n bytes at s as lanes [a, a + n) of a vector, the others zero, through a buffer: for a piece
 * that would read outside the input (n >= 1). */
static __m256i load_lanes(const uint8_t *s, int64_t n, int64_t a)
{
    uint8_t buf[32] = {0};
    memcpy(buf + a, s, (size_t)n);
    return _mm256_loadu_si256((const __m256i *)buf);
}

/* The first n bytes of v stored at d, through a buffer: for a piece that would write past the part's
 * rows. */
static void store_lanes(uint8_t *d, __m256i v, int64_t n)
{
    uint8_t buf[32];
    _mm256_storeu_si256((__m256i *)buf, v);
    memcpy(d, buf, (size_t)n);
}

/*
 * The window of one output position, its kh filter rows' runs (`run` bytes from `start` in input
 * rows of `width`, from row h0, dh apart, of H) into its patch row at d in pieces of `bytes` (16
 * or 32; a 16-byte piece's upper lanes zero), and its sum. `inside`: every tap lies in the input,
 * so no piece takes the pad pattern (padv). `careful`: a piece may lie outside the input [base,
 * limit) or end past `end`, and then goes through a buffer. Inlined with constant bytes, inside
 * and careful, each case has its own loop (the buffers' calls in the loop kept the sums in
 * memory). The geometry comes as values: read through a pointer, it was read again after every
 * store (which may alias anything). Addresses outside the input are integers, never pointers.
 */
static inline __attribute__((always_inline)) struct patch_sum_avx2
window_avx2(const uint8_t *image, int64_t h0, int64_t dh, int64_t H, int64_t kh, int64_t width, int64_t run,
            int64_t start, int inside, int bytes, int careful, __m256i padv, const uint8_t *base, const uint8_t *limit,
            uint8_t *d, const uint8_t *end, int shift, __m256i low, __m256i sign)
{
    struct patch_sum_avx2 p = {_mm256_setzero_si256(), 0};
    const __m256i pad = bytes == 16 ? _mm256_zextsi128_si256(_mm256_castsi256_si128(padv)) : padv;
    for (int64_t i = 0, h = h0; i < kh; ++i, h += dh, d += run) {
        const int row_inside = h >= 0 && h < H;
        const uintptr_t src = (uintptr_t)image + (uintptr_t)(h * width + start);
        for (int64_t t = 0; t < run; t += bytes) {
            const int64_t n = run - t < bytes ? run - t : bytes;
            /* the lanes [a, b) lie in the input's row */
            const int64_t a = inside ? 0 : row_inside ? -(start + t) : n, b = inside ? n : width - (start + t);
            const int64_t a0 = a < 0 ? 0 : a, b0 = b < n ? b : n;
            const uintptr_t s = src + (uintptr_t)t;
            __m256i v;
            if (careful && a0 < b0 && (s < (uintptr_t)base || s + (uintptr_t)bytes > (uintptr_t)limit))
                v = load_lanes((const uint8_t *)(s + (uintptr_t)a0), b0 - a0, a0);
            else if (a0 >= b0)
                v = pad;
            else
                v = bytes == 16 ? _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)s))
                                : _mm256_loadu_si256((const __m256i *)s);
            if (!inside && a0 < b0) {  /* the pad pattern in the lanes outside the input */
                const __m256i in = _mm256_andnot_si256(first_lanes(a0), first_lanes(b0));
                v = _mm256_blendv_epi8(pad, v, in);
            }
            if (n < bytes)
                v = _mm256_and_si256(v, first_lanes(n));
            if (careful && d + t + bytes > end)
                store_lanes(d + t, v, n);
            else if (bytes == 16)
                _mm_storeu_si128((__m128i *)(d + t), _mm256_castsi256_si128(v));
            else
                _mm256_storeu_si256((__m256i *)(d + t), v);
            patch_sum_add_avx2(&p, v, shift, low, sign);
        }
    }
    return p;
}

/* window_avx2 where a piece may read outside the input or write past the part's rows: out of line,
 * since it is rare (the input's first and last positions, the part's last). */
static __attribute__((noinline)) struct patch_sum_avx2
window_avx2_careful(const uint8_t *image, int64_t h0, int64_t dh, int64_t H, int64_t kh, int64_t width, int64_t run,
                    int64_t start, __m256i padv, const uint8_t *base, const uint8_t *limit, uint8_t *d,
                    const uint8_t *end, int shift, __m256i low, __m256i sign)
{
    return window_avx2(image, h0, dh, H, kh, width, run, start, 0, run <= 16 ? 16 : 32, 1, padv, base, limit, d, end,
                       shift, low, sign);
}

/*
 * int_im2col_row_avx512 with AVX2 (one group, dw = 1; the input at [base, limit); `end`: the end
 * of the part's patch rows). AVX2 has no byte-masked loads or stores, so a filter row's run goes
 * in pieces of 16 bytes (runs of at most 16) or 32, loaded whole (the bytes past the run read
 * from the input, then cleared), the lanes outside the input blended with the pad pattern, and
 * stored whole: the stores that follow overwrite what lies past the run, the next output row's
 * too, which this part writes next. A piece that would read outside the input, or write past the
 * part's rows (the next may be another thread's), goes through a buffer. Each sum comes from the
 * pieces, as there.
 */
static void int_im2col_row_avx2(const struct amsim_conv_geometry *g, const uint8_t *image, int64_t h0,
                                int vertical_pad, uint8_t pad, int shift, const uint8_t *base, const uint8_t *limit,
                                uint8_t *dst, const uint8_t *end, int32_t *sums)
{
    const int64_t C = g->c, kh = g->kh, dh = g->dh, H = g->h, ow_n = g->ow, sw = g->sw, pad_left = g->pad_left;
    const int64_t run = g->kw * C, row_len = kh * run, width = g->w * C;
    const int bits = shift < 0 ? 8 : 8 - shift, narrow = run <= 16, bytes = narrow ? 16 : 32;
    const __m256i padv = _mm256_set1_epi8((char)pad);
    const __m256i low = _mm256_set1_epi8((char)(uint8_t)((1u << bits) - 1));
    const __m256i sign = _mm256_set1_epi8((char)(uint8_t)(1u << (bits - 1)));
    /* the bytes a window's pieces span past its first filter row's run start, and a patch row's
     * past its own start */
    const int64_t last = run - (run - 1) / bytes * bytes;
    const int64_t read = (kh - 1) * dh * width + run - last + bytes, written = row_len - last + bytes;
    int64_t lo, hi;  /* the positions whose window lies in the input's columns */
    inside(-pad_left, sw, ow_n, g->w - g->kw + 1, &lo, &hi);
    for (int64_t ow = 0; ow < ow_n; ++ow, dst += row_len) {
        const int64_t start = (ow * sw - pad_left) * C;  /* the run's first byte in an input row */
        const int inside_window = !vertical_pad && ow >= lo && ow < hi;
        const uintptr_t first = (uintptr_t)image + (uintptr_t)(h0 * width + start);
        const int careful = first < (uintptr_t)base || first + (uintptr_t)read > (uintptr_t)limit ||
                            dst + written > end;
        struct patch_sum_avx2 sum;
        /* each case with its constants: the common ones are windows inside the input */
        if (careful)
            sum = window_avx2_careful(image, h0, dh, H, kh, width, run, start, padv, base, limit, dst, end, shift,
                                      low, sign);
        else if (inside_window && narrow)
            sum = window_avx2(image, h0, dh, H, kh, width, run, start, 1, 16, 0, padv, base, limit, dst, end, shift,
                              low, sign);
        else if (inside_window)
            sum = window_avx2(image, h0, dh, H, kh, width, run, start, 1, 32, 0, padv, base, limit, dst, end, shift,
                              low, sign);
        else if (narrow)
            sum = window_avx2(image, h0, dh, H, kh, width, run, start, 0, 16, 0, padv, base, limit, dst, end, shift,
                              low, sign);
        else
            sum = window_avx2(image, h0, dh, H, kh, width, run, start, 0, 32, 0, padv, base, limit, dst, end, shift,
                              low, sign);
        if (sums) {
            const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(sum.sad), _mm256_extracti128_si256(sum.sad, 1));
            sums[ow] = (int32_t)(_mm_cvtsi128_si64(_mm_add_epi64(s2, _mm_unpackhi_epi64(s2, s2))) -
                                 (sum.negatives << bits));
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
#elif AMSIM_AVX2
        if (adjacent) {
            int_im2col_row_avx2(&g, in + n * g.h * g.w * C, h0, vertical_pad, j->pad, shift, in,
                                in + g.n * g.h * g.w * C, cols + u * g.ow * row_len, cols + u1 * g.ow * row_len,
                                sums ? sums + u * g.ow : NULL);
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
