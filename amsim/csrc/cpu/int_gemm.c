/* int_gemm.c -- the integer LUT GEMM: C[i, j] = sum over k of LUT[a[i, k], b[k, j]], exactly. */
#include "engine.h"

/*
 * Operands are the n-bit patterns of the integer operands (n <= 8, one byte each), the LUT the
 * circuit's (2^n x 2^n) int32 product table, row = A's pattern. Integer sums are exact and
 * associative, so any order and any split gives the same result: the caller chooses the
 * accumulator's width (int32, or int64 where K * max |LUT| could overflow int32) so that no sum
 * wraps. Three kernels, chosen per call by a cost estimate (int_gemm_plan):
 *
 * - direct (portable C, any table): for each (i, k) the row LUT[a[i, k], :] is taken once and its
 *   entries at b[k, :] added along C's row, a sweep of gathers that the compiler vectorises; on at
 *   most INT_FEW_COLUMNS columns, a row's sums held in registers over all of k.
 * - lookup (AVX512-VBMI, int_gemm_vbmi.c): the same order, each row held in registers as byte
 *   planes and 64 entries looked up per few shuffles; for few rows of C, where nothing
 *   built beforehand would be reused enough.
 * - table (AVX512-VBMI): for a block of k and of 64 columns j, the table T[k][u] = LUT[u][b[k, j]]
 *   for every pattern u is built once (the lookup, over all 2^n patterns u instead of the rows'),
 *   then every row of C adds T[k][a[i, k]]: contiguous vector loads and adds, no shuffles. It
 *   costs 2^n * K * N lookups, amortised over M rows: for many rows. Where C has at most 32
 *   columns (thin convolutions), in 32-column blocks of half the loads and adds (int_table_narrow).
 *
 * Builds with AVX2 and no AVX-512 have the table kernel only, its tables built by transposes
 * rather than lookups, in 32-column blocks (16 where C has at most 16 columns), on C or C^T
 * (int_gemm_avx2.c), its parts splitting C or, where C is small and K long, k (enum int_split).
 *
 * The fast kernels hold entries as 16 bits (int_gemm_vbmi.c says how): a table whose entries do
 * not all fit one 16-bit range (0..65535 or -32768..32767) takes the direct kernel.
 */
#define INT_GEMM_PARALLEL_MIN ((int64_t)1 << 18)  /* products: fewer are computed by the caller alone */
#define INT_KB_MAX 32768                          /* terms of a 16-bit block sum exact in 32 bits */
#define INT_TABLE_ROW_BLOCK 2048                 /* rows sharing a table (int_gemm_vbmi.c) */
#define INT_NARROW_ROW_BLOCK 8192                /* rows sharing a narrow table: half the sums a row */
#define INT_TABLE_BYTES ((int64_t)1 << 19)        /* a block's table: kept in L2 while the rows read it */
#define INT_FEW_COLUMNS 8                         /* columns the direct kernel sums in registers (int_few_columns) */

/* Cost estimate of each kernel, in nanoseconds per unit of work at one thread: only their ratios
 * matter, to choose (every kernel gives the same integers). Fitted roughly to timings of each
 * build on a CPU it is made for: AVX512-VBMI's on an AVX-512 machine, the others' on an AVX2 one
 * (the portable direct kernel, compiled for each, has costs of its own there). */
#if AMSIM_VBMI
#define COST_DIRECT 0.35      /* per product */
#else
#define COST_DIRECT 0.33
#endif
#define COST_DIRECT_ROW 3.0   /* per (row, k) */
#define COST_FEW 0.52         /* per product, of the direct kernel on at most INT_FEW_COLUMNS columns */
#define COST_FEW_ROW 0.22     /* per (row, k), likewise */
#define COST_LOOKUP 4.0       /* per (row, k, 64-column block) */
#define COST_LOOKUP_ROW 2.0   /* per (row, k): its planes' loads */
#define COST_BUILD 3.0        /* per (pattern, k, 64-column block) of a table */
#define COST_TABLE 2.8        /* per (row, k, 64-column block) */
#define COST_BUILD_NARROW 2.2 /* per (pattern, k) of a narrow table (at most 32 columns) */
#define COST_TABLE_NARROW 0.8 /* per (row, k) of a narrow table */
#define COST_TRANSPOSE 0.25   /* per operand byte and result transposed */
#define COST_AVX2_BUILD 1.95        /* per (pattern, k, 32-column block) of the AVX2 table */
#define COST_AVX2_TABLE 1.9         /* per (row, k, 32-column block) */
#define COST_AVX2_BUILD_NARROW 1.22 /* per (pattern, k, 16-column block) */
#define COST_AVX2_TABLE_NARROW 0.93 /* per (row, k, 16-column block) */
#define COST_REDUCE 0.3             /* per sum of a depth split's part added into C */

