/* Streaming safetensors writer: the header is written first (every shape
 * and dtype is known in advance), then tensor data arrives in pieces, in
 * any order, so a converter never holds more than a few rows in memory.
 *
 * Layout (what Hugging Face's Rust reader accepts and what its writer
 * produces): tensors sorted by descending element size, then by name,
 * stored back to back with no gaps (the reader requires the offsets to tile
 * the buffer exactly), and the JSON header padded with spaces so that
 * 8 + header length is a multiple of 8; every tensor then starts at a file
 * offset aligned to its element size.
 *
 * The file is written under a temporary name in the same directory and only
 * renamed onto its path by mnv_st_stream_commit, so a failed conversion
 * never leaves a truncated model*.safetensors behind. */
#ifndef MNV_ST_STREAM_H
#define MNV_ST_STREAM_H

#include "io/safetensors.h"

typedef struct {
    const char *name;                /* borrowed for the duration of mnv_st_stream_create */
    mnv_dtype dtype;
    int32_t ndim;
    int64_t shape[MNV_ST_MAX_DIMS];
} mnv_st_stream_tensor;

typedef struct mnv_st_stream mnv_st_stream;

/* Lay out n tensors, create the temporary file and write the header, with an
 * optional metadata map (meta_kv: n_meta key/value pairs, e.g. {"format",
 * "mlx"}). Names must be unique and not "__metadata__". */
mnv_status mnv_st_stream_create(const char *path, const mnv_st_stream_tensor *t, size_t n,
                                const char *const *meta_kv, size_t n_meta, mnv_st_stream **out);
/* Size in bytes of tensor i (the caller's index) and of all tensor data. */
uint64_t mnv_st_stream_nbytes(const mnv_st_stream *s, size_t i);
uint64_t mnv_st_stream_total_bytes(const mnv_st_stream *s);
/* Write bytes [off, off + len) of tensor i. Pieces may come in any order but
 * must not overlap; writing past the tensor's end is an error. */
mnv_status mnv_st_stream_write(mnv_st_stream *s, size_t i, uint64_t off, const void *data, size_t len);
/* Check that every tensor was written completely, flush, fsync and close.
 * The data stays under the temporary name. */
mnv_status mnv_st_stream_finish(mnv_st_stream *s);
/* Rename the finished file onto its path. */
mnv_status mnv_st_stream_commit(mnv_st_stream *s);
/* Close and free; removes the temporary file unless committed. NULL is a no-op. */
void mnv_st_stream_free(mnv_st_stream *s);

#endif
