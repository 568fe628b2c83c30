/* Model conversion to the MLX format (mnv_convert), as mlx_lm.convert
 * writes it (ml-explore/mlx-lm d78bf58 mlx_lm/convert.py, utils.py):
 *
 *  - Source tensors pass through mlx-lm's sanitize: rotary inv_freq buffers
 *    are dropped, lm_head.weight is dropped when tie_word_embeddings is
 *    true, and tensors stored in another layout than MLX's are read as views
 *    in the MLX layout that their architecture describes (model/layout.h:
 *    gpt-oss's Hugging Face MXFP4 and dense experts become MLX SwitchLinear
 *    tensors).
 *  - Floats are cast to the chosen dtype (default: the config's
 *    torch_dtype/dtype; each tensor's own dtype when the config names none).
 *  - With a quantization mode, every Linear/Embedding weight (2-D `.weight`,
 *    or a 3-D expert stack) whose last dim divides by the group size becomes
 *    P.weight (U32) + P.scales (+ P.biases for affine), quantized from the
 *    cast weights; the config gains "quantization" and its copy
 *    "quantization_config" (per-layer entries when the source was already
 *    partly quantized, as mlx-lm's quantize_model does).
 *  - With dequantize, quantized modules (a `.scales` tensor or a config
 *    override) are turned back into float weights and the quantization keys
 *    are removed.
 *
 * Tensors are processed one at a time in row chunks and written straight to
 * their place in the output shards (st_stream: header first, contiguous
 * Hugging Face layout), so memory stays at a few MiB whatever the model. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "convert/outdir.h"
#include "convert/source.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/st_stream.h"
#include "model/layout.h"
#include "quant/quant.h"

#define CHUNK_BYTES ((size_t)8 << 20) /* source bytes per processing chunk */
#define DEFAULT_SHARD_BYTES ((uint64_t)5 << 30)

/* A source tensor as the converter sees it after sanitize (the
 * architecture's layout rewrite, model/layout.h). */
typedef mnv_tensor_view src_view;

typedef enum { JOB_COPY, JOB_QUANT, JOB_DEQUANT } job_kind;

typedef struct {
    job_kind kind;
    const src_view *in[3];  /* weight, scales, biases (COPY: in[0] only) */
    mnv_qformat fmt;        /* QUANT: target; DEQUANT: source format */
    mnv_dtype round_dtype;  /* QUANT: the float dtype the weight is cast to before quantizing */
    int32_t out[3];         /* output tensors: weight, scales, biases (-1: none) */
} job;

typedef struct {
    char *name;
    mnv_dtype dtype;
    int32_t ndim;
    int64_t shape[MNV_ST_MAX_DIMS];
    uint64_t nbytes, params; /* params: counted in total_parameters */
    int32_t shard;
    size_t slot; /* index within the shard's stream */
} out_tensor;

typedef struct {
    const mnv_convert_params *p;
    mnv_qmode qmode;
    int32_t qbits, qgs;
    mnv_qmode xmode;        /* experts' own mode (q_experts_mode), NONE: as qmode */
    mnv_dtype dtype;        /* target float dtype; MNV_DTYPE_COUNT: keep each tensor's */
    mnv_model_config *cfg;
    const mnv_arch_layout *layout; /* the architecture's (NULL: none) */
    cJSON *config;          /* the source config.json, edited into the output */
    bool fine_grained;      /* the source config already had "quantization" */
    bool foreign_mxfp4;     /* HF gpt-oss quantization_config (quant_method mxfp4) */
    cJSON *entries;         /* per-layer "quantization" entries to add */
    mnv__source src;        /* the source shards, mapped */
    src_view *views;
    size_t n_views;
    job *jobs;
    size_t n_jobs, cap_jobs;
    out_tensor *outs;
    size_t n_outs, cap_outs;
    int32_t n_new_quant, n_src_quant;
    mnv_st_stream **streams;
    int32_t n_shards;
    mnv__outdir out;        /* dst_dir: the files made there, removed on failure */
    uint64_t done, total, total_params;
} conv;

/* ---- small helpers ------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool is_float(mnv_dtype t) {
    return t == MNV_DTYPE_F32 || t == MNV_DTYPE_F16 || t == MNV_DTYPE_BF16 || t == MNV_DTYPE_F64;
}

static char *str_cat(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *r = malloc(na + nb + 1);
    if (!r) return NULL;
    memcpy(r, a, na);
    memcpy(r + na, b, nb + 1);
    return r;
}

static float load_f(mnv_dtype dt, const uint8_t *p, int64_t i) {
    uint16_t h;
    float f;
    double d;
    switch (dt) {
    case MNV_DTYPE_F32: memcpy(&f, p + 4 * i, 4); return f;
    case MNV_DTYPE_BF16: memcpy(&h, p + 2 * i, 2); return mnv_bf16_to_f32(h);
    case MNV_DTYPE_F16: memcpy(&h, p + 2 * i, 2); return mnv_f16_to_f32(h);
    case MNV_DTYPE_F64: memcpy(&d, p + 8 * i, 8); return (float)d;
    default: return 0.0f;
    }
}

static void store_f(mnv_dtype dt, uint8_t *p, int64_t i, float v) {
    uint16_t h;
    double d = v;
    switch (dt) {
    case MNV_DTYPE_F32: memcpy(p + 4 * i, &v, 4); break;
    case MNV_DTYPE_BF16: h = mnv_f32_to_bf16(v); memcpy(p + 2 * i, &h, 2); break;
    case MNV_DTYPE_F16: h = mnv_f32_to_f16(v); memcpy(p + 2 * i, &h, 2); break;
    case MNV_DTYPE_F64: memcpy(p + 8 * i, &d, 8); break;
    default: break;
    }
}

static float round_to(mnv_dtype dt, float v) {
    if (dt == MNV_DTYPE_BF16) return mnv_bf16_to_f32(mnv_f32_to_bf16(v));
    if (dt == MNV_DTYPE_F16) return mnv_f16_to_f32(mnv_f32_to_f16(v));
    return v;
}

/* The float dtype a tensor of dtype t is written in. */
static mnv_dtype cast_dtype(const conv *c, mnv_dtype t) {
    if (!is_float(t) || c->dtype == MNV_DTYPE_COUNT) return t;
    return c->dtype;
}

