/*
 * CPU kernels of the approximate GEMM (specs/numerics.md section 3).
 *
 * C[i, j] = sum_k A[i, k] (x) B[k, j], each output accumulated in float32 in
 * increasing k from +0, exactly the order of amsim/reference.py, so results
 * are bit-identical to the reference and to themselves for any thread count.
 * The product (x) is amsim_product.h's, shared with the CUDA kernels.
 *
 * Kernels:
 *   expand  (M <= 8, operands in the "safe window", LUT entries positive and
 *           finite): for every k the LUT is expanded into the second operand,
 *           T[p][j] = scale_b(k, j) * LUT[p][idx_b(k, j)] for all 2^M
 *           mantissas p, so the inner loop is a contiguous multiply-add over j:
 *           C[i, j] += scale_a(i, k) * T[idx_a(i, k)][j]. In the safe window
 *           (see amsim/gemm.py) every T entry and every product is a normal
 *           float32, so T * scale_a is exactly scale_a * scale_b * LUT: the
 *           same value amsim_mul_split returns, and fused multiply-adds are
 *           harmless (the product is exact). Special operands work too: 0, inf
 *           and NaN scales propagate through the two exact multiplications as
 *           section 2.2 says, given LUT entries that are positive and finite.
 *   lookup  (same conditions): the same products without the expansion, each
 *           looked up in the LUT row of X's mantissa held in registers, for
 *           GEMMs with too few rows to share an expansion.
 *   Both take LUTs of bfloat16 entries with bfloat16 dot products where those
 *   are exact too (amsim_window_dp; build_panel_dp, lookup_rows_dp).
 *   direct  (anything else): amsim_mul_split per product, all rules applied.
 *   model   (M > 12, no LUT): the compiled C model per product.
 *
 * The kernels take a range of the output so that amsim_gemm can split it
 * between the worker pool's threads; they share nothing but read-only inputs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

#include <amsim_product.h>
#include <pthread.h>

/*
 * Per-thread work buffers, kept between calls: allocating (and first touching)
 * a fresh megabyte on every call costs more than a small GEMM. Each thread
 * owns its buffers, so concurrent calls share nothing; they are freed when the
 * thread exits.
 */
enum { SLOT_T, SLOT_CBUF, SLOT_XS, SLOT_XI, SLOT_YS, SLOT_YI, SLOT_OUT, SLOT_XBS, SLOT_XBI, SLOT_QB, SLOT_DB,
       SLOT_SB, SLOT_YB,
       WORK_SLOTS };
struct work_buffers {
    void *ptr[WORK_SLOTS];
    size_t size[WORK_SLOTS];
};
static pthread_key_t work_key;
static pthread_once_t work_once = PTHREAD_ONCE_INIT;

static void work_free(void *p)
{
    struct work_buffers *w = p;
    for (int i = 0; i < WORK_SLOTS; ++i)
        free(w->ptr[i]);
    free(w);
}

static void work_init(void) { pthread_key_create(&work_key, work_free); }

/* A 64-byte aligned buffer of at least `bytes` for this thread's slot, or NULL. */
static void *work_buffer(int slot, size_t bytes)
{
    pthread_once(&work_once, work_init);
    struct work_buffers *w = pthread_getspecific(work_key);
    if (!w) {
        w = calloc(1, sizeof *w);
        if (!w || pthread_setspecific(work_key, w) != 0) {
            free(w);
            return NULL;
        }
    }
    if (w->size[slot] < bytes) {
        free(w->ptr[slot]);
        bytes = (bytes + 63) & ~(size_t)63;
        w->ptr[slot] = aligned_alloc(64, bytes);
        w->size[slot] = w->ptr[slot] ? bytes : 0;
    }
    return w->ptr[slot];
}

/*
 * A pool of worker threads for the GEMMs' parts, started on first use.
 *
 * A caller posts a job (a function and its number of parts), takes parts
 * itself until none are left unclaimed, then waits for the parts workers took.
 * So a job never waits for a busy pool: with workers taken by another caller's
 * job (TensorFlow runs the two backward GEMMs at once), a caller does its own
 * parts. Parts write disjoint outputs, so who runs which part changes nothing
 * in the result. Between jobs a worker polls for POOL_SPIN_NS, then sleeps on a
 * condition variable: polling longer would take the cores from the framework
 * around us (OpenBLAS's ~0.1 s of spinning slowed amsim's next GEMM 2x).
 * Polling yields the CPU each round: a worker may share its CPU with the
 * caller it waits for (Linux sometimes took hundreds of milliseconds to move
 * one of them in a 2-CPU virtual machine).
 */
static inline void poll_pause(void)
{
    sched_yield();
}

#ifndef POOL_SPIN_NS
#define POOL_SPIN_NS 200000.0   /* how long an idle worker polls for the next job */
#endif

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

typedef void (*part_fn)(void *ctx, int part);
struct pool_job {
    part_fn fn;
    void *ctx;
    int nparts, claimed, unfinished;
    struct pool_job *next;
    double taken;                        /* now_ns() when a worker first took a part, or 0 */
};
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_work = PTHREAD_COND_INITIALIZER;   /* a job was posted */
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;   /* a job's last part finished */
static struct pool_job *pool_jobs;                             /* jobs with unclaimed parts */
static int pool_workers;
static int pool_polling;                                       /* workers polling, not asleep */
static int64_t pool_last_return;                               /* when a GEMM last returned (now_ns) */
static int64_t pool_shared_until;                              /* now_ns() until which not to count on
                                                                * a worker (pool_judge) */

/*
 * Whether the planner may count on an awake worker: one is polling, or GEMMs
 * come back to back (one returned less than POOL_SPIN_NS ago), so that a
 * worker woken now will still be polling for the next. A run of small GEMMs
 * then pays one wake-up, not one each; counting every one of them as waking a
 * sleeping pool, such a run would never wake it.
 */
int amsim_pool_awake(void)
{
    const double now = now_ns();
    if (now < (double)__atomic_load_n(&pool_shared_until, __ATOMIC_RELAXED))
        return 0;
    return __atomic_load_n(&pool_polling, __ATOMIC_RELAXED) > 0 ||
           now - (double)__atomic_load_n(&pool_last_return, __ATOMIC_RELAXED) < POOL_SPIN_NS;
}

/* Claim a part of the first job that has one (pool_mu held); -1 when there is none. A job
 * leaves the list with its last claim, so it is reachable only while it has parts to give. */
static int pool_claim(struct pool_job **job)
{
    struct pool_job *j = pool_jobs;
    if (!j)
        return -1;
    const int part = j->claimed++;
    if (j->claimed == j->nparts)
        pool_jobs = j->next;
    if (j->taken == 0)
        j->taken = now_ns();
    *job = j;
    return part;
}

/* One part of the job done (its outputs published with the count, for a caller that polls it). */
static void pool_finish(struct pool_job *job)
{
    pthread_mutex_lock(&pool_mu);
    if (__atomic_sub_fetch(&job->unfinished, 1, __ATOMIC_RELEASE) == 0)
        pthread_cond_broadcast(&pool_done);
    pthread_mutex_unlock(&pool_mu);   /* the job may be gone from here on: its caller returns */
}

static void *pool_worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        struct pool_job *job;
        const int part = pool_claim(&job);
        if (part < 0) {
            /* Poll a little before sleeping: waking a sleeping thread takes tens of microseconds
             * (more in a VM), as much as a small GEMM, and GEMMs come in runs (a network's layers). */
            pthread_mutex_unlock(&pool_mu);
            __atomic_add_fetch(&pool_polling, 1, __ATOMIC_RELAXED);
            const double until = now_ns() + POOL_SPIN_NS;
            /* an unlocked peek, only a hint: the claim below is made under the lock */
            while (!__atomic_load_n(&pool_jobs, __ATOMIC_RELAXED) && now_ns() < until)
                poll_pause();
            __atomic_sub_fetch(&pool_polling, 1, __ATOMIC_RELAXED);
            pthread_mutex_lock(&pool_mu);
            if (!pool_jobs)
                pthread_cond_wait(&pool_work, &pool_mu);
            continue;
        }
        pthread_mutex_unlock(&pool_mu);
        job->fn(job->ctx, part);
        pool_finish(job);
        pthread_mutex_lock(&pool_mu);
    }
    return NULL;
}

/* After fork() the child has none of the parent's workers (and maybe a lock a worker held). */
static void pool_after_fork(void)
{
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_work, NULL);
    pthread_cond_init(&pool_done, NULL);
    pool_jobs = NULL;
    pool_workers = pool_polling = 0;
}

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static long pool_cores;   /* sysconf reads a file: once, not per job */

static void pool_init(void)
{
    pool_cores = sysconf(_SC_NPROCESSORS_ONLN);
    pthread_atfork(NULL, NULL, pool_after_fork);
}

/* Start workers until there are `want` (pool_mu held); fewer when the system refuses threads. */
static void pool_grow(int want)
{
    while (pool_workers < want) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&th, &attr, pool_worker, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;
        ++pool_workers;
    }
}

/*
 * An awake worker that takes no part of a job while the caller does one of
 * POOL_LATE_NS or more is not running: it shares a CPU with the caller, or with
 * another busy thread (on this 2-vCPU VM, a spinning OpenBLAS thread), and Linux
 * may take tens of milliseconds to move it. Meanwhile a small GEMM on two
 * threads ran slower than on one (42-53 us against 42 for LeNet-5's fc2), so the
 * planner stops counting on the worker for POOL_SHARED_NS (amsim_pool_awake);
 * a worker that takes its part at once lifts that.
 */
#ifndef POOL_LATE_NS
#define POOL_LATE_NS 10000.0
#endif
#ifndef POOL_SHARED_NS
#define POOL_SHARED_NS 10e6
#endif
static void pool_judge(int awake, double posted, double first_part, double taken)
{
    if (!awake || first_part < POOL_LATE_NS)
        return;  /* a sleeping worker is late by its wake-up; a short part leaves it no time */
    const int late = taken == 0 || taken - posted > POOL_LATE_NS;
    __atomic_store_n(&pool_shared_until, late ? (int64_t)(now_ns() + POOL_SHARED_NS) : 0, __ATOMIC_RELAXED);
}

/* fn(ctx, p) for p in [0, nparts), on up to `threads` threads (the caller's included). */
static void run_parts(part_fn fn, void *ctx, int nparts, int threads)
{
    if (nparts <= 1 || threads <= 1) {
        for (int p = 0; p < nparts; ++p)
            fn(ctx, p);
        return;
    }
    pthread_once(&pool_once, pool_init);
    struct pool_job job = {fn, ctx, nparts, 0, nparts, NULL, 0};
    pthread_mutex_lock(&pool_mu);
    const int awake = __atomic_load_n(&pool_polling, __ATOMIC_RELAXED) > 0;
    const double posted = now_ns();
    double first_part = -1;
    /* more workers than cores would only take turns (and poll while they wait) */
    pool_grow(pool_cores > 0 && pool_cores < threads ? (int)pool_cores - 1 : threads - 1);
    struct pool_job **tail = &pool_jobs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = &job;
    for (int w = 1; w < nparts && w < threads; ++w)
        pthread_cond_signal(&pool_work);
    /* take parts of our own job; others' are left to the workers */
    while (job.claimed < job.nparts) {
        const int part = job.claimed++;
        if (job.claimed == job.nparts) {
            struct pool_job **at = &pool_jobs;
            while (*at != &job)
                at = &(*at)->next;
            *at = job.next;
        }
        pthread_mutex_unlock(&pool_mu);
        const double start = now_ns();
        fn(ctx, part);
        if (first_part < 0)
            first_part = now_ns() - start;
        pthread_mutex_lock(&pool_mu);
        __atomic_sub_fetch(&job.unfinished, 1, __ATOMIC_RELAXED);
    }
    const double taken = job.taken;  /* written under pool_mu */
    pthread_mutex_unlock(&pool_mu);
    pool_judge(awake, posted, first_part, taken);
    /* The workers' parts are under way: poll for them before sleeping, since a woken caller
     * would come back tens of microseconds late (the same wake-up the workers avoid). */
    const double until = now_ns() + POOL_SPIN_NS;
    while (__atomic_load_n(&job.unfinished, __ATOMIC_ACQUIRE) > 0 && now_ns() < until)
        poll_pause();
    if (__atomic_load_n(&job.unfinished, __ATOMIC_ACQUIRE) > 0) {
        pthread_mutex_lock(&pool_mu);
        while (__atomic_load_n(&job.unfinished, __ATOMIC_ACQUIRE) > 0)
            pthread_cond_wait(&pool_done, &pool_mu);
        pthread_mutex_unlock(&pool_mu);
    }
}

static void busy_part(void *ctx, int part)
{
    (void)part;
    const double until = now_ns() + *(const double *)ctx;
    while (now_ns() < until)
        ;
}

/*
 * What handing work to the pool costs: the time, less `work_ns`, of a job of
 * `threads` parts that each take work_ns (parts that take no time would all be
 * done by the caller before a worker woke up).
 */
double amsim_pool_overhead_ns(int threads, double work_ns)
{
    const double start = now_ns();
    run_parts(busy_part, &work_ns, threads, threads);
    return now_ns() - start - work_ns;
}

/*
 * Split a strided rows x cols operand into scales and mantissa indices
 * (amsim_split), and report the smallest and largest biased exponent among
 * the normal scales in range[0..1] (range[0] > range[1] when there are none):
 * the caller's test of the fast kernels' exactness window.
 *
 * Layout of the outputs: row-major when kb == 0. Otherwise blocked by columns
 * for the expand kernel: the block of columns [c0, c0 + w) (w = kb, or what is
 * left) is stored row-major as rows x w at offset c0 * rows, so that sweeping
 * one block of k over all rows reads memory in order.
 */
