/*
 * conv.c -- patch extraction for conv2d (im2col) and its adjoint (col2im), NHWC input, HWIO
 * filters, TensorFlow's geometry (amsim_gemm.h). Both are copies and float32 additions in a
 * fixed order, so any split between threads gives the same bits: col2im adds, into each input
 * position, the patch columns that cover it in increasing (kh, kw), starting from +0.
 */
#include "engine.h"

#define CONV_PARALLEL_MIN 65536  /* floats written: less is done by the caller alone */

struct conv_job {
    const struct amsim_conv_geometry *g;
    const float *in;
    float *out;
    int64_t units, nparts;  /* im2col: output rows (n, oh); col2im: images */
};

/* Rows of output positions (n, oh) [u0, u1) of the patch matrix. */
static void im2col_part(void *ctx, int part)
{
    const struct conv_job *j = ctx;
    const struct amsim_conv_geometry *g = j->g;
    const int64_t per = (j->units + j->nparts - 1) / j->nparts, u0 = part * per;
    const int64_t u1 = u0 + per < j->units ? u0 + per : j->units;
    const int64_t C = g->c, row_len = g->kh * g->kw * C;
    for (int64_t u = u0; u < u1; ++u) {
        const int64_t n = u / g->oh, oh = u % g->oh;
        for (int64_t ow = 0; ow < g->ow; ++ow) {
            float *dst = j->out + (u * g->ow + ow) * row_len;
            const int64_t w0 = ow * g->sw - g->pad_left;
            for (int64_t i = 0; i < g->kh; ++i) {
                const int64_t h = oh * g->sh - g->pad_top + i * g->dh;
                float *d = dst + i * g->kw * C;
                if (h < 0 || h >= g->h) {
                    memset(d, 0, sizeof(float) * (size_t)(g->kw * C));
                    continue;
                }
                const float *row = j->in + (n * g->h + h) * g->w * C;
                if (g->dw == 1 && w0 >= 0 && w0 + g->kw <= g->w) {
                    /* the row's kw taps are adjacent in NHWC: one copy (small channel counts make
                     * a copy per tap cost more than the GEMM) */
                    memcpy(d, row + w0 * C, sizeof(float) * (size_t)(g->kw * C));
                    continue;
                }
                for (int64_t jw = 0; jw < g->kw; ++jw, d += C) {
                    const int64_t w = w0 + jw * g->dw;
                    if (w >= 0 && w < g->w)
                        memcpy(d, row + w * C, sizeof(float) * (size_t)C);
                    else
                        memset(d, 0, sizeof(float) * (size_t)C);
                }
            }
        }
    }
}

/* Images [u0, u1) of dx: each image's positions are summed by one part, in (kh, kw) order. */
static void col2im_part(void *ctx, int part)
{
    const struct conv_job *j = ctx;
    const struct amsim_conv_geometry *g = j->g;
    const int64_t per = (j->units + j->nparts - 1) / j->nparts, u0 = part * per;
    const int64_t u1 = u0 + per < j->units ? u0 + per : j->units;
    const int64_t C = g->c, row_len = g->kh * g->kw * C, image = g->h * g->w * C;
    for (int64_t n = u0; n < u1; ++n) {
        float *dx = j->out + n * image;
        memset(dx, 0, sizeof(float) * (size_t)image);
        for (int64_t i = 0; i < g->kh; ++i)
            for (int64_t jw = 0; jw < g->kw; ++jw)
                for (int64_t oh = 0; oh < g->oh; ++oh) {
                    const int64_t h = oh * g->sh - g->pad_top + i * g->dh;
                    if (h < 0 || h >= g->h)
                        continue;
                    for (int64_t ow = 0; ow < g->ow; ++ow) {
                        const int64_t w = ow * g->sw - g->pad_left + jw * g->dw;
                        if (w < 0 || w >= g->w)
                            continue;
                        const float *src = j->in + ((n * g->oh + oh) * g->ow + ow) * row_len + (i * g->kw + jw) * C;
                        float *d = dx + (h * g->w + w) * C;
                        for (int64_t c = 0; c < C; ++c)
                            d[c] += src[c];
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
