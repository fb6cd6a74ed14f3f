/* @amsim
 * name: at_mbm
 * kind: float
 * bits: 1,3,5,7
 * approxtrain: MBM
 * description: ApproxTrain's float variant of the minimally biased multiplier (reproduces its MBM_M.bin tables bit for bit)
 * citation: J. Gong, H. Saadat, H. Gamaarachchi, H. Javaid, X. S. Hu, S. Parameswaran, "ApproxTrain: Fast
 *   Simulation of Approximate Multipliers for DNN Training and Inference", IEEE Transactions on
 *   Computer-Aided Design of Integrated Circuits and Systems, 2023; after H. Saadat, H. Bokhari,
 *   S. Parameswaran, "Minimally Biased Multipliers for Approximate Integer and Floating-Point
 *   Multiplication", IEEE Transactions on Computer-Aided Design of Integrated Circuits and Systems,
 *   vol. 37, no. 11, pp. 2623-2635, 2018.
 * properties: commutative
 * properties: monotone bits=1..5
 * max_rel_error: 1
 * max_rel_error: 1/4 bits=3..7
 * max_rel_error: 1/8 bits=5..7
 * max_rel_error: 3/32 bits=7
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 7
#endif

/*
 * ApproxTrain defines its correction only for these widths.  Notable
 * consequences of its arithmetic: at M = 7 the forced lowest kept bit makes
 * rows 2k and 2k + 1 equal (only 6 input bits are used), and at M = 1 every
 * pair gives exactly 2.
 */
#if AMSIM_BITS != 1 && AMSIM_BITS != 3 && AMSIM_BITS != 5 && AMSIM_BITS != 7
#error "at_mbm supports M = 1, 3, 5, 7 only (ApproxTrain's MBM tables)"
#endif

/* Everything below works in the 23-bit float32 fraction field. */
static double at_mbm_sig(uint32_t i, uint32_t j, int M)
{
    const int sh = 23 - M;
    const uint32_t mask = ((1u << M) - 1) << sh;
    const uint32_t setbit = 1u << sh;    /* the lowest KEPT bit, not the first dropped */
    const uint32_t one = 1u << 23;
    uint32_t a = ((i << sh) & mask) | setbit;
    uint32_t b = ((j << sh) & mask) | setbit;
    uint32_t s = a + b;
    uint32_t carry = s >= one;
    uint32_t corr, sc, w, norm, mant;

    /* c = 2^-4 + 2^-6 (0xA0000 in the field), halved on carry. */
    if (M == 7)
        corr = 0xA0000u >> carry;
    else if (M == 5)
        corr = (0xA0000u >> carry) & mask;
    else
        corr = 0;
    sc = (s & (one - 1)) + corr;
    if (carry && sc >= one)
        sc = s & (one - 1);              /* the correction would overflow: drop it */
    w = (one + sc) << carry;

    norm = w >= (one << 1);
    if (norm)
        w >>= 1;                         /* truncating */
    mant = (w & 0x7FFFFFu) >> sh;
    return amsim_ldexp((double)((1u << M) + mant), norm - M);
}

float at_mbm(float a, float b)
{
    return amsim_fp_mul(a, b, AMSIM_BITS, at_mbm_sig);
}
