/* Lazy arrays and the compute graph.
 *
 * An array is a node of a graph. Op constructors only record a node (its op,
 * dtype, shape, strides, sources and small parameters), computing the shape
 * and dtype eagerly so that mistakes surface where the op is written. The
 * node array is flat and already in topological order (a node's sources are
 * always earlier nodes). Evaluation = plan memory (plan.c) + run on a backend.
 *
 * Shapes are row-major: shape[ndim-1] is the innermost (contiguous)
 * dimension; strides are in elements. */
#ifndef MNV_GRAPH_H
#define MNV_GRAPH_H

#include "core/core.h"
#include "quant/kv_quant.h"
#include "quant/quant.h"

#define MNV_MAX_DIMS 4
#define MNV_MAX_SRC 8

#define MNV_OP_LIST(X)                                                                   \
    X(MNV_OP_LEAF, "leaf")             /* weights or inputs: data supplied from outside */ \
    X(MNV_OP_VIEW, "view")             /* reshape/slice/transpose of src0, no copy */       \
    X(MNV_OP_COPY, "copy")             /* src0 (any strides/dtype) -> contiguous dtype */   \
    X(MNV_OP_ADD, "add")               /* src0 + src1 (src1 broadcast over rows) */          \
    X(MNV_OP_MUL, "mul")               /* src0 * src1 (src1 broadcast over rows) */          \
    X(MNV_OP_SCALE, "scale")           /* src0 * p.f[0] */                                  \
    X(MNV_OP_RMS_NORM, "rms_norm")     /* over the last dim; src1 = weight (optional) */   \
    X(MNV_OP_MATMUL, "matmul")         /* src0 (.., k) x src1 (n, k)^T -> (.., n) */         \
    X(MNV_OP_ROPE, "rope")             /* src0 (T,H,D), src1 pos (T) i32, src2 inv_freq */  \
    X(MNV_OP_SOFTMAX, "softmax")       /* over the last dim */                              \
    X(MNV_OP_SILU, "silu")                                                                 \
    X(MNV_OP_GELU, "gelu")             /* tanh approximation */                            \
    X(MNV_OP_SILU_MUL, "silu_mul")     /* silu(src0) * src1 */                             \
    X(MNV_OP_GET_ROWS, "get_rows")     /* src0 table (V, D), src1 ids (T) i32 -> (T, D) */  \
    X(MNV_OP_CACHE_WRITE, "cache_write") /* src0 cache, src1 rows, src2 slot */             \
    X(MNV_OP_ATTENTION, "attention")   /* src0 q, src1 k cache, src2 v cache, src3 tables  \
                                          (optional), src4 seq, src5 pos, src6 sinks (optional) */ \
    X(MNV_OP_QMATMUL, "qmatmul")       /* src0 x, src1 packed W, src2 scales, src3 biases */ \
    X(MNV_OP_QGET_ROWS, "qget_rows")   /* src0 packed table, src1 ids, src2 scales, src3 biases */ \
    X(MNV_OP_TOPK, "topk")             /* src0 (T, E) -> (T, k) i32 ids of the k largest */  \
    X(MNV_OP_GATHER_SOFTMAX, "gather_softmax") /* src0 (T, E), src1 ids (T, k) -> softmax of the picks */ \
    X(MNV_OP_MOE_MATMUL, "moe_matmul") /* src0 x, src1 experts W, src2 ids, src3 bias,       \
                                          src4 scales, src5 biases (quantized W) */         \
    X(MNV_OP_SWIGLU_OAI, "swiglu_oai") /* gpt-oss clamped SwiGLU of src0 gate, src1 up */   \
    X(MNV_OP_MOE_SUM, "moe_sum")       /* src0 (T, k, N) weighted by src1 (T, k) -> (T, N) */ \
    X(MNV_OP_HADAMARD, "hadamard")     /* src0 (.., D): each block of p.i[0] along D times H */ \
    X(MNV_OP_ARGMAX, "argmax")         /* src0 (T, n) -> (T) i32: mnv__argmax_row of each row */ \
    X(MNV_OP_TOP_CANDS, "top_cands")   /* src0 (T, n) -> (T, MNV_TOP_CANDS_ROW): core/topcands.h */

