/* Every graph op on the CPU backend against a naive reference, at fresh
 * random inputs and shapes, on every path (instruction-set level) the host
 * has: the level cap moves every kernel (vector primitives, attention,
 * matmul) to that level's implementation. Tolerances: f32 ops 1e-5 relative L2 (float
 * rounding of sums up to a few thousand terms); bf16-weight matmul 1e-2
 * (activations rounded to bf16). */
#include <float.h>
#include <math.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/qmatmul.h"
#include "backend/cpu/vec.h"
#include "backend/cpu/ops.h"
#include "core/graph.h"
#include "core/topcands.h"
#include "test.h"

static mnv_backend *be;
static mnv_executor *ex;
static mnv_graph *g;

static mnv_array *rand_input(int32_t ndim, const int64_t *shape, float **host) {
    mnv_array *a = mnv_input(g, MNV_DTYPE_F32, ndim, shape, "in");
    float *d = mnv_input_data(a);
    for (int64_t i = 0; i < mnv_array_nelem(a); i++) d[i] = t_randf();
    if (host) *host = d;
    return a;
}

static void begin(void) {
    mnv_graph_reset(g);
    mnv_graph_reserve_inputs(g, 1 << 24);
}

static void run(void) {
    mnv_status st = mnv_executor_run(ex, g);
    CHECKF(st == MNV_OK, "run: %s", mnv_last_error());
}

static void check(const char *what, const float *got, const float *want, size_t n, double tol) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(got[i])) {
            CHECKF(0, "%s: non-finite output at %zu", what, i);
            return;
        }
    double e = t_rel_l2(got, want, n);
    CHECKF(e < tol, "%s: rel L2 %.3g >= %.1g", what, e, tol);
}

static void test_elementwise(void) {
    int64_t R = t_randint(1, 9), N = t_randint(1, 300);
    int64_t sh[2] = {R, N}, row[1] = {N};
    for (int op = 0; op < 8; op++) {
        begin();
        float *a, *b;
        mnv_array *x = rand_input(2, sh, &a);
        mnv_array *y = rand_input(op < 2 ? 1 : 2, op < 2 ? row : sh, &b);
        mnv_array *r = op == 0 || op == 2 ? mnv_add(g, x, y)
                     : op == 1 || op == 3 ? mnv_mul(g, x, y)
                     : op == 4 ? mnv_silu_mul(g, x, y)
                     : op == 5 ? mnv_silu(g, x)
                     : op == 6 ? mnv_gelu(g, x)
                               : mnv_scale(g, x, 0.37f);
        mnv_set_output(r);
        run();
        float *want = malloc(sizeof(float) * (size_t)(R * N));
        for (int64_t i = 0; i < R * N; i++) {
            double va = a[i], vb = op < 2 ? b[i % N] : b[i];
            double s = va / (1 + exp(-va));
            want[i] = (float)(op == 0 || op == 2 ? va + vb
                             : op == 1 || op == 3 ? va * vb
                             : op == 4 ? s * vb
                             : op == 5 ? s
                             : op == 6 ? 0.5 * va * (1 + tanh(0.7978845608 * (va + 0.044715 * va * va * va)))
                                       : va * 0.37);
        }
        char what[32];
        snprintf(what, sizeof what, "elementwise op %d", op);
        check(what, r->data, want, (size_t)(R * N), 1e-6);
        free(want);
    }
}

static void test_rms_norm_softmax(void) {
    int64_t R = t_randint(1, 7), N = t_randint(1, 700);
    int64_t sh[2] = {R, N}, row[1] = {N};
    begin();
    float *x, *w;
    mnv_array *ax = rand_input(2, sh, &x), *aw = rand_input(1, row, &w);
    mnv_array *rn = mnv_rms_norm(g, ax, aw, 1e-5f), *sm = mnv_softmax(g, ax);
    mnv_set_output(rn);
    mnv_set_output(sm);
    run();
    float *w1 = malloc(sizeof(float) * (size_t)(R * N)), *w2 = malloc(sizeof(float) * (size_t)(R * N));
    for (int64_t r = 0; r < R; r++) {
        double ss = 0, mx = -1e30, se = 0;
        for (int64_t i = 0; i < N; i++) {
            ss += (double)x[r * N + i] * x[r * N + i];
            mx = fmax(mx, x[r * N + i]);
        }
        for (int64_t i = 0; i < N; i++) se += exp(x[r * N + i] - mx);
        for (int64_t i = 0; i < N; i++) {
            w1[r * N + i] = (float)(x[r * N + i] / sqrt(ss / N + 1e-5) * w[i]);
            w2[r * N + i] = (float)(exp(x[r * N + i] - mx) / se);
        }
    }
    check("rms_norm", rn->data, w1, (size_t)(R * N), 1e-6);
    check("softmax", sm->data, w2, (size_t)(R * N), 1e-6);
    free(w1);
    free(w2);
}