static const char *file_of(const conv *c, const src_view *v) { return c->src.file_names[v->src->file_index]; }

/* ---- parameters and the source ------------------------------------------------ */

mnv_convert_params mnv_convert_params_default(void) {
    mnv_convert_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.dtype = MNV_DTYPE_COUNT;
    return p;
}

static mnv_status check_params(conv *c, const mnv_convert_params *p) {
    if (!p) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_convert: NULL params");
    if (p->size != sizeof *p)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_convert: params.size is %u, expected %zu (use "
                             "mnv_convert_params_default)", p->size, sizeof *p);
    if (!p->src_dir || !p->dst_dir) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_convert: NULL src_dir or dst_dir");
    if (p->dtype != MNV_DTYPE_COUNT && p->dtype != MNV_DTYPE_F32 && p->dtype != MNV_DTYPE_F16 &&
        p->dtype != MNV_DTYPE_BF16)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_convert: dtype must be F32, F16 or BF16, not %s",
                             mnv_dtype_name(p->dtype));
    c->p = p;
    c->dtype = p->dtype;
    c->qmode = MNV_QMODE_NONE;
    if (p->q_mode && p->dequantize)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_convert: choose either quantization ('%s') or dequantize",
                             p->q_mode);
    c->xmode = MNV_QMODE_NONE;
    if (p->q_experts_mode && !p->q_mode)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_convert: q_experts_mode '%s' needs q_mode", p->q_experts_mode);
    if (p->q_experts_mode && !mnv_qmode_from_name(p->q_experts_mode, &c->xmode))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_convert: unknown experts quantization mode '%s'",
                             p->q_experts_mode);
    if (!p->q_mode) return MNV_OK;
    if (!mnv_qmode_from_name(p->q_mode, &c->qmode))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_convert: unknown quantization mode '%s' (expected affine, "
                             "mxfp4, mxfp8 or nvfp4)", p->q_mode);
    mnv_qmode_defaults(c->qmode, &c->qbits, &c->qgs);
    if (p->q_bits) c->qbits = p->q_bits;
    if (p->q_group_size) c->qgs = p->q_group_size;
    mnv_qformat f = {c->qmode, c->qbits, c->qgs, c->qmode == MNV_QMODE_AFFINE ? MNV_DTYPE_BF16 : MNV_DTYPE_U8};
    return mnv_qformat_check(&f, "mnv_convert: requested quantization");
}

/* "float32" / "float16" / "bfloat16" -> dtype; anything else: COUNT. */
static mnv_dtype dtype_from_torch(const cJSON *s) {
    if (!cJSON_IsString(s)) return MNV_DTYPE_COUNT;
    if (!strcmp(s->valuestring, "float32")) return MNV_DTYPE_F32;
    if (!strcmp(s->valuestring, "float16")) return MNV_DTYPE_F16;
    if (!strcmp(s->valuestring, "bfloat16")) return MNV_DTYPE_BF16;
    return MNV_DTYPE_COUNT;
}

static mnv_dtype config_dtype(const cJSON *root) {
    mnv_dtype t = dtype_from_torch(cJSON_GetObjectItemCaseSensitive(root, "torch_dtype"));
    if (t == MNV_DTYPE_COUNT) t = dtype_from_torch(cJSON_GetObjectItemCaseSensitive(root, "dtype"));
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (t == MNV_DTYPE_COUNT && cJSON_IsObject(tc)) t = dtype_from_torch(cJSON_GetObjectItemCaseSensitive(tc, "dtype"));
    return t;
}

/* mlx-lm's load_config: a truthy generation_config "eos_token_id" replaces
 * config["eos_token_id"] (and is saved so). */
static mnv_status merge_generation_eos(conv *c) {
    char *path = mnv_path_join(c->p->src_dir, "generation_config.json"), *text = NULL;
    size_t len = 0;
    struct stat sb;
    if (!path) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    mnv_status st = stat(path, &sb) == 0 ? mnv_read_file(path, &text, &len) : MNV_OK;
    cJSON *g = text ? cJSON_ParseWithLength(text, len) : NULL;
    if (!st && text && !g) st = mnv_set_error(MNV_ERR_FORMAT, "%s: invalid JSON", path);
    const cJSON *eos = g ? cJSON_GetObjectItemCaseSensitive(g, "eos_token_id") : NULL;
    bool truthy = (cJSON_IsNumber(eos) && eos->valuedouble != 0) || (cJSON_IsArray(eos) && cJSON_GetArraySize(eos));
    if (!st && truthy) {
        cJSON *dup = cJSON_Duplicate(eos, 1);
        if (!dup) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        else if (cJSON_HasObjectItem(c->config, "eos_token_id"))
            cJSON_ReplaceItemInObjectCaseSensitive(c->config, "eos_token_id", dup);
        else
            cJSON_AddItemToObject(c->config, "eos_token_id", dup);
    }
    cJSON_Delete(g);
    free(text);
    free(path);
    return st;
}

static mnv_status load_config(conv *c) {
    char *path = mnv_path_join(c->p->src_dir, "config.json"), *text = NULL;
    size_t len = 0;
    if (!path) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    mnv_status st = mnv_read_file(path, &text, &len);
    c->cfg = calloc(1, sizeof *c->cfg);
    if (!st && !c->cfg) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (!st) st = mnv_config_parse(text, len, path, c->cfg);
    if (!st) {
        c->config = cJSON_ParseWithLength(text, len);
        if (!cJSON_IsObject(c->config)) st = mnv_set_error(MNV_ERR_FORMAT, "%s: not a JSON object", path);
    }
    if (!st) {
        if (c->dtype == MNV_DTYPE_COUNT) c->dtype = config_dtype(c->config);
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(c->config, "quantization");
        const cJSON *qc = cJSON_GetObjectItemCaseSensitive(c->config, "quantization_config");
        c->foreign_mxfp4 = !q && cJSON_IsObject(qc) && cJSON_HasObjectItem(qc, "quant_method");
        c->fine_grained = q != NULL || c->foreign_mxfp4; /* mlx-lm turns the latter into "quantization" on load */
        c->layout = mnv_arch_layout_for(c->cfg->arch);
        st = merge_generation_eos(c);
    }
    free(text);
    free(path);
    return st;
}

