/* split.c -- the operand split: each element to a scale and a mantissa index (amsim_product.h),
 * and the exponent range of the normal scales that decides the fast kernels' window. */
#include "engine.h"
#include "simd.h"

/*
 * Split a strided rows x cols operand into scales and mantissa indices
 * (amsim_split), and report the smallest and largest biased exponent among
 * the normal scales in range[0..1] (range[0] > range[1] when there are none):
 * the caller's test of the fast kernels' exactness window.
 *
 * Layout of the outputs: row-major when kb == 0. Otherwise blocked by columns
 * for the expand kernel: the block of columns [c0, c0 + w) (w = kb, or what is
 * left) is stored row-major as rows x w at offset c0 * rows, so that sweeping
 * one block of k over all rows reads memory in order.
 */
static inline __attribute__((always_inline)) void split_row(const float *restrict xr, int64_t cs, int64_t w, int m,
                                                         int rne, float *restrict sr, uint16_t *restrict ir,
                                                         int32_t *lo, int32_t *hi)
{
    int32_t l = *lo, h = *hi;
    for (int64_t c = 0; c < w; ++c) {
        uint32_t i;
        const float sc = amsim_split_impl(xr[c * cs], m, rne, &i);
        const int32_t e = (int32_t)((amsim_f2u(sc) >> 23) & 0xFFu);
        const int normal = (e != 0) & (e != 255);
        l = (normal & (e < l)) ? e : l;
        h = (normal & (e > h)) ? e : h;
        sr[c] = sc;
        ir[c] = (uint16_t)i;
    }
    *lo = l;
    *hi = h;
}


#if AMSIM_AVX512
/* Fold the biased exponents of the scales in the lanes of `normal` into [vlo, vhi]. */
static inline __attribute__((always_inline)) void widen_range(__m512 sc, __mmask16 normal, __m512i *vlo,
                                                           __m512i *vhi)
{
    const __m512i ex = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(sc), 23), _mm512_set1_epi32(0xFF));
    *vlo = _mm512_mask_min_epi32(*vlo, normal, *vlo, ex);
    *vhi = _mm512_mask_max_epi32(*vhi, normal, *vhi, ex);
}

#define SPLIT_T_COLS 256        /* columns of a transposed view split per sweep over its rows */

/* Split n consecutive elements to consecutive outputs (rne a constant after inlining). */
static inline __attribute__((always_inline)) void split_flat(const float *x, int64_t n, int m, int rne,
                                                          float *scale, uint16_t *idx, __m512i *vlo, __m512i *vhi)
{
    __m512i i16;
    __mmask16 normal;
    int64_t e = 0;
    for (; e + 16 <= n; e += 16) {
        const __m512 sc = amsim_split16(_mm512_loadu_ps(x + e), m, rne, &i16, &normal);
        widen_range(sc, normal, vlo, vhi);
        _mm512_storeu_ps(scale + e, sc);
        _mm256_storeu_si256((__m256i *)(idx + e), _mm512_cvtepi32_epi16(i16));
    }
    if (e < n) {
        const __mmask16 lanes = (__mmask16)((1u << (n - e)) - 1u);
        const __m512 sc = amsim_split16(_mm512_maskz_loadu_ps(lanes, x + e), m, rne, &i16, &normal);
        widen_range(sc, normal & lanes, vlo, vhi);
        _mm512_mask_storeu_ps(scale + e, lanes, sc);
        _mm256_mask_storeu_epi16(idx + e, lanes, _mm512_cvtepi32_epi16(i16));
    }
}

/*
 * Rows [g, ge) of columns [b0, b0 + w) of a row-major operand (row stride rs), split to the
 * block's row-major w-wide layout at scale, idx (row r at r * w): 16 // w rows to a vector when
 * w is 4, 8 or 16, else one row at a time.
 */
