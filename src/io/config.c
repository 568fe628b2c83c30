/* config.json / generation_config.json parsing into mnv_model_config.
 *
 * Every key is read through a typed getter that names the key on failure;
 * JSON null counts as absent (HF writes "rope_scaling": null and the like). */
#include "io/config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ---- typed getters ----------------------------------------------------------
 * pfx is prepended to the key in messages ("rope_scaling."). Absent optional
 * keys leave *out unchanged, so callers set defaults first. */

static const cJSON *get(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(j) ? NULL : j;
}

static mnv_status missing(const char *fname, const char *pfx, const char *key) {
    return mnv_set_error(MNV_ERR_FORMAT, "%s: missing key '%s%s'", fname, pfx, key);
}

static mnv_status get_int(const cJSON *obj, const char *pfx, const char *key, const char *fname,
                          int64_t lo, int64_t hi, bool required, int64_t *out) {
    const cJSON *j = get(obj, key);
    if (!j) return required ? missing(fname, pfx, key) : MNV_OK;
    double d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (isfinite(d) && floor(d) == d && d >= (double)lo && d <= (double)hi) {
        *out = (int64_t)d;
        return MNV_OK;
    }
    const char *what = lo > 0 ? "a positive integer" : lo == 0 ? "a non-negative integer" : "an integer";
    char limit[48] = "", got[48] = "";
    if ((hi != INT32_MAX && hi != INT64_MAX) || (isfinite(d) && d > (double)hi))
        snprintf(limit, sizeof limit, " no larger than %lld", (long long)hi);
    if (isfinite(d)) snprintf(got, sizeof got, ", got %.17g", d);
    return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s%s': expected %s%s%s", fname, pfx, key, what,
                         limit, got);
}

/* An int32 getter on top of get_int. */
static mnv_status get_i32(const cJSON *obj, const char *pfx, const char *key, const char *fname,
                          int32_t lo, int32_t hi, bool required, int32_t *out) {
    int64_t v = *out;
    mnv_status st = get_int(obj, pfx, key, fname, lo, hi, required, &v);
    if (st == MNV_OK) *out = (int32_t)v;
    return st;
}

/* A finite number; positive when `positive`. */
static mnv_status get_num(const cJSON *obj, const char *pfx, const char *key, const char *fname,
                          bool positive, double *out) {
    const cJSON *j = get(obj, key);
    if (!j) return MNV_OK;
    if (cJSON_IsNumber(j) && isfinite(j->valuedouble) && (!positive || j->valuedouble > 0)) {
        *out = j->valuedouble;
        return MNV_OK;
    }
    return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s%s': expected a %snumber", fname, pfx, key,
                         positive ? "positive " : "");
}

static mnv_status get_bool(const cJSON *obj, const char *pfx, const char *key, const char *fname,
                           int32_t *out) {
    const cJSON *j = get(obj, key);
    if (!j) return MNV_OK;
    if (!cJSON_IsBool(j))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s%s': expected true or false", fname, pfx, key);
    *out = cJSON_IsTrue(j) ? 1 : 0;
    return MNV_OK;
}

static mnv_status get_str(const cJSON *obj, const char *pfx, const char *key, const char *fname,
                          bool required, const char **out) {
    const cJSON *j = get(obj, key);
    if (!j) return required ? missing(fname, pfx, key) : MNV_OK;
    if (!cJSON_IsString(j))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s%s': expected a string", fname, pfx, key);
    *out = j->valuestring;
    return MNV_OK;
}

/* The first of two spellings present (HF renamed several keys). */
static const char *pick_key(const cJSON *obj, const char *a, const char *b) {
    return get(obj, a) || !get(obj, b) ? a : b;
}

