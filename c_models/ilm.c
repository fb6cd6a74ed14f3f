/* @amsim
 * name: ilm
 * kind: int
 * bits: 2..32
 * signed: no
 * param: stages default=1 range=0..3 "correction stages applied to the residues"
 * description: Iterative logarithmic multiplier: basic block (a << k2) + ((b - 2^k2) << k1) plus correction stages on the residues
 * citation: Z. Babic, A. Avramovic, P. Bulic, "An iterative logarithmic multiplier", Microprocessors and
 *   Microsystems, vol. 35, no. 1, pp. 23-33, 2011.
 * properties: commutative, zero, one, monotone, no-overestimate
 * max_rel_error: 1/4
 * max_rel_error: 1/16 stages=1..3
 * max_rel_error: 1/64 stages=2..3
 * max_rel_error: 1/256 stages=3
 */
#include <amsim_model.h>

#ifndef AMSIM_BITS
#define AMSIM_BITS 8
#endif
#ifndef STAGES
#define STAGES 1
#endif

/*
 * The basic block for x, y >= 1 is x y - r1 r2 (r = v - 2^msb(v)); it never
 * overestimates.  Each correction stage feeds the residues (r1, r2) to the
 * same block and adds its result, stopping early once a residue is 0 (the
 * remaining error r1 r2 is then 0).  The sum never exceeds a b < 2^64.
 */
uint64_t ilm(uint64_t a, uint64_t b)
{
    uint64_t x = a & amsim_low_mask(AMSIM_BITS);
    uint64_t y = b & amsim_low_mask(AMSIM_BITS);
    uint64_t p = 0;
    int stage;

    for (stage = 0; stage <= STAGES; stage++) {
        int k1, k2;
        uint64_t r1, r2;

        if (x == 0 || y == 0)
            break;
        k1 = amsim_msb64(x);
        k2 = amsim_msb64(y);
        r1 = x - (1ull << k1);
        r2 = y - (1ull << k2);
        p += (x << k2) + (r2 << k1);
        x = r1;
        y = r2;
    }
    return p;
}
