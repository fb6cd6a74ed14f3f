/*
 * expand.c -- the AVX-512 expand kernel (M <= 8): the LUT expanded into Y, so that the inner loop
 * is a multiply-add over contiguous columns. portable.c has the form for other CPUs.
 */
#include "engine.h"
#include "simd.h"

#if AMSIM_AVX512
/*
 * AVX-512 expand kernel (M <= 8).
 *
 * A panel of up to X_TILES tiles of 16 columns (one vector each) accumulates
 * in a packed buffer for up to X_ROWS rows rather than in C, whose rows are
 * 4 KiB apart for N = 1024 and would alias in L1. For each block of KB values
 * of k (the operands come split in KB-column blocks, amsim_split_f32):
 *   - T is built: T[p][kk][tile] = sy(k, cols) * LUT[p][qy(k, cols)] for all
 *     2^M mantissas p (X_TBYTES at M = 7). LUT row p sits in registers and
 *     vpermt2ps picks 16 entries at once, a blend tree resolving index bits 5..7;
 *   - rows are swept 4 at a time: acc[row][tile] += sx(i, k) * T[px(i, k)][kk][tile],
 *     one exact product and one add each. One broadcast scale and one index
 *     serve all the panel's tiles, and the block's A values are read in order.
 * Each output still sums its products in increasing k.
 */
#define X_TILES 4               /* tiles of 16 columns per panel */
#ifndef X_KB_MAX
#define X_KB_MAX 16
#endif
#ifndef X_TBYTES
#define X_TBYTES (256 * 1024)   /* T per k-block: KB = X_TBYTES / (2^M * 64 * X_TILES), at most X_KB_MAX */
#endif
#ifndef X_ROWS
#define X_ROWS 4096             /* rows sharing one build of T: 1 MiB of accumulators */
#endif

/* The k-block width the expand kernel expects its split operands in (amsim_split_f32's kb). */
static int expand_kb_avx512(int m)
{
    int kb = X_TBYTES / ((1 << m) * 64 * X_TILES);
    return kb < 1 ? 1 : (kb > X_KB_MAX ? X_KB_MAX : kb);
}

#if AMSIM_VBMI
/* T[p][kk][0..tiles) for a whole panel, 64 columns per lookup (WIDE, HI16 constants after inlining). */
static inline __attribute__((always_inline)) void build_panel_vbmi(int wide, int hi16, int P, int kn, int kb_size,
                                                                int tiles, const uint8_t *planes, const __m512i *q,
                                                                __m512 (*s)[X_TILES], __m512 *t)
{
    const int nvec = wide ? 16 : 8;
    for (int p = 0; p < P; ++p) {
        __m512i pl[16];
        for (int v = 0; v < nvec; ++v)
            pl[v] = _mm512_load_si512(planes + ((int64_t)p * nvec + v) * 64);
        for (int kk = 0; kk < kn; ++kk) {
            __m512 val[4];
            vbmi_lookup64(wide, hi16, pl, q[kk], val);
            for (int tile = 0; tile < tiles; ++tile)
                t[((int64_t)p * kb_size + kk) * tiles + tile] = _mm512_mul_ps(s[kk][tile], val[tile]);
        }
    }
}
#endif

#if AMSIM_DPBF16
/* The panel's T in bfloat16 (HALVES, 1 or 2, a constant after inlining): T[p][kk][h] holds the
 * panel's columns 32h .. 32h + 31 (dp_lookup64). */
static inline __attribute__((always_inline)) void build_panel_dp(int halves, int P, int kn, int kb_size,
                                                              const uint8_t *planes, const __m512i *q,
                                                              const __m512i (*d)[2], const uint32_t (*nz)[2],
                                                              __m512i *t)
{
    for (int p = 0; p < P; ++p) {
        __m512i pl[4];
        hi16_planes(planes, p, pl);
        for (int kk = 0; kk < kn; ++kk)
            dp_lookup64(halves, pl, q[kk], d[kk], nz[kk], t + ((int64_t)p * kb_size + kk) * halves);
    }
}

/* One group of sweep_rows_dp's: ROWS rows from r (1 or 4, TILES 2 to 4: constants after inlining),
 * k in pairs, one dot product per tile and pair. */
