/* CPU matmul kernels against a double-precision reference: every
 * implementation of every path (instruction-set level) the host has, each
 * run with the level cap at its own level, every weight type, fresh random shapes (odd
 * sizes, strides wider than rows, NaN in the row padding, inputs that end at
 * an unmapped page) and 1, 2 and 3 threads; results must cover y exactly. */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/cpu/matmul.h"
#include "test.h"

static const mnv_dtype WTYPES[] = {MNV_DTYPE_F32, MNV_DTYPE_F16, MNV_DTYPE_BF16};
static const float SENTINEL = 1234.5f;

typedef struct {
    const mnv_matmul_args *a;
    int ith, nth;
} worker;

static void barrier_wait(void *ctx) { pthread_barrier_wait(ctx); }

static void *worker_main(void *p) {
    worker *w = p;
    mnv_cpu_matmul(w->a, w->ith, w->nth);
    return NULL;
}

/* Run the product on nth threads, the way the thread pool does. */
static void run_threads(mnv_matmul_args *a, int nth) {
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)nth);
    a->barrier = barrier_wait;
    a->barrier_ctx = &bar;
    pthread_t tid[8];
    worker w[8];
    for (int i = 0; i < nth; i++) w[i] = (worker){a, i, nth};
    for (int i = 1; i < nth; i++) pthread_create(&tid[i], NULL, worker_main, &w[i]);
    worker_main(&w[0]);
    for (int i = 1; i < nth; i++) pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&bar);
}

typedef struct {
    int64_t m, n, k, ldx, ldw, ldy;
} shape;

/* Buffers that end exactly where a PROT_NONE page begins, so that a read
 * past the last element (a missing tail mask) faults. */
typedef struct {
    void *map;
    size_t len;
} guarded;

static void *guarded_alloc(size_t bytes, guarded *g) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), body = (bytes + page - 1) / page * page;
    g->len = body + page;
    g->map = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED) abort();
    mprotect((char *)g->map + body, page, PROT_NONE);
    return (char *)g->map + body - bytes;
}

/* Elements in a matrix of rows x cols with row stride ld: the last row ends at k. */
static size_t span(int64_t rows, int64_t cols, int64_t ld) { return (size_t)((rows - 1) * ld + cols); }

/* Weights stored in wtype; wref holds their exact values. The padding
 * between rows holds NaN, which must never reach a result. */
static void *make_weights(const shape *s, mnv_dtype t, double *wref, guarded *g) {
    size_t esz = mnv_dtype_size(t), count = span(s->n, s->k, s->ldw);
    void *w = guarded_alloc(count * esz, g);
    for (size_t i = 0; i < count; i++) {
        bool pad = (int64_t)(i % (size_t)s->ldw) >= s->k;
        float v = pad ? NAN : t_randf();
        if (t == MNV_DTYPE_F32) {
            ((float *)w)[i] = v;
        } else if (t == MNV_DTYPE_F16) {
            ((uint16_t *)w)[i] = pad ? 0x7e00 : mnv_f32_to_f16(v);
            v = mnv_f16_to_f32(((uint16_t *)w)[i]);
        } else {
            ((uint16_t *)w)[i] = mnv_f32_to_bf16(v);
            v = mnv_bf16_to_f32(((uint16_t *)w)[i]);
        }
        wref[i] = v;
    }
    return w;
}

/* y = x w^T in double, and yabs = |x| |w|^T: the scale of each sum's
 * rounding (a sum that cancels to near zero is still rounded at the scale
 * of its terms, so errors are measured against yabs, not y). */
static void reference(const shape *s, const float *x, const double *w, double *y, double *yabs) {
    for (int64_t i = 0; i < s->m; i++)
        for (int64_t j = 0; j < s->n; j++) {
            double acc = 0, aabs = 0;
            for (int64_t p = 0; p < s->k; p++) {
                const double t = (double)x[i * s->ldx + p] * w[j * s->ldw + p];
                acc += t, aabs += fabs(t);
            }
            y[i * s->n + j] = acc;
            yabs[i * s->n + j] = aabs;
        }
}

