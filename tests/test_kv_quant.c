/* KV cache element types (f32, f16, bf16, q8, q4): the row layouts, the
 * quantizer, and attention on every pair of K and V types, on every
 * instruction-set level the host has, against a naive reference at fresh
 * random shapes: grouped-query ratios 1, 2, 4, 8 (and any up to 16), head
 * dims 64, 80, 96, 128, 256 (and random ones: the kernels that decline a
 * shape hand it to the portable one), several sequences, paged or dense,
 * lengths that are multiples of no tile, windows and sinks; then the same
 * through the graph (cache_write quantizes, attention reads). The
 * reference reads the cache as stored (each row through mnv_kv_load_row,
 * itself checked against the documented byte layout) and works in double:
 * tolerance 1e-5 relative L2 (f32 sums, a ~2 ulp vectorized exp). */
#include <math.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/ops.h"
#include "core/graph.h"
#include "core/threadpool.h"
#include "test.h"

static const mnv_kv_type TYPES[5] = {MNV_KV_F32, MNV_KV_F16, MNV_KV_BF16, MNV_KV_Q8, MNV_KV_Q4};

static mnv_kv_layout layout(mnv_kv_type t, int32_t D) {
    mnv_kv_layout l;
    mnv_status st = mnv_kv_layout_make(t, D, 0, &l);
    CHECKF(st == MNV_OK, "layout %s D%d: %s", mnv_kv_type_name(t), D, mnv_last_error());
    return l;
}

static void test_layouts(void) {
    CHECK(mnv_kv_default_group(64) == 32 && mnv_kv_default_group(128) == 32 && mnv_kv_default_group(96) == 32);
    CHECK(mnv_kv_default_group(80) == 16 && mnv_kv_default_group(8) == 8 && mnv_kv_default_group(6) == 6);
    mnv_kv_layout l = layout(MNV_KV_Q8, 64);
    CHECK(l.group == 32 && l.scales_at == 64 && l.row_bytes == 64 + 2 * 4);
    l = layout(MNV_KV_Q4, 80);
    CHECK(l.group == 16 && l.scales_at == 40 && l.row_bytes == 40 + 5 * 4);
    l = layout(MNV_KV_Q4, 8); /* stories260K's head size: one group of 8 */
    CHECK(l.group == 8 && l.row_bytes == 4 + 4);
    l = layout(MNV_KV_BF16, 64);
    CHECK(l.group == 0 && l.row_bytes == 128);
    CHECK(mnv_kv_layout_make(MNV_KV_Q4, 7, 0, &l) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "q4") != NULL);
    CHECK(mnv_kv_layout_make(MNV_KV_Q8, 64, 48, &l) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "group 48") != NULL);
    CHECK(mnv_kv_layout_make(MNV_KV_DEFAULT, 64, 0, &l) == MNV_ERR_INVALID_ARG);
    CHECK(!strcmp(mnv_kv_type_name(MNV_KV_Q4), "q4") && !strcmp(mnv_kv_type_name(MNV_KV_BF16), "bf16"));
}

/* Element i of a stored q8/q4 row, decoded from the bytes as kv_quant.h
 * documents them. */
static double doc_value(const mnv_kv_layout *l, const uint8_t *row, int32_t i) {
    int32_t ng = l->head_dim / l->group, g = i / l->group;
    uint16_t sh, bh;
    memcpy(&sh, row + l->scales_at + 2 * g, 2);
    memcpy(&bh, row + l->scales_at + 2 * ng + 2 * g, 2);
    uint32_t word;
    int q = 0;
    if (l->type == MNV_KV_Q8) {
        q = row[i];
    } else {
        memcpy(&word, row + 4 * (i / 8), 4); /* only for head_dim % 8 == 0 */
        q = (int)((word >> (4 * (i % 8))) & 15);
    }
    return (double)mnv_f16_to_f32(sh) * q + mnv_f16_to_f32(bh);
}

/* Store then load: every element within half a step of its group (plus the
 * f16 rounding of scale and bias), the bytes as documented, a constant group
 * exact up to the bias's f16 rounding. */
