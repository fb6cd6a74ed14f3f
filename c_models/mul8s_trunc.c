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
 * mean_abs_error: 0 k=0
 * error_probability: 0 k=0
 * max_abs_error: 1 k=1
 * max_rel_error: 1 k=1
 * mean_rel_error: 0.0005765 k=1
 * mean_abs_error: 0.2500 k=1
 * error_probability: 16384/65536 k=1
 * max_abs_error: 5 k=2
 * max_rel_error: 5 k=2
 * mean_rel_error: 0.002752 k=2
 * mean_abs_error: 1.250 k=2
 * error_probability: 32768/65536 k=2
 * max_abs_error: 17 k=3
 * max_rel_error: 17 k=3
 * mean_rel_error: 0.009024 k=3
 * mean_abs_error: 4.250 k=3
 * error_probability: 45056/65536 k=3
 * max_abs_error: 49 k=4
 * max_rel_error: 49 k=4
 * mean_rel_error: 0.02530 k=4
 * mean_abs_error: 12.25 k=4
 * error_probability: 53248/65536 k=4
 * max_abs_error: 129 k=5
 * max_rel_error: 129 k=5
 * mean_rel_error: 0.06519 k=5
 * mean_abs_error: 32.25 k=5
 * error_probability: 58368/65536 k=5
 * max_abs_error: 321 k=6
 * max_rel_error: 321 k=6
 * mean_rel_error: 0.1596 k=6
 * mean_abs_error: 80.25 k=6
 * error_probability: 61440/65536 k=6
 * max_abs_error: 769 k=7
 * max_rel_error: 769 k=7
 * mean_rel_error: 0.3775 k=7
 * mean_abs_error: 192.3 k=7
 * error_probability: 63232/65536 k=7
 * max_abs_error: 1537 k=8
 * max_rel_error: 1281 k=8
 * mean_rel_error: 0.6199 k=8
 * mean_abs_error: 327.9 k=8
 * error_probability: 64256/65536 k=8
 * max_abs_error: 2817 k=9
 * max_rel_error: 2049 k=9
 * mean_rel_error: 0.9913 k=9
 * mean_abs_error: 549.9 k=9
 * error_probability: 64704/65536 k=9
 * max_abs_error: 4865 k=10
 * max_rel_error: 3073 k=10
 * mean_rel_error: 1.510 k=10
 * mean_abs_error: 901.5 k=10
 * error_probability: 64896/65536 k=10
 * max_abs_error: 7937 k=11
 * max_rel_error: 4097 k=11
 * mean_rel_error: 2.110 k=11
 * mean_abs_error: 1442 k=11
 * error_probability: 64976/65536 k=11
 * max_abs_error: 12033 k=12
 * max_rel_error: 4097 k=12
 * mean_rel_error: 2.498 k=12
 * mean_abs_error: 2262 k=12
 * error_probability: 65008/65536 k=12
 * max_abs_error: 16129 k=13
 * max_rel_error: 127 k=13
 * mean_rel_error: 2.050 k=13
 * mean_abs_error: 3560 k=13
 * error_probability: 65020/65536 k=13
 * max_abs_error: 16383 k=14
 * max_rel_error: 16383 k=14
 * mean_rel_error: 7.934 k=14
 * mean_abs_error: 6112 k=14
 * error_probability: 65024/65536 k=14
 * max_abs_error: 16384 k=15
 * max_rel_error: 1 k=15
 * mean_rel_error: 1.000 k=15
 * mean_abs_error: 4096 k=15
 * error_probability: 65025/65536 k=15
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
