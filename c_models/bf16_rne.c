/* @amsim
 * name: bf16_rne
 * kind: float
 * bits: 1..23
 * description: Exact significand product rounded to nearest even at M fraction bits (the honest bfloat16 baseline at M = 7)
 * citation: IEEE Standard for Floating-Point Arithmetic, IEEE Std 754-2019 (roundTiesToEven); bfloat16
 *   as in Google's TPU and Intel's BF16 format (M = 7).
 * properties: commutative, one, monotone
 * max_rel_error: 1/9
 * max_rel_error: 1/256 bits=7..23
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 7
#endif

/*
 * As bf16_trunc, but the M + norm dropped bits of P round to nearest, ties
 * to even.  A rounding carry (q reaching 2^(M+1)) renormalises to the next
 * power of two; the value q * 2^drop is already that power, so nothing else
 * changes.  The largest product, (2 - 2^-M)^2, rounds to below 4.
 */
static double bf16_rne_sig(uint32_t i, uint32_t j, int M)
{
    uint64_t p = ((1ull << M) + i) * ((1ull << M) + j);
    int drop = M + (p >= (1ull << (2 * M + 1)));
    uint64_t q = p >> drop;
    uint64_t rem = p & ((1ull << drop) - 1);
    uint64_t half = 1ull << (drop - 1);

    if (rem > half || (rem == half && (q & 1)))
        q += 1;
    return amsim_ldexp((double)q, drop - 2 * M);
}

float bf16_rne(float a, float b)
{
    return amsim_fp_mul(a, b, AMSIM_BITS, bf16_rne_sig);
}
