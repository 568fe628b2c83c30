/* The CPU backend: runs a planned graph on a persistent thread pool. One
 * pool wake-up per graph; every thread walks the node list, computes its
 * share of each node (split by rows), and meets the others at a barrier.
 * Thread 0 looks at the abort flag before each barrier and publishes the
 * node to stop before, so every thread leaves at the same barrier. */
#include <stdlib.h>

#include "backend/backend.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/qmatmul.h"
#include "backend/cpu/vec.h"
#include "core/argmax.h"
#include "core/topcands.h"
#include "core/threadpool.h"

typedef struct {
    mnv_threadpool *tp;
    int exact_quant;
    int row_invariant;
    void *scratch;
    size_t scratch_size;
    mnv_graph *g; /* graph being run */
    atomic_int *abort;  /* the backend's abort flag for this run, or NULL */
    int32_t last_node;  /* the last node with a kernel: no stop is asked after it */
    /* the first node not run when thread 0 saw the abort flag, else -1;
     * written once per run, by thread 0, before a barrier */
    _Atomic int32_t stop_before;
    uint8_t *no_barrier; /* per node of g: 1 where the barrier after it is left out (plan_barriers) */
    int32_t no_barrier_cap;
} cpu_ctx;

typedef void (*cpu_kernel)(cpu_ctx *c, mnv_node *n, int ith, int nth);

static void split(int64_t total, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = (total + nth - 1) / nth;
    *lo = MNV_MIN(total, per * ith);
    *hi = MNV_MIN(total, *lo + per);
}

/* ---- adapters: unpack a node, call a pure kernel on this thread's rows ---- */

static void k_copy(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *s = n->src[0];
    int64_t rows = mnv_array_rows(n), D = n->shape[n->ndim - 1], lo, hi;
    split(rows, ith, nth, &lo, &hi);
    size_t ses = mnv_dtype_size(s->dtype), des = mnv_dtype_size(n->dtype);
    for (int64_t r = lo; r < hi; r++) {
        /* source offset of row r through the (up to 3) outer dims */
        int64_t rem = r, off = 0;
        for (int d = n->ndim - 2; d >= 0; d--) {
            off += (rem % n->shape[d]) * s->stride[d];
            rem /= n->shape[d];
        }
        uint8_t *dst = (uint8_t *)n->data + (size_t)(r * D) * des;
        if (s->stride[n->ndim - 1] == 1) {
            mnv_cpu_convert((const uint8_t *)s->data + (size_t)off * ses, s->dtype, dst, n->dtype, D);
        } else {
            for (int64_t i = 0; i < D; i++) {
                float v = mnv_cpu_load(s->data, s->dtype, off + i * s->stride[n->ndim - 1]);
                mnv_cpu_convert(&v, MNV_DTYPE_F32, dst + (size_t)i * des, n->dtype, 1);
            }
        }
    }
}

static void k_binary(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *a = n->src[0], *b = n->src[1];
    int64_t D = n->shape[n->ndim - 1], rows = mnv_array_rows(n), lo, hi;
    split(rows, ith, nth, &lo, &hi);
    if (hi <= lo) return;
    int64_t bs = mnv_array_nelem(b) == D ? 0 : D;
    const void *bp = (const uint8_t *)b->data + (size_t)(lo * bs) * mnv_dtype_size(b->dtype);
    const float *ap = (const float *)a->data + lo * D;
    float *y = (float *)n->data + lo * D;
    if (n->op == MNV_OP_ADD)
        mnv_cpu_add(ap, bp, b->dtype, bs, y, hi - lo, D);
    else if (n->op == MNV_OP_MUL)
        mnv_cpu_mul(ap, bp, b->dtype, bs, y, hi - lo, D);
    else if (n->op == MNV_OP_SWIGLU_OAI)
        mnv_cpu_swiglu_oai(ap, (const float *)bp, y, (hi - lo) * D, n->p.swiglu.alpha, n->p.swiglu.limit);
    else
        mnv_cpu_silu_mul(ap, (const float *)bp, y, (hi - lo) * D);
}

static void k_unary(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    int64_t D = n->shape[n->ndim - 1], rows = mnv_array_rows(n), lo, hi;
    split(rows, ith, nth, &lo, &hi);
    if (hi <= lo) return;
    const float *x = (const float *)n->src[0]->data + lo * D;
    float *y = (float *)n->data + lo * D;
    switch (n->op) {
    case MNV_OP_SCALE: mnv_cpu_scale(x, n->p.f[0], y, (hi - lo) * D); break;
    case MNV_OP_SOFTMAX: mnv_cpu_softmax(x, y, hi - lo, D); break;
    case MNV_OP_SILU: mnv_cpu_silu(x, y, (hi - lo) * D); break;
    case MNV_OP_GELU: mnv_cpu_gelu(x, y, (hi - lo) * D); break;
    case MNV_OP_HADAMARD: mnv_cpu_hadamard(x, y, hi - lo, D, n->p.i[0]); break;
    case MNV_OP_RMS_NORM:
        mnv_cpu_rms_norm(x, n->src[1] ? n->src[1]->data : NULL, y, hi - lo, D, n->p.norm.eps);
        break;
    default: break;
    }
}

static void cpu_barrier(void *ctx) { mnv_threadpool_barrier(((cpu_ctx *)ctx)->tp); }

