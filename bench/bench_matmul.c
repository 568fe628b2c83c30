/* bench_matmul: CPU matmul throughput on the shapes of a 0.48B Llama
 * (hidden 1024, ffn 5504, 16/8 heads of 64).
 *
 *   prefill  m = 512, GFLOP/s (2*m*n*k per product)
 *   decode   m = 1, GB/s of weights read; products cycle through a pool of
 *            distinct weight matrices larger than the L3 cache, so the
 *            weights come from DRAM as they do in a real decode step
 *            (in parentheses: % of a streaming read of the same pool, each
 *            rep paired with one, median of the per-rep ratios)
 *
 * with 1 and 2 threads (a spinning pool, like the engine's), for BF16, F16
 * and F32 weights. On x86-64 with FMA, the f32 FMA peak of the same threads
 * is measured first (12 independent 8-lane FMA chains per thread) and each
 * prefill figure is also given as a % of it. Figures are "median/best" of several timed runs: this
 * host is shared, and the best run is the one least disturbed.
 *
 * usage: bench_matmul [reps (default 9)] [pool MiB (default 512)] [impl] [dtypes] [sweep|batch]
 *   ("" for impl or dtypes: the default; "sweep": instead, GB/s of weights from DRAM
 *   for m = 1, 4, 5, 8, 16, 32 at 5504x1024, 1024x5504 and 2880x2880; "batch":
 *   GFLOP/s and % of the FMA peak, weights from DRAM, for m = 1, 4, 5, 6, 8, 12, 16
 *   (batched decode) on the products of a 0.48B Qwen2 (4864x896, 896x4864, 896x896))
 *   impl    forces an implementation ("avx512", "avx2", "scalar", ...)
 *   dtypes  which weight types to run, e.g. "bf16,f16" (default all) */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "backend/cpu/matmul.h"

#include "bench_common.h"

/* Small random values in any weight type (the bit patterns of f32 in [-1, 1)). */
static void fill_random(void *p, size_t count, mnv_dtype t) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < count; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float v = (float)((s >> 40) * (1.0 / 8388608.0)) - 1.0f;
        if (t == MNV_DTYPE_F32) ((float *)p)[i] = v;
        else if (t == MNV_DTYPE_F16) ((uint16_t *)p)[i] = mnv_f32_to_f16(v);
        else ((uint16_t *)p)[i] = mnv_f32_to_bf16(v);
    }
}

static void matmul_task(void *arg, int ith, int nth) { mnv_cpu_matmul(arg, ith, nth); }

typedef struct {
    mnv_matmul_args a;
    const char *w0;    /* pool of weight copies */
    size_t wbytes;     /* one copy */
    int ncopies;
} job;

/* Seconds per product over a batch of iters products, each on the next
 * weight copy of the pool. */
static double time_batch(pool *p, job *j, int iters) {
    double t0 = mnv_time_sec();
    for (int it = 0; it < iters; it++) {
        j->a.w = j->w0 + (size_t)(it % j->ncopies) * j->wbytes;
        pool_run(p, matmul_task, &j->a);
    }
    return (mnv_time_sec() - t0) / iters;
}

/* ---- streaming read of the same memory, for the decode ratio ---------------- */

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
#endif

static float sum_plain(const float *p, size_t n) {
    float a[16] = {0};
    for (size_t i = 0; i + 16 <= n; i += 16)
        for (int u = 0; u < 16; u++) a[u] += p[i + u];
    float s = 0;
    for (int u = 0; u < 16; u++) s += a[u];
    return s;
}

typedef struct {
    const float *buf;
    size_t n;
    volatile float sink;
} stream_job;

static void stream_task(void *arg, int ith, int nth) {
    stream_job *s = arg;
    size_t chunk = (s->n / (size_t)nth) & ~(size_t)63;
    const float *p = s->buf + chunk * (size_t)ith;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
        s->sink = sum_avx512(p, chunk);
        return;
    }
#endif
    s->sink = sum_plain(p, chunk);
}

/* GB/s of one streaming pass over the pool. */
static double stream_pass(pool *p, const void *buf, size_t bytes) {
    stream_job s = {.buf = buf, .n = bytes / sizeof(float)};
    double t0 = mnv_time_sec();
    pool_run(p, stream_task, &s);
    return (double)bytes / (mnv_time_sec() - t0) * 1e-9;
}

/* ---- the FMA peak: what the prefill figures are compared with --------------- */

#if defined(__x86_64__)
/* 12 independent chains hide the FMA latency (5 cycles on Zen 2, 4 on most
 * Intel cores) on 2 pipes; the result is used, so nothing is optimised out. */
