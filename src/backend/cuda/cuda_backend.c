/* The CUDA backend: device buffers, one stream per backend, and the adapter
 * that unpacks each node of a planned graph into a kernel launch
 * (cuda_kernels.h). Memory is the device's own (host_memory false): the
 * executor uploads the step's inputs into its arena; weights (parameter
 * leaves pointing at host memory, such as the mapped model files) are
 * uploaded once, the first time a graph names them, and kept until the
 * backend is freed, so parameter leaves must not change while it lives. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <cublas_v2.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_prof.h"

#define BLAS_WORKSPACE (32u << 20)
#define ZEROED_BYTES (MNV_CU_ROUTER_STATE + MNV_CU_ATTN_COUNT * 4)

_Static_assert((int)MNV_CU_F32 == (int)MNV_DTYPE_F32 && (int)MNV_CU_F16 == (int)MNV_DTYPE_F16 &&
                   (int)MNV_CU_BF16 == (int)MNV_DTYPE_BF16,
               "cuda dtype codes follow mnv_dtype");
_Static_assert(MNV_QMODE_NONE == 0 && MNV_QMODE_AFFINE == 1 && MNV_QMODE_MXFP4 == 2 && MNV_QMODE_MXFP8 == 3 &&
                   MNV_QMODE_NVFP4 == 4,
               "cuda qmode codes follow mnv_qmode");

/* A graph's launches captured once and replayed: the key is the graph
 * object and a hash of every node's op, shape, parameters and addresses
 * (the step's inputs change their values, not their places, so a decode
 * step of a known shape replays). */
#define N_CAPTURED 8
typedef struct {
    const mnv_graph *g;
    uint64_t hash;
    int runs;               /* times run with this key */
    uint64_t last_use;
    cudaGraphExec_t exec;   /* NULL until captured */
} captured;

/* A range of device memory this backend owns; uploads also remember the
 * host range they copy. */
typedef struct {
    uintptr_t dev, host; /* host: 0 for buffers */
    size_t size;
} range;

typedef struct {
    int32_t device;
    cudaStream_t stream;
    range *dev_ranges; /* sorted by dev */
    int32_t n_dev, cap_dev;
    range *uploads;    /* sorted by host */
    int32_t n_up, cap_up;
    size_t upload_bytes;
    int row_invariant;  /* never cuBLAS: its results depend on the row count */
    int exact_quant;    /* quantized products keep f32 activations (else the decode experts round x to int8) */
    void *cublas;       /* cublasHandle_t */
    void *blas_ws;      /* cuBLAS's workspace (fixed, so that products may be captured) */
    void *scratch;      /* cuda_gemm.c's scratch */
    void *zeroed; /* what last-block kernels leave zeroed: the split router's logits and counts
                   * (MNV_CU_ROUTER_STATE bytes), then the split attention's counts (ZEROED_BYTES in all) */
    size_t scratch_size;
    const char *gemm_err;
    bool graphs;        /* capture and replay (MNV_CUDA_GRAPHS=0 turns it off) */
    mnv_cu_prof *prof;  /* MNV_CUDA_PROFILE=1: time every node (graphs off) */
    bool fuse;          /* fused launches (MNV_CUDA_FUSE=0 turns them off) */
    int64_t gemm_min_packed; /* rows of x from which packed weights go to cuBLAS */
    int64_t mm_i8_max;       /* rows of x from which 8-bit affine products leave the tiled int8 kernel */
    int64_t moe_mma_min;     /* expert rows from which experts run on tensor cores (0: never) */
    int32_t moe_tile;        /* their tiles' rows: 16, 64; -1 (default, MNV_CUDA_MOE_TILE=auto): from rows per expert */
    int64_t moe_gmma_min;    /* expert rows from which, below moe_mma_min, they run grouped a few a tile */
    int64_t attn_mma_min;    /* queries from which attention runs on tensor cores (0: never) */
    bool planning;      /* fuse() matching for the planner: no launches */
    bool attn_split;    /* decode attention over many blocks (MNV_CUDA_ATTN_SPLIT=0: one per query) */
    captured cap[N_CAPTURED];
    uint64_t clock;
    char name[16];
} cuda_ctx;

static mnv_status cuda_fail(cudaError_t e, const char *op, const char *what) {
    return mnv_set_error(MNV_ERR_BACKEND, "%s: %s (%s)", op, what, cudaGetErrorString(e));
}

/* ---- sorted ranges ---- */
static int32_t find_le(const range *r, int32_t n, uintptr_t key, bool by_host) {
    int32_t lo = 0, hi = n - 1, best = -1; /* last entry whose start <= key */
    while (lo <= hi) {
        int32_t mid = (lo + hi) / 2;
        uintptr_t k = by_host ? r[mid].host : r[mid].dev;
        if (k <= key) {
            best = mid;
            lo = mid + 1;
        } else
            hi = mid - 1;
    }
    return best;
}

static bool insert_range(range **arr, int32_t *n, int32_t *cap, range v, bool by_host) {
    if (*n == *cap) {
        int32_t nc = *cap ? *cap * 2 : 64;
        range *p = realloc(*arr, (size_t)nc * sizeof *p);
        if (!p) return false;
        *arr = p;
        *cap = nc;
    }
    int32_t i = find_le(*arr, *n, by_host ? v.host : v.dev, by_host) + 1;
    memmove(&(*arr)[i + 1], &(*arr)[i], (size_t)(*n - i) * sizeof(range));
    (*arr)[i] = v;
    (*n)++;
    return true;
}

static void remove_dev(cuda_ctx *c, uintptr_t dev) {
    int32_t i = find_le(c->dev_ranges, c->n_dev, dev, false);
    if (i < 0 || c->dev_ranges[i].dev != dev) return;
    memmove(&c->dev_ranges[i], &c->dev_ranges[i + 1], (size_t)(c->n_dev - i - 1) * sizeof(range));
    c->n_dev--;
}

static bool is_device(const cuda_ctx *c, uintptr_t p) {
    int32_t i = find_le(c->dev_ranges, c->n_dev, p, false);
    return i >= 0 && p < c->dev_ranges[i].dev + c->dev_ranges[i].size;
}

static mnv_status dev_alloc(cuda_ctx *c, size_t size, void **out) {
    *out = NULL;
    cudaError_t e = cudaMalloc(out, size);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *out = NULL;
        return mnv_set_error(e == cudaErrorMemoryAllocation ? MNV_ERR_NOMEM : MNV_ERR_BACKEND,
                             "%s: cannot allocate %zu bytes of device memory (%s)", c->name, size,
                             cudaGetErrorString(e));
    }
    if (!insert_range(&c->dev_ranges, &c->n_dev, &c->cap_dev, (range){(uintptr_t)*out, 0, size}, false)) {
        cudaFree(*out);
        *out = NULL;
        return mnv_set_error(MNV_ERR_NOMEM, "%s: out of host memory", c->name);
    }
    return MNV_OK;
}