/* An id or a list of ids (eos_token_id). */
static mnv_status get_ids(const cJSON *obj, const char *key, const char *fname, int32_t *ids,
                          int32_t *n) {
    const cJSON *j = get(obj, key);
    if (!j) return MNV_OK;
    if (cJSON_IsNumber(j)) {
        int32_t v = 0;
        mnv_status st = get_i32(obj, "", key, fname, 0, INT32_MAX, true, &v);
        if (st != MNV_OK) return st;
        ids[0] = v;
        *n = 1;
        return MNV_OK;
    }
    if (!cJSON_IsArray(j))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s': expected an integer or a list of integers",
                             fname, key);
    int32_t k = 0;
    for (const cJSON *e = j->child; e; e = e->next, k++) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
        if (!(d >= 0 && d <= INT32_MAX && floor(d) == d))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s': entry %d is not a non-negative integer",
                                 fname, key, (int)k);
        if (k >= MNV_MAX_EOS)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s': more than %d ids", fname, key,
                                 MNV_MAX_EOS);
        ids[k] = (int32_t)d;
    }
    *n = k;
    return MNV_OK;
}

/* Parse text as a JSON object; the copy makes the text NUL-terminated. */
static mnv_status parse_object(const char *json, size_t len, const char *fname, cJSON **out) {
    *out = NULL;
    if (!json && len) return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: NULL text", fname);
    char *text = malloc(len + 1);
    if (!text) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", fname);
    if (len) memcpy(text, json, len);
    text[len] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    bool trailing = false;
    for (const char *p = end; root && p && p < text + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') trailing = true;
    free(text);
    mnv_status st = MNV_OK;
    if (!root) st = mnv_set_error(MNV_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", fname, at);
    else if (!cJSON_IsObject(root)) st = mnv_set_error(MNV_ERR_FORMAT, "%s: not a JSON object", fname);
    else if (trailing) st = mnv_set_error(MNV_ERR_FORMAT, "%s: text after the JSON object", fname);
    if (st != MNV_OK) {
        cJSON_Delete(root);
        return st;
    }
    *out = root;
    return MNV_OK;
}

/* ---- config.json sections ----------------------------------------------- */

typedef struct {
    const char *name;
    mnv_arch arch;
    double rope_theta;       /* 0: rope_theta is required */
    int32_t max_pos;         /* max_position_embeddings default */
    double rms_norm_eps;
    int32_t attention_bias;  /* default for a missing attention_bias */
} arch_defaults;

/* Defaults follow mlx-lm's ModelArgs and the HF configuration classes. */
static const arch_defaults arch_table[] = {
    {"llama", MNV_ARCH_LLAMA, 10000.0, 2048, 1e-6, 0},
    {"mistral", MNV_ARCH_LLAMA, 10000.0, 32768, 1e-6, 0},
    {"qwen2", MNV_ARCH_QWEN2, 1000000.0, 32768, 1e-6, 1},
    {"qwen3", MNV_ARCH_QWEN3, 0.0, 32768, 1e-6, 0},
    {"gpt_oss", MNV_ARCH_GPT_OSS, 150000.0, 131072, 1e-5, 1},
};

static mnv_status parse_arch(const cJSON *root, const char *fname, mnv_model_config *c,
                             const arch_defaults **out) {
    const char *mt = NULL;
    mnv_status st = get_str(root, "", "model_type", fname, true, &mt);
    if (st != MNV_OK) return st;
    for (size_t i = 0; i < sizeof arch_table / sizeof arch_table[0]; i++) {
        if (strcmp(mt, arch_table[i].name) == 0) {
            snprintf(c->model_type, sizeof c->model_type, "%s", mt);
            c->arch = arch_table[i].arch;
            *out = &arch_table[i];
            return MNV_OK;
        }
    }
    return mnv_set_error(MNV_ERR_UNSUPPORTED,
                         "%s: key 'model_type': '%s' is not supported (llama, mistral, qwen2, qwen3, "
                         "gpt_oss)",
                         fname, mt);
}

static mnv_status parse_head_dim(const cJSON *root, const char *fname, mnv_model_config *c) {
    bool required = c->arch == MNV_ARCH_QWEN3;
    c->head_dim = 0;
    mnv_status st = get_i32(root, "", "head_dim", fname, 1, INT32_MAX, required, &c->head_dim);
    if (st != MNV_OK || c->head_dim) return st;
    if (c->hidden_size % c->num_attention_heads)
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: key 'hidden_size': %d is not divisible by num_attention_heads %d "
                             "(and head_dim is absent)",
                             fname, (int)c->hidden_size, (int)c->num_attention_heads);
    c->head_dim = c->hidden_size / c->num_attention_heads;
    return MNV_OK;
}

static mnv_status parse_sizes(const cJSON *root, const char *fname, const arch_defaults *ad,
                              mnv_model_config *c) {
    const int32_t M = INT32_MAX;
    mnv_status st = get_i32(root, "", "vocab_size", fname, 1, M, true, &c->vocab_size);
    if (!st) st = get_i32(root, "", "hidden_size", fname, 1, M, true, &c->hidden_size);
    if (!st) st = get_i32(root, "", "intermediate_size", fname, 1, M, true, &c->intermediate_size);
    if (!st)
        st = get_i32(root, "", "num_hidden_layers", fname, 1, MNV_MAX_LAYERS, true,
                     &c->num_hidden_layers);
    if (!st) st = get_i32(root, "", "num_attention_heads", fname, 1, M, true, &c->num_attention_heads);
    c->num_key_value_heads = c->num_attention_heads;
    if (!st) st = get_i32(root, "", "num_key_value_heads", fname, 1, M, false, &c->num_key_value_heads);
    if (st) return st;
    if (c->num_attention_heads % c->num_key_value_heads)
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: key 'num_key_value_heads': %d does not divide num_attention_heads %d",
                             fname, (int)c->num_key_value_heads, (int)c->num_attention_heads);
    st = parse_head_dim(root, fname, c);
    c->max_position_embeddings = ad->max_pos;
    if (!st)
        st = get_i32(root, "", "max_position_embeddings", fname, 1, M, false,
                     &c->max_position_embeddings);
    c->rms_norm_eps = ad->rms_norm_eps;
    if (!st) st = get_num(root, "", "rms_norm_eps", fname, true, &c->rms_norm_eps);
    return st;
}