__attribute__((target("avx2,fma"))) static float fma_chains(long iters) {
    __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-7f);
    /* distinct starting values: equal chains would be merged into one by the compiler */
    __m256 a0 = _mm256_set1_ps(0.10f), a1 = _mm256_set1_ps(0.11f), a2 = _mm256_set1_ps(0.12f);
    __m256 a3 = _mm256_set1_ps(0.13f), a4 = _mm256_set1_ps(0.14f), a5 = _mm256_set1_ps(0.15f);
    __m256 a6 = _mm256_set1_ps(0.16f), a7 = _mm256_set1_ps(0.17f), a8 = _mm256_set1_ps(0.18f);
    __m256 a9 = _mm256_set1_ps(0.19f), a10 = _mm256_set1_ps(0.20f), a11 = _mm256_set1_ps(0.21f);
    for (long i = 0; i < iters; i++) {
        a0 = _mm256_fmadd_ps(a0, b, c), a1 = _mm256_fmadd_ps(a1, b, c);
        a2 = _mm256_fmadd_ps(a2, b, c), a3 = _mm256_fmadd_ps(a3, b, c);
        a4 = _mm256_fmadd_ps(a4, b, c), a5 = _mm256_fmadd_ps(a5, b, c);
        a6 = _mm256_fmadd_ps(a6, b, c), a7 = _mm256_fmadd_ps(a7, b, c);
        a8 = _mm256_fmadd_ps(a8, b, c), a9 = _mm256_fmadd_ps(a9, b, c);
        a10 = _mm256_fmadd_ps(a10, b, c), a11 = _mm256_fmadd_ps(a11, b, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    return _mm256_cvtss_f32(s);
}
#endif

typedef struct {
    long iters;
    volatile float sink;
} fma_job;

static void fma_task(void *arg, int ith, int nth) {
    fma_job *f = arg;
#if defined(__x86_64__)
    f->sink = fma_chains(f->iters);
#endif
}

/* Best of reps: GFLOP/s of 8-lane f32 FMAs on nth threads; 0 without FMA. */
static double fma_peak(int nth, int reps) {
#if defined(__x86_64__)
    if (!__builtin_cpu_supports("fma") || !__builtin_cpu_supports("avx2")) return 0;
    pool p;
    pool_init(&p, nth);
    fma_job f = {.iters = 20 * 1000 * 1000};
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = mnv_time_sec();
        pool_run(&p, fma_task, &f);
        double g = (double)nth * (double)f.iters * 12 * 16 / (mnv_time_sec() - t0) * 1e-9;
        best = g > best ? g : best;
    }
    pool_free(&p);
    return best;
#else
    return 0;
#endif
}

/* Is name one of the comma-separated words of list (any case)? */
static bool listed(const char *list, const char *name) {
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncasecmp(p, name, len) == 0) return true;
        p += n + (end != NULL);
    }
    return false;
}

/* ---- the benchmark --------------------------------------------------------- */

typedef struct {
    const char *name;
    int64_t n, k;
} wshape;

static const wshape SHAPES[] = {
    {"q/o  1024x1024", 1024, 1024},
    {"k/v   512x1024", 512, 1024},
    {"gate/up 5504x1024", 5504, 1024},
    {"down 1024x5504", 1024, 5504},
};
enum { N_SHAPES = sizeof SHAPES / sizeof SHAPES[0] };
static const mnv_dtype WTYPES[] = {MNV_DTYPE_BF16, MNV_DTYPE_F16, MNV_DTYPE_F32};

typedef struct {
    double rate;   /* median GFLOP/s (prefill) or GB/s of weights (decode) */
    double best;   /* the highest rep: the figure least disturbed by other work */
    double ratio;  /* decode: median of rate / streaming read, each rep paired */
} result;

/* 1: products run row-invariant (the engine's deterministic mode). */
static int row_invariant;

/* Each rep times a batch of ~0.1 s; a decode rep is followed by a streaming
 * read of the same pool, so that the ratio compares figures taken a moment
 * apart (this host's bandwidth drifts by 2x within minutes). */