enum int_kernel { INT_DIRECT, INT_LOOKUP, INT_TABLE };

/* How parts share a fast kernel's work: by its rows, by its column blocks (INT_COLUMN_UNIT), or by
 * ranges of k, each part summing its range into a C of its own, added up once they are done (the
 * AVX2 table kernel only: where C is small and K long, as in filter gradients, neither its rows
 * nor its few column blocks split without each part building most tables). */
enum int_split { INT_SPLIT_ROWS, INT_SPLIT_COLUMNS, INT_SPLIT_DEPTH };

struct int_gemm_job {
    int64_t M, N, K;
    const uint8_t *a, *b;
    const int32_t *lut;        /* the table (struct amsim_int_lut) */
    int bits, wide, nparts;
    void *c;
    int kernel;
    /* The fast kernels' orientation: C (fm x fn) = fa (fm x K) by fb (K x fn), with the table as
     * is, or C^T = B^T A^T with the table transposed where that takes fewer vector blocks. */
    int transposed;
    int64_t fm, fn;
    const uint8_t *fa, *fb;
    int a_columns;             /* fa holds the kernel's A column-major (B itself, for the table kernel on C^T) */
    int split;                 /* what parts are ranges of (enum int_split) */
    int64_t k0, k1;            /* a part's range of k: all of it, but for a depth split's parts */
    void *partials;            /* a depth split's sums of parts 1.. (part 0's go into C), M x N each */
    int failed;                /* a part could not have its work buffers */
    int bias;                  /* the fast kernels' 16-bit encoding: 0 (unsigned table) or 2^15 (signed) */
    const uint8_t *planes;     /* the prepared table of this orientation (struct amsim_int_lut) */
    const void *ivecs;         /* the lookup kernel's index vectors of B */
};

/* Bytes of a sum in C: the accumulator's width. */
static size_t int_c_width(const struct int_gemm_job *g)
{
    return g->wide ? sizeof(int64_t) : sizeof(int32_t);
}

/* The address of C[i, j] in the job's C (the caller's, or a depth split part's own): M x N
 * row-major, in the accumulator's width. */
static inline char *int_c_at(const struct int_gemm_job *g, int64_t i, int64_t j)
{
    return (char *)g->c + (size_t)(i * g->N + j) * int_c_width(g);
}

#if AMSIM_VBMI || AMSIM_AVX2
/* Whether the k block ending at k1 ends a chunk of the table kernels' 32-bit raw sums (begun at
 * k step `chunk`, k blocks of at most kb steps, k ending at `end`): at the end, or where the next
 * block would make the chunk longer than INT_KB_MAX steps, the most a 32-bit sum of 16-bit entries
 * holds exactly. */
static int int_chunk_ends(int64_t k1, int64_t end, int64_t kb, int64_t chunk)
{
    const int64_t next = end - k1 < kb ? end - k1 : kb;
    return k1 == end || k1 + next - chunk > INT_KB_MAX;
}
#endif

#if AMSIM_VBMI
/* k-steps of a table block: INT_TABLE_BYTES of rows of row_bytes, U = 2^bits of them per k. */
static int64_t int_table_kb(int U, int row_bytes)
{
    const int64_t kb = INT_TABLE_BYTES / ((int64_t)U * row_bytes);
    return kb < 1 ? 1 : kb > 4096 ? 4096 : kb;
}

/* Rows [i0, i1) of the fast kernels' C (their columns j..j+n), row i's sums at sums + (i - i0) * lds
 * bytes, into C, transposed if so: then column by column, each a contiguous run of C^T's row (row
 * by row, every sum was a store of its own N entries apart). */
