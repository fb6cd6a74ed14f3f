/*
 * amsim_model.h -- shared helpers for amsim C multiplier models.
 *
 * A float model receives full float32 operands.  It splits each operand into
 * sign, unbiased exponent and an M-bit mantissa index (the low 23 - M fraction
 * bits are truncated), computes the significand product of (1 + i/2^M) and
 * (1 + j/2^M) with its own rule, and composes the result
 *
 *     sign(a) ^ sign(b)  *  2^(ea + eb)  *  significand_product
 *
 * following the numerics contract (docs/numerics.md section 2, truncate rounding):
 *   - zero and subnormal operands are zero (DAZ): the result is a signed zero
 *     unless the other operand is inf or NaN;
 *   - NaN anywhere, or 0 * inf, gives NaN; inf * (nonzero or inf) gives +-inf;
 *   - a result of magnitude >= 2^128 is +-inf, one below the smallest normal
 *     float32 (2^-126) is +-0; subnormal results are never produced.
 *
 * Integer models may use the small bit helpers at the end (amsim_msb64,
 * amsim_scale_floor).
 *
 * Only C99, <stdint.h> and <string.h> are used (no libm to link), so that a
 * model compiles with any C compiler, standalone or through the amsim loader.
 */
#ifndef AMSIM_MODEL_H
#define AMSIM_MODEL_H

#include <stdint.h>
#include <string.h>

/** Class of a float32 operand after DAZ. */
enum amsim_fp_class {
    AMSIM_FP_ZERO = 0,   /* +-0 or subnormal (flushed) */
    AMSIM_FP_NORMAL = 1,
    AMSIM_FP_INF = 2,
    AMSIM_FP_NAN = 3
};

/** A float32 operand split for an M-bit mantissa multiplier. */
typedef struct {
    uint32_t sign;      /* 0 or 1 */
    int32_t exp;        /* unbiased exponent, meaningful for normal operands */
    uint32_t mant;      /* the top M fraction bits, i in [0, 2^M) */
    int cls;            /* enum amsim_fp_class */
} amsim_fp_parts;

/** Signature of a significand-product rule: (i, j, M) -> value in [0, 8). */
typedef double (*amsim_sig_fn)(uint32_t i, uint32_t j, int M);