static result run_case_mode(pool *p, const wshape *s, mnv_dtype t, int64_t m, char *wpool,
                            size_t pool_bytes, float *x, float *y, void *scratch, int reps,
                            bool sweep) {
    /* sweep: GB/s, weights from DRAM, for every m */
    const bool decode = m <= MNV_MATMUL_GEMV_MAX_M || sweep;
    size_t wbytes = (size_t)(s->n * s->k) * mnv_dtype_size(t);
    job j = {.a = {.x = x, .ldx = s->k, .wtype = t, .ldw = s->k, .y = y, .ldy = s->n, .m = m,
                   .n = s->n, .k = s->k, .scratch = scratch, .barrier = spin_wait,
                   .barrier_ctx = &p->inner, .row_invariant = row_invariant},
             .w0 = wpool, .wbytes = wbytes,
             /* prefill reuses one weight copy (it is compute-bound); decode cycles */
             .ncopies = decode ? (int)(pool_bytes / wbytes) : 1};
    const double work = decode ? (double)wbytes : 2.0 * (double)(m * s->n * s->k);
    int iters = (int)(0.1 / time_batch(p, &j, 3)) + 1;
    double rate[32], ratio[32];
    for (int r = 0; r < reps; r++) {
        rate[r] = work / time_batch(p, &j, iters) * 1e-9;
        ratio[r] = decode ? rate[r] / stream_pass(p, wpool, pool_bytes) : 0;
    }
    double med = median(rate, reps); /* sorts rate */
    return (result){med, rate[reps - 1], median(ratio, reps)};
}

static result run_case(pool *p, const wshape *s, mnv_dtype t, int64_t m, char *wpool,
                       size_t pool_bytes, float *x, float *y, void *scratch, int reps) {
    return run_case_mode(p, s, t, m, wpool, pool_bytes, x, y, scratch, reps, false);
}

static const wshape SWEEP_SHAPES[] = {
    {"5504x1024", 5504, 1024},
    {"1024x5504", 1024, 5504},
    {"2880x2880", 2880, 2880},
};
static const int64_t SWEEP_M[] = {1, 4, 5, 8, 16, 32};
enum { N_SWEEP_M = sizeof SWEEP_M / sizeof SWEEP_M[0] };

/* GB/s of weights (median) per m, 1 and 2 threads. */
static void run_sweep(mnv_dtype t, char *wpool, size_t pool_bytes, float *x, float *y,
                      void *scratch, int reps) {
    printf("\n%-6s GB/s of weights (from DRAM), 1 thread | 2 threads\n%-12s", mnv_dtype_name(t),
           "m");
    for (int mi = 0; mi < N_SWEEP_M; mi++) printf(" %6lld", (long long)SWEEP_M[mi]);
    printf("\n");
    for (int s = 0; s < 3; s++) {
        double r[3][N_SWEEP_M];
        for (int nth = 1; nth <= 2; nth++) {
            pool p;
            pool_init(&p, nth);
            for (int mi = 0; mi < N_SWEEP_M; mi++)
                r[nth][mi] = run_case_mode(&p, &SWEEP_SHAPES[s], t, SWEEP_M[mi], wpool, pool_bytes,
                                           x, y, scratch, reps, true).rate;
            pool_free(&p);
        }
        printf("%-12s", SWEEP_SHAPES[s].name);
        for (int mi = 0; mi < N_SWEEP_M; mi++) printf(" %6.1f", r[1][mi]);
        printf("  |");
        for (int mi = 0; mi < N_SWEEP_M; mi++) printf(" %6.1f", r[2][mi]);
        printf("\n");
    }
}

static const wshape BATCH_SHAPES[] = {
    {"4864x896", 4864, 896},
    {"896x4864", 896, 4864},
    {"896x896", 896, 896},
};
static const int64_t BATCH_M[] = {1, 4, 5, 6, 8, 12, 16};
enum { N_BATCH_M = sizeof BATCH_M / sizeof BATCH_M[0] };

/* GFLOP/s (median) per m, 1 and 2 threads, weights from DRAM; in brackets the
 * % of the same threads' FMA peak. Each line twice: as by default, then
 * row-invariant ("det": the decode kernel's passes, deterministic mode). */
