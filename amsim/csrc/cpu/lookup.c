/*
 * lookup.c -- the AVX-512 lookup kernel (M <= 8): each product looks its LUT entry up in the LUT
 * row of X's mantissa, held in registers; for GEMMs with too few rows to share an expansion.
 * portable.c has the form for other CPUs.
 */
#include "engine.h"
#include "simd.h"

#if AMSIM_AVX512
/*
 * AVX-512 lookup kernel, for shapes where expanding the LUT does not pay
 * (few rows to share each expanded entry): for every (i, k), LUT row px(i, k)
 * is loaded into registers and each 16-column vector of Y looks up its entries
 * in it directly; C[i, cols] += sx(i, k) * (sy(k, cols) * LUT[px][qy(k, cols)]).
 * Same exactness window, same products, same order as the expand kernel.
 *
 * k is blocked so that Y's block stays in cache while the rows sweep it: with
 * K in the tens of thousands (filter gradients) Y would otherwise stream from
 * memory once per row. With float rows (vpermt2ps), L_ROWS rows share each
 * load of Y's indices and scales and the masks that steer the blend tree.
 * With byte planes (lookup_vbmi), each block of Y is split from its raw values
 * and its indices put in vbmi_indices' order once for all rows (prep_block),
 * and each row sweeps the block alone.
 */
#define L_COLS (16 * LOOKUP_FLOAT_CHUNK_VECTORS)  /* columns per chunk */
#ifndef L_ROWS
#define L_ROWS 8                /* rows sharing each load of Y's scales (docs/gemm-internals.md) */
#endif
#ifndef L_KB
#define L_KB 512                /* k per block: at most 192 KiB of Y */
#endif

static inline __attribute__((always_inline)) void lookup_chunk(int vecs, int64_t K, const float *sx,
                                                            const uint16_t *px, int64_t xr, int64_t xk,
                                                            const float *sy,
                                                            const uint16_t *qy, int64_t N, const float *plut,
                                                            float *c, int64_t ldc, int64_t i0, int nrows,
                                                            int64_t jc, int nv, const __mmask16 *mask)
{
    for (int64_t kb = 0; kb < K; kb += L_KB) {
        const int64_t ke = (K - kb < L_KB) ? K : kb + L_KB;
        /* each k-block ends with C holding the partial sums: the next one starts from them */
        __m512 acc[L_ROWS][L_COLS / 16];
        for (int r = 0; r < nrows; ++r)
            for (int v = 0; v < nv; ++v)
                acc[r][v] = kb ? _mm512_maskz_loadu_ps(mask[v], c + (i0 + r) * ldc + jc + 16 * v)
                               : _mm512_setzero_ps();
        for (int64_t k = kb; k < ke; ++k) {
            __m512i q[L_COLS / 16];
            __m512 sb[L_COLS / 16];
            __mmask16 b5[L_COLS / 16], b6[L_COLS / 16], b7[L_COLS / 16];
            for (int v = 0; v < nv; ++v) {
                const int64_t off = k * N + jc + 16 * v;
                q[v] = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask[v], qy + off));
                sb[v] = _mm512_maskz_loadu_ps(mask[v], sy + off);
                b5[v] = _mm512_test_epi32_mask(q[v], _mm512_set1_epi32(32));
                b6[v] = _mm512_test_epi32_mask(q[v], _mm512_set1_epi32(64));
                b7[v] = _mm512_test_epi32_mask(q[v], _mm512_set1_epi32(128));
            }
            for (int r = 0; r < nrows; ++r) {
                const int64_t e = (i0 + r) * xr + k * xk;
                const float *lrow = plut + (int64_t)px[e] * vecs * 16;
                __m512 row[16];
                for (int w = 0; w < vecs; ++w)
                    row[w] = _mm512_load_ps(lrow + 16 * w);
                const __m512 sa = _mm512_set1_ps(sx[e]);
                for (int v = 0; v < nv; ++v)
                    acc[r][v] = _mm512_fmadd_ps(sa, _mm512_mul_ps(sb[v], lookup_row(row, vecs, q[v], b5[v], b6[v],
                                                                                   b7[v])), acc[r][v]);
            }
        }
        for (int r = 0; r < nrows; ++r)
            for (int v = 0; v < nv; ++v)
                _mm512_mask_storeu_ps(c + (i0 + r) * ldc + jc + 16 * v, mask[v], acc[r][v]);
    }
}

