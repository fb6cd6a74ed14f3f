/*
 * simd.h -- AVX-512 helpers that several of the engine's files use: a 16 x 16 transpose, the
 * LUT-row lookups (vpermt2ps blend trees; byte planes with AVX512-VBMI) and the bfloat16
 * dot products' operand forms. Included by engine.c's files only (static inline).
 */
#ifndef AMSIM_SIMD_H
#define AMSIM_SIMD_H

#include "engine.h"

#if AMSIM_AVX512
/* Transpose a 16 x 16 tile held as 16 row vectors, in place. */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {   /* per 128-bit lane: a0 b0 a1 b1 | a2 b2 a3 b3 */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {   /* u[i + j], lane L: column 4L + j of rows i..i+3 */
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; ++j) {       /* gather lane L of u[j], u[4 + j], u[8 + j], u[12 + j] */
        const __m512 w1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
        const __m512 w2 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
        const __m512 w3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        const __m512 w4 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_f32x4(w1, w3, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(w1, w3, 0xDD);
        r[4 + j] = _mm512_shuffle_f32x4(w2, w4, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(w2, w4, 0xDD);
    }
}

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

#endif

#if AMSIM_VBMI
/*
 * 64 lookups in one LUT row held as byte planes (AVX512-VBMI): one vpermi2b
 * per plane picks byte b of 64 entries (two, and a blend on index bit 7, for
 * 256-entry rows), and byte and word unpacks reassemble the floats: about
 * half the operations of four vpermt2ps blend trees. The unpacks work within
 * 128-bit lanes, so the indices come permuted (vbmi_indices): output vector g
 * then holds entries 16g .. 16g + 15 in order.
 */
static const uint8_t vbmi_order_bytes[64] = {
    0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51,
    4, 5, 6, 7, 20, 21, 22, 23, 36, 37, 38, 39, 52, 53, 54, 55,
    8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59,
    12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63,
};

/* Up to 64 uint16 indices (n of them; zeros past n) as bytes, in vbmi_lookup64's order. */
static inline __m512i vbmi_indices(const uint16_t *q, int64_t n)
{
    const __mmask32 m0 = (__mmask32)(n >= 32 ? 0xFFFFFFFFu : (uint32_t)((1ull << n) - 1u));
    const __mmask32 m1 = (__mmask32)(n >= 64 ? 0xFFFFFFFFu : n > 32 ? (uint32_t)((1ull << (n - 32)) - 1u) : 0u);
    const __m256i lo = _mm512_cvtepi16_epi8(_mm512_maskz_loadu_epi16(m0, q));
    const __m256i hi = _mm512_cvtepi16_epi8(_mm512_maskz_loadu_epi16(m1, q + 32));
    const __m512i bytes = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    return _mm512_permutexvar_epi8(_mm512_loadu_si512(vbmi_order_bytes), bytes);
}

/* pl: the row's planes, 4 x (2 or, when wide, 4) vectors; q: from vbmi_indices. HI16 (a
 * constant after inlining): planes 0 and 1 are zero; without their lookups, and with the
 * unpacks of zeros folded away, 64 entries take 8 shuffles instead of 12. */
static inline __attribute__((always_inline)) void vbmi_lookup64(int wide, int hi16, const __m512i *pl, __m512i q,
                                                             __m512 out[4])
{
    __m512i b[4] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    const __mmask64 hi = wide ? _mm512_movepi8_mask(q) : 0;
    for (int k = hi16 ? 2 : 0; k < 4; ++k) {
        if (wide)
            b[k] = _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(pl[4 * k], q, pl[4 * k + 1]),
                                          _mm512_permutex2var_epi8(pl[4 * k + 2], q, pl[4 * k + 3]));
        else
            b[k] = _mm512_permutex2var_epi8(pl[2 * k], q, pl[2 * k + 1]);
    }
    const __m512i l01 = _mm512_unpacklo_epi8(b[0], b[1]), h01 = _mm512_unpackhi_epi8(b[0], b[1]);
    const __m512i l23 = _mm512_unpacklo_epi8(b[2], b[3]), h23 = _mm512_unpackhi_epi8(b[2], b[3]);
    out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(l01, l23));
    out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(l01, l23));
    out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(h01, h23));
    out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(h01, h23));
}

#endif

#if AMSIM_DPBF16
/*
 * bfloat16 dot products, for HI16 LUTs inside the dot-product window
 * (amsim_window_dp), in the expand kernel (T in bfloat16: build_panel_dp,
 * sweep_rows_dp) and the lookup kernel (lookup_rows_dp). A product is
 * s_x * (s_y * LUT[i][j]), and for a HI16 LUT both factors are bfloat16 numbers:
 * s_y * LUT[i][j] is the entry's bits plus s_y's sign and exponent (a 16-bit
 * integer add, exact while the result is normal: the window's T condition), and
 * s_x is a power of two, 0, inf or NaN. vdpbf16ps multiplies them exactly and
 * adds two products, k then k + 1, to the float32 sum with one round-to-nearest
 * add each (Intel's definition; tested bit for bit against sequential
 * adds): the order and roundings of the other kernels. It flushes subnormal
 * inputs and results to zero, so the window also keeps every partial sum away
 * from them: a product is a multiple of 2^(e_x + e_y + e_v - 7), and so is every
 * sum of them, hence zero or normal when that exponent is at least -126. A zero
 * s_y becomes a zero factor by masking (the sign of a zero product cannot show:
 * sums start at +0 and round to nearest, so they are never -0); an inf or NaN
 * s_y sends its k-block to the float32 forms (same order, so the same bits). A
 * lookup of 128 products takes 20 vector instructions (four vpermi2b, four byte
 * and four word unpacks, four adds, four dot products) instead of 32; T takes
 * half the bytes and half the instructions to build.
 */
