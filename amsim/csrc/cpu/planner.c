/*
 * planner.c -- which kernel, orientation and threading a GEMM runs with (struct amsim_plan).
 *
 * Every plan gives the same bits; the planner only estimates their times and takes the least.
 * The estimate counts what a fast plan does on its busiest thread (plan_counts: products swept,
 * LUT rows loaded, entries built, elements split, outputs written, ...) and weighs each count by
 * a cost in nanoseconds (struct amsim_costs), plus the cost of handing work to the pool for
 * several threads: less when a worker is awake (amsim_pool_awake). The costs are fitted on the
 * machine that runs them (amsim.gemm.planner, which sets them with amsim_set_costs); until then
 * the engine uses the start values below. docs/gemm-internals.md describes the model.
 */
#include <math.h>

#include "engine.h"

/* Below this much work (products) the direct kernel runs in the calling thread: about 2^20
 * products of the fast kernels' cost, which a hand-off to the pool costs (the direct kernel takes
 * about 16 times as long per product as the fast ones). The model kernel is slower again. */
#define PARALLEL_MIN_WORK (1 << 20)
#define DIRECT_WORK_FACTOR 16
/* The counts see each thread's work, not how two threads share a core's caches and memory: both
 * kernels split by tiles (each thread taking part of Y's columns, in fewer and narrower chunks or
 * panels) ran slower than estimated against the same kernel split by rows, so of two such plans
 * estimated within 2 %, the split by rows is taken (docs/gemm-internals.md). */
#define TILES_MARGIN 1.02
#define MODEL_WORK_FACTOR 64

/*
 * Start values: round figures of the right order for an AVX-512 core with byte-plane lookups,
 * so that a process that never sets costs still plans sensibly. Only their ratios matter to the
 * choice of kernel and orientation; the hand-off costs matter against the work.
 */
#define START_PLAIN                                                                                        \
    {.build = 1.0, .build_op = 0.1, .fma = 0.5, .row_k = 0.05, .row_vec = 0.3, .lookup = 0.75,           \
     .lookup_group = 1.0, .lookup_op = 0.15, .prep = 1.5, .prep_t = 2.5, .out = 2.5, .split = 0.15,      \
     .split_t = 0.5, .threads = 50000.0, .threads_awake = 10000.0}
#define START_DP                                                                                           \
    {.build = 0.4, .build_op = 0.2, .fma = 0.6, .row_k = 0.05, .row_vec = 0.1, .lookup = 0.75,           \
     .lookup_group = 0.4, .lookup_op = 0.4, .prep = 2.0, .prep_t = 2.5, .out = 2.5, .split = 0.15,       \
     .split_t = 0.5, .threads = 50000.0, .threads_awake = 7500.0}

/* The tables in use, replaced whole by amsim_set_costs (a planner reads one table or the other,
 * never a mix; a replaced table is kept, since a planner may still be reading it). */
struct cost_tables {
    struct amsim_costs plain, dp;
};
static const struct cost_tables start_tables = {START_PLAIN, START_DP};
static const struct cost_tables *cost_tables = &start_tables;

void amsim_set_costs(const struct amsim_costs *plain, const struct amsim_costs *dp)
{
    struct cost_tables *t = malloc(sizeof *t);
    if (!t)
        return;  /* the tables in use stay: they only make plans slower or faster */
    t->plain = plain ? *plain : start_tables.plain;
    t->dp = dp ? *dp : start_tables.dp;
    __atomic_store_n(&cost_tables, t, __ATOMIC_RELEASE);
}

void amsim_get_costs(int dp, struct amsim_costs *costs)
{
    const struct cost_tables *t = __atomic_load_n(&cost_tables, __ATOMIC_ACQUIRE);
    *costs = dp ? t->dp : t->plain;
}