static void test_matmul(mnv_dtype wt, double tol) {
    int64_t M = t_randint(1, 40), K = t_randint(1, 200), N = t_randint(1, 150);
    if (t_randint(0, 3) == 0) M = t_randint(60, 130);
    int64_t xs[2] = {M, K}, ws[2] = {N, K};
    begin();
    float *x;
    mnv_array *ax = rand_input(2, xs, &x);
    float *wf = malloc(sizeof(float) * (size_t)(N * K));
    uint16_t *wh = malloc(2 * (size_t)(N * K));
    for (int64_t i = 0; i < N * K; i++) {
        wf[i] = t_randf();
        if (wt == MNV_DTYPE_BF16) wh[i] = mnv_f32_to_bf16(wf[i]), wf[i] = mnv_bf16_to_f32(wh[i]);
        if (wt == MNV_DTYPE_F16) wh[i] = mnv_f32_to_f16(wf[i]), wf[i] = mnv_f16_to_f32(wh[i]);
    }
    mnv_array *aw = mnv_param(g, wt == MNV_DTYPE_F32 ? (void *)wf : (void *)wh, wt, 2, ws, "w");
    mnv_array *y = mnv_matmul(g, ax, aw);
    mnv_set_output(y);
    run();
    float *want = malloc(sizeof(float) * (size_t)(M * N));
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)x[i * K + k] * wf[j * K + k];
            want[i * N + j] = (float)s;
        }
    char what[64];
    snprintf(what, sizeof what, "matmul %s %lldx%lldx%lld", mnv_dtype_name(wt), (long long)M, (long long)K,
             (long long)N);
    check(what, y->data, want, (size_t)(M * N), tol);
    free(want);
    free(wf);
    free(wh);
}

static void test_rope(int traditional) {
    int64_t T = t_randint(1, 9), H = t_randint(1, 4), D = 2 * t_randint(1, 40);
    int32_t n_rot = 2 * t_randint(1, (int)D / 2);
    int64_t sh[3] = {T, H, D}, tt[1] = {T}, nf[1] = {n_rot / 2};
    begin();
    float *x, *f;
    mnv_array *ax = rand_input(3, sh, &x), *af = rand_input(1, nf, &f);
    for (int i = 0; i < n_rot / 2; i++) f[i] = powf(10000.0f, -2.0f * i / n_rot);
    mnv_array *pos = mnv_input(g, MNV_DTYPE_I32, 1, tt, "pos");
    int32_t *p = mnv_input_data(pos);
    for (int64_t t = 0; t < T; t++) p[t] = t_randint(0, 5000);
    float af_ = 1.0f + 0.3f * (float)traditional;
    mnv_array *y = mnv_rope(g, ax, pos, af, n_rot, traditional, af_);
    mnv_set_output(y);
    run();
    float *want = malloc(sizeof(float) * (size_t)(T * H * D));
    memcpy(want, x, sizeof(float) * (size_t)(T * H * D));
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++)
            for (int i = 0; i < n_rot / 2; i++) {
                float *v = want + (t * H + h) * D;
                const float *u = x + (t * H + h) * D;
                int i0 = traditional ? 2 * i : i, i1 = traditional ? 2 * i + 1 : i + n_rot / 2;
                double a = (double)(float)((float)p[t] * f[i]), c = cos(a) * af_, s = sin(a) * af_;
                v[i0] = (float)(u[i0] * c - u[i1] * s);
                v[i1] = (float)(u[i1] * c + u[i0] * s);
            }
    check(traditional ? "rope traditional" : "rope neox", y->data, want, (size_t)(T * H * D), 1e-6);
    free(want);
}

/* The Hadamard op against the matrix itself: H[i][j] = (-1)^popcount(i & j)
 * / sqrt(block) (Sylvester order), applied by a naive double sum to each
 * block of a (T, heads, D) array with T odd; then the op applied twice is
 * the identity. A block that is not a power of two dividing D is refused. */
static void test_hadamard(void) {
    int32_t block = 1 << t_randint(t_randint(0, 3) ? 3 : 1, 8); /* mostly 8 .. 256, at times 2 or 4 */
    int64_t T = 2 * t_randint(0, 4) + 1, H = t_randint(1, 3), D = block * t_randint(1, 3);
    if (t_randint(0, 2) == 0 && block <= 64) D = block * 5; /* several blocks per head (e.g. 80 = 5 x 16) */
    int64_t sh[3] = {T, H, D}, n = T * H * D;
    begin();
    float *x;
    mnv_array *ax = rand_input(3, sh, &x);
    mnv_array *y = mnv_hadamard(g, ax, block), *yy = mnv_hadamard(g, y, block);
    mnv_set_output(y);
    mnv_set_output(yy);
    run();
    float *want = malloc(sizeof(float) * (size_t)n);
    for (int64_t b = 0; b < n; b += block)
        for (int32_t i = 0; i < block; i++) {
            double acc = 0;
            for (int32_t j = 0; j < block; j++)
                acc += (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.0 : 1.0) * x[b + j];
            want[b + i] = (float)(acc / sqrt((double)block));
        }
    char what[64];
    snprintf(what, sizeof what, "hadamard block %d D %lld", block, (long long)D);
    check(what, y->data, want, (size_t)n, 1e-6);
    snprintf(what, sizeof what, "hadamard twice, block %d", block);
    check(what, yy->data, x, (size_t)n, 1e-6);
    free(want);
    begin();
    int64_t sh2[2] = {3, 24};
    CHECK(mnv_hadamard(g, rand_input(2, sh2, NULL), 16) == NULL && mnv_graph_status(g) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "hadamard") != NULL);
    begin();
    CHECK(mnv_hadamard(g, rand_input(2, sh2, NULL), 12) == NULL && mnv_graph_status(g) == MNV_ERR_INVALID_ARG);
}

