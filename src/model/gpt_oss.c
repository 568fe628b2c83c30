/* gpt-oss: alternating sliding-window (even layers) and full attention with a
 * learned sink logit per head, YaRN RoPE, biases on q/k/v/o, and a mixture
 * of experts (router top-k, softmax over the k picks, clamped SwiGLU with the
 * +1 on the linear half, bias inside each expert).
 *
 * Expert layouts read directly:
 *  (a) MLX (mlx-community): mlp.experts.{gate,up,down}_proj.{weight,scales,bias},
 *      usually mxfp4, de-interleaved;
 *  (b) OpenAI's Hugging Face checkpoint: mlp.experts.gate_up_proj_{blocks,scales,bias}
 *      with gate/up rows interleaved (even rows gate, odd rows up), read as strided
 *      views of the MXFP4 bytes (the nibble order is MLX's), no copy;
 *  (c) transformers' dense layout: mlp.experts.gate_up_proj (E, in, 2F) used as
 *      x @ W with interleaved columns, down_proj (E, F, out): transposed once
 *      into (E, out, in) rows at load. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/model.h"

#define SWIGLU_ALPHA 1.702f

/* One expert matrix set (E, N, K) as strided views of a base buffer. */
typedef struct {
    const void *w;         /* base of W (packed words when quantized) */
    mnv_dtype wdt;         /* U32 when quantized */
    int64_t w_total;       /* elements of the base buffer */
    int64_t w_es, w_rs;    /* element strides: expert, row */
    int64_t w_off;
    mnv_qformat q;
    const void *scales, *biases;
    int64_t s_total, s_es, s_rs, s_off;
    const float *bias;     /* f32, may be NULL */
    int64_t b_total, b_es, b_rs, b_off;
    int64_t E, N, K;
} moe_weight;

typedef struct {
    const float *sinks;    /* (H) */
    mnv_weight router, router_b;
    moe_weight gate, up, down;
} gptoss_layer;

typedef struct {
    gptoss_layer *layers;
    void *owned;           /* copies made at load (dense layout transposes, f32 expert biases) */
    size_t owned_used, owned_cap;
} gptoss_data;

static void *own(gptoss_data *d, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (d->owned_used + bytes > d->owned_cap) return NULL;
    void *p = (uint8_t *)d->owned + d->owned_used;
    d->owned_used += bytes;
    return p;
}

static const mnv_st_tensor *find(const mnv_model *m, int32_t l, const char *suffix) {
    char name[200];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);
    return mnv_st_find(m->st, name);
}

static mnv_status shape_error(const mnv_model *m, const mnv_st_tensor *t, const char *want) {
    return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' (%s, %d dims) does not hold %s",
                         mnv_st_file_name(m->st, t->file_index), t->name, mnv_dtype_name(t->dtype), t->ndim, want);
}

/* An expert bias (E, n) of any float dtype as f32 (converted copy). */
static mnv_status expert_bias(mnv_model *m, gptoss_data *d, const mnv_st_tensor *t, int32_t l, const char *suffix,
                              int64_t E, int64_t n, float **out) {
    if (!t || t->ndim != 2 || t->shape[0] != E || t->shape[1] != n)
        return t ? shape_error(m, t, "an (experts, rows) bias")
                 : mnv_set_error(MNV_ERR_FORMAT, "%s: tensor 'model.layers.%d.%s' is missing", m->dir, l, suffix);
    float *b = own(d, (size_t)(E * n) * 4);
    if (!b) return mnv_set_error(MNV_ERR_NOMEM, "out of memory for '%s'", t->name);
    for (int64_t i = 0; i < E * n; i++)
        b[i] = t->dtype == MNV_DTYPE_F32 ? ((const float *)t->data)[i]
               : t->dtype == MNV_DTYPE_BF16 ? mnv_bf16_to_f32(((const uint16_t *)t->data)[i])
                                            : mnv_f16_to_f32(((const uint16_t *)t->data)[i]);
    *out = b;
    return mnv__model_mark_copied(m, t->data);
}

