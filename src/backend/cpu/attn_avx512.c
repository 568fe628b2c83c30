/* Attention tiles (ops.h: mnv_attn_tile) for f32 K and V caches with
 * AVX-512 (other types run the AVX2 kernel on AVX-512 hosts): all rows of a
 * tile (query tokens and the query heads that share a KV head) are served
 * together, so each key and value row is loaded once per tile and block;
 * scores for 16 keys at a time come from 16 register accumulators reduced
 * by a transpose tree, masked to each row's own key range, exponentials are
 * vectorized, and the online (flash-style) softmax runs per block of 16
 * keys. head_dim must be a multiple of 16 and at most 256 (callers fall
 * back otherwise). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "backend/cpu/exp_avx512.h"
#include "backend/cpu/ops.h"

/* Sum each of 16 vectors horizontally: lane j of the result = sum of v[j]. */
static inline __m512 hsum16(__m512 v[16]) {
    for (int w = 8; w >= 1; w /= 2) { /* fold pairs: v[j] and v[j + w] */
        for (int j = 0; j < w; j++) {
            /* lanes hold partial sums; each fold halves the partials of a and b and interleaves them */
            __m512 a = v[j], b = v[j + w];
            __m512i idx_lo, idx_hi;
            switch (w) {
            case 8:
                idx_lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
                idx_hi = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
                break;
            case 4:
                idx_lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
                idx_hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
                break;
            case 2:
                idx_lo = _mm512_setr_epi32(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
                idx_hi = _mm512_setr_epi32(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
                break;
            default:
                idx_lo = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
                idx_hi = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
                break;
            }
            v[j] = _mm512_add_ps(_mm512_permutex2var_ps(a, idx_lo, b), _mm512_permutex2var_ps(a, idx_hi, b));
        }
    }
    return v[0];
}

#define MAXG MNV_ATTN_ROWS
#define MAXC 16 /* head_dim / 16 */

typedef struct {
    float m[MAXG], l[MAXG];
    int64_t lo[MAXG], hi[MAXG];
    __m512 acc[MAXG][MAXC];
} tile_state;

/* Scores of one query against 16 keys (rows k[0..15]), keys outside the
 * lanes [jlo, jhi] of the row's range -inf (lanes outside the block's rows
 * are not computed). hsum16's folds leave lane j holding key j. */
static inline __m512 scores16(const float *q, const float *const k[16], int n, __mmask16 ok, int C, float scale) {
    __m512 acc[16];
    for (int j = 0; j < 16; j++) {
        acc[j] = _mm512_setzero_ps();
        if (j >= n) continue;
        for (int c = 0; c < C; c++) acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * c), _mm512_loadu_ps(k[j] + 16 * c), acc[j]);
    }
    __m512 s = _mm512_mul_ps(hsum16(acc), _mm512_set1_ps(scale));
    return _mm512_mask_blend_ps(ok, _mm512_set1_ps(-INFINITY), s);
}

/* Lanes of the block from j0 inside [lo, hi]. */
static inline __mmask16 lanes(int64_t j0, int64_t lo, int64_t hi) {
    if (lo > hi || hi < j0 || lo > j0 + 15) return 0;
    int a = (int)MNV_MAX(lo - j0, 0), b = (int)MNV_MIN(hi - j0, 15);
    return (__mmask16)(((1u << (b + 1)) - 1) & ~((1u << a) - 1));
}

static void attend_tile(const mnv_attn_args *a, mnv_attn_tile *t, tile_state *st) {
    const int64_t D = a->kc.lay.head_dim, C = D / 16, R = t->n;
    const uint8_t *kbase = (const uint8_t *)a->k + (size_t)t->kvh * (size_t)D * 4;
    const uint8_t *vbase = (const uint8_t *)a->v + (size_t)t->kvh * (size_t)D * 4;
    size_t koff[16], voff[16];
    int64_t ulo = INT64_MAX, uhi = INT64_MIN;
    for (int64_t g = 0; g < R; g++) {
        st->m[g] = t->m[g], st->l[g] = t->l[g];
        st->lo[g] = MNV_MAX(t->lo[g], t->k0), st->hi[g] = MNV_MIN(t->hi[g], t->k1 - 1);
        if (st->lo[g] <= st->hi[g]) ulo = MNV_MIN(ulo, st->lo[g]), uhi = MNV_MAX(uhi, st->hi[g]);
        for (int64_t c = 0; c < C; c++) st->acc[g][c] = _mm512_setzero_ps();
    }
    for (int64_t j0 = ulo <= uhi ? t->k0 + (ulo - t->k0) / 16 * 16 : uhi + 1; j0 <= uhi; j0 += 16) {
        const int64_t f = MNV_MAX(j0, ulo), n = MNV_MIN(j0 + 15, uhi) - f + 1;
        const int nb = (int)(f - j0 + n);
        const float *k[16], *v[16];
        mnv_attn_rows(a, t->seq, f, (int)n, koff, voff);
        for (int j = 0; j < 16; j++) {
            const int64_t jj = j0 + j - f >= 0 && j0 + j - f < n ? j0 + j - f : 0;
            k[j] = (const float *)(kbase + koff[jj]);
            v[j] = (const float *)(vbase + voff[jj]);
        }
        for (int64_t g = 0; g < R; g++) {
            const __mmask16 ok = lanes(j0, st->lo[g], st->hi[g]);
            if (!ok) continue;
            __m512 sc = scores16(t->q[g], k, nb, ok, (int)C, a->scale);
            float bm = _mm512_reduce_max_ps(sc);
            if (bm > st->m[g]) {
                __m512 corr = _mm512_set1_ps(expf(st->m[g] - bm));
                st->l[g] *= _mm512_cvtss_f32(corr);
                for (int64_t c = 0; c < C; c++) st->acc[g][c] = _mm512_mul_ps(st->acc[g][c], corr);
                st->m[g] = bm;
            }
            __m512 w = exp512(_mm512_sub_ps(sc, _mm512_set1_ps(st->m[g])));
            w = _mm512_mask_blend_ps(ok, _mm512_setzero_ps(), w);
            st->l[g] += _mm512_reduce_add_ps(w);
            float wj[16];
            _mm512_storeu_ps(wj, w);
            for (int j = 0; j < nb; j++) {
                if (!(ok >> j & 1)) continue;
                __m512 bw = _mm512_set1_ps(wj[j]);
                for (int64_t c = 0; c < C; c++)
                    st->acc[g][c] = _mm512_fmadd_ps(bw, _mm512_loadu_ps(v[j] + 16 * c), st->acc[g][c]);
            }
        }
    }
    for (int64_t g = 0; g < R; g++) {
        for (int64_t c = 0; c < C; c++) _mm512_storeu_ps(t->acc[g] + 16 * c, st->acc[g][c]);
        t->m[g] = st->m[g], t->l[g] = st->l[g];
    }
}

/* One tile; false when this kernel does not apply (then nothing was written). */
bool mnv__attn_tile_avx512(const mnv_attn_args *a, mnv_attn_tile *t) {
    const int64_t D = a->kc.lay.head_dim;
    if (a->kc.lay.type != MNV_KV_F32 || a->vc.lay.type != MNV_KV_F32 || D % 16 || D / 16 > MAXC || t->n > MAXG)
        return false;
    tile_state st;
    attend_tile(a, t, &st);
    return true;
}
#endif
