/* @amsim
 * name: bam
 * kind: int
 * bits: 1..32
 * signed: no
 * param: h default=0 range=0..64 "horizontal break: partial-product rows j < h (bits of b) are omitted"
 * param: v default=0 range=0..64 "vertical break: partial-product bits in columns i + j < v are omitted"
 * description: Broken-array multiplier: array multiplier without the partial-product bits of rows below h and columns below v
 * citation: H. R. Mahdiani, A. Ahmadi, S. M. Fakhraie, C. Lucas, "Bio-Inspired Imprecise Computational Blocks
 *   for Efficient VLSI Implementation of Soft-Computing Applications", IEEE Transactions on Circuits and
 *   Systems I: Regular Papers, vol. 57, no. 4, pp. 850-862, 2010.
 * properties: zero, monotone, no-overestimate
 * properties: commutative h=0
 * properties: one h=0 v=0
 * max_rel_error: 1
 * max_rel_error: 0 h=0 v=0
 * mean_abs_error: 0 h=0 v=0
 * error_probability: 0 h=0 v=0
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 8
#endif
#ifndef H
#define H 0
#endif
#ifndef V
#define V 0
#endif

/*
 * P' = sum of a_i b_j 2^(i+j) over j >= h and i + j >= v, summed exactly.
 * Row j (present when b_j = 1) is a << j with its bits i < v - j cleared.
 * Column truncation is h = 0, v = t.  P' <= a b, so nothing overflows.
 */
uint64_t bam(uint64_t a, uint64_t b)
{
    const int n = AMSIM_BITS;
    uint64_t p = 0;
    int j;

    a &= amsim_low_mask(n);
    b &= amsim_low_mask(n);
    for (j = H; j < n; j++) {
        int lo = V - j;                  /* lowest kept bit index i of row j */

        if (!((b >> j) & 1) || lo >= n)
            continue;
        p += (lo > 0 ? a & ~amsim_low_mask(lo) : a) << j;
    }
    return p;
}