/* (a) MLX layout: mlp.experts.NAME.{weight, scales, [biases], bias}. */
static mnv_status bind_mlx(mnv_model *m, gptoss_data *d, int32_t l, const char *proj, int64_t N, int64_t K,
                           moe_weight *mw) {
    const mnv_model_config *c = &m->cfg;
    int64_t E = c->num_local_experts;
    char path[128], suffix[160];
    snprintf(path, sizeof path, "model.layers.%d.mlp.experts.%s", l, proj);
    snprintf(suffix, sizeof suffix, "mlp.experts.%s.weight", proj);
    const mnv_st_tensor *w = find(m, l, suffix);
    snprintf(suffix, sizeof suffix, "mlp.experts.%s.scales", proj);
    const mnv_st_tensor *sc = find(m, l, suffix);
    snprintf(suffix, sizeof suffix, "mlp.experts.%s.biases", proj);
    const mnv_st_tensor *bi = find(m, l, suffix);
    snprintf(suffix, sizeof suffix, "mlp.experts.%s.bias", proj);
    mnv_status st = expert_bias(m, d, find(m, l, suffix), l, suffix, E, N, (float **)&mw->bias);
    if (st != MNV_OK) return st;
    *mw = (moe_weight){.bias = mw->bias, .b_total = E * N, .b_es = N, .b_rs = 1, .E = E, .N = N, .K = K};
    if (!w) return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s.weight' is missing", m->dir, path);
    mnv_config_module_quant(c, path, sc != NULL, &mw->q.mode, &mw->q.bits, &mw->q.group_size);
    if (mw->q.mode == MNV_QMODE_NONE) {
        if (w->ndim != 3 || w->shape[0] != E || w->shape[1] != N || w->shape[2] != K || w->dtype == MNV_DTYPE_U32)
            return shape_error(m, w, "float experts (E, N, K)");
        *mw = (moe_weight){.w = w->data, .wdt = w->dtype, .w_total = E * N * K, .w_es = N * K, .w_rs = K,
                           .bias = mw->bias, .b_total = E * N, .b_es = N, .b_rs = 1, .E = E, .N = N, .K = K};
        return MNV_OK;
    }
    mw->q.scale_dtype = mw->q.mode == MNV_QMODE_AFFINE && sc ? sc->dtype : MNV_DTYPE_U8;
    char what[200];
    snprintf(what, sizeof what, "%s: tensor '%s.weight'", m->dir, path);
    if ((st = mnv_qformat_check(&mw->q, what)) != MNV_OK) return st;
    int64_t words = mnv_qformat_row_words(&mw->q, K), groups = mnv_qformat_row_groups(&mw->q, K);
    if (w->ndim != 3 || w->dtype != MNV_DTYPE_U32 || w->shape[0] != E || w->shape[1] != N || w->shape[2] != words)
        return shape_error(m, w, "packed experts (E, N, words)");
    if (!sc || sc->ndim != 3 || sc->shape[0] != E || sc->shape[1] != N || sc->shape[2] != groups ||
        sc->dtype != mw->q.scale_dtype)
        return sc ? shape_error(m, sc, "expert scales (E, N, groups)")
                  : mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s.scales' is missing", m->dir, path);
    if (mw->q.mode == MNV_QMODE_AFFINE && (!bi || bi->ndim != 3 || bi->shape[0] != E || bi->shape[1] != N ||
                                           bi->shape[2] != groups || bi->dtype != sc->dtype))
        return bi ? shape_error(m, bi, "expert biases (E, N, groups)")
                  : mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s.biases' is missing", m->dir, path);
    mw->w = w->data;
    mw->wdt = MNV_DTYPE_U32;
    mw->w_total = E * N * words;
    mw->w_es = N * words;
    mw->w_rs = words;
    mw->scales = sc->data;
    mw->biases = bi ? bi->data : NULL;
    mw->s_total = E * N * groups;
    mw->s_es = N * groups;
    mw->s_rs = groups;
    return MNV_OK;
}

/* (b) OpenAI's MXFP4 layout: `base`_blocks U8 (E, R, K/32, 16), _scales U8
 * (E, R, K/32), _bias (E, R); interleave 2 picks every other row from `first`. */
