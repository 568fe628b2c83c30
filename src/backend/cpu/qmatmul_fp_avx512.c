/* mxfp8 weights with AVX-512 (compiled with the flags of every _avx512.c
 * file; uses F, BW and F16C): y = x * dequant(W)^T for a few rows of x, x in
 * f32 (exact, no int8 rounding of activations). The numerics are those of
 * qmatmul_fp_avx2.c, 32 codes (one group) at a time:
 *
 * the 32 codes of a group, sign-extended to 16 bits and shifted left by 7,
 * with bit 14 (a copy of the sign) cleared, are the f16 bits of e4m3 * 2^-8
 * (bias 15 against 7; E4M3 subnormals become f16 subnormals, exactly);
 * vcvtph2ps widens them to two vectors of 16 f32. Per group and row of x the
 * two products with x are summed and scaled by the group's 2^(e-127) into the
 * row's sum; the row's 2^8 is applied once at the end. The NaN codes (0x7f,
 * 0xff), which no encoder writes, would come out as +-480: each W row keeps
 * the maximum of its bytes with the sign bit set, and a row holding one gives
 * NaN, as its exact product is.
 *
 * Decode streams each W row once, the rows of a thread's share one after
 * another (one sequential stream), with a software prefetch PF_LEAD bytes
 * ahead. Measured on Zen 4 (weights from DRAM, m = 1): one stream reads
 * 13.7 GB/s on one thread, 26.6 on two, where the four streams side by side
 * of the AVX2 kernel read 7.5 and 12.7; the prefetch 4 KiB ahead gains ~10%
 * over 1 KiB on rows of 5504 codes. More rows of x (up to MXFP8_MID_MAX_M of
 * qmatmul_avx512.c, or any m without a scratch for the f32 prefill) run the
 * same kernel in passes of at most 4 over blocks of 16 W rows (W from memory
 * once, the later passes from L1 or L2). */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <math.h>

#include "backend/cpu/qmatmul.h"

#define INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))
#define PF_LEAD 4096

enum { MAXR = 4, MID_JB = 16 };

/* Scales g .. g+15 of a row (the lanes of mk), E8M0 as f32 (e = 0: 2^-127). */
INLINE __m512 e8m0_16(const uint8_t *s, int64_t g, __mmask16 mk) {
    const __m512i e = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, s + g));
    return _mm512_castsi512_ps(_mm512_max_epu32(_mm512_slli_epi32(e, 23), _mm512_set1_epi32(0x00400000)));
}

/* Rows [j0, j1) of y for R rows of x (from x, row stride ldx). */
INLINE void fp8_gemv(const mnv_qmatmul_args *a, const float *x, float *y, int64_t j0, int64_t j1, const int R) {
    const int64_t k = a->k, ng = k / 32;
    const __m256i top = _mm256_set1_epi8((char)0x80);
    const __m512i keep = _mm512_set1_epi16((short)0xBFFF);
    for (int64_t j = j0; j < j1; j++) {
        const uint8_t *w = (const uint8_t *)(a->w + j * a->ldw), *sc = (const uint8_t *)a->scales + j * a->lds;
        __m256i nan = _mm256_setzero_si256();
        __m512 f[MAXR];
        for (int i = 0; i < R; i++) f[i] = _mm512_setzero_ps();
        for (int64_t g0 = 0; g0 < ng; g0 += 16) {
            const int64_t n16 = MNV_MIN(16, ng - g0);
            const __mmask16 mk = n16 == 16 ? 0xffff : (__mmask16)((1u << n16) - 1);
            _Alignas(64) float s[16];
            _mm512_store_ps(s, e8m0_16(sc, g0, mk));
            for (int64_t g = g0; g < g0 + n16; g++) {
                const int64_t e = g * 32;
                if (!(g & 1)) _mm_prefetch((const char *)w + e + PF_LEAD, _MM_HINT_T0);
                const __m256i b = _mm256_loadu_si256((const __m256i *)(w + e));
                nan = _mm256_max_epu8(nan, _mm256_or_si256(b, top));
                const __m512i h = _mm512_and_si512(_mm512_slli_epi16(_mm512_cvtepi8_epi16(b), 7), keep);
                const __m512 w0 = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
                const __m512 w1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
                const __m512 sv = _mm512_set1_ps(s[g - g0]);
                for (int i = 0; i < R; i++) {
                    const float *xi = x + i * a->ldx + e;
                    const __m512 t =
                        _mm512_fmadd_ps(_mm512_loadu_ps(xi + 16), w1, _mm512_mul_ps(_mm512_loadu_ps(xi), w0));
                    f[i] = _mm512_fmadd_ps(t, sv, f[i]);
                }
            }
        }
        const bool has_nan =
            _mm256_movemask_epi8(_mm256_cmpeq_epi8(nan, _mm256_set1_epi8(-1))) != 0 && mnv__e4m3_row_has_nan(w, k);
        for (int i = 0; i < R; i++) y[i * a->ldy + j] = has_nan ? NAN : _mm512_reduce_add_ps(f[i]) * 0x1p8f;
    }
}

typedef void fp8_rows_fn(const mnv_qmatmul_args *a, const float *x, float *y, int64_t j0, int64_t j1);
#define FP8_INSTANCE(R)                                                                                         \
    NOINLINE void fp8_gemv_##R(const mnv_qmatmul_args *a, const float *x, float *y, int64_t j0, int64_t j1) { \
        fp8_gemv(a, x, y, j0, j1, R);                                                                           \
    }
FP8_INSTANCE(1)
FP8_INSTANCE(2)
FP8_INSTANCE(3)
FP8_INSTANCE(4)
#undef FP8_INSTANCE

static fp8_rows_fn *const fp8_rows[MAXR + 1] = {NULL, fp8_gemv_1, fp8_gemv_2, fp8_gemv_3, fp8_gemv_4};

void mnv__qmatmul_avx512_mxfp8(const mnv_qmatmul_args *a, int ith, int nth) {
    const int64_t m = a->m;
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    if (m <= MAXR) {
        fp8_rows[m](a, a->x, a->y, n0, n1);
        return;
    }
    /* passes of equal size: m = 9 as 3 + 3 + 3, not 4 + 4 + 1 */
    const int64_t npass = (m + MAXR - 1) / MAXR, per = (m + npass - 1) / npass;
    for (int64_t jb = n0; jb < n1; jb += MID_JB) {
        const int64_t jb1 = MNV_MIN(n1, jb + MID_JB);
        for (int64_t i0 = 0; i0 < m; i0 += per)
            fp8_rows[MNV_MIN(per, m - i0)](a, a->x + i0 * a->ldx, a->y + i0 * a->ldy, jb, jb1);
    }
}

#endif
