/* Persistent, spinning thread pool.
 *
 * Workers wait for a new "generation" of work by spinning on an atomic
 * counter (with the pause instruction) for a while, then fall back to a
 * condition variable. A graph run wakes them once; nodes are separated by a
 * spinning barrier. On virtual machines whose halted vCPUs take milliseconds
 * to wake, spinning between decode steps keeps them hot. */
#include "core/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* Spin this long (in pause iterations) before sleeping: a few ms. */
#define SPIN_ITERS (1 << 20)

struct mnv_threadpool {
    int n;
    pthread_t *threads;
    _Atomic uint64_t generation; /* bumped for each run */
    _Atomic int done;            /* workers finished with this run */
    _Atomic int stop;
    mnv_task_fn fn;
    void *arg;
    /* barrier */
    _Atomic int bar_count;
    _Atomic uint64_t bar_phase;
    /* sleeping */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic int sleepers;
};

typedef struct {
    mnv_threadpool *tp;
    int ith;
} worker_arg;

static void *worker(void *p) {
    worker_arg *wa = p;
    mnv_threadpool *tp = wa->tp;
    int ith = wa->ith;
    free(wa);
    uint64_t seen = 0;
    for (;;) {
        uint64_t gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&tp->generation, memory_order_acquire)) == seen &&
               !atomic_load(&tp->stop)) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&tp->mu);
            atomic_fetch_add(&tp->sleepers, 1);
            while (atomic_load(&tp->generation) == seen && !atomic_load(&tp->stop))
                pthread_cond_wait(&tp->cv, &tp->mu);
            atomic_fetch_sub(&tp->sleepers, 1);
            pthread_mutex_unlock(&tp->mu);
            spins = 0;
        }
        if (atomic_load(&tp->stop)) break;
        seen = gen;
        tp->fn(tp->arg, ith, tp->n);
        atomic_fetch_add_explicit(&tp->done, 1, memory_order_acq_rel);
    }
    return NULL;
}

mnv_status mnv_threadpool_create(int n_threads, mnv_threadpool **out) {
    *out = NULL;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    mnv_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) return mnv_set_error(MNV_ERR_NOMEM, "threadpool: out of memory");
    tp->n = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    tp->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!tp->threads) {
        free(tp);
        return mnv_set_error(MNV_ERR_NOMEM, "threadpool: out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) {
            tp->n = i;
            mnv_threadpool_free(tp);
            return mnv_set_error(MNV_ERR_NOMEM, "threadpool: out of memory");
        }
        wa->tp = tp;
        wa->ith = i;
        if (pthread_create(&tp->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            tp->n = i;
            mnv_threadpool_free(tp);
            return mnv_set_error(MNV_ERR_INTERNAL, "threadpool: cannot start thread %d", i);
        }
    }
    *out = tp;
    return MNV_OK;
}

void mnv_threadpool_free(mnv_threadpool *tp) {
    if (!tp) return;
    atomic_store(&tp->stop, 1);
    pthread_mutex_lock(&tp->mu);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
    free(tp->threads);
    free(tp);
}

int mnv_threadpool_size(const mnv_threadpool *tp) { return tp->n; }

void mnv_threadpool_run(mnv_threadpool *tp, mnv_task_fn fn, void *arg) {
    if (tp->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store(&tp->done, 0);
    atomic_store(&tp->bar_count, 0);
    atomic_fetch_add(&tp->generation, 1); /* seq_cst: ordered before the sleepers check below */
    if (atomic_load(&tp->sleepers)) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
    }
    fn(arg, 0, tp->n);
    while (atomic_load_explicit(&tp->done, memory_order_acquire) != tp->n - 1) cpu_relax();
}

void mnv_threadpool_barrier(mnv_threadpool *tp) {
    if (tp->n == 1) return;
    uint64_t phase = atomic_load_explicit(&tp->bar_phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&tp->bar_count, 1, memory_order_acq_rel) == tp->n - 1) {
        atomic_store_explicit(&tp->bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&tp->bar_phase, 1, memory_order_release);
        return;
    }
    unsigned spins = 0;
    while (atomic_load_explicit(&tp->bar_phase, memory_order_acquire) == phase) {
        cpu_relax();
        if (++spins > (1u << 12)) sched_yield(); /* more threads than free cores: let the others run */
    }
}