static mnv_status bind_blocks(mnv_model *m, gptoss_data *d, int32_t l, const char *base, int64_t R, int64_t K,
                              int interleave, int first, moe_weight *mw) {
    int64_t E = m->cfg.num_local_experts, G = K / 32;
    char suffix[160];
    snprintf(suffix, sizeof suffix, "mlp.experts.%s_blocks", base);
    const mnv_st_tensor *b = find(m, l, suffix);
    snprintf(suffix, sizeof suffix, "mlp.experts.%s_scales", base);
    const mnv_st_tensor *s = find(m, l, suffix);
    if (!b || b->dtype != MNV_DTYPE_U8 || b->ndim != 4 || b->shape[0] != E || b->shape[1] != R || b->shape[2] != G ||
        b->shape[3] != 16)
        return b ? shape_error(m, b, "MXFP4 blocks (E, rows, K/32, 16)")
                 : mnv_set_error(MNV_ERR_FORMAT, "%s: layer %d: tensor 'mlp.experts.%s_blocks' is missing", m->dir, l, base);
    if (!s || s->dtype != MNV_DTYPE_U8 || s->ndim != 3 || s->shape[0] != E || s->shape[1] != R || s->shape[2] != G)
        return s ? shape_error(m, s, "MXFP4 scales (E, rows, K/32)")
                 : mnv_set_error(MNV_ERR_FORMAT, "%s: layer %d: tensor 'mlp.experts.%s_scales' is missing", m->dir, l, base);
    if ((uintptr_t)b->data % 4)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: tensor '%s' is not 4-byte aligned in its file", m->dir, b->name);
    snprintf(suffix, sizeof suffix, "mlp.experts.%s_bias", base);
    float *bias = NULL;
    mnv_status st = expert_bias(m, d, find(m, l, suffix), l, suffix, E, R, &bias);
    if (st != MNV_OK) return st;
    int64_t words = K / 8;
    *mw = (moe_weight){
        .w = b->data, .wdt = MNV_DTYPE_U32, .w_total = E * R * words, .w_es = R * words, .w_rs = interleave * words,
        .w_off = first * words, .q = {MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8}, .scales = s->data,
        .s_total = E * R * G, .s_es = R * G, .s_rs = interleave * G, .s_off = first * G, .bias = bias,
        .b_total = E * R, .b_es = R, .b_rs = interleave, .b_off = first, .E = E, .N = R / interleave, .K = K,
    };
    return MNV_OK;
}

/* (c) transformers' dense layout: W (E, K, cols) used as x @ W; take every
 * `interleave`-th column from `first` and store rows (E, N, K). */
static mnv_status bind_dense(mnv_model *m, gptoss_data *d, int32_t l, const char *base, int64_t K, int64_t cols,
                             int interleave, int first, moe_weight *mw) {
    int64_t E = m->cfg.num_local_experts, N = cols / interleave;
    char suffix[160];
    snprintf(suffix, sizeof suffix, "mlp.experts.%s", base);
    const mnv_st_tensor *w = find(m, l, suffix);
    if (!w || w->ndim != 3 || w->shape[0] != E || w->shape[1] != K || w->shape[2] != cols ||
        (w->dtype != MNV_DTYPE_F32 && w->dtype != MNV_DTYPE_BF16 && w->dtype != MNV_DTYPE_F16))
        return w ? shape_error(m, w, "dense experts (E, in, out)")
                 : mnv_set_error(MNV_ERR_FORMAT, "%s: layer %d: tensor 'mlp.experts.%s' is missing", m->dir, l, base);
    size_t es = mnv_dtype_size(w->dtype);
    uint8_t *rows = own(d, (size_t)(E * N * K) * es);
    if (!rows) return mnv_set_error(MNV_ERR_NOMEM, "out of memory for '%s'", w->name);
    const uint8_t *src = w->data;
    for (int64_t e = 0; e < E; e++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++)
                memcpy(rows + ((e * N + n) * K + k) * es, src + ((e * K + k) * cols + n * interleave + first) * es, es);
    mnv_status st = mnv__model_mark_copied(m, w->data);
    if (st != MNV_OK) return st;
    snprintf(suffix, sizeof suffix, "mlp.experts.%s_bias", base);
    float *bias = NULL;
    st = expert_bias(m, d, find(m, l, suffix), l, suffix, E, cols, &bias);
    if (st != MNV_OK) return st;
    *mw = (moe_weight){.w = rows, .wdt = w->dtype, .w_total = E * N * K, .w_es = N * K, .w_rs = K, .bias = bias,
                       .b_total = E * cols, .b_es = cols, .b_rs = interleave, .b_off = first, .E = E, .N = N, .K = K};
    return MNV_OK;
}