#if AMSIM_VBMI
/*
 * With byte planes the kernel runs one row (two for chunks of up to
 * LW_PAIR_VECS vectors) over a chunk of up to LW_VECS vectors, its
 * accumulators in registers: one load of a row's LUT planes serves up to 192
 * columns. Eight rows sharing each load of Y's scales over 64 columns would
 * keep 32 accumulators, which spill to memory. The kernel is bound by vector
 * instructions: 64 products take 20 (four vpermi2b, eight unpacks, four
 * multiplies, four fma), 16 for HI16 LUTs. Y's block (scales and indices)
 * stays in L1 while the rows sweep it.
 */
#define LW_GROUPS ((LW_VECS + 3) / 4)
#ifndef LW_YBYTES
#define LW_YBYTES (16 * 1024)   /* Y's scales and indices per k-block */
#endif
#ifndef LW_KB_MAX
#define LW_KB_MAX 128
#endif
#ifndef LW_PAIR_VECS
#define LW_PAIR_VECS 4          /* chunks this narrow take two rows at a time (wider: slower) */
#endif

/* A chunk's sums for ROWS rows (1 or 2) of NV vectors (constants after inlining): zeros, or the
 * partial sums the previous k-block left in C (carry); last: the last vector's columns. */
static inline __attribute__((always_inline)) void rows_start(int rows, int nv, __m512 (*acc)[LW_VECS],
                                                          const float *crow, int64_t ldc, __mmask16 last,
                                                          int carry)
{
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < nv; ++v)
            acc[r][v] = carry ? _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xFFFF, crow + r * ldc + 16 * v)
                              : _mm512_setzero_ps();
}

static inline __attribute__((always_inline)) void rows_finish(int rows, int nv, __m512 (*acc)[LW_VECS],
                                                           float *crow, int64_t ldc, __mmask16 last)
{
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < nv; ++v)
            _mm512_mask_storeu_ps(crow + r * ldc + 16 * v, v == nv - 1 ? last : 0xFFFF, acc[r][v]);
}

/* The sums of ROWS rows (1 or 2) over k-block [kb, ke) of one chunk of NV vectors (WIDE, HI16,
 * NV, ROWS constants after inlining). sxr, pxr: the first row's scales and indices (k at k * xk),
 * the next row's xr further on; qb: the block's Y indices as vbmi_indices gives them, (NV + 3) / 4
 * vectors per k; syk0: Y's scales at (kb, chunk start); crow: the first row's outputs at the chunk start, the
 * next row's ldc further on, the partial sums read from them after the first block (carry). */
static inline __attribute__((always_inline)) void lookup_rows_vbmi(int wide, int hi16, int nv, int rows, int64_t kb,
                                                                int64_t ke, int64_t xr, int64_t xk,
                                                                const float *sxr,
                                                                const uint16_t *pxr, const float *syk0, int64_t N,
                                                                const __m512i *qb, const uint8_t *planes,
                                                                float *crow, int64_t ldc, __mmask16 last, int carry)
{
    const int nvec = wide ? 16 : 8, ng = (nv + 3) / 4;
    __m512 acc[2][LW_VECS];
    rows_start(rows, nv, acc, crow, ldc, last, carry);
    const float *syk = syk0;
    for (int64_t k = kb, at = kb * xk; k < ke; ++k, at += xk, syk += N, qb += ng)  /* at: k's offset in X */
        for (int r = 0; r < rows; ++r) {
            const uint8_t *row = planes + (int64_t)pxr[r * xr + at] * nvec * 64;
            __m512i pl[16];
            for (int w = 0; w < nvec; ++w)
                pl[w] = _mm512_load_si512(row + 64 * w);
            const __m512 sa = _mm512_set1_ps(sxr[r * xr + at]);
            for (int g = 0; g < ng; ++g) {
                __m512 val[4];
                vbmi_lookup64(wide, hi16, pl, _mm512_load_si512(qb + g), val);
                for (int t = 0; t < 4 && 4 * g + t < nv; ++t) {
                    const int v = 4 * g + t;
                    const __m512 sb = v == nv - 1 ? _mm512_maskz_loadu_ps(last, syk + 16 * v)
                                                  : _mm512_loadu_ps(syk + 16 * v);
                    acc[r][v] = _mm512_fmadd_ps(sa, _mm512_mul_ps(sb, val[t]), acc[r][v]);
                }
            }
        }
    rows_finish(rows, nv, acc, crow, ldc, last);
}

