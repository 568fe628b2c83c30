/* How an architecture's tensors are laid out in checkpoints other than
 * MLX's, and how each such tensor maps onto the tensors of the MLX layout
 * (what mlx-lm's per-model sanitize does), as views of the source bytes:
 * nothing is copied until a reader walks the view's rows. Conversion
 * (src/convert) asks the architecture through this interface and knows no
 * architecture's tensor names itself.
 *
 *   layout.c          the table by architecture; plain (identity) views
 *   gpt_oss_layout.c  gpt-oss: OpenAI's MXFP4 blocks and scales, transformers'
 *                     dense experts; gate/up de-interleaved; its routers'
 *                     quantization
 */
#ifndef MNV_MODEL_LAYOUT_H
#define MNV_MODEL_LAYOUT_H

#include "io/config.h"
#include "io/safetensors.h"

/* A tensor of the MLX layout as a view of one source tensor. Its data are
 * `rows` logical rows of `row_elems` elements of dtype; logical row r is
 * stored as row r * row_mul + row_off of the source read as rows of
 * row_elems elements. A column view (col_mul > 0) reads a source W
 * (E, src_k, src_cols) used as x @ W: logical (E, N, K) element (e, n, k)
 * is source element ((e * src_k + k) * src_cols + n * col_mul + col_off). */
typedef struct {
    char *name;                /* heap: the tensor's MLX name */
    const mnv_st_tensor *src;  /* borrowed */
    mnv_dtype dtype;           /* logical (U32 for MXFP4 blocks read as words) */
    int32_t ndim;
    int64_t shape[MNV_ST_MAX_DIMS];
    int64_t rows, row_elems;
    int32_t row_mul, row_off;
    int32_t col_mul, col_off;  /* col_mul 0: not a column view */
    int64_t src_k, src_cols;
} mnv_tensor_view;

/* The most views one source tensor becomes (a gate/up pair). */
#define MNV_LAYOUT_MAX_VIEWS 2

typedef struct {
    const char *name; /* in messages: "gpt-oss" */
    /* Whether a checkpoint's tensors (n of them, sorted by name) are in a
     * layout other than MLX's and need rewriting. */
    bool (*foreign)(const mnv_st_tensor *t, size_t n);
    /* The MLX views of source tensor t of a foreign checkpoint, written to
     * out[0 .. *n_out) (at most MNV_LAYOUT_MAX_VIEWS); a tensor the layout
     * does not rewrite becomes its plain view. *n_out counts the views
     * written even on failure (their names are the caller's to free).
     * `file` names t's file in messages (MNV_ERR_UNSUPPORTED for a tensor
     * in no layout this architecture knows). */
    mnv_status (*views)(const mnv_st_tensor *t, const char *file, mnv_tensor_view *out, int32_t *n_out);
    /* mlx-lm's quant_predicate: true, with *f set (mode, bits, group
     * size), when the module at `path` is quantized in its own format
     * whatever format is asked for. NULL: no module is. */
    bool (*quant_override)(const char *path, mnv_qformat *f);
} mnv_arch_layout;

/* The layout knowledge of an architecture; NULL when it has none (its
 * checkpoints use the MLX tensors as they are). */
const mnv_arch_layout *mnv_arch_layout_for(mnv_arch a);
const mnv_arch_layout *mnv_layout_gpt_oss(void);

/* Fill *v as a view of t named `name` (heap, owned by *v; NULL gives
 * MNV_ERR_NOMEM) with logical dtype and shape: rows are the product of all
 * dimensions but the last, read at source row r * row_mul + row_off. */
mnv_status mnv_tensor_view_init(mnv_tensor_view *v, const mnv_st_tensor *t, char *name, mnv_dtype dtype, int32_t ndim,
                                const int64_t *shape, int32_t row_mul, int32_t row_off);
/* The view of t as it is stored, under its own name. */
mnv_status mnv_tensor_view_plain(mnv_tensor_view *v, const mnv_st_tensor *t);

#endif
