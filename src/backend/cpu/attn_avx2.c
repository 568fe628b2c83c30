/* Attention tiles (ops.h: mnv_attn_tile) with AVX2 + FMA + F16C for KV
 * caches of every element type (f32, f16, bf16, q8, q4; K and V of any two
 * types).
 *
 * The rows of a tile (query tokens and the query heads of one KV head's
 * group) are served together, so each key and value row is read (and
 * converted in registers: F16C, a 16-bit shift, or for q8/q4 the codes
 * widened to f32 and scale * q + bias in one FMA) once per chunk of up to 8
 * rows and per block of 8 keys, never copied per row. Per block, each row's
 * 8 scores come from 8 dot-product accumulators reduced by a transpose tree
 * and are masked to the row's own key range (causal limit, window start);
 * the online (flash-style) softmax rescales the row's output only when its
 * running maximum grows; exponentials are vectorized. Blocks outside every
 * row's range are never read; a chunk of rows none of which sees a block
 * skips it. head_dim up to 256, any value for float caches (a tail shorter
 * than 8 is read through a zero-padded copy), a multiple of 8 with groups
 * of 8 or more for quantized ones. One copy of the per-block code per
 * element type (the K side and the V side are separate functions), so every
 * pair of K and V types runs the same code. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "backend/cpu/exp_avx2.h"
#include "backend/cpu/ops.h"

#define INLINE static inline __attribute__((always_inline))

enum { MAXG = MNV_ATTN_ROWS, MAXD = 256, BK = 8 /* keys per block */, HCH = 8 /* heads per chunk */ };

/* 8 elements of a float cache row from element i, widened to f32. */
INLINE __m256 load8(const void *row, int64_t i, int t) {
    if (t == MNV_KV_F32) return _mm256_loadu_ps((const float *)row + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    if (t == MNV_KV_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The n < 8 elements from i, zeros after (never reads past the row). */
INLINE __m256 load_tail(const void *row, int64_t i, int64_t n, int t) {
    size_t es = t == MNV_KV_F32 ? 4 : 2;
    _Alignas(32) uint8_t buf[32] = {0};
    memcpy(buf, (const uint8_t *)row + (size_t)i * es, (size_t)n * es);
    return load8(buf, 0, t);
}

static inline float load_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Slice c (elements 8c .. 8c + 7) of a q8/q4 row: the codes widened to f32,
 * then scale * q + bias of the slice's group (sb: the row's scales then
 * biases as f32, converted once per block; g: the slice's group, ng: the
 * row's groups). */
INLINE __m256 load8q(const uint8_t *row, int64_t c, int t, const float *sb, int32_t g, int32_t ng) {
    __m256i q;
    if (t == MNV_KV_Q8) {
        q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + 8 * c)));
    } else {
        uint32_t w;
        memcpy(&w, row + 4 * c, 4);
        q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int32_t)w), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                             _mm256_set1_epi32(15));
    }
    return _mm256_fmadd_ps(_mm256_broadcast_ss(sb + g), _mm256_cvtepi32_ps(q), _mm256_broadcast_ss(sb + ng + g));
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
    int G;                                   /* rows of the tile */
    int64_t j0;                              /* the block's first key */
    float scale;
    int64_t lo[MAXG], hi[MAXG];              /* each row's keys, clipped to the tile's */
    int32_t ng[2], gi[2][MAXD / 8];          /* K, V quantized: groups of a row; slice c's group */
    float sb[2][BK][MAXD / 4];               /* K, V quantized: each key's scales then biases as f32 */
    float m[MAXG], l[MAXG];                  /* running max and denominator per row */
    _Alignas(32) float q[MAXG][MAXD];        /* the rows' queries, zero-padded */
    _Alignas(32) float acc[MAXG][MAXD];      /* unnormalised outputs */
    _Alignas(32) float w[MAXG][BK];          /* the block's softmax weights */
    _Alignas(32) float part[HCH][BK][8];     /* per-key partial dot products */
} group_state;

