/* CPU quantized matrix multiplication and embedding lookup for the MLX
 * formats of quant/quant.h: y = x * dequant(W)^T without ever dequantizing
 * a whole matrix.
 *
 *   x: (m, k) f32, row stride ldx elements
 *   W: packed U32 (n, row_words), row stride ldw words; scales/biases
 *      (n, k/group) with row strides lds elements
 *   y: (m, n) f32, row stride ldy elements
 *
 * Decode (small m) reads each packed byte once (bandwidth-bound); prefill
 * (large m) dequantizes tiles into cache-resident buffers (or works on the
 * packed codes directly) and runs a blocked product. The implementation for
 * the host is chosen at run time; every implementation covers every format
 * (AVX-512: int8 activations with VNNI for affine, mxfp4 and nvfp4; mxfp8
 * through F16C in decode and bf16 dot products in prefill where the CPU has
 * BF16; f32 for the rest; AVX2: int8 activations with vpmaddubsw for affine, mxfp4 and
 * nvfp4, f32 (F16C for mxfp8) for the rest; AArch64 NEON: int8 activations with SDOT where the CPU has
 * the dot-product extension, likewise, and an f32 path; a portable f32 path
 * for any host). */
#ifndef MNV_CPU_QMATMUL_H
#define MNV_CPU_QMATMUL_H

#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/matmul.h"
#include "quant/quant.h"

typedef struct {
    const float *x;
    int64_t ldx;
    const uint32_t *w;
    int64_t ldw;             /* words */
    const void *scales;
    const void *biases;      /* affine only */
    int64_t lds;             /* elements, for scales and biases */
    mnv_qformat fmt;
    float global_scale;      /* nvfp4 (1 otherwise) */
    float *y;
    int64_t ldy;
    int64_t m, n, k;
    void *scratch;           /* mnv_cpu_qmatmul_scratch_size() bytes, shared by the threads */
    void (*barrier)(void *ctx);
    void *barrier_ctx;
    int exact;               /* 1: f32 activations even where the host's choice rounds them to int8 */
    int row_invariant;       /* 1: every row through the one-row (decode) kernel, so a row's result
                                never depends on the other rows of the product */
} mnv_qmatmul_args;

size_t mnv_cpu_qmatmul_scratch_size(int64_t m, int64_t k, const mnv_qformat *fmt, int nth);
/* Thread ith of nth computes its share; all nth threads must call it. */
void mnv_cpu_qmatmul(const mnv_qmatmul_args *a, int ith, int nth);
/* Name of the implementation chosen for this host, and a test override
 * ("avx512-vnni", "avx2-int8", "avx512", "avx2", "neon-dot", "neon",
 * "scalar"; false if the host lacks it; NULL restores the automatic choice).
 * avx512-vnni, avx2-int8 and neon-dot round activations to int8 (one scale
 * per group) for the formats they cover, and avx512-vnni rounds them to bf16
 * for mxfp8 products of more than 16 rows where the CPU has BF16 (so mxfp8
 * prefill and decode round differently there); avx512, avx2, neon and scalar
 * are f32. */
const char *mnv_cpu_qmatmul_impl(void);
bool mnv_cpu_qmatmul_force(const char *impl);
/* What a session with exact_quant runs: the current choice, or its f32 twin. */
const char *mnv_cpu_qmatmul_impl_exact(void);
/* The i-th implementation compiled in (best first); false past the end.
 * Tests walk the table with it, so a new row is tested without naming it. */
bool mnv_cpu_qmatmul_impl_at(int i, mnv_cpu_impl_desc *out);

/* y[r] = dequant(W[ids[r]]) as f32 (quantized embedding lookup). */
void mnv_cpu_qget_rows(const uint32_t *w, int64_t ldw, const void *scales, const void *biases, int64_t lds,
                       const mnv_qformat *fmt, float global_scale, int64_t k, const int32_t *ids, float *y,
                       int64_t rows);

/* ---- internal: the implementations and what they share ------------------- */

/* Products with m at most this stream each weight row once (decode); larger
 * m packs panels of W and runs a register-tiled product (prefill). */
