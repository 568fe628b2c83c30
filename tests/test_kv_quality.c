/* Quality of the KV cache element types against an f32 cache: over a long
 * greedy run of each model (the f32 cache's greedy tokens, then the whole
 * sequence teacher-forced through a session of each type), the mean and
 * 99th-percentile KL divergence KL(p_f32 || p_type) of the next-token
 * distributions, top-1 agreement, and the perplexity of the sequence
 * relative to the f32 cache's. Models: stories260K (head_dim 8: groups of
 * 8), the tiny Llama and Qwen3 fixtures (head_dim 16 and 32) and the tiny
 * gpt-oss fixtures (sliding window 6 with sinks: the window's ring and the
 * full layers both quantized).
 *
 * Floors, per type (q8/q4: K q8, V q4): f16 and bf16 as rounding to 11 /
 * 8 bits predicts; q8 mean KL below 1e-3 (the requirement) and 99% of
 * positions below 1e-2, top-1 agreement at least 97%, perplexity within 1%.
 * 4 bits, as the default runs them (the Hadamard rotation on the q4 sides):
 * what these tiny models give, with a margin: a 4-bit V mean KL below
 * 0.05 (0.028 measured at most), perplexity within 12% (+6.4% at most); a
 * 4-bit K mean KL below 0.25 (stories260K 0.16, perplexity +24%; the other
 * models 0.027 at most), perplexity within 35%, top-1 at least 65 to 75%.
 * Without the rotation ("off", q4 K and V: stories260K 0.24, perplexity
 * +40%) the older floor: mean KL below 0.35, top-1 60%, perplexity within
 * 60% (bench/NOTES.md has the mixed pairs and q8 with and without it; they
 * are left out here to keep the emulated runs short). The rotation itself
 * is exact: with an f32 cache it moves the
 * logits by rounding only (check_rotation_exact). The
 * figures are printed (bench/NOTES.md keeps them). */
#include <math.h>

#include "minerva.h"
#include "test.h"

typedef struct {
    const char *name;
    mnv_kv_type k, v;
    mnv_kv_rotate rot;
    double mean_kl, p99_kl, top1, ppl_ratio; /* floors: kl below, top1 above, |ratio - 1| below */
} kv_case;

