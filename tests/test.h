/* Minimal test harness: CHECK macros that count failures, a fresh-random
 * source, and a closing line "N passed, N failed". */
#ifndef MNV_TEST_H
#define MNV_TEST_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int t_pass, t_fail;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (cond) {                                                                       \
            t_pass++;                                                                     \
        } else {                                                                          \
            t_fail++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                                 \
    } while (0)

#define CHECKF(cond, ...)                                                                 \
    do {                                                                                  \
        if (cond) {                                                                       \
            t_pass++;                                                                     \
        } else {                                                                          \
            t_fail++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

static inline int t_done(void) {
    printf("%d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}

/* xorshift64* seeded from the clock (printed, so a failure can be replayed
 * with MNV_TEST_SEED). */
static uint64_t t_rng_state;
static inline void t_seed(void) {
    const char *s = getenv("MNV_TEST_SEED");
    t_rng_state = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)clock() << 20;
    if (!t_rng_state) t_rng_state = 88172645463325252ull;
    printf("seed %llu\n", (unsigned long long)t_rng_state);
}
static inline uint64_t t_rand64(void) {
    uint64_t x = t_rng_state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    t_rng_state = x;
    return x * 2685821657736338717ull;
}
/* uniform in [-1, 1) */
static inline float t_randf(void) { return (float)((t_rand64() >> 40) * (1.0 / 8388608.0)) - 1.0f; }
static inline int t_randint(int lo, int hi) { return lo + (int)(t_rand64() % (uint64_t)(hi - lo + 1)); }

#ifdef MINERVA_H
/* A model for a test (NULL, recorded as a failure, when it cannot load);
 * *n_vocab: its vocabulary size. */
static inline mnv_model *t_load_model(const char *dir, int *n_vocab) {
    mnv_model *m = NULL;
    mnv_status st = mnv_model_load(dir, NULL, &m);
    CHECKF(st == MNV_OK, "%s: %s", dir, mnv_last_error());
    mnv_model_info info;
    if (m && n_vocab) *n_vocab = mnv_model_get_info(m, &info) == MNV_OK ? info.n_vocab : 0;
    return m;
}
#endif

/* relative L2 error ||a-b|| / ||b|| */
static inline double t_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
#endif
