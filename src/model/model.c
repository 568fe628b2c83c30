/* Loading a model directory: config, weights (mmap), tokenizer; RoPE tables;
 * the public model API. */
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stddef.h>
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

const mnv_model_arch *mnv_model_arch_for(mnv_arch a) {
    switch (a) {
    case MNV_ARCH_LLAMA:
    case MNV_ARCH_QWEN2:
    case MNV_ARCH_QWEN3: return mnv_arch_llama();
    case MNV_ARCH_GPT_OSS: return mnv_arch_gpt_oss();
    default: return NULL;
    }
}

static float *pool_alloc(mnv_model *m, size_t n) {
    if (m->f32_used + n > m->f32_cap) return NULL;
    float *p = m->f32_pool + m->f32_used;
    m->f32_used += (n + 15) & ~(size_t)15;
    return p;
}

static const char *shape_str(const mnv_st_tensor *t, char *buf, size_t len) {
    buf[0] = 0;
    for (int i = 0; i < t->ndim; i++)
        snprintf(buf + strlen(buf), len - strlen(buf), i ? ", %lld" : "%lld", (long long)t->shape[i]);
    return buf;
}

/* A companion tensor of a quantized module (scales / biases): present, 2-d
 * (rows, cols), of dtype dt. */
static mnv_status quant_part(mnv_model *m, const char *path, const char *suffix, int64_t rows, int64_t cols,
                             mnv_dtype dt, const mnv_st_tensor **out) {
    char name[160], got[96];
    snprintf(name, sizeof name, "%s.%s", path, suffix);
    const mnv_st_tensor *t = mnv_st_find(m->st, name);
    if (!t) return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' is missing (the module is quantized)", m->dir, name);
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%lld, %lld]",
                             mnv_st_file_name(m->st, t->file_index), name, shape_str(t, got, sizeof got),
                             (long long)rows, (long long)cols);
    if (t->dtype != dt)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected %s",
                             mnv_st_file_name(m->st, t->file_index), name, mnv_dtype_name(t->dtype), mnv_dtype_name(dt));
    *out = t;
    return MNV_OK;
}

/* Bind the packed weight, scales and biases of quantized module `path`. */
static mnv_status bind_quantized(mnv_model *m, const char *path, const mnv_st_tensor *t, int64_t d0, int64_t d1,
                                 mnv_qformat *f, mnv_weight *out) {
    char what[512], got[96];
    snprintf(what, sizeof what, "%s: tensor '%s.weight'", m->dir, path);
    const mnv_st_tensor *sc = NULL, *bi = NULL;
    char sname[200];
    snprintf(sname, sizeof sname, "%s.scales", path);
    const mnv_st_tensor *st_sc = mnv_st_find(m->st, sname);
    f->scale_dtype = f->mode == MNV_QMODE_AFFINE ? (st_sc ? st_sc->dtype : MNV_DTYPE_BF16) : MNV_DTYPE_U8;
    mnv_status st = mnv_qformat_check(f, what);
    if (st != MNV_OK) return st;
    if (d1 % f->group_size)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: %lld columns do not divide into groups of %d", what, (long long)d1,
                             f->group_size);
    int64_t words = mnv_qformat_row_words(f, d1), groups = mnv_qformat_row_groups(f, d1);
    if (t->dtype != MNV_DTYPE_U32 || t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != words)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: %s [%s], expected U32 [%lld, %lld] for %d-bit %s of %lld columns",
                             what, mnv_dtype_name(t->dtype), shape_str(t, got, sizeof got), (long long)d0,
                             (long long)words, f->bits, mnv_qmode_name(f->mode), (long long)d1);
    st = quant_part(m, path, "scales", d0, groups, f->scale_dtype, &sc);
    if (st == MNV_OK && f->mode == MNV_QMODE_AFFINE) st = quant_part(m, path, "biases", d0, groups, f->scale_dtype, &bi);
    if (st != MNV_OK) return st;
    out->data = t->data;
    out->dtype = MNV_DTYPE_U32;
    out->ndim = 2;
    out->shape[0] = d0;
    out->shape[1] = d1;
    out->name = t->name;
    out->q = *f;
    out->scales = sc->data;
    out->biases = bi ? bi->data : NULL;
    return MNV_OK;
}

