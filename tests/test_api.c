/* What an embedding application needs beyond generation: cancellation from
 * another thread (during generation and during a long prompt), the load
 * progress callback, the memory estimate before loading, model metadata, the
 * log callback, error messages copied for another thread, and several
 * sessions on one model in several threads. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "core/core.h"
#include "minerva.h"
#include "runtime/session.h"
#include "test.h"

#define MODEL "../models/stories260K"
#define FIXM "fixtures/models/"

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct {
    char text[8192];
    size_t len;
    int calls;
    int cancel_at;            /* on this call, ask the canceller thread and wait for it */
    atomic_int *go, *done;    /* handshake with the canceller */
} collect;

static int on_token(void *ud, int32_t tok, const char *text, size_t len) {
    collect *c = ud;
    (void)tok;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, text, len);
        c->len += len;
        c->text[c->len] = 0;
    }
    if (++c->calls == c->cancel_at) { /* the other thread cancels while we wait here */
        atomic_store(c->go, 1);
        while (!atomic_load(c->done)) sched_yield();
    }
    return 0;
}

static mnv_generate_params greedy(int n, collect *c) {
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = n;
    gp.sampler.temperature = 0;
    gp.on_token = on_token;
    gp.user_data = c;
    return gp;
}

typedef struct {
    mnv_session *s;
    atomic_int go, done;
} canceller;

static void *cancel_when_asked(void *arg) {
    canceller *k = arg;
    while (!atomic_load(&k->go)) sched_yield();
    mnv_session_cancel(k->s);
    atomic_store(&k->done, 1);
    return NULL;
}

/* ---- cancellation -------------------------------------------------------------------- */

static void test_cancel_pending_and_reset(mnv_model *m) {
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, NULL, &s) == MNV_OK);
    int32_t bos = 1;
    collect c = {0};
    mnv_generate_params gp = greedy(10, &c);
    mnv_generate_result r;
    /* a request made while nothing runs cancels the next call, before any work */
    mnv_session_cancel(s);
    CHECK(mnv_generate(s, &bos, 1, &gp, &r) == MNV_ERR_CANCELLED);
    CHECK(r.n_generated == 0 && c.calls == 0 && mnv_session_n_past(s) == 0);
    CHECK(strstr(mnv_last_error(), "cancelled") != NULL);
    /* ... and is consumed: the next call runs */
    CHECK(mnv_generate(s, &bos, 1, &gp, &r) == MNV_OK && r.n_generated == 10);
    /* mnv_session_eval checks too */
    mnv_session_cancel(s);
    CHECK(mnv_session_eval(s, &bos, 1, NULL) == MNV_ERR_CANCELLED);
    CHECK(mnv_session_eval(s, &bos, 1, NULL) == MNV_OK);
    /* reset drops a pending request */
    mnv_session_cancel(s);
    mnv_session_reset(s);
    CHECK(mnv_session_eval(s, &bos, 1, NULL) == MNV_OK);
    mnv_session_cancel(NULL); /* a no-op */
    mnv_session_free(s);
}

/* Another thread cancels while token 5's callback runs: generation stops
 * before a sixth token, with MNV_ERR_CANCELLED, and the session continues. */
static void test_cancel_during_generation(mnv_model *m) {
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, NULL, &s) == MNV_OK);
    canceller k = {.s = s};
    collect c = {.cancel_at = 5, .go = &k.go, .done = &k.done};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, cancel_when_asked, &k) == 0);
    int32_t bos = 1;
    mnv_generate_params gp = greedy(200, &c);
    mnv_generate_result r;
    mnv_status st = mnv_generate(s, &bos, 1, &gp, &r);
    pthread_join(th, NULL);
    CHECKF(st == MNV_ERR_CANCELLED, "status %s", mnv_status_str(st));
    CHECKF(c.calls == 5 && r.n_generated == 5, "%d callbacks, %d generated", c.calls, r.n_generated);
    /* the context holds BOS and the 4 generated tokens evaluated before the check */
    CHECKF(mnv_session_n_past(s) == 5, "n_past %d", mnv_session_n_past(s));
    /* the same story as an uncancelled run, so far */
    mnv_session *s2 = NULL;
    collect full = {0};
    gp = greedy(5, &full);
    CHECK(mnv_session_create(m, NULL, &s2) == MNV_OK && mnv_generate(s2, &bos, 1, &gp, NULL) == MNV_OK);
    CHECK(strcmp(full.text, c.text) == 0);
    mnv_session_free(s2);
    mnv_session_free(s);
}