/* ---- views: mlx-lm's sanitize ---------------------------------------------------- */

static int cmp_view(const void *a, const void *b) {
    return strcmp(((const src_view *)a)->name, ((const src_view *)b)->name);
}

static mnv_status build_views(conv *c) {
    size_t n = c->src.n_tensors;
    c->views = calloc(MNV_LAYOUT_MAX_VIEWS * n + 1, sizeof *c->views);
    if (!c->views) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    const mnv_arch_layout *lay = c->layout;
    bool foreign = lay && lay->foreign(c->src.tensors, n);
    mnv_status st = MNV_OK;
    for (size_t i = 0; i < n && !st; i++) {
        const mnv_st_tensor *t = &c->src.tensors[i];
        if (strstr(t->name, "rotary_emb.inv_freq")) continue;
        if (c->cfg->tie_word_embeddings == 1 && strcmp(t->name, "lm_head.weight") == 0) continue;
        int32_t k = 0; /* views written, owned by c even on failure */
        if (foreign) st = lay->views(t, c->src.file_names[t->file_index], &c->views[c->n_views], &k);
        else if ((st = mnv_tensor_view_plain(&c->views[c->n_views], t)) == MNV_OK) k = 1;
        c->n_views += (size_t)k;
    }
    if (st) return st;
    qsort(c->views, c->n_views, sizeof *c->views, cmp_view);
    for (size_t i = 1; i < c->n_views; i++)
        if (strcmp(c->views[i - 1].name, c->views[i].name) == 0)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' appears twice after %s sanitize", c->p->src_dir,
                                 c->views[i].name, foreign ? lay->name : "mlx-lm's");
    return MNV_OK;
}

