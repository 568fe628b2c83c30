/* Quantized matrix multiplication y = x * dequant(W)^T: implementation
 * choice, scratch size, the portable path (plain C, no intrinsics: it builds
 * and is correct on any host, and is the reference the SIMD paths are tested
 * against) and the quantized embedding lookup. The SIMD paths live in
 * qmatmul_avx512.c and qmatmul_avx2.c.
 *
 * Portable numerics: every weight is dequantized to f32 exactly as
 * quant/quant.h defines it (affine s*q + b with two roundings; mxfp4/mxfp8
 * products with a power of two are exact; nvfp4 e2m1 * (e4m3(s) * global)),
 * then dot products run in f32 with eight partial sums. */
#include "backend/cpu/qmatmul.h"
#include "backend/cpu/cpu_isa.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

/* ---- element codecs ---------------------------------------------------------- */

static const float E2M1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* FP8 E4M3 ("fn": bias 7, no infinities, 0x7f/0xff NaN), all 256 codes. */
static const float E4M3[256] = {
    0.0f, 0.001953125f, 0.00390625f, 0.005859375f, 0.0078125f, 0.009765625f, 0.01171875f, 0.013671875f,
    0.015625f, 0.017578125f, 0.01953125f, 0.021484375f, 0.0234375f, 0.025390625f, 0.02734375f, 0.029296875f,
    0.03125f, 0.03515625f, 0.0390625f, 0.04296875f, 0.046875f, 0.05078125f, 0.0546875f, 0.05859375f,
    0.0625f, 0.0703125f, 0.078125f, 0.0859375f, 0.09375f, 0.1015625f, 0.109375f, 0.1171875f,
    0.125f, 0.140625f, 0.15625f, 0.171875f, 0.1875f, 0.203125f, 0.21875f, 0.234375f,
    0.25f, 0.28125f, 0.3125f, 0.34375f, 0.375f, 0.40625f, 0.4375f, 0.46875f,
    0.5f, 0.5625f, 0.625f, 0.6875f, 0.75f, 0.8125f, 0.875f, 0.9375f,
    1.0f, 1.125f, 1.25f, 1.375f, 1.5f, 1.625f, 1.75f, 1.875f,
    2.0f, 2.25f, 2.5f, 2.75f, 3.0f, 3.25f, 3.5f, 3.75f,
    4.0f, 4.5f, 5.0f, 5.5f, 6.0f, 6.5f, 7.0f, 7.5f,
    8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f,
    16.0f, 18.0f, 20.0f, 22.0f, 24.0f, 26.0f, 28.0f, 30.0f,
    32.0f, 36.0f, 40.0f, 44.0f, 48.0f, 52.0f, 56.0f, 60.0f,
    64.0f, 72.0f, 80.0f, 88.0f, 96.0f, 104.0f, 112.0f, 120.0f,
    128.0f, 144.0f, 160.0f, 176.0f, 192.0f, 208.0f, 224.0f, 240.0f,
    256.0f, 288.0f, 320.0f, 352.0f, 384.0f, 416.0f, 448.0f, NAN,
    -0.0f, -0.001953125f, -0.00390625f, -0.005859375f, -0.0078125f, -0.009765625f, -0.01171875f, -0.013671875f,
    -0.015625f, -0.017578125f, -0.01953125f, -0.021484375f, -0.0234375f, -0.025390625f, -0.02734375f, -0.029296875f,
    -0.03125f, -0.03515625f, -0.0390625f, -0.04296875f, -0.046875f, -0.05078125f, -0.0546875f, -0.05859375f,
    -0.0625f, -0.0703125f, -0.078125f, -0.0859375f, -0.09375f, -0.1015625f, -0.109375f, -0.1171875f,
    -0.125f, -0.140625f, -0.15625f, -0.171875f, -0.1875f, -0.203125f, -0.21875f, -0.234375f,
    -0.25f, -0.28125f, -0.3125f, -0.34375f, -0.375f, -0.40625f, -0.4375f, -0.46875f,
    -0.5f, -0.5625f, -0.625f, -0.6875f, -0.75f, -0.8125f, -0.875f, -0.9375f,
    -1.0f, -1.125f, -1.25f, -1.375f, -1.5f, -1.625f, -1.75f, -1.875f,
    -2.0f, -2.25f, -2.5f, -2.75f, -3.0f, -3.25f, -3.5f, -3.75f,
    -4.0f, -4.5f, -5.0f, -5.5f, -6.0f, -6.5f, -7.0f, -7.5f,
    -8.0f, -9.0f, -10.0f, -11.0f, -12.0f, -13.0f, -14.0f, -15.0f,
    -16.0f, -18.0f, -20.0f, -22.0f, -24.0f, -26.0f, -28.0f, -30.0f,
    -32.0f, -36.0f, -40.0f, -44.0f, -48.0f, -52.0f, -56.0f, -60.0f,
    -64.0f, -72.0f, -80.0f, -88.0f, -96.0f, -104.0f, -112.0f, -120.0f,
    -128.0f, -144.0f, -160.0f, -176.0f, -192.0f, -208.0f, -224.0f, -240.0f,
    -256.0f, -288.0f, -320.0f, -352.0f, -384.0f, -416.0f, -448.0f, -NAN,
};

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* 2^(e-127); e = 0 gives the subnormal 2^-127 and e = 255 infinity, as MLX does. */
static inline float e8m0_f32(uint8_t e) { return f32_from_bits(e ? (uint32_t)e << 23 : 0x00400000u); }