static mnv_status bind_experts(mnv_model *m, gptoss_data *d, int32_t l, gptoss_layer *L) {
    int64_t E = m->cfg.num_local_experts, H = m->cfg.hidden_size, F = m->cfg.intermediate_size;
    mnv_status st;
    if (find(m, l, "mlp.experts.gate_proj.weight")) {
        st = bind_mlx(m, d, l, "gate_proj", F, H, &L->gate);
        if (!st) st = bind_mlx(m, d, l, "up_proj", F, H, &L->up);
        if (!st) st = bind_mlx(m, d, l, "down_proj", H, F, &L->down);
    } else if (find(m, l, "mlp.experts.gate_up_proj_blocks")) {
        st = bind_blocks(m, d, l, "gate_up_proj", 2 * F, H, 2, 0, &L->gate);
        if (!st) st = bind_blocks(m, d, l, "gate_up_proj", 2 * F, H, 2, 1, &L->up);
        if (!st) st = bind_blocks(m, d, l, "down_proj", H, F, 1, 0, &L->down);
    } else if (find(m, l, "mlp.experts.gate_up_proj")) {
        st = bind_dense(m, d, l, "gate_up_proj", H, 2 * F, 2, 0, &L->gate);
        if (!st) st = bind_dense(m, d, l, "gate_up_proj", H, 2 * F, 2, 1, &L->up);
        if (!st) st = bind_dense(m, d, l, "down_proj", F, H, 1, 0, &L->down);
    } else {
        return mnv_set_error(MNV_ERR_FORMAT, "%s: layer %d: no experts found (expected mlp.experts.gate_proj.weight, "
                             "mlp.experts.gate_up_proj_blocks or mlp.experts.gate_up_proj)", m->dir, l);
    }
    (void)E;
    return st;
}

/* Bytes that load-time copies need: dense experts transposed, biases in f32. */
static size_t owned_bytes(const mnv_model *m) {
    const mnv_model_config *c = &m->cfg;
    int64_t E = c->num_local_experts, H = c->hidden_size, F = c->intermediate_size;
    size_t per = (size_t)(E * (2 * F + H)) * 4 * 2 + 4 * 64; /* biases (twice for gate/up views of one tensor) */
    if (find(m, 0, "mlp.experts.gate_up_proj")) per += (size_t)(E * 3 * F * H) * 4 + 3 * 64;
    return per * (size_t)c->num_hidden_layers;
}