static inline __attribute__((always_inline)) void split_row(const float *restrict xr, int64_t cs, int64_t w, int m,
                                                         int rne, float *restrict sr, uint16_t *restrict ir,
                                                         int32_t *lo, int32_t *hi)
{
    int32_t l = *lo, h = *hi;
    for (int64_t c = 0; c < w; ++c) {
        uint32_t i;
        const float sc = amsim_split_impl(xr[c * cs], m, rne, &i);
        const int32_t e = (int32_t)((amsim_f2u(sc) >> 23) & 0xFFu);
        const int normal = (e != 0) & (e != 255);
        l = (normal & (e < l)) ? e : l;
        h = (normal & (e > h)) ? e : h;
        sr[c] = sc;
        ir[c] = (uint16_t)i;
    }
    *lo = l;
    *hi = h;
}

#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
/* Transpose a 16 x 16 tile held as 16 row vectors, in place. */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {   /* per 128-bit lane: a0 b0 a1 b1 | a2 b2 a3 b3 */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {   /* u[i + j], lane L: column 4L + j of rows i..i+3 */
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; ++j) {       /* gather lane L of u[j], u[4 + j], u[8 + j], u[12 + j] */
        const __m512 w1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
        const __m512 w2 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
        const __m512 w3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        const __m512 w4 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_f32x4(w1, w3, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(w1, w3, 0xDD);
        r[4 + j] = _mm512_shuffle_f32x4(w2, w4, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(w2, w4, 0xDD);
    }
}
#endif

#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
/* Fold the biased exponents of the scales in the lanes of `normal` into [vlo, vhi]. */
static inline __attribute__((always_inline)) void widen_range(__m512 sc, __mmask16 normal, __m512i *vlo,
                                                           __m512i *vhi)
{
    const __m512i ex = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(sc), 23), _mm512_set1_epi32(0xFF));
    *vlo = _mm512_mask_min_epi32(*vlo, normal, *vlo, ex);
    *vhi = _mm512_mask_max_epi32(*vhi, normal, *vhi, ex);
}

#define SPLIT_T_COLS 256        /* columns of a transposed view split per sweep over its rows */

/* Split n consecutive elements to consecutive outputs (rne a constant after inlining). */
static inline __attribute__((always_inline)) void split_flat(const float *x, int64_t n, int m, int rne,
                                                          float *scale, uint16_t *idx, __m512i *vlo, __m512i *vhi)
{
    __m512i i16;
    __mmask16 normal;
    int64_t e = 0;
    for (; e + 16 <= n; e += 16) {
        const __m512 sc = amsim_split16(_mm512_loadu_ps(x + e), m, rne, &i16, &normal);
        widen_range(sc, normal, vlo, vhi);
        _mm512_storeu_ps(scale + e, sc);
        _mm256_storeu_si256((__m256i *)(idx + e), _mm512_cvtepi32_epi16(i16));
    }
    if (e < n) {
        const __mmask16 lanes = (__mmask16)((1u << (n - e)) - 1u);
        const __m512 sc = amsim_split16(_mm512_maskz_loadu_ps(lanes, x + e), m, rne, &i16, &normal);
        widen_range(sc, normal & lanes, vlo, vhi);
        _mm512_mask_storeu_ps(scale + e, lanes, sc);
        _mm256_mask_storeu_epi16(idx + e, lanes, _mm512_cvtepi32_epi16(i16));
    }
}

/*
 * Rows [g, ge) of columns [b0, b0 + w) of a row-major operand (row stride rs), split to the
 * block's row-major w-wide layout at scale, idx (row r at r * w): 16 // w rows to a vector when
 * w is 4, 8 or 16, else one row at a time.
 */
static inline __attribute__((always_inline)) void split_block(const float *x, int64_t rs, int64_t g, int64_t ge,
                                                           int64_t b0, int64_t w, int m, int rne, float *scale,
                                                           uint16_t *idx, __m512i *vlo, __m512i *vhi)
{
    __m512i i16;
    __mmask16 normal;
    const int per = (w == 16) ? 1 : (w == 8) ? 2 : (w == 4) ? 4 : 0;
    int64_t r = g;
    if (per)
        for (; r + per <= ge; r += per) {
            const float *xr = x + r * rs + b0;
            __m512 v;
            if (per == 1)
                v = _mm512_loadu_ps(xr);
            else if (per == 2)
                v = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(xr)), _mm256_loadu_ps(xr + rs), 1);
            else
                v = _mm512_insertf32x4(
                    _mm512_insertf32x4(_mm512_insertf32x4(_mm512_castps128_ps512(_mm_loadu_ps(xr)),
                                                          _mm_loadu_ps(xr + rs), 1),
                                       _mm_loadu_ps(xr + 2 * rs), 2),
                    _mm_loadu_ps(xr + 3 * rs), 3);
            const __m512 sc = amsim_split16(v, m, rne, &i16, &normal);
            widen_range(sc, normal, vlo, vhi);
            _mm512_storeu_ps(scale + r * w, sc);
            _mm256_storeu_si256((__m256i *)(idx + r * w), _mm512_cvtepi32_epi16(i16));
        }
    for (; r < ge; ++r)
        for (int64_t c = 0; c < w; c += 16) {
            const __mmask16 lanes = (__mmask16)(w - c >= 16 ? 0xFFFFu : ((1u << (w - c)) - 1u));
            const __m512 sc = amsim_split16(_mm512_maskz_loadu_ps(lanes, x + r * rs + b0 + c), m, rne, &i16,
                                            &normal);
            widen_range(sc, normal & lanes, vlo, vhi);
            _mm512_mask_storeu_ps(scale + r * w + c, lanes, sc);
            _mm256_mask_storeu_epi16(idx + r * w + c, lanes, _mm512_cvtepi32_epi16(i16));
        }
}

/* The first column of the k-block that column c lies in, from that of an earlier column's block
 * (no division: a 64-bit one would cost more than splitting the 16 columns). */
static inline int64_t block_start(int64_t b0, int64_t kb, int64_t c)
{
    while (b0 + kb <= c)
        b0 += kb;
    return b0;
}

/*
 * Store columns [c0, c0 + wc) of row r (scales sc, indices i32 as 32-bit lanes
 * 0..wc-1) in amsim_split_f32's layout: one masked store per k-block they fall
 * in, the lanes shifted down to the block's first column. b0: the first column
 * of c0's block.
 */
static inline __attribute__((always_inline)) void store_row_segments(float *scale, uint16_t *idx, int64_t rows,
                                                                  int64_t cols, int64_t kb, int64_t r, int64_t c0,
                                                                  int64_t b0, int64_t wc, __m512 sc, __m512i i32)
{
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int64_t seg = 0; seg < wc;) {
        /* columns [col, col + n) lie in the block starting at b0, which is w wide */
        const int64_t col = c0 + seg;
        b0 = block_start(b0, kb, col);
        const int64_t w = (cols - b0 < kb) ? cols - b0 : kb;
        const int64_t n = (wc - seg < b0 + w - col) ? wc - seg : b0 + w - col;
        const __mmask16 keep = (__mmask16)((1u << n) - 1u);
        const int64_t off = b0 * rows + r * w + (col - b0);
        if (seg == 0) {
            _mm512_mask_storeu_ps(scale + off, keep, sc);
            _mm256_mask_storeu_epi16(idx + off, keep, _mm512_cvtepi32_epi16(i32));
        } else {
            const __m512i down = _mm512_add_epi32(iota, _mm512_set1_epi32((int)seg));
            _mm512_mask_storeu_ps(scale + off, keep, _mm512_permutexvar_ps(down, sc));
            _mm256_mask_storeu_epi16(idx + off, keep, _mm512_cvtepi32_epi16(_mm512_permutexvar_epi32(down, i32)));
        }
        seg += n;
    }
}
#endif

#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
/*
 * A transposed tile's 16 rows t (lanes in `keep` stored, rows ld apart) by
 * amsim_split16's shortcut alone, when it holds for every lane: one test per
 * tile instead of a branch per row, and straight-line code that keeps t in
 * registers. Returns 0, the range left alone, when a lane needs the full split
 * (its stores are then overwritten).
 */
static inline __attribute__((always_inline)) int split_tile_normal(const __m512 t[16], int m, int rne,
                                                                __mmask16 keep, float *scale, uint16_t *idx,
                                                                int64_t ld, __m512i *vlo, __m512i *vhi)
{
    __m512i lo = *vlo, hi = *vhi;
    __mmask16 all = 0xFFFF;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
        __m512i i16;
        __mmask16 ok;
        const __m512 sc = amsim_split16_normal(t[i], m, rne, &i16, &ok);
        all &= ok;
        widen_range(sc, 0xFFFF, &lo, &hi);
        _mm512_mask_storeu_ps(scale + i * ld, keep, sc);
        _mm256_mask_storeu_epi16(idx + i * ld, keep, _mm512_cvtepi32_epi16(i16));
    }
    if (all != 0xFFFF)
        return 0;
    *vlo = lo, *vhi = hi;
    return 1;
}
#endif

void amsim_split_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m,
                     int rounding, int64_t kb, float *scale, uint16_t *idx, int64_t r0, int64_t r1,
                     int32_t *range)
{
    /* Rows [r0, r1) only, so that callers can split the work between threads. Rows are read in
     * order (each row's blocks go to kb-wide streams), which keeps the reads sequential. */
    int32_t lo = 255, hi = 0;
    if (kb <= 0)
        kb = cols;
#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
    if (rs == 1 && cs != 1) {
        /* A transposed view (rows contiguous in memory): split 16 rows of one column at a time,
         * reading memory in order, transpose each 16 x 16 tile in registers and store it by rows
         * (a row's columns in one store per k-block they fall in). */
        __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
        /* Columns in blocks of SPLIT_T_COLS, each swept over all rows: a column is a line of
         * memory, and sweeping every column per 16 rows would touch a page per column each time
         * (the TLB misses cost 2.5 ns an element on a 363 x 193600 operand). */
        for (int64_t cb = 0; cb < cols; cb += SPLIT_T_COLS)
        for (int64_t r = r0; r < r1; r += 16) {
            const int64_t nr = (r1 - r < 16) ? r1 - r : 16;
            const __mmask16 lanes = (__mmask16)(nr == 16 ? 0xFFFFu : ((1u << nr) - 1u));
            const int64_t ce = (cols - cb < SPLIT_T_COLS) ? cols : cb + SPLIT_T_COLS;
            int64_t b0 = cb - cb % kb;
            for (int64_t c0 = cb; c0 < ce; c0 += 16) {
                b0 = block_start(b0, kb, c0);
                const int64_t wc = (ce - c0 < 16) ? ce - c0 : 16;
                const __mmask16 keep = (__mmask16)(0xFFFFu >> (16 - wc));  /* the tile's columns */
                __m512 t[16];
                /* columns past wc repeat column c0: lanes of real values keep amsim_split16 on its
                 * all-normal shortcut (and the range is the same) */
                t[0] = _mm512_maskz_loadu_ps(lanes, x + c0 * cs + r);
                for (int c = 1; c < 16; ++c)
                    t[c] = c < wc ? _mm512_maskz_loadu_ps(lanes, x + (c0 + c) * cs + r) : t[0];
                transpose16(t);  /* t[i]: columns c0.. of row r + i */
                if (kb == cols && nr == 16 &&
                    split_tile_normal(t, m, rounding == AMSIM_RNE, keep, scale + r * cols + c0, idx + r * cols + c0,
                                      cols, &vlo, &vhi))
                    continue;
                for (int64_t i = 0; i < nr; ++i) {
                    __m512i i16;
                    __mmask16 normal;
                    const __m512 sc = amsim_split16(t[i], m, rounding == AMSIM_RNE, &i16, &normal);
                    widen_range(sc, normal, &vlo, &vhi);
                    if (kb == cols) {  /* row-major */
                        _mm512_mask_storeu_ps(scale + (r + i) * cols + c0, keep, sc);
                        _mm256_mask_storeu_epi16(idx + (r + i) * cols + c0, keep, _mm512_cvtepi32_epi16(i16));
                    } else {
                        store_row_segments(scale, idx, rows, cols, kb, r + i, c0, b0, wc, sc, i16);
                    }
                }
            }
        }
        lo = _mm512_reduce_min_epi32(vlo);
        hi = _mm512_reduce_max_epi32(vhi);
        r0 = r1;
    }
#endif
#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
    /* Exponent range kept in vectors across the rows, reduced once at the end. */
    __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
    if (cs == 1 && rs == cols && kb == cols) {
        /* rows that follow each other, to a row-major result: one flat run, 16 lanes at a time
         * whatever the row length */
        const int64_t base = r0 * cols;
        if (rounding == AMSIM_RNE)
            split_flat(x + base, (r1 - r0) * cols, m, 1, scale + base, idx + base, &vlo, &vhi);
        else
            split_flat(x + base, (r1 - r0) * cols, m, 0, scale + base, idx + base, &vlo, &vhi);
        r0 = r1;
    } else if (cs == 1) {
        /* contiguous rows to k-blocks. Row by row, every row's pieces would go to a block of their
         * own, rows * kb elements apart: a power-of-two stride that maps them all to the same few
         * cache sets. So a group of rows (small enough to stay in cache) is split block by
         * block instead, writing each block's part in order, with whole blocks of 4, 8 or 16
         * columns packed 4, 2 or 1 rows to a vector. */
        const int64_t group = 65536 / (cols > 16 ? cols : 16) / 4 * 4 + 4;
        for (int64_t g = r0; g < r1; g += group) {
            const int64_t ge = (r1 - g < group) ? r1 : g + group;
            for (int64_t b0 = 0; b0 < cols; b0 += kb) {
                const int64_t w = (cols - b0 < kb) ? cols - b0 : kb;
                if (rounding == AMSIM_RNE)
                    split_block(x, rs, g, ge, b0, w, m, 1, scale + b0 * rows, idx + b0 * rows, &vlo, &vhi);
                else
                    split_block(x, rs, g, ge, b0, w, m, 0, scale + b0 * rows, idx + b0 * rows, &vlo, &vhi);
            }
        }
        r0 = r1;
    }
#endif
    for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c0 = 0; c0 < cols; c0 += kb) {
            const int64_t w = (cols - c0 < kb) ? cols - c0 : kb;
            const float *xr = x + r * rs + c0 * cs;
            split_row(xr, cs, w, m, rounding == AMSIM_RNE, scale + c0 * rows + r * w, idx + c0 * rows + r * w,
                      &lo, &hi);
        }
    }
