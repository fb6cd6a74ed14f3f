/*
 * gemm.c -- one GEMM from its arguments to its output: the kernels this build has, the split of
 * the output between threads, the operands' split, the exactness window and its fallback, and the
 * entry points (amsim_gemm and the internal header's planned and ready forms).
 */
#include "engine.h"
#include "simd.h"

/* ---- the kernels of this build: AVX-512 (expand.c, lookup.c) or portable C (portable.c) ---- */

static int expand_kb(int m)
{
#if AMSIM_AVX512
    return expand_kb_avx512(m);
#else
    (void)m;
    return expand_kb_portable();
#endif
}

/* Columns of one panel of the expand kernel (sharing each pass over X). */
static int expand_panel_cols(void)
{
#if AMSIM_AVX512
    return EXPAND_PANEL_COLS_AVX512;
#else
    return EXPAND_PANEL_COLS_PORTABLE;
#endif
}

/* Vectors of 16 columns per chunk of the lookup kernel: each (row, k, chunk) loads the LUT row once. */
static int lookup_chunk_vectors(void)
{
#if AMSIM_VBMI
    return LW_VECS;
#elif AMSIM_AVX512
    return LOOKUP_FLOAT_CHUNK_VECTORS;
#else
    return 1;
#endif
}

/* Vectors of 16 columns that one step of the expand kernel's build of T serves: a panel's 64
 * columns with byte planes (a narrower panel takes as long), else one. */
static int build_group_vectors(void)
{
    return AMSIM_VBMI ? 4 : 1;
}

int amsim_lookup_chunk_vectors(void)
{
    return lookup_chunk_vectors();
}

int amsim_build_group_vectors(void)
{
    return build_group_vectors();
}

static int run_expand(int64_t M, int64_t N, int64_t K, const struct x_operand *xo, const float *sy,
                      const uint16_t *qy, const float *plut, int m, int dp, float *c, int64_t ldc, int64_t i0,
                      int64_t i1, int64_t j0, int64_t j1)
{
#if AMSIM_AVX512
    return expand_avx512(M, N, K, xo, sy, qy, plut, m, dp, c, ldc, i0, i1, j0, j1);
#else
    (void)dp;
    return expand_portable(M, N, K, xo, sy, qy, plut, m, c, ldc, i0, i1, j0, j1);
#endif
}

static int run_lookup(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr, int64_t xk,
                      const float *sy, const uint16_t *qy, const float *plut, int m, float *c, int64_t ldc,
                      int64_t j0, int64_t j1)
{
#if AMSIM_AVX512
    return lookup_avx512(M, N, K, sx, px, xr, xk, sy, qy, plut, m, c, ldc, j0, j1);
#else
    return lookup_portable(M, N, K, sx, px, xr, xk, sy, qy, plut, m, c, ldc, j0, j1);
#endif
}

/*
 * The layout the expand kernel wants X (M x K) split in: blocks of
 * expand_kb(m) columns, so that each panel's sweep of a k-block reads
 * memory in order, or row-major for short rows (K <= 32, at most two cache
 * lines), where splitting into blocks of a few columns costs more than the
 * sweep saves (docs/gemm-internals.md).
 */
#ifndef X_ROW_MAJOR_K_MAX
#define X_ROW_MAJOR_K_MAX 32
#endif

static int expand_x_blocks(int m, int64_t K)
{
    return K <= X_ROW_MAJOR_K_MAX ? 0 : expand_kb(m);
}

/*
 * The dot-product lookups' window (lookup_rows_dp), inside amsim_window_exact's: every product is
 * a multiple of 2^(e_x + e_y + e_v - 7) (a bfloat16 entry has 8 significant bits), and so is every
 * partial sum, which is therefore zero or normal when that exponent is at least -126.
 */
static int amsim_window_dp(int x_lo, int x_hi, int y_lo, int y_hi, int v_lo)
{
    return x_lo > x_hi || y_lo > y_hi || x_lo + y_lo + v_lo - 381 - 7 >= -126;
}

int amsim_window_exact_c(const int32_t *x_range, const int32_t *y_range, int v_lo, int v_hi, int mode)
{
    return amsim_window_exact(x_range[0], x_range[1], y_range[0], y_range[1], v_lo, v_hi, mode);
}