static void k_matmul(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *x = n->src[0], *w = n->src[1];
    mnv_matmul_args a = {
        .x = x->data, .ldx = x->shape[x->ndim - 1], .w = w->data, .wtype = w->dtype, .ldw = w->stride[0],
        .y = n->data, .ldy = n->shape[n->ndim - 1], .m = mnv_array_rows(x), .n = w->shape[0], .k = w->shape[1],
        .scratch = c->scratch, .barrier = cpu_barrier, .barrier_ctx = c, .row_invariant = c->row_invariant,
    };
    mnv_cpu_matmul(&a, ith, nth);
}

static void k_rope(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    int64_t T = n->shape[0], lo, hi;
    split(T, ith, nth, &lo, &hi);
    if (hi <= lo) return;
    mnv_rope_args a = {(int32_t)n->shape[1], (int32_t)n->shape[2], n->p.rope.n_rot, n->p.rope.traditional,
                       n->p.rope.attn_factor, n->src[2]->data};
    int64_t row = n->shape[1] * n->shape[2];
    mnv_cpu_rope(&a, (const float *)n->src[0]->data + lo * row, (const int32_t *)n->src[1]->data + lo,
                 (float *)n->data + lo * row, hi - lo);
}

static void k_get_rows(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *t = n->src[0];
    int64_t lo, hi;
    split(n->shape[0], ith, nth, &lo, &hi);
    if (hi <= lo) return;
    mnv_cpu_get_rows(t->data, t->dtype, t->stride[0], t->shape[1], (const int32_t *)n->src[1]->data + lo,
                     (float *)n->data + lo * t->shape[1], hi - lo);
}

static mnv_cache_shape cache_shape(const mnv_node *cache) {
    mnv_cache_shape c = {.n_head_kv = cache->shape[2], .block_tokens = cache->shape[1],
                         .block_stride = cache->stride[0] * (int64_t)mnv_dtype_size(cache->dtype)};
    mnv_kv_layout_of(cache, &c.lay); /* checked when the graph was built */
    return c;
}

static void k_cache_write(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    int64_t lo, hi;
    split(n->src[1]->shape[0], ith, nth, &lo, &hi);
    mnv_cache_shape cs = cache_shape(n);
    mnv_cpu_cache_write(&cs, n->data, n->src[1]->data, n->src[2]->data, lo, hi);
}

static void k_attention(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *q = n->src[0];
    mnv_attn_args a = {
        .kc = cache_shape(n->src[1]), .vc = cache_shape(n->src[2]), .n_head = (int32_t)q->shape[1],
        .scale = n->p.attn.scale, .window = n->p.attn.window, .sinks = n->src[6] ? n->src[6]->data : NULL,
        .k = n->src[1]->data, .v = n->src[2]->data, .tables = n->src[3] ? n->src[3]->data : NULL,
        .table_stride = n->src[3] ? n->src[3]->shape[1] : 0, .q = q->data, .seq = n->src[4]->data,
        .pos = n->src[5]->data, .n_tokens = q->shape[0], .out = n->data, .scratch = c->scratch,
        .barrier = cpu_barrier, .barrier_ctx = c, .row_invariant = c->row_invariant,
    };
    mnv_cpu_attention(&a, ith, nth);
}

static void k_qmatmul(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *x = n->src[0], *w = n->src[1], *sc = n->src[2], *bi = n->src[3];
    mnv_qmatmul_args a = {
        .x = x->data, .ldx = x->shape[x->ndim - 1], .w = w->data, .ldw = w->stride[0], .scales = sc->data,
        .biases = bi ? bi->data : NULL, .lds = sc->stride[0], .fmt = n->p.q.fmt, .global_scale = n->p.q.global_scale,
        .y = n->data, .ldy = n->shape[n->ndim - 1], .m = mnv_array_rows(x), .n = w->shape[0], .k = n->p.q.k,
        .scratch = c->scratch, .barrier = cpu_barrier, .barrier_ctx = c, .exact = c->exact_quant,
        .row_invariant = c->row_invariant,
    };
    mnv_cpu_qmatmul(&a, ith, nth);
}

static void k_qget_rows(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *w = n->src[0], *sc = n->src[2], *bi = n->src[3];
    int64_t lo, hi, k = n->p.q.k;
    split(n->shape[0], ith, nth, &lo, &hi);
    if (hi <= lo) return;
    mnv_cpu_qget_rows(w->data, w->stride[0], sc->data, bi ? bi->data : NULL, sc->stride[0], &n->p.q.fmt,
                      n->p.q.global_scale, k, (const int32_t *)n->src[1]->data + lo, (float *)n->data + lo * k, hi - lo);
}

static void k_topk(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    int64_t lo, hi, E = n->src[0]->shape[1];
    int32_t k = (int32_t)n->shape[1];
    split(n->shape[0], ith, nth, &lo, &hi);
    if (hi > lo) mnv_cpu_topk((const float *)n->src[0]->data + lo * E, E, k, (int32_t *)n->data + lo * k, hi - lo);
}

static void k_argmax(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    (void)c;
    int64_t lo, hi, V = n->src[0]->shape[1];
    split(n->shape[0], ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) ((int32_t *)n->data)[r] = mnv__argmax_row((const float *)n->src[0]->data + r * V, V);
}