#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
    const int32_t vl = _mm512_reduce_min_epi32(vlo), vh = _mm512_reduce_max_epi32(vhi);
    lo = vl < lo ? vl : lo;
    hi = vh > hi ? vh : hi;
#endif
    range[0] = lo;
    range[1] = hi;
}

/*
 * The exponent range amsim_split_f32 would report for rows [r0, r1), without
 * storing the split: the window test of a GEMM whose kernel splits X as it goes.
 */
void amsim_range_f32(const float *x, int64_t rows, int64_t cols, int64_t rs, int64_t cs, int m, int rounding,
                     int64_t r0, int64_t r1, int32_t *range)
{
    (void)rows;
    int32_t lo = 255, hi = 0;
#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
    if (cs == 1 || rs == 1) {  /* runs contiguous in memory: a row, or a column of a transposed view */
        const int64_t runs = cs == 1 ? r1 - r0 : cols, len = cs == 1 ? cols : r1 - r0;
        const int64_t step = cs == 1 ? rs : cs;
        const float *first = x + r0 * rs;
        __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi), i16;
        __mmask16 normal;
        for (int64_t run = 0; run < runs; ++run) {
            const float *xr = first + run * step;
            for (int64_t e = 0; e < len; e += 16) {
                const __mmask16 lanes = (__mmask16)(len - e >= 16 ? 0xFFFFu : ((1u << (len - e)) - 1u));
                const __m512 sc = amsim_split16(_mm512_maskz_loadu_ps(lanes, xr + e), m, rounding == AMSIM_RNE,
                                                &i16, &normal);
                widen_range(sc, normal & lanes, &vlo, &vhi);
            }
        }
        range[0] = _mm512_reduce_min_epi32(vlo);
        range[1] = _mm512_reduce_max_epi32(vhi);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            uint32_t i;
            const int32_t e = (int32_t)((amsim_f2u(amsim_split(x[r * rs + c * cs], m, rounding, &i)) >> 23) & 0xFFu);
            if (e != 0 && e != 255) {
                lo = e < lo ? e : lo;
                hi = e > hi ? e : hi;
            }
        }
    range[0] = lo;
    range[1] = hi;
}

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

/* Scales and indices of X's rows [rb, re), columns [kb, kb + kn): from row rb, element
 * (rb + r, kb + kk) at r * ldr + kk * ldk. Returns -1 when out of memory. */
static int x_block(const struct x_operand *xo, int64_t M, int64_t K, int m, int64_t rb, int64_t re, int64_t kb,
                   int kn, const float **as, const uint16_t **ap, int64_t *ldr, int64_t *ldk)
{
    if (!xo->x) {
        const int64_t base = xo->xkb ? kb * M + rb * kn : rb * K + kb;
        *as = xo->sx + base;
        *ap = xo->px + base;
        *ldr = xo->xkb ? kn : K;
        *ldk = 1;
        return 0;
    }
    const int64_t n = re - rb;
    float *bs = work_buffer(SLOT_XBS, sizeof(float) * (size_t)(n * kn));
    uint16_t *bi = work_buffer(SLOT_XBI, sizeof(uint16_t) * (size_t)(n * kn));
    if (!bs || !bi)
        return -1;
    int32_t unused[2];
    const float *at = xo->x + rb * xo->rs + kb * xo->cs;
    if (xo->cs == 1) {  /* rows contiguous: the block row by row */
        amsim_split_f32(at, n, kn, xo->rs, 1, m, xo->rounding, 0, bs, bi, 0, n, unused);
        *ldr = kn, *ldk = 1;
    } else {            /* columns contiguous (a transposed view), or neither: column by column */
        amsim_split_f32(at, kn, n, xo->cs, xo->rs, m, xo->rounding, 0, bs, bi, 0, kn, unused);
        *ldr = 1, *ldk = n;
    }
    *as = bs;
    *ap = bi;
    return 0;
}

static int gemm_expand(int64_t M, int64_t N, int64_t K, const struct x_operand *xo, const float *sy,
                       const uint16_t *qy, const float *plut, int m, int dp, float *c, int64_t ldc, int64_t i0,
                       int64_t i1, int64_t j0, int64_t j1);

/*
 * The fast kernels' LUT, prepared once per multiplier (gemm.Multiplier.prepared)
 * rather than once per call (at M = 7 it is 64 KiB, as much work as a small
 * GEMM), 64-byte aligned:
 *   - the rows as floats, row p at plut + p * amsim_lut_stride(m): at least 32
 *     entries (two vectors for vpermt2ps), zeros past 2^M;
 *   - then, where the kernels use AVX512-VBMI, the rows again as four byte
 *     planes (plane b holds byte b of every entry) of plane_width(m) bytes, so
 *     that vpermi2b looks up 64 entries at once (vbmi_lookup64), and a 64-byte
 *     trailer whose first int says whether the low two planes are zero in
 *     every entry (HI16: entries that are bfloat16 values, as for half the
 *     built-in designs at M = 7); the lookups then skip them.
 */
#if defined(__AVX512VBMI__) && defined(__AVX512BW__) && !defined(AMSIM_PORTABLE)
#define AMSIM_VBMI 1
#else
#define AMSIM_VBMI 0
#endif
/* bfloat16 dot products (vdpbf16ps) for HI16 LUTs in both fast kernels (build_panel_dp) */
#if AMSIM_VBMI && defined(__AVX512BF16__)
#define AMSIM_DPBF16 1
#else
#define AMSIM_DPBF16 0
#endif

int amsim_lut_stride(int m)
{
    return m < 5 ? 32 : 1 << m;
}

static int plane_width(int m)
{
    return m <= 7 ? 128 : 256;
}

static size_t float_rows_bytes(int m)
{
    return sizeof(float) * ((size_t)1 << m) * (size_t)amsim_lut_stride(m);
}

static size_t planes_bytes(int m)
{
    return (AMSIM_VBMI && m <= 8) ? ((size_t)1 << m) * 4 * (size_t)plane_width(m) : 0;
}

size_t amsim_prepared_bytes(int m)
{
    return float_rows_bytes(m) + (planes_bytes(m) ? planes_bytes(m) + 64 : 0);
}

/* Whether the kernels look a prepared LUT up in two byte planes (its HI16 flag; byte planes
 * only). Not at M = 8, where bfloat16 entries are rare: one form less to build. */
static inline int lut_hi16(const void *plut, int m)
{
    return m < 8 && *(const int32_t *)((const uint8_t *)plut + float_rows_bytes(m) + planes_bytes(m));
}

void amsim_prepare_lut(const float *lut, int m, void *out)
{
    const int64_t P = (int64_t)1 << m, stride = amsim_lut_stride(m);
    float *rows = out;
    for (int64_t p = 0; p < P; ++p)
        for (int64_t e = 0; e < stride; ++e)
            rows[p * stride + e] = e < P ? lut[p * P + e] : 0.0f;
    if (amsim_prepared_bytes(m) == float_rows_bytes(m))
        return;
    uint8_t *planes = (uint8_t *)out + float_rows_bytes(m);
    const int64_t w = plane_width(m);
    int32_t hi16 = 1;
    for (int64_t p = 0; p < P; ++p)
        for (int b = 0; b < 4; ++b)
            for (int64_t e = 0; e < w; ++e) {
                planes[(p * 4 + b) * w + e] = e < P ? (uint8_t)(amsim_f2u(lut[p * P + e]) >> (8 * b)) : 0;
                hi16 &= b >= 2 || planes[(p * 4 + b) * w + e] == 0;
            }
    uint8_t *trailer = planes + planes_bytes(m);
    memset(trailer, 0, 64);
    memcpy(trailer, &hi16, sizeof hi16);
}

/* Whether this build has the bfloat16 dot-product kernels (used for HI16 LUTs in their window). */
int amsim_dot_products(void)
{
    return AMSIM_DPBF16;
}

/* Whether the kernels take a prepared LUT with bfloat16 dot products (where amsim_window_dp allows). */
int amsim_lut_dot_products(const void *plut, int m)
{
    return AMSIM_DPBF16 && lut_hi16(plut, m);
}

/* Vectors of 16 columns that one step of the expand kernel's build of T serves: a panel's 64
 * columns with byte planes (a narrower panel takes as long), else one. */
int amsim_build_group_vectors(void)
{
    return AMSIM_VBMI ? 4 : 1;
}

#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
#include <immintrin.h>

/*
 * AVX-512 expand kernel (M <= 8).
 *
 * A panel of up to X_TILES tiles of 16 columns (one vector each) accumulates
 * in a packed buffer for up to X_ROWS rows rather than in C, whose rows are
 * 4 KiB apart for N = 1024 and would alias in L1. For each block of KB values
 * of k (the operands come split in KB-column blocks, amsim_split_f32):
 *   - T is built: T[p][kk][tile] = sy(k, cols) * LUT[p][qy(k, cols)] for all
 *     2^M mantissas p (256 KiB at M = 7). LUT row p sits in registers and
 *     vpermt2ps picks 16 entries at once, a blend tree resolving index bits 5..7;
 *   - rows are swept 4 at a time: acc[row][tile] += sx(i, k) * T[px(i, k)][kk][tile],
 *     one exact product and one add each. One broadcast scale and one index
 *     serve all the panel's tiles, and the block's A values are read in order.
 * Each output still sums its products in increasing k.
 */
#define X_TILES 4               /* tiles of 16 columns per panel */
#define EXPAND_PANEL_COLS (16 * X_TILES)
#ifndef X_KB_MAX
#define X_KB_MAX 16
#endif
#ifndef X_TBYTES
#define X_TBYTES (256 * 1024)   /* T per k-block: KB = X_TBYTES / (2^M * 64 * X_TILES), at most X_KB_MAX */
#endif
#ifndef X_ROWS
#define X_ROWS 4096             /* rows sharing one build of T: 1 MiB of accumulators */
#endif

/* The k-block width the expand kernel expects its split operands in (amsim_split_f32's kb). */
int amsim_expand_kb(int m)
{
    int kb = X_TBYTES / ((1 << m) * 64 * X_TILES);
    return kb < 1 ? 1 : (kb > X_KB_MAX ? X_KB_MAX : kb);
}

static inline __m512 lookup_row(const __m512 *row, int vecs, __m512i q, __mmask16 b5, __mmask16 b6, __mmask16 b7)
{
    /* row: the LUT row as `vecs` vectors of 16 (>= 2, padded); q: 16 indices. */
    __m512 c0 = _mm512_permutex2var_ps(row[0], q, row[1]);
    if (vecs <= 2)
        return c0;
    __m512 c1 = _mm512_permutex2var_ps(row[2], q, row[3]);
    __m512 lo = _mm512_mask_blend_ps(b5, c0, c1);
    if (vecs <= 4)
        return lo;
    __m512 c2 = _mm512_permutex2var_ps(row[4], q, row[5]);
    __m512 c3 = _mm512_permutex2var_ps(row[6], q, row[7]);
    __m512 hi = _mm512_mask_blend_ps(b5, c2, c3);
    lo = _mm512_mask_blend_ps(b6, lo, hi);
    if (vecs <= 8)
        return lo;
    __m512 c4 = _mm512_permutex2var_ps(row[8], q, row[9]);
    __m512 c5 = _mm512_permutex2var_ps(row[10], q, row[11]);
    __m512 c6 = _mm512_permutex2var_ps(row[12], q, row[13]);
    __m512 c7 = _mm512_permutex2var_ps(row[14], q, row[15]);
    __m512 h0 = _mm512_mask_blend_ps(b6, _mm512_mask_blend_ps(b5, c4, c5), _mm512_mask_blend_ps(b5, c6, c7));
    return _mm512_mask_blend_ps(b7, lo, h0);
}

#if AMSIM_VBMI
/*
 * 64 lookups in one LUT row held as byte planes (AVX512-VBMI): one vpermi2b
 * per plane picks byte b of 64 entries (two, and a blend on index bit 7, for
 * 256-entry rows), and byte and word unpacks reassemble the floats: about
 * half the operations of four vpermt2ps blend trees. The unpacks work within
 * 128-bit lanes, so the indices come permuted (vbmi_indices): output vector g
 * then holds entries 16g .. 16g + 15 in order.
 */
static const uint8_t vbmi_order_bytes[64] = {
    0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51,
    4, 5, 6, 7, 20, 21, 22, 23, 36, 37, 38, 39, 52, 53, 54, 55,
    8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59,
    12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63,
};

/* Up to 64 uint16 indices (n of them; zeros past n) as bytes, in vbmi_lookup64's order. */
static inline __m512i vbmi_indices(const uint16_t *q, int64_t n)
{
    const __mmask32 m0 = (__mmask32)(n >= 32 ? 0xFFFFFFFFu : (uint32_t)((1ull << n) - 1u));
    const __mmask32 m1 = (__mmask32)(n >= 64 ? 0xFFFFFFFFu : n > 32 ? (uint32_t)((1ull << (n - 32)) - 1u) : 0u);
    const __m256i lo = _mm512_cvtepi16_epi8(_mm512_maskz_loadu_epi16(m0, q));
    const __m256i hi = _mm512_cvtepi16_epi8(_mm512_maskz_loadu_epi16(m1, q + 32));
    const __m512i bytes = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    return _mm512_permutexvar_epi8(_mm512_loadu_si512(vbmi_order_bytes), bytes);
}

