/* @amsim
 * name: mitchell
 * kind: int
 * bits: 2..32
 * signed: no
 * description: Mitchell's logarithmic multiplier: add the linear log approximations k + x, take the antilog linearly
 * citation: J. N. Mitchell, "Computer Multiplication and Division Using Binary Logarithms", IRE Transactions
 *   on Electronic Computers, vol. EC-11, no. 4, pp. 512-517, 1962.
 * properties: commutative, zero, one, monotone, no-overestimate
 * max_rel_error: 1/9
 * mean_rel_error: 0.03849
 * bias_within: 0.03849
 * mean_abs_error: 606.4 bits=8
 * error_probability: 61009/65536 bits=8
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 8
#endif

/*
 * v = 2^k (1 + x) with x held exactly in F = n - 1 fraction bits.  The
 * result (2^F + f) 2^e / 2^F is an exact integer: f has at most
 * max(k1, k2) <= e significant fraction bits.  Never overestimates.
 */
uint64_t mitchell(uint64_t a, uint64_t b)
{
    const int F = AMSIM_BITS - 1;
    const uint64_t one = 1ull << F;
    int k1, k2, e;
    uint64_t x1, x2, s, m;

    a &= amsim_low_mask(AMSIM_BITS);     /* operands are n-bit */
    b &= amsim_low_mask(AMSIM_BITS);
    if (a == 0 || b == 0)
        return 0;
    k1 = amsim_log_fixed(a, F, &x1);
    k2 = amsim_log_fixed(b, F, &x2);

    s = x1 + x2;
    e = k1 + k2;
    if (s < one) {
        m = one + s;                     /* 2^e (1 + s) */
    } else {
        m = s;                           /* 2^(e+1) (1 + (s - 1)) = 2^(e+1) s */
        e += 1;
    }
    return amsim_scale_floor(m, e - F);
}
