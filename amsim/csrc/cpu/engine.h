/*
 * engine.h -- what the CPU engine's files share: build features, internal types, and the
 * functions one file defines for another.
 *
 * The engine is compiled as one translation unit (engine.c includes every file), so that the
 * kernels' helpers inline across files and nothing but the two headers' functions is exported.
 * Every function here is therefore static, declared once here and defined once in the file
 * that owns its concern. docs/gemm-internals.md describes the kernels.
 */
#ifndef AMSIM_ENGINE_H
#define AMSIM_ENGINE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* sched_getaffinity */
#endif

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amsim_gemm.h>
#include <amsim_product.h>

#include "engine_internal.h"

/* The instruction sets this build uses: AVX-512 (portable C without it, or with AMSIM_PORTABLE),
 * byte-plane lookups with AVX512-VBMI, bfloat16 dot products with AVX512-BF16; AVX2 where there is
 * no AVX-512, for the integer GEMM only. */
#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
#define AMSIM_AVX512 1
#include <immintrin.h>
#else
#define AMSIM_AVX512 0
#endif
#if AMSIM_AVX512 && defined(__AVX512VBMI__) && defined(__AVX512BW__)
#define AMSIM_VBMI 1
#else
#define AMSIM_VBMI 0
#endif
/* AVX2 without AVX-512 (the integer GEMM's AVX2 table kernel; the float kernels are portable C there). */
#if !AMSIM_AVX512 && defined(__AVX2__) && !defined(AMSIM_PORTABLE)
#define AMSIM_AVX2 1
#include <immintrin.h>
#else
#define AMSIM_AVX2 0
#endif
#if AMSIM_VBMI && defined(__AVX512BF16__)
#define AMSIM_DPBF16 1
#else
#define AMSIM_DPBF16 0
#endif

#define MAX_THREADS 256         /* parts of one GEMM at most */
#define MAX_LUT_BITS 12         /* the largest M with a LUT (2^24 entries) */
#define FAST_MAX_BITS 8         /* the expand and lookup kernels' largest M */

/* ---- work.c: per-thread buffers ---- */
enum { SLOT_T, SLOT_CBUF, SLOT_XS, SLOT_XI, SLOT_YS, SLOT_YI, SLOT_OUT, SLOT_XBS, SLOT_XBI, SLOT_QB, SLOT_DB,
       SLOT_SB, SLOT_YB,
       WORK_SLOTS };
static void *work_buffer(int slot, size_t bytes);

/* ---- pool.c: the thread pool and the default thread count ---- */
typedef void (*part_fn)(void *ctx, int part);
static double now_ns(void);
static void run_parts(part_fn fn, void *ctx, int nparts, int threads);
static void pool_gemm_returned(void);
static int default_threads(void);
static int pass_threads(int64_t work, int64_t min_work, int threads);
static int pass_parts(int64_t rows, int threads);

/* ---- split.c: operand split ---- */
/*
 * The expand kernel's X: split beforehand (sx, px: in xkb-column blocks,
 * amsim_split_f32's layout, or row-major for xkb = 0), or raw (x != NULL,
 * strides rs, cs): then each block is split when the kernel reaches it, into
 * this thread's buffer. Splitting as it goes spares the memory a large
 * operand's split would take and the time to write and read it back; the
 * price is a split per column panel.
 */
struct x_operand {
    const float *sx;
    const uint16_t *px;
    int64_t xkb;
    const float *x;
    int64_t rs, cs;
    int rounding;
};
static int x_block(const struct x_operand *xo, int64_t M, int64_t K, int m, int64_t rb, int64_t re, int64_t kb,
                   int kn, const float **as, const uint16_t **ap, int64_t *ldr, int64_t *ldk);

/* ---- lut_prep.c: the fast kernels' LUT layout ---- */
static int lut_stride(int m);
static size_t float_rows_bytes(int m);
static size_t prepared_bytes(int m);
static int lut_hi16(const void *plut, int m);

/* ---- expand.c, lookup.c (AVX-512) and portable.c: the fast kernels ---- */
#if AMSIM_AVX512
static int expand_kb_avx512(int m);
static int expand_avx512(int64_t M, int64_t N, int64_t K, const struct x_operand *xo, const float *sy,
                         const uint16_t *qy, const float *plut, int m, int dp, float *c, int64_t ldc, int64_t i0,
                         int64_t i1, int64_t j0, int64_t j1);
static int lookup_avx512(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                         int64_t xk, const float *sy, const uint16_t *qy, const float *plut, int m, float *c,
                         int64_t ldc, int64_t j0, int64_t j1);
#define EXPAND_PANEL_COLS_AVX512 64
#define LOOKUP_FLOAT_CHUNK_VECTORS 4
#endif
#if AMSIM_VBMI
/*
 * Y as lookup_vbmi reads it: raw, K x N with (k, j) at k * rs + j * cs. The
 * kernel splits each block of Y itself, in registers, as it prepares the block
 * for its lookups: no split of Y is written to memory and read back, and no
 * pass over Y comes before the kernel. So its exponent range is known only
 * afterwards: each part reports the range of the columns it prepared, and
 * the GEMM tests the window then (and runs again when it fails).
 */
struct y_raw {
    const float *y;
    int64_t rs, cs;
    int m, rne;
};
static int lookup_vbmi(int64_t M, int64_t K, const float *sx, const uint16_t *px, int64_t xr, int64_t xk,
                       const struct y_raw *yr, const float *plut, int m, int dp, float *c, int64_t ldc,
                       int64_t j0, int64_t j1, int32_t yrange[2], int *used_dp);
#define LW_VECS 12              /* lookup_vbmi's vectors per column chunk: 12 accumulators */
#endif
/* (unused where the AVX-512 kernels are built) */
__attribute__((unused)) static int expand_kb_portable(void);
__attribute__((unused)) static int expand_portable(int64_t M, int64_t N, int64_t K, const struct x_operand *xo,
                                                  const float *sy, const uint16_t *qy, const float *plut, int m,
                                                  float *c, int64_t ldc, int64_t i0, int64_t i1, int64_t j0,
                                                  int64_t j1);
__attribute__((unused)) static int lookup_portable(int64_t M, int64_t N, int64_t K, const float *sx,
                                                  const uint16_t *px, int64_t xr, int64_t xk, const float *sy,
                                                  const uint16_t *qy, const float *plut, int m, float *c,
                                                  int64_t ldc, int64_t j0, int64_t j1);
#define EXPAND_PANEL_COLS_PORTABLE 128

/* ---- direct.c ---- */
static void direct_rows(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                        int64_t xk, const float *sy, const uint16_t *qy, const float *lut, int64_t lds, int mode,
                        float *c, int64_t ldc, int64_t j0, int64_t j1);

/* ---- gemm.c: a planned GEMM, this build's kernels, the arguments' checks ---- */
static int expand_kb(int m);
static int expand_panel_cols(void);
static int lookup_chunk_vectors(void);
static int build_group_vectors(void);
static int threads_of(const struct amsim_gemm_args *g);
static int args_valid(const struct amsim_gemm_args *g);

/* ---- planner.c: the plan of a GEMM ---- */
static void plan_gemm(const struct amsim_lut *lut, const struct amsim_gemm_args *args, int awake,
                      struct amsim_plan *plan);
static int model_threads(const struct amsim_gemm_args *args);

#endif /* AMSIM_ENGINE_H */
