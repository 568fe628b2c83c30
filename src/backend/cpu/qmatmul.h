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
 * the host is chosen at run time; SIMD paths cover affine 4- and 8-bit at
 * groups 32/64/128 and mxfp4, a portable path covers every format. */
#ifndef MNV_CPU_QMATMUL_H
#define MNV_CPU_QMATMUL_H

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
} mnv_qmatmul_args;

size_t mnv_cpu_qmatmul_scratch_size(int64_t m, int64_t k, const mnv_qformat *fmt, int nth);
/* Thread ith of nth computes its share; all nth threads must call it. */
void mnv_cpu_qmatmul(const mnv_qmatmul_args *a, int ith, int nth);
/* Name of the implementation chosen for this host, and a test override
 * ("avx512", "avx2", "scalar"; NULL restores the automatic choice). */
const char *mnv_cpu_qmatmul_impl(void);
bool mnv_cpu_qmatmul_force(const char *impl);

/* y[r] = dequant(W[ids[r]]) as f32 (quantized embedding lookup). */
void mnv_cpu_qget_rows(const uint32_t *w, int64_t ldw, const void *scales, const void *biases, int64_t lds,
                       const mnv_qformat *fmt, float global_scale, int64_t k, const int32_t *ids, float *y,
                       int64_t rows);

#endif
