/* The engine: requests batched together give exactly what each gives alone
 * (greedy, f32 cache) with chunked prefill, staggered arrivals, a queue
 * longer than the running set, prefix sharing and a pool small enough to
 * evict and preempt; on every model family (sliding windows shorter than
 * the prompts, so rings wrap). Replayed graphs give bit-identical logits to
 * freshly built ones. Cancellation from another thread mid-prefill and
 * mid-decode returns every block; a randomized stress of submits, cancels
 * and lengths on a small pool keeps the pool's invariants. */
#include <pthread.h>
#include <unistd.h>

#include "minerva.h"
#include "core/topcands.h"
#include "runtime/engine_int.h"
#include "runtime/session.h"
#include "test.h"

#define MAXP 16
#define MAXGEN 24

typedef struct {
    int32_t ids[MAXGEN + 8];
    int n;
} got_ids;

static int collect_ids(void *ud, int32_t tok, const char *text, size_t len) {
    got_ids *g = ud;
    if (g->n < MAXGEN + 8) g->ids[g->n++] = tok;
    return 0;
}

static mnv_generate_params greedy(int n, got_ids *g) {
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = n;
    gp.sampler.temperature = 0;
    gp.ignore_eos = 1;
    gp.on_token = collect_ids;
    gp.user_data = g;
    return gp;
}

/* The K and V types of the runs (f32 unless a test sets them). */
static int32_t kv_k = MNV_KV_F32, kv_v = MNV_KV_F32;
/* Batched runs: the sampler of every request (NULL: greedy; the seed is
 * the request's index added to it) and engine_params.host_sampling. */
static const mnv_sampler_params *run_sampler;
static int32_t run_host_sampling;

/* Each prompt alone, through a session and mnv_generate: the reference. */
static void alone(mnv_model *m, int32_t prompts[][96], const int *lens, int n, int n_gen, got_ids *want) {
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = 256;
    sp.deterministic = 1;
    sp.kv_type_k = kv_k;
    sp.kv_type_v = kv_v;
    mnv_session *s = NULL;
    CHECKF(mnv_session_create(m, &sp, &s) == MNV_OK, "session: %s", mnv_last_error());
    for (int i = 0; s && i < n; i++) {
        mnv_session_reset(s);
        want[i].n = 0;
        mnv_generate_params gp = greedy(n_gen, &want[i]);
        CHECKF(mnv_generate(s, prompts[i], (size_t)lens[i], &gp, NULL) == MNV_OK, "generate: %s", mnv_last_error());
    }
    mnv_session_free(s);
}

typedef struct {
    int32_t max_seqs, step_tokens, kv_max_tokens, stagger, prefix;
} run_cfg;

/* All prompts through one engine driven by the caller, one more submitted
 * every `stagger` steps (0: all at once). */