static void int_store_rows(const struct int_gemm_job *g, int64_t i0, int64_t i1, int64_t j, const char *sums,
                           int64_t lds, int n)
{
    const size_t width = int_c_width(g);
    if (!g->transposed) {
        if (n == g->N && lds == n * (int64_t)width) {  /* whole rows, packed: one copy */
            memcpy(int_c_at(g, i0, 0), sums, (size_t)(i1 - i0) * (size_t)lds);
            return;
        }
        for (int64_t i = i0; i < i1; ++i)
            memcpy(int_c_at(g, i, j), sums + (i - i0) * lds, (size_t)n * width);
        return;
    }
    for (int q = 0; q < n; ++q) {
        char *out = int_c_at(g, j + q, 0);
        const char *in = sums + (size_t)q * width;
        if (g->wide)
            for (int64_t i = i0; i < i1; ++i)
                ((int64_t *)out)[i] = *(const int64_t *)(in + (i - i0) * lds);
        else
            for (int64_t i = i0; i < i1; ++i)
                ((int32_t *)out)[i] = *(const int32_t *)(in + (i - i0) * lds);
    }
}

/* Whether the table kernel works in 32-column blocks (int_gemm_vbmi.c): where C has at most 32
 * columns, a 64-column block's second half is padding that every row would load and add. */
static int int_table_narrow(int64_t fn)
{
    return fn <= 32;
}

/* Rows sharing a table, their sums in a buffer: a narrow table costs as much to build as a wide
 * one and its rows hold half the sums, so more of them share it. */
static int64_t int_table_row_block(int64_t fn)
{
    return int_table_narrow(fn) ? INT_NARROW_ROW_BLOCK : INT_TABLE_ROW_BLOCK;
}

#include "int_gemm_vbmi.c"
#elif AMSIM_AVX2
#include "int_gemm_avx2.c"
#endif

/* c[j] += the entries at b_q[j] of rows r_q, q < 4 (or 1), for j < n: the direct kernel's inner
 * loops, four k steps a pass over C's row (with a pass per k step, C's row would go through
 * memory once per product, each load waiting for the previous pass's store). Their pointers are
 * parameters declared restrict, which GCC honours (on block-scope pointers it does not, and then
 * leaves the loop scalar for fear that C's row and the LUT rows overlap). In int32, four entries'
 * sum is within the sum of K >= 4 that the accumulator was chosen for; in int64, the entries are
 * widened first. */
static inline void add_rows32(int32_t *restrict c, const int32_t *restrict r0, const int32_t *restrict r1,
                              const int32_t *restrict r2, const int32_t *restrict r3, const uint8_t *restrict b0,
                              const uint8_t *restrict b1, const uint8_t *restrict b2, const uint8_t *restrict b3,
                              int64_t n)
{
    for (int64_t j = 0; j < n; ++j)
        c[j] += (r0[b0[j]] + r1[b1[j]]) + (r2[b2[j]] + r3[b3[j]]);
}

static inline void add_rows64(int64_t *restrict c, const int32_t *restrict r0, const int32_t *restrict r1,
                              const int32_t *restrict r2, const int32_t *restrict r3, const uint8_t *restrict b0,
                              const uint8_t *restrict b1, const uint8_t *restrict b2, const uint8_t *restrict b3,
                              int64_t n)
{
    for (int64_t j = 0; j < n; ++j)
        c[j] += ((int64_t)r0[b0[j]] + r1[b1[j]]) + ((int64_t)r2[b2[j]] + r3[b3[j]]);
}

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

/* Rows [i0, i1) of a C of n = N <= INT_FEW_COLUMNS columns, n known where inlined: a row's n sums in
 * registers over all of k, each product two loads and an add. The direct kernel's sweeps over a row
 * of C (add_rows32) cost a loop's overhead per (row, k) that so few columns do not repay. Sums in
 * int64, exact whatever C's width (the caller checked that it holds them). Compiled scalar: GCC
 * vectorises the loops of 2, 4 and 8 columns into gathers, slower than the scalar loads
 * (docs/performance.md). */
#define INT_SCALAR __attribute__((optimize("no-tree-vectorize", "no-tree-slp-vectorize")))
static inline __attribute__((always_inline)) INT_SCALAR void int_few_columns(const struct int_gemm_job *g,
                                                                             int64_t i0, int64_t i1, int n)
{
    const int64_t K = g->K;
    for (int64_t i = i0; i < i1; ++i) {
        int64_t acc[INT_FEW_COLUMNS] = {0};
        const uint8_t *ai = g->a + i * K, *bk = g->b;
        for (int64_t k = 0; k < K; ++k, bk += n) {
            const int32_t *row = amsim_int_lut_row(g->lut, g->bits, ai[k]);
            for (int q = 0; q < n; ++q)
                acc[q] += row[bk[q]];
        }
        for (int q = 0; q < n; ++q) {
            if (g->wide)
                *(int64_t *)int_c_at(g, i, q) = acc[q];
            else
                *(int32_t *)int_c_at(g, i, q) = (int32_t)acc[q];
        }
    }
}