/* The device address of host memory [p, p + size) kernels read: an upload
 * that holds it, or a new one. Device addresses of this backend pass as
 * they are. */
static mnv_status device_view(cuda_ctx *c, const void *p, size_t size, const char *what, void **out) {
    uintptr_t h = (uintptr_t)p;
    *out = (void *)p;
    if (!p || size == 0 || is_device(c, h)) return MNV_OK;
    /* uploads may overlap (a tensor, then a larger view around it), so every
     * one starting at or before p is a candidate; this runs only when a
     * graph is built, not when a planned one runs again */
    for (int32_t i = find_le(c->uploads, c->n_up, h, true); i >= 0; i--) {
        const range *u = &c->uploads[i];
        if (h + size <= u->host + u->size) {
            *out = (void *)(u->dev + (h - u->host));
            return MNV_OK;
        }
    }
    void *d;
    mnv_status st = dev_alloc(c, size, &d);
    if (st != MNV_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", mnv_last_error());
        return mnv_set_error(st, "%s (uploading '%s')", msg, what);
    }
    /* on the backend's stream: a plain cudaMemcpy from pageable memory may
     * return before the bytes land, and the stream does not wait for the
     * legacy one; the kernels that read them come after on this stream */
    cudaError_t e = cudaMemcpyAsync(d, p, size, cudaMemcpyHostToDevice, c->stream);
    bool listed = e == cudaSuccess &&
                  insert_range(&c->uploads, &c->n_up, &c->cap_up, (range){(uintptr_t)d, h, size}, true);
    if (!listed) {
        remove_dev(c, (uintptr_t)d);
        cudaFree(d);
        return e != cudaSuccess ? cuda_fail(e, "cuda: uploading weights", what)
                                : mnv_set_error(MNV_ERR_NOMEM, "%s: out of host memory", c->name);
    }
    c->upload_bytes += size;
    *out = d;
    return MNV_OK;
}

/* Bytes a (possibly strided) leaf spans from its first element. */
static size_t leaf_extent(const mnv_node *n) {
    int64_t last = 0;
    for (int d = 0; d < n->ndim; d++) {
        if (n->shape[d] == 0) return 0;
        last += (n->shape[d] - 1) * n->stride[d];
    }
    return (size_t)(last + 1) * mnv_dtype_size(n->dtype);
}

static bool is_param(const mnv_node *nd) { return nd->op == MNV_OP_LEAF && (nd->flags & MNV_NODE_PARAM); }

/* Parameter leaves to device addresses (uploading weights the first time),
 * then views re-derived from their sources. */
static mnv_status map_params(cuda_ctx *c, mnv_graph *g) {
    int32_t n = mnv_graph_n_nodes(g);
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (is_param(nd)) {
            mnv_status st = device_view(c, nd->data, leaf_extent(nd), nd->name, &nd->data);
            if (st != MNV_OK) return st;
        } else if ((nd->op == MNV_OP_VIEW || nd->op == MNV_OP_CACHE_WRITE) && nd->view_src) {
            nd->data = (uint8_t *)nd->view_src->data + nd->view_offset;
        }
    }
    return MNV_OK;
}

static mnv_status cuda_place_weights(mnv_backend *b, const void *host, size_t size, const char *name) {
    cuda_ctx *c = b->ctx;
    cudaSetDevice(c->device);
    void *d; /* device_view finds an upload that holds the range, or makes one */
    return device_view(c, host, size, name, &d);
}

/* ---- adapters: node -> launch ---- */
static bool is_float(mnv_dtype t) { return t == MNV_DTYPE_F32 || t == MNV_DTYPE_F16 || t == MNV_DTYPE_BF16; }

static mnv_cu_cache cache_of(const mnv_node *c) {
    mnv_kv_layout lay = {0};
    mnv_kv_layout_of(c, &lay); /* checked when the graph was built */
    return (mnv_cu_cache){.n_head_kv = c->shape[2], .head_dim = lay.head_dim, .block_tokens = c->shape[1],
                          .block_stride = c->stride[0] * (int64_t)mnv_dtype_size(c->dtype),
                          .dtype = (int32_t)c->dtype, .kv = lay.type, .group = lay.group,
                          .row_bytes = lay.row_bytes, .scales_at = lay.scales_at};
}

/* A 2-d (or per-expert 3-d) weight: float rows, or packed words with scales. */
static mnv_cu_weight weight_of(const mnv_node *n, const mnv_node *w, const mnv_node *sc, const mnv_node *bi) {
    bool e3 = w->ndim == 3;
    mnv_cu_weight r = {
        .w = w->data, .wtype = (int32_t)w->dtype, .ldw = e3 ? w->stride[1] : w->stride[0],
        .we = e3 ? w->stride[0] : 0, .mode = (int32_t)n->p.q.fmt.mode, .global_scale = n->p.q.global_scale,
    };
    if (r.mode != MNV_QMODE_NONE) {
        r.scales = sc->data;
        r.biases = bi ? bi->data : NULL;
        r.lds = e3 ? sc->stride[1] : sc->stride[0];
        r.se = e3 ? sc->stride[0] : 0;
        r.bits = n->p.q.fmt.bits;
        r.group_size = n->p.q.fmt.group_size;
        r.scale_type = (int32_t)n->p.q.fmt.scale_dtype;
    }
    return r;
}

static void matmul_args(const cuda_ctx *c, const mnv_node *n, mnv_cu_matmul_args *a) {
    const mnv_node *x = n->src[0], *w = n->src[1];
    *a = (mnv_cu_matmul_args){.x = x->data, .ldx = x->shape[x->ndim - 1], .y = n->data,
                              .ldy = n->shape[n->ndim - 1], .m = mnv_array_rows(x), .n = w->shape[0],
                              .x_i8 = !c->exact_quant && !c->row_invariant, .scratch = c->scratch,
                              .scratch_size = c->scratch_size};
    a->mm_i8 = a->x_i8 && a->m < c->mm_i8_max;
    if (n->op == MNV_OP_MATMUL) {
        a->w = (mnv_cu_weight){.w = w->data, .wtype = (int32_t)w->dtype, .ldw = w->stride[0]};
        a->k = w->shape[1];
    } else {
        a->w = weight_of(n, w, n->src[2], n->src[3]);
        a->k = n->p.q.k;
    }
}