/* pl: the row's planes, 4 x (2 or, when wide, 4) vectors; q: from vbmi_indices. HI16 (a
 * constant after inlining): planes 0 and 1 are zero; without their lookups, and with the
 * unpacks of zeros folded away, 64 entries take 8 shuffles instead of 12. */
static inline __attribute__((always_inline)) void vbmi_lookup64(int wide, int hi16, const __m512i *pl, __m512i q,
                                                             __m512 out[4])
{
    __m512i b[4] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    const __mmask64 hi = wide ? _mm512_movepi8_mask(q) : 0;
    for (int k = hi16 ? 2 : 0; k < 4; ++k) {
        if (wide)
            b[k] = _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(pl[4 * k], q, pl[4 * k + 1]),
                                          _mm512_permutex2var_epi8(pl[4 * k + 2], q, pl[4 * k + 3]));
        else
            b[k] = _mm512_permutex2var_epi8(pl[2 * k], q, pl[2 * k + 1]);
    }
    const __m512i l01 = _mm512_unpacklo_epi8(b[0], b[1]), h01 = _mm512_unpackhi_epi8(b[0], b[1]);
    const __m512i l23 = _mm512_unpacklo_epi8(b[2], b[3]), h23 = _mm512_unpackhi_epi8(b[2], b[3]);
    out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(l01, l23));
    out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(l01, l23));
    out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(h01, h23));
    out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(h01, h23));
}

/* T[p][kk][0..tiles) for a whole panel, 64 columns per lookup (WIDE, HI16 constants after inlining). */
static inline __attribute__((always_inline)) void build_panel_vbmi(int wide, int hi16, int P, int kn, int kb_size,
                                                                int tiles, const uint8_t *planes, const __m512i *q,
                                                                __m512 (*s)[X_TILES], __m512 *t)
{
    const int nvec = wide ? 16 : 8;
    for (int p = 0; p < P; ++p) {
        __m512i pl[16];
        for (int v = 0; v < nvec; ++v)
            pl[v] = _mm512_load_si512(planes + ((int64_t)p * nvec + v) * 64);
        for (int kk = 0; kk < kn; ++kk) {
            __m512 val[4];
            vbmi_lookup64(wide, hi16, pl, q[kk], val);
            for (int tile = 0; tile < tiles; ++tile)
                t[((int64_t)p * kb_size + kk) * tiles + tile] = _mm512_mul_ps(s[kk][tile], val[tile]);
        }
    }
}
#endif

#if AMSIM_DPBF16
/*
 * bfloat16 dot products, for HI16 LUTs inside the dot-product window
 * (amsim_window_dp), in the expand kernel (T in bfloat16: build_panel_dp,
 * sweep_rows_dp) and the lookup kernel (lookup_rows_dp). A product is
 * s_x * (s_y * LUT[i][j]), and for a HI16 LUT both factors are bfloat16 numbers:
 * s_y * LUT[i][j] is the entry's bits plus s_y's sign and exponent (a 16-bit
 * integer add, exact while the result is normal: the window's T condition), and
 * s_x is a power of two, 0, inf or NaN. vdpbf16ps multiplies them exactly and
 * adds two products, k then k + 1, to the float32 sum with one round-to-nearest
 * add each (Intel's definition; tested bit for bit on Zen 4 against sequential
 * adds): the order and roundings of the other kernels. It flushes subnormal
 * inputs and results to zero, so the window also keeps every partial sum away
 * from them: a product is a multiple of 2^(e_x + e_y + e_v - 7), and so is every
 * sum of them, hence zero or normal when that exponent is at least -126. A zero
 * s_y becomes a zero factor by masking (the sign of a zero product cannot show:
 * sums start at +0 and round to nearest, so they are never -0); an inf or NaN
 * s_y sends its k-block to the float32 forms (same order, so the same bits). A
 * lookup of 128 products takes 20 vector instructions (four vpermi2b, four byte
 * and four word unpacks, four adds, four dot products) instead of 32; T takes
 * half the bytes and half the instructions to build.
 */
/* Word w of lane l in the unpacks' order holds column 4l + w (w < 4) or 12 + 4l + w (32 columns);
 * index 2c + 1 picks the high half of column c's float32 scale from two vectors of 16. */
static const uint16_t dp_scale_words[32] = {
    1, 3, 5, 7, 33, 35, 37, 39, 9, 11, 13, 15, 41, 43, 45, 47,
    17, 19, 21, 23, 49, 51, 53, 55, 25, 27, 29, 31, 57, 59, 61, 63,
};

/* One k's Y block for the dot-product lookups, 32 columns from sy (n of them; zeros past n): the
 * scales' exponent-and-sign adds d (bfloat16 bits of the scale minus those of 1.0) and the mask of
 * nonzero scales. Returns whether a scale is inf or NaN. */
static inline int dp_scales32(const float *sy, int64_t n, __m512i *d, uint32_t *nonzero)
{
    const __mmask16 m0 = (__mmask16)(n >= 16 ? 0xFFFFu : n > 0 ? (1u << n) - 1u : 0u);
    const __mmask16 m1 = (__mmask16)(n >= 32 ? 0xFFFFu : n > 16 ? (1u << (n - 16)) - 1u : 0u);
    const __m512i lo = _mm512_castps_si512(_mm512_maskz_loadu_ps(m0, sy));
    const __m512i hi = _mm512_castps_si512(_mm512_maskz_loadu_ps(m1, sy + 16));
    const __m512i w = _mm512_permutex2var_epi16(lo, _mm512_loadu_si512(dp_scale_words), hi);
    const __m512i exp = _mm512_set1_epi16(0x7F80);
    *d = _mm512_sub_epi16(w, _mm512_set1_epi16(0x3F80));
    *nonzero = (uint32_t)_mm512_test_epi16_mask(w, exp);
    return _mm512_cmpeq_epi16_mask(_mm512_and_si512(w, exp), exp) != 0;
}

/* A scale as bfloat16 (exact for sign * 2^e, 0 and inf), NaNs kept NaN. */
static inline uint32_t scale_bf16(float s)
{
    const uint32_t u = amsim_f2u(s);
    return (u >> 16) | ((uint32_t)((u & 0x7FFFFFFFu) > 0x7F800000u) << 6);
}

/* X's scales at k (s[0]) and k + 1 (s[next]) as a bfloat16 pair in every dword, k in the high
 * half: vdpbf16ps adds the high product first. Without k + 1 (two = 0) the pair's second
 * scale is zero, so its product adds nothing. */
static inline __m512bh scale_pair(const float *s, int64_t next, int two)
{
    const uint32_t s0 = scale_bf16(s[0]), s1 = two ? scale_bf16(s[next]) : 0;
    return (__m512bh)_mm512_set1_epi32((int)(s0 << 16 | s1));
}

/* LUT row p's planes 2 and 3 (the bfloat16 bytes) as four vectors: a HI16 row at M <= 7 is
 * 4 planes x 2 vectors of 64 bytes. */
static inline __attribute__((always_inline)) void hi16_planes(const uint8_t *planes, int64_t p, __m512i pl[4])
{
    const uint8_t *row = planes + p * 512 + 256;
    for (int w = 0; w < 4; ++w)
        pl[w] = _mm512_load_si512(row + 64 * w);
}

/* 64 entries of a row (hi16_planes) as bfloat16, scaled and masked by d and nz (dp_scales32):
 * out[h] holds entries 32h .. 32h + 31 in the byte unpacks' order (HALVES of them, 1 or 2, a
 * constant after inlining). Two vpermi2b, and per half one unpack and one add. */
static inline __attribute__((always_inline)) void dp_lookup64(int halves, const __m512i pl[4], __m512i q,
                                                           const __m512i *d, const uint32_t *nz, __m512i *out)
{
    const __m512i b2 = _mm512_permutex2var_epi8(pl[0], q, pl[1]);
    const __m512i b3 = _mm512_permutex2var_epi8(pl[2], q, pl[3]);
    out[0] = _mm512_maskz_add_epi16(nz[0], _mm512_unpacklo_epi8(b2, b3), d[0]);
    if (halves == 2)
        out[1] = _mm512_maskz_add_epi16(nz[1], _mm512_unpackhi_epi8(b2, b3), d[1]);
}

/* The panel's T in bfloat16 (HALVES, 1 or 2, a constant after inlining): T[p][kk][h] holds the
 * panel's columns 32h .. 32h + 31 (dp_lookup64). */
static inline __attribute__((always_inline)) void build_panel_dp(int halves, int P, int kn, int kb_size,
                                                              const uint8_t *planes, const __m512i *q,
                                                              const __m512i (*d)[2], const uint32_t (*nz)[2],
                                                              __m512i *t)
{
    for (int p = 0; p < P; ++p) {
        __m512i pl[4];
        hi16_planes(planes, p, pl);
        for (int kk = 0; kk < kn; ++kk)
            dp_lookup64(halves, pl, q[kk], d[kk], nz[kk], t + ((int64_t)p * kb_size + kk) * halves);
    }
}

/* One group of sweep_rows_dp's: ROWS rows from r (1 or 4, TILES 2 to 4: constants after inlining),
 * k in pairs, one dot product per tile and pair. */
static inline __attribute__((always_inline)) void sweep_dp_group(int rows, int tiles, int64_t r, int64_t r0, int kn,
                                                              int kb_size, const float *as, const uint16_t *ap,
                                                              int64_t ldr, int64_t ldk, const __m512i *t,
                                                              __m512 *cbuf)
{
    const int halves = (tiles + 1) / 2;
    __m512 acc[4][X_TILES];
    for (int u = 0; u < rows; ++u)
        for (int v = 0; v < tiles; ++v)
            acc[u][v] = cbuf[(r - r0 + u) * tiles + v];
    for (int kk = 0; kk < kn; kk += 2) {
        const int two = kk + 1 < kn;  /* else kk alone (scale_pair) */
        for (int u = 0; u < rows; ++u) {
            const int64_t e = (r - r0 + u) * ldr + kk * ldk;
            const __m512bh sa = scale_pair(as + e, ldk, two);
            const __m512i *ta = t + ((int64_t)ap[e] * kb_size + kk) * halves;
            const __m512i *tb = two ? t + ((int64_t)ap[e + ldk] * kb_size + kk + 1) * halves : ta;
            for (int h = 0; h < halves; ++h) {
                const __m512i a = _mm512_load_si512(ta + h), b = _mm512_load_si512(tb + h);
                /* dwords (kk + 1 low, kk high), as scale_pair's */
                acc[u][2 * h] = _mm512_dpbf16_ps(acc[u][2 * h], (__m512bh)_mm512_unpacklo_epi16(b, a), sa);
                if (2 * h + 1 < tiles)
                    acc[u][2 * h + 1] = _mm512_dpbf16_ps(acc[u][2 * h + 1],
                                                         (__m512bh)_mm512_unpackhi_epi16(b, a), sa);
            }
        }
    }
    for (int u = 0; u < rows; ++u)
        for (int v = 0; v < tiles; ++v)
            cbuf[(r - r0 + u) * tiles + v] = acc[u][v];
}

/* sweep_rows with T in bfloat16 (build_panel_dp), four rows at a time. */
static inline __attribute__((always_inline)) void sweep_rows_dp(int tiles, int64_t r0, int64_t r1, int kn,
                                                             int kb_size, const float *as, const uint16_t *ap,
                                                             int64_t ldr, int64_t ldk, const __m512i *t,
                                                             __m512 *cbuf)
{
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4)
        sweep_dp_group(4, tiles, r, r0, kn, kb_size, as, ap, ldr, ldk, t, cbuf);
    for (; r < r1; ++r)
        sweep_dp_group(1, tiles, r, r0, kn, kb_size, as, ap, ldr, ldk, t, cbuf);
}

#endif

/* T[p][kk][tile] = s[kk] * LUT[p][q[kk]] for every mantissa p (VECS a constant after inlining);
 * T holds the panel's `tiles` tiles side by side. */
static inline __attribute__((always_inline)) void build_tile(int vecs, int P, int kn, int kb_size, int tiles,
                                                          int tile, const float *padded, const __m512i *q,
                                                          const __m512 *s, __m512 *t)
{
    /* The index bits that steer the blend tree depend on kk only: test them once, not per p. */
    __mmask16 b5[X_KB_MAX], b6[X_KB_MAX], b7[X_KB_MAX];
    for (int kk = 0; kk < kn; ++kk) {
        b5[kk] = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(32));
        b6[kk] = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(64));
        b7[kk] = _mm512_test_epi32_mask(q[kk], _mm512_set1_epi32(128));
    }
    for (int p = 0; p < P; ++p) {
        __m512 row[16];
        for (int v = 0; v < vecs; ++v)
            row[v] = _mm512_load_ps(padded + ((int64_t)p * vecs + v) * 16);
        for (int kk = 0; kk < kn; ++kk)
            t[((int64_t)p * kb_size + kk) * tiles + tile] =
                _mm512_mul_ps(s[kk], lookup_row(row, vecs, q[kk], b5[kk], b6[kk], b7[kk]));
    }
}

/* Sweep rows [r0, r1) of one k-block for a panel of TILES tiles (a constant after inlining).
 * as, ap: the block's scales and indices, from row r0, (r0 + r, kk) at r * ldr + kk * ldk; cbuf:
 * accumulators of row r0 first. */
