/* Vector primitives and attention with AArch64 Advanced SIMD (NEON), part
 * of every AArch64 CPU: no compiler flag is needed, and the same code is
 * what an Apple Silicon build runs.
 *
 * Attention: all query heads that share a KV head are processed together,
 * so each key and value row (f32, or f16/bf16/q8/q4 widened once into a buffer) is
 * read once per group; scores for a block of keys, then an online
 * (flash-style) softmax per block. head_dim must be a multiple of 4 and at
 * most 256, and a group at most 16 heads (the portable kernel runs
 * otherwise). */
#if defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>
#include <string.h>
#include <math.h>

#include "backend/cpu/ops.h"
#include "backend/cpu/vec.h"

static float dot(const float *a, const float *b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float r = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static void axpy(float *y, const float *x, float a, int64_t n) {
    const float32x4_t va = vdupq_n_f32(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
        vst1q_f32(y + i + 4, vfmaq_f32(vld1q_f32(y + i + 4), va, vld1q_f32(x + i + 4)));
    }
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void scale(float *y, float a, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_n_f32(vld1q_f32(y + i), a));
    for (; i < n; i++) y[i] *= a;
}

static double sumsq(const float *x, int64_t n) {
    float64x2_t s0 = vdupq_n_f64(0), s1 = s0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v)), hi = vcvt_high_f64_f32(v);
        s0 = vfmaq_f64(s0, lo, lo);
        s1 = vfmaq_f64(s1, hi, hi);
    }
    double t = vaddvq_f64(vaddq_f64(s0, s1));
    for (; i < n; i++) t += (double)x[i] * x[i];
    return t;
}

/* e^x for 4 lanes, within a few ulp of expf over [-87.3, 88.7]: x = n ln2 + r
 * (ln2 split in two for an exact product), e^r by a degree-7 polynomial on
 * |r| <= ln2/2, 2^n built in the exponent field (in two halves so that n
 * down to -126 - 24 stays representable). Inputs beyond the range saturate
 * to 0 or infinity. */
static inline float32x4_t exp4(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-103.0f)), vdupq_n_f32(89.0f));
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    /* 2^n = 2^h * 2^(n-h), h = floor(n/2): each factor is normal */
    const int32x4_t ni = vcvtq_s32_f32(n), h = vshrq_n_s32(ni, 1);
    const int32x4_t bias = vdupq_n_s32(127);
    const float32x4_t f1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(h, bias), 23));
    const float32x4_t f2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vsubq_s32(ni, h), bias), 23));
    return vmulq_f32(vmulq_f32(p, f1), f2);
}

static void silu_mul(const float *g, const float *u, float *y, int64_t n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t gv = vld1q_f32(g + i);
        const float32x4_t s = vdivq_f32(gv, vaddq_f32(one, exp4(vnegq_f32(gv))));
        vst1q_f32(y + i, vmulq_f32(s, vld1q_f32(u + i)));
    }
    if (i < n) { /* the tail through the same arithmetic: no result depends on where a share ends */
        float gb[4] = {0}, ub[4] = {0}, yb[4];
        memcpy(gb, g + i, (size_t)(n - i) * 4);
        memcpy(ub, u + i, (size_t)(n - i) * 4);
        const float32x4_t gv = vld1q_f32(gb);
        vst1q_f32(yb, vmulq_f32(vdivq_f32(gv, vaddq_f32(one, exp4(vnegq_f32(gv)))), vld1q_f32(ub)));
        memcpy(y + i, yb, (size_t)(n - i) * 4);
    }
}

/* ---- attention ---------------------------------------------------------------- */

enum { MAXG = 16, MAXD = 256, KB = 16 /* keys per block */ };

/* A q8/q4 row (head_dim and group multiples of 8) into buf: codes widened
 * to f32, then bias + q * scale in one fused step per 4 elements. */
static void dequant_row(const mnv_kv_layout *l, const uint8_t *row, float *buf) {
    const int32_t D = l->head_dim, G = l->group, ng = D / G;
    for (int32_t i = 0; i < D; i += 8) {
        uint16_t sh, bh;
        memcpy(&sh, row + l->scales_at + 2 * (i / G), 2);
        memcpy(&bh, row + l->scales_at + 2 * (ng + i / G), 2);
        const float32x4_t sv = vdupq_n_f32(mnv_f16_to_f32(sh)), bv = vdupq_n_f32(mnv_f16_to_f32(bh));
        uint8x8_t q8;
        if (l->type == MNV_KV_Q8) {
            q8 = vld1_u8(row + i);
        } else {
            uint32_t w;
            memcpy(&w, row + i / 2, 4);
            const uint8x8_t b = vcreate_u8(w);
            q8 = vzip1_u8(vand_u8(b, vdup_n_u8(15)), vshr_n_u8(b, 4));
        }
        const uint16x8_t w16 = vmovl_u8(q8);
        vst1q_f32(buf + i, vfmaq_f32(bv, vcvtq_f32_u32(vmovl_u16(vget_low_u16(w16))), sv));
        vst1q_f32(buf + i + 4, vfmaq_f32(bv, vcvtq_f32_u32(vmovl_u16(vget_high_u16(w16))), sv));
    }
}

