/* Quantized y = x * dequant(W)^T with int8 activations and the AArch64
 * dot-product extension (SDOT), for affine weights (every bit width, groups
 * of at least 32) and mxfp4; compiled with +dotprod and run only where the
 * CPU has it (other formats, and the cases below, take the exact NEON path).
 *
 * Activations: each group of G elements of a row of x is rounded to int8
 * with its own step dx = max|x|/127 (codes rint(x * 127/max|x|)), once per
 * product into the scratch: each thread its own copy for decode (m <= 4),
 * shared rows then a barrier for larger m (without scratch, or without a
 * barrier on more than one thread, the exact path runs instead).
 *
 * Weights: blocks of JB rows of W by at most KC elements become int8 codes
 * in an L1-resident panel (each packed byte read once): affine codes q as
 * they are (8-bit codes as q - 128, their sum corrected by 128 * sum(x
 * codes)), E2M1 codes as 2*e2m1 integers. Per group, SDOT gives the integer
 * sum of code products, exact in int32, and
 *   affine: y += s * (dx * sum(qx qw)) + b * (dx * sum(qx))
 *   mxfp4:  y += (s/2) * (dx * sum(qx (2 e2m1))). */
#if defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>

#include "backend/cpu/qmatmul.h"

enum { JB = 4, KC = 1024 };

/* One prepared row of x in the scratch (mnv__qx_row_bytes(k) bytes): codes
 * padded to 128, then per group dx (f32) and the sum of the codes (i32). */
typedef struct {
    int8_t *q;
    float *dx;
    int32_t *xs;
} xrow;

static xrow xrow_at(uint8_t *base, int64_t k, int64_t i) {
    const mnv__qx_row r = mnv__qx_row_at(base, k, i);
    return (xrow){r.q, (float *)r.g0, (int32_t *)r.g1};
}

static void prep_x_row(const float *x, int64_t k, int64_t G, xrow r) {
    for (int64_t g = 0; g < k / G; g++) {
        const float *xg = x + g * G;
        float32x4_t amax = vdupq_n_f32(0.0f);
        for (int64_t t = 0; t < G; t += 4) amax = vmaxq_f32(amax, vabsq_f32(vld1q_f32(xg + t)));
        const float am = vmaxvq_f32(amax);
        const float inv = am > 0.0f ? 127.0f / am : 0.0f;
        int32x4_t sq = vdupq_n_s32(0);
        for (int64_t t = 0; t < G; t += 8) { /* round to nearest even */
            const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xg + t), inv));
            const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xg + t + 4), inv));
            sq = vaddq_s32(sq, vaddq_s32(q0, q1));
            vst1_s8(r.q + g * G + t, vqmovn_s16(vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1))));
        }
        r.dx[g] = am / 127.0f;
        r.xs[g] = vaddvq_s32(sq);
    }
}

/* ---- the weight panel ------------------------------------------------------------ */

typedef struct {
    int8_t q[JB][KC];
    float s[KC / 32][JB], b[KC / 32][JB]; /* per group: scale (s/2 for mxfp4) and bias of each row */
} panel;

static inline size_t scale_bytes(const mnv_qformat *f) {
    return f->mode == MNV_QMODE_AFFINE ? mnv_dtype_size(f->scale_dtype) : 1;
}

/* Groups [g0, g0 + ng) of W row j into panel row c. */
static void panel_row(const mnv_qmatmul_args *a, int64_t j, int64_t g0, int64_t ng, panel *p, int c) {
    const mnv_qformat *f = &a->fmt;
    const int64_t G = f->group_size, ss = (int64_t)scale_bytes(f);
    const uint32_t *row = a->w + j * a->ldw;
    const char *sc = (const char *)a->scales + j * a->lds * ss;
    const char *bi = a->biases ? (const char *)a->biases + j * a->lds * ss : NULL;
    uint8_t *q = (uint8_t *)p->q[c];
    mnv__qcodes_neon(row, f->bits, g0 * G, ng * G, q);
    if (f->mode == MNV_QMODE_MXFP4) {
        const int8x16_t lut = vld1q_s8(mnv__e2m1x2_neon);
        for (int64_t t = 0; t < ng * G; t += 16) vst1q_s8(p->q[c] + t, vqtbl1q_s8(lut, vld1q_u8(q + t)));
        for (int64_t g = 0; g < ng; g++) p->s[g][c] = 0.5f * mnv__qscale(f, sc, g0 + g, 1.0f), p->b[g][c] = 0.0f;
        return;
    }
    if (f->bits == 8)
        for (int64_t t = 0; t < ng * G; t += 16) vst1q_u8(q + t, veorq_u8(vld1q_u8(q + t), vdupq_n_u8(0x80)));
    for (int64_t g = 0; g < ng; g++) {
        p->s[g][c] = mnv__qscale(f, sc, g0 + g, 1.0f);
        p->b[g][c] = mnv__qscale(f, bi, g0 + g, 1.0f);
    }
}