/* 8 elements c of a K (kv 0) or V (kv 1) row of type t: a full slice or
 * the zero-padded tail. */
INLINE __m256 load_slice(const group_state *s, const void *row, int j, int64_t c, int t, int kv) {
    if (t == MNV_KV_Q8 || t == MNV_KV_Q4) return load8q(row, c, t, s->sb[kv][j], s->gi[kv][c], s->ng[kv]);
    return c < s->C ? load8(row, 8 * c, t) : load_tail(row, 8 * c, s->tail, t);
}

/* part[g][j] = lanes of q_{g0+g} . k_j for the 8 keys of the block (rows
 * past the block's end repeat a valid row: their scores are masked later)
 * and the gn (compile-time) heads from g0. 8 / gn keys at a time, so that 8
 * independent sums hide the FMA latency; K is converted once per key and
 * chunk of heads. */
INLINE void block_dots(group_state *s, const void *const k[BK], int g0, int gn, int t) {
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
                __m256 kv = load_slice(s, k[j0 + j], j0 + j, c, t, 0);
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

/* Lanes of the block inside row h's key range. */
static inline __m256 row_mask(const group_state *s, int h) {
    const int64_t lo = s->lo[h] - s->j0, hi = s->hi[h] - s->j0;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i a = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32((int32_t)MNV_MIN(MNV_MAX(lo, -1), BK) - 1));
    const __m256i b = _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)MNV_MAX(MNV_MIN(hi, BK), -1) + 1), lane);
    return _mm256_castsi256_ps(_mm256_and_si256(a, b));
}

/* Online softmax of row g0+g over the block, masked to its key range:
 * rescale its output if the maximum grew, then w = exp(score - max) (0
 * outside the range; a row whose maximum is still -inf gets 0, not NaN). */
static void block_softmax(group_state *s, int g0, int gn) {
    for (int g = 0; g < gn; g++) {
        __m256 rows[BK];
        for (int j = 0; j < BK; j++) rows[j] = _mm256_load_ps(s->part[g][j]);
        int h = g0 + g;
        const __m256 valid = row_mask(s, h);
        __m256 sc = _mm256_mul_ps(hsum8x8(rows), _mm256_set1_ps(s->scale));
        sc = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), sc, valid);
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
                            int64_t c, int t) {
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
            __m256 vv = load_slice(s, v[j], j, c + i, t, 1);
#pragma GCC unroll 8
            for (int g = 0; g < gn; g++) o[g][i] = _mm256_fmadd_ps(bw[g], vv, o[g][i]);
        }
    }
#pragma GCC unroll 8
    for (int g = 0; g < gn; g++)
#pragma GCC unroll 8
        for (int i = 0; i < cn; i++) _mm256_store_ps(s->acc[g0 + g] + 8 * (c + i), o[g][i]);
}

INLINE void block_values(group_state *s, const void *const v[BK], int nb, int g0, int gn, int t) {
    const int cn = HCH / gn;
    const int64_t Cp = s->C + (s->tail > 0);
    int64_t c = 0;
    for (; c + cn <= Cp; c += cn) block_values_cn(s, v, nb, g0, gn, cn, c, t);
    for (; c < Cp; c++) block_values_cn(s, v, nb, g0, gn, 1, c, t);
}

/* The per-block code of one element type, for chunks of 8, 4, 2 and 1
 * heads: dots (the K side) and values (the V side). */
typedef void (*chunk_fn)(group_state *s, const void *const r[BK], int nb, int g0);
#define KV_SIDE(T, tag)                                                                                        \
    static void dots_##tag##_8(group_state *s, const void *const r[BK], int nb, int g0) { block_dots(s, r, g0, 8, T); } \
    static void dots_##tag##_4(group_state *s, const void *const r[BK], int nb, int g0) { block_dots(s, r, g0, 4, T); } \
    static void dots_##tag##_2(group_state *s, const void *const r[BK], int nb, int g0) { block_dots(s, r, g0, 2, T); } \
    static void dots_##tag##_1(group_state *s, const void *const r[BK], int nb, int g0) { block_dots(s, r, g0, 1, T); } \
    static void vals_##tag##_8(group_state *s, const void *const r[BK], int nb, int g0) { block_values(s, r, nb, g0, 8, T); } \
    static void vals_##tag##_4(group_state *s, const void *const r[BK], int nb, int g0) { block_values(s, r, nb, g0, 4, T); } \
    static void vals_##tag##_2(group_state *s, const void *const r[BK], int nb, int g0) { block_values(s, r, nb, g0, 2, T); } \
    static void vals_##tag##_1(group_state *s, const void *const r[BK], int nb, int g0) { block_values(s, r, nb, g0, 1, T); }
