/* Quantized y = x * dequant(W)^T with AArch64 Advanced SIMD (NEON), f32
 * activations (exact: the numerics of the portable path up to the order of
 * the f32 sums), for every format: affine 2-8 bits, mxfp4, mxfp8, nvfp4.
 * Part of every AArch64 CPU, no compiler flag; what an Apple Silicon build
 * runs when activations must not be rounded to int8.
 *
 * Blocks of JB rows of W by at most KC elements are dequantized once into
 * an L1-resident f32 panel (each packed byte read once) and dotted with
 * every row of x, JB W rows at a time per x row. Affine weights are s*q + b
 * with two roundings, as quant/quant.h defines them; E2M1 codes become
 * 2*e2m1 integers by a table lookup and are scaled by s/2, which is exact. */
#if defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>

#include "backend/cpu/qmatmul.h"

enum { JB = 4, KC = 512 };

/* Codes of elements [e0, e0 + cnt) (multiples of 16) as one byte each:
 * 8 and 4 bits with vector loads, the other widths through mnv__qcodes. */
void mnv__qcodes_neon(const uint32_t *row, int32_t bits, int64_t e0, int64_t cnt, uint8_t *out) {
    const uint8_t *p = (const uint8_t *)row + e0 / 8 * bits;
    if (bits == 8) {
        for (int64_t i = 0; i < cnt; i += 16) vst1q_u8(out + i, vld1q_u8(p + i));
    } else if (bits == 4) { /* byte b: element 2b in the low nibble, 2b+1 in the high */
        const uint8x16_t lo4 = vdupq_n_u8(15);
        int64_t i = 0;
        for (; i + 32 <= cnt; i += 32) {
            const uint8x16_t b = vld1q_u8(p + i / 2);
            const uint8x16_t lo = vandq_u8(b, lo4), hi = vshrq_n_u8(b, 4);
            vst1q_u8(out + i, vzip1q_u8(lo, hi));
            vst1q_u8(out + i + 16, vzip2q_u8(lo, hi));
        }
        if (i < cnt) { /* 16 left */
            const uint8x8_t b = vld1_u8(p + i / 2);
            const uint8x8_t lo = vand_u8(b, vdup_n_u8(15)), hi = vshr_n_u8(b, 4);
            vst1_u8(out + i, vzip1_u8(lo, hi));
            vst1_u8(out + i + 8, vzip2_u8(lo, hi));
        }
    } else {
        mnv__qcodes(row, bits, e0, cnt, out);
    }
}

/* 2*e2m1(c) for the 16 E2M1 codes: integers, exact in int8. */
const int8_t mnv__e2m1x2_neon[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static inline size_t scale_bytes(const mnv_qformat *f) {
    return f->mode == MNV_QMODE_AFFINE ? mnv_dtype_size(f->scale_dtype) : 1;
}

/* 16 weights from 16 codes: affine s*q + b, e2m1 (2*e2m1)*(s/2). */
static inline void weights16(const mnv_qformat *f, const uint8_t *q, float s, float b, float *out) {
    float32x4_t w[4];
    if (f->mode == MNV_QMODE_AFFINE) {
        const uint8x16_t c = vld1q_u8(q);
        const uint16x8_t l = vmovl_u8(vget_low_u8(c)), h = vmovl_high_u8(c);
        w[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(l)));
        w[1] = vcvtq_f32_u32(vmovl_high_u16(l));
        w[2] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(h)));
        w[3] = vcvtq_f32_u32(vmovl_high_u16(h));
        for (int t = 0; t < 4; t++) w[t] = vaddq_f32(vmulq_n_f32(w[t], s), vdupq_n_f32(b));
    } else { /* mxfp4, nvfp4 */
        const int8x16_t c = vqtbl1q_s8(vld1q_s8(mnv__e2m1x2_neon), vandq_u8(vld1q_u8(q), vdupq_n_u8(15)));
        const int16x8_t l = vmovl_s8(vget_low_s8(c)), h = vmovl_high_s8(c);
        w[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(l)));
        w[1] = vcvtq_f32_s32(vmovl_high_s16(l));
        w[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)));
        w[3] = vcvtq_f32_s32(vmovl_high_s16(h));
        for (int t = 0; t < 4; t++) w[t] = vmulq_n_f32(w[t], 0.5f * s);
    }
    for (int t = 0; t < 4; t++) vst1q_f32(out + 4 * t, w[t]);
}