static inline __attribute__((always_inline)) void sweep_dp_group(int rows, int tiles, int64_t r, int64_t r0, int kn,
                                                              int kb_size, const float *as, const uint16_t *ap,
                                                              int64_t ldr, int64_t ldk, const __m512i *t,
                                                              __m512 *cbuf)
{
    const int halves = (tiles + 1) / 2;
    __m512 acc[4][X_TILES];
    for (int u = 0; u < rows; ++u)
        for (int v = 0; v < tiles; ++v)
            acc[u][v] = cbuf[(r - r0 + u) * tiles + v];
    for (int kk = 0; kk < kn; kk += 2) {
        const int two = kk + 1 < kn;  /* else kk alone (scale_pair) */
        for (int u = 0; u < rows; ++u) {
            const int64_t e = (r - r0 + u) * ldr + kk * ldk;
            const __m512bh sa = scale_pair(as + e, ldk, two);
            const __m512i *ta = t + ((int64_t)ap[e] * kb_size + kk) * halves;
            const __m512i *tb = two ? t + ((int64_t)ap[e + ldk] * kb_size + kk + 1) * halves : ta;
            for (int h = 0; h < halves; ++h) {
                const __m512i a = _mm512_load_si512(ta + h), b = _mm512_load_si512(tb + h);
                /* dwords (kk + 1 low, kk high), as scale_pair's */
                acc[u][2 * h] = _mm512_dpbf16_ps(acc[u][2 * h], (__m512bh)_mm512_unpacklo_epi16(b, a), sa);
                if (2 * h + 1 < tiles)
                    acc[u][2 * h + 1] = _mm512_dpbf16_ps(acc[u][2 * h + 1],
                                                         (__m512bh)_mm512_unpackhi_epi16(b, a), sa);
            }
        }
    }
    for (int u = 0; u < rows; ++u)
        for (int v = 0; v < tiles; ++v)
            cbuf[(r - r0 + u) * tiles + v] = acc[u][v];
}

/* sweep_rows with T in bfloat16 (build_panel_dp), four rows at a time. */
static inline __attribute__((always_inline)) void sweep_rows_dp(int tiles, int64_t r0, int64_t r1, int kn,
                                                             int kb_size, const float *as, const uint16_t *ap,
                                                             int64_t ldr, int64_t ldk, const __m512i *t,
                                                             __m512 *cbuf)
{
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4)
        sweep_dp_group(4, tiles, r, r0, kn, kb_size, as, ap, ldr, ldk, t, cbuf);
    for (; r < r1; ++r)
        sweep_dp_group(1, tiles, r, r0, kn, kb_size, as, ap, ldr, ldk, t, cbuf);
}

#endif

/* T[p][kk][tile] = s[kk] * LUT[p][q[kk]] for every mantissa p (VECS a constant after inlining);
 * T holds the panel's `tiles` tiles side by side. */
static inline __attribute__((always_inline)) void build_tile(int vecs, int P, int kn, int kb_size, int tiles,
                                                          int tile, const float *padded, const __m512i *q,
                                                          const __m512 *s, __m512 *t)
{
    /* The index bits that steer the blend tree depend on kk only: test them once, not per p. */
    __mmask16 b5[X_KB_MAX], b6[X_KB_MAX], b7[X_KB_MAX];
    for (int kk = 0; kk < kn; ++kk) {
        b5[kk] = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(32));
        b6[kk] = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(64));
        b7[kk] = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(128));
    }
    for (int p = 0; p < P; ++p) {
        __m512 row[16];
        for (int v = 0; v < vecs; ++v)
            row[v] = _mm512_load_ps(padded + ((int64_t)p * vecs + v) * 16);
        for (int kk = 0; kk < kn; ++kk)
            t[((int64_t)p * kb_size + kk) * tiles + tile] =
                _mm512_mul_ps(s[kk], lookup_row(row, vecs, q[kk], b5[kk], b6[kk], b7[kk]));
    }
}

/* Sweep rows [r0, r1) of one k-block for a panel of TILES tiles (a constant after inlining).
 * as, ap: the block's scales and indices, from row r0, (r0 + r, kk) at r * ldr + kk * ldk; cbuf:
 * accumulators of row r0 first. */