static const src_view *find_view(const conv *c, const char *name) {
    size_t lo = 0, hi = c->n_views;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = strcmp(c->views[mid].name, name);
        if (r == 0) return &c->views[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static const src_view *find_sibling(const conv *c, const char *path, const char *suffix) {
    char *name = str_cat(path, suffix);
    const src_view *v = name ? find_view(c, name) : NULL;
    free(name);
    return v;
}

/* ---- the plan: jobs and output tensors --------------------------------------------- */

static int32_t add_out(conv *c, const char *name, mnv_dtype dtype, int32_t ndim, const int64_t *shape,
                       uint64_t params) {
    if (c->n_outs == c->cap_outs) {
        size_t cap = c->cap_outs ? 2 * c->cap_outs : 256;
        out_tensor *o = realloc(c->outs, cap * sizeof *o);
        if (!o) return -1;
        c->outs = o;
        c->cap_outs = cap;
    }
    out_tensor *o = &c->outs[c->n_outs];
    memset(o, 0, sizeof *o);
    o->name = mnv_strdup(name);
    if (!o->name) return -1;
    o->dtype = dtype;
    o->ndim = ndim;
    o->nbytes = mnv_dtype_size(dtype);
    for (int32_t d = 0; d < ndim; d++) {
        o->shape[d] = shape[d];
        o->nbytes *= (uint64_t)shape[d];
    }
    o->params = params;
    return (int32_t)c->n_outs++;
}

static job *add_job(conv *c, job_kind kind) {
    if (c->n_jobs == c->cap_jobs) {
        size_t cap = c->cap_jobs ? 2 * c->cap_jobs : 256;
        job *j = realloc(c->jobs, cap * sizeof *j);
        if (!j) return NULL;
        c->jobs = j;
        c->cap_jobs = cap;
    }
    job *j = &c->jobs[c->n_jobs++];
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->out[0] = j->out[1] = j->out[2] = -1;
    return j;
}

static uint64_t elems(const src_view *v) {
    uint64_t n = 1;
    for (int32_t d = 0; d < v->ndim; d++) n *= (uint64_t)v->shape[d];
    return n;
}

/* Copy (casting floats) one tensor under its own name. */
static mnv_status plan_copy(conv *c, const src_view *v, uint64_t params) {
    job *j = add_job(c, JOB_COPY);
    if (!j) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    j->in[0] = v;
    j->out[0] = add_out(c, v->name, cast_dtype(c, v->dtype), v->ndim, v->shape, params);
    return j->out[0] < 0 ? mnv_set_error(MNV_ERR_NOMEM, "out of memory") : MNV_OK;
}

/* What mlx-lm quantizes: Linear / Embedding weights (2-D) and expert stacks
 * (SwitchLinear, 3-D), never norms; nn.quantize's predicate also needs the
 * last dim to divide by the (top-level) group size. */
static bool quantizable(const src_view *v, int32_t group) {
    if (!ends_with(v->name, ".weight") || !is_float(v->dtype)) return false;
    bool expert = strstr(v->name, ".experts.") || strstr(v->name, ".switch_mlp.");
    if (!(v->ndim == 2 || (v->ndim == 3 && expert))) return false;
    const char *mod = strrchr(v->name, '.'); /* the module's own name: "...input_layernorm" + ".weight" */
    while (mod > v->name && mod[-1] != '.') mod--;
    if (strstr(mod, "norm")) return false;
    return v->shape[v->ndim - 1] % group == 0;
}

/* A per-layer "quantization" entry {"group_size", "bits"[, "mode"]}. */
static mnv_status add_entry(conv *c, const char *path, const mnv_qformat *f, bool with_mode) {
    cJSON *e = cJSON_CreateObject();
    if (!e || !cJSON_AddNumberToObject(e, "group_size", f->group_size) || !cJSON_AddNumberToObject(e, "bits", f->bits) ||
        (with_mode && !cJSON_AddStringToObject(e, "mode", mnv_qmode_name(f->mode)))) {
        cJSON_Delete(e);
        return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(c->entries, path, e);
    return MNV_OK;
}

/* Quantize weight v of module `path` (when it qualifies), else copy it. */
static mnv_status plan_quant(conv *c, const src_view *v, const char *path) {
    mnv_qformat f = {c->qmode, c->qbits, c->qgs, MNV_DTYPE_U8};
    /* the architecture's quant_predicate (gpt-oss: its routers) */
    bool router = c->layout && c->layout->quant_override && c->layout->quant_override(path, &f);
    bool own_experts = c->xmode != MNV_QMODE_NONE && v->ndim == 3 && strstr(v->name, ".experts.");
    if (own_experts) { /* e.g. MXFP4 experts with 8-bit affine elsewhere */
        f.mode = c->xmode;
        mnv_qmode_defaults(f.mode, &f.bits, &f.group_size);
    }
    if (!quantizable(v, own_experts ? f.group_size : c->qgs) || v->shape[v->ndim - 1] % f.group_size)
        return plan_copy(c, v, elems(v));
    mnv_dtype wdt = cast_dtype(c, v->dtype) == MNV_DTYPE_F64 ? MNV_DTYPE_F32 : cast_dtype(c, v->dtype);
    if (f.mode == MNV_QMODE_AFFINE) f.scale_dtype = wdt;
    job *j = add_job(c, JOB_QUANT);
    if (!j) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    j->in[0] = v;
    j->fmt = f;
    j->round_dtype = wdt;
    int64_t shape[MNV_ST_MAX_DIMS];
    memcpy(shape, v->shape, sizeof shape);
    int64_t k = shape[v->ndim - 1];
    char *names[3] = {str_cat(path, ".weight"), str_cat(path, ".scales"), str_cat(path, ".biases")};
    mnv_status st = names[0] && names[1] && names[2] ? MNV_OK : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    shape[v->ndim - 1] = mnv_qformat_row_words(&f, k);
    if (!st) j->out[0] = add_out(c, names[0], MNV_DTYPE_U32, v->ndim, shape, elems(v));
    shape[v->ndim - 1] = mnv_qformat_row_groups(&f, k);
    if (!st) j->out[1] = add_out(c, names[1], f.scale_dtype, v->ndim, shape, 0);
    if (!st && f.mode == MNV_QMODE_AFFINE) j->out[2] = add_out(c, names[2], f.scale_dtype, v->ndim, shape, 0);
    if (!st && (j->out[0] < 0 || j->out[1] < 0 || (f.mode == MNV_QMODE_AFFINE && j->out[2] < 0)))
        st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (!st && (router || own_experts || c->fine_grained)) st = add_entry(c, path, &f, !router);
    for (int i = 0; i < 3; i++) free(names[i]);
    c->n_new_quant++;
    return st;
}

/* The format of an already quantized module, checked against its tensors. */
static mnv_status module_format(const conv *c, const char *path, const src_view *w, const src_view *s,
                                const src_view *b, mnv_qformat *f) {
    mnv_config_module_quant(c->cfg, path, true, &f->mode, &f->bits, &f->group_size);
    const char *fname = file_of(c, w);
    if (f->mode == MNV_QMODE_NONE)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: module '%s' has scales but config.json marks it unquantized", fname,
                             path);
    f->scale_dtype = s->dtype;
    mnv_status st = mnv_qformat_check(f, s->name);
    if (st) return st;
    bool affine = f->mode == MNV_QMODE_AFFINE;
    if (w->dtype != MNV_DTYPE_U32)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s': quantized weight must be U32, not %s", fname, w->name,
                             mnv_dtype_name(w->dtype));
    if (affine != (b != NULL))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: module '%s': %s quantization %s a .biases tensor", fname, path,
                             mnv_qmode_name(f->mode), affine ? "needs" : "must not have");
    int64_t k = s->shape[s->ndim - 1] * f->group_size;
    bool ok = w->ndim == s->ndim && w->ndim >= 1 && w->shape[w->ndim - 1] == mnv_qformat_row_words(f, k);
    for (int32_t d = 0; ok && d < w->ndim - 1; d++) ok = w->shape[d] == s->shape[d];
    if (ok && b) ok = b->ndim == s->ndim && b->dtype == s->dtype && !memcmp(b->shape, s->shape, sizeof b->shape);
    if (!ok)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: module '%s': weight, scales and biases shapes do not match %s "
                             "%d-bit groups of %d", fname, path, mnv_qmode_name(f->mode), f->bits, f->group_size);
    return MNV_OK;
}

/* A module stored quantized: dequantize it, or carry its tensors over. */
static mnv_status plan_quantized_module(conv *c, const src_view *w, const char *path) {
    const src_view *s = find_sibling(c, path, ".scales"), *b = find_sibling(c, path, ".biases");
    mnv_qformat f;
    mnv_status st = module_format(c, path, w, s, b, &f);
    if (st) return st;
    int64_t k = s->shape[s->ndim - 1] * f.group_size;
    uint64_t params = elems(w) / (uint64_t)w->shape[w->ndim - 1] * (uint64_t)k;
    c->n_src_quant++;
    if (!c->p->dequantize) {
        st = plan_copy(c, w, params);
        if (!st) st = plan_copy(c, s, 0);
        if (!st && b) st = plan_copy(c, b, 0);
        return st;
    }
    job *j = add_job(c, JOB_DEQUANT);
    if (!j) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    j->in[0] = w;
    j->in[1] = s;
    j->in[2] = b;
    j->fmt = f;
    /* mlx-lm casts scales to the dtype first, then dequantizes in the scales'
     * dtype (affine) or bfloat16 (fp modes: mx.dequantize's default). */
    mnv_dtype out = c->dtype != MNV_DTYPE_COUNT ? c->dtype : f.mode == MNV_QMODE_AFFINE ? s->dtype : MNV_DTYPE_BF16;
    int64_t shape[MNV_ST_MAX_DIMS];
    memcpy(shape, w->shape, sizeof shape);
    shape[w->ndim - 1] = k;
    j->out[0] = add_out(c, w->name, out, w->ndim, shape, params);
    return j->out[0] < 0 ? mnv_set_error(MNV_ERR_NOMEM, "out of memory") : MNV_OK;
}