static inline __attribute__((always_inline)) void sweep_rows(int tiles, int64_t r0, int64_t r1, int kn, int kb_size,
                                                          const float *as, const uint16_t *ap, int64_t ldr,
                                                          int64_t ldk, const __m512 *t, __m512 *cbuf)
{
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        __m512 acc[4][X_TILES];
        for (int u = 0; u < 4; ++u)
            for (int v = 0; v < tiles; ++v)
                acc[u][v] = cbuf[(r - r0 + u) * tiles + v];
        for (int kk = 0; kk < kn; ++kk)
            for (int u = 0; u < 4; ++u) {
                const int64_t e = (r - r0 + u) * ldr + kk * ldk;
                const __m512 s = _mm512_set1_ps(as[e]);
                const __m512 *row = t + ((int64_t)ap[e] * kb_size + kk) * tiles;
                for (int v = 0; v < tiles; ++v)
                    acc[u][v] = _mm512_fmadd_ps(s, row[v], acc[u][v]);
            }
        for (int u = 0; u < 4; ++u)
            for (int v = 0; v < tiles; ++v)
                cbuf[(r - r0 + u) * tiles + v] = acc[u][v];
    }
    for (; r < r1; ++r) {
        __m512 acc[X_TILES];
        for (int v = 0; v < tiles; ++v)
            acc[v] = cbuf[(r - r0) * tiles + v];
        for (int kk = 0; kk < kn; ++kk) {
            const int64_t e = (r - r0) * ldr + kk * ldk;
            const __m512 s = _mm512_set1_ps(as[e]);
            const __m512 *row = t + ((int64_t)ap[e] * kb_size + kk) * tiles;
            for (int v = 0; v < tiles; ++v)
                acc[v] = _mm512_fmadd_ps(s, row[v], acc[v]);
        }
        for (int v = 0; v < tiles; ++v)
            cbuf[(r - r0) * tiles + v] = acc[v];
    }
}

/*
 * C[i, j] for rows [i0, i1) and columns [j0, j1) of the M x N product.
 * sx, px: X (M x K) split in xkb-column blocks, xkb = amsim_expand_kb(m), or
 * row-major for xkb = 0 (see amsim_expand_x_blocks); sy, qy: Y split
 * row-major (K x N); c: row-major with leading dimension ldc.
 */
static int gemm_expand(int64_t M, int64_t N, int64_t K, const struct x_operand *xo, const float *sy,
                       const uint16_t *qy, const float *plut, int m, int dp, float *c, int64_t ldc, int64_t i0,
                       int64_t i1, int64_t j0, int64_t j1)
{
    const int P = 1 << m;
    const int vecs = amsim_lut_stride(m) / 16;       /* a LUT row in vectors */
    const int kb_size = amsim_expand_kb(m);
    const int64_t rows_max = (i1 - i0 < X_ROWS) ? i1 - i0 : X_ROWS;
    /* Buffers sized to the call: small GEMMs stay clear of fresh pages, which cost a fault each. */
    __m512 *t = work_buffer(SLOT_T, sizeof(__m512) * (size_t)P * kb_size * X_TILES);
    __m512 *cbuf = work_buffer(SLOT_CBUF, sizeof(__m512) * (size_t)(rows_max > 0 ? rows_max : 1) * X_TILES);
    if (!t || !cbuf)
        return -1;
#if AMSIM_VBMI
    const uint8_t *planes = (const uint8_t *)plut + float_rows_bytes(m);
    const int hi16 = lut_hi16(plut, m);
    dp = AMSIM_DPBF16 && dp && hi16;  /* T in bfloat16 */
#endif

    for (int64_t jp = j0; jp < j1; jp += 16 * X_TILES) {
        const int64_t pcols = (j1 - jp < 16 * X_TILES) ? j1 - jp : 16 * X_TILES;
        const int tiles = (int)((pcols + 15) / 16);
        for (int64_t rb = i0; rb < i1; rb += X_ROWS) {
            const int64_t re = (i1 - rb < X_ROWS) ? i1 : rb + X_ROWS;
            memset(cbuf, 0, sizeof(__m512) * (size_t)(re - rb) * tiles);
            for (int64_t kb = 0; kb < K; kb += kb_size) {
                const int kn = (int)((K - kb < kb_size) ? K - kb : kb_size);
                int bf16 = 0;  /* this block's T in bfloat16 */
#if AMSIM_VBMI
                if (tiles >= 2) {  /* one 64-entry lookup serves the whole panel */
                    __m512i q[X_KB_MAX];
                    for (int kk = 0; kk < kn; ++kk)
                        q[kk] = vbmi_indices(qy + (kb + kk) * N + jp, pcols);
#if AMSIM_DPBF16
                    __m512i d[X_KB_MAX][2];
                    uint32_t nz[X_KB_MAX][2];
                    bf16 = dp;
                    for (int kk = 0; bf16 && kk < kn; ++kk)
                        for (int h = 0; h < 2; ++h)  /* an inf or NaN scale: float32 T for the block */
                            bf16 &= !dp_scales32(sy + (kb + kk) * N + jp + 32 * h, pcols - 32 * h, &d[kk][h],
                                                 &nz[kk][h]);
                    if (bf16 && tiles <= 2)
                        build_panel_dp(1, P, kn, kb_size, planes, q, d, nz, (__m512i *)t);
                    else if (bf16)
                        build_panel_dp(2, P, kn, kb_size, planes, q, d, nz, (__m512i *)t);
#endif
                    if (!bf16) {
                        __m512 s[X_KB_MAX][X_TILES];
                        for (int kk = 0; kk < kn; ++kk) {
                            const int64_t off = (kb + kk) * N + jp;
                            for (int tile = 0; tile < tiles; ++tile) {
                                const int64_t left = pcols - 16 * tile;
                                const __mmask16 cols = (__mmask16)(left >= 16 ? 0xFFFFu : ((1u << left) - 1u));
                                s[kk][tile] = _mm512_maskz_loadu_ps(cols, sy + off + 16 * tile);
                            }
                        }
                        if (m == 8)
                            build_panel_vbmi(1, 0, P, kn, kb_size, tiles, planes, q, s, t);
                        else if (hi16)
                            build_panel_vbmi(0, 1, P, kn, kb_size, tiles, planes, q, s, t);
                        else
                            build_panel_vbmi(0, 0, P, kn, kb_size, tiles, planes, q, s, t);
                    }
                } else
#endif
                for (int tile = 0; tile < tiles; ++tile) {
                    const int64_t jt = jp + 16 * tile;
                    const int nb = (int)((jp + pcols - jt < 16) ? jp + pcols - jt : 16);
                    const __mmask16 cols = (__mmask16)((1u << nb) - 1u);
                    __m512i q[X_KB_MAX];
                    __m512 s[X_KB_MAX];
                    for (int kk = 0; kk < kn; ++kk) {
                        const int64_t off = (kb + kk) * N + jt;
                        q[kk] = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(cols, qy + off));
                        s[kk] = _mm512_maskz_loadu_ps(cols, sy + off);  /* columns past nb: T = 0 */
                    }
                    switch (vecs) {  /* a constant row length keeps the LUT row in registers */
                    case 2: build_tile(2, P, kn, kb_size, tiles, tile, plut, q, s, t); break;
                    case 4: build_tile(4, P, kn, kb_size, tiles, tile, plut, q, s, t); break;
                    case 8: build_tile(8, P, kn, kb_size, tiles, tile, plut, q, s, t); break;
                    default: build_tile(16, P, kn, kb_size, tiles, tile, plut, q, s, t); break;
                    }
                }
                const float *as;
                const uint16_t *ap;
                int64_t ldr, ldk;
                if (x_block(xo, M, K, m, rb, re, kb, kn, &as, &ap, &ldr, &ldk) != 0)
                    return -1;
#if AMSIM_DPBF16
                if (bf16) {
                    const __m512i *tb = (const __m512i *)t;
                    switch (tiles) {
                    case 2: sweep_rows_dp(2, rb, re, kn, kb_size, as, ap, ldr, ldk, tb, cbuf); break;
                    case 3: sweep_rows_dp(3, rb, re, kn, kb_size, as, ap, ldr, ldk, tb, cbuf); break;
                    default: sweep_rows_dp(4, rb, re, kn, kb_size, as, ap, ldr, ldk, tb, cbuf); break;
                    }
                } else
#endif
                switch (tiles) {  /* a constant tile count lets the compiler keep acc in registers */
                case 1: sweep_rows(1, rb, re, kn, kb_size, as, ap, ldr, ldk, t, cbuf); break;
                case 2: sweep_rows(2, rb, re, kn, kb_size, as, ap, ldr, ldk, t, cbuf); break;
                case 3: sweep_rows(3, rb, re, kn, kb_size, as, ap, ldr, ldk, t, cbuf); break;
                default: sweep_rows(4, rb, re, kn, kb_size, as, ap, ldr, ldk, t, cbuf); break;
                }
            }
            for (int tile = 0; tile < tiles; ++tile) {
                const int64_t jt = jp + 16 * tile;
                const int nb = (int)((jp + pcols - jt < 16) ? jp + pcols - jt : 16);
                const __mmask16 cols = (__mmask16)((1u << nb) - 1u);
                for (int64_t r = rb; r < re; ++r)
                    _mm512_mask_storeu_ps(c + r * ldc + jt, cols, cbuf[(r - rb) * tiles + tile]);
            }
        }
    }
    return 0;
}

/*
 * AVX-512 lookup kernel, for shapes where expanding the LUT does not pay
 * (few rows to share each expanded entry): for every (i, k), LUT row px(i, k)
 * is loaded into registers and each 16-column vector of Y looks up its entries
 * in it directly; C[i, cols] += sx(i, k) * (sy(k, cols) * LUT[px][qy(k, cols)]).
 * Same exactness window, same products, same order as the expand kernel.
 *
 * k is blocked so that Y's block stays in cache while the rows sweep it: with
 * K in the tens of thousands (filter gradients) Y would otherwise stream from
 * memory once per row. With float rows (vpermt2ps), L_ROWS rows share each
 * load of Y's indices and scales and the masks that steer the blend tree.
 * With byte planes (lookup_vbmi), each block of Y is split from its raw values
 * and its indices put in vbmi_indices' order once for all rows (prep_block),
 * and each row sweeps the block alone.
 */
#define L_COLS 64               /* columns per chunk: 4 vectors */
#ifndef L_ROWS
#define L_ROWS 8                /* rows sharing each load of Y's scales (4: 10-20 % slower) */
#endif
#ifndef L_KB
#define L_KB 512                /* k per block: at most 192 KiB of Y */
#endif

static inline __attribute__((always_inline)) void lookup_chunk(int vecs, int64_t K, const float *sx,
                                                            const uint16_t *px, int64_t xr, int64_t xk,
                                                            const float *sy,
                                                            const uint16_t *qy, int64_t N, const float *plut,
                                                            float *c, int64_t ldc, int64_t i0, int nrows,
                                                            int64_t jc, int nv, const __mmask16 *mask)
{
    for (int64_t kb = 0; kb < K; kb += L_KB) {
        const int64_t ke = (K - kb < L_KB) ? K : kb + L_KB;
        /* each k-block ends with C holding the partial sums: the next one starts from them */
        __m512 acc[L_ROWS][L_COLS / 16];
        for (int r = 0; r < nrows; ++r)
            for (int v = 0; v < nv; ++v)
                acc[r][v] = kb ? _mm512_maskz_loadu_ps(mask[v], c + (i0 + r) * ldc + jc + 16 * v)
                               : _mm512_setzero_ps();
        for (int64_t k = kb; k < ke; ++k) {
            __m512i q[L_COLS / 16];
            __m512 sb[L_COLS / 16];
            __mmask16 b5[L_COLS / 16], b6[L_COLS / 16], b7[L_COLS / 16];
            for (int v = 0; v < nv; ++v) {
                const int64_t off = k * N + jc + 16 * v;
                q[v] = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask[v], qy + off));
                sb[v] = _mm512_maskz_loadu_ps(mask[v], sy + off);
                b5[v] = _mm512_test_epi32_mask(q[v], _mm512_set1_epi32(32));
                b6[v] = _mm512_test_epi32_mask(q[v], _mm512_set1_epi32(64));
                b7[v] = _mm512_test_epi32_mask(q[v], _mm512_set1_epi32(128));
            }
            for (int r = 0; r < nrows; ++r) {
                const int64_t e = (i0 + r) * xr + k * xk;
                const float *lrow = plut + (int64_t)px[e] * vecs * 16;
                __m512 row[16];
                for (int w = 0; w < vecs; ++w)
                    row[w] = _mm512_load_ps(lrow + 16 * w);
                const __m512 sa = _mm512_set1_ps(sx[e]);
                for (int v = 0; v < nv; ++v)
                    acc[r][v] = _mm512_fmadd_ps(sa, _mm512_mul_ps(sb[v], lookup_row(row, vecs, q[v], b5[v], b6[v],
                                                                                   b7[v])), acc[r][v]);
            }
        }
        for (int r = 0; r < nrows; ++r)
            for (int v = 0; v < nv; ++v)
                _mm512_mask_storeu_ps(c + (i0 + r) * ldc + jc + 16 * v, mask[v], acc[r][v]);
    }
}

#if AMSIM_VBMI
/*
 * With byte planes the kernel runs one row (two for chunks of up to
 * LW_PAIR_VECS vectors) over a chunk of up to LW_VECS vectors, its
 * accumulators in registers: one load of a row's LUT planes serves up to 192
 * columns. Eight rows sharing each load of Y's scales over 64 columns kept 32
 * accumulators, which spilled to memory. Measured on one Zen 4 core, ns per 64
 * products, M = 7: 7.7-8.1 to 6.2 on 150 columns (once 64 + 64 + 22),
 * 5.9 to 5.2 on 120, 6.1 to 5.4 on 64, 15.6 to 14.3 on 25; M = 8: 14 to 9-10
 * on 150 and 10.5 to 8.1 on 120, the same on 64 columns or fewer. Both forms
 * are bound by vector instructions: Zen 4 issues about one 512-bit shuffle,
 * multiply or fma per cycle, and 64 products take 20 (four vpermi2b, eight
 * unpacks, four multiplies, four fma), 16 for HI16 LUTs. Y's block (scales
 * and indices) stays in L1 while the rows sweep it.
 */
