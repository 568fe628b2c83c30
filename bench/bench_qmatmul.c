/* bench_qmatmul: CPU quantized matmul throughput on the shapes of a 0.48B
 * Llama (hidden 1024, ffn 5504, 16/8 heads of 64), for MLX affine 8-bit and
 * 4-bit at group 64 (BF16 scales and biases: 8.5 and 4.5 bits per weight, the
 * bytes of llama.cpp's Q8_0 and Q4_0) and mxfp4 (4.25 bits per weight).
 *
 *   prefill  m = 512, GFLOP/s (2*m*n*k per product)
 *   decode   m = 1, GB/s of packed codes + scales + biases read; products cycle
 *            through a pool of distinct weight matrices larger than the L3
 *            cache, so the weights come from DRAM as in a real decode step
 *   stream   a plain streaming read of the same pool, for the ratio
 *
 * with 1 and 2 threads (a spinning pool, like the engine's). Each figure is
 * the median of several timed runs.
 *
 * usage: bench_qmatmul [reps (default 5)] [pool MiB (default 512)] [impl] [formats] [sweep|cpu]
 *   impl     forces an implementation ("avx512-vnni", "avx512", "avx2-int8", "avx2",
 *            "scalar"; "" = auto)
 *   formats  which to run, e.g. "q8,q4" (default "q8,q4,mxfp4"; also q6, q5, q3, q2,
 *            mxfp8, nvfp4, and the affine widths at groups 32 and 128: q6g32, q3g128, ...)
 *   sweep    "sweep": instead, GB/s of weights (from DRAM, the pool cycled) for
 *            m = 1, 4, 5, 8, 16, 32 at 5504x1024, 1024x5504 and 2880x2880
 *            (the mid-size m of mixture-of-experts layers and batched decode)
 *            "cpu": instead, one thread's compute rates timed in thread CPU time
 *            (minimum over reps x 8 runs), which other processes sharing the
 *            cores disturb far less than wall time: decode m = 1 on one
 *            1024x1024 weight copy (cache-resident: the kernel's own speed,
 *            GB/s) and prefill m = 512 on 5504x1024 (GFLOP/s) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>

#include "backend/cpu/qmatmul.h"

#include "bench_common.h"

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
__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
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
    if (__builtin_cpu_supports("avx2")) {
        s->sink = sum_avx2(p, chunk);
        return;
    }
#endif
    s->sink = sum_plain(p, chunk);
}

static double stream_gbs(pool *p, const void *buf, size_t bytes, int reps) {
    stream_job s = {.buf = buf, .n = bytes / sizeof(float)};
    double t[32];
    pool_run(p, stream_task, &s);
    for (int r = 0; r < reps; r++) {
        double t0 = mnv_time_sec();
        pool_run(p, stream_task, &s);
        t[r] = mnv_time_sec() - t0;
    }
    return (double)bytes / median(t, reps) * 1e-9;
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

/* ---- quantized weights in a pool of copies ------------------------------------ */

typedef struct {
    const char *name, *desc;
    mnv_qformat fmt;
} qcase;

static const qcase FORMATS[] = {
    {"q8", "q8: affine 8-bit g64", {MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_BF16}},
    {"q4", "q4: affine 4-bit g64", {MNV_QMODE_AFFINE, 4, 64, MNV_DTYPE_BF16}},
    {"mxfp4", "mxfp4 (g32, E8M0)", {MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8}},
    {"q6", "q6: affine 6-bit g64", {MNV_QMODE_AFFINE, 6, 64, MNV_DTYPE_BF16}},
    {"q3", "q3: affine 3-bit g64", {MNV_QMODE_AFFINE, 3, 64, MNV_DTYPE_BF16}},
    {"mxfp8", "mxfp8 (g32, E8M0)", {MNV_QMODE_MXFP8, 8, 32, MNV_DTYPE_U8}},
    {"nvfp4", "nvfp4 (g16, E4M3)", {MNV_QMODE_NVFP4, 4, 16, MNV_DTYPE_U8}},
    {"q5", "q5: affine 5-bit g64", {MNV_QMODE_AFFINE, 5, 64, MNV_DTYPE_BF16}},
    {"q2", "q2: affine 2-bit g64", {MNV_QMODE_AFFINE, 2, 64, MNV_DTYPE_BF16}},
#define QG(B, G) {"q" #B "g" #G, "q" #B "g" #G ": affine " #B "-bit g" #G, {MNV_QMODE_AFFINE, B, G, MNV_DTYPE_BF16}}
    QG(6, 32), QG(6, 128), QG(5, 32), QG(5, 128), QG(3, 32), QG(3, 128), QG(2, 32), QG(2, 128),
    QG(8, 32), QG(8, 128), QG(4, 32), QG(4, 128),
#undef QG
};
enum { N_FORMATS = sizeof FORMATS / sizeof FORMATS[0] };

