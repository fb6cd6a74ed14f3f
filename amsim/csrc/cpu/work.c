/* work.c -- per-thread work buffers of the kernels. */
#include "engine.h"

/*
 * Per-thread work buffers, kept between calls: allocating (and first touching)
 * a fresh megabyte on every call costs more than a small GEMM. Each thread
 * owns its buffers, so concurrent calls share nothing; they are freed when the
 * thread exits.
 */
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
