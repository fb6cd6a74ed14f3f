/* @amsim
 * name: mul8s_exact
 * kind: int
 * description: Exact signed 8 x 8-bit multiplier (the reference of the signed 8-bit circuits)
 * citation: Exact two's-complement multiplication; the baseline every signed 8-bit circuit is compared with.
 * cost: power=1.0 area=1.0 delay=1.0 node="any" source="by definition (the exact multiplier)"
 * properties: commutative, zero, one, monotone, sign-symmetric, no-overestimate
 * max_rel_error: 0
 * max_abs_error: 0
 * mean_rel_error: 0
 * mean_abs_error: 0
 * error_probability: 0
 */
#include <stdint.h>

/* EvoApproxLib's signed convention: the product of two int8_t, -128 * -128 = 2^14 included, fits int16_t. */
int16_t mul8s_exact(int8_t a, int8_t b)
{
    return (int16_t)((int16_t)a * (int16_t)b);
}