typedef enum {
#define MNV_X_ENUM(name, str) name,
    MNV_OP_LIST(MNV_X_ENUM)
#undef MNV_X_ENUM
        MNV_OP_COUNT
} mnv_op;

const char *mnv_op_name(mnv_op op);

enum {
    MNV_NODE_OUTPUT = 1 << 0, /* value is read after evaluation: never reused */
    MNV_NODE_INPUT = 1 << 1,  /* leaf whose host data the caller fills per step */
    MNV_NODE_PARAM = 1 << 2,  /* leaf pointing at weights (or other persistent data) */
};

typedef struct mnv_node mnv_node;
typedef mnv_node mnv_array;

typedef union {
    float f[8];
    int32_t i[8];
    struct {
        float eps;
    } norm;
    struct {
        int32_t n_rot;       /* rotated dims (<= D); the rest pass through */
        int32_t traditional; /* 1: pairs (2i, 2i+1); 0: halves (i, i + n_rot/2) */
        float attn_factor;   /* multiplies cos and sin (YaRN mscale); 1 otherwise */
    } rope;
    struct {
        float scale;
        int32_t window;      /* > 0: attend to the last `window` positions only */
    } attn;
    struct {
        mnv_qformat fmt;     /* mode NONE: a plain float matrix (moe_matmul) */
        int32_t k;           /* logical row length of the quantized matrix */
        float global_scale;  /* nvfp4 (1 otherwise) */
    } q;
    struct {
        float alpha, limit;
    } swiglu;
    mnv_kv_layout kv;        /* KV cache leaves (mnv_kv_param) and cache_write: one head's row */
} mnv_op_params;

struct mnv_node {
    mnv_op op;
    mnv_dtype dtype;
    int32_t ndim;
    int32_t flags;
    int64_t shape[MNV_MAX_DIMS];
    int64_t stride[MNV_MAX_DIMS];      /* elements */
    mnv_node *src[MNV_MAX_SRC];
    mnv_op_params p;
    /* memory */
    void *data;                        /* resolved before running: where the values live */
    void *host;                        /* MNV_NODE_INPUT leaves: the host memory the caller fills (the
                                          graph's); data is the same or the backend's copy of it */
    mnv_node *view_src;                /* VIEW / CACHE_WRITE: the node whose memory this is */
    size_t view_offset;                /* bytes into view_src's memory */
    size_t offset;                     /* planned offset in the activation arena */
    size_t nbytes;                     /* bytes this node's own buffer needs (0 for views) */
    int32_t id;                        /* index in the graph */
    int32_t last_use;                  /* index of the last node reading it (planner) */
    char name[48];
};

typedef struct mnv_graph mnv_graph;

/* A graph holds at most `capacity` nodes; its memory is reused by
 * mnv_graph_reset so building the graph for each step allocates nothing. */
mnv_status mnv_graph_create(int32_t capacity, mnv_graph **out);
void mnv_graph_free(mnv_graph *g);
void mnv_graph_reset(mnv_graph *g);
int32_t mnv_graph_n_nodes(const mnv_graph *g);
mnv_node *mnv_graph_node(mnv_graph *g, int32_t i);
/* First error recorded while building (ops return NULL after an error and
 * every later op given a NULL source returns NULL). */
mnv_status mnv_graph_status(const mnv_graph *g);

/* ---- leaves ---- */
/* Weights or other data that outlives the graph (not copied). */
mnv_array *mnv_param(mnv_graph *g, const void *data, mnv_dtype dt, int32_t ndim, const int64_t *shape,
                     const char *name);
/* The same with explicit element strides (e.g. one layer's rows in a pool of
 * blocks). */
mnv_array *mnv_param_strided(mnv_graph *g, const void *data, mnv_dtype dt, int32_t ndim, const int64_t *shape,
                             const int64_t *strides, const char *name);
/* Per-step input whose host memory belongs to the graph (valid until reset);
 * fill it through mnv_input_data. */
mnv_array *mnv_input(mnv_graph *g, mnv_dtype dt, int32_t ndim, const int64_t *shape, const char *name);
void *mnv_input_data(mnv_array *a);
/* Make room for `bytes` of input data (call right after mnv_graph_reset,
 * before creating inputs; input memory cannot grow while inputs exist). */
mnv_status mnv_graph_reserve_inputs(mnv_graph *g, size_t bytes);