static inline __attribute__((always_inline)) void split_block(const float *x, int64_t rs, int64_t g, int64_t ge,
                                                           int64_t b0, int64_t w, int m, int rne, float *scale,
                                                           uint16_t *idx, __m512i *vlo, __m512i *vhi)
{
    __m512i i16;
    __mmask16 normal;
    const int per = (w == 16) ? 1 : (w == 8) ? 2 : (w == 4) ? 4 : 0;
    int64_t r = g;
    if (per)
        for (; r + per <= ge; r += per) {
            const float *xr = x + r * rs + b0;
            __m512 v;
            if (per == 1)
                v = _mm512_loadu_ps(xr);
            else if (per == 2)
                v = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(xr)), _mm256_loadu_ps(xr + rs), 1);
            else
                v = _mm512_insertf32x4(
                    _mm512_insertf32x4(_mm512_insertf32x4(_mm512_castps128_ps512(_mm_loadu_ps(xr)),
                                                          _mm_loadu_ps(xr + rs), 1),
                                       _mm_loadu_ps(xr + 2 * rs), 2),
                    _mm_loadu_ps(xr + 3 * rs), 3);
            const __m512 sc = amsim_split16(v, m, rne, &i16, &normal);
            widen_range(sc, normal, vlo, vhi);
            _mm512_storeu_ps(scale + r * w, sc);
            _mm256_storeu_si256((__m256i *)(idx + r * w), _mm512_cvtepi32_epi16(i16));
        }
    for (; r < ge; ++r)
        for (int64_t c = 0; c < w; c += 16) {
            const __mmask16 lanes = (__mmask16)(w - c >= 16 ? 0xFFFFu : ((1u << (w - c)) - 1u));
            const __m512 sc = amsim_split16(_mm512_maskz_loadu_ps(lanes, x + r * rs + b0 + c), m, rne, &i16,
                                            &normal);
            widen_range(sc, normal & lanes, vlo, vhi);
            _mm512_mask_storeu_ps(scale + r * w + c, lanes, sc);
            _mm256_mask_storeu_epi16(idx + r * w + c, lanes, _mm512_cvtepi32_epi16(i16));
        }
}

/* The first column of the k-block that column c lies in, from that of an earlier column's block
 * (no division: a 64-bit one would cost more than splitting the 16 columns). */
static inline int64_t block_start(int64_t b0, int64_t kb, int64_t c)
{
    while (b0 + kb <= c)
        b0 += kb;
    return b0;
}

/*
 * Store columns [c0, c0 + wc) of row r (scales sc, indices i32 as 32-bit lanes
 * 0..wc-1) in amsim_split_f32's layout: one masked store per k-block they fall
 * in, the lanes shifted down to the block's first column. b0: the first column
 * of c0's block.
 */
static inline __attribute__((always_inline)) void store_row_segments(float *scale, uint16_t *idx, int64_t rows,
                                                                  int64_t cols, int64_t kb, int64_t r, int64_t c0,
                                                                  int64_t b0, int64_t wc, __m512 sc, __m512i i32)
{
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int64_t seg = 0; seg < wc;) {
        /* columns [col, col + n) lie in the block starting at b0, which is w wide */
        const int64_t col = c0 + seg;
        b0 = block_start(b0, kb, col);
        const int64_t w = (cols - b0 < kb) ? cols - b0 : kb;
        const int64_t n = (wc - seg < b0 + w - col) ? wc - seg : b0 + w - col;
        const __mmask16 keep = (__mmask16)((1u << n) - 1u);
        const int64_t off = b0 * rows + r * w + (col - b0);
        if (seg == 0) {
            _mm512_mask_storeu_ps(scale + off, keep, sc);
            _mm256_mask_storeu_epi16(idx + off, keep, _mm512_cvtepi32_epi16(i32));
        } else {
            const __m512i down = _mm512_add_epi32(iota, _mm512_set1_epi32((int)seg));
            _mm512_mask_storeu_ps(scale + off, keep, _mm512_permutexvar_ps(down, sc));
            _mm256_mask_storeu_epi16(idx + off, keep, _mm512_cvtepi32_epi16(_mm512_permutexvar_epi32(down, i32)));
        }
        seg += n;
    }
}
#endif

#if AMSIM_AVX512
/*
 * A transposed tile's 16 rows t (lanes in `keep` stored, rows ld apart) by
 * amsim_split16's shortcut alone, when it holds for every lane: one test per
 * tile instead of a branch per row, and straight-line code that keeps t in
 * registers. Returns 0, the range left alone, when a lane needs the full split
 * (its stores are then overwritten).
 */
static inline __attribute__((always_inline)) int split_tile_normal(const __m512 t[16], int m, int rne,
                                                                __mmask16 keep, float *scale, uint16_t *idx,
                                                                int64_t ld, __m512i *vlo, __m512i *vhi)
{
    __m512i lo = *vlo, hi = *vhi;
    __mmask16 all = 0xFFFF;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
        __m512i i16;
        __mmask16 ok;
        const __m512 sc = amsim_split16_normal(t[i], m, rne, &i16, &ok);
        all &= ok;
        widen_range(sc, 0xFFFF, &lo, &hi);
        _mm512_mask_storeu_ps(scale + i * ld, keep, sc);
        _mm256_mask_storeu_epi16(idx + i * ld, keep, _mm512_cvtepi32_epi16(i16));
    }
    if (all != 0xFFFF)
        return 0;
    *vlo = lo, *vhi = hi;
    return 1;
}
#endif

