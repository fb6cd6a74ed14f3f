/* @amsim
 * name: drum
 * kind: int
 * bits: 2..32
 * signed: no
 * param: k default=6 range=2..32 "window width in bits, leading one included; k >= n is exact"
 * description: Dynamic range unbiased multiplier: exact k x k product of leading-one windows with the lowest bit forced to 1
 * citation: S. Hashemi, R. I. Bahar, S. Reda, "DRUM: A Dynamic Range Unbiased Multiplier for Approximate
 *   Applications", IEEE/ACM International Conference on Computer-Aided Design (ICCAD), pp. 418-425, 2015.
 * cost: power=0.30 area=0.30 delay= node="65 nm" source="Hashemi et al., ICCAD 2015" bits=16 k=6
 * properties: commutative, zero, monotone
 * max_rel_error: 5/4
 * max_rel_error: 17/64 k=4..32
 * max_rel_error: 65/1024 k=6..32
 * max_rel_error: 257/16384 k=8..32
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 8
#endif
#ifndef K
#define K 6
#endif

/*
 * The k-bit window of v starting at its leading one, lowest bit forced to 1
 * (unbiasing); *shift receives how far it was shifted down.  Values below
 * 2^k are used exactly.
 */
static uint64_t drum_window(uint64_t v, int k, int *shift)
{
    if (v < (1ull << k)) {
        *shift = 0;
        return v;
    }
    *shift = amsim_msb64(v) - k + 1;
    return (v >> *shift) | 1;
}

uint64_t drum(uint64_t a, uint64_t b)
{
    /* Operands are below 2^n, so any k >= n uses them exactly. */
    const int k = K < AMSIM_BITS ? K : AMSIM_BITS;
    int sa, sb;
    uint64_t wa, wb;

    a &= amsim_low_mask(AMSIM_BITS);
    b &= amsim_low_mask(AMSIM_BITS);
    wa = drum_window(a, k, &sa);
    wb = drum_window(b, k, &sb);
    return (wa * wb) << (sa + sb);       /* zero operand: window 0, product 0 */
}