/* A cache row (D elements) as f32: the row itself, or widened into buf. */
static const float *cache_row(const mnv_kv_layout *l, const uint8_t *row, float *buf) {
    const int64_t D = l->head_dim;
    if (l->type == MNV_KV_F32) return (const float *)row;
    if (l->type == MNV_KV_Q8 || l->type == MNV_KV_Q4) {
        dequant_row(l, row, buf);
        return buf;
    }
    int64_t i = 0;
    uint16_t h[4];
    if (l->type == MNV_KV_F16) {
        for (; i + 4 <= D; i += 4) {
            memcpy(h, row + 2 * i, 8);
            vst1q_f32(buf + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h))));
        }
    } else {
        for (; i + 4 <= D; i += 4) {
            memcpy(h, row + 2 * i, 8);
            vst1q_f32(buf + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(h), 16)));
        }
    }
    return buf;
}

typedef struct {
    const float *q[MAXG];
    float *out[MAXG];
    float m[MAXG], l[MAXG];
    float acc[MAXG][MAXD];
} group_state;

static void attend_group(const mnv_attn_args *a, int64_t t, int64_t kvh, int64_t G, group_state *st) {
    const int64_t D = a->kc.lay.head_dim, H = a->n_head, s = a->seq[t], p = a->pos[t];
    const int64_t lo = a->window > 0 ? MNV_MAX(0, p - a->window + 1) : 0;
    const uint8_t *kb = (const uint8_t *)a->k + kvh * a->kc.lay.row_bytes;
    const uint8_t *vb = (const uint8_t *)a->v + kvh * a->vc.lay.row_bytes;
    size_t koff[KB], voff[KB];
    float kbuf[MAXD], sc[MAXG][KB];
    for (int64_t g = 0; g < G; g++) {
        const int64_t h = kvh * G + g;
        st->q[g] = a->q + (t * H + h) * D;
        st->out[g] = a->out + (t * H + h) * D;
        st->m[g] = a->sinks ? a->sinks[h] : -INFINITY;
        st->l[g] = a->sinks ? 1.0f : 0.0f; /* a sink adds exp(sink - m) to the denominator */
        for (int64_t d = 0; d < D; d++) st->acc[g][d] = 0.0f;
    }
    for (int64_t j0 = lo; j0 <= p; j0 += KB) {
        const int nb = (int)MNV_MIN(KB, p - j0 + 1);
        mnv_attn_rows(a, s, j0, nb, koff, voff);
        for (int j = 0; j < nb; j++) {
            const float *k = cache_row(&a->kc.lay, kb + koff[j], kbuf);
            for (int64_t g = 0; g < G; g++) sc[g][j] = dot(st->q[g], k, D) * a->scale;
        }
        for (int64_t g = 0; g < G; g++) {
            float bm = -INFINITY;
            for (int j = 0; j < nb; j++) bm = sc[g][j] > bm ? sc[g][j] : bm;
            if (bm > st->m[g]) {
                const float corr = expf(st->m[g] - bm);
                st->l[g] *= corr;
                scale(st->acc[g], corr, D);
                st->m[g] = bm;
            }
            for (int j = 0; j < nb; j++) {
                sc[g][j] = expf(sc[g][j] - st->m[g]);
                st->l[g] += sc[g][j];
            }
        }
        for (int j = 0; j < nb; j++) {
            const float *v = cache_row(&a->vc.lay, vb + voff[j], kbuf);
            for (int64_t g = 0; g < G; g++) axpy(st->acc[g], v, sc[g][j], D);
        }
    }
    for (int64_t g = 0; g < G; g++) {
        const float inv = st->l[g] > 0 ? 1.0f / st->l[g] : 0.0f;
        for (int64_t d = 0; d < D; d++) st->out[g][d] = st->acc[g][d] * inv;
    }
}

/* A side this kernel reads: float, or q8/q4 in groups of a multiple of 8. */
static bool side_ok(const mnv_kv_layout *l) {
    if (l->type == MNV_KV_Q8 || l->type == MNV_KV_Q4) return l->group % 8 == 0;
    return l->type == MNV_KV_F32 || l->type == MNV_KV_F16 || l->type == MNV_KV_BF16;
}

static bool attention(const mnv_attn_args *a, int64_t i0, int64_t i1) {
    const int64_t Hkv = a->kc.n_head_kv, G = a->n_head / Hkv, D = a->kc.lay.head_dim;
    if (D % 4 || D > MAXD || G > MAXG || !side_ok(&a->kc.lay) || !side_ok(&a->vc.lay)) return false;
    group_state st; /* 16 KiB of accumulators */
    for (int64_t i = i0; i < i1; i++) attend_group(a, i / Hkv, i % Hkv, G, &st);
    return true;
}

static const mnv_vec_ops ops = {"neon", dot, axpy, scale, sumsq, silu_mul, attention};
const mnv_vec_ops *mnv_vec_neon(void) { return &ops; }
#endif