/* The module path of a ".weight" / ".scales" / ".biases" tensor, or NULL. */
static char *module_path(const char *name, const char **suffix) {
    static const char *const sfx[3] = {".weight", ".scales", ".biases"};
    for (int i = 0; i < 3; i++) {
        if (!ends_with(name, sfx[i])) continue;
        *suffix = sfx[i];
        size_t n = strlen(name) - strlen(sfx[i]);
        char *p = malloc(n + 1);
        if (p) {
            memcpy(p, name, n);
            p[n] = 0;
        }
        return p;
    }
    *suffix = NULL;
    return NULL;
}

static mnv_status plan_view(conv *c, const src_view *v) {
    const char *suffix = NULL;
    char *path = module_path(v->name, &suffix);
    if (suffix && !path) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    mnv_status st = MNV_OK;
    const src_view *w = path ? find_sibling(c, path, ".weight") : NULL;
    const src_view *s = path ? find_sibling(c, path, ".scales") : NULL;
    if (w && s) { /* a quantized module: planned once, from its weight */
        if (v == w) st = plan_quantized_module(c, w, path);
    } else if (suffix && !strcmp(suffix, ".weight") && c->qmode != MNV_QMODE_NONE) {
        st = plan_quant(c, v, path);
    } else {
        st = plan_copy(c, v, elems(v));
    }
    free(path);
    return st;
}

static mnv_status build_plan(conv *c) {
    c->entries = cJSON_CreateObject();
    if (!c->entries) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    mnv_status st = MNV_OK;
    for (size_t i = 0; i < c->n_views && !st; i++) st = plan_view(c, &c->views[i]);
    if (st || c->qmode == MNV_QMODE_NONE || c->n_new_quant) return st;
    if (c->n_src_quant || c->cfg->q_mode != MNV_QMODE_NONE)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: the model is already quantized (%d quantized modules) and has "
                             "nothing left to quantize; convert it with dequantize first", c->p->src_dir,
                             (int)c->n_src_quant);
    return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: no Linear or Embedding weight has an input dimension divisible by "
                         "the group size %d; nothing to quantize", c->p->src_dir, (int)c->qgs);
}

/* ---- shards -------------------------------------------------------------------------- */

static int cmp_out(const void *a, const void *b) {
    return strcmp(((const out_tensor *)a)->name, ((const out_tensor *)b)->name);
}

static char *shard_name(int32_t i, int32_t n) {
    char buf[64];
    if (n == 1) snprintf(buf, sizeof buf, "model.safetensors");
    else snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", (int)i + 1, (int)n);
    return mnv_strdup(buf);
}

/* mlx-lm's make_shards: greedy in name order, a new shard when the next
 * tensor would pass the limit (but never an empty shard). */
static void assign_shards(conv *c) {
    uint64_t limit = c->p->max_shard_bytes ? c->p->max_shard_bytes : DEFAULT_SHARD_BYTES, size = 0;
    int32_t shard = 0;
    size_t in_shard = 0;
    for (size_t i = 0; i < c->n_outs; i++) {
        out_tensor *o = &c->outs[i];
        if (in_shard && size + o->nbytes > limit) {
            shard++;
            size = 0;
            in_shard = 0;
        }
        o->shard = shard;
        o->slot = in_shard++;
        size += o->nbytes;
        c->total += o->nbytes;
        c->total_params += o->params;
    }
    c->n_shards = c->n_outs ? shard + 1 : 1;
}

/* Jobs refer to outputs by index: re-point them after sorting the outputs. */
static mnv_status sort_outputs(conv *c) {
    int32_t *rank = malloc((c->n_outs + 1) * sizeof *rank);
    char **names = malloc((c->n_outs + 1) * sizeof *names);
    if (!rank || !names) {
        free(rank);
        free(names);
        return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < c->n_outs; i++) names[i] = c->outs[i].name;
    qsort(c->outs, c->n_outs, sizeof *c->outs, cmp_out);
    for (size_t i = 0; i < c->n_outs; i++) /* names are unique pointers: find each one's new place */
        for (size_t lo = 0, hi = c->n_outs; lo < hi;) {
            size_t mid = (lo + hi) / 2;
            int r = strcmp(c->outs[mid].name, names[i]);
            if (r == 0) {
                rank[i] = (int32_t)mid;
                break;
            }
            if (r < 0) lo = mid + 1;
            else hi = mid;
        }
    for (size_t j = 0; j < c->n_jobs; j++)
        for (int k = 0; k < 3; k++)
            if (c->jobs[j].out[k] >= 0) c->jobs[j].out[k] = rank[c->jobs[j].out[k]];
    mnv_status st = MNV_OK;
    for (size_t i = 1; i < c->n_outs && !st; i++)
        if (strcmp(c->outs[i - 1].name, c->outs[i].name) == 0)
            st = mnv_set_error(MNV_ERR_FORMAT, "%s: two source tensors both give output '%s'", c->p->src_dir,
                               c->outs[i].name);
    free(rank);
    free(names);
    return st;
}

static mnv_status open_shards(conv *c) {
    c->streams = calloc((size_t)c->n_shards, sizeof *c->streams);
    mnv_st_stream_tensor *t = calloc(c->n_outs + 1, sizeof *t);
    mnv_status st = (c->streams && t) ? MNV_OK : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    static const char *const meta[2] = {"format", "mlx"};
    for (int32_t s = 0, first = 0; s < c->n_shards && !st; s++) {
        size_t n = 0;
        while ((size_t)first + n < c->n_outs && c->outs[first + n].shard == s) {
            const out_tensor *o = &c->outs[first + n];
            t[n] = (mnv_st_stream_tensor){o->name, o->dtype, o->ndim, {0}};
            memcpy(t[n].shape, o->shape, sizeof o->shape);
            n++;
        }
        char *name = shard_name(s, c->n_shards), *path = name ? mnv_path_join(c->p->dst_dir, name) : NULL;
        st = path ? mnv_st_stream_create(path, t, n, meta, 1, &c->streams[s])
                  : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        free(name);
        free(path);
        first += (int32_t)n;
    }
    free(t);
    return st;
}

