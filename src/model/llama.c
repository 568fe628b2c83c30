/* The Llama family: Llama 2/3, Mistral, Qwen2 (q/k/v biases), Qwen3 (q/k
 * RMSNorm). One pre-norm decoder; the differences are data in the config. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/model.h"

#define NAME_MAX_LEN 112

static int32_t llama_specs(const mnv_model_config *c, mnv_tensor_spec *s, int32_t cap) {
    int32_t n = 0;
    int64_t E = c->hidden_size, F = c->intermediate_size, D = c->head_dim;
    int64_t qd = c->num_attention_heads * D, kvd = c->num_key_value_heads * D;
    char nm[NAME_MAX_LEN];
    mnv_spec_add(s, &n, cap, "model.embed_tokens.weight", 2, c->vocab_size, E, 0, MNV_TS_WEIGHT, false);
    for (int32_t l = 0; l < c->num_hidden_layers; l++) {
        struct {
            const char *suffix;
            int32_t ndim;
            int64_t d0, d1;
            bool present;
            mnv_ts_kind kind;
        } t[] = {
            {"input_layernorm.weight", 1, E, 0, true, MNV_TS_NORM},
            {"self_attn.q_proj.weight", 2, qd, E, true, MNV_TS_WEIGHT},
            {"self_attn.k_proj.weight", 2, kvd, E, true, MNV_TS_WEIGHT},
            {"self_attn.v_proj.weight", 2, kvd, E, true, MNV_TS_WEIGHT},
            {"self_attn.o_proj.weight", 2, E, qd, true, MNV_TS_WEIGHT},
            {"self_attn.q_proj.bias", 1, qd, 0, c->attention_bias, MNV_TS_BIAS},
            {"self_attn.k_proj.bias", 1, kvd, 0, c->attention_bias, MNV_TS_BIAS},
            {"self_attn.v_proj.bias", 1, kvd, 0, c->attention_bias, MNV_TS_BIAS},
            {"self_attn.o_proj.bias", 1, E, 0, c->o_bias, MNV_TS_BIAS},
            {"self_attn.q_norm.weight", 1, D, 0, c->qk_norm, MNV_TS_NORM},
            {"self_attn.k_norm.weight", 1, D, 0, c->qk_norm, MNV_TS_NORM},
            {"post_attention_layernorm.weight", 1, E, 0, true, MNV_TS_NORM},
            {"mlp.gate_proj.weight", 2, F, E, true, MNV_TS_WEIGHT},
            {"mlp.up_proj.weight", 2, F, E, true, MNV_TS_WEIGHT},
            {"mlp.down_proj.weight", 2, E, F, true, MNV_TS_WEIGHT},
            {"mlp.gate_proj.bias", 1, F, 0, c->mlp_bias, MNV_TS_BIAS},
            {"mlp.up_proj.bias", 1, F, 0, c->mlp_bias, MNV_TS_BIAS},
            {"mlp.down_proj.bias", 1, E, 0, c->mlp_bias, MNV_TS_BIAS},
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            if (!t[i].present) continue;
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, t[i].suffix);
            mnv_spec_add(s, &n, cap, nm, t[i].ndim, t[i].d0, t[i].d1, 0, t[i].kind, false);
        }
    }
    mnv_spec_add(s, &n, cap, "model.norm.weight", 1, E, 0, 0, MNV_TS_NORM, false);
    mnv_spec_add(s, &n, cap, "lm_head.weight", 2, c->vocab_size, E, 0, MNV_TS_WEIGHT, c->tie_word_embeddings != 0);
    return n;
}

static mnv_status bind_layer(mnv_model *m, int32_t l) {
    const mnv_model_config *c = &m->cfg;
    mnv_layer_weights *w = &m->layers[l];
    int64_t E = c->hidden_size, F = c->intermediate_size, D = c->head_dim;
    int64_t qd = c->num_attention_heads * D, kvd = c->num_key_value_heads * D;
    char nm[NAME_MAX_LEN];
    struct {
        mnv_weight *dst;
        const char *suffix;
        int32_t ndim;
        int64_t d0, d1;
        bool optional;
    } t[] = {
        {&w->attn_norm, "input_layernorm.weight", 1, E, 0, false},
        {&w->wq, "self_attn.q_proj.weight", 2, qd, E, false},
        {&w->wk, "self_attn.k_proj.weight", 2, kvd, E, false},
        {&w->wv, "self_attn.v_proj.weight", 2, kvd, E, false},
        {&w->wo, "self_attn.o_proj.weight", 2, E, qd, false},
        {&w->bq, "self_attn.q_proj.bias", 1, qd, 0, !c->attention_bias},
        {&w->bk, "self_attn.k_proj.bias", 1, kvd, 0, !c->attention_bias},
        {&w->bv, "self_attn.v_proj.bias", 1, kvd, 0, !c->attention_bias},
        {&w->bo, "self_attn.o_proj.bias", 1, E, 0, !c->o_bias},
        {&w->q_norm, "self_attn.q_norm.weight", 1, D, 0, !c->qk_norm},
        {&w->k_norm, "self_attn.k_norm.weight", 1, D, 0, !c->qk_norm},
        {&w->ffn_norm, "post_attention_layernorm.weight", 1, E, 0, false},
        {&w->w_gate, "mlp.gate_proj.weight", 2, F, E, false},
        {&w->w_up, "mlp.up_proj.weight", 2, F, E, false},
        {&w->w_down, "mlp.down_proj.weight", 2, E, F, false},
        {&w->b_gate, "mlp.gate_proj.bias", 1, F, 0, !c->mlp_bias},
        {&w->b_up, "mlp.up_proj.bias", 1, F, 0, !c->mlp_bias},
        {&w->b_down, "mlp.down_proj.bias", 1, E, 0, !c->mlp_bias},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        snprintf(nm, sizeof nm, "model.layers.%d.%s", l, t[i].suffix);
        mnv_status st = mnv_model_weight(m, nm, t[i].ndim, t[i].d0, t[i].d1, t[i].optional, t[i].dst);
        if (st != MNV_OK) return st;
    }
    return MNV_OK;
}

static mnv_status llama_bind(mnv_model *m) {
    const mnv_model_config *c = &m->cfg;
    int64_t E = c->hidden_size;
    mnv_status st = mnv_model_weight(m, "model.embed_tokens.weight", 2, c->vocab_size, E, false, &m->tok_embd);
    if (st == MNV_OK) st = mnv_model_weight(m, "model.norm.weight", 1, E, 0, false, &m->out_norm);
    if (st == MNV_OK) st = mnv_model_weight(m, "lm_head.weight", 2, c->vocab_size, E, true, &m->output);
    if (st != MNV_OK) return st;
    if (!m->output.data) {
        if (c->tie_word_embeddings == 0)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor 'lm_head.weight' is missing (tie_word_embeddings is false)",
                                 m->dir);
        m->output = m->tok_embd;
    }
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    for (int32_t l = 0; l < c->num_hidden_layers; l++)
        if ((st = bind_layer(m, l)) != MNV_OK) return st;
    return MNV_OK;
}

/* y = x W^T (+ b) */
static mnv_array *linear(mnv_graph *g, mnv_array *x, const mnv_weight *w, const mnv_weight *b) {
    mnv_array *y = mnv_model_linear(g, x, w);
    if (b && b->data) y = mnv_add(g, y, mnv_weight_param(g, b));
    return y;
}