static void batched(mnv_model *m, int32_t prompts[][96], const int *lens, int n, int n_gen, const run_cfg *rc,
                    got_ids *got, mnv_engine_stats *st_out, int32_t *cached) {
    mnv_engine_params ep = mnv_engine_params_default();
    ep.max_seqs = rc->max_seqs;
    ep.step_tokens = rc->step_tokens;
    ep.kv_max_tokens = rc->kv_max_tokens;
    ep.max_seq_tokens = 256;
    ep.prefix_cache = rc->prefix;
    ep.deterministic = 1;
    ep.kv_type_k = kv_k;
    ep.kv_type_v = kv_v;
    ep.run_thread = 0;
    ep.host_sampling = run_host_sampling;
    mnv_engine *e = NULL;
    mnv_status st = mnv_engine_create(m, &ep, &e);
    CHECKF(st == MNV_OK, "engine: %s", mnv_last_error());
    if (!e) return;
    uint64_t ids[MAXP];
    int submitted = 0, steps = 0, active = 1;
    while (submitted < n || active) {
        if (submitted < n && (rc->stagger == 0 || steps % rc->stagger == 0)) {
            do {
                got[submitted].n = 0;
                mnv_request_params rp = mnv_request_params_default();
                rp.prompt = prompts[submitted];
                rp.n_prompt = (size_t)lens[submitted];
                rp.gen = greedy(n_gen, &got[submitted]);
                if (run_sampler) {
                    rp.gen.sampler = *run_sampler;
                    rp.gen.sampler.seed += (uint64_t)submitted;
                }
                st = mnv_engine_submit(e, &rp, &ids[submitted]);
                CHECKF(st == MNV_OK, "submit: %s", mnv_last_error());
                submitted++;
            } while (rc->stagger == 0 && submitted < n);
        }
        st = mnv_engine_step(e, &active);
        CHECKF(st == MNV_OK, "step: %s", mnv_last_error());
        if (st != MNV_OK || ++steps > 100000) break;
    }
    for (int i = 0; i < submitted; i++) {
        mnv_request_result r;
        st = mnv_engine_wait(e, ids[i], &r);
        CHECKF(st == MNV_OK, "request %d: %s", i, mnv_last_error());
        CHECK(r.gen.n_generated == n_gen && r.gen.stop_reason == MNV_STOP_MAX_TOKENS);
        cached[i] = r.n_cached;
    }
    mnv_engine_get_stats(e, st_out);
    CHECKF(st_out->kv_blocks_used == 0, "%lld blocks still used", (long long)st_out->kv_blocks_used);
    CHECK(mnv_kv_pool_check(e->pool) == MNV_OK);
    mnv_engine_free(e);
}

static int first_diff(const got_ids *a, const got_ids *b) {
    int i = 0;
    while (i < a->n && i < b->n && a->ids[i] == b->ids[i]) i++;
    return i;
}

static int compare(const char *dir, const char *what, const got_ids *want, const got_ids *got, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (want[i].n != got[i].n || memcmp(want[i].ids, got[i].ids, sizeof(int32_t) * (size_t)want[i].n)) {
            if (!bad) printf("%s, %s: prompt %d differs at token %d\n", dir, what, i, first_diff(&want[i], &got[i]));
            bad++;
        }
    CHECKF(bad == 0, "%s, %s: %d of %d prompts differ from their run alone", dir, what, bad, n);
    return bad;
}

static void test_equivalence(const char *dir) {
    int V = 0;
    mnv_model *m = t_load_model(dir, &V);
    if (!m) return;
    static int32_t prompts[MAXP][96];
    int lens[MAXP], n = MAXP, n_gen = 20;
    for (int i = 0; i < n; i++) { /* 1 to 90 tokens, some chunked (step 32) */
        lens[i] = i == 0 ? 1 : t_randint(2, 90);
        for (int j = 0; j < 96; j++) prompts[i][j] = t_randint(0, V - 1);
    }
    got_ids want[MAXP], got[MAXP];
    int32_t cached[MAXP];
    mnv_engine_stats es;
    alone(m, prompts, lens, n, n_gen, want);
    run_cfg plain = {8, 32, 4096, 3, 1};
    batched(m, prompts, lens, n, n_gen, &plain, got, &es, cached);
    compare(dir, "batched, staggered", want, got, n);
    CHECKF(es.graph_cache_hits >= 10, "graph cache: %llu hits, %llu misses",
           (unsigned long long)es.graph_cache_hits, (unsigned long long)es.graph_cache_misses);
    printf("%-36s 16 prompts, 8 at once: same ids; %llu steps, graph cache %llu hits / %llu misses\n", dir,
           (unsigned long long)es.steps, (unsigned long long)es.graph_cache_hits,
           (unsigned long long)es.graph_cache_misses);

    /* shared prefixes: half the prompts start with the same 48 tokens */
    for (int i = 1; i < n; i += 2) {
        lens[i] = MNV_MAX(lens[i], 60);
        memcpy(prompts[i], prompts[n - 1], 48 * sizeof(int32_t));
        if (lens[n - 1] < 60) lens[n - 1] = 60;
    }
    alone(m, prompts, lens, n, n_gen, want);
    run_cfg shared = {4, 32, 4096, 2, 1};
    batched(m, prompts, lens, n, n_gen, &shared, got, &es, cached);
    compare(dir, "shared prefixes", want, got, n);
    int hits = 0;
    for (int i = 0; i < n; i++) hits += cached[i] > 0;
    CHECKF(es.prefix_hit_tokens > 0 && hits > 0, "no prefix was reused (%llu tokens)",
           (unsigned long long)es.prefix_hit_tokens);
    printf("%-36s shared prefixes: same ids; %d requests reused %llu cached tokens\n", dir, hits,
           (unsigned long long)es.prefix_hit_tokens);

    /* a pool of 176 tokens for 4 sequences of up to 110: evictions, preemption */
    run_cfg tight = {4, 32, 176, 0, 1};
    batched(m, prompts, lens, n, n_gen, &tight, got, &es, cached);
    compare(dir, "small pool", want, got, n);
    printf("%-36s small pool: same ids; %llu preemptions\n", dir, (unsigned long long)es.preemptions);
    /* one sequence in a pool of 64 tokens: a prompt chunk shrinks until the
     * window's ring fits beside the full layers' blocks */
    int short_lens[MAXP];
    for (int i = 0; i < n; i++) short_lens[i] = MNV_MIN(lens[i], 44);
    alone(m, prompts, short_lens, n, n_gen, want);
    run_cfg single = {1, 512, 64, 0, 1};
    batched(m, prompts, short_lens, n, n_gen, &single, got, &es, cached);
    compare(dir, "one sequence, a 64-token pool", want, got, n);
    alone(m, prompts, lens, n, n_gen, want);
    run_cfg noprefix = {16, 512, 4096, 0, 0};
    batched(m, prompts, lens, n, n_gen, &noprefix, got, &es, cached);
    compare(dir, "16 at once, no prefix cache", want, got, n);
    CHECK(es.prefix_hit_tokens == 0);
    mnv_model_free(m);
}

