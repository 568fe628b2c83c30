/* Loading a model directory: config, weights (mmap), tokenizer; RoPE tables;
 * the public model API. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

mnv_model_params mnv_model_params_default(void) {
    mnv_model_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.n_threads = 0;
    p.use_mmap = 1;
    p.load_tokenizer = 1;
    return p;
}

static const mnv_model_arch *arch_for(mnv_arch a) {
    switch (a) {
    case MNV_ARCH_LLAMA:
    case MNV_ARCH_QWEN2:
    case MNV_ARCH_QWEN3: return mnv_arch_llama();
    default: return NULL;
    }
}

static float *pool_alloc(mnv_model *m, size_t n) {
    if (m->f32_used + n > m->f32_cap) return NULL;
    float *p = m->f32_pool + m->f32_used;
    m->f32_used += (n + 15) & ~(size_t)15;
    return p;
}

mnv_status mnv_model_weight(mnv_model *m, const char *name, int32_t ndim, int64_t d0, int64_t d1, bool optional,
                            mnv_weight *out) {
    memset(out, 0, sizeof *out);
    const mnv_st_tensor *t = mnv_st_find(m->st, name);
    if (!t) {
        if (optional) return MNV_OK;
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' is missing", m->dir, name);
    }
    bool shape_ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!shape_ok) {
        char want[64], got[96] = "";
        snprintf(want, sizeof want, ndim == 1 ? "[%lld]" : "[%lld, %lld]", (long long)d0, (long long)d1);
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), i ? ", %lld" : "%lld", (long long)t->shape[i]);
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected %s", mnv_st_file_name(m->st, t->file_index),
                             name, got, want);
    }
    if (t->dtype != MNV_DTYPE_F32 && t->dtype != MNV_DTYPE_F16 && t->dtype != MNV_DTYPE_BF16)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)",
                             mnv_st_file_name(m->st, t->file_index), name, mnv_dtype_name(t->dtype));
    out->data = t->data;
    out->dtype = t->dtype;
    out->ndim = ndim;
    out->shape[0] = d0;
    out->shape[1] = ndim == 2 ? d1 : 1;
    out->name = t->name;
    if (ndim == 1 && t->dtype != MNV_DTYPE_F32) { /* small: keep an f32 copy */
        float *p = pool_alloc(m, (size_t)d0);
        if (!p) return mnv_set_error(MNV_ERR_INTERNAL, "f32 pool exhausted at '%s'", name);
        for (int64_t i = 0; i < d0; i++)
            p[i] = t->dtype == MNV_DTYPE_BF16 ? mnv_bf16_to_f32(((const uint16_t *)t->data)[i])
                                              : mnv_f16_to_f32(((const uint16_t *)t->data)[i]);
        out->data = p;
        out->dtype = MNV_DTYPE_F32;
    }
    return MNV_OK;
}

mnv_array *mnv_weight_param(mnv_graph *g, const mnv_weight *w) {
    if (!w->data) return NULL;
    return mnv_param(g, w->data, w->dtype, w->ndim, w->shape, w->name);
}

/* YaRN: blend of interpolated and original frequencies with a linear ramp
 * between the correction dims (fractional unless truncate). */
