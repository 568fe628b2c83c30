/* The CUDA kernels' launch arguments and launchers, shared by the C adapter
 * (cuda_backend.c) and the CUDA files that implement them. Every launcher
 * enqueues its work on `stream` and returns at once; pointers are device
 * addresses; dtypes are mnv_dtype values (F32, F16, BF16 for floats). A
 * launcher returns cudaSuccess or the launch's error. */
#ifndef MNV_CUDA_KERNELS_H
#define MNV_CUDA_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Programmatic dependent launch of every kernel (cuda_common.cuh's
 * cu_launch): 0 off, 1 on; for devices of sm_90 and later (the backend
 * turns it on there unless MNV_CUDA_PDL=0). */
void mnv__cu_set_pdl(int on);
int mnv__cu_pdl_built(void); /* the kernels' code has the entry's wait (sm_90 or later) */

/* dtype codes as in core.h (kept in step by a static assert in the adapter) */
enum { MNV_CU_F32 = 0, MNV_CU_F16 = 1, MNV_CU_BF16 = 2 };

/* y (contiguous, shape) = x (strided) converted from xt to yt. */
typedef struct {
    const void *x;
    void *y;
    int32_t xt, yt, ndim;
    int64_t shape[4];
    int64_t xstride[4]; /* elements */
} mnv_cu_copy_args;
cudaError_t mnv_cu_copy(const mnv_cu_copy_args *a, cudaStream_t s);

/* Elementwise ops over rows x n. ADD/MUL: b of dtype bt, row stride bs (0:
 * one row broadcast); SILU_MUL and SWIGLU_OAI: b f32 of the same shape. */
enum { MNV_CU_ADD, MNV_CU_MUL, MNV_CU_SILU_MUL, MNV_CU_SWIGLU, MNV_CU_SCALE, MNV_CU_SILU, MNV_CU_GELU };
typedef struct {
    int32_t op;
    const float *a;
    const void *b;
    int32_t bt;
    int64_t bs, rows, n;
    float f0, f1; /* scale; swiglu alpha and limit */
    float *y;
} mnv_cu_elem_args;
cudaError_t mnv_cu_elem(const mnv_cu_elem_args *a, cudaStream_t s);

/* Row ops: softmax, or rms_norm (w NULL or n f32). */
cudaError_t mnv_cu_softmax(const float *x, float *y, int64_t rows, int64_t n, cudaStream_t s);
cudaError_t mnv_cu_rms_norm(const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps,
                            cudaStream_t s);

typedef struct {
    const float *x;
    const int32_t *pos;
    const float *inv_freq; /* n_rot / 2 */
    float *y;
    int64_t rows;          /* T */
    int32_t n_head, head_dim, n_rot, traditional;
    float attn_factor;
} mnv_cu_rope_args;
cudaError_t mnv_cu_rope(const mnv_cu_rope_args *a, cudaStream_t s);

/* y = x (rows x n) with each run of `block` elements (a power of two
 * dividing n) times the normalized Walsh-Hadamard matrix. */
cudaError_t mnv_cu_hadamard(const float *x, float *y, int64_t rows, int64_t n, int32_t block, cudaStream_t s);

/* y[r] = table[ids[r]] (rows n long, row_stride elements apart) as f32. */
cudaError_t mnv_cu_get_rows(const void *table, int32_t tt, int64_t row_stride, int64_t n, const int32_t *ids,
                            float *y, int64_t rows, cudaStream_t s);

/* A paged cache as in cpu/ops.h: blocks block_stride bytes apart, of
 * block_tokens token rows of n_head_kv head rows of row_bytes each, in the
 * layout of quant/kv_quant.h: kv is its mnv_kv_type (F32, F16, BF16 rows of
 * the float dtype; Q8 and Q4 rows of codes, then group f16 scales at byte
 * scales_at, then the f16 biases). */