typedef struct {
    size_t wbytes, sbytes, total; /* packed codes, scales (= biases), one copy (64-byte multiple) */
} qsizes;

static qsizes sizes_of(const mnv_qformat *f, int64_t n, int64_t k) {
    qsizes s;
    s.wbytes = (size_t)(n * k * f->bits / 8);
    s.sbytes = (size_t)(n * (k / f->group_size)) * (f->mode == MNV_QMODE_AFFINE ? mnv_dtype_size(f->scale_dtype) : 1);
    s.total = (s.wbytes + 63) / 64 * 64 + 2 * ((s.sbytes + 63) / 64 * 64);
    return s;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return rng >> 11;
}

/* Random codes everywhere (mxfp8: no NaN codes, which no encoder writes),
 * then valid scales (affine bf16 in +-0.02 for scales and biases, E8M0
 * 120..130, nvfp4 E4M3 0x18..0x50) in the scale regions of every shape's
 * layout of the pool (the layouts overlap; each shape sees random codes and
 * valid scales in its own). */
static void fill_pool(char *pool, size_t bytes, const mnv_qformat *f);

static void qmatmul_task(void *arg, int ith, int nth) { mnv_cpu_qmatmul(arg, ith, nth); }

typedef struct {
    mnv_qmatmul_args a;
    const char *pool;
    qsizes sz;
    int ncopies;
} job;

static void point_at(job *j, int copy) {
    const char *p = j->pool + (size_t)copy * j->sz.total;
    j->a.w = (const uint32_t *)p;
    j->a.scales = p + (j->sz.wbytes + 63) / 64 * 64;
    j->a.biases = j->a.fmt.mode == MNV_QMODE_AFFINE ? (const char *)j->a.scales + (j->sz.sbytes + 63) / 64 * 64
                                                    : NULL;
}

/* Seconds per product: median over reps of a timed batch of products, each
 * on the next weight copy of the pool. */
static double time_product(pool *p, job *j, int reps, double min_sec) {
    double t[32];
    int iters = 1;
    for (int r = -1; r < reps; r++) { /* r = -1: warm up and size the batch */
        double t0 = mnv_time_sec();
        for (int it = 0; it < iters; it++) {
            point_at(j, it % j->ncopies);
            pool_run(p, qmatmul_task, &j->a);
        }
        double dt = mnv_time_sec() - t0;
        if (r < 0) {
            iters = (int)(min_sec / (dt / iters)) + 1;
            continue;
        }
        t[r] = dt / iters;
    }
    return median(t, reps);
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

static const wshape SWEEP_SHAPES[] = {
    {"5504x1024", 5504, 1024},
    {"1024x5504", 1024, 5504},
    {"2880x2880", 2880, 2880},
};
enum { N_SWEEP_SHAPES = sizeof SWEEP_SHAPES / sizeof SWEEP_SHAPES[0] };
static const int64_t SWEEP_M[] = {1, 4, 5, 8, 16, 32};
enum { N_SWEEP_M = sizeof SWEEP_M / sizeof SWEEP_M[0] };

static void fill_pool(char *pool, size_t bytes, const mnv_qformat *f) {
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t v = next_rand() ^ (next_rand() << 21);
        memcpy(pool + i, &v, 8);
    }
    if (f->mode == MNV_QMODE_MXFP8)
        for (size_t i = 0; i < bytes; i++)
            if ((pool[i] & 0x7f) == 0x7f) pool[i] ^= 1;
    for (int s = 0; s < N_SHAPES + N_SWEEP_SHAPES; s++) {
        const wshape *sh = s < N_SHAPES ? &SHAPES[s] : &SWEEP_SHAPES[s - N_SHAPES];
        const qsizes z = sizes_of(f, sh->n, sh->k);
        const size_t sreg = (z.sbytes + 63) / 64 * 64;
        for (size_t c = 0; c < bytes / z.total; c++) {
            char *sc = pool + c * z.total + (z.wbytes + 63) / 64 * 64;
            if (f->mode == MNV_QMODE_AFFINE) {
                for (size_t i = 0; i < sreg; i++) { /* scales then biases: 2 * sreg bytes of bf16 */
                    float a = (float)((double)(next_rand() % 20001) / 10000.0 - 1.0);
                    ((uint16_t *)sc)[i] = mnv_f32_to_bf16(0.02f * a);
                }
            } else { /* nvfp4: E4M3 of amax/6 as MLX writes it without a global scale, for
                        small weights: 0.0039-0.0254, half of them subnormal codes (E = 0) */
                const bool nv = f->mode == MNV_QMODE_NVFP4;
                for (size_t i = 0; i < z.sbytes; i++)
                    ((uint8_t *)sc)[i] = (uint8_t)(nv ? 0x02 + next_rand() % 12 : 120 + next_rand() % 11);
            }
        }
    }
}