#if AMSIM_DPBF16
/* lookup_rows_vbmi's sums with dot products (NV, ROWS constants after inlining); db, mb: the
 * block's d and nonzero masks, 2 * ng per k (dp_scales32). */
static inline __attribute__((always_inline)) void lookup_rows_dp(int nv, int rows, int64_t kb, int64_t ke,
                                                              int64_t xr, int64_t xk, const float *sxr,
                                                              const uint16_t *pxr,
                                                              const __m512i *qb, const __m512i *db,
                                                              const uint32_t *mb, const uint8_t *planes,
                                                              float *crow, int64_t ldc, __mmask16 last, int carry)
{
    const int ng = (nv + 3) / 4;
    __m512 acc[2][LW_VECS];
    rows_start(rows, nv, acc, crow, ldc, last, carry);
    for (int64_t k = kb, at = kb * xk; k < ke; k += 2, at += 2 * xk) {  /* at: k's offset in X */
        const int two = k + 1 < ke;  /* else k alone (scale_pair) */
        const __m512i *q0 = qb + (k - kb) * ng, *d0 = db + (k - kb) * 2 * ng;
        const uint32_t *m0 = mb + (k - kb) * 2 * ng;
        for (int r = 0; r < rows; ++r) {
            const int64_t e = r * xr + at;
            __m512i p0[4], p1[4];  /* the rows of X's mantissas at k and k + 1 */
            hi16_planes(planes, pxr[e], p0);
            hi16_planes(planes, pxr[two ? e + xk : e], p1);
            const __m512bh sa = scale_pair(sxr + e, xk, two);
            for (int g = 0; g < ng; ++g) {
                __m512i a[2], b[2];
                dp_lookup64(2, p0, _mm512_load_si512(q0 + g), d0 + 2 * g, m0 + 2 * g, a);
                if (two)
                    dp_lookup64(2, p1, _mm512_load_si512(q0 + ng + g), d0 + 2 * ng + 2 * g, m0 + 2 * ng + 2 * g, b);
                else
                    b[0] = a[0], b[1] = a[1];
                /* dwords (k + 1 low, k high), as scale_pair's */
                const __m512i pairs[4] = {_mm512_unpacklo_epi16(b[0], a[0]), _mm512_unpackhi_epi16(b[0], a[0]),
                                          _mm512_unpacklo_epi16(b[1], a[1]), _mm512_unpackhi_epi16(b[1], a[1])};
                for (int t = 0; t < 4 && 4 * g + t < nv; ++t)
                    acc[r][4 * g + t] = _mm512_dpbf16_ps(acc[r][4 * g + t], (__m512bh)pairs[t], sa);
            }
        }
    }
    rows_finish(rows, nv, acc, crow, ldc, last);
}
#endif


/* Bytes 4c of 32 floats (c in vbmi_order_bytes' order, modulo 32): with an offset b, byte b of each
 * float; vbmi_order_bytes' columns from 32 on, in lanes' bytes 8..15, come from the second pair. */
