/* Attention on the CPU: the tiling of a batch, the split of long key ranges
 * across threads and the merge of their parts, and the portable tile
 * kernel. The per-ISA kernels (attn_avx2.c, attn_avx512.c, vec_neon.c) only
 * compute tiles (ops.h: mnv_attn_tile).
 *
 * A unit is a tile: up to MNV_ATTN_ROWS rows (query token, query head) of
 * one sequence and KV head, the tokens at consecutive positions (a prefill
 * chunk), each row with its own causal limit and window start, so that a
 * key and value row is read and converted once per tile instead of once per
 * token. Units go to threads in contiguous runs of equal cost (rows times
 * keys), so a causal prefill's late, long rows are not left to one thread.
 * When there are fewer units than threads (decode of one sequence with few
 * KV heads), each unit's key range is cut into parts at multiples of
 * MNV_ATTN_ALIGN; each part leaves (running max, denominator, unnormalized
 * output) per row in the scratch, and after the barrier the parts are
 * merged in order (the sink, given to part 0 only, counts once). Nothing is
 * split in row-invariant mode: there a row's arithmetic depends only on its
 * own position (its blocks sit at fixed multiples whatever the tile). */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/ops.h"
#include "backend/cpu/vec.h"

enum { ROWS = MNV_ATTN_ROWS, ALIGN = MNV_ATTN_ALIGN, SPLIT_KEYS = 512 };

typedef struct {
    int64_t t0, nt;      /* tokens [t0, t0 + nt) */
    int64_t kvh, h0, hn; /* query heads [h0, h0 + hn) of KV head kvh's group */
} unit;

typedef struct {
    const mnv_attn_args *a;
    int64_t G, tpt, hn; /* heads per group; tokens and heads per tile */
    int64_t t, nt, kvh, h0;
} unit_iter;

static int64_t window_lo(const mnv_attn_args *a, int64_t p) {
    return a->window > 0 && p - a->window + 1 > 0 ? p - a->window + 1 : 0;
}

static void iter_init(unit_iter *it, const mnv_attn_args *a) {
    it->a = a;
    it->G = a->n_head / a->kc.n_head_kv;
    it->hn = MNV_MIN(it->G, ROWS);
    it->tpt = MNV_MAX(1, ROWS / it->G);
    it->t = 0, it->nt = 0, it->kvh = 0, it->h0 = 0;
}

/* The tokens of the tile that starts at t: same sequence, consecutive positions. */
static int64_t tile_tokens(const unit_iter *it, int64_t t) {
    const mnv_attn_args *a = it->a;
    int64_t n = 1;
    while (n < it->tpt && t + n < a->n_tokens && a->seq[t + n] == a->seq[t] && a->pos[t + n] == a->pos[t + n - 1] + 1)
        n++;
    return n;
}

/* Units in order: token tiles, then KV heads, then chunks of heads. */
static bool iter_next(unit_iter *it, unit *u) {
    const int64_t Hkv = it->a->kc.n_head_kv;
    if (it->nt == 0) {
        if (it->a->n_tokens < 1) return false;
        it->nt = tile_tokens(it, 0);
    } else if ((it->h0 += it->hn) >= it->G) {
        it->h0 = 0;
        if (++it->kvh == Hkv) {
            it->kvh = 0;
            it->t += it->nt;
            if (it->t >= it->a->n_tokens) return false;
            it->nt = tile_tokens(it, it->t);
        }
    }
    *u = (unit){it->t, it->nt, it->kvh, it->h0, MNV_MIN(it->hn, it->G - it->h0)};
    return true;
}

/* The unit's keys [k0, k1): k0 rounded down to a multiple of ALIGN. */
static void unit_keys(const mnv_attn_args *a, const unit *u, int64_t *k0, int64_t *k1) {
    *k0 = window_lo(a, a->pos[u->t0]) / ALIGN * ALIGN;
    *k1 = (int64_t)a->pos[u->t0 + u->nt - 1] + 1;
}

/* Parts the unit's keys are cut into when each unit may have up to c. */
static int64_t unit_parts(const mnv_attn_args *a, const unit *u, int64_t c) {
    int64_t k0, k1, least = a->split_keys > 0 ? a->split_keys : SPLIT_KEYS;
    unit_keys(a, u, &k0, &k1);
    return MNV_MAX(1, MNV_MIN(c, (k1 - k0) / least));
}

/* Keys of part i of np: lengths a multiple of ALIGN (the last part shorter, or empty). */
static void part_keys(const mnv_attn_args *a, const unit *u, int64_t i, int64_t np, int64_t *p0, int64_t *p1) {
    int64_t k0, k1;
    unit_keys(a, u, &k0, &k1);
    int64_t len = ((k1 - k0 + np - 1) / np + ALIGN - 1) / ALIGN * ALIGN;
    *p0 = MNV_MIN(k1, k0 + i * len);
    *p1 = MNV_MIN(k1, k0 + (i + 1) * len);
}