static mnv_cu_attn_args attn_args(const cuda_ctx *c, const mnv_node *n) {
    const mnv_node *x = n->src[0];
    mnv_cu_attn_args a = {
        .kc = cache_of(n->src[1]), .vc = cache_of(n->src[2]), .n_head = (int32_t)x->shape[1],
        .scale = n->p.attn.scale, .window = n->p.attn.window, .sinks = n->src[6] ? n->src[6]->data : NULL,
        .k = n->src[1]->data, .v = n->src[2]->data, .tables = n->src[3] ? n->src[3]->data : NULL,
        .table_stride = n->src[3] ? n->src[3]->shape[1] : 0, .q = x->data, .seq = n->src[4]->data,
        .pos = n->src[5]->data, .out = n->data, .T = x->shape[0],
        .mma_min_rows = c->row_invariant ? 0 : c->attn_mma_min,
        .count = (int32_t *)((uint8_t *)c->zeroed + MNV_CU_ROUTER_STATE),
    };
    /* tensor cores take blocks of 64 queries: worth it for runs of one
     * sequence's queries (prefill), not for steps of mostly one query a
     * sequence (an H100, 64 decoding sequences: 70.1 ms a step with them,
     * 48.0 without; a 2048-token prefill: 8,735 tok/s with, 3,840 without) */
    const int64_t seqs = n->src[3] ? n->src[3]->shape[0] : 1;
    if (a.T < MNV_CU_ATTN_MMA_PER_SEQ * seqs) a.mma_min_rows = 0;
    return a;
}

static bool use_blas(const cuda_ctx *c, const mnv_cu_matmul_args *a) {
    if (mnv__cu_mm_i8_fits(a, 1)) return false;
    return !c->row_invariant && a->m >= (a->w.mode != MNV_QMODE_NONE ? c->gemm_min_packed : MNV_CU_GEMM_MIN_ROWS);
}

static void drop_captures(cuda_ctx *c) {
    for (int i = 0; i < N_CAPTURED; i++) {
        if (c->cap[i].exec) cudaGraphExecDestroy(c->cap[i].exec);
        memset(&c->cap[i], 0, sizeof c->cap[i]);
    }
}

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }

static uint64_t graph_hash(mnv_graph *g) {
    uint64_t h = 0xcbf29ce484222325ull;
    int32_t n = mnv_graph_n_nodes(g);
    for (int32_t i = 0; i < n; i++) {
        const mnv_node *nd = mnv_graph_node(g, i);
        h = mix(h, (uint64_t)nd->op << 32 | (uint32_t)nd->dtype);
        for (int d = 0; d < nd->ndim; d++) h = mix(mix(h, (uint64_t)nd->shape[d]), (uint64_t)nd->stride[d]);
        h = mix(h, (uintptr_t)nd->data);
        for (int s = 0; s < MNV_MAX_SRC; s++) h = mix(h, nd->src[s] ? (uintptr_t)nd->src[s]->data : 0);
        uint64_t pw[sizeof nd->p / 8];
        memcpy(pw, &nd->p, sizeof pw);
        for (size_t k = 0; k < sizeof pw / 8; k++) h = mix(h, pw[k]);
    }
    return mix(h, (uint64_t)n);
}

/* The entry of (g, hash), made (evicting the least recently used) if new. */
static captured *capture_entry(cuda_ctx *c, const mnv_graph *g, uint64_t hash) {
    captured *lru = &c->cap[0];
    for (int i = 0; i < N_CAPTURED; i++) {
        if (c->cap[i].g == g && c->cap[i].hash == hash) return &c->cap[i];
        if (c->cap[i].last_use < lru->last_use) lru = &c->cap[i];
    }
    if (lru->exec) cudaGraphExecDestroy(lru->exec);
    *lru = (captured){.g = g, .hash = hash};
    return lru;
}

static mnv_cu_moe_args moe_args(const cuda_ctx *c, const mnv_node *n);

/* Scratch for the graph's cuBLAS products and expert grouping, allocated
 * before anything is queued (one node uses it at a time). */
static mnv_status reserve_scratch(cuda_ctx *c, mnv_graph *g) {
    size_t need = 0;
    for (int32_t i = 0; i < mnv_graph_n_nodes(g); i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (nd->op == MNV_OP_MOE_MATMUL) {
            mnv_cu_moe_args a = moe_args(c, nd);
            need = MNV_MAX(need, mnv_cu_moe_scratch(&a));
        }
        if (nd->op == MNV_OP_ATTENTION && c->attn_split) {
            mnv_cu_attn_args a = attn_args(c, nd);
            need = MNV_MAX(need, mnv_cu_attention_scratch(&a));
        }
        if (nd->op != MNV_OP_MATMUL && nd->op != MNV_OP_QMATMUL) continue;
        mnv_cu_matmul_args a;
        matmul_args(c, nd, &a);
        if (use_blas(c, &a))
            need = MNV_MAX(need, mnv__cu_gemm_scratch(&a));
        else if (mnv__cu_mm_i8_fits(&a, 1))
            need = MNV_MAX(need, mnv__cu_mm_i8_scratch(&a));
    }
    if (need <= c->scratch_size) return MNV_OK;
    drop_captures(c); /* they name the old scratch */
    if (c->scratch) {
        cudaStreamSynchronize(c->stream);
        remove_dev(c, (uintptr_t)c->scratch);
        cudaFree(c->scratch);
        c->scratch = NULL;
        c->scratch_size = 0;
    }
    mnv_status st = dev_alloc(c, need, &c->scratch);
    if (st == MNV_OK) c->scratch_size = need;
    return st;
}

static cudaError_t run_elem(const mnv_node *n, cudaStream_t s) {
    const mnv_node *a = n->src[0], *b = n->src[1];
    int64_t D = n->shape[n->ndim - 1];
    mnv_cu_elem_args e = {.a = a->data, .rows = mnv_array_rows(n), .n = D, .y = n->data};
    switch (n->op) {
    case MNV_OP_ADD: e.op = MNV_CU_ADD; break;
    case MNV_OP_MUL: e.op = MNV_CU_MUL; break;
    case MNV_OP_SILU_MUL: e.op = MNV_CU_SILU_MUL; break;
    case MNV_OP_SWIGLU_OAI:
        e.op = MNV_CU_SWIGLU;
        e.f0 = n->p.swiglu.alpha;
        e.f1 = n->p.swiglu.limit;
        break;
    case MNV_OP_SCALE:
        e.op = MNV_CU_SCALE;
        e.f0 = n->p.f[0];
        break;
    case MNV_OP_SILU: e.op = MNV_CU_SILU; break;
    default: e.op = MNV_CU_GELU; break;
    }
    if (b) {
        e.b = b->data;
        e.bt = (int32_t)b->dtype;
        e.bs = mnv_array_nelem(b) == D ? 0 : D;
    }
    return mnv_cu_elem(&e, s);
}

static mnv_cu_rope_args rope_args(const mnv_node *n);


