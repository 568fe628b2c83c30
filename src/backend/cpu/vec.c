#include "backend/cpu/vec.h"
#include "backend/cpu/cpu_isa.h"

#include <math.h>
#include <stdlib.h>

static float dot_c(const float *a, const float *b, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    float r = 0;
    for (; i < n; i++) r += a[i] * b[i];
    for (int j = 0; j < 8; j++) r += s[j];
    return r;
}

static void axpy_c(float *y, const float *x, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void scale_c(float *y, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= a;
}

static double sumsq_c(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

static void silu_mul_c(const float *g, const float *u, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static const mnv_vec_ops vec_c = {"scalar", dot_c, axpy_c, scale_c, sumsq_c, silu_mul_c, NULL, NULL};
static const mnv_vec_ops *vec_scalar(void) { return &vec_c; }

typedef struct {
    const char *name;
    mnv_isa isa; /* the level it needs */
    int feat;    /* and this optional feature (mnv_cpu_feat), or -1 */
    const mnv_vec_ops *(*get)(void);
} vec_impl;

/* Best first: mnv_vec() returns the first one the host (and the MINERVA_CPU
 * cap) allows. */
static const vec_impl impls[] = {
#if defined(__x86_64__)
    {"avx512", MNV_ISA_AVX512, -1, mnv_vec_avx512},
    {"avx2", MNV_ISA_AVX2, -1, mnv_vec_avx2},
#endif
#if defined(__aarch64__)
    {"neon", MNV_ISA_NEON, -1, mnv_vec_neon},
#endif
    {"scalar", MNV_ISA_SCALAR, -1, vec_scalar},
};
enum { N_IMPLS = sizeof impls / sizeof impls[0] };

/* Detection is done once, thread-safely, in cpu_isa.c: a few loads per call. */
const mnv_vec_ops *mnv_vec(void) {
    for (int i = 0; i < N_IMPLS; i++) {
        const vec_impl *v = &impls[i];
        if (mnv__isa_ok(v->isa) && (v->feat < 0 || mnv__cpu_has((mnv_cpu_feat)v->feat))) {
            const mnv_vec_ops *ops = v->get();
            if (ops) return ops;
        }
    }
    return &vec_c;
}

#if !defined(__x86_64__)
const mnv_vec_ops *mnv_vec_avx512(void) { return NULL; }
const mnv_vec_ops *mnv_vec_avx2(void) { return NULL; }
#endif
#if !defined(__aarch64__) && !defined(_M_ARM64)
const mnv_vec_ops *mnv_vec_neon(void) { return NULL; }
#endif