static const uint8_t vbmi_float_bytes[64] = {
    0, 4, 8, 12, 64, 68, 72, 76, 0, 4, 8, 12, 64, 68, 72, 76,
    16, 20, 24, 28, 80, 84, 88, 92, 16, 20, 24, 28, 80, 84, 88, 92,
    32, 36, 40, 44, 96, 100, 104, 108, 32, 36, 40, 44, 96, 100, 104, 108,
    48, 52, 56, 60, 112, 116, 120, 124, 48, 52, 56, 60, 112, 116, 120, 124,
};
#define VBMI_SECOND_PAIR 0xFF00FF00FF00FF00ull

/*
 * Rows [kb, kb + kn) of Y's columns [jc, jc + ncols) row-major: *yb, row kk at kk * *ldb. Y's own
 * rows when they are contiguous; else gathered into buf (ldbuf >= ncols rounded up to 16, the
 * lanes past ncols zero), a transposed view 16 x 16 tiles at a time, transposed in registers.
 */
static void raw_block(const struct y_raw *yr, int64_t kb, int64_t kn, int64_t jc, int64_t ncols, float *buf,
                      int64_t ldbuf, const float **yb, int64_t *ldb)
{
    if (yr->cs == 1) {
        *yb = yr->y + kb * yr->rs + jc, *ldb = yr->rs;
        return;
    }
    *yb = buf, *ldb = ldbuf;
    if (yr->rs == 1) {
        for (int64_t c0 = 0; c0 < ncols; c0 += 16)
            for (int64_t k0 = 0; k0 < kn; k0 += 16) {
                const int64_t nc = (ncols - c0 < 16) ? ncols - c0 : 16, nk = (kn - k0 < 16) ? kn - k0 : 16;
                const __mmask16 ks = (__mmask16)(0xFFFFu >> (16 - nk));
                __m512 t[16];
                for (int i = 0; i < 16; ++i)
                    t[i] = i < nc ? _mm512_maskz_loadu_ps(ks, yr->y + (jc + c0 + i) * yr->cs + kb + k0)
                                  : _mm512_setzero_ps();
                transpose16(t);  /* t[kk]: columns c0.. of row k0 + kk */
                for (int64_t kk = 0; kk < nk; ++kk)
                    _mm512_storeu_ps(buf + (k0 + kk) * ldbuf + c0, t[kk]);
            }
        return;
    }
    for (int64_t kk = 0; kk < kn; ++kk)
        for (int64_t c = 0; c < (ncols + 15) / 16 * 16; ++c)
            buf[kk * ldbuf + c] = c < ncols ? yr->y[(kb + kk) * yr->rs + (jc + c) * yr->cs] : 0.0f;
}

/* Exponent ranges of the normal scales a part prepared: 16-bit fields (exponent << 7, from the
 * dot-product preparation) and 32-bit ones (exponent << 23, from the float scales'). */
struct y_range {
    __m512i lo16, hi16, lo32, hi32;
};

/*
 * A block of Y (kn rows of ncols columns, row kk at yb + kk * ldb) split and prepared for the
 * lookups from its raw floats: for every k and group of 64 columns, the mantissa indices in
 * vbmi_indices' order (qb, ng per k); with DP (a constant after inlining) the scales as
 * dp_scales32 gives them (db, mb; 2 * ng per k); with FLOATS the scales as floats (sb, row kk at
 * kk * 16 * nv). These are amsim_split16's values: the indices and scales are bit fields of
 * amsim_round16's sum (the dot products' from the floats' high halves: a bfloat16 scale is the
 * high half of the float one), an operand is normal when its exponent is neither 0 nor 255 before
 * and after rounding, a zero or subnormal one gets a zero scale (which masks its index) and an inf
 * or NaN one keeps its value (with DP it leaves the block to the float forms). Returns whether the
 * block has one (DP).
 */
