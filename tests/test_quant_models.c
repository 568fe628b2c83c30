/* Quantized models end to end: the bundled stories260K and the tiny
 * transformers fixtures converted to MLX affine 8-bit and 4-bit and mxfp4
 * (the tiny fixtures also to mxfp8 and nvfp4) (mnv_convert), loaded and run.
 *
 * Reported per mode, against the f32 model: top-1 agreement over a long
 * greedy run (teacher-forced on the f32 model's own greedy sequence),
 * perplexity of a fixed text, relative L2 of the logits; for the default
 * kernel (activations rounded to int8 per row) and the exact one (f32
 * activations, as MLX computes).
 *
 * Asserted: (1) exactness: a quantized model and its dequantized twin
 * (convert --dequantize) agree to float rounding on the exact kernel;
 * (2) quality floors for the real trained model (stories260K), set below
 * the figures measured when this test was written (printed each run). */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "backend/cpu/qmatmul.h"
#include "minerva.h"
#include "test.h"

#define SEQ 160

typedef struct {
    int32_t ids[SEQ + 1];
    int n;
    float *logits; /* n x V of the f32 model */
    int V;
} baseline;

static char tmp_root[256];

static int exact; /* sessions keep f32 activations in quantized products */

static int eval_all(const char *dir, const int32_t *ids, int n, float *logits) {
    mnv_model *m = NULL;
    mnv_session *s = NULL;
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = SEQ + 8;
    sp.exact_quant = exact;
    if (mnv_model_load(dir, NULL, &m) != MNV_OK || mnv_session_create(m, &sp, &s) != MNV_OK) {
        fprintf(stderr, "%s: %s\n", dir, mnv_last_error());
        mnv_model_free(m);
        return 0;
    }
    mnv_status st = mnv_session_eval(s, ids, (size_t)n, logits);
    mnv_session_free(s);
    mnv_model_free(m);
    return st == MNV_OK;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* The f32 model's greedy sequence from `prompt` and its logits. */
static int make_baseline(const char *dir, int32_t first, baseline *b) {
    mnv_model *m = NULL;
    mnv_session *s = NULL;
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = SEQ + 8;
    if (mnv_model_load(dir, NULL, &m) != MNV_OK || mnv_session_create(m, &sp, &s) != MNV_OK) return 0;
    mnv_model_info info;
    mnv_model_get_info(m, &info);
    b->V = info.n_vocab;
    b->n = SEQ;
    b->logits = malloc(sizeof(float) * (size_t)SEQ * b->V);
    b->ids[0] = first;
    for (int i = 0; i < SEQ; i++) {
        mnv_session_eval(s, &b->ids[i], 1, b->logits + (size_t)i * b->V);
        b->ids[i + 1] = argmax(b->logits + (size_t)i * b->V, b->V);
    }
    mnv_session_free(s);
    mnv_model_free(m);
    return 1;
}

/* perplexity of ids[1..n] under logits rows 0..n-1 */
static double perplexity(const float *logits, const int32_t *ids, int n, int V) {
    double nll = 0;
    for (int i = 0; i < n - 1; i++) {
        const float *r = logits + (size_t)i * V;
        double mx = r[argmax(r, V)], se = 0;
        for (int j = 0; j < V; j++) se += exp(r[j] - mx);
        nll += -(r[ids[i + 1]] - mx - log(se));
    }
    return exp(nll / (n - 1));
}

typedef struct {
    double agree, ppl, ppl_ref, rel;
} quality;

static quality measure(const char *dir, const baseline *b) {
    quality q = {0};
    float *lg = malloc(sizeof(float) * (size_t)b->n * b->V);
    if (!eval_all(dir, b->ids, b->n, lg)) {
        free(lg);
        return q;
    }
    int same = 0;
    for (int i = 0; i < b->n; i++) same += argmax(lg + (size_t)i * b->V, b->V) == b->ids[i + 1];
    q.agree = (double)same / b->n;
    q.ppl = perplexity(lg, b->ids, b->n, b->V);
    q.ppl_ref = perplexity(b->logits, b->ids, b->n, b->V);
    q.rel = t_rel_l2(lg, b->logits, (size_t)b->n * b->V);
    free(lg);
    return q;
}

static int convert(const char *src, const char *dst, const char *mode, int bits, int gs, int dequant) {
    mnv_convert_params p = mnv_convert_params_default();
    p.src_dir = src;
    p.dst_dir = dst;
    p.q_mode = mode;
    p.q_bits = bits;
    p.q_group_size = gs;
    p.dequantize = dequant;
    mnv_status st = mnv_convert(&p);
    CHECKF(st == MNV_OK, "convert %s -> %s: %s", src, dst, mnv_last_error());
    return st == MNV_OK;
}

typedef struct {
    const char *mode;
    int bits, gs;
    double min_agree, max_ppl_ratio; /* floors for stories260K (default kernel) */
} qcase;

static void run_model(const char *name, const char *dir, int32_t first, const qcase *cases, int nc, int real) {
    baseline b = {0};
    if (!make_baseline(dir, first, &b)) {
        CHECKF(0, "%s: baseline: %s", name, mnv_last_error());
        return;
    }
    for (int c = 0; c < nc; c++) {
        char q[512], dq[520];
        char label[32];
        if (strcmp(cases[c].mode, "affine") == 0) snprintf(label, sizeof label, "affine%d g%d", cases[c].bits, cases[c].gs);
        else snprintf(label, sizeof label, "%s", cases[c].mode);
        snprintf(q, sizeof q, "%s/%s-%s%d-g%d", tmp_root, name, cases[c].mode, cases[c].bits, cases[c].gs);
        snprintf(dq, sizeof dq, "%s-dq", q);
        if (!convert(dir, q, cases[c].mode, cases[c].bits, cases[c].gs, 0)) continue;
        quality fast = measure(q, &b);
        exact = 1; /* the session parameter: f32 activations, as MLX computes */
        quality exact_q = measure(q, &b);
        /* exactness: the same weights dequantized to f32 */
        if (convert(q, dq, NULL, 0, 0, 1)) {
            float *a = malloc(sizeof(float) * (size_t)b.n * b.V), *d = malloc(sizeof(float) * (size_t)b.n * b.V);
            if (eval_all(q, b.ids, b.n, a) && eval_all(dq, b.ids, b.n, d)) {
                double e = t_rel_l2(a, d, (size_t)b.n * b.V);
                CHECKF(e < 1e-5, "%s %s: quantized vs dequantized rel L2 %.3g", name, label, e);
                printf("  %-12s %-12s quantized vs its dequantized f32 twin (exact kernel): rel L2 %.2g\n", name, label, e);
            }
            free(a);
            free(d);
        }
        exact = 0;
        printf("  %-12s %-12s | default kernel: top-1 %5.1f%%  ppl %.4f (f32 %.4f)  rel L2 %.4f | exact: top-1 "
               "%5.1f%%  ppl %.4f  rel L2 %.4f\n",
               name, label, 100 * fast.agree, fast.ppl, fast.ppl_ref, fast.rel, 100 * exact_q.agree, exact_q.ppl, exact_q.rel);
        if (real) {
            CHECKF(fast.agree >= cases[c].min_agree, "%s %s: top-1 agreement %.3f < %.2f", name, label, fast.agree,
                   cases[c].min_agree);
            CHECKF(fast.ppl <= fast.ppl_ref * cases[c].max_ppl_ratio, "%s %s: perplexity %.4f vs f32 %.4f", name, label,
                   fast.ppl, fast.ppl_ref);
        }
    }
    free(b.logits);
}

int main(void) {
    t_seed();
    snprintf(tmp_root, sizeof tmp_root, "/tmp/mnv-qm-XXXXXX");
    if (!mkdtemp(tmp_root)) {
        CHECKF(0, "mkdtemp");
        return t_done();
    }
    /* stories260K: hidden 64, ffn 172 (down_proj's 172 columns do not divide
     * into groups and stays float, as mlx-lm leaves it) */
    /* measured when written (default kernel): top-1 98.1 / 99.4 / 85.6 / 84.4 /
     * 77.5 %, perplexity ratio 1.000 / 1.002 / 1.103 / 1.153 / 1.304 */
    const qcase stories[] = {
        {"affine", 8, 32, 0.95, 1.02}, {"affine", 8, 64, 0.95, 1.02}, {"affine", 4, 32, 0.75, 1.15},
        {"affine", 4, 64, 0.70, 1.20}, {"mxfp4", 4, 32, 0.70, 1.35},
    };
    run_model("stories260K", "../models/stories260K", 1, stories, 5, 1);
    const qcase tiny[] = {{"affine", 8, 32, 0, 0}, {"affine", 4, 32, 0, 0}, {"mxfp4", 4, 32, 0, 0},
                          {"mxfp8", 8, 32, 0, 0}, {"nvfp4", 4, 16, 0, 0}};
    run_model("tiny-llama", "fixtures/models/tiny-llama", 5, tiny, 5, 0);
    run_model("tiny-qwen3", "fixtures/models/tiny-qwen3", 5, tiny, 5, 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return t_done();
}