/* y[c] (+)= the JB rows of the panel against one prepared row of x, over
 * ng groups from group g0 of x. */
static inline float32x4_t panel_dot(const panel *p, const xrow *x, int64_t g0, int64_t ng, int64_t G, bool affine,
                                    bool off128) {
    float32x4_t y = vdupq_n_f32(0.0f);
    for (int64_t g = 0; g < ng; g++) {
        const int8_t *xq = x->q + (g0 + g) * G;
        int32x4_t acc[JB];
        for (int c = 0; c < JB; c++) acc[c] = vdupq_n_s32(0);
        for (int64_t t = 0; t < G; t += 16) {
            const int8x16_t xv = vld1q_s8(xq + t);
            for (int c = 0; c < JB; c++) acc[c] = vdotq_s32(acc[c], xv, vld1q_s8(p->q[c] + g * G + t));
        }
        int32x4_t isum = vpaddq_s32(vpaddq_s32(acc[0], acc[1]), vpaddq_s32(acc[2], acc[3]));
        const int32_t xs = x->xs[g0 + g];
        if (off128) isum = vaddq_s32(isum, vdupq_n_s32(128 * xs));
        const float dx = x->dx[g0 + g];
        y = vfmaq_f32(y, vld1q_f32(p->s[g]), vmulq_n_f32(vcvtq_f32_s32(isum), dx));
        if (affine) y = vfmaq_f32(y, vld1q_f32(p->b[g]), vdupq_n_f32(dx * (float)xs));
    }
    return y;
}

/* Rows [n0, n1) of y from the m prepared rows of x at xbase. */
static void run_rows(const mnv_qmatmul_args *a, uint8_t *xbase, int64_t n0, int64_t n1) {
    const mnv_qformat *f = &a->fmt;
    const int64_t G = f->group_size, kcm = KC / G * G;
    const bool affine = f->mode == MNV_QMODE_AFFINE, off128 = affine && f->bits == 8;
    panel p;
    for (int64_t j0 = n0; j0 < n1; j0 += JB) {
        const int64_t jb = MNV_MIN(JB, n1 - j0);
        for (int64_t k0 = 0; k0 < a->k; k0 += kcm) {
            const int64_t kc = MNV_MIN(kcm, a->k - k0), ng = kc / G;
            for (int c = 0; c < JB; c++) panel_row(a, j0 + MNV_MIN(c, jb - 1), k0 / G, ng, &p, c);
            for (int64_t i = 0; i < a->m; i++) {
                const xrow x = xrow_at(xbase, a->k, i);
                float out[JB], *y = a->y + i * a->ldy + j0;
                vst1q_f32(out, panel_dot(&p, &x, k0 / G, ng, G, affine, off128));
                for (int64_t c = 0; c < jb; c++) y[c] = k0 ? y[c] + out[c] : out[c];
            }
        }
    }
}

void mnv__qmatmul_neon_dot(const mnv_qmatmul_args *a, int ith, int nth) {
    const mnv_qformat *f = &a->fmt;
    const bool i8_fmt = f->mode == MNV_QMODE_MXFP4 || (f->mode == MNV_QMODE_AFFINE && f->group_size >= 32);
    const bool decode = a->m <= MNV_QMATMUL_GEMV_MAX_M;
    if (!i8_fmt || !a->scratch || (!decode && nth > 1 && !a->barrier)) {
        mnv__qmatmul_neon(a, ith, nth);
        return;
    }
    const int64_t k = a->k, G = f->group_size;
    uint8_t *xbase = mnv__align64(a->scratch);
    if (decode) { /* each thread its own copy of x: cheaper than a barrier */
        xbase += (size_t)ith * (size_t)a->m * mnv__qx_row_bytes(k);
        for (int64_t i = 0; i < a->m; i++) prep_x_row(a->x + i * a->ldx, k, G, xrow_at(xbase, k, i));
    } else {
        int64_t r0, r1;
        mnv__qsplit(a->m, ith, nth, 1, &r0, &r1);
        for (int64_t i = r0; i < r1; i++) prep_x_row(a->x + i * a->ldx, k, G, xrow_at(xbase, k, i));
        if (nth > 1) a->barrier(a->barrier_ctx);
    }
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    run_rows(a, xbase, n0, n1);
}

#endif
