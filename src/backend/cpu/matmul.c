/* Matrix multiplication y = x * W^T: implementation choice, scratch size and
 * the portable path (plain C, no intrinsics, so that it builds and is correct
 * on any host; the SIMD paths live in matmul_avx512.c and matmul_avx2.c). */
#include "backend/cpu/matmul.h"
#include "backend/cpu/cpu_isa.h"

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
    mnv_isa isa;       /* the level it needs */
    int feat;          /* and this optional feature (mnv_cpu_feat), or -1 */
    void (*run)(const mnv_matmul_args *a, int ith, int nth);
    int64_t pass_rows;    /* rows of x its decode kernel takes at once (m <= this: run alone) */
    int64_t passes_max_m; /* m up to this runs as passes of the decode kernel (run_passes) */
    bool (*own)(const mnv_matmul_args *a); /* if set and true: run() takes the product itself */
} matmul_impl;

#if defined(__x86_64__) || defined(_M_X64)
static void run_avx512_bf16(const mnv_matmul_args *a, int ith, int nth) {
    mnv__matmul_avx512(a, ith, nth, true);
}
static void run_avx512(const mnv_matmul_args *a, int ith, int nth) {
    mnv__matmul_avx512(a, ith, nth, false);
}
#endif

/* Best first: the automatic choice is the first one the host (and the
 * MINERVA_CPU cap) allows. */
static const matmul_impl impls[] = {
#if defined(__x86_64__) || defined(_M_X64)
    /* its own mid-size path (BF16 dot products) up to MNV_MATMUL_MID_MAX_M */
    {"avx512-bf16", MNV_ISA_AVX512, MNV_CPU_AVX512_BF16, run_avx512_bf16, 4, 4, NULL},
    {"avx512", MNV_ISA_AVX512, -1, run_avx512, 4, MNV_MATMUL_PASSES_MAX_M, NULL},
    {"avx2", MNV_ISA_AVX2, -1, mnv__matmul_avx2, 6, MNV_MATMUL_PASSES_MAX_M,
     mnv__matmul_avx2_batched},
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    {"neon", MNV_ISA_NEON, -1, mnv__matmul_neon, 4, MNV_MATMUL_PASSES_MAX_M, NULL},
#endif
    {"scalar", MNV_ISA_SCALAR, -1, mnv__matmul_scalar, 4, 4, NULL},
};
enum { N_IMPLS = sizeof impls / sizeof impls[0] };

static bool allowed(const matmul_impl *m) {
    return mnv__isa_ok(m->isa) && (m->feat < 0 || mnv__cpu_has((mnv_cpu_feat)m->feat));
}

/* The only process-wide state here: a test override of the host's choice. */
static _Atomic(const matmul_impl *) forced_impl;

/* The host's choice under the cap: detection is cached in cpu_isa.c, so this
 * is a few loads per product. */
static const matmul_impl *auto_impl(void) {
    for (int i = 0; i < N_IMPLS; i++)
        if (allowed(&impls[i])) return &impls[i];
    return &impls[N_IMPLS - 1];
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
        if (strcmp(impls[i].name, name) == 0 && allowed(&impls[i])) {
            atomic_store(&forced_impl, &impls[i]);
            return true;
        }
    }
    return false;
}

const char *mnv_cpu_matmul_impl(void) { return current_impl()->name; }

bool mnv_cpu_matmul_impl_at(int i, mnv_cpu_impl_desc *out) {
    if (i < 0 || i >= N_IMPLS) return false;
    const matmul_impl *m = &impls[i];
    *out = (mnv_cpu_impl_desc){m->name, m->isa,
                               mnv__isa_host(m->isa) && (m->feat < 0 || mnv__cpu_has((mnv_cpu_feat)m->feat)), false};
    return true;
}

/* Enough for every implementation, so forcing one never outgrows a buffer
 * sized earlier: BF16 products round x to bf16 rows of kpad elements
 * (AVX-512 BF16), or up to MNV_MATMUL_PASSES_MAX_M rows permute it into f32
 * rows of kpad elements (AVX2). */
size_t mnv_cpu_matmul_scratch_size(int64_t m, int64_t k, mnv_dtype wtype) {
    if (wtype != MNV_DTYPE_BF16 || m <= MNV_MATMUL_GEMV_MAX_M) return 0;
    const size_t kpad = (size_t)mnv__matmul_bf16_kpad(k);
    if (m > MNV_MATMUL_PASSES_MAX_M) return (size_t)m * kpad * sizeof(uint16_t);
    return (size_t)m * kpad * sizeof(float);
}

/* Rows of W per block in run_passes: a block streams from memory once and is
 * re-read from cache by the later passes (16 rows of 4864 bf16 weights: 152 KiB). */
enum { PASS_JB = 16 };

/* m rows of x in passes of at most impl->pass_rows rows of the decode
 * kernel, block after block of W rows: the weights are read from memory once
 * and nothing is packed or converted ahead (batched decode: a few rows per
 * sequence); a row's result is the one the decode kernel gives it alone. */
static void run_passes(const matmul_impl *impl, const mnv_matmul_args *a, int ith, int nth) {
    int64_t n0, n1;
    mnv__matmul_split(a->n, ith, nth, PASS_JB, &n0, &n1);
    /* full passes first: m = 8 as 6 + 2 (measured faster than 4 + 4: the widest
     * pass converts each weight once for the most rows) */
    const int64_t m = a->m, per = impl->pass_rows;
    const size_t es = mnv_dtype_size(a->wtype);
    for (int64_t jb = n0; jb < n1; jb += PASS_JB) {
        const int64_t jb1 = MNV_MIN(n1, jb + PASS_JB);
        for (int64_t i0 = 0; i0 < m; i0 += per) {
            mnv_matmul_args sub = *a;
            sub.x = a->x + i0 * a->ldx;
            sub.y = a->y + i0 * a->ldy + jb;
            sub.w = (const uint8_t *)a->w + (size_t)(jb * a->ldw) * es;
            sub.m = MNV_MIN(per, m - i0);
            sub.n = jb1 - jb;
            sub.scratch = NULL;
            impl->run(&sub, 0, 1);
        }
    }
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
    const matmul_impl *impl = current_impl();
    const bool passes = a->row_invariant ? a->m > impl->pass_rows
                                         : a->m > impl->pass_rows && a->m <= impl->passes_max_m;
    if (passes && !(impl->own && impl->own(a)))
        run_passes(impl, a, ith, nth);
    else
        impl->run(a, ith, nth);
}
