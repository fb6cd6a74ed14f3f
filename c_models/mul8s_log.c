/* @amsim
 * name: mul8s_log
 * kind: int
 * description: Signed 8 x 8-bit Mitchell logarithmic multiplier: Mitchell's product of the magnitudes, then the sign
 * citation: J. N. Mitchell, "Computer Multiplication and Division Using Binary Logarithms", IRE Transactions
 *   on Electronic Computers, vol. EC-11, no. 4, pp. 512-517, 1962 (in sign-magnitude form).
 * properties: commutative, zero, one, monotone, sign-symmetric, no-overestimate
 * max_abs_error: 1024
 * max_rel_error: 1/9
 * mean_rel_error: 0.03700
 * bias_within: 0.03700
 * mean_abs_error: 151.4
 * error_probability: 57600/65536
 */
#include <amsim_model.h>

/*
 * |a|, |b| <= 2^7 are 8-bit magnitudes, v = 2^k (1 + x) with x exact in F = 7 fraction bits.
 * With s = x1 + x2 the magnitude is 2^(k1+k2) (1 + s) for s < 1, else 2^(k1+k2+1) s: an exact
 * integer never above |a b|, so the product never grows in magnitude and keeps its sign.
 */
int16_t mul8s_log(int8_t a, int8_t b)
{
    const int F = 7;
    const uint64_t one = 1ull << F;
    const uint64_t ma = (uint64_t)(a < 0 ? -(int)a : a), mb = (uint64_t)(b < 0 ? -(int)b : b);
    uint64_t x1, x2, s, m;
    int e;

    if (ma == 0 || mb == 0)
        return 0;
    e = amsim_log_fixed(ma, F, &x1) + amsim_log_fixed(mb, F, &x2);
    s = x1 + x2;
    if (s < one) {
        m = one + s;
    } else {
        m = s;
        e += 1;
    }
    m = amsim_scale_floor(m, e - F);     /* <= 2^14 */
    return (int16_t)((a < 0) != (b < 0) ? -(int64_t)m : (int64_t)m);
}