static inline __attribute__((always_inline)) int prep_block(int dp, int floats, const float *yb, int64_t ldb,
                                                         int64_t kn, int64_t ncols, int nv, int m, int rne,
                                                         __m512i *qb, __m512i *db, uint32_t *mb, float *sb,
                                                         struct y_range *r)
{
    const int ng = (nv + 3) / 4;
    const __m512i order = _mm512_loadu_si512(vbmi_float_bytes);
    /* the index's bits: within byte 2 of the float for M <= 7, shifted down to byte 0 for M = 8 */
    const __m512i sel = _mm512_add_epi8(order, _mm512_set1_epi8(m == 8 ? 0 : 2));
#if AMSIM_DPBF16
    const __m512i words = _mm512_loadu_si512(dp_scale_words), e16 = _mm512_set1_epi16(0x7F80);
#endif
    const __m512i e32 = _mm512_set1_epi32(0x7F800000);
    int special = 0;
    for (int64_t kk = 0; kk < kn; ++kk)
        for (int g = 0; g < ng; ++g) {
            const int64_t left = ncols - 64 * g;
            __m512i u[4], v[4];
            for (int t = 0; t < 4; ++t) {
                const int64_t n = left - 16 * t;
                const __mmask16 lanes = (__mmask16)(n >= 16 ? 0xFFFFu : n > 0 ? (1u << n) - 1u : 0u);
                u[t] = _mm512_castps_si512(_mm512_maskz_loadu_ps(lanes, yb + kk * ldb + 64 * g + 16 * t));
                v[t] = amsim_round16(u[t], m, rne);
            }
            __m512i q[2];
            for (int h = 0; h < 2; ++h) {
                const __m512i a = m == 8 ? _mm512_srli_epi32(v[2 * h], 15) : v[2 * h];
                const __m512i b = m == 8 ? _mm512_srli_epi32(v[2 * h + 1], 15) : v[2 * h + 1];
                q[h] = _mm512_permutex2var_epi8(a, sel, b);
            }
            __m512i idx = _mm512_mask_blend_epi8(VBMI_SECOND_PAIR, q[0], q[1]);
            if (m < 7)
                idx = _mm512_srli_epi16(idx, 7 - m);
            if (m < 8)
                idx = _mm512_and_si512(idx, _mm512_set1_epi8((char)((1 << m) - 1)));
            qb[kk * ng + g] = idx;
#if AMSIM_DPBF16
            for (int h = 0; dp && h < 2; ++h) {
                const int64_t at = (kk * ng + g) * 2 + h;
                const __m512i wv = _mm512_permutex2var_epi16(v[2 * h], words, v[2 * h + 1]);
                const __m512i wu = rne ? _mm512_permutex2var_epi16(u[2 * h], words, u[2 * h + 1]) : wv;
                const __m512i eu = _mm512_and_si512(wu, e16), ev = rne ? _mm512_and_si512(wv, e16) : eu;
                const __mmask32 nonzero = _mm512_test_epi16_mask(wu, e16);
                const __mmask32 inf_nan = _mm512_cmpeq_epi16_mask(eu, e16) |
                                          (rne ? _mm512_cmpeq_epi16_mask(ev, e16) : 0);
                special |= inf_nan != 0;
                db[at] = _mm512_sub_epi16(_mm512_and_si512(wv, _mm512_set1_epi16((short)0xFF80)),
                                          _mm512_set1_epi16(0x3F80));
                mb[at] = nonzero;
                r->lo16 = _mm512_mask_min_epu16(r->lo16, nonzero & ~inf_nan, r->lo16, ev);
                r->hi16 = _mm512_mask_max_epu16(r->hi16, nonzero & ~inf_nan, r->hi16, ev);
            }
#else
            (void)dp, (void)db, (void)mb;
#endif
            for (int t = 0; floats && t < 4 && 4 * g + t < nv; ++t) {
                /* amsim_split16's scales: sign | exponent of the sum, the sign for a zero or subnormal
                 * operand, an inf or NaN one as it is (cheaper than amsim_split16 itself) */
                const __m512i e = _mm512_and_si512(u[t], e32);
                const __mmask16 zero = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
                const __mmask16 inf_nan = _mm512_cmpeq_epi32_mask(e, e32);
                __m512i sc = _mm512_and_si512(v[t], _mm512_set1_epi32((int)0xFF800000u));
                sc = _mm512_mask_mov_epi32(sc, zero, _mm512_and_si512(u[t], _mm512_set1_epi32((int)0x80000000u)));
                sc = _mm512_mask_mov_epi32(sc, inf_nan, u[t]);
                _mm512_storeu_si512(sb + kk * 16 * nv + 64 * g + 16 * t, sc);
                const __m512i es = _mm512_and_si512(sc, e32);
                const __mmask16 normal = ~zero & ~inf_nan & _mm512_cmpneq_epi32_mask(es, e32);
                r->lo32 = _mm512_mask_min_epu32(r->lo32, normal, r->lo32, es);
                r->hi32 = _mm512_mask_max_epu32(r->hi32, normal, r->hi32, es);
            }
        }
    return special;
}