typedef struct {
    int64_t n_head_kv, head_dim, block_tokens, block_stride;
    int32_t dtype, kv, group, row_bytes, scales_at;
} mnv_cu_cache;
enum { MNV_CU_KV_Q8 = 4, MNV_CU_KV_Q4 = 5 }; /* mnv_kv_type values */
cudaError_t mnv_cu_cache_write(const mnv_cu_cache *c, void *cache, const float *rows, const int32_t *slot,
                               int64_t T, cudaStream_t s);

/* q's RoPE (to q.y), k's RoPE written to its cache (k.y unused) and v
 * (T, n_head_kv, head_dim) written to its cache, at slot[t]: one launch
 * doing what ROPE, ROPE, CACHE_WRITE, CACHE_WRITE do. */
typedef struct {
    mnv_cu_rope_args q, k;
    mnv_cu_cache kc, vc;
    void *kcache, *vcache;
    const float *v;
    const int32_t *slot;
    int64_t T;
} mnv_cu_rope_write_args;
cudaError_t mnv_cu_rope_write(const mnv_cu_rope_write_args *a, cudaStream_t s);

typedef struct {
    mnv_cu_cache kc, vc; /* K and V: float caches, each of its own dtype and block stride */
    int32_t n_head;
    float scale;
    int32_t window;
    const float *sinks;    /* NULL or n_head */
    const void *k, *v;
    const int32_t *tables; /* NULL: block = sequence */
    int64_t table_stride;
    const float *q;        /* (T, H, D) */
    const int32_t *seq, *pos;
    float *out;            /* (T, H, D) */
    int64_t T;
    int64_t mma_min_rows;  /* queries from which tensor cores take the step (0: never) */
    int32_t *count;        /* NULL, or MNV_CU_ATTN_COUNT zeroed ints, which every launch leaves zeroed */
} mnv_cu_attn_args;
/* Blocks of (query, head group) up to which a split step merges its
 * chunks in its own last block (given count), where more take a second
 * kernel */
#define MNV_CU_ATTN_COUNT 16384
/* Blocks of (query, head group) a step keeps at least when a block takes a
 * KV group's heads together; fewer take a head a block. Taking them always
 * lost where few queries leave few blocks (an H100, gpt-oss-20b, groups of
 * 8: batch 1 after a 2048-token prompt 32 -> 87 us a layer); with this
 * threshold 32 decoding sequences +6.5%, 64 +8%, 128 +12%; 16 at a short
 * context take a head a block (bench/NOTES.md). */
#define MNV_CU_ATTN_GROUP_BLOCKS 512
/* head_dim <= 256; K and V share the tables and the block size
 * (block_tokens, positions within int32), else cudaErrorInvalidValue.
 * Decode-sized steps split each query's keys over many
 * blocks when mnv_cu_attention_scratch bytes of scratch are given (same
 * results either way); scratch NULL runs each query in one block. */
#define MNV_CU_ATTN_SPLIT_MAX ((size_t)64 << 20)
size_t mnv_cu_attention_scratch(const mnv_cu_attn_args *a);
cudaError_t mnv_cu_attention(const mnv_cu_attn_args *a, void *scratch, size_t scratch_size, cudaStream_t s);
/* From mma_min_rows queries on, head sizes 64 and 128 run on tensor cores
 * (cuda_attn_mma.cu): operands split into two bf16 terms (within about
 * 2^-16 of f32), sums in another order than the per-query kernels (not
 * row-invariant). */
#define MNV_CU_ATTN_MMA_MIN 64
/* ... and as many queries a sequence on average (tables' rows), at least */
#define MNV_CU_ATTN_MMA_PER_SEQ 8
int mnv__cu_attention_mma_fits(const mnv_cu_attn_args *a);
cudaError_t mnv__cu_attention_mma(const mnv_cu_attn_args *a, cudaStream_t s);

/* A weight matrix as the product kernels read it: float rows (mode 0) or
 * MLX packed rows with scales (and affine biases). Row r of expert e starts
 * at w + e * we + r * ldw elements (U32 words when quantized); its scales at
 * scales + e * se + r * lds elements. */