/*
 * Split the output between parts: by 16-column tiles when there are enough for
 * every thread (rows_first: unless there are enough rows), else by rows. Every
 * output is still summed by one part in increasing k, so the partition does not
 * change the result. Returns the number of parts, their (r0, r1, j0, j1) in out.
 */
static int partition(int64_t rows, int64_t cols, int threads, int rows_first, int64_t (*out)[4])
{
    const int64_t tiles = (cols + 15) / 16;
    int n = 0;
    if (threads <= 1) {
        out[n][0] = 0, out[n][1] = rows, out[n][2] = 0, out[n][3] = cols, ++n;
    } else if (tiles >= threads && !(rows_first && rows >= threads)) {
        const int64_t per = (tiles + threads - 1) / threads;
        for (int64_t t = 0; t < tiles; t += per)
            out[n][0] = 0, out[n][1] = rows, out[n][2] = 16 * t,
            out[n][3] = (16 * (t + per) < cols) ? 16 * (t + per) : cols, ++n;
    } else {
        const int64_t per = (rows + threads - 1) / threads;
        for (int64_t r = 0; r < rows; r += per)
            out[n][0] = r, out[n][1] = (r + per < rows) ? r + per : rows, out[n][2] = 0, out[n][3] = cols, ++n;
    }
    return n;
}

#define SPLIT_PART_MIN 65536    /* elements: a smaller operand is split by one thread */

struct gemm_job {
    int64_t rows, cols, K;
    const float *x, *y;
    int64_t xrs, xcs, yrs, ycs;
    const float *lut, *plut;
    int m, rounding, mode, method;
    int dp;                              /* inside amsim_window_dp */
    float *c, *target;
    int64_t ldc, ldt, kb;
    int transpose_c;
    float *xs, *ys;
    uint16_t *xi, *yi;
    int fused;                           /* the expand kernel splits X as it goes */
    int kmajor;                          /* X's split is X^T's, row-major (x_layout) */
    int64_t xr, xk;                      /* X's split for lookup and direct: (i, k) at i * xr + k * xk */
    int xparts, yparts;                  /* split phase: X's row ranges, then Y's */
    int32_t range[2 * 2 * MAX_THREADS];
    int nparts;                          /* kernel phase */
    int64_t part[MAX_THREADS][4];
    int raw_y;                           /* the lookups read Y raw (lookup_vbmi): Y is not split */
    int32_t yrange[MAX_THREADS][2];      /* then each part's range of Y's exponents */
    int used_dp[MAX_THREADS];            /* and whether it took dot products */
    int failed;                          /* a part ran out of memory */
};

static void split_part(void *ctx, int p)
{
    struct gemm_job *g = ctx;
    const int is_x = p < g->xparts;
    const int q = is_x ? p : p - g->xparts, n = is_x ? g->xparts : g->yparts;
    const int64_t rows = is_x && !g->kmajor ? g->rows : g->K, per = (rows + n - 1) / n;
    const int64_t r0 = q * per, r1 = (r0 + per < rows) ? r0 + per : rows;
    int32_t *range = g->range + 2 * p;
    range[0] = 255, range[1] = 0;
    if (r0 >= r1)
        return;
    if (is_x && g->fused)
        amsim_range_f32(g->x, g->rows, g->K, g->xrs, g->xcs, g->m, g->rounding, r0, r1, range);
    else if (is_x && g->kmajor)
        amsim_split_f32(g->x, g->K, g->rows, g->xcs, g->xrs, g->m, g->rounding, 0, g->xs, g->xi, r0, r1, range);
    else if (is_x)
        amsim_split_f32(g->x, g->rows, g->K, g->xrs, g->xcs, g->m, g->rounding, g->kb, g->xs, g->xi, r0, r1, range);
    else
        amsim_split_f32(g->y, g->K, g->cols, g->yrs, g->ycs, g->m, g->rounding, 0, g->ys, g->yi, r0, r1, range);
}

/* dst[j * ldd + i] = src[i * lds + j] for a rows x cols block: 16 x 16 tiles transposed in
 * registers (element by element, a swapped plan's 1.25 M outputs took over a millisecond). */
