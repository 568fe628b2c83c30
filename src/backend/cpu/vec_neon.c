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

enum { MAXG = MNV_ATTN_ROWS, MAXD = 256, KB = 16 /* keys per block */ };

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
    int64_t lo[MAXG], hi[MAXG];
    float acc[MAXG][MAXD];
} tile_state;

/* The tile's rows over keys [k0, k1) in blocks of KB keys from k0, each
 * row's scores masked to its own key range; only keys of the union of the
 * ranges are read. */
static void attend_tile(const mnv_attn_args *a, mnv_attn_tile *t, tile_state *st) {
    const int64_t D = a->kc.lay.head_dim, R = t->n;
    const uint8_t *kb = (const uint8_t *)a->k + t->kvh * a->kc.lay.row_bytes;
    const uint8_t *vb = (const uint8_t *)a->v + t->kvh * a->vc.lay.row_bytes;
    size_t koff[KB], voff[KB];
    float kbuf[MAXD], sc[MAXG][KB];
    int64_t ulo = INT64_MAX, uhi = INT64_MIN;
    for (int64_t g = 0; g < R; g++) {
        st->lo[g] = MNV_MAX(t->lo[g], t->k0), st->hi[g] = MNV_MIN(t->hi[g], t->k1 - 1);
        if (st->lo[g] <= st->hi[g]) ulo = MNV_MIN(ulo, st->lo[g]), uhi = MNV_MAX(uhi, st->hi[g]);
        for (int64_t d = 0; d < D; d++) st->acc[g][d] = 0.0f;
    }
    for (int64_t j0 = ulo <= uhi ? t->k0 + (ulo - t->k0) / KB * KB : uhi + 1; j0 <= uhi; j0 += KB) {
        const int64_t f = MNV_MAX(j0, ulo);
        const int n = (int)(MNV_MIN(j0 + KB - 1, uhi) - f + 1);
        mnv_attn_rows(a, t->seq, f, n, koff, voff);
        int jl[MAXG], jh[MAXG]; /* each row's keys in the block: [jl, jh) of the n read */
        for (int64_t g = 0; g < R; g++) {
            jl[g] = (int)MNV_MAX(0, st->lo[g] - f), jh[g] = (int)MNV_MIN(n, st->hi[g] - f + 1);
            if (jh[g] < jl[g]) jh[g] = jl[g];
        }
        for (int j = 0; j < n; j++) {
            const float *k = cache_row(&a->kc.lay, kb + koff[j], kbuf);
            for (int64_t g = 0; g < R; g++)
                if (j >= jl[g] && j < jh[g]) sc[g][j] = dot(t->q[g], k, D) * a->scale;
        }
        for (int64_t g = 0; g < R; g++) {
            if (jl[g] == jh[g]) continue;
            float bm = -INFINITY;
            for (int j = jl[g]; j < jh[g]; j++) bm = sc[g][j] > bm ? sc[g][j] : bm;
            if (bm > t->m[g]) {
                const float corr = expf(t->m[g] - bm);
                t->l[g] *= corr;
                scale(st->acc[g], corr, D);
                t->m[g] = bm;
            }
            for (int j = jl[g]; j < jh[g]; j++) {
                sc[g][j] = expf(sc[g][j] - t->m[g]);
                t->l[g] += sc[g][j];
            }
        }
        for (int j = 0; j < n; j++) {
            const float *v = cache_row(&a->vc.lay, vb + voff[j], kbuf);
            for (int64_t g = 0; g < R; g++)
                if (j >= jl[g] && j < jh[g]) axpy(st->acc[g], v, sc[g][j], D);
        }
    }
    for (int64_t g = 0; g < R; g++) memcpy(t->acc[g], st->acc[g], sizeof(float) * (size_t)D);
}

/* A side this kernel reads: float, or q8/q4 in groups of a multiple of 8. */
static bool side_ok(const mnv_kv_layout *l) {
    if (l->type == MNV_KV_Q8 || l->type == MNV_KV_Q4) return l->group % 8 == 0;
    return l->type == MNV_KV_F32 || l->type == MNV_KV_F16 || l->type == MNV_KV_BF16;
}

static bool attention(const mnv_attn_args *a, mnv_attn_tile *t) {
    const int64_t D = a->kc.lay.head_dim;
    if (D % 4 || D > MAXD || t->n > MAXG || !side_ok(&a->kc.lay) || !side_ok(&a->vc.lay)) return false;
    tile_state st; /* 16 KiB of accumulators */
    attend_tile(a, t, &st);
    return true;
}

static const mnv_vec_ops ops = {"neon", dot, axpy, scale, sumsq, silu_mul, attention, NULL}; /* convert: the portable loops */
const mnv_vec_ops *mnv_vec_neon(void) { return &ops; }
#endif