/* Sampled requests: the tokens picked from the candidates computed beside
 * the logits (host_sampling -1: on the CPU too) equal those drawn from the whole rows
 * brought back (host_sampling 1), batched and staggered, for chains that
 * cut at top-k, top-p or min-p (with penalties that lower logits, before
 * top-k) and for ones the candidates cannot decide (plain temperature,
 * penalties before top-p, a negative presence penalty), which must take
 * the rows. */
static void test_sampled(const char *dir) {
    int V = 0;
    mnv_model *m = t_load_model(dir, &V);
    if (!m) return;
    static int32_t prompts[8][96];
    int lens[8], n = 8, n_gen = 16;
    for (int i = 0; i < n; i++) {
        lens[i] = t_randint(1, 60);
        for (int j = 0; j < 96; j++) prompts[i][j] = t_randint(0, V - 1);
    }
    struct {
        const char *what;
        int32_t top_k;
        float top_p, min_p, temp, repeat, presence;
        int cands; /* 1: the candidates must decide every token; -1: none */
    } chains[] = {
        {"default chain", 40, 0.95f, 0.05f, 0.8f, 1.0f, 0.0f, 1},
        {"top-k 256, hot", MNV_TOP_CANDS, 1.0f, 0.0f, 1.5f, 1.0f, 0.0f, 1},
        {"top-p 0.9", 0, 0.9f, 0.0f, 1.0f, 1.0f, 0.0f, 0},
        {"min-p 0.1", 0, 1.0f, 0.1f, 1.2f, 1.0f, 0.0f, 0},
        {"temperature alone", 0, 1.0f, 0.0f, 1.0f, 1.0f, 0.0f, -1},
        {"penalties, top-k", 40, 0.95f, 0.05f, 0.8f, 1.3f, 0.5f, 0},
        {"penalties, top-p", 0, 0.9f, 0.0f, 0.8f, 1.3f, 0.0f, -1},
        {"negative presence", 40, 1.0f, 0.0f, 0.8f, 1.0f, -0.5f, -1},
    };
    run_cfg cfg = {4, 32, 4096, 2, 1};
    got_ids want[8], got[8];
    int32_t cached[8];
    mnv_engine_stats es;
    for (size_t c = 0; c < sizeof chains / sizeof chains[0]; c++) {
        mnv_sampler_params sp = mnv_sampler_params_default();
        sp.top_k = chains[c].top_k, sp.top_p = chains[c].top_p, sp.min_p = chains[c].min_p;
        sp.temperature = chains[c].temp, sp.repeat_penalty = chains[c].repeat, sp.seed = 1000 * c + 7;
        sp.presence_penalty = chains[c].presence;
        run_sampler = &sp;
        run_host_sampling = 1;
        batched(m, prompts, lens, n, n_gen, &cfg, want, &es, cached);
        CHECKF(es.sampled_from_cands == 0, "%s, %s: host sampling took %llu tokens from candidates", dir,
               chains[c].what, (unsigned long long)es.sampled_from_cands);
        run_host_sampling = -1; /* candidates on the CPU too */
        batched(m, prompts, lens, n, n_gen, &cfg, got, &es, cached);
        compare(dir, chains[c].what, want, got, n);
        const bool all_cands = es.sampled_from_rows == 0 && es.sampled_from_cands == (uint64_t)(n * n_gen);
        CHECKF(chains[c].cands != 1 || all_cands, "%s, %s: %llu tokens from candidates, %llu from rows", dir,
               chains[c].what, (unsigned long long)es.sampled_from_cands, (unsigned long long)es.sampled_from_rows);
        CHECKF(chains[c].cands != -1 || es.sampled_from_cands == 0, "%s, %s: %llu tokens from candidates", dir,
               chains[c].what, (unsigned long long)es.sampled_from_cands);
        printf("%-36s sampled, %-18s: same ids; %llu tokens from candidates, %llu from rows\n", dir, chains[c].what,
               (unsigned long long)es.sampled_from_cands, (unsigned long long)es.sampled_from_rows);
    }
    run_sampler = NULL;
    mnv_engine_params ep = mnv_engine_params_default();
    ep.host_sampling = 2;
    mnv_engine *e = NULL;
    CHECK(mnv_engine_create(m, &ep, &e) == MNV_ERR_INVALID_ARG && !e && strstr(mnv_last_error(), "host_sampling"));
    mnv_model_free(m);
}

