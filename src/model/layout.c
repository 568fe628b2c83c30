/* The layout table by architecture, and plain tensor views (layout.h). */
#include "model/layout.h"

const mnv_arch_layout *mnv_arch_layout_for(mnv_arch a) {
    switch (a) {
    case MNV_ARCH_GPT_OSS: return mnv_layout_gpt_oss();
    default: return NULL;
    }
}

mnv_status mnv_tensor_view_init(mnv_tensor_view *v, const mnv_st_tensor *t, char *name, mnv_dtype dtype, int32_t ndim,
                                const int64_t *shape, int32_t row_mul, int32_t row_off) {
    if (!name) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    memset(v, 0, sizeof *v);
    v->name = name;
    v->src = t;
    v->dtype = dtype;
    v->ndim = ndim;
    v->rows = 1;
    for (int32_t d = 0; d < ndim; d++) {
        v->shape[d] = shape[d];
        if (d < ndim - 1) v->rows *= shape[d];
    }
    v->row_elems = ndim ? shape[ndim - 1] : 1;
    v->row_mul = row_mul;
    v->row_off = row_off;
    return MNV_OK;
}

mnv_status mnv_tensor_view_plain(mnv_tensor_view *v, const mnv_st_tensor *t) {
    return mnv_tensor_view_init(v, t, mnv_strdup(t->name), t->dtype, t->ndim, t->shape, 1, 0);
}