typedef struct {
    const void *w;
    int32_t wtype;      /* float weights: dtype */
    int64_t ldw, we;
    const void *scales, *biases;
    int64_t lds, se;
    int32_t mode, bits, group_size, scale_type; /* mnv_qmode; scale_type: dtype of affine scales */
    float global_scale;
} mnv_cu_weight;

/* y (m, n) (row stride ldy) = x (m, k) (row stride ldx) times W's rows^T,
 * then (fused epilogue, when bias or res is set) y = res + (y + bias):
 * bias n values of dtype bias_type, res (m, n) f32 with row stride ldr. */
typedef struct {
    const float *x;
    int64_t ldx;
    mnv_cu_weight w;
    float *y;
    int64_t ldy, m, n, k;
    const void *bias;
    int32_t bias_type;
    const float *res;
    int64_t ldr;
    int32_t x_i8; /* 1: 8-bit affine weights round x to int8, one scale per group (the CPU's default
                     numerics: cuda_mmv_i8.cu up to MNV_CU_I8_MAX_M rows, then cuda_mm_i8.cu where
                     mm_i8 is set); 0: f32 activations */
    int32_t mm_i8;      /* 1 (with x_i8): from MNV_CU_MM_I8_MIN_M rows, the tiled int8 kernel (cuda_mm_i8.cu) */
    void *scratch;      /* device memory that kernel rounds x into (mnv__cu_mm_i8_scratch bytes) */
    size_t scratch_size;
} mnv_cu_matmul_args;
/* From 2 to 8 rows the int8 tensor cores take them (8 decoding sequences:
 * 874 -> 996 tok/s on an H100); one row takes a kernel of its own
 * (mnv__cu_mmv1_i8: tiles of 16 weight rows a block, x rounded once a block). */
#define MNV_CU_I8_MIN_M 2
#define MNV_CU_I8_MAX_M 8
int mnv__cu_mmv_i8_fits(const mnv_cu_matmul_args *a, int n);
cudaError_t mnv__cu_mmv_i8(const mnv_cu_matmul_args *a, int n, cudaStream_t s);
/* From 9 rows (batched decode, prefill) a tiled kernel on the int8 tensor
 * cores: x rounded once into scratch, tiles of 64 weight rows by up to 64
 * rows of x, the weights read once per tile of x rows (cuda_mm_i8.cu). */
#define MNV_CU_MM_I8_MIN_M 9
int mnv__cu_mm_i8_fits(const mnv_cu_matmul_args *a, int n);
size_t mnv__cu_mm_i8_scratch(const mnv_cu_matmul_args *a);
/* fits, and a[0].scratch holds mnv__cu_mm_i8_scratch bytes (else the chunked kernels take it) */
int mnv__cu_mm_i8_ready(const mnv_cu_matmul_args *a, int n);
cudaError_t mnv__cu_mm_i8(const mnv_cu_matmul_args *a, int n, cudaStream_t s);
int mnv__cu_mmv1_i8_fits(const mnv_cu_matmul_args *a, int n);
cudaError_t mnv__cu_mmv1_i8(const mnv_cu_matmul_args *a, int n, cudaStream_t s);
cudaError_t mnv_cu_matmul(const mnv_cu_matmul_args *a, cudaStream_t s);
/* Whether the product of x (row stride ldx, at x) with w reads w in 16-byte
 * chunks (the fast path of few rows): only then are its epilogue and the
 * experts' gate/up pairing (mnv_cu_moe_args.dual) available. */
int mnv_cu_mmv_fast(const mnv_cu_weight *w, int64_t k, const float *x, int64_t ldx);
/* n (1 to 3) products of one x (same x, m, k; weights of one layout, each
 * mnv_cu_mmv_fast) in one launch, each with its own output and epilogue. */
cudaError_t mnv_cu_matmul_shared(const mnv_cu_matmul_args *a, int n, cudaStream_t s);