KV_SIDE(MNV_KV_F32, f32)
KV_SIDE(MNV_KV_F16, f16)
KV_SIDE(MNV_KV_BF16, bf16)
KV_SIDE(MNV_KV_Q8, q8)
KV_SIDE(MNV_KV_Q4, q4)
#undef KV_SIDE

/* [type][chunk: 8, 4, 2, 1 heads] */
static const chunk_fn DOTS[MNV_KV_TYPE_COUNT][4] = {
    [MNV_KV_F32] = {dots_f32_8, dots_f32_4, dots_f32_2, dots_f32_1},
    [MNV_KV_F16] = {dots_f16_8, dots_f16_4, dots_f16_2, dots_f16_1},
    [MNV_KV_BF16] = {dots_bf16_8, dots_bf16_4, dots_bf16_2, dots_bf16_1},
    [MNV_KV_Q8] = {dots_q8_8, dots_q8_4, dots_q8_2, dots_q8_1},
    [MNV_KV_Q4] = {dots_q4_8, dots_q4_4, dots_q4_2, dots_q4_1},
};
static const chunk_fn VALS[MNV_KV_TYPE_COUNT][4] = {
    [MNV_KV_F32] = {vals_f32_8, vals_f32_4, vals_f32_2, vals_f32_1},
    [MNV_KV_F16] = {vals_f16_8, vals_f16_4, vals_f16_2, vals_f16_1},
    [MNV_KV_BF16] = {vals_bf16_8, vals_bf16_4, vals_bf16_2, vals_bf16_1},
    [MNV_KV_Q8] = {vals_q8_8, vals_q8_4, vals_q8_2, vals_q8_1},
    [MNV_KV_Q4] = {vals_q4_8, vals_q4_4, vals_q4_2, vals_q4_1},
};

/* Whether none of rows [g0, g0 + gn) sees a key of the block. */
static bool chunk_idle(const group_state *s, int g0, int gn) {
    for (int g = g0; g < g0 + gn; g++)
        if (s->lo[g] <= s->hi[g] && s->hi[g] >= s->j0 && s->lo[g] < s->j0 + BK) return false;
    return true;
}

/* Every row of the tile over one block, in chunks of 8, 4, 2, 1 rows. */
static void block_all(group_state *s, const void *const k[BK], const void *const v[BK], int nb,
                      const chunk_fn *dots, const chunk_fn *vals) {
    static const int size[4] = {8, 4, 2, 1};
    int g0 = 0;
    for (int i = 0; i < 4; i++)
        while (s->G - g0 >= size[i]) {
            if (!chunk_idle(s, g0, size[i])) {
                dots[i](s, k, nb, g0);
                block_softmax(s, g0, size[i]);
                vals[i](s, v, nb, g0);
            }
            g0 += size[i];
            if (i > 0) break; /* 4, 2, 1 are each needed at most once */
        }
}

/* The scales and biases of the block's 8 K (kv 0) or V rows as f32. */
static void scales_f32(group_state *s, int kv, int32_t at, const void *const r[BK]) {
    const int n = 2 * s->ng[kv];
    for (int j = 0; j < BK; j++) {
        const uint8_t *p = (const uint8_t *)r[j] + at;
        float *d = s->sb[kv][j];
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
        for (; i < n; i++) d[i] = load_f16(p + 2 * i);
    }
}

