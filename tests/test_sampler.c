/* Sampler stages and chain: each stage against its definition at fresh random
 * logits, the draw against softmax(logits / T) by chi-square, seeding,
 * penalties exactly, and the default chain. */
#include "core/topcands.h"
#include "runtime/sampler.h"
#include "test.h"

enum { MAXV = 200000 };
static float g_logits[MAXV];
static mnv_token_cand g_cand[MAXV];

static void rand_logits(float *l, int n, float scale) {
    for (int i = 0; i < n; i++) l[i] = scale * t_randf();
}

static mnv_cand_array make_cands(const float *l, int n) {
    for (int i = 0; i < n; i++) g_cand[i] = (mnv_token_cand){i, l[i], 0};
    return (mnv_cand_array){.data = g_cand, .size = (size_t)n, .selected = -1};
}

static int argmax(const float *l, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

/* softmax probabilities in double, computed as the stages do */
static void softmax_d(const float *l, int n, double *p) {
    float mx = l[argmax(l, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += p[i] = exp((double)l[i] - (double)mx);
    for (int i = 0; i < n; i++) p[i] /= sum;
}

static void apply_one(mnv_sampler *s, mnv_cand_array *c) {
    mnv_sampler_apply(s, c);
    mnv_sampler_free(s);
}

static int is_sorted_desc(const mnv_cand_array *c) {
    for (size_t i = 1; i < c->size; i++)
        if (c->data[i].logit > c->data[i - 1].logit) return 0;
    return 1;
}

static void test_defaults(void) {
    mnv_sampler_params p = mnv_sampler_params_default();
    CHECK(p.size == sizeof p);
    CHECK(p.temperature == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f);
    CHECK(p.repeat_penalty == 1.0f && p.repeat_last_n == 64);
    CHECK(p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f && p.seed == 0);

    mnv_sampler *s = (mnv_sampler *)1;
    CHECK(mnv_sampler_chain_create(&p, 0, &s) == MNV_ERR_INVALID_ARG && s == NULL);
    CHECK(mnv_sampler_chain_create(NULL, 10, &s) == MNV_ERR_INVALID_ARG);
    mnv_sampler_params bad = p;
    bad.size = 0;
    CHECK(mnv_sampler_chain_create(&bad, 10, &s) == MNV_ERR_INVALID_ARG && s == NULL);
    bad = p;
    bad.repeat_penalty = 0.0f;
    CHECK(mnv_sampler_chain_create(&bad, 10, &s) == MNV_ERR_INVALID_ARG);
    bad = p;
    bad.repeat_last_n = -2;
    CHECK(mnv_sampler_chain_create(&bad, 10, &s) == MNV_ERR_INVALID_ARG);
    CHECK(strlen(mnv_last_error()) > 0);

    /* a chain without a selecting stage returns -1 with a message */
    mnv_sampler *ch = mnv_sampler_chain();
    mnv_sampler_chain_add(ch, mnv_sampler_top_k(3));
    float l[4] = {1, 2, 3, 4};
    CHECK(mnv_sampler_sample(ch, l, 4) == -1);
    mnv_sampler_free(ch);
}

static void test_greedy(void) {
    mnv_sampler *g = mnv_sampler_greedy();
    int ok = 1;
    for (int trial = 0; trial < 50; trial++) {
        int n = t_randint(1, 5000);
        rand_logits(g_logits, n, 5.0f);
        ok &= mnv_sampler_sample(g, g_logits, n) == argmax(g_logits, n);
    }
    CHECK(ok);
    float tie[6] = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f, 1.0f};
    CHECK(mnv_sampler_sample(g, tie, 6) == 1);
    float nan_l[3] = {NAN, -3.0f, -4.0f};
    CHECK(mnv_sampler_sample(g, nan_l, 3) == 1);
    /* a chain of greedy alone scans the row without candidates: the same
     * picks as the stage, ties, NaN and infinities included */
    mnv_sampler *ch = mnv_sampler_chain();
    mnv_sampler_chain_add(ch, mnv_sampler_greedy());
    static const float specials[4] = {NAN, INFINITY, -INFINITY, 2.0f};
    for (int trial = 0; trial < 200; trial++) {
        int n = t_randint(1, 300);
        rand_logits(g_logits, n, 2.0f);
        for (int i = 0; i < n; i++)
            if (t_randint(0, 9) == 0) g_logits[i] = specials[t_randint(0, 3)];
        ok &= mnv_sampler_sample(ch, g_logits, n) == mnv_sampler_sample(g, g_logits, n);
    }
    CHECK(ok);
    for (int i = 0; i < 3; i++) g_logits[i] = NAN;
    CHECK(mnv_sampler_sample(ch, g_logits, 3) == 0 && mnv_sampler_sample(g, g_logits, 3) == 0);
    mnv_sampler_free(ch);
    mnv_sampler_free(g);
}

static void test_top_k(void) {
    int ok = 1;
    for (int trial = 0; trial < 40; trial++) {
        int n = t_randint(1, 20000), k = t_randint(1, 200);
        rand_logits(g_logits, n, 4.0f);
        mnv_cand_array c = make_cands(g_logits, n);
        apply_one(mnv_sampler_top_k(k), &c);
        size_t want = (size_t)(k < n ? k : n);
        ok &= c.size == want && c.sorted && is_sorted_desc(&c);
        /* exactly the k largest: the kept minimum beats every dropped logit */
        static unsigned char kept[MAXV];
        memset(kept, 0, (size_t)n);
        for (size_t i = 0; i < c.size; i++) kept[c.data[i].id] = 1;
        float kmin = c.data[c.size - 1].logit;
        for (int i = 0; i < n; i++)
            if (!kept[i]) ok &= g_logits[i] <= kmin;
    }
    CHECKF(ok, "top-k keeps exactly the k largest, sorted");
    rand_logits(g_logits, 100, 1.0f);
    mnv_cand_array c = make_cands(g_logits, 100);
    apply_one(mnv_sampler_top_k(0), &c);
    CHECK(c.size == 100 && !c.sorted);
    apply_one(mnv_sampler_top_k(1000), &c);
    CHECK(c.size == 100 && is_sorted_desc(&c));
}

/* The kept set is a best-first prefix (every kept logit >= every dropped
 * one) whose mass reaches p, and without its smallest member it would not.
 * Mass is relative to the candidates top-p saw. Covers the sorted input
 * (after top-k), the chunked partial sort (< 4096 candidates) and the
 * bucketed path (larger, unsorted), at flat to peaked logits and with some
 * tokens masked to -inf. */
static void test_top_p(void) {
    static double prob[MAXV];
    static unsigned char kept[MAXV];
    const float scales[4] = {1.0f, 4.0f, 8.0f, 30.0f};
    for (int trial = 0; trial < 80; trial++) {
        int n = trial >= 70 ? MAXV : trial % 2 ? t_randint(2, 4000) : t_randint(4096, 60000);
        float p = 0.05f + 0.94f * (0.5f + 0.5f * t_randf());
        rand_logits(g_logits, n, scales[trial % 4]);
        if (trial % 5 == 4)
            for (int i = 0; i < n; i += 7) g_logits[i] = -INFINITY;
        softmax_d(g_logits, n, prob);
        mnv_cand_array c = make_cands(g_logits, n);
        if (trial % 3 == 0) apply_one(mnv_sampler_top_k(n / 2 + 1), &c); /* the pre-sorted path */
        double avail = 0;
        for (size_t i = 0; i < c.size; i++) avail += prob[c.data[i].id];
        size_t before = c.size;
        apply_one(mnv_sampler_top_p(p, 1), &c);
        memset(kept, 0, (size_t)n);
        double mass = 0, smallest = 1;
        float kmin = INFINITY;
        for (size_t i = 0; i < c.size; i++) {
            kept[c.data[i].id] = 1;
            mass += prob[c.data[i].id];
            smallest = fmin(smallest, prob[c.data[i].id]);
            kmin = fminf(kmin, c.data[i].logit);
        }
        int prefix = c.size >= 1 && c.size <= before;
        for (size_t i = c.size; i < before; i++) prefix &= c.data[i].logit <= kmin && !kept[c.data[i].id];
        int good = prefix && mass / avail >= p - 1e-9 && (c.size == 1 || (mass - smallest) / avail < p + 1e-9);
        CHECKF(good, "n %d p %g kept %zu of %zu, prefix %d, mass %.9f, smallest %.3g", n, (double)p, c.size, before,
               prefix, mass / avail, smallest / avail);
    }
    /* min_keep wins over a tiny p */
    rand_logits(g_logits, 1000, 10.0f);
    mnv_cand_array c = make_cands(g_logits, 1000);
    apply_one(mnv_sampler_top_p(1e-6f, 7), &c);
    CHECK(c.size == 7 && is_sorted_desc(&c) && c.data[0].id == argmax(g_logits, 1000));
    c = make_cands(g_logits, 1000);
    apply_one(mnv_sampler_top_p(1.0f, 1), &c);
    CHECK(c.size == 1000);
}

static void test_min_p(void) {
    static double prob[MAXV];
    int ok = 1, checked = 0;
    for (int trial = 0; trial < 40; trial++) {
        int n = t_randint(2, 5000);
        float mp = 0.01f + 0.5f * (0.5f + 0.5f * t_randf());
        rand_logits(g_logits, n, 3.0f);
        softmax_d(g_logits, n, prob);
        double pmax = prob[argmax(g_logits, n)];
        mnv_cand_array c = make_cands(g_logits, n);
        apply_one(mnv_sampler_min_p(mp, 1), &c);
        static unsigned char kept[MAXV];
        memset(kept, 0, (size_t)n);
        for (size_t i = 0; i < c.size; i++) kept[c.data[i].id] = 1;
        for (int i = 0; i < n; i++) {
            double r = prob[i] / pmax;
            if (fabs(r - mp) < 1e-5) continue; /* too close to the threshold to call */
            ok &= kept[i] == (r >= mp);
            checked++;
        }
    }
    CHECKF(ok && checked > 1000, "min-p keeps exactly p >= min_p * p_max (%d checked)", checked);
    /* min_keep when nothing but the best passes */
    float l[5] = {10, 0, 1, 2, 0.5f};
    mnv_cand_array c = make_cands(l, 5);
    apply_one(mnv_sampler_min_p(0.5f, 3), &c);
    CHECK(c.size == 3 && c.data[0].id == 0 && c.data[1].id == 3 && c.data[2].id == 2);
}

/* Pearson chi-square of counts against probabilities; bins here all expect
 * >= 50 draws. */
static double chi_square(const int *count, const double *p, int k, int n) {
    double x2 = 0;
    for (int i = 0; i < k; i++) {
        double e = p[i] * n;
        x2 += (count[i] - e) * (count[i] - e) / e;
    }
    return x2;
}

static void test_temperature(void) {
    float l[5], want[5];
    rand_logits(l, 5, 1.0f);
    mnv_cand_array c = make_cands(l, 5);
    apply_one(mnv_sampler_temperature(0.7f), &c);
    int ok = 1;
    for (int i = 0; i < 5; i++) ok &= c.data[i].logit == l[i] / 0.7f;
    CHECK(ok);
    c = make_cands(l, 5);
    apply_one(mnv_sampler_temperature(0.0f), &c);
    CHECK(c.size == 1 && c.data[0].id == argmax(l, 5));

    /* 20000 draws over 5 tokens vs softmax(l / T): chi-square with 4 degrees
     * of freedom must stay under 23.51 (the 0.9999 quantile), so a correct
     * sampler fails one of these 3 checks about 3 times in 10,000 runs. */
    const float temps[3] = {0.5f, 1.0f, 2.0f};
    const int n_draw = 20000;
    for (int ti = 0; ti < 3; ti++) {
        mnv_sampler_params p = mnv_sampler_params_default();
        p.temperature = temps[ti];
        p.top_k = 0, p.top_p = 1.0f, p.min_p = 0.0f;
        p.seed = t_rand64();
        mnv_sampler *s;
        CHECK(mnv_sampler_chain_create(&p, 5, &s) == MNV_OK);
        int count[5] = {0};
        for (int d = 0; d < n_draw; d++) count[mnv_sampler_sample(s, l, 5)]++;
        for (int i = 0; i < 5; i++) want[i] = l[i] / temps[ti];
        double prob[5];
        softmax_d(want, 5, prob);
        double x2 = chi_square(count, prob, 5, n_draw);
        CHECKF(x2 < 23.51, "T %g chi2 %.2f (4 dof) counts %d %d %d %d %d", (double)temps[ti], x2, count[0], count[1],
               count[2], count[3], count[4]);
        mnv_sampler_free(s);
    }
    /* with top_k = 3 the draw is the renormalized top 3 (2 dof, 0.9999 quantile 18.42) */
    mnv_sampler_params p = mnv_sampler_params_default();
    p.temperature = 1.0f, p.top_k = 3, p.top_p = 1.0f, p.min_p = 0.0f, p.seed = t_rand64();
    mnv_sampler *s;
    CHECK(mnv_sampler_chain_create(&p, 5, &s) == MNV_OK);
    int count[5] = {0}, order[5] = {0, 1, 2, 3, 4};
    for (int d = 0; d < n_draw; d++) count[mnv_sampler_sample(s, l, 5)]++;
    for (int i = 0; i < 5; i++) /* order by logit descending */
        for (int j = i + 1; j < 5; j++)
            if (l[order[j]] > l[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    CHECK(count[order[3]] == 0 && count[order[4]] == 0);
    float top[3] = {l[order[0]], l[order[1]], l[order[2]]};
    double prob[3];
    int cnt3[3] = {count[order[0]], count[order[1]], count[order[2]]};
    softmax_d(top, 3, prob);
    double x2 = chi_square(cnt3, prob, 3, n_draw);
    CHECKF(x2 < 18.42, "top-k 3 chi2 %.2f (2 dof)", x2);
    mnv_sampler_free(s);
}

static void run_seq(mnv_sampler *s, const float *rows, int n, int steps, int32_t *out) {
    for (int i = 0; i < steps; i++) {
        out[i] = mnv_sampler_sample(s, rows + (size_t)i * n, n);
        mnv_sampler_accept(s, out[i]);
    }
}

static void test_seeding(void) {
    enum { N = 1000, STEPS = 200 };
    static float rows[N * STEPS];
    rand_logits(rows, N * STEPS, 1.0f);
    mnv_sampler_params p = mnv_sampler_params_default();
    p.top_k = 0, p.top_p = 0.99f, p.min_p = 0.0f, p.temperature = 1.5f, p.repeat_penalty = 1.1f;
    p.seed = t_rand64();
    mnv_sampler *a, *b, *c;
    CHECK(mnv_sampler_chain_create(&p, N, &a) == MNV_OK);
    CHECK(mnv_sampler_chain_create(&p, N, &b) == MNV_OK);
    p.seed ^= 1;
    CHECK(mnv_sampler_chain_create(&p, N, &c) == MNV_OK);
    static int32_t sa[STEPS], sb[STEPS], sc[STEPS], sr[STEPS];
    run_seq(a, rows, N, STEPS, sa);
    run_seq(b, rows, N, STEPS, sb);
    run_seq(c, rows, N, STEPS, sc);
    CHECK(memcmp(sa, sb, sizeof sa) == 0);
    CHECK(memcmp(sa, sc, sizeof sa) != 0);
    mnv_sampler_reset(a); /* re-seeds the draw and forgets the penalty window */
    run_seq(a, rows, N, STEPS, sr);
    CHECK(memcmp(sa, sr, sizeof sa) == 0);
    int valid = 1;
    for (int i = 0; i < STEPS; i++) valid &= sa[i] >= 0 && sa[i] < N;
    CHECK(valid);
    mnv_sampler_free(a);
    mnv_sampler_free(b);
    mnv_sampler_free(c);
}

static float penalized(float l, int count, float rep, float freq, float pres) {
    if (count == 0) return l;
    l = l <= 0 ? l * rep : l / rep;
    return l - ((float)count * freq + (float)(count > 0) * pres);
}

static void test_penalties(void) {
    enum { N = 10 };
    float l[N];
    const float rep = 1.3f, freq = 0.25f, pres = 0.7f;
    const int32_t hist[] = {3, 5, 3, 7, 3, 2, 9};
    for (int mode = 0; mode < 3; mode++) { /* window 4, whole history, shuffled candidates */
        int32_t last_n = mode == 0 ? 4 : -1;
        mnv_sampler *s = mnv_sampler_penalties(last_n, rep, freq, pres);
        for (int i = 0; i < 7; i++) mnv_sampler_accept(s, hist[i]);
        int count[N] = {0};
        for (int i = mode == 0 ? 3 : 0; i < 7; i++) count[hist[i]]++;
        rand_logits(l, N, 2.0f);
        l[3] = -fabsf(l[3]) - 0.1f, l[7] = fabsf(l[7]) + 0.1f; /* both signs among the penalized */
        mnv_cand_array c = make_cands(l, N);
        if (mode == 2)
            for (int i = N - 1; i > 0; i--) {
                int j = t_randint(0, i);
                mnv_token_cand t = c.data[i];
                c.data[i] = c.data[j];
                c.data[j] = t;
            }
        mnv_sampler_apply(s, &c);
        int ok = c.size == N;
        for (int i = 0; i < N; i++) ok &= c.data[i].logit == penalized(l[c.data[i].id], count[c.data[i].id], rep, freq, pres);
        CHECKF(ok, "penalties mode %d", mode);
        mnv_sampler_reset(s);
        c = make_cands(l, N);
        mnv_sampler_apply(s, &c);
        ok = 1;
        for (int i = 0; i < N; i++) ok &= c.data[i].logit == l[i];
        CHECKF(ok, "penalties after reset, mode %d", mode);
        mnv_sampler_free(s);
    }
    /* in the default chain: greedy moves off a repeated token */
    mnv_sampler_params p = mnv_sampler_params_default();
    p.temperature = 0.0f, p.repeat_penalty = 2.0f;
    mnv_sampler *s;
    CHECK(mnv_sampler_chain_create(&p, 4, &s) == MNV_OK);
    float row[4] = {1.0f, 3.0f, 2.0f, -1.0f};
    CHECK(mnv_sampler_sample(s, row, 4) == 1);
    mnv_sampler_accept(s, 1);
    CHECK(mnv_sampler_sample(s, row, 4) == 2); /* 3 / 2 = 1.5 < 2 */
    mnv_sampler_free(s);
}

static void test_chain_top_k1(void) {
    mnv_sampler_params p = mnv_sampler_params_default();
    p.top_k = 1, p.temperature = 1.7f, p.seed = t_rand64();
    mnv_sampler *s;
    CHECK(mnv_sampler_chain_create(&p, MAXV, &s) == MNV_OK);
    int ok = 1;
    for (int trial = 0; trial < 30; trial++) {
        int n = t_randint(1, MAXV);
        rand_logits(g_logits, n, 3.0f);
        ok &= mnv_sampler_sample(s, g_logits, n) == argmax(g_logits, n);
    }
    CHECK(ok);
    mnv_sampler_free(s);
}

/* Degenerate rows at a large vocabulary: all equal (ties go to the lowest
 * ids), all -inf (uniform), one +inf (certain). */
static void test_degenerate(void) {
    const int n = 50000;
    for (int i = 0; i < n; i++) g_logits[i] = 0.25f;
    mnv_cand_array c = make_cands(g_logits, n);
    apply_one(mnv_sampler_top_k(10), &c);
    int ok = c.size == 10;
    for (int i = 0; i < 10; i++) ok &= c.data[i].id == i;
    CHECKF(ok, "top-k on equal logits keeps ids 0..9");
    c = make_cands(g_logits, n);
    apply_one(mnv_sampler_top_p(0.5f, 1), &c);
    CHECKF(c.size == (size_t)n / 2, "top-p 0.5 on %d equal logits keeps %zu", n, c.size);
    for (int i = 0; i < n; i++) g_logits[i] = -INFINITY;
    mnv_sampler_params p = mnv_sampler_params_default();
    p.seed = t_rand64();
    mnv_sampler *s;
    CHECK(mnv_sampler_chain_create(&p, n, &s) == MNV_OK);
    int32_t id = mnv_sampler_sample(s, g_logits, n);
    CHECK(id >= 0 && id < 40); /* top-k 40 of equal -inf: ids 0..39 */
    rand_logits(g_logits, n, 3.0f);
    g_logits[777] = INFINITY;
    g_logits[12] = NAN;
    CHECK(mnv_sampler_sample(s, g_logits, n) == 777);
    mnv_sampler_free(s);
    g_logits[12] = 0.0f; /* stages take no NaN (sample maps it to -inf); +inf reaches them as is */
    c = make_cands(g_logits, n);
    apply_one(mnv_sampler_top_p(0.9f, 1), &c);
    CHECK(c.size == 1 && c.data[0].id == 777);
}

/* Not a check: per-token cost of the default chain and of top-p alone at a
 * 200k vocabulary. */
static void bench(void) {
    const int n = MAXV, iters = 50;
    for (int v = 0; v < 2; v++) {
        mnv_sampler_params p = mnv_sampler_params_default();
        if (v) p.top_k = 0, p.min_p = 0.0f;
        mnv_sampler *s;
        if (mnv_sampler_chain_create(&p, n, &s) != MNV_OK) continue;
        rand_logits(g_logits, n, 6.0f);
        double t0 = mnv_time_sec();
        for (int i = 0; i < iters; i++) mnv_sampler_sample(s, g_logits, n);
        printf("%s chain, V=%d: %.3f ms/token\n", v ? "top-p only" : "default", n, (mnv_time_sec() - t0) * 1e3 / iters);
        /* the same from the row's candidates (computing them here, as the CPU kernel does) */
        static float cr[MNV_TOP_CANDS_ROW], vals[MNV_TOP_CANDS];
        static int32_t ids[MNV_TOP_CANDS];
        double t1 = mnv_time_sec(), t_cands = 0;
        for (int i = 0; i < iters; i++) {
            const double a0 = mnv_time_sec();
            mnv__top_cands_row(g_logits, n, cr, vals, ids);
            t_cands += mnv_time_sec() - a0;
            if (mnv__sampler_sample_cands(s, cr, n) == -2) mnv_sampler_sample(s, g_logits, n);
        }
        printf("%s chain from candidates, V=%d: %.3f ms/token, of which %.3f ms finding them\n", v ? "top-p only" : "default",
               n, (mnv_time_sec() - t1) * 1e3 / iters, t_cands * 1e3 / iters);
        mnv_sampler_free(s);
    }
}

/* Sampling from a device's candidates (core/topcands.h) against sampling
 * from the whole row: two chains of the same params and seed, fed the same
 * rows, must pick the same tokens at every step, the candidate one falling
 * back to the row where it cannot decide. Chains that cut within the
 * candidates (top-k up to K, no penalties) must never fall back; top-p and
 * min-p cuts decide where the cut falls within them. Rows flat and peaked,
 * with NaN, -inf and ties, vocabularies above and below K. */
static void test_cands(void) {
    const int32_t K = MNV_TOP_CANDS;
    static const int32_t top_ks[] = {0, 1, 40, K, K + 44};
    static const float top_ps[] = {1.0f, 0.95f, 0.5f}, min_ps[] = {0.0f, 0.05f, 0.3f}, temps[] = {0.0f, 0.7f, 1.3f};
    float *row = malloc(20000 * sizeof *row), *cr = malloc(MNV_TOP_CANDS_ROW * sizeof *cr), vals[MNV_TOP_CANDS];
    int32_t ids[MNV_TOP_CANDS];
    long decided = 0, fell_back = 0;
    for (int cfg = 0; cfg < 120; cfg++) {
        mnv_sampler_params p = mnv_sampler_params_default();
        p.top_k = top_ks[t_randint(0, 4)];
        p.top_p = top_ps[t_randint(0, 2)];
        p.min_p = min_ps[t_randint(0, 2)];
        p.temperature = temps[t_randint(0, 2)];
        p.seed = (uint64_t)t_randint(0, 1000000);
        if (t_randint(0, 3) == 0) p.repeat_penalty = 1.3f, p.presence_penalty = 0.5f;
        if (t_randint(0, 9) == 0) p.frequency_penalty = -0.4f; /* raises logits: never from candidates */
        const int32_t V = t_randint(0, 3) ? t_randint(K + 1, 20000) : t_randint(1, K);
        mnv_sampler *a = NULL, *b = NULL;
        CHECK(mnv_sampler_chain_create(&p, V, &a) == MNV_OK && mnv_sampler_chain_create(&p, V, &b) == MNV_OK);
        const bool must_decide = p.repeat_penalty == 1.0f && p.frequency_penalty == 0.0f && p.temperature > 0.0f &&
                                 p.top_k >= 1 && p.top_k <= K;
        CHECKF(!must_decide || mnv__sampler_uses_cands(b), "top-k %d chain does not use candidates", p.top_k);
        for (int step = 0; step < 12; step++) {
            const float scale = t_randint(0, 1) ? 2.0f : 12.0f;
            for (int32_t i = 0; i < V; i++) row[i] = scale * t_randf();
            if (step % 4 == 1) row[t_randint(0, V - 1)] = NAN, row[t_randint(0, V - 1)] = -INFINITY;
            if (step % 4 == 2)
                for (int32_t i = 0; i < V; i++) row[i] = (float)t_randint(0, 3);
            if (step % 6 == 3) /* a few equal maxima, the rest -inf (or all -inf): sums land on the target */
                for (int32_t i = 0; i < V; i++) row[i] = i < 4 && step % 12 == 3 ? 0.0f : -INFINITY;
            mnv__top_cands_row(row, V, cr, vals, ids);
            const int32_t want = mnv_sampler_sample(a, row, V);
            int32_t got = mnv__sampler_sample_cands(b, cr, V);
            CHECKF(p.frequency_penalty >= 0.0f || got == -2, "a negative penalty decided by candidates");
            if (got == -2) {
                fell_back++;
                CHECKF(!must_decide, "top-k %d, V %d: the candidates did not decide", p.top_k, V);
                got = mnv_sampler_sample(b, row, V);
            } else {
                decided++;
            }
            CHECKF(got == want && want >= 0,
                   "cfg %d step %d (V %d, top-k %d, top-p %g, min-p %g, T %g, penalties %d): token %d, want %d", cfg,
                   step, V, p.top_k, (double)p.top_p, (double)p.min_p, (double)p.temperature, p.repeat_penalty != 1.0f,
                   got, want);
            mnv_sampler_accept(a, want);
            mnv_sampler_accept(b, want);
        }
        mnv_sampler_free(a);
        mnv_sampler_free(b);
    }
    CHECKF(decided > 0 && fell_back > 0, "candidates decided %ld steps, fell back on %ld", decided, fell_back);
    free(row);
    free(cr);
}

int main(void) {
    t_seed();
    test_defaults();
    test_greedy();
    test_top_k();
    test_top_p();
    test_min_p();
    test_temperature();
    test_seeding();
    test_penalties();
    test_chain_top_k1();
    test_degenerate();
    test_cands();
    bench();
    return t_done();
}
