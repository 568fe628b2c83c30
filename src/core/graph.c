#include "core/graph.h"
#include "core/topcands.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

struct mnv_graph {
    mnv_node *nodes;
    int32_t n, cap;
    mnv_status status;
    /* host memory for MNV_NODE_INPUT leaves, reused across resets */
    uint8_t *input_mem;
    size_t input_used, input_cap;
};

static const char *const op_names[] = {
#define MNV_X_STR(name, str) str,
    MNV_OP_LIST(MNV_X_STR)
#undef MNV_X_STR
};

const char *mnv_op_name(mnv_op op) { return (unsigned)op < MNV_OP_COUNT ? op_names[op] : "?"; }

mnv_status mnv_graph_create(int32_t capacity, mnv_graph **out) {
    *out = NULL;
    mnv_graph *g = calloc(1, sizeof *g);
    if (!g) return mnv_set_error(MNV_ERR_NOMEM, "graph: out of memory");
    g->nodes = calloc((size_t)capacity, sizeof *g->nodes);
    g->input_cap = 1 << 16;
    g->input_mem = mnv_aligned_alloc(64, g->input_cap);
    if (!g->nodes || !g->input_mem) {
        mnv_graph_free(g);
        return mnv_set_error(MNV_ERR_NOMEM, "graph: out of memory for %d nodes", capacity);
    }
    g->cap = capacity;
    *out = g;
    return MNV_OK;
}

void mnv_graph_free(mnv_graph *g) {
    if (!g) return;
    free(g->nodes);
    mnv_aligned_free(g->input_mem);
    free(g);
}

void mnv_graph_reset(mnv_graph *g) {
    g->n = 0;
    g->status = MNV_OK;
    g->input_used = 0;
}

int32_t mnv_graph_n_nodes(const mnv_graph *g) { return g->n; }
mnv_node *mnv_graph_node(mnv_graph *g, int32_t i) { return &g->nodes[i]; }
mnv_status mnv_graph_status(const mnv_graph *g) { return g->status; }

static mnv_node *fail(mnv_graph *g, mnv_status s, const char *fmt, ...) {
    if (g->status == MNV_OK) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        mnv_set_error(s, "graph: %s", msg);
        g->status = s;
    }
    return NULL;
}

static void set_contiguous_strides(mnv_node *n) {
    int64_t s = 1;
    for (int i = n->ndim - 1; i >= 0; i--) {
        n->stride[i] = s;
        s *= n->shape[i];
    }
}

int64_t mnv_array_nelem(const mnv_array *a) {
    int64_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

int64_t mnv_array_rows(const mnv_array *a) {
    int64_t n = 1;
    for (int i = 0; i < a->ndim - 1; i++) n *= a->shape[i];
    return n;
}

bool mnv_array_is_contiguous(const mnv_array *a) {
    int64_t s = 1;
    for (int i = a->ndim - 1; i >= 0; i--) {
        if (a->shape[i] != 1 && a->stride[i] != s) return false;
        s *= a->shape[i];
    }
    return true;
}

/* New node with contiguous layout; srcs must be non-NULL (checked by callers
 * through the NULL-propagation in each constructor). */
static mnv_node *new_node(mnv_graph *g, mnv_op op, mnv_dtype dt, int32_t ndim, const int64_t *shape) {
    if (g->status != MNV_OK) return NULL;
    if (g->n >= g->cap) return fail(g, MNV_ERR_RANGE, "more than %d nodes", g->cap);
    if (ndim < 1 || ndim > MNV_MAX_DIMS) return fail(g, MNV_ERR_INVALID_ARG, "%s: ndim %d", mnv_op_name(op), ndim);
    mnv_node *n = &g->nodes[g->n];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->dtype = dt;
    n->ndim = ndim;
    n->id = g->n++;
    n->last_use = -1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return fail(g, MNV_ERR_INVALID_ARG, "%s: negative dim", mnv_op_name(op));
        n->shape[i] = shape[i];
    }
    set_contiguous_strides(n);
    n->nbytes = (size_t)mnv_array_nelem(n) * mnv_dtype_size(dt);
    return n;
}

#define NEED(a)                                                                   \
    do {                                                                          \
        if (!(a)) return fail(g, MNV_ERR_INVALID_ARG, "%s: NULL source", __func__); \
    } while (0)

mnv_array *mnv_param(mnv_graph *g, const void *data, mnv_dtype dt, int32_t ndim, const int64_t *shape,
                     const char *name) {
    mnv_node *n = new_node(g, MNV_OP_LEAF, dt, ndim, shape);
    if (!n) return NULL;
    n->data = (void *)data;
    n->flags |= MNV_NODE_PARAM;
    n->nbytes = 0;
    if (name) snprintf(n->name, sizeof n->name, "%s", name);
    return n;
}

