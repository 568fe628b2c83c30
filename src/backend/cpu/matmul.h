/* CPU matrix multiplication kernels: y = x * W^T.
 *
 *   x: (m, k) f32, row stride ldx elements
 *   W: (n, k) in F32, F16 or BF16, row stride ldw elements (HF Linear layout)
 *   y: (m, n) f32, row stride ldy elements
 *
 * Decode (small m) is a bandwidth-bound matrix-vector product: each weight
 * byte is read once. Prefill (large m) is a blocked, register-tiled product.
 * BF16 weights use the AVX-512 BF16 dot-product instructions where the CPU
 * has them (activations rounded to bf16); F32 weights are computed in f32.
 * The implementation for the host (AVX-512, AVX2, scalar) is chosen at run
 * time. */
#ifndef MNV_CPU_MATMUL_H
#define MNV_CPU_MATMUL_H

#include "backend/cpu/cpu_isa.h"
#include "core/core.h"

typedef struct {
    const float *x;
    int64_t ldx;
    const void *w;
    mnv_dtype wtype;
    int64_t ldw;
    float *y;
    int64_t ldy;
    int64_t m, n, k;
    /* Scratch of mnv_cpu_matmul_scratch_size() bytes shared by all threads
     * (e.g. for x converted to bf16), 64-byte aligned. Threads read it until
     * they return, so a next product that reuses it must start after a
     * barrier. May be NULL (BF16 then uses f32 math, without the barrier). */
    void *scratch;
    /* Synchronises the nth threads working on this product. */
    void (*barrier)(void *ctx);
    void *barrier_ctx;
    int row_invariant;       /* 1: every row through the one-row (decode) kernel, so a row's result
                                never depends on the other rows of the product */
} mnv_matmul_args;

size_t mnv_cpu_matmul_scratch_size(int64_t m, int64_t k, mnv_dtype wtype);
/* Thread ith of nth computes its share; all nth threads must call it. */
void mnv_cpu_matmul(const mnv_matmul_args *a, int ith, int nth);
/* Name of the implementation chosen for this host ("avx512-bf16", "avx2", "scalar"). */
const char *mnv_cpu_matmul_impl(void);
/* Force an implementation for testing: "avx512-bf16", "avx512", "avx2", "scalar"
 * (returns false if the host lacks it) or NULL to restore the automatic choice. */
bool mnv_cpu_matmul_force(const char *impl);
/* The i-th implementation compiled in (best first); false past the end.
 * Tests walk the table with it, so a new row is tested without naming it. */
bool mnv_cpu_matmul_impl_at(int i, mnv_cpu_impl_desc *out);

/* ---- internal: the implementations and what they share ------------------- */

/* AVX2: BF16 products with m from this to MNV_MATMUL_PASSES_MAX_M (batched
 * decode), given a scratch and a barrier and not row-invariant, run as tiles
 * of 4 x-rows by 3 W-rows on x permuted once (mnv__matmul_avx2_batched). */
#define MNV_MATMUL_BATCH_MIN_M 7 /* 5 and 6 rows: the decode kernel in one pass was faster */
/* Products with m at most this are run as matrix-vector products: each
 * weight row is streamed once with f32 math, no scratch and no barrier. */
#define MNV_MATMUL_GEMV_MAX_M 4
/* BF16 dot-product products with m up to this (the tokens of one expert,
 * batched decode) pick the rows of x per register tile (5..8) from m, with no
 * duplicate rows, and up to 16 rows read W as side-by-side streams. */
#define MNV_MATMUL_MID_MAX_M 32
/* Elsewhere, products with m up to this run as passes of the matrix-vector
 * kernel over blocks of W (batched decode); larger ones pack W into tiles. */
#define MNV_MATMUL_PASSES_MAX_M 16

/* Thread ith's contiguous share [*lo, *hi) of n rows, chunk sizes rounded up
 * to a multiple of align (the last threads may get fewer or none). */
static inline void mnv__matmul_split(int64_t n, int ith, int nth, int64_t align, int64_t *lo,
                                     int64_t *hi) {
    int64_t chunk = (n + nth - 1) / nth;
    chunk = (chunk + align - 1) / align * align;
    int64_t a = chunk * ith;
    *lo = a < n ? a : n;
    *hi = a + chunk < n ? a + chunk : n;
}

/* Row length, in elements, of x rounded to bf16 in the scratch: k padded with
 * zeros to a multiple of 32 so that every 64-byte load stays in the row. */
static inline int64_t mnv__matmul_bf16_kpad(int64_t k) { return (k + 31) / 32 * 32; }

void mnv__matmul_scalar(const mnv_matmul_args *a, int ith, int nth);
#if defined(__x86_64__) || defined(_M_X64)
/* bf16_dot: BF16 weights with m > MNV_MATMUL_GEMV_MAX_M use vdpbf16ps on x
 * rounded to bf16 in the scratch (needs AVX512_BF16); otherwise f32 math. */
void mnv__matmul_avx512(const mnv_matmul_args *a, int ith, int nth, bool bf16_dot);
void mnv__matmul_avx2(const mnv_matmul_args *a, int ith, int nth);
/* True when mnv__matmul_avx2 runs this product with its batched-decode tiles. */
bool mnv__matmul_avx2_batched(const mnv_matmul_args *a);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
/* f32 math for every weight type (matmul_neon.c). */
void mnv__matmul_neon(const mnv_matmul_args *a, int ith, int nth);
#endif

/* The AVX2 decode kernels (float and quantized) read a thread's rows as C
 * (or J) equal parts side by side, each a sequential stream. Stream u
 * starts its part at row u * shift and wraps once to the part's first
 * rows, so that the streams read addresses about 512 KiB apart modulo 1 MiB:
 * parts of a power-of-two size in bytes (or near one) otherwise put every
 * stream on the same DRAM banks at once (4-bit g64 4096 x 2048 read at 15
 * GB/s on one Zen 3 thread against 22 at 6144 x 2048). row_bytes: the
 * distance between rows. */
static inline int64_t mnv__stream_shift(int64_t part, int64_t row_bytes) {
    const int64_t mib = (int64_t)1 << 20, off = (part * row_bytes) % mib;
    const int64_t want = ((mib / 2 - off) % mib + mib) % mib;
    return part > 1 && row_bytes > 0 ? (want / row_bytes) % part : 0;
}

#endif
