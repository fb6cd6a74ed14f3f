/*
 * amsim_product.h -- the one definition of an approximate float32 product.
 *
 * Shared by the CPU GEMM engine (amsim/csrc/cpu/) and the CUDA kernels
 * (amsim/csrc/cuda/gemm_cuda.cu); docs/numerics.md section 2 is the contract and
 * amsim/reference.py its plain numpy oracle, against which the tests compare
 * these kernels bit for bit.
 *
 * An operand is split once into a *scale* and a mantissa index:
 *     x = scale * (1 + idx / 2^M)
 * where scale is the float sign * 2^e (exactly representable), +-0 for zero
 * and subnormal operands (DAZ), +-inf for inf (and for an rne carry past the
 * largest finite number) and NaN for NaN. The product of two split operands is
 *     scale_a * scale_b * LUT[idx_a][idx_b]
 * with the special cases and the normal-range rules of section 2.
 *
 * Every product in the normal range is exact (a power of two times a float32
 * LUT entry), so contracting a product with the following addition into a
 * fused multiply-add cannot change the result: fma(s, t, c) rounds
 * s * t + c once, and s * t has no rounding to lose.
 */
#ifndef AMSIM_PRODUCT_H
#define AMSIM_PRODUCT_H

#include <stdint.h>
#include <string.h>

#include "amsim_gemm.h"  /* enum amsim_rounding, enum amsim_mode */

#ifdef __CUDACC__
#define AMSIM_HD __host__ __device__ __forceinline__
#else
#define AMSIM_HD static inline
#endif


AMSIM_HD uint32_t amsim_f2u(float x)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}

AMSIM_HD float amsim_u2f(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}

/*
 * Split x for an M-bit mantissa multiplier (numerics.md 2.1).
 * truncate: drop the low 23 - M fraction bits.
 * rne: round to nearest, ties to even; a carry out of the mantissa increments
 * the exponent, and a carry past the largest exponent gives +-inf.
 * Written without branches (rne is a constant after inlining) so that
 * compilers vectorise loops over it.
 */
AMSIM_HD float amsim_split_impl(float x, int m, int rne, uint32_t *idx)
{
    const uint32_t u = amsim_f2u(x);
    const uint32_t sign = u & 0x80000000u;
    const uint32_t e = (u >> 23) & 0xFFu;
    const uint32_t frac = u & 0x7FFFFFu;
    const int s = 23 - m;
    uint32_t keep = frac >> s;
    if (rne && s > 0) {
        const uint32_t rem = frac & ((1u << s) - 1u);
        const uint32_t half = 1u << (s - 1);
        keep += (uint32_t)(rem > half) | ((uint32_t)(rem == half) & keep & 1u);
    }
    const uint32_t carry = keep >> m;             /* rne carried out of the mantissa */
    const uint32_t normal = (uint32_t)(e != 0) & (uint32_t)(e != 0xFFu);
    /* e + carry == 255 encodes +-inf: rounding past FLT_MAX. */
    const uint32_t scale = normal ? (sign | ((e + carry) << 23)) : (e == 0 ? sign : u);
    *idx = normal ? (keep & ((1u << m) - 1u)) : 0u;
    return amsim_u2f(scale);
}

AMSIM_HD float amsim_split(float x, int m, int rounding, uint32_t *idx)
{
    return rounding == AMSIM_RNE ? amsim_split_impl(x, m, 1, idx) : amsim_split_impl(x, m, 0, idx);
}

#if defined(__AVX512F__) && !defined(__CUDACC__) && !defined(AMSIM_PORTABLE)
#include <immintrin.h>
/*
 * The bits of 16 operands u rounded to M mantissa bits for amsim_split16's
 * shortcut: for a normal operand that stays normal, rounding is an integer add
 * of (half - 1 + the kept lsb) whose carry runs into the exponent, and the
 * scale and index are bit fields of the sum (truncation: u itself).
 */
static inline __m512i amsim_round16(__m512i u, int m, int rne)
{
    const int s = 23 - m;
    const __m512i lsb = _mm512_and_si512(_mm512_srl_epi32(u, _mm_cvtsi32_si128(s)), _mm512_set1_epi32(1));
    return rne && s > 0 ? _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32((int)((1u << (s - 1)) - 1u))))
                        : u;
}