static mnv_status write_out(conv *c, int32_t o, uint64_t off, const void *data, size_t len) {
    const out_tensor *t = &c->outs[o];
    mnv_status st = mnv_st_stream_write(c->streams[t->shard], t->slot, off, data, len);
    if (st) {
        mnv_error_prefix("tensor '%s'", t->name);
        return st;
    }
    c->done += len;
    if (c->p->progress) c->p->progress(c->p->user_data, c->done, c->total);
    return MNV_OK;
}

/* ---- running the jobs ------------------------------------------------------------------ */

/* Logical row r of a view: a pointer into the mapping, or (column views)
 * gathered into tmp (row_elems elements). */
static const uint8_t *view_row(const src_view *v, int64_t r, uint8_t *tmp) {
    size_t es = mnv_dtype_size(v->dtype), rb = (size_t)v->row_elems * es;
    if (!v->col_mul) return (const uint8_t *)v->src->data + (size_t)(r * v->row_mul + v->row_off) * rb;
    int64_t N = v->shape[v->ndim - 2], e = r / N, n = r % N;
    const uint8_t *base = (const uint8_t *)v->src->data;
    for (int64_t k = 0; k < v->row_elems; k++)
        memcpy(tmp + (size_t)k * es, base + (size_t)((e * v->src_k + k) * v->src_cols + n * v->col_mul + v->col_off) * es,
               es);
    return tmp;
}

static int64_t rows_per_chunk(size_t row_bytes) {
    return row_bytes ? (int64_t)MNV_MAX((size_t)1, CHUNK_BYTES / row_bytes) : 1;
}

static void convert_elems(mnv_dtype from, const uint8_t *src, mnv_dtype to, uint8_t *dst, int64_t n) {
    if (from == to) {
        memcpy(dst, src, (size_t)n * mnv_dtype_size(from));
        return;
    }
    for (int64_t i = 0; i < n; i++) store_f(to, dst, i, load_f(from, src, i));
}

static mnv_status run_copy(conv *c, const job *j) {
    const src_view *v = j->in[0];
    const out_tensor *o = &c->outs[j->out[0]];
    const size_t isz = mnv_dtype_size(v->dtype), osz = mnv_dtype_size(o->dtype);
    if (v->row_mul == 1 && !v->col_mul && v->dtype == o->dtype) { /* straight from the mapping */
        const uint8_t *p = v->src->data;
        mnv_status st = MNV_OK;
        for (uint64_t off = 0; off < o->nbytes && !st; off += CHUNK_BYTES)
            st = write_out(c, j->out[0], off, p + off, (size_t)MNV_MIN((uint64_t)CHUNK_BYTES, o->nbytes - off));
        return st;
    }
    /* flat element chunks when rows are contiguous, else one logical row at a time */
    bool flat = v->row_mul == 1 && !v->col_mul;
    int64_t n = (int64_t)elems(v), unit = flat ? 1 : v->row_elems;
    int64_t per = rows_per_chunk((size_t)unit * MNV_MAX(isz, osz)) * unit;
    uint8_t *buf = malloc((size_t)MNV_MIN(per, MNV_MAX(n, 1)) * osz), *tmp = malloc((size_t)v->row_elems * isz + 1);
    if (!buf || !tmp) {
        free(buf);
        free(tmp);
        return mnv_set_error(MNV_ERR_NOMEM, "%s: tensor '%s': out of memory", file_of(c, v), v->name);
    }
    mnv_status st = MNV_OK;
    for (int64_t e0 = 0; e0 < n && !st; e0 += per) {
        int64_t cnt = MNV_MIN(per, n - e0);
        if (flat)
            convert_elems(v->dtype, (const uint8_t *)v->src->data + (size_t)e0 * isz, o->dtype, buf, cnt);
        else
            for (int64_t e = 0; e < cnt; e += unit)
                convert_elems(v->dtype, view_row(v, (e0 + e) / unit, tmp), o->dtype, buf + (size_t)e * osz, unit);
        st = write_out(c, j->out[0], (uint64_t)e0 * osz, buf, (size_t)cnt * osz);
    }
    free(buf);
    free(tmp);
    return st;
}

typedef struct {
    uint8_t *b[3];  /* per output: a chunk of rows */
    size_t row[3];  /* bytes per row of each output */
    float *f;       /* one row in f32 */
    uint32_t *w;    /* one packed row, aligned (dequantize) */
} row_bufs;

static void free_bufs(row_bufs *b) {
    for (int i = 0; i < 3; i++) free(b->b[i]);
    free(b->f);
    free(b->w);
}

static mnv_status alloc_bufs(const conv *c, const job *j, int64_t per, int64_t k, int64_t words, row_bufs *b) {
    memset(b, 0, sizeof *b);
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        if (j->out[i] < 0) continue;
        const out_tensor *o = &c->outs[j->out[i]];
        b->row[i] = (size_t)o->shape[o->ndim - 1] * mnv_dtype_size(o->dtype);
        ok &= (b->b[i] = malloc(MNV_MAX(b->row[i] * (size_t)per, (size_t)1))) != NULL;
    }
    ok &= (b->f = malloc((size_t)MNV_MAX(k, 1) * sizeof *b->f)) != NULL;
    ok &= (b->w = malloc((size_t)MNV_MAX(words, 1) * sizeof *b->w)) != NULL;
    if (ok) return MNV_OK;
    free_bufs(b);
    return mnv_set_error(MNV_ERR_NOMEM, "%s: tensor '%s': out of memory", file_of(c, j->in[0]), j->in[0]->name);
}

static mnv_status flush_rows(conv *c, const job *j, const row_bufs *b, int64_t r0, int64_t cnt) {
    mnv_status st = MNV_OK;
    for (int i = 0; i < 3 && !st; i++)
        if (j->out[i] >= 0) st = write_out(c, j->out[i], (uint64_t)r0 * b->row[i], b->b[i], b->row[i] * (size_t)cnt);
    return st;
}