static double run_case_mode(pool *p, const wshape *s, const mnv_qformat *f, int64_t m, char *wpool,
                            size_t pool_bytes, float *x, float *y, void *scratch, int reps, bool sweep) {
    job j = {.a = {.x = x, .ldx = s->k, .ldw = s->k * f->bits / 32, .lds = s->k / f->group_size, .fmt = *f,
                   .global_scale = 1.0f, .y = y, .ldy = s->n, .m = m, .n = s->n, .k = s->k, .scratch = scratch,
                   .barrier = spin_wait, .barrier_ctx = &p->inner},
             .pool = wpool, .sz = sizes_of(f, s->n, s->k)};
    /* Prefill reuses one weight copy (it is compute-bound); decode cycles. */
    const bool prefill = m > MNV_QMATMUL_GEMV_MAX_M && !sweep;
    j.ncopies = prefill ? 1 : (int)(pool_bytes / j.sz.total);
    const double sec = time_product(p, &j, reps, prefill ? 0.3 : 0.2);
    const size_t bytes = j.sz.wbytes + (f->mode == MNV_QMODE_AFFINE ? 2 : 1) * j.sz.sbytes;
    return prefill ? 2.0 * (double)(m * s->n * s->k) / sec * 1e-9 : (double)bytes / sec * 1e-9;
}

static double run_case(pool *p, const wshape *s, const mnv_qformat *f, int64_t m, char *wpool, size_t pool_bytes,
                       float *x, float *y, void *scratch, int reps) {
    return run_case_mode(p, s, f, m, wpool, pool_bytes, x, y, scratch, reps, false);
}

/* GB/s of weights per m, 1 and 2 threads. */
static void run_sweep(const qcase *qc, char *wpool, size_t pool_bytes, float *x, float *y, void *scratch, int reps) {
    printf("\n%-24s  GB/s of weights (from DRAM), 1 thread | 2 threads\n%-12s", qc->desc, "m");
    for (int mi = 0; mi < N_SWEEP_M; mi++) printf(" %6lld", (long long)SWEEP_M[mi]);
    printf("\n");
    for (int s = 0; s < N_SWEEP_SHAPES; s++) {
        double r[3][N_SWEEP_M];
        for (int nth = 1; nth <= 2; nth++) {
            pool p;
            pool_init(&p, nth);
            for (int mi = 0; mi < N_SWEEP_M; mi++)
                r[nth][mi] = run_case_mode(&p, &SWEEP_SHAPES[s], &qc->fmt, SWEEP_M[mi], wpool, pool_bytes, x, y,
                                           scratch, reps, true);
            pool_free(&p);
        }
        printf("%-12s", SWEEP_SHAPES[s].name);
        for (int mi = 0; mi < N_SWEEP_M; mi++) printf(" %6.1f", r[1][mi]);
        printf("  |");
        for (int mi = 0; mi < N_SWEEP_M; mi++) printf(" %6.1f", r[2][mi]);
        printf("\n");
    }
}

