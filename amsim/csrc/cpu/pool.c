/* pool.c -- the worker threads that run a GEMM's parts, and the default thread count. */
#include "engine.h"

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
 * around us (a BLAS library that spins long after its calls slows the next
 * GEMM; docs/gemm-internals.md). Polling yields the CPU each round: a worker
 * may share its CPU with the caller it waits for, and the scheduler may be
 * slow to move one of them.
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
            /* Poll a little before sleeping: waking a sleeping thread can take as long as a small
             * GEMM (longer in a VM), and GEMMs come in runs (a network's layers). */
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
 * another busy thread (a spinning BLAS thread), and the scheduler may take
 * milliseconds to move it. Meanwhile a small GEMM on two threads runs slower
 * than on one, so the planner stops counting on the worker for POOL_SHARED_NS
 * (amsim_pool_awake); a worker that takes its part at once lifts that.
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
     * would come back late by a wake-up (the one the workers avoid by polling). */
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

/* The GEMM entry points call this as they return: amsim_pool_awake's "back to back". */
static void pool_gemm_returned(void)
{
    __atomic_store_n(&pool_last_return, (int64_t)now_ns(), __ATOMIC_RELAXED);
}

/* AMSIM_NUM_THREADS, else every CPU this process may run on: read once, at the first GEMM. */
static int default_thread_count;
static pthread_once_t default_threads_once = PTHREAD_ONCE_INIT;

static void default_threads_init(void)
{
    const char *env = getenv("AMSIM_NUM_THREADS");
    long n = 0;
    if (env && *env)
        n = strtol(env, NULL, 10);
    if (n < 1) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    }
    default_thread_count = n < 1 ? 1 : (n > MAX_THREADS ? MAX_THREADS : (int)n);
}

static int default_threads(void)
{
    pthread_once(&default_threads_once, default_threads_init);
    return default_thread_count;
}

int amsim_default_threads(void)
{
    return default_threads();
}

/* The threads a pass over `work` units takes: the caller alone below `min_work` (a hand-off would
 * cost more than it saves), else `threads` (0: the engine's default), at most MAX_THREADS. */
static int pass_threads(int64_t work, int64_t min_work, int threads)
{
    const int use = work >= min_work ? (threads > 0 ? threads : default_threads()) : 1;
    return use > MAX_THREADS ? MAX_THREADS : use;
}

/* The parts a pass over `rows` rows is split into for `threads` threads: at most one per row, and
 * at least one (which, for no rows, does the pass's set-up alone). */
static int pass_parts(int64_t rows, int threads)
{
    return rows < threads ? (rows > 0 ? (int)rows : 1) : threads;
}