#define MNV_QMATMUL_GEMV_MAX_M 4
/* avx512-vnni, mid-size m up to this (mixture-of-experts layers, batched
 * decode), where packing panels of W costs more than the product: for the
 * smaller m the decode kernel runs up to 8 rows of x at a time over
 * cache-sized blocks of W, for the larger x is packed instead (16 or 32 rows)
 * and W rows, unpacked in L1, are broadcast against it. Both read each weight
 * byte from memory once (qmatmul_avx512.c). */
#define MNV_QMATMUL_MID_MAX_M 32

/* Blocking of the SIMD prefill paths; the scratch size is derived from these.
 *   int8 (VNNI): panels of QI8_NP rows x at most QI8_KC_MAX codes (one byte each)
 *   f32:         panels of QF32_NP rows x at most QF32_KC_MAX floats */
enum {
    MNV__QI8_NP = 48,
    MNV__QI8_KC_MAX = 2048,
    MNV__QF32_NP = 64,
    MNV__QF32_KC_MAX = 256,
};

/* Prepared activations (the int8 paths), one row of x after another in the
 * scratch: int8 codes padded to 128 elements, then two per-group arrays of 4
 * bytes each (a scale and a sum, each implementation says which), sized for
 * groups of at least 16 and 64-byte aligned. The one description of this
 * layout: every implementation reaches its rows through mnv__qx_row_at. */
static inline int64_t mnv__qx_kpad(int64_t k) { return (k + 127) / 128 * 128; }
static inline size_t mnv__qx_group_bytes(int64_t k) { return ((size_t)mnv__qx_kpad(k) / 16 * 4 + 63) / 64 * 64; }
static inline size_t mnv__qx_row_bytes(int64_t k) { return (size_t)mnv__qx_kpad(k) + 2 * mnv__qx_group_bytes(k); }
typedef struct {
    int8_t *q;      /* mnv__qx_kpad(k) codes */
    void *g0, *g1;  /* the two per-group arrays */
} mnv__qx_row;
static inline mnv__qx_row mnv__qx_row_at(uint8_t *base, int64_t k, int64_t i) {
    uint8_t *p = base + (size_t)i * mnv__qx_row_bytes(k);
    const size_t kp = (size_t)mnv__qx_kpad(k);
    return (mnv__qx_row){(int8_t *)p, p + kp, p + kp + mnv__qx_group_bytes(k)};
}
/* Bytes of a prepared row of x for the format: int8 codes and the group
 * terms, or for mxfp8 at least its bf16 copy (the AVX-512 BF16 prefill). */
static inline size_t mnv__qx_row_bytes_for(int64_t k, const mnv_qformat *f) {
    const size_t r = mnv__qx_row_bytes(k), b = 2 * (size_t)mnv__qx_kpad(k);
    return f && f->mode == MNV_QMODE_MXFP8 && b > r ? b : r;
}
/* Does a row of k E4M3 codes hold a NaN (0x7f, 0xff)? (The mxfp8 decode
 * kernels ask only once they have seen one among the rows they stream.) */
