/* The CUDA backend against the CPU backend: every graph op at fresh random
 * inputs and shapes (per-dtype tolerances, relative L2 over the output),
 * then the model fixtures end to end (logits against the transformers
 * references the CPU test matches, greedy continuations, decoding token by
 * token against prefill) and an engine's batched requests against each
 * request alone. Without a CUDA build or a device it prints why and exits
 * 77 (CTest reports the test as skipped). */
#include "minerva.h"
#include "backend/backend.h"
#include "backend/cpu/qmatmul.h"
#include "core/topcands.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "quant/kv_quant.h"
#include "test.h"

/* One side of a comparison: a backend, and device copies of the case's
 * data when the backend's memory is its own. */
typedef struct {
    mnv_backend *be;
    mnv_buffer *bufs[32];
    int nb;
} side;

/* A parameter leaf holding host data: in place on the CPU, in a buffer on a device. */
static mnv_array *P(side *s, mnv_graph *g, const void *host, mnv_dtype dt, int nd, const int64_t *shape) {
    if (mnv_backend_host_memory(s->be)) return mnv_param(g, host, dt, nd, shape, "p");
    int64_t ne = 1;
    for (int i = 0; i < nd; i++) ne *= shape[i];
    size_t bytes = (size_t)ne * mnv_dtype_size(dt);
    mnv_buffer *b = NULL;
    if (s->nb == 32 || mnv_buffer_alloc(s->be, bytes ? bytes : 4, &b) != MNV_OK) return NULL;
    s->bufs[s->nb++] = b;
    if (bytes && mnv_buffer_upload(b, 0, host, bytes) != MNV_OK) return NULL;
    return mnv_param(g, mnv_buffer_addr(b), dt, nd, shape, "p");
}

/* A per-step input (uploaded by the executor on a device). */
static mnv_array *I(mnv_graph *g, const void *host, mnv_dtype dt, int nd, const int64_t *shape) {
    mnv_array *a = mnv_input(g, dt, nd, shape, "in");
    if (a) memcpy(mnv_input_data(a), host, (size_t)mnv_array_nelem(a) * mnv_dtype_size(dt));
    return a;
}

typedef mnv_array *(*build_fn)(side *s, mnv_graph *g, void *ud);

/* Build with `build` on one backend, run, and read the output as bytes. */
static void *run_on(mnv_backend *be, build_fn build, void *ud, size_t *bytes) {
    side s = {.be = be};
    mnv_graph *g = NULL;
    mnv_executor *ex = NULL;
    void *out = NULL;
    *bytes = 0;
    if (mnv_graph_create(256, &g) != MNV_OK || mnv_executor_create(be, &ex) != MNV_OK) goto done;
    mnv_array *y = build(&s, g, ud);
    if (!y) {
        CHECKF(0, "%s: build: %s", be->iface->name, mnv_last_error());
        goto done;
    }
    mnv_set_output(y);
    mnv_status st = mnv_executor_run(ex, g);
    CHECKF(st == MNV_OK, "%s: run: %s", be->iface->name, mnv_last_error());
    if (st != MNV_OK) goto done;
    *bytes = (size_t)mnv_array_nelem(y) * mnv_dtype_size(y->dtype);
    out = malloc(*bytes ? *bytes : 1);
    st = mnv_executor_read(ex, y, out, *bytes);
    CHECKF(st == MNV_OK, "%s: read: %s", be->iface->name, mnv_last_error());
done:
    mnv_executor_free(ex);
    mnv_graph_free(g);
    for (int i = 0; i < s.nb; i++) mnv_buffer_free(s.bufs[i]);
    return out;
}

static mnv_backend *cpu, *gpu;
static mnv_backend *gpu_plain; /* no fused launches, attention one block per query */

/* The case on both backends: f32 outputs within tol (relative L2), other
 * outputs (ids) equal. */
static void compare(const char *what, build_fn build, void *ud, double tol, bool exact_ids) {
    size_t nc = 0, ng = 0;
    void *a = run_on(cpu, build, ud, &nc), *b = run_on(gpu, build, ud, &ng);
    if (a && b && nc == ng) {
        if (exact_ids) {
            CHECKF(!memcmp(a, b, nc), "%s: ids differ", what);
        } else {
            double e = t_rel_l2(b, a, nc / 4);
            bool finite = true;
            for (size_t i = 0; i < nc / 4; i++) finite &= isfinite(((float *)b)[i]);
            CHECKF(finite && e <= tol, "%s: rel L2 %.3g > %.1g", what, e, tol);
            if (getenv("MNV_TEST_VERBOSE")) printf("%-40s rel L2 %.3g\n", what, e);
        }
    } else {
        CHECKF(0, "%s: no result to compare", what);
    }
    free(a);
    free(b);
}

/* The same case on the device with and without its fused launches (and
 * split attention): the same bits, as the fused kernels do the same
 * arithmetic in the same order. */
static void same_bits(const char *what, build_fn build, void *ud) {
    size_t na = 0, nb = 0;
    void *a = run_on(gpu, build, ud, &na), *b = run_on(gpu_plain, build, ud, &nb);
    CHECKF(a && b && na == nb && !memcmp(a, b, na), "%s: fused and plain launches differ", what);
    free(a);
    free(b);
}

static float *randv(size_t n, float scale) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = t_randf() * scale;
    return v;
}

/* n floats stored as dt (returned memory is n * size(dt) bytes) */
static void *as_dtype(const float *v, size_t n, mnv_dtype dt) {
    void *o = malloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        if (dt == MNV_DTYPE_F32) ((float *)o)[i] = v[i];
        else if (dt == MNV_DTYPE_F16) ((uint16_t *)o)[i] = mnv_f32_to_f16(v[i]);
        else ((uint16_t *)o)[i] = mnv_f32_to_bf16(v[i]);
    }
    return o;
}

static const mnv_dtype float_types[3] = {MNV_DTYPE_F32, MNV_DTYPE_F16, MNV_DTYPE_BF16};

/* ---- elementwise, row ops, copies ---- */
typedef struct {
    int op;
    int64_t rows, n;
    mnv_dtype bt;
    bool row_b;
    float *a, *b;
    void *bd;
} elem_case;

static mnv_array *build_elem(side *s, mnv_graph *g, void *ud) {
    elem_case *c = ud;
    int64_t sh[2] = {c->rows, c->n}, bsh[2] = {c->row_b ? 1 : c->rows, c->n};
    mnv_array *a = P(s, g, c->a, MNV_DTYPE_F32, 2, sh);
    mnv_array *b = P(s, g, c->bd, c->bt, 2, bsh);
    switch (c->op) {
    case 0: return mnv_add(g, a, b);
    case 1: return mnv_mul(g, a, b);
    case 2: return mnv_silu_mul(g, a, b);
    case 3: return mnv_swiglu_oai(g, a, b, 1.702f, 7.0f);
    case 4: return mnv_scale(g, a, 0.37f);
    case 5: return mnv_silu(g, a);
    case 6: return mnv_gelu(g, a);
    case 7: return mnv_softmax(g, a);
    case 8: return mnv_rms_norm(g, a, NULL, 1e-5f);
    case 9: {
        int64_t n1 = c->n;
        return mnv_rms_norm(g, a, P(s, g, c->b, MNV_DTYPE_F32, 1, &n1), 1e-6f);
    }
    case 10: /* strided copy to a dtype, and back */
        return mnv_cast(g, mnv_cast(g, mnv_transpose(g, a, 0, 1), c->bt), MNV_DTYPE_F32);
    default: return mnv_cast(g, b, MNV_DTYPE_F32);                 /* from a half dtype */
    }
}

static void test_elementwise(void) {
    static const char *names[] = {"add", "mul", "silu_mul", "swiglu_oai", "scale", "silu", "gelu",
                                  "softmax", "rms_norm", "rms_norm(w)", "copy(transpose)", "copy(cast)"};
    for (int op = 0; op < 12; op++)
        for (int ti = 0; ti < 3; ti++) {
            elem_case c = {.op = op, .rows = t_randint(1, 9), .n = t_randint(1, 700), .bt = float_types[ti]};
            /* rms_norm: rows of whole 16-byte chunks (the vector kernel, up to 8192) and longer ones */
            if ((op == 8 || op == 9) && ti == 1) c.n = 4 * t_randint(1, 2048);
            if ((op == 8 || op == 9) && ti == 2) c.n = 8192 + 4 * t_randint(1, 64);
            c.row_b = op < 2 && t_randint(0, 1);
            if (op >= 2 && op != 10) c.bt = op == 11 ? float_types[ti] : MNV_DTYPE_F32;
            size_t na = (size_t)(c.rows * c.n);
            c.a = randv(na, op == 3 ? 10.0f : 4.0f);
            c.b = randv(na, 4.0f);
            c.bd = as_dtype(c.b, na, c.bt);
            char what[64];
            snprintf(what, sizeof what, "%s %s (%lld, %lld)", names[op], mnv_dtype_name(c.bt), (long long)c.rows,
                     (long long)c.n);
            compare(what, build_elem, &c, 1e-5, false);
            free(c.a);
            free(c.b);
            free(c.bd);
            if (op >= 2 && op < 10 && op != 8 && op != 9) break; /* one dtype: b is f32 */
        }
}

/* ---- Hadamard rotation: blocks 8 .. 256, one or several per row ---- */
typedef struct {
    int64_t T, H, D;
    int32_t block;
    float *x;
} hadamard_case;

static mnv_array *build_hadamard(side *s, mnv_graph *g, void *ud) {
    hadamard_case *c = ud;
    int64_t sh[3] = {c->T, c->H, c->D};
    return mnv_hadamard(g, P(s, g, c->x, MNV_DTYPE_F32, 3, sh), c->block);
}

static void test_hadamard(void) {
    for (int i = 0; i < 6; i++) {
        hadamard_case c = {.T = 2 * t_randint(0, 4) + 1, .H = t_randint(1, 5), .block = 8 << i};
        c.D = c.block * (i < 2 ? 5 : t_randint(1, 2)); /* e.g. 80 = 5 x 16 */
        c.x = randv((size_t)(c.T * c.H * c.D), 2.0f);
        char what[64];
        snprintf(what, sizeof what, "hadamard D %lld block %d", (long long)c.D, c.block);
        compare(what, build_hadamard, &c, 1e-5, false);
        free(c.x);
    }
}

/* ---- RoPE and row gathers ---- */
typedef struct {
    int64_t T, H, D;
    int32_t n_rot, trad;
    float af;
    float *x, *inv;
    int32_t *pos;
} rope_case;