static void test_quantizer(void) {
    for (int rep = 0; rep < 200; rep++) {
        mnv_kv_type t = t_randint(0, 1) ? MNV_KV_Q8 : MNV_KV_Q4;
        int32_t D = t_randint(0, 1) ? 8 * t_randint(1, 32) : 2 * t_randint(1, 40);
        mnv_kv_layout l = layout(t, D);
        float x[256], y[256], mag = powf(2.0f, (float)t_randint(-8, 8));
        uint8_t row[512];
        for (int32_t i = 0; i < D; i++) x[i] = mag * t_randf() + (t_randint(0, 3) == 0 ? mag : 0);
        if (t_randint(0, 5) == 0)
            for (int32_t i = 0; i < l.group; i++) x[i] = x[0];
        mnv_kv_store_row(&l, x, row);
        mnv_kv_load_row(&l, row, y);
        int top = t == MNV_KV_Q8 ? 255 : 15;
        for (int32_t g0 = 0; g0 < D; g0 += l.group) {
            float mn = x[g0], mx = x[g0];
            for (int32_t i = g0; i < g0 + l.group; i++) mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
            /* half a step, the f16 rounding of scale and bias (relative, and absolute
             * where they are f16 subnormals: half of 2^-24 for the bias and for each
             * of the top multiples of the scale) */
            double step = (mx - mn) / top, bound = 0.5 * step * (1 + 1e-3) + 1e-3 * (fabs(mn) + fabs(mx)) +
                                                   ldexp(1.0, -25) * (1 + top);
            for (int32_t i = g0; i < g0 + l.group; i++) {
                CHECKF(fabs((double)y[i] - x[i]) <= bound, "%s D%d: element %d: %g -> %g (bound %g)",
                       mnv_kv_type_name(t), D, i, x[i], y[i], bound);
                if (t == MNV_KV_Q8 || D % 8 == 0)
                    CHECKF(fabs(doc_value(&l, row, i) - y[i]) <= 1e-6 * (fabs(y[i]) + 1e-30),
                           "%s D%d element %d: bytes do not follow the documented layout", mnv_kv_type_name(t), D,
                           i);
            }
        }
    }
}

/* Reference attention for token t/head h over keys [lo, p] of its sequence
 * in the logical caches (S, C, Hkv, D). */
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
    for (int32_t j = lo; j <= p; j++) den += sc[j] = exp(sc[j] - mx);
    for (int64_t i = 0; i < D; i++) {
        double a = 0;
        for (int32_t j = lo; j <= p; j++) a += sc[j] * vc[((s * C + j) * Hkv + kvh) * D + i];
        out[i] = (float)(a / den);
    }
    free(sc);
}

/* A paged store of a logical (S, C, Hkv, D) K and V: blocks of B tokens at
 * random physical places (tables (S, W), padded with -1), K and V blocks
 * kbs / vbs bytes apart (a multiple of 4, with spare bytes: a pool holds
 * other layers too); dense: B = C, block = sequence, no tables. */
typedef struct {
    int64_t S, C, Hkv, D, B, NB, W;
    mnv_kv_layout kl, vl;
    int64_t kbs, vbs;
    int32_t *tables;
    uint8_t *k, *v;
} store;

static int64_t round4(int64_t x) { return (x + 3) / 4 * 4; }