static mnv_array *attention_block(const mnv_model *m, mnv_graph *g, int32_t l, mnv_array *h,
                                  const mnv_step_inputs *in, mnv_array *inv_freq, const mnv_kv_cache *kv) {
    const mnv_model_config *c = &m->cfg;
    const mnv_layer_weights *w = &m->layers[l];
    int64_t T = h->shape[0], H = c->num_attention_heads, Hkv = c->num_key_value_heads, D = c->head_dim;
    float eps = (float)c->rms_norm_eps;
    mnv_array *q = mnv_reshape_3d(g, linear(g, h, &w->wq, &w->bq), T, H, D);
    mnv_array *k = mnv_reshape_3d(g, linear(g, h, &w->wk, &w->bk), T, Hkv, D);
    mnv_array *v = mnv_reshape_3d(g, linear(g, h, &w->wv, &w->bv), T, Hkv, D);
    if (w->q_norm.data) {
        q = mnv_rms_norm(g, q, mnv_weight_param(g, &w->q_norm), eps);
        k = mnv_rms_norm(g, k, mnv_weight_param(g, &w->k_norm), eps);
    }
    int trad = c->rope.traditional;
    q = mnv_rope(g, q, in->pos, inv_freq, m->n_rot, trad, m->rope_attn_factor);
    k = mnv_rope(g, k, in->pos, inv_freq, m->n_rot, trad, m->rope_attn_factor);
    mnv_model_kv_rotate(g, kv, &q, &k, &v);
    mnv_array *kc, *vc;
    mnv_model_kv_leaves(g, m, kv, l, &kc, &vc);
    int32_t grp = kv->layer_group ? kv->layer_group[l] : 0;
    kc = mnv_cache_write(g, kc, k, in->slots[grp]);
    vc = mnv_cache_write(g, vc, v, in->slots[grp]);
    int32_t window = c->layer_sliding[l] ? c->sliding_window : 0;
    mnv_array *a = mnv_attention(g, q, kc, vc, in->tables[grp], in->seq, in->pos, NULL, 1.0f / sqrtf((float)D),
                                 window);
    a = mnv_model_kv_unrotate(g, kv, a);
    mnv_set_name(a, "attn.%d", l);
    return linear(g, mnv_reshape_2d(g, a, T, H * D), &w->wo, &w->bo);
}