/* A long prompt evaluated one token per batch: a cancel from another thread
 * lands between batches, before the prompt is done and before any token is
 * generated. The other thread may be scheduled late on a busy machine, so
 * the prompt is tried a few times; it must land inside it at least once, and
 * every time it must cancel. */
static void test_cancel_during_prompt(mnv_model *m) {
    enum { N = 480 };
    static int32_t prompt[N];
    for (int i = 0; i < N; i++) prompt[i] = i == 0 ? 1 : 3 + (int32_t)(t_rand64() % 500);
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = 512;
    sp.n_batch = 1;
    int inside = 0;
    for (int attempt = 0; attempt < 5 && !inside; attempt++) {
        mnv_session *s = NULL;
        CHECK(mnv_session_create(m, &sp, &s) == MNV_OK);
        canceller k = {.s = s};
        collect c = {0};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, cancel_when_asked, &k) == 0);
        mnv_generate_params gp = greedy(20, &c);
        mnv_generate_result r;
        atomic_store(&k.go, 1);
        mnv_status st = mnv_generate(s, prompt, N, &gp, &r);
        pthread_join(th, NULL);
        CHECKF(st == MNV_ERR_CANCELLED, "status %s", mnv_status_str(st));
        int32_t np = mnv_session_n_past(s);
        if (np < N) {
            inside = 1;
            CHECKF(c.calls == 0 && r.n_generated == 0, "%d tokens generated", r.n_generated);
        }
        mnv_session_free(s);
    }
    CHECKF(inside, "the cancel never landed inside the prompt in 5 tries");
}

/* ---- cancellation inside one forward pass ---------------------------------------------- */

enum { PRE = 8, LONG = 480 }; /* a short context, then a prompt that is one batch */

typedef struct {
    mnv_session *s;
    double delay; /* seconds after go */
    atomic_int go;
} timed_canceller;

static void *cancel_after_delay(void *arg) {
    timed_canceller *k = arg;
    while (!atomic_load(&k->go)) sched_yield();
    double t0 = mnv_time_sec();
    while (mnv_time_sec() - t0 < k->delay) sched_yield();
    mnv_session_cancel(k->s);
    return NULL;
}

static mnv_session *long_batch_session(mnv_model *m, const int32_t *pre) {
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = 512;
    sp.n_batch = 512; /* the long prompt is one graph */
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, &sp, &s) == MNV_OK);
    if (s) CHECK(mnv_session_eval(s, pre, PRE, NULL) == MNV_OK);
    return s;
}

/* After a cancelled forward pass the session holds what it held before: its
 * context, its last logits and the caller's logits buffer untouched. */
static void check_unchanged(mnv_session *s, const float *saved, const float *out, int V) {
    CHECKF(mnv_session_n_past(s) == PRE, "n_past %d", mnv_session_n_past(s));
    CHECK(s->logits_valid && memcmp(s->last_logits, saved, sizeof(float) * (size_t)V) == 0);
    int touched = 0;
    for (size_t i = 0; i < (size_t)LONG * (size_t)V; i++) touched += out[i] != -7.0f;
    CHECKF(touched == 0, "%d logits written by a cancelled eval", touched);
}

/* The session still works: the long prompt evaluated again gives the logits
 * of a session that was never cancelled. */