static mnv_status parse_rope_type(const cJSON *ro, const char *pfx, const char *fname,
                                  mnv_rope_config *r) {
    static const struct {
        const char *name;
        mnv_rope_type type;
    } types[] = {{"default", MNV_ROPE_DEFAULT}, {"linear", MNV_ROPE_LINEAR},
                 {"llama3", MNV_ROPE_LLAMA3},   {"yarn", MNV_ROPE_YARN},
                 {"deepseek_yarn", MNV_ROPE_YARN}, {"dynamic", MNV_ROPE_DYNAMIC}};
    const char *key = pick_key(ro, "type", "rope_type"), *name = "default";
    mnv_status st = get_str(ro, pfx, key, fname, false, &name);
    if (st != MNV_OK) return st;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (strcmp(name, types[i].name) == 0) {
            r->type = types[i].type;
            return MNV_OK;
        }
    }
    return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: key '%s%s': rope type '%s' is not supported",
                         fname, pfx, key, name);
}

/* Fields of a rope_scaling / rope_parameters object. */
static mnv_status parse_rope_fields(const cJSON *ro, const char *pfx, const char *fname,
                                    mnv_rope_config *r) {
    mnv_status st = parse_rope_type(ro, pfx, fname, r);
    if (!st) st = get_num(ro, pfx, "factor", fname, true, &r->factor);
    if (!st) st = get_num(ro, pfx, "low_freq_factor", fname, true, &r->low_freq_factor);
    if (!st) st = get_num(ro, pfx, "high_freq_factor", fname, true, &r->high_freq_factor);
    if (r->type == MNV_ROPE_LLAMA3) r->original_max_pos = 8192;
    if (!st)
        st = get_int(ro, pfx, "original_max_position_embeddings", fname, 1, INT32_MAX, false,
                     &r->original_max_pos);
    if (!st) st = get_num(ro, pfx, "beta_fast", fname, false, &r->beta_fast);
    if (!st) st = get_num(ro, pfx, "beta_slow", fname, false, &r->beta_slow);
    if (!st) st = get_num(ro, pfx, "mscale", fname, false, &r->mscale);
    if (!st) st = get_num(ro, pfx, "mscale_all_dim", fname, false, &r->mscale_all_dim);
    if (!st) st = get_bool(ro, pfx, "truncate", fname, &r->truncate);
    if (!st) st = get_num(ro, pfx, "partial_rotary_factor", fname, true, &r->partial_rotary_factor);
    if (!st) st = get_num(ro, pfx, "rope_theta", fname, true, &r->theta);
    if (st) return st;
    if (r->type == MNV_ROPE_LLAMA3 && !(r->high_freq_factor > r->low_freq_factor))
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: key '%shigh_freq_factor': %g must exceed low_freq_factor %g", fname,
                             pfx, r->high_freq_factor, r->low_freq_factor);
    return MNV_OK;
}

