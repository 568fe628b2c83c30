/* Small vector primitives (and the kernels that have a host-specific
 * version) used by the CPU kernels, with implementations for AVX-512, AVX2,
 * NEON and plain C chosen once at run time for the host. */
#ifndef MNV_CPU_VEC_H
#define MNV_CPU_VEC_H

#include "core/core.h"

struct mnv_attn_args; /* backend/cpu/ops.h */
struct mnv_attn_tile;

typedef struct {
    const char *name;
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* y[i] += a * x[i] */
    void (*axpy_f32)(float *y, const float *x, float a, int64_t n);
    /* y[i] *= a */
    void (*scale_f32)(float *y, float a, int64_t n);
    /* sum of squares, accumulated in f64 for norms */
    double (*sumsq_f32)(const float *x, int64_t n);
    /* y[i] = silu(g[i]) * u[i] */
    void (*silu_mul_f32)(const float *g, const float *u, float *y, int64_t n);
    /* attention of one tile (backend/cpu/ops.h); NULL, or false when the
     * shape is not covered: the portable kernel runs instead */
    bool (*attention)(const struct mnv_attn_args *a, struct mnv_attn_tile *t);
    /* n elements between float dtypes (KV cache rows, embedding rows); NULL,
     * or false for a pair not covered: the portable loop runs instead */
    bool (*convert)(const void *src, mnv_dtype st, void *dst, mnv_dtype dt, int64_t n);
} mnv_vec_ops;

const mnv_vec_ops *mnv_vec(void);
/* Implementations (NULL when not compiled for this architecture). */
const mnv_vec_ops *mnv_vec_avx512(void);
const mnv_vec_ops *mnv_vec_avx2(void);
const mnv_vec_ops *mnv_vec_neon(void);

#endif