static mnv_status bind_layer(mnv_model *m, gptoss_data *d, int32_t l) {
    const mnv_model_config *c = &m->cfg;
    mnv_layer_weights *w = &m->layers[l];
    gptoss_layer *L = &d->layers[l];
    int64_t H = c->hidden_size, D = c->head_dim, NH = c->num_attention_heads, E = c->num_local_experts;
    int64_t qd = NH * D, kvd = c->num_key_value_heads * D;
    char nm[160];
    struct {
        mnv_weight *dst;
        const char *suffix;
        int32_t ndim;
        int64_t d0, d1;
    } t[] = {
        {&w->attn_norm, "input_layernorm.weight", 1, H, 0},    {&w->wq, "self_attn.q_proj.weight", 2, qd, H},
        {&w->wk, "self_attn.k_proj.weight", 2, kvd, H},        {&w->wv, "self_attn.v_proj.weight", 2, kvd, H},
        {&w->wo, "self_attn.o_proj.weight", 2, H, qd},         {&w->bq, "self_attn.q_proj.bias", 1, qd, 0},
        {&w->bk, "self_attn.k_proj.bias", 1, kvd, 0},          {&w->bv, "self_attn.v_proj.bias", 1, kvd, 0},
        {&w->bo, "self_attn.o_proj.bias", 1, H, 0},            {&w->ffn_norm, "post_attention_layernorm.weight", 1, H, 0},
        {&L->router, "mlp.router.weight", 2, E, H},            {&L->router_b, "mlp.router.bias", 1, E, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        snprintf(nm, sizeof nm, "model.layers.%d.%s", l, t[i].suffix);
        mnv_status st = mnv_model_weight(m, nm, t[i].ndim, t[i].d0, t[i].d1, false, t[i].dst);
        if (st != MNV_OK) return st;
    }
    mnv_weight sinks;
    snprintf(nm, sizeof nm, "model.layers.%d.self_attn.sinks", l);
    mnv_status st = mnv_model_weight(m, nm, 1, NH, 0, false, &sinks);
    if (st != MNV_OK) return st;
    L->sinks = sinks.data;
    return bind_experts(m, d, l, L);
}

static mnv_status gptoss_bind(mnv_model *m) {
    const mnv_model_config *c = &m->cfg;
    int64_t H = c->hidden_size;
    if (c->num_local_experts < 1 || c->num_local_experts > 1024 || c->num_experts_per_tok < 1)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: config.json: %d experts, %d per token", m->dir, c->num_local_experts,
                             c->num_experts_per_tok);
    mnv_status st = mnv_model_weight(m, "model.embed_tokens.weight", 2, c->vocab_size, H, false, &m->tok_embd);
    if (st == MNV_OK) st = mnv_model_weight(m, "model.norm.weight", 1, H, 0, false, &m->out_norm);
    if (st == MNV_OK) st = mnv_model_weight(m, "lm_head.weight", 2, c->vocab_size, H, c->tie_word_embeddings == 1, &m->output);
    if (st != MNV_OK) return st;
    if (!m->output.data) m->output = m->tok_embd;
    gptoss_data *d = calloc(1, sizeof *d);
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!d || !m->layers) {
        free(d);
        return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    }
    m->arch_data = d;
    d->layers = calloc((size_t)c->num_hidden_layers, sizeof *d->layers);
    d->owned_cap = owned_bytes(m);
    d->owned = mnv_aligned_alloc(64, d->owned_cap);
    if (!d->layers || !d->owned) return mnv_set_error(MNV_ERR_NOMEM, "out of memory (%zu bytes)", d->owned_cap);
    for (int32_t l = 0; l < c->num_hidden_layers; l++)
        if ((st = bind_layer(m, d, l)) != MNV_OK) return st;
    return MNV_OK;
}

static void gptoss_free(mnv_model *m) {
    gptoss_data *d = m->arch_data;
    if (!d) return;
    free(d->layers);
    mnv_aligned_free(d->owned);
    free(d);
}

/* ---- graph ---- */

static mnv_array *view3(mnv_graph *g, const void *base, mnv_dtype dt, int64_t total, int64_t E, int64_t N, int64_t cols,
                        int64_t es, int64_t rs, int64_t off, const char *name) {
    mnv_array *leaf = mnv_param(g, base, dt, 1, &total, name);
    int64_t shape[3] = {E, N, cols}, strides[3] = {es, rs, 1};
    return mnv_view(g, leaf, 3, shape, strides, off);
}

static mnv_array *experts(mnv_graph *g, mnv_array *x, const moe_weight *w, mnv_array *ids) {
    bool quant = w->q.mode != MNV_QMODE_NONE;
    int64_t cols = quant ? mnv_qformat_row_words(&w->q, w->K) : w->K;
    mnv_array *W = view3(g, w->w, w->wdt, w->w_total, w->E, w->N, cols, w->w_es, w->w_rs, w->w_off, "experts");
    mnv_array *S = NULL, *B = NULL;
    if (quant) {
        int64_t groups = mnv_qformat_row_groups(&w->q, w->K);
        S = view3(g, w->scales, w->q.scale_dtype, w->s_total, w->E, w->N, groups, w->s_es, w->s_rs, w->s_off, "scales");
        if (w->biases)
            B = view3(g, w->biases, w->q.scale_dtype, w->s_total, w->E, w->N, groups, w->s_es, w->s_rs, w->s_off, "biases");
    }
    mnv_array *bias = NULL;
    if (w->bias) {
        mnv_array *leaf = mnv_param(g, w->bias, MNV_DTYPE_F32, 1, &w->b_total, "expert_bias");
        int64_t shape[2] = {w->E, w->N}, strides[2] = {w->b_es, w->b_rs};
        bias = mnv_view(g, leaf, 2, shape, strides, w->b_off);
    }
    return mnv_moe_matmul(g, x, W, S, B, &w->q, w->K, ids, bias);
}

