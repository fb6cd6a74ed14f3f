/* @amsim
 * name: alm_soa
 * kind: int
 * bits: 2..32
 * signed: no
 * param: w default=4 range=0..31 "approximate low bits of the fraction adder (set-one adder); clamped to n - 1"
 * description: Mitchell multiplier whose fraction adder is a set-one adder: w low sum bits forced to 1, carry-in from an AND
 * citation: W. Liu, J. Xu, D. Wang, C. Wang, P. Montuschi, F. Lombardi, "Design and Evaluation of Approximate
 *   Logarithmic Multipliers for Low Power Error-Tolerant Applications", IEEE Transactions on Circuits and
 *   Systems I: Regular Papers, vol. 65, no. 9, pp. 2856-2868, 2018.
 * properties: commutative, zero, monotone
 * properties: one, no-overestimate w=0
 * max_rel_error: 1
 * max_rel_error: 1/9 w=0
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 8
#endif
#ifndef W
#define W 4
#endif

/*
 * Fractions are F = n - 1 bit fixed point as in Mitchell.  The adder drops
 * the w low bits of both addends, takes the carry into bit w as the AND of
 * the addends' bits w - 1, and forces the w low sum bits to 1; w = 0 is
 * Mitchell.  A carry out of the fraction increments the exponent as in
 * Mitchell.  The forced ones can reach below 2^0 of the result, which is
 * then floored to an integer.
 */
uint64_t alm_soa(uint64_t a, uint64_t b)
{
    const int F = AMSIM_BITS - 1;
    const int w = W < F ? W : F;
    const uint64_t one = 1ull << F;
    int k1, k2, e;
    uint64_t x1, x2, cin, s, m;

    a &= amsim_low_mask(AMSIM_BITS);     /* operands are n-bit */
    b &= amsim_low_mask(AMSIM_BITS);
    if (a == 0 || b == 0)
        return 0;
    k1 = amsim_log_fixed(a, F, &x1);
    k2 = amsim_log_fixed(b, F, &x2);

    /* bit w - 1 of x1 & x2, read as bit w of their double: 0 when w = 0 */
    cin = (((x1 & x2) << 1) >> w) & 1;
    s = (((x1 >> w) + (x2 >> w) + cin) << w) | amsim_low_mask(w);
    e = k1 + k2;
    if (s < one) {
        m = one + s;
    } else {
        m = s;                           /* carry out: 2^(e+1) (1 + (s - 1)) */
        e += 1;
    }
    return amsim_scale_floor(m, e - F);
}