static cudaError_t run_node(cuda_ctx *c, mnv_node *n) {
    cudaStream_t s = c->stream;
    const mnv_node *x = n->src[0];
    switch (n->op) {
    case MNV_OP_COPY: {
        mnv_cu_copy_args a = {.x = x->data, .y = n->data, .xt = (int32_t)x->dtype, .yt = (int32_t)n->dtype,
                              .ndim = n->ndim};
        for (int d = 0; d < n->ndim; d++) {
            a.shape[d] = n->shape[d];
            a.xstride[d] = x->stride[d];
        }
        return mnv_cu_copy(&a, s);
    }
    case MNV_OP_ADD:
    case MNV_OP_MUL:
    case MNV_OP_SILU_MUL:
    case MNV_OP_SWIGLU_OAI:
    case MNV_OP_SCALE:
    case MNV_OP_SILU:
    case MNV_OP_GELU: return run_elem(n, s);
    case MNV_OP_SOFTMAX: return mnv_cu_softmax(x->data, n->data, mnv_array_rows(n), n->shape[n->ndim - 1], s);
    case MNV_OP_HADAMARD:
        return mnv_cu_hadamard(x->data, n->data, mnv_array_rows(n), n->shape[n->ndim - 1], n->p.i[0], s);
    case MNV_OP_RMS_NORM:
        return mnv_cu_rms_norm(x->data, n->src[1] ? n->src[1]->data : NULL, n->data, mnv_array_rows(n),
                               n->shape[n->ndim - 1], n->p.norm.eps, s);
    case MNV_OP_ROPE: {
        mnv_cu_rope_args a = rope_args(n);
        return mnv_cu_rope(&a, s);
    }
    case MNV_OP_GET_ROWS:
        return mnv_cu_get_rows(x->data, (int32_t)x->dtype, x->stride[0], x->shape[1], n->src[1]->data, n->data,
                               n->shape[0], s);
    case MNV_OP_CACHE_WRITE: {
        mnv_cu_cache cs = cache_of(n);
        return mnv_cu_cache_write(&cs, n->data, n->src[1]->data, n->src[2]->data, n->src[1]->shape[0], s);
    }
    case MNV_OP_ATTENTION: {
        mnv_cu_attn_args a = attn_args(c, n);
        return mnv_cu_attention(&a, c->attn_split ? c->scratch : NULL, c->scratch_size, s);
    }
    case MNV_OP_MATMUL:
    case MNV_OP_QMATMUL: {
        mnv_cu_matmul_args a;
        matmul_args(c, n, &a);
        if (use_blas(c, &a)) {
            c->gemm_err = mnv__cu_gemm(c->cublas, &a, c->scratch, s);
            return c->gemm_err ? cudaErrorUnknown : cudaSuccess;
        }
        return mnv_cu_matmul(&a, s);
    }
    case MNV_OP_QGET_ROWS: {
        mnv_cu_weight w = weight_of(n, x, n->src[2], n->src[3]);
        return mnv_cu_qget_rows(&w, n->p.q.k, n->src[1]->data, 0, n->data, n->shape[0], s);
    }
    case MNV_OP_ARGMAX: return mnv_cu_argmax(x->data, x->shape[1], n->data, n->shape[0], s);
    case MNV_OP_TOP_CANDS: return mnv_cu_top_cands(x->data, x->shape[1], n->data, n->shape[0], s);
    case MNV_OP_TOPK:
        return mnv_cu_topk(x->data, x->shape[1], (int32_t)n->shape[1], n->data, n->shape[0], s);
    case MNV_OP_GATHER_SOFTMAX:
        return mnv_cu_gather_softmax(x->data, x->shape[1], n->src[1]->data, (int32_t)n->shape[1], n->data,
                                     n->shape[0], s);
    case MNV_OP_MOE_SUM:
        return mnv_cu_moe_sum(x->data, n->src[1]->data, (int32_t)x->shape[1], n->shape[1], NULL, n->data,
                              n->shape[0], s);
    case MNV_OP_MOE_MATMUL: {
        mnv_cu_moe_args a = moe_args(c, n);
        return mnv_cu_moe_matmul(&a, c->scratch, s);
    }
    default: return cudaSuccess; /* leaves and views */
    }
}

static bool cuda_supports(mnv_backend *b, const mnv_node *n) {
    switch (n->op) {
    case MNV_OP_LEAF:
    case MNV_OP_VIEW: return true;
    case MNV_OP_COPY: return is_float(n->src[0]->dtype) && is_float(n->dtype);
    case MNV_OP_ADD:
    case MNV_OP_MUL: return is_float(n->src[1]->dtype);
    case MNV_OP_CACHE_WRITE: return true; /* every KV type */
    case MNV_OP_ATTENTION: {
        mnv_kv_layout k, v;
        return mnv_kv_layout_of(n->src[1], &k) && mnv_kv_layout_of(n->src[2], &v) && k.head_dim <= 256;
    }
    case MNV_OP_MATMUL: return is_float(n->src[1]->dtype);
    case MNV_OP_GET_ROWS: return is_float(n->src[0]->dtype);
    case MNV_OP_MOE_MATMUL:
    case MNV_OP_QMATMUL:
    case MNV_OP_QGET_ROWS:
    case MNV_OP_SILU_MUL:
    case MNV_OP_SWIGLU_OAI:
    case MNV_OP_SCALE:
    case MNV_OP_SILU:
    case MNV_OP_GELU:
    case MNV_OP_SOFTMAX:
    case MNV_OP_HADAMARD:
    case MNV_OP_RMS_NORM:
    case MNV_OP_ROPE:
    case MNV_OP_TOPK:
    case MNV_OP_ARGMAX:
    case MNV_OP_TOP_CANDS:
    case MNV_OP_GATHER_SOFTMAX:
    case MNV_OP_MOE_SUM: return true;
    default: return false;
    }
}

static mnv_status run_nodes(mnv_backend *b, mnv_graph *g);
static mnv_status capture(mnv_backend *b, mnv_graph *g, captured *cap);

static mnv_status cuda_compute(mnv_backend *b, mnv_graph *g) {
    cuda_ctx *c = b->ctx;
    int32_t n = mnv_graph_n_nodes(g);
    if (b->abort && atomic_load(b->abort))
        return mnv_set_error(MNV_ERR_CANCELLED, "%s: stopped before node 0 of %d", c->name, n);
    cudaSetDevice(c->device); /* the current device is per host thread */
    mnv_status st = map_params(c, g);
    if (st == MNV_OK) st = reserve_scratch(c, g);
    if (st != MNV_OK) return st;
    captured *cap = NULL;
    if (c->graphs) {
        cap = capture_entry(c, g, graph_hash(g));
        cap->last_use = ++c->clock;
        if (!cap->exec && ++cap->runs >= 2) st = capture(b, g, cap); /* seen before: worth capturing */
        if (st != MNV_OK) return st;
    }
    if (cap && cap->exec) {
        cudaError_t e = cudaGraphLaunch(cap->exec, c->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess)
            return mnv_set_error(MNV_ERR_BACKEND, "%s: replaying a graph: %s", c->name, cudaGetErrorString(e));
        return MNV_OK;
    }
    if (c->prof && !mnv__cu_prof_begin(c->prof, n, c->stream)) {
        mnv__cu_prof_free(c->prof);
        c->prof = NULL;
    }
    st = run_nodes(b, g);
    if (st != MNV_OK) return st;
    if (c->prof) mnv__cu_prof_end(c->prof, g, c->stream);
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) return mnv_set_error(MNV_ERR_BACKEND, "%s: running a graph: %s", c->name, cudaGetErrorString(e));
    return MNV_OK;
}