static double thread_cpu_sec(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Minimum thread CPU seconds of one product (one thread, the first weight copy). */
static double cpu_time_of(mnv_qmatmul_args *a, int runs, int iters) {
    double best = 1e30;
    mnv_cpu_qmatmul(a, 0, 1);
    for (int r = 0; r < runs; r++) {
        const double t0 = thread_cpu_sec();
        for (int it = 0; it < iters; it++) mnv_cpu_qmatmul(a, 0, 1);
        best = MNV_MIN(best, (thread_cpu_sec() - t0) / iters);
    }
    return best;
}

static void run_cpu(const qcase *qc, char *wpool, float *x, float *y, void *scratch, int reps) {
    const wshape dec = {"1024x1024", 1024, 1024}, pre = SHAPES[2];
    job j = {.a = {.x = x, .ldx = dec.k, .ldw = dec.k * qc->fmt.bits / 32, .lds = dec.k / qc->fmt.group_size,
                   .fmt = qc->fmt, .global_scale = 1.0f, .y = y, .ldy = dec.n, .m = 1, .n = dec.n, .k = dec.k,
                   .scratch = scratch},
             .pool = wpool, .sz = sizes_of(&qc->fmt, dec.n, dec.k)};
    point_at(&j, 0);
    const size_t bytes = j.sz.wbytes + (qc->fmt.mode == MNV_QMODE_AFFINE ? 2 : 1) * j.sz.sbytes;
    const double td = cpu_time_of(&j.a, 8 * reps, 20);
    j.a = (mnv_qmatmul_args){.x = x, .ldx = pre.k, .ldw = pre.k * qc->fmt.bits / 32, .lds = pre.k / qc->fmt.group_size,
                             .fmt = qc->fmt, .global_scale = 1.0f, .y = y, .ldy = pre.n, .m = 512, .n = pre.n,
                             .k = pre.k, .scratch = scratch};
    j.sz = sizes_of(&qc->fmt, pre.n, pre.k);
    point_at(&j, 0);
    const double tp = cpu_time_of(&j.a, 2 * reps, 1);
    printf("%-24s  decode %s %6.1f GB/s   prefill m=512 %s %6.1f GFLOP/s   (1 thread, CPU time)\n", qc->desc,
           dec.name, (double)bytes / td * 1e-9, pre.name, 2.0 * 512 * (double)(pre.n * pre.k) / tp * 1e-9);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    size_t pool_bytes = (size_t)(argc > 2 ? atoi(argv[2]) : 512) << 20;
    if (reps < 1 || reps > 32) reps = 5;
    if (argc > 3 && argv[3][0] && !mnv_cpu_qmatmul_force(argv[3]))
        return fprintf(stderr, "impl %s not available\n", argv[3]), 1;
    const char *only = argc > 4 && argv[4][0] ? argv[4] : "q8,q4,mxfp4";
    const bool sweep = argc > 5 && strcmp(argv[5], "sweep") == 0;
    const bool cpu = argc > 5 && strcmp(argv[5], "cpu") == 0;
    const int64_t M = 512, KMAX = 5504, NMAX = 5504;
    char *wpool = alloc_huge(pool_bytes);
    float *x = malloc(sizeof(float) * (size_t)(M * KMAX));
    float *y = malloc(sizeof(float) * (size_t)(M * NMAX));
    size_t ss = 0;
    for (int f = 0; f < N_FORMATS; f++) ss = MNV_MAX(ss, mnv_cpu_qmatmul_scratch_size(M, KMAX, &FORMATS[f].fmt, 2));
    void *scratch = mnv_aligned_alloc(64, ss);
    if (!wpool || !x || !y || !scratch) return fprintf(stderr, "out of memory\n"), 1;
    for (int64_t i = 0; i < M * KMAX; i++) x[i] = (float)((double)(next_rand() % 20001) / 10000.0 - 1.0);
    printf("qmatmul impl %s, median of %d, decode pool %zu MiB\n", mnv_cpu_qmatmul_impl(), reps, pool_bytes >> 20);

    for (int fi = 0; fi < N_FORMATS; fi++) {
        const qcase *qc = &FORMATS[fi];
        if (!listed(only, qc->name)) continue;
        fill_pool(wpool, pool_bytes, &qc->fmt);
        if (cpu) {
            run_cpu(qc, wpool, x, y, scratch, reps);
            continue;
        }
        if (sweep) {
            run_sweep(qc, wpool, pool_bytes, x, y, scratch, reps);
            continue;
        }
        printf("\n%-24s     prefill m=512 GFLOP/s   decode m=1 GB/s (%% of stream)\n", qc->desc);
        printf("%-28s %12s %10s %14s %14s\n", "", "1 thread", "2 threads", "1 thread", "2 threads");
        double stream[3];
        for (int nth = 1; nth <= 2; nth++) {
            pool p;
            pool_init(&p, nth);
            stream[nth] = stream_gbs(&p, wpool, pool_bytes, reps);
            pool_free(&p);
        }
        for (int s = 0; s < N_SHAPES; s++) {
            double r[2][3];
            for (int nth = 1; nth <= 2; nth++) {
                pool p;
                pool_init(&p, nth);
                r[0][nth] = run_case(&p, &SHAPES[s], &qc->fmt, M, wpool, pool_bytes, x, y, scratch, reps);
                r[1][nth] = run_case(&p, &SHAPES[s], &qc->fmt, 1, wpool, pool_bytes, x, y, scratch, reps);
                pool_free(&p);
            }
            printf("%-28s %12.1f %10.1f %7.1f (%3.0f%%) %6.1f (%3.0f%%)\n", SHAPES[s].name, r[0][1], r[0][2], r[1][1],
                   100 * r[1][1] / stream[1], r[1][2], 100 * r[1][2] / stream[2]);
        }
        printf("%-28s %12s %10s %14.1f %14.1f\n", "streaming read (same pool)", "", "", stream[1], stream[2]);
    }
    mnv_aligned_free(scratch);
    free(x), free(y);
    munmap(wpool, pool_bytes);
    return 0;
}
