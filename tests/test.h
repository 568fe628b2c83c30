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
    fflush(stdout); /* seen even if the test dies */
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
#ifdef MINERVA_H
/* ---- greedy generations through the engine -------------------------------- */
/* The token ids one generation produced (kept by t_collect, up to 64). */
typedef struct {
    int32_t ids[64];
    int n;
} t_ids;

static inline int t_collect(void *ud, int32_t tok, const char *text, size_t len) {
    (void)text, (void)len;
    t_ids *g = ud;
    if (g->n < 64) g->ids[g->n++] = tok;
    return 0;
}

/* n_gen greedy tokens past the end of text into *g (which is emptied). */
static inline mnv_generate_params t_greedy(t_ids *g, int n_gen) {
    g->n = 0;
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = n_gen;
    gp.sampler.temperature = 0;
    gp.ignore_eos = 1;
    gp.on_token = t_collect;
    gp.user_data = g;
    return gp;
}

/* n_gen greedy tokens after prompt (n tokens) through a session of its own
 * (128 tokens, deterministic) into *got. */
static inline void t_session_greedy(mnv_model *m, const int32_t *prompt, int n, int n_gen, t_ids *got) {
    got->n = 0;
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = 128;
    sp.deterministic = 1;
    mnv_session *s = NULL;
    CHECKF(mnv_session_create(m, &sp, &s) == MNV_OK, "session: %s", mnv_last_error());
    if (!s) return;
    mnv_generate_params gp = t_greedy(got, n_gen);
    CHECKF(mnv_generate(s, prompt, (size_t)n, &gp, NULL) == MNV_OK, "generate: %s", mnv_last_error());
    mnv_session_free(s);
}

/* np prompts (prompts[i]: lens[i] tokens) submitted at once to one engine
 * (4 sequences, 24-token steps, 128 tokens each, deterministic, stepped on
 * this thread); n_gen greedy tokens of request i into got[i]. */
/* sp: the requests' sampler (NULL: greedy; request i's seed is sp->seed + i) */
static inline void t_engine_run(mnv_model *m, int np, int32_t (*prompts)[40], const int *lens, int n_gen,
                                const mnv_sampler_params *sp, int host_sampling, t_ids *got) {
    for (int i = 0; i < np; i++) got[i].n = 0;
    mnv_engine_params ep = mnv_engine_params_default();
    ep.host_sampling = host_sampling;
    ep.max_seqs = 4;
    ep.step_tokens = 24;
    ep.max_seq_tokens = 128;
    ep.deterministic = 1;
    ep.run_thread = 0;
    mnv_engine *e = NULL;
    CHECKF(mnv_engine_create(m, &ep, &e) == MNV_OK, "engine: %s", mnv_last_error());
    if (!e) return;
    uint64_t ids[64];
    for (int i = 0; i < np && i < 64; i++) {
        mnv_request_params rp = mnv_request_params_default();
        rp.prompt = prompts[i];
        rp.n_prompt = (size_t)lens[i];
        rp.gen = t_greedy(&got[i], n_gen);
        if (sp) {
            rp.gen.sampler = *sp;
            rp.gen.sampler.seed += (uint64_t)i;
        }
        CHECKF(mnv_engine_submit(e, &rp, &ids[i]) == MNV_OK, "submit: %s", mnv_last_error());
    }
    int active = 1, steps = 0;
    while (active && steps++ < 10000) {
        mnv_status st = mnv_engine_step(e, &active);
        CHECKF(st == MNV_OK, "step: %s", mnv_last_error());
        if (st != MNV_OK) break;
    }
    for (int i = 0; i < np && i < 64; i++) {
        mnv_request_result r;
        CHECKF(mnv_engine_wait(e, ids[i], &r) == MNV_OK, "request %d: %s", i, mnv_last_error());
    }
    mnv_engine_free(e);
}

static inline void t_engine_greedy(mnv_model *m, int np, int32_t (*prompts)[40], const int *lens, int n_gen,
                                   t_ids *got) {
    t_engine_run(m, np, prompts, lens, n_gen, NULL, 0, got);
}
#endif

#endif