static mnv_status parse_rope(const cJSON *root, const char *fname, const arch_defaults *ad,
                             mnv_model_config *c) {
    mnv_rope_config *r = &c->rope;
    *r = (mnv_rope_config){.type = MNV_ROPE_DEFAULT, .theta = 0, .factor = 1, .low_freq_factor = 1,
                           .high_freq_factor = 4, .original_max_pos = 0, .beta_fast = 32,
                           .beta_slow = 1, .mscale = 1, .mscale_all_dim = 0, .truncate = 1,
                           .partial_rotary_factor = 1, .traditional = 0};
    const char *key = pick_key(root, "rope_scaling", "rope_parameters");
    const cJSON *ro = get(root, key);
    char pfx[32];
    snprintf(pfx, sizeof pfx, "%s.", key);
    mnv_status st = MNV_OK;
    if (ro && !cJSON_IsObject(ro))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s': expected an object", fname, key);
    if (ro) st = parse_rope_fields(ro, pfx, fname, r);
    /* rope_parameters may sit beside rope_scaling and hold only rope_theta */
    const cJSON *rp = get(root, "rope_parameters");
    if (!st && rp && rp != ro && cJSON_IsObject(rp) && get(rp, "rope_theta"))
        st = get_num(rp, "rope_parameters.", "rope_theta", fname, true, &r->theta);
    if (!st) st = get_num(root, "", "rope_theta", fname, true, &r->theta);
    if (!st) st = get_num(root, "", "partial_rotary_factor", fname, true, &r->partial_rotary_factor);
    if (!st) st = get_bool(root, "", "rope_traditional", fname, &r->traditional);
    if (st) return st;
    if (r->theta == 0) {
        if (ad->rope_theta == 0) return missing(fname, "", "rope_theta");
        r->theta = ad->rope_theta;
    }
    if (r->partial_rotary_factor > 1)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'partial_rotary_factor': %g is above 1", fname,
                             r->partial_rotary_factor);
    if (r->original_max_pos == 0) r->original_max_pos = c->max_position_embeddings;
    return MNV_OK;
}

static mnv_status parse_dtype(const cJSON *root, const char *fname, mnv_model_config *c) {
    static const struct {
        const char *name;
        mnv_dtype dtype;
    } names[] = {{"float32", MNV_DTYPE_F32}, {"bfloat16", MNV_DTYPE_BF16}, {"float16", MNV_DTYPE_F16}};
    const char *key = pick_key(root, "torch_dtype", "dtype"), *s = NULL;
    c->torch_dtype = MNV_DTYPE_F32;
    mnv_status st = get_str(root, "", key, fname, false, &s);
    if (st != MNV_OK || !s) return st;
    const char *bare = strncmp(s, "torch.", 6) == 0 ? s + 6 : s;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(bare, names[i].name) == 0) {
            c->torch_dtype = names[i].dtype;
            return MNV_OK;
        }
    }
    return mnv_set_error(MNV_ERR_UNSUPPORTED,
                         "%s: key '%s': '%s' is not supported (float32, bfloat16, float16)", fname,
                         key, s);
}

