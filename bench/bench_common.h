/* Shared by the matmul benchmarks: a spinning thread pool (like the
 * engine's), timing and medians, huge-page allocation. Header-only, for the
 * standalone bench programs. */
#ifndef MNV_BENCH_COMMON_H
#define MNV_BENCH_COMMON_H
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* ---- a spinning thread pool ------------------------------------------------ */

typedef struct {
    atomic_int count, sense;
    int n;
} spin_barrier;

static void spin_wait(void *ctx) {
    spin_barrier *b = ctx;
    int s = atomic_load(&b->sense);
    if (atomic_fetch_add(&b->count, 1) == b->n - 1) {
        atomic_store(&b->count, 0);
        atomic_store(&b->sense, !s);
    } else {
        /* Spin, but yield now and then: with more runnable threads than
         * vCPUs (other work on this 2-vCPU machine) a waiter that never
         * yields can hold the CPU its partner needs for a whole time slice. */
        for (int spins = 1; atomic_load(&b->sense) == s; spins++) {
            CPU_RELAX();
            if (spins % 4096 == 0) sched_yield();
        }
    }
}

typedef void (*task_fn)(void *arg, int ith, int nth);

typedef struct {
    int nth;
    spin_barrier start, done, inner;
    task_fn fn;
    void *arg;
    atomic_int quit;
    pthread_t tid[16];
} pool;

typedef struct {
    pool *p;
    int ith;
} pool_worker;
static pool_worker workers[16];

static void *worker_main(void *v) {
    pool_worker *w = v;
    for (;;) {
        spin_wait(&w->p->start);
        if (atomic_load(&w->p->quit)) return NULL;
        w->p->fn(w->p->arg, w->ith, w->p->nth);
        spin_wait(&w->p->done);
    }
}

static void pool_init(pool *p, int nth) {
    *p = (pool){.nth = nth, .start.n = nth, .done.n = nth, .inner.n = nth};
    for (int i = 1; i < nth; i++) {
        workers[i] = (pool_worker){p, i};
        pthread_create(&p->tid[i], NULL, worker_main, &workers[i]);
    }
}

static void pool_run(pool *p, task_fn fn, void *arg) {
    p->fn = fn;
    p->arg = arg;
    spin_wait(&p->start);
    fn(arg, 0, p->nth);
    spin_wait(&p->done);
}

static void pool_free(pool *p) {
    atomic_store(&p->quit, 1);
    spin_wait(&p->start);
    for (int i = 1; i < p->nth; i++) pthread_join(p->tid[i], NULL);
}

/* ---- helpers ----------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

/* Memory for the weight pools: in 2 MiB pages where the kernel gives them,
 * or, with MNV_BENCH_SMALL_PAGES set, in 4 KiB pages as a checkpoint mapped
 * from the page cache has them (the hardware prefetchers stop at each 4 KiB
 * page, so a kernel's rate can differ between the two). */
static void *alloc_huge(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    const char *e = getenv("MNV_BENCH_SMALL_PAGES");
    madvise(p, bytes, e && *e && strcmp(e, "0") != 0 ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
    return p;
}
#endif