static mnv_array *build_rope(side *s, mnv_graph *g, void *ud) {
    rope_case *c = ud;
    int64_t sh[3] = {c->T, c->H, c->D}, nf = c->n_rot / 2;
    return mnv_rope(g, P(s, g, c->x, MNV_DTYPE_F32, 3, sh), I(g, c->pos, MNV_DTYPE_I32, 1, &c->T),
                    P(s, g, c->inv, MNV_DTYPE_F32, 1, &nf), c->n_rot, c->trad, c->af);
}

static void test_rope(void) {
    for (int i = 0; i < 4; i++) {
        rope_case c = {.T = t_randint(1, 7), .H = t_randint(1, 5), .D = i < 2 ? 64 : 128, .trad = i & 1,
                       .af = i == 3 ? 1.35f : 1.0f};
        c.n_rot = i == 2 ? 32 : (int32_t)c.D;
        c.x = randv((size_t)(c.T * c.H * c.D), 2.0f);
        c.inv = malloc(sizeof(float) * (size_t)(c.n_rot / 2));
        for (int j = 0; j < c.n_rot / 2; j++) c.inv[j] = powf(10000.0f, -2.0f * j / c.n_rot);
        c.pos = malloc(sizeof(int32_t) * (size_t)c.T);
        for (int j = 0; j < c.T; j++) c.pos[j] = t_randint(0, 8000);
        char what[64];
        snprintf(what, sizeof what, "rope D %lld n_rot %d trad %d", (long long)c.D, c.n_rot, c.trad);
        compare(what, build_rope, &c, 1e-5, false);
        free(c.x);
        free(c.inv);
        free(c.pos);
    }
}

typedef struct {
    int64_t V, D, T;
    mnv_dtype dt;
    void *table;
    int32_t *ids;
    /* quantized */
    mnv_qformat fmt;
    uint32_t *packed;
    void *scales, *biases;
} rows_case;

static mnv_array *build_get_rows(side *s, mnv_graph *g, void *ud) {
    rows_case *c = ud;
    int64_t sh[2] = {c->V, c->D};
    return mnv_get_rows(g, P(s, g, c->table, c->dt, 2, sh), I(g, c->ids, MNV_DTYPE_I32, 1, &c->T));
}

static void test_get_rows(void) {
    for (int ti = 0; ti < 3; ti++) {
        rows_case c = {.V = t_randint(2, 60), .D = t_randint(1, 300), .T = t_randint(1, 9), .dt = float_types[ti]};
        float *v = randv((size_t)(c.V * c.D), 1.0f);
        c.table = as_dtype(v, (size_t)(c.V * c.D), c.dt);
        c.ids = malloc(sizeof(int32_t) * (size_t)c.T);
        for (int i = 0; i < c.T; i++) c.ids[i] = t_randint(0, (int)c.V - 1);
        char what[64];
        snprintf(what, sizeof what, "get_rows %s", mnv_dtype_name(c.dt));
        compare(what, build_get_rows, &c, 0, false);
        free(v);
        free(c.table);
        free(c.ids);
    }
}

/* Argmax of logits rows (what greedy requests bring back instead of rows):
 * rows as wide as a vocabulary and narrow ones, with NaN, +inf, -inf, ties
 * of the maximum and rows of nothing but NaN and -inf; the ids equal. */
typedef struct {
    int64_t R, N;
    float *x;
} argmax_case;

static mnv_array *build_argmax(side *s, mnv_graph *g, void *ud) {
    argmax_case *c = ud;
    int64_t sh[2] = {c->R, c->N};
    return mnv_argmax(g, P(s, g, c->x, MNV_DTYPE_F32, 2, sh));
}

static void test_argmax(void) {
    for (int i = 0; i < 8; i++) {
        argmax_case c = {.R = t_randint(1, 9), .N = i < 2 ? 201088 : t_randint(1, 5000)};
        c.x = randv((size_t)(c.R * c.N), 4.0f);
        for (int64_t r = 0; r < c.R; r++) {
            float *row = c.x + r * c.N;
            const int kind = (int)(r % 6);
            if (kind == 1) row[t_randint(0, (int)c.N - 1)] = NAN;
            if (kind == 2) row[t_randint(0, (int)c.N - 1)] = INFINITY, row[t_randint(0, (int)c.N - 1)] = INFINITY;
            if (kind == 3) row[t_randint(0, (int)c.N - 1)] = row[t_randint(0, (int)c.N - 1)] = 9.0f;
            if (kind == 4) row[0] = NAN;
            if (kind == 5)
                for (int64_t j = 0; j < c.N; j++) row[j] = j % 3 ? -INFINITY : NAN;
        }
        char what[64];
        snprintf(what, sizeof what, "argmax %lld x %lld", (long long)c.R, (long long)c.N);
        compare(what, build_argmax, &c, 0, true);
        free(c.x);
    }
}

/* Sampling candidates (core/topcands.h) of rows as wide as a vocabulary and
 * narrow ones (some shorter than K), with the argmax cases' NaN, infinities
 * and ties, and rows of few distinct values (ties across the K-th place):
 * values and indices the same bits as the CPU's, the log sum within 1e-5. */
static mnv_array *build_top_cands(side *s, mnv_graph *g, void *ud) {
    argmax_case *c = ud;
    int64_t sh[2] = {c->R, c->N};
    return mnv_top_cands(g, P(s, g, c->x, MNV_DTYPE_F32, 2, sh));
}

static void test_top_cands(void) {
    const int K = MNV_TOP_CANDS;
    for (int i = 0; i < 10; i++) {
        argmax_case c = {.R = t_randint(1, 9), .N = i < 2 ? 201088 : i < 4 ? t_randint(1, 300) : t_randint(1, 50000)};
        c.x = randv((size_t)(c.R * c.N), 4.0f);
        for (int64_t r = 0; r < c.R; r++) {
            float *row = c.x + r * c.N;
            const int kind = (int)((r + i) % 7);
            if (kind == 1) row[t_randint(0, (int)c.N - 1)] = NAN;
            if (kind == 2) row[t_randint(0, (int)c.N - 1)] = INFINITY, row[t_randint(0, (int)c.N - 1)] = INFINITY;
            if (kind == 3) row[t_randint(0, (int)c.N - 1)] = row[t_randint(0, (int)c.N - 1)] = 9.0f;
            if (kind == 4) row[0] = NAN, row[c.N - 1] = -0.0f;
            if (kind == 5)
                for (int64_t j = 0; j < c.N; j++) row[j] = j % 3 ? -INFINITY : NAN;
            if (kind == 6)
                for (int64_t j = 0; j < c.N; j++) row[j] = (float)t_randint(-2, 2) * 0.5f;
        }
        size_t na = 0, nb = 0;
        float *a = run_on(cpu, build_top_cands, &c, &na), *b = run_on(gpu, build_top_cands, &c, &nb);
        bool ok = a && b && na == nb && na == (size_t)c.R * MNV_TOP_CANDS_ROW * 4;
        for (int64_t r = 0; ok && r < c.R; r++) {
            const float *ra = a + r * MNV_TOP_CANDS_ROW, *rb = b + r * MNV_TOP_CANDS_ROW;
            ok = !memcmp(ra, rb, 2 * (size_t)K * 4) &&
                 (ra[2 * K] == rb[2 * K] || fabsf(ra[2 * K] - rb[2 * K]) <= 1e-5f * fmaxf(1.0f, fabsf(ra[2 * K])));
        }
        CHECKF(ok, "top_cands %lld x %lld: the device's candidates differ", (long long)c.R, (long long)c.N);
        free(a);
        free(b);
        free(c.x);
    }
}

/* ---- quantized weights ---- */
/* The formats the models use (and the rest MLX defines). */
static const mnv_qformat qformats[] = {
    {MNV_QMODE_AFFINE, 4, 64, MNV_DTYPE_BF16}, {MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_F16},
    {MNV_QMODE_AFFINE, 2, 32, MNV_DTYPE_F32},  {MNV_QMODE_AFFINE, 3, 64, MNV_DTYPE_BF16},
    {MNV_QMODE_AFFINE, 5, 32, MNV_DTYPE_F16},  {MNV_QMODE_AFFINE, 6, 128, MNV_DTYPE_BF16},
    {MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8},    {MNV_QMODE_MXFP8, 8, 32, MNV_DTYPE_U8},
    {MNV_QMODE_NVFP4, 4, 16, MNV_DTYPE_U8},
};
#define N_QFORMATS (int)(sizeof qformats / sizeof qformats[0])

/* A random (rows, k) matrix quantized in fmt (allocations in *c). */
static void quantize(rows_case *c, int64_t rows, int64_t k) {
    int64_t words = mnv_qformat_row_words(&c->fmt, k), groups = mnv_qformat_row_groups(&c->fmt, k);
    size_t ses = mnv_dtype_size(c->fmt.scale_dtype);
    c->packed = malloc(sizeof(uint32_t) * (size_t)(rows * words));
    c->scales = malloc(ses * (size_t)(rows * groups));
    c->biases = malloc(ses * (size_t)(rows * groups));
    float *w = randv((size_t)k, 1.0f);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < k; j++) w[j] = t_randf() * 0.5f;
        mnv_quantize_row(&c->fmt, w, k, c->packed + r * words, (uint8_t *)c->scales + (size_t)(r * groups) * ses,
                         (uint8_t *)c->biases + (size_t)(r * groups) * ses, 1.0f);
    }
    free(w);
}

static void quant_leaves(side *s, mnv_graph *g, rows_case *c, int64_t rows, int64_t k, mnv_array **w, mnv_array **sc,
                         mnv_array **bi) {
    int64_t ws[2] = {rows, mnv_qformat_row_words(&c->fmt, k)}, ss[2] = {rows, mnv_qformat_row_groups(&c->fmt, k)};
    *w = P(s, g, c->packed, MNV_DTYPE_U32, 2, ws);
    *sc = P(s, g, c->scales, c->fmt.scale_dtype, 2, ss);
    *bi = c->fmt.mode == MNV_QMODE_AFFINE ? P(s, g, c->biases, c->fmt.scale_dtype, 2, ss) : NULL;
}

static mnv_array *build_qget_rows(side *s, mnv_graph *g, void *ud) {
    rows_case *c = ud;
    mnv_array *w, *sc, *bi;
    quant_leaves(s, g, c, c->V, c->D, &w, &sc, &bi);
    return mnv_qget_rows(g, w, sc, bi, &c->fmt, c->D, I(g, c->ids, MNV_DTYPE_I32, 1, &c->T));
}