mnv_status mnv_model_weight(mnv_model *m, const char *name, int32_t ndim, int64_t d0, int64_t d1, bool optional,
                            mnv_weight *out) {
    memset(out, 0, sizeof *out);
    const mnv_st_tensor *t = mnv_st_find(m->st, name);
    if (!t) {
        if (optional) return MNV_OK;
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' is missing", m->dir, name);
    }
    size_t nl = strlen(name);
    if (ndim == 2 && nl > 7 && strcmp(name + nl - 7, ".weight") == 0) {
        char path[160], sname[176];
        snprintf(path, sizeof path, "%.*s", (int)(nl - 7), name);
        snprintf(sname, sizeof sname, "%s.scales", path);
        mnv_qformat f = {0};
        mnv_config_module_quant(&m->cfg, path, mnv_st_find(m->st, sname) != NULL, &f.mode, &f.bits, &f.group_size);
        if (f.mode != MNV_QMODE_NONE) return bind_quantized(m, path, t, d0, d1, &f, out);
        if (t->dtype == MNV_DTYPE_U32)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' is packed (U32) but tensor '%s' is missing and "
                                 "config.json names no quantization for '%s'", mnv_st_file_name(m->st, t->file_index),
                                 name, sname, path);
    }
    bool shape_ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!shape_ok) {
        char want[64], got[96];
        snprintf(want, sizeof want, ndim == 1 ? "[%lld]" : "[%lld, %lld]", (long long)d0, (long long)d1);
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected %s",
                             mnv_st_file_name(m->st, t->file_index), name, shape_str(t, got, sizeof got), want);
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

/* Leaves of a quantized weight: packed matrix, scales, biases. */
static void quant_leaves(mnv_graph *g, const mnv_weight *w, mnv_array **pw, mnv_array **ps, mnv_array **pb) {
    int64_t words = mnv_qformat_row_words(&w->q, w->shape[1]), groups = mnv_qformat_row_groups(&w->q, w->shape[1]);
    int64_t ws[2] = {w->shape[0], words}, ss[2] = {w->shape[0], groups};
    *pw = mnv_param(g, w->data, MNV_DTYPE_U32, 2, ws, w->name);
    *ps = mnv_param(g, w->scales, w->q.scale_dtype, 2, ss, "scales");
    *pb = w->biases ? mnv_param(g, w->biases, w->q.scale_dtype, 2, ss, "biases") : NULL;
}

mnv_array *mnv_model_linear(mnv_graph *g, mnv_array *x, const mnv_weight *w) {
    if (w->q.mode == MNV_QMODE_NONE) return mnv_matmul(g, x, mnv_weight_param(g, w));
    mnv_array *pw, *ps, *pb;
    quant_leaves(g, w, &pw, &ps, &pb);
    return mnv_qmatmul(g, x, pw, ps, pb, &w->q, w->shape[1]);
}