/* Tolerances, of ||y - yref|| against || |x| |w|^T ||: weights are exact
 * in f32 and the math is f32, so only f32 accumulation error remains (~1e-7
 * here). The AVX512_BF16 prefill path
 * rounds x to bf16 (8 significant bits): ~2^-9 relative error per product,
 * which comes to ~1.5e-3 relative L2 over sums of random-signed terms. */
static double tolerance(const char *impl, mnv_dtype t, const shape *s, bool scratch) {
    bool x_rounded = t == MNV_DTYPE_BF16 && strcmp(impl, "avx512-bf16") == 0 &&
                     s->m > MNV_MATMUL_GEMV_MAX_M && scratch;
    return x_rounded ? 1e-2 : 1e-5;
}

static void check_shape(const char *impl, mnv_dtype t, const shape *s, int nth, bool scratch) {
    guarded gx, gw;
    size_t xcount = span(s->m, s->k, s->ldx);
    float *x = guarded_alloc(sizeof(float) * xcount, &gx);
    for (size_t i = 0; i < xcount; i++) x[i] = (int64_t)(i % (size_t)s->ldx) < s->k ? t_randf() : NAN;
    double *wref = malloc(sizeof(double) * span(s->n, s->k, s->ldw));
    void *w = make_weights(s, t, wref, &gw);
    double *yref = malloc(sizeof(double) * (size_t)(s->m * s->n)), *yabs = malloc(sizeof(double) * (size_t)(s->m * s->n));
    reference(s, x, wref, yref, yabs);

    /* One extra row below m; columns n..ldy-1 are padding that must stay. */
    size_t ycount = (size_t)((s->m + 1) * s->ldy);
    float *y = malloc(sizeof(float) * ycount);
    for (size_t i = 0; i < ycount; i++) y[i] = SENTINEL;
    for (int64_t i = 0; i < s->m; i++)
        for (int64_t j = 0; j < s->n; j++) y[i * s->ldy + j] = NAN;
    size_t ss = mnv_cpu_matmul_scratch_size(s->m, s->k, t);
    void *sc = scratch && ss ? mnv_aligned_alloc(64, ss) : NULL;

    mnv_matmul_args a = {.x = x, .ldx = s->ldx, .w = w, .wtype = t, .ldw = s->ldw, .y = y,
                         .ldy = s->ldy, .m = s->m, .n = s->n, .k = s->k, .scratch = sc};
    run_threads(&a, nth);

    float *yc = malloc(sizeof(float) * (size_t)(s->m * s->n));
    int nonfinite = 0, touched = 0;
    for (int64_t i = 0; i <= s->m; i++)
        for (int64_t j = 0; j < s->ldy; j++) {
            float v = y[i * s->ldy + j];
            if (i < s->m && j < s->n) {
                nonfinite += !isfinite(v);
                yc[i * s->n + j] = v;
            } else {
                touched += v != SENTINEL;
            }
        }
    double num = 0, den = 0; /* ||y - yref|| / || |x| |w|^T || */
    for (int64_t i = 0; i < s->m * s->n; i++) {
        const double d = (double)yc[i] - yref[i];
        num += d * d, den += yabs[i] * yabs[i];
    }
    double err = den > 0 ? sqrt(num / den) : sqrt(num);
    CHECKF(nonfinite == 0 && touched == 0 && err < tolerance(impl, t, s, scratch),
           "%s %s m=%lld n=%lld k=%lld ld=%lld,%lld,%lld nth=%d scratch=%d: "
           "rel_l2 %.3g, %d unwritten, %d written outside",
           impl, mnv_dtype_name(t), (long long)s->m, (long long)s->n, (long long)s->k,
           (long long)s->ldx, (long long)s->ldw, (long long)s->ldy, nth, (int)scratch, err,
           nonfinite, touched);
    munmap(gx.map, gx.len), munmap(gw.map, gw.len);
    free(wref), free(yref), free(yabs), free(y), free(yc);
    mnv_aligned_free(sc);
}

