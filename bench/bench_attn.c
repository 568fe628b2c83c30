/* bench_attn: decode attention (one query token) over a paged KV cache of
 * each element type, on the shapes of a 0.48B Llama (16 query heads, 8 KV
 * heads of 64, 24 layers), at several context depths.
 *
 * One "token" attends once in each of the 24 layers, whose caches are
 * distinct (together larger than the L3 cache at depth 2K and more), so K/V
 * come from DRAM as they do in a real decode step. Printed per type and
 * depth: ms per token (median of the reps, one thread), the K/V bytes read
 * per token, and those bytes / time in GB/s, beside a one-thread streaming
 * read of a buffer of the same size measured in the same rep (the floor).
 * Types run interleaved within each rep, so the load of this shared host
 * affects them alike.
 *
 * usage: bench_attn [reps (default 5)] [depths (default 512,2048,8192)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/ops.h"

enum { L = 24, H = 16, HKV = 8, D = 64, B = 16, NT = 4 };
static const mnv_kv_type TYPES[NT] = {MNV_KV_F32, MNV_KV_F16, MNV_KV_Q8, MNV_KV_Q4};

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
    uint8_t *k, *v; /* (L, NB blocks) of B rows each */
    int64_t bs;     /* block bytes */
    int64_t nb;     /* blocks per layer */
} cache;

static void cache_make(cache *c, mnv_kv_type t, int64_t depth) {
    mnv_kv_layout_make(t, D, 0, &c->lay);
    c->nb = (depth + B - 1) / B;
    c->bs = B * HKV * c->lay.row_bytes;
    size_t n = (size_t)(L * c->nb * c->bs);
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

/* One decode token: attention in every layer; seconds. */
static double token(const cache *c, int64_t depth, const float *q, float *out, const int32_t *table) {
    int32_t seq = 0, pos = (int32_t)(depth - 1);
    double t0 = now();
    for (int l = 0; l < L; l++) {
        mnv_attn_args a = {.kc = {c->lay, HKV, B, c->bs}, .vc = {c->lay, HKV, B, c->bs}, .n_head = H,
                           .scale = 0.125f, .k = c->k + (size_t)(l * c->nb * c->bs),
                           .v = c->v + (size_t)(l * c->nb * c->bs), .tables = table, .table_stride = c->nb,
                           .q = q, .seq = &seq, .pos = &pos, .n_tokens = 1, .out = out};
        mnv_cpu_attention(&a, 0, 1);
    }
    return now() - t0;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    const char *list = argc > 2 ? argv[2] : "512,2048,8192";
    if (reps < 1) reps = 1;
    float q[H * D], out[H * D];
    for (int i = 0; i < H * D; i++) q[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
    printf("decode attention, one thread: 24 layers x 16 query heads / 8 KV heads of 64, median of %d\n", reps);
    printf("%6s %-5s %10s %12s %9s %14s\n", "depth", "type", "ms/token", "K/V MB/token", "GB/s", "stream GB/s");
    for (const char *p = list; *p;) {
        int64_t depth = strtoll(p, NULL, 10);
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
        if (depth < 1) continue;
        cache c[NT];
        int32_t *table = malloc(sizeof(int32_t) * (size_t)((depth + B - 1) / B));
        for (int64_t i = 0; i < (depth + B - 1) / B; i++) table[i] = (int32_t)i;
        for (int t = 0; t < NT; t++) cache_make(&c[t], TYPES[t], depth);
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
    return 0;
}