mnv_array *mnv_model_embed(mnv_graph *g, const mnv_weight *w, mnv_array *ids) {
    if (w->q.mode == MNV_QMODE_NONE) return mnv_get_rows(g, mnv_weight_param(g, w), ids);
    mnv_array *pw, *ps, *pb;
    quant_leaves(g, w, &pw, &ps, &pb);
    return mnv_qget_rows(g, pw, ps, pb, &w->q, w->shape[1], ids);
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

bool mnv_rows_are_identity(const mnv_batch *b) {
    if (b->n_out != b->n_tokens) return false;
    for (int32_t i = 0; i < b->n_out; i++)
        if (b->out_rows[i] != i) return false;
    return true;
}

mnv_array *mnv_model_build(const mnv_model *m, mnv_graph *g, const mnv_step_inputs *in, const mnv_kv_cache *kv) {
    return m->arch->build(m, g, in, kv);
}

static int32_t batch_groups(const mnv_batch *b, int32_t n_groups) { return b->tables[0] ? n_groups : 1; }

size_t mnv_step_inputs_bytes(const mnv_batch *b, int32_t n_groups) {
    size_t n = (size_t)(3 * b->n_tokens + b->n_out) * 4 + 4 * 64;
    for (int32_t gi = 0; gi < batch_groups(b, n_groups); gi++)
        n += (size_t)b->n_tokens * 4 + 64 + (b->tables[gi] ? (size_t)b->n_seqs * (size_t)b->table_width[gi] * 4 + 64 : 0);
    return n;
}

mnv_status mnv_step_inputs_create(mnv_graph *g, const mnv_batch *b, int32_t n_groups, mnv_step_inputs *in) {
    memset(in, 0, sizeof *in);
    int64_t T = b->n_tokens, nout = b->n_out;
    in->ids = mnv_input(g, MNV_DTYPE_I32, 1, &T, "ids");
    in->pos = mnv_input(g, MNV_DTYPE_I32, 1, &T, "pos");
    in->seq = mnv_input(g, MNV_DTYPE_I32, 1, &T, "seq");
    in->out_rows = mnv_input(g, MNV_DTYPE_I32, 1, &nout, "out_rows");
    for (int32_t gi = 0; gi < batch_groups(b, n_groups); gi++) {
        char nm[32];
        snprintf(nm, sizeof nm, "slots.%d", gi);
        in->slots[gi] = mnv_input(g, MNV_DTYPE_I32, 1, &T, nm);
        if (b->tables[gi]) {
            int64_t ts[2] = {b->n_seqs, b->table_width[gi]};
            snprintf(nm, sizeof nm, "tables.%d", gi);
            in->tables[gi] = mnv_input(g, MNV_DTYPE_I32, 2, ts, nm);
        }
    }
    if (mnv_graph_status(g) != MNV_OK) return mnv_graph_status(g);
    in->all_rows = mnv_rows_are_identity(b);
    mnv_step_inputs_fill(in, b);
    return MNV_OK;
}

void mnv_step_inputs_fill(const mnv_step_inputs *in, const mnv_batch *b) {
    size_t T = (size_t)b->n_tokens;
    memcpy(mnv_input_data(in->ids), b->ids, T * 4);
    memcpy(mnv_input_data(in->pos), b->pos, T * 4);
    memcpy(mnv_input_data(in->seq), b->seq, T * 4);
    memcpy(mnv_input_data(in->out_rows), b->out_rows, (size_t)b->n_out * 4);
    for (int32_t gi = 0; gi < MNV_MAX_KV_GROUPS && in->slots[gi]; gi++) {
        memcpy(mnv_input_data(in->slots[gi]), b->slots[gi], T * 4);
        if (in->tables[gi])
            memcpy(mnv_input_data(in->tables[gi]), b->tables[gi],
                   (size_t)b->n_seqs * (size_t)b->table_width[gi] * 4);
    }
}

void mnv_model_kv_groups(const mnv_model_config *c, int32_t *n_groups, int32_t window[MNV_MAX_KV_GROUPS],
                         int32_t *layer_group, int32_t *layer_index) {
    int32_t ng = 0, count[MNV_MAX_KV_GROUPS] = {0};
    for (int32_t l = 0; l < c->num_hidden_layers; l++) {
        int32_t w = c->layer_sliding[l] ? c->sliding_window : 0, gi = 0;
        while (gi < ng && window[gi] != w) gi++;
        if (gi == ng) {
            if (ng == MNV_MAX_KV_GROUPS) gi = 0; /* never with the configurations we load: two windows at most */
            else window[ng++] = w;
        }
        layer_group[l] = gi;
        layer_index[l] = count[gi]++;
    }
    *n_groups = ng;
}

void mnv_model_kv_leaves(mnv_graph *g, const mnv_model *m, const mnv_kv_cache *kv, int32_t l, mnv_array **kc,
                         mnv_array **vc) {
    int64_t Hkv = m->cfg.num_key_value_heads;
    *kc = mnv_kv_param(g, kv->k[l], &kv->k_lay, kv->n_blocks, kv->block_tokens, Hkv, kv->block_stride, "k_cache");
    *vc = mnv_kv_param(g, kv->v[l], &kv->v_lay, kv->n_blocks, kv->block_tokens, Hkv, kv->block_stride, "v_cache");
}

void mnv_model_kv_rotate(mnv_graph *g, const mnv_kv_cache *kv, mnv_array **q, mnv_array **k, mnv_array **v) {
    if (kv->rot_k) {
        *q = mnv_hadamard(g, *q, kv->rot_k);
        *k = mnv_hadamard(g, *k, kv->rot_k);
    }
    if (kv->rot_v) *v = mnv_hadamard(g, *v, kv->rot_v);
}

mnv_array *mnv_model_kv_unrotate(mnv_graph *g, const mnv_kv_cache *kv, mnv_array *attn) {
    return kv->rot_v ? mnv_hadamard(g, attn, kv->rot_v) : attn; /* H^-1 = H */
}

/* Parameters as MLX counts them: a packed quantized weight holds
 * words * 32 / bits parameters; scales and biases are not parameters. */
static uint64_t mnv_model_count_params(const mnv_model *m) {
    uint64_t n = 0;
    for (size_t i = 0; i < mnv_st_count(m->st); i++) {
        const mnv_st_tensor *t = mnv_st_get(m->st, i);
        uint64_t ne = 1;
        for (int d = 0; d < t->ndim; d++) ne *= (uint64_t)t->shape[d];
        size_t nl = strlen(t->name);
        char path[200], sname[216];
        if (nl > 7 && (!strcmp(t->name + nl - 7, ".scales") || !strcmp(t->name + nl - 7, ".biases"))) {
            snprintf(path, sizeof path, "%.*s.weight", (int)(nl - 7), t->name);
            const mnv_st_tensor *w = mnv_st_find(m->st, path);
            if (w && w->dtype == MNV_DTYPE_U32) continue;
        }
        if (t->dtype == MNV_DTYPE_U32 && nl > 7 && !strcmp(t->name + nl - 7, ".weight")) {
            snprintf(path, sizeof path, "%.*s", (int)(nl - 7), t->name);
            snprintf(sname, sizeof sname, "%s.scales", path);
            mnv_qmode mode;
            int32_t bits, gs;
            mnv_config_module_quant(&m->cfg, path, mnv_st_find(m->st, sname) != NULL, &mode, &bits, &gs);
            if (mode != MNV_QMODE_NONE && bits > 0) ne = ne * 32 / (uint64_t)bits;
        }
        n += ne;
    }
    return n;
}

/* Read every page of the weights (the disk's work happens now, not in the
 * first generation), reporting bytes read to the progress callback. */
static void read_weights(const mnv_model *m) {
    const uint64_t step = 32ull << 20, page = 4096;
    uint64_t done = 0, total = m->weight_bytes, next = step;
    volatile uint8_t sink = 0;
    m->params.progress(m->params.progress_user_data, 0, total);
    for (size_t i = 0; i < mnv_st_count(m->st); i++) {
        const mnv_st_tensor *t = mnv_st_get(m->st, i);
        const volatile uint8_t *p = t->data;
        for (uint64_t off = 0; off < t->nbytes; off += page) sink ^= p[off];
        if (t->nbytes) sink ^= p[t->nbytes - 1];
        done += t->nbytes;
        if (done >= next && done < total) {
            m->params.progress(m->params.progress_user_data, done, total);
            next = done + step;
        }
    }
    (void)sink;
    m->params.progress(m->params.progress_user_data, total, total);
}

static mnv_status load_parts(mnv_model *m, const char *dir) {
    mnv_status st = mnv_config_load_dir(dir, &m->cfg);
    if (st != MNV_OK) return st;
    m->arch = mnv_model_arch_for(m->cfg.arch);
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
        (void)ne;
        m->weight_bytes += t->nbytes;
    }
    m->n_params = mnv_model_count_params(m);
    m->f32_cap = cap;
    m->f32_pool = calloc(cap ? cap : 1, sizeof(float));
    if (!m->f32_pool) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", dir);
    if ((st = m->arch->bind(m)) != MNV_OK) return st;
    if ((st = mnv_model_init_rope(m)) != MNV_OK) return st;
    if (m->params.progress) read_weights(m);
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
    if (stat(dir, &sb) != 0)
        return mnv_set_error(MNV_ERR_IO, "%s: %s", dir, errno == ENOENT ? "the model directory does not exist"
                                                                         : strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return mnv_set_error(MNV_ERR_IO, "%s: is not a directory (a model is a directory holding config.json)", dir);
    mnv_model *m = calloc(1, sizeof *m);
    if (!m) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    m->params = mnv_model_params_default();
    if (params) { /* a caller built against an older, smaller struct: the rest keeps its defaults */
        if (params->size < offsetof(mnv_model_params, progress) || params->size > sizeof m->params) {
            free(m);
            return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_model_load: params->size %u is not a known size",
                                 params->size);
        }
        memcpy(&m->params, params, params->size);
    }
    m->dir = mnv_strdup(dir);
    mnv_status st = m->dir ? load_parts(m, dir) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (st != MNV_OK) {
        mnv_model_free(m);
        return st;
    }
    *out = m;
    return MNV_OK;
}