static mnv_status run_quant(conv *c, const job *j) {
    const src_view *v = j->in[0];
    const int64_t k = v->row_elems, words = mnv_qformat_row_words(&j->fmt, k);
    const int64_t per = rows_per_chunk((size_t)k * mnv_dtype_size(v->dtype));
    row_bufs b;
    mnv_status st = alloc_bufs(c, j, per, k, words, &b);
    uint8_t *tmp = malloc((size_t)k * mnv_dtype_size(v->dtype) + 1);
    if (!tmp && !st) st = mnv_set_error(MNV_ERR_NOMEM, "%s: tensor '%s': out of memory", file_of(c, v), v->name);
    for (int64_t r0 = 0; r0 < v->rows && !st; r0 += per) {
        int64_t cnt = MNV_MIN(per, v->rows - r0);
        for (int64_t r = 0; r < cnt; r++) {
            const uint8_t *src = view_row(v, r0 + r, tmp);
            for (int64_t i = 0; i < k; i++) b.f[i] = round_to(j->round_dtype, load_f(v->dtype, src, i));
            mnv_quantize_row(&j->fmt, b.f, k, (uint32_t *)(void *)(b.b[0] + (size_t)r * b.row[0]),
                             b.b[1] + (size_t)r * b.row[1], b.b[2] ? b.b[2] + (size_t)r * b.row[2] : NULL, 1.0f);
        }
        st = flush_rows(c, j, &b, r0, cnt);
    }
    free(tmp);
    free_bufs(&b);
    return st;
}

static mnv_status run_dequant(conv *c, const job *j) {
    const src_view *w = j->in[0], *s = j->in[1], *bi = j->in[2];
    const out_tensor *o = &c->outs[j->out[0]];
    const int64_t words = w->row_elems, k = o->shape[o->ndim - 1];
    const int64_t per = rows_per_chunk((size_t)k * mnv_dtype_size(o->dtype));
    row_bufs b;
    mnv_status st = alloc_bufs(c, j, per, k, words, &b);
    for (int64_t r0 = 0; r0 < w->rows && !st; r0 += per) {
        int64_t cnt = MNV_MIN(per, w->rows - r0);
        for (int64_t r = 0; r < cnt; r++) {
            memcpy(b.w, view_row(w, r0 + r, NULL), (size_t)words * 4); /* the mapping may be unaligned for U32 */
            mnv_dequant_row(&j->fmt, b.w, view_row(s, r0 + r, NULL), bi ? view_row(bi, r0 + r, NULL) : NULL, 1.0f, b.f, k);
            for (int64_t i = 0; i < k; i++) store_f(o->dtype, b.b[0] + (size_t)r * b.row[0], i, b.f[i]);
        }
        st = flush_rows(c, j, &b, r0, cnt);
    }
    free_bufs(&b);
    return st;
}

static mnv_status run_jobs(conv *c) {
    mnv_status st = MNV_OK;
    for (size_t i = 0; i < c->n_jobs && !st; i++) {
        const job *j = &c->jobs[i];
        st = j->kind == JOB_COPY ? run_copy(c, j) : j->kind == JOB_QUANT ? run_quant(c, j) : run_dequant(c, j);
        for (int k = 0; k < 3 && !st; k++)
            if (j->in[k]) mnv__source_release(j->in[k]->src);
    }
    for (int32_t s = 0; s < c->n_shards && !st; s++) st = mnv_st_stream_finish(c->streams[s]);
    return st;
}

/* ---- config.json, the index, the tokenizer files ------------------------------------- */

static mnv_status track(conv *c, const char *path) { return mnv__outdir_track(&c->out, path); }

