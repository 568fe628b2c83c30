/* mxfp8 weights with AVX2 + FMA + F16C (compiled with -mavx2 -mfma -mf16c):
 * y = x * dequant(W)^T for a few rows of x, x in f32 (exact, as
 * the portable path: no int8 rounding of activations).
 *
 * E4M3 values are not small integers (4 exponent bits), so no int8 or int16
 * product holds them exactly; they become f16 instead, with three integer
 * operations per 16 codes: the code sign-extended to 16 bits and shifted
 * left by 7 puts its sign at bit 15, its exponent in the low 4 bits of the
 * f16 exponent and its 3 mantissa bits at the top of the f16 mantissa; the
 * sign also lands in bit 14, which a mask clears. The f16 value is exactly
 * e4m3 * 2^-8 (bias 15 against 7), subnormals included (an E4M3 subnormal
 * m * 2^-9 is the f16 subnormal (m << 7) * 2^-24). vcvtph2ps widens 8 of them
 * to f32, and per group of 32 the four products with x are summed, scaled by
 * the group's 2^(e-127) into the row's sum; the row's 2^8 is applied once at
 * the end. The NaN codes (0x7f, 0xff), which no encoder writes, would come
 * out as +-480: each row keeps the maximum of its bytes with the sign bit
 * set, and a row holding one gives NaN, as its exact product is.
 *
 * Decode streams each W row once, as the int8 kernels of qmatmul_avx2.c do:
 * a thread's rows as J parts side by side (J sequential streams sharing every
 * load of x), a software prefetch PF_LEAD / J bytes ahead in each stream.
 * More rows of x (up to 8 from qmatmul_avx2.c) run the same kernel in passes of at most 4
 * over blocks of 16 W rows (W from memory once, the later passes from L1). */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <math.h>

#include "backend/cpu/qmatmul.h"

#define INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))
#define PF_LEAD 1024

enum { MAXR = 4, MAXJ = 4, MID_JB = 16 };

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* 16 E4M3 codes as f16 bits of e4m3 * 2^-8. */
INLINE __m256i e4m3_f16(__m128i c) {
    return _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(c), 7), _mm256_set1_epi16((short)0xBFFF));
}

/* Scales g .. g+n-1 (n <= 8) of a row, E8M0 as f32 (e = 0: 2^-127), lanes
 * from n on 0; no byte past the n-th is read. */
INLINE __m256 e8m0_8(const uint8_t *s, int64_t g, int64_t n) {
    uint64_t v = 0;
    if (n == 8) memcpy(&v, s + g, 8);
    else memcpy(&v, s + g, (size_t)n);
    const __m256i e = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v));
    const __m256i f = _mm256_max_epu32(_mm256_slli_epi32(e, 23), _mm256_set1_epi32(0x00400000));
    const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_castsi256_ps(_mm256_and_si256(f, live));
}

/* Rows [j0, j1) of y for R rows of x (from x, row stride ldx) with J W rows
 * side by side ((j1 - j0) a multiple of J). Accumulator n: x row n % R, W
 * row n / R. */