static void test_get_rows_copy(void) {
    int64_t V = t_randint(2, 50), D = t_randint(1, 70), T = t_randint(1, 12);
    int64_t ts[2] = {V, D}, is[1] = {T};
    uint16_t *tb = malloc(2 * (size_t)(V * D));
    for (int64_t i = 0; i < V * D; i++) tb[i] = mnv_f32_to_bf16(t_randf());
    begin();
    mnv_array *tab = mnv_param(g, tb, MNV_DTYPE_BF16, 2, ts, "table");
    mnv_array *ids = mnv_input(g, MNV_DTYPE_I32, 1, is, "ids");
    int32_t *id = mnv_input_data(ids);
    for (int64_t t = 0; t < T; t++) id[t] = t_randint(0, (int)V - 1);
    mnv_array *y = mnv_get_rows(g, tab, ids);
    mnv_array *tr = mnv_contiguous(g, mnv_transpose(g, y, 0, 1)); /* (D, T) */
    mnv_array *sl = mnv_contiguous(g, mnv_slice_rows(g, tr, D / 2, D - D / 2));
    mnv_set_output(y);
    mnv_set_output(tr);
    mnv_set_output(sl);
    run();
    float *want = malloc(sizeof(float) * (size_t)(T * D)), *wt = malloc(sizeof(float) * (size_t)(T * D));
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < D; d++) {
            want[t * D + d] = mnv_bf16_to_f32(tb[id[t] * D + d]);
            wt[d * T + t] = want[t * D + d];
        }
    check("get_rows bf16", y->data, want, (size_t)(T * D), 1e-7);
    check("transpose copy", tr->data, wt, (size_t)(T * D), 1e-7);
    check("slice rows", sl->data, wt + (D / 2) * T, (size_t)((D - D / 2) * T), 1e-7);
    free(want);
    free(wt);
    free(tb);
}

/* Reference attention for token t/head h over keys [lo, p] of its sequence. */
static void ref_attention(const float *q, const float *kc, const float *vc, int64_t C, int64_t Hkv, int64_t D,
                          int32_t s, int32_t p, int32_t lo, int64_t h, int64_t kvh, float scale, const float *sink,
                          float *out) {
    double mx = sink ? sink[h] : -1e300, den = 0;
    double *sc = malloc(sizeof(double) * (size_t)(p + 1));
    for (int32_t j = lo; j <= p; j++) {
        const float *k = kc + ((s * C + j) * Hkv + kvh) * D;
        double d = 0;
        for (int64_t i = 0; i < D; i++) d += (double)q[i] * k[i];
        sc[j] = d * scale;
        mx = fmax(mx, sc[j]);
    }
    if (sink) den = exp(sink[h] - mx);
    for (int32_t j = lo; j <= p; j++) den += exp(sc[j] - mx);
    for (int64_t i = 0; i < D; i++) {
        double a = 0;
        for (int32_t j = lo; j <= p; j++) a += exp(sc[j] - mx) * vc[((s * C + j) * Hkv + kvh) * D + i];
        out[i] = (float)(a / den);
    }
    free(sc);
}

/* A paged layout of a logical (S, C, Hkv, D) cache: blocks of B rows, `gap`
 * spare elements between blocks (a pool holding other layers too), each
 * sequence's blocks at random physical places (tables (S, W), W >= C / B,
 * padded with -1); B = C with no tables: the dense case. */
typedef struct {
    int64_t S, C, row, B, NB, W, stride;
    int32_t *tables; /* NULL: dense */
} paged;

static paged paged_make(int64_t S, int64_t C, int64_t row, bool dense) {
    paged pg = {S, C, row, C, S, 0, C * row, NULL};
    if (dense) return pg;
    pg.B = t_randint(0, 1) ? 16 : t_randint(1, 40);
    int64_t per = (C + pg.B - 1) / pg.B;
    pg.W = per + t_randint(0, 3);
    pg.NB = S * per + t_randint(0, 5);
    pg.stride = pg.B * row + t_randint(0, 3) * row + t_randint(0, 7);
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)pg.NB);
    for (int64_t i = 0; i < pg.NB; i++) perm[i] = (int32_t)i;
    for (int64_t i = pg.NB - 1; i > 0; i--) {
        int64_t j = t_randint(0, (int)i);
        int32_t tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    pg.tables = malloc(sizeof(int32_t) * (size_t)(S * pg.W));
    for (int64_t s = 0; s < S; s++)
        for (int64_t w = 0; w < pg.W; w++) pg.tables[s * pg.W + w] = w < per ? perm[s * per + w] : -1;
    free(perm);
    return pg;
}

/* Element offset of logical row (s, p) in the paged layout. */
static size_t paged_at(const paged *pg, int64_t s, int64_t p) {
    int64_t blk = pg->tables ? pg->tables[s * pg->W + p / pg->B] : s;
    return (size_t)(blk * pg->stride + (p % pg->B) * pg->row);
}

static size_t paged_elems(const paged *pg) { return (size_t)(pg->NB * pg->stride); }

/* Logical rows of a dense f32 array into the paged store of elem size es. */
static void paged_scatter(const paged *pg, const float *dense, void *store, mnv_dtype dt) {
    size_t es = mnv_dtype_size(dt);
    for (int64_t s = 0; s < pg->S; s++)
        for (int64_t p = 0; p < pg->C; p++)
            mnv_cpu_convert(dense + (s * pg->C + p) * pg->row, MNV_DTYPE_F32, (uint8_t *)store + paged_at(pg, s, p) * es,
                            dt, pg->row);
}

/* cache_write and attention through the graph, paged (random block tables)
 * or dense, against the reference on the logical cache. */