static void test_qget_rows(void) {
    for (int f = 0; f < N_QFORMATS; f++) {
        rows_case c = {.V = t_randint(2, 40), .D = 128 * t_randint(1, 3), .T = t_randint(1, 9), .fmt = qformats[f]};
        quantize(&c, c.V, c.D);
        c.ids = malloc(sizeof(int32_t) * (size_t)c.T);
        for (int i = 0; i < c.T; i++) c.ids[i] = t_randint(0, (int)c.V - 1);
        char what[64];
        snprintf(what, sizeof what, "qget_rows %s %d/%d", mnv_qmode_name(c.fmt.mode), c.fmt.bits, c.fmt.group_size);
        compare(what, build_qget_rows, &c, 1e-6, false);
        free(c.packed);
        free(c.scales);
        free(c.biases);
        free(c.ids);
    }
}

/* ---- products ---- */
typedef struct {
    int64_t m, n, k, ldw;
    mnv_dtype wt;
    float *x;       /* m * k floats (unaligned: 1 + m * k, x being the view at x + 1) */
    bool unaligned; /* x 4 bytes past a 16-byte boundary: no chunked product, no fused launch */
    void *w;
    rows_case q; /* quantized when q.fmt.mode != NONE */
} mm_case;

/* x (m, k) of a case: a leaf, or a view one float into one. */
static mnv_array *x_leaf(side *s, mnv_graph *g, const float *x, int64_t m, int64_t k, bool unaligned) {
    int64_t xs[2] = {m, k}, all = 1 + m * k, st[2] = {k, 1};
    if (!unaligned) return P(s, g, x, MNV_DTYPE_F32, 2, xs);
    return mnv_view(g, P(s, g, x, MNV_DTYPE_F32, 1, &all), 2, xs, st, 1);
}

static mnv_array *build_matmul(side *s, mnv_graph *g, void *ud) {
    mm_case *c = ud;
    mnv_array *x = x_leaf(s, g, c->x, c->m, c->k, c->unaligned);
    if (c->q.fmt.mode != MNV_QMODE_NONE) {
        mnv_array *w, *sc, *bi;
        quant_leaves(s, g, &c->q, c->n, c->k, &w, &sc, &bi);
        return mnv_qmatmul(g, x, w, sc, bi, &c->q.fmt, c->k);
    }
    int64_t all[2] = {c->n, c->ldw}, ws[2] = {c->n, c->k}, st[2] = {c->ldw, 1};
    mnv_array *w = P(s, g, c->w, c->wt, 2, all);
    return mnv_matmul(g, x, c->ldw == c->k ? w : mnv_view(g, w, 2, ws, st, c->ldw - c->k));
}

static void test_matmul(void) {
    static const int64_t ms[] = {1, 3, 6, 33, 130};
    /* the CPU may round activations to bf16 for bf16 weights (AVX-512 BF16): 2^-9 per product */
    static const double tol[3] = {1e-5, 1e-5, 4e-3};
    for (int ti = 0; ti < 3; ti++)
        for (int mi = 0; mi < 5; mi++) {
            mm_case c = {.m = ms[mi], .n = t_randint(1, 80), .k = t_randint(1, 300), .wt = float_types[ti]};
            c.ldw = c.k + (mi == 2 ? t_randint(1, 9) : 0);
            c.x = randv((size_t)(c.m * c.k), 1.0f);
            float *w = randv((size_t)(c.n * c.ldw), 1.0f);
            c.w = as_dtype(w, (size_t)(c.n * c.ldw), c.wt);
            char what[80];
            snprintf(what, sizeof what, "matmul %s m %lld n %lld k %lld", mnv_dtype_name(c.wt), (long long)c.m,
                     (long long)c.n, (long long)c.k);
            compare(what, build_matmul, &c, tol[ti], false);
            free(c.x);
            free(w);
            free(c.w);
        }
    for (int f = 0; f < N_QFORMATS; f++)
        for (int mi = 0; mi < 5; mi += 2) {
            mm_case c = {.m = ms[mi], .n = t_randint(1, 70), .k = 128 * t_randint(1, 4)};
            c.q.fmt = qformats[f];
            quantize(&c.q, c.n, c.k);
            c.x = randv((size_t)(c.m * c.k), 1.0f);
            char what[80];
            snprintf(what, sizeof what, "qmatmul %s %d/%d m %lld", mnv_qmode_name(c.q.fmt.mode), c.q.fmt.bits,
                     c.q.fmt.group_size, (long long)c.m);
            compare(what, build_matmul, &c, 1e-5, false);
            free(c.x);
            free(c.q.packed);
            free(c.q.scales);
            free(c.q.biases);
        }
}

/* A product, its bias add and the residual add: one launch on the device. */
typedef struct {
    mm_case mm;
    float *bias, *res;
    void *bias_bt; /* bias as bt */
    mnv_dtype bt;
    bool with_bias, with_res, res_first;
} fused_case;

static mnv_array *build_fused_product(side *s, mnv_graph *g, void *ud) {
    fused_case *c = ud;
    mnv_array *y = build_matmul(s, g, &c->mm);
    if (c->with_bias) y = mnv_add(g, y, P(s, g, c->bias_bt, c->bt, 1, &c->mm.n));
    if (c->with_res) {
        int64_t rs[2] = {c->mm.m, c->mm.n};
        mnv_array *r = P(s, g, c->res, MNV_DTYPE_F32, 2, rs);
        y = c->res_first ? mnv_add(g, r, y) : mnv_add(g, y, r);
    }
    return y;
}

/* A product case's weights (float weights of dtype wt when unquantized; k
 * rounded up to the group), x (one float more, for an unaligned view), bias
 * and residual; run on both backends and fused against plain, then freed. */
static void run_fused_case(fused_case *c, mnv_dtype wt, const char *label) {
    float *w = NULL;
    if (c->mm.q.fmt.mode != MNV_QMODE_NONE) {
        const int64_t G = c->mm.q.fmt.group_size;
        if (c->mm.k % G) c->mm.k += G - c->mm.k % G;
        quantize(&c->mm.q, c->mm.n, c->mm.k);
    } else {
        c->mm.wt = wt;
        c->mm.ldw = c->mm.k;
        w = randv((size_t)(c->mm.n * c->mm.k), 1.0f);
        c->mm.w = as_dtype(w, (size_t)(c->mm.n * c->mm.k), c->mm.wt);
    }
    c->mm.x = randv((size_t)(1 + c->mm.m * c->mm.k), 1.0f);
    c->bias = randv((size_t)c->mm.n, 1.0f);
    c->bias_bt = as_dtype(c->bias, (size_t)c->mm.n, c->bt);
    c->res = randv((size_t)(c->mm.m * c->mm.n), 1.0f);
    char what[128];
    snprintf(what, sizeof what, "%s %s %d m %lld n %lld k %lld bias %d res %d%s", label,
             c->mm.q.fmt.mode ? mnv_qmode_name(c->mm.q.fmt.mode) : mnv_dtype_name(c->mm.wt), c->mm.q.fmt.bits,
             (long long)c->mm.m, (long long)c->mm.n, (long long)c->mm.k, c->with_bias, c->with_res,
             c->mm.unaligned ? " x unaligned" : "");
    compare(what, build_fused_product, c, c->mm.wt == MNV_DTYPE_BF16 ? 4e-3 : 1e-5, false);
    same_bits(what, build_fused_product, c);
    free(c->mm.x);
    free(w);
    free(c->mm.w);
    free(c->mm.q.packed);
    free(c->mm.q.scales);
    free(c->mm.q.biases);
    free(c->bias);
    free(c->bias_bt);
    free(c->res);
}

static void test_fused_products(void) {
    static const mnv_qformat fmts[] = {
        {MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_BF16}, {MNV_QMODE_AFFINE, 4, 64, MNV_DTYPE_F16},
        {MNV_QMODE_AFFINE, 4, 32, MNV_DTYPE_F32},  {MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8},
        {MNV_QMODE_NONE, 0, 0, MNV_DTYPE_F32},
    };
    for (int i = 0; i < 10; i++) {
        fused_case c = {.with_bias = i % 3 != 2, .with_res = i % 3 != 1, .res_first = i % 2, .bt = float_types[i % 3]};
        c.mm.m = i < 5 ? 1 : t_randint(2, 12);
        c.mm.n = t_randint(1, 300);
        c.mm.k = 64 * t_randint(1, 12);
        c.mm.q.fmt = fmts[i % 5];
        run_fused_case(&c, float_types[i % 3], "fused product");
    }
}

/* Products whose rows are long enough for 2 and 4 warps a row group
 * (cuda_matmul.cu's mmv_wk: 96 and 192 chunks of 16 bytes a row) and more
 * rows than one group, a partial last block, 1, 3 and 7 rows of x (the
 * kernels' 1, 4 and 8 rows a tile), with bias and residual epilogues; and
 * the same products with x unaligned (the element-wise kernel and unfused
 * adds). */
static void test_wide_products(void) {
    static const struct {
        mnv_qformat fmt;
        mnv_dtype wt;
        int64_t epc; /* elements in 16 bytes */
    } lay[6] = {
        {{MNV_QMODE_NONE, 0, 0, MNV_DTYPE_F32}, MNV_DTYPE_F32, 4},
        {{MNV_QMODE_NONE, 0, 0, MNV_DTYPE_F32}, MNV_DTYPE_F16, 8},
        {{MNV_QMODE_NONE, 0, 0, MNV_DTYPE_F32}, MNV_DTYPE_BF16, 8},
        {{MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_F16}, MNV_DTYPE_F32, 16},
        {{MNV_QMODE_AFFINE, 4, 64, MNV_DTYPE_BF16}, MNV_DTYPE_F32, 32},
        {{MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8}, MNV_DTYPE_F32, 32},
    };
    static const int64_t ms[3] = {1, 3, 7};
    for (int i = 0; i < 14; i++) {
        const int l = i < 12 ? i % 6 : i == 12 ? 3 : 2; /* unaligned x: 8-bit affine, bf16 */
        fused_case c = {.with_bias = i % 3 != 2, .with_res = i % 3 != 1, .res_first = i % 2, .bt = float_types[i % 3]};
        c.mm.m = ms[i % 3];
        c.mm.n = t_randint(65, 150);
        c.mm.k = lay[l].epc * (i < 6 ? 96 + 2 * t_randint(0, 20) : 192 + 2 * t_randint(0, 20)); /* 2, then 4 warps */
        c.mm.unaligned = i >= 12;
        c.mm.q.fmt = lay[l].fmt;
        run_fused_case(&c, lay[l].wt, "wide product");
    }
}