#define LW_VECS 12              /* vectors per chunk: 12 accumulators */
#define LW_GROUPS ((LW_VECS + 3) / 4)
#ifndef LW_YBYTES
#define LW_YBYTES (16 * 1024)   /* Y's scales and indices per k-block */
#endif
#ifndef LW_KB_MAX
#define LW_KB_MAX 128
#endif
#ifndef LW_PAIR_VECS
#define LW_PAIR_VECS 4          /* chunks this narrow take two rows at a time (wider: slower) */
#endif

/* A chunk's sums for ROWS rows (1 or 2) of NV vectors (constants after inlining): zeros, or the
 * partial sums the previous k-block left in C (carry); last: the last vector's columns. */
static inline __attribute__((always_inline)) void rows_start(int rows, int nv, __m512 (*acc)[LW_VECS],
                                                          const float *crow, int64_t ldc, __mmask16 last,
                                                          int carry)
{
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < nv; ++v)
            acc[r][v] = carry ? _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xFFFF, crow + r * ldc + 16 * v)
                              : _mm512_setzero_ps();
}

static inline __attribute__((always_inline)) void rows_finish(int rows, int nv, __m512 (*acc)[LW_VECS],
                                                           float *crow, int64_t ldc, __mmask16 last)
{
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < nv; ++v)
            _mm512_mask_storeu_ps(crow + r * ldc + 16 * v, v == nv - 1 ? last : 0xFFFF, acc[r][v]);
}

/* The sums of ROWS rows (1 or 2) over k-block [kb, ke) of one chunk of NV vectors (WIDE, HI16,
 * NV, ROWS constants after inlining). sxr, pxr: the first row's scales and indices (k at k * xk),
 * the next row's xr further on; qb: the block's Y indices as vbmi_indices gives them, (NV + 3) / 4
 * vectors per k; syk0: Y's scales at (kb, chunk start); crow: the first row's outputs at the chunk start, the
 * next row's ldc further on, the partial sums read from them after the first block (carry). */
static inline __attribute__((always_inline)) void lookup_rows_vbmi(int wide, int hi16, int nv, int rows, int64_t kb,
                                                                int64_t ke, int64_t xr, int64_t xk,
                                                                const float *sxr,
                                                                const uint16_t *pxr, const float *syk0, int64_t N,
                                                                const __m512i *qb, const uint8_t *planes,
                                                                float *crow, int64_t ldc, __mmask16 last, int carry)
{
    const int nvec = wide ? 16 : 8, ng = (nv + 3) / 4;
    __m512 acc[2][LW_VECS];
    rows_start(rows, nv, acc, crow, ldc, last, carry);
    const float *syk = syk0;
    for (int64_t k = kb, at = kb * xk; k < ke; ++k, at += xk, syk += N, qb += ng)  /* at: k's offset in X */
        for (int r = 0; r < rows; ++r) {
            const uint8_t *row = planes + (int64_t)pxr[r * xr + at] * nvec * 64;
            __m512i pl[16];
            for (int w = 0; w < nvec; ++w)
                pl[w] = _mm512_load_si512(row + 64 * w);
            const __m512 sa = _mm512_set1_ps(sxr[r * xr + at]);
            for (int g = 0; g < ng; ++g) {
                __m512 val[4];
                vbmi_lookup64(wide, hi16, pl, _mm512_load_si512(qb + g), val);
                for (int t = 0; t < 4 && 4 * g + t < nv; ++t) {
                    const int v = 4 * g + t;
                    const __m512 sb = v == nv - 1 ? _mm512_maskz_loadu_ps(last, syk + 16 * v)
                                                  : _mm512_loadu_ps(syk + 16 * v);
                    acc[r][v] = _mm512_fmadd_ps(sa, _mm512_mul_ps(sb, val[t]), acc[r][v]);
                }
            }
        }
    rows_finish(rows, nv, acc, crow, ldc, last);
}

#if AMSIM_DPBF16
/* lookup_rows_vbmi's sums with dot products (NV, ROWS constants after inlining); db, mb: the
 * block's d and nonzero masks, 2 * ng per k (dp_scales32). */
static inline __attribute__((always_inline)) void lookup_rows_dp(int nv, int rows, int64_t kb, int64_t ke,
                                                              int64_t xr, int64_t xk, const float *sxr,
                                                              const uint16_t *pxr,
                                                              const __m512i *qb, const __m512i *db,
                                                              const uint32_t *mb, const uint8_t *planes,
                                                              float *crow, int64_t ldc, __mmask16 last, int carry)
{
    const int ng = (nv + 3) / 4;
    __m512 acc[2][LW_VECS];
    rows_start(rows, nv, acc, crow, ldc, last, carry);
    for (int64_t k = kb, at = kb * xk; k < ke; k += 2, at += 2 * xk) {  /* at: k's offset in X */
        const int two = k + 1 < ke;  /* else k alone (scale_pair) */
        const __m512i *q0 = qb + (k - kb) * ng, *d0 = db + (k - kb) * 2 * ng;
        const uint32_t *m0 = mb + (k - kb) * 2 * ng;
        for (int r = 0; r < rows; ++r) {
            const int64_t e = r * xr + at;
            __m512i p0[4], p1[4];  /* the rows of X's mantissas at k and k + 1 */
            hi16_planes(planes, pxr[e], p0);
            hi16_planes(planes, pxr[two ? e + xk : e], p1);
            const __m512bh sa = scale_pair(sxr + e, xk, two);
            for (int g = 0; g < ng; ++g) {
                __m512i a[2], b[2];
                dp_lookup64(2, p0, _mm512_load_si512(q0 + g), d0 + 2 * g, m0 + 2 * g, a);
                if (two)
                    dp_lookup64(2, p1, _mm512_load_si512(q0 + ng + g), d0 + 2 * ng + 2 * g, m0 + 2 * ng + 2 * g, b);
                else
                    b[0] = a[0], b[1] = a[1];
                /* dwords (k + 1 low, k high), as scale_pair's */
                const __m512i pairs[4] = {_mm512_unpacklo_epi16(b[0], a[0]), _mm512_unpackhi_epi16(b[0], a[0]),
                                          _mm512_unpacklo_epi16(b[1], a[1]), _mm512_unpackhi_epi16(b[1], a[1])};
                for (int t = 0; t < 4 && 4 * g + t < nv; ++t)
                    acc[r][4 * g + t] = _mm512_dpbf16_ps(acc[r][4 * g + t], (__m512bh)pairs[t], sa);
            }
        }
    }
    rows_finish(rows, nv, acc, crow, ldc, last);
}
#endif

/*
 * Y as lookup_vbmi reads it: raw, K x N with (k, j) at k * rs + j * cs. The
 * kernel splits each block of Y itself, in registers, as it prepares the block
 * for its lookups: no split of Y is written to memory and read back (for
 * LeNet-5 conv2's filter gradient, 5.8 MB written and read once per thread,
 * which on a 2-vCPU VM ran at a third of the speed of the arithmetic), and no
 * pass over Y comes before the kernel. So its exponent range is known only
 * afterwards: each part reports the range of the columns it prepared, and
 * amsim_gemm tests the window then (and runs the GEMM again when it fails).
 */
struct y_raw {
    const float *y;
    int64_t rs, cs;
    int m, rne;
};

/* Bytes 4c of 32 floats (c in vbmi_order_bytes' order, modulo 32): with an offset b, byte b of each
 * float; vbmi_order_bytes' columns from 32 on, in lanes' bytes 8..15, come from the second pair. */
static const uint8_t vbmi_float_bytes[64] = {
    0, 4, 8, 12, 64, 68, 72, 76, 0, 4, 8, 12, 64, 68, 72, 76,
    16, 20, 24, 28, 80, 84, 88, 92, 16, 20, 24, 28, 80, 84, 88, 92,
    32, 36, 40, 44, 96, 100, 104, 108, 32, 36, 40, 44, 96, 100, 104, 108,
    48, 52, 56, 60, 112, 116, 120, 124, 48, 52, 56, 60, 112, 116, 120, 124,
};
#define VBMI_SECOND_PAIR 0xFF00FF00FF00FF00ull

/*
 * Rows [kb, kb + kn) of Y's columns [jc, jc + ncols) row-major: *yb, row kk at kk * *ldb. Y's own
 * rows when they are contiguous; else gathered into buf (ldbuf >= ncols rounded up to 16, the
 * lanes past ncols zero), a transposed view 16 x 16 tiles at a time, transposed in registers.
 */
static void raw_block(const struct y_raw *yr, int64_t kb, int64_t kn, int64_t jc, int64_t ncols, float *buf,
                      int64_t ldbuf, const float **yb, int64_t *ldb)
{
    if (yr->cs == 1) {
        *yb = yr->y + kb * yr->rs + jc, *ldb = yr->rs;
        return;
    }
    *yb = buf, *ldb = ldbuf;
    if (yr->rs == 1) {
        for (int64_t c0 = 0; c0 < ncols; c0 += 16)
            for (int64_t k0 = 0; k0 < kn; k0 += 16) {
                const int64_t nc = (ncols - c0 < 16) ? ncols - c0 : 16, nk = (kn - k0 < 16) ? kn - k0 : 16;
                const __mmask16 ks = (__mmask16)(0xFFFFu >> (16 - nk));
                __m512 t[16];
                for (int i = 0; i < 16; ++i)
                    t[i] = i < nc ? _mm512_maskz_loadu_ps(ks, yr->y + (jc + c0 + i) * yr->cs + kb + k0)
                                  : _mm512_setzero_ps();
                transpose16(t);  /* t[kk]: columns c0.. of row k0 + kk */
                for (int64_t kk = 0; kk < nk; ++kk)
                    _mm512_storeu_ps(buf + (k0 + kk) * ldbuf + c0, t[kk]);
            }
        return;
    }
    for (int64_t kk = 0; kk < kn; ++kk)
        for (int64_t c = 0; c < (ncols + 15) / 16 * 16; ++c)
            buf[kk * ldbuf + c] = c < ncols ? yr->y[(kb + kk) * yr->rs + (jc + c) * yr->cs] : 0.0f;
}

/* Exponent ranges of the normal scales a part prepared: 16-bit fields (exponent << 7, from the
 * dot-product preparation) and 32-bit ones (exponent << 23, from the float scales'). */
struct y_range {
    __m512i lo16, hi16, lo32, hi32;
};

/*
 * A block of Y (kn rows of ncols columns, row kk at yb + kk * ldb) split and prepared for the
 * lookups from its raw floats: for every k and group of 64 columns, the mantissa indices in
 * vbmi_indices' order (qb, ng per k); with DP (a constant after inlining) the scales as
 * dp_scales32 gives them (db, mb; 2 * ng per k); with FLOATS the scales as floats (sb, row kk at
 * kk * 16 * nv). These are amsim_split16's values: the indices and scales are bit fields of
 * amsim_round16's sum (the dot products' from the floats' high halves: a bfloat16 scale is the
 * high half of the float one), an operand is normal when its exponent is neither 0 nor 255 before
 * and after rounding, a zero or subnormal one gets a zero scale (which masks its index) and an inf
 * or NaN one keeps its value (with DP it leaves the block to the float forms). Returns whether the
 * block has one (DP).
 */
