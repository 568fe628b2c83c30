/* Matrix multiplication y = x * W^T: implementation choice, scratch size and
 * the portable path (plain C, no intrinsics, so that it builds and is correct
 * on any host; the SIMD paths live in matmul_avx512.c and matmul_avx2.c). */
#include "backend/cpu/matmul.h"

#include <assert.h>
#include <stdatomic.h>

/* ---- the portable path ------------------------------------------------------ */

enum { SCALAR_KC = 256 }; /* weights converted to f32 per step, on the stack */

static void scalar_load_row(const mnv_matmul_args *a, int64_t j, int64_t k0, int64_t kc,
                            float *dst) {
    if (a->wtype == MNV_DTYPE_F32) {
        memcpy(dst, (const float *)a->w + j * a->ldw + k0, (size_t)kc * sizeof(float));
        return;
    }
    const uint16_t *src = (const uint16_t *)a->w + j * a->ldw + k0;
    if (a->wtype == MNV_DTYPE_BF16)
        for (int64_t t = 0; t < kc; t++) dst[t] = mnv_bf16_to_f32(src[t]);
    else
        for (int64_t t = 0; t < kc; t++) dst[t] = mnv_f16_to_f32(src[t]);
}

/* Eight independent partial sums: they vectorise without -ffast-math and keep
 * the rounding error of long rows small. */
static float scalar_dot(const float *x, const float *w, int64_t kc) {
    float s[8] = {0};
    int64_t t = 0;
    for (; t + 8 <= kc; t += 8)
        for (int u = 0; u < 8; u++) s[u] += x[t + u] * w[t + u];
    for (; t < kc; t++) s[0] += x[t] * w[t];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void mnv__matmul_scalar(const mnv_matmul_args *a, int ith, int nth) {
    int64_t n0, n1;
    mnv__matmul_split(a->n, ith, nth, 4, &n0, &n1);
    float wbuf[SCALAR_KC];
    for (int64_t j = n0; j < n1; j++) {
        for (int64_t k0 = 0; k0 < a->k; k0 += SCALAR_KC) {
            int64_t kc = MNV_MIN(SCALAR_KC, a->k - k0);
            scalar_load_row(a, j, k0, kc, wbuf);
            for (int64_t i = 0; i < a->m; i++) {
                float d = scalar_dot(a->x + i * a->ldx + k0, wbuf, kc);
                float *y = a->y + i * a->ldy + j;
                *y = k0 ? *y + d : d;
            }
        }
    }
}

/* ---- implementation table ---------------------------------------------------- */

typedef struct {
    const char *name;
    bool (*supported)(void);
    void (*run)(const mnv_matmul_args *a, int ith, int nth);
} matmul_impl;

static bool host_any(void) { return true; }

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

/* CPUID.1:ECX bit 29 (clang's __builtin_cpu_supports lacks "f16c"). */
static bool host_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
static bool host_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && host_f16c();
}
static bool host_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           host_avx2();
}
static bool host_avx512_bf16(void) {
    return host_avx512() && __builtin_cpu_supports("avx512bf16");
}
static void run_avx512_bf16(const mnv_matmul_args *a, int ith, int nth) {
    mnv__matmul_avx512(a, ith, nth, true);
}
static void run_avx512(const mnv_matmul_args *a, int ith, int nth) {
    mnv__matmul_avx512(a, ith, nth, false);
}
#endif

/* Best first: the automatic choice is the first one the host supports. */
static const matmul_impl impls[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {"avx512-bf16", host_avx512_bf16, run_avx512_bf16},
    {"avx512", host_avx512, run_avx512},
    {"avx2", host_avx2, mnv__matmul_avx2},
#endif
    {"scalar", host_any, mnv__matmul_scalar},
};
enum { N_IMPLS = sizeof impls / sizeof impls[0] };

/* The only process-wide state here: a test override of the host's choice. */
static _Atomic(const matmul_impl *) forced_impl;

/* Chosen once (cpuid included), not on every product of every token. */
static const matmul_impl *auto_impl(void) {
    static _Atomic(const matmul_impl *) chosen;
    const matmul_impl *c = atomic_load_explicit(&chosen, memory_order_acquire);
    if (c) return c;
    c = &impls[N_IMPLS - 1];
    for (int i = 0; i < N_IMPLS; i++)
        if (impls[i].supported()) {
            c = &impls[i];
            break;
        }
    atomic_store_explicit(&chosen, c, memory_order_release);
    return c;
}

static const matmul_impl *current_impl(void) {
    const matmul_impl *f = atomic_load_explicit(&forced_impl, memory_order_relaxed);
    return f ? f : auto_impl();
}

bool mnv_cpu_matmul_force(const char *name) {
    if (!name) {
        atomic_store(&forced_impl, NULL);
        return true;
    }
    for (int i = 0; i < N_IMPLS; i++) {
        if (strcmp(impls[i].name, name) == 0 && impls[i].supported()) {
            atomic_store(&forced_impl, &impls[i]);
            return true;
        }
    }
    return false;
}

const char *mnv_cpu_matmul_impl(void) { return current_impl()->name; }

/* Enough for every implementation, so forcing one never outgrows a buffer
 * sized earlier: BF16 products round x to bf16 rows of kpad elements. */
size_t mnv_cpu_matmul_scratch_size(int64_t m, int64_t k, mnv_dtype wtype) {
    if (wtype != MNV_DTYPE_BF16 || m <= MNV_MATMUL_GEMV_MAX_M) return 0;
    return (size_t)m * (size_t)mnv__matmul_bf16_kpad(k) * sizeof(uint16_t);
}

void mnv_cpu_matmul(const mnv_matmul_args *a, int ith, int nth) {
    const bool typed = a->wtype == MNV_DTYPE_F32 || a->wtype == MNV_DTYPE_F16 ||
                       a->wtype == MNV_DTYPE_BF16;
    assert(typed && "the caller checks weight types (supports_op)");
    if (!typed || a->m <= 0 || a->n <= 0) return;
    if (a->k <= 0) { /* an empty sum */
        int64_t n0, n1;
        mnv__matmul_split(a->n, ith, nth, 4, &n0, &n1);
        for (int64_t i = 0; i < a->m; i++)
            for (int64_t j = n0; j < n1; j++) a->y[i * a->ldy + j] = 0.0f;
        return;
    }
    current_impl()->run(a, ith, nth);
}
