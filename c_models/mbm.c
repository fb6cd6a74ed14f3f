/* @amsim
 * name: mbm
 * kind: int
 * bits: 2..32
 * signed: no
 * param: t default=0 range=0..31 "operand fraction bits truncated (MBM-t); 0 = none, clamped to n - 1"
 * description: Minimally biased multiplier: Mitchell plus the constant 0.078125 before the antilog, near-zero mean error
 * citation: H. Saadat, H. Bokhari, S. Parameswaran, "Minimally Biased Multipliers for Approximate Integer and
 *   Floating-Point Multiplication", IEEE Transactions on Computer-Aided Design of Integrated Circuits and
 *   Systems, vol. 37, no. 11, pp. 2623-2635, 2018.
 * cost: power=0.61 area=0.65 delay= node="TSMC 45 nm" source="Saadat et al., IEEE TCAD 2018" bits=8 t=0
 * cost: power=0.26 area=0.36 delay= node="TSMC 45 nm" source="Saadat et al., IEEE TCAD 2018" bits=16 t=0
 * cost: power=0.157 area=0.25 delay= node="TSMC 45 nm" source="Saadat et al., IEEE TCAD 2018" bits=16 t=8
 * properties: commutative, zero
 * max_rel_error: 1/9 t=0
 * mean_rel_error: 0.0259 bits=16 t=0
 * bias_within: 0.001 bits=16 t=0
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 8
#endif
#ifndef T
#define T 0
#endif

/*
 * Fractions are F = n - 1 bit fixed point, x = (v - 2^k) << (F - k).
 *
 * Truncation t: zero the t low fraction bits and force bit t (the lowest
 * kept bit, standing for the average of the dropped ones) to 1.  t = 0 is
 * plain MBM: nothing is dropped, so nothing is forced.  t >= n is clamped to
 * t = F = n - 1: every fraction bit is dropped and the lowest kept bit is
 * the leading one itself, so x = 0.
 *
 * The constant c = 0.0001010b = 5/64 is c_f = floor(5 2^F / 64) and c/2 is
 * floor(5 2^F / 128): exact for F >= 7 (n >= 8); for n < 8 the low bits of
 * the constant are floored away (c = 0 for n <= 4, c/2 = 0 for n <= 5).
 *
 * The result 2^e (1 + f) is floored to an integer; products with small
 * k1 + k2 lose (part of) the correction there, as the paper notes.
 */
uint64_t mbm(uint64_t a, uint64_t b)
{
    const int F = AMSIM_BITS - 1;
    const int t = T < F ? T : F;
    const uint64_t one = 1ull << F;
    const uint64_t c = (5ull << F) >> 6;
    const uint64_t c_half = (5ull << F) >> 7;
    int k1, k2, e;
    uint64_t x1, x2, s, f;

    a &= amsim_low_mask(AMSIM_BITS);     /* operands are n-bit */
    b &= amsim_low_mask(AMSIM_BITS);
    if (a == 0 || b == 0)
        return 0;
    k1 = amsim_log_fixed(a, F, &x1);
    k2 = amsim_log_fixed(b, F, &x2);
    if (t > 0) {
        x1 = (((x1 >> t) << t) | (1ull << t)) & (one - 1);
        x2 = (((x2 >> t) << t) | (1ull << t)) & (one - 1);
    }

    s = x1 + x2;
    e = k1 + k2;
    if (s < one) {
        f = s + c;                       /* may reach >= 1: carries into 2.xxx */
    } else {
        f = (s - one) + c_half;
        e += 1;
        if (f >= one)
            f = s - one;                 /* correction would overflow: dropped */
    }
    return amsim_scale_floor(one + f, e - F);
}