static void check_works_after(mnv_session *s, const int32_t *prompt, const float *ref, float *out, int V) {
    CHECK(mnv_session_eval(s, prompt, LONG, out) == MNV_OK);
    CHECK(mnv_session_n_past(s) == PRE + LONG);
    double worst = 0;
    for (int t = 0; t < LONG; t++) {
        double e = t_rel_l2(out + (size_t)t * V, ref + (size_t)t * V, V);
        worst = e > worst ? e : worst;
    }
    CHECKF(worst < 1e-6, "logits after a cancel: rel L2 %.3g", worst);
}

/* The backend reads the flag before the first node: a request pending when
 * a forward pass starts stops it before any node runs (mnv_session_eval's own
 * check, before the batch, would catch it first: call the forward pass). */
static void test_cancel_before_first_node(mnv_model *m, const int32_t *pre, const int32_t *prompt, const float *ref) {
    mnv_session *s = long_batch_session(m, pre);
    if (!s) return;
    int V = s->model->cfg.vocab_size;
    float *saved = malloc(sizeof(float) * (size_t)V), *out = malloc(sizeof(float) * (size_t)LONG * V);
    memcpy(saved, s->last_logits, sizeof(float) * (size_t)V);
    for (size_t i = 0; i < (size_t)LONG * V; i++) out[i] = -7.0f;
    int32_t pos[LONG], seq[LONG] = {0}, row = LONG - 1;
    for (int i = 0; i < LONG; i++) pos[i] = PRE + i;
    mnv_batch b = {.n_tokens = LONG, .ids = prompt, .pos = pos, .seq = seq, .n_out = 1, .out_rows = &row};
    mnv_session_cancel(s);
    mnv_status st = mnv_session_forward(s, &b, out);
    CHECKF(st == MNV_ERR_CANCELLED, "status %s", mnv_status_str(st));
    CHECKF(strstr(mnv_last_error(), "before node 0 of") != NULL, "'%s'", mnv_last_error());
    CHECKF(strstr(mnv_last_error(), "480 tokens") != NULL, "'%s'", mnv_last_error());
    CHECK(atomic_load(&s->cancel) == 0); /* consumed */
    check_unchanged(s, saved, out, V);
    check_works_after(s, prompt, ref, out, V);
    free(saved);
    free(out);
    mnv_session_free(s);
}

/* Another thread cancels while the one long batch runs: mnv_session_eval
 * stops between two nodes of the graph. When the other thread is scheduled
 * is up to the machine, so its delay (a fraction of an uncancelled run's
 * time) is tried a few times; the cancel must land inside the graph at least
 * once, and every cancelled eval must leave the session as it was. */
static void test_cancel_inside_prefill(mnv_model *m, const int32_t *pre, const int32_t *prompt, const float *ref,
                                       double t_full) {
    int inside = 0, tries = 0;
    static const double frac[] = {0.5, 0.3, 0.7, 0.2, 0.4, 0.6, 0.1, 0.5};
    for (; tries < 8 && !inside; tries++) {
        mnv_session *s = long_batch_session(m, pre);
        if (!s) return;
        int V = s->model->cfg.vocab_size;
        float *saved = malloc(sizeof(float) * (size_t)V), *out = malloc(sizeof(float) * (size_t)LONG * V);
        memcpy(saved, s->last_logits, sizeof(float) * (size_t)V);
        for (size_t i = 0; i < (size_t)LONG * V; i++) out[i] = -7.0f;
        timed_canceller k = {.s = s, .delay = t_full * frac[tries]};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, cancel_after_delay, &k) == 0);
        atomic_store(&k.go, 1);
        mnv_status st = mnv_session_eval(s, prompt, LONG, out);
        pthread_join(th, NULL);
        if (st == MNV_OK) { /* it landed after the last node: the request waits for the next call */
            CHECK(mnv_session_eval(s, prompt, 1, NULL) == MNV_ERR_CANCELLED);
        } else {
            CHECKF(st == MNV_ERR_CANCELLED, "status %s", mnv_status_str(st));
            const char *msg = mnv_last_error();
            inside = strstr(msg, "inside the forward pass") != NULL;
            if (inside) printf("cancelled after %.0f%% of a full run (%.4f s): %s\n", 100 * frac[tries], t_full, msg);
            CHECKF(strstr(msg, "mnv_session_eval") != NULL, "'%s'", msg);
            if (inside) CHECKF(strstr(msg, "cpu: stopped before node ") != NULL && !strstr(msg, "node 0 of"), "'%s'", msg);
            CHECK(atomic_load(&s->cancel) == 0);
            check_unchanged(s, saved, out, V);
            check_works_after(s, prompt, ref, out, V);
        }
        free(saved);
        free(out);
        mnv_session_free(s);
    }
    CHECKF(inside, "the cancel never landed inside the graph in %d tries (full run %.3f s)", tries, t_full);
}