/* int_few_columns for each n, in a function of its own (the sums in registers). */
#define INT_FEW(NAME, NC)                                                                                   \
    static __attribute__((noinline)) INT_SCALAR void NAME(const struct int_gemm_job *g, int64_t i0, int64_t i1) \
    {                                                                                                         \
        int_few_columns(g, i0, i1, NC);                                                                       \
    }
INT_FEW(int_few1, 1) INT_FEW(int_few2, 2) INT_FEW(int_few3, 3) INT_FEW(int_few4, 4)
INT_FEW(int_few5, 5) INT_FEW(int_few6, 6) INT_FEW(int_few7, 7) INT_FEW(int_few8, 8)
#undef INT_FEW
static void (*const int_few_fns[INT_FEW_COLUMNS + 1])(const struct int_gemm_job *, int64_t, int64_t) = {
    NULL, int_few1, int_few2, int_few3, int_few4, int_few5, int_few6, int_few7, int_few8};

/* The direct kernel: rows [i0, i1) of C, each summed over k in the accumulator's width. */
static void int_direct_rows(const struct int_gemm_job *g, int64_t i0, int64_t i1)
{
    const int64_t N = g->N, K = g->K;
    if (N <= INT_FEW_COLUMNS) {
        int_few_fns[N](g, i0, i1);
        return;
    }
    for (int64_t i = i0; i < i1; ++i) {
        void *crow = int_c_at(g, i, 0);
        const uint8_t *ai = g->a + i * K;
        memset(crow, 0, (size_t)N * int_c_width(g));
        int64_t k = 0;
        for (; k + 4 <= K; k += 4) {
            const int32_t *r[4];
            for (int q = 0; q < 4; ++q)
                r[q] = amsim_int_lut_row(g->lut, g->bits, ai[k + q]);
            const uint8_t *bk = g->b + k * N;
            if (g->wide)
                add_rows64(crow, r[0], r[1], r[2], r[3], bk, bk + N, bk + 2 * N, bk + 3 * N, N);
            else
                add_rows32(crow, r[0], r[1], r[2], r[3], bk, bk + N, bk + 2 * N, bk + 3 * N, N);
        }
        for (; k < K; ++k) {
            const int32_t *row = amsim_int_lut_row(g->lut, g->bits, ai[k]);
            if (g->wide)
                add_row64(crow, row, g->b + k * N, N);
            else
                add_row32(crow, row, g->b + k * N, N);
        }
    }
}

/* The 16-bit bias of the fast kernels for this table, or -1 when its entries fit neither
 * 16-bit range (then only the direct kernel takes it); *largest: the largest magnitude. */
static int int_bias(const int32_t *lut, int bits, int64_t *largest)
{
    int32_t lo = lut[0], hi = lut[0];
    for (size_t e = 1; e < (size_t)1 << (2 * bits); ++e) {
        lo = lut[e] < lo ? lut[e] : lo;
        hi = lut[e] > hi ? lut[e] : hi;
    }
    *largest = -(int64_t)lo > (int64_t)hi ? -(int64_t)lo : (int64_t)hi;
    *largest = *largest > 0 ? *largest : 0;
    if (lo >= 0 && hi <= 65535)
        return 0;
    if (lo >= -32768 && hi <= 32767)
        return 32768;
    return -1;
}

/* The table's bytes, then (VBMI) its rows' byte planes and its transpose's, 512 bytes a row each. */
static size_t int_table_bytes(int bits)
{
    return align64(sizeof(int32_t) << (2 * bits));
}

static size_t int_planes_bytes(int bits)
{
    return AMSIM_VBMI || AMSIM_AVX2 ? (size_t)512 << bits : 0;
}

size_t amsim_int_lut_storage_bytes(int bits)
{
    return bits < 1 || bits > 8 ? 0 : int_table_bytes(bits) + 2 * int_planes_bytes(bits);
}

#if AMSIM_VBMI
/* Row u of the table as byte planes of its entries plus `bias` (512 bytes: 256 low bytes, 256 high
 * bytes; entries past 2^bits are zero and never looked up). */