static mnv_array *moe_block(const mnv_model *m, mnv_graph *g, int32_t l, mnv_array *h) {
    const gptoss_data *d = m->arch_data;
    const gptoss_layer *L = &d->layers[l];
    const mnv_model_config *c = &m->cfg;
    mnv_array *r = mnv_add(g, mnv_model_linear(g, h, &L->router), mnv_weight_param(g, &L->router_b));
    mnv_array *ids = mnv_topk(g, r, c->num_experts_per_tok);
    mnv_array *w = mnv_gather_softmax(g, r, ids);
    mnv_array *gate = experts(g, h, &L->gate, ids), *up = experts(g, h, &L->up, ids);
    mnv_array *a = mnv_swiglu_oai(g, gate, up, SWIGLU_ALPHA, (float)c->swiglu_limit);
    mnv_array *y = experts(g, a, &L->down, ids);
    return mnv_moe_sum(g, y, w);
}

static mnv_array *attention_block(const mnv_model *m, mnv_graph *g, int32_t l, mnv_array *h,
                                  const mnv_step_inputs *in, mnv_array *inv_freq, const mnv_kv_cache *kv) {
    mnv_array *pos = in->pos;
    const mnv_model_config *c = &m->cfg;
    const mnv_layer_weights *w = &m->layers[l];
    const gptoss_layer *L = &((const gptoss_data *)m->arch_data)->layers[l];
    int64_t T = h->shape[0], NH = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    mnv_array *q = mnv_add(g, mnv_model_linear(g, h, &w->wq), mnv_weight_param(g, &w->bq));
    mnv_array *k = mnv_add(g, mnv_model_linear(g, h, &w->wk), mnv_weight_param(g, &w->bk));
    mnv_array *v = mnv_add(g, mnv_model_linear(g, h, &w->wv), mnv_weight_param(g, &w->bv));
    q = mnv_rope(g, mnv_reshape_3d(g, q, T, NH, D), pos, inv_freq, m->n_rot, 0, m->rope_attn_factor);
    k = mnv_rope(g, mnv_reshape_3d(g, k, T, Hkv, D), pos, inv_freq, m->n_rot, 0, m->rope_attn_factor);
    v = mnv_reshape_3d(g, v, T, Hkv, D);
    mnv_model_kv_rotate(g, kv, &q, &k, &v);
    int64_t nh = NH;
    int32_t grp = kv->layer_group ? kv->layer_group[l] : 0;
    mnv_array *kc, *vc;
    mnv_model_kv_leaves(g, m, kv, l, &kc, &vc);
    kc = mnv_cache_write(g, kc, k, in->slots[grp]);
    vc = mnv_cache_write(g, vc, v, in->slots[grp]);
    mnv_array *sinks = mnv_param(g, L->sinks, MNV_DTYPE_F32, 1, &nh, "sinks");
    int32_t window = c->layer_sliding[l] ? c->sliding_window : 0;
    mnv_array *a = mnv_attention(g, q, kc, vc, in->tables[grp], in->seq, pos, sinks, 1.0f / sqrtf((float)D), window);
    a = mnv_model_kv_unrotate(g, kv, a);
    a = mnv_model_linear(g, mnv_reshape_2d(g, a, T, NH * D), &w->wo);
    return mnv_add(g, a, mnv_weight_param(g, &w->bo));
}

static mnv_array *gptoss_build(const mnv_model *m, mnv_graph *g, const mnv_step_inputs *in, const mnv_kv_cache *kv) {
    const mnv_model_config *c = &m->cfg;
    int64_t nrot = m->n_rot / 2;
    float eps = (float)c->rms_norm_eps;
    mnv_array *inv_freq = mnv_param(g, m->inv_freq, MNV_DTYPE_F32, 1, &nrot, "inv_freq");
    mnv_array *x = mnv_model_embed(g, &m->tok_embd, in->ids);
    for (int32_t l = 0; l < c->num_hidden_layers; l++) {
        const mnv_layer_weights *w = &m->layers[l];
        mnv_array *h = mnv_rms_norm(g, x, mnv_weight_param(g, &w->attn_norm), eps);
        x = mnv_add(g, x, attention_block(m, g, l, h, in, inv_freq, kv));
        h = mnv_rms_norm(g, x, mnv_weight_param(g, &w->ffn_norm), eps);
        x = mnv_add(g, x, moe_block(m, g, l, h));
        mnv_set_name(x, "x.%d", l);
    }
    if (!in->all_rows) x = mnv_get_rows(g, x, in->out_rows);
    x = mnv_rms_norm(g, x, mnv_weight_param(g, &m->out_norm), eps);
    mnv_array *logits = mnv_model_linear(g, x, &m->output);
    mnv_set_name(logits, "logits");
    mnv_set_output(logits);
    return logits;
}