static void yarn_freqs(const mnv_rope_config *r, int32_t d, float *inv, float *mscale) {
    double L0 = (double)r->original_max_pos, b = r->theta, f = r->factor;
    double lo = d * log(L0 / (r->beta_fast * 2 * M_PI)) / (2 * log(b));
    double hi = d * log(L0 / (r->beta_slow * 2 * M_PI)) / (2 * log(b));
    if (r->truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    lo = fmax(lo, 0);
    hi = fmin(hi, d - 1);
    if (hi == lo) hi += 0.001;
    for (int32_t i = 0; i < d / 2; i++) {
        double extra = pow(b, -2.0 * i / d), inter = extra / f;
        double ramp = fmin(fmax((i - lo) / (hi - lo), 0.0), 1.0);
        /* the reference's extrapolation factor is 1 - ramp */
        inv[i] = (float)(inter * ramp + extra * (1 - ramp));
    }
    double g1 = f > 1 ? 0.1 * r->mscale * log(f) + 1 : 1;
    double g2 = f > 1 && r->mscale_all_dim > 0 ? 0.1 * r->mscale_all_dim * log(f) + 1 : 1;
    *mscale = (float)(g1 / g2);
}

mnv_status mnv_model_init_rope(mnv_model *m) {
    const mnv_rope_config *r = &m->cfg.rope;
    int32_t d = (int32_t)(m->cfg.head_dim * (r->partial_rotary_factor > 0 ? r->partial_rotary_factor : 1.0));
    d &= ~1;
    if (d <= 0) return mnv_set_error(MNV_ERR_FORMAT, "%s: rotary dimension %d", m->dir, d);
    m->n_rot = d;
    m->rope_attn_factor = 1.0f;
    m->inv_freq = calloc((size_t)d / 2, sizeof(float));
    if (!m->inv_freq) return mnv_set_error(MNV_ERR_NOMEM, "rope table");
    for (int32_t i = 0; i < d / 2; i++) m->inv_freq[i] = (float)(1.0 / pow(r->theta, (2.0 * i) / d));
    switch (r->type) {
    case MNV_ROPE_DEFAULT: break;
    case MNV_ROPE_LINEAR:
        for (int32_t i = 0; i < d / 2; i++) m->inv_freq[i] /= (float)r->factor;
        break;
    case MNV_ROPE_LLAMA3: {
        double L = (double)r->original_max_pos, lo_wl = L / r->low_freq_factor, hi_wl = L / r->high_freq_factor;
        for (int32_t i = 0; i < d / 2; i++) {
            double inv = m->inv_freq[i], wl = 2 * M_PI / inv;
            if (wl > lo_wl) {
                inv = inv / r->factor;
            } else if (wl >= hi_wl) {
                double s = (L / wl - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
                inv = (1 - s) * inv / r->factor + s * inv;
            }
            m->inv_freq[i] = (float)inv;
        }
        break;
    }
    case MNV_ROPE_YARN: yarn_freqs(r, d, m->inv_freq, &m->rope_attn_factor); break;
    default: return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: config.json: this rope type is not supported yet", m->dir);
    }
    return MNV_OK;
}

mnv_array *mnv_model_build(const mnv_model *m, mnv_graph *g, const mnv_batch *b, const mnv_kv_cache *kv) {
    return m->arch->build(m, g, b, kv);
}

static mnv_status load_parts(mnv_model *m, const char *dir) {
    mnv_status st = mnv_config_load_dir(dir, &m->cfg);
    if (st != MNV_OK) return st;
    m->arch = arch_for(m->cfg.arch);
    if (!m->arch)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported yet", dir, m->cfg.model_type);
    if (m->cfg.head_dim > 512)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: head_dim %d above 512", dir, m->cfg.head_dim);
    if ((st = mnv_st_open_dir(dir, &m->st)) != MNV_OK) return st;
    /* room for every 1-d tensor as f32 */
    size_t cap = 0;
    for (size_t i = 0; i < mnv_st_count(m->st); i++) {
        const mnv_st_tensor *t = mnv_st_get(m->st, i);
        if (t->ndim == 1) cap += (size_t)((t->shape[0] + 15) & ~15LL);
        uint64_t ne = 1;
        for (int d = 0; d < t->ndim; d++) ne *= (uint64_t)t->shape[d];
        m->n_params += ne;
        m->weight_bytes += t->nbytes;
    }
    m->f32_cap = cap;
    m->f32_pool = calloc(cap ? cap : 1, sizeof(float));
    if (!m->f32_pool) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", dir);
    if ((st = m->arch->bind(m)) != MNV_OK) return st;
    if ((st = mnv_model_init_rope(m)) != MNV_OK) return st;
    if (m->params.load_tokenizer) {
        char *tp = mnv_path_join(dir, "tokenizer.json");
        struct stat sb;
        if (tp && stat(tp, &sb) == 0) st = mnv_tokenizer_load(tp, &m->tok);
        free(tp);
        if (st != MNV_OK) return st;
    }
    return MNV_OK;
}

mnv_status mnv_model_load(const char *dir, const mnv_model_params *params, mnv_model **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_model_load: out is NULL");
    *out = NULL;
    if (!dir) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_model_load: dir is NULL");
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return mnv_set_error(MNV_ERR_IO, "%s: not a model directory", dir);
    mnv_model *m = calloc(1, sizeof *m);
    if (!m) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    m->params = params ? *params : mnv_model_params_default();
    m->dir = mnv_strdup(dir);
    mnv_status st = m->dir ? load_parts(m, dir) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (st != MNV_OK) {
        mnv_model_free(m);
        return st;
    }
    *out = m;
    return MNV_OK;
}

void mnv_model_free(mnv_model *m) {
    if (!m) return;
    mnv_tokenizer_free(m->tok);
    mnv_st_close(m->st);
    free(m->layers);
    free(m->inv_freq);
    free(m->f32_pool);
    free(m->dir);
    free(m);
}

const mnv_tokenizer *mnv_model_tokenizer(const mnv_model *m) { return m ? m->tok : NULL; }

mnv_status mnv_model_get_info(const mnv_model *m, mnv_model_info *info) {
    if (!m || !info) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_model_get_info: NULL argument");
    memset(info, 0, sizeof *info);
    const mnv_model_config *c = &m->cfg;
    info->arch = c->model_type;
    info->n_vocab = c->vocab_size;
    info->n_ctx_train = c->max_position_embeddings;
    info->n_layer = c->num_hidden_layers;
    info->n_embd = c->hidden_size;
    info->n_ff = c->intermediate_size;
    info->n_head = c->num_attention_heads;
    info->n_head_kv = c->num_key_value_heads;
    info->head_dim = c->head_dim;
    info->tied_embeddings = m->output.data == m->tok_embd.data;
    info->bos_id = c->bos_token_id;
    info->n_eos = MNV_MIN(c->n_eos, 8);
    for (int i = 0; i < info->n_eos; i++) info->eos_ids[i] = c->eos_token_ids[i];
    info->n_params = m->n_params;
    info->weight_bytes = m->weight_bytes;
    info->kv_bytes_per_token = 2ull * (uint64_t)c->num_hidden_layers * (uint64_t)c->num_key_value_heads *
                               (uint64_t)c->head_dim * sizeof(float);
    return MNV_OK;
}

size_t mnv_model_n_tensors(const mnv_model *m) { return m ? mnv_st_count(m->st) : 0; }

mnv_status mnv_model_tensor_info(const mnv_model *m, size_t i, mnv_tensor_info *info) {
    if (!m || !info) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_model_tensor_info: NULL argument");
    if (i >= mnv_st_count(m->st))
        return mnv_set_error(MNV_ERR_RANGE, "tensor index %zu of %zu", i, mnv_st_count(m->st));
    const mnv_st_tensor *t = mnv_st_get(m->st, i);
    memset(info, 0, sizeof *info);
    info->name = t->name;
    info->dtype = t->dtype;
    info->ndim = t->ndim;
    for (int d = 0; d < t->ndim && d < 8; d++) info->shape[d] = t->shape[d];
    info->nbytes = t->nbytes;
    info->file = mnv_st_file_name(m->st, t->file_index);
    return MNV_OK;
}
