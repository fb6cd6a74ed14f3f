/*
 * engine_internal.h -- the engine's functions for its own tests, tools and Python binding.
 *
 * Not an interface for callers of the engine (that is amsim_gemm.h): these let amsim.gemm make a
 * GEMM ready once and call it cheaply, let tests force a plan and look at the operand split, and
 * let the cost fit (amsim.gemm.planner) count what a plan does with the planner's own counts.
 * cffi reads the block between AMSIM_INTERNAL_CDEF_BEGIN and AMSIM_INTERNAL_CDEF_END.
 */
#ifndef AMSIM_ENGINE_INTERNAL_H
#define AMSIM_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <amsim_gemm.h>

#ifdef __cplusplus
extern "C" {
#endif

/* AMSIM_INTERNAL_CDEF_BEGIN */

/* How a GEMM runs: its kernel (DIRECT, EXPAND or LOOKUP), its orientation (swap: compute
 * C^T = B^T A^T, with the LUT transposed), and its threading (threads; by_rows: split the
 * output by rows (1), by 16-column tiles (0), or as the kernel prefers (-1)). Every plan gives
 * the same bits; only the time differs. */
struct amsim_plan {
    int kernel, swap, threads, by_rows;
};

/* The plan amsim_gemm would choose, for a pool with an awake worker or not. */
int amsim_plan(const struct amsim_lut *lut, const struct amsim_gemm_args *args, int awake,
               struct amsim_plan *plan);
/* amsim_gemm with a given plan (a fast kernel with a LUT that cannot take it: AMSIM_ERR_ARGS).
 * args->kernel other than AUTO runs a fast kernel without the window test, as amsim_gemm. */
int amsim_gemm_planned(const struct amsim_lut *lut, const struct amsim_gemm_args *args,
                       const struct amsim_plan *plan);

/* A GEMM made ready once (shape, strides, options, and the plan for a sleeping and for an awake
 * pool), then called with its operands alone: the binding's fast path for repeated calls. */
struct amsim_ready {
    struct amsim_gemm_args args;       /* a, b, c unused */
    const struct amsim_lut *lut;
    struct amsim_plan plan[2];         /* [amsim_pool_awake()] */
};
int amsim_gemm_ready(const struct amsim_ready *ready, const float *a, const float *b, float *c);

/* What a fast plan does on its busiest thread, as counts of the cost items (the planner's cost is
 * their dot product with struct amsim_costs, plus a hand-off to the pool for several threads,
 * which these counts leave at 0). kernel: EXPAND or LOOKUP, on X (rows x k) and Y (k x cols);
 * y_t: Y is a transposed view; by_rows as in struct amsim_plan. */
void amsim_plan_counts(int kernel, int64_t rows, int64_t k, int64_t cols, int m, int threads, int y_t,
                       int by_rows, struct amsim_costs *counts);
/* The planner's choice among the fast plans for a GEMM of A (m_rows x k) and B (k x n) with an
 * m-bit LUT, with the costs in use (dp: the dot-product table): kernel AUTO, or the one forced;
 * awake: count on an awake worker; a_t, b_t: A or B is a transposed view (contiguous columns). */
void amsim_fast_plan(int64_t m_rows, int64_t k, int64_t n, int m, int kernel, int threads, int awake, int a_t,
                     int b_t, int dp, struct amsim_plan *plan);
/* The cost tables in use (dp: the dot-product one), and the engine's start values. */
void amsim_get_costs(int dp, struct amsim_costs *costs);
void amsim_default_costs(int dp, struct amsim_costs *costs);

/* Threads of args->threads = 0: AMSIM_NUM_THREADS, else the CPUs this process may run on. */
int amsim_default_threads(void);
/* Whether the planner counts on an awake worker now. */
int amsim_pool_awake(void);
/* What handing `threads` parts of work_ns each to the pool costs beyond work_ns. */
double amsim_pool_overhead_ns(int threads, double work_ns);

/* The operand split (amsim_product.h's amsim_split on every element) of rows [r0, r1) of a
 * strided rows x cols operand, row-major (kb = 0) or in kb-column blocks, and the biased
 * exponent range of its normal scales in range[0..1] (range[0] > range[1]: none). */
void amsim_split_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m,
                     int rounding, int64_t kb, float *scale, uint16_t *idx, int64_t r0, int64_t r1,
                     int32_t *range);
/* The range amsim_split_f32 reports, without the split. */
void amsim_range_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m, int rounding,
                     int64_t r0, int64_t r1, int32_t *range);
/* amsim_window_exact on two such ranges. */
int amsim_window_exact_c(const int32_t *x_range, const int32_t *y_range, int v_lo, int v_hi, int mode);

/* This build's kernels: vectors of 16 columns per lookup chunk and per expansion step, and
 * whether it has the bfloat16 dot products. */
int amsim_lookup_chunk_vectors(void);
int amsim_build_group_vectors(void);
int amsim_dot_products(void);

/* AMSIM_INTERNAL_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* AMSIM_ENGINE_INTERNAL_H */