/* Tensors of the MLX layout (a), in logical form. */
static int32_t gptoss_specs(const mnv_model_config *c, mnv_tensor_spec *s, int32_t cap) {
    int32_t n = 0;
    int64_t H = c->hidden_size, F = c->intermediate_size, D = c->head_dim, E = c->num_local_experts;
    int64_t qd = c->num_attention_heads * D, kvd = c->num_key_value_heads * D;
    char nm[112];
    mnv_spec_add(s, &n, cap, "model.embed_tokens.weight", 2, c->vocab_size, H, 0, MNV_TS_WEIGHT, false);
    for (int32_t l = 0; l < c->num_hidden_layers; l++) {
        struct {
            const char *suffix;
            int32_t ndim;
            int64_t d0, d1, d2;
            mnv_ts_kind kind;
        } t[] = {
            {"input_layernorm.weight", 1, H, 0, 0, MNV_TS_NORM},
            {"post_attention_layernorm.weight", 1, H, 0, 0, MNV_TS_NORM},
            {"self_attn.q_proj.weight", 2, qd, H, 0, MNV_TS_WEIGHT}, {"self_attn.q_proj.bias", 1, qd, 0, 0, MNV_TS_BIAS},
            {"self_attn.k_proj.weight", 2, kvd, H, 0, MNV_TS_WEIGHT}, {"self_attn.k_proj.bias", 1, kvd, 0, 0, MNV_TS_BIAS},
            {"self_attn.v_proj.weight", 2, kvd, H, 0, MNV_TS_WEIGHT}, {"self_attn.v_proj.bias", 1, kvd, 0, 0, MNV_TS_BIAS},
            {"self_attn.o_proj.weight", 2, H, qd, 0, MNV_TS_WEIGHT},  {"self_attn.o_proj.bias", 1, H, 0, 0, MNV_TS_BIAS},
            {"self_attn.sinks", 1, c->num_attention_heads, 0, 0, MNV_TS_BIAS},
            {"mlp.router.weight", 2, E, H, 0, MNV_TS_WEIGHT},         {"mlp.router.bias", 1, E, 0, 0, MNV_TS_BIAS},
            {"mlp.experts.gate_proj.weight", 3, E, F, H, MNV_TS_WEIGHT}, {"mlp.experts.gate_proj.bias", 2, E, F, 0, MNV_TS_BIAS},
            {"mlp.experts.up_proj.weight", 3, E, F, H, MNV_TS_WEIGHT},   {"mlp.experts.up_proj.bias", 2, E, F, 0, MNV_TS_BIAS},
            {"mlp.experts.down_proj.weight", 3, E, H, F, MNV_TS_WEIGHT}, {"mlp.experts.down_proj.bias", 2, E, H, 0, MNV_TS_BIAS},
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, t[i].suffix);
            mnv_spec_add(s, &n, cap, nm, t[i].ndim, t[i].d0, t[i].d1, t[i].d2, t[i].kind, false);
        }
    }
    mnv_spec_add(s, &n, cap, "model.norm.weight", 1, H, 0, 0, MNV_TS_NORM, false);
    mnv_spec_add(s, &n, cap, "lm_head.weight", 2, c->vocab_size, H, 0, MNV_TS_WEIGHT, c->tie_word_embeddings == 1);
    return n;
}

static const mnv_model_arch gptoss_arch = {
    .name = "gpt_oss", .tensor_specs = gptoss_specs, .bind = gptoss_bind, .build = gptoss_build, .free = gptoss_free,
};
const mnv_model_arch *mnv_arch_gpt_oss(void) { return &gptoss_arch; }