/* Dequantize (or widen, for float W) rows ids[0..rows) of W (k each) to y
 * (rows, k); ids NULL: rows r0, r0 + 1, ... */
cudaError_t mnv_cu_qget_rows(const mnv_cu_weight *w, int64_t k, const int32_t *ids, int64_t r0, float *y,
                             int64_t rows, cudaStream_t s);
/* Rows r0 .. r0 + rows of W dequantized (widened) to two bf16 terms each,
 * hi = the value rounded, lo = the rest rounded (each (rows, k)). */
cudaError_t mnv_cu_qget_rows_split(const mnv_cu_weight *w, int64_t k, int64_t r0, void *hi, void *lo, int64_t rows,
                                   cudaStream_t s);

/* x (m, k), row stride ldx, as hi + lo in dtype t (BF16; each (m, k)
 * contiguous): hi = x rounded, lo = the rest rounded, so that a product of
 * bf16 weights with hi and with lo, summed in f32, is within 2^-16 of the
 * product with x. */
cudaError_t mnv_cu_split(const float *x, int64_t ldx, int64_t m, int64_t k, int32_t t, void *hi, void *lo,
                         cudaStream_t s);

/* y[t, j] = x_t W_{ids[t, j]}^T + bias[ids[t, j]]; x (T, K) or (T, kk, K)
 * (per_slot); bias (E, N) with strides bs0, bs1 or NULL. With dual (only
 * where mnv_cu_mmv_fast holds for both weights, of one format):
 * y = swiglu(that, x_t W2^T + bias2) with alpha and limit as the
 * SWIGLU_OAI op, W the gate and W2 the up projection. */
typedef struct {
    const float *x;
    int32_t per_slot;
    mnv_cu_weight w;
    const int32_t *ids;
    const float *bias;
    int64_t bs0, bs1;
    float *y;
    int64_t T, kk, n, k, E;
    int32_t dual;
    mnv_cu_weight w2;
    const float *bias2;
    int64_t b2s0, b2s1;
    float alpha, limit;
    int64_t mma_min_rows; /* (token, slot) rows from which tensor cores take the product (0: never) */
    int32_t mma_tile;     /* rows of an expert's tile there: 16 or 64; 0: 64; -1: 16 when the experts get
                             fewer than 32 rows each */
    int64_t gmma_min_rows; /* rows from which (below mma_min_rows) mxfp4 experts run grouped, a tile of up to 8
                              rows of an expert on tensor cores (0: never) */
    int32_t x_i8;          /* 1: those two decode paths round x to int8, one scale per group of 32 (the CPU's
                              default numerics, cpu/qmatmul.h); 0: x as two bf16 terms (f32 within 2^-16) */
} mnv_cu_moe_args;
/* From MNV_CU_MOE_GROUP_MIN (token, slot) rows on, the rows are grouped by
 * expert on the device (each expert's rows read once per 8 of its rows);
 * from mma_min_rows on, mxfp4 and bf16 experts (whose values bf16 holds
 * exactly) run on tensor cores, in tiles of 64 rows of an expert, x split
 * as hi + lo bf16 terms (results within 2^-16 of f32 activations, summed
 * in another order than the chunked kernels: not row-invariant). Either
 * needs mnv_cu_moe_scratch bytes of scratch (0 when neither applies). */
#define MNV_CU_MOE_GROUP_MIN 32
/* Measured on the H100 (gpt-oss-20b shapes, bench/NOTES.md): below 32
 * rows a slot a block wins (16 rows: 472 against 420 tok/s grouped); the
 * grouped decode kernel beats the chunked one from 32 rows (8 sequences:
 * 189 -> 555 tok/s) and the tile kernel up to 256 rows; from 512 rows the
 * tile kernel wins. */