static void k_top_cands(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    (void)c;
    int64_t lo, hi, V = n->src[0]->shape[1];
    split(n->shape[0], ith, nth, &lo, &hi);
    float vals[MNV_TOP_CANDS];
    int32_t ids[MNV_TOP_CANDS];
    for (int64_t r = lo; r < hi; r++)
        mnv__top_cands_row((const float *)n->src[0]->data + r * V, V, (float *)n->data + r * MNV_TOP_CANDS_ROW, vals, ids);
}

static void k_gather_softmax(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    int64_t lo, hi, E = n->src[0]->shape[1];
    int32_t k = (int32_t)n->shape[1];
    split(n->shape[0], ith, nth, &lo, &hi);
    if (hi > lo)
        mnv_cpu_gather_softmax((const float *)n->src[0]->data + lo * E, E, (const int32_t *)n->src[1]->data + lo * k, k,
                               (float *)n->data + lo * k, hi - lo);
}

static void k_moe_sum(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    int64_t lo, hi, N = n->shape[1];
    int32_t k = (int32_t)n->src[0]->shape[1];
    split(n->shape[0], ith, nth, &lo, &hi);
    if (hi > lo)
        mnv_cpu_moe_sum((const float *)n->src[0]->data + lo * k * N, (const float *)n->src[1]->data + lo * k, k, N,
                        (float *)n->data + lo * N, hi - lo);
}

/* ---- mixture-of-experts matmul: tokens grouped by expert ----
 * Scratch layout after the matmul kernel's own scratch: counts (E+1 ints,
 * prefix sums), the (token, slot) rows sorted by expert, gathered inputs
 * (rows, K) and outputs (rows, N). */
typedef struct {
    int32_t *start, *rows;
    float *xg, *yg;
    void *mm_scratch;
} moe_scratch;

static size_t moe_mm_scratch(const mnv_node *n, int nth) {
    int64_t m = n->src[2]->shape[0] * n->src[2]->shape[1], k = n->p.q.k;
    if (n->p.q.fmt.mode == MNV_QMODE_NONE) return mnv_cpu_matmul_scratch_size(m, k, n->src[1]->dtype);
    return mnv_cpu_qmatmul_scratch_size(m, k, &n->p.q.fmt, nth);
}

/* ---- decode: one pass over the picked experts' rows ----
 * When quantized experts each serve at most MNV_QMATMUL_GEMV_MAX_M of the
 * (token, slot) pairs (decode, and small batches), the picked experts' W
 * rows form one list (expert after expert, in expert order) that the threads
 * split evenly, 16-row aligned; each thread runs the decode kernel alone
 * (ith 0 of 1) on its part of each expert it meets. Every thread groups the
 * pairs itself and keeps its x rows, products and the kernel's scratch in a
 * region of the scratch of its own, so the node needs no barrier inside it:
 * 4 experts cost one pass and the node's closing barrier instead of 1 + 3
 * barriers per expert. A pair's result is the same as through the per-expert
 * path: the same kernel with the same rows of x, whose arithmetic for a W
 * row does not depend on the range of rows it is given. */
enum { MOE_FUSED_MAX_PAIRS = 64 };

typedef struct {
    int32_t *start, *rows; /* E + 1 prefix sums, m pairs sorted by expert */
    float *xg, *yg;        /* GEMV_MAX_M rows of K, GEMV_MAX_M rows of N */
    void *mm_scratch;
} moe_private;

static size_t moe_private_mm(const mnv_node *n) {
    return (mnv_cpu_qmatmul_scratch_size(MNV_QMATMUL_GEMV_MAX_M, n->p.q.k, &n->p.q.fmt, 1) + 63) & ~(size_t)63;
}

/* Bytes of one thread's region (a multiple of 64). */
static size_t moe_private_size(const mnv_node *n) {
    int64_t E = n->src[1]->shape[0], m = n->src[2]->shape[0] * n->src[2]->shape[1];
    size_t s = moe_private_mm(n);
    s += ((size_t)(E + 1 + m) * 4 + 63) & ~(size_t)63;
    s += (size_t)MNV_QMATMUL_GEMV_MAX_M * (size_t)(n->p.q.k + n->shape[2]) * 4;
    return (s + 63) & ~(size_t)63;
}

static bool moe_fused_ok(const mnv_node *n) {
    return n->p.q.fmt.mode != MNV_QMODE_NONE && n->src[2]->shape[0] * n->src[2]->shape[1] <= MOE_FUSED_MAX_PAIRS;
}

static size_t moe_scratch_size(const mnv_node *n, int nth) {
    int64_t E = n->src[1]->shape[0], m = n->src[2]->shape[0] * n->src[2]->shape[1];
    size_t s = (moe_mm_scratch(n, nth) + 63) & ~(size_t)63;
    s += (size_t)(E + 1 + m) * 4 + 64;
    s += (size_t)m * (size_t)(n->p.q.k + n->shape[2]) * 4 + 128;
    if (moe_fused_ok(n)) s = MNV_MAX(s, (size_t)nth * moe_private_size(n) + 64);
    return s;
}

