/* @amsim
 * name: exact
 * kind: float
 * bits: 1..23
 * description: Exact product of the two M-bit significands, kept in full (the reference for float models)
 * citation: IEEE Standard for Floating-Point Arithmetic, IEEE Std 754-2019 (exact significand product
 *   of operands truncated to M fraction bits, without rounding of the product).
 * cost: power=1.0 area=1.0 delay=1.0 node="any" source="by definition (the exact multiplier)"
 * properties: commutative, one, monotone
 * properties: no-overestimate bits=1..11
 * max_rel_error: 1/16777216
 * max_rel_error: 0 bits=1..11
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 7
#endif

/*
 * (2^M + i)(2^M + j) / 2^(2M), computed exactly in double (at most 48
 * significant bits).  It has at most 2M + 2 significant bits, so it is exact
 * in float32 for M <= 11; for larger M amsim_fp_compose rounds it to the
 * nearest float32 (ties to even), exactly as a float32 LUT entry would hold it.
 */
static double exact_sig(uint32_t i, uint32_t j, int M)
{
    uint64_t p = ((1ull << M) + i) * ((1ull << M) + j);
    return amsim_ldexp((double)p, -2 * M);
}

float exact(float a, float b)
{
    return amsim_fp_mul(a, b, AMSIM_BITS, exact_sig);
}