mnv_status mnv__model_mark_copied(mnv_model *m, const void *data) {
    if (mnv__model_is_copied(m, data)) return MNV_OK;
    if (m->n_copied == m->cap_copied) {
        size_t nc = m->cap_copied ? 2 * m->cap_copied : 64;
        const void **c = realloc(m->copied, nc * sizeof *c);
        if (!c) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", m->dir);
        m->copied = c;
        m->cap_copied = nc;
    }
    m->copied[m->n_copied++] = data;
    return MNV_OK;
}

bool mnv__model_is_copied(const mnv_model *m, const void *data) {
    for (size_t i = 0; i < m->n_copied; i++)
        if (m->copied[i] == data) return true;
    return false;
}

void mnv_model_free(mnv_model *m) {
    if (!m) return;
    if (m->arch && m->arch->free) m->arch->free(m);
    mnv_tokenizer_free(m->tok);
    mnv_st_close(m->st);
    free(m->layers);
    free(m->inv_freq);
    free(m->f32_pool);
    free(m->copied);
    free(m->dir);
    free(m);
}

const mnv_tokenizer *mnv_model_tokenizer(const mnv_model *m) { return m ? m->tok : NULL; }

/* Sizes derived from a configuration saturate at UINT64_MAX instead of
 * wrapping around (each dimension may be up to 2^31 - 1). */