static void int_plane_row(const int32_t *restrict row, int U, int bias, uint8_t *restrict lo, uint8_t *restrict hi)
{
    for (int v = 0; v < U; ++v) {
        const uint32_t x = (uint32_t)(row[v] + bias);
        lo[v] = (uint8_t)x;
        hi[v] = (uint8_t)(x >> 8);
    }
}
#endif

/* The transpose's planes are the table's planes transposed as bytes (int_transpose_bytes): an entry
 * at a time, reading the table by columns, they took several times as long. */
int amsim_int_lut_init(struct amsim_int_lut *lut, const int32_t *table, int bits, void *storage)
{
    if (!lut || !table || !storage || bits < 1 || bits > 8 || ((uintptr_t)storage & 63))
        return AMSIM_ERR_ARGS;
    int32_t *copy = storage;
    memcpy(copy, table, sizeof(int32_t) << (2 * bits));
    lut->bits = bits;
    lut->table = copy;
    lut->bias = int_bias(copy, bits, &lut->largest);
    lut->planes[0] = lut->planes[1] = NULL;
#if AMSIM_VBMI
    if (lut->bias >= 0) {
        const int U = 1 << bits;
        uint8_t *rows = (uint8_t *)storage + int_table_bytes(bits), *columns = rows + int_planes_bytes(bits);
        memset(rows, 0, 2 * int_planes_bytes(bits));
        for (int u = 0; u < U; ++u)
            int_plane_row(amsim_int_lut_row(copy, bits, (uint8_t)u), U, lut->bias, rows + 512 * u,
                          rows + 512 * u + 256);
        int_transpose_bytes(rows, U, U, 512, columns, 512);
        int_transpose_bytes(rows + 256, U, U, 512, columns + 256, 512);
        lut->planes[0] = rows;
        lut->planes[1] = columns;
    }
#elif AMSIM_AVX2
    /* the AVX2 tables' sources, biased 16-bit entries: on C, T[k][u][j] = LUT^T[b[k, j]][u] takes the
     * transpose's rows; on C^T, the table's own */
    if (lut->bias >= 0) {
        const int U = 1 << bits;
        uint16_t *columns = (uint16_t *)((uint8_t *)storage + int_table_bytes(bits)), *rows = columns + 256 * (size_t)U;
        memset(columns, 0, 2 * int_planes_bytes(bits));
        for (int u = 0; u < U; ++u) {
            const int32_t *row = amsim_int_lut_row(copy, bits, (uint8_t)u);
            for (int v = 0; v < U; ++v)
                rows[256 * u + v] = columns[256 * v + u] = (uint16_t)(row[v] + lut->bias);
        }
        lut->planes[0] = (const uint8_t *)columns;
        lut->planes[1] = (const uint8_t *)rows;
    }
#endif
    return AMSIM_OK;
}

/* Columns of the blocks that parts split C into: a fast kernel's column block (64 with VBMI, 32 with AVX2). */
#define INT_COLUMN_UNIT (AMSIM_VBMI ? 64 : 32)

/* k steps of a depth split's unit: a part's range of k is a multiple of them (but the last). */
#define INT_DEPTH_UNIT 64

#if AMSIM_AVX2 && !AMSIM_VBMI
/* Parts of a depth split among `use` threads: ranges of whole INT_DEPTH_UNITs of K, none empty. */
static int int_depth_parts(int64_t K, int use)
{
    const int64_t units = (K + INT_DEPTH_UNIT - 1) / INT_DEPTH_UNIT, per = (units + use - 1) / use;
    return (int)((units + per - 1) / per);
}
#endif

/* C += x, x a C of the job's (a depth split's part's sums). */
static void int_add_sums(const struct int_gemm_job *g, const void *x)
{
    const int64_t n = g->M * g->N;
    if (g->wide)
        for (int64_t e = 0; e < n; ++e)
            ((int64_t *)g->c)[e] += ((const int64_t *)x)[e];
    else
        for (int64_t e = 0; e < n; ++e)
            ((int32_t *)g->c)[e] += ((const int32_t *)x)[e];
}