/* Three products of one input (q, k and v), some with a bias add: one
 * launch on the device; their sum is the output. */
typedef struct {
    fused_case part[3];
} shared_case;

static mnv_array *build_shared_products(side *s, mnv_graph *g, void *ud) {
    shared_case *c = ud;
    int64_t xs[2] = {c->part[0].mm.m, c->part[0].mm.k};
    mnv_array *x = P(s, g, c->part[0].mm.x, MNV_DTYPE_F32, 2, xs), *y[3];
    for (int i = 0; i < 3; i++) {
        mm_case *m = &c->part[i].mm;
        mnv_array *w, *sc, *bi;
        quant_leaves(s, g, &m->q, m->n, m->k, &w, &sc, &bi);
        y[i] = mnv_qmatmul(g, x, w, sc, bi, &m->q.fmt, m->k);
        if (c->part[i].with_bias) y[i] = mnv_add(g, y[i], P(s, g, c->part[i].bias, MNV_DTYPE_F32, 1, &m->n));
    }
    int64_t nmin = MNV_MIN(MNV_MIN(c->part[0].mm.n, c->part[1].mm.n), c->part[2].mm.n);
    for (int i = 0; i < 3; i++) { /* the outputs' first nmin columns */
        int64_t sh[2] = {c->part[i].mm.m, nmin}, st[2] = {c->part[i].mm.n, 1};
        y[i] = mnv_view(g, y[i], 2, sh, st, 0);
    }
    return mnv_add(g, mnv_add(g, y[0], y[1]), y[2]);
}

/* q, k and v of one x (m rows of k) in fmt: n rows each (v at most vmax),
 * some with a bias; both backends, and fused against plain. */
static void run_shared_case(const char *label, int64_t m, int64_t k, const mnv_qformat *fmt, int64_t vmax, int i) {
    shared_case c;
    memset(&c, 0, sizeof c);
    float *x = randv((size_t)(m * k), 1.0f);
    for (int p = 0; p < 3; p++) {
        fused_case *f = &c.part[p];
        int64_t n = p == 0 ? t_randint(300, 1200) : p == 2 ? t_randint(1, (int)vmax) : t_randint(1, 200);
        f->mm = (mm_case){.m = m, .n = n, .k = k, .x = x};
        f->mm.q.fmt = *fmt;
        quantize(&f->mm.q, n, k);
        f->with_bias = (i + p) % 3 != 0;
        f->bias = randv((size_t)n, 1.0f);
    }
    char what[112];
    snprintf(what, sizeof what, "%s %s %d m %lld n %lld/%lld/%lld k %lld", label, mnv_qmode_name(fmt->mode), fmt->bits,
             (long long)m, (long long)c.part[0].mm.n, (long long)c.part[1].mm.n, (long long)c.part[2].mm.n,
             (long long)k);
    compare(what, build_shared_products, &c, 1e-5, false);
    same_bits(what, build_shared_products, &c);
    for (int p = 0; p < 3; p++) {
        free(c.part[p].mm.q.packed);
        free(c.part[p].mm.q.scales);
        free(c.part[p].mm.q.biases);
        free(c.part[p].bias);
    }
    free(x);
}

static void test_shared_products(void) {
    static const mnv_qformat fmts[] = {{MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_BF16},
                                       {MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8}};
    for (int i = 0; i < 6; i++) {
        /* q, k and v sizes: rows of their own (the first many, the others few); from 4 on, rows of
         * 128 chunks: segments of 2 warps a row group (q) beside one of 1 (v: up to 64 rows) */
        int64_t m = i < 2 || i == 4 ? 1 : t_randint(2, 9), k = i < 4 ? 64 * t_randint(1, 8) : i == 4 ? 2048 : 4096;
        run_shared_case("shared-input products", m, k, &fmts[i % 2], i >= 4 ? 64 : 200, i);
    }
}

/* ---- paged attention after cache writes ---- */
typedef struct {
    int64_t S, NB, B, Hkv, H, D, W, T;
    int32_t window;
    bool sinks;
    mnv_dtype dt, vdt;
    void *pool;           /* K: NB blocks of K rows, each followed by a block's room (a pool of two layers) */
    void *vpool;          /* V: NB blocks, contiguous, of dtype vdt */
    int32_t *tables, *seq, *pos, *slot;
    float *q, *k, *v, *sink, *inv_freq;
    bool rope;
} attn_case;

static mnv_array *build_attention(side *s, mnv_graph *g, void *ud) {
    attn_case *c = ud;
    int64_t row = c->Hkv * c->D, blk = c->B * row, total = c->NB * 2 * blk;
    mnv_array *pool = P(s, g, c->pool, c->dt, 1, &total);
    int64_t sh[4] = {c->NB, c->B, c->Hkv, c->D}, st[4] = {2 * blk, row, c->D, 1};
    mnv_array *kc = mnv_view(g, pool, 4, sh, st, c->NB % 2 ? blk : 0), *vc = P(s, g, c->vpool, c->vdt, 4, sh);
    int64_t qs[3] = {c->T, c->H, c->D}, ks[3] = {c->T, c->Hkv, c->D}, ts[2] = {c->S, c->W};
    mnv_array *slot = I(g, c->slot, MNV_DTYPE_I32, 1, &c->T), *pos = I(g, c->pos, MNV_DTYPE_I32, 1, &c->T);
    mnv_array *q = P(s, g, c->q, MNV_DTYPE_F32, 3, qs), *k = P(s, g, c->k, MNV_DTYPE_F32, 3, ks);
    if (c->rope) { /* as a model's layer orders them: RoPE of q and k, then the cache writes */
        int64_t half = c->D / 2;
        mnv_array *inv = P(s, g, c->inv_freq, MNV_DTYPE_F32, 1, &half);
        q = mnv_rope(g, q, pos, inv, (int32_t)c->D, 0, 1.0f);
        k = mnv_rope(g, k, pos, inv, (int32_t)c->D, 0, 1.0f);
    }
    kc = mnv_cache_write(g, kc, k, slot);
    vc = mnv_cache_write(g, vc, P(s, g, c->v, MNV_DTYPE_F32, 3, ks), slot);
    return mnv_attention(g, q, kc, vc, I(g, c->tables, MNV_DTYPE_I32, 2, ts),
                         I(g, c->seq, MNV_DTYPE_I32, 1, &c->T), pos,
                         c->sinks ? P(s, g, c->sink, MNV_DTYPE_F32, 1, &c->H) : NULL, 1.0f / sqrtf((float)c->D),
                         c->window);
}

/* c's pool, tables, positions and inputs for its S sequences of len[s]
 * tokens, the last nnew[s] of them new this step (c's S, B, Hkv, H, D, dt
 * and vdt set). */
static void attn_fill(attn_case *c, const int32_t *len, const int32_t *nnew) {
    c->W = 0;
    c->T = 0;
    for (int s = 0; s < c->S; s++) {
        c->W = MNV_MAX(c->W, (len[s] + c->B - 1) / c->B);
        c->T += nnew[s];
    }
    c->NB = c->S * c->W + 2;
    int64_t row = c->Hkv * c->D, total = c->NB * 2 * c->B * row;
    float *pool = randv((size_t)total, 1.0f);
    c->pool = as_dtype(pool, (size_t)total, c->dt);
    c->vpool = as_dtype(pool, (size_t)total / 2, c->vdt);
    free(pool);
    c->tables = calloc((size_t)(c->S * c->W), sizeof(int32_t));
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)c->NB);
    for (int b = 0; b < c->NB; b++) perm[b] = b;
    for (int b = (int)c->NB - 1; b > 0; b--) {
        int j = t_randint(0, b), tmp = perm[b];
        perm[b] = perm[j];
        perm[j] = tmp;
    }
    for (int s = 0, next = 0; s < c->S; s++)
        for (int b = 0; b < (len[s] + c->B - 1) / c->B; b++) c->tables[s * c->W + b] = perm[next++];
    free(perm);
    c->seq = malloc(sizeof(int32_t) * (size_t)c->T);
    c->pos = malloc(sizeof(int32_t) * (size_t)c->T);
    c->slot = malloc(sizeof(int32_t) * (size_t)c->T);
    for (int s = 0, t = 0; s < c->S; s++)
        for (int j = 0; j < nnew[s]; j++, t++) {
            c->seq[t] = s;
            c->pos[t] = len[s] - nnew[s] + j;
            c->slot[t] = c->tables[s * c->W + c->pos[t] / c->B] * (int32_t)c->B + c->pos[t] % (int32_t)c->B;
        }
    c->q = randv((size_t)(c->T * c->H * c->D), 1.0f);
    c->k = randv((size_t)(c->T * row), 1.0f);
    c->v = randv((size_t)(c->T * row), 1.0f);
    c->sink = randv((size_t)c->H, 2.0f);
    c->inv_freq = malloc(sizeof(float) * (size_t)(c->D / 2));
    for (int64_t d = 0; d < c->D / 2; d++) c->inv_freq[d] = powf(10000.0f, -2.0f * (float)d / (float)c->D);
}

static void attn_free(attn_case *c) {
    free(c->pool);
    free(c->vpool);
    free(c->tables);
    free(c->seq);
    free(c->pos);
    free(c->slot);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->sink);
    free(c->inv_freq);
}