/* ---- fusion: a node and the one or two after it as one launch ----
 * Only where the intermediate values are read by nothing else, and the
 * last node's memory (which the planner may give the first node's inputs
 * back for) does not overlap what the launch reads. */
static bool is_leafy(const mnv_node *n) { return n->op == MNV_OP_LEAF || n->op == MNV_OP_VIEW; }

static int32_t next_op(mnv_graph *g, int32_t i) {
    int32_t n = mnv_graph_n_nodes(g);
    for (i++; i < n; i++)
        if (!is_leafy(mnv_graph_node(g, i))) return i;
    return -1;
}

static size_t node_bytes(const mnv_node *n) { return (size_t)mnv_array_nelem(n) * mnv_dtype_size(n->dtype); }

static bool overlaps(const mnv_node *a, const mnv_node *b) {
    if (!a->data || !b->data) return false;
    uintptr_t a0 = (uintptr_t)a->data, b0 = (uintptr_t)b->data;
    return a0 < b0 + node_bytes(b) && b0 < a0 + node_bytes(a);
}

/* v (at index i) read once, by node j only. */
static bool only_reader(const mnv_node *v, int32_t j) { return v->last_use == j && !(v->flags & MNV_NODE_OUTPUT); }

static bool is_contiguous(const mnv_node *n) {
    int64_t st = 1;
    for (int d = n->ndim - 1; d >= 0; d--) {
        if (n->shape[d] != 1 && n->stride[d] != st) return false;
        st *= n->shape[d];
    }
    return true;
}

/* ADD node a = prev + other (either order): the other operand when it is
 * an f32 residual of prev's shape. */
static const mnv_node *residual_of(const mnv_node *a, const mnv_node *prev) {
    if (a->op != MNV_OP_ADD) return NULL;
    const mnv_node *o = a->src[0] == prev ? a->src[1] : a->src[1] == prev ? a->src[0] : NULL;
    if (!o || o == prev || o->dtype != MNV_DTYPE_F32 || mnv_array_nelem(o) != mnv_array_nelem(prev) ||
        !is_contiguous(o))
        return NULL;
    return o;
}

/* A product at node i and the add of its bias when that comes next: *a
 * its launch, *out the node its result lands in; returns the last node
 * covered, or -1 when the product is not one for the chunked kernels. */
static int32_t product_unit(cuda_ctx *c, mnv_graph *g, int32_t i, mnv_cu_matmul_args *a, mnv_node **out) {
    mnv_node *mm = mnv_graph_node(g, i);
    matmul_args(c, mm, a);
    if (use_blas(c, a) || (!c->planning && !mnv_cu_mmv_fast(&a->w, a->k, a->x, a->ldx))) return -1;
    *out = mm;
    int32_t j = next_op(g, i);
    mnv_node *add = j >= 0 ? mnv_graph_node(g, j) : NULL;
    if (!add || add->op != MNV_OP_ADD || add->src[0] != mm || !only_reader(mm, j) || add->src[1] == mm ||
        !is_float(add->src[1]->dtype) || mnv_array_nelem(add->src[1]) != a->n || !is_contiguous(add->src[1]))
        return i;
    a->bias = add->src[1]->data;
    a->bias_type = (int32_t)add->src[1]->dtype;
    *out = add;
    return j;
}

static bool same_layout(const mnv_cu_matmul_args *a, const mnv_cu_matmul_args *b) {
    return a->m == b->m && a->k == b->k && a->x == b->x && a->ldx == b->ldx && a->w.mode == b->w.mode &&
           a->w.wtype == b->w.wtype && a->w.bits == b->w.bits && a->w.group_size == b->w.group_size &&
           a->w.scale_type == b->w.scale_type;
}

/* Products of one input in a row (q, k and v; gate and up), each with its
 * bias add, as one launch; a product alone with its bias add and the
 * residual add after it. */
static int32_t fuse_product(cuda_ctx *c, mnv_graph *g, int32_t i, cudaError_t *e) {
    mnv_cu_matmul_args a[3];
    mnv_node *out[3], *mm = mnv_graph_node(g, i);
    int32_t last = product_unit(c, g, i, &a[0], &out[0]);
    if (last < 0) return -1;
    int n = 1;
    for (int32_t j; n < 3 && (j = next_op(g, last)) >= 0; n++) {
        mnv_node *nd = mnv_graph_node(g, j);
        if ((nd->op != MNV_OP_MATMUL && nd->op != MNV_OP_QMATMUL) || nd->src[0] != mm->src[0]) break;
        int32_t l = product_unit(c, g, j, &a[n], &out[n]);
        if (l < 0 || !same_layout(&a[0], &a[n])) break;
        last = l;
    }
    if (n == 1) {
        int32_t k = next_op(g, last);
        mnv_node *radd = k >= 0 ? mnv_graph_node(g, k) : NULL;
        const mnv_node *res = radd && only_reader(out[0], k) ? residual_of(radd, out[0]) : NULL;
        if (res) {
            a[0].res = res->data;
            a[0].ldr = a[0].n;
            last = k;
            out[0] = radd;
        }
        if (last == i) return -1; /* nothing to fuse */
    }
    for (int u = 0; u < n; u++) {
        if (overlaps(out[u], mm->src[0])) return -1;
        a[u].y = out[u]->data;
    }
    if (!c->planning) *e = mnv_cu_matmul_shared(a, n, c->stream);
    return last;
}

/* A router: its product (and bias add), the top k of the logits and
 * their softmax, when nothing else reads the logits. */
static int32_t fuse_router(cuda_ctx *c, mnv_graph *g, int32_t i, cudaError_t *e) {
    mnv_cu_matmul_args a;
    mnv_node *out;
    int32_t j = product_unit(c, g, i, &a, &out), k = j >= 0 ? next_op(g, j) : -1, l = k >= 0 ? next_op(g, k) : -1;
    if (l < 0 || a.n > MNV_CU_ROUTER_MAX) return -1;
    mnv_node *tk = mnv_graph_node(g, k), *gs = mnv_graph_node(g, l);
    if (tk->op != MNV_OP_TOPK || gs->op != MNV_OP_GATHER_SOFTMAX || tk->src[0] != out || gs->src[0] != out ||
        gs->src[1] != tk || !only_reader(out, l) || !is_contiguous(tk) || !is_contiguous(gs) ||
        overlaps(tk, mnv_graph_node(g, i)->src[0]) || overlaps(gs, mnv_graph_node(g, i)->src[0]))
        return -1;
    if (c->planning) return l; /* the run may still fall back: lives kept longer are safe */
    if (!mnv_cu_mmv_fast(&a.w, a.k, a.x, a.ldx) || a.m > INT32_MAX) return -1; /* unfused, as any other */
    mnv_cu_router_args r = {
        .mm = a, .kk = (int32_t)tk->shape[1], .ids = tk->data, .w = gs->data, .state = c->zeroed};
    *e = mnv_cu_router(&r, c->stream);
    return l;
}

