/* Sessions and generation through the public API, on the bundled model:
 * evaluation is all or nothing, parameters are checked before the prompt
 * enters the context, truncation, continuing without a prompt, stop strings
 * and callbacks, and output rows in any order. */
#include "minerva.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "runtime/session.h"
#include "test.h"

typedef struct {
    char text[4096];
    size_t len;
    int calls, stop_after;
} collect;

static int on_token(void *ud, int32_t tok, const char *text, size_t len) {
    collect *c = ud;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, text, len);
        c->len += len;
        c->text[c->len] = 0;
    }
    c->calls++;
    return c->stop_after && c->calls >= c->stop_after;
}

/* Counts the calls that received text == NULL. */
static int on_token_null(void *ud, int32_t tok, const char *text, size_t len) {
    int *nulls = ud;
    *nulls += text == NULL;
    return 0;
}

/* A model without tokenizer.json: the callback still receives a valid, empty text. */
static void test_no_tokenizer(void) {
    mnv_model *m = NULL;
    mnv_status st = mnv_model_load("fixtures/models/tiny-llama", NULL, &m);
    CHECKF(st == MNV_OK, "tiny-llama: %s", mnv_last_error());
    if (st != MNV_OK) return;
    CHECK(mnv_model_tokenizer(m) == NULL);
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, NULL, &s) == MNV_OK);
    int nulls = 0;
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = 4;
    gp.sampler.temperature = 0;
    gp.ignore_eos = 1;
    gp.on_token = on_token_null;
    gp.user_data = &nulls;
    static const char *const stops[] = {"x"};
    gp.stop_strings = stops;
    gp.n_stop = 1;
    int32_t prompt[2] = {1, 5};
    mnv_generate_result r;
    CHECK(s && mnv_generate(s, prompt, 2, &gp, &r) == MNV_OK && r.n_generated == 4);
    CHECKF(nulls == 0, "%d callbacks received text == NULL", nulls);
    mnv_session_free(s);
    mnv_model_free(m);
}

/* A missing model directory is named as missing; a file as not a directory. */
static void test_model_dir_errors(void) {
    mnv_model *m = (mnv_model *)1;
    CHECK(mnv_model_load("fixtures/models/no-such-model", NULL, &m) == MNV_ERR_IO && m == NULL);
    CHECKF(strstr(mnv_last_error(), "no-such-model") && strstr(mnv_last_error(), "does not exist"),
           "%s", mnv_last_error());
    CHECK(mnv_model_load("fixtures/models/tiny-llama/config.json", NULL, &m) == MNV_ERR_IO);
    CHECKF(strstr(mnv_last_error(), "is not a directory"), "%s", mnv_last_error());
}

static mnv_generate_params greedy(int n, collect *c) {
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = n;
    gp.sampler.temperature = 0;
    gp.on_token = on_token;
    gp.user_data = c;
    return gp;
}

/* Logit biases and log-probabilities: a +100 bias forces a token, a -100
 * bias bans the greedy one; the reported log-probabilities are the
 * log-softmax of the logits the session computes, with the top tokens in
 * order, checked against a double-precision reference. */
typedef struct {
    int32_t tok[8], top_ids[8][5], n_top[8];
    float lp[8], top_lp[8][5];
    int n;
} lp_collect;

static void on_lp(void *ud, const mnv_token_logprobs *lp) {
    lp_collect *c = ud;
    if (c->n >= 8) return;
    c->tok[c->n] = lp->token, c->lp[c->n] = lp->logprob, c->n_top[c->n] = lp->n_top;
    for (int32_t i = 0; i < lp->n_top && i < 5; i++) c->top_ids[c->n][i] = lp->top_ids[i], c->top_lp[c->n][i] = lp->top_logprobs[i];
    c->n++;
}