static void run_batch(mnv_dtype t, char *wpool, size_t pool_bytes, float *x, float *y,
                      void *scratch, int reps, const double peak[3]) {
    printf("\n%-6s GFLOP/s (%% of FMA peak), weights from DRAM\n%-9s %-4s", mnv_dtype_name(t),
           "W", "thr");
    for (int mi = 0; mi < N_BATCH_M; mi++) printf(" %11lld", (long long)BATCH_M[mi]);
    printf("\n");
    for (int s = 0; s < 3; s++)
        for (int v = 0; v < 4; v++) {
            const int nth = 1 + v / 2;
            row_invariant = v % 2;
            pool p;
            pool_init(&p, nth);
            printf("%-9s %d%-3s", BATCH_SHAPES[s].name, nth, row_invariant ? "det" : "");
            for (int mi = 0; mi < N_BATCH_M; mi++) {
                const int64_t m = BATCH_M[mi];
                double gbs = run_case_mode(&p, &BATCH_SHAPES[s], t, m, wpool, pool_bytes, x, y,
                                           scratch, reps, true).rate;
                double g = gbs / (double)mnv_dtype_size(t) * 2.0 * (double)m;
                printf(" %5.1f (%2.0f%%)", g, peak[nth] > 0 ? 100 * g / peak[nth] : 0.0);
            }
            printf("\n");
            pool_free(&p);
        }
    row_invariant = 0;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 9;
    size_t pool_bytes = (size_t)(argc > 2 ? atoi(argv[2]) : 512) << 20;
    if (reps < 1 || reps > 32) reps = 9;
    if (argc > 3 && argv[3][0] && !mnv_cpu_matmul_force(argv[3]))
        return fprintf(stderr, "impl %s not available\n", argv[3]), 1;
    const char *only = argc > 4 && argv[4][0] ? argv[4] : "bf16,f16,f32";
    const bool sweep = argc > 5 && strcmp(argv[5], "sweep") == 0;
    const bool batch = argc > 5 && strcmp(argv[5], "batch") == 0;
    const int64_t M = 512, KMAX = 5504;
    char *wpool = alloc_huge(pool_bytes);
    float *x = malloc(sizeof(float) * (size_t)(M * KMAX));
    float *y = malloc(sizeof(float) * (size_t)(M * 5504));
    void *scratch = mnv_aligned_alloc(64, mnv_cpu_matmul_scratch_size(M, KMAX, MNV_DTYPE_BF16));
    if (!wpool || !x || !y || !scratch) return fprintf(stderr, "out of memory\n"), 1;
    fill_random(x, (size_t)(M * KMAX), MNV_DTYPE_F32);
    printf("matmul impl %s, median/best of %d, decode pool %zu MiB\n", mnv_cpu_matmul_impl(), reps,
           pool_bytes >> 20);
    const double peak[3] = {0, fma_peak(1, reps), fma_peak(2, reps)};
    if (peak[1] > 0)
        printf("f32 FMA peak (AVX2, best of %d): %.1f GFLOP/s 1 thread, %.1f 2 threads\n", reps,
               peak[1], peak[2]);

    for (int w = 0; w < 3; w++) {
        mnv_dtype t = WTYPES[w];
        if (!listed(only, mnv_dtype_name(t))) continue;
        fill_random(wpool, pool_bytes / mnv_dtype_size(t), t);
        if (batch) {
            run_batch(t, wpool, pool_bytes, x, y, scratch, reps, peak);
            continue;
        }
        if (sweep) {
            run_sweep(t, wpool, pool_bytes, x, y, scratch, reps);
            continue;
        }
        printf("\n%-18s %-23s  %s\n", mnv_dtype_name(t), "prefill m=512 GFLOP/s",
               "decode m=1 GB/s (% of streaming read)");
        printf("%-18s %11s %11s  %16s  %16s\n", "weights", "1 thread", "2 threads", "1 thread",
               "2 threads");
        for (int s = 0; s < N_SHAPES; s++) {
            result r[2][3];
            for (int nth = 1; nth <= 2; nth++) {
                pool p;
                pool_init(&p, nth);
                r[0][nth] = run_case(&p, &SHAPES[s], t, M, wpool, pool_bytes, x, y, scratch, reps);
                r[1][nth] = run_case(&p, &SHAPES[s], t, 1, wpool, pool_bytes, x, y, scratch, reps);
                pool_free(&p);
            }
            printf("%-18s %5.1f/%5.1f %5.1f/%5.1f  %4.1f/%4.1f (%3.0f%%)  %4.1f/%4.1f (%3.0f%%)\n",
                   SHAPES[s].name, r[0][1].rate, r[0][1].best, r[0][2].rate, r[0][2].best,
                   r[1][1].rate, r[1][1].best, 100 * r[1][1].ratio, r[1][2].rate, r[1][2].best,
                   100 * r[1][2].ratio);
            if (peak[1] > 0)
                printf("%-18s prefill median = %.0f%% (1 thread), %.0f%% (2 threads) of the FMA peak\n",
                       "", 100 * r[0][1].rate / peak[1], 100 * r[0][2].rate / peak[2]);
        }
    }
    mnv_aligned_free(scratch);
    free(x), free(y);
    munmap(wpool, pool_bytes);
    return 0;
}