/* ---- shape ops (views) ---- */
mnv_array *mnv_reshape(mnv_graph *g, mnv_array *a, int32_t ndim, const int64_t *shape);
mnv_array *mnv_reshape_2d(mnv_graph *g, mnv_array *a, int64_t d0, int64_t d1);
mnv_array *mnv_reshape_3d(mnv_graph *g, mnv_array *a, int64_t d0, int64_t d1, int64_t d2);
/* Swap two dims (a strided view). */
mnv_array *mnv_transpose(mnv_graph *g, mnv_array *a, int32_t d0, int32_t d1);
/* Rows [start, start + n) of dim 0. */
mnv_array *mnv_slice_rows(mnv_graph *g, mnv_array *a, int64_t start, int64_t n);
/* Contiguous copy, optionally changing dtype. */
mnv_array *mnv_contiguous(mnv_graph *g, mnv_array *a);
mnv_array *mnv_cast(mnv_graph *g, mnv_array *a, mnv_dtype dt);

/* ---- compute ops (results are f32 unless stated) ---- */
mnv_array *mnv_add(mnv_graph *g, mnv_array *a, mnv_array *b);
mnv_array *mnv_mul(mnv_graph *g, mnv_array *a, mnv_array *b);
mnv_array *mnv_scale(mnv_graph *g, mnv_array *a, float s);
mnv_array *mnv_rms_norm(mnv_graph *g, mnv_array *x, mnv_array *weight, float eps);
mnv_array *mnv_matmul(mnv_graph *g, mnv_array *x, mnv_array *w);
mnv_array *mnv_rope(mnv_graph *g, mnv_array *x, mnv_array *pos, mnv_array *inv_freq, int32_t n_rot,
                    int traditional, float attn_factor);
mnv_array *mnv_softmax(mnv_graph *g, mnv_array *x);
mnv_array *mnv_silu(mnv_graph *g, mnv_array *x);
mnv_array *mnv_gelu(mnv_graph *g, mnv_array *x);
mnv_array *mnv_silu_mul(mnv_graph *g, mnv_array *gate, mnv_array *up);
mnv_array *mnv_get_rows(mnv_graph *g, mnv_array *table, mnv_array *ids);
/* Normalized Walsh-Hadamard transform along the last dim of x (.., D): each
 * run of `block` elements (a power of two dividing D) becomes H x with
 * H = H^T = H^-1 (Sylvester order, scaled by 1 / sqrt(block)), so dot
 * products within a block are kept and applying it twice is the identity. */
mnv_array *mnv_hadamard(mnv_graph *g, mnv_array *x, int32_t block);
/* KV caches are paged: a cache is (NB, B, Hkv, D), NB blocks of B token
 * rows, whose dim 0 may be strided (the blocks of a pool that also holds
 * other layers). A dense cache of S sequences of C tokens is the case
 * NB = S, B = C. A cache of f32/f16/bf16 elements may be any float leaf of
 * that shape; a quantized one (Q8/Q4) is a U8 leaf (NB, B, Hkv, row_bytes)
 * made by mnv_kv_param, which records its layout (quant/kv_quant.h).
 *
 * mnv_kv_param: a cache leaf of layout lay at data, blocks block_stride
 * bytes apart. */
mnv_array *mnv_kv_param(mnv_graph *g, void *data, const mnv_kv_layout *lay, int64_t n_blocks, int64_t block_tokens,
                        int64_t n_head_kv, int64_t block_stride, const char *name);
/* The layout of a cache array (a leaf or a cache_write); false when it is
 * not a paged cache (shape, strides or element type). */
bool mnv_kv_layout_of(const mnv_array *cache, mnv_kv_layout *out);
/* cache_write: rows (T, Hkv, D) into the cache at slot[t] = block * B + row
 * (converted or quantized to the cache's layout);
 * the result is the cache itself, so ops that read the cache after the write
 * take the result as their source. */
mnv_array *mnv_cache_write(mnv_graph *g, mnv_array *cache, mnv_array *rows, mnv_array *slot);
/* Causal grouped-query attention over paged caches for a ragged batch:
 * query token t (sequence seq[t], position pos[t]) attends to its sequence's
 * positions [max(0, pos - window + 1), pos], position p living in block
 * tables[seq[t], p / B] at row p % B. tables: (S, W) I32, or NULL for a
 * dense cache (block = seq[t]). q: (T, H, D); sinks (optional, H f32): a
 * learned logit per head that joins the softmax denominator. K and V may
 * have different layouts. Result (T, H, D). */