void amsim_default_costs(int dp, struct amsim_costs *costs)
{
    *costs = dp ? start_tables.dp : start_tables.plain;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* Instructions of a vpermt2ps blend tree that looks up 16 entries in a row of p. */
static int64_t select_ops(int64_t p)
{
    return p / 16 - 1 > 1 ? p / 16 - 1 : 1;
}

/*
 * What a plan does on its busiest thread, as counts of the cost items. The output is split
 * between threads as gemm.c's partition does: by rows (by_rows; each thread then builds all of
 * T, or prepares all of Y's columns for its lookups) or by 16-column tiles, when there are enough
 * of them; by_rows < 0: tiles first for expand, rows first for lookup. Expanding builds T (2^M
 * entries per element of Y, a whole group of build_group_vectors() vectors at a time) and sweeps
 * one multiply-add per product and vector ("fma"), with a cost per row, k and panel of columns
 * ("row_k": a part of 5 vectors sweeps two panels, one of them a quarter full).
 * Looking up prepares Y's indices (and scales) per k and column vector, loads a LUT row per row,
 * k and column chunk (of lookup_chunk_vectors() vectors) and looks up 16 products at a time, with
 * byte planes 64 at a time ("lookup_group": a part-filled group costs as much). Both write the
 * output ("out": vectors of 16). Splitting Y costs more when it is a transposed view (y_t), which is transposed as it is split; X never is (the expand
 * kernel splits a transposed X block by block, the others split X^T in memory order and read X
 * k-major). The byte-plane lookups do not split Y: they prepare it from its raw values, gathering
 * a transposed view as they go ("prep_t", on top of "prep").
 */
static void plan_counts(int kernel, int64_t rows, int64_t k, int64_t cols, int m, int threads, int y_t,
                        int by_rows, struct amsim_costs *n)
{
    memset(n, 0, sizeof *n);
    const int64_t p = (int64_t)1 << m, tiles = ceil_div(cols, 16);
    const int64_t per_tile = ceil_div(tiles, threads), per_row = ceil_div(rows, threads);
    if (by_rows < 0)
        by_rows = kernel == AMSIM_KERNEL_LOOKUP;
    /* the partition's preferred way when there are enough rows (tiles) for every thread */
    const int by_tiles = by_rows ? threads > 1 && rows < threads && tiles >= threads
                                 : threads > 1 && tiles >= threads;
    const int64_t vec = by_tiles ? per_tile : tiles, r = by_tiles ? rows : per_row;
    /* byte-plane lookups (VBMI) serve parts of two vectors or more; a single one takes a blend
     * tree of vpermt2ps, select_ops(2^M) of them (the "_op" counts) */
    const int blend = build_group_vectors() == 1 || vec == 1;
    const int raw = kernel == AMSIM_KERNEL_LOOKUP && !blend;  /* lookup_vbmi: Y read raw */
    const int64_t x_elems = ceil_div(rows * k, threads), y_elems = raw ? 0 : ceil_div(k * cols, threads);
    n->split = (double)(x_elems + (y_t ? 0 : y_elems));
    n->split_t = (double)(y_t ? y_elems : 0);
    if (kernel == AMSIM_KERNEL_EXPAND) {
        const int64_t group = blend ? 1 : build_group_vectors(), built = ceil_div(vec, group) * group;
        const int64_t panels = ceil_div(16 * vec, expand_panel_cols());  /* each sweeps every row and k */
        n->build = (double)(k * built * p);
        n->build_op = blend ? (double)(k * built * p * select_ops(p)) : 0.0;
        n->fma = (double)(r * k * vec);
        n->row_k = (double)(r * k * panels);
        n->out = (double)(r * vec);
        return;
    }
    const int64_t chunks = ceil_div(vec, lookup_chunk_vectors());
    /* the kernel's even chunks (vec / chunks vectors, and one more in vec % chunks of them), and in
     * each the byte-plane lookups' groups of up to 4 vectors */
    const int64_t small = vec / chunks, larger = vec % chunks;
    const int64_t groups = blend ? 0 : larger * ceil_div(small + 1, 4) + (chunks - larger) * ceil_div(small, 4);
    n->prep = (double)(k * vec);
    n->prep_t = raw && y_t ? (double)(k * vec) : 0.0;
    n->row_vec = (double)(r * k * chunks * (p / 16 > 2 ? p / 16 : 2));
    n->lookup = (double)(r * k * vec);
    n->lookup_group = (double)(r * k * groups);
    n->lookup_op = blend ? (double)(r * k * vec * select_ops(p)) : 0.0;
    n->out = (double)(r * vec);
}

void amsim_plan_counts(int kernel, int64_t rows, int64_t k, int64_t cols, int m, int threads, int y_t,
                       int by_rows, struct amsim_costs *counts)
{
    memset(counts, 0, sizeof *counts);
    if ((kernel != AMSIM_KERNEL_EXPAND && kernel != AMSIM_KERNEL_LOOKUP) || rows < 1 || k < 1 || cols < 1 ||
        m < 0 || m > FAST_MAX_BITS || threads < 1)
        return;
    plan_counts(kernel, rows, k, cols, m, threads > MAX_THREADS ? MAX_THREADS : threads, y_t, by_rows, counts);
}

static double cost_of(const struct amsim_costs *c, const struct amsim_costs *n)
{
    return c->build * n->build + c->build_op * n->build_op + c->fma * n->fma + c->row_k * n->row_k +
           c->row_vec * n->row_vec + c->lookup * n->lookup + c->lookup_group * n->lookup_group +
           c->lookup_op * n->lookup_op + c->prep * n->prep + c->prep_t * n->prep_t + c->out * n->out +
           c->split * n->split + c->split_t * n->split_t;
}

/*
 * The fast plan of least estimated time: kernel (EXPAND or LOOKUP, or `kernel` when forced),
 * orientation, and one thread or `threads` split by rows or by tiles. The LUT is expanded into
 * (or looked up along) Y, the operand whose columns the inner loop runs over: B, or A^T when the
 * plan swaps the operands (with the LUT transposed, its rows stay X's mantissas). a_t, b_t: A or
 * B is a transposed view (contiguous columns); swapping the operands transposes them.
 */
static void fast_plan(int64_t m_rows, int64_t k, int64_t n, int bits, int kernel, int threads, int awake, int a_t,
                      int b_t, const struct amsim_costs *c, struct amsim_plan *best)
{
    double least = INFINITY;
    *best = (struct amsim_plan){AMSIM_KERNEL_EXPAND, 0, 1, -1};
    for (int swap = 0; swap < 2; ++swap) {
        const int64_t rows = swap ? n : m_rows, cols = swap ? m_rows : n;
        const int y_t = swap ? !a_t : b_t;
        for (int name = AMSIM_KERNEL_EXPAND; name <= AMSIM_KERNEL_LOOKUP; ++name) {
            if (kernel != AMSIM_KERNEL_AUTO && kernel != name)
                continue;
            /* one thread; several split by rows; several split by tiles */
            for (int way = 0; way < (threads > 1 ? 3 : 1); ++way) {
                const int t = way ? threads : 1;
                struct amsim_costs counts;
                plan_counts(name, rows, k, cols, bits, t, y_t, way == 1, &counts);
                /* a split by tiles must win by a margin (TILES_MARGIN) */
                const double cost = cost_of(c, &counts) * (way == 2 ? TILES_MARGIN : 1.0) +
                                    (t == 1 ? 0.0 : awake ? c->threads_awake : c->threads);
                if (cost < least) {
                    least = cost;
                    *best = (struct amsim_plan){name, swap, t, way == 0 ? -1 : way == 1};
                }
            }
        }
    }
}

void amsim_fast_plan(int64_t m_rows, int64_t k, int64_t n, int m, int kernel, int threads, int awake, int a_t,
                     int b_t, int dp, struct amsim_plan *plan)
{
    if (m_rows < 1 || k < 1 || n < 1 || m < 0 || m > FAST_MAX_BITS || threads < 1 ||
        (kernel != AMSIM_KERNEL_AUTO && kernel != AMSIM_KERNEL_EXPAND && kernel != AMSIM_KERNEL_LOOKUP)) {
        *plan = (struct amsim_plan){AMSIM_KERNEL_DIRECT, 0, 1, -1};
        return;
    }
    const struct cost_tables *t = __atomic_load_n(&cost_tables, __ATOMIC_ACQUIRE);
    fast_plan(m_rows, k, n, m, kernel, threads > MAX_THREADS ? MAX_THREADS : threads, threads > 1 && awake, a_t,
              b_t, dp ? &t->dp : &t->plain, plan);
}

static void plan_gemm(const struct amsim_lut *lut, const struct amsim_gemm_args *args, int awake,
                      struct amsim_plan *plan)
{
    const int threads = threads_of(args);
    const int64_t M = args->M, N = args->N, K = args->K;
    if (args->kernel == AMSIM_KERNEL_DIRECT || !lut->fast) {
        const double work = (double)M * (double)N * (double)K;
        *plan = (struct amsim_plan){AMSIM_KERNEL_DIRECT, 0,
                                    work * DIRECT_WORK_FACTOR >= PARALLEL_MIN_WORK ? threads : 1, -1};
        return;
    }
    if (M == 0 || N == 0 || K == 0) {
        *plan = (struct amsim_plan){args->kernel == AMSIM_KERNEL_LOOKUP ? AMSIM_KERNEL_LOOKUP : AMSIM_KERNEL_EXPAND,
                                    0, 1, -1};
        return;
    }
    /* a transposed view has contiguous columns: a row stride of 1 element, a larger column one */
    const int a_t = args->ars == 1 && args->acs != 1 && K > 1, b_t = args->brs == 1 && args->bcs != 1 && N > 1;
    const struct cost_tables *t = __atomic_load_n(&cost_tables, __ATOMIC_ACQUIRE);
    fast_plan(M, K, N, lut->m, args->kernel, threads, threads > 1 && awake, a_t, b_t,
              lut->dot_products ? &t->dp : &t->plain, plan);
}

/* Threads for the model kernel: as the direct kernel's, for its larger cost per product. */
static int model_threads(const struct amsim_gemm_args *args)
{
    const double work = (double)args->M * (double)args->N * (double)args->K;
    return work * MODEL_WORK_FACTOR >= PARALLEL_MIN_WORK ? threads_of(args) : 1;
}