static mnv_status parse_flags(const cJSON *root, const char *fname, const arch_defaults *ad,
                              mnv_model_config *c) {
    c->tie_word_embeddings = -1;
    mnv_status st = get_bool(root, "", "tie_word_embeddings", fname, &c->tie_word_embeddings);
    c->attention_bias = ad->attention_bias;
    if (!st && c->arch != MNV_ARCH_QWEN2)
        st = get_bool(root, "", "attention_bias", fname, &c->attention_bias);
    /* Qwen2 always has q/k/v biases and never an o_proj bias. */
    c->o_bias = c->arch == MNV_ARCH_QWEN2 ? 0 : c->attention_bias;
    c->mlp_bias = 0;
    if (!st && c->arch == MNV_ARCH_LLAMA) st = get_bool(root, "", "mlp_bias", fname, &c->mlp_bias);
    c->qk_norm = c->arch == MNV_ARCH_QWEN3;
    const char *act = "silu";
    if (!st) st = get_str(root, "", "hidden_act", fname, false, &act);
    if (!st && strlen(act) >= sizeof c->hidden_act)
        st = mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: key 'hidden_act': '%s' is not supported", fname,
                           act);
    if (!st) snprintf(c->hidden_act, sizeof c->hidden_act, "%s", act);
    if (!st) st = parse_dtype(root, fname, c);
    return st;
}

static mnv_status parse_layer_types(const cJSON *root, const char *fname, mnv_model_config *c) {
    const cJSON *lt = get(root, "layer_types");
    if (!lt) return MNV_OK;
    if (!cJSON_IsArray(lt))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'layer_types': expected a list of strings", fname);
    int n = cJSON_GetArraySize(lt), i = 0;
    if (n != c->num_hidden_layers)
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: key 'layer_types': %d entries but num_hidden_layers is %d", fname, n,
                             (int)c->num_hidden_layers);
    bool any_sliding = false;
    for (const cJSON *e = lt->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'layer_types': entry %d is not a string",
                                 fname, i);
        if (strcmp(e->valuestring, "sliding_attention") == 0) c->layer_sliding[i] = 1;
        else if (strcmp(e->valuestring, "full_attention") != 0)
            return mnv_set_error(MNV_ERR_UNSUPPORTED,
                                 "%s: key 'layer_types': entry %d: layer type '%s' is not supported",
                                 fname, i, e->valuestring);
        any_sliding |= c->layer_sliding[i];
    }
    if (any_sliding && c->sliding_window == 0)
        return mnv_set_error(MNV_ERR_FORMAT,
                             "%s: key 'sliding_window': missing, but layer_types has sliding layers",
                             fname);
    return MNV_OK;
}

static mnv_status parse_moe(const cJSON *root, const char *fname, mnv_model_config *c) {
    bool req = c->arch == MNV_ARCH_GPT_OSS;
    const char *ek = pick_key(root, "num_local_experts", "num_experts");
    const char *tk = pick_key(root, "num_experts_per_tok", "experts_per_token");
    mnv_status st = get_i32(root, "", ek, fname, 1, 1 << 20, req, &c->num_local_experts);
    if (!st) st = get_i32(root, "", tk, fname, 1, 1 << 20, req, &c->num_experts_per_tok);
    if (st) return st;
    if (c->num_experts_per_tok > c->num_local_experts)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key '%s': %d exceeds %s %d", fname, tk,
                             (int)c->num_experts_per_tok, ek, (int)c->num_local_experts);
    c->swiglu_limit = req ? 7.0 : 0.0;
    return get_num(root, "", "swiglu_limit", fname, true, &c->swiglu_limit);
}

static mnv_status parse_tokens(const cJSON *root, const char *fname, mnv_model_config *c) {
    mnv_status st = get_i32(root, "", "bos_token_id", fname, 0, INT32_MAX, false, &c->bos_token_id);
    if (!st) st = get_ids(root, "eos_token_id", fname, c->eos_token_ids, &c->n_eos);
    return st;
}

/* {"group_size": G, "bits": B, "mode": M}: missing mode = affine, missing
 * sizes = the mode's defaults. */
