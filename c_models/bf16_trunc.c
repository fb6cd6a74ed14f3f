/* @amsim
 * name: bf16_trunc
 * kind: float
 * bits: 1..23
 * approxtrain: ACC
 * description: Exact significand product truncated to M fraction bits (ApproxTrain's ACC; bfloat16 with truncation at M = 7)
 * citation: J. Gong, H. Saadat, H. Gamaarachchi, H. Javaid, X. S. Hu, S. Parameswaran, "ApproxTrain: Fast
 *   Simulation of Approximate Multipliers for DNN Training and Inference", IEEE Transactions on
 *   Computer-Aided Design of Integrated Circuits and Systems, 2023 (the ACC_7 table).
 * properties: commutative, one, monotone, no-overestimate
 * max_rel_error: 1/9
 * max_rel_error: 1/128 bits=7..23
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 7
#endif

/*
 * P = (2^M + i)(2^M + j) lies in [2^2M, 2^(2M+2)).  When P >= 2^(2M+1) the
 * product is >= 2 and normalises by one bit (norm = 1); the result keeps M
 * fraction bits after normalisation, so M + norm low bits of P are dropped.
 */
static double bf16_trunc_sig(uint32_t i, uint32_t j, int M)
{
    uint64_t p = ((1ull << M) + i) * ((1ull << M) + j);
    int drop = M + (p >= (1ull << (2 * M + 1)));
    uint64_t q = p >> drop;                  /* 1.mantissa in M fraction bits */
    return amsim_ldexp((double)q, drop - 2 * M);
}

float bf16_trunc(float a, float b)
{
    return amsim_fp_mul(a, b, AMSIM_BITS, bf16_trunc_sig);
}