/*
 * amsim_split16's shortcut, right in the lanes of *ok (those normal before and
 * after rounding, amsim_round16).
 */
static inline __m512 amsim_split16_normal(__m512 x, int m, int rne, __m512i *idx, __mmask16 *ok)
{
    const __m512i u = _mm512_castps_si512(x);
    const int s = 23 - m;
    const __m512i v = amsim_round16(u, m, rne);
    const __m512i one = _mm512_set1_epi32(1), ff = _mm512_set1_epi32(0xFF), top = _mm512_set1_epi32(254);
    const __m512i e0 = _mm512_and_si512(_mm512_srli_epi32(u, 23), ff);
    const __m512i e1 = _mm512_and_si512(_mm512_srli_epi32(v, 23), ff);
    *ok = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(e0, one), top) &
          _mm512_cmplt_epu32_mask(_mm512_sub_epi32(e1, one), top);
    *idx = _mm512_and_si512(_mm512_srl_epi32(v, _mm_cvtsi32_si128(s)), _mm512_set1_epi32((int)((1u << m) - 1u)));
    return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFF800000u)));
}

/*
 * amsim_split_impl on 16 lanes at once (AVX-512; the same arithmetic, step by
 * step). Returns the scales; *idx receives the mantissa indices and *normal
 * the lanes whose scale is a normal number.
 */
static inline __m512 amsim_split16(__m512 x, int m, int rne, __m512i *idx, __mmask16 *normal)
{
    const __m512i u = _mm512_castps_si512(x);
    {
        __mmask16 ok;
        const __m512 scale = amsim_split16_normal(x, m, rne, idx, &ok);
        if (ok == 0xFFFF) {
            *normal = 0xFFFF;
            return scale;
        }
    }
    const __m512i sign = _mm512_and_si512(u, _mm512_set1_epi32((int)0x80000000u));
    const __m512i e = _mm512_and_si512(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(0xFF));
    const __m512i frac = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFF));
    const int s = 23 - m;
    __m512i keep = _mm512_srl_epi32(frac, _mm_cvtsi32_si128(s));
    if (rne && s > 0) {
        const __m512i rem = _mm512_and_si512(frac, _mm512_set1_epi32((int)((1u << s) - 1u)));
        const __m512i half = _mm512_set1_epi32((int)(1u << (s - 1)));
        const __mmask16 gt = _mm512_cmpgt_epu32_mask(rem, half);
        const __mmask16 tie_odd = _mm512_cmpeq_epi32_mask(rem, half) &
                                  _mm512_test_epi32_mask(keep, _mm512_set1_epi32(1));
        keep = _mm512_mask_add_epi32(keep, gt | tie_odd, keep, _mm512_set1_epi32(1));
    }
    const __m512i carry = _mm512_srl_epi32(keep, _mm_cvtsi32_si128(m));
    const __mmask16 is_zero = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
    const __mmask16 is_norm = ~is_zero & _mm512_cmpneq_epi32_mask(e, _mm512_set1_epi32(0xFF));
    const __m512i norm_scale = _mm512_or_si512(sign, _mm512_slli_epi32(_mm512_add_epi32(e, carry), 23));
    __m512i scale = _mm512_mask_mov_epi32(u, is_zero, sign);
    scale = _mm512_mask_mov_epi32(scale, is_norm, norm_scale);
    *idx = _mm512_maskz_and_epi32(is_norm, keep, _mm512_set1_epi32((int)((1u << m) - 1u)));
    /* a carry into exponent 255 made the scale +-inf: not normal any more */
    const __m512i se = _mm512_and_si512(_mm512_srli_epi32(scale, 23), _mm512_set1_epi32(0xFF));
    *normal = is_norm & _mm512_cmpneq_epi32_mask(se, _mm512_set1_epi32(0xFF));
    return _mm512_castsi512_ps(scale);
}
#endif

/* True when the scale stands for a normal operand (not zero, inf or NaN). */
AMSIM_HD int amsim_scale_is_normal(float scale)
{
    const uint32_t e = (amsim_f2u(scale) >> 23) & 0xFFu;
    return e != 0 && e != 0xFFu;
}

