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

static const mnv_vec_ops vec_c = {"scalar", dot_c, axpy_c, scale_c, sumsq_c, silu_mul_c, NULL};

/* The best table the host (and the MINERVA_CPU cap) allows; detection is
 * done once, thread-safely, in cpu_isa.c. */
const mnv_vec_ops *mnv_vec(void) {
    const mnv_vec_ops *v = NULL;
    if (mnv__isa_ok(MNV_ISA_AVX512)) v = mnv_vec_avx512();
    if (!v && mnv__isa_ok(MNV_ISA_AVX2)) v = mnv_vec_avx2();
    if (!v && mnv__isa_ok(MNV_ISA_NEON)) v = mnv_vec_neon();
    return v ? v : &vec_c;
}

#if !defined(__x86_64__)
const mnv_vec_ops *mnv_vec_avx512(void) { return NULL; }
const mnv_vec_ops *mnv_vec_avx2(void) { return NULL; }
#endif
#if !defined(__aarch64__) && !defined(_M_ARM64)
const mnv_vec_ops *mnv_vec_neon(void) { return NULL; }
#endif
