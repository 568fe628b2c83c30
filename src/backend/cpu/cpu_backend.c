/* The CPU backend: runs a planned graph on a persistent thread pool. One
 * pool wake-up per graph; every thread walks the node list, computes its
 * share of each node (split by rows), and meets the others at a barrier. */
#include <stdlib.h>

#include "backend/backend.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/qmatmul.h"
#include "core/threadpool.h"

typedef struct {
    mnv_threadpool *tp;
    void *scratch;
    size_t scratch_size;
    mnv_graph *g; /* graph being run */
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
        .scratch = c->scratch, .barrier = cpu_barrier, .barrier_ctx = c,
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
    return (mnv_cache_shape){cache->shape[0], cache->shape[1], cache->shape[2], cache->shape[3], cache->dtype};
}

static void k_cache_write(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    int64_t lo, hi;
    split(n->src[1]->shape[0], ith, nth, &lo, &hi);
    mnv_cache_shape cs = cache_shape(n);
    mnv_cpu_cache_write(&cs, n->data, n->src[1]->data, n->src[2]->data, n->src[3]->data, lo, hi);
}

static void k_attention(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *q = n->src[0];
    mnv_attn_args a = {
        .cache = cache_shape(n->src[1]), .n_head = (int32_t)q->shape[1], .scale = n->p.attn.scale,
        .window = n->p.attn.window, .sinks = n->src[5] ? n->src[5]->data : NULL, .k = n->src[1]->data,
        .v = n->src[2]->data, .q = q->data, .seq = n->src[3]->data, .pos = n->src[4]->data, .out = n->data,
    };
    int64_t lo, hi;
    split(q->shape[0] * q->shape[1], ith, nth, &lo, &hi);
    mnv_cpu_attention(&a, lo, hi);
}

static void k_qmatmul(cpu_ctx *c, mnv_node *n, int ith, int nth) {
    const mnv_node *x = n->src[0], *w = n->src[1], *sc = n->src[2], *bi = n->src[3];
    mnv_qmatmul_args a = {
        .x = x->data, .ldx = x->shape[x->ndim - 1], .w = w->data, .ldw = w->stride[0], .scales = sc->data,
        .biases = bi ? bi->data : NULL, .lds = sc->stride[0], .fmt = n->p.q.fmt, .global_scale = n->p.q.global_scale,
        .y = n->data, .ldy = n->shape[n->ndim - 1], .m = mnv_array_rows(x), .n = w->shape[0], .k = n->p.q.k,
        .scratch = c->scratch, .barrier = cpu_barrier, .barrier_ctx = c,
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

static const cpu_kernel kernels[MNV_OP_COUNT] = {
    [MNV_OP_QMATMUL] = k_qmatmul,   [MNV_OP_QGET_ROWS] = k_qget_rows,
    [MNV_OP_COPY] = k_copy,         [MNV_OP_ADD] = k_binary,      [MNV_OP_MUL] = k_binary,
    [MNV_OP_SILU_MUL] = k_binary,   [MNV_OP_SCALE] = k_unary,     [MNV_OP_SOFTMAX] = k_unary,
    [MNV_OP_SILU] = k_unary,        [MNV_OP_GELU] = k_unary,      [MNV_OP_RMS_NORM] = k_unary,
    [MNV_OP_MATMUL] = k_matmul,     [MNV_OP_ROPE] = k_rope,       [MNV_OP_GET_ROWS] = k_get_rows,
    [MNV_OP_CACHE_WRITE] = k_cache_write, [MNV_OP_ATTENTION] = k_attention,
};

static void run_graph(void *arg, int ith, int nth) {
    cpu_ctx *c = arg;
    int32_t n = mnv_graph_n_nodes(c->g);
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(c->g, i);
        cpu_kernel k = kernels[nd->op];
        if (!k) continue;
        k(c, nd, ith, nth);
        mnv_threadpool_barrier(c->tp);
    }
}

static mnv_status cpu_compute(mnv_backend *b, mnv_graph *g) {
    cpu_ctx *c = b->ctx;
    size_t need = 0;
    int32_t n = mnv_graph_n_nodes(g);
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (nd->op == MNV_OP_MATMUL) {
            size_t s = mnv_cpu_matmul_scratch_size(mnv_array_rows(nd->src[0]), nd->src[1]->shape[1], nd->src[1]->dtype);
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
    c->g = g;
    mnv_threadpool_run(c->tp, run_graph, c);
    return MNV_OK;
}

static bool cpu_supports(mnv_backend *b, const mnv_node *n) {
    return n->op == MNV_OP_LEAF || n->op == MNV_OP_VIEW || kernels[n->op] != NULL;
}

static void *cpu_alloc(mnv_backend *b, size_t size) { return mnv_aligned_alloc(64, size); }
static void cpu_dealloc(mnv_backend *b, void *p) { mnv_aligned_free(p); }
static void *cpu_wrap(mnv_backend *b, const void *host, size_t size) { return (void *)host; }
static mnv_status cpu_copy(mnv_backend *b, void *dst, const void *src, size_t size) {
    memcpy(dst, src, size);
    return MNV_OK;
}
static void cpu_sync(mnv_backend *b) {}
static int cpu_threads(mnv_backend *b) { return mnv_threadpool_size(((cpu_ctx *)b->ctx)->tp); }

static void cpu_free(mnv_backend *b) {
    cpu_ctx *c = b->ctx;
    mnv_threadpool_free(c->tp);
    mnv_aligned_free(c->scratch);
    free(c);
    free(b);
}

static const mnv_backend_iface cpu_iface = {
    .version = MNV_BACKEND_IFACE_VERSION, .name = "cpu", .free = cpu_free, .buffer_alloc = cpu_alloc,
    .buffer_free = cpu_dealloc, .wrap_host = cpu_wrap, .upload = cpu_copy, .download = cpu_copy,
    .supports_node = cpu_supports, .compute = cpu_compute, .synchronize = cpu_sync, .n_threads = cpu_threads,
};

mnv_status mnv_backend_cpu_create(int n_threads, mnv_backend **out) {
    *out = NULL;
    mnv_backend *b = calloc(1, sizeof *b);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return mnv_set_error(MNV_ERR_NOMEM, "cpu backend: out of memory");
    }
    mnv_status st = mnv_threadpool_create(n_threads, &c->tp);
    if (st != MNV_OK) {
        free(b);
        free(c);
        return st;
    }
    b->iface = &cpu_iface;
    b->ctx = c;
    *out = b;
    return MNV_OK;
}
