/* bench_attn: attention alone over a paged KV cache of each element type.
 *
 * decode (the default): one query token on the shapes of a 0.48B Llama (16
 * query heads, 8 KV heads of 64, 24 layers), at several context depths. One
 * "token" attends once in each of the 24 layers, whose caches are distinct
 * (together larger than the L3 cache at depth 2K and more), so K/V come
 * from DRAM as they do in a real decode step. Printed per type and depth:
 * ms per token (median of the reps), the K/V bytes read per token, and
 * those bytes / time in GB/s, beside a streaming read of a buffer of the
 * same size measured in the same rep (the floor; one thread). --kv-heads N
 * (with 2N query heads) and --threads N give the shapes where threads
 * outnumber (token, KV head) pairs and the key range is split.
 *
 * prefill: the last T tokens of a context of T (a whole causal prefill),
 * one layer of the same shape, on --threads threads (default 2). Printed
 * per type and length: ms, and GFLOP/s of the QK^T and PV products that the
 * causal mask keeps (4 T (T + 1) / 2 * H * D flops).
 *
 * Types run interleaved within each rep, so the load of this shared host
 * affects them alike.
 *
 * usage: bench_attn [decode|prefill] [reps (default 5)] [depths or lengths]
 *                   [--threads N] [--kv-heads N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/ops.h"
#include "core/threadpool.h"

enum { L = 24, D = 64, B = 16, NT = 4 };
static const mnv_kv_type TYPES[NT] = {MNV_KV_F32, MNV_KV_F16, MNV_KV_Q8, MNV_KV_Q4};
static int HKV = 8, H = 16;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A one-thread streaming read of n bytes (sum of 64-bit words). */
static double stream_read(const uint64_t *p, size_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= n / 8; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
    return (double)(s0 + s1 + s2 + s3);
}

typedef struct {
    mnv_kv_layout lay;
    uint8_t *k, *v; /* (layers, NB blocks) of B rows each */
    int64_t bs;     /* block bytes */
    int64_t nb;     /* blocks per layer */
} cache;

static void cache_make(cache *c, mnv_kv_type t, int64_t depth, int layers) {
    mnv_kv_layout_make(t, D, 0, &c->lay);
    c->nb = (depth + B - 1) / B;
    c->bs = B * HKV * c->lay.row_bytes;
    size_t n = (size_t)(layers * c->nb * c->bs);
    c->k = malloc(n);
    c->v = malloc(n);
    float row[D];
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t off = 0; off < n; off += (size_t)c->lay.row_bytes) {
        for (int i = 0; i < D; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            row[i] = (float)((s >> 40) * (1.0 / 8388608.0)) - 1.0f;
        }
        mnv_kv_store_row(&c->lay, row, c->k + off);
        mnv_kv_store_row(&c->lay, row, c->v + off);
    }
}

/* ---- threads ---- */
static mnv_threadpool *pool;

static void pool_barrier(void *ctx) { mnv_threadpool_barrier(pool); }

static void attend(void *arg, int ith, int nth) { mnv_cpu_attention(arg, ith, nth); }

static void run(mnv_attn_args *a) {
    static void *scratch;
    static size_t have;
    int nth = mnv_threadpool_size(pool);
    size_t need = mnv_cpu_attention_scratch_size(a->n_tokens, HKV, H, D, nth);
    if (need > have) free(scratch), scratch = malloc(need), have = need;
    a->scratch = scratch, a->barrier = pool_barrier;
    if (nth == 1)
        attend(a, 0, 1);
    else
        mnv_threadpool_run(pool, attend, a);
}

static mnv_attn_args args(const cache *c, int l, const float *q, float *out, const int32_t *seq, const int32_t *pos,
                          int64_t T, const int32_t *table) {
    return (mnv_attn_args){.kc = {c->lay, HKV, B, c->bs}, .vc = {c->lay, HKV, B, c->bs}, .n_head = H, .scale = 0.125f,
                           .k = c->k + (size_t)(l * c->nb * c->bs), .v = c->v + (size_t)(l * c->nb * c->bs),
                           .tables = table, .table_stride = c->nb, .q = q, .seq = seq, .pos = pos, .n_tokens = T,
                           .out = out};
}

/* One decode token: attention in every layer; seconds. */
static double token(const cache *c, int64_t depth, const float *q, float *out, const int32_t *table) {
    int32_t seq = 0, pos = (int32_t)(depth - 1);
    double t0 = now();
    for (int l = 0; l < L; l++) {
        mnv_attn_args a = args(c, l, q, out, &seq, &pos, 1, table);
        run(&a);
    }
    return now() - t0;
}