static store store_make(int64_t S, int64_t C, int64_t Hkv, int64_t D, mnv_kv_type kt, mnv_kv_type vt, bool dense) {
    store st = {S, C, Hkv, D, C, S, 0, layout(kt, (int32_t)D), layout(vt, (int32_t)D), 0, 0, NULL, NULL, NULL};
    if (!dense) {
        st.B = t_randint(0, 1) ? 16 : t_randint(1, 40);
        int64_t per = (C + st.B - 1) / st.B;
        st.W = per + t_randint(0, 3);
        st.NB = S * per + t_randint(0, 5);
        int32_t *perm = malloc(sizeof(int32_t) * (size_t)st.NB);
        for (int64_t i = 0; i < st.NB; i++) perm[i] = (int32_t)i;
        for (int64_t i = st.NB - 1; i > 0; i--) {
            int64_t j = t_randint(0, (int)i);
            int32_t tmp = perm[i];
            perm[i] = perm[j], perm[j] = tmp;
        }
        st.tables = malloc(sizeof(int32_t) * (size_t)(S * st.W));
        for (int64_t s = 0; s < S; s++)
            for (int64_t w = 0; w < st.W; w++) st.tables[s * st.W + w] = w < per ? perm[s * per + w] : -1;
        free(perm);
    }
    st.kbs = round4(st.B * Hkv * st.kl.row_bytes + (dense ? 0 : 4 * t_randint(0, 3)));
    st.vbs = round4(st.B * Hkv * st.vl.row_bytes + (dense ? 0 : 4 * t_randint(0, 3)));
    st.k = malloc((size_t)(st.NB * st.kbs));
    st.v = malloc((size_t)(st.NB * st.vbs));
    memset(st.k, 0xff, (size_t)(st.NB * st.kbs)); /* NaN (or huge) where nothing should be read */
    memset(st.v, 0xff, (size_t)(st.NB * st.vbs));
    return st;
}

static void store_free(store *st) { free(st->tables), free(st->k), free(st->v); }

/* Byte offset of head h's row of (s, p) in a side of the store. */
static size_t store_at(const store *st, int kv, int64_t s, int64_t p, int64_t h) {
    int64_t blk = st->tables ? st->tables[s * st->W + p / st->B] : s;
    const mnv_kv_layout *l = kv ? &st->vl : &st->kl;
    return (size_t)(blk * (kv ? st->vbs : st->kbs) + ((p % st->B) * st->Hkv + h) * l->row_bytes);
}

/* Logical values into the store, then the stored values back into them. */
static void store_fill(store *st, float *kf, float *vf) {
    for (int64_t s = 0; s < st->S; s++)
        for (int64_t p = 0; p < st->C; p++)
            for (int64_t h = 0; h < st->Hkv; h++) {
                size_t li = (size_t)(((s * st->C + p) * st->Hkv + h) * st->D);
                mnv_kv_store_row(&st->kl, kf + li, st->k + store_at(st, 0, s, p, h));
                mnv_kv_load_row(&st->kl, st->k + store_at(st, 0, s, p, h), kf + li);
                mnv_kv_store_row(&st->vl, vf + li, st->v + store_at(st, 1, s, p, h));
                mnv_kv_load_row(&st->vl, st->v + store_at(st, 1, s, p, h), vf + li);
            }
}

static int64_t pick_dim(mnv_kv_type kt, mnv_kv_type vt) {
    static const int64_t dims[5] = {64, 80, 96, 128, 256};
    if (t_randint(0, 2)) return dims[t_randint(0, 4)];
    bool q4 = kt == MNV_KV_Q4 || vt == MNV_KV_Q4;
    return q4 ? 2 * t_randint(1, 80) : t_randint(1, 160);
}

static int64_t pick_group(void) {
    static const int64_t g[4] = {1, 2, 4, 8};
    return t_randint(0, 3) ? g[t_randint(0, 3)] : t_randint(1, 16);
}

/* The kernel itself (mnv_cpu_attention) for K type kt and V type vt. */
/* Random K and V (f32 copies in kf, vf, stored in st), queries, sinks (if
 * any), then the reference output of every token and query head of the
 * batch (seq, pos: T tokens) in want; returns the score scale. */