mnv_array *mnv_param_strided(mnv_graph *g, const void *data, mnv_dtype dt, int32_t ndim, const int64_t *shape,
                             const int64_t *strides, const char *name) {
    mnv_node *n = mnv_param(g, data, dt, ndim, shape, name);
    if (n)
        for (int32_t i = 0; i < ndim; i++) n->stride[i] = strides[i];
    return n;
}

mnv_array *mnv_input(mnv_graph *g, mnv_dtype dt, int32_t ndim, const int64_t *shape, const char *name) {
    mnv_node *n = new_node(g, MNV_OP_LEAF, dt, ndim, shape);
    if (!n) return NULL;
    size_t need = (n->nbytes + 63) & ~(size_t)63;
    if (g->input_used + need > g->input_cap) {
        /* Inputs of earlier nodes point into the old block: grow only while
         * the graph holds no input yet, else report (callers size inputs
         * once; the first build of a larger batch resets and retries). */
        if (g->input_used) return fail(g, MNV_ERR_RANGE, "input memory exhausted");
        size_t cap = g->input_cap;
        while (cap < need) cap *= 2;
        uint8_t *m = mnv_aligned_alloc(64, cap);
        if (!m) return fail(g, MNV_ERR_NOMEM, "input memory");
        mnv_aligned_free(g->input_mem);
        g->input_mem = m;
        g->input_cap = cap;
    }
    n->data = n->host = g->input_mem + g->input_used;
    g->input_used += need;
    n->flags |= MNV_NODE_INPUT;
    n->nbytes = 0;
    if (name) snprintf(n->name, sizeof n->name, "%s", name);
    return n;
}

mnv_status mnv_graph_reserve_inputs(mnv_graph *g, size_t bytes) {
    if (bytes <= g->input_cap) return MNV_OK;
    if (g->input_used) return mnv_set_error(MNV_ERR_INTERNAL, "graph: reserve_inputs after inputs were created");
    size_t cap = g->input_cap;
    while (cap < bytes) cap *= 2;
    uint8_t *m = mnv_aligned_alloc(64, cap);
    if (!m) return mnv_set_error(MNV_ERR_NOMEM, "graph: %zu bytes of input memory", cap);
    mnv_aligned_free(g->input_mem);
    g->input_mem = m;
    g->input_cap = cap;
    return MNV_OK;
}

void *mnv_input_data(mnv_array *a) { return a ? a->host : NULL; }

static mnv_node *make_view(mnv_graph *g, mnv_array *a, int32_t ndim, const int64_t *shape) {
    mnv_node *n = new_node(g, MNV_OP_VIEW, a->dtype, ndim, shape);
    if (!n) return NULL;
    n->src[0] = a;
    n->view_src = a->view_src ? a->view_src : a;
    n->view_offset = a->view_offset;
    n->nbytes = 0;
    return n;
}

mnv_array *mnv_reshape(mnv_graph *g, mnv_array *a, int32_t ndim, const int64_t *shape) {
    NEED(a);
    int64_t ne = 1;
    for (int i = 0; i < ndim; i++) ne *= shape[i];
    if (ne != mnv_array_nelem(a))
        return fail(g, MNV_ERR_INVALID_ARG, "reshape of %lld elements to %lld", (long long)mnv_array_nelem(a),
                    (long long)ne);
    if (!mnv_array_is_contiguous(a)) a = mnv_contiguous(g, a);
    if (!a) return NULL;
    return make_view(g, a, ndim, shape);
}

mnv_array *mnv_reshape_2d(mnv_graph *g, mnv_array *a, int64_t d0, int64_t d1) {
    int64_t s[2] = {d0, d1};
    return mnv_reshape(g, a, 2, s);
}

mnv_array *mnv_reshape_3d(mnv_graph *g, mnv_array *a, int64_t d0, int64_t d1, int64_t d2) {
    int64_t s[3] = {d0, d1, d2};
    return mnv_reshape(g, a, 3, s);
}

mnv_array *mnv_transpose(mnv_graph *g, mnv_array *a, int32_t d0, int32_t d1) {
    NEED(a);
    if (d0 < 0 || d1 < 0 || d0 >= a->ndim || d1 >= a->ndim)
        return fail(g, MNV_ERR_INVALID_ARG, "transpose dims %d,%d of a %d-d array", d0, d1, a->ndim);
    int64_t shape[MNV_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d0] = a->shape[d1];
    shape[d1] = a->shape[d0];
    mnv_node *n = make_view(g, a, a->ndim, shape);
    if (!n) return NULL;
    memcpy(n->stride, a->stride, sizeof n->stride);
    n->stride[d0] = a->stride[d1];
    n->stride[d1] = a->stride[d0];
    return n;
}