/* prep_block for Y's rows [kb, kb + kn) of columns [jc, jc + ncols) (DP, FLOATS constants after
 * inlining): read in place, or gathered into buf 16 rows at a time (raw_block), which keeps the
 * gathered rows in L1 beside the block's preparation and the LUT rows the lookups load. */
static inline __attribute__((always_inline)) int prep_raw(int dp, int floats, const struct y_raw *yr, int64_t kb,
                                                       int64_t kn, int64_t jc, int64_t ncols, int nv, float *buf,
                                                       __m512i *qb, __m512i *db, uint32_t *mb, float *sb,
                                                       struct y_range *r)
{
    const int64_t ng = (nv + 3) / 4, slab = yr->cs == 1 ? kn : 16;
    int special = 0;
    for (int64_t k0 = 0; k0 < kn; k0 += slab) {
        const float *yb;
        int64_t ldb;
        const int64_t n = (kn - k0 < slab) ? kn - k0 : slab;
        raw_block(yr, kb + k0, n, jc, ncols, buf, 16 * nv, &yb, &ldb);
        special |= prep_block(dp, floats, yb, ldb, n, ncols, nv, yr->m, yr->rne, qb + k0 * ng, db + k0 * 2 * ng,
                              mb + k0 * 2 * ng, sb + k0 * 16 * nv, r);
    }
    return special;
}

/* The biased exponent range [lo, hi] of a y_range (lo > hi: no normal scale). */
static void y_range_get(const struct y_range *r, int32_t out[2])
{
    const __m512i mask16 = _mm512_set1_epi32(0xFFFF);
    const uint32_t lo16 = _mm512_reduce_min_epu32(_mm512_min_epu32(_mm512_and_si512(r->lo16, mask16),
                                                                   _mm512_srli_epi32(r->lo16, 16)));
    const uint32_t hi16 = _mm512_reduce_max_epu32(_mm512_max_epu32(_mm512_and_si512(r->hi16, mask16),
                                                                   _mm512_srli_epi32(r->hi16, 16)));
    const uint32_t lo32 = _mm512_reduce_min_epu32(r->lo32), hi32 = _mm512_reduce_max_epu32(r->hi32);
    const int32_t lo_a = lo16 == 0xFFFFu ? 255 : (int32_t)(lo16 >> 7), hi_a = (int32_t)(hi16 >> 7);
    const int32_t lo_b = lo32 == 0xFFFFFFFFu ? 255 : (int32_t)(lo32 >> 23), hi_b = (int32_t)(hi32 >> 23);
    out[0] = lo_a < lo_b ? lo_a : lo_b;
    out[1] = hi_a > hi_b ? hi_a : hi_b;
}

/* Rows [0, M) of columns [j0, j1), 2 to LW_VECS vectors per chunk, Y raw (struct y_raw); dp: the dot
 * products for a HI16 LUT below M = 8, taken as if inside their window (amsim_window_dp), which the
 * caller tests afterwards with the range written to yrange (Y's columns [j0, j1)); *used_dp: whether
 * they were used. */