/* Replayed graphs against graphs built afresh for every step: bit-identical
 * logits over a prefill and decode steps of two sequences. */
static void test_graph_replay(const char *dir) {
    int V = 0;
    mnv_model *m = t_load_model(dir, &V);
    if (!m) return;
    float *a = malloc(sizeof(float) * 2 * (size_t)V), *b = malloc(sizeof(float) * 2 * (size_t)V);
    mnv_session *s1 = NULL, *s2 = NULL;
    mnv_session_params sp = mnv_session_params_default();
    sp.deterministic = 1; /* else the thread count the machine's load allows may change the last bits */
    mnv_session_create_multi(m, &sp, 2, &s1);
    mnv_session_create_multi(m, &sp, 2, &s2);
    mnv__engine_set_graph_cache(s2->e, false);
    int32_t ids[40], pos[40], seq[40], rows[2];
    int worst = 0;
    for (int i = 0; i < 40; i++) ids[i] = t_randint(0, V - 1);
    for (int step = 0; step < 12; step++) {
        int T = step == 0 ? 40 : 2;
        for (int t = 0; t < T; t++) {
            seq[t] = t % 2;
            pos[t] = step == 0 ? t / 2 : 20 + step - 1;
            if (step) ids[t] = t_randint(0, V - 1);
        }
        rows[0] = T - 2, rows[1] = T - 1;
        mnv_batch bt = {.n_tokens = T, .ids = ids, .pos = pos, .seq = seq, .n_out = 2, .out_rows = rows};
        CHECK(mnv_session_forward(s1, &bt, a) == MNV_OK);
        CHECK(mnv_session_forward(s2, &bt, b) == MNV_OK);
        if (memcmp(a, b, sizeof(float) * 2 * (size_t)V) != 0) {
            printf("step %d rel %.3g\n", step, t_rel_l2(a, b, 2 * (size_t)V));
            worst++;
        }
    }
    CHECKF(worst == 0, "%s: %d steps of replayed graphs differ from fresh ones", dir, worst);
    CHECK(s1->e->stats.graph_cache_hits >= 10 && s2->e->stats.graph_cache_hits == 0);
    mnv_session_free(s1);
    mnv_session_free(s2);
    free(a);
    free(b);
    mnv_model_free(m);
}

