/* direct.c -- the direct kernel: one amsim_mul_split per product, every rule of numerics.md
 * applied; any M with a LUT, any operands. */
#include "engine.h"

/* The direct kernel on a LUT whose rows are lds entries apart. */
static void direct_rows(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                        int64_t xk, const float *sy, const uint16_t *qy, const float *lut, int64_t lds, int mode,
                        float *c, int64_t ldc, int64_t j0, int64_t j1)
{
    for (int64_t i = 0; i < M; ++i) {
        float *crow = c + i * ldc;
        for (int64_t j = j0; j < j1; ++j)
            crow[j] = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
            const float sa = sx[i * xr + k * xk];
            const float *lrow = lut + (int64_t)px[i * xr + k * xk] * lds;
            const float *syk = sy + k * N;
            const uint16_t *qyk = qy + k * N;
            for (int64_t j = j0; j < j1; ++j)
                crow[j] += amsim_mul_split(sa, syk[j], lrow[qyk[j]], mode);
        }
    }
}