static void test_attention(bool sinks, int32_t window) {
    int64_t S = t_randint(1, 3), C = t_randint(48, 150), Hkv = t_randint(1, 3), grp = t_randint(1, 4);
    int64_t H = Hkv * grp, D = t_randint(1, 24) * 4, T = t_randint(1, 10);
    paged pg = paged_make(S, C, Hkv * D, t_randint(0, 2) == 0);
    int64_t cs[4] = {pg.NB, pg.B, Hkv, D}, cst[4] = {pg.stride, Hkv * D, D, 1};
    int64_t qs[3] = {T, H, D}, ks[3] = {T, Hkv, D}, ts[1] = {T}, hs[1] = {H};
    size_t cn = (size_t)(S * C * Hkv * D), pn = paged_elems(&pg);
    float *kc = malloc(4 * cn), *vc = malloc(4 * cn), *kp = malloc(4 * pn), *vp = malloc(4 * pn);
    for (size_t i = 0; i < cn; i++) kc[i] = t_randf(), vc[i] = t_randf();
    paged_scatter(&pg, kc, kp, MNV_DTYPE_F32);
    paged_scatter(&pg, vc, vp, MNV_DTYPE_F32);
    begin();
    float *q, *kn, *vn, *sk = NULL;
    mnv_array *aq = rand_input(3, qs, &q), *ak = rand_input(3, ks, &kn), *av = rand_input(3, ks, &vn);
    mnv_array *asn = sinks ? rand_input(1, hs, &sk) : NULL;
    mnv_array *seq = mnv_input(g, MNV_DTYPE_I32, 1, ts, "seq"), *pos = mnv_input(g, MNV_DTYPE_I32, 1, ts, "pos");
    mnv_array *slot = mnv_input(g, MNV_DTYPE_I32, 1, ts, "slot"), *tab = NULL;
    if (pg.tables) {
        int64_t tsh[2] = {S, pg.W};
        tab = mnv_input(g, MNV_DTYPE_I32, 2, tsh, "tables");
        memcpy(mnv_input_data(tab), pg.tables, sizeof(int32_t) * (size_t)(S * pg.W));
    }
    int32_t *sq = mnv_input_data(seq), *ps = mnv_input_data(pos), *sl = mnv_input_data(slot);
    for (int64_t t = 0; t < T; t++) { /* distinct (seq, pos) slots */
        sq[t] = (int32_t)(t % S);
        ps[t] = (int32_t)(C - 1 - t / S - t_randint(0, 2) * (int)(T / S + 1));
        if (ps[t] < 0) ps[t] = (int32_t)(t / S);
        int64_t blk = pg.tables ? pg.tables[sq[t] * pg.W + ps[t] / pg.B] : sq[t];
        sl[t] = (int32_t)(blk * pg.B + ps[t] % pg.B);
    }
    mnv_array *kw = mnv_cache_write(g, mnv_param_strided(g, kp, MNV_DTYPE_F32, 4, cs, cst, "kc"), ak, slot);
    mnv_array *vw = mnv_cache_write(g, mnv_param_strided(g, vp, MNV_DTYPE_F32, 4, cs, cst, "vc"), av, slot);
    float scale = 1.0f / sqrtf((float)D);
    mnv_array *y = mnv_attention(g, aq, kw, vw, tab, seq, pos, asn, scale, window);
    mnv_set_output(y);
    run();
    /* the reference reads the logical cache with the new rows written */
    for (int64_t t = 0; t < T; t++) {
        memcpy(kc + (sq[t] * C + ps[t]) * Hkv * D, kn + t * Hkv * D, 4 * (size_t)(Hkv * D));
        memcpy(vc + (sq[t] * C + ps[t]) * Hkv * D, vn + t * Hkv * D, 4 * (size_t)(Hkv * D));
    }
    float *want = malloc(sizeof(float) * (size_t)(T * H * D));
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            int32_t lo = window > 0 ? (ps[t] - window + 1 > 0 ? ps[t] - window + 1 : 0) : 0;
            ref_attention(q + (t * H + h) * D, kc, vc, C, Hkv, D, sq[t], ps[t], lo, h, h / grp, scale, sk,
                          want + (t * H + h) * D);
        }
    bool written = true;
    for (int64_t t = 0; t < T; t++)
        written &= memcmp(kp + paged_at(&pg, sq[t], ps[t]), kn + t * Hkv * D, 4 * (size_t)(Hkv * D)) == 0 &&
                   memcmp(vp + paged_at(&pg, sq[t], ps[t]), vn + t * Hkv * D, 4 * (size_t)(Hkv * D)) == 0;
    CHECKF(written, "cache_write: rows not in the cache");
    char what[96];
    snprintf(what, sizeof what, "attention %s S%lld C%lld B%lld H%lld/%lld D%lld sinks %d window %d",
             pg.tables ? "paged" : "dense", (long long)S, (long long)C, (long long)pg.B, (long long)H, (long long)Hkv,
             (long long)D, sinks, window);
    check(what, y->data, want, (size_t)(T * H * D), 1e-5);
    free(want), free(kc), free(vc), free(kp), free(vp), free(pg.tables);
}

/* Row conversion between f32 and f16/bf16 (KV cache writes, embedding rows)
 * on every level the host has, bit for bit against the portable conversion
 * (round to nearest even) at random lengths and values of every magnitude:
 * f16 subnormals and overflow, infinities, and NaN for bf16 (an f16 NaN's
 * payload may differ, so f16 inputs are non-NaN). */
/* Logits rows with what greedy sampling must survive: NaN, +inf, -inf,
 * ties of the maximum, rows with nothing but NaN and -inf. */
static void awkward_rows(float *x, int64_t R, int64_t N) {
    for (int64_t r = 0; r < R; r++) {
        float *row = x + r * N;
        const int kind = t_randint(0, 5);
        for (int64_t i = 0; i < N; i++) row[i] = kind == 5 ? (t_randint(0, 1) ? NAN : -INFINITY) : t_randf();
        if (kind == 1) row[t_randint(0, (int)N - 1)] = NAN;
        if (kind == 2) row[t_randint(0, (int)N - 1)] = INFINITY, row[t_randint(0, (int)N - 1)] = INFINITY;
        if (kind == 3) row[t_randint(0, (int)N - 1)] = row[t_randint(0, (int)N - 1)] = 7.0f; /* a tie at the top */
        if (kind == 4) row[0] = NAN, row[t_randint(0, (int)N - 1)] = -INFINITY;
    }
}