static void test_cancel_in_forward_pass(mnv_model *m) {
    static int32_t pre[PRE], prompt[LONG];
    for (int i = 0; i < PRE; i++) pre[i] = i == 0 ? 1 : 3 + (int32_t)(t_rand64() % 500);
    for (int i = 0; i < LONG; i++) prompt[i] = 3 + (int32_t)(t_rand64() % 500);
    /* the reference: a session never cancelled, timed for the canceller's delays */
    mnv_session *s = long_batch_session(m, pre);
    if (!s) return;
    int V = s->model->cfg.vocab_size;
    float *ref = malloc(sizeof(float) * (size_t)LONG * V);
    double t0 = mnv_time_sec();
    CHECK(mnv_session_eval(s, prompt, LONG, ref) == MNV_OK);
    double t_full = mnv_time_sec() - t0;
    mnv_session_free(s);
    test_cancel_before_first_node(m, pre, prompt, ref);
    test_cancel_inside_prefill(m, pre, prompt, ref, t_full);
    free(ref);
}

/* ---- several sessions on one model, in several threads ------------------------------- */

typedef struct {
    mnv_model *m;
    const char *prompt;
    collect c;
    mnv_status st;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    mnv_session *s = NULL;
    j->st = mnv_session_create(j->m, NULL, &s);
    const mnv_tokenizer *tok = mnv_model_tokenizer(j->m);
    int32_t ids[64];
    size_t n = 0;
    if (j->st == MNV_OK) j->st = mnv_tokenize(tok, j->prompt, strlen(j->prompt), 1, ids, 64, &n);
    mnv_generate_params gp = greedy(120, &j->c);
    if (j->st == MNV_OK) j->st = mnv_generate(s, ids, n, &gp, NULL);
    mnv_session_free(s);
    return NULL;
}

static void test_concurrent_sessions(mnv_model *m) {
    job alone[2] = {{.m = m, .prompt = "Once upon a time"}, {.m = m, .prompt = "Tom had a red ball"}};
    job both[2] = {{.m = m, .prompt = "Once upon a time"}, {.m = m, .prompt = "Tom had a red ball"}};
    for (int i = 0; i < 2; i++) run_job(&alone[i]);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, run_job, &both[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(alone[i].st == MNV_OK && both[i].st == MNV_OK);
        CHECK(alone[i].c.calls == 120 && both[i].c.calls == 120);
        CHECKF(strcmp(alone[i].c.text, both[i].c.text) == 0, "session %d: '%.60s' vs '%.60s'", i,
               alone[i].c.text, both[i].c.text);
    }
    CHECK(strcmp(alone[0].c.text, alone[1].c.text) != 0);
}

/* ---- loading: progress, estimate, metadata -------------------------------------------- */

typedef struct {
    int calls, monotone;
    uint64_t first, last, total;
} progress_log;

static void on_progress(void *ud, uint64_t done, uint64_t total) {
    progress_log *p = ud;
    if (p->calls == 0) p->first = done;
    else if (done < p->last || total != p->total) p->monotone = 0;
    p->calls++;
    p->last = done;
    p->total = total;
}

