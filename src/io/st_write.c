/* Whole-file safetensors writing on top of the streaming writer: the same
 * gap-free layout Hugging Face's reader requires (tensors by descending
 * element size, then name, back to back), written under a temporary name and
 * renamed when complete. */
#include "io/st_stream.h"

#include <stdlib.h>

mnv_status mnv_st_write(const char *path, const mnv_st_write_tensor *tensors, size_t n, const char *const *meta_kv,
                        size_t n_meta_pairs) {
    if (!path || (!tensors && n)) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_write: NULL argument");
    mnv_st_stream_tensor *t = calloc(n ? n : 1, sizeof *t);
    if (!t) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        t[i].name = tensors[i].name;
        t[i].dtype = tensors[i].dtype;
        t[i].ndim = tensors[i].ndim;
        memcpy(t[i].shape, tensors[i].shape, sizeof t[i].shape);
    }
    mnv_st_stream *s = NULL;
    mnv_status st = mnv_st_stream_create(path, t, n, meta_kv, n_meta_pairs, &s);
    free(t);
    for (size_t i = 0; i < n && st == MNV_OK; i++) {
        uint64_t bytes = mnv_st_stream_nbytes(s, i);
        if (bytes && !tensors[i].data)
            st = mnv_set_error(MNV_ERR_INVALID_ARG, "%s: tensor '%s' has no data", path, tensors[i].name);
        else if (bytes)
            st = mnv_st_stream_write(s, i, 0, tensors[i].data, (size_t)bytes);
    }
    if (st == MNV_OK) st = mnv_st_stream_finish(s);
    if (st == MNV_OK) st = mnv_st_stream_commit(s);
    mnv_st_stream_free(s);
    return st;
}
