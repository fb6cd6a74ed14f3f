/*
 * mul8s_array.h -- the signed 8 x 8-bit partial-product array that mul8s_trunc and mul8s_bam break.
 *
 * A two's-complement operand is a = -a_7 2^7 + sum_{i<7} a_i 2^i, so the exact product is the sum of
 * the 64 partial-product bits a_i b_j 2^(i+j), each with the sign s_ij = -1 where exactly one of i, j
 * is 7 (the Baugh-Wooley weights) and +1 elsewhere. The approximate array keeps only the bits of rows
 * j >= h (bits of b) and columns i + j >= v and sums them exactly; h = v = 0 is the exact multiplier.
 *
 * Every subset of the array fits int16_t: the positive bits sum to at most 127 * 127 + 2^14 and the
 * negative ones to at least -2 * 127 * 2^7, both inside [-2^15, 2^15).
 */
#ifndef AMSIM_MUL8S_ARRAY_H
#define AMSIM_MUL8S_ARRAY_H

#include <stdint.h>

static inline int16_t mul8s_array(int8_t a, int8_t b, int h, int v)
{
    const unsigned ua = (uint8_t)a, ub = (uint8_t)b;
    int32_t p = 0;
    int i, j;

    for (j = h < 0 ? 0 : h; j < 8; j++) {
        if (!((ub >> j) & 1))
            continue;
        for (i = v - j > 0 ? v - j : 0; i < 8; i++) {
            const int32_t bit = (int32_t)((ua >> i) & 1) << (i + j);
            p += ((i == 7) != (j == 7)) ? -bit : bit;
        }
    }
    return (int16_t)p;
}

#endif /* AMSIM_MUL8S_ARRAY_H */