static int lookup_vbmi(int64_t M, int64_t K, const float *sx, const uint16_t *px, int64_t xr, int64_t xk,
                       const struct y_raw *yr, const float *plut, int m, int dp, float *c, int64_t ldc,
                       int64_t j0, int64_t j1, int32_t yrange[2], int *used_dp)
{
    __m512i *qb = work_buffer(SLOT_QB, sizeof(__m512i) * LW_KB_MAX * LW_GROUPS);
    float *sb = work_buffer(SLOT_SB, sizeof(float) * 16 * LW_VECS * LW_KB_MAX);
    float *yt = yr->cs == 1 ? NULL : work_buffer(SLOT_YB, sizeof(float) * 16 * LW_VECS * 16);
    if (!qb || !sb || (yr->cs != 1 && !yt))
        return -1;
    const uint8_t *planes = (const uint8_t *)plut + float_rows_bytes(m);
    const int hi16 = lut_hi16(plut, m);
#if AMSIM_DPBF16
    dp = dp && hi16 && m < 8;
    /* per k and group of 64 columns: two vectors of adds d, then (after all of them) two masks */
    __m512i *db = dp ? work_buffer(SLOT_DB, (2 * sizeof(__m512i) + 2 * sizeof(uint32_t)) * LW_KB_MAX * LW_GROUPS)
                     : NULL;
    if (dp && !db)
        return -1;
    uint32_t *mb = dp ? (uint32_t *)(db + 2 * LW_KB_MAX * LW_GROUPS) : NULL;
#else
    dp = 0;
    __m512i *db = NULL;
    uint32_t *mb = NULL;
#endif
    *used_dp = dp;
    struct y_range range = {_mm512_set1_epi32(-1), _mm512_setzero_si512(), _mm512_set1_epi32(-1),
                            _mm512_setzero_si512()};
    /* Even chunks, their sizes differing by one vector at most (10 + 9, not 12 + 7): none has
     * fewer than 2 vectors, the fewest the kernel's forms take (the part has more than one). */
    const int64_t vecs = (j1 - j0 + 15) / 16, chunks = (vecs + LW_VECS - 1) / LW_VECS;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t jc = j0 + 16 * (chunk * vecs / chunks), je = j0 + 16 * ((chunk + 1) * vecs / chunks);
        const int64_t ncols = (je < j1 ? je : j1) - jc;
        const int nv = (int)((ncols + 15) / 16), ng = (nv + 3) / 4;
        const __mmask16 last = (__mmask16)(0xFFFFu >> (16 * nv - ncols));
        int64_t kbs = LW_YBYTES / (64 * nv + 64 * ng);
        kbs = kbs > LW_KB_MAX ? LW_KB_MAX : kbs;
        kbs = kbs < 2 ? 2 : kbs & ~(int64_t)1;  /* even: the dot products take k in pairs */
        if (yr->cs != 1 && kbs > 16)
            kbs &= ~(int64_t)15;  /* a transposed view is gathered 16 x 16 tiles at a time */
        for (int64_t kb = 0; kb < K; kb += kbs) {
            const int64_t ke = (K - kb < kbs) ? K : kb + kbs;
            /* an inf or NaN scale of Y in this block sends it to the float forms */
            const int special = dp ? prep_raw(1, 0, yr, kb, ke - kb, jc, ncols, nv, yt, qb, db, mb, sb, &range)
                                   : prep_raw(0, 1, yr, kb, ke - kb, jc, ncols, nv, yt, qb, db, mb, sb, &range);
            if (dp && special)
                prep_raw(0, 1, yr, kb, ke - kb, jc, ncols, nv, yt, qb, db, mb, sb, &range);
            /* two rows at a time while their accumulators and planes fit the registers */
            const int pair = nv <= LW_PAIR_VECS;
            for (int64_t i = 0; i < M; i += 1 + pair) {
                const int rows = pair && i + 1 < M ? 2 : 1;
#define LW_ARGS kb, ke, xr, xk, sx + i * xr, px + i * xr
#define LW_ROWS(WIDE, HI16, NV, R)                                                                         \
    lookup_rows_vbmi(WIDE, HI16, NV, R, LW_ARGS, sb, 16 * nv, qb, planes, c + i * ldc + jc, ldc, last, kb > 0)
#if AMSIM_DPBF16
#define LW_DP(NV, R) lookup_rows_dp(NV, R, LW_ARGS, qb, db, mb, planes, c + i * ldc + jc, ldc, last, kb > 0)
#else
#define LW_DP(NV, R) LW_ROWS(0, 1, NV, R)
#endif
#define LW_FORMS(NV, R)                                                                                    \
    do {                                                                                                   \
        if (m == 8)                                                                                        \
            LW_ROWS(1, 0, NV, R);                                                                          \
        else if (dp && !special)                                                                           \
            LW_DP(NV, R);                                                                                  \
        else if (hi16)                                                                                     \
            LW_ROWS(0, 1, NV, R);                                                                          \
        else                                                                                               \
            LW_ROWS(0, 0, NV, R);                                                                          \
    } while (0)
#define LW_CASE(NV)                                                                                        \
    case NV:                                                                                               \
        if (NV <= LW_PAIR_VECS && rows == 2)                                                               \
            LW_FORMS(NV, 2);                                                                               \
        else                                                                                               \
            LW_FORMS(NV, 1);                                                                               \
        break;
                switch (nv) {  /* constant widths keep the accumulators in registers */
                LW_CASE(2) LW_CASE(3) LW_CASE(4) LW_CASE(5) LW_CASE(6) LW_CASE(7)
                LW_CASE(8) LW_CASE(9) LW_CASE(10) LW_CASE(11) default: LW_CASE(12)
                }
#undef LW_CASE
#undef LW_FORMS
#undef LW_DP
#undef LW_ROWS
#undef LW_ARGS
            }
        }
    }
    y_range_get(&range, yrange);
    return 0;
}
#endif