static const kv_case CASES[] = {
    {"f16", MNV_KV_F16, MNV_KV_F16, MNV_KV_ROTATE_AUTO, 1e-5, 1e-4, 0.99, 0.001},
    {"bf16", MNV_KV_BF16, MNV_KV_BF16, MNV_KV_ROTATE_AUTO, 2e-4, 2e-3, 0.98, 0.005},
    {"q8", MNV_KV_Q8, MNV_KV_Q8, MNV_KV_ROTATE_AUTO, 1e-3, 1e-2, 0.97, 0.01},
    {"q8/q4", MNV_KV_Q8, MNV_KV_Q4, MNV_KV_ROTATE_AUTO, 0.05, 1.0, 0.70, 0.12},
    {"q4/q8", MNV_KV_Q4, MNV_KV_Q8, MNV_KV_ROTATE_AUTO, 0.25, 3.0, 0.75, 0.35},
    {"q4", MNV_KV_Q4, MNV_KV_Q4, MNV_KV_ROTATE_AUTO, 0.25, 3.0, 0.65, 0.35},
    {"q4 off", MNV_KV_Q4, MNV_KV_Q4, MNV_KV_ROTATE_OFF, 0.35, 5.0, 0.60, 0.60},
};

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* log-softmax of x into y (double) */
static void log_softmax(const float *x, int n, double *y) {
    double m = x[argmax(x, n)], s = 0; /* (a plain max reduction here crashes aarch64 gcc 12's vectorizer) */
    for (int i = 0; i < n; i++) s += exp(x[i] - m);
    double ls = m + log(s);
    for (int i = 0; i < n; i++) y[i] = x[i] - ls;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Teacher-forced logits of ids[0 .. n) through a session of K/V types k, v. */
static float *run_logits(mnv_model *m, const int32_t *ids, int n, int V, mnv_kv_type k, mnv_kv_type v,
                         mnv_kv_rotate rot) {
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = n;
    sp.n_batch = 16; /* several chunks: the cache is read back across passes */
    sp.kv_type_k = k;
    sp.kv_type_v = v;
    sp.kv_rotate = rot;
    sp.n_threads = 1; /* small models: one thread is as fast, and cheap under emulation */
    sp.exact_quant = 1; /* f32 activations into quantized weights: no int8 rounding to amplify the cache's error */
    mnv_session *s = NULL;
    float *lg = malloc(sizeof(float) * (size_t)n * (size_t)V);
    mnv_status st = mnv_session_create(m, &sp, &s);
    for (int i = 0; st == MNV_OK && i < n; i += 16) {
        int c = n - i < 16 ? n - i : 16;
        st = mnv_session_eval(s, ids + i, (size_t)c, lg + (size_t)i * (size_t)V);
    }
    CHECKF(st == MNV_OK, "session %s/%s: %s", mnv_kv_type_name(k), mnv_kv_type_name(v), mnv_last_error());
    mnv_session_free(s);
    if (st != MNV_OK) {
        free(lg);
        return NULL;
    }
    return lg;
}

static void check_model(const char *dir, int n) {
    int V = 0;
    mnv_model *m = t_load_model(dir, &V);
    if (!m) return;
    /* the greedy run of the f32 cache, token by token from id 1 */
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    float *row = malloc(sizeof(float) * (size_t)V);
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = n;
    sp.n_threads = 1;
    sp.exact_quant = 1;
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, &sp, &s) == MNV_OK);
    ids[0] = 1;
    for (int i = 0; s && i + 1 < n; i++) {
        if (mnv_session_eval(s, ids + i, 1, row) != MNV_OK) break;
        ids[i + 1] = argmax(row, V);
    }
    mnv_session_free(s);
    float *ref = run_logits(m, ids, n, V, MNV_KV_F32, MNV_KV_F32, MNV_KV_ROTATE_OFF);
    double *lp = malloc(sizeof(double) * (size_t)V), *lq = malloc(sizeof(double) * (size_t)V);
    double *kl = malloc(sizeof(double) * (size_t)n);
    for (size_t c = 0; ref && c < sizeof CASES / sizeof CASES[0]; c++) {
        const kv_case *kc = &CASES[c];
        float *got = run_logits(m, ids, n, V, kc->k, kc->v, kc->rot);
        if (!got) continue;
        double sum = 0, nll_ref = 0, nll = 0;
        int agree = 0;
        for (int i = 0; i < n; i++) {
            const float *a = ref + (size_t)i * V, *b = got + (size_t)i * V;
            log_softmax(a, V, lp);
            log_softmax(b, V, lq);
            double d = 0;
            for (int j = 0; j < V; j++) d += exp(lp[j]) * (lp[j] - lq[j]);
            kl[i] = d > 0 ? d : 0;
            sum += kl[i];
            agree += argmax(a, V) == argmax(b, V);
            if (i + 1 < n) nll_ref -= lp[ids[i + 1]], nll -= lq[ids[i + 1]];
        }
        qsort(kl, (size_t)n, sizeof *kl, cmp_double);
        double mean = sum / n, p99 = kl[(int)(0.99 * (n - 1))], top1 = (double)agree / n;
        double ratio = exp((nll - nll_ref) / (n - 1));
        printf("%-36s KV %-10s mean KL %.3g  p99 KL %.3g  top-1 %.4f  ppl ratio %.5f\n", dir, kc->name, mean, p99,
               top1, ratio);
        CHECKF(mean < kc->mean_kl && p99 < kc->p99_kl && top1 >= kc->top1 && fabs(ratio - 1) < kc->ppl_ratio,
               "%s KV %s: mean KL %.3g (< %.0e), p99 %.3g (< %.0e), top-1 %.4f (>= %.2f), ppl ratio %.4f (within %.3f)",
               dir, kc->name, mean, kc->mean_kl, p99, kc->p99_kl, top1, kc->top1, ratio, kc->ppl_ratio);
        free(got);
    }
    free(ref), free(lp), free(lq), free(kl), free(ids), free(row);
    mnv_model_free(m);
}