static void test_bias_logprobs(mnv_model *m, mnv_session *s, int V) {
    int32_t bos = 1;
    float *logits = malloc((size_t)V * sizeof(float));
    mnv_session_reset(s);
    CHECK(mnv_session_eval(s, &bos, 1, logits) == MNV_OK);
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    lp_collect c = {0};
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = 1;
    gp.sampler.temperature = 0;
    gp.on_logprobs = on_lp;
    gp.user_data = &c;
    gp.n_top_logprobs = 5;
    int32_t forced = (best + 7) % V;
    mnv_logit_bias b[2] = {{forced, 100.0f}, {best, -100.0f}};
    gp.logit_bias = b;
    gp.n_logit_bias = 2;
    mnv_session_reset(s);
    CHECK(mnv_generate(s, &bos, 1, &gp, NULL) == MNV_OK);
    CHECKF(c.n == 1 && c.tok[0] == forced, "forced token %d, got %d", forced, c.tok[0]);
    /* reference: log-softmax of the biased logits */
    logits[forced] += 100.0f, logits[best] -= 100.0f;
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < V; i++) sum += exp(logits[i] - mx);
    double lse = mx + log(sum);
    CHECKF(fabs(c.lp[0] - (logits[forced] - lse)) < 1e-4, "logprob %g, reference %g", c.lp[0], logits[forced] - lse);
    CHECK(c.n_top[0] == 5 && c.top_ids[0][0] == forced);
    for (int j = 0; j < 5; j++) {
        CHECKF(fabs(c.top_lp[0][j] - (logits[c.top_ids[0][j]] - lse)) < 1e-4, "top %d", j);
        int above = 0; /* exactly j tokens rank above the j-th */
        for (int i = 0; i < V; i++) above += logits[i] > logits[c.top_ids[0][j]];
        CHECKF(above == j, "top %d has %d tokens above", j, above);
    }
    /* a scripted reply: the given ids come out first, then sampling resumes (greedy: best) */
    memset(&c, 0, sizeof c);
    int32_t script[2] = {(best + 3) % V, (best + 5) % V};
    gp.n_logit_bias = 0;
    gp.scripted_ids = script;
    gp.n_scripted = 2;
    gp.max_tokens = 3;
    mnv_session_reset(s);
    CHECK(mnv_generate(s, &bos, 1, &gp, NULL) == MNV_OK);
    CHECK(c.n == 3 && c.tok[0] == script[0] && c.tok[1] == script[1]);
    gp.scripted_ids = NULL, gp.n_scripted = 0, gp.n_logit_bias = 2, gp.max_tokens = 1;
    /* a bias naming a token outside the vocabulary fails before anything runs */
    b[0].token = V;
    CHECK(mnv_generate(s, &bos, 1, &gp, NULL) == MNV_ERR_RANGE);
    gp.n_logit_bias = 0, gp.n_top_logprobs = 21;
    CHECK(mnv_generate(s, &bos, 1, &gp, NULL) == MNV_ERR_RANGE);
    free(logits);
    (void)m;
}

/* A sliding-window model with a context barely above its batch: every batch
 * is evaluated whole (the ring has room for it beside the window), and the
 * last logits match those of small batches. */