static float random_case(store *st, float *kf, float *vf, size_t cn, float *q, size_t qn, float *sinks, float *want,
                         int64_t T, int64_t H, int64_t G, const int32_t *seq, const int32_t *pos, int32_t window) {
    const int64_t C = st->C, Hkv = st->Hkv, D = st->D;
    for (size_t i = 0; i < cn; i++) kf[i] = t_randf(), vf[i] = 2 * t_randf();
    store_fill(st, kf, vf);
    for (size_t i = 0; i < qn; i++) q[i] = 2 * t_randf();
    for (int64_t h = 0; sinks && h < H; h++) sinks[h] = 3 * t_randf();
    float scale = 1.0f / sqrtf((float)D);
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            int32_t lo = window > 0 && pos[t] - window + 1 > 0 ? pos[t] - window + 1 : 0;
            ref_attention(q + (t * H + h) * D, kf, vf, C, Hkv, D, seq[t], pos[t], lo, h, h / G, scale, sinks,
                          want + (t * H + h) * D);
        }
    return scale;
}

static void test_kernel(mnv_kv_type kt, mnv_kv_type vt) {
    int64_t S = t_randint(1, 3), C = t_randint(1, 160), Hkv = t_randint(1, 3), G = pick_group();
    int64_t D = pick_dim(kt, vt), T = t_randint(1, 8), H = Hkv * G;
    int32_t window = t_randint(0, 1) ? t_randint(1, (int)C) : 0;
    store st = store_make(S, C, Hkv, D, kt, vt, t_randint(0, 3) == 0);
    size_t cn = (size_t)(S * C * Hkv * D), qn = (size_t)(T * H * D);
    float *kf = malloc(4 * cn), *vf = malloc(4 * cn), *q = malloc(4 * qn), *want = malloc(4 * qn), *got = malloc(4 * qn);
    float *sinks = t_randint(0, 1) ? malloc(4 * (size_t)H) : NULL;
    int32_t seq[8], pos[8];
    for (int64_t t = 0; t < T; t++) seq[t] = t_randint(0, (int)S - 1), pos[t] = t_randint(0, (int)C - 1);
    const float scale = random_case(&st, kf, vf, cn, q, qn, sinks, want, T, H, G, seq, pos, window);
    mnv_attn_args a = {.kc = {st.kl, Hkv, st.B, st.kbs}, .vc = {st.vl, Hkv, st.B, st.vbs}, .n_head = (int32_t)H,
                       .scale = scale, .window = window, .sinks = sinks, .k = st.k, .v = st.v, .tables = st.tables,
                       .table_stride = st.W, .q = q, .seq = seq, .pos = pos, .n_tokens = T, .out = got};
    for (int lv = MNV_ISA_SCALAR; lv < MNV_ISA_COUNT; lv++) {
        if (lv != MNV_ISA_SCALAR && !mnv__isa_host((mnv_isa)lv)) continue;
        mnv__isa_set_cap((mnv_isa)lv);
        memset(got, 0xff, 4 * qn); /* NaN: every output must be written */
        mnv_cpu_attention(&a, 0, 1);
        char what[200];
        snprintf(what, sizeof what, "attention %s K %s V %s %s S%lld C%lld B%lld H%lld/%lld D%lld T%lld sinks %d window %d",
                 mnv__isa_name((mnv_isa)lv), mnv_kv_type_name(kt), mnv_kv_type_name(vt), st.tables ? "paged" : "dense",
                 (long long)S, (long long)C, (long long)st.B, (long long)H, (long long)Hkv, (long long)D, (long long)T,
                 sinks != NULL, window);
        bool finite = true;
        for (size_t i = 0; i < qn; i++) finite &= isfinite(got[i]) != 0;
        double e = finite ? t_rel_l2(got, want, qn) : INFINITY;
        CHECKF(e < 1e-5, "%s: rel L2 %.3g", what, e);
    }
    mnv__isa_set_cap(MNV_ISA_COUNT);
    free(kf), free(vf), free(q), free(want), free(got), free(sinks);
    store_free(&st);
}

/* Threads of a pool running mnv_cpu_attention with the pool's barrier. */
typedef struct {
    mnv_attn_args a;
    mnv_threadpool *tp;
} pool_run;

static void pool_barrier(void *ctx) { mnv_threadpool_barrier(ctx); }
static void pool_task(void *arg, int ith, int nth) { mnv_cpu_attention(&((pool_run *)arg)->a, ith, nth); }