/* A session's truncation restarts its pool sequence from the history, the
 * prefix cache serving all but the last partial block; a reset keeps the
 * blocks cached for a context that starts the same way. Deterministic: the
 * logits must be bit-identical to the first evaluation's. */
static void test_session_restart(const char *dir) {
    int V = 0;
    mnv_model *m = t_load_model(dir, &V);
    if (!m) return;
    int n = 60;
    mnv_session_params sp = mnv_session_params_default();
    sp.deterministic = 1;
    sp.n_batch = 8;
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, &sp, &s) == MNV_OK);
    int32_t ids[60];
    for (int i = 0; i < n; i++) ids[i] = t_randint(0, V - 1);
    float *l1 = malloc(sizeof(float) * (size_t)(n * V)), *l2 = malloc(sizeof(float) * (size_t)(n * V));
    CHECK(mnv_session_eval(s, ids, (size_t)n, l1) == MNV_OK);
    int cuts[3] = {23, 32, 1}, bad = 0;
    for (int c = 0; c < 3; c++) {
        CHECK(mnv_session_truncate(s, cuts[c]) == MNV_OK);
        CHECK(mnv_session_eval(s, ids + cuts[c], (size_t)(n - cuts[c]), l2) == MNV_OK);
        bad += memcmp(l1 + (size_t)cuts[c] * V, l2, sizeof(float) * (size_t)((n - cuts[c]) * V)) != 0;
    }
    mnv_session_reset(s); /* the same context again, last logits only: 48 tokens come from the cache */
    CHECK(mnv_session_eval(s, ids, (size_t)n, NULL) == MNV_OK && mnv_session_n_past(s) == n);
    bad += memcmp(l1 + (size_t)(n - 1) * V, s->last_logits, sizeof(float) * (size_t)V) != 0;
    mnv_kv_pool_stats ps;
    mnv_kv_pool_stats_get(mnv__engine_pool(s->e), &ps);
    CHECKF(bad == 0, "%s: %d re-evaluations after a truncation or reset differ", dir, bad);
    CHECKF(ps.prefix_hit_tokens >= 16 + 32 + 48, "%s: %lld tokens from the prefix cache", dir,
           (long long)ps.prefix_hit_tokens);
    mnv_session_free(s);
    free(l1);
    free(l2);
    mnv_model_free(m);
}

/* ---- cancellation and stress on a running engine -------------------------------------- */

typedef struct {
    atomic_int tokens;
} counter;

static int count_tokens(void *ud, int32_t tok, const char *text, size_t len) {
    atomic_fetch_add(&((counter *)ud)->tokens, 1);
    return 0;
}

typedef struct {
    mnv_engine *e;
    uint64_t ids[2];
    mnv_status st[2];
} cancel_job;

static void *cancel_two(void *arg) {
    cancel_job *j = arg;
    for (int i = 0; i < 2; i++) j->st[i] = mnv_engine_cancel(j->e, j->ids[i]);
    return NULL;
}

static void wait_blocks_free(mnv_engine *e) {
    mnv_engine_stats es;
    for (int i = 0; i < 2000; i++) {
        mnv_engine_get_stats(e, &es);
        if (es.n_running == 0 && es.n_waiting == 0) break;
        usleep(1000);
    }
    CHECKF(es.kv_blocks_used == 0, "%lld blocks used after every request ended", (long long)es.kv_blocks_used);
}

/* The caller drives the steps; after a few, another thread cancels a
 * request mid-prefill and one mid-decode: both end at the next step with
 * MNV_ERR_CANCELLED, a third runs on, every block comes back. */
