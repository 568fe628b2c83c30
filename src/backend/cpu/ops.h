/* CPU kernels other than matmul: pure functions over pointers and sizes.
 * Each works on a range of rows so that threads can split the work. */
#ifndef MNV_CPU_OPS_H
#define MNV_CPU_OPS_H

#include "core/core.h"
#include "quant/kv_quant.h"

/* Convert n elements between float dtypes (F32, F16, BF16). */
void mnv_cpu_convert(const void *src, mnv_dtype st, void *dst, mnv_dtype dt, int64_t n);
/* Read element i of a float array as f32. */
float mnv_cpu_load(const void *p, mnv_dtype t, int64_t i);

/* y = a + b / a * b over rows x n; b has one row (b_rows == 1) or rows rows. */
void mnv_cpu_add(const float *a, const void *b, mnv_dtype bt, int64_t b_row_stride, float *y, int64_t rows, int64_t n);
void mnv_cpu_mul(const float *a, const void *b, mnv_dtype bt, int64_t b_row_stride, float *y, int64_t rows, int64_t n);
void mnv_cpu_scale(const float *x, float s, float *y, int64_t n);
/* y = x / sqrt(mean(x^2) + eps) * w (w may be NULL) */
void mnv_cpu_rms_norm(const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps);
void mnv_cpu_softmax(const float *x, float *y, int64_t rows, int64_t n);
void mnv_cpu_silu(const float *x, float *y, int64_t n);
void mnv_cpu_gelu(const float *x, float *y, int64_t n);
void mnv_cpu_silu_mul(const float *g, const float *u, float *y, int64_t n);

typedef struct {
    int32_t n_head, head_dim, n_rot, traditional;
    float attn_factor;
    const float *inv_freq; /* n_rot / 2 */
} mnv_rope_args;
/* x, y: (rows, n_head, head_dim); pos: one position per row. */
void mnv_cpu_rope(const mnv_rope_args *a, const float *x, const int32_t *pos, float *y, int64_t rows);

/* y = x with each run of `block` elements (a power of two dividing n)
 * times the normalized Walsh-Hadamard matrix (a fast transform); rows x n. */
void mnv_cpu_hadamard(const float *x, float *y, int64_t rows, int64_t n, int32_t block);

/* y[r] = table[ids[r]] as f32 */
void mnv_cpu_get_rows(const void *table, mnv_dtype tt, int64_t row_stride, int64_t n, const int32_t *ids, float *y,
                      int64_t rows);

/* A paged cache (K or V): blocks of block_tokens rows of n_head_kv head
 * rows of layout lay (quant/kv_quant.h), block_stride bytes apart; the rows
 * of a block are n_head_kv * lay.row_bytes bytes apart. */
typedef struct {
    mnv_kv_layout lay;
    int64_t n_head_kv;
    int64_t block_tokens;   /* B */
    int64_t block_stride;   /* bytes from one block to the next */
} mnv_cache_shape;
/* rows (T, Hkv, D) f32 into cache at slot[t] = block * B + row, t in [t0,
 * t1): converted or quantized to the cache's layout. */
void mnv_cpu_cache_write(const mnv_cache_shape *c, void *cache, const float *rows, const int32_t *slot, int64_t t0,
                         int64_t t1);

typedef struct mnv_attn_args {
    mnv_cache_shape kc, vc;   /* same n_head_kv, block_tokens and head_dim */
    int32_t n_head;
    float scale;
    int32_t window;        /* 0: full causal */
    const float *sinks;    /* NULL or n_head logits */
    const void *k, *v;     /* caches */
    const int32_t *tables; /* (S, table_stride) block ids; NULL: the block is the sequence */
    int64_t table_stride;
    const float *q;        /* (T, H, D) */
    const int32_t *seq, *pos;
    int64_t n_tokens;      /* T */
    float *out;            /* (T, H, D) */
    /* Splitting a key range across threads (mnv_cpu_attention): scratch of
     * mnv_cpu_attention_scratch_size bytes and a barrier among the nth
     * threads; without them (NULL) nothing is split. */
    void *scratch;
    void (*barrier)(void *ctx);
    void *barrier_ctx;
    int32_t row_invariant; /* never split: a row's result must not depend on the batch or the threads */
    int32_t split_keys;    /* least keys per split part (0: the default, 512); tests set it small */
} mnv_attn_args;

/* Byte offsets in a's K and V caches of the rows of positions [p0, p0 + n)
 * of sequence s (KV head 0): one division, then steps. */