/* Groups [g0, g0 + ng) of W row j as f32. */
static void dequant_row(const mnv_qmatmul_args *a, int64_t j, int64_t g0, int64_t ng, float *out) {
    const mnv_qformat *f = &a->fmt;
    const int64_t G = f->group_size, ss = (int64_t)scale_bytes(f);
    const uint32_t *row = a->w + j * a->ldw;
    const char *sc = (const char *)a->scales + j * a->lds * ss;
    const char *bi = a->biases ? (const char *)a->biases + j * a->lds * ss : NULL;
    if (f->mode == MNV_QMODE_MXFP8) { /* byte codes through the E4M3 table */
        mnv__qdequant_groups(f, row, sc, bi, a->global_scale, g0, ng, out);
        return;
    }
    uint8_t q[128];
    for (int64_t g = g0; g < g0 + ng; g++, out += G) {
        mnv__qcodes_neon(row, f->bits, g * G, G, q);
        const float s = mnv__qscale(f, sc, g, a->global_scale);
        const float b = f->mode == MNV_QMODE_AFFINE ? mnv__qscale(f, bi, g, 1.0f) : 0.0f;
        for (int64_t t = 0; t < G; t += 16) weights16(f, q + t, s, b, out + t);
    }
}

/* out[c] = x . w[c] over kc elements (a multiple of 16: whole groups), for
 * the JB rows of a panel. */
static inline float32x4_t dot_jb(const float *x, const float (*w)[KC], int64_t kc) {
    float32x4_t acc[JB][2];
    for (int c = 0; c < JB; c++) acc[c][0] = acc[c][1] = vdupq_n_f32(0.0f);
    int64_t t = 0;
    for (; t + 8 <= kc; t += 8) {
        const float32x4_t x0 = vld1q_f32(x + t), x1 = vld1q_f32(x + t + 4);
        for (int c = 0; c < JB; c++) {
            acc[c][0] = vfmaq_f32(acc[c][0], x0, vld1q_f32(w[c] + t));
            acc[c][1] = vfmaq_f32(acc[c][1], x1, vld1q_f32(w[c] + t + 4));
        }
    }
    float32x4_t s[JB];
    for (int c = 0; c < JB; c++) s[c] = vaddq_f32(acc[c][0], acc[c][1]);
    return vpaddq_f32(vpaddq_f32(s[0], s[1]), vpaddq_f32(s[2], s[3]));
}

void mnv__qmatmul_neon(const mnv_qmatmul_args *a, int ith, int nth) {
    const int64_t G = a->fmt.group_size, kcm = KC / G * G;
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    float w[JB][KC];
    for (int64_t j0 = n0; j0 < n1; j0 += JB) {
        const int64_t jb = MNV_MIN(JB, n1 - j0);
        for (int64_t k0 = 0; k0 < a->k; k0 += kcm) {
            const int64_t kc = MNV_MIN(kcm, a->k - k0);
            for (int64_t c = 0; c < JB; c++) /* the last row repeats past the edge */
                if (c < jb) dequant_row(a, j0 + c, k0 / G, kc / G, w[c]);
                else memcpy(w[c], w[jb - 1], (size_t)kc * sizeof(float));
            for (int64_t i = 0; i < a->m; i++) {
                float out[JB], *y = a->y + i * a->ldy + j0;
                vst1q_f32(out, dot_jb(a->x + i * a->ldx + k0, (const float(*)[KC])w, kc));
                for (int64_t c = 0; c < jb; c++) y[c] = k0 ? y[c] + out[c] : out[c];
            }
        }
    }
}

#endif