void amsim_split_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m,
                     int rounding, int64_t kb, float *scale, uint16_t *idx, int64_t r0, int64_t r1,
                     int32_t *range)
{
    /* Rows [r0, r1) only, so that callers can split the work between threads. Rows are read in
     * order (each row's blocks go to kb-wide streams), which keeps the reads sequential. */
    int32_t lo = 255, hi = 0;
    if (kb <= 0)
        kb = cols;
#if AMSIM_AVX512
    if (rs == 1 && cs != 1) {
        /* A transposed view (rows contiguous in memory): split 16 rows of one column at a time,
         * reading memory in order, transpose each 16 x 16 tile in registers and store it by rows
         * (a row's columns in one store per k-block they fall in). */
        __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
        /* Columns in blocks of SPLIT_T_COLS, each swept over all rows: a column is a line of
         * memory, and sweeping every column per 16 rows would touch a page per column each time
         * (TLB misses, which cost more than the split itself on tall operands). */
        for (int64_t cb = 0; cb < cols; cb += SPLIT_T_COLS)
        for (int64_t r = r0; r < r1; r += 16) {
            const int64_t nr = (r1 - r < 16) ? r1 - r : 16;
            const __mmask16 lanes = (__mmask16)(nr == 16 ? 0xFFFFu : ((1u << nr) - 1u));
            const int64_t ce = (cols - cb < SPLIT_T_COLS) ? cols : cb + SPLIT_T_COLS;
            int64_t b0 = cb - cb % kb;
            for (int64_t c0 = cb; c0 < ce; c0 += 16) {
                b0 = block_start(b0, kb, c0);
                const int64_t wc = (ce - c0 < 16) ? ce - c0 : 16;
                const __mmask16 keep = (__mmask16)(0xFFFFu >> (16 - wc));  /* the tile's columns */
                __m512 t[16];
                /* columns past wc repeat column c0: lanes of real values keep amsim_split16 on its
                 * all-normal shortcut (and the range is the same) */
                t[0] = _mm512_maskz_loadu_ps(lanes, x + c0 * cs + r);
                for (int c = 1; c < 16; ++c)
                    t[c] = c < wc ? _mm512_maskz_loadu_ps(lanes, x + (c0 + c) * cs + r) : t[0];
                transpose16(t);  /* t[i]: columns c0.. of row r + i */
                if (kb == cols && nr == 16 &&
                    split_tile_normal(t, m, rounding == AMSIM_RNE, keep, scale + r * cols + c0, idx + r * cols + c0,
                                      cols, &vlo, &vhi))
                    continue;
                for (int64_t i = 0; i < nr; ++i) {
                    __m512i i16;
                    __mmask16 normal;
                    const __m512 sc = amsim_split16(t[i], m, rounding == AMSIM_RNE, &i16, &normal);
                    widen_range(sc, normal, &vlo, &vhi);
                    if (kb == cols) {  /* row-major */
                        _mm512_mask_storeu_ps(scale + (r + i) * cols + c0, keep, sc);
                        _mm256_mask_storeu_epi16(idx + (r + i) * cols + c0, keep, _mm512_cvtepi32_epi16(i16));
                    } else {
                        store_row_segments(scale, idx, rows, cols, kb, r + i, c0, b0, wc, sc, i16);
                    }
                }
            }
        }
        lo = _mm512_reduce_min_epi32(vlo);
        hi = _mm512_reduce_max_epi32(vhi);
        r0 = r1;
    }
#endif
#if AMSIM_AVX512
    /* Exponent range kept in vectors across the rows, reduced once at the end. */
    __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
    if (cs == 1 && rs == cols && kb == cols) {
        /* rows that follow each other, to a row-major result: one flat run, 16 lanes at a time
         * whatever the row length */
        const int64_t base = r0 * cols;
        if (rounding == AMSIM_RNE)
            split_flat(x + base, (r1 - r0) * cols, m, 1, scale + base, idx + base, &vlo, &vhi);
        else
            split_flat(x + base, (r1 - r0) * cols, m, 0, scale + base, idx + base, &vlo, &vhi);
        r0 = r1;
    } else if (cs == 1) {
        /* contiguous rows to k-blocks. Row by row, every row's pieces would go to a block of their
         * own, rows * kb elements apart: a power-of-two stride that maps them all to the same few
         * cache sets. So a group of rows (small enough to stay in cache) is split block by
         * block instead, writing each block's part in order, with whole blocks of 4, 8 or 16
         * columns packed 4, 2 or 1 rows to a vector. */
        const int64_t group = 65536 / (cols > 16 ? cols : 16) / 4 * 4 + 4;
        for (int64_t g = r0; g < r1; g += group) {
            const int64_t ge = (r1 - g < group) ? r1 : g + group;
            for (int64_t b0 = 0; b0 < cols; b0 += kb) {
                const int64_t w = (cols - b0 < kb) ? cols - b0 : kb;
                if (rounding == AMSIM_RNE)
                    split_block(x, rs, g, ge, b0, w, m, 1, scale + b0 * rows, idx + b0 * rows, &vlo, &vhi);
                else
                    split_block(x, rs, g, ge, b0, w, m, 0, scale + b0 * rows, idx + b0 * rows, &vlo, &vhi);
            }
        }
        r0 = r1;
    }
#endif
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c0 = 0; c0 < cols; c0 += kb) {
            const int64_t w = (cols - c0 < kb) ? cols - c0 : kb;
            const float *xr = x + r * rs + c0 * cs;
            split_row(xr, cs, w, m, rounding == AMSIM_RNE, scale + c0 * rows + r * w, idx + c0 * rows + r * w,
                      &lo, &hi);
        }
    }