#define MNV_CU_MOE_MMA_MIN 512
#define MNV_CU_MOE_GMMA_MIN 32
/* With x_i8 the grouped kernel keeps the rows up to 2,047 (an H100,
 * gpt-oss-20b: 128 decoding sequences 2,113 -> 2,689 tok/s, 256: 2,820 ->
 * 3,112, a 128-token prefill 2,479 -> 3,640; from 512 tokens the tile
 * kernel wins: 7,445 against 6,685). */
#define MNV_CU_MOE_MMA_MIN_I8 2048
/* From 256 rows (below mma_min_rows) the grouped int8 rows go to the tile
 * kernel (cuda_moe_i8.cu) in tiles of 16 (an H100, gpt-oss-20b: 64
 * decoding sequences 4,382 -> 4,542 tok/s, 128: 4,912 -> 5,558; at 48, 192
 * rows, the grouped kernel still wins, 3,877 against 3,679). */
#define MNV_CU_MOE_TILE_MIN_I8 256
size_t mnv_cu_moe_scratch(const mnv_cu_moe_args *a);
cudaError_t mnv_cu_moe_matmul(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s);
/* The tensor-core path (cuda_moe_mma.cu): whether it takes a, its scratch. */
int mnv__cu_moe_mma_fits(const mnv_cu_moe_args *a);
size_t mnv__cu_moe_mma_scratch(const mnv_cu_moe_args *a);
cudaError_t mnv__cu_moe_mma(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s);
/* Below gmma_min_rows rows (MNV_CU_MOE_GROUP_MIN when that is 0) and
 * mma_min_rows (when set), mxfp4 experts run on tensor cores one (token,
 * slot) a block (cuda_moe_mma.cu). */
int mnv__cu_moe_dmma_fits(const mnv_cu_moe_args *a);
/* From gmma_min_rows rows (below mma_min_rows), mxfp4 experts run grouped
 * by expert on tensor cores, a tile of up to 8 rows a block row
 * (cuda_moe_mma.cu); scratch mnv__cu_moe_gmma_scratch bytes. */
int mnv__cu_moe_gmma_fits(const mnv_cu_moe_args *a);
size_t mnv__cu_moe_gmma_scratch(const mnv_cu_moe_args *a);
cudaError_t mnv__cu_moe_gmma(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s);
cudaError_t mnv__cu_moe_dmma(const mnv_cu_moe_args *a, cudaStream_t s);
/* The same two paths with x_i8 (cuda_moe_i8.cu): int8 codes of x times the
 * weights' codes doubled (integers in [-12, 12]) on the int8 tensor cores,
 * each group's exact integer sum times its two scales. */
int mnv__cu_moe_dmma_i8_fits(const mnv_cu_moe_args *a);
cudaError_t mnv__cu_moe_dmma_i8(const mnv_cu_moe_args *a, cudaStream_t s);
int mnv__cu_moe_gmma_i8_fits(const mnv_cu_moe_args *a);
size_t mnv__cu_moe_gmma_i8_scratch(const mnv_cu_moe_args *a);
cudaError_t mnv__cu_moe_gmma_i8(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s);
/* From mma_min_rows rows with x_i8: tiles of up to 64 rows of an expert on
 * the int8 tensor cores, k staged through shared memory (cuda_moe_i8.cu);
 * the grouped path above hands its rows to the same kernel in tiles of 16
 * from MNV_CU_MOE_TILE_MIN_I8 rows. */
int mnv__cu_moe_mm_i8_fits(const mnv_cu_moe_args *a);
size_t mnv__cu_moe_mm_i8_scratch(const mnv_cu_moe_args *a);
cudaError_t mnv__cu_moe_mm_i8(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s);

/* A router in one launch: logits = the product mm (n <= 32 rows,
 * mnv_cu_mmv_fast, with its bias epilogue; mm.y unused), then ids = the
 * top kk of each row and w = their softmax, as the product, TOPK and
 * GATHER_SOFTMAX compute them. Up to MNV_CU_ROUTER_SPLIT rows of x with
 * state given, each logit is a block of its own and the last block of a
 * row to finish ranks them (state: MNV_CU_ROUTER_STATE bytes of device
 * memory, zero when first given, left zero by every launch; one launch at
 * a time uses it); else one block a row of x. */