static void run_tile(const mnv_attn_args *a, mnv_attn_tile *t) {
    const mnv_vec_ops *v = mnv_vec();
    if (t->k0 < t->k1 && v->attention && v->attention(a, t)) return;
    mnv__attn_tile_scalar(a, t);
}

/* The tile of unit u over keys [k0, k1), its outputs at acc (row r at acc +
 * r * D) or, acc NULL, at the rows of a->out; sink: the rows start from
 * their head's sink. */
static void tile_make(const mnv_attn_args *a, const unit *u, int64_t k0, int64_t k1, float *acc, bool sink,
                      mnv_attn_tile *t) {
    const int64_t H = a->n_head, D = a->kc.lay.head_dim, G = H / a->kc.n_head_kv;
    t->n = (int32_t)(u->nt * u->hn), t->seq = a->seq[u->t0], t->kvh = u->kvh, t->k0 = k0, t->k1 = k1;
    int r = 0;
    for (int64_t i = 0; i < u->nt; i++) {
        const int64_t tok = u->t0 + i, p = a->pos[tok];
        for (int64_t j = 0; j < u->hn; j++, r++) {
            const int64_t h = u->kvh * G + u->h0 + j;
            t->q[r] = a->q + (tok * H + h) * D;
            t->acc[r] = acc ? acc + r * D : a->out + (tok * H + h) * D;
            t->lo[r] = window_lo(a, p), t->hi[r] = p;
            t->m[r] = sink && a->sinks ? a->sinks[h] : -INFINITY; /* a sink adds exp(sink - m) to the denominator */
            t->l[r] = sink && a->sinks ? 1.0f : 0.0f;
        }
    }
}

/* The unit whole, normalized into a->out. */
static void unit_run(const mnv_attn_args *a, const unit *u) {
    const int64_t D = a->kc.lay.head_dim;
    int64_t k0, k1;
    unit_keys(a, u, &k0, &k1);
    mnv_attn_tile t;
    tile_make(a, u, k0, k1, NULL, true, &t);
    run_tile(a, &t);
    for (int r = 0; r < t.n; r++) {
        const float inv = t.l[r] > 0 ? 1.0f / t.l[r] : 0.0f;
        for (int64_t i = 0; i < D; i++) t.acc[r][i] *= inv;
    }
}

/* A part's slot in the scratch: m[ROWS], l[ROWS], then acc (ROWS, D). */
static float *slot_at(const mnv_attn_args *a, int64_t k) {
    return (float *)a->scratch + k * (2 * ROWS + ROWS * a->kc.lay.head_dim);
}

static void part_run(const mnv_attn_args *a, const unit *u, int64_t i, int64_t np, float *slot) {
    int64_t p0, p1;
    part_keys(a, u, i, np, &p0, &p1);
    mnv_attn_tile t;
    tile_make(a, u, p0, p1, slot + 2 * ROWS, i == 0, &t);
    run_tile(a, &t);
    for (int r = 0; r < t.n; r++) slot[r] = t.m[r], slot[ROWS + r] = t.l[r];
}

/* The np parts of unit u (slots from slot0) merged into a->out. */
static void unit_merge(const mnv_attn_args *a, const unit *u, int64_t np, int64_t slot0) {
    const int64_t H = a->n_head, D = a->kc.lay.head_dim, G = H / a->kc.n_head_kv;
    for (int64_t r = 0; r < u->nt * u->hn; r++) {
        const int64_t tok = u->t0 + r / u->hn, h = u->kvh * G + u->h0 + r % u->hn;
        float *out = a->out + (tok * H + h) * D, mx = -INFINITY, l = 0.0f;
        for (int64_t i = 0; i < np; i++) mx = fmaxf(mx, slot_at(a, slot0 + i)[r]);
        for (int64_t i = 0; i < D; i++) out[i] = 0.0f;
        for (int64_t i = 0; i < np; i++) {
            const float *s = slot_at(a, slot0 + i);
            if (s[ROWS + r] == 0.0f) continue; /* nothing seen (its max may be -inf) */
            const float w = expf(s[r] - mx);
            l += w * s[ROWS + r];
            const float *acc = s + 2 * ROWS + r * D;
            for (int64_t j = 0; j < D; j++) out[j] += w * acc[j];
        }
        const float inv = l > 0 ? 1.0f / l : 0.0f;
        for (int64_t j = 0; j < D; j++) out[j] *= inv;
    }
}

static int64_t unit_cost(const mnv_attn_args *a, const unit *u, int64_t np) {
    int64_t k0, k1;
    unit_keys(a, u, &k0, &k1);
    return u->nt * u->hn * ((k1 - k0) / np + 2 * ALIGN);
}

size_t mnv_cpu_attention_scratch_size(int64_t n_tokens, int64_t n_head_kv, int64_t n_head, int64_t head_dim,
                                      int nth) {
    (void)n_tokens, (void)n_head_kv, (void)n_head;
    /* split only with fewer than 2 nth units, into c <= 2 nth / units parts each */
    return (size_t)(4 * MNV_MAX(nth, 1)) * (size_t)(2 * ROWS + ROWS * head_dim) * sizeof(float);
}