/*
 * v * 2^k for a float32 v and an integer k, with numerics.md 2.3's range rules:
 * magnitude >= 2^128 gives +-inf, below 2^-126 gives +-0 (never subnormal).
 * Exact in the normal range.
 */
AMSIM_HD float amsim_scale_pow2(float v, int k)
{
    const uint32_t u = amsim_f2u(v);
    const uint32_t sign = u & 0x80000000u;
    int e = (int)((u >> 23) & 0xFFu);
    uint32_t mant = u & 0x7FFFFFu;
    if (e == 0xFF)
        return v;
    if (e == 0) {                     /* zero, or a subnormal LUT entry: normalise it first */
        if (mant == 0)
            return v;
        e = 1;
        while (!(mant & 0x800000u)) {
            mant <<= 1;
            e -= 1;
        }
        mant &= 0x7FFFFFu;
    }
    e += k;
    if (e >= 0xFF)
        return amsim_u2f(sign | 0x7F800000u);
    if (e <= 0)
        return amsim_u2f(sign);
    return amsim_u2f(sign | ((uint32_t)e << 23) | mant);
}

/*
 * The approximate product of two split operands (numerics.md 2.2-2.4).
 * v is the significand product LUT[idx_a][idx_b] (looked up by the caller, or
 * computed by a model), only used when both operands are normal.
 */
AMSIM_HD float amsim_mul_split(float sa, float sb, float v, int mode)
{
    const uint32_t ua = amsim_f2u(sa), ub = amsim_f2u(sb);
    const uint32_t ea = (ua >> 23) & 0xFFu, eb = (ub >> 23) & 0xFFu;
    const uint32_t sign = (ua ^ ub) & 0x80000000u;
    const int a_nan = ea == 0xFFu && (ua & 0x7FFFFFu), b_nan = eb == 0xFFu && (ub & 0x7FFFFFu);
    if (a_nan || b_nan)
        return amsim_u2f(0x7FC00000u);
    if (ea == 0xFFu || eb == 0xFFu) {                 /* inf x (0 | finite | inf) */
        if (ea == 0 || eb == 0)
            return amsim_u2f(0x7FC00000u);           /* 0 x inf */
        return amsim_u2f(sign | 0x7F800000u);
    }
    if (ea == 0 || eb == 0)
        return amsim_u2f(sign);                       /* signed zero */
    if (mode == AMSIM_MODE_APPROXTRAIN && ea + eb <= 127u)
        return 0.0f;                                  /* ApproxTrain: +0, sign lost */
    /* scales are +-2^(e - 127): the product is v * 2^(ea + eb - 254), sign applied after */
    const float r = amsim_scale_pow2(v, (int)ea + (int)eb - 254);
    return amsim_u2f(amsim_f2u(r) ^ sign);
}

/*
 * The fast kernels' exactness window. They compute a product as s_x * T with
 * T = s_y * LUT[i][j] (two float32 multiplications, with fused adds): that
 * equals amsim_mul_split bit for bit when T and every product are normal
 * float32 numbers, which holds for all operand pairs when
 *     e_y + e_v         in [-126, 127]   (T)
 *     e_x + e_y + e_v   in [-126, 127]   (the product)
 * for the unbiased exponents of every normal operand scale (e_x, e_y) and LUT
 * entry (e_v; entries positive and finite). Zero, inf and NaN scales then
 * propagate through the two multiplications as section 2.2 says. Arguments
 * are biased exponent ranges [lo, hi] (lo > hi: the operand has no normal
 * scale). ApproxTrain's mode also needs E_x + E_y > 127, where its +0 rule
 * never bites.
 */
AMSIM_HD int amsim_window_exact(int x_lo, int x_hi, int y_lo, int y_hi, int v_lo, int v_hi, int mode)
{
    if (x_lo > x_hi || y_lo > y_hi)
        return 1;
    const int ok = y_lo + v_lo - 254 >= -126 && y_hi + v_hi - 254 <= 127 &&
                   x_lo + y_lo + v_lo - 381 >= -126 && x_hi + y_hi + v_hi - 381 <= 127;
    return ok && (mode != AMSIM_MODE_APPROXTRAIN || x_lo + y_lo > 127);
}

#endif /* AMSIM_PRODUCT_H */