static void test_cancel(mnv_model *m) {
    mnv_engine_params ep = mnv_engine_params_default();
    ep.max_seqs = 4;
    ep.step_tokens = 16; /* the long prompt takes many steps */
    ep.max_seq_tokens = 1024;
    ep.run_thread = 0;
    mnv_engine *e = NULL;
    CHECKF(mnv_engine_create(m, &ep, &e) == MNV_OK, "engine: %s", mnv_last_error());
    if (!e) return;
    mnv_model_info info;
    mnv_model_get_info(m, &info);
    int32_t prompt[600];
    for (int i = 0; i < 600; i++) prompt[i] = t_randint(0, info.n_vocab - 1);
    counter c[3] = {{0}, {0}, {0}};
    uint64_t id[3];
    for (int k = 1; k <= 3; k++) { /* the short ones first: prompts are served in arrival order */
        int i = k % 3;
        mnv_request_params rp = mnv_request_params_default();
        rp.prompt = prompt;
        rp.n_prompt = i == 0 ? 600 : 4; /* 0: cancelled mid-prefill; 1: mid-decode; 2: runs on */
        rp.gen.max_tokens = i == 2 ? 30 : 400;
        rp.gen.ignore_eos = 1;
        rp.gen.on_token = count_tokens;
        rp.gen.user_data = &c[i];
        CHECK(mnv_engine_submit(e, &rp, &id[i]) == MNV_OK);
    }
    int32_t active = 0;
    for (int i = 0; i < 6; i++) CHECK(mnv_engine_step(e, &active) == MNV_OK);
    mnv_engine_stats es;
    mnv_engine_get_stats(e, &es);
    CHECK(es.n_running == 3 && es.kv_blocks_used > 0);
    cancel_job job = {e, {id[0], id[1]}, {MNV_OK, MNV_OK}};
    pthread_t th;
    pthread_create(&th, NULL, cancel_two, &job);
    pthread_join(th, NULL);
    CHECK(job.st[0] == MNV_OK && job.st[1] == MNV_OK);
    CHECK(mnv_engine_step(e, &active) == MNV_OK);
    mnv_engine_get_stats(e, &es);
    CHECKF(es.n_running == 1, "%d running after the cancels", es.n_running);
    while (active) CHECK(mnv_engine_step(e, &active) == MNV_OK);
    mnv_request_result r;
    mnv_status st0 = mnv_engine_wait(e, id[0], &r);
    CHECKF(st0 == MNV_ERR_CANCELLED && r.gen.n_generated == 0, "mid-prefill: %s, %d generated",
           mnv_status_str(st0), r.gen.n_generated);
    mnv_status st1 = mnv_engine_wait(e, id[1], &r);
    CHECKF(st1 == MNV_ERR_CANCELLED && r.gen.n_generated == 6, "mid-decode: %s, %d generated",
           mnv_status_str(st1), r.gen.n_generated);
    CHECK(mnv_engine_wait(e, id[2], &r) == MNV_OK && r.gen.n_generated == 30);
    CHECK(mnv_engine_cancel(e, id[2]) == MNV_ERR_INVALID_ARG); /* ended */
    CHECK(mnv_engine_wait(e, id[2], NULL) == MNV_ERR_INVALID_ARG);
    mnv_engine_get_stats(e, &es);
    CHECKF(es.kv_blocks_used == 0, "%lld blocks used after the requests ended", (long long)es.kv_blocks_used);
    CHECK(mnv_kv_pool_check(e->pool) == MNV_OK);
    /* bad requests fail at once */
    mnv_request_params rp = mnv_request_params_default();
    uint64_t bad;
    rp.prompt = prompt;
    rp.n_prompt = 2000;
    CHECK(mnv_engine_submit(e, &rp, &bad) == MNV_ERR_RANGE && bad == 0);
    int32_t oov = info.n_vocab;
    rp.prompt = &oov;
    rp.n_prompt = 1;
    CHECK(mnv_engine_submit(e, &rp, &bad) == MNV_ERR_RANGE);
    rp.n_prompt = 0;
    CHECK(mnv_engine_submit(e, &rp, &bad) == MNV_ERR_INVALID_ARG);
    mnv_engine_free(e);
}

typedef struct {
    mnv_engine *e;
    uint64_t *ids;
    int n;
} canceller;

static void *cancel_some(void *arg) {
    canceller *c = arg;
    for (int i = 0; i < c->n; i += 3) {
        usleep((useconds_t)t_randint(0, 3000));
        mnv_engine_cancel(c->e, c->ids[i]); /* may have ended already */
    }
    return NULL;
}

