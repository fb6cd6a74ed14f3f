/* @amsim
 * name: at_mitchell
 * kind: float
 * bits: 1..23
 * approxtrain: MIT
 * description: ApproxTrain's float variant of Mitchell's logarithmic multiplier (reproduces its MIT_M.bin tables bit for bit)
 * citation: J. Gong, H. Saadat, H. Gamaarachchi, H. Javaid, X. S. Hu, S. Parameswaran, "ApproxTrain: Fast
 *   Simulation of Approximate Multipliers for DNN Training and Inference", IEEE Transactions on
 *   Computer-Aided Design of Integrated Circuits and Systems, 2023; after J. N. Mitchell, "Computer
 *   Multiplication and Division Using Binary Logarithms", IRE Transactions on Electronic Computers,
 *   vol. EC-11, no. 4, pp. 512-517, 1962.
 * properties: commutative, one, monotone, no-overestimate
 * max_rel_error: 1/9
 * mean_rel_error: 0.03849
 * bias_within: 0.03849
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 7
#endif

/*
 * Works in the 23-bit float32 fraction field as ApproxTrain does; the rule
 * needs no width-specific constant, so it holds for every M in 1..23.  The
 * result is exactly Mitchell's significand product, 1 + s or, after a carry,
 * 2 (1 + (s - 1)): the shift by carry and the norm shift cancel without loss.
 */
static double at_mitchell_sig(uint32_t i, uint32_t j, int M)
{
    const int sh = 23 - M;
    const uint32_t mask = ((1u << M) - 1) << sh;
    const uint32_t one = 1u << 23;
    uint32_t s = ((i << sh) & mask) + ((j << sh) & mask);
    uint32_t carry = s >= one;
    uint32_t w = (one + (s & (one - 1))) << carry;
    uint32_t norm = w >= (one << 1);
    uint32_t mant;

    if (norm)
        w >>= 1;                         /* truncating */
    mant = (w & 0x7FFFFFu) >> sh;
    return amsim_ldexp((double)((1u << M) + mant), norm - M);
}

float at_mitchell(float a, float b)
{
    return amsim_fp_mul(a, b, AMSIM_BITS, at_mitchell_sig);
}