/* Part p of the job: a range of the kernel's rows, of its column blocks, or of k. */
static void int_gemm_part(void *ctx, int part)
{
    struct int_gemm_job *g = ctx;
    const int64_t rows = g->kernel == INT_DIRECT ? g->M : g->fm, cols = g->kernel == INT_DIRECT ? g->N : g->fn;
    /* the split's span (rows, columns or k) and the unit its ranges are whole multiples of */
    const int64_t span = g->split == INT_SPLIT_COLUMNS ? cols : g->split == INT_SPLIT_DEPTH ? g->K : rows;
    const int64_t unit = g->split == INT_SPLIT_COLUMNS ? INT_COLUMN_UNIT
                         : g->split == INT_SPLIT_DEPTH ? INT_DEPTH_UNIT
                                                       : 1;
    const int64_t units = (span + unit - 1) / unit;
    const int64_t per = (units + g->nparts - 1) / g->nparts, u0 = part * per;
    const int64_t u1 = u0 + per < units ? u0 + per : units;
    if (u0 >= u1)
        return;
    const int64_t s0 = unit * u0, s1 = unit * u1 < span ? unit * u1 : span;
    int64_t i0 = 0, i1 = rows, j0 = 0, j1 = cols;
    if (g->split == INT_SPLIT_COLUMNS) {
        j0 = s0;
        j1 = s1;
    } else if (g->split == INT_SPLIT_ROWS) {
        i0 = s0;
        i1 = s1;
    }
#if AMSIM_VBMI
    int rc = AMSIM_OK;
    if (g->kernel == INT_TABLE)
        rc = int_table_vbmi(g, i0, i1, j0, j1);
    else if (g->kernel == INT_LOOKUP)
        rc = int_lookup_vbmi(g, i0, i1, j0, j1);
    if (rc != AMSIM_OK)
        __atomic_store_n(&g->failed, 1, __ATOMIC_RELAXED);
    if (g->kernel != INT_DIRECT)
        return;
#elif AMSIM_AVX2
    if (g->kernel == INT_TABLE) {
        struct int_gemm_job own = *g;  /* a depth split's part: its range of k, into a C of its own */
        if (g->split == INT_SPLIT_DEPTH) {
            own.k0 = s0;
            own.k1 = s1;
            if (part > 0)
                own.c = (char *)g->partials + (size_t)(part - 1) * (size_t)(g->M * g->N) * int_c_width(g);
        }
        if (int_table_avx2(&own, i0, i1, j0, j1) != AMSIM_OK)
            __atomic_store_n(&g->failed, 1, __ATOMIC_RELAXED);
        return;
    }
#else
    (void)j0, (void)j1;  /* the direct kernel takes whole rows */
#endif
    int_direct_rows(g, i0, i1);
}

#if AMSIM_VBMI || AMSIM_AVX2
/* Whether a table kernel's parts may split C's `units` column blocks (INT_COLUMN_UNIT) among `use`
 * threads (each part building only its tables): where they divide evenly, or are many enough that
 * the uneven share matters little. */
static int int_split_columns(int64_t units, int use)
{
    return units >= use && (units % use == 0 || units >= 4 * (int64_t)use);
}

#if AMSIM_VBMI
/* A fast kernel's estimated cost with fm rows and fn columns (cycles; int_gemm_plan). */
static double int_fast_cost(int kernel, double fm, double fn, double K, double U, int use, int *columns)
{
    const double blocks = (double)(((int64_t)fn + 63) / 64), p = use;
    if (kernel == INT_LOOKUP)
        return (COST_LOOKUP * blocks + COST_LOOKUP_ROW) * fm * K / p;
    /* a table is built by every part that needs it */
    *columns = int_split_columns((int64_t)blocks, use);
    const int64_t parts = *columns ? 1 : use, part_rows = ((int64_t)fm + parts - 1) / parts;
    const int64_t row_block = int_table_row_block((int64_t)fn);
    const double row_blocks = (double)((part_rows + row_block - 1) / row_block);
    if (int_table_narrow((int64_t)fn))
        return COST_BUILD_NARROW * U * K * row_blocks + COST_TABLE_NARROW * fm * K / p;
    return COST_BUILD * U * K * blocks * row_blocks / (*columns ? p : 1) +
           COST_TABLE * fm * K * blocks / p;
}
#endif

/* The plan of a fast kernel on the kernel's C of fm x fn (C, or C^T when transposed), its work
 * split among nparts parts as `split` says. */
static void int_plan_fast(struct int_gemm_job *g, int kernel, int transposed, double fm, double fn, int split,
                          int nparts)
{
    g->kernel = kernel;
    g->transposed = transposed;
    g->fm = (int64_t)fm;
    g->fn = (int64_t)fn;
    g->split = split;
    g->nparts = nparts;
}
#endif

/* The kernel, its orientation, and how parts split the work among `use` threads: the cheapest
 * by the cost estimate (the fast kernels' costs go by column blocks, so their columns had better
 * be the longer side). The direct kernel alone takes entries beyond 16 bits (bias < 0). */