static inline bool mnv__e4m3_row_has_nan(const uint8_t *w, int64_t k) {
    for (int64_t t = 0; t < k; t++)
        if ((w[t] & 0x7f) == 0x7f) return true;
    return false;
}
/* p rounded up to a 64-byte boundary (the scratch's start). */
static inline uint8_t *mnv__align64(void *p) { return (uint8_t *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }
/* Bytes of one thread's private panel for products with m > MNV_QMATMUL_GEMV_MAX_M. */
static inline size_t mnv__qpanel_bytes(void) {
    /* codes + per-group scales and biases + 16 unpacked rows to transpose from */
    size_t i8 = (size_t)MNV__QI8_NP * MNV__QI8_KC_MAX + 2 * (size_t)(MNV__QI8_KC_MAX / 16) * MNV__QI8_NP * 4 +
                16 * (size_t)MNV__QI8_KC_MAX;
    size_t f32 = ((size_t)MNV__QF32_NP + 16) * MNV__QF32_KC_MAX * 4;
    return (MNV_MAX(i8, f32) + 63) / 64 * 64;
}

/* The k block of the int8 prefill kernels: a multiple of the group size G
 * that splits k evenly, about 512 KiB of int8 x (kept in L2 across a
 * thread's panels), at most cap. */
static inline int64_t mnv__qpick_kc(int64_t m, int64_t k, int64_t G, int64_t cap) {
    int64_t t = 512 * 1024 / (m > 1 ? m : 1);
    t = t < cap ? t : cap;
    t = t > 256 ? t : 256;
    t = t / G * G > G ? t / G * G : G;
    const int64_t nb = (k + t - 1) / t;
    return ((k + nb - 1) / nb + G - 1) / G * G;
}

/* Thread ith's contiguous share [*lo, *hi) of n rows, chunks rounded up to align. */
static inline void mnv__qsplit(int64_t n, int ith, int nth, int64_t align, int64_t *lo, int64_t *hi) {
    int64_t chunk = (n + nth - 1) / nth;
    chunk = (chunk + align - 1) / align * align;
    int64_t a = chunk * ith;
    *lo = a < n ? a : n;
    *hi = a + chunk < n ? a + chunk : n;
}

/* Portable helpers (qmatmul.c), usable by every implementation:
 * dequantize groups [g0, g0 + ng) of one packed row to f32 (out[0 .. ng*group)),
 * and extract the raw codes of elements [e0, e0 + cnt) (e0, cnt multiples of 8)
 * as one byte each. Formulas: see quant/quant.h; affine computes s*q + b in
 * f32 (two roundings), nvfp4 e2m1 * (e4m3(s) * global). */
void mnv__qdequant_groups(const mnv_qformat *f, const uint32_t *row, const void *scales, const void *biases,
                          float global_scale, int64_t g0, int64_t ng, float *out);
void mnv__qcodes(const uint32_t *row, int32_t bits, int64_t e0, int64_t cnt, uint8_t *out);
/* Scale (or bias) g of a row in the format's scale dtype, as f32 (E8M0 for
 * mxfp4/mxfp8, E4M3 times global for nvfp4). */
float mnv__qscale(const mnv_qformat *f, const void *scales, int64_t g, float global_scale);

void mnv__qmatmul_scalar(const mnv_qmatmul_args *a, int ith, int nth);
#if defined(__x86_64__) || defined(_M_X64)
/* vnni: int8 activations and vpdpbusd for affine (every bit width), mxfp4
 * and nvfp4, bf16 activations and vdpbf16ps for mxfp8's prefill (where the
 * CPU has BF16); otherwise f32 math (mxfp8 decode: qmatmul_fp_avx512.c). */
void mnv__qmatmul_avx512(const mnv_qmatmul_args *a, int ith, int nth, bool vnni);
/* int8: int8 activations and vpmaddubsw for affine (every bit width), mxfp4
 * and nvfp4; otherwise (and for mxfp8) f32 math (qmatmul_avx2.c). */
void mnv__qmatmul_avx2(const mnv_qmatmul_args *a, int ith, int nth, bool int8);
/* mxfp8, any m (rows of x 4 at a time over blocks of W; meant for small m),
 * f32 activations through F16C (qmatmul_fp_avx2.c). */
void mnv__qmatmul_avx2_mxfp8(const mnv_qmatmul_args *a, int ith, int nth);
/* The same with AVX-512 (qmatmul_fp_avx512.c). */
void mnv__qmatmul_avx512_mxfp8(const mnv_qmatmul_args *a, int ith, int nth);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
/* f32 math for every format (qmatmul_neon.c). */
void mnv__qmatmul_neon(const mnv_qmatmul_args *a, int ith, int nth);
/* int8 activations and SDOT for affine (groups >= 32) and mxfp4, the f32
 * path otherwise (qmatmul_neon_dot.c; needs the dot-product extension). */
void mnv__qmatmul_neon_dot(const mnv_qmatmul_args *a, int ith, int nth);
/* Shared by both: codes of elements [e0, e0 + cnt) (multiples of 16) as one
 * byte each, and 2*e2m1 of the 16 E2M1 codes (integers). */
void mnv__qcodes_neon(const uint32_t *row, int32_t bits, int64_t e0, int64_t cnt, uint8_t *out);
extern const int8_t mnv__e2m1x2_neon[16];
#endif

#endif