static uint64_t sat_mul(uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}
static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* Bytes of a tensor that decoding one token reads. */
static uint64_t mnv_active_bytes(const mnv_model_config *c, const char *name, uint64_t bytes, int tied) {
    if (strstr(name, "embed_tokens") && !tied) return bytes / (uint64_t)(c->vocab_size > 0 ? c->vocab_size : 1);
    if (strstr(name, ".experts.") && c->num_local_experts > 0) {
        uint64_t e = (uint64_t)c->num_local_experts, k = (uint64_t)c->num_experts_per_tok;
        return sat_add(sat_mul(bytes / e, k), bytes % e * k / e);
    }
    return bytes;
}

/* The fields of mnv_model_info that the configuration alone decides. */
static void info_from_config(const mnv_model_config *c, mnv_model_info *info) {
    memset(info, 0, sizeof *info);
    info->arch = c->model_type;
    info->n_vocab = c->vocab_size;
    info->n_ctx_train = c->max_position_embeddings;
    info->n_layer = c->num_hidden_layers;
    info->n_embd = c->hidden_size;
    info->n_ff = c->intermediate_size;
    info->n_head = c->num_attention_heads;
    info->n_head_kv = c->num_key_value_heads;
    info->head_dim = c->head_dim;
    info->tied_embeddings = c->tie_word_embeddings == 1;
    info->bos_id = c->bos_token_id;
    info->n_eos = MNV_MIN(c->n_eos, 8);
    for (int i = 0; i < info->n_eos; i++) info->eos_ids[i] = c->eos_token_ids[i];
    info->kv_bytes_per_token =
        sat_mul(sat_mul(2ull * sizeof(float) * (uint64_t)c->num_hidden_layers, (uint64_t)c->num_key_value_heads),
                (uint64_t)c->head_dim);
    info->chat_format = c->arch == MNV_ARCH_GPT_OSS ? "harmony" : "none";
}