static void int_gemm_plan(struct int_gemm_job *g, int use)
{
    const double M = (double)g->M, N = (double)g->N, K = (double)g->K;
    g->kernel = INT_DIRECT;
    g->nparts = (int)(g->M < use ? g->M : use);
    const int few = g->N <= INT_FEW_COLUMNS;
    double best = (few ? COST_FEW * N + COST_FEW_ROW : COST_DIRECT * N + COST_DIRECT_ROW) * M * K / use;
    if (g->bias < 0)
        return;
#if AMSIM_VBMI
    const double U = (double)(1 << g->bits);
    for (int kernel = INT_LOOKUP; kernel <= INT_TABLE; ++kernel)
        for (int transposed = 0; transposed < 2; ++transposed) {
            const double fm = transposed ? N : M, fn = transposed ? M : N;
            int columns = 0;
            /* on C^T, B's bytes are transposed once by the caller, or by the table kernel's parts
             * once per column block (a panel at a time) */
            const double a_bytes = K * fm * (kernel == INT_TABLE ? ((int64_t)fn + 63) / 64 / (double)use : 1);
            const double cost = int_fast_cost(kernel, fm, fn, K, U, use, &columns) +
                                (transposed ? COST_TRANSPOSE * (M * K + a_bytes + M * N) : 0.0);
            if (cost < best) {
                best = cost;
                int_plan_fast(g, kernel, transposed, fm, fn, columns ? INT_SPLIT_COLUMNS : INT_SPLIT_ROWS,
                              columns || fm >= use ? use : (int)fm);
            }
        }
#elif AMSIM_AVX2
    /* the AVX2 table kernel: C or C^T, in blocks of 32 columns or narrow ones of 16 (int_table_avx2);
     * its parts split the column blocks (each building its own), the rows (each building the tables
     * of its row blocks) or k (each building its range's, then C's sums are added up); in that
     * order of preference where costs tie */
    static const int splits[] = {INT_SPLIT_COLUMNS, INT_SPLIT_ROWS, INT_SPLIT_DEPTH};
    const double patterns = int_avx2_table_rows(g->bits);
    const int depth_parts = int_depth_parts(g->K, use);
    for (int transposed = 0; transposed < 2; ++transposed) {
        const double fm = transposed ? N : M, fn = transposed ? M : N;
        const int narrow = int_avx2_halves((int64_t)fn) == 1, width = narrow ? AVX2_NARROW : AVX2_LANES;
        const double blocks = (double)(((int64_t)fn + width - 1) / width);
        const double build = (narrow ? COST_AVX2_BUILD_NARROW : COST_AVX2_BUILD) * patterns * K * blocks;
        const double rows = (narrow ? COST_AVX2_TABLE_NARROW : COST_AVX2_TABLE) * fm * K * blocks;
        const int row_parts = fm < use ? (int)fm : use;
        for (int s = 0; s < 3; ++s) {
            const int split = splits[s];
            if (split == INT_SPLIT_COLUMNS &&
                !int_split_columns(((int64_t)fn + INT_COLUMN_UNIT - 1) / INT_COLUMN_UNIT, use))
                continue;
            if (split == INT_SPLIT_DEPTH && depth_parts < 2)
                continue;
            const int parts = split == INT_SPLIT_ROWS ? row_parts : split == INT_SPLIT_COLUMNS ? use : depth_parts;
            const int64_t part_rows = split == INT_SPLIT_ROWS ? ((int64_t)fm + parts - 1) / parts : (int64_t)fm;
            const double row_blocks = (double)((part_rows + AVX2_ROW_BLOCK - 1) / AVX2_ROW_BLOCK);
            const double cost = build * row_blocks / (split == INT_SPLIT_ROWS ? 1 : parts) + rows / parts +
                                (split == INT_SPLIT_DEPTH ? COST_REDUCE * M * N * (parts - 1) : 0.0);
            if (cost < best) {
                best = cost;
                int_plan_fast(g, INT_TABLE, transposed, fm, fn, split, parts);
            }
        }
    }
#else
    (void)best;  /* the portable build has the direct kernel alone */
#endif
}

/* Whether any of the n bytes at x is above 2^bits - 1 (none can be at 8 bits). A reduction with
 * no early exit, which the compiler vectorises (it does not vectorise a loop that returns at the
 * first such byte, and that scalar pass took as long as a kernel's on the tall-thin shapes). */