static void test_window_batches(void) {
    int V = 0;
    mnv_model *m = t_load_model("fixtures/models/tiny-gptoss-dense", &V);
    if (!m) return;
    enum { N = 250 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = t_randint(3, V - 1);
    float *last[2] = {malloc(sizeof(float) * (size_t)V), malloc(sizeof(float) * (size_t)V)};
    const int32_t batches[2] = {64, 16};
    for (int b = 0; b < 2; b++) {
        mnv_session_params sp = mnv_session_params_default();
        sp.n_ctx = N;
        sp.n_batch = batches[b];
        mnv_session *s = NULL;
        CHECK(mnv_session_create(m, &sp, &s) == MNV_OK);
        mnv_status st = mnv_session_eval(s, ids, N - 1, NULL);
        if (st == MNV_OK) st = mnv_session_eval(s, ids + N - 1, 1, last[b]);
        CHECKF(st == MNV_OK, "n_batch %d: %s", batches[b], mnv_last_error());
        mnv_session_free(s);
    }
    float d = 0, mag = 1; /* (float only: aarch64 gcc 12 crashes vectorizing a float/double max) */
    for (int i = 0; i < V; i++) {
        const float e = fabsf(last[0][i] - last[1][i]), a = fabsf(last[1][i]);
        if (e > d) d = e;
        if (a > mag) mag = a;
    }
    CHECKF(d <= 1e-4f * mag, "last logits of batches of 64 and 16 differ by %g", (double)d);
    free(last[0]), free(last[1]);
    mnv_model_free(m);
}

/* A context of random K/V (benchmarks at depth) on a sliding-window model:
 * the tokens count as held, evaluation continues after them (and after a
 * truncation into them) with finite logits, and a fill past the context is
 * refused without changing it. */
static void test_fill_random(void) {
    int V = 0;
    mnv_model *m = t_load_model("fixtures/models/tiny-gptoss-dense", &V);
    if (!m) return;
    enum { N = 200 };
    int32_t ids[N + 1];
    for (int i = 0; i <= N; i++) ids[i] = t_randint(3, V - 1);
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = N + 8;
    sp.n_batch = 16;
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, &sp, &s) == MNV_OK);
    float *lg = malloc(sizeof(float) * (size_t)V);
    mnv_status st = mnv__session_fill_random(s, ids, N);
    CHECKF(st == MNV_OK && mnv_session_n_past(s) == N, "fill: %s, n_past %d", mnv_last_error(), mnv_session_n_past(s));
    for (int rep = 0; rep < 2 && st == MNV_OK; rep++) {
        st = mnv_session_eval(s, ids + N, 1, lg);
        CHECKF(st == MNV_OK && mnv_session_n_past(s) == N + 1, "eval after the fill (rep %d): %s", rep, mnv_last_error());
        bool finite = true;
        for (int i = 0; i < V; i++) finite &= isfinite(lg[i]);
        CHECK(finite);
        if (st == MNV_OK) st = mnv_session_truncate(s, N - 3);
        if (st == MNV_OK) st = mnv_session_eval(s, ids + N - 3, 3, NULL);
    }
    CHECK(mnv__session_fill_random(s, ids, 9) == MNV_ERR_RANGE && mnv_session_n_past(s) == N);
    free(lg);
    mnv_session_free(s);
    mnv_model_free(m);
}

/* The tensors a model reads into copies of its own (which a device does not
 * get up front): gpt-oss's expert biases (converted to f32), nothing else. */
static void test_copied(void) {
    mnv_model *m = NULL;
    CHECK(mnv_model_load("fixtures/models/tiny-gptoss-mxfp4", NULL, &m) == MNV_OK);
    if (!m) return;
    size_t biases = 0, others = 0;
    for (size_t i = 0; i < mnv_st_count(m->st); i++) {
        const mnv_st_tensor *t = mnv_st_get(m->st, i);
        const bool expert_bias = strstr(t->name, "experts") && strstr(t->name, "bias") && t->ndim == 2;
        if (mnv__model_is_copied(m, t->data)) expert_bias ? biases++ : others++;
    }
    CHECKF(biases == 2 * (size_t)m->cfg.num_hidden_layers && others == 0, "%zu expert biases and %zu others copied",
           biases, others);
    mnv_model_free(m);
}

static void count_reports(void *user_data, uint64_t done, uint64_t total) {
    (void)done, (void)total;
    ++*(int *)user_data;
}