static void transpose_block(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t rows, int64_t cols)
{
#if AMSIM_AVX512
    for (int64_t i0 = 0; i0 < rows; i0 += 16) {
        const int64_t nr = (rows - i0 < 16) ? rows - i0 : 16;
        const __mmask16 rmask = (__mmask16)(nr == 16 ? 0xFFFFu : (1u << nr) - 1u);
        for (int64_t j0 = 0; j0 < cols; j0 += 16) {
            const int64_t nc = (cols - j0 < 16) ? cols - j0 : 16;
            const __mmask16 cmask = (__mmask16)(nc == 16 ? 0xFFFFu : (1u << nc) - 1u);
            __m512 t[16];
            for (int64_t r = 0; r < 16; ++r)
                t[r] = r < nr ? _mm512_maskz_loadu_ps(cmask, src + (i0 + r) * lds + j0) : _mm512_setzero_ps();
            transpose16(t);
            for (int64_t c = 0; c < nc; ++c)
                _mm512_mask_storeu_ps(dst + (j0 + c) * ldd + i0, rmask, t[c]);
        }
    }
#else
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
            dst[j * ldd + i] = src[i * lds + j];
#endif
}

static void kernel_part(void *ctx, int p)
{
    struct gemm_job *g = ctx;
    const int64_t r0 = g->part[p][0], r1 = g->part[p][1], j0 = g->part[p][2], j1 = g->part[p][3];
    const int64_t K = g->K;
    int rc = 0;
    if (g->method == 1) {
        const struct x_operand xo = {g->xs, g->xi, g->kb, g->fused ? g->x : NULL, g->xrs, g->xcs, g->rounding};
        rc = run_expand(g->rows, g->cols, K, &xo, g->ys, g->yi, g->plut, g->m, g->dp, g->target, g->ldt, r0, r1,
                        j0, j1);
    } else if (g->method == 2 && g->raw_y) {
#if AMSIM_VBMI
        const struct y_raw yr = {g->y, g->yrs, g->ycs, g->m, g->rounding == AMSIM_RNE};
        rc = lookup_vbmi(r1 - r0, K, g->xs + r0 * g->xr, g->xi + r0 * g->xr, g->xr, g->xk, &yr, g->plut, g->m, g->dp,
                         g->target + r0 * g->ldt, g->ldt, j0, j1, g->yrange[p], &g->used_dp[p]);
#endif
    } else if (g->method == 2)
        rc = run_lookup(r1 - r0, g->cols, K, g->xs + r0 * g->xr, g->xi + r0 * g->xr, g->xr, g->xk, g->ys,
                               g->yi, g->plut, g->m, g->target + r0 * g->ldt, g->ldt, j0, j1);
    else
        direct_rows(r1 - r0, g->cols, K, g->xs + r0 * g->xr, g->xi + r0 * g->xr, g->xr, g->xk, g->ys, g->yi, g->lut,
                    (int64_t)1 << g->m, g->mode, g->target + r0 * g->ldt, g->ldt, j0, j1);
    if (rc != 0) {
        __atomic_store_n(&g->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    if (g->transpose_c)  /* this part's block of the result, to its place in c */
        transpose_block(g->target + r0 * g->ldt + j0, g->ldt, g->c + j0 * g->ldc + r0, g->ldc, r1 - r0, j1 - j0);
}

/*
 * Whether the expand kernel should split X as it goes: it then splits X once
 * per column panel a thread sweeps, against once in all beforehand, but never
 * writes the split to memory and reads it back. That pays for a transposed
 * view (a filter gradient's patches), whose split beforehand also transposes,
 * several times slower than splitting its contiguous columns block by block;
 * for contiguous rows it does not (docs/gemm-internals.md).
 */
#ifndef FUSE_PANELS
#define FUSE_PANELS 4
#endif
static int expand_splits_as_it_goes(int64_t cols, int threads, int64_t xrs, int64_t xcs)
{
    if (!(xrs == 1 && xcs != 1))  /* rows contiguous: the split beforehand is as fast, and done once */
        return 0;
    const int64_t tiles = (cols + 15) / 16;
    const int64_t tiles_per_part = (threads > 1 && tiles >= threads) ? (tiles + threads - 1) / threads : tiles;
    const int64_t panels = (16 * tiles_per_part + expand_panel_cols() - 1) / expand_panel_cols();
    return panels <= FUSE_PANELS;
}

/*
 * How X is split for g->method: for the expand kernel in k-blocks, or as it
 * goes; for the others row-major, except a transposed view (a filter
 * gradient's patches, or B^T in a swapped plan), whose split would transpose
 * it (several times slower than in memory order): X^T is
 * split instead, in memory order, and the kernels read X's scalars k-major.
 */
static void x_layout(struct gemm_job *g, int threads)
{
    const int expand = g->method == 1;
    g->kb = expand ? expand_x_blocks(g->m, g->K) : 0;
    g->fused = expand && expand_splits_as_it_goes(g->cols, threads, g->xrs, g->xcs);
    g->kmajor = !expand && g->xrs == 1 && g->xcs != 1;
    g->xr = g->kmajor ? 1 : g->K;
    g->xk = g->kmajor ? g->rows : 1;
}

static int split_parts(int64_t elements, int threads)
{
    const int64_t n = elements / SPLIT_PART_MIN;
    return n < 1 ? 1 : (n < threads ? (int)n : threads);
}

/* Whether the lookups read Y raw: with byte planes (lookup_vbmi), when every part has more than one
 * vector of columns (a single one takes the float rows' blend trees, which read Y's split). */
static int lookup_reads_y_raw(const struct gemm_job *g)
{
    if (!AMSIM_VBMI || g->method != 2)
        return 0;
    for (int p = 0; p < g->nparts; ++p)
        if (g->part[p][3] - g->part[p][2] <= 16)
            return 0;
    return 1;
}

/* The split buffers of X (unless the expand kernel splits it as it goes) and of Y: the caller's, which
 * workers write and read. Returns -1 when out of memory. */
static int split_buffers(struct gemm_job *g, int x, int y)
{
    if (x && !g->fused) {
        g->xs = work_buffer(SLOT_XS, sizeof(float) * (size_t)(g->rows * g->K));
        g->xi = work_buffer(SLOT_XI, sizeof(uint16_t) * (size_t)(g->rows * g->K));
        if (!g->xs || !g->xi)
            return -1;
    }
    if (y) {
        g->ys = work_buffer(SLOT_YS, sizeof(float) * (size_t)(g->K * g->cols));
        g->yi = work_buffer(SLOT_YI, sizeof(uint16_t) * (size_t)(g->K * g->cols));
        if (!g->ys || !g->yi)
            return -1;
    }
    return 0;
}

/* Split X and/or Y on the pool, setting rx and/or ry to their exponent ranges. */
static void split_operands(struct gemm_job *g, int threads, int x, int y, int32_t rx[2], int32_t ry[2])
{
    g->xparts = x ? split_parts(g->rows * g->K, threads) : 0;
    g->yparts = y ? split_parts(g->K * g->cols, threads) : 0;
    run_parts(split_part, g, g->xparts + g->yparts, threads);
    if (x)
        rx[0] = 255, rx[1] = 0;
    if (y)
        ry[0] = 255, ry[1] = 0;
    for (int p = 0; p < g->xparts + g->yparts; ++p) {
        int32_t *r = p < g->xparts ? rx : ry;
        r[0] = g->range[2 * p] < r[0] ? g->range[2 * p] : r[0];
        r[1] = g->range[2 * p + 1] > r[1] ? g->range[2 * p + 1] : r[1];
    }
}

/* Operands outside the fast kernels' window: the direct kernel, every rule applied per product. X is
 * split again if its layout changes, Y if it was read raw. Returns -1 when out of memory. */
static int fall_back_to_direct(struct gemm_job *g, int threads, int by_rows, int32_t rx[2], int32_t ry[2])
{
    const int kb = g->kb, fused = g->fused, kmajor = g->kmajor, split_y = g->raw_y;
    g->method = 0, g->raw_y = 0;
    x_layout(g, threads);
    const int split_x = kb != g->kb || fused != g->fused || kmajor != g->kmajor;
    if (split_buffers(g, split_x, split_y))
        return -1;
    if (split_x || split_y)
        split_operands(g, threads, split_x, split_y, rx, ry);
    g->nparts = partition(g->rows, g->cols, threads, by_rows < 0 ? 0 : by_rows, g->part);
    return 0;
}

/*
 * A whole GEMM, target = X (x) Y (rows x cols), on up to `threads` threads:
 * split, window test, kernel, in one call (orchestrating the steps from Python
 * would cost more than small GEMMs' arithmetic).
 *
 * x, y: strided operands (element strides). method: 0 direct, 1 expand, 2
 * lookup; forced: run the fast method without the window test. by_rows: split
 * the output between threads by rows when there are enough (1), by column
 * tiles when there are enough (0), or -1: rows first for lookup, tiles first
 * for the others. lut: the table in this orientation (row = X's mantissa),
 * rows 2^M apart; plut: its prepared layout (lut_prep.c), for the fast
 * methods. v_lo, v_hi: the LUT entries' exponent range. The result goes to c
 * (leading dimension ldc), or transposed (c[j * ldc + i]) when transpose_c is
 * set. Returns 0, or -1 when out of memory.
 *
 * Lookups that read Y raw learn its range as they go: the window is tested
 * after them, and in the rare GEMM outside it (exponents near float32's
 * limits) the kernel runs again, direct or without dot products.
 */
static int engine_gemm(int64_t rows, int64_t cols, int64_t K, const float *x, int64_t xrs, int64_t xcs,
                       const float *y, int64_t yrs, int64_t ycs, const float *lut, const float *plut, int m,
                       int v_lo, int v_hi, int rounding, int mode, int method, int forced, float *c, int64_t ldc,
                       int transpose_c, int threads, int by_rows)
{
    threads = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    /* field by field: a compound literal would also zero the per-part arrays (kilobytes, a
     * noticeable part of a small GEMM), which are written before they are read */
    struct gemm_job job, *g = &job;
    g->rows = rows, g->cols = cols, g->K = K, g->x = x, g->y = y;
    g->xrs = xrs, g->xcs = xcs, g->yrs = yrs, g->ycs = ycs;
    g->lut = lut, g->plut = plut, g->m = m, g->rounding = rounding, g->mode = mode, g->method = method;
    g->c = c, g->ldc = ldc, g->transpose_c = transpose_c, g->failed = 0;
    g->xs = g->ys = NULL, g->xi = g->yi = NULL;
    x_layout(g, threads);
    g->nparts = partition(rows, cols, threads, by_rows < 0 ? g->method == 2 : by_rows, g->part);
    g->raw_y = lookup_reads_y_raw(g);
    g->target = transpose_c ? work_buffer(SLOT_OUT, sizeof(float) * (size_t)(rows * cols)) : c;
    g->ldt = transpose_c ? cols : ldc;
    if (!g->target || split_buffers(g, 1, !g->raw_y))
        return -1;
    int32_t rx[2], ry[2] = {255, 0};  /* the operands' normal exponent ranges */
    split_operands(g, threads, 1, !g->raw_y, rx, ry);
    if (g->method != 0 && !g->raw_y && !forced && !amsim_window_exact(rx[0], rx[1], ry[0], ry[1], v_lo, v_hi, mode)
        && fall_back_to_direct(g, threads, by_rows, rx, ry))
        return -1;
    g->dp = g->method != 0 && (g->raw_y || amsim_window_dp(rx[0], rx[1], ry[0], ry[1], v_lo));
    run_parts(kernel_part, g, g->nparts, threads);
    if (g->raw_y && !g->failed) {
        int used_dp = 0;
        for (int p = 0; p < g->nparts; ++p) {
            ry[0] = g->yrange[p][0] < ry[0] ? g->yrange[p][0] : ry[0];
            ry[1] = g->yrange[p][1] > ry[1] ? g->yrange[p][1] : ry[1];
            used_dp |= g->used_dp[p];
        }
        if (!forced && !amsim_window_exact(rx[0], rx[1], ry[0], ry[1], v_lo, v_hi, mode)) {
            if (fall_back_to_direct(g, threads, by_rows, rx, ry))
                return -1;
            run_parts(kernel_part, g, g->nparts, threads);
        } else if (used_dp && !amsim_window_dp(rx[0], rx[1], ry[0], ry[1], v_lo)) {
            g->dp = 0;
            run_parts(kernel_part, g, g->nparts, threads);
        }
    }
    pool_gemm_returned();
    return g->failed ? -1 : 0;
}

/* ---- entry points ---- */

/* Sizes, strides and options in range (the operands' pointers aside: a plan needs none). */
static int args_shape_valid(const struct amsim_gemm_args *g)
{
    if (!g || g->M < 0 || g->N < 0 || g->K < 0 || g->ars < 0 || g->acs < 0 || g->brs < 0 || g->bcs < 0)
        return 0;
    if ((g->rounding != AMSIM_TRUNCATE && g->rounding != AMSIM_RNE) ||
        (g->mode != AMSIM_MODE_IEEE && g->mode != AMSIM_MODE_APPROXTRAIN) ||
        g->kernel < AMSIM_KERNEL_AUTO || g->kernel > AMSIM_KERNEL_LOOKUP || g->threads < 0)
        return 0;
    return !(g->M > 1 && g->N > 0 && g->ldc < g->N);
}

static int args_valid(const struct amsim_gemm_args *g)
{
    return args_shape_valid(g) && (g->M == 0 || g->N == 0 || g->c) && (g->M == 0 || g->K == 0 || g->a) &&
           (g->K == 0 || g->N == 0 || g->b);
}

/* The threads a GEMM may use: args->threads, or the engine's default for 0. */
static int threads_of(const struct amsim_gemm_args *g)
{
    const int t = g->threads > 0 ? g->threads : default_threads();
    return t > MAX_THREADS ? MAX_THREADS : t;
}

/* A checked GEMM with its plan, on operands a, b, c (those of g are not read: a made-ready GEMM
 * passes its own). The swapped orientation computes C^T = B^T A^T: X = B^T and Y = A^T (their
 * strides exchanged), the LUT transposed, the result written back transposed. */
static int run_planned(const struct amsim_lut *lut, const struct amsim_gemm_args *g, const float *a, const float *b,
                       float *c, const struct amsim_plan *p)
{
    const int64_t M = g->M, N = g->N, K = g->K;
    if (M == 0 || N == 0)
        return AMSIM_OK;
    if (K == 0) {  /* empty sums: +0 */
        for (int64_t i = 0; i < M; ++i)
            memset(c + i * g->ldc, 0, sizeof(float) * (size_t)N);
        return AMSIM_OK;
    }
    const int fast = p->kernel != AMSIM_KERNEL_DIRECT;
    if (p->kernel < AMSIM_KERNEL_DIRECT || p->kernel > AMSIM_KERNEL_LOOKUP || (fast && !lut->fast) ||
        lut->m < 0 || lut->m > MAX_LUT_BITS)
        return AMSIM_ERR_ARGS;
    const int s = p->swap != 0, forced = g->kernel != AMSIM_KERNEL_AUTO;
    const float *table = lut->table[s], *plut = fast ? lut->prepared[s] : NULL;
    if (!table)  /* a LUT of more than 8 bits is kept in one orientation */
        return AMSIM_ERR_ARGS;
    const int v_lo = fast ? lut->v_lo : 0, v_hi = fast ? lut->v_hi : 0;
    const int threads = p->threads < 1 ? 1 : p->threads;
    const int rc = s ? engine_gemm(N, M, K, b, g->bcs, g->brs, a, g->acs, g->ars, table, plut, lut->m, v_lo, v_hi,
                                   g->rounding, g->mode, p->kernel, forced, c, g->ldc, 1, threads, p->by_rows)
                     : engine_gemm(M, N, K, a, g->ars, g->acs, b, g->brs, g->bcs, table, plut, lut->m, v_lo, v_hi,
                                   g->rounding, g->mode, p->kernel, forced, c, g->ldc, 0, threads, p->by_rows);
    return rc ? AMSIM_ERR_MEMORY : AMSIM_OK;
}

int amsim_gemm(const struct amsim_lut *lut, const struct amsim_gemm_args *args)
{
    if (!lut || !args_valid(args) || (args->kernel > AMSIM_KERNEL_DIRECT && !lut->fast))
        return AMSIM_ERR_ARGS;
    struct amsim_plan plan;
    plan_gemm(lut, args, amsim_pool_awake(), &plan);
    return run_planned(lut, args, args->a, args->b, args->c, &plan);
}

int amsim_plan(const struct amsim_lut *lut, const struct amsim_gemm_args *args, int awake,
               struct amsim_plan *plan)
{
    if (!lut || !plan || !args_shape_valid(args) || (args->kernel > AMSIM_KERNEL_DIRECT && !lut->fast))
        return AMSIM_ERR_ARGS;
    plan_gemm(lut, args, awake, plan);
    return AMSIM_OK;
}

int amsim_gemm_planned(const struct amsim_lut *lut, const struct amsim_gemm_args *args,
                       const struct amsim_plan *plan)
{
    if (!lut || !plan || !args_valid(args))
        return AMSIM_ERR_ARGS;
    return run_planned(lut, args, args->a, args->b, args->c, plan);
}

/* No checks: the binding checked the arguments when it made the GEMM ready (amsim_plan). */
int amsim_gemm_ready(const struct amsim_ready *ready, const float *a, const float *b, float *c)
{
    return run_planned(ready->lut, &ready->args, a, b, c, &ready->plan[amsim_pool_awake()]);
}
