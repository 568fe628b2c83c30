/* Safetensors reading (mmap, single or sharded) and writing.
 *
 * A tensor's data pointer points into the file mapping when the tensor is
 * aligned to its element size (zero copy); otherwise (MLX writes tensors at
 * unaligned offsets) the set holds an aligned heap copy. Every header field
 * is validated; errors name the file, the tensor and the problem. */
#ifndef MNV_SAFETENSORS_H
#define MNV_SAFETENSORS_H

#include "core/core.h"

#define MNV_ST_MAX_DIMS 8

typedef struct {
    char *name;
    mnv_dtype dtype;
    int32_t ndim;
    int64_t shape[MNV_ST_MAX_DIMS];
    uint64_t nbytes;
    const void *data;   /* aligned to the element size; valid until the set is closed */
    int32_t file_index; /* which shard */
} mnv_st_tensor;

typedef struct mnv_st_set mnv_st_set;

/* Open a model directory: model.safetensors.index.json (shards from its
 * weight_map) if present, else model.safetensors, else every
 * model*.safetensors file. Tensor names must be unique across shards. */
mnv_status mnv_st_open_dir(const char *dir, mnv_st_set **out);
/* Open one safetensors file. */
mnv_status mnv_st_open_file(const char *path, mnv_st_set **out);
void mnv_st_close(mnv_st_set *set);

size_t mnv_st_count(const mnv_st_set *set);
/* Tensors sorted by name. */
const mnv_st_tensor *mnv_st_get(const mnv_st_set *set, size_t i);
/* Binary search by name; NULL if absent. */
const mnv_st_tensor *mnv_st_find(const mnv_st_set *set, const char *name);
/* File name (not path) of shard i. */
const char *mnv_st_file_name(const mnv_st_set *set, int32_t i);
/* Number of shard files in the set. */
int32_t mnv_st_n_files(const mnv_st_set *set);
/* Bytes held in aligned heap copies of unaligned tensors (0 when every
 * tensor is read in place from the mapping). */
uint64_t mnv_st_copied_bytes(const mnv_st_set *set);

/* Parse and validate a header held in memory: `file` is the whole file's
 * bytes (size bytes), `fname` is used in messages. On success *out_tensors
 * is a heap array of *out_n tensors whose data pointers point into `file`
 * (possibly unaligned; no copy). Free with mnv_st_free_tensors. Used by the
 * loader and by the fuzz target. */
mnv_status mnv_st_parse(const uint8_t *file, size_t size, const char *fname,
                        mnv_st_tensor **out_tensors, size_t *out_n);
void mnv_st_free_tensors(mnv_st_tensor *t, size_t n);

/* Writing a whole file: tensors sorted by descending element size, then by
 * name, back to back with no gaps (what Hugging Face's reader requires), the
 * header padded with spaces so every tensor is aligned to its element size,
 * an optional {"format": "pt"}-style metadata map (may be NULL); written under
 * a temporary name and renamed when complete. */
typedef struct {
    const char *name;
    mnv_dtype dtype;
    int32_t ndim;
    int64_t shape[MNV_ST_MAX_DIMS];
    const void *data;   /* prod(shape) * dtype size bytes */
} mnv_st_write_tensor;

mnv_status mnv_st_write(const char *path, const mnv_st_write_tensor *tensors, size_t n,
                        const char *const *meta_kv, size_t n_meta_pairs);

#endif