static moe_private moe_private_at(cpu_ctx *c, const mnv_node *n, int ith) {
    int64_t E = n->src[1]->shape[0], m = n->src[2]->shape[0] * n->src[2]->shape[1];
    uint8_t *p = mnv__align64(c->scratch) + (size_t)ith * moe_private_size(n);
    moe_private mp;
    mp.mm_scratch = p;
    p += moe_private_mm(n);
    mp.start = (int32_t *)p;
    mp.rows = mp.start + E + 1;
    p += ((size_t)(E + 1 + m) * 4 + 63) & ~(size_t)63;
    mp.xg = (float *)p;
    mp.yg = mp.xg + (size_t)MNV_QMATMUL_GEMV_MAX_M * n->p.q.k;
    return mp;
}

static moe_scratch moe_layout(cpu_ctx *c, const mnv_node *n, int nth) {
    int64_t E = n->src[1]->shape[0], m = n->src[2]->shape[0] * n->src[2]->shape[1];
    uint8_t *p = c->scratch;
    moe_scratch ms;
    ms.mm_scratch = p;
    p += (moe_mm_scratch(n, nth) + 63) & ~(size_t)63;
    ms.start = (int32_t *)p;
    ms.rows = ms.start + E + 1;
    p += ((size_t)(E + 1 + m) * 4 + 63) & ~(size_t)63;
    ms.xg = (float *)p;
    ms.yg = ms.xg + ((m * n->p.q.k + 15) & ~15LL);
    return ms;
}

/* Counting sort of the (t, j) pairs by expert. */
static void moe_group(const int32_t *ids, int64_t m, int64_t E, int32_t *start, int32_t *rows) {
    memset(start, 0, (size_t)(E + 1) * 4);
    for (int64_t i = 0; i < m; i++) start[ids[i] + 1]++;
    for (int64_t e = 0; e < E; e++) start[e + 1] += start[e];
    int32_t fill[1024];
    for (int64_t e = 0; e < E && e < 1024; e++) fill[e] = start[e];
    for (int64_t i = 0; i < m; i++) rows[fill[ids[i]]++] = (int32_t)i;
}

static void moe_expert(cpu_ctx *c, mnv_node *n, const moe_scratch *ms, int64_t e, int64_t cnt, int ith, int nth) {
    const mnv_node *w = n->src[1], *sc = n->src[4], *bi = n->src[5];
    int64_t K = n->p.q.k, N = n->shape[2];
    size_t wes = n->p.q.fmt.mode == MNV_QMODE_NONE ? mnv_dtype_size(w->dtype) : 4;
    const void *we = (const uint8_t *)w->data + (size_t)(e * w->stride[0]) * wes;
    if (n->p.q.fmt.mode == MNV_QMODE_NONE) {
        mnv_matmul_args a = {.x = ms->xg, .ldx = K, .w = we, .wtype = w->dtype, .ldw = w->stride[1], .y = ms->yg,
                             .ldy = N, .m = cnt, .n = N, .k = K, .scratch = ms->mm_scratch, .barrier = cpu_barrier,
                             .barrier_ctx = c, .row_invariant = c->row_invariant};
        mnv_cpu_matmul(&a, ith, nth);
        return;
    }
    size_t ses = mnv_dtype_size(sc->dtype);
    mnv_qmatmul_args a = {
        .x = ms->xg, .ldx = K, .w = we, .ldw = w->stride[1],
        .scales = (const uint8_t *)sc->data + (size_t)(e * sc->stride[0]) * ses,
        .biases = bi ? (const uint8_t *)bi->data + (size_t)(e * bi->stride[0]) * ses : NULL, .lds = sc->stride[1],
        .fmt = n->p.q.fmt, .global_scale = n->p.q.global_scale, .y = ms->yg, .ldy = N, .m = cnt, .n = N, .k = K,
        .scratch = ms->mm_scratch, .barrier = cpu_barrier, .barrier_ctx = c, .exact = c->exact_quant,
        .row_invariant = c->row_invariant,
    };
    mnv_cpu_qmatmul(&a, ith, nth);
}

/* Rows [j0, j1) of expert e for its cnt pairs rows[0 .. cnt), by this
 * thread alone (x rows gathered, unless one, and outputs scattered, plus the
 * expert bias). */
static void moe_fused_part(cpu_ctx *c, mnv_node *n, const moe_private *mp, int64_t e, const int32_t *rows,
                           int64_t cnt, int64_t j0, int64_t j1) {
    const mnv_node *x = n->src[0], *w = n->src[1], *sc = n->src[4], *bi = n->src[5], *bias = n->src[3];
    const int64_t kk = n->src[2]->shape[1], K = n->p.q.k, N = n->shape[2];
    const bool per_slot = x->ndim == 3;
    const size_t ses = mnv_dtype_size(sc->dtype);
    const float *xs = (const float *)x->data + (per_slot ? rows[0] : rows[0] / kk) * K;
    if (cnt > 1) {
        for (int64_t r = 0; r < cnt; r++)
            memcpy(mp->xg + r * K, (const float *)x->data + (per_slot ? rows[r] : rows[r] / kk) * K, (size_t)K * 4);
        xs = mp->xg;
    }
    float *y = cnt > 1 ? mp->yg : (float *)n->data + rows[0] * N;
    const int64_t e_w = e * w->stride[0] + j0 * w->stride[1], e_s = e * sc->stride[0] + j0 * sc->stride[1];
    mnv_qmatmul_args a = {
        .x = xs, .ldx = K, .w = (const uint32_t *)w->data + e_w, .ldw = w->stride[1],
        .scales = (const uint8_t *)sc->data + (size_t)e_s * ses,
        .biases = bi ? (const uint8_t *)bi->data + (size_t)e_s * ses : NULL, .lds = sc->stride[1],
        .fmt = n->p.q.fmt, .global_scale = n->p.q.global_scale, .y = y + j0, .ldy = N, .m = cnt, .n = j1 - j0,
        .k = K, .scratch = mp->mm_scratch, .exact = c->exact_quant, .row_invariant = c->row_invariant,
    };
    mnv_cpu_qmatmul(&a, 0, 1);
    for (int64_t r = 0; r < cnt; r++) {
        float *dst = (float *)n->data + rows[r] * N;
        if (cnt > 1) memcpy(dst + j0, mp->yg + r * N + j0, (size_t)(j1 - j0) * 4);
        if (bias) {
            const float *b = (const float *)bias->data + e * bias->stride[0];
            for (int64_t i = j0; i < j1; i++) dst[i] += b[i * bias->stride[1]];
        }
    }
}