static void test_attention(void) {
    for (int i = 0; i < 23; i++) {
        /* from 12 on: contexts of several chunks of keys (split over blocks
         * in decode), windows longer than a chunk; 16 and 17: heads of 8
         * values a lane (256, and 160 with lanes past the head); 18 to 21:
         * prefill chunks of one to three sequences, enough queries for the
         * tensor-core kernel, tiles of queries across sequences; 22: more
         * (query, head) blocks than the split kernel's counts (its chunks
         * merged by the second kernel: groups of 2 heads, a block a head),
         * heads of 32 off the tensor cores */
        bool many = i == 22, longer = i >= 12 && !many, prefill = i >= 18 && !many;
        attn_case c = {.S = many ? 1 : t_randint(1, 3), .B = i % 2 || longer || many ? 16 : t_randint(1, 5),
                       .Hkv = many ? 32 : t_randint(1, 3),
                       .D = many ? 32 : i == 16 ? 256 : i == 17 ? 160 : i % 3 == 0 ? 128 : i == 13 ? 80 : 64,
                       .dt = float_types[i % 3], .sinks = i % 4 >= 2,
                       .window = i % 5 == 4 ? t_randint(1, 12) : i == 14 ? t_randint(200, 700) : 0};
        /* groups of 8 heads a KV head now and then (a block takes them together) */
        c.H = many ? 64 : c.Hkv * (i % 4 == 1 ? 8 : t_randint(1, 4));
        int32_t len[3], nnew[3];
        for (int s = 0; s < c.S; s++) {
            len[s] = many ? t_randint(300, 600) : prefill ? t_randint(40, 700) : longer ? t_randint(200, 1300) : t_randint(1, 70);
            /* drawn once: MNV_MIN evaluates twice */
            const int32_t draw = many ? t_randint(270, 300) : prefill ? t_randint(40, 200) : t_randint(1, 5);
            nnew[s] = MNV_MIN(len[s], draw);
        }
        c.vdt = float_types[(i + i / 3) % 3]; /* K and V of one type, and of two */
        attn_fill(&c, len, nnew);
        c.rope = i % 2 == 0;
        char what[128];
        snprintf(what, sizeof what, "attention %s/%s H %lld/%lld D %lld B %lld win %d sinks %d S %lld T %lld W %lld",
                 mnv_dtype_name(c.dt), mnv_dtype_name(c.vdt), (long long)c.H, (long long)c.Hkv, (long long)c.D,
                 (long long)c.B, c.window, c.sinks, (long long)c.S, (long long)c.T, (long long)c.W);
        compare(what, build_attention, &c, 1e-5, false);
        same_bits(what, build_attention, &c);
        attn_free(&c);
    }
}

/* A query's result does not depend on the batch it decodes in: 64
 * sequences of one new token (a KV group's heads a block: 8, or 4 with
 * groups of 4) against the first sequence alone (a head a block), split
 * over blocks and one block a query. */
static void test_attention_groups(void) {
    static const struct {
        int64_t Hkv, D;
        int32_t window;
    } cfg[] = {{8, 64, 0}, {8, 128, 0}, {16, 64, 128}};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        attn_case c = {.S = 64, .B = 16, .Hkv = cfg[i].Hkv, .H = 64, .D = cfg[i].D, .dt = MNV_DTYPE_BF16,
                       .vdt = MNV_DTYPE_BF16, .sinks = true, .window = cfg[i].window};
        int32_t len[64], nnew[64];
        for (int s = 0; s < c.S; s++) len[s] = t_randint(1, 700), nnew[s] = 1;
        attn_fill(&c, len, nnew);
        c.rope = true;
        char what[128];
        snprintf(what, sizeof what, "attention groups H %lld/%lld D %lld win %d S 64", (long long)c.H,
                 (long long)c.Hkv, (long long)c.D, c.window);
        compare(what, build_attention, &c, 1e-5, false);
        attn_case one = c; /* the first sequence: its table row, token and inputs come first */
        one.S = 1;
        one.T = 1;
        mnv_backend *sides[2] = {gpu, gpu_plain};
        for (int b = 0; b < 2; b++) {
            size_t na = 0, n1 = 0;
            float *all = run_on(sides[b], build_attention, &c, &na), *first = run_on(sides[b], build_attention, &one, &n1);
            CHECKF(all && first && n1 == (size_t)(c.H * c.D) * sizeof(float) && na >= n1 && !memcmp(all, first, n1),
                   "%s (%s): the first sequence alone differs from it among 64", what, b ? "one block a query" : "split");
            free(all);
            free(first);
        }
        attn_free(&c);
    }
}

/* ---- quantized caches (Q8, Q4): cache writes and attention ---- */
typedef struct {
    int64_t NB, B, Hkv, H, D, T;
    mnv_kv_layout lk, lv;
    uint8_t *kpool, *vpool; /* NB blocks of B token rows of Hkv head rows */
    int32_t *pos, *slot, *seq, *tables;
    float *q, *k, *v;
    int32_t window;
} qattn_case;

static mnv_array *kv_leaf(side *s, mnv_graph *g, const qattn_case *c, const mnv_kv_layout *l, const uint8_t *pool,
                          const char *name) {
    int64_t bs = c->B * c->Hkv * l->row_bytes, bytes = c->NB * bs;
    void *data = (void *)pool;
    if (!mnv_backend_host_memory(s->be)) {
        mnv_buffer *b = NULL;
        if (s->nb == 32 || mnv_buffer_alloc(s->be, (size_t)bytes, &b) != MNV_OK) return NULL;
        s->bufs[s->nb++] = b;
        if (mnv_buffer_upload(b, 0, pool, (size_t)bytes) != MNV_OK) return NULL;
        data = mnv_buffer_addr(b);
    }
    return mnv_kv_param(g, data, l, c->NB, c->B, c->Hkv, bs, name);
}

static mnv_array *build_qattention(side *s, mnv_graph *g, void *ud) {
    qattn_case *c = ud;
    int64_t qs[3] = {c->T, c->H, c->D}, ks[3] = {c->T, c->Hkv, c->D}, ts[2] = {1, c->NB};
    mnv_array *slot = I(g, c->slot, MNV_DTYPE_I32, 1, &c->T);
    mnv_array *kc = mnv_cache_write(g, kv_leaf(s, g, c, &c->lk, c->kpool, "k"), P(s, g, c->k, MNV_DTYPE_F32, 3, ks), slot);
    mnv_array *vc = mnv_cache_write(g, kv_leaf(s, g, c, &c->lv, c->vpool, "v"), P(s, g, c->v, MNV_DTYPE_F32, 3, ks), slot);
    return mnv_attention(g, P(s, g, c->q, MNV_DTYPE_F32, 3, qs), kc, vc, I(g, c->tables, MNV_DTYPE_I32, 2, ts),
                         I(g, c->seq, MNV_DTYPE_I32, 1, &c->T), I(g, c->pos, MNV_DTYPE_I32, 1, &c->T), NULL,
                         1.0f / sqrtf((float)c->D), c->window);
}

static void test_attention_quant(void) {
    static const mnv_kv_type kt[4] = {MNV_KV_Q8, MNV_KV_Q4, MNV_KV_Q8, MNV_KV_F16};
    static const mnv_kv_type vt[4] = {MNV_KV_Q8, MNV_KV_Q4, MNV_KV_Q4, MNV_KV_Q8};
    for (int i = 0; i < 10; i++) { /* 8 and 9: prefill chunks (the tensor-core kernel) */
        qattn_case c = {.B = 16, .Hkv = t_randint(1, 2), .D = i == 6 ? 80 : i % 2 ? 64 : 128,
                        .T = i >= 8 ? t_randint(64, 200) : t_randint(1, 4), .window = i == 5 || i == 9 ? t_randint(50, 300) : 0};
        c.H = c.Hkv * t_randint(1, 4);
        int64_t len = i < 4 ? t_randint(c.T, 60) : t_randint(300, 900); /* one sequence; its last T are new */
        c.NB = (len + c.B - 1) / c.B;
        CHECK(mnv_kv_layout_make(kt[i % 4], (int32_t)c.D, 0, &c.lk) == MNV_OK);
        CHECK(mnv_kv_layout_make(vt[i % 4], (int32_t)c.D, 0, &c.lv) == MNV_OK);
        size_t kb = (size_t)(c.NB * c.B * c.Hkv * c.lk.row_bytes), vb = (size_t)(c.NB * c.B * c.Hkv * c.lv.row_bytes);
        c.kpool = malloc(kb);
        c.vpool = malloc(vb);
        float *row = malloc(sizeof(float) * (size_t)c.D);
        for (int64_t r = 0; r < c.NB * c.B * c.Hkv; r++) { /* the context: random rows stored in each layout */
            for (int64_t d = 0; d < c.D; d++) row[d] = t_randf();
            mnv_kv_store_row(&c.lk, row, c.kpool + r * c.lk.row_bytes);
            for (int64_t d = 0; d < c.D; d++) row[d] = t_randf();
            mnv_kv_store_row(&c.lv, row, c.vpool + r * c.lv.row_bytes);
        }
        free(row);
        c.tables = malloc(sizeof(int32_t) * (size_t)c.NB);
        for (int b = 0; b < c.NB; b++) c.tables[b] = (int32_t)(c.NB - 1 - b); /* blocks in reverse order */
        c.pos = malloc(sizeof(int32_t) * (size_t)c.T);
        c.slot = malloc(sizeof(int32_t) * (size_t)c.T);
        c.seq = calloc((size_t)c.T, sizeof(int32_t));
        for (int t = 0; t < c.T; t++) {
            c.pos[t] = (int32_t)(len - c.T + t);
            c.slot[t] = c.tables[c.pos[t] / c.B] * (int32_t)c.B + c.pos[t] % (int32_t)c.B;
        }
        c.q = randv((size_t)(c.T * c.H * c.D), 1.0f);
        c.k = randv((size_t)(c.T * c.Hkv * c.D), 1.0f);
        c.v = randv((size_t)(c.T * c.Hkv * c.D), 1.0f);
        char what[96];
        snprintf(what, sizeof what, "attention K %s V %s H %lld/%lld D %lld T %lld len %lld win %d",
                 mnv_kv_type_name(kt[i % 4]), mnv_kv_type_name(vt[i % 4]), (long long)c.H, (long long)c.Hkv,
                 (long long)c.D, (long long)c.T, (long long)len, c.window);
        compare(what, build_qattention, &c, 1e-5, false);
        same_bits(what, build_qattention, &c);
        free(c.kpool);
        free(c.vpool);
        free(c.tables);
        free(c.pos);
        free(c.slot);
        free(c.seq);
        free(c.q);
        free(c.k);
        free(c.v);
    }
}

/* ---- mixture of experts: router, expert products, weighted sum ---- */
typedef struct {
    int64_t T, E, kk, N, K;
    int stage;         /* 0: topk ids, 1: gather_softmax, 2: the whole layer */
    bool per_slot, interleaved;
    mnv_dtype wt;
    float *logits, *x, *bias;
    void *w;
    rows_case q;
} moe_case;

