/* Attention with AVX2 + FMA + F16C for f32, f16 and bf16 KV caches.
 *
 * One (token, KV head) item at a time: all query heads of the group are
 * served together, so each key and value row is read (and, for f16/bf16,
 * converted in registers: F16C, or a 16-bit shift) once per group and per
 * block of 8 keys, never copied per query head. Per block, each head's 8
 * scores come from 8 dot-product accumulators reduced by a transpose tree;
 * the online (flash-style) softmax rescales the head's output only when its
 * running maximum grows; exponentials are vectorized. A sliding window starts
 * the key loop at its first key, so blocks wholly outside it are never read.
 * Query heads go in chunks of at most 8 (their accumulators stay in
 * registers); head_dim up to 256, any value (a tail shorter than 8 is read
 * through a zero-padded copy). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "backend/cpu/exp_avx2.h"
#include "backend/cpu/ops.h"

#define INLINE static inline __attribute__((always_inline))

enum { MAXG = 16, MAXD = 256, BK = 8 /* keys per block */, HCH = 8 /* heads per chunk */ };

/* 8 elements of a cache row from element i, widened to f32. */
INLINE __m256 load8(const void *row, int64_t i, mnv_dtype t) {
    if (t == MNV_DTYPE_F32) return _mm256_loadu_ps((const float *)row + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    if (t == MNV_DTYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The n < 8 elements from i, zeros after (never reads past the row). */
INLINE __m256 load_tail(const void *row, int64_t i, int64_t n, mnv_dtype t) {
    size_t es = t == MNV_DTYPE_F32 ? 4 : 2;
    _Alignas(32) uint8_t buf[32] = {0};
    memcpy(buf, (const uint8_t *)row + (size_t)i * es, (size_t)n * es);
    return load8(buf, 0, t);
}

/* Lane j of the result = sum of the lanes of v[j]. */
INLINE __m256 hsum8x8(const __m256 v[8]) {
    __m256 a = _mm256_hadd_ps(v[0], v[1]), b = _mm256_hadd_ps(v[2], v[3]);
    __m256 c = _mm256_hadd_ps(v[4], v[5]), d = _mm256_hadd_ps(v[6], v[7]);
    __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
    return _mm256_add_ps(_mm256_permute2f128_ps(ab, cd, 0x20), _mm256_permute2f128_ps(ab, cd, 0x31));
}

typedef struct {
    int64_t D, C, tail; /* head_dim = 8 C + tail */
    int G;
    float scale;
    float m[MAXG], l[MAXG];                  /* running max and denominator per head */
    _Alignas(32) float q[MAXG][MAXD];        /* the group's queries, zero-padded */
    _Alignas(32) float acc[MAXG][MAXD];      /* unnormalised outputs */
    _Alignas(32) float w[MAXG][BK];          /* the block's softmax weights */
    _Alignas(32) float part[HCH][BK][8];     /* per-key partial dot products */
} group_state;

/* 8 elements c of a row: a full slice or the zero-padded tail. */
INLINE __m256 load_slice(const group_state *s, const void *row, int64_t c, mnv_dtype t) {
    return c < s->C ? load8(row, 8 * c, t) : load_tail(row, 8 * c, s->tail, t);
}

/* part[g][j] = lanes of q_{g0+g} . k_j for the 8 keys of the block (rows
 * past the block's end repeat a valid row: their scores are masked later)
 * and the gn (compile-time) heads from g0. 8 / gn keys at a time, so that 8
 * independent sums hide the FMA latency; K is converted once per key and
 * chunk of heads. */
INLINE void block_dots(group_state *s, const void *const k[BK], int g0, int gn, mnv_dtype t) {
    const int kn = HCH / gn;
    const int64_t Cp = s->C + (s->tail > 0);
    for (int j0 = 0; j0 < BK; j0 += kn) {
        __m256 acc[HCH][HCH];
#pragma GCC unroll 8
        for (int g = 0; g < gn; g++)
#pragma GCC unroll 8
            for (int j = 0; j < kn; j++) acc[g][j] = _mm256_setzero_ps();
        for (int64_t c = 0; c < Cp; c++) {
            __m256 qv[HCH];
#pragma GCC unroll 8
            for (int g = 0; g < gn; g++) qv[g] = _mm256_load_ps(s->q[g0 + g] + 8 * c);
#pragma GCC unroll 8
            for (int j = 0; j < kn; j++) {
                __m256 kv = load_slice(s, k[j0 + j], c, t);
#pragma GCC unroll 8
                for (int g = 0; g < gn; g++) acc[g][j] = _mm256_fmadd_ps(qv[g], kv, acc[g][j]);
            }
        }
#pragma GCC unroll 8
        for (int g = 0; g < gn; g++)
#pragma GCC unroll 8
            for (int j = 0; j < kn; j++) _mm256_store_ps(s->part[g][j0 + j], acc[g][j]);
    }
}

/* Online softmax of head g0+g over the block: rescale its output if the
 * maximum grew, then w = exp(score - max) (0 past nb keys). */
static void block_softmax(group_state *s, int g0, int gn, int nb) {
    const __m256 valid = _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(nb), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    for (int g = 0; g < gn; g++) {
        __m256 rows[BK];
        for (int j = 0; j < BK; j++) rows[j] = _mm256_load_ps(s->part[g][j]);
        __m256 sc = _mm256_mul_ps(hsum8x8(rows), _mm256_set1_ps(s->scale));
        sc = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), sc, valid);
        int h = g0 + g;
        float bm = hmax256(sc);
        if (bm > s->m[h]) {
            float corr = expf(s->m[h] - bm);
            s->l[h] *= corr;
            __m256 vc = _mm256_set1_ps(corr);
            for (int64_t c = 0; c < s->C + (s->tail > 0); c++)
                _mm256_store_ps(s->acc[h] + 8 * c, _mm256_mul_ps(vc, _mm256_load_ps(s->acc[h] + 8 * c)));
            s->m[h] = bm;
        }
        __m256 w = _mm256_and_ps(exp256(_mm256_sub_ps(sc, _mm256_set1_ps(s->m[h]))), valid);
        s->l[h] += hsum256(w);
        _mm256_store_ps(s->w[h], w);
    }
}

/* acc[g] += sum_j w[g][j] v_j over the nb keys, for the gn (compile-time)
 * heads from g0 and cn slices of 8 at a time (8 independent sums); V is
 * converted once per key, slice and chunk of heads. */
INLINE void block_values_cn(group_state *s, const void *const v[BK], int nb, int g0, int gn, int cn,
                            int64_t c, mnv_dtype t) {
    __m256 o[HCH][HCH];
#pragma GCC unroll 8
    for (int g = 0; g < gn; g++)
#pragma GCC unroll 8
        for (int i = 0; i < cn; i++) o[g][i] = _mm256_load_ps(s->acc[g0 + g] + 8 * (c + i));
    for (int j = 0; j < nb; j++) {
        __m256 bw[HCH];
#pragma GCC unroll 8
        for (int g = 0; g < gn; g++) bw[g] = _mm256_broadcast_ss(&s->w[g0 + g][j]);
#pragma GCC unroll 8
        for (int i = 0; i < cn; i++) {
            __m256 vv = load_slice(s, v[j], c + i, t);
#pragma GCC unroll 8
            for (int g = 0; g < gn; g++) o[g][i] = _mm256_fmadd_ps(bw[g], vv, o[g][i]);
        }
    }
#pragma GCC unroll 8
    for (int g = 0; g < gn; g++)
#pragma GCC unroll 8
        for (int i = 0; i < cn; i++) _mm256_store_ps(s->acc[g0 + g] + 8 * (c + i), o[g][i]);
}

INLINE void block_values(group_state *s, const void *const v[BK], int nb, int g0, int gn, mnv_dtype t) {
    const int cn = HCH / gn;
    const int64_t Cp = s->C + (s->tail > 0);
    int64_t c = 0;
    for (; c + cn <= Cp; c += cn) block_values_cn(s, v, nb, g0, gn, cn, c, t);
    for (; c < Cp; c++) block_values_cn(s, v, nb, g0, gn, 1, c, t);
}

/* One block of nb keys for the heads [g0, g0 + gn), gn a constant. */
INLINE void block_chunk(group_state *s, const void *const k[BK], const void *const v[BK], int nb, int g0,
                        int gn, mnv_dtype t) {
    block_dots(s, k, g0, gn, t);
    block_softmax(s, g0, gn, nb);
    block_values(s, v, nb, g0, gn, t);
}

/* Every head of the group over one block, in chunks of 8, 4, 2, 1 heads. */
INLINE void block_all(group_state *s, const void *const k[BK], const void *const v[BK], int nb, mnv_dtype t) {
    int g0 = 0;
    for (; g0 + 8 <= s->G; g0 += 8) block_chunk(s, k, v, nb, g0, 8, t);
    if (s->G - g0 >= 4) block_chunk(s, k, v, nb, g0, 4, t), g0 += 4;
    if (s->G - g0 >= 2) block_chunk(s, k, v, nb, g0, 2, t), g0 += 2;
    if (s->G - g0 >= 1) block_chunk(s, k, v, nb, g0, 1, t);
}

INLINE void attend_group(const mnv_attn_args *a, int64_t t, int64_t kvh, group_state *s, mnv_dtype dt) {
    const mnv_cache_shape *cs = &a->cache;
    const int64_t D = cs->head_dim, H = a->n_head, G = s->G, Dp = 8 * (s->C + (s->tail > 0));
    const int64_t sq = a->seq[t], p = a->pos[t];
    const int64_t lo = a->window > 0 && p - a->window + 1 > 0 ? p - a->window + 1 : 0;
    const size_t es = dt == MNV_DTYPE_F32 ? 4 : 2;
    const uint8_t *kb = (const uint8_t *)a->k + (size_t)(kvh * D) * es;
    const uint8_t *vb = (const uint8_t *)a->v + (size_t)(kvh * D) * es;
    size_t off[BK];
    for (int64_t g = 0; g < G; g++) {
        int64_t h = kvh * G + g;
        const float *qh = a->q + (t * H + h) * D;
        for (int64_t i = 0; i < Dp; i++) s->q[g][i] = i < D ? qh[i] : 0.0f, s->acc[g][i] = 0.0f;
        s->m[g] = a->sinks ? a->sinks[h] : -INFINITY; /* a sink adds exp(sink - m) to the denominator */
        s->l[g] = a->sinks ? 1.0f : 0.0f;
    }
    for (int64_t j0 = lo; j0 <= p; j0 += BK) {
        int nb = (int)(p - j0 + 1 < BK ? p - j0 + 1 : BK);
        const void *k[BK], *v[BK];
        mnv_attn_rows(a, sq, j0, nb, off);
        for (int j = 0; j < BK; j++) {
            size_t o = off[j < nb ? j : 0] * es;
            k[j] = kb + o, v[j] = vb + o;
        }
        block_all(s, k, v, nb, dt);
    }
    for (int64_t g = 0; g < G; g++) {
        float *out = a->out + (t * H + kvh * G + g) * D, inv = s->l[g] > 0 ? 1.0f / s->l[g] : 0.0f;
        for (int64_t i = 0; i < D; i++) out[i] = s->acc[g][i] * inv;
    }
}

static void run_f32(const mnv_attn_args *a, int64_t t, int64_t kvh, group_state *s) {
    attend_group(a, t, kvh, s, MNV_DTYPE_F32);
}
static void run_f16(const mnv_attn_args *a, int64_t t, int64_t kvh, group_state *s) {
    attend_group(a, t, kvh, s, MNV_DTYPE_F16);
}
static void run_bf16(const mnv_attn_args *a, int64_t t, int64_t kvh, group_state *s) {
    attend_group(a, t, kvh, s, MNV_DTYPE_BF16);
}

/* Items [i0, i1) of T * n_head_kv (token, KV head) pairs; false when this
 * kernel does not apply (then nothing was written). */
bool mnv__attention_avx2(const mnv_attn_args *a, int64_t i0, int64_t i1) {
    const int64_t Hkv = a->cache.n_head_kv, D = a->cache.head_dim, G = a->n_head / Hkv;
    const mnv_dtype dt = a->cache.dtype;
    if (D < 1 || D > MAXD || G < 1 || G > MAXG ||
        (dt != MNV_DTYPE_F32 && dt != MNV_DTYPE_F16 && dt != MNV_DTYPE_BF16))
        return false;
    void (*run)(const mnv_attn_args *, int64_t, int64_t, group_state *) =
        dt == MNV_DTYPE_F32 ? run_f32 : dt == MNV_DTYPE_F16 ? run_f16 : run_bf16;
    group_state s;
    s.D = D, s.C = D / 8, s.tail = D % 8, s.G = (int)G, s.scale = a->scale;
    for (int64_t i = i0; i < i1; i++) run(a, i / Hkv, i % Hkv, &s);
    return true;
}
#endif