/* The one-pass path; false (nothing done, by every thread alike) when an
 * expert serves more pairs than the decode kernel takes. */
static bool moe_fused(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const int32_t *ids = n->src[2]->data;
    const int64_t m = n->src[2]->shape[0] * n->src[2]->shape[1], E = n->src[1]->shape[0], N = n->shape[2];
    moe_private mp = moe_private_at(c, n, ith);
    moe_group(ids, m, E, mp.start, mp.rows);
    int64_t active = 0;
    for (int64_t e = 0; e < E; e++) {
        const int64_t cnt = mp.start[e + 1] - mp.start[e];
        if (cnt > MNV_QMATMUL_GEMV_MAX_M) return false;
        active += cnt > 0;
    }
    int64_t lo, hi, base = 0;
    mnv__qsplit(active * N, ith, nth, 16, &lo, &hi);
    for (int64_t e = 0; e < E && base < hi; e++) {
        const int64_t cnt = mp.start[e + 1] - mp.start[e];
        if (cnt == 0) continue;
        const int64_t j0 = MNV_MAX(lo - base, 0), j1 = MNV_MIN(hi - base, N);
        if (j0 < j1) moe_fused_part(c, n, &mp, e, mp.rows + mp.start[e], cnt, j0, j1);
        base += N;
    }
    return true;
}

static void k_moe_matmul(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *x = n->src[0], *bias = n->src[3];
    const int32_t *ids = n->src[2]->data;
    int64_t kk = n->src[2]->shape[1], m = n->src[2]->shape[0] * kk, E = n->src[1]->shape[0];
    int64_t K = n->p.q.k, N = n->shape[2];
    bool per_slot = x->ndim == 3;
    if (moe_fused_ok(n) && moe_fused(c, n, ith, nth)) return;
    moe_scratch ms = moe_layout(c, n, nth);
    if (ith == 0) moe_group(ids, m, E, ms.start, ms.rows);
    mnv_threadpool_barrier(c->tp);
    for (int64_t e = 0; e < E; e++) {
        int64_t cnt = ms.start[e + 1] - ms.start[e], lo, hi;
        if (cnt == 0) continue;
        const int32_t *rows = ms.rows + ms.start[e];
        split(cnt, ith, nth, &lo, &hi);
        for (int64_t r = lo; r < hi; r++) /* gather inputs */
            memcpy(ms.xg + r * K, (const float *)x->data + (per_slot ? rows[r] : rows[r] / kk) * K, (size_t)K * 4);
        mnv_threadpool_barrier(c->tp);
        moe_expert(c, n, &ms, e, cnt, ith, nth);
        mnv_threadpool_barrier(c->tp);
        for (int64_t r = lo; r < hi; r++) { /* scatter outputs (+ expert bias) */
            float *dst = (float *)n->data + rows[r] * N;
            const float *src = ms.yg + r * N;
            if (bias) {
                const float *b = (const float *)bias->data + e * bias->stride[0];
                for (int64_t i = 0; i < N; i++) dst[i] = src[i] + b[i * bias->stride[1]];
            } else
                memcpy(dst, src, (size_t)N * 4);
        }
        mnv_threadpool_barrier(c->tp); /* xg/yg are reused by the next expert */
    }
}

static const cpu_kernel kernels[MNV_OP_COUNT] = {
    [MNV_OP_TOPK] = k_topk,         [MNV_OP_GATHER_SOFTMAX] = k_gather_softmax, [MNV_OP_MOE_SUM] = k_moe_sum,
    [MNV_OP_MOE_MATMUL] = k_moe_matmul, [MNV_OP_SWIGLU_OAI] = k_binary,
    [MNV_OP_QMATMUL] = k_qmatmul,   [MNV_OP_QGET_ROWS] = k_qget_rows,
    [MNV_OP_COPY] = k_copy,         [MNV_OP_ADD] = k_binary,      [MNV_OP_MUL] = k_binary,
    [MNV_OP_SILU_MUL] = k_binary,   [MNV_OP_SCALE] = k_unary,     [MNV_OP_SOFTMAX] = k_unary,
    [MNV_OP_SILU] = k_unary,        [MNV_OP_GELU] = k_unary,      [MNV_OP_RMS_NORM] = k_unary,
    [MNV_OP_HADAMARD] = k_unary,    [MNV_OP_ARGMAX] = k_argmax,
    [MNV_OP_TOP_CANDS] = k_top_cands,
    [MNV_OP_MATMUL] = k_matmul,     [MNV_OP_ROPE] = k_rope,       [MNV_OP_GET_ROWS] = k_get_rows,
    [MNV_OP_CACHE_WRITE] = k_cache_write, [MNV_OP_ATTENTION] = k_attention,
};