static mnv_status parse_qparams(const cJSON *q, const char *pfx, const char *fname, mnv_qmode *mode, int32_t *bits,
                                int32_t *gs) {
    const char *m = NULL;
    mnv_status st = get_str(q, pfx, "mode", fname, false, &m);
    if (st) return st;
    *mode = MNV_QMODE_AFFINE;
    if (m && !mnv_qmode_from_name(m, mode))
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: key '%smode': unknown quantization mode '%s'", fname, pfx, m);
    mnv_qmode_defaults(*mode, bits, gs);
    st = get_i32(q, pfx, "bits", fname, 1, 16, false, bits);
    if (!st) st = get_i32(q, pfx, "group_size", fname, 1, 1 << 20, false, gs);
    return st;
}

static mnv_status parse_quant_entry(const cJSON *e, const char *fname, mnv_model_config *c) {
    if (c->n_q_overrides >= MNV_MAX_QUANT_OVERRIDES)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: key 'quantization': more than %d per-module entries", fname,
                             MNV_MAX_QUANT_OVERRIDES);
    if (strlen(e->string) >= sizeof c->q_overrides[0].path)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'quantization.%.64s...': module path too long", fname, e->string);
    mnv_quant_override *o = &c->q_overrides[c->n_q_overrides];
    memset(o, 0, sizeof *o);
    snprintf(o->path, sizeof o->path, "%s", e->string);
    if (cJSON_IsBool(e)) {
        o->enabled = cJSON_IsTrue(e);
        o->mode = c->q_mode;
        o->bits = c->q_bits;
        o->group_size = c->q_group_size;
    } else {
        char pfx[128];
        snprintf(pfx, sizeof pfx, "quantization.%s.", e->string);
        mnv_status st = parse_qparams(e, pfx, fname, &o->mode, &o->bits, &o->group_size);
        if (st) return st;
        o->enabled = 1;
    }
    c->n_q_overrides++;
    return MNV_OK;
}

static mnv_status parse_quant(const cJSON *root, const char *fname, mnv_model_config *c) {
    const cJSON *q = get(root, "quantization");
    if (!q) { /* foreign checkpoints: only OpenAI's MXFP4 is read */
        const cJSON *qc = get(root, "quantization_config");
        if (!qc) return MNV_OK;
        const char *method = NULL;
        mnv_status st = get_str(qc, "quantization_config.", "quant_method", fname, false, &method);
        if (st) return st;
        if (!method) q = qc; /* an mlx copy */
        else if (strcmp(method, "mxfp4") == 0) {
            c->q_mode = MNV_QMODE_MXFP4;
            mnv_qmode_defaults(c->q_mode, &c->q_bits, &c->q_group_size);
            return MNV_OK;
        } else
            return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: key 'quantization_config.quant_method': '%s' is not supported",
                                 fname, method);
    }
    if (!cJSON_IsObject(q)) return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'quantization': expected an object", fname);
    mnv_status st = parse_qparams(q, "quantization.", fname, &c->q_mode, &c->q_bits, &c->q_group_size);
    for (const cJSON *e = q->child; e && !st; e = e->next) {
        if (!strcmp(e->string, "mode") || !strcmp(e->string, "bits") || !strcmp(e->string, "group_size")) continue;
        if (cJSON_IsObject(e) || cJSON_IsBool(e)) st = parse_quant_entry(e, fname, c);
        /* other scalar keys (e.g. quant_method copies) carry no module */
    }
    return st;
}

void mnv_config_module_quant(const mnv_model_config *c, const char *path, bool has_scales, mnv_qmode *mode,
                             int32_t *bits, int32_t *group_size) {
    *mode = MNV_QMODE_NONE;
    *bits = *group_size = 0;
    for (int32_t i = 0; i < c->n_q_overrides; i++) {
        const mnv_quant_override *o = &c->q_overrides[i];
        if (strcmp(o->path, path) != 0) continue;
        if (o->enabled) {
            *mode = o->mode;
            *bits = o->bits;
            *group_size = o->group_size;
        }
        return;
    }
    if (has_scales && c->q_mode != MNV_QMODE_NONE) {
        *mode = c->q_mode;
        *bits = c->q_bits;
        *group_size = c->q_group_size;
    } else if (has_scales) { /* scales without any config: MLX's defaults */
        *mode = MNV_QMODE_AFFINE;
        mnv_qmode_defaults(*mode, bits, group_size);
    }
}