static mnv_cu_moe_args moe_args(const cuda_ctx *c, const mnv_node *n) {
    const mnv_node *x = n->src[0], *bias = n->src[3];
    return (mnv_cu_moe_args){
        .mma_min_rows = c->row_invariant ? 0 : c->moe_mma_min, .mma_tile = c->moe_tile,
        .gmma_min_rows = c->row_invariant ? 0 : c->moe_gmma_min, .x_i8 = !c->exact_quant,
        .x = x->data, .per_slot = x->ndim == 3, .w = weight_of(n, n->src[1], n->src[4], n->src[5]),
        .ids = n->src[2]->data, .bias = bias ? bias->data : NULL, .bs0 = bias ? bias->stride[0] : 0,
        .bs1 = bias ? bias->stride[1] : 0, .y = n->data, .T = n->shape[0], .kk = n->shape[1],
        .n = n->shape[2], .k = n->p.q.k, .E = n->src[1]->shape[0],
    };
}

/* The experts' gate and up products (one input, one routing) and the
 * SwiGLU of the two. */
static int32_t fuse_experts(cuda_ctx *c, mnv_graph *g, int32_t i, cudaError_t *e) {
    mnv_node *gate = mnv_graph_node(g, i);
    int32_t j = next_op(g, i), k = j >= 0 ? next_op(g, j) : -1;
    if (k < 0) return -1;
    mnv_node *up = mnv_graph_node(g, j), *sw = mnv_graph_node(g, k);
    if (up->op != MNV_OP_MOE_MATMUL || sw->op != MNV_OP_SWIGLU_OAI || sw->src[0] != gate || sw->src[1] != up ||
        up->src[0] != gate->src[0] || up->src[2] != gate->src[2] || up->p.q.k != gate->p.q.k ||
        memcmp(&up->p.q.fmt, &gate->p.q.fmt, sizeof up->p.q.fmt) != 0 || up->shape[2] != gate->shape[2] ||
        !only_reader(gate, k) || !only_reader(up, k) || overlaps(sw, gate->src[0]) || overlaps(sw, gate->src[2]))
        return -1;
    mnv_cu_moe_args a = moe_args(c, gate), b = moe_args(c, up);
    if (c->planning) return k;
    if (!mnv_cu_mmv_fast(&a.w, a.k, a.x, a.k) || !mnv_cu_mmv_fast(&b.w, b.k, b.x, b.k) || a.w.wtype != b.w.wtype)
        return -1; /* the pair is read in one layout: float experts of two dtypes run unfused */
    a.dual = 1;
    a.w2 = b.w;
    a.bias2 = b.bias;
    a.b2s0 = b.bs0;
    a.b2s1 = b.bs1;
    a.alpha = sw->p.swiglu.alpha;
    a.limit = sw->p.swiglu.limit;
    a.y = sw->data;
    *e = mnv_cu_moe_matmul(&a, c->scratch, c->stream);
    return k;
}

/* The experts' weighted sum and the residual add after it. */
static int32_t fuse_moe_sum(cuda_ctx *c, mnv_graph *g, int32_t i, cudaError_t *e) {
    mnv_node *ms = mnv_graph_node(g, i);
    int32_t j = next_op(g, i);
    mnv_node *add = j >= 0 ? mnv_graph_node(g, j) : NULL;
    const mnv_node *res = add && only_reader(ms, j) && is_contiguous(ms) ? residual_of(add, ms) : NULL;
    if (!res || overlaps(add, ms->src[0]) || overlaps(add, ms->src[1])) return -1;
    /* and the RMS norm of the sum where that comes next (the next layer's) */
    int32_t k = next_op(g, j);
    mnv_node *nm = k >= 0 ? mnv_graph_node(g, k) : NULL;
    if (nm && nm->op == MNV_OP_RMS_NORM && nm->src[0] == add && is_contiguous(add) && is_contiguous(nm) &&
        nm->shape[nm->ndim - 1] == ms->shape[1] && mnv_array_rows(nm) == ms->shape[0] &&
        (!nm->src[1] || is_contiguous(nm->src[1])) && !overlaps(nm, add) && !overlaps(nm, ms->src[0]) &&
        !overlaps(nm, ms->src[1]) && !overlaps(nm, res)) {
        const float *nw = nm->src[1] ? nm->src[1]->data : NULL;
        if (c->planning) return k;
        if (mnv_cu_moe_sum_rms_fits(ms->src[0]->data, res->data, add->data, nw, nm->data, ms->shape[1])) {
            *e = mnv_cu_moe_sum_rms(ms->src[0]->data, ms->src[1]->data, (int32_t)ms->src[0]->shape[1], ms->shape[1],
                                    res->data, add->data, nw, nm->data, nm->p.norm.eps, ms->shape[0], c->stream);
            return k;
        }
    }
    if (c->planning) return j;
    *e = mnv_cu_moe_sum(ms->src[0]->data, ms->src[1]->data, (int32_t)ms->src[0]->shape[1], ms->shape[1], res->data,
                        add->data, ms->shape[0], c->stream);
    return j;
}

static mnv_cu_rope_args rope_args(const mnv_node *n) {
    return (mnv_cu_rope_args){.x = n->src[0]->data, .pos = n->src[1]->data, .inv_freq = n->src[2]->data,
                              .y = n->data, .rows = n->shape[0], .n_head = (int32_t)n->shape[1],
                              .head_dim = (int32_t)n->shape[2], .n_rot = n->p.rope.n_rot,
                              .traditional = n->p.rope.traditional, .attn_factor = n->p.rope.attn_factor};
}

/* RoPE of q and k, then k and v written to their caches. */
static int32_t fuse_rope(cuda_ctx *c, mnv_graph *g, int32_t i, cudaError_t *e) {
    mnv_node *rq = mnv_graph_node(g, i);
    int32_t j = next_op(g, i), k1 = j >= 0 ? next_op(g, j) : -1, k2 = k1 >= 0 ? next_op(g, k1) : -1;
    if (k2 < 0) return -1;
    mnv_node *rk = mnv_graph_node(g, j), *wk = mnv_graph_node(g, k1), *wv = mnv_graph_node(g, k2);
    if (rk->op != MNV_OP_ROPE || wk->op != MNV_OP_CACHE_WRITE || wv->op != MNV_OP_CACHE_WRITE ||
        rk->src[1] != rq->src[1] || rk->src[2] != rq->src[2] || wk->src[1] != rk || !only_reader(rk, k1) ||
        wv->src[2] != wk->src[2] || wv->src[1]->dtype != MNV_DTYPE_F32 || !is_contiguous(wv->src[1]) ||
        !is_contiguous(rq->src[0]) || !is_contiguous(rk->src[0]) || !is_float(wk->dtype) || !is_float(wv->dtype) ||
        wv->src[1]->shape[0] != rk->shape[0] || overlaps(rq, rk->src[0]) || overlaps(rq, wv->src[1]))
        return -1;
    mnv_cu_rope_write_args a = {.q = rope_args(rq), .k = rope_args(rk), .kc = cache_of(wk), .vc = cache_of(wv),
                                .kcache = wk->data, .vcache = wv->data, .v = wv->src[1]->data,
                                .slot = wk->src[2]->data, .T = wv->src[1]->shape[0]};
    if (!c->planning) *e = mnv_cu_rope_write(&a, c->stream);
    return k2;
}