int main(void) {
    t_seed();
    test_window_batches();
    test_fill_random();
    test_copied();
    mnv_model *m = NULL;
    CHECK(mnv_model_load("../models/stories260K", NULL, &m) == MNV_OK);
    mnv_session_params sp = mnv_session_params_default();
    sp.n_batch = 2;
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, &sp, &s) == MNV_OK);
    /* on the CPU the weights stay where they are mapped: no copy, no reports */
    int reports = 0;
    CHECK(mnv_session_load_weights(s, count_reports, &reports) == MNV_OK && reports == 0);
    CHECK(mnv_session_load_weights(NULL, NULL, NULL) == MNV_ERR_INVALID_ARG);

    /* a bad id in a later batch: nothing is evaluated, the message gives its index */
    int32_t ids[4] = {1, 300, 400, 99999};
    CHECK(mnv_session_eval(s, ids, 4, NULL) == MNV_ERR_RANGE);
    CHECK(mnv_session_n_past(s) == 0);
    CHECKF(strstr(mnv_last_error(), "99999") && strstr(mnv_last_error(), "position 3"), "%s", mnv_last_error());

    /* bad sampler parameters: the prompt does not enter the context */
    collect c = {0};
    mnv_generate_params gp = greedy(5, &c);
    gp.sampler.size = 0;
    int32_t bos = 1;
    CHECK(mnv_generate(s, &bos, 1, &gp, NULL) != MNV_OK);
    CHECK(mnv_session_n_past(s) == 0);

    /* no prompt and no context */
    gp = greedy(5, &c);
    CHECK(mnv_generate(s, NULL, 0, &gp, NULL) == MNV_ERR_INVALID_ARG);

    /* the greedy story, then truncation: continuing needs fresh logits */
    memset(&c, 0, sizeof c);
    gp = greedy(30, &c);
    mnv_generate_result r;
    CHECK(mnv_generate(s, &bos, 1, &gp, &r) == MNV_OK);
    CHECK(r.n_generated == 30 && r.stop_reason == MNV_STOP_MAX_TOKENS && c.calls == 30);
    CHECKF(strncmp(c.text, "Once upon a time, there was a little girl named Lily", 52) == 0, "text: %s", c.text);
    CHECK(mnv_session_n_past(s) == 30); /* BOS + 29 evaluated; the last token was sampled only */
    CHECK(mnv_session_truncate(s, 10) == MNV_OK && mnv_session_n_past(s) == 10);
    CHECK(mnv_session_truncate(s, 11) == MNV_ERR_RANGE);
    CHECK(mnv_generate(s, NULL, 0, &gp, NULL) == MNV_ERR_INVALID_ARG);

    /* stop strings: generation ends before the string, nothing after it is delivered */
    mnv_session_reset(s);
    memset(&c, 0, sizeof c);
    gp = greedy(60, &c);
    const char *stops[1] = {"named Lily"};
    gp.stop_strings = stops;
    gp.n_stop = 1;
    CHECK(mnv_generate(s, &bos, 1, &gp, &r) == MNV_OK);
    CHECK(r.stop_reason == MNV_STOP_STRING);
    CHECKF(strcmp(c.text, "Once upon a time, there was a little girl ") == 0, "stop: '%s'", c.text);

    /* a callback that asks to stop */
    mnv_session_reset(s);
    memset(&c, 0, sizeof c);
    c.stop_after = 3;
    gp = greedy(60, &c);
    CHECK(mnv_generate(s, &bos, 1, &gp, &r) == MNV_OK);
    CHECK(r.stop_reason == MNV_STOP_CALLBACK && r.n_generated == 3);

    /* output rows in any order (and repeated) come back in that order */
    mnv_model_info info;
    mnv_model_get_info(m, &info);
    int V = info.n_vocab;
    test_bias_logprobs(m, s, V);
    int32_t toks[5] = {1, 403, 407, 261, 378}, pos[5] = {0, 1, 2, 3, 4}, seq[5] = {0}, rows[5] = {4, 2, 0, 2, 1};
    float *all = malloc(sizeof(float) * 5 * V), *perm = malloc(sizeof(float) * 5 * V);
    int32_t ident[5] = {0, 1, 2, 3, 4};
    mnv_batch b1 = {.n_tokens = 5, .ids = toks, .pos = pos, .seq = seq, .n_out = 5, .out_rows = ident};
    mnv_batch b2 = {.n_tokens = 5, .ids = toks, .pos = pos, .seq = seq, .n_out = 5, .out_rows = rows};
    CHECK(mnv_session_forward(s, &b1, all) == MNV_OK);
    CHECK(mnv_session_forward(s, &b2, perm) == MNV_OK);
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        double e = t_rel_l2(perm + (size_t)i * V, all + (size_t)rows[i] * V, V);
        worst = e > worst ? e : worst;
    }
    CHECKF(worst < 1e-6, "permuted output rows: rel L2 %.3g", worst);
    free(all);
    free(perm);

    /* parameter structs of an unknown size are refused */
    mnv_session_params bad = mnv_session_params_default();
    bad.size = 3;
    mnv_session *s2 = NULL;
    CHECK(mnv_session_create(m, &bad, &s2) == MNV_ERR_INVALID_ARG && s2 == NULL);
    mnv_session_free(s);
    mnv_model_free(m);
    test_no_tokenizer();
    test_model_dir_errors();
    return t_done();
}