/* ---- barriers between independent nodes ----
 * Every node ends with a barrier, except where the next one may start while
 * other threads still run this one. The barrier after node i is left out
 * when the next node j may join the group of nodes run since the last
 * barrier kept (at most MAX_GROUP), which holds when:
 *  1. no node of the group calls a barrier inside it or touches memory that
 *     other threads touch besides its sources and output: the elementwise
 *     and row-wise kernels, quantized products of at most
 *     MNV_QMATMUL_GEMV_MAX_M rows (each thread prepares its copy of x at
 *     ith * m * row bytes of the scratch) and quantized mixture-of-experts
 *     products of at most that many (token, slot) pairs (always the one-pass
 *     path: each thread its own region of the scratch);
 *  2. the nodes of the group that use the scratch use it alike (products of
 *     the same m and k, or experts with the same region size), so thread t's
 *     part of the scratch is the same in each and no thread writes another's;
 *  3. no node of the group reads bytes that another one writes, and no two
 *     write the same bytes: byte ranges of sources and outputs as placed by
 *     the planner, so a value put on memory freed inside the group (whose
 *     last reader is in it) counts as an overlap.
 * The abort flag is looked at only before the barriers kept. */
enum { MAX_GROUP = 8 };

typedef struct {
    int kind; /* 0 none, 1 quantized decode product, 2 one-pass experts */
    int64_t a, b;
} scratch_use;

static bool runs_alone(const mnv_node *n, scratch_use *u) {
    *u = (scratch_use){0, 0, 0};
    switch (n->op) {
    case MNV_OP_ADD: case MNV_OP_MUL: case MNV_OP_SILU_MUL: case MNV_OP_SWIGLU_OAI: case MNV_OP_SCALE:
    case MNV_OP_SOFTMAX: case MNV_OP_SILU: case MNV_OP_GELU: case MNV_OP_RMS_NORM: case MNV_OP_HADAMARD:
    case MNV_OP_COPY: case MNV_OP_ROPE: case MNV_OP_GET_ROWS: case MNV_OP_QGET_ROWS: case MNV_OP_TOPK:
    case MNV_OP_GATHER_SOFTMAX: case MNV_OP_MOE_SUM:
        return true;
    case MNV_OP_QMATMUL:
        *u = (scratch_use){1, mnv_array_rows(n->src[0]), n->p.q.k};
        return u->a <= MNV_QMATMUL_GEMV_MAX_M;
    case MNV_OP_MOE_MATMUL:
        *u = (scratch_use){2, (int64_t)moe_private_size(n), 0};
        return n->p.q.fmt.mode != MNV_QMODE_NONE &&
               n->src[2]->shape[0] * n->src[2]->shape[1] <= MNV_QMATMUL_GEMV_MAX_M;
    default: return false;
    }
}

/* [lo, hi) bytes of a node's elements; false when unknown (no data, a
 * negative stride, a dtype without a size). */
static bool byte_span(const mnv_node *n, uintptr_t *lo, uintptr_t *hi) {
    const size_t es = mnv_dtype_size(n->dtype);
    if (!n->data || es == 0) return false;
    int64_t last = 0;
    for (int d = 0; d < n->ndim; d++) {
        if (n->shape[d] <= 0) {
            *lo = *hi = (uintptr_t)n->data;
            return true;
        }
        if (n->stride[d] < 0) return false;
        last += (n->shape[d] - 1) * n->stride[d];
    }
    *lo = (uintptr_t)n->data;
    *hi = *lo + (size_t)(last + 1) * es;
    return true;
}

static bool spans_apart(const mnv_node *x, const mnv_node *y) {
    uintptr_t a0, a1, b0, b1;
    if (!byte_span(x, &a0, &a1) || !byte_span(y, &b0, &b1)) return false;
    return a1 <= b0 || b1 <= a0 || a0 == a1 || b0 == b1;
}

/* Neither writes what the other reads or writes (rule 3). */
static bool independent(const mnv_node *a, const mnv_node *b) {
    if (!spans_apart(a, b)) return false;
    for (int s = 0; s < MNV_MAX_SRC; s++) {
        if (a->src[s] && !spans_apart(a->src[s], b)) return false;
        if (b->src[s] && !spans_apart(b->src[s], a)) return false;
    }
    return true;
}

static mnv_node *root_of(mnv_node *n) { return n->view_src ? n->view_src : n; }

static bool reads(const mnv_node *n, const mnv_node *v) {
    for (int s = 0; s < MNV_MAX_SRC; s++)
        if (n->src[s] && root_of(n->src[s]) == v) return true;
    return false;
}

/* The planner's hook: a value whose last reader i may run without a barrier
 * after it (rule 1 holds for i and for the next node j, and j does not read
 * i) stays alive through j, so that j's output is not placed on it and the
 * pair can pass rule 3. */