static void test_progress(void) {
    progress_log p = {.monotone = 1};
    mnv_model_params mp = mnv_model_params_default();
    mp.progress = on_progress;
    mp.progress_user_data = &p;
    mnv_model *m = NULL;
    CHECK(mnv_model_load(MODEL, &mp, &m) == MNV_OK);
    mnv_model_info info;
    CHECK(mnv_model_get_info(m, &info) == MNV_OK);
    CHECKF(p.calls >= 2 && p.monotone && p.first == 0, "%d calls", p.calls);
    CHECKF(p.last == info.weight_bytes && p.total == info.weight_bytes, "last %llu of %llu, weights %llu",
           (unsigned long long)p.last, (unsigned long long)p.total, (unsigned long long)info.weight_bytes);
    mnv_model_free(m);
    /* a struct of the size before the callback existed is still accepted */
    mp = mnv_model_params_default();
    mp.size = (uint32_t)offsetof(mnv_model_params, progress);
    CHECK(mnv_model_load(MODEL, &mp, &m) == MNV_OK);
    mnv_model_free(m);
}

/* The estimate before loading against what loading and one full batch use. */
static void check_estimate(const char *dir, int exact_weights, const char *chat_format) {
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = 128;
    sp.n_batch = 64;
    sp.kv_dtype = t_rand64() % 2 ? MNV_DTYPE_F32 : MNV_DTYPE_BF16;
    static int calls;
    sp.kv_rotate = calls++ % 2 ? MNV_KV_ROTATE_ON : MNV_KV_ROTATE_AUTO; /* rotated heads: more nodes */
    mnv_memory_estimate est;
    mnv_status st = mnv_model_estimate_memory(dir, &sp, &est);
    CHECKF(st == MNV_OK, "%s: %s", dir, mnv_last_error());
    mnv_model *m = NULL;
    CHECKF(mnv_model_load(dir, NULL, &m) == MNV_OK, "%s: %s", dir, mnv_last_error());
    if (st != MNV_OK || !m) return;
    mnv_model_info info;
    CHECK(mnv_model_get_info(m, &info) == MNV_OK);
    CHECKF(strcmp(info.chat_format, chat_format) == 0, "%s: chat format %s", dir, info.chat_format);
    if (exact_weights) CHECKF(est.weight_bytes == info.weight_bytes, "%s", dir);
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, &sp, &s) == MNV_OK);
    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = (int32_t)(t_rand64() % (uint64_t)info.n_vocab);
    static float logits[64 * 1024];
    int all = info.n_vocab <= 1024; /* every row of logits: the largest pass */
    CHECK(mnv_session_eval(s, ids, 64, all ? logits : NULL) == MNV_OK);
    mnv_session_stats stats;
    CHECK(mnv_session_get_stats(s, &stats) == MNV_OK);
    CHECKF(est.kv_bytes == stats.kv_bytes, "%s: kv %llu vs %llu", dir, (unsigned long long)est.kv_bytes,
           (unsigned long long)stats.kv_bytes);
    CHECKF(est.compute_bytes >= stats.arena_bytes, "%s: compute bound %llu below the arena %llu", dir,
           (unsigned long long)est.compute_bytes, (unsigned long long)stats.arena_bytes);
    CHECK(est.n_ctx == 128 && est.n_batch == 64);
    printf("%s: activation bound %llu bytes, arena %llu\n", dir, (unsigned long long)est.compute_bytes,
           (unsigned long long)stats.arena_bytes);
    CHECK(est.total_bytes == est.weight_bytes + est.kv_bytes + est.compute_bytes);
    mnv_session_free(s);
    mnv_model_free(m);
}

static void test_estimate_and_metadata(void) {
    check_estimate(MODEL, 1, "none");
    check_estimate(FIXM "tiny-llama", 1, "none");
    check_estimate(FIXM "tiny-qwen3", 1, "none");
    check_estimate(FIXM "tiny-gptoss-mxfp4", 0, "harmony");
    /* defaults: n_ctx resolved as a session does (min(trained, 4096)) */
    mnv_memory_estimate est;
    CHECK(mnv_model_estimate_memory(MODEL, NULL, &est) == MNV_OK && est.n_ctx == 512 && est.n_batch == 512);
    CHECK(mnv_model_estimate_memory("no/such/model", NULL, &est) != MNV_OK);
    CHECK(strstr(mnv_last_error(), "no/such/model") != NULL);
    CHECK(mnv_model_estimate_memory(NULL, NULL, &est) == MNV_ERR_INVALID_ARG);
}