/* Rows [0, M) of columns [j0, j1) of X (x) Y: X split with element (i, k) at i * xr + k * xk (row-
 * or k-major), Y split row-major (K x N). With byte planes, parts of more than one vector take
 * lookup_vbmi instead, which reads Y raw. */
static int lookup_avx512(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                         int64_t xk, const float *sy, const uint16_t *qy, const float *plut, int m, float *c,
                         int64_t ldc, int64_t j0, int64_t j1)
{
    const int vecs = lut_stride(m) / 16;
    for (int64_t jc = j0; jc < j1; jc += L_COLS) {
        const int64_t ncols = (j1 - jc < L_COLS) ? j1 - jc : L_COLS;
        const int nv = (int)((ncols + 15) / 16);
        __mmask16 mask[L_COLS / 16];
        for (int v = 0; v < nv; ++v) {
            const int64_t left = ncols - 16 * v;
            mask[v] = (__mmask16)(left >= 16 ? 0xFFFFu : ((1u << left) - 1u));
        }
        for (int64_t i = 0; i < M; i += L_ROWS) {
            const int nrows = (int)((M - i < L_ROWS) ? M - i : L_ROWS);
            switch (vecs) {  /* a constant row length keeps the LUT row in registers */
            case 2: lookup_chunk(2, K, sx, px, xr, xk, sy, qy, N, plut, c, ldc, i, nrows, jc, nv, mask); break;
            case 4: lookup_chunk(4, K, sx, px, xr, xk, sy, qy, N, plut, c, ldc, i, nrows, jc, nv, mask); break;
            case 8: lookup_chunk(8, K, sx, px, xr, xk, sy, qy, N, plut, c, ldc, i, nrows, jc, nv, mask); break;
            default: lookup_chunk(16, K, sx, px, xr, xk, sy, qy, N, plut, c, ldc, i, nrows, jc, nv, mask); break;
            }
        }
    }
    return 0;
}

#endif /* AMSIM_AVX512 */