float mnv__qscale(const mnv_qformat *f, const void *scales, int64_t g, float global_scale) {
    switch (f->mode) {
    case MNV_QMODE_MXFP4:
    case MNV_QMODE_MXFP8: return e8m0_f32(((const uint8_t *)scales)[g]);
    case MNV_QMODE_NVFP4: return E4M3[((const uint8_t *)scales)[g]] * global_scale;
    default: break;
    }
    switch (f->scale_dtype) {
    case MNV_DTYPE_F32: return ((const float *)scales)[g];
    case MNV_DTYPE_F16: return mnv_f16_to_f32(((const uint16_t *)scales)[g]);
    default: return mnv_bf16_to_f32(((const uint16_t *)scales)[g]);
    }
}

/* ---- unpacking ------------------------------------------------------------------ */

/* The packed row as little-endian bytes: element j is bits [j*bits, (j+1)*bits)
 * of the stream. Every 8 elements fill exactly `bits` bytes, so a run that starts
 * at a multiple of 8 starts on a byte. */
void mnv__qcodes(const uint32_t *row, int32_t bits, int64_t e0, int64_t cnt, uint8_t *out) {
    const uint8_t *p = (const uint8_t *)row + e0 / 8 * bits;
    if (bits == 8) {
        memcpy(out, p, (size_t)cnt);
        return;
    }
    if (bits == 4) {
        for (int64_t i = 0; i < cnt / 2; i++) {
            out[2 * i] = p[i] & 15;
            out[2 * i + 1] = p[i] >> 4;
        }
        return;
    }
    const uint32_t mask = (1u << bits) - 1;
    for (int64_t i = 0; i < cnt; i += 8, p += bits) {
        uint64_t v = 0;
        for (int b = 0; b < bits; b++) v |= (uint64_t)p[b] << (8 * b);
        for (int t = 0; t < 8; t++) out[i + t] = (uint8_t)((v >> (t * bits)) & mask);
    }
}

void mnv__qdequant_groups(const mnv_qformat *f, const uint32_t *row, const void *scales, const void *biases,
                          float global_scale, int64_t g0, int64_t ng, float *out) {
    const int64_t G = f->group_size;
    uint8_t q[128];
    for (int64_t g = g0; g < g0 + ng; g++, out += G) {
        mnv__qcodes(row, f->bits, g * G, G, q);
        const float s = mnv__qscale(f, scales, g, global_scale);
        switch (f->mode) {
        case MNV_QMODE_AFFINE: {
            const float b = mnv__qscale(f, biases, g, global_scale);
            for (int64_t t = 0; t < G; t++) out[t] = s * (float)q[t] + b;
            break;
        }
        case MNV_QMODE_MXFP8:
            for (int64_t t = 0; t < G; t++) out[t] = E4M3[q[t]] * s;
            break;
        default: /* mxfp4, nvfp4 */
            for (int64_t t = 0; t < G; t++) out[t] = E2M1[q[t] & 15] * s;
            break;
        }
    }
}

/* ---- the portable product ------------------------------------------------------- */

enum { SCALAR_KC = 256, SCALAR_JB = 4 }; /* W rows x k elements dequantized per step, on the stack */

static inline size_t scale_size(const mnv_qformat *f) {
    return f->mode == MNV_QMODE_AFFINE ? mnv_dtype_size(f->scale_dtype) : 1;
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

/* Blocks of SCALAR_JB W rows x SCALAR_KC elements are dequantized once and
 * used for every row of x, so each packed byte is read once. */
void mnv__qmatmul_scalar(const mnv_qmatmul_args *a, int ith, int nth) {
    const mnv_qformat *f = &a->fmt;
    const int64_t G = f->group_size, ss = (int64_t)scale_size(f);
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, 4, &n0, &n1);
    float wbuf[SCALAR_JB][SCALAR_KC];
    for (int64_t j0 = n0; j0 < n1; j0 += SCALAR_JB) {
        const int64_t jb = MNV_MIN(SCALAR_JB, n1 - j0);
        for (int64_t k0 = 0; k0 < a->k; k0 += SCALAR_KC) {
            const int64_t kc = MNV_MIN(SCALAR_KC, a->k - k0);
            for (int64_t jj = 0; jj < jb; jj++) {
                const int64_t j = j0 + jj;
                mnv__qdequant_groups(f, a->w + j * a->ldw, (const char *)a->scales + j * a->lds * ss,
                                     a->biases ? (const char *)a->biases + j * a->lds * ss : NULL,
                                     a->global_scale, k0 / G, kc / G, wbuf[jj]);
            }
            for (int64_t i = 0; i < a->m; i++) {
                const float *x = a->x + i * a->ldx + k0;
                float *y = a->y + i * a->ldy + j0;
                for (int64_t jj = 0; jj < jb; jj++) {
                    const float d = scalar_dot(x, wbuf[jj], kc);
                    y[jj] = k0 ? y[jj] + d : d;
                }
            }
        }
    }
}

