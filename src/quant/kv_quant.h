/* KV cache rows as data: the layout of one head's K or V row for each cache
 * element type, shared by the code that writes the cache and every
 * attention kernel (CPU today; a GPU backend reads the same bytes).
 *
 * One head's row of D = head_dim elements:
 *   F32, F16, BF16: D elements, nothing else (row_bytes = D * 4 or D * 2).
 *   Q8: bytes [0, D)            q_i, unsigned 8-bit
 *       then ng = D / group     f16 scales (byte offset scales_at = D)
 *       then ng                 f16 biases (at scales_at + 2 ng)
 *   Q4: bytes [0, D / 2)        q_i, unsigned 4-bit: element i in byte i / 2,
 *                               low nibble for even i (so element i is bits
 *                               [4 (i % 8), 4 (i % 8) + 4) of the
 *                               little-endian 32-bit word i / 8)
 *       then the f16 scales and f16 biases as for Q8 (scales_at = D / 2).
 *   value_i = scale[i / group] * q_i + bias[i / group]
 * Rows are byte-aligned only (a Q4 row of D = 6 is 3 + 4 bytes): readers
 * load the f16 scales with unaligned loads. A row of the cache (one token)
 * is n_head_kv head rows one after the other. */
#ifndef MNV_KV_QUANT_H
#define MNV_KV_QUANT_H

#include "core/core.h"

typedef struct {
    int32_t type;      /* mnv_kv_type: MNV_KV_F32 .. MNV_KV_Q4 */
    int32_t head_dim;  /* D */
    int32_t group;     /* Q8/Q4: elements per scale/bias group (divides D); 0 otherwise */
    int32_t row_bytes; /* bytes of one head's row */
    int32_t scales_at; /* Q8/Q4: byte offset of the f16 scales in the row (biases follow); 0 otherwise */
} mnv_kv_layout;

/* The group size Q8/Q4 use for a head size: 32 when it divides head_dim,
 * else 16, else 8, else head_dim. */
int32_t mnv_kv_default_group(int32_t head_dim);

/* The block of the cache's Hadamard rotation for a head size: the largest
 * power of two dividing head_dim (the whole head when it is one). */
int32_t mnv_kv_rotation_block(int32_t head_dim);

/* The layout of (type, head_dim, group); group 0 picks the default. Fails
 * with MNV_ERR_INVALID_ARG (the message names the field) on an unknown type,
 * head_dim < 1, a group that does not divide head_dim, or an odd head_dim or
 * group for Q4. */
mnv_status mnv_kv_layout_make(mnv_kv_type type, int32_t head_dim, int32_t group, mnv_kv_layout *out);

/* The element type of a float KV type (F32, F16, BF16), MNV_DTYPE_U8 for Q8/Q4. */
mnv_dtype mnv_kv_storage_dtype(mnv_kv_type type);

/* Store one head's row x (D floats) in row: converted (round to nearest
 * even) or quantized: per group, bias = min (rounded to f16), scale =
 * (max - min) / (2^bits - 1) (rounded to f16), q = round((x - bias) / scale)
 * clamped to [0, 2^bits - 1]; a constant group gets scale 0. */
void mnv_kv_store_row(const mnv_kv_layout *l, const float *x, void *row);
/* Read one head's row back as D floats (the reference every kernel matches). */
void mnv_kv_load_row(const mnv_kv_layout *l, const void *row, float *y);

#endif