mnv_array *mnv_attention(mnv_graph *g, mnv_array *q, mnv_array *kc, mnv_array *vc, mnv_array *tables,
                         mnv_array *seq, mnv_array *pos, mnv_array *sinks, float scale, int32_t window);

/* Quantized weights (MLX layout, see quant/quant.h): w is the packed U32
 * matrix (n, k*bits/32), scales/biases (n, k/group); biases only for
 * affine. qmatmul: x (.., k) -> (.., n). qget_rows: ids (T) -> (T, k). */
mnv_array *mnv_qmatmul(mnv_graph *g, mnv_array *x, mnv_array *w, mnv_array *scales, mnv_array *biases,
                       const mnv_qformat *fmt, int64_t k);
mnv_array *mnv_qget_rows(mnv_graph *g, mnv_array *w, mnv_array *scales, mnv_array *biases, const mnv_qformat *fmt,
                         int64_t k, mnv_array *ids);

/* A strided view: shape and element strides given explicitly, starting
 * `offset` elements into a's memory (a must be contiguous or a leaf). For
 * layouts such as interleaved gate/up rows. */
mnv_array *mnv_view(mnv_graph *g, mnv_array *a, int32_t ndim, const int64_t *shape, const int64_t *strides,
                    int64_t offset);

/* Mixture of experts.
 * topk: ids (T, k) of the k largest of each row of logits (T, E).
 * gather_softmax: softmax over logits[t, ids[t, j]] for j < k -> (T, k).
 * moe_matmul: for each token t and slot j, y[t, j] = x_t W[ids[t, j]]^T +
 *   bias[ids[t, j]], where x_t is x[t] (x of shape (T, K)) or x[t, j]
 *   (x of shape (T, k, K)); W (E, N, K) float, or quantized: W the packed
 *   (E, N, words) U32 with scales/biases (E, N, groups) and fmt; rows of W,
 *   scales and bias may be strided views. Tokens are grouped by expert, so
 *   each selected expert's weights are read once per batch. -> (T, k, N).
 * swiglu_oai: g = min(gate, limit), u = clamp(up, -limit, limit),
 *   g * sigmoid(alpha g) * (u + 1).
 * moe_sum: sum_j w[t, j] y[t, j] -> (T, N). */
mnv_array *mnv_topk(mnv_graph *g, mnv_array *logits, int32_t k);
/* (T, n) -> (T) i32: each row's largest, as greedy sampling picks it
 * (core/argmax.h: NaN below everything, ties to the lower index), so a
 * decode step can hand back ids instead of rows of logits. */
mnv_array *mnv_argmax(mnv_graph *g, mnv_array *logits);
/* (T, n) -> (T, MNV_TOP_CANDS_ROW) f32: each row's largest MNV_TOP_CANDS
 * values and indices, and its log sum exp(x - max) (core/topcands.h), so that a
 * sampled decode step can hand back candidates instead of rows of logits. */
mnv_array *mnv_top_cands(mnv_graph *g, mnv_array *logits);
mnv_array *mnv_gather_softmax(mnv_graph *g, mnv_array *logits, mnv_array *ids);
mnv_array *mnv_moe_matmul(mnv_graph *g, mnv_array *x, mnv_array *w, mnv_array *scales, mnv_array *biases,
                          const mnv_qformat *fmt, int64_t k, mnv_array *ids, mnv_array *bias);
mnv_array *mnv_swiglu_oai(mnv_graph *g, mnv_array *gate, mnv_array *up, float alpha, float limit);
mnv_array *mnv_moe_sum(mnv_graph *g, mnv_array *y, mnv_array *w);

/* Mark a node as an output (kept after evaluation). */
void mnv_set_output(mnv_array *a);
void mnv_set_name(mnv_array *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* helpers */
int64_t mnv_array_nelem(const mnv_array *a);
bool mnv_array_is_contiguous(const mnv_array *a);
int64_t mnv_array_rows(const mnv_array *a); /* product of all dims but the last */

/* Graphviz DOT of the graph. */
mnv_status mnv_graph_dump_dot(const mnv_graph *g, const char *path);

#endif