static mnv_array *build_moe(side *s, mnv_graph *g, void *ud) {
    moe_case *c = ud;
    int64_t ls[2] = {c->T, c->E};
    mnv_array *logits = P(s, g, c->logits, MNV_DTYPE_F32, 2, ls);
    mnv_array *ids = mnv_topk(g, logits, (int32_t)c->kk);
    if (c->stage == 0) return ids;
    mnv_array *wts = mnv_gather_softmax(g, logits, ids);
    if (c->stage == 1) return wts;
    int64_t rows = c->interleaved ? 2 * c->N : c->N, f = c->interleaved ? 2 : 1;
    int64_t xs[3] = {c->T, c->kk, c->K}, bs[2] = {c->E, rows}, bsh[2] = {c->E, c->N}, bst[2] = {rows, f};
    mnv_array *x = P(s, g, c->x, MNV_DTYPE_F32, c->per_slot ? 3 : 2, c->per_slot ? xs : (int64_t[]){c->T, c->K});
    mnv_array *bias = mnv_view(g, P(s, g, c->bias, MNV_DTYPE_F32, 2, bs), 2, bsh, bst, 0);
    mnv_array *y;
    if (c->q.fmt.mode == MNV_QMODE_NONE) {
        int64_t all[3] = {c->E, rows, c->K}, sh[3] = {c->E, c->N, c->K}, st[3] = {rows * c->K, f * c->K, 1};
        mnv_array *w = mnv_view(g, P(s, g, c->w, c->wt, 3, all), 3, sh, st, 0);
        y = mnv_moe_matmul(g, x, w, NULL, NULL, NULL, c->K, ids, bias);
    } else {
        int64_t words = mnv_qformat_row_words(&c->q.fmt, c->K), groups = mnv_qformat_row_groups(&c->q.fmt, c->K);
        int64_t wa[3] = {c->E, rows, words}, ws[3] = {c->E, c->N, words}, wst[3] = {rows * words, f * words, 1};
        int64_t sa[3] = {c->E, rows, groups}, ss[3] = {c->E, c->N, groups}, sst[3] = {rows * groups, f * groups, 1};
        mnv_array *w = mnv_view(g, P(s, g, c->q.packed, MNV_DTYPE_U32, 3, wa), 3, ws, wst, 0);
        mnv_array *sc = mnv_view(g, P(s, g, c->q.scales, c->q.fmt.scale_dtype, 3, sa), 3, ss, sst, 0);
        mnv_array *bi = c->q.fmt.mode == MNV_QMODE_AFFINE
                            ? mnv_view(g, P(s, g, c->q.biases, c->q.fmt.scale_dtype, 3, sa), 3, ss, sst, 0)
                            : NULL;
        y = mnv_moe_matmul(g, x, w, sc, bi, &c->q.fmt, c->K, ids, bias);
    }
    return mnv_moe_sum(g, y, wts);
}

#define MOE_MMA_MIN 128 /* the least rows from which experts run on the tile kernel (main's second round) */

/* One case of build_moe: its inputs drawn, the device against the CPU.
 * fmt: the experts' packed format, or NULL for float experts of c.wt. */
static void run_moe_case(moe_case c, const mnv_qformat *fmt) {
    int64_t rows = c.interleaved ? 2 * c.N : c.N;
    c.logits = randv((size_t)(c.T * c.E), 3.0f);
    c.x = randv((size_t)(c.T * c.kk * c.K), 1.0f);
    c.bias = randv((size_t)(c.E * rows), 1.0f);
    float *w = randv((size_t)(c.E * rows * c.K), 0.5f);
    c.w = as_dtype(w, (size_t)(c.E * rows * c.K), c.wt);
    if (fmt) {
        c.q.fmt = *fmt;
        quantize(&c.q, c.E * rows, c.K);
    }
    char what[96];
    snprintf(what, sizeof what, "moe stage %d %s T %lld E %lld k %lld%s%s", c.stage,
             c.q.fmt.mode ? mnv_qmode_name(c.q.fmt.mode) : mnv_dtype_name(c.wt), (long long)c.T, (long long)c.E,
             (long long)c.kk, c.per_slot ? " per-slot" : "", c.interleaved ? " interleaved" : "");
    compare(what, build_moe, &c, c.wt == MNV_DTYPE_BF16 && !c.q.fmt.mode ? 4e-3 : 1e-5, c.stage == 0);
    free(c.logits);
    free(c.x);
    free(c.bias);
    free(w);
    free(c.w);
    free(c.q.packed);
    free(c.q.scales);
    free(c.q.biases);
}

static void test_moe(void) {
    for (int i = 0; i < 10; i++) {
        /* odd cases: enough (token, slot) rows to be grouped by expert */
        moe_case c = {.T = i % 2 ? t_randint(16, 31) : t_randint(1, 7), .E = i < 5 ? 32 : t_randint(4, 40), .N = t_randint(1, 90),
                      .K = 64 * t_randint(1, 4), .stage = i < 2 ? i : 2, .per_slot = i % 3 == 1,
                      .interleaved = i % 2 == 1, .wt = float_types[i % 3]};
        c.kk = t_randint(1, c.E < 4 ? (int)c.E : 4);
        /* below the tile kernel: the chunked kernels, mxfp4 the decode ones on tensor cores */
        if (c.T * c.kk >= MOE_MMA_MIN) c.kk = (MOE_MMA_MIN - 1) / c.T;
        run_moe_case(c, i < 5 ? NULL : &qformats[i == 5 ? 0 : i == 6 ? 1 : 6]);
    }
}

/* Enough (token, slot) rows for the tensor-core experts: mxfp4 and bf16,
 * output rows not a multiple of a block's, per token and per slot; 6 to
 * 9: decode steps (mxfp4 on tensor cores, a slot a block or grouped). */
static void test_moe_mma(void) {
    for (int i = 0; i < 10; i++) {
        /* 0: 4 experts (tiles of 64 rows); 1: 40 experts (tiles of 16 where they are chosen by rows per expert) */
        /* 2: 160 to 360 rows (mxfp4: grouped a few a tile by default, the tile kernel in main's second round);
         * the others below 6 from 520 rows (the tile kernel); 6, 7: 4 and 28 rows (a slot a block) */
        moe_case c = {.T = i == 6 ? 1 : i == 7 ? 7 : i >= 8 ? t_randint(1, 7) : i == 2 ? t_randint(40, 90) : t_randint(130, 200),
                      .E = i == 0 ? 4 : i == 1 ? 40 : t_randint(4, 40),
                      .N = t_randint(1, 300),
                      /* 6: an odd count of groups (a row's scales a byte at a time), 7: even (in pairs) */
                      .K = i == 6   ? 32 * (2 * t_randint(1, 50) - 1)
                           : i == 7 ? 64 * t_randint(1, 50)
                                    : 32 * t_randint(1, i >= 6 ? 100 : 12),
                      .kk = 4, .stage = 2, .per_slot = i % 2 == 1, .interleaved = i == 3 || i == 9, .wt = MNV_DTYPE_BF16};
        run_moe_case(c, i < 4 || i >= 6 ? &qformats[6] : NULL);
    }
}

/* gpt-oss's expert block: gate and up products, their SwiGLU, the down
 * product per slot, the weighted sum and the residual (fused on the
 * device into three launches), and in some cases the next layer's RMS norm
 * of the sum (fused into the last), added to it. */
typedef struct {
    int64_t T, E, kk, N, K;
    rows_case gate, up, down, router;
    float *logits, *h, *res, *bg, *bu, *bd, *br, *nw;
    bool routed;    /* logits from a router product of h (and its bias) */
    bool normed;    /* then the next layer's RMS norm of the sum (fused into the sum's launch), added to it */
    bool unaligned; /* h 4 bytes past a 16-byte boundary: router and experts unfused, element-wise */
} moe_block_case;

static mnv_array *expert_leaves(side *s, mnv_graph *g, rows_case *q, int64_t E, int64_t N, int64_t K,
                                mnv_array **sc, mnv_array **bi) {
    int64_t words = mnv_qformat_row_words(&q->fmt, K), groups = mnv_qformat_row_groups(&q->fmt, K);
    int64_t ws[3] = {E, N, words}, ss[3] = {E, N, groups};
    *sc = P(s, g, q->scales, q->fmt.scale_dtype, 3, ss);
    *bi = q->fmt.mode == MNV_QMODE_AFFINE ? P(s, g, q->biases, q->fmt.scale_dtype, 3, ss) : NULL;
    return P(s, g, q->packed, MNV_DTYPE_U32, 3, ws);
}

static mnv_array *build_moe_block(side *s, mnv_graph *g, void *ud) {
    moe_block_case *c = ud;
    int64_t ls[2] = {c->T, c->E}, hs[2] = {c->T, c->K}, bs[2] = {c->E, c->N}, bds[2] = {c->E, c->K};
    mnv_array *h = x_leaf(s, g, c->h, c->T, c->K, c->unaligned), *sc, *bi, *logits;
    if (c->routed) {
        mnv_array *w;
        quant_leaves(s, g, &c->router, c->E, c->K, &w, &sc, &bi);
        logits = mnv_add(g, mnv_qmatmul(g, h, w, sc, bi, &c->router.fmt, c->K), P(s, g, c->br, MNV_DTYPE_F32, 1, &c->E));
    } else {
        logits = P(s, g, c->logits, MNV_DTYPE_F32, 2, ls);
    }
    mnv_array *ids = mnv_topk(g, logits, (int32_t)c->kk);
    mnv_array *wts = mnv_gather_softmax(g, logits, ids);
    mnv_array *wg = expert_leaves(s, g, &c->gate, c->E, c->N, c->K, &sc, &bi);
    mnv_array *gate = mnv_moe_matmul(g, h, wg, sc, bi, &c->gate.fmt, c->K, ids, P(s, g, c->bg, MNV_DTYPE_F32, 2, bs));
    mnv_array *wu = expert_leaves(s, g, &c->up, c->E, c->N, c->K, &sc, &bi);
    mnv_array *up = mnv_moe_matmul(g, h, wu, sc, bi, &c->up.fmt, c->K, ids, P(s, g, c->bu, MNV_DTYPE_F32, 2, bs));
    mnv_array *a = mnv_swiglu_oai(g, gate, up, 1.702f, 7.0f);
    mnv_array *wd = expert_leaves(s, g, &c->down, c->E, c->K, c->N, &sc, &bi);
    mnv_array *y = mnv_moe_matmul(g, a, wd, sc, bi, &c->down.fmt, c->N, ids, P(s, g, c->bd, MNV_DTYPE_F32, 2, bds));
    mnv_array *sum = mnv_add(g, P(s, g, c->res, MNV_DTYPE_F32, 2, hs), mnv_moe_sum(g, y, wts));
    if (!c->normed) return sum;
    return mnv_add(g, sum, mnv_rms_norm(g, sum, P(s, g, c->nw, MNV_DTYPE_F32, 1, &c->K), 1e-5f));
}

/* One case of build_moe_block: the rest of its inputs drawn, the device
 * against the CPU (within tol) and its fused launches against its plain
 * ones. */