/* Tiles and split key ranges: a batch of runs of consecutive positions of
 * several sequences (chunked prefill; ragged lengths, some of one token),
 * on 1 and 3 threads with parts as short as 16 keys, so that few tiles on more
 * threads split their keys and merge the parts (sinks included); against
 * the reference on every level the host has. In row-invariant mode (no
 * split) each row must be bit for bit what it is with its token alone. */
static void test_tiles(mnv_kv_type kt, mnv_kv_type vt, mnv_threadpool *tp) {
    int64_t S = t_randint(1, 3), C = t_randint(16, 200), Hkv = t_randint(1, 2), G = pick_group();
    int64_t D = pick_dim(kt, vt), H = Hkv * G;
    int32_t window = t_randint(0, 1) ? t_randint(1, (int)C) : 0;
    store st = store_make(S, C, Hkv, D, kt, vt, t_randint(0, 3) == 0);
    int32_t seq[32], pos[32];
    int64_t T = 0;
    bool decode = t_randint(0, 1); /* few tokens: the split path */
    for (int run = 0, nrun = decode ? t_randint(1, 2) : t_randint(1, 4); run < nrun && T < 32; run++) {
        int64_t len = decode ? 1 : t_randint(1, 20), s = t_randint(0, (int)S - 1);
        len = MNV_MIN(MNV_MIN(len, 32 - T), C);
        int64_t p0 = t_randint(0, (int)(C - len));
        for (int64_t i = 0; i < len; i++) seq[T] = (int32_t)s, pos[T++] = (int32_t)(p0 + i);
    }
    size_t cn = (size_t)(S * C * Hkv * D), qn = (size_t)(T * H * D);
    float *kf = malloc(4 * cn), *vf = malloc(4 * cn), *q = malloc(4 * qn), *want = malloc(4 * qn), *got = malloc(4 * qn);
    float *alone = malloc(4 * (size_t)(H * D)), *sinks = t_randint(0, 1) ? malloc(4 * (size_t)H) : NULL;
    const float scale = random_case(&st, kf, vf, cn, q, qn, sinks, want, T, H, G, seq, pos, window);
    int nth = mnv_threadpool_size(tp);
    void *scratch = malloc(mnv_cpu_attention_scratch_size(T, Hkv, H, D, nth));
    pool_run pr = {.a = {.kc = {st.kl, Hkv, st.B, st.kbs}, .vc = {st.vl, Hkv, st.B, st.vbs}, .n_head = (int32_t)H,
                         .scale = scale, .window = window, .sinks = sinks, .k = st.k, .v = st.v,
                         .tables = st.tables, .table_stride = st.W, .q = q, .seq = seq, .pos = pos, .n_tokens = T,
                         .out = got, .scratch = scratch, .barrier = pool_barrier, .barrier_ctx = tp,
                         .split_keys = 16 * t_randint(1, 3)},
                   .tp = tp};
    for (int lv = MNV_ISA_SCALAR; lv < MNV_ISA_COUNT; lv++) {
        if (lv != MNV_ISA_SCALAR && !mnv__isa_host((mnv_isa)lv)) continue;
        mnv__isa_set_cap((mnv_isa)lv);
        char what[220];
        snprintf(what, sizeof what, "tiles %s K %s V %s %s S%lld C%lld B%lld H%lld/%lld D%lld T%lld threads %d sinks %d window %d",
                 mnv__isa_name((mnv_isa)lv), mnv_kv_type_name(kt), mnv_kv_type_name(vt), st.tables ? "paged" : "dense",
                 (long long)S, (long long)C, (long long)st.B, (long long)H, (long long)Hkv, (long long)D, (long long)T,
                 nth, sinks != NULL, window);
        for (int inv = 0; inv < 2; inv++) {
            pr.a.row_invariant = inv;
            memset(got, 0xff, 4 * qn); /* NaN: every output must be written */
            mnv_threadpool_run(tp, pool_task, &pr);
            bool finite = true;
            for (size_t i = 0; i < qn; i++) finite &= isfinite(got[i]) != 0;
            double e = finite ? t_rel_l2(got, want, qn) : INFINITY;
            CHECKF(e < 1e-5, "%s row-invariant %d: rel L2 %.3g", what, inv, e);
        }
        bool same = true; /* got: the row-invariant batch */
        for (int64_t t = 0; t < T; t++) {
            mnv_attn_args one = pr.a;
            one.q = q + t * H * D, one.seq = seq + t, one.pos = pos + t, one.n_tokens = 1, one.out = alone;
            mnv_cpu_attention(&one, 0, 1);
            same &= memcmp(alone, got + t * H * D, 4 * (size_t)(H * D)) == 0;
        }
        CHECKF(same, "%s: a row batched differs from the row alone in row-invariant mode", what);
    }
    mnv__isa_set_cap(MNV_ISA_COUNT);
    free(kf), free(vf), free(q), free(want), free(got), free(alone), free(sinks), free(scratch);
    store_free(&st);
}

