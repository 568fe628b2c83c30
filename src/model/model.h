/* Models: weights bound to names, hyper-parameters, and a graph builder per
 * architecture. Model files build graphs only through the array ops. */
#ifndef MNV_MODEL_H
#define MNV_MODEL_H

#include "core/graph.h"
#include "io/config.h"
#include "io/safetensors.h"

typedef struct {
    const void *data;   /* NULL when the tensor is absent (optional weights) */
    mnv_dtype dtype;    /* U32 when quantized */
    int32_t ndim;
    int64_t shape[2];   /* logical shape (rows, columns) */
    const char *name;
    /* MLX-quantized weights: data is the packed (rows, row_words) U32 matrix */
    mnv_qformat q;      /* q.mode == MNV_QMODE_NONE for plain weights */
    const void *scales, *biases;
} mnv_weight;

typedef struct {
    mnv_weight attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm;
    mnv_weight ffn_norm, w_gate, w_up, w_down, b_gate, b_up, b_down;
} mnv_layer_weights;

#define MNV_MAX_KV_GROUPS 4

/* What the model needs to know about the KV cache. It is paged: per layer,
 * K and V are (n_blocks, block_tokens, n_head_kv, head_dim) elements of
 * their layouts (quant/kv_quant.h) with blocks block_stride bytes apart (a
 * block pool holds every layer of a group in each block). Layers are grouped by attention window (gpt-oss: full and
 * sliding); each group has its own block tables and write slots. A dense
 * cache of S sequences of C tokens is n_blocks = S, block_tokens = C. */
typedef struct {
    int32_t n_layer;
    mnv_kv_layout k_lay, v_lay; /* one head's row of K, of V */
    int64_t n_blocks, block_tokens, block_stride;
    void **k, **v;              /* per layer: its K / V rows in block 0 */
    const int32_t *layer_group; /* per layer: its group; NULL: every layer in group 0 */
    /* Hadamard rotation along head_dim (mnv_hadamard's block; 0: none): rot_k
     * turns Q and K after RoPE (scores unchanged), rot_v turns V before it is
     * cached and the attention output back, so values quantize with fewer
     * outliers per group. The cache's contents depend on it: one per pool. */
    int32_t rot_k, rot_v;
} mnv_kv_cache;

/* A ragged batch: tokens of several sequences at different positions. */
typedef struct {
    int32_t n_tokens;
    const int32_t *ids;      /* (n_tokens) */
    const int32_t *pos;      /* position of each token in its sequence */
    const int32_t *seq;      /* sequence of each token: a row of the block tables (or the dense
                                cache's slot) */
    int32_t n_out;
    const int32_t *out_rows; /* tokens whose logits are wanted, in output order */
    /* the paged cache, per layer group: */
    int32_t n_groups;        /* 0 or 1 with tables NULL: a dense cache (block = seq) */
    int32_t n_seqs;          /* rows of each table */
    const int32_t *tables[MNV_MAX_KV_GROUPS]; /* (n_seqs, table_width[g]) physical blocks, -1 unused */
    int32_t table_width[MNV_MAX_KV_GROUPS];
    const int32_t *slots[MNV_MAX_KV_GROUPS];  /* (n_tokens) where each token's K/V goes:
                                                 block * block_tokens + row */
} mnv_batch;

/* A step's input leaves (I32), made once per graph shape and refilled per
 * step, so a cached graph replays with new values. */
typedef struct {
    mnv_array *ids, *pos, *seq, *out_rows;
    mnv_array *tables[MNV_MAX_KV_GROUPS]; /* NULL: dense cache */
    mnv_array *slots[MNV_MAX_KV_GROUPS];
    bool all_rows;                        /* out_rows is the identity: no gather */
} mnv_step_inputs;