static inline __attribute__((always_inline)) void sweep_rows(int tiles, int64_t r0, int64_t r1, int kn, int kb_size,
                                                          const float *as, const uint16_t *ap, int64_t ldr,
                                                          int64_t ldk, const __m512 *t, __m512 *cbuf)
{
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        __m512 acc[4][X_TILES];
        for (int u = 0; u < 4; ++u)
            for (int v = 0; v < tiles; ++v)
                acc[u][v] = cbuf[(r - r0 + u) * tiles + v];
        for (int kk = 0; kk < kn; ++kk)
            for (int u = 0; u < 4; ++u) {
                const int64_t e = (r - r0 + u) * ldr + kk * ldk;
                const __m512 s = _mm512_set1_ps(as[e]);
                const __m512 *row = t + ((int64_t)ap[e] * kb_size + kk) * tiles;
                for (int v = 0; v < tiles; ++v)
                    acc[u][v] = _mm512_fmadd_ps(s, row[v], acc[u][v]);
            }
        for (int u = 0; u < 4; ++u)
            for (int v = 0; v < tiles; ++v)
                cbuf[(r - r0 + u) * tiles + v] = acc[u][v];
    }
    for (; r < r1; ++r) {
        __m512 acc[X_TILES];
        for (int v = 0; v < tiles; ++v)
            acc[v] = cbuf[(r - r0) * tiles + v];
        for (int kk = 0; kk < kn; ++kk) {
            const int64_t e = (r - r0) * ldr + kk * ldk;
            const __m512 s = _mm512_set1_ps(as[e]);
            const __m512 *row = t + ((int64_t)ap[e] * kb_size + kk) * tiles;
            for (int v = 0; v < tiles; ++v)
                acc[v] = _mm512_fmadd_ps(s, row[v], acc[v]);
        }
        for (int v = 0; v < tiles; ++v)
            cbuf[(r - r0) * tiles + v] = acc[v];
    }
}

/*
 * C[i, j] for rows [i0, i1) and columns [j0, j1) of the M x N product.
 * sx, px: X (M x K) split in xkb-column blocks, xkb = expand_kb_avx512(m), or
 * row-major for xkb = 0 (see amsim_expand_x_blocks); sy, qy: Y split
 * row-major (K x N); c: row-major with leading dimension ldc.
 */