static void run_moe_block_case(moe_block_case c, double tol) {
    quantize(&c.gate, c.E * c.N, c.K);
    quantize(&c.up, c.E * c.N, c.K);
    quantize(&c.down, c.E * c.K, c.N);
    c.router.fmt = (mnv_qformat){MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_BF16};
    quantize(&c.router, c.E, c.K);
    c.br = randv((size_t)c.E, 1.0f);
    c.logits = randv((size_t)(c.T * c.E), 3.0f);
    c.h = randv((size_t)((c.T + 1) * c.K), 1.0f); /* a row more: room for the unaligned view */
    c.res = randv((size_t)(c.T * c.K), 1.0f);
    c.bg = randv((size_t)(c.E * c.N), 1.0f);
    c.bu = randv((size_t)(c.E * c.N), 1.0f);
    c.bd = randv((size_t)(c.E * c.K), 1.0f);
    c.nw = randv((size_t)c.K, 1.0f);
    char what[112];
    snprintf(what, sizeof what, "moe block %s %d T %lld E %lld k %lld N %lld K %lld%s%s%s",
             mnv_qmode_name(c.gate.fmt.mode), c.gate.fmt.bits, (long long)c.T, (long long)c.E, (long long)c.kk,
             (long long)c.N, (long long)c.K, c.routed ? " routed" : "", c.unaligned ? " h unaligned" : "",
             c.normed ? " normed" : "");
    compare(what, build_moe_block, &c, tol, false);
    same_bits(what, build_moe_block, &c);
    rows_case *qs[4] = {&c.gate, &c.up, &c.down, &c.router};
    free(c.br);
    for (int q = 0; q < 4; q++) {
        free(qs[q]->packed);
        free(qs[q]->scales);
        free(qs[q]->biases);
    }
    free(c.logits);
    free(c.h);
    free(c.res);
    free(c.bg);
    free(c.bu);
    free(c.bd);
    free(c.nw);
}

static void test_moe_block(void) {
    static const mnv_qformat fmts[] = {{MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8},
                                       {MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_BF16},
                                       {MNV_QMODE_AFFINE, 4, 32, MNV_DTYPE_F16}};
    /* 6 and 7: h unaligned (a decode step, and rows enough to group); 8
     * and 9: mxfp4 with rows enough for tensor cores */
    for (int i = 0; i < 10; i++) {
        const int tmax = i < 3 || i == 6 ? 3 : i == 7 ? 15 : i >= 8 ? 70 : 40; /* 15: the router's product not cuBLAS's */
        moe_block_case c = {.T = t_randint(tmax == 3 ? 1 : tmax == 70 ? 40 : 9, tmax),
                            .E = t_randint(4, 32), .N = 64 * t_randint(1, 3), .K = 64 * t_randint(1, 5),
                            .unaligned = i == 6 || i == 7};
        c.kk = i >= 8 ? 4 : t_randint(1, 4);
        c.gate.fmt = c.up.fmt = c.down.fmt = fmts[i >= 8 ? 0 : i % 3];
        c.routed = i % 2 == 0 || i == 7;
        c.normed = i % 3 != 1;
        run_moe_block_case(c, 1e-5);
    }
}

/* 8-bit affine products of 2 to 8 rows with x rounded to int8 (a backend
 * without exact_quant) against the CPU's int8 path: groups of 32, 64 and
 * 128, rows split over a block's warps and (from 16,385 rows) a warp's
 * own, bias and residual epilogues fused and not, and q, k and v in one
 * launch; then the same from 9 rows up (the tiled kernel). */
static void test_matmul_i8(void) {
    static const mnv_qformat fmts[3] = {{MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_BF16},
                                        {MNV_QMODE_AFFINE, 8, 32, MNV_DTYPE_F16},
                                        {MNV_QMODE_AFFINE, 8, 128, MNV_DTYPE_F32}};
    for (int i = 0; i < 13; i++) {
        fused_case c = {.with_bias = i % 3 != 2, .with_res = i % 3 != 1, .res_first = i % 2, .bt = float_types[i % 3]};
        /* one row (0-2, 9, 12; 2: rows of up to 10,240; 12: 264 to 528 tiles
         * of 16 rows, the 8-warp blocks on a device of 132 SMs), two (3-5) */
        c.mm.m = i < 3 || i == 9 || i == 12 ? 1 : i < 6 ? 2 : t_randint(1, 8);
        c.mm.n = i == 12 ? t_randint(4225, 8448) : i >= 10 ? t_randint(16385, 16600) : t_randint(1, 300);
        c.mm.k = 128 * (i == 2 ? t_randint(33, 80) : t_randint(1, i >= 10 ? 2 : 24));
        c.mm.q.fmt = fmts[i % 3];
        run_fused_case(&c, MNV_DTYPE_F32, "int8 product");
    }
    for (int i = 0; i < 3; i++) {
        /* 1: an odd count of groups read by a pair's first (a read past the
         * steps' end once) */
        const int64_t m = i == 0 ? 8 : i == 1 ? 5 : t_randint(1, 8), k = i == 1 ? 1216 : 64 * t_randint(1, 45);
        run_shared_case("int8 shared-input products", m, k, &fmts[0], 200, i);
    }
    /* from 9 rows the tiled kernel: tiles of 16, 32 and 64 rows of x, several
     * of them (from 65), k an odd count of its 64-byte half stages (groups
     * of 32 and 64) */
    for (int i = 0; i < 9; i++) {
        fused_case c = {.with_bias = i % 3 != 2, .with_res = i % 4 != 1, .res_first = i % 2, .bt = float_types[i % 3]};
        c.mm.m = i < 3 ? t_randint(9, 16) : i < 6 ? t_randint(17, 64) : t_randint(65, 300);
        c.mm.n = t_randint(1, 300);
        c.mm.q.fmt = fmts[i % 3];
        c.mm.k = c.mm.q.fmt.group_size * t_randint(1, 5120 / c.mm.q.fmt.group_size);
        run_fused_case(&c, MNV_DTYPE_F32, "int8 tiled product");
    }
    for (int i = 0; i < 3; i++)
        run_shared_case("int8 tiled shared-input products", t_randint(9, 130), 64 * t_randint(1, 45),
                        &fmts[i % 2], 200, i);
}

/* Decode steps of mxfp4 experts with x rounded to int8 (a backend without
 * exact_quant; the CPU's int8 path the reference): fewer than 32 (token,
 * slot) rows, the slot-a-block kernel (cases 0-7); from 32 the grouped
 * one, and from 256 the tile kernel in tiles of 16 (8-11; 11: 520 rows or
 * more); from 2,048 the tile kernel in tiles of 64 (12, 13). The router
 * stays out: the CPU would round its x too. */
static void test_moe_i8(void) {
    for (int i = 0; i < 14; i++) {
        /* 12, 13: 2,048 rows and more, the tile kernel */
        moe_case c = {.T = i == 0 ? 1 : i >= 12 ? t_randint(512, 600) : i == 11 ? t_randint(130, 500) : i >= 8 ? t_randint(8, 120) : t_randint(1, 7),
                      .E = t_randint(4, 40), .N = t_randint(1, 300),
                      .K = 32 * t_randint(1, 100), .kk = t_randint(1, 4), .stage = 2, .per_slot = i % 2 == 1,
                      .interleaved = i == 3, .wt = MNV_DTYPE_BF16};
        if (i >= 8) c.kk = 4;
        if (c.kk > c.E) c.kk = c.E;
        run_moe_case(c, &qformats[6]);
    }
    for (int i = 0; i < 7; i++) {
        /* 6: 2,048 (token, slot) rows and more, the tile kernel, gate and up with their SwiGLU */
        moe_block_case c = {.T = i == 6 ? t_randint(512, 560) : i >= 4 ? t_randint(8, 100) : t_randint(1, 7), .E = t_randint(4, 32),
                            .N = 32 * t_randint(1, 40),
                            .K = 32 * t_randint(1, 40), .kk = 4, .unaligned = i == 3};
        c.gate.fmt = c.up.fmt = c.down.fmt = (mnv_qformat){MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8};
        /* The down product rounds the SwiGLU's output, which the two sides
         * compute an ulp or so apart: the few codes rounded the other way
         * (each off by a step of its group) measured 6e-5; int8 against f32
         * activations is 4e-3 to 1e-2 here, so 1e-3 still tells them apart. */
        run_moe_block_case(c, 1e-3);
    }
}

/* ---- models end to end ---- */
#define MAXREF 64

typedef struct {
    int32_t prompt[MAXREF], greedy[MAXREF];
    int n_prompt, n_greedy, n_vocab;
    float *logits; /* n_prompt x n_vocab */
} reference;

static int read_ids(const char *json, const char *key, int32_t *out) {
    const char *p = strstr(json, key);
    if (!p || !(p = strchr(p, '['))) return 0;
    int n = 0;
    for (p++; *p && *p != ']' && n < MAXREF;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) {
            p++;
            continue;
        }
        out[n++] = (int32_t)v;
        p = end;
    }
    return n;
}

/* reference.json (prompt_ids, greedy_ids, n_vocab) and logits.bin of a fixture */
static bool load_reference(const char *dir, reference *r) {
    char path[512], buf[8192];
    snprintf(path, sizeof path, "%s/reference.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    r->n_prompt = read_ids(buf, "\"prompt_ids\"", r->prompt);
    r->n_greedy = read_ids(buf, "\"greedy_ids\"", r->greedy);
    const char *v = strstr(buf, "\"n_vocab\"");
    r->n_vocab = v && (v = strchr(v, ':')) ? atoi(v + 1) : 0;
    snprintf(path, sizeof path, "%s/logits.bin", dir);
    if (r->n_vocab <= 0 || !(f = fopen(path, "rb"))) return false;
    size_t want = (size_t)r->n_prompt * (size_t)r->n_vocab;
    r->logits = malloc(sizeof(float) * want);
    n = fread(r->logits, sizeof(float), want, f);
    fclose(f);
    return n == want;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* On the device, prefill logits vs transformers' (the CPU test's
 * references, with its bounds: 1e-4 relative L2 for f32 weights; 2e-2 for
 * the bf16 fixtures, whose references are not f32 arithmetic throughout: the
 * CPU computing them in f32 lands 1e-4 to 7e-4 away), greedy continuation,
 * token-by-token decoding vs prefill (1e-4: the same arithmetic). */