typedef struct {
    mnv_cu_matmul_args mm;
    int32_t kk;
    int32_t *ids;
    float *w;
    void *state;
} mnv_cu_router_args;
#define MNV_CU_ROUTER_MAX 32
#define MNV_CU_ROUTER_SPLIT 16
#define MNV_CU_ROUTER_STATE (MNV_CU_ROUTER_SPLIT * (MNV_CU_ROUTER_MAX + 1) * 4)
cudaError_t mnv_cu_router(const mnv_cu_router_args *a, cudaStream_t s);

/* ids[r] = the largest of row r of x (rows, n), as core/argmax.h picks it. */
cudaError_t mnv_cu_argmax(const float *x, int64_t n, int32_t *ids, int64_t rows, cudaStream_t s);
/* out: rows of MNV_TOP_CANDS_ROW floats, each row of x's candidates as core/topcands.h defines them. */
cudaError_t mnv_cu_top_cands(const float *x, int64_t n, float *out, int64_t rows, cudaStream_t s);

/* Mixture-of-experts helpers (as cpu/ops.h). */
cudaError_t mnv_cu_topk(const float *x, int64_t n, int32_t k, int32_t *ids, int64_t rows, cudaStream_t s);
cudaError_t mnv_cu_gather_softmax(const float *x, int64_t n, const int32_t *ids, int32_t k, float *w, int64_t rows,
                                  cudaStream_t s);
/* y = sum_j w[., j] x[., j, .], then y = res + y where res (rows, n) is set. */
cudaError_t mnv_cu_moe_sum(const float *x, const float *w, int32_t k, int64_t n, const float *res, float *y,
                           int64_t rows, cudaStream_t s);
/* mnv_cu_moe_sum with res (its sum into y), then ny = the RMS norm of y's
 * rows (weights nw, may be NULL) as mnv_cu_rms_norm computes it, bit for
 * bit, in one launch; cudaErrorInvalidValue where mnv_cu_moe_sum_rms_fits
 * says no. */
int mnv_cu_moe_sum_rms_fits(const float *x, const float *res, const float *y, const float *nw, const float *ny,
                            int64_t n);
cudaError_t mnv_cu_moe_sum_rms(const float *x, const float *w, int32_t k, int64_t n, const float *res, float *y,
                               const float *nw, float *ny, float eps, int64_t rows, cudaStream_t s);

/* ---- large products through cuBLAS (cuda_gemm.c) ---- */
/* Products of at least MNV_CU_GEMM_MIN_ROWS rows of x go to cuBLAS: f32
 * weights by SGEMM; bf16 weights on tensor cores with x split into two
 * bf16 terms (mnv_cu_split: results within 2^-16 of f32 activations);
 * packed and f16 weights dequantized (widened) in slices of rows to two
 * bf16 terms as well (mnv_cu_qget_rows_split), three tensor-core products
 * a slice (within about 2^-15). Each needs scratch device memory of mnv__cu_gemm_scratch bytes. */
#define MNV_CU_GEMM_MIN_ROWS 16
/* Packed weights from 64 rows of x (MNV_CUDA_GEMM_MIN_PACKED), except the
 * 8-bit affine products that round x to int8 (mnv__cu_mm_i8): below, the
 * chunked kernels, which read the packed rows once per 8 rows of x, beat
 * widening every weight to bf16 each step (an H100, gpt-oss-20b: 16
 * decoding sequences 529 -> 1,173 tok/s, 32: 1,039 -> 1,532; 64 even). */
#define MNV_CU_GEMM_MIN_PACKED 64
size_t mnv__cu_gemm_scratch(const mnv_cu_matmul_args *a);
/* Returns a message naming what failed, or NULL. */
const char *mnv__cu_gemm(void *cublas, const mnv_cu_matmul_args *a, void *scratch, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