static void cpu_plan_lifetimes(mnv_backend *b, mnv_graph *g) {
    (void)b;
    const int32_t n = mnv_graph_n_nodes(g);
    mnv_node *next = NULL; /* the kernel node after i, if rule 1 holds for it */
    scratch_use u;
    for (int32_t i = n - 1; i >= 0; i--) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (!kernels[nd->op]) continue;
        const bool alone = runs_alone(nd, &u);
        for (int s = 0; alone && next && !reads(next, nd) && s < MNV_MAX_SRC; s++) {
            mnv_node *r = nd->src[s] ? root_of(nd->src[s]) : NULL;
            if (r && r->last_use == i) r->last_use = next->id;
        }
        next = alone ? nd : NULL;
    }
}

/* c->no_barrier for the graph's nodes (the rule above). */
static void plan_barriers(cpu_ctx *c, mnv_graph *g) {
    const int32_t n = mnv_graph_n_nodes(g);
    memset(c->no_barrier, 0, (size_t)n);
    int32_t grp[MAX_GROUP], ng = 0, prev = -1;
    scratch_use gu = {0, 0, 0};
    for (int32_t i = 0; i < n; i++) {
        const mnv_node *nd = mnv_graph_node(g, i);
        if (!kernels[nd->op]) continue;
        scratch_use u;
        const bool alone = runs_alone(nd, &u);
        bool join = alone && ng > 0 && ng < MAX_GROUP &&
                    (u.kind == 0 || gu.kind == 0 || (u.kind == gu.kind && u.a == gu.a && u.b == gu.b));
        for (int32_t q = 0; join && q < ng; q++) join = independent(mnv_graph_node(g, grp[q]), nd);
        if (join) {
            c->no_barrier[prev] = 1;
            grp[ng++] = i;
            if (u.kind) gu = u;
        } else if (alone) {
            grp[0] = i, ng = 1, gu = u;
        } else {
            ng = 0;
        }
        prev = i;
    }
}

/* A thread slow to read stop_before after node i's barrier may see the
 * value thread 0 set after the next node (j + 1, before j's barrier); so a
 * thread stops only when the value names the node right after the barrier
 * it just passed, never merely because it is set. */
static void run_graph(void *arg, int ith, int nth) {
    cpu_ctx *c = arg;
    int32_t n = mnv_graph_n_nodes(c->g);
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(c->g, i);
        cpu_kernel k = kernels[nd->op];
        if (!k) continue;
        k(c, nd, ith, nth);
        if (c->no_barrier[i]) continue;

        if (ith == 0 && c->abort && i < c->last_node && atomic_load_explicit(c->abort, memory_order_relaxed))
            atomic_store_explicit(&c->stop_before, i + 1, memory_order_relaxed);
        mnv_threadpool_barrier(c->tp);
        if (atomic_load_explicit(&c->stop_before, memory_order_relaxed) == i + 1) break;
    }
}

static mnv_status cpu_compute(mnv_backend *b, mnv_graph *g) {
    cpu_ctx *c = b->ctx;
    size_t need = 0;
    int32_t n = mnv_graph_n_nodes(g), last = -1;
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (kernels[nd->op]) last = i;
        if (nd->op == MNV_OP_MATMUL) {
            size_t s = mnv_cpu_matmul_scratch_size(mnv_array_rows(nd->src[0]), nd->src[1]->shape[1], nd->src[1]->dtype);
            need = MNV_MAX(need, s);
        } else if (nd->op == MNV_OP_MOE_MATMUL) {
            need = MNV_MAX(need, moe_scratch_size(nd, mnv_threadpool_size(c->tp)));
        } else if (nd->op == MNV_OP_ATTENTION) {
            const mnv_node *q = nd->src[0];
            size_t s = mnv_cpu_attention_scratch_size(q->shape[0], nd->src[1]->shape[2], q->shape[1], q->shape[2],
                                                      mnv_threadpool_size(c->tp));
            need = MNV_MAX(need, s);
        } else if (nd->op == MNV_OP_QMATMUL) {
            size_t s = mnv_cpu_qmatmul_scratch_size(mnv_array_rows(nd->src[0]), nd->p.q.k, &nd->p.q.fmt,
                                                    mnv_threadpool_size(c->tp));
            need = MNV_MAX(need, s);
        }
    }
    if (need > c->scratch_size) {
        mnv_aligned_free(c->scratch);
        c->scratch = mnv_aligned_alloc(64, need);
        c->scratch_size = c->scratch ? need : 0;
        if (!c->scratch) return mnv_set_error(MNV_ERR_NOMEM, "cpu: cannot allocate %zu bytes of scratch", need);
    }
    if (n > c->no_barrier_cap) {
        uint8_t *nb = realloc(c->no_barrier, (size_t)n);
        if (!nb) return mnv_set_error(MNV_ERR_NOMEM, "cpu: cannot allocate the barrier plan of %d nodes", n);
        c->no_barrier = nb;
        c->no_barrier_cap = n;
    }
    plan_barriers(c, g);
    if (b->abort && atomic_load(b->abort))
        return mnv_set_error(MNV_ERR_CANCELLED, "cpu: stopped before node 0 of %d", n);
    c->g = g;
    c->abort = b->abort;
    c->last_node = last;
    atomic_store_explicit(&c->stop_before, -1, memory_order_relaxed);
    mnv_threadpool_run(c->tp, run_graph, c);
    int32_t stop = atomic_load_explicit(&c->stop_before, memory_order_relaxed);
    if (stop < 0) return MNV_OK;
    while (!kernels[mnv_graph_node(g, stop)->op]) stop++; /* name an operation, not a view */
    return mnv_set_error(MNV_ERR_CANCELLED, "cpu: stopped before node %d of %d (%s)", stop, n,
                         mnv_op_name(mnv_graph_node(g, stop)->op));
}

