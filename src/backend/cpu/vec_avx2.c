#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>
#include <math.h>

#include "backend/cpu/exp_avx2.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/vec.h"

static float dot(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float r = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

static void axpy(float *y, const float *x, float a, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void scale(float *y, float a, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] *= a;
}

static double sumsq(const float *x, int64_t n) {
    __m256d s = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        s = _mm256_fmadd_pd(v, v, s);
    }
    double r[4];
    _mm256_storeu_pd(r, s);
    double t = r[0] + r[1] + r[2] + r[3];
    for (; i < n; i++) t += (double)x[i] * x[i];
    return t;
}

static inline __m256 silu_mul8(__m256 gv, __m256 uv) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv));
    return _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), uv);
}

/* The tail goes through the same vector arithmetic (padded), so an
 * element's result never depends on where a row or a thread's share ends. */
static void silu_mul(const float *g, const float *u, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        float gb[8] = {0}, ub[8] = {0}, yb[8];
        memcpy(gb, g + i, (size_t)(n - i) * 4);
        memcpy(ub, u + i, (size_t)(n - i) * 4);
        _mm256_storeu_ps(yb, silu_mul8(_mm256_loadu_ps(gb), _mm256_loadu_ps(ub)));
        memcpy(y + i, yb, (size_t)(n - i) * 4);
    }
}

/* 8 f32 to bf16, rounded to nearest even, NaN kept NaN (quiet), as
 * mnv_f32_to_bf16 does; the results are in the low 16 bits of each lane. */
static inline __m256i bf16_round(__m256 v) {
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                     _mm256_set1_epi32(0x7f800000));
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
}

/* f32 <-> f16 (F16C, round to nearest even) and bf16; false for the other
 * pairs (the portable loop runs). NaN stays NaN, though an f16 NaN's payload
 * may differ from the portable conversion's. */
static bool convert(const void *src, mnv_dtype st, void *dst, mnv_dtype dt, int64_t n) {
    int64_t i = 0;
    if (st == MNV_DTYPE_F32 && dt == MNV_DTYPE_F16) {
        const float *x = src;
        uint16_t *y = dst;
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(y + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (; i < n; i++) y[i] = mnv_f32_to_f16(x[i]);
    } else if (st == MNV_DTYPE_F32 && dt == MNV_DTYPE_BF16) {
        const float *x = src;
        uint16_t *y = dst;
        for (; i + 16 <= n; i += 16) {
            __m256i p = _mm256_packus_epi32(bf16_round(_mm256_loadu_ps(x + i)), bf16_round(_mm256_loadu_ps(x + i + 8)));
            _mm256_storeu_si256((__m256i *)(y + i), _mm256_permute4x64_epi64(p, 0xD8));
        }
        for (; i < n; i++) y[i] = mnv_f32_to_bf16(x[i]);
    } else if (st == MNV_DTYPE_F16 && dt == MNV_DTYPE_F32) {
        const uint16_t *x = src;
        float *y = dst;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
        for (; i < n; i++) y[i] = mnv_f16_to_f32(x[i]);
    } else if (st == MNV_DTYPE_BF16 && dt == MNV_DTYPE_F32) {
        const uint16_t *x = src;
        float *y = dst;
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
            _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
        for (; i < n; i++) y[i] = mnv_bf16_to_f32(x[i]);
    } else {
        return false;
    }
    return true;
}

static const mnv_vec_ops ops = {"avx2", dot, axpy, scale, sumsq, silu_mul, mnv__attn_tile_avx2, convert};
const mnv_vec_ops *mnv_vec_avx2(void) { return &ops; }
#endif
