/* model.c -- model mode: each product calls a compiled model, for widths without a LUT (M > 12). */
#include "engine.h"

typedef float (*amsim_float_model)(float, float);
typedef int64_t (*amsim_int_model)(int64_t, int64_t);

/*
 * Model mode, for mantissa widths without a LUT (M > 12): each product calls
 * the compiled model's uniform entry point (CompiledModel.address) on the
 * significands 1 + i/2^M (float models) or 2^M + i (integer models lifted to
 * width M + 1, result scaled by 2^-2M after one rounding to nearest float32).
 * Operands are split on the fly; the order of accumulation is the usual one.
 */
struct model_job {
    int64_t M, N, K;
    const float *a, *b;
    int64_t ars, acs, brs, bcs;
    int m, rounding, mode, is_float, nparts;
    uintptr_t fn;
    float *c;
    int64_t ldc;
};

static void model_part(void *ctx, int part)
{
    const struct model_job *g = ctx;
    const int64_t per = (g->M + g->nparts - 1) / g->nparts, i0 = part * per;
    const int64_t i1 = (i0 + per < g->M) ? i0 + per : g->M;
    const int64_t K = g->K, N = g->N, ars = g->ars, acs = g->acs, brs = g->brs, bcs = g->bcs;
    const int m = g->m, rounding = g->rounding, mode = g->mode, is_float = g->is_float;
    const float *a = g->a, *b = g->b;
    float *c = g->c;
    const int64_t ldc = g->ldc;
    const amsim_float_model ffn = (amsim_float_model)g->fn;
    const amsim_int_model ifn = (amsim_int_model)g->fn;
    const int64_t base = (int64_t)1 << m;
    for (int64_t i = i0; i < i1; ++i) {
        float *crow = c + i * ldc;
        for (int64_t j = 0; j < N; ++j) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; ++k) {
                uint32_t ia, ib;
                const float sa = amsim_split(a[i * ars + k * acs], m, rounding, &ia);
                const float sb = amsim_split(b[k * brs + j * bcs], m, rounding, &ib);
                float v = 0.0f;
                if (amsim_scale_is_normal(sa) && amsim_scale_is_normal(sb)) {
                    if (is_float)
                        v = ffn(1.0f + (float)ia / (float)base, 1.0f + (float)ib / (float)base);
                    else
                        v = amsim_scale_pow2((float)(double)ifn(base + ia, base + ib), -2 * m);
                }
                acc += amsim_mul_split(sa, sb, v, mode);
            }
            crow[j] = acc;
        }
    }
}

int amsim_gemm_model(const struct amsim_gemm_args *args, int m, uintptr_t fn, int is_float)
{
    if (!args || m < 0 || m > 23 || !fn)
        return AMSIM_ERR_ARGS;
    struct amsim_gemm_args g = *args;
    g.kernel = AMSIM_KERNEL_AUTO;  /* ignored here */
    if (!args_valid(&g))
        return AMSIM_ERR_ARGS;
    if (g.M == 0 || g.N == 0)
        return AMSIM_OK;
    const int threads = model_threads(&g);
    const struct model_job job = {g.M, g.N, g.K, g.a, g.b, g.ars, g.acs, g.brs, g.bcs, m, g.rounding, g.mode,
                                  is_float, (int)(g.M < threads ? g.M : threads), fn, g.c, g.ldc};
    run_parts(model_part, (void *)&job, job.nparts, threads);
    return AMSIM_OK;
}