mnv_status mnv_model_get_info(const mnv_model *m, mnv_model_info *info) {
    if (!m || !info) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_model_get_info: NULL argument");
    const mnv_model_config *c = &m->cfg;
    info_from_config(c, info);
    info->tied_embeddings = m->output.data == m->tok_embd.data; /* what was loaded, not what the config says */
    info->n_params = m->n_params;
    info->weight_bytes = m->weight_bytes;
    for (size_t i = 0; i < mnv_st_count(m->st); i++) {
        const mnv_st_tensor *t = mnv_st_get(m->st, i);
        info->active_bytes_per_token =
            sat_add(info->active_bytes_per_token, mnv_active_bytes(c, t->name, t->nbytes, info->tied_embeddings));
    }
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

void mnv_spec_add(mnv_tensor_spec *specs, int32_t *n, int32_t cap, const char *name, int32_t ndim, int64_t d0,
                  int64_t d1, int64_t d2, mnv_ts_kind kind, bool optional) {
    if (*n < cap) {
        mnv_tensor_spec *t = &specs[*n];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", name);
        t->ndim = ndim;
        t->shape[0] = d0;
        t->shape[1] = d1;
        t->shape[2] = d2;
        t->kind = kind;
        t->optional = optional;
        t->quantizable = kind == MNV_TS_WEIGHT && ndim >= 2;
    }
    (*n)++;
}

uint64_t mnv_stored_tensor_bytes(const mnv_stored_tensor *t) {
    uint64_t n = mnv_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) n = sat_mul(n, (uint64_t)t->shape[i]);
    return n;
}

void mnv_stored_tensors_total(const mnv_model_config *c, const mnv_stored_tensor *t, int32_t n,
                              mnv_stored_totals *out) {
    memset(out, 0, sizeof *out);
    bool tied = c->tie_word_embeddings == 1;
    for (int32_t i = 0; i < n; i++) {
        double ne = 1;
        for (int d = 0; d < t[i].ndim; d++) ne *= (double)t[i].shape[d];
        double bf = ne * (double)mnv_dtype_size(t[i].dtype), pf = 0;
        uint64_t b = mnv_stored_tensor_bytes(&t[i]), p = 0;
        if (t[i].fill == MNV_FILL_BITS) { /* packed codes: 32 / bits per word */
            p = sat_mul(b / 4, 32) / (uint64_t)t[i].bits;
            pf = ne * 32.0 / t[i].bits;
        } else if (t[i].fill != MNV_FILL_E8M0 && t[i].fill != MNV_FILL_QSCALE && t[i].fill != MNV_FILL_QBIAS) {
            p = b / mnv_dtype_size(t[i].dtype);
            pf = ne;
        }
        out->bytes = sat_add(out->bytes, b);
        out->params = sat_add(out->params, p);
        out->active_bytes = sat_add(out->active_bytes, mnv_active_bytes(c, t[i].name, b, tied));
        out->bytes_f += bf;
        out->params_f += pf;
    }
    out->overflow = out->bytes == UINT64_MAX || out->params == UINT64_MAX || out->active_bytes == UINT64_MAX;
}

/* Append the stored form of one spec: plain, or packed weight + scales (+ biases). */
static void store_spec(const mnv_model_config *cfg, const mnv_tensor_spec *sp, mnv_dtype fdt, mnv_stored_tensor *out,
                       int32_t *n) {
    mnv_stored_tensor t = {.ndim = sp->ndim, .dtype = fdt};
    memcpy(t.shape, sp->shape, sizeof t.shape);
    snprintf(t.name, sizeof t.name, "%s", sp->name);
    t.fill = sp->kind == MNV_TS_NORM ? MNV_FILL_ONES : sp->kind == MNV_TS_BIAS ? MNV_FILL_SMALL : MNV_FILL_NORMAL;
    mnv_qformat f = {0};
    size_t nl = strlen(sp->name);
    if (sp->quantizable && nl > 7 && !strcmp(sp->name + nl - 7, ".weight")) {
        char path[112];
        snprintf(path, sizeof path, "%.*s", (int)(nl - 7), sp->name);
        mnv_config_module_quant(cfg, path, cfg->q_mode != MNV_QMODE_NONE, &f.mode, &f.bits, &f.group_size);
        f.scale_dtype = f.mode == MNV_QMODE_AFFINE ? fdt : MNV_DTYPE_U8;
        int64_t k = sp->shape[sp->ndim - 1];
        if (f.mode != MNV_QMODE_NONE && mnv_qformat_check(&f, path) == MNV_OK && k % f.group_size == 0) {
            t.dtype = MNV_DTYPE_U32;
            t.shape[t.ndim - 1] = mnv_qformat_row_words(&f, k);
            t.fill = MNV_FILL_BITS;
            t.bits = f.bits;
            out[(*n)++] = t;
            t.dtype = f.scale_dtype;
            t.shape[t.ndim - 1] = mnv_qformat_row_groups(&f, k);
            t.fill = f.mode == MNV_QMODE_AFFINE ? MNV_FILL_QSCALE : MNV_FILL_E8M0;
            snprintf(t.name, sizeof t.name, "%s.scales", path);
            out[(*n)++] = t;
            if (f.mode == MNV_QMODE_AFFINE) {
                t.fill = MNV_FILL_QBIAS;
                snprintf(t.name, sizeof t.name, "%s.biases", path);
                out[(*n)++] = t;
            }
            return;
        }
    }
    out[(*n)++] = t;
}