/* The reference: NaN below everything, +inf as the largest finite value,
 * the first of equal maxima; a row of NaN and -inf gives 0. */
static int32_t ref_argmax(const float *x, int64_t n) {
    int32_t best = 0;
    double bv = -HUGE_VAL;
    for (int64_t i = 0; i < n; i++) {
        const double v = isnan(x[i]) ? -HUGE_VAL : isinf(x[i]) && x[i] > 0 ? (double)FLT_MAX : (double)x[i];
        if (v > bv) bv = v, best = (int32_t)i;
    }
    return best;
}

static void test_argmax(void) {
    begin();
    const int64_t R = t_randint(1, 9), N = t_randint(1, 3000), sh[2] = {R, N};
    float *x;
    mnv_array *a = rand_input(2, sh, &x);
    awkward_rows(x, R, N);
    mnv_array *ids = mnv_argmax(g, a);
    CHECK(ids && ids->dtype == MNV_DTYPE_I32 && ids->ndim == 1 && ids->shape[0] == R);
    if (!ids) return;
    mnv_set_output(ids);
    run();
    for (int64_t r = 0; r < R; r++)
        CHECKF(((int32_t *)ids->data)[r] == ref_argmax(x + r * N, N), "argmax row %lld of %lld x %lld: %d, want %d",
               (long long)r, (long long)R, (long long)N, ((int32_t *)ids->data)[r], ref_argmax(x + r * N, N));
}

/* Sampling candidates (core/topcands.h) against a full sort of the cleaned
 * row by (value descending, index ascending), and log sum exp(x - max) in
 * double: the values and indices exactly, the sum within 1e-5 relative. Rows
 * of few distinct values put ties across the K-th place. */
typedef struct {
    double v;
    int32_t i;
} ref_cand;