void mnv_cpu_attention(const mnv_attn_args *a, int ith, int nth) {
    unit_iter it;
    unit u;
    int64_t n_units = 0, c = 1, total = 0;
    iter_init(&it, a);
    while (iter_next(&it, &u)) n_units++;
    if (n_units == 0) return;
    if (a->scratch && a->barrier && !a->row_invariant && nth > 1 && n_units < 2 * nth &&
        (n_units < nth || n_units % nth))
        c = n_units < nth ? (nth + n_units - 1) / n_units : 2;
    iter_init(&it, a);
    while (iter_next(&it, &u)) {
        const int64_t np = unit_parts(a, &u, c);
        for (int64_t i = 0; i < np; i++) total += unit_cost(a, &u, np);
    }
    /* a part goes to the thread whose share of the total cost holds its midpoint */
    int64_t cum = 0, k = 0;
    iter_init(&it, a);
    while (iter_next(&it, &u)) {
        const int64_t np = unit_parts(a, &u, c), cost = unit_cost(a, &u, np);
        for (int64_t i = 0; i < np; i++, cum += cost) {
            const int64_t owner = (int64_t)(((double)cum + 0.5 * (double)cost) * nth / (double)total);
            if (MNV_MIN(owner, nth - 1) != ith) continue;
            if (np == 1)
                unit_run(a, &u);
            else
                part_run(a, &u, i, np, slot_at(a, k * c + i));
        }
        k++;
    }
    if (c == 1) return;
    a->barrier(a->barrier_ctx);
    int64_t lo = (n_units * ith) / nth, hi = (n_units * (ith + 1)) / nth;
    k = 0;
    iter_init(&it, a);
    while (iter_next(&it, &u) && k < hi) {
        const int64_t np = unit_parts(a, &u, c);
        if (k >= lo && np > 1) unit_merge(a, &u, np, k * c);
        k++;
    }
}

/* ---- the portable tile kernel ---- */

enum { BLOCK = 16 };

/* A cache row as f32: the row itself (f32), or read into buf. */
static const float *row_f32(const mnv_kv_layout *l, const uint8_t *row, float *buf) {
    if (l->type == MNV_KV_F32) return (const float *)row;
    mnv_kv_load_row(l, row, buf);
    return buf;
}

/* Row r of the tile, one block of BLOCK keys at a time (blocks at
 * multiples of BLOCK from k0), online (flash-style) softmax. */
static void tile_row(const mnv_attn_args *a, mnv_attn_tile *t, int r, float *buf) {
    const mnv_vec_ops *v = mnv_vec();
    const int64_t D = a->kc.lay.head_dim, lo = MNV_MAX(t->lo[r], t->k0), hi = MNV_MIN(t->hi[r], t->k1 - 1);
    const uint8_t *kb = (const uint8_t *)a->k + t->kvh * a->kc.lay.row_bytes;
    const uint8_t *vb = (const uint8_t *)a->v + t->kvh * a->vc.lay.row_bytes;
    float *acc = t->acc[r], sc[BLOCK], m = t->m[r], l = t->l[r];
    size_t koff[BLOCK], voff[BLOCK];
    for (int64_t i = 0; i < D; i++) acc[i] = 0.0f;
    for (int64_t b0 = t->k0 + (lo - t->k0) / BLOCK * BLOCK; b0 <= hi; b0 += BLOCK) {
        const int64_t j0 = MNV_MAX(b0, lo), nb = MNV_MIN(b0 + BLOCK - 1, hi) - j0 + 1;
        float bm = -INFINITY;
        mnv_attn_rows(a, t->seq, j0, (int)nb, koff, voff);
        for (int64_t j = 0; j < nb; j++) {
            sc[j] = v->dot_f32(t->q[r], row_f32(&a->kc.lay, kb + koff[j], buf), D) * a->scale;
            bm = sc[j] > bm ? sc[j] : bm;
        }
        if (bm > m) {
            const float corr = expf(m - bm);
            l *= corr;
            v->scale_f32(acc, corr, D);
            m = bm;
        }
        for (int64_t j = 0; j < nb; j++) {
            const float w = expf(sc[j] - m);
            l += w;
            v->axpy_f32(acc, row_f32(&a->vc.lay, vb + voff[j], buf), w, D);
        }
    }
    t->m[r] = m, t->l[r] = l;
}

void mnv__attn_tile_scalar(const mnv_attn_args *a, mnv_attn_tile *t) {
    float small[512], *buf = a->kc.lay.head_dim <= 512 ? small : malloc(sizeof(float) * (size_t)a->kc.lay.head_dim);
    if (!buf) return; /* heads over 512 wide only: a few KiB */
    for (int r = 0; r < t->n; r++) tile_row(a, t, r, buf);
    if (buf != small) free(buf);
}