static inline void mnv_attn_rows(const mnv_attn_args *a, int64_t s, int64_t p0, int n, size_t *koff, size_t *voff) {
    const int64_t B = a->kc.block_tokens;
    const size_t krow = (size_t)(a->kc.n_head_kv * a->kc.lay.row_bytes);
    const size_t vrow = (size_t)(a->vc.n_head_kv * a->vc.lay.row_bytes);
    const int32_t *tab = a->tables ? a->tables + s * a->table_stride : NULL;
    int64_t lb = p0 / B, r = p0 % B, blk = tab ? tab[lb] : s;
    for (int j = 0; j < n; j++) {
        koff[j] = (size_t)blk * (size_t)a->kc.block_stride + (size_t)r * krow;
        voff[j] = (size_t)blk * (size_t)a->vc.block_stride + (size_t)r * vrow;
        if (++r == B && j + 1 < n) {
            r = 0;
            lb++;
            blk = tab ? tab[lb] : s;
        }
    }
}

/* Attention of the T tokens (each over keys [max(0, pos - window + 1), pos]
 * of its sequence), run by thread ith of nth (every thread calls it; all
 * meet at a->barrier when the key ranges are split). Tokens of one sequence
 * at consecutive positions are served in tiles of up to MNV_ATTN_ROWS rows
 * (query token, query head of one KV head's group); when there are fewer
 * tiles than threads, each tile's key range is split into parts whose
 * partial results are merged after the barrier. */
void mnv_cpu_attention(const mnv_attn_args *a, int ith, int nth);
/* Bytes of scratch a run of a (its T, heads and head_dim) on nth threads may need. */
size_t mnv_cpu_attention_scratch_size(int64_t n_tokens, int64_t n_head_kv, int64_t n_head, int64_t head_dim, int nth);

/* A tile: n rows of one sequence and KV head, over keys [k0, k1). Row r is
 * a query token and head: its query q[r], and the keys it sees [lo[r],
 * hi[r]] (clipped to [k0, k1)); the positions of the union of the rows'
 * ranges are all readable in the cache, others may not be. Keys are taken in
 * blocks at multiples of the kernel's block size from k0 (a multiple of
 * MNV_ATTN_ALIGN), the same blocks for a row whatever the other rows, so a
 * row's result does not depend on the tile it is in. A kernel starts each
 * row from (m[r], l[r]) (a sink's logit and 1, or -inf and 0) and an output
 * of zeros, and leaves the running max in m[r], the denominator in l[r] and
 * the unnormalized output (head_dim floats) in acc[r]. */
enum { MNV_ATTN_ROWS = 16, MNV_ATTN_ALIGN = 16 };
typedef struct mnv_attn_tile {
    int32_t n;
    int64_t seq, kvh, k0, k1;
    const float *q[MNV_ATTN_ROWS];
    int64_t lo[MNV_ATTN_ROWS], hi[MNV_ATTN_ROWS];
    float m[MNV_ATTN_ROWS], l[MNV_ATTN_ROWS];
    float *acc[MNV_ATTN_ROWS];
} mnv_attn_tile;
/* The portable tile kernel (every layout and head_dim): the reference form. */
void mnv__attn_tile_scalar(const mnv_attn_args *a, mnv_attn_tile *t);
/* The AVX-512 kernel for f32 K and V (false: not applicable, nothing written). */
bool mnv__attn_tile_avx512(const mnv_attn_args *a, mnv_attn_tile *t);
/* The AVX2 kernel for every pair of K and V types, head_dim <= 256 (a
 * multiple of 8 and of a group of 8 or more with a quantized type) (false:
 * not applicable, nothing written). */
bool mnv__attn_tile_avx2(const mnv_attn_args *a, mnv_attn_tile *t);

#endif

/* ---- mixture of experts ---- */
/* ids[r, 0..k) = indices of the k largest of x[r, 0..n) (ties: lower index). */
void mnv_cpu_topk(const float *x, int64_t n, int32_t k, int32_t *ids, int64_t rows);
/* w[r, j] = softmax_j(x[r, ids[r, j]]) */
void mnv_cpu_gather_softmax(const float *x, int64_t n, const int32_t *ids, int32_t k, float *w, int64_t rows);
/* gpt-oss SwiGLU: g = min(gate, limit), u = clamp(up, -limit, limit), g*sigmoid(alpha g)*(u+1) */
void mnv_cpu_swiglu_oai(const float *gate, const float *up, float *y, int64_t n, float alpha, float limit);
/* y[r] = sum_j w[r, j] x[r, j] over rows r: x (rows, k, n), w (rows, k) */
void mnv_cpu_moe_sum(const float *x, const float *w, int32_t k, int64_t n, float *y, int64_t rows);