#if AMSIM_AVX512
    const int32_t vl = _mm512_reduce_min_epi32(vlo), vh = _mm512_reduce_max_epi32(vhi);
    lo = vl < lo ? vl : lo;
    hi = vh > hi ? vh : hi;
#endif
    range[0] = lo;
    range[1] = hi;
}

/*
 * The exponent range amsim_split_f32 would report for rows [r0, r1), without
 * storing the split: the window test of a GEMM whose kernel splits X as it goes.
 */
void amsim_range_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m, int rounding,
                     int64_t r0, int64_t r1, int32_t *range)
{
    (void)rows;
    int32_t lo = 255, hi = 0;
#if AMSIM_AVX512
    if (cs == 1 || rs == 1) {  /* runs contiguous in memory: a row, or a column of a transposed view */
        const int64_t runs = cs == 1 ? r1 - r0 : cols, len = cs == 1 ? cols : r1 - r0;
        const int64_t step = cs == 1 ? rs : cs;
        const float *first = x + r0 * rs;
        __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi), i16;
        __mmask16 normal;
        for (int64_t run = 0; run < runs; ++run) {
            const float *xr = first + run * step;
            for (int64_t e = 0; e < len; e += 16) {
                const __mmask16 lanes = (__mmask16)(len - e >= 16 ? 0xFFFFu : ((1u << (len - e)) - 1u));
                const __m512 sc = amsim_split16(_mm512_maskz_loadu_ps(lanes, xr + e), m, rounding == AMSIM_RNE,
                                                &i16, &normal);
                widen_range(sc, normal & lanes, &vlo, &vhi);
            }
        }
        range[0] = _mm512_reduce_min_epi32(vlo);
        range[1] = _mm512_reduce_max_epi32(vhi);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            uint32_t i;
            const int32_t e = (int32_t)((amsim_f2u(amsim_split(x[r * rs + c * cs], m, rounding, &i)) >> 23) & 0xFFu);
            if (e != 0 && e != 255) {
                lo = e < lo ? e : lo;
                hi = e > hi ? e : hi;
            }
        }
    range[0] = lo;
    range[1] = hi;
}


/* Scales and indices of X's rows [rb, re), columns [kb, kb + kn): from row rb, element
 * (rb + r, kb + kk) at r * ldr + kk * ldk. Returns -1 when out of memory. */
static int x_block(const struct x_operand *xo, int64_t M, int64_t K, int m, int64_t rb, int64_t re, int64_t kb,
                   int kn, const float **as, const uint16_t **ap, int64_t *ldr, int64_t *ldk)
{
    if (!xo->x) {
        const int64_t base = xo->xkb ? kb * M + rb * kn : rb * K + kb;
        *as = xo->sx + base;
        *ap = xo->px + base;
        *ldr = xo->xkb ? kn : K;
        *ldk = 1;
        return 0;
    }
    const int64_t n = re - rb;
    float *bs = work_buffer(SLOT_XBS, sizeof(float) * (size_t)(n * kn));
    uint16_t *bi = work_buffer(SLOT_XBI, sizeof(uint16_t) * (size_t)(n * kn));
    if (!bs || !bi)
        return -1;
    int32_t unused[2];
    const float *at = xo->x + rb * xo->rs + kb * xo->cs;
    if (xo->cs == 1) {  /* rows contiguous: the block row by row */
        amsim_split_f32(at, n, kn, xo->rs, 1, m, xo->rounding, 0, bs, bi, 0, n, unused);
        *ldr = kn, *ldk = 1;
    } else {            /* columns contiguous (a transposed view), or neither: column by column */
        amsim_split_f32(at, kn, n, xo->cs, xo->rs, m, xo->rounding, 0, bs, bi, 0, kn, unused);
        *ldr = 1, *ldk = n;
    }
    *as = bs;
    *ap = bi;
    return 0;
}