static void check_model(const char *name, double tol) {
    char dir[256];
    snprintf(dir, sizeof dir, "fixtures/models/%s", name);
    reference r = {0};
    if (!load_reference(dir, &r)) {
        CHECKF(0, "%s: cannot read the reference", name);
        free(r.logits);
        return;
    }
    mnv_model *m = t_load_model(dir, NULL);
    mnv_session_params sp = mnv_session_params_default();
    sp.exact_quant = 1;
    mnv_session *s = NULL;
    if (m) CHECKF(mnv_session_create(m, &sp, &s) == MNV_OK, "%s: session: %s", name, mnv_last_error());
    if (!s) {
        mnv_model_free(m);
        free(r.logits);
        return;
    }
    int V = r.n_vocab, T = r.n_prompt;
    float *logits = malloc(sizeof(float) * (size_t)T * V), *row = malloc(sizeof(float) * V);
    mnv_status st = mnv_session_eval(s, r.prompt, (size_t)T, logits);
    CHECKF(st == MNV_OK, "%s: eval: %s", name, mnv_last_error());
    double err = t_rel_l2(logits, r.logits, (size_t)T * V);
    int32_t tok = argmax(logits + (size_t)(T - 1) * V, V);
    int same = 0;
    for (int i = 0; i < r.n_greedy && tok == r.greedy[i]; i++) {
        same++;
        if (mnv_session_eval(s, &tok, 1, row) != MNV_OK) break;
        tok = argmax(row, V);
    }
    mnv_session_reset(s);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        mnv_session_eval(s, &r.prompt[t], 1, row);
        double e = t_rel_l2(row, logits + (size_t)t * V, V);
        worst = e > worst ? e : worst;
    }
    printf("%-18s cuda: prefill logits rel L2 %.3g, greedy %d/%d, decode vs prefill %.3g\n", name, err, same,
           r.n_greedy, worst);
    CHECKF(err < tol, "%s: logits rel L2 %.3g >= %.0e", name, err, tol);
    CHECKF(same == r.n_greedy, "%s: greedy continuation differs at step %d", name, same);
    CHECKF(worst < 1e-4, "%s: decode vs prefill rel L2 %.3g", name, worst);
    free(logits);
    free(row);
    free(r.logits);
    mnv_session_free(s);
    mnv_model_free(m);
}

/* ---- the engine: batched requests give each request's tokens alone ----
 * (deterministic: every product by the decode kernel, whose rows do not
 * depend on each other; cuBLAS's would, with the row count) */
#define NP 5
#define NGEN 10

typedef struct {
    int calls;
    uint64_t first, last, total;
    bool monotone;
} upload_reports;

static void on_upload(void *user_data, uint64_t done, uint64_t total) {
    upload_reports *u = user_data;
    if (u->calls++ == 0) u->first = done, u->total = total, u->monotone = true;
    u->monotone &= done >= u->last && done <= total && total == u->total;
    u->last = done;
}

static void check_engine(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, "fixtures/models/%s", name);
    int V = 0;
    mnv_model *m = t_load_model(dir, &V);
    if (!m) return;
    /* the weights copied up front, reported from 0 to the matrices' bytes */
    mnv_session_params sp0 = mnv_session_params_default();
    mnv_session *s0 = NULL;
    upload_reports u = {0};
    CHECK(mnv_session_create(m, &sp0, &s0) == MNV_OK);
    CHECKF(mnv_session_load_weights(s0, on_upload, &u) == MNV_OK, "%s", mnv_last_error());
    uint64_t matrices = 0; /* the checkpoint's matrices that graphs read where they are mapped */
    for (size_t i = 0; i < mnv_st_count(m->st); i++) {
        const mnv_st_tensor *t = mnv_st_get(m->st, i);
        if (t->ndim >= 2 && !mnv__model_is_copied(m, t->data)) matrices += t->nbytes;
    }
    CHECKF(u.calls >= 2 && u.first == 0 && u.last == matrices && u.total == matrices && u.monotone,
           "%s: %d upload reports, first %llu, last %llu of %llu (matrices %llu)", name, u.calls,
           (unsigned long long)u.first, (unsigned long long)u.last, (unsigned long long)u.total,
           (unsigned long long)matrices);
    mnv_session_free(s0);
    int32_t prompts[NP][40];
    int lens[NP];
    for (int i = 0; i < NP; i++) { /* odd ones share prompt 0's first 20 tokens */
        lens[i] = t_randint(21, 40);
        for (int j = 0; j < lens[i]; j++) prompts[i][j] = i % 2 && j < 20 ? prompts[0][j] : t_randint(0, V - 1);
    }
    t_ids alone[NP], batched[NP];
    for (int i = 0; i < NP; i++) t_session_greedy(m, prompts[i], lens[i], NGEN, &alone[i]);
    t_engine_greedy(m, NP, prompts, lens, NGEN, batched);
    int equal = 0;
    for (int i = 0; i < NP; i++)
        equal += alone[i].n == NGEN && batched[i].n == NGEN && !memcmp(alone[i].ids, batched[i].ids, sizeof(int32_t) * NGEN);
    printf("%-18s cuda engine: %d/%d batched requests give their tokens alone\n", name, equal, NP);
    CHECKF(equal == NP, "%s: %d of %d batched requests differ from the request alone", name, NP - equal, NP);
    /* sampled: the device's candidates pick what the rows brought back do */
    mnv_sampler_params sp = mnv_sampler_params_default();
    sp.seed = 11;
    t_engine_run(m, NP, prompts, lens, NGEN, &sp, 1, alone);
    t_engine_run(m, NP, prompts, lens, NGEN, &sp, 0, batched);
    equal = 0;
    for (int i = 0; i < NP; i++)
        equal += alone[i].n == NGEN && batched[i].n == NGEN && !memcmp(alone[i].ids, batched[i].ids, sizeof(int32_t) * NGEN);
    printf("%-18s cuda engine: %d/%d sampled requests pick the same tokens from candidates as from rows\n", name,
           equal, NP);
    CHECKF(equal == NP, "%s: %d of %d sampled requests differ between candidates and rows", name, NP - equal, NP);
    mnv_model_free(m);
}

/* A device backend without fused launches and with attention one block
 * per query (and whatever else the environment sets). */
static mnv_backend *plain_backend(const mnv_backend_params *gp) {
    mnv_backend *b = NULL;
    setenv("MNV_CUDA_FUSE", "0", 1);
    setenv("MNV_CUDA_ATTN_SPLIT", "0", 1);
    CHECK(mnv_backend_create(gp, &b) == MNV_OK);
    unsetenv("MNV_CUDA_FUSE");
    unsetenv("MNV_CUDA_ATTN_SPLIT");
    return b;
}

int main(void) {
    mnv_backend_params gp = {.name = "cuda", .exact_quant = 1}; /* f32 activations, as the CPU reference */
    if (mnv_backend_create(&gp, &gpu) != MNV_OK) {
        printf("test_cuda: SKIPPED: %s\n", mnv_last_error());
        return 77;
    }
    t_seed();
    mnv_backend_params cp = {.name = "cpu", .exact_quant = 1};
    CHECK(mnv_backend_create(&cp, &cpu) == MNV_OK);
    gpu_plain = plain_backend(&gp);
    if (!cpu || !gpu_plain) return t_done();
    test_elementwise();
    test_rope();
    test_hadamard();
    test_get_rows();
    test_argmax();
    test_top_cands();
    test_qget_rows();
    test_matmul();
    test_fused_products();
    test_wide_products();
    test_shared_products();
    test_attention();
    test_attention_groups();
    test_attention_quant();
    test_moe();
    test_moe_mma();
    test_moe_block();
    /* the experts' paths the defaults leave out: from 32 rows the chunked
     * grouped kernel (no grouped decode tiles), the tile kernel from 128
     * rows, always in tiles of 64 */
    setenv("MNV_CUDA_MOE_GMMA_MIN", "0", 1);
    setenv("MNV_CUDA_MOE_MMA_MIN", "128", 1);
    setenv("MNV_CUDA_MOE_TILE", "64", 1);
    mnv_backend *gpu_default = gpu, *plain_default = gpu_plain;
    CHECK(mnv_backend_create(&gp, &gpu) == MNV_OK);
    gpu_plain = plain_backend(&gp);
    unsetenv("MNV_CUDA_MOE_GMMA_MIN");
    unsetenv("MNV_CUDA_MOE_MMA_MIN");
    unsetenv("MNV_CUDA_MOE_TILE");
    if (gpu && gpu_plain) {
        test_moe();
        test_moe_mma();
        test_moe_block();
    }
    mnv_backend_free(gpu);
    mnv_backend_free(gpu_plain);
    gpu = gpu_default;
    gpu_plain = plain_default;
    /* without exact_quant: the decode experts' int8 path against the CPU's */
    if (mnv_cpu_qmatmul_force("avx512-vnni") || mnv_cpu_qmatmul_force("avx2-int8") ||
        mnv_cpu_qmatmul_force("neon-dot")) {
        mnv_backend *cpu_exact = cpu, *cpu_i8 = NULL;
        mnv_backend_params ci = {.name = "cpu"}, gi = {.name = "cuda"};
        CHECK(mnv_backend_create(&ci, &cpu_i8) == MNV_OK);
        CHECK(mnv_backend_create(&gi, &gpu) == MNV_OK);
        gpu_plain = plain_backend(&gi);
        cpu = cpu_i8;
        printf("int8 activations: the CPU's %s\n", mnv_cpu_qmatmul_impl());
        if (cpu && gpu && gpu_plain) {
            test_matmul_i8();
            test_moe_i8();
        }
        mnv_backend_free(cpu_i8);
        mnv_backend_free(gpu);
        mnv_backend_free(gpu_plain);
        mnv_cpu_qmatmul_force(NULL);
        cpu = cpu_exact;
        gpu = gpu_default;
        gpu_plain = plain_default;
    } else {
        printf("int8 activations: SKIPPED: this CPU has no int8 product path to compare with\n");
    }
    printf("ops: %d passed, %d failed\n", t_pass, t_fail);
    mnv_backend_free(cpu);
    mnv_backend_free(gpu);
    mnv_backend_free(gpu_plain);
    /* sessions and engines ask for the default backend */
    CHECK(mnv__backend_set_default("cuda") == MNV_OK);
    static const char *models[] = {"tiny-llama", "tiny-qwen3", "tiny-qwen2", "tiny-mistral", "tiny-llama-bf16",
                                   "tiny-qwen3-bf16", "tiny-gptoss-dense", "tiny-gptoss-mxfp4"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        check_model(models[i], strstr(models[i], "bf16") ? 2e-2 : 1e-4);
    check_engine("tiny-llama");
    check_engine("tiny-gptoss-mxfp4");
    return t_done();
}
