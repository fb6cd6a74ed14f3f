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

/*
 * Split a strided rows x cols operand into row-major scales and mantissa
 * indices (amsim_split), and report the smallest and largest biased exponent
 * among the normal scales in range[0..1] (range[0] > range[1] when there are
 * none): the caller's test of the expand kernel's exactness window.
 */
void amsim_split_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m,
                     int rounding, float *scale, uint16_t *idx, int32_t *range)
{
    int32_t lo = 255, hi = 0;
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = x + r * rs;
        float *sr = scale + r * cols;
        uint16_t *ir = idx + r * cols;
        for (int64_t c = 0; c < cols; ++c) {
            uint32_t i;
            const float s = amsim_split(xr[c * cs], m, rounding, &i);
            const int32_t e = (int32_t)((amsim_f2u(s) >> 23) & 0xFFu);
            const int normal = e != 0 && e != 255;
            lo = (normal && e < lo) ? e : lo;
            hi = (normal && e > hi) ? e : hi;
            sr[c] = s;
            ir[c] = (uint16_t)i;
        }
    }
    range[0] = lo;
    range[1] = hi;
}

#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
#include <immintrin.h>

/*
 * AVX-512 expand kernel (M <= 8).
 *
 * Blocking, with the sizes for M = 7: a panel of X_PANEL = 128 columns (8 tiles
 * of one 16-float vector) and X_ROWS = 2048 rows accumulates in a packed buffer
 * rather than in C, whose rows are 4 KiB apart for N = 1024 and would alias in
 * L1. For each block of KB = 16 values of k, the rows' A scales and T offsets
 * are packed contiguously, then for each tile:
 *   - T is built: T[p][kk] = sy(k, cols) * LUT[p][qy(k, cols)] for all 2^M
 *     mantissas p (128 KiB, still in L2 when used). LUT row p sits in registers
 *     and vpermt2ps picks 16 entries at once, a blend tree resolving index bits 5..7;
 *   - the rows are swept 8 at a time (8 independent accumulation chains):
 *     acc += sx(i, k) * T[px(i, k)][kk], one exact product and one add each.
 * The sizes were tuned on a Zen 4 core (1 MiB L2): KB = 16 halves the traffic
 * on the accumulators compared with KB = 4, which is worth more than keeping
 * T in L1. Each output still sums its products in increasing k.
 */
#define X_KB_MAX 16
#define X_TBYTES (128 * 1024)   /* one tile's T: KB = X_TBYTES / (2^M * 64), at most X_KB_MAX */
#define X_PANEL 128             /* columns per panel */
#define X_ROWS 2048             /* rows per block */

static inline __m512 lookup_row(const __m512 *row, int vecs, __m512i q, __mmask16 b5, __mmask16 b6, __mmask16 b7)
{
    /* row: the LUT row as `vecs` vectors of 16 (>= 2, padded); q: 16 indices. */
    __m512 c0 = _mm512_permutex2var_ps(row[0], q, row[1]);
    if (vecs <= 2)
        return c0;
    __m512 c1 = _mm512_permutex2var_ps(row[2], q, row[3]);
    __m512 lo = _mm512_mask_blend_ps(b5, c0, c1);
    if (vecs <= 4)
        return lo;
    __m512 c2 = _mm512_permutex2var_ps(row[4], q, row[5]);
    __m512 c3 = _mm512_permutex2var_ps(row[6], q, row[7]);
    __m512 hi = _mm512_mask_blend_ps(b5, c2, c3);
    lo = _mm512_mask_blend_ps(b6, lo, hi);
    if (vecs <= 8)
        return lo;
    __m512 c4 = _mm512_permutex2var_ps(row[8], q, row[9]);
    __m512 c5 = _mm512_permutex2var_ps(row[10], q, row[11]);
    __m512 c6 = _mm512_permutex2var_ps(row[12], q, row[13]);
    __m512 c7 = _mm512_permutex2var_ps(row[14], q, row[15]);
    __m512 h0 = _mm512_mask_blend_ps(b6, _mm512_mask_blend_ps(b5, c4, c5), _mm512_mask_blend_ps(b5, c6, c7));
    return _mm512_mask_blend_ps(b7, lo, h0);
}

