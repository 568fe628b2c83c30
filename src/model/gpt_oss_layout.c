/* gpt-oss's checkpoints other than MLX's, mapped onto the MLX layout as
 * mlx-lm's gpt_oss sanitize does (ml-explore/mlx-lm d78bf58
 * mlx_lm/models/gpt_oss.py), and its quant_predicate:
 *
 *  - OpenAI's Hugging Face MXFP4 experts: mlp.experts.NAME_blocks U8
 *    (E, R, G, 16) are U32 (E, R, G*4) (the same bytes), _scales U8
 *    (E, R, G) are used as they are, _bias (E, R) is the bias; in
 *    gate_up_proj the rows (and bias columns) interleave gate (even) and up
 *    (odd), split into gate_proj / up_proj.
 *  - transformers' dense experts: W (E, in, out) used as x @ W, with gate/up
 *    interleaved in the columns of gate_up_proj: rows (E, out, in) are column
 *    views, de-interleaved into gate_proj / up_proj.
 *  - The routers are quantized to 8-bit affine in groups of 64 whatever the
 *    rest gets. */
#include <stdlib.h>

#include "model/layout.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool is_float(mnv_dtype t) {
    return t == MNV_DTYPE_F32 || t == MNV_DTYPE_F16 || t == MNV_DTYPE_BF16 || t == MNV_DTYPE_F64;
}

/* s with `from` (at its first occurrence) replaced by `to`; heap. */
static char *str_replace1(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    if (!at) return mnv_strdup(s);
    size_t a = (size_t)(at - s), nf = strlen(from), nt = strlen(to), rest = strlen(at + nf);
    char *r = malloc(a + nt + rest + 1);
    if (!r) return NULL;
    memcpy(r, s, a);
    memcpy(r + a, to, nt);
    memcpy(r + a + nt, at + nf, rest + 1);
    return r;
}

/* Already in the MLX layout when any expert is stored as gate_proj. */
static bool gptoss_foreign(const mnv_st_tensor *t, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strstr(t[i].name, "gate_proj.weight")) return false;
    return true;
}

static mnv_status add_dense_expert(const mnv_st_tensor *t, mnv_tensor_view *out, int32_t *n_out) {
    bool gate_up = strstr(t->name, "gate_up_proj") != NULL;
    int64_t E = t->shape[0], K = t->shape[1], cols = t->shape[2], N = gate_up ? cols / 2 : cols;
    size_t len = strlen(t->name);
    char *base = malloc(len + sizeof ".weight");
    if (!base) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    memcpy(base, t->name, len);
    memcpy(base + len, ".weight", sizeof ".weight");
    mnv_status st = MNV_OK;
    for (int32_t o = 0; o < (gate_up ? 2 : 1) && !st; o++) {
        char *name = gate_up ? str_replace1(base, "gate_up_proj", o ? "up_proj" : "gate_proj") : mnv_strdup(base);
        int64_t shape[3] = {E, N, K};
        mnv_tensor_view *v = &out[*n_out];
        st = mnv_tensor_view_init(v, t, name, t->dtype, 3, shape, 0, 0);
        if (!st) {
            (*n_out)++;
            v->col_mul = gate_up ? 2 : 1;
            v->col_off = o;
            v->src_k = K;
            v->src_cols = cols;
        }
    }
    free(base);
    return st;
}

static mnv_status add_mxfp4_expert(const mnv_st_tensor *t, const char *file, mnv_tensor_view *out, int32_t *n_out) {
    bool blocks = ends_with(t->name, "_blocks"), scales = ends_with(t->name, "_scales");
    bool bias = ends_with(t->name, "_bias"), gate_up = strstr(t->name, "gate_up_proj") != NULL;
    int64_t shape[MNV_ST_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    int32_t ndim = t->ndim;
    bool ok = (blocks && t->dtype == MNV_DTYPE_U8 && ndim == 4 && shape[3] == 16) ||
              (scales && t->dtype == MNV_DTYPE_U8 && ndim == 3) || (bias && ndim == 2);
    if (!ok || (gate_up && shape[ndim == 4 ? 1 : ndim - (bias ? 1 : 2)] % 2))
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: tensor '%s': %s %s [%d dims]: not the Hugging Face MXFP4 "
                             "expert layout that mlx-lm's gpt-oss sanitize reads", file, t->name,
                             blocks || scales || bias ? "unexpected" : "dense expert tensor",
                             mnv_dtype_name(t->dtype), (int)ndim);
    mnv_dtype dt = t->dtype;
    if (blocks) { /* [E, R, G, 16] U8 -> [E, R, G*4] U32 */
        shape[2] *= 4;
        ndim = 3;
        dt = MNV_DTYPE_U32;
    }
    const char *from = blocks ? "_blocks" : scales ? "_scales" : "_bias";
    const char *to = blocks ? ".weight" : scales ? ".scales" : ".bias";
    char *base = str_replace1(t->name, from, to);
    if (!base) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    mnv_status st = MNV_OK;
    if (!gate_up) {
        st = mnv_tensor_view_init(&out[*n_out], t, base, dt, ndim, shape, 1, 0);
        if (!st) (*n_out)++;
        return st;
    }
    int32_t split_axis = bias ? ndim - 1 : ndim - 2; /* bias: columns; blocks/scales: rows */
    shape[split_axis] /= 2;
    const char *part[2] = {"gate_proj", "up_proj"};
    for (int32_t o = 0; o < 2 && !st; o++) {
        char *name = str_replace1(base, "gate_up_proj", part[o]);
        mnv_tensor_view *v = &out[*n_out];
        if (bias) { /* one element per logical row: source element 2 * i + o */
            int64_t one[2] = {shape[0] * shape[1], 1};
            st = mnv_tensor_view_init(v, t, name, dt, 2, one, 2, o);
            if (!st) {
                v->ndim = ndim;
                memcpy(v->shape, shape, sizeof shape);
            }
        } else {
            st = mnv_tensor_view_init(v, t, name, dt, ndim, shape, 2, o);
        }
        if (!st) (*n_out)++;
    }
    free(base);
    return st;
}

static mnv_status gptoss_views(const mnv_st_tensor *t, const char *file, mnv_tensor_view *out, int32_t *n_out) {
    *n_out = 0;
    bool expert = strstr(t->name, ".experts.") && (strstr(t->name, "gate_up_proj") || strstr(t->name, "down_proj"));
    if (!expert) {
        mnv_status st = mnv_tensor_view_plain(out, t);
        if (!st) *n_out = 1;
        return st;
    }
    bool blocks = ends_with(t->name, "_blocks"), scales = ends_with(t->name, "_scales");
    bool bias = ends_with(t->name, "_bias"), gate_up = strstr(t->name, "gate_up_proj") != NULL;
    if (!blocks && !scales && !bias && t->ndim == 3 && is_float(t->dtype) && (!gate_up || t->shape[2] % 2 == 0))
        return add_dense_expert(t, out, n_out);
    return add_mxfp4_expert(t, file, out, n_out);
}

static bool gptoss_quant_override(const char *path, mnv_qformat *f) {
    if (!ends_with(path, "router")) return false;
    *f = (mnv_qformat){MNV_QMODE_AFFINE, 8, 64, MNV_DTYPE_U8};
    return true;
}

static const mnv_arch_layout gptoss_layout = {
    .name = "gpt-oss", .foreign = gptoss_foreign, .views = gptoss_views, .quant_override = gptoss_quant_override,
};

const mnv_arch_layout *mnv_layout_gpt_oss(void) { return &gptoss_layout; }