INLINE void fp8_gemv(const mnv_qmatmul_args *a, const float *x, float *y, int64_t j0, int64_t j1, const int R,
                     const int J) {
    const int64_t k = a->k, ng = k / 32, part = (j1 - j0) / J, dist = PF_LEAD / J;
    const __m256i top = _mm256_set1_epi8((char)0x80);
    const int64_t shift = mnv__stream_shift(part, a->ldw * 4);
    for (int64_t r = 0; r < part; r++) {
        int64_t rr[MAXJ];
        const uint8_t *w[MAXJ], *sc[MAXJ];
        __m256i nan = _mm256_setzero_si256();
        __m256 f[MAXR * MAXJ];
        for (int u = 0; u < J; u++) {
            rr[u] = (r + u * shift) % part;
            const int64_t j = j0 + u * part + rr[u];
            w[u] = (const uint8_t *)(a->w + j * a->ldw);
            sc[u] = (const uint8_t *)a->scales + j * a->lds;
        }
        for (int n = 0; n < R * J; n++) f[n] = _mm256_setzero_ps();
        for (int64_t g0 = 0; g0 < ng; g0 += 8) {
            const int64_t n8 = MNV_MIN(8, ng - g0);
            _Alignas(32) float s[MAXJ][8];
            for (int u = 0; u < J; u++) _mm256_store_ps(s[u], e8m0_8(sc[u], g0, n8));
            for (int64_t g = g0; g < g0 + n8; g++) {
                const int64_t e = g * 32;
                __m256 xv[MAXR][4];
                for (int i = 0; i < R; i++)
                    for (int q = 0; q < 4; q++) xv[i][q] = _mm256_loadu_ps(x + i * a->ldx + e + 8 * q);
                for (int u = 0; u < J; u++) {
                    if (!(g & 1)) _mm_prefetch((const char *)w[u] + e + dist, _MM_HINT_T0);
                    const __m256i b = _mm256_loadu_si256((const __m256i *)(w[u] + e));
                    nan = _mm256_max_epu8(nan, _mm256_or_si256(b, top));
                    const __m256i h0 = e4m3_f16(_mm_loadu_si128((const __m128i *)(w[u] + e)));
                    const __m256i h1 = e4m3_f16(_mm_loadu_si128((const __m128i *)(w[u] + e + 16)));
                    const __m256 w0 = _mm256_cvtph_ps(_mm256_castsi256_si128(h0));
                    const __m256 w1 = _mm256_cvtph_ps(_mm256_extracti128_si256(h0, 1));
                    const __m256 w2 = _mm256_cvtph_ps(_mm256_castsi256_si128(h1));
                    const __m256 w3 = _mm256_cvtph_ps(_mm256_extracti128_si256(h1, 1));
                    const __m256 sv = _mm256_broadcast_ss(&s[u][g - g0]);
                    for (int i = 0; i < R; i++) {
                        __m256 t0 = _mm256_mul_ps(xv[i][0], w0);
                        t0 = _mm256_fmadd_ps(xv[i][1], w1, t0);
                        t0 = _mm256_fmadd_ps(xv[i][2], w2, t0);
                        t0 = _mm256_fmadd_ps(xv[i][3], w3, t0);
                        f[u * R + i] = _mm256_fmadd_ps(t0, sv, f[u * R + i]);
                    }
                }
            }
        }
        const bool any_nan = _mm256_movemask_epi8(_mm256_cmpeq_epi8(nan, _mm256_set1_epi8(-1))) != 0;
        for (int u = 0; u < J; u++) {
            const bool has_nan = any_nan && mnv__e4m3_row_has_nan(w[u], k);
            for (int i = 0; i < R; i++)
                y[i * a->ldy + j0 + u * part + rr[u]] = has_nan ? NAN : hsum8(f[u * R + i]) * 0x1p8f;
        }
    }
}

typedef void fp8_rows_fn(const mnv_qmatmul_args *a, const float *x, float *y, int64_t j0, int64_t j1);
#define FP8_INSTANCE(R, J)                                                                                          \
    NOINLINE void fp8_gemv_##R##_##J(const mnv_qmatmul_args *a, const float *x, float *y, int64_t j0, int64_t j1) { \
        fp8_gemv(a, x, y, j0, j1, R, J);                                                                            \
    }
FP8_INSTANCE(1, 4)
FP8_INSTANCE(1, 1)
FP8_INSTANCE(2, 2)
FP8_INSTANCE(2, 1)
FP8_INSTANCE(3, 1)
FP8_INSTANCE(4, 1)
#undef FP8_INSTANCE

/* R rows of x over W rows [n0, n1): the J-wide instance over the largest
 * multiple of J rows, the J = 1 one over the rest. */
static void fp8_rows(const mnv_qmatmul_args *a, const float *x, float *y, int R, int64_t n0, int64_t n1) {
    fp8_rows_fn *wide = R == 1 ? fp8_gemv_1_4 : R == 2 ? fp8_gemv_2_2 : NULL;
    fp8_rows_fn *one = R == 1 ? fp8_gemv_1_1 : R == 2 ? fp8_gemv_2_1 : R == 3 ? fp8_gemv_3_1 : fp8_gemv_4_1;
    const int J = R == 1 ? 4 : 2;
    int64_t ne = n0;
    if (wide) {
        ne = n0 + (n1 - n0) / J * J;
        wide(a, x, y, n0, ne);
    }
    one(a, x, y, ne, n1);
}

void mnv__qmatmul_avx2_mxfp8(const mnv_qmatmul_args *a, int ith, int nth) {
    const int64_t m = a->m;
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    if (m <= MAXR) {
        fp8_rows(a, a->x, a->y, (int)m, n0, n1);
        return;
    }
    /* passes of equal size: m = 9 as 3 + 3 + 3, not 4 + 4 + 1 */
    const int64_t npass = (m + MAXR - 1) / MAXR, per = (m + npass - 1) / npass;
    for (int64_t jb = n0; jb < n1; jb += MID_JB) {
        const int64_t jb1 = MNV_MIN(n1, jb + MID_JB);
        for (int64_t i0 = 0; i0 < m; i0 += per)
            fp8_rows(a, a->x + i0 * a->ldx, a->y + i0 * a->ldy, (int)MNV_MIN(per, m - i0), jb, jb1);
    }
}

#endif