/* Create the input leaves for batch b's shape (n_groups >= 1) and fill them. */
mnv_status mnv_step_inputs_create(mnv_graph *g, const mnv_batch *b, int32_t n_groups, mnv_step_inputs *in);
/* Refill inputs made for a batch of the same shape. */
void mnv_step_inputs_fill(const mnv_step_inputs *in, const mnv_batch *b);
/* The input bytes mnv_step_inputs_create needs (for mnv_graph_reserve_inputs). */
size_t mnv_step_inputs_bytes(const mnv_batch *b, int32_t n_groups);

/* The KV layer groups of a configuration: *n_groups windows (0: full
 * attention), and per layer its group and its index within the group. */
void mnv_model_kv_groups(const mnv_model_config *c, int32_t *n_groups, int32_t window[MNV_MAX_KV_GROUPS],
                         int32_t *layer_group, int32_t *layer_index);
/* Cache leaves of layer l: K and V as (n_blocks, B, Hkv, D) strided views. */
void mnv_model_kv_leaves(mnv_graph *g, const mnv_model *m, const mnv_kv_cache *kv, int32_t l, mnv_array **kc,
                         mnv_array **vc);
/* The cache's rotation (kv->rot_k, rot_v) of a layer's q, k (after RoPE) and
 * v (T, heads, D) before they meet the cache; mnv_model_kv_unrotate turns
 * the attention output (T, H, D) back. No nodes when the rotation is off. */
void mnv_model_kv_rotate(mnv_graph *g, const mnv_kv_cache *kv, mnv_array **q, mnv_array **k, mnv_array **v);
mnv_array *mnv_model_kv_unrotate(mnv_graph *g, const mnv_kv_cache *kv, mnv_array *attn);

typedef struct mnv_model_arch mnv_model_arch;

/* A tensor an architecture expects, in its logical (unquantized) form. */
typedef enum { MNV_TS_WEIGHT, MNV_TS_NORM, MNV_TS_BIAS } mnv_ts_kind;

typedef struct {
    char name[112];
    int32_t ndim;        /* 1 to 3 */
    int64_t shape[3];
    mnv_ts_kind kind;
    bool optional;       /* e.g. lm_head when embeddings are tied */
    bool quantizable;    /* a Linear / Embedding / experts weight (MLX quantizes these) */
} mnv_tensor_spec;

/* How a tensor is stored once the config's quantization is applied (what
 * synth writes and what inspect estimates from a config alone). */
typedef enum { MNV_FILL_NORMAL, MNV_FILL_ONES, MNV_FILL_SMALL, MNV_FILL_BITS, MNV_FILL_E8M0, MNV_FILL_QSCALE,
               MNV_FILL_QBIAS } mnv_fill;

typedef struct {
    char name[120];
    mnv_dtype dtype;
    int32_t ndim;
    int64_t shape[3];
    mnv_fill fill;
    int32_t bits;        /* quantized companions: the bit width */
} mnv_stored_tensor;

/* The stored tensors of a configuration (heap array, free()). Float tensors
 * use float_dtype; quantizable weights follow cfg's quantization block. */
mnv_status mnv_model_stored_tensors(const mnv_model_config *cfg, mnv_dtype float_dtype, mnv_stored_tensor **out,
                                    int32_t *n_out);
/* Bytes of a stored tensor; UINT64_MAX when the count does not fit in 64
 * bits (a configuration's sizes are not bounded by any file). */
uint64_t mnv_stored_tensor_bytes(const mnv_stored_tensor *t);

/* What a list of stored tensors adds up to: exact counts that saturate at
 * UINT64_MAX (overflow then set), and the true magnitudes as doubles. */
typedef struct {
    uint64_t bytes, params, active_bytes; /* active: read per decoded token */
    double bytes_f, params_f;
    bool overflow;
} mnv_stored_totals;

void mnv_stored_tensors_total(const mnv_model_config *cfg, const mnv_stored_tensor *t, int32_t n,
                              mnv_stored_totals *out);
