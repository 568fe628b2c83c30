/* bench_bw: streaming-read memory bandwidth.
 *
 * Reads a 2 GiB buffer (transparent huge pages requested with madvise) with
 * 1 and 2 threads, each thread summing its contiguous half, and prints the
 * median GB/s (1e9 bytes/s) of several passes. Uses AVX-512 loads when the CPU
 * has them, AVX2 otherwise, plain C elsewhere. This is the floor a decode
 * step (each weight byte read once) is compared with; measure it in the same
 * session as the engine, as the host's bandwidth varies over time.
 *
 * usage: bench_bw [GiB] [reps] */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define MAX_THREADS 16

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static double sum_avx512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"))) static double sum_avx2(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    return (double)t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#endif

static double sum_plain(const float *p, size_t n) {
    float a[16] = {0};
    for (size_t i = 0; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) a[j] += p[i + j];
    double s = 0;
    for (int j = 0; j < 16; j++) s += a[j];
    return s;
}

static double (*sum_fn)(const float *, size_t) = sum_plain;
static const char *sum_name = "plain C";

static void pick_sum(void) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
        sum_fn = sum_avx512;
        sum_name = "AVX-512";
    } else if (__builtin_cpu_supports("avx2")) {
        sum_fn = sum_avx2;
        sum_name = "AVX2";
    }
#endif
}

/* ---- a spin barrier (sense-reversing) ----------------------------------- */
typedef struct {
    atomic_int count;
    atomic_int sense;
    int n;
} spin_barrier;

static void spin_barrier_wait(spin_barrier *b) {
    int s = atomic_load(&b->sense);
    if (atomic_fetch_add(&b->count, 1) == b->n - 1) {
        atomic_store(&b->count, 0);
        atomic_store(&b->sense, !s);
    } else {
        for (int spins = 1; atomic_load(&b->sense) == s; spins++) {
#if defined(__x86_64__)
            _mm_pause();
#endif
            if (spins % 4096 == 0) sched_yield(); /* in case vCPUs are oversubscribed */
        }
    }
}

typedef struct {
    const float *buf;
    size_t n;        /* floats in the whole buffer */
    int nth, reps;
    spin_barrier bar;
    double t[64];    /* per-rep elapsed time, written by thread 0 */
    volatile double sink;
} bw_job;

typedef struct {
    bw_job *job;
    int ith;
} bw_thread;

static void *bw_worker(void *p) {
    bw_thread *th = p;
    bw_job *j = th->job;
    size_t chunk = (j->n / (size_t)j->nth) & ~(size_t)63;
    const float *mine = j->buf + chunk * (size_t)th->ith;
    for (int r = 0; r < j->reps; r++) {
        spin_barrier_wait(&j->bar);
        double t0 = now_sec();
        double s = sum_fn(mine, chunk);
        spin_barrier_wait(&j->bar);
        if (th->ith == 0) j->t[r] = now_sec() - t0;
        j->sink += s;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double run_bw(const float *buf, size_t n, int nth, int reps) {
    bw_job job = {.buf = buf, .n = n, .nth = nth, .reps = reps, .bar = {.n = nth}};
    bw_thread th[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    for (int i = 0; i < nth; i++) th[i] = (bw_thread){&job, i};
    for (int i = 1; i < nth; i++) pthread_create(&tid[i], NULL, bw_worker, &th[i]);
    bw_worker(&th[0]);
    for (int i = 1; i < nth; i++) pthread_join(tid[i], NULL);
    qsort(job.t, (size_t)reps, sizeof(double), cmp_double);
    size_t bytes = ((n / (size_t)nth) & ~(size_t)63) * (size_t)nth * sizeof(float);
    return (double)bytes / job.t[reps / 2] * 1e-9;
}

int main(int argc, char **argv) {
    double gib = argc > 1 ? atof(argv[1]) : 2.0;
    int reps = argc > 2 ? atoi(argv[2]) : 7;
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;
    size_t bytes = (size_t)(gib * 1024 * 1024 * 1024) & ~(size_t)((2 << 20) - 1);
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    madvise(mem, bytes, MADV_HUGEPAGE);
    memset(mem, 1, bytes); /* fault every page in before timing */
    pick_sum();
    size_t n = bytes / sizeof(float);
    printf("streaming read, %.2f GiB buffer, %s loads, median of %d\n", (double)bytes / (1 << 30),
           sum_name, reps);
    for (int nth = 1; nth <= 2; nth++)
        printf("threads %d: %6.1f GB/s\n", nth, run_bw(mem, n, nth, reps));
    munmap(mem, bytes);
    return 0;
}