static mnv_array *mlp_block(const mnv_model *m, mnv_graph *g, int32_t l, mnv_array *h) {
    const mnv_layer_weights *w = &m->layers[l];
    mnv_array *gate = linear(g, h, &w->w_gate, &w->b_gate);
    mnv_array *up = linear(g, h, &w->w_up, &w->b_up);
    mnv_array *act;
    if (strcmp(m->cfg.hidden_act, "silu") == 0 || m->cfg.hidden_act[0] == 0)
        act = mnv_silu_mul(g, gate, up);
    else
        act = mnv_mul(g, mnv_gelu(g, gate), up);
    return linear(g, act, &w->w_down, &w->b_down);
}

static mnv_array *llama_build(const mnv_model *m, mnv_graph *g, const mnv_step_inputs *in, const mnv_kv_cache *kv) {
    const mnv_model_config *c = &m->cfg;
    float eps = (float)c->rms_norm_eps;
    int64_t nrot = m->n_rot / 2;
    mnv_array *inv_freq = mnv_param(g, m->inv_freq, MNV_DTYPE_F32, 1, &nrot, "inv_freq");

    mnv_array *x = mnv_model_embed(g, &m->tok_embd, in->ids);
    for (int32_t l = 0; l < c->num_hidden_layers; l++) {
        const mnv_layer_weights *w = &m->layers[l];
        mnv_array *h = mnv_rms_norm(g, x, mnv_weight_param(g, &w->attn_norm), eps);
        x = mnv_add(g, x, attention_block(m, g, l, h, in, inv_freq, kv));
        h = mnv_rms_norm(g, x, mnv_weight_param(g, &w->ffn_norm), eps);
        x = mnv_add(g, x, mlp_block(m, g, l, h));
        mnv_set_name(x, "x.%d", l);
    }
    if (!in->all_rows) x = mnv_get_rows(g, x, in->out_rows); /* only the rows whose logits are wanted */
    x = mnv_rms_norm(g, x, mnv_weight_param(g, &m->out_norm), eps);
    mnv_array *logits = mnv_model_linear(g, x, &m->output);
    mnv_set_name(logits, "logits");
    mnv_set_output(logits);
    return logits;
}

static const mnv_model_arch llama_arch = {"llama", llama_specs, llama_bind, llama_build, NULL};
const mnv_model_arch *mnv_arch_llama(void) { return &llama_arch; }