static void decode(int reps, const char *list, int nth) {
    float *q = malloc(sizeof(float) * (size_t)(H * D)), *out = malloc(sizeof(float) * (size_t)(H * D));
    for (int i = 0; i < H * D; i++) q[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
    printf("decode attention, %d thread(s): 24 layers x %d query heads / %d KV heads of 64, median of %d\n", nth, H,
           HKV, reps);
    printf("%6s %-5s %10s %12s %9s %14s\n", "depth", "type", "ms/token", "K/V MB/token", "GB/s", "stream GB/s");
    for (const char *p = list; *p;) {
        int64_t depth = strtoll(p, NULL, 10);
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
        if (depth < 1) continue;
        cache c[NT];
        int32_t *table = malloc(sizeof(int32_t) * (size_t)((depth + B - 1) / B));
        for (int64_t i = 0; i < (depth + B - 1) / B; i++) table[i] = (int32_t)i;
        for (int t = 0; t < NT; t++) cache_make(&c[t], TYPES[t], depth, L);
        size_t sn = (size_t)(2 * L * c[1].nb * c[1].bs); /* the f16 cache's bytes */
        uint64_t *buf = malloc(sn);
        memset(buf, 1, sn);
        double *ms = malloc(sizeof(double) * (size_t)(reps * (NT + 1)));
        volatile double sink = 0;
        for (int r = 0; r < reps; r++) {
            for (int t = 0; t < NT; t++) ms[t * reps + r] = token(&c[t], depth, q, out, table);
            double t0 = now();
            sink += stream_read(buf, sn);
            ms[NT * reps + r] = now() - t0;
        }
        for (int t = 0; t <= NT; t++) qsort(ms + t * reps, (size_t)reps, sizeof(double), cmp_double);
        double stream = (double)sn / ms[NT * reps + reps / 2] / 1e9;
        for (int t = 0; t < NT; t++) {
            double sec = ms[t * reps + reps / 2], bytes = (double)(2 * L) * (double)depth * HKV * c[t].lay.row_bytes;
            printf("%6lld %-5s %10.3f %12.1f %9.2f %14.2f\n", (long long)depth, mnv_kv_type_name(TYPES[t]), sec * 1e3,
                   bytes / 1e6, bytes / sec / 1e9, stream);
            free(c[t].k), free(c[t].v);
        }
        (void)sink;
        free(buf), free(ms), free(table);
    }
    free(q), free(out);
}

static void prefill(int reps, const char *list, int nth) {
    printf("prefill attention, %d thread(s): one layer, %d query heads / %d KV heads of 64, causal, median of %d\n",
           nth, H, HKV, reps);
    printf("%6s %-5s %10s %9s\n", "tokens", "type", "ms", "GFLOP/s");
    for (const char *p = list; *p;) {
        int64_t T = strtoll(p, NULL, 10);
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
        if (T < 1) continue;
        cache c[NT];
        int32_t *table = malloc(sizeof(int32_t) * (size_t)((T + B - 1) / B)), *seq = calloc((size_t)T, 4);
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
        float *q = malloc(sizeof(float) * (size_t)(T * H * D)), *out = malloc(sizeof(float) * (size_t)(T * H * D));
        for (int64_t i = 0; i < (T + B - 1) / B; i++) table[i] = (int32_t)i;
        for (int64_t i = 0; i < T; i++) pos[i] = (int32_t)i;
        for (int64_t i = 0; i < T * H * D; i++) q[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
        for (int t = 0; t < NT; t++) cache_make(&c[t], TYPES[t], T, 1);
        double *ms = malloc(sizeof(double) * (size_t)(reps * NT));
        for (int r = 0; r < reps; r++)
            for (int t = 0; t < NT; t++) {
                mnv_attn_args a = args(&c[t], 0, q, out, seq, pos, T, table);
                double t0 = now();
                run(&a);
                ms[t * reps + r] = now() - t0;
            }
        double flops = 4.0 * (double)T * (double)(T + 1) / 2 * H * D;
        for (int t = 0; t < NT; t++) {
            qsort(ms + t * reps, (size_t)reps, sizeof(double), cmp_double);
            double sec = ms[t * reps + reps / 2];
            printf("%6lld %-5s %10.2f %9.1f\n", (long long)T, mnv_kv_type_name(TYPES[t]), sec * 1e3, flops / sec / 1e9);
            free(c[t].k), free(c[t].v);
        }
        free(ms), free(table), free(seq), free(pos), free(q), free(out);
    }
}

int main(int argc, char **argv) {
    bool pre = false;
    int reps = 5, nth = 0, pi = 0;
    const char *list = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            nth = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv-heads") && i + 1 < argc)
            HKV = atoi(argv[++i]), H = 2 * HKV;
        else if (!strcmp(argv[i], "prefill"))
            pre = true;
        else if (!strcmp(argv[i], "decode"))
            pre = false;
        else if (pi++ == 0)
            reps = atoi(argv[i]);
        else
            list = argv[i];
    }
    if (reps < 1) reps = 1;
    if (HKV < 1 || HKV > 64) HKV = 8, H = 16;
    if (nth < 1) nth = pre ? 2 : 1;
    if (mnv_threadpool_create(nth, &pool) != MNV_OK) return 1;
    mnv_threadpool_set_adaptive(pool, false);
    if (pre)
        prefill(reps, list ? list : "2048,8192", nth);
    else
        decode(reps, list ? list : "512,2048,8192", nth);
    mnv_threadpool_free(pool);
    return 0;
}