/* With an f32 cache the rotation changes the logits by rounding only
 * (scores and outputs are the same sums in another basis); with a q4 cache
 * the setting is seen to act (the logits move). */
static void check_rotation_exact(const char *dir, int n) {
    int V = 0;
    mnv_model *m = t_load_model(dir, &V);
    if (!m) return;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) ids[i] = t_randint(3, V - 1);
    float *off = run_logits(m, ids, n, V, MNV_KV_F32, MNV_KV_F32, MNV_KV_ROTATE_OFF);
    float *on = run_logits(m, ids, n, V, MNV_KV_F32, MNV_KV_F32, MNV_KV_ROTATE_ON);
    float *q_off = run_logits(m, ids, n, V, MNV_KV_Q4, MNV_KV_Q4, MNV_KV_ROTATE_OFF);
    float *q_on = run_logits(m, ids, n, V, MNV_KV_Q4, MNV_KV_Q4, MNV_KV_ROTATE_ON);
    if (off && on && q_off && q_on) {
        double e = t_rel_l2(on, off, (size_t)n * V), eq = t_rel_l2(q_on, q_off, (size_t)n * V);
        printf("%-36s rotation, f32 cache: logits rel L2 %.3g; q4 cache: %.3g\n", dir, e, eq);
        CHECKF(e < 1e-5, "%s: the rotation moves f32-cache logits by %.3g (rel L2)", dir, e);
        CHECKF(eq > 1e-4, "%s: the rotation does not act on a q4 cache (rel L2 %.3g)", dir, eq);
    }
    free(off), free(on), free(q_off), free(q_on), free(ids);
    mnv_model_free(m);
}

/* Bad types are refused with a message naming the field. */
static void check_bad_types(void) {
    mnv_model *m = NULL;
    if (mnv_model_load("../models/stories260K", NULL, &m) != MNV_OK) return;
    mnv_session_params sp = mnv_session_params_default();
    sp.kv_type_v = MNV_KV_TYPE_COUNT;
    mnv_session *s = NULL;
    CHECK(mnv_session_create(m, &sp, &s) == MNV_ERR_INVALID_ARG && s == NULL);
    CHECK(strstr(mnv_last_error(), "kv_type_v") != NULL);
    sp = mnv_session_params_default();
    sp.kv_rotate = MNV_KV_ROTATE_COUNT;
    CHECK(mnv_session_create(m, &sp, &s) == MNV_ERR_INVALID_ARG && s == NULL);
    CHECK(strstr(mnv_last_error(), "kv_rotate") != NULL);
    mnv_engine_params ep = mnv_engine_params_default();
    ep.kv_dtype = MNV_DTYPE_I32; /* ignored when both types are given */
    ep.kv_type_k = MNV_KV_Q4, ep.kv_type_v = MNV_KV_Q8;
    ep.run_thread = 0;
    mnv_engine *e = NULL;
    CHECKF(mnv_engine_create(m, &ep, &e) == MNV_OK, "%s", mnv_last_error());
    mnv_engine_free(e);
    ep.kv_type_v = MNV_KV_DEFAULT; /* then V follows kv_dtype, which is not a KV type */
    CHECK(mnv_engine_create(m, &ep, &e) == MNV_ERR_INVALID_ARG && e == NULL);
    CHECK(strstr(mnv_last_error(), "kv_dtype") != NULL);
    mnv_model_free(m);
}

int main(void) {
    t_seed();
    check_bad_types();
    check_rotation_exact("fixtures/models/tiny-llama", 40);
    check_rotation_exact("fixtures/models/tiny-gptoss-dense", 40);
    check_model("../models/stories260K", 500);
    check_model("fixtures/models/tiny-llama", 250);
    check_model("fixtures/models/tiny-qwen3", 250);
    check_model("fixtures/models/tiny-gptoss-dense", 250);
    check_model("fixtures/models/tiny-gptoss-mxfp4", 250);
    return t_done();
}