/* Word w of lane l in the unpacks' order holds column 4l + w (w < 4) or 12 + 4l + w (32 columns);
 * index 2c + 1 picks the high half of column c's float32 scale from two vectors of 16. */
static const uint16_t dp_scale_words[32] = {
    1, 3, 5, 7, 33, 35, 37, 39, 9, 11, 13, 15, 41, 43, 45, 47,
    17, 19, 21, 23, 49, 51, 53, 55, 25, 27, 29, 31, 57, 59, 61, 63,
};

/* One k's Y block for the dot-product lookups, 32 columns from sy (n of them; zeros past n): the
 * scales' exponent-and-sign adds d (bfloat16 bits of the scale minus those of 1.0) and the mask of
 * nonzero scales. Returns whether a scale is inf or NaN. */
static inline int dp_scales32(const float *sy, int64_t n, __m512i *d, uint32_t *nonzero)
{
    const __mmask16 m0 = (__mmask16)(n >= 16 ? 0xFFFFu : n > 0 ? (1u << n) - 1u : 0u);
    const __mmask16 m1 = (__mmask16)(n >= 32 ? 0xFFFFu : n > 16 ? (1u << (n - 16)) - 1u : 0u);
    const __m512i lo = _mm512_castps_si512(_mm512_maskz_loadu_ps(m0, sy));
    const __m512i hi = _mm512_castps_si512(_mm512_maskz_loadu_ps(m1, sy + 16));
    const __m512i w = _mm512_permutex2var_epi16(lo, _mm512_loadu_si512(dp_scale_words), hi);
    const __m512i exp = _mm512_set1_epi16(0x7F80);
    *d = _mm512_sub_epi16(w, _mm512_set1_epi16(0x3F80));
    *nonzero = (uint32_t)_mm512_test_epi16_mask(w, exp);
    return _mm512_cmpeq_epi16_mask(_mm512_and_si512(w, exp), exp) != 0;
}

/* A scale as bfloat16 (exact for sign * 2^e, 0 and inf), NaNs kept NaN. */
static inline uint32_t scale_bf16(float s)
{
    const uint32_t u = amsim_f2u(s);
    return (u >> 16) | ((uint32_t)((u & 0x7FFFFFFFu) > 0x7F800000u) << 6);
}

/* X's scales at k (s[0]) and k + 1 (s[next]) as a bfloat16 pair in every dword, k in the high
 * half: vdpbf16ps adds the high product first. Without k + 1 (two = 0) the pair's second
 * scale is zero, so its product adds nothing. */
static inline __m512bh scale_pair(const float *s, int64_t next, int two)
{
    const uint32_t s0 = scale_bf16(s[0]), s1 = two ? scale_bf16(s[next]) : 0;
    return (__m512bh)_mm512_set1_epi32((int)(s0 << 16 | s1));
}

/* LUT row p's planes 2 and 3 (the bfloat16 bytes) as four vectors: a HI16 row at M <= 7 is
 * 4 planes x 2 vectors of 64 bytes. */
static inline __attribute__((always_inline)) void hi16_planes(const uint8_t *planes, int64_t p, __m512i pl[4])
{
    const uint8_t *row = planes + p * 512 + 256;
    for (int w = 0; w < 4; ++w)
        pl[w] = _mm512_load_si512(row + 64 * w);
}

/* 64 entries of a row (hi16_planes) as bfloat16, scaled and masked by d and nz (dp_scales32):
 * out[h] holds entries 32h .. 32h + 31 in the byte unpacks' order (HALVES of them, 1 or 2, a
 * constant after inlining). Two vpermi2b, and per half one unpack and one add. */
static inline __attribute__((always_inline)) void dp_lookup64(int halves, const __m512i pl[4], __m512i q,
                                                           const __m512i *d, const uint32_t *nz, __m512i *out)
{
    const __m512i b2 = _mm512_permutex2var_epi8(pl[0], q, pl[1]);
    const __m512i b3 = _mm512_permutex2var_epi8(pl[2], q, pl[3]);
    out[0] = _mm512_maskz_add_epi16(nz[0], _mm512_unpacklo_epi8(b2, b3), d[0]);
    if (halves == 2)
        out[1] = _mm512_maskz_add_epi16(nz[1], _mm512_unpackhi_epi8(b2, b3), d[1]);
}

#endif

#endif /* AMSIM_SIMD_H */