static int64_t pick(const int64_t *v, int count) { return v[t_randint(0, count - 1)]; }

static shape random_shape(int64_t m, bool big) {
    static const int64_t odd[] = {1, 2, 3, 5, 16, 17, 31, 32, 33, 48, 100, 127, 257};
    shape s;
    s.m = m;
    s.n = t_randint(0, 2) ? pick(odd, 13) : t_randint(1, big ? 700 : 300);
    s.k = t_randint(0, 2) ? pick(odd, 13) : t_randint(1, big ? 1600 : 400);
    if (big) s.k = t_randint(1030, 1600), s.n = t_randint(260, 700); /* several k and n blocks */
    s.ldx = s.k + t_randint(0, 1) * t_randint(1, 9);
    s.ldw = s.k + t_randint(0, 1) * t_randint(1, 9);
    s.ldy = s.n + t_randint(0, 1) * t_randint(1, 9);
    return s;
}

static void test_impl(const char *impl) {
    if (!mnv_cpu_matmul_force(impl)) {
        printf("%-12s not available on this host, skipped\n", impl);
        return;
    }
    CHECK(strcmp(mnv_cpu_matmul_impl(), impl) == 0);
    int before = t_fail;
    for (int w = 0; w < 3; w++) {
        for (int m = 1; m <= 9; m++) { /* around the decode / prefill switch */
            shape s = random_shape(m, false);
            check_shape(impl, WTYPES[w], &s, t_randint(1, 3), true);
        }
        for (int r = 0; r < 12; r++) {
            shape s = random_shape(t_randint(1, 70), false);
            check_shape(impl, WTYPES[w], &s, 1 + r % 3, true);
        }
        /* every mid-size m (bf16: streams up to 16, then tiles of 5..8 rows) */
        for (int m = MNV_MATMUL_GEMV_MAX_M + 1; m <= MNV_MATMUL_MID_MAX_M + 1; m++) {
            shape s = random_shape(m, false);
            check_shape(impl, WTYPES[w], &s, 1 + m % 3, true);
        }
        for (int lo = 5; lo <= 17; lo += 12) { /* k longer than one mid-size k block (8192) */
            shape s = random_shape(t_randint(lo, lo == 5 ? 16 : MNV_MATMUL_MID_MAX_M), false);
            s.k = t_randint(8193, 8400), s.n = t_randint(1, 40);
            s.ldx = s.k + t_randint(0, 3), s.ldw = s.k + t_randint(0, 3);
            s.ldy = s.n + t_randint(0, 3);
            check_shape(impl, WTYPES[w], &s, t_randint(1, 3), true);
        }
        shape s = random_shape(t_randint(128, 160), false);
        check_shape(impl, WTYPES[w], &s, t_randint(1, 3), true);
        s = random_shape(t_randint(5, 140), true);
        check_shape(impl, WTYPES[w], &s, t_randint(1, 3), true);
        s = random_shape(t_randint(5, 40), false); /* no scratch: the f32 path must cover */
        check_shape(impl, WTYPES[w], &s, t_randint(1, 3), false);
    }
    printf("%-12s %s\n", impl, t_fail == before ? "ok" : "FAILED");
}

/* k = 0 is an empty sum: y = 0, for every implementation path. */
static void test_empty_k(void) {
    float x[1] = {1}, y[3 * 6];
    uint16_t w[1] = {0};
    for (int i = 0; i < 18; i++) y[i] = SENTINEL;
    mnv_matmul_args a = {.x = x, .ldx = 1, .w = w, .wtype = MNV_DTYPE_BF16, .ldw = 1, .y = y,
                         .ldy = 6, .m = 3, .n = 5, .k = 0};
    run_threads(&a, 2);
    int zeros = 0, kept = 0;
    for (int i = 0; i < 18; i++) {
        if (i % 6 < 5) zeros += y[i] == 0.0f;
        else kept += y[i] == SENTINEL;
    }
    CHECK(zeros == 15 && kept == 3);
}