static int int_bytes_above(const uint8_t *x, int64_t n, int bits)
{
    if (bits >= 8)
        return 0;
    uint8_t high = 0;
    for (int64_t e = 0; e < n; ++e)
        high |= x[e];
    return high >> bits != 0;
}

int amsim_int_gemm(const struct amsim_int_lut *lut, int64_t M, int64_t N, int64_t K, const uint8_t *a,
                   const uint8_t *b, void *c, int wide, int threads)
{
    if (!lut || !lut->table || lut->bits < 1 || lut->bits > 8 || M < 0 || N < 0 || K < 0 ||
        (wide != 0 && wide != 1) || threads < 0 || (M > 0 && N > 0 && !c) || (M > 0 && K > 0 && !a) ||
        (K > 0 && N > 0 && !b))
        return AMSIM_ERR_ARGS;
    /* no sum of K products may leave the accumulator: K * largest within its range */
    if (lut->largest > 0 && K > (wide ? INT64_MAX : INT32_MAX) / lut->largest)
        return AMSIM_ERR_ARGS;
    if (M == 0 || N == 0)
        return AMSIM_OK;
    const int bits = lut->bits;
    /* Operand patterns index the table: one of 2^bits values each (checked here, once, since an
     * out-of-range byte would read outside the table). */
    if (int_bytes_above(a, M * K, bits) || int_bytes_above(b, K * N, bits))
        return AMSIM_ERR_ARGS;
    int use = threads > 0 ? threads : default_threads();
    use = use > MAX_THREADS ? MAX_THREADS : use;
    if ((double)M * (double)N * (double)K < (double)INT_GEMM_PARALLEL_MIN)
        use = 1;
    struct int_gemm_job job = {.M = M, .N = N, .K = K, .a = a, .b = b, .lut = lut->table, .bits = bits,
                               .wide = wide, .c = c, .bias = lut->bias, .k0 = 0, .k1 = K};
    int_gemm_plan(&job, use);
#if AMSIM_VBMI
    if (job.kernel != INT_DIRECT) {
        job.planes = lut->planes[job.transposed];
        job.fa = a;
        job.fb = b;
        if (job.transposed) {
            /* the kernel's B: A^T, K x M; its A: B^T, N x K, which the table kernel reads in
             * place (a_columns: it transposes each panel it reads, in its part). Work buffers in
             * slots that no part uses (the parts take SLOT_T, SLOT_CBUF, SLOT_OUT, SLOT_XS and
             * SLOT_YS; the caller runs parts too). */
            uint8_t *at = work_buffer(SLOT_YI, (size_t)(M * K));
            if (!at)
                return AMSIM_ERR_MEMORY;
            int_transpose_bytes(a, M, K, K, at, M);
            job.fb = at;
            job.fa = b;
            job.a_columns = job.kernel == INT_TABLE;
            if (!job.a_columns) {
                uint8_t *bt = work_buffer(SLOT_XI, (size_t)(K * N));
                if (!bt)
                    return AMSIM_ERR_MEMORY;
                int_transpose_bytes(b, K, N, N, bt, K);
                job.fa = bt;
            }
        }
    }
    if (job.kernel == INT_LOOKUP) {
        __m512i *ivecs = work_buffer(SLOT_DB, int_lookup_ivecs_bytes(K, job.fn));
        if (!ivecs)
            return AMSIM_ERR_MEMORY;
        int_lookup_prepare_vbmi(job.fb, K, job.fn, ivecs);
        job.ivecs = ivecs;
    }
#elif AMSIM_AVX2
    job.planes = lut->planes[job.transposed];
#endif
    const size_t c_bytes = (size_t)(M * N) * int_c_width(&job);
    if (job.split == INT_SPLIT_DEPTH) {  /* the parts' own C (a slot that no part uses) */
        job.partials = work_buffer(SLOT_OUT, c_bytes * (size_t)(job.nparts - 1));
        if (!job.partials)
            return AMSIM_ERR_MEMORY;
    }
    run_parts(int_gemm_part, &job, job.nparts, use);
    pool_gemm_returned();
    if (job.failed)
        return AMSIM_ERR_MEMORY;
    for (int p = 1; job.split == INT_SPLIT_DEPTH && p < job.nparts; ++p)
        int_add_sums(&job, (const char *)job.partials + (size_t)(p - 1) * c_bytes);
    return AMSIM_OK;
}