/* The tile's rows over keys [k0, k1), blocks of 8 from k0; only the keys
 * of the union of the rows' ranges are read (others in a block repeat one
 * of them, masked for every row). */
static void attend_tile(const mnv_attn_args *a, mnv_attn_tile *t, group_state *s) {
    const int64_t D = s->D, Dp = 8 * (s->C + (s->tail > 0));
    const chunk_fn *dots = DOTS[a->kc.lay.type], *vals = VALS[a->vc.lay.type];
    const uint8_t *kb = (const uint8_t *)a->k + (size_t)(t->kvh * a->kc.lay.row_bytes);
    const uint8_t *vb = (const uint8_t *)a->v + (size_t)(t->kvh * a->vc.lay.row_bytes);
    size_t koff[BK], voff[BK];
    int64_t ulo = INT64_MAX, uhi = INT64_MIN;
    for (int g = 0; g < s->G; g++) {
        for (int64_t i = 0; i < Dp; i++) s->q[g][i] = i < D ? t->q[g][i] : 0.0f, s->acc[g][i] = 0.0f;
        s->m[g] = t->m[g], s->l[g] = t->l[g];
        s->lo[g] = MNV_MAX(t->lo[g], t->k0), s->hi[g] = MNV_MIN(t->hi[g], t->k1 - 1);
        if (s->lo[g] <= s->hi[g]) ulo = MNV_MIN(ulo, s->lo[g]), uhi = MNV_MAX(uhi, s->hi[g]);
    }
    for (int64_t j0 = ulo <= uhi ? t->k0 + (ulo - t->k0) / BK * BK : uhi + 1; j0 <= uhi; j0 += BK) {
        const int64_t f = MNV_MAX(j0, ulo), n = MNV_MIN(j0 + BK - 1, uhi) - f + 1;
        const void *k[BK], *v[BK];
        mnv_attn_rows(a, t->seq, f, (int)n, koff, voff);
        for (int j = 0; j < BK; j++) {
            const int64_t jj = j0 + j - f >= 0 && j0 + j - f < n ? j0 + j - f : 0;
            k[j] = kb + koff[jj], v[j] = vb + voff[jj];
        }
        s->j0 = j0;
        if (s->ng[0]) scales_f32(s, 0, a->kc.lay.scales_at, k);
        if (s->ng[1]) scales_f32(s, 1, a->vc.lay.scales_at, v);
        block_all(s, k, v, (int)(f - j0 + n), dots, vals);
    }
    for (int g = 0; g < s->G; g++) {
        for (int64_t i = 0; i < D; i++) t->acc[g][i] = s->acc[g][i];
        t->m[g] = s->m[g], t->l[g] = s->l[g];
    }
}

/* A side's layout is one this kernel reads: float of any head_dim, or
 * quantized with slices of 8 inside one group; records its groups and each
 * slice's group. */
static bool side_ok(const mnv_kv_layout *l, int kv, group_state *s) {
    s->ng[kv] = 0;
    if (l->type == MNV_KV_F32 || l->type == MNV_KV_F16 || l->type == MNV_KV_BF16) return true;
    if ((l->type != MNV_KV_Q8 && l->type != MNV_KV_Q4) || l->head_dim % 8 || l->group % 8) return false;
    s->ng[kv] = l->head_dim / l->group;
    for (int32_t c = 0; c < l->head_dim / 8; c++) s->gi[kv][c] = 8 * c / l->group;
    return true;
}

/* One tile; false when this kernel does not apply (then nothing was written). */
bool mnv__attn_tile_avx2(const mnv_attn_args *a, mnv_attn_tile *t) {
    const int64_t D = a->kc.lay.head_dim;
    if (D < 1 || D > MAXD || t->n < 1 || t->n > MAXG || a->vc.lay.head_dim != D) return false;
    group_state s;
    if (!side_ok(&a->kc.lay, 0, &s) || !side_ok(&a->vc.lay, 1, &s)) return false;
    s.D = D, s.C = D / 8, s.tail = D % 8, s.G = t->n, s.scale = a->scale;
    attend_tile(a, t, &s);
    return true;
}
#endif