static int ref_cand_cmp(const void *pa, const void *pb) {
    const ref_cand *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

static void test_top_cands(void) {
    begin();
    const int64_t R = t_randint(1, 5), N = t_randint(0, 2) ? t_randint(1, 3000) : t_randint(1, 300), sh[2] = {R, N};
    const int32_t K = MNV_TOP_CANDS;
    float *x;
    mnv_array *a = rand_input(2, sh, &x);
    awkward_rows(x, R, N);
    if (t_randint(0, 1)) /* few distinct values: ties everywhere */
        for (int64_t i = 0; i < R * N; i++)
            if (isfinite(x[i])) x[i] = (float)t_randint(-2, 2) * 0.5f;
    mnv_array *c = mnv_top_cands(g, a);
    CHECK(c && c->dtype == MNV_DTYPE_F32 && c->ndim == 2 && c->shape[0] == R && c->shape[1] == MNV_TOP_CANDS_ROW);
    if (!c) return;
    mnv_set_output(c);
    run();
    ref_cand *rc = malloc((size_t)N * sizeof *rc);
    for (int64_t r = 0; r < R; r++) {
        const float *row = x + r * N, *o = (const float *)c->data + r * MNV_TOP_CANDS_ROW;
        double mx = -HUGE_VAL, sum = 0.0;
        for (int64_t i = 0; i < N; i++) {
            const double v = isnan(row[i]) ? -HUGE_VAL : isinf(row[i]) && row[i] > 0 ? (double)FLT_MAX : (double)row[i];
            rc[i] = (ref_cand){v, (int32_t)i};
            if (v > mx) mx = v;
        }
        for (int64_t i = 0; i < N; i++) sum += rc[i].v > -HUGE_VAL ? exp(rc[i].v - mx) : 0.0;
        qsort(rc, (size_t)N, sizeof *rc, ref_cand_cmp);
        bool same = true;
        for (int32_t k = 0; k < K; k++) {
            const double wv = k < N ? rc[k].v : -HUGE_VAL;
            const float wi = k < N ? (float)rc[k].i : -1.0f;
            same &= (double)o[k] == wv && o[K + k] == wi;
        }
        CHECKF(same, "top_cands row %lld of %lld x %lld: candidates differ", (long long)r, (long long)R, (long long)N);
        const double lse = log(mx > -HUGE_VAL ? sum : (double)N), got = o[2 * K];
        CHECKF(fabs(got - lse) <= 1e-5 * fmax(1.0, fabs(lse)), "top_cands row %lld: log sum %.9g, want %.9g",
               (long long)r, got, lse);
    }
    free(rc);
}

static void test_convert(void) {
    int64_t n = t_randint(0, 300);
    float *x = malloc(4 * (size_t)n + 4), *y = malloc(4 * (size_t)n + 4), *yr = malloc(4 * (size_t)n + 4);
    uint16_t *h = malloc(2 * (size_t)n + 2), *hr = malloc(2 * (size_t)n + 2);
    static const mnv_dtype half[2] = {MNV_DTYPE_F16, MNV_DTYPE_BF16};
    for (int d = 0; d < 2; d++) {
        for (int64_t i = 0; i < n; i++) {
            x[i] = t_randf() * powf(2.0f, (float)t_randint(-30, 20));
            if (t_randint(0, 40) == 0) x[i] = t_randint(0, 1) ? INFINITY : -INFINITY;
            if (d == 1 && t_randint(0, 40) == 0) x[i] = NAN;
        }
        mnv__isa_set_cap(MNV_ISA_SCALAR);
        mnv_cpu_convert(x, MNV_DTYPE_F32, hr, half[d], n);
        mnv_cpu_convert(hr, half[d], yr, MNV_DTYPE_F32, n);
        for (int lv = MNV_ISA_AVX2; lv <= MNV_ISA_AVX512; lv++) {
            if (!mnv__isa_host((mnv_isa)lv)) continue;
            mnv__isa_set_cap((mnv_isa)lv);
            memset(h, 0xaa, 2 * (size_t)n), memset(y, 0xaa, 4 * (size_t)n);
            mnv_cpu_convert(x, MNV_DTYPE_F32, h, half[d], n);
            mnv_cpu_convert(hr, half[d], y, MNV_DTYPE_F32, n);
            CHECKF(memcmp(h, hr, 2 * (size_t)n) == 0 && memcmp(y, yr, 4 * (size_t)n) == 0,
                   "convert f32 <-> %s n=%lld on %s: not bit-exact", mnv_dtype_name(half[d]), (long long)n,
                   mnv__isa_name((mnv_isa)lv));
        }
    }
    mnv__isa_set_cap(MNV_ISA_COUNT);
    free(x), free(y), free(yr), free(h), free(hr);
}

/* Mixture-of-experts products (quantized experts: mxfp4, 8-bit affine) on a
 * backend of its own (exact: f32 activations; row_invariant), at decode
 * sizes (every expert picked by at most 4 pairs: one pass over the picked
 * experts' rows) and small batches (an expert picked more often: expert by
 * expert). Each (token, slot) pair against its expert's product computed
 * alone (one row, one thread) by the same qmatmul, and, exact, against a
 * naive double-precision reference on the dequantized weights: 1e-5
 * relative L2 (f32 sums over K of at most 192 terms). */
static void test_moe(int threads, int exact, int row_invariant) {
    mnv_backend_params bp = {.name = "cpu", .n_threads = threads, .exact_quant = exact, .row_invariant = row_invariant,
                             .fixed_width = 1};
    mnv_backend *mb = NULL;
    mnv_executor *mx = NULL;
    CHECK(mnv_backend_create(&bp, &mb) == MNV_OK);
    mnv_executor_create(mb, &mx);
    const bool fp4 = t_randint(0, 1);
    const mnv_qformat f = fp4 ? (mnv_qformat){.mode = MNV_QMODE_MXFP4, .bits = 4, .group_size = 32, .scale_dtype = MNV_DTYPE_U8}
                              : (mnv_qformat){.mode = MNV_QMODE_AFFINE, .bits = 8, .group_size = 64, .scale_dtype = MNV_DTYPE_BF16};
    const int64_t E = t_randint(2, 12), kk = t_randint(1, MNV_MIN(4, (int)E)), T = t_randint(1, 7);
    const int64_t K = f.group_size * t_randint(1, 3), N = t_randint(1, 90), G = K / f.group_size;
    const int64_t rw = mnv_qformat_row_words(&f, K), ss = fp4 ? 1 : 2;
    const bool per_slot = t_randint(0, 1), has_bias = t_randint(0, 1);
    uint32_t *w = malloc((size_t)(E * N * rw) * 4);
    uint8_t *sc = malloc((size_t)(E * N * G) * (size_t)ss), *bi = malloc((size_t)(E * N * G) * (size_t)ss);
    float *bias = malloc((size_t)(E * N) * 4), *wd = malloc((size_t)(E * N * K) * 4);
    for (int64_t i = 0; i < E * N * rw; i++) w[i] = (uint32_t)t_rand64();
    for (int64_t i = 0; i < E * N * G; i++) {
        if (fp4) sc[i] = (uint8_t)t_randint(120, 130);
        else {
            uint16_t s = mnv_f32_to_bf16(0.01f * t_randf()), b = mnv_f32_to_bf16(0.5f * t_randf());
            memcpy(sc + 2 * i, &s, 2), memcpy(bi + 2 * i, &b, 2);
        }
    }
    for (int64_t i = 0; i < E * N; i++) bias[i] = t_randf();
    for (int64_t r = 0; r < E * N; r++)
        mnv__qdequant_groups(&f, w + r * rw, sc + r * G * ss, fp4 ? NULL : bi + r * G * ss, 1.0f, 0, G, wd + r * K);
    begin();
    int64_t xs3[3] = {T, kk, K}, xs2[2] = {T, K}, ids_sh[2] = {T, kk};
    float *x;
    mnv_array *ax = rand_input(per_slot ? 3 : 2, per_slot ? xs3 : xs2, &x);
    mnv_array *aid = mnv_input(g, MNV_DTYPE_I32, 2, ids_sh, "ids");
    int32_t *ids = mnv_input_data(aid);
    for (int64_t t = 0; t < T; t++) /* kk distinct experts per token */
        for (int64_t j = 0; j < kk; j++) {
            int32_t e;
            bool dup;
            do {
                e = (int32_t)t_randint(0, (int)E - 1), dup = false;
                for (int64_t q = 0; q < j; q++) dup |= ids[t * kk + q] == e;
            } while (dup);
            ids[t * kk + j] = e;
        }
    int64_t wsh[3] = {E, N, rw}, ssh[3] = {E, N, G}, bsh[2] = {E, N};
    mnv_array *aw = mnv_param(g, w, MNV_DTYPE_U32, 3, wsh, "w");
    mnv_array *as = mnv_param(g, sc, fp4 ? MNV_DTYPE_U8 : MNV_DTYPE_BF16, 3, ssh, "scales");
    mnv_array *ab = fp4 ? NULL : mnv_param(g, bi, MNV_DTYPE_BF16, 3, ssh, "biases");
    mnv_array *abias = has_bias ? mnv_param(g, bias, MNV_DTYPE_F32, 2, bsh, "bias") : NULL;
    mnv_array *y = mnv_moe_matmul(g, ax, aw, as, ab, &f, K, aid, abias);
    mnv_set_output(y);
    mnv_status st = mnv_executor_run(mx, g);
    CHECKF(st == MNV_OK, "moe run: %s", mnv_last_error());
    float *want = malloc((size_t)(T * kk * N) * 4), *alone = malloc((size_t)(T * kk * N) * 4);
    void *scr = malloc(mnv_cpu_qmatmul_scratch_size(1, K, &f, 1));
    for (int64_t p = 0; p < T * kk; p++) {
        const int64_t e = ids[p];
        const float *xr = x + (per_slot ? p : p / kk) * K;
        mnv_qmatmul_args a = {.x = xr, .ldx = K, .w = w + e * N * rw, .ldw = rw, .scales = sc + e * N * G * ss,
                              .biases = fp4 ? NULL : bi + e * N * G * ss, .lds = G, .fmt = f, .global_scale = 1.0f,
                              .y = alone + p * N, .ldy = N, .m = 1, .n = N, .k = K, .scratch = scr, .exact = exact,
                              .row_invariant = row_invariant};
        mnv_cpu_qmatmul(&a, 0, 1);
        for (int64_t j = 0; j < N; j++) {
            double s = has_bias ? bias[e * N + j] : 0.0;
            for (int64_t k = 0; k < K; k++) s += (double)xr[k] * wd[(e * N + j) * K + k];
            want[p * N + j] = (float)s;
            if (has_bias) alone[p * N + j] += bias[e * N + j];
        }
    }
    char what[128];
    snprintf(what, sizeof what, "moe %s T %lld E %lld k %lld N %lld K %lld%s%s, %d threads%s%s", fp4 ? "mxfp4" : "q8",
             (long long)T, (long long)E, (long long)kk, (long long)N, (long long)K, per_slot ? " per slot" : "",
             has_bias ? " bias" : "", threads, exact ? " exact" : "", row_invariant ? " row-invariant" : "");
    check(what, y->data, alone, (size_t)(T * kk * N), 1e-5);
    if (exact) check(what, y->data, want, (size_t)(T * kk * N), 1e-5);
    free(want), free(alone), free(scr), free(w), free(sc), free(bi), free(bias), free(wd);
    mnv_executor_free(mx);
    mnv_backend_free(mb);
}

/* Barriers left out between independent nodes: decode products of one x
 * (8-bit affine) with bias adds, summed in a chain, after an rms_norm. On
 * `threads` threads the result equals the one-thread run's (every kernel
 * here computes a row or a column the same way whatever the split); some
 * barriers are left out, and none between a node and a node of its group
 * (the nodes run since the last barrier kept) that reads it. */
static mnv_node *root(mnv_node *n) { return n->view_src ? n->view_src : n; }

static void test_barrier_plan(int threads) {
    const mnv_qformat f = {.mode = MNV_QMODE_AFFINE, .bits = 8, .group_size = 64, .scale_dtype = MNV_DTYPE_BF16};
    const int64_t K = 64 * t_randint(1, 4), N = t_randint(1, 70), P = t_randint(2, 5), rw = mnv_qformat_row_words(&f, K);
    uint32_t *w = malloc((size_t)(P * N * rw) * 4);
    uint16_t *sb = malloc((size_t)(P * N * (K / 64)) * 2 * 2);
    float *bias = malloc((size_t)(P * N) * 4), *norm = malloc((size_t)K * 4);
    for (int64_t i = 0; i < P * N * rw; i++) w[i] = (uint32_t)t_rand64();
    for (int64_t i = 0; i < P * N * (K / 64) * 2; i++) sb[i] = mnv_f32_to_bf16(0.01f * t_randf());
    for (int64_t i = 0; i < P * N; i++) bias[i] = t_randf();
    for (int64_t i = 0; i < K; i++) norm[i] = t_randf();
    float *got = malloc((size_t)N * 4), *want = malloc((size_t)N * 4), *x0 = malloc((size_t)K * 4);
    for (int64_t i = 0; i < K; i++) x0[i] = t_randf();
    for (int pass = 0; pass < 2; pass++) {
        mnv_backend_params bp = {.name = "cpu", .n_threads = pass ? threads : 1, .fixed_width = 1};
        mnv_backend *b = NULL;
        mnv_executor *x = NULL;
        CHECK(mnv_backend_create(&bp, &b) == MNV_OK);
        mnv_executor_create(b, &x);
        begin();
        int64_t xs[2] = {1, K}, ks[1] = {K}, ws[2] = {N, rw}, ss[2] = {N, K / 64}, bs[1] = {N};
        mnv_array *in = mnv_input(g, MNV_DTYPE_F32, 2, xs, "x");
        memcpy(mnv_input_data(in), x0, (size_t)K * 4);
        mnv_array *h = mnv_rms_norm(g, in, mnv_param(g, norm, MNV_DTYPE_F32, 1, ks, "norm"), 1e-5f), *sum = NULL;
        for (int64_t p = 0; p < P; p++) {
            mnv_array *aw = mnv_param(g, w + p * N * rw, MNV_DTYPE_U32, 2, ws, "w");
            mnv_array *as = mnv_param(g, sb + p * N * (K / 64), MNV_DTYPE_BF16, 2, ss, "s");
            mnv_array *ab = mnv_param(g, sb + (P + p) * N * (K / 64), MNV_DTYPE_BF16, 2, ss, "b");
            mnv_array *y = mnv_add(g, mnv_qmatmul(g, h, aw, as, ab, &f, K), mnv_param(g, bias + p * N, MNV_DTYPE_F32, 1, bs, "bias"));
            sum = sum ? mnv_add(g, sum, y) : y;
        }
        mnv_set_output(sum);
        CHECKF(mnv_executor_run(x, g) == MNV_OK, "barrier plan run: %s", mnv_last_error());
        memcpy(pass ? got : want, sum->data, (size_t)N * 4);
        const uint8_t *plan = mnv__cpu_barrier_plan(b);
        int32_t left_out = 0, start = 0;
        for (int32_t i = 0; plan && i < mnv_graph_n_nodes(g); i++) {
            mnv_node *nd = mnv_graph_node(g, i);
            if (nd->op == MNV_OP_LEAF || nd->op == MNV_OP_VIEW) continue;
            for (int32_t q = start; q < i; q++) /* no source of nd among its group */
                if (mnv_graph_node(g, q)->op != MNV_OP_LEAF && mnv_graph_node(g, q)->op != MNV_OP_VIEW)
                for (int s = 0; s < MNV_MAX_SRC; s++)
                    CHECKF(!nd->src[s] || root(nd->src[s]) != mnv_graph_node(g, q),
                           "barrier plan: node %d reads node %d of its group", i, q);
            left_out += plan[i];
            if (!plan[i]) start = i + 1;
        }
        if (pass) CHECKF(left_out > 0, "barrier plan: no barrier left out (%lld products)", (long long)P);
        mnv_executor_free(x);
        mnv_backend_free(b);
    }
    char what[64];
    snprintf(what, sizeof what, "barrier plan, %lld products, %d threads", (long long)P, threads);
    check(what, got, want, (size_t)N, 1e-6);
    for (int64_t j = 0; j < N; j++) CHECKF(got[j] == want[j], "%s: column %lld differs from one thread's", what, (long long)j);
    free(w), free(sb), free(bias), free(norm), free(got), free(want), free(x0);
}

/* The planner reuses memory: a long chain needs far less than its total. */
static void test_planner_reuse(void) {
    int64_t sh[2] = {16, 256};
    mnv_executor_free(ex); /* a fresh arena: it only ever grows */
    mnv_executor_create(be, &ex);
    begin();
    float *x;
    mnv_array *a = rand_input(2, sh, &x);
    for (int i = 0; i < 50; i++) a = mnv_scale(g, a, 1.01f);
    mnv_set_output(a);
    run();
    size_t one = 16 * 256 * 4;
    CHECKF(mnv_executor_arena_size(ex) <= 3 * one, "arena %zu bytes for a chain of 50 x %zu", mnv_executor_arena_size(ex),
           one);
    float *want = malloc(one);
    for (int i = 0; i < 16 * 256; i++) want[i] = (float)(x[i] * pow(1.01, 50));
    check("scale chain", a->data, want, 16 * 256, 1e-6);
    free(want);
}

static void test_all(int reps) {
    for (int threads = 1; threads <= 3; threads++) {
        mnv_backend_params bp = {.name = "cpu", .n_threads = threads, .fixed_width = 1};
        CHECK(mnv_backend_create(&bp, &be) == MNV_OK);
        mnv_executor_create(be, &ex);
        for (int rep = 0; rep < reps; rep++) {
            test_elementwise();
            test_rms_norm_softmax();
            test_matmul(MNV_DTYPE_F32, 1e-5);
            test_matmul(MNV_DTYPE_F16, 1e-5);
            test_matmul(MNV_DTYPE_BF16, 1e-2);
            test_rope(0);
            test_rope(1);
            test_get_rows_copy();
            test_hadamard();
            test_attention(false, 0);
            test_attention(true, 0);
            test_attention(t_randint(0, 1), t_randint(1, 6));
            test_argmax();
            test_top_cands();
        }
        for (int rep = 0; rep < 2 * reps; rep++) test_moe(threads, rep % 3 == 1, rep % 3 == 2);
        for (int rep = 0; rep < reps; rep++) test_barrier_plan(threads);
        test_planner_reuse();
        mnv_executor_free(ex);
        mnv_backend_free(be);
    }
}

int main(void) {
    t_seed();
    mnv_graph_create(4096, &g);
    /* every level the host has, best first */
    for (int l = MNV_ISA_COUNT - 1; l >= 0; l--) {
        const mnv_isa level = (mnv_isa)l;
        if (!mnv__isa_host(level)) {
            printf("path %-8s not available on this host\n", mnv__isa_name(level));
            continue;
        }
        mnv__isa_set_cap(level);
        const mnv_vec_ops *v = mnv_vec();
        const int before = t_fail;
        test_all(6);
        printf("path %-8s vec %s, attention %s, matmul %s, qmatmul %s: %s\n", mnv__isa_name(level), v->name,
               v->attention ? v->name : "scalar", mnv_cpu_matmul_impl(), mnv_cpu_qmatmul_impl(),
               t_fail == before ? "ok" : "FAILED");
    }
    mnv__isa_set_cap(MNV_ISA_COUNT);
    for (int rep = 0; rep < 30; rep++) test_convert(); /* the attention kernel itself: test_kv_quant */
    /* graph errors surface at the call site and propagate */
    mnv_graph_reset(g);
    int64_t a2[2] = {3, 4}, b2[2] = {5, 6};
    mnv_array *x = mnv_input(g, MNV_DTYPE_F32, 2, a2, "x"), *w = mnv_input(g, MNV_DTYPE_F32, 2, b2, "w");
    CHECK(mnv_matmul(g, x, w) == NULL);
    CHECK(mnv_graph_status(g) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "matmul") != NULL);
    CHECK(mnv_add(g, NULL, x) == NULL);
    mnv_graph_reset(g);
    int64_t v3[3] = {2, 3, 4};
    CHECK(mnv_argmax(g, mnv_input(g, MNV_DTYPE_F32, 3, v3, "x3")) == NULL && strstr(mnv_last_error(), "argmax"));
    mnv_graph_reset(g);
    CHECK(mnv_top_cands(g, mnv_input(g, MNV_DTYPE_F32, 3, v3, "x3")) == NULL && strstr(mnv_last_error(), "top_cands"));
    mnv_graph_free(g);
    return t_done();
}
