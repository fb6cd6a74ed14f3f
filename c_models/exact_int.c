/* @amsim
 * name: exact_int
 * kind: int
 * bits: 1..32
 * signed: no
 * description: Exact unsigned n x n-bit multiplier (the reference for integer models)
 * citation: Exact binary multiplication; the reference every integer model is measured against.
 * cost: power=1.0 area=1.0 delay=1.0 node="any" source="by definition (the exact multiplier)"
 * properties: commutative, zero, one, monotone, no-overestimate
 * max_rel_error: 0
 * max_abs_error: 0
 * mean_abs_error: 0
 * error_probability: 0
 */
#include <stdint.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 8
#endif

/* Operands in [0, 2^n), n <= 32, so the product fits uint64_t. */
uint64_t exact_int(uint64_t a, uint64_t b)
{
    return a * b;
}