mnv_array *mnv_slice_rows(mnv_graph *g, mnv_array *a, int64_t start, int64_t count) {
    NEED(a);
    if (start < 0 || count < 0 || start + count > a->shape[0])
        return fail(g, MNV_ERR_RANGE, "slice [%lld, %lld) of %lld rows", (long long)start,
                    (long long)(start + count), (long long)a->shape[0]);
    int64_t shape[MNV_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[0] = count;
    mnv_node *n = make_view(g, a, a->ndim, shape);
    if (!n) return NULL;
    memcpy(n->stride, a->stride, sizeof n->stride);
    n->view_offset += (size_t)(start * a->stride[0]) * mnv_dtype_size(a->dtype);
    return n;
}

mnv_array *mnv_cast(mnv_graph *g, mnv_array *a, mnv_dtype dt) {
    NEED(a);
    if (dt != MNV_DTYPE_F32 && dt != MNV_DTYPE_F16 && dt != MNV_DTYPE_BF16)
        return fail(g, MNV_ERR_UNSUPPORTED, "cast to %s", mnv_dtype_name(dt));
    mnv_node *n = new_node(g, MNV_OP_COPY, dt, a->ndim, a->shape);
    if (n) n->src[0] = a;
    return n;
}

mnv_array *mnv_contiguous(mnv_graph *g, mnv_array *a) { return a ? mnv_cast(g, a, a->dtype) : NULL; }

/* a itself when it is contiguous f32 (what kernels read), else a copy that is. */
static mnv_array *as_f32(mnv_graph *g, mnv_array *a) {
    return mnv_array_is_contiguous(a) && a->dtype == MNV_DTYPE_F32 ? a : mnv_cast(g, a, MNV_DTYPE_F32);
}

static bool is_float(mnv_dtype t) { return t == MNV_DTYPE_F32 || t == MNV_DTYPE_F16 || t == MNV_DTYPE_BF16; }

/* Elementwise binary op: b has the same shape as a, or is one row broadcast
 * over a's rows. a must be contiguous f32 (activations); b any float dtype. */
static mnv_array *binary(mnv_graph *g, mnv_op op, mnv_array *a, mnv_array *b) {
    NEED(a);
    NEED(b);
    a = as_f32(g, a);
    if (!mnv_array_is_contiguous(b)) b = mnv_contiguous(g, b);
    if (!a || !b) return NULL;
    int64_t inner = a->shape[a->ndim - 1];
    bool same = mnv_array_nelem(a) == mnv_array_nelem(b);
    bool row = mnv_array_nelem(b) == inner && b->shape[b->ndim - 1] == inner;
    if (!is_float(b->dtype) || (!same && !row))
        return fail(g, MNV_ERR_INVALID_ARG, "%s: cannot broadcast %lld elements over rows of %lld", mnv_op_name(op),
                    (long long)mnv_array_nelem(b), (long long)inner);
    mnv_node *n = new_node(g, op, MNV_DTYPE_F32, a->ndim, a->shape);
    if (!n) return NULL;
    n->src[0] = a;
    n->src[1] = b;
    return n;
}

mnv_array *mnv_add(mnv_graph *g, mnv_array *a, mnv_array *b) { return binary(g, MNV_OP_ADD, a, b); }
mnv_array *mnv_mul(mnv_graph *g, mnv_array *a, mnv_array *b) { return binary(g, MNV_OP_MUL, a, b); }

static mnv_array *unary(mnv_graph *g, mnv_op op, mnv_array *a) {
    NEED(a);
    a = as_f32(g, a);
    if (!a) return NULL;
    mnv_node *n = new_node(g, op, MNV_DTYPE_F32, a->ndim, a->shape);
    if (n) n->src[0] = a;
    return n;
}

mnv_array *mnv_scale(mnv_graph *g, mnv_array *a, float s) {
    mnv_node *n = unary(g, MNV_OP_SCALE, a);
    if (n) n->p.f[0] = s;
    return n;
}
mnv_array *mnv_softmax(mnv_graph *g, mnv_array *x) { return unary(g, MNV_OP_SOFTMAX, x); }
mnv_array *mnv_silu(mnv_graph *g, mnv_array *x) { return unary(g, MNV_OP_SILU, x); }
mnv_array *mnv_gelu(mnv_graph *g, mnv_array *x) { return unary(g, MNV_OP_GELU, x); }

mnv_array *mnv_silu_mul(mnv_graph *g, mnv_array *gate, mnv_array *up) {
    NEED(gate);
    NEED(up);
    if (mnv_array_nelem(gate) != mnv_array_nelem(up)) return fail(g, MNV_ERR_INVALID_ARG, "silu_mul: shapes differ");
    mnv_node *n = binary(g, MNV_OP_SILU_MUL, gate, up);
    return n;
}

mnv_array *mnv_rms_norm(mnv_graph *g, mnv_array *x, mnv_array *w, float eps) {
    NEED(x);
    if (w && (w->ndim != 1 || w->shape[0] != x->shape[x->ndim - 1] || w->dtype != MNV_DTYPE_F32))
        return fail(g, MNV_ERR_INVALID_ARG, "rms_norm: weight must be f32 of %lld", (long long)x->shape[x->ndim - 1]);
    mnv_node *n = unary(g, MNV_OP_RMS_NORM, x);
    if (!n) return NULL;
    n->src[1] = w;
    n->p.norm.eps = eps;
    return n;
}

/* x (.., k) times the rows of w (n, ..): an f32 (.., n) node of op with
 * x and w as its first sources. */
static mnv_node *product_node(mnv_graph *g, mnv_op op, mnv_array *x, mnv_array *w, int64_t k) {
    if (x->shape[x->ndim - 1] != k)
        return fail(g, MNV_ERR_INVALID_ARG, "%s: x has %lld columns, weight '%s' has %lld", mnv_op_name(op),
                    (long long)x->shape[x->ndim - 1], w->name, (long long)k);
    if (!(x = as_f32(g, x))) return NULL;
    int64_t shape[MNV_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = w->shape[0];
    mnv_node *n = new_node(g, op, MNV_DTYPE_F32, x->ndim, shape);
    if (!n) return NULL;
    n->src[0] = x;
    n->src[1] = w;
    return n;
}

mnv_array *mnv_matmul(mnv_graph *g, mnv_array *x, mnv_array *w) {
    NEED(x);
    NEED(w);
    if (w->ndim != 2 || w->stride[1] != 1 || !is_float(w->dtype))
        return fail(g, MNV_ERR_INVALID_ARG, "matmul: weight must be a 2-d float array with contiguous rows");
    return product_node(g, MNV_OP_MATMUL, x, w, w->shape[1]);
}

mnv_array *mnv_rope(mnv_graph *g, mnv_array *x, mnv_array *pos, mnv_array *inv_freq, int32_t n_rot, int traditional,
                    float attn_factor) {
    NEED(x);
    NEED(pos);
    NEED(inv_freq);
    int64_t D = x->shape[x->ndim - 1];
    if (x->ndim != 3 || n_rot <= 0 || n_rot > D || n_rot % 2)
        return fail(g, MNV_ERR_INVALID_ARG, "rope: x must be (T, H, D) with even n_rot <= D");
    if (pos->dtype != MNV_DTYPE_I32 || mnv_array_nelem(pos) != x->shape[0])
        return fail(g, MNV_ERR_INVALID_ARG, "rope: pos must be i32 of T");
    if (inv_freq->dtype != MNV_DTYPE_F32 || mnv_array_nelem(inv_freq) != n_rot / 2)
        return fail(g, MNV_ERR_INVALID_ARG, "rope: inv_freq must be f32 of n_rot/2");
    mnv_node *n = unary(g, MNV_OP_ROPE, x);
    if (!n) return NULL;
    n->src[1] = pos;
    n->src[2] = inv_freq;
    n->p.rope.n_rot = n_rot;
    n->p.rope.traditional = traditional;
    n->p.rope.attn_factor = attn_factor;
    return n;
}

mnv_array *mnv_hadamard(mnv_graph *g, mnv_array *x, int32_t block) {
    NEED(x);
    int64_t D = x->shape[x->ndim - 1];
    if (block < 1 || (block & (block - 1)) || D % block)
        return fail(g, MNV_ERR_INVALID_ARG, "hadamard: block %d must be a power of two dividing the last dim %lld",
                    block, (long long)D);
    mnv_node *n = unary(g, MNV_OP_HADAMARD, x);
    if (n) n->p.i[0] = block;
    return n;
}

mnv_array *mnv_get_rows(mnv_graph *g, mnv_array *table, mnv_array *ids) {
    NEED(table);
    NEED(ids);
    if (table->ndim != 2 || table->stride[1] != 1 || !is_float(table->dtype))
        return fail(g, MNV_ERR_INVALID_ARG, "get_rows: table must be 2-d float with contiguous rows");
    if (ids->dtype != MNV_DTYPE_I32 || ids->ndim != 1)
        return fail(g, MNV_ERR_INVALID_ARG, "get_rows: ids must be 1-d i32");
    int64_t shape[2] = {ids->shape[0], table->shape[1]};
    mnv_node *n = new_node(g, MNV_OP_GET_ROWS, MNV_DTYPE_F32, 2, shape);
    if (!n) return NULL;
    n->src[0] = table;
    n->src[1] = ids;
    return n;
}

mnv_array *mnv_kv_param(mnv_graph *g, void *data, const mnv_kv_layout *lay, int64_t n_blocks, int64_t block_tokens,
                        int64_t n_head_kv, int64_t block_stride, const char *name) {
    mnv_dtype dt = mnv_kv_storage_dtype((mnv_kv_type)lay->type);
    int64_t es = (int64_t)mnv_dtype_size(dt), row = dt == MNV_DTYPE_U8 ? lay->row_bytes : lay->head_dim;
    if (block_stride % es)
        return fail(g, MNV_ERR_INVALID_ARG, "kv cache '%s': block stride %lld is not whole elements", name,
                    (long long)block_stride);
    int64_t shape[4] = {n_blocks, block_tokens, n_head_kv, row};
    int64_t strides[4] = {block_stride / es, n_head_kv * row, row, 1};
    mnv_node *n = mnv_param_strided(g, data, dt, 4, shape, strides, name);
    if (n) n->p.kv = *lay;
    return n;
}

static bool paged_cache_ok(const mnv_array *c) {
    return c->ndim == 4 && c->stride[3] == 1 && c->stride[2] == c->shape[3] &&
           c->stride[1] == c->shape[2] * c->shape[3] && c->stride[0] >= c->shape[1] * c->stride[1];
}

bool mnv_kv_layout_of(const mnv_array *c, mnv_kv_layout *out) {
    if (!paged_cache_ok(c)) return false;
    if (c->p.kv.row_bytes > 0) { /* recorded by mnv_kv_param */
        *out = c->p.kv;
        return mnv_kv_storage_dtype((mnv_kv_type)out->type) == c->dtype &&
               c->shape[3] == (c->dtype == MNV_DTYPE_U8 ? out->row_bytes : out->head_dim);
    }
    mnv_kv_type t = c->dtype == MNV_DTYPE_F32 ? MNV_KV_F32 : c->dtype == MNV_DTYPE_F16 ? MNV_KV_F16
                  : c->dtype == MNV_DTYPE_BF16 ? MNV_KV_BF16 : MNV_KV_DEFAULT;
    return t != MNV_KV_DEFAULT && mnv_kv_layout_make(t, (int32_t)c->shape[3], 0, out) == MNV_OK;
}

mnv_array *mnv_cache_write(mnv_graph *g, mnv_array *cache, mnv_array *rows, mnv_array *slot) {
    NEED(cache);
    NEED(rows);
    NEED(slot);
    mnv_kv_layout lay;
    if (!mnv_kv_layout_of(cache, &lay))
        return fail(g, MNV_ERR_INVALID_ARG, "cache_write: cache '%s' must be blocks of contiguous rows of a KV type",
                    cache->name);
    if (rows->ndim != 3 || cache->shape[2] != rows->shape[1] || lay.head_dim != rows->shape[2])
        return fail(g, MNV_ERR_INVALID_ARG, "cache_write: rows (T, Hkv, D) do not match cache (NB, B, Hkv, D)");
    if (slot->dtype != MNV_DTYPE_I32 || mnv_array_nelem(slot) != rows->shape[0])
        return fail(g, MNV_ERR_INVALID_ARG, "cache_write: slot must be I32 of T");
    rows = as_f32(g, rows);
    if (!rows) return NULL;
    mnv_node *n = new_node(g, MNV_OP_CACHE_WRITE, cache->dtype, 4, cache->shape);
    if (!n) return NULL;
    for (int i = 0; i < 4; i++) n->stride[i] = cache->stride[i];
    n->src[0] = cache;
    n->src[1] = rows;
    n->src[2] = slot;
    n->p.kv = lay;
    n->view_src = cache->view_src ? cache->view_src : cache;
    n->view_offset = cache->view_offset;
    n->nbytes = 0;
    return n;
}

mnv_array *mnv_attention(mnv_graph *g, mnv_array *q, mnv_array *kc, mnv_array *vc, mnv_array *tables,
                         mnv_array *seq, mnv_array *pos, mnv_array *sinks, float scale, int32_t window) {
    NEED(q);
    NEED(kc);
    NEED(vc);
    NEED(seq);
    NEED(pos);
    mnv_kv_layout kl, vl;
    if (!mnv_kv_layout_of(kc, &kl) || !mnv_kv_layout_of(vc, &vl))
        return fail(g, MNV_ERR_INVALID_ARG, "attention: caches must be blocks of contiguous rows of a KV type");
    if (q->ndim != 3 || kl.head_dim != q->shape[2] || vl.head_dim != q->shape[2] || kc->shape[2] != vc->shape[2] ||
        q->shape[1] % kc->shape[2] != 0 || kc->shape[1] != vc->shape[1] || kc->shape[0] != vc->shape[0])
        return fail(g, MNV_ERR_INVALID_ARG, "attention: q (T, H, D) and caches (NB, B, Hkv, D) disagree");
    if (tables && (tables->dtype != MNV_DTYPE_I32 || tables->ndim != 2))
        return fail(g, MNV_ERR_INVALID_ARG, "attention: block tables must be (S, W) I32");
    if (sinks && (sinks->dtype != MNV_DTYPE_F32 || mnv_array_nelem(sinks) != q->shape[1]))
        return fail(g, MNV_ERR_INVALID_ARG, "attention: sinks must be f32 of H");
    mnv_node *n = unary(g, MNV_OP_ATTENTION, q);
    if (!n) return NULL;
    n->src[1] = kc;
    n->src[2] = vc;
    n->src[3] = tables;
    n->src[4] = seq;
    n->src[5] = pos;
    n->src[6] = sinks;
    n->p.attn.scale = scale;
    n->p.attn.window = window;
    return n;
}

/* Shared checks of the quantized ops: packed words, scale and bias shapes. */
static bool check_quant(mnv_graph *g, const char *op, mnv_array *w, mnv_array *sc, mnv_array *bi,
                        const mnv_qformat *fmt, int64_t k) {
    char what[96];
    snprintf(what, sizeof what, "%s: weight '%s'", op, w->name);
    if (mnv_qformat_check(fmt, what) != MNV_OK) {
        fail(g, MNV_ERR_INVALID_ARG, "%s", mnv_last_error());
        return false;
    }
    int64_t n = w->shape[0];
    bool ok = w->ndim == 2 && w->dtype == MNV_DTYPE_U32 && w->stride[1] == 1 &&
              w->shape[1] == mnv_qformat_row_words(fmt, k) && sc && sc->ndim == 2 && sc->shape[0] == n &&
              sc->shape[1] == mnv_qformat_row_groups(fmt, k) && sc->stride[1] == 1 && sc->dtype == fmt->scale_dtype;
    if (ok && fmt->mode == MNV_QMODE_AFFINE)
        ok = bi && bi->ndim == 2 && bi->shape[0] == n && bi->shape[1] == sc->shape[1] && bi->dtype == sc->dtype &&
             bi->stride[0] == sc->stride[0] && bi->stride[1] == 1;
    if (!ok) fail(g, MNV_ERR_INVALID_ARG, "%s: packed weight, scales and biases disagree with k = %lld", what, (long long)k);
    return ok;
}

mnv_array *mnv_qmatmul(mnv_graph *g, mnv_array *x, mnv_array *w, mnv_array *scales, mnv_array *biases,
                       const mnv_qformat *fmt, int64_t k) {
    NEED(x);
    NEED(w);
    NEED(scales);
    if (!check_quant(g, "qmatmul", w, scales, biases, fmt, k)) return NULL;
    mnv_node *n = product_node(g, MNV_OP_QMATMUL, x, w, k);
    if (!n) return NULL;
    n->src[2] = scales;
    n->src[3] = fmt->mode == MNV_QMODE_AFFINE ? biases : NULL;
    n->p.q.fmt = *fmt;
    n->p.q.k = (int32_t)k;
    n->p.q.global_scale = 1.0f;
    return n;
}

mnv_array *mnv_qget_rows(mnv_graph *g, mnv_array *w, mnv_array *scales, mnv_array *biases, const mnv_qformat *fmt,
                         int64_t k, mnv_array *ids) {
    NEED(w);
    NEED(scales);
    NEED(ids);
    if (!check_quant(g, "qget_rows", w, scales, biases, fmt, k)) return NULL;
    if (ids->dtype != MNV_DTYPE_I32 || ids->ndim != 1)
        return fail(g, MNV_ERR_INVALID_ARG, "qget_rows: ids must be 1-d i32");
    int64_t shape[2] = {ids->shape[0], k};
    mnv_node *n = new_node(g, MNV_OP_QGET_ROWS, MNV_DTYPE_F32, 2, shape);
    if (!n) return NULL;
    n->src[0] = w;
    n->src[1] = ids;
    n->src[2] = scales;
    n->src[3] = fmt->mode == MNV_QMODE_AFFINE ? biases : NULL;
    n->p.q.fmt = *fmt;
    n->p.q.k = (int32_t)k;
    n->p.q.global_scale = 1.0f;
    return n;
}

mnv_array *mnv_view(mnv_graph *g, mnv_array *a, int32_t ndim, const int64_t *shape, const int64_t *strides,
                    int64_t offset) {
    NEED(a);
    if (a->op != MNV_OP_LEAF && !mnv_array_is_contiguous(a))
        return fail(g, MNV_ERR_INVALID_ARG, "view: source must be contiguous or a leaf");
    int64_t last = offset, total = a->op == MNV_OP_LEAF ? mnv_array_nelem(a) : mnv_array_nelem(a);
    for (int i = 0; i < ndim; i++) last += (shape[i] - 1) * strides[i];
    if (offset < 0 || (mnv_array_nelem(a) > 0 && last >= total))
        return fail(g, MNV_ERR_RANGE, "view of '%s' reaches element %lld of %lld", a->name, (long long)last,
                    (long long)total);
    mnv_node *n = make_view(g, a, ndim, shape);
    if (!n) return NULL;
    for (int i = 0; i < ndim; i++) n->stride[i] = strides[i];
    n->view_offset += (size_t)offset * mnv_dtype_size(a->dtype);
    snprintf(n->name, sizeof n->name, "%s", a->name);
    return n;
}

mnv_array *mnv_topk(mnv_graph *g, mnv_array *logits, int32_t k) {
    NEED(logits);
    if (logits->ndim != 2 || k < 1 || k > logits->shape[1])
        return fail(g, MNV_ERR_INVALID_ARG, "topk: k = %d of a (T, %lld) array", k, (long long)logits->shape[1]);
    logits = as_f32(g, logits);
    if (!logits) return NULL;
    int64_t shape[2] = {logits->shape[0], k};
    mnv_node *n = new_node(g, MNV_OP_TOPK, MNV_DTYPE_I32, 2, shape);
    if (n) n->src[0] = logits;
    return n;
}

/* A row reduction of (T, n) logits with 1 <= n <= max_n: (T) when cols is
 * 0, else (T, cols). */
static mnv_array *logits_rows_op(mnv_graph *g, mnv_array *logits, mnv_op op, mnv_dtype dt, int64_t cols, int64_t max_n,
                                 const char *what, const char *max_text) {
    NEED(logits);
    if (logits->ndim != 2 || logits->shape[1] < 1 || logits->shape[1] > max_n)
        return fail(g, MNV_ERR_INVALID_ARG, "%s: needs a (T, n) array with 1 <= n <= %s", what, max_text);
    logits = as_f32(g, logits);
    if (!logits) return NULL;
    int64_t shape[2] = {logits->shape[0], cols};
    mnv_node *n = new_node(g, op, dt, cols ? 2 : 1, shape);
    if (n) n->src[0] = logits;
    return n;
}

mnv_array *mnv_argmax(mnv_graph *g, mnv_array *logits) {
    return logits_rows_op(g, logits, MNV_OP_ARGMAX, MNV_DTYPE_I32, 0, INT32_MAX, "argmax", "2^31 - 1");
}

mnv_array *mnv_top_cands(mnv_graph *g, mnv_array *logits) {
    return logits_rows_op(g, logits, MNV_OP_TOP_CANDS, MNV_DTYPE_F32, MNV_TOP_CANDS_ROW, 1 << 24, "top_cands", "2^24");
}

mnv_array *mnv_gather_softmax(mnv_graph *g, mnv_array *logits, mnv_array *ids) {
    NEED(logits);
    NEED(ids);
    if (ids->ndim != 2 || ids->dtype != MNV_DTYPE_I32 || logits->ndim != 2 || ids->shape[0] != logits->shape[0])
        return fail(g, MNV_ERR_INVALID_ARG, "gather_softmax: logits (T, E) and ids (T, k) disagree");
    logits = as_f32(g, logits);
    if (!logits) return NULL;
    mnv_node *n = new_node(g, MNV_OP_GATHER_SOFTMAX, MNV_DTYPE_F32, 2, ids->shape);
    if (!n) return NULL;
    n->src[0] = logits;
    n->src[1] = ids;
    return n;
}

static bool moe_weight_ok(mnv_graph *g, mnv_array *w, mnv_array *sc, mnv_array *bi, const mnv_qformat *fmt, int64_t k) {
    bool quant = fmt && fmt->mode != MNV_QMODE_NONE;
    if (w->ndim != 3 || w->stride[2] != 1) return false;
    if (!quant) return is_float(w->dtype) && w->shape[2] == k;
    if (mnv_qformat_check(fmt, w->name) != MNV_OK) {
        fail(g, MNV_ERR_INVALID_ARG, "%s", mnv_last_error());
        return false;
    }
    int64_t groups = mnv_qformat_row_groups(fmt, k);
    bool ok = w->dtype == MNV_DTYPE_U32 && w->shape[2] == mnv_qformat_row_words(fmt, k) && sc && sc->ndim == 3 &&
              sc->shape[0] == w->shape[0] && sc->shape[1] == w->shape[1] && sc->shape[2] == groups &&
              sc->stride[2] == 1 && sc->dtype == fmt->scale_dtype;
    if (ok && fmt->mode == MNV_QMODE_AFFINE)
        ok = bi && bi->ndim == 3 && bi->shape[0] == w->shape[0] && bi->shape[1] == w->shape[1] &&
             bi->shape[2] == groups && bi->stride[2] == 1 &&
             bi->stride[1] == sc->stride[1] && bi->stride[0] == sc->stride[0] && bi->dtype == sc->dtype;
    return ok;
}

mnv_array *mnv_moe_matmul(mnv_graph *g, mnv_array *x, mnv_array *w, mnv_array *scales, mnv_array *biases,
                          const mnv_qformat *fmt, int64_t k, mnv_array *ids, mnv_array *bias) {
    NEED(x);
    NEED(w);
    NEED(ids);
    int64_t T = ids->shape[0], kk = ids->shape[1], E = w->shape[0], N = w->shape[1];
    if (!moe_weight_ok(g, w, scales, biases, fmt, k))
        return g->status ? NULL : fail(g, MNV_ERR_INVALID_ARG, "moe_matmul: experts '%s' do not hold (E, N, %lld)", w->name, (long long)k);
    bool per_slot = x->ndim == 3;
    if (x->shape[0] != T || x->shape[x->ndim - 1] != k || (per_slot && x->shape[1] != kk) || ids->dtype != MNV_DTYPE_I32)
        return fail(g, MNV_ERR_INVALID_ARG, "moe_matmul: x must be (T, K) or (T, k, K) with ids (T, k)");
    if (bias && (bias->ndim != 2 || bias->shape[0] != E || bias->shape[1] != N || bias->dtype != MNV_DTYPE_F32))
        return fail(g, MNV_ERR_INVALID_ARG, "moe_matmul: bias must be f32 (E, N)");
    x = as_f32(g, x);
    if (!x) return NULL;
    int64_t shape[3] = {T, kk, N};
    mnv_node *n = new_node(g, MNV_OP_MOE_MATMUL, MNV_DTYPE_F32, 3, shape);
    if (!n) return NULL;
    n->src[0] = x;
    n->src[1] = w;
    n->src[2] = ids;
    n->src[3] = bias;
    bool quant = fmt && fmt->mode != MNV_QMODE_NONE;
    n->src[4] = quant ? scales : NULL;
    n->src[5] = quant && fmt->mode == MNV_QMODE_AFFINE ? biases : NULL;
    if (quant) n->p.q.fmt = *fmt;
    n->p.q.k = (int32_t)k;
    n->p.q.global_scale = 1.0f;
    return n;
}

mnv_array *mnv_swiglu_oai(mnv_graph *g, mnv_array *gate, mnv_array *up, float alpha, float limit) {
    NEED(gate);
    NEED(up);
    if (mnv_array_nelem(gate) != mnv_array_nelem(up)) return fail(g, MNV_ERR_INVALID_ARG, "swiglu_oai: shapes differ");
    mnv_node *n = binary(g, MNV_OP_SWIGLU_OAI, gate, up);
    if (!n) return NULL;
    n->p.swiglu.alpha = alpha;
    n->p.swiglu.limit = limit;
    return n;
}

mnv_array *mnv_moe_sum(mnv_graph *g, mnv_array *y, mnv_array *w) {
    NEED(y);
    NEED(w);
    if (y->ndim != 3 || w->ndim != 2 || w->shape[0] != y->shape[0] || w->shape[1] != y->shape[1] ||
        w->dtype != MNV_DTYPE_F32)
        return fail(g, MNV_ERR_INVALID_ARG, "moe_sum: y (T, k, N) and weights (T, k) disagree");
    if (!mnv_array_is_contiguous(y)) y = mnv_contiguous(g, y);
    if (!y) return NULL;
    int64_t shape[2] = {y->shape[0], y->shape[2]};
    mnv_node *n = new_node(g, MNV_OP_MOE_SUM, MNV_DTYPE_F32, 2, shape);
    if (!n) return NULL;
    n->src[0] = y;
    n->src[1] = w;
    return n;
}

void mnv_set_output(mnv_array *a) {
    if (a) a->flags |= MNV_NODE_OUTPUT;
}

void mnv_set_name(mnv_array *a, const char *fmt, ...) {
    if (!a) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->name, sizeof a->name, fmt, ap);
    va_end(ap);
}

mnv_status mnv_graph_dump_dot(const mnv_graph *g, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return mnv_set_error(MNV_ERR_IO, "%s: cannot open for writing", path);
    fprintf(f, "digraph minerva {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=9];\n");
    for (int32_t i = 0; i < g->n; i++) {
        const mnv_node *n = &g->nodes[i];
        const char *color = n->op == MNV_OP_LEAF ? (n->flags & MNV_NODE_PARAM ? "lightblue" : "lightyellow")
                            : n->op == MNV_OP_VIEW ? "lightgrey"
                                                   : "white";
        fprintf(f, "  n%d [label=\"#%d %s %s\\n%s [", i, i, mnv_op_name(n->op), n->name, mnv_dtype_name(n->dtype));
        for (int d = 0; d < n->ndim; d++) fprintf(f, d ? ", %lld" : "%lld", (long long)n->shape[d]);
        fprintf(f, "]\", style=filled, fillcolor=%s%s];\n", color, n->flags & MNV_NODE_OUTPUT ? ", penwidth=3" : "");
        for (int s = 0; s < MNV_MAX_SRC; s++)
            if (n->src[s]) fprintf(f, "  n%d -> n%d;\n", n->src[s]->id, i);
    }
    fprintf(f, "}\n");
    if (fclose(f) != 0) return mnv_set_error(MNV_ERR_IO, "%s: write failed", path);
    return MNV_OK;
}