int amsim_gemm_expand(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px,
                      const float *sy, const uint16_t *qy, const float *lut, int m, float *c,
                      int64_t ldc, int64_t j0, int64_t j1)
{
    const int P = 1 << m;
    const int vecs = P < 32 ? 2 : P / 16;            /* LUT row in vectors, padded to >= 32 entries */
    int kb_size = X_TBYTES / (P * 64);
    if (kb_size < 1) kb_size = 1;
    if (kb_size > X_KB_MAX) kb_size = X_KB_MAX;
    const int tiles_max = X_PANEL / 16;
    float *padded = aligned_alloc(64, sizeof(float) * (size_t)P * vecs * 16);
    __m512 *t = aligned_alloc(64, sizeof(__m512) * (size_t)kb_size * P);
    __m512 *cbuf = aligned_alloc(64, sizeof(__m512) * (size_t)tiles_max * X_ROWS);
    float *as = aligned_alloc(64, sizeof(float) * (size_t)X_ROWS * kb_size + 64);
    uint32_t *ap = aligned_alloc(64, sizeof(uint32_t) * (size_t)X_ROWS * kb_size + 64);
    if (!padded || !t || !cbuf || !as || !ap) {
        free(padded);
        free(t);
        free(cbuf);
        free(as);
        free(ap);
        return -1;
    }
    for (int p = 0; p < P; ++p)
        for (int e = 0; e < vecs * 16; ++e)
            padded[(int64_t)p * vecs * 16 + e] = e < P ? lut[(int64_t)p * P + e] : 0.0f;

    for (int64_t jp = j0; jp < j1; jp += X_PANEL) {
        const int64_t pcols = (j1 - jp < X_PANEL) ? j1 - jp : X_PANEL;
        const int tiles = (int)((pcols + 15) / 16);
        for (int64_t i0 = 0; i0 < M; i0 += X_ROWS) {
            const int64_t rows = (M - i0 < X_ROWS) ? M - i0 : X_ROWS;
            memset(cbuf, 0, sizeof(__m512) * (size_t)tiles * rows);
            for (int64_t kb = 0; kb < K; kb += kb_size) {
                const int kn = (int)((K - kb < kb_size) ? K - kb : kb_size);
                for (int64_t r = 0; r < rows; ++r)
                    for (int kk = 0; kk < kn; ++kk) {
                        as[r * kb_size + kk] = sx[(i0 + r) * K + kb + kk];
                        ap[r * kb_size + kk] = (uint32_t)px[(i0 + r) * K + kb + kk] * (uint32_t)kb_size + (uint32_t)kk;
                    }
                for (int tile = 0; tile < tiles; ++tile) {
                    const int64_t jt = jp + 16 * tile;
                    const int nb = (int)((jp + pcols - jt < 16) ? jp + pcols - jt : 16);
                    const __mmask16 cols = (__mmask16)((1u << nb) - 1u);
                    __m512 *tt = t;  /* this tile's T, built just before use so that it is still in L2 */
                    __m512i q[X_KB_MAX];
                    __m512 s[X_KB_MAX];
                    for (int kk = 0; kk < kn; ++kk) {
                        const int64_t off = (kb + kk) * N + jt;
                        q[kk] = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(cols, qy + off));
                        s[kk] = _mm512_maskz_loadu_ps(cols, sy + off);  /* columns past nb: T = 0 */
                    }
                    for (int p = 0; p < P; ++p) {
                        __m512 row[16];
                        for (int v = 0; v < vecs; ++v)
                            row[v] = _mm512_load_ps(padded + ((int64_t)p * vecs + v) * 16);
                        for (int kk = 0; kk < kn; ++kk) {
                            const __mmask16 b5 = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(32));
                            const __mmask16 b6 = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(64));
                            const __mmask16 b7 = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(128));
                            tt[p * kb_size + kk] = _mm512_mul_ps(s[kk], lookup_row(row, vecs, q[kk], b5, b6, b7));
                        }
                    }
                    const __m512 *tr = t;
                    __m512 *cb = cbuf + (int64_t)tile * rows;
                    int64_t r = 0;
                    for (; r + 8 <= rows; r += 8) {  /* 8 rows: 8 independent accumulation chains */
                        __m512 acc[8];
                        for (int u = 0; u < 8; ++u)
                            acc[u] = cb[r + u];
                        for (int kk = 0; kk < kn; ++kk)
                            for (int u = 0; u < 8; ++u) {
                                const int64_t e = (r + u) * kb_size + kk;
                                acc[u] = _mm512_fmadd_ps(_mm512_set1_ps(as[e]), tr[ap[e]], acc[u]);
                            }
                        for (int u = 0; u < 8; ++u)
                            cb[r + u] = acc[u];
                    }
                    for (; r < rows; ++r) {
                        __m512 acc = cb[r];
                        for (int kk = 0; kk < kn; ++kk) {
                            const int64_t e = r * kb_size + kk;
                            acc = _mm512_fmadd_ps(_mm512_set1_ps(as[e]), tr[ap[e]], acc);
                        }
                        cb[r] = acc;
                    }
                }
            }
            for (int tile = 0; tile < tiles; ++tile) {
                const int64_t jt = jp + 16 * tile;
                const int nb = (int)((jp + pcols - jt < 16) ? jp + pcols - jt : 16);
                const __mmask16 cols = (__mmask16)((1u << nb) - 1u);
                for (int64_t r = 0; r < rows; ++r)
                    _mm512_mask_storeu_ps(c + (i0 + r) * ldc + jt, cols, cbuf[(int64_t)tile * rows + r]);
            }
        }
    }
    free(cbuf);
    free(as);
    free(ap);
    free(padded);
    free(t);
    return 0;
}