static inline __attribute__((always_inline)) int prep_block(int dp, int floats, const float *yb, int64_t ldb,
                                                         int64_t kn, int64_t ncols, int nv, int m, int rne,
                                                         __m512i *qb, __m512i *db, uint32_t *mb, float *sb,
                                                         struct y_range *r)
{
    const int ng = (nv + 3) / 4;
    const __m512i order = _mm512_loadu_si512(vbmi_float_bytes);
    /* the index's bits: within byte 2 of the float for M <= 7, shifted down to byte 0 for M = 8 */
    const __m512i sel = _mm512_add_epi8(order, _mm512_set1_epi8(m == 8 ? 0 : 2));
#if AMSIM_DPBF16
    const __m512i words = _mm512_loadu_si512(dp_scale_words), e16 = _mm512_set1_epi16(0x7F80);
#endif
    const __m512i e32 = _mm512_set1_epi32(0x7F800000);
    int special = 0;
    for (int64_t kk = 0; kk < kn; ++kk)
        for (int g = 0; g < ng; ++g) {
            const int64_t left = ncols - 64 * g;
            __m512i u[4], v[4];
            for (int t = 0; t < 4; ++t) {
                const int64_t n = left - 16 * t;
                const __mmask16 lanes = (__mmask16)(n >= 16 ? 0xFFFFu : n > 0 ? (1u << n) - 1u : 0u);
                u[t] = _mm512_castps_si512(_mm512_maskz_loadu_ps(lanes, yb + kk * ldb + 64 * g + 16 * t));
                v[t] = amsim_round16(u[t], m, rne);
            }
            __m512i q[2];
            for (int h = 0; h < 2; ++h) {
                const __m512i a = m == 8 ? _mm512_srli_epi32(v[2 * h], 15) : v[2 * h];
                const __m512i b = m == 8 ? _mm512_srli_epi32(v[2 * h + 1], 15) : v[2 * h + 1];
                q[h] = _mm512_permutex2var_epi8(a, sel, b);
            }
            __m512i idx = _mm512_mask_blend_epi8(VBMI_SECOND_PAIR, q[0], q[1]);
            if (m < 7)
                idx = _mm512_srli_epi16(idx, 7 - m);
            if (m < 8)
                idx = _mm512_and_si512(idx, _mm512_set1_epi8((char)((1 << m) - 1)));
            qb[kk * ng + g] = idx;
#if AMSIM_DPBF16
            for (int h = 0; dp && h < 2; ++h) {
                const int64_t at = (kk * ng + g) * 2 + h;
                const __m512i wv = _mm512_permutex2var_epi16(v[2 * h], words, v[2 * h + 1]);
                const __m512i wu = rne ? _mm512_permutex2var_epi16(u[2 * h], words, u[2 * h + 1]) : wv;
                const __m512i eu = _mm512_and_si512(wu, e16), ev = rne ? _mm512_and_si512(wv, e16) : eu;
                const __mmask32 nonzero = _mm512_test_epi16_mask(wu, e16);
                const __mmask32 inf_nan = _mm512_cmpeq_epi16_mask(eu, e16) |
                                          (rne ? _mm512_cmpeq_epi16_mask(ev, e16) : 0);
                special |= inf_nan != 0;
                db[at] = _mm512_sub_epi16(_mm512_and_si512(wv, _mm512_set1_epi16((short)0xFF80)),
                                          _mm512_set1_epi16(0x3F80));
                mb[at] = nonzero;
                r->lo16 = _mm512_mask_min_epu16(r->lo16, nonzero & ~inf_nan, r->lo16, ev);
                r->hi16 = _mm512_mask_max_epu16(r->hi16, nonzero & ~inf_nan, r->hi16, ev);
            }
#else
            (void)dp, (void)db, (void)mb;
#endif
            for (int t = 0; floats && t < 4 && 4 * g + t < nv; ++t) {
                /* amsim_split16's scales: sign | exponent of the sum, the sign for a zero or subnormal
                 * operand, an inf or NaN one as it is (amsim_split16 itself: 25-35 % slower here) */
                const __m512i e = _mm512_and_si512(u[t], e32);
                const __mmask16 zero = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
                const __mmask16 inf_nan = _mm512_cmpeq_epi32_mask(e, e32);
                __m512i sc = _mm512_and_si512(v[t], _mm512_set1_epi32((int)0xFF800000u));
                sc = _mm512_mask_mov_epi32(sc, zero, _mm512_and_si512(u[t], _mm512_set1_epi32((int)0x80000000u)));
                sc = _mm512_mask_mov_epi32(sc, inf_nan, u[t]);
                _mm512_storeu_si512(sb + kk * 16 * nv + 64 * g + 16 * t, sc);
                const __m512i es = _mm512_and_si512(sc, e32);
                const __mmask16 normal = ~zero & ~inf_nan & _mm512_cmpneq_epi32_mask(es, e32);
                r->lo32 = _mm512_mask_min_epu32(r->lo32, normal, r->lo32, es);
                r->hi32 = _mm512_mask_max_epu32(r->hi32, normal, r->hi32, es);
            }
        }
    return special;
}

/* prep_block for Y's rows [kb, kb + kn) of columns [jc, jc + ncols) (DP, FLOATS constants after
 * inlining): read in place, or gathered into buf 16 rows at a time (raw_block), which keeps the
 * gathered rows in L1 beside the block's preparation and the LUT rows the lookups load. */
static inline __attribute__((always_inline)) int prep_raw(int dp, int floats, const struct y_raw *yr, int64_t kb,
                                                       int64_t kn, int64_t jc, int64_t ncols, int nv, float *buf,
                                                       __m512i *qb, __m512i *db, uint32_t *mb, float *sb,
                                                       struct y_range *r)
{
    const int64_t ng = (nv + 3) / 4, slab = yr->cs == 1 ? kn : 16;
    int special = 0;
    for (int64_t k0 = 0; k0 < kn; k0 += slab) {
        const float *yb;
        int64_t ldb;
        const int64_t n = (kn - k0 < slab) ? kn - k0 : slab;
        raw_block(yr, kb + k0, n, jc, ncols, buf, 16 * nv, &yb, &ldb);
        special |= prep_block(dp, floats, yb, ldb, n, ncols, nv, yr->m, yr->rne, qb + k0 * ng, db + k0 * 2 * ng,
                              mb + k0 * 2 * ng, sb + k0 * 16 * nv, r);
    }
    return special;
}

/* The biased exponent range [lo, hi] of a y_range (lo > hi: no normal scale). */
static void y_range_get(const struct y_range *r, int32_t out[2])
{
    const __m512i mask16 = _mm512_set1_epi32(0xFFFF);
    const uint32_t lo16 = _mm512_reduce_min_epu32(_mm512_min_epu32(_mm512_and_si512(r->lo16, mask16),
                                                                   _mm512_srli_epi32(r->lo16, 16)));
    const uint32_t hi16 = _mm512_reduce_max_epu32(_mm512_max_epu32(_mm512_and_si512(r->hi16, mask16),
                                                                   _mm512_srli_epi32(r->hi16, 16)));
    const uint32_t lo32 = _mm512_reduce_min_epu32(r->lo32), hi32 = _mm512_reduce_max_epu32(r->hi32);
    const int32_t lo_a = lo16 == 0xFFFFu ? 255 : (int32_t)(lo16 >> 7), hi_a = (int32_t)(hi16 >> 7);
    const int32_t lo_b = lo32 == 0xFFFFFFFFu ? 255 : (int32_t)(lo32 >> 23), hi_b = (int32_t)(hi32 >> 23);
    out[0] = lo_a < lo_b ? lo_a : lo_b;
    out[1] = hi_a > hi_b ? hi_a : hi_b;
}

/* Rows [0, M) of columns [j0, j1), 2 to LW_VECS vectors per chunk, Y raw (struct y_raw); dp: the dot
 * products for a HI16 LUT below M = 8, taken as if inside their window (amsim_window_dp), which the
 * caller tests afterwards with the range written to yrange (Y's columns [j0, j1)); *used_dp: whether
 * they were used. */
static int lookup_vbmi(int64_t M, int64_t K, const float *sx, const uint16_t *px, int64_t xr, int64_t xk,
                       const struct y_raw *yr, const float *plut, int m, int dp, float *c, int64_t ldc,
                       int64_t j0, int64_t j1, int32_t yrange[2], int *used_dp)
{
    __m512i *qb = work_buffer(SLOT_QB, sizeof(__m512i) * LW_KB_MAX * LW_GROUPS);
    float *sb = work_buffer(SLOT_SB, sizeof(float) * 16 * LW_VECS * LW_KB_MAX);
    float *yt = yr->cs == 1 ? NULL : work_buffer(SLOT_YB, sizeof(float) * 16 * LW_VECS * 16);
    if (!qb || !sb || (yr->cs != 1 && !yt))
        return -1;
    const uint8_t *planes = (const uint8_t *)plut + float_rows_bytes(m);
    const int hi16 = lut_hi16(plut, m);
#if AMSIM_DPBF16
    dp = dp && hi16 && m < 8;
    /* per k and group of 64 columns: two vectors of adds d, then (after all of them) two masks */
    __m512i *db = dp ? work_buffer(SLOT_DB, (2 * sizeof(__m512i) + 2 * sizeof(uint32_t)) * LW_KB_MAX * LW_GROUPS)
                     : NULL;
    if (dp && !db)
        return -1;
    uint32_t *mb = dp ? (uint32_t *)(db + 2 * LW_KB_MAX * LW_GROUPS) : NULL;
#else
    dp = 0;
    __m512i *db = NULL;
    uint32_t *mb = NULL;
#endif
    *used_dp = dp;
    struct y_range range = {_mm512_set1_epi32(-1), _mm512_setzero_si512(), _mm512_set1_epi32(-1),
                            _mm512_setzero_si512()};
    const int64_t vecs = (j1 - j0 + 15) / 16, chunks = (vecs + LW_VECS - 1) / LW_VECS;
    const int64_t per = (vecs + chunks - 1) / chunks;  /* even chunks: 10 + 9, not 12 + 7 */
    for (int64_t jc = j0; jc < j1; jc += 16 * per) {
        const int64_t ncols = (j1 - jc < 16 * per) ? j1 - jc : 16 * per;
        const int nv = (int)((ncols + 15) / 16), ng = (nv + 3) / 4;
        const __mmask16 last = (__mmask16)(0xFFFFu >> (16 * nv - ncols));
        int64_t kbs = LW_YBYTES / (64 * nv + 64 * ng);
        kbs = kbs > LW_KB_MAX ? LW_KB_MAX : kbs;
        kbs = kbs < 2 ? 2 : kbs & ~(int64_t)1;  /* even: the dot products take k in pairs */
        if (yr->cs != 1 && kbs > 16)
            kbs &= ~(int64_t)15;  /* a transposed view is gathered 16 x 16 tiles at a time */
        for (int64_t kb = 0; kb < K; kb += kbs) {
            const int64_t ke = (K - kb < kbs) ? K : kb + kbs;
            /* an inf or NaN scale of Y in this block sends it to the float forms */
            const int special = dp ? prep_raw(1, 0, yr, kb, ke - kb, jc, ncols, nv, yt, qb, db, mb, sb, &range)
                                   : prep_raw(0, 1, yr, kb, ke - kb, jc, ncols, nv, yt, qb, db, mb, sb, &range);
            if (dp && special)
                prep_raw(0, 1, yr, kb, ke - kb, jc, ncols, nv, yt, qb, db, mb, sb, &range);
            /* two rows at a time while their accumulators and planes fit the registers */
            const int pair = nv <= LW_PAIR_VECS;
            for (int64_t i = 0; i < M; i += 1 + pair) {
                const int rows = pair && i + 1 < M ? 2 : 1;
#define LW_ARGS kb, ke, xr, xk, sx + i * xr, px + i * xr
#define LW_ROWS(WIDE, HI16, NV, R)                                                                         \
    lookup_rows_vbmi(WIDE, HI16, NV, R, LW_ARGS, sb, 16 * nv, qb, planes, c + i * ldc + jc, ldc, last, kb > 0)
#if AMSIM_DPBF16
#define LW_DP(NV, R) lookup_rows_dp(NV, R, LW_ARGS, qb, db, mb, planes, c + i * ldc + jc, ldc, last, kb > 0)
#else
#define LW_DP(NV, R) LW_ROWS(0, 1, NV, R)
#endif
#define LW_FORMS(NV, R)                                                                                    \
    do {                                                                                                   \
        if (m == 8)                                                                                        \
            LW_ROWS(1, 0, NV, R);                                                                          \
        else if (dp && !special)                                                                           \
            LW_DP(NV, R);                                                                                  \
        else if (hi16)                                                                                     \
            LW_ROWS(0, 1, NV, R);                                                                          \
        else                                                                                               \
            LW_ROWS(0, 0, NV, R);                                                                          \
    } while (0)
#define LW_CASE(NV)                                                                                        \
    case NV:                                                                                               \
        if (NV <= LW_PAIR_VECS && rows == 2)                                                               \
            LW_FORMS(NV, 2);                                                                               \
        else                                                                                               \
            LW_FORMS(NV, 1);                                                                               \
        break;
                switch (nv) {  /* constant widths keep the accumulators in registers */
                LW_CASE(2) LW_CASE(3) LW_CASE(4) LW_CASE(5) LW_CASE(6) LW_CASE(7)
                LW_CASE(8) LW_CASE(9) LW_CASE(10) LW_CASE(11) default: LW_CASE(12)
                }
#undef LW_CASE
#undef LW_FORMS
#undef LW_DP
#undef LW_ROWS
#undef LW_ARGS
            }
        }
    }
    y_range_get(&range, yrange);
    return 0;
}
#endif

/* Vectors per column chunk of the lookup kernel: each (row, k, chunk) loads the LUT row once. */
int amsim_lookup_chunk_vectors(void)
{
#if AMSIM_VBMI
    return LW_VECS;
#else
    return L_COLS / 16;
#endif
}

/* Rows [0, M) of columns [j0, j1) of X (x) Y: X split with element (i, k) at i * xr + k * xk (row-
 * or k-major), Y split row-major (K x N). With byte planes, parts of more than one vector take
 * lookup_vbmi instead, which reads Y raw. */
static int amsim_gemm_lookup(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                             int64_t xk, const float *sy, const uint16_t *qy, const float *plut, int m, float *c,
                             int64_t ldc, int64_t j0, int64_t j1)
{
    const int vecs = amsim_lut_stride(m) / 16;
    for (int64_t jc = j0; jc < j1; jc += L_COLS) {
        const int64_t ncols = (j1 - jc < L_COLS) ? j1 - jc : L_COLS;
        const int nv = (int)((ncols + 15) / 16);
        __mmask16 mask[L_COLS / 16];
        for (int v = 0; v < nv; ++v) {
            const int64_t left = ncols - 16 * v;
            mask[v] = (__mmask16)(left >= 16 ? 0xFFFFu : ((1u << left) - 1u));
        }
        for (int64_t i = 0; i < M; i += L_ROWS) {
            const int nrows = (int)((M - i < L_ROWS) ? M - i : L_ROWS);
            switch (vecs) {  /* a constant row length keeps the LUT row in registers */
            case 2: lookup_chunk(2, K, sx, px, xr, xk, sy, qy, N, plut, c, ldc, i, nrows, jc, nv, mask); break;
            case 4: lookup_chunk(4, K, sx, px, xr, xk, sy, qy, N, plut, c, ldc, i, nrows, jc, nv, mask); break;
            case 8: lookup_chunk(8, K, sx, px, xr, xk, sy, qy, N, plut, c, ldc, i, nrows, jc, nv, mask); break;
            default: lookup_chunk(16, K, sx, px, xr, xk, sy, qy, N, plut, c, ldc, i, nrows, jc, nv, mask); break;
            }
        }
    }
    return 0;
}

