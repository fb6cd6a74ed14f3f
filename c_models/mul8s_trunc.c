/* @amsim
 * name: mul8s_trunc
 * kind: int
 * param: k default=6 range=0..15 "partial-product columns i + j < k are dropped (k = 0: exact)"
 * description: Signed 8 x 8-bit truncated multiplier: the two's-complement array without its k low columns
 * citation: Column truncation of a Baugh-Wooley array; see M. J. Schulte, E. E. Swartzlander, "Truncated
 *   Multiplication with Correction Constant", VLSI Signal Processing VI, IEEE, 1993 (here without the constant).
 * properties: commutative, zero
 * properties: one, monotone, sign-symmetric, no-overestimate k=0
 * max_abs_error: 0 k=0
 * max_rel_error: 0 k=0
 * mean_rel_error: 0 k=0
 * max_abs_error: 1 k=1
 * max_rel_error: 1 k=1
 * mean_rel_error: 0.0005765 k=1
 * max_abs_error: 5 k=2
 * max_rel_error: 5 k=2
 * mean_rel_error: 0.002752 k=2
 * max_abs_error: 17 k=3
 * max_rel_error: 17 k=3
 * mean_rel_error: 0.009024 k=3
 * max_abs_error: 49 k=4
 * max_rel_error: 49 k=4
 * mean_rel_error: 0.02530 k=4
 * max_abs_error: 129 k=5
 * max_rel_error: 129 k=5
 * mean_rel_error: 0.06519 k=5
 * max_abs_error: 321 k=6
 * max_rel_error: 321 k=6
 * mean_rel_error: 0.1596 k=6
 * max_abs_error: 769 k=7
 * max_rel_error: 769 k=7
 * mean_rel_error: 0.3775 k=7
 * max_abs_error: 1537 k=8
 * max_rel_error: 1281 k=8
 * mean_rel_error: 0.6199 k=8
 * max_abs_error: 2817 k=9
 * max_rel_error: 2049 k=9
 * mean_rel_error: 0.9913 k=9
 * max_abs_error: 4865 k=10
 * max_rel_error: 3073 k=10
 * mean_rel_error: 1.510 k=10
 * max_abs_error: 7937 k=11
 * max_rel_error: 4097 k=11
 * mean_rel_error: 2.110 k=11
 * max_abs_error: 12033 k=12
 * max_rel_error: 4097 k=12
 * mean_rel_error: 2.498 k=12
 * max_abs_error: 16129 k=13
 * max_rel_error: 127 k=13
 * mean_rel_error: 2.050 k=13
 * max_abs_error: 16383 k=14
 * max_rel_error: 16383 k=14
 * mean_rel_error: 7.934 k=14
 * max_abs_error: 16384 k=15
 * max_rel_error: 1 k=15
 * mean_rel_error: 1.000 k=15
 */
#include "mul8s_array.h"

#ifndef K
#define K 6
#endif

/* The array of mul8s_array.h with every row kept and the columns below K dropped. */
int16_t mul8s_trunc(int8_t a, int8_t b)
{
    return mul8s_array(a, b, 0, K);
}
