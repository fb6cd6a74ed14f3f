/* @amsim
 * name: mul8s_bam
 * kind: int
 * param: h default=2 range=0..8 "horizontal break: partial-product rows j < h (bits of b) are omitted"
 * param: v default=6 range=0..15 "vertical break: partial-product bits in columns i + j < v are omitted"
 * description: Signed 8 x 8-bit broken-array multiplier: the two's-complement array without rows below h, columns below v
 * citation: H. R. Mahdiani, A. Ahmadi, S. M. Fakhraie, C. Lucas, "Bio-Inspired Imprecise Computational Blocks
 *   for Efficient VLSI Implementation of Soft-Computing Applications", IEEE Transactions on Circuits and
 *   Systems I: Regular Papers, vol. 57, no. 4, pp. 850-862, 2010 (applied here to a Baugh-Wooley array).
 * properties: zero
 * properties: commutative h=0
 * properties: one, monotone, sign-symmetric, no-overestimate h=0 v=0
 * max_abs_error: 0 h=0 v=0
 * max_rel_error: 0 h=0 v=0
 * mean_rel_error: 0 h=0 v=0
 * mean_abs_error: 0 h=0 v=0
 * error_probability: 0 h=0 v=0
 * max_abs_error: 577 h=2 v=6
 * max_rel_error: 193 h=2 v=6
 * mean_rel_error: 0.1380 h=2 v=6
 * bias_within: 0.0007339 h=2 v=6
 * mean_abs_error: 115.7 h=2 v=6
 * error_probability: 62272/65536 h=2 v=6
 * max_abs_error: 161 h=1 v=4
 * max_rel_error: 33 h=1 v=4
 * mean_rel_error: 0.03644 h=1 v=4
 * bias_within: 0.0003245 h=1 v=4
 * mean_abs_error: 36.54 h=1 v=4
 * error_probability: 55168/65536 h=1 v=4
 * max_abs_error: 1537 h=2 v=8
 * max_rel_error: 1025 h=2 v=8
 * mean_rel_error: 0.5120 h=2 v=8
 * bias_within: 0.06587 h=2 v=8
 * mean_abs_error: 287.8 h=2 v=8
 * error_probability: 64320/65536 h=2 v=8
 * max_abs_error: 2561 h=4 v=8
 * max_rel_error: 513 h=4 v=8
 * mean_rel_error: 0.4842 h=4 v=8
 * bias_within: 0.06128 h=4 v=8
 * mean_abs_error: 518.5 h=4 v=8
 * error_probability: 64528/65536 h=4 v=8
 */
#include "mul8s_array.h"

#ifndef H
#define H 2
#endif
#ifndef V
#define V 6
#endif

/* The array of mul8s_array.h broken at row H and column V. */
int16_t mul8s_bam(int8_t a, int8_t b)
{
    return mul8s_array(a, b, H, V);
}