/* ---- implementation table ---------------------------------------------------- */

typedef struct {
    const char *name;
    mnv_isa isa;       /* the level it needs */
    int feat;          /* and this optional feature (mnv_cpu_feat), or -1 */
    bool int8;         /* rounds activations to int8 (not exact) */
    void (*run)(const mnv_qmatmul_args *a, int ith, int nth);
} qmatmul_impl;

#if defined(__x86_64__) || defined(_M_X64)
static void run_avx512_vnni(const mnv_qmatmul_args *a, int ith, int nth) { mnv__qmatmul_avx512(a, ith, nth, true); }
static void run_avx512(const mnv_qmatmul_args *a, int ith, int nth) { mnv__qmatmul_avx512(a, ith, nth, false); }
static void run_avx2_int8(const mnv_qmatmul_args *a, int ith, int nth) { mnv__qmatmul_avx2(a, ith, nth, true); }
static void run_avx2(const mnv_qmatmul_args *a, int ith, int nth) { mnv__qmatmul_avx2(a, ith, nth, false); }
#endif

/* Best first: the automatic choice is the first one the host (and the
 * MINERVA_CPU cap) allows. */
static const qmatmul_impl impls[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {"avx512-vnni", MNV_ISA_AVX512, MNV_CPU_AVX512_VNNI, true, run_avx512_vnni},
    /* an AVX-512 host without VNNI runs the AVX2 int8 kernels, faster than
     * its f32 ones; exact products still take the f32 row that follows */
    {"avx2-int8", MNV_ISA_AVX2, -1, true, run_avx2_int8},
    {"avx512", MNV_ISA_AVX512, -1, false, run_avx512},
    {"avx2", MNV_ISA_AVX2, -1, false, run_avx2},
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    {"neon-dot", MNV_ISA_NEON_DOT, -1, true, mnv__qmatmul_neon_dot},
    {"neon", MNV_ISA_NEON, -1, false, mnv__qmatmul_neon},
#endif
    {"scalar", MNV_ISA_SCALAR, -1, false, mnv__qmatmul_scalar},
};
enum { N_IMPLS = sizeof impls / sizeof impls[0] };

static bool allowed(const qmatmul_impl *q) {
    return mnv__isa_ok(q->isa) && (q->feat < 0 || mnv__cpu_has((mnv_cpu_feat)q->feat));
}

/* The only process-wide state here: a test override of the host's choice. */
static _Atomic(const qmatmul_impl *) forced_impl;

/* The environment's MNV_QMATMUL (an implementation's name, for comparisons),
 * read once; NULL when unset or unknown. */
static const qmatmul_impl *env_impl(void) {
    static _Atomic(const qmatmul_impl *) chosen;
    static _Atomic int read;
    if (atomic_load_explicit(&read, memory_order_acquire)) return atomic_load(&chosen);
    const char *env = getenv("MNV_QMATMUL");
    for (int i = 0; env && i < N_IMPLS; i++)
        if (strcmp(impls[i].name, env) == 0) atomic_store(&chosen, &impls[i]);
    atomic_store_explicit(&read, 1, memory_order_release);
    return atomic_load(&chosen);
}

/* The automatic choice: the fastest implementation the host has under the
 * cap. The int8 paths ("avx512-vnni") round activations to int8 per group (as
 * llama.cpp does); MNV_QMATMUL=avx512 (or scalar) selects an exact
 * f32-activation path, as MLX computes, for comparisons. */
static const qmatmul_impl *auto_impl(void) {
    const qmatmul_impl *e = env_impl();
    if (e && allowed(e)) return e;
    for (int i = 0; i < N_IMPLS; i++)
        if (allowed(&impls[i])) return &impls[i];
    return &impls[N_IMPLS - 1];
}

/* The exact (f32-activation) implementation of the host: what a session
 * with exact_quant runs where the automatic choice rounds x to int8. */