static inline uint32_t amsim_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float amsim_f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/** 2^e as a double, exactly, for e in [-1022, 1023]. */
static inline double amsim_pow2(int e)
{
    uint64_t u = (uint64_t)(e + 1023) << 52;
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/** x * 2^e; exact whenever the result is a normal double (ldexp without libm). */
static inline double amsim_ldexp(double x, int e)
{
    return x * amsim_pow2(e);
}

/**
 * Split a float32 into sign, unbiased exponent and M-bit truncated mantissa.
 *
 * Parameters: x, the operand; M, mantissa fraction bits kept (1..23);
 * p, receives the parts.  Returns p->cls.
 */
static inline int amsim_fp_split(float x, int M, amsim_fp_parts *p)
{
    uint32_t u = amsim_f32_bits(x);
    uint32_t e = (u >> 23) & 0xFFu;
    uint32_t frac = u & 0x7FFFFFu;

    p->sign = u >> 31;
    p->exp = (int32_t)e - 127;
    p->mant = frac >> (23 - M);          /* truncate: drop the low 23 - M bits */
    if (e == 0)
        p->cls = AMSIM_FP_ZERO;          /* subnormals flushed to zero (DAZ) */
    else if (e == 0xFFu)
        p->cls = frac ? AMSIM_FP_NAN : AMSIM_FP_INF;
    else
        p->cls = AMSIM_FP_NORMAL;
    return p->cls;
}

/** The canonical quiet NaN, so every backend returns the same bits. */
static inline float amsim_fp_nan(void)
{
    return amsim_f32_from_bits(0x7FC00000u);
}

/** A signed zero or infinity. */
static inline float amsim_fp_signed_zero(uint32_t sign)
{
    return amsim_f32_from_bits(sign << 31);
}

static inline float amsim_fp_signed_inf(uint32_t sign)
{
    return amsim_f32_from_bits((sign << 31) | 0x7F800000u);
}

/**
 * Compose (-1)^sign * 2^exp * sig as a float32.
 *
 * Parameters: sign, 0 or 1; exp, ea + eb (unbiased, in [-252, 254]);
 * sig, the significand product, a nonnegative double below 8.
 *
 * sig is first rounded to float32, as a float32 LUT entry holding it would
 * be (a no-op for products of at most 24 significant bits, i.e. every model
 * whose product fits M + 1 bits); the model and its LUT thus agree at every
 * range edge.  The scaling by 2^exp is exact in double, so the range checks
 * see the true value and the final conversion to float is exact.
 */
static inline float amsim_fp_compose(uint32_t sign, int exp, double sig)
{
    double v = amsim_ldexp((double)(float)sig, exp);

    if (v >= 0x1p128)
        return amsim_fp_signed_inf(sign);
    if (v < 0x1p-126)                    /* includes sig == 0: flush to zero */
        return amsim_fp_signed_zero(sign);
    return sign ? -(float)v : (float)v;
}

/**
 * Multiply two float32 values with an M-bit significand-product rule.
 *
 * Parameters: a, b, the operands (A is the left GEMM operand: the rule is
 * called as sig(i_a, i_b, M) and need not be symmetric); M, kept mantissa
 * bits; sig, the rule.  Handles the special operands of docs/numerics.md 2.2.
 */
static inline float amsim_fp_mul(float a, float b, int M, amsim_sig_fn sig)
{
    amsim_fp_parts pa, pb;
    uint32_t sign;

    amsim_fp_split(a, M, &pa);
    amsim_fp_split(b, M, &pb);
    sign = pa.sign ^ pb.sign;

    if (pa.cls == AMSIM_FP_NAN || pb.cls == AMSIM_FP_NAN)
        return amsim_fp_nan();
    if (pa.cls == AMSIM_FP_INF || pb.cls == AMSIM_FP_INF) {
        if (pa.cls == AMSIM_FP_ZERO || pb.cls == AMSIM_FP_ZERO)
            return amsim_fp_nan();       /* 0 * inf */
        return amsim_fp_signed_inf(sign);
    }
    if (pa.cls == AMSIM_FP_ZERO || pb.cls == AMSIM_FP_ZERO)
        return amsim_fp_signed_zero(sign);
    return amsim_fp_compose(sign, pa.exp + pb.exp, sig(pa.mant, pb.mant, M));
}

/* ---- helpers for integer models ------------------------------------- */

/** Index of the leading one of v (v > 0). */
static inline int amsim_msb64(uint64_t v)
{
#if defined(__GNUC__) || defined(__clang__)
    return 63 - __builtin_clzll(v);
#else
    int k = 0;
    if (v >> 32) { v >>= 32; k += 32; }
    if (v >> 16) { v >>= 16; k += 16; }
    if (v >> 8) { v >>= 8; k += 8; }
    if (v >> 4) { v >>= 4; k += 4; }
    if (v >> 2) { v >>= 2; k += 2; }
    if (v >> 1) { k += 1; }
    return k;
#endif
}

/** The n low bits set (n in 0..64). */
static inline uint64_t amsim_low_mask(int n)
{
    return n >= 64 ? ~0ull : (1ull << n) - 1;
}

/**
 * The binary logarithm of log multipliers: v = 2^k (1 + x) for v >= 1, with
 * the fraction x held exactly as F-bit fixed point in *x; returns k (<= F).
 */
static inline int amsim_log_fixed(uint64_t v, int F, uint64_t *x)
{
    const int k = amsim_msb64(v);
    *x = (v - (1ull << k)) << (F - k);
    return k;
}

/** floor(m * 2^d) for |d| < 64: the exponent scaling of log multipliers. */
static inline uint64_t amsim_scale_floor(uint64_t m, int d)
{
    return d >= 0 ? m << d : m >> -d;
}

#endif /* AMSIM_MODEL_H */