/* Append a spec at specs[*n] when *n < cap; *n always advances (so a first
 * call with cap 0 counts). Weights of 2 or 3 dims are quantizable. */
void mnv_spec_add(mnv_tensor_spec *specs, int32_t *n, int32_t cap, const char *name, int32_t ndim, int64_t d0,
                  int64_t d1, int64_t d2, mnv_ts_kind kind, bool optional);
const mnv_model_arch *mnv_model_arch_for(mnv_arch a);

struct mnv_model_arch {
    const char *name;
    /* List expected tensors into specs (at most cap); returns the count
     * (which may exceed cap: call again with more room). */
    int32_t (*tensor_specs)(const mnv_model_config *cfg, mnv_tensor_spec *specs, int32_t cap);
    /* Bind weights after the safetensors set is open. */
    mnv_status (*bind)(mnv_model *m);
    /* Build the forward graph of a step; returns logits (n_out, n_vocab). */
    mnv_array *(*build)(const mnv_model *m, mnv_graph *g, const mnv_step_inputs *in, const mnv_kv_cache *kv);
    /* Free arch_data (may be NULL). */
    void (*free)(mnv_model *m);
};

struct mnv_model {
    char *dir;
    mnv_model_config cfg;
    mnv_model_params params;
    const mnv_model_arch *arch;
    mnv_st_set *st;
    mnv_tokenizer *tok;
    mnv_weight tok_embd, out_norm, output;
    mnv_layer_weights *layers;
    void *arch_data;     /* what only the architecture knows (e.g. experts) */
    /* RoPE */
    float *inv_freq; /* n_rot / 2 */
    int32_t n_rot;
    float rope_attn_factor;
    /* small tensors (norms, biases) converted to f32 at load */
    float *f32_pool;
    size_t f32_used, f32_cap;
    uint64_t n_params, weight_bytes;
    /* checkpoint tensors (their data) that bind read into copies of its
     * own, so that no graph reads them where they are mapped */
    const void **copied;
    size_t n_copied, cap_copied;
};

/* Record that bind read tensor data `data` into a copy (see copied). */
mnv_status mnv__model_mark_copied(mnv_model *m, const void *data);
bool mnv__model_is_copied(const mnv_model *m, const void *data);

const mnv_model_arch *mnv_arch_llama(void);
const mnv_model_arch *mnv_arch_gpt_oss(void);

/* An upper bound of the activation memory of one forward pass of T tokens. */
uint64_t mnv__model_compute_bound(const mnv_model_config *c, uint64_t T);

/* Look up a weight by name and check its shape (2-d or 1-d). 1-d weights are
 * converted to f32 (they are tiny and used in f32 arithmetic). Missing
 * required weights give MNV_ERR_FORMAT naming the tensor. */
mnv_status mnv_model_weight(mnv_model *m, const char *name, int32_t ndim, int64_t d0, int64_t d1, bool optional,
                            mnv_weight *out);
/* Fill m->inv_freq for the configured RoPE (default, linear, llama3, yarn). */
mnv_status mnv_model_init_rope(mnv_model *m);
/* Build the model graph; the arch's builder behind a common entry. */
mnv_array *mnv_model_build(const mnv_model *m, mnv_graph *g, const mnv_step_inputs *in, const mnv_kv_cache *kv);
/* True when a batch wants the logits of every token, in token order. */
bool mnv_rows_are_identity(const mnv_batch *b);
/* A leaf for a weight (plain weights only; 1-d weights are always plain). */
mnv_array *mnv_weight_param(mnv_graph *g, const mnv_weight *w);
/* x W^T for a plain or quantized weight. */
mnv_array *mnv_model_linear(mnv_graph *g, mnv_array *x, const mnv_weight *w);
/* Rows ids of an embedding table, plain or quantized, as f32. */
mnv_array *mnv_model_embed(mnv_graph *g, const mnv_weight *w, mnv_array *ids);

#endif