/*
 * AVX-512 lookup kernel, for shapes where expanding the LUT does not pay
 * (fewer rows than about 2^M / 2 to share each expanded entry): for every
 * (i, k), LUT row px(i, k) is loaded into registers and each 16-column vector
 * of B looks up its entries in it directly; C[i, cols] += sx(i, k) *
 * (sy(k, cols) * LUT[px][qy(k, cols)]). Same exactness window, same products,
 * same order as the expand kernel.
 */
#define L_COLS 256              /* columns accumulated in registers: 16 vectors */

int amsim_gemm_lookup(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px,
                      const float *sy, const uint16_t *qy, const float *lut, int m, float *c,
                      int64_t ldc, int64_t j0, int64_t j1)
{
    const int P = 1 << m;
    const int vecs = P < 32 ? 2 : P / 16;
    float *padded = aligned_alloc(64, sizeof(float) * (size_t)P * vecs * 16);
    if (!padded)
        return -1;
    for (int p = 0; p < P; ++p)
        for (int e = 0; e < vecs * 16; ++e)
            padded[(int64_t)p * vecs * 16 + e] = e < P ? lut[(int64_t)p * P + e] : 0.0f;
    for (int64_t jc = j0; jc < j1; jc += L_COLS) {
        const int64_t ncols = (j1 - jc < L_COLS) ? j1 - jc : L_COLS;
        const int nv = (int)((ncols + 15) / 16);
        __mmask16 mask[L_COLS / 16];
        for (int v = 0; v < nv; ++v) {
            const int64_t left = ncols - 16 * v;
            mask[v] = (__mmask16)(left >= 16 ? 0xFFFFu : ((1u << left) - 1u));
        }
        for (int64_t i = 0; i < M; ++i) {
            __m512 acc[L_COLS / 16];
            for (int v = 0; v < nv; ++v)
                acc[v] = _mm512_setzero_ps();
            for (int64_t k = 0; k < K; ++k) {
                __m512 row[16];
                const float *lrow = padded + (int64_t)px[i * K + k] * vecs * 16;
                for (int v = 0; v < vecs; ++v)
                    row[v] = _mm512_load_ps(lrow + 16 * v);
                const __m512 sa = _mm512_set1_ps(sx[i * K + k]);
                const int64_t off = k * N + jc;
                for (int v = 0; v < nv; ++v) {
                    const __m512i q = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask[v], qy + off + 16 * v));
                    const __m512 sb = _mm512_maskz_loadu_ps(mask[v], sy + off + 16 * v);
                    const __mmask16 b5 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(32));
                    const __mmask16 b6 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(64));
                    const __mmask16 b7 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(128));
                    const __m512 t = _mm512_mul_ps(sb, lookup_row(row, vecs, q, b5, b6, b7));
                    acc[v] = _mm512_fmadd_ps(sa, t, acc[v]);
                }
            }
            for (int v = 0; v < nv; ++v)
                _mm512_mask_storeu_ps(c + i * ldc + jc + 16 * v, mask[v], acc[v]);
        }
    }
    free(padded);
    return 0;
}

#else /* portable version: GCC vector extensions, gathered T */

#define AMSIM_NB 128            /* columns per tile: 8 vectors of 16 floats */
#define AMSIM_KB 8              /* k per block: T is KB * 2^M * NB floats (512 KiB at M = 7) */
#define AMSIM_VL 16

typedef float v16f __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4)));

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

int amsim_gemm_lookup(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px,
                      const float *sy, const uint16_t *qy, const float *lut, int m, float *c,
                      int64_t ldc, int64_t j0, int64_t j1)
{
    /* Portable form of the lookup kernel: the same exact products, scalar lookups. */
    const int64_t P = (int64_t)1 << m;
    for (int64_t i = 0; i < M; ++i) {
        float *crow = c + i * ldc;
        for (int64_t j = j0; j < j1; ++j)
            crow[j] = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
            const float sa = sx[i * K + k];
            const float *lrow = lut + (int64_t)px[i * K + k] * P;
            for (int64_t j = j0; j < j1; ++j)
                crow[j] += sa * (sy[k * N + j] * lrow[qy[k * N + j]]);
        }
    }
    return 0;
}

#endif /* __AVX512F__ */

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
    (void)N;  /* the column range [j0, j1) is what matters here */
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