/* The last node a fused launch at node i covers (-1: none; *e its launch). */
static int32_t fuse(cuda_ctx *c, mnv_graph *g, int32_t i, cudaError_t *e) {
    if (!c->fuse) return -1;
    switch (mnv_graph_node(g, i)->op) {
    case MNV_OP_MATMUL:
    case MNV_OP_QMATMUL: {
        int32_t last = fuse_router(c, g, i, e);
        return last >= 0 ? last : fuse_product(c, g, i, e);
    }
    case MNV_OP_MOE_MATMUL: return fuse_experts(c, g, i, e);
    case MNV_OP_MOE_SUM: return fuse_moe_sum(c, g, i, e);
    case MNV_OP_ROPE: return fuse_rope(c, g, i, e);
    default: return -1;
    }
}

static mnv_node *root_of(mnv_node *n) { return n->view_src ? n->view_src : n; }

/* The planner's hook: each launch that will cover nodes [i, last] keeps
 * what it reads from outside alive to its last node. The matching is the
 * run's, without what only the run knows (addresses). */
static void cuda_plan_lifetimes(mnv_backend *b, mnv_graph *g) {
    cuda_ctx *c = b->ctx;
    c->planning = true;
    int32_t n = mnv_graph_n_nodes(g);
    for (int32_t i = 0; i < n; i++) {
        if (is_leafy(mnv_graph_node(g, i))) continue;
        int32_t last = fuse(c, g, i, NULL);
        for (int32_t j = i; j <= last; j++) {
            mnv_node *nd = mnv_graph_node(g, j);
            for (int s = 0; s < MNV_MAX_SRC; s++) {
                mnv_node *r = nd->src[s] ? root_of(nd->src[s]) : NULL;
                if (r && (r->id < i || r->id > last) && r->last_use >= i && r->last_use < last) r->last_use = last;
            }
        }
        if (last > i) i = last;
    }
    c->planning = false;
}

/* Queue every node's work on the stream (no wait). */
static mnv_status run_nodes(mnv_backend *b, mnv_graph *g) {
    cuda_ctx *c = b->ctx;
    int32_t n = mnv_graph_n_nodes(g);
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (is_leafy(nd)) continue;
        if (i > 0 && b->abort && atomic_load_explicit(b->abort, memory_order_relaxed)) {
            cudaStreamSynchronize(c->stream);
            return mnv_set_error(MNV_ERR_CANCELLED, "%s: stopped before node %d of %d (%s)", c->name, i, n,
                                 mnv_op_name(nd->op));
        }
        c->gemm_err = NULL;
        if (c->prof) mnv__cu_prof_mark(c->prof, i, c->stream);
        cudaError_t e = cudaSuccess;
        int32_t last = fuse(c, g, i, &e);
        if (last < 0) e = run_node(c, nd);
        if (e == cudaSuccess && c->prof) e = mnv__cu_prof_done(c->prof, i, c->stream); /* its kernels' faults too */
        if (e != cudaSuccess)
            return mnv_set_error(MNV_ERR_BACKEND, "%s: node %d '%s' (%s%s): %s", c->name, i, nd->name,
                                 mnv_op_name(nd->op), last >= 0 ? ", fused" : "",
                                 c->gemm_err ? c->gemm_err : cudaGetErrorString(e));
        if (last > i) i = last; /* the covered nodes: their time is the first one's */
    }
    return MNV_OK;
}

/* Record the graph's launches into cap->exec (left NULL when capture fails:
 * the graph then runs node by node, as before). */
static mnv_status capture(mnv_backend *b, mnv_graph *g, captured *cap) {
    cuda_ctx *c = b->ctx;
    atomic_int *abort = b->abort;
    b->abort = NULL; /* a capture runs nothing: no point stopping inside it */
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    mnv_status st = e == cudaSuccess ? run_nodes(b, g) : MNV_OK;
    b->abort = abort;
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cap->runs = INT_MIN / 2;
        return MNV_OK;
    }
    cudaGraph_t graph = NULL;
    e = cudaStreamEndCapture(c->stream, &graph);
    if (st == MNV_OK && e == cudaSuccess && graph) e = cudaGraphInstantiate(&cap->exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess || st != MNV_OK) {
        (void)cudaGetLastError();
        cap->exec = NULL;
        cap->runs = INT_MIN / 2; /* not again for this key */
    }
    return st;
}

/* ---- buffers ---- */
static mnv_status cuda_alloc(mnv_backend *b, size_t size, mnv_buffer **out) {
    cuda_ctx *c = b->ctx;
    *out = NULL;
    mnv_buffer *buf = calloc(1, sizeof *buf);
    if (!buf) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of host memory", c->name);
    void *d;
    cudaSetDevice(c->device);
    mnv_status st = dev_alloc(c, size, &d); /* cudaMalloc aligns to 256 bytes */
    if (st != MNV_OK) {
        free(buf);
        return st;
    }
    *buf = (mnv_buffer){.backend = b, .device = c->device, .size = size, .addr = d};
    *out = buf;
    return MNV_OK;
}

static void cuda_dealloc(mnv_backend *b, mnv_buffer *buf) {
    cuda_ctx *c = b->ctx;
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    remove_dev(c, (uintptr_t)buf->addr);
    cudaFree(buf->addr);
    free(buf);
}

static bool cuda_host_memory(mnv_backend *b) { return false; }

static void *cuda_wrap(mnv_backend *b, const void *host, size_t size) {
    void *d = NULL;
    cudaSetDevice(((cuda_ctx *)b->ctx)->device);
    return device_view(b->ctx, host, size, "wrapped host memory", &d) == MNV_OK ? d : NULL;
}

static mnv_status cuda_upload(mnv_backend *b, mnv_buffer *dst, size_t off, const void *src, size_t size) {
    cuda_ctx *c = b->ctx;
    cudaSetDevice(c->device);
    /* from pageable memory the call returns once src has been staged, so
     * the caller may reuse it at once */
    cudaError_t e = cudaMemcpyAsync((uint8_t *)dst->addr + off, src, size, cudaMemcpyHostToDevice, c->stream);
    return e == cudaSuccess ? MNV_OK : cuda_fail(e, "cuda: upload", c->name);
}