#else /* portable version: GCC vector extensions, gathered T */

#define AMSIM_NB 128            /* columns per tile: 8 vectors of 16 floats */
#define EXPAND_PANEL_COLS AMSIM_NB
#define AMSIM_KB 8              /* k per block: T is KB * 2^M * NB floats (512 KiB at M = 7) */
#define AMSIM_VL 16

typedef float v16f __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4)));

static void build_t(float *restrict t, const float *restrict sy, const uint16_t *restrict qy,
                    const float *restrict lut, int m, int64_t nb)
{
    /* t[p][jj] = sy[jj] * lut[p][qy[jj]]; columns past nb are zero so full vectors can be used.
     * lut: padded, rows amsim_lut_stride(m) apart. */
    const int p_count = 1 << m;
    const int64_t stride = amsim_lut_stride(m);
    for (int p = 0; p < p_count; ++p) {
        const float *restrict row = lut + (int64_t)p * stride;
        float *restrict out = t + (int64_t)p * AMSIM_NB;
        for (int64_t jj = 0; jj < nb; ++jj)
            out[jj] = sy[jj] * row[qy[jj]];
        for (int64_t jj = nb; jj < AMSIM_NB; ++jj)
            out[jj] = 0.0f;
    }
}


int amsim_expand_kb(int m)
{
    (void)m;
    return AMSIM_KB;
}

static int gemm_expand(int64_t M, int64_t N, int64_t K, const struct x_operand *xo, const float *sy,
                       const uint16_t *qy, const float *plut, int m, int dp, float *c, int64_t ldc, int64_t i0,
                       int64_t i1, int64_t j0, int64_t j1)
{
    /* Same interface as the AVX-512 kernel. */
    const int P = 1 << m;
    float *t = work_buffer(SLOT_T, sizeof(float) * (size_t)AMSIM_KB * P * AMSIM_NB);
    if (!t)
        return -1;
    for (int64_t jt = j0; jt < j1; jt += AMSIM_NB) {
        const int64_t nb = (j1 - jt < AMSIM_NB) ? j1 - jt : AMSIM_NB;
        for (int64_t kb = 0; kb < K; kb += AMSIM_KB) {
            const int64_t kn = (K - kb < AMSIM_KB) ? K - kb : AMSIM_KB;
            for (int64_t kk = 0; kk < kn; ++kk)
                build_t(t + kk * P * AMSIM_NB, sy + (kb + kk) * N + jt, qy + (kb + kk) * N + jt, plut, m, nb);
            const float *as;
            const uint16_t *ap;
            int64_t ldr, ldk;
            if (x_block(xo, M, K, m, i0, i1, kb, (int)kn, &as, &ap, &ldr, &ldk) != 0)
                return -1;
            for (int64_t i = i0; i < i1; ++i) {
                float *crow = c + i * ldc + jt;
                v16f acc[AMSIM_NB / AMSIM_VL];
                float tmp[AMSIM_NB] = {0};
                if (kb > 0)
                    memcpy(tmp, crow, sizeof(float) * (size_t)nb);
                memcpy(acc, tmp, sizeof tmp);
                for (int64_t kk = 0; kk < kn; ++kk) {
                    const int64_t e = (i - i0) * ldr + kk * ldk;
                    const float s = as[e];
                    const v16f *trow = (const v16f *)(t + (kk * P + ap[e]) * AMSIM_NB);
                    for (int v = 0; v < AMSIM_NB / AMSIM_VL; ++v)
                        acc[v] += s * trow[v];
                }
                memcpy(crow, acc, sizeof(float) * (size_t)nb);
            }
        }
    }
    return 0;
}

static void direct_rows(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                        int64_t xk, const float *sy, const uint16_t *qy, const float *lut, int64_t lds, int mode,
                        float *c, int64_t ldc, int64_t j0, int64_t j1);

int amsim_lookup_chunk_vectors(void) { return 1; }

static int amsim_gemm_lookup(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                             int64_t xk, const float *sy, const uint16_t *qy, const float *plut, int m, float *c,
                             int64_t ldc, int64_t j0, int64_t j1)
{
    /* Portable form: inside the exactness window the direct kernel gives the same products. */
    direct_rows(M, N, K, sx, px, xr, xk, sy, qy, plut, amsim_lut_stride(m), AMSIM_MODE_IEEE, c, ldc, j0, j1);
    return 0;
}

#endif /* __AVX512F__ */

/* The direct kernel on a LUT whose rows are lds entries apart. */
static void direct_rows(int64_t M, int64_t N, int64_t K, const float *sx, const uint16_t *px, int64_t xr,
                        int64_t xk, const float *sy, const uint16_t *qy, const float *lut, int64_t lds, int mode,
                        float *c, int64_t ldc, int64_t j0, int64_t j1)
{
    for (int64_t i = 0; i < M; ++i) {
        float *crow = c + i * ldc;
        for (int64_t j = j0; j < j1; ++j)
            crow[j] = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
            const float sa = sx[i * xr + k * xk];
            const float *lrow = lut + (int64_t)px[i * xr + k * xk] * lds;
            const float *syk = sy + k * N;
            const uint16_t *qyk = qy + k * N;
            for (int64_t j = j0; j < j1; ++j)
                crow[j] += amsim_mul_split(sa, syk[j], lrow[qyk[j]], mode);
        }
    }
}

/*
 * The layout the expand kernel wants X (M x K) split in: blocks of
 * amsim_expand_kb(m) columns, so that each panel's sweep of a k-block reads
 * memory in order, or row-major for short rows (K <= 32, at most two cache
 * lines), where splitting into blocks of a few columns costs more than the
 * sweep saves. Measured: blocks made the whole GEMM 25-40 % faster at
 * K = 100..363, even with a single panel; row-major 18 % faster at K = 25.
 */
#ifndef X_ROW_MAJOR_K_MAX
#define X_ROW_MAJOR_K_MAX 32
#endif

int amsim_expand_x_blocks(int m, int64_t K)
{
    return K <= X_ROW_MAJOR_K_MAX ? 0 : amsim_expand_kb(m);
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

#define MAX_THREADS 256
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
#if defined(__AVX512F__) && !defined(AMSIM_PORTABLE)
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
        rc = gemm_expand(g->rows, g->cols, K, &xo, g->ys, g->yi, g->plut, g->m, g->dp, g->target, g->ldt, r0, r1,
                         j0, j1);
    } else if (g->method == 2 && g->raw_y) {
#if AMSIM_VBMI
        const struct y_raw yr = {g->y, g->yrs, g->ycs, g->m, g->rounding == AMSIM_RNE};
        rc = lookup_vbmi(r1 - r0, K, g->xs + r0 * g->xr, g->xi + r0 * g->xr, g->xr, g->xk, &yr, g->plut, g->m, g->dp,
                         g->target + r0 * g->ldt, g->ldt, j0, j1, g->yrange[p], &g->used_dp[p]);
#endif
    } else if (g->method == 2)
        rc = amsim_gemm_lookup(r1 - r0, g->cols, K, g->xs + r0 * g->xr, g->xi + r0 * g->xr, g->xr, g->xk, g->ys,
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
 * for contiguous rows it did not (LeNet-5's convolutions ran 5-40 % slower).
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
    const int64_t panels = (16 * tiles_per_part + EXPAND_PANEL_COLS - 1) / EXPAND_PANEL_COLS;
    return panels <= FUSE_PANELS;
}

/*
 * How X is split for g->method: for the expand kernel in k-blocks, or as it
 * goes; for the others row-major, except a transposed view (a filter
 * gradient's patches, or B^T in a swapped plan), whose split would transpose
 * it (0.33-0.42 ns an element against 0.13-0.15 in memory order on Zen 4): X^T is
 * split instead, in memory order, and the kernels read X's scalars k-major.
 */
static void x_layout(struct gemm_job *g, int threads)
{
    const int expand = g->method == 1;
    g->kb = expand ? amsim_expand_x_blocks(g->m, g->K) : 0;
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
 * rows 2^M apart; plut: the same padded (amsim_lut_stride), for the fast
 * methods. v_lo, v_hi: the LUT entries' exponent range. The result goes to c
 * (leading dimension ldc), or transposed (c[j * ldc + i]) when transpose_c is
 * set. Returns 0, or -1 when out of memory.
 *
 * Lookups that read Y raw learn its range as they go: the window is tested
 * after them, and in the rare GEMM outside it (exponents near float32's
 * limits) the kernel runs again, direct or without dot products.
 */
int amsim_gemm(int64_t rows, int64_t cols, int64_t K, const float *x, int64_t xrs, int64_t xcs,
               const float *y, int64_t yrs, int64_t ycs, const float *lut, const float *plut, int m,
               int v_lo, int v_hi, int rounding, int mode, int method, int forced, float *c, int64_t ldc,
               int transpose_c, int threads, int by_rows)
{
    threads = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    /* field by field: a compound literal would also zero the per-part arrays (15 KiB, a tenth of a
     * microsecond), which are written before they are read */
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
    __atomic_store_n(&pool_last_return, (int64_t)now_ns(), __ATOMIC_RELAXED);
    return g->failed ? -1 : 0;
}

/*
 * A GEMM made ready once by gemm.py (its shape, strides and options, and the
 * planner's choice for a sleeping and for an awake pool), so that calling it
 * from Python again passes four arguments, not twenty-three: a small GEMM takes
 * a few microseconds, and each argument converted costs tens of nanoseconds.
 */
struct amsim_plan {
    int swap;                            /* compute C^T = B^T A^T: X = B^T, Y = A^T, the LUT transposed */
    int method, threads, by_rows;        /* amsim_gemm's */
    const float *lut, *plut;             /* in this orientation; plut NULL for the direct method */
};
struct amsim_call {
    int64_t M, N, K, ars, acs, brs, bcs; /* A is M x K, B is K x N; element strides */
    int m, v_lo, v_hi, rounding, mode, forced;
    struct amsim_plan plan[2];           /* [amsim_pool_awake()] */
};

int amsim_gemm_call(const struct amsim_call *p, const float *a, const float *b, float *c)
{
    const struct amsim_plan *q = &p->plan[amsim_pool_awake()];
    if (q->swap)
        return amsim_gemm(p->N, p->M, p->K, b, p->bcs, p->brs, a, p->acs, p->ars, q->lut, q->plut, p->m, p->v_lo,
                          p->v_hi, p->rounding, p->mode, q->method, p->forced, c, p->N, 1, q->threads, q->by_rows);
    return amsim_gemm(p->M, p->N, p->K, a, p->ars, p->acs, b, p->brs, p->bcs, q->lut, q->plut, p->m, p->v_lo, p->v_hi,
                      p->rounding, p->mode, q->method, p->forced, c, p->N, 0, q->threads, q->by_rows);
}

typedef float (*amsim_float_model)(float, float);
typedef int64_t (*amsim_int_model)(int64_t, int64_t);

/*
 * Model mode, for mantissa widths without a LUT (M > 12): each product calls
 * the compiled model's uniform entry point (CompiledModel.address) on the
 * significands 1 + i/2^M (float models) or 2^M + i (integer models lifted to
 * width M + 1, result scaled by 2^-2M after one rounding to nearest float32).
 * Operands are split on the fly; the order of accumulation is the usual one.
 */
struct model_job {
    int64_t M, N, K;
    const float *a, *b;
    int64_t ars, acs, brs, bcs;
    int m, rounding, mode, is_float, nparts;
    uintptr_t fn;
    float *c;
    int64_t ldc;
};

static void model_part(void *ctx, int part)
{
    const struct model_job *g = ctx;
    const int64_t per = (g->M + g->nparts - 1) / g->nparts, i0 = part * per;
    const int64_t i1 = (i0 + per < g->M) ? i0 + per : g->M;
    const int64_t K = g->K, N = g->N, ars = g->ars, acs = g->acs, brs = g->brs, bcs = g->bcs;
    const int m = g->m, rounding = g->rounding, mode = g->mode, is_float = g->is_float;
    const float *a = g->a, *b = g->b;
    float *c = g->c;
    const int64_t ldc = g->ldc;
    const amsim_float_model ffn = (amsim_float_model)g->fn;
    const amsim_int_model ifn = (amsim_int_model)g->fn;
    const int64_t base = (int64_t)1 << m;
    for (int64_t i = i0; i < i1; ++i) {
        float *crow = c + i * ldc;
        for (int64_t j = 0; j < N; ++j) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; ++k) {
                uint32_t ia, ib;
                const float sa = amsim_split(a[i * ars + k * acs], m, rounding, &ia);
                const float sb = amsim_split(b[k * brs + j * bcs], m, rounding, &ib);
                float v = 0.0f;
                if (amsim_scale_is_normal(sa) && amsim_scale_is_normal(sb)) {
                    if (is_float)
                        v = ffn(1.0f + (float)ia / (float)base, 1.0f + (float)ib / (float)base);
                    else
                        v = amsim_scale_pow2((float)(double)ifn(base + ia, base + ib), -2 * m);
                }
                acc += amsim_mul_split(sa, sb, v, mode);
            }
            crow[j] = acc;
        }
    }
}

int amsim_gemm_model(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars, int64_t acs,
                     const float *b, int64_t brs, int64_t bcs, int m, int rounding, int mode,
                     uintptr_t fn, int is_float, float *c, int64_t ldc, int threads)
{
    threads = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    const struct model_job job = {M, N, K, a, b, ars, acs, brs, bcs, m, rounding, mode, is_float,
                                  (int)(M < threads ? (M > 0 ? M : 1) : threads), fn, c, ldc};
    run_parts(model_part, (void *)&job, job.nparts, threads);
    return 0;
}
