/*
 * CPU kernels of the approximate GEMM (specs/numerics.md section 3).
 *
 * C[i, j] = sum_k A[i, k] (x) B[k, j], each output accumulated in float32 in
 * increasing k from +0, exactly the order of amsim/reference.py, so results
 * are bit-identical to the reference and to themselves for any thread count.
 * The product (x) is amsim_product.h's, shared with the CUDA kernels.
 *
 * Two kernels:
 *   expand  (M <= 8, operands in the "safe window", LUT entries positive and
 *           finite): for every k the LUT is expanded into the second operand,
 *           T[p][j] = scale_b(k, j) * LUT[p][idx_b(k, j)] for all 2^M
 *           mantissas p, so the inner loop is a contiguous multiply-add over j:
 *           C[i, j] += scale_a(i, k) * T[idx_a(i, k)][j]. In the safe window
 *           (see amsim/gemm.py) every T entry and every product is a normal
 *           float32, so T * scale_a is exactly scale_a * scale_b * LUT: the
 *           same value amsim_mul_split returns, and fused multiply-adds are
 *           harmless (the product is exact). Special operands work too: 0, inf
 *           and NaN scales propagate through the two exact multiplications as
 *           section 2.2 says, given LUT entries that are positive and finite.
 *   direct  (anything else): amsim_mul_split per product, all rules applied.
 *
 * Both take a column range [j0, j1) so that the caller can split the output
 * between threads; they share nothing but read-only inputs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <amsim_product.h>

#ifndef AMSIM_NB
#define AMSIM_NB 128            /* columns per tile: 8 vectors of 16 floats */
#endif
#ifndef AMSIM_KB
#define AMSIM_KB 8              /* k per block: T is KB * 2^M * NB floats (512 KiB at M = 7) */
#endif
#define AMSIM_VL 16

typedef float v16f __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4)));

/* Split a strided rows x cols operand into row-major scales and mantissa indices. */
void amsim_split_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m,
                     int rounding, float *scale, uint16_t *idx)
{
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            uint32_t i;
            scale[r * cols + c] = amsim_split(x[r * rs + c * cs], m, rounding, &i);
            idx[r * cols + c] = (uint16_t)i;
        }
}

static void build_t(float *restrict t, const float *restrict sy, const uint16_t *restrict qy,
                    const float *restrict lut, int p_count, int64_t nb)
{
    /* t[p][jj] = sy[jj] * lut[p][qy[jj]]; columns past nb are zero so full vectors can be used. */
    for (int p = 0; p < p_count; ++p) {
        const float *restrict row = lut + (int64_t)p * p_count;
        float *restrict out = t + (int64_t)p * AMSIM_NB;
        for (int64_t jj = 0; jj < nb; ++jj)
            out[jj] = sy[jj] * row[qy[jj]];
        for (int64_t jj = nb; jj < AMSIM_NB; ++jj)
            out[jj] = 0.0f;
    }
}

int amsim_gemm_expand(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px,
                      const float *sy, const uint16_t *qy, const float *lut, int m, float *c,
                      int64_t ldc, int64_t j0, int64_t j1)
{
    const int P = 1 << m;
    float *t = aligned_alloc(64, sizeof(float) * (size_t)AMSIM_KB * P * AMSIM_NB);
    if (!t)
        return -1;
    for (int64_t jt = j0; jt < j1; jt += AMSIM_NB) {
        const int64_t nb = (j1 - jt < AMSIM_NB) ? j1 - jt : AMSIM_NB;
        for (int64_t kb = 0; kb < K; kb += AMSIM_KB) {
            const int64_t kn = (K - kb < AMSIM_KB) ? K - kb : AMSIM_KB;
            for (int64_t kk = 0; kk < kn; ++kk)
                build_t(t + kk * P * AMSIM_NB, sy + (kb + kk) * N + jt, qy + (kb + kk) * N + jt, lut, P, nb);
            for (int64_t i = 0; i < M; ++i) {
                float *crow = c + i * ldc + jt;
                v16f acc[AMSIM_NB / AMSIM_VL];
                if (kb == 0) {
                    for (int v = 0; v < AMSIM_NB / AMSIM_VL; ++v)
                        acc[v] = (v16f){0};
                } else if (nb == AMSIM_NB) {
                    for (int v = 0; v < AMSIM_NB / AMSIM_VL; ++v)
                        acc[v] = *(const v16f_u *)(crow + v * AMSIM_VL);
                } else {
                    float tmp[AMSIM_NB] = {0};
                    memcpy(tmp, crow, sizeof(float) * (size_t)nb);
                    memcpy(acc, tmp, sizeof tmp);
                }
                const float *sxi = sx + i * K + kb;
                const uint16_t *pxi = px + i * K + kb;
                for (int64_t kk = 0; kk < kn; ++kk) {
                    const float s = sxi[kk];
                    const v16f *trow = (const v16f *)(t + (kk * P + pxi[kk]) * AMSIM_NB);
                    for (int v = 0; v < AMSIM_NB / AMSIM_VL; ++v)
                        acc[v] += s * trow[v];
                }
                if (nb == AMSIM_NB) {
                    for (int v = 0; v < AMSIM_NB / AMSIM_VL; ++v)
                        *(v16f_u *)(crow + v * AMSIM_VL) = acc[v];
                } else {
                    memcpy(crow, acc, sizeof(float) * (size_t)nb);
                }
            }
        }
    }
    free(t);
    return 0;
}

int amsim_gemm_direct(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px,
                      const float *sy, const uint16_t *qy, const float *lut, int m, int mode, float *c,
                      int64_t ldc, int64_t j0, int64_t j1)
{
    const int64_t P = (int64_t)1 << m;
    for (int64_t i = 0; i < M; ++i) {
        float *crow = c + i * ldc;
        for (int64_t j = j0; j < j1; ++j)
            crow[j] = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
            const float sa = sx[i * K + k];
            const float *lrow = lut + (int64_t)px[i * K + k] * P;
            const float *syk = sy + k * N;
            const uint16_t *qyk = qy + k * N;
            for (int64_t j = j0; j < j1; ++j)
                crow[j] += amsim_mul_split(sa, syk[j], lrow[qyk[j]], mode);
        }
    }
    return 0;
}

typedef float (*amsim_float_model)(float, float);
typedef int64_t (*amsim_int_model)(int64_t, int64_t);

/*
 * Model mode, for mantissa widths without a LUT (M > 12): each product calls
 * the compiled model's uniform entry point (CompiledModel.address) on the
 * significands 1 + i/2^M (float models) or 2^M + i (integer models lifted to
 * width M + 1, result scaled by 2^-2M after one rounding to nearest float32).
 * Operands are split on the fly; the order of accumulation is the usual one.
 */
int amsim_gemm_model(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars, int64_t acs,
                     const float *b, int64_t brs, int64_t bcs, int m, int rounding, int mode,
                     uintptr_t fn, int is_float, float *c, int64_t ldc, int64_t j0, int64_t j1)
{
    const amsim_float_model ffn = (amsim_float_model)fn;
    const amsim_int_model ifn = (amsim_int_model)fn;
    const int64_t base = (int64_t)1 << m;
    for (int64_t i = 0; i < M; ++i) {
        float *crow = c + i * ldc;
        for (int64_t j = j0; j < j1; ++j) {
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
    return 0;
}