static mnv_status write_text(conv *c, const char *name, const char *text) {
    char *path = mnv_path_join(c->p->dst_dir, name);
    if (!path) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    mnv_status st = track(c, path);
    FILE *f = st ? NULL : fopen(path, "wb");
    if (!st && !f) st = mnv_set_error(MNV_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (f) {
        size_t n = strlen(text);
        bool ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
        ok &= fclose(f) == 0;
        if (!ok) st = mnv_set_error(MNV_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    free(path);
    return st;
}

static mnv_status write_json(conv *c, const char *name, const cJSON *j) {
    char *text = cJSON_Print(j);
    if (!text) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", name);
    mnv_status st = write_text(c, name, text);
    cJSON_free(text);
    return st;
}

/* Sort an object's keys (mlx-lm's save_config sorts the top level). */
static void sort_keys(cJSON *obj) {
    int n = cJSON_GetArraySize(obj);
    cJSON **items = malloc((size_t)(n ? n : 1) * sizeof *items);
    if (!items) return; /* unsorted is still correct */
    for (int i = 0; i < n; i++) items[i] = cJSON_DetachItemViaPointer(obj, obj->child);
    for (int i = 1; i < n; i++) /* insertion sort: configs hold a few dozen keys */
        for (int k = i; k > 0 && strcmp(items[k - 1]->string, items[k]->string) > 0; k--) {
            cJSON *t = items[k];
            items[k] = items[k - 1];
            items[k - 1] = t;
        }
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(obj, items[i]);
    free(items);
}

static cJSON *qparams_json(int32_t gs, int32_t bits, mnv_qmode mode) {
    cJSON *q = cJSON_CreateObject();
    if (q && (!cJSON_AddNumberToObject(q, "group_size", gs) || !cJSON_AddNumberToObject(q, "bits", bits) ||
              !cJSON_AddStringToObject(q, "mode", mnv_qmode_name(mode)))) {
        cJSON_Delete(q);
        return NULL;
    }
    return q;
}

static mnv_status edit_config(conv *c) {
    cJSON *root = c->config;
    if (c->p->dequantize) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization");
        cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
    } else if (c->foreign_mxfp4) { /* mlx-lm load_model: quant_method mxfp4 -> "quantization" */
        cJSON *q = qparams_json(32, 4, MNV_QMODE_MXFP4);
        if (!q) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        cJSON_AddItemToObject(root, "quantization", q);
    }
    cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization");
    if (c->qmode != MNV_QMODE_NONE && !q) {
        q = qparams_json(c->qgs, c->qbits, c->qmode);
        if (!q) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        cJSON_AddItemToObject(root, "quantization", q);
    }
    if (q && !cJSON_IsObject(q))
        return mnv_set_error(MNV_ERR_FORMAT, "%s/config.json: key 'quantization': expected an object", c->p->src_dir);
    while (q && c->entries->child) { /* move the per-layer entries over, replacing older ones */
        cJSON *e = cJSON_DetachItemViaPointer(c->entries, c->entries->child);
        cJSON_DeleteItemFromObjectCaseSensitive(q, e->string);
        cJSON_AddItemToArray(q, e);
    }
    if (q) { /* "support hf model tree": an identical copy */
        cJSON *copy = cJSON_Duplicate(q, 1);
        if (!copy) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
        cJSON_AddItemToObject(root, "quantization_config", copy);
    }
    sort_keys(root);
    return write_json(c, "config.json", root);
}

static mnv_status write_index(conv *c) {
    cJSON *idx = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(idx, "metadata");
    cJSON *map = cJSON_AddObjectToObject(idx, "weight_map");
    bool ok = meta && map && cJSON_AddNumberToObject(meta, "total_size", (double)c->total) &&
              cJSON_AddNumberToObject(meta, "total_parameters", (double)c->total_params);
    for (size_t i = 0; ok && i < c->n_outs; i++) { /* outputs are sorted by name */
        char *shard = shard_name(c->outs[i].shard, c->n_shards);
        ok = shard && cJSON_AddStringToObject(map, c->outs[i].name, shard);
        free(shard);
    }
    mnv_status st = ok ? write_json(c, "model.safetensors.index.json", idx) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    cJSON_Delete(idx);
    return st;
}

static mnv_status copy_file(conv *c, const char *name) {
    char *src = mnv_path_join(c->p->src_dir, name), *dst = mnv_path_join(c->p->dst_dir, name);
    mnv_status st = src && dst ? track(c, dst) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    FILE *in = st ? NULL : fopen(src, "rb"), *out = NULL;
    if (!st && !in) st = mnv_set_error(MNV_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    if (!st && !(out = fopen(dst, "wb"))) st = mnv_set_error(MNV_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    char buf[1 << 16];
    size_t n;
    while (!st && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) st = mnv_set_error(MNV_ERR_IO, "%s: write failed: %s", dst, strerror(errno));
    if (!st && ferror(in)) st = mnv_set_error(MNV_ERR_IO, "%s: read failed", src);
    if (in) fclose(in);
    if (out && fclose(out) != 0 && !st) st = mnv_set_error(MNV_ERR_IO, "%s: close failed: %s", dst, strerror(errno));
    free(src);
    free(dst);
    return st;
}

/* What tokenizer.save_pretrained writes plus generation_config.json (mlx-lm's save). */
static bool is_side_file(const char *n) {
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "generation_config.json", "tokenizer.model", "added_tokens.json",
                                        "vocab.json", "merges.txt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(n, names[i])) return true;
    return !strncmp(n, "chat_template", 13) && (ends_with(n, ".jinja") || ends_with(n, ".json"));
}

static mnv_status copy_side_files(conv *c) {
    DIR *d = opendir(c->p->src_dir);
    if (!d) return mnv_set_error(MNV_ERR_IO, "%s: cannot list: %s", c->p->src_dir, strerror(errno));
    mnv_status st = MNV_OK;
    struct dirent *e;
    while (!st && (e = readdir(d)) != NULL) {
        if (!is_side_file(e->d_name)) continue;
        char *path = mnv_path_join(c->p->src_dir, e->d_name);
        struct stat sb;
        bool regular = path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
        free(path);
        if (regular) st = copy_file(c, e->d_name);
    }
    closedir(d);
    return st;
}

/* ---- driver ------------------------------------------------------------------------------ */

/* dst_dir: created if missing; an existing one must be empty, so no stale
 * model*.safetensors (which mlx-lm would glob and load) can survive. */
static mnv_status prepare_dst(conv *c) { return mnv__outdir_open(&c->out, c->p->dst_dir, true); }

static mnv_status commit_shards(conv *c) {
    mnv_status st = MNV_OK;
    for (int32_t s = 0; s < c->n_shards && !st; s++) {
        char *name = shard_name(s, c->n_shards), *path = name ? mnv_path_join(c->p->dst_dir, name) : NULL;
        st = path ? track(c, path) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        if (!st) st = mnv_st_stream_commit(c->streams[s]);
        free(name);
        free(path);
    }
    return st;
}

static void conv_free(conv *c, bool failed) {
    for (int32_t s = 0; c->streams && s < c->n_shards; s++) mnv_st_stream_free(c->streams[s]);
    free(c->streams);
    mnv__outdir_close(&c->out, failed);
    for (size_t i = 0; i < c->n_views; i++) free(c->views[i].name);
    free(c->views);
    for (size_t i = 0; i < c->n_outs; i++) free(c->outs[i].name);
    free(c->outs);
    free(c->jobs);
    cJSON_Delete(c->entries);
    cJSON_Delete(c->config);
    mnv__source_close(&c->src);
    free(c->cfg);
}

mnv_status mnv_convert(const mnv_convert_params *params) {
    conv c;
    memset(&c, 0, sizeof c);
    mnv_status st = check_params(&c, params);
    if (st) return st;
    st = load_config(&c);
    if (!st) st = mnv__source_open(&c.src, params->src_dir);
    if (!st) st = build_views(&c);
    if (!st) st = build_plan(&c);
    if (!st) st = sort_outputs(&c);
    if (!st) {
        assign_shards(&c);
        st = prepare_dst(&c);
    }
    if (!st) st = open_shards(&c);
    if (!st) st = run_jobs(&c);
    if (!st) st = write_index(&c);
    if (!st) st = edit_config(&c);
    if (!st) st = copy_side_files(&c);
    if (!st) st = commit_shards(&c);
    conv_free(&c, st != MNV_OK);
    return st;
}