static void test_stress(mnv_model *m) {
    mnv_engine_params ep = mnv_engine_params_default();
    ep.max_seqs = 6;
    ep.step_tokens = 24;
    ep.max_seq_tokens = 128;
    ep.kv_max_tokens = 192;
    ep.kv_block_tokens = t_randint(0, 1) ? 16 : 5;
    mnv_engine *e = NULL;
    CHECKF(mnv_engine_create(m, &ep, &e) == MNV_OK, "engine: %s", mnv_last_error());
    if (!e) return;
    mnv_model_info info;
    mnv_model_get_info(m, &info);
    enum { N = 40 };
    uint64_t ids[N];
    int32_t base[100];
    for (int i = 0; i < 100; i++) base[i] = t_randint(0, info.n_vocab - 1);
    for (int i = 0; i < N; i++) {
        int32_t prompt[100];
        int n = t_randint(1, 100), shared = t_randint(0, n);
        for (int j = 0; j < n; j++) prompt[j] = j < shared ? base[j] : t_randint(0, info.n_vocab - 1);
        mnv_request_params rp = mnv_request_params_default();
        rp.prompt = prompt;
        rp.n_prompt = (size_t)n;
        rp.gen.max_tokens = t_randint(0, 27);
        rp.gen.sampler.seed = (uint64_t)i;
        CHECK(mnv_engine_submit(e, &rp, &ids[i]) == MNV_OK);
    }
    canceller c = {e, ids, N};
    pthread_t th;
    pthread_create(&th, NULL, cancel_some, &c);
    int ok = 0, cancelled = 0;
    for (int i = 0; i < N; i++) {
        mnv_status st = mnv_engine_wait(e, ids[i], NULL);
        CHECKF(st == MNV_OK || st == MNV_ERR_CANCELLED, "request %d: %s", i, mnv_last_error());
        ok += st == MNV_OK;
        cancelled += st == MNV_ERR_CANCELLED;
    }
    pthread_join(th, NULL);
    wait_blocks_free(e);
    mnv_engine_stats es;
    mnv_engine_get_stats(e, &es);
    CHECK(es.kv_bytes_peak <= es.kv_bytes_total);
    printf("stress: %d finished, %d cancelled, %llu steps, %llu preemptions, peak %llu of %llu KV bytes\n", ok,
           cancelled, (unsigned long long)es.steps, (unsigned long long)es.preemptions,
           (unsigned long long)es.kv_bytes_peak, (unsigned long long)es.kv_bytes_total);
    mnv_engine_free(e); /* the pool's own invariants were checked by every engine test above */
}

int main(void) {
    t_seed();
    const char *dirs[] = {"../models/stories260K", "fixtures/models/tiny-llama", "fixtures/models/tiny-qwen3",
                          "fixtures/models/tiny-gptoss-mxfp4", "fixtures/models/tiny-mistral"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) test_equivalence(dirs[i]);
    /* quantized caches: rows are stored the same whatever the batching, so the same holds */
    kv_k = MNV_KV_Q8, kv_v = MNV_KV_Q4;
    printf("K q8, V q4:\n");
    test_equivalence("../models/stories260K");
    test_equivalence("fixtures/models/tiny-gptoss-mxfp4");
    kv_k = kv_v = MNV_KV_F32;
    test_session_restart("../models/stories260K");
    test_session_restart("fixtures/models/tiny-gptoss-mxfp4");
    test_sampled("../models/stories260K");
    test_sampled("fixtures/models/tiny-gptoss-mxfp4");
    test_graph_replay("../models/stories260K");
    test_graph_replay("fixtures/models/tiny-gptoss-mxfp4");
    mnv_model *m = NULL;
    if (mnv_model_load("../models/stories260K", NULL, &m) == MNV_OK) {
        test_cancel(m);
        test_stress(m);
        mnv_model_free(m);
    }
    if (mnv_model_load("fixtures/models/tiny-gptoss-mxfp4", NULL, &m) == MNV_OK) {
        test_stress(m);
        mnv_model_free(m);
    }
    return t_done();
}