/* ---- errors and logs ------------------------------------------------------------------ */

typedef struct {
    char msg[1024];
    size_t len;
} error_copy;

static void *fail_on_other_thread(void *arg) {
    error_copy *e = arg;
    mnv_model *m = NULL;
    mnv_model_load("no/such/dir/elsewhere", NULL, &m);
    e->len = mnv_last_error_copy(e->msg, sizeof e->msg);
    return NULL;
}

static void test_error_copy(void) {
    mnv_model *m = NULL;
    CHECK(mnv_model_load("no/such/dir", NULL, &m) != MNV_OK);
    const char *msg = mnv_last_error();
    size_t n = strlen(msg);
    char buf[8], big[1024];
    CHECK(mnv_last_error_copy(NULL, 0) == n);
    CHECK(mnv_last_error_copy(buf, sizeof buf) == n && strlen(buf) == 7 && memcmp(buf, msg, 7) == 0);
    CHECK(mnv_last_error_copy(big, sizeof big) == n && strcmp(big, msg) == 0);
    /* another thread's failure is its own; its copy comes back intact */
    error_copy e = {.len = 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fail_on_other_thread, &e) == 0);
    pthread_join(th, NULL);
    CHECK(e.len == strlen(e.msg) && strstr(e.msg, "no/such/dir/elsewhere") != NULL);
    CHECK(strcmp(mnv_last_error(), big) == 0);
}

typedef struct {
    int calls;
    mnv_log_level level;
    char last[256];
} log_sink;

static void on_log(void *ud, mnv_log_level level, const char *msg) {
    log_sink *l = ud;
    l->calls++;
    l->level = level;
    snprintf(l->last, sizeof l->last, "%s", msg);
}

static void test_log_callback(int cpu_warned, const log_sink *early) {
    /* MINERVA_CPU was set to an unknown level before the library chose its
     * kernels: the warning went to the callback, not to stderr */
    CHECK(cpu_warned);
    CHECKF(early->level == MNV_LOG_WARN && strstr(early->last, "MINERVA_CPU=bogus") != NULL, "'%s'", early->last);
    log_sink l = {0};
    mnv_set_log_callback(on_log, &l);
    mnv__log(MNV_LOG_INFO, "hello %d", 42);
    CHECK(l.calls == 1 && l.level == MNV_LOG_INFO && strcmp(l.last, "hello 42") == 0);
    mnv_set_log_callback(NULL, NULL); /* back to stderr */
    mnv__log(MNV_LOG_DEBUG, "this line on stderr is expected (the default sink)");
    CHECK(l.calls == 1);
}

int main(void) {
    t_seed();
    /* the log test's first part: before any kernel is chosen */
    setenv("MINERVA_CPU", "bogus", 1);
    log_sink early = {0};
    mnv_set_log_callback(on_log, &early);
    mnv_model *m = NULL;
    CHECK(mnv_model_load(MODEL, NULL, &m) == MNV_OK);
    if (!m) return t_done();
    mnv_session *s = NULL;
    int32_t bos = 1;
    CHECK(mnv_session_create(m, NULL, &s) == MNV_OK && mnv_session_eval(s, &bos, 1, NULL) == MNV_OK);
    mnv_session_free(s);
    mnv_set_log_callback(NULL, NULL);
    unsetenv("MINERVA_CPU");
    int cpu_warned = early.calls >= 1;

    test_cancel_pending_and_reset(m);
    test_cancel_during_generation(m);
    test_cancel_during_prompt(m);
    test_cancel_in_forward_pass(m);
    test_concurrent_sessions(m);
    mnv_model_free(m);
    test_progress();
    test_estimate_and_metadata();
    test_error_copy();
    test_log_callback(cpu_warned, &early);
    return t_done();
}