static mnv_status cuda_download(mnv_backend *b, void *dst, const mnv_buffer *src, size_t off, size_t size) {
    cuda_ctx *c = b->ctx;
    cudaSetDevice(c->device);
    cudaError_t e = cudaMemcpyAsync(dst, (const uint8_t *)src->addr + off, size, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    return e == cudaSuccess ? MNV_OK : cuda_fail(e, "cuda: download", c->name);
}

static mnv_status cuda_copy(mnv_backend *b, mnv_buffer *dst, size_t dst_off, const mnv_buffer *src, size_t src_off,
                            size_t size) {
    cuda_ctx *c = b->ctx;
    cudaSetDevice(c->device);
    cudaError_t e = cudaMemcpyAsync((uint8_t *)dst->addr + dst_off, (const uint8_t *)src->addr + src_off, size,
                                    cudaMemcpyDeviceToDevice, c->stream);
    return e == cudaSuccess ? MNV_OK : cuda_fail(e, "cuda: copy", c->name);
}

static void cuda_sync(mnv_backend *b) {
    cudaSetDevice(((cuda_ctx *)b->ctx)->device);
    cudaStreamSynchronize(((cuda_ctx *)b->ctx)->stream);
}
static int cuda_threads(mnv_backend *b) { return 1; }

static void cuda_free(mnv_backend *b) {
    cuda_ctx *c = b->ctx;
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    for (int32_t i = 0; i < c->n_up; i++) cudaFree((void *)c->uploads[i].dev);
    drop_captures(c);
    mnv__cu_prof_free(c->prof);
    if (c->cublas) cublasDestroy(c->cublas);
    cudaFree(c->blas_ws);
    cudaFree(c->scratch);
    cudaFree(c->zeroed);
    cudaStreamDestroy(c->stream);
    free(c->uploads);
    free(c->dev_ranges);
    free(c);
    free(b);
}

static const mnv_backend_iface cuda_iface = {
    .version = MNV_BACKEND_IFACE_VERSION, .name = "cuda", .free = cuda_free, .buffer_alloc = cuda_alloc,
    .buffer_free = cuda_dealloc, .host_memory = cuda_host_memory, .wrap_host = cuda_wrap, .upload = cuda_upload,
    .download = cuda_download, .copy = cuda_copy, .supports_node = cuda_supports, .compute = cuda_compute,
    .synchronize = cuda_sync, .n_threads = cuda_threads, .plan_lifetimes = cuda_plan_lifetimes,
    .place_weights = cuda_place_weights,
};

mnv_status mnv_backend_cuda_create(const mnv_backend_params *p, mnv_backend **out) {
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "cuda: no CUDA device (%s)",
                             e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    if (p->device < 0 || p->device >= count)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "cuda:%d: there are %d CUDA device(s)", p->device, count);
    mnv_backend *b = calloc(1, sizeof *b);
    cuda_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return mnv_set_error(MNV_ERR_NOMEM, "cuda backend: out of memory");
    }
    c->device = p->device;
    snprintf(c->name, sizeof c->name, "cuda:%d", p->device);
    c->row_invariant = p->row_invariant;
    c->exact_quant = p->exact_quant;
    const char *env = getenv("MNV_CUDA_GRAPHS");
    c->graphs = !env || strcmp(env, "0") != 0;
    env = getenv("MNV_CUDA_FUSE");
    c->fuse = !env || strcmp(env, "0") != 0;
    env = getenv("MNV_CUDA_GEMM_MIN_PACKED");
    c->gemm_min_packed = env ? MNV_MAX(atoll(env), MNV_CU_GEMM_MIN_ROWS) : MNV_CU_GEMM_MIN_PACKED;
    env = getenv("MNV_CUDA_MM_I8_MAX");
    c->mm_i8_max = env ? MNV_MAX(atoll(env), 0) : INT64_MAX;
    env = getenv("MNV_CUDA_MOE_MMA_MIN");
    c->moe_mma_min = env ? MNV_MAX(atoll(env), 0) : p->exact_quant ? MNV_CU_MOE_MMA_MIN : MNV_CU_MOE_MMA_MIN_I8;
    env = getenv("MNV_CUDA_MOE_GMMA_MIN");
    c->moe_gmma_min = env ? MNV_MAX(atoll(env), 0) : MNV_CU_MOE_GMMA_MIN;
    env = getenv("MNV_CUDA_MOE_TILE");
    c->moe_tile = !env || strcmp(env, "auto") == 0 ? -1 : (int32_t)atoi(env);
    env = getenv("MNV_CUDA_ATTN_MMA_MIN");
    c->attn_mma_min = env ? MNV_MAX(atoll(env), 0) : MNV_CU_ATTN_MMA_MIN;
    env = getenv("MNV_CUDA_ATTN_SPLIT");
    c->attn_split = !env || strcmp(env, "0") != 0;
    env = getenv("MNV_CUDA_PROFILE");
    if (env && strcmp(env, "1") == 0) {
        c->prof = mnv__cu_prof_create();
        c->graphs = false;
    }
    e = cudaSetDevice(p->device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        mnv_status st = cuda_fail(e, "cuda: starting the device", c->name);
        free(b);
        free(c);
        return st;
    }
    /* Programmatic dependent launch: on unless MNV_CUDA_PDL=0, where the
     * kernels were built for it and every visible device is sm_90 or later
     * (the switch is the process's, not a device's) */
    const char *pdl = getenv("MNV_CUDA_PDL");
    int ndev = 0, all9 = cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0;
    for (int d = 0; all9 && d < ndev; d++) {
        int major = 0;
        all9 = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) == cudaSuccess && major >= 9;
    }
    mnv__cu_set_pdl((!pdl || strcmp(pdl, "0") != 0) && all9 && mnv__cu_pdl_built());
    b->iface = &cuda_iface;
    b->ctx = c;
    cublasHandle_t h = NULL;
    mnv_status st = MNV_OK;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS)
        st = mnv_set_error(MNV_ERR_BACKEND, "%s: cannot start cuBLAS", c->name);
    c->cublas = h;
    if (st == MNV_OK && (e = cudaMalloc(&c->blas_ws, BLAS_WORKSPACE)) != cudaSuccess)
        st = mnv_set_error(MNV_ERR_NOMEM, "%s: cannot allocate %u bytes of cuBLAS workspace (%s)", c->name,
                           BLAS_WORKSPACE, cudaGetErrorString(e));
    if (st == MNV_OK && cublasSetWorkspace(h, c->blas_ws, BLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS)
        st = mnv_set_error(MNV_ERR_BACKEND, "%s: cannot give cuBLAS its workspace", c->name);
    if (st == MNV_OK && (e = cudaMalloc(&c->zeroed, ZEROED_BYTES)) != cudaSuccess)
        st = mnv_set_error(MNV_ERR_NOMEM, "%s: cannot allocate %d bytes for the router and attention counts (%s)",
                           c->name, ZEROED_BYTES, cudaGetErrorString(e));
    if (st == MNV_OK && (e = cudaMemsetAsync(c->zeroed, 0, ZEROED_BYTES, c->stream)) != cudaSuccess)
        st = mnv_set_error(MNV_ERR_BACKEND, "%s: cannot clear the router and attention counts (%s)", c->name,
                           cudaGetErrorString(e));
    if (st != MNV_OK) {
        cuda_free(b);
        return st;
    }
    *out = b;
    return MNV_OK;
}