/* Every path the host can run, best first: the cap at that level, its
 * automatic choice, then every implementation of the table that needs that
 * level (a new row is tested without being named here). */
static void test_paths(void) {
    for (int l = MNV_ISA_COUNT - 1; l >= 0; l--) {
        const mnv_isa level = (mnv_isa)l;
        if (!mnv__isa_host(level)) {
            printf("path %-8s not available on this host\n", mnv__isa_name(level));
            continue;
        }
        mnv__isa_set_cap(level);
        printf("path %-8s automatic choice %s\n", mnv__isa_name(level), mnv_cpu_matmul_impl());
        mnv_cpu_impl_desc d;
        for (int i = 0; mnv_cpu_matmul_impl_at(i, &d); i++) {
            if (d.isa != level) continue;
            if (d.host) test_impl(d.name);
            else printf("%-12s needs a feature this host lacks, skipped\n", d.name);
        }
        CHECK(mnv_cpu_matmul_force(NULL));
    }
    mnv__isa_set_cap(MNV_ISA_COUNT);
}

/* Row-invariant products: every row of a product of m rows, on 1-3
 * threads, is bit for bit the row computed alone (m = 1, one thread), on
 * every implementation the host has and every weight type. */
static void test_row_invariant(const char *impl) {
    if (!mnv_cpu_matmul_force(impl)) return;
    int bad = 0;
    for (int r = 0; r < 8; r++) {
        mnv_dtype t = WTYPES[r % 3];
        /* odd rounds: batched-decode sizes over several k and n blocks */
        shape s = r % 2 ? random_shape(t_randint(MNV_MATMUL_GEMV_MAX_M + 1, MNV_MATMUL_PASSES_MAX_M), true)
                        : random_shape(t_randint(2, 40), false);
        s.ldx = s.k, s.ldw = s.k, s.ldy = s.n;
        float *x = malloc(sizeof(float) * (size_t)(s.m * s.k)), *y = malloc(sizeof(float) * (size_t)(s.m * s.n));
        float *y1 = malloc(sizeof(float) * (size_t)s.n);
        for (int64_t i = 0; i < s.m * s.k; i++) x[i] = t_randf();
        double *wref = malloc(sizeof(double) * (size_t)(s.n * s.k));
        guarded gw;
        void *w = make_weights(&s, t, wref, &gw);
        mnv_matmul_args a = {.x = x, .ldx = s.k, .w = w, .wtype = t, .ldw = s.k, .y = y, .ldy = s.n, .m = s.m,
                             .n = s.n, .k = s.k, .row_invariant = 1};
        run_threads(&a, t_randint(1, 3));
        for (int64_t i = 0; i < s.m; i++) {
            mnv_matmul_args one = a;
            one.x = x + i * s.k, one.y = y1, one.m = 1;
            run_threads(&one, 1);
            bad += memcmp(y1, y + i * s.n, sizeof(float) * (size_t)s.n) != 0;
        }
        munmap(gw.map, gw.len);
        free(x), free(y), free(y1), free(wref);
    }
    CHECKF(bad == 0, "%s: %d rows of row-invariant products differ from the row alone", impl, bad);
}

int main(void) {
    t_seed();
    test_empty_k();
    printf("automatic choice: %s\n", mnv_cpu_matmul_impl());
    test_paths();
    for (int i = 0;; i++) {
        mnv_cpu_impl_desc d;
        if (!mnv_cpu_matmul_impl_at(i, &d)) break;
        if (d.host) test_row_invariant(d.name);
    }
    CHECK(!mnv_cpu_matmul_force("no-such-impl"));
    CHECK(mnv_cpu_matmul_force(NULL));
    return t_done();
}