static int expand_avx512(int64_t M, int64_t N, int64_t K, const struct x_operand *xo, const float *sy,
                         const uint16_t *qy, const float *plut, int m, int dp, float *c, int64_t ldc, int64_t i0,
                         int64_t i1, int64_t j0, int64_t j1)
{
    const int P = 1 << m;
    const int vecs = lut_stride(m) / 16;       /* a LUT row in vectors */
    const int kb_size = expand_kb_avx512(m);
    const int64_t rows_max = (i1 - i0 < X_ROWS) ? i1 - i0 : X_ROWS;
    /* Buffers sized to the call: small GEMMs stay clear of fresh pages, which cost a fault each. */
    __m512 *t = work_buffer(SLOT_T, sizeof(__m512) * (size_t)P * kb_size * X_TILES);
    __m512 *cbuf = work_buffer(SLOT_CBUF, sizeof(__m512) * (size_t)(rows_max > 0 ? rows_max : 1) * X_TILES);
    if (!t || !cbuf)
        return -1;
#if AMSIM_VBMI
    const uint8_t *planes = (const uint8_t *)plut + float_rows_bytes(m);
    const int hi16 = lut_hi16(plut, m);
    dp = AMSIM_DPBF16 && dp && hi16;  /* T in bfloat16 */
#endif

    for (int64_t jp = j0; jp < j1; jp += 16 * X_TILES) {
        const int64_t pcols = (j1 - jp < 16 * X_TILES) ? j1 - jp : 16 * X_TILES;
        const int tiles = (int)((pcols + 15) / 16);
        for (int64_t rb = i0; rb < i1; rb += X_ROWS) {
            const int64_t re = (i1 - rb < X_ROWS) ? i1 : rb + X_ROWS;
            memset(cbuf, 0, sizeof(__m512) * (size_t)(re - rb) * tiles);
            for (int64_t kb = 0; kb < K; kb += kb_size) {
                const int kn = (int)((K - kb < kb_size) ? K - kb : kb_size);
                int bf16 = 0;  /* this block's T in bfloat16 */
#if AMSIM_VBMI
                if (tiles >= 2) {  /* one 64-entry lookup serves the whole panel */
                    __m512i q[X_KB_MAX];
                    for (int kk = 0; kk < kn; ++kk)
                        q[kk] = vbmi_indices(qy + (kb + kk) * N + jp, pcols);
#if AMSIM_DPBF16
                    __m512i d[X_KB_MAX][2];
                    uint32_t nz[X_KB_MAX][2];
                    bf16 = dp;
                    for (int kk = 0; bf16 && kk < kn; ++kk)
                        for (int h = 0; h < 2; ++h)  /* an inf or NaN scale: float32 T for the block */
                            bf16 &= !dp_scales32(sy + (kb + kk) * N + jp + 32 * h, pcols - 32 * h, &d[kk][h],
                                                 &nz[kk][h]);
                    if (bf16 && tiles <= 2)
                        build_panel_dp(1, P, kn, kb_size, planes, q, d, nz, (__m512i *)t);
                    else if (bf16)
                        build_panel_dp(2, P, kn, kb_size, planes, q, d, nz, (__m512i *)t);
#endif
                    if (!bf16) {
                        __m512 s[X_KB_MAX][X_TILES];
                        for (int kk = 0; kk < kn; ++kk) {
                            const int64_t off = (kb + kk) * N + jp;
                            for (int tile = 0; tile < tiles; ++tile) {
                                const int64_t left = pcols - 16 * tile;
                                const __mmask16 cols = (__mmask16)(left >= 16 ? 0xFFFFu : ((1u << left) - 1u));
                                s[kk][tile] = _mm512_maskz_loadu_ps(cols, sy + off + 16 * tile);
                            }
                        }
                        if (m == 8)
                            build_panel_vbmi(1, 0, P, kn, kb_size, tiles, planes, q, s, t);
                        else if (hi16)
                            build_panel_vbmi(0, 1, P, kn, kb_size, tiles, planes, q, s, t);
                        else
                            build_panel_vbmi(0, 0, P, kn, kb_size, tiles, planes, q, s, t);
                    }
                } else
#endif
                for (int tile = 0; tile < tiles; ++tile) {
                    const int64_t jt = jp + 16 * tile;
                    const int nb = (int)((jp + pcols - jt < 16) ? jp + pcols - jt : 16);
                    const __mmask16 cols = (__mmask16)((1u << nb) - 1u);
                    __m512i q[X_KB_MAX];
                    __m512 s[X_KB_MAX];
                    for (int kk = 0; kk < kn; ++kk) {
                        const int64_t off = (kb + kk) * N + jt;
                        q[kk] = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(cols, qy + off));
                        s[kk] = _mm512_maskz_loadu_ps(cols, sy + off);  /* columns past nb: T = 0 */
                    }
                    switch (vecs) {  /* a constant row length keeps the LUT row in registers */
                    case 2: build_tile(2, P, kn, kb_size, tiles, tile, plut, q, s, t); break;
                    case 4: build_tile(4, P, kn, kb_size, tiles, tile, plut, q, s, t); break;
                    case 8: build_tile(8, P, kn, kb_size, tiles, tile, plut, q, s, t); break;
                    default: build_tile(16, P, kn, kb_size, tiles, tile, plut, q, s, t); break;
                    }
                }
                const float *as;
                const uint16_t *ap;
                int64_t ldr, ldk;
                if (x_block(xo, M, K, m, rb, re, kb, kn, &as, &ap, &ldr, &ldk) != 0)
                    return -1;
#if AMSIM_DPBF16
                if (bf16) {
                    const __m512i *tb = (const __m512i *)t;
                    switch (tiles) {
                    case 2: sweep_rows_dp(2, rb, re, kn, kb_size, as, ap, ldr, ldk, tb, cbuf); break;
                    case 3: sweep_rows_dp(3, rb, re, kn, kb_size, as, ap, ldr, ldk, tb, cbuf); break;
                    default: sweep_rows_dp(4, rb, re, kn, kb_size, as, ap, ldr, ldk, tb, cbuf); break;
                    }
                } else
#endif
                switch (tiles) {  /* a constant tile count lets the compiler keep acc in registers */
                case 1: sweep_rows(1, rb, re, kn, kb_size, as, ap, ldr, ldk, t, cbuf); break;
                case 2: sweep_rows(2, rb, re, kn, kb_size, as, ap, ldr, ldk, t, cbuf); break;
                case 3: sweep_rows(3, rb, re, kn, kb_size, as, ap, ldr, ldk, t, cbuf); break;
                default: sweep_rows(4, rb, re, kn, kb_size, as, ap, ldr, ldk, t, cbuf); break;
                }
            }
            for (int tile = 0; tile < tiles; ++tile) {
                const int64_t jt = jp + 16 * tile;
                const int nb = (int)((jp + pcols - jt < 16) ? jp + pcols - jt : 16);
                const __mmask16 cols = (__mmask16)((1u << nb) - 1u);
                for (int64_t r = rb; r < re; ++r)
                    _mm512_mask_storeu_ps(c + r * ldc + jt, cols, cbuf[(r - rb) * tiles + tile]);
            }
        }
    }
    return 0;
}

#endif /* AMSIM_AVX512 */
