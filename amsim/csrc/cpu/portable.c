/*
 * portable.c -- the fast kernels for CPUs without AVX-512 (and AMSIM_PORTABLE builds), in plain C
 * with GCC vector extensions: the same products in the same order, so the same bits. gemm.c
 * picks these or the AVX-512 ones (expand.c, lookup.c) by the build's instruction set.
 */
#include "engine.h"

#define AMSIM_NB EXPAND_PANEL_COLS_PORTABLE  /* columns per tile: 8 vectors of 16 floats */
#define AMSIM_KB 8              /* k per block: T is KB * 2^M * NB floats (512 KiB at M = 7) */
#define AMSIM_VL 16

typedef float v16f __attribute__((vector_size(64)));

static void build_t(float *restrict t, const float *restrict sy, const uint16_t *restrict qy,
                    const float *restrict lut, int m, int64_t nb)
{
    /* t[p][jj] = sy[jj] * lut[p][qy[jj]]; columns past nb are zero so full vectors can be used.
     * lut: padded, rows lut_stride(m) apart. */
    const int p_count = 1 << m;
    const int64_t stride = lut_stride(m);
    for (int p = 0; p < p_count; ++p) {
        const float *restrict row = lut + (int64_t)p * stride;
        float *restrict out = t + (int64_t)p * AMSIM_NB;
        for (int64_t jj = 0; jj < nb; ++jj)
            out[jj] = sy[jj] * row[qy[jj]];
        for (int64_t jj = nb; jj < AMSIM_NB; ++jj)
            out[jj] = 0.0f;
    }
}


static int expand_kb_portable(void)
{
    return AMSIM_KB;
}

static int expand_portable(int64_t M, int64_t N, int64_t K, const struct x_operand *xo, const float *sy,
                           const uint16_t *qy, const float *plut, int m, float *c, int64_t ldc, int64_t i0,
                           int64_t i1, int64_t j0, int64_t j1)
{
    const int P = 1 << m;
    float *t = work_buffer(SLOT_T, sizeof(float) * (size_t)AMSIM_KB * P * AMSIM_NB);
    if (!t)
        return -1;
    for (int64_t jt = j0; jt < j1; jt += AMSIM_NB) {
        const int64_t nb = (j1 - jt < AMSIM_NB) ? j1 - jt : AMSIM_NB;
        for (int64_t kb = 0; kb < K; kb += AMSIM_KB) {
            const int64_t kn = (K - kb < AMSIM_KB) ? K - kb : AMSIM_KB;
            for (int64_t kk = 0; kk < kn; ++kk)
                build_t(t + kk * P * AMSIM_NB, sy + (kb + kk) * N + jt, qy + (kb + kk) * N + jt, plut, m, nb);
            const float *as;
            const uint16_t *ap;
            int64_t ldr, ldk;
            if (x_block(xo, M, K, m, i0, i1, kb, (int)kn, &as, &ap, &ldr, &ldk) != 0)
                return -1;
            for (int64_t i = i0; i < i1; ++i) {
                float *crow = c + i * ldc + jt;
                v16f acc[AMSIM_NB / AMSIM_VL];
                float tmp[AMSIM_NB] = {0};
                if (kb > 0)
                    memcpy(tmp, crow, sizeof(float) * (size_t)nb);
                memcpy(acc, tmp, sizeof tmp);
                for (int64_t kk = 0; kk < kn; ++kk) {
                    const int64_t e = (i - i0) * ldr + kk * ldk;
                    const float s = as[e];
                    const v16f *trow = (const v16f *)(t + (kk * P + ap[e]) * AMSIM_NB);
                    for (int v = 0; v < AMSIM_NB / AMSIM_VL; ++v)
                        acc[v] += s * trow[v];
                }
                memcpy(crow, acc, sizeof(float) * (size_t)nb);
            }
        }
    }
    return 0;
}


static int lookup_portable(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                           int64_t xk, const float *sy, const uint16_t *qy, const float *plut, int m, float *c,
                           int64_t ldc, int64_t j0, int64_t j1)
{
    /* Portable form: inside the exactness window the direct kernel gives the same products. */
    direct_rows(M, N, K, sx, px, xr, xk, sy, qy, plut, lut_stride(m), AMSIM_MODE_IEEE, c, ldc, j0, j1);
    return 0;
}