static mnv_status parse_config_root(const cJSON *root, const char *fname, mnv_model_config *c) {
    const arch_defaults *ad = NULL;
    mnv_status st = parse_arch(root, fname, c, &ad);
    if (!st) st = parse_sizes(root, fname, ad, c);
    if (!st) st = parse_rope(root, fname, ad, c);
    if (!st) st = parse_flags(root, fname, ad, c);
    if (!st) st = get_i32(root, "", "sliding_window", fname, 0, INT32_MAX, false, &c->sliding_window);
    if (!st) st = parse_layer_types(root, fname, c);
    /* Mistral's sliding_window (without layer_types) limits every layer, as
     * transformers applies it; Qwen2's is off unless use_sliding_window. */
    if (!st && !strcmp(c->model_type, "mistral") && c->sliding_window > 0 && !get(root, "layer_types"))
        for (int32_t i = 0; i < c->num_hidden_layers && i < MNV_MAX_LAYERS; i++) c->layer_sliding[i] = 1;
    if (!st) st = parse_moe(root, fname, c);
    if (!st) st = parse_tokens(root, fname, c);
    if (!st) st = parse_quant(root, fname, c);
    return st;
}

mnv_status mnv_config_parse(const char *json, size_t len, const char *fname, mnv_model_config *cfg) {
    if (!cfg) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_config_parse: NULL config");
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_token_id = -1;
    cfg->tie_word_embeddings = -1;
    if (!fname) fname = "config.json";
    cJSON *root;
    mnv_status st = parse_object(json, len, fname, &root);
    if (st != MNV_OK) return st;
    st = parse_config_root(root, fname, cfg);
    cJSON_Delete(root);
    return st;
}

mnv_status mnv_config_parse_generation(const char *json, size_t len, const char *fname,
                                       mnv_model_config *cfg) {
    if (!cfg) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_config_parse_generation: NULL config");
    if (!fname) fname = "generation_config.json";
    cJSON *root;
    mnv_status st = parse_object(json, len, fname, &root);
    if (st != MNV_OK) return st;
    /* Parse into copies so a bad file leaves cfg untouched. */
    int32_t bos = cfg->bos_token_id, n_eos = cfg->n_eos, eos[MNV_MAX_EOS];
    memcpy(eos, cfg->eos_token_ids, sizeof eos);
    st = get_i32(root, "", "bos_token_id", fname, 0, INT32_MAX, false, &bos);
    if (!st) st = get_ids(root, "eos_token_id", fname, eos, &n_eos);
    cJSON_Delete(root);
    if (st != MNV_OK) return st;
    cfg->bos_token_id = bos;
    cfg->n_eos = n_eos;
    memcpy(cfg->eos_token_ids, eos, sizeof eos);
    return MNV_OK;
}

static mnv_status load_and_parse(const char *path, mnv_model_config *cfg, bool generation) {
    char *text;
    size_t len;
    mnv_status st = mnv_read_file(path, &text, &len);
    if (st != MNV_OK) return st;
    st = generation ? mnv_config_parse_generation(text, len, path, cfg)
                    : mnv_config_parse(text, len, path, cfg);
    free(text);
    return st;
}

mnv_status mnv_config_load_dir(const char *dir, mnv_model_config *cfg) {
    if (!dir || !cfg) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_config_load_dir: NULL argument");
    char *cpath = mnv_path_join(dir, "config.json");
    char *gpath = mnv_path_join(dir, "generation_config.json");
    mnv_status st = MNV_OK;
    struct stat sb;
    if (!cpath || !gpath) st = mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", dir);
    if (!st) st = load_and_parse(cpath, cfg, false);
    if (!st && stat(gpath, &sb) == 0) st = load_and_parse(gpath, cfg, true);
    free(cpath);
    free(gpath);
    return st;
}
