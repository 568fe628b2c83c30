/* The checkpoint a conversion reads: its safetensors shards mapped and
 * parsed in place, every tensor listed once, sorted by name. */
#ifndef MNV_CONVERT_SOURCE_H
#define MNV_CONVERT_SOURCE_H

#include "io/mmap.h"
#include "io/safetensors.h"

typedef struct {
    const char *dir;        /* borrowed */
    mnv_mmap *maps;         /* (n_files) the shards, mapped */
    char **file_names;      /* (n_files) */
    int32_t n_files;
    mnv_st_tensor *tensors; /* (n_tensors) sorted by name; data may be unaligned (read with memcpy) */
    size_t n_tensors;
} mnv__source;

/* Map the shards of dir: the index's weight_map, else model.safetensors,
 * else model*.safetensors. MNV_ERR_FORMAT for a bad shard name or a tensor
 * in two shards; MNV_ERR_IO when there is no shard. Call
 * mnv__source_close on success and failure alike. */
mnv_status mnv__source_open(mnv__source *s, const char *dir);
void mnv__source_close(mnv__source *s);
/* Drop the pages of a tensor that has been read from the process (they
 * are read from the file again if needed), keeping the resident set flat
 * on big models. */
void mnv__source_release(const mnv_st_tensor *t);

#endif