static bool cpu_supports(mnv_backend *b, const mnv_node *n) {
    return n->op == MNV_OP_LEAF || n->op == MNV_OP_VIEW || kernels[n->op] != NULL;
}

/* Host memory: a buffer is its aligned block, and moving bytes is memcpy. */
static mnv_status cpu_alloc(mnv_backend *b, size_t size, mnv_buffer **out) {
    mnv_buffer *buf = calloc(1, sizeof *buf);
    void *p = buf ? mnv_aligned_alloc(64, size) : NULL;
    if (!p) {
        free(buf);
        *out = NULL;
        return mnv_set_error(MNV_ERR_NOMEM, "cpu: cannot allocate a buffer of %zu bytes", size);
    }
    *buf = (mnv_buffer){.backend = b, .device = 0, .size = size, .addr = p};
    *out = buf;
    return MNV_OK;
}
static void cpu_dealloc(mnv_backend *b, mnv_buffer *buf) {
    mnv_aligned_free(buf->addr);
    free(buf);
}
static bool cpu_host_memory(mnv_backend *b) { return true; }
static void *cpu_wrap(mnv_backend *b, const void *host, size_t size) { return (void *)host; }
static mnv_status cpu_upload(mnv_backend *b, mnv_buffer *dst, size_t off, const void *src, size_t size) {
    memcpy((uint8_t *)dst->addr + off, src, size);
    return MNV_OK;
}
static mnv_status cpu_download(mnv_backend *b, void *dst, const mnv_buffer *src, size_t off, size_t size) {
    memcpy(dst, (const uint8_t *)src->addr + off, size);
    return MNV_OK;
}
static mnv_status cpu_copy(mnv_backend *b, mnv_buffer *dst, size_t dst_off, const mnv_buffer *src, size_t src_off,
                           size_t size) {
    memcpy((uint8_t *)dst->addr + dst_off, (const uint8_t *)src->addr + src_off, size);
    return MNV_OK;
}
static void cpu_sync(mnv_backend *b) {}
static int cpu_threads(mnv_backend *b) { return mnv_threadpool_size(((cpu_ctx *)b->ctx)->tp); }

static void cpu_free(mnv_backend *b) {
    cpu_ctx *c = b->ctx;
    mnv_threadpool_free(c->tp);
    mnv_aligned_free(c->scratch);
    free(c->no_barrier);
    free(c);
    free(b);
}

static const mnv_backend_iface cpu_iface = {
    .version = MNV_BACKEND_IFACE_VERSION, .name = "cpu", .free = cpu_free, .buffer_alloc = cpu_alloc,
    .buffer_free = cpu_dealloc, .host_memory = cpu_host_memory, .wrap_host = cpu_wrap, .upload = cpu_upload,
    .download = cpu_download, .copy = cpu_copy, .supports_node = cpu_supports, .compute = cpu_compute, .synchronize = cpu_sync, .n_threads = cpu_threads,
    .plan_lifetimes = cpu_plan_lifetimes,
};

const uint8_t *mnv__cpu_barrier_plan(const mnv_backend *b) {
    return b && b->iface == &cpu_iface ? ((const cpu_ctx *)b->ctx)->no_barrier : NULL;
}

mnv_status mnv_backend_cpu_create(const mnv_backend_params *p, mnv_backend **out) {
    *out = NULL;
    mnv_backend *b = calloc(1, sizeof *b);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return mnv_set_error(MNV_ERR_NOMEM, "cpu backend: out of memory");
    }
    c->exact_quant = p->exact_quant;
    c->row_invariant = p->row_invariant;
    /* never more threads than CPUs to run them: each extra one costs a time
     * slice at every node (mnv_session_stats reports the request) */
    mnv_status st = mnv_threadpool_create(mnv__threads_clamp(p->n_threads), &c->tp);
    if (st != MNV_OK) {
        free(b);
        free(c);
        return st;
    }
    if (p->fixed_width) mnv_threadpool_set_adaptive(c->tp, false);
    b->iface = &cpu_iface;
    b->ctx = c;
    *out = b;
    return MNV_OK;
}

mnv_status mnv_cpu_get_info(mnv_cpu_info *info) {
    if (!info) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_cpu_get_info: info is NULL");
    memset(info, 0, sizeof *info);
    mnv_isa host = MNV_ISA_SCALAR;
    for (int l = 0; l < MNV_ISA_COUNT; l++)
        if (mnv__isa_host((mnv_isa)l)) host = (mnv_isa)l;
    const mnv_vec_ops *v = mnv_vec();
    info->level = mnv__isa_name(mnv__isa_best());
    info->host_level = mnv__isa_name(host);
    info->matmul = mnv_cpu_matmul_impl();
    info->qmatmul = mnv_cpu_qmatmul_impl();
    info->qmatmul_exact = mnv_cpu_qmatmul_impl_exact();
    info->attention = v->attention ? v->name : "scalar";
    info->vec = v->name;
    info->n_cpus = mnv__cpu_count();
    return MNV_OK;
}