static const qmatmul_impl *exact_impl(const qmatmul_impl *impl) {
    if (!impl->int8) return impl;
    for (const qmatmul_impl *q = impl + 1; q < impls + N_IMPLS; q++) /* its exact twin follows it */
        if (!q->int8 && allowed(q)) return q;
    return &impls[N_IMPLS - 1];
}

static const qmatmul_impl *current_impl(void) {
    const qmatmul_impl *f = atomic_load_explicit(&forced_impl, memory_order_relaxed);
    return f ? f : auto_impl();
}

bool mnv_cpu_qmatmul_force(const char *name) {
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

const char *mnv_cpu_qmatmul_impl(void) { return current_impl()->name; }
const char *mnv_cpu_qmatmul_impl_exact(void) { return exact_impl(current_impl())->name; }

bool mnv_cpu_qmatmul_impl_at(int i, mnv_cpu_impl_desc *out) {
    if (i < 0 || i >= N_IMPLS) return false;
    const qmatmul_impl *q = &impls[i];
    *out = (mnv_cpu_impl_desc){q->name, q->isa,
                               mnv__isa_host(q->isa) && (q->feat < 0 || mnv__cpu_has((mnv_cpu_feat)q->feat)), q->int8};
    return true;
}

/* Enough for every implementation and for any smaller m (a mixture-of-experts
 * layer sizes it once for all its tokens and runs experts with fewer):
 *   m <= GEMV_MAX_M  each thread prepares its own copy of x (no barrier)
 *   larger m         x prepared once (shared; at least 32 rows' worth, for the
 *                    x panel of mid-size m; for mxfp8 at least its bf16
 *                    copy) + one panel per thread
 * plus 64 bytes to align the start. */
size_t mnv_cpu_qmatmul_scratch_size(int64_t m, int64_t k, const mnv_qformat *fmt, int nth) {
    if (m <= 0 || k <= 0) return 0;
    if (nth < 1) nth = 1;
    const size_t xr = mnv__qx_row_bytes(k), xp = mnv__qx_row_bytes_for(k, fmt);
    size_t dec = (size_t)nth * (size_t)MNV_MIN(m, MNV_QMATMUL_GEMV_MAX_M) * xr;
    size_t pre = m > MNV_QMATMUL_GEMV_MAX_M ? (size_t)MNV_MAX(m, 32) * xp + (size_t)nth * mnv__qpanel_bytes() : 0;
    return MNV_MAX(dec, pre) + 64;
}

void mnv_cpu_qmatmul(const mnv_qmatmul_args *a, int ith, int nth) {
    if (a->m <= 0 || a->n <= 0) return;
    if (a->k <= 0) { /* an empty sum */
        int64_t n0, n1;
        mnv__qsplit(a->n, ith, nth, 4, &n0, &n1);
        for (int64_t i = 0; i < a->m; i++)
            for (int64_t j = n0; j < n1; j++) a->y[i * a->ldy + j] = 0.0f;
        return;
    }
    const qmatmul_impl *impl = current_impl();
    impl = a->exact ? exact_impl(impl) : impl;
    if (!a->row_invariant || a->m <= MNV_QMATMUL_GEMV_MAX_M) {
        impl->run(a, ith, nth);
        return;
    }
    /* in passes of the decode kernel, whose arithmetic for a row does not
     * depend on the other rows of its pass. Each thread prepares its copy of
     * a pass's rows at an offset that depends on the pass's row count, so a
     * thread starting a shorter last pass could overwrite the rows another
     * still reads: a barrier between passes. */
    for (int64_t i0 = 0; i0 < a->m; i0 += MNV_QMATMUL_GEMV_MAX_M) {
        mnv_qmatmul_args sub = *a;
        sub.x = a->x + i0 * a->ldx;
        sub.y = a->y + i0 * a->ldy;
        sub.m = MNV_MIN(a->m - i0, (int64_t)MNV_QMATMUL_GEMV_MAX_M);
        if (i0 > 0 && nth > 1 && a->barrier) a->barrier(a->barrier_ctx);
        impl->run(&sub, ith, nth);
    }
}

/* ---- quantized embedding lookup ---------------------------------------------- */

void mnv_cpu_qget_rows(const uint32_t *w, int64_t ldw, const void *scales, const void *biases, int64_t lds,
                       const mnv_qformat *fmt, float global_scale, int64_t k, const int32_t *ids, float *y,
                       int64_t rows) {
    const int64_t ss = (int64_t)scale_size(fmt);
    for (int64_t r = 0; r < rows; r++) {
        const int64_t id = ids[r];
        mnv__qdequant_groups(fmt, w + id * ldw, (const char *)scales + id * lds * ss,
                             biases ? (const char *)biases + id * lds * ss : NULL, global_scale, 0,
                             k / fmt->group_size, y + r * k);
    }
}