/* cache_write and attention through the graph on the CPU backend, K and V
 * of types kt and vt: the new rows are stored exactly as mnv_kv_store_row
 * stores them, and attention reads them with the rest of the cache. */
static void test_graph(mnv_graph *g, mnv_executor *ex, mnv_kv_type kt, mnv_kv_type vt) {
    int64_t S = t_randint(1, 3), C = t_randint(20, 150), Hkv = t_randint(1, 2), G = pick_group();
    int64_t D = pick_dim(kt, vt), T = t_randint(1, 6), H = Hkv * G;
    int32_t window = t_randint(0, 1) ? t_randint(1, 40) : 0;
    store st = store_make(S, C, Hkv, D, kt, vt, t_randint(0, 3) == 0);
    size_t cn = (size_t)(S * C * Hkv * D), row = (size_t)(Hkv * D);
    float *kf = malloc(4 * cn), *vf = malloc(4 * cn);
    for (size_t i = 0; i < cn; i++) kf[i] = t_randf(), vf[i] = t_randf();
    store_fill(&st, kf, vf);
    mnv_graph_reset(g);
    mnv_graph_reserve_inputs(g, 1 << 22);
    int64_t qs[3] = {T, H, D}, ks[3] = {T, Hkv, D}, ts[1] = {T}, hs[1] = {H}, tsh[2] = {S, st.W};
    mnv_array *aq = mnv_input(g, MNV_DTYPE_F32, 3, qs, "q"), *ak = mnv_input(g, MNV_DTYPE_F32, 3, ks, "k");
    mnv_array *av = mnv_input(g, MNV_DTYPE_F32, 3, ks, "v"), *asn = t_randint(0, 1) ? mnv_input(g, MNV_DTYPE_F32, 1, hs, "sinks") : NULL;
    mnv_array *seq = mnv_input(g, MNV_DTYPE_I32, 1, ts, "seq"), *pos = mnv_input(g, MNV_DTYPE_I32, 1, ts, "pos");
    mnv_array *slot = mnv_input(g, MNV_DTYPE_I32, 1, ts, "slot");
    mnv_array *tab = st.tables ? mnv_input(g, MNV_DTYPE_I32, 2, tsh, "tables") : NULL;
    if (tab) memcpy(mnv_input_data(tab), st.tables, sizeof(int32_t) * (size_t)(S * st.W));
    float *q = mnv_input_data(aq), *kn = mnv_input_data(ak), *vn = mnv_input_data(av);
    float *sk = asn ? mnv_input_data(asn) : NULL;
    for (int64_t i = 0; i < T * H * D; i++) q[i] = 2 * t_randf();
    for (size_t i = 0; i < (size_t)T * row; i++) kn[i] = t_randf(), vn[i] = t_randf();
    for (int64_t h = 0; sk && h < H; h++) sk[h] = 2 * t_randf();
    int32_t *sq = mnv_input_data(seq), *ps = mnv_input_data(pos), *sl = mnv_input_data(slot);
    for (int64_t t = 0; t < T; t++) { /* distinct (seq, pos) slots */
        sq[t] = (int32_t)(t % S);
        ps[t] = (int32_t)(C - 1 - t / S);
        int64_t blk = st.tables ? st.tables[sq[t] * st.W + ps[t] / st.B] : sq[t];
        sl[t] = (int32_t)(blk * st.B + ps[t] % st.B);
    }
    mnv_array *kc = mnv_kv_param(g, st.k, &st.kl, st.NB, st.B, Hkv, st.kbs, "kc");
    mnv_array *vc = mnv_kv_param(g, st.v, &st.vl, st.NB, st.B, Hkv, st.vbs, "vc");
    float scale = 1.0f / sqrtf((float)D);
    mnv_array *y = mnv_attention(g, aq, mnv_cache_write(g, kc, ak, slot), mnv_cache_write(g, vc, av, slot), tab, seq,
                                 pos, asn, scale, window);
    CHECKF(y != NULL, "graph: %s", mnv_last_error());
    if (!y) goto done;
    mnv_set_output(y);
    mnv_status rs = mnv_executor_run(ex, g);
    CHECKF(rs == MNV_OK, "run: %s", mnv_last_error());
    bool written = true;
    uint8_t want_row[2048];
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < Hkv; h++) {
            size_t li = (size_t)(((sq[t] * C + ps[t]) * Hkv + h) * D);
            mnv_kv_store_row(&st.kl, kn + t * row + h * D, want_row);
            written &= memcmp(want_row, st.k + store_at(&st, 0, sq[t], ps[t], h), (size_t)st.kl.row_bytes) == 0;
            mnv_kv_load_row(&st.kl, want_row, kf + li);
            mnv_kv_store_row(&st.vl, vn + t * row + h * D, want_row);
            written &= memcmp(want_row, st.v + store_at(&st, 1, sq[t], ps[t], h), (size_t)st.vl.row_bytes) == 0;
            mnv_kv_load_row(&st.vl, want_row, vf + li);
        }
    CHECKF(written, "cache_write K %s V %s: rows not stored as mnv_kv_store_row stores them", mnv_kv_type_name(kt),
           mnv_kv_type_name(vt));
    float *want = malloc(4 * (size_t)(T * H * D));
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            int32_t lo = window > 0 && ps[t] - window + 1 > 0 ? ps[t] - window + 1 : 0;
            ref_attention(q + (t * H + h) * D, kf, vf, C, Hkv, D, sq[t], ps[t], lo, h, h / G, scale, sk,
                          want + (t * H + h) * D);
        }
    double e = t_rel_l2(y->data, want, (size_t)(T * H * D));
    CHECKF(e < 1e-5, "graph attention K %s V %s %s H%lld/%lld D%lld T%lld window %d: rel L2 %.3g", mnv_kv_type_name(kt),
           mnv_kv_type_name(vt), st.tables ? "paged" : "dense", (long long)H, (long long)Hkv, (long long)D,
           (long long)T, window, e);
    free(want);
done:
    free(kf), free(vf);
    store_free(&st);
}

int main(void) {
    t_seed();
    test_layouts();
    test_quantizer();
    for (int rep = 0; rep < 2; rep++)
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++) test_kernel(TYPES[i], TYPES[j]);
    for (int nth = 1; nth <= 3; nth += 2) {
        mnv_threadpool *tp;
        CHECK(mnv_threadpool_create(nth, &tp) == MNV_OK);
        mnv_threadpool_set_adaptive(tp, false);
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++) test_tiles(TYPES[i], TYPES[j], tp);
        mnv_threadpool_free(tp);
    }
    mnv_graph *g;
    mnv_backend *be;
    mnv_executor *ex;
    mnv_backend_params bp = {.name = "cpu", .n_threads = 2};
    CHECK(mnv_graph_create(256, &g) == MNV_OK);
    CHECK(mnv_backend_create(&bp, &be) == MNV_OK);
    CHECK(mnv_executor_create(be, &ex) == MNV_OK);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) test_graph(g, ex, TYPES[i], TYPES[j]);
    mnv_executor_free(ex);
    mnv_backend_free(be);
    mnv_graph_free(g);
    return t_done();
}
