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
