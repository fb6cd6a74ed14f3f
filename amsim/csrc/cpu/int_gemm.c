/* int_gemm.c -- the integer LUT GEMM: C[i, j] = sum over k of LUT[a[i, k], b[k, j]], exactly. */
#include "engine.h"

/*
 * Operands are the n-bit patterns of the integer operands (n <= 8, one byte each), the LUT the
 * circuit's (2^n x 2^n) int32 product table, row = A's pattern. Integer sums are exact and
 * associative, so any order and any split gives the same result: the caller chooses the
 * accumulator's width (int32, or int64 where K * max |LUT| could overflow int32) so that no sum
 * wraps. For each (i, k) the row LUT[a[i, k], :] is taken once and its entries at b[k, :] added
 * along C's row: the inner loop is a contiguous sweep over j that the compiler vectorises.
 */
#define INT_GEMM_PARALLEL_MIN ((int64_t)1 << 18)  /* products: fewer are computed by the caller alone */

struct int_gemm_job {
    int64_t M, N, K;
    const uint8_t *a, *b;
    const int32_t *lut;
    int bits, wide, nparts;
    void *c;
};

/* c[j] += row[bk[j]] for j < n: the kernel's inner loop. Its pointers are parameters declared
 * restrict, which GCC honours (on block-scope pointers it does not, and then leaves the loop
 * scalar for fear that C's row and the LUT row overlap). */
static inline void add_row32(int32_t *restrict c, const int32_t *restrict row, const uint8_t *restrict bk, int64_t n)
{
    for (int64_t j = 0; j < n; ++j)
        c[j] += row[bk[j]];
}

static inline void add_row64(int64_t *restrict c, const int32_t *restrict row, const uint8_t *restrict bk, int64_t n)
{
    for (int64_t j = 0; j < n; ++j)
        c[j] += row[bk[j]];
}

/* Rows [i0, i1) of C, each summed over k in the accumulator's width. */
static void int_gemm_rows(const struct int_gemm_job *g, int64_t i0, int64_t i1)
{
    const int64_t N = g->N, K = g->K;
    const size_t width = g->wide ? sizeof(int64_t) : sizeof(int32_t);
    for (int64_t i = i0; i < i1; ++i) {
        void *crow = (char *)g->c + (size_t)(i * N) * width;
        memset(crow, 0, (size_t)N * width);
        for (int64_t k = 0; k < K; ++k) {
            const int32_t *row = amsim_int_lut_row(g->lut, g->bits, g->a[i * K + k]);
            if (g->wide)
                add_row64(crow, row, g->b + k * N, N);
            else
                add_row32(crow, row, g->b + k * N, N);
        }
    }
}

/* Part p of the job: a contiguous range of C's rows. */
static void int_gemm_part(void *ctx, int part)
{
    const struct int_gemm_job *g = ctx;
    const int64_t per = (g->M + g->nparts - 1) / g->nparts, i0 = part * per;
    const int64_t i1 = i0 + per < g->M ? i0 + per : g->M;
    int_gemm_rows(g, i0, i1);
}

int amsim_int_gemm(const int32_t *lut, int bits, int64_t M, int64_t N, int64_t K, const uint8_t *a,
                   const uint8_t *b, void *c, int wide, int threads)
{
    if (!lut || bits < 1 || bits > 8 || M < 0 || N < 0 || K < 0 || (wide != 0 && wide != 1) || threads < 0 ||
        (M > 0 && N > 0 && !c) || (M > 0 && K > 0 && !a) || (K > 0 && N > 0 && !b))
        return AMSIM_ERR_ARGS;
    if (M == 0 || N == 0)
        return AMSIM_OK;
    /* Operand patterns index the table: one of 2^bits values each (checked here, once, since an
     * out-of-range byte would read outside the table). */
    const unsigned top = (1u << bits) - 1;
    for (int64_t e = 0; e < M * K; ++e)
        if (a[e] > top)
            return AMSIM_ERR_ARGS;
    for (int64_t e = 0; e < K * N; ++e)
        if (b[e] > top)
            return AMSIM_ERR_ARGS;
    int use = threads > 0 ? threads : default_threads();
    use = use > MAX_THREADS ? MAX_THREADS : use;
    if ((double)M * (double)N * (double)K < (double)INT_GEMM_PARALLEL_MIN)
        use = 1;
    struct int_gemm_job job = {M, N, K, a, b, lut, bits, wide, (int)(M < use ? M : use), c};
    run_parts(int_gemm_part, &job, job.nparts, use);
    pool_gemm_returned();
    return AMSIM_OK;
}