mnv_status mnv_model_stored_tensors(const mnv_model_config *cfg, mnv_dtype fdt, mnv_stored_tensor **out,
                                    int32_t *n_out) {
    *out = NULL;
    *n_out = 0;
    const mnv_model_arch *arch = mnv_model_arch_for(cfg->arch);
    if (!arch || !arch->tensor_specs)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "model_type '%s': no tensor list", cfg->model_type);
    int32_t cnt = arch->tensor_specs(cfg, NULL, 0);
    mnv_tensor_spec *specs = calloc((size_t)cnt + 1, sizeof *specs);
    mnv_stored_tensor *st = calloc((size_t)cnt * 3 + 1, sizeof *st);
    if (!specs || !st) {
        free(specs);
        free(st);
        return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    }
    arch->tensor_specs(cfg, specs, cnt);
    int32_t n = 0;
    for (int32_t i = 0; i < cnt; i++)
        if (!specs[i].optional) store_spec(cfg, &specs[i], fdt, st, &n);
    free(specs);
    *out = st;
    *n_out = n;
    return MNV_OK;
}

mnv_status mnv_config_estimate(const char *config_path, mnv_model_info *info) {
    static _Thread_local char arch[32];
    if (!config_path || !info) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_config_estimate: NULL argument");
    memset(info, 0, sizeof *info);
    char *json = NULL;
    size_t len = 0;
    mnv_status st = mnv_read_file(config_path, &json, &len);
    if (st != MNV_OK) return st;
    mnv_model_config *c = malloc(sizeof *c);
    st = c ? mnv_config_parse(json, len, config_path, c) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    free(json);
    mnv_stored_tensor *t = NULL;
    int32_t n = 0;
    mnv_dtype fdt = c && c->torch_dtype != MNV_DTYPE_F32 ? c->torch_dtype : MNV_DTYPE_F32;
    if (st == MNV_OK) st = mnv_model_stored_tensors(c, fdt, &t, &n);
    if (st == MNV_OK) {
        mnv_stored_totals tot;
        mnv_stored_tensors_total(c, t, n, &tot);
        info_from_config(c, info);
        snprintf(arch, sizeof arch, "%s", c->model_type);
        info->arch = arch; /* c is freed below */
        info->weight_bytes = tot.bytes;
        info->n_params = tot.params;
        info->active_bytes_per_token = tot.active_bytes;
        if (tot.overflow || info->kv_bytes_per_token == UINT64_MAX) {
            memset(info, 0, sizeof *info);
            st = mnv_set_error(MNV_ERR_RANGE,
                               "%s: the model would have %.3g parameters in %.3g bytes of weights: too large to "
                               "count in 64 bits",
                               config_path, tot.params_f, tot.bytes_f);
        }
    }
    free(t);
    free(c);
    return st;
}

/* An upper bound of the activation memory of one forward pass of T tokens:
 * every node one layer makes, in f32, none reused (the planner reuses most),
 * the residual stream and embeddings, and T rows of logits. */
uint64_t mnv__model_compute_bound(const mnv_model_config *c, uint64_t T) {
    uint64_t E = (uint64_t)c->hidden_size, HD = (uint64_t)c->num_attention_heads * (uint64_t)c->head_dim;
    uint64_t KD = (uint64_t)c->num_key_value_heads * (uint64_t)c->head_dim;
    uint64_t k = c->num_experts_per_tok > 0 ? (uint64_t)c->num_experts_per_tok : 1;
    uint64_t ne = c->num_local_experts > 0 ? (uint64_t)c->num_local_experts : 0;
    uint64_t layer = 8 * E + 4 * HD + 4 * KD + 4 * k * (uint64_t)c->intermediate_size + k * E + 2 * ne;
    uint64_t per_token = layer + 4 * E + (uint64_t)c->vocab_size + 8;
    return 4 * T * per_token;
}

