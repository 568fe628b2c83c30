/* y = x * W^T with AVX2 + FMA + F16C (compiled with -mavx2 -mfma -mf16c).
 *
 * Prefill (m > 4): for each block of k (up to KC) and of NC W rows, the W
 * rows are converted once into f32 panels of 16 rows, k-major (F16 through
 * F16C, BF16 widened by a shift, an 8 x 8 transpose per step); then every
 * 6 rows of x run over each panel as an outer product: 6 x 16 sums in 12
 * registers, 2 panel loads and 6 broadcasts of x per k, so FMAs, not loads,
 * bound the loop. The x rows (6 x KC) stay in L1, the panels (NC x KC) in
 * L2. Decode (m <= 4): each W row streamed once, front to back, as one of 4
 * sequential streams, in dot-product form with f32 math. */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "backend/cpu/matmul.h"

#define INLINE static inline __attribute__((always_inline))

enum {
    PF_K = 512, /* decode with several rows of x: weights prefetched this many elements ahead */
    MAXR = 6,  /* decode: x rows (m <= 6; batched decode converts each bf16 weight once for 6 rows) */
    MR = 6,    /* prefill tile: x rows ... */
    NR = 16,   /* ... by W rows: 6 x 2 accumulators + 2 W + 1 x = 15 registers */
    KC = 512,  /* k per packed block: an MR x KC slice of x stays in L1 */
    NC = 64,   /* W rows per packed block: NC x KC f32 (128 KiB) stays in L2 */
};

/* k block: the largest multiple of step <= kc_max that splits k evenly. */
static int64_t pick_kc(int64_t k, int64_t kc_max, int64_t step) {
    int64_t nb = (k + kc_max - 1) / kc_max;
    int64_t kc = (k + nb - 1) / nb;
    return (kc + step - 1) / step * step;
}

/* 8 weights of a row from element kk, widened to f32. */
INLINE __m256 load_w8(const void *row, int64_t kk, mnv_dtype t) {
    if (t == MNV_DTYPE_F32) return _mm256_loadu_ps((const float *)row + kk);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + kk));
    if (t == MNV_DTYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float load_w1(const void *row, int64_t kk, mnv_dtype t) {
    if (t == MNV_DTYPE_F32) return ((const float *)row)[kk];
    uint16_t h = ((const uint16_t *)row)[kk];
    return t == MNV_DTYPE_F16 ? _cvtsh_ss(h) : mnv_bf16_to_f32(h);
}

/* Lane j of the result is the sum of the 8 lanes of the j-th argument. */
INLINE __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* ---- prefill: packed f32 panels, outer-product register tiles -------------- */

/* In place: rows r[0..7] become the columns of the 8 x 8 block. */
INLINE void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Panel of NR W rows from j0 (rows past n are zeros) over k in [k0, k0+kc),
 * as f32, k-major: p[kk * NR + r] = W[j0 + r][k0 + kk]. */
INLINE void pack_panel(const mnv_matmul_args *a, mnv_dtype t, int64_t j0, int64_t k0, int64_t kc,
                       float *p) {
    const int64_t wsize = t == MNV_DTYPE_F32 ? 4 : 2, rows = MNV_MIN(NR, a->n - j0);
    const void *w[NR];
    for (int r = 0; r < NR; r++)
        w[r] = (const char *)a->w + ((j0 + MNV_MIN(r, rows - 1)) * a->ldw + k0) * wsize;
    int64_t kk = 0;
    if (rows == NR)
        for (; kk + 8 <= kc; kk += 8)
            for (int h = 0; h < NR; h += 8) {
                __m256 v[8];
#pragma GCC unroll 8
                for (int r = 0; r < 8; r++) v[r] = load_w8(w[h + r], kk, t);
                transpose8(v);
#pragma GCC unroll 8
                for (int q = 0; q < 8; q++) _mm256_store_ps(p + (kk + q) * NR + h, v[q]);
            }
    for (; kk < kc; kk++)
        for (int r = 0; r < NR; r++) p[kk * NR + r] = r < rows ? load_w1(w[r], kk, t) : 0.0f;
}

/* y[i0.., j0..] (+)= x[i0..i0+R) . panel over kc, an R x NR tile (R <= MR)
 * in 2 R accumulators; rows past `rows`, columns past `cols` are not stored. */
INLINE void micro_tile(const mnv_matmul_args *a, int R, int64_t i0, int64_t rows, int64_t j0,
                       int64_t cols, int64_t k0, int64_t kc, const float *p, bool accumulate) {
    const float *x[MR];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) x[i] = a->x + MNV_MIN(i0 + i, a->m - 1) * a->ldx + k0;
    __m256 acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int64_t kk = 0; kk < kc; kk++) {
        __m256 b0 = _mm256_load_ps(p + kk * NR), b1 = _mm256_load_ps(p + kk * NR + 8);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __m256 xv = _mm256_broadcast_ss(x[i] + kk);
            acc[i][0] = _mm256_fmadd_ps(xv, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(xv, b1, acc[i][1]);
        }
    }
    if (rows >= R && cols == NR) {
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            float *y = a->y + (i0 + i) * a->ldy + j0;
            if (accumulate) {
                acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(y));
                acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(y + 8));
            }
            _mm256_storeu_ps(y, acc[i][0]);
            _mm256_storeu_ps(y + 8, acc[i][1]);
        }
        return;
    }
    float v[MR][NR]; /* a corner tile: through memory (constant indices keep acc in registers) */
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        _mm256_storeu_ps(v[i], acc[i][0]);
        _mm256_storeu_ps(v[i] + 8, acc[i][1]);
    }
    for (int i = 0; i < R && i < rows; i++) {
        float *y = a->y + (i0 + i) * a->ldy + j0;
        for (int64_t j = 0; j < cols; j++) y[j] = accumulate ? y[j] + v[i][j] : v[i][j];
    }
}

/* Rows [n0, n1) of y: for each k block and block of NC W rows, the rows are
 * packed once into f32 panels (on the stack, in L1/L2), then every MR rows
 * of x run over every panel: the x rows stay in L1, each panel streams from
 * L2, and a bf16 or f16 weight is converted once per product. */
INLINE void run_packed(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t) {
    _Alignas(32) float panels[NC * KC];
    const int64_t kc_max = pick_kc(a->k, KC, 8);
    for (int64_t k0 = 0; k0 < a->k; k0 += kc_max) {
        const int64_t kc = MNV_MIN(kc_max, a->k - k0);
        for (int64_t jb = n0; jb < n1; jb += NC) {
            const int64_t jb1 = MNV_MIN(n1, jb + NC);
            for (int64_t j0 = jb; j0 < jb1; j0 += NR)
                pack_panel(a, t, j0, k0, kc, panels + (j0 - jb) * kc);
            for (int64_t i0 = 0, R; i0 < a->m; i0 += R) {
                /* 6 rows, but 7 or 8 as 4 + 3..4 and 1..2 as 2: at least 8
                 * independent sums wherever m allows, to hide FMA latency */
                const int64_t rows = a->m - i0;
                R = rows > 8 || rows == 5 || rows == 6 ? MR : rows > 2 ? 4 : 2;
                for (int64_t j0 = jb; j0 < jb1; j0 += NR) {
                    const float *p = panels + (j0 - jb) * kc;
                    const int64_t cols = MNV_MIN(NR, jb1 - j0);
                    if (R == MR) micro_tile(a, MR, i0, rows, j0, cols, k0, kc, p, k0 > 0);
                    else if (R == 4) micro_tile(a, 4, i0, rows, j0, cols, k0, kc, p, k0 > 0);
                    else micro_tile(a, 2, i0, rows, j0, cols, k0, kc, p, k0 > 0);
                }
            }
        }
    }
}

/* ---- decode ---------------------------------------------------------------- */

/* out[i][c] = x_i . w_c for the R (= m) rows of x and C rows of W. */
INLINE void rows_dot(int R, int C, mnv_dtype t, const float *const *x, const void *const *w,
                     int64_t k, float out[MAXR][4]) {
    __m256 acc[MAXR][4];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[i][c] = _mm256_setzero_ps();
    int64_t kk = 0;
    for (; kk + 8 <= k; kk += 8) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            /* several rows of x: the FMAs hide the stream only if it is fetched ahead */
            if (R > 2 && (kk & 31) == 0)
                _mm_prefetch((const char *)w[c] + (kk + PF_K) * (t == MNV_DTYPE_F32 ? 4 : 2), _MM_HINT_T0);
            wv[c] = load_w8(w[c], kk, t);
        }
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __m256 xv = _mm256_loadu_ps(x[i] + kk);
            __asm__("" : "+x"(xv));
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) acc[i][c] = _mm256_fmadd_ps(xv, wv[c], acc[i][c]);
        }
    }
    const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        _mm_storeu_ps(out[i], hsum4(acc[i][0], C > 1 ? acc[i][1] : z, C > 2 ? acc[i][2] : z,
                                    C > 3 ? acc[i][3] : z));
        for (int64_t q = kk; q < k; q++)
            for (int c = 0; c < C; c++) out[i][c] += x[i][q] * load_w1(w[c], q, t);
    }
}

/* Rows [n0, n1) of y for m = R rows of x, each weight byte read once, as C
 * sequential streams side by side (see run_rows in matmul_avx512.c). */
INLINE void run_rows(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t, int R, int C) {
    const int64_t wsize = t == MNV_DTYPE_F32 ? 4 : 2, part = (n1 - n0) / C;
    const float *x[MAXR];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) x[i] = a->x + i * a->ldx;
    for (int64_t r = 0; r < part; r++) {
        const void *w[4];
        float out[MAXR][4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            w[c] = (const char *)a->w + (n0 + c * part + r) * a->ldw * wsize;
        rows_dot(R, C, t, x, w, a->k, out);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) a->y[i * a->ldy + n0 + c * part + r] = out[i][c];
    }
    for (int64_t j = n0 + C * part; j < n1; j++) { /* the n % C rows left */
        const void *w[4] = {(const char *)a->w + j * a->ldw * wsize};
        float out[MAXR][4];
        rows_dot(R, 1, t, x, w, a->k, out);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) a->y[i * a->ldy + j] = out[i][0];
    }
}

/* One instantiation per weight type: decode (R = m) or prefill tiles. */
INLINE void run_type(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t) {
    switch (a->m) { /* decode: up to 4 streams, R*C + C + 1 <= 16 registers; a row's sum is
                     * the same at every R and C (one accumulator chain per row and W row,
                     * a symmetric horizontal sum) */
    case 1: run_rows(a, n0, n1, t, 1, 4); break;
    case 2: run_rows(a, n0, n1, t, 2, 4); break;
    case 3: run_rows(a, n0, n1, t, 3, 3); break;
    case 4: run_rows(a, n0, n1, t, 4, 2); break;
    case 5: run_rows(a, n0, n1, t, 5, 2); break;
    case 6: run_rows(a, n0, n1, t, 6, 2); break;
    default: run_packed(a, n0, n1, t); break;
    }
}

static void run_f32(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_type(a, n0, n1, MNV_DTYPE_F32);
}
static void run_f16(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_type(a, n0, n1, MNV_DTYPE_F16);
}
static void run_bf16(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_type(a, n0, n1, MNV_DTYPE_BF16);
}

void mnv__matmul_avx2(const mnv_matmul_args *a, int ith, int nth) {
    _Static_assert(MNV_MATMUL_GEMV_MAX_M <= MAXR, "decode tiles hold all of x");
    int64_t n0, n1;
    mnv__matmul_split(a->n, ith, nth, a->n >= 64 * nth ? 16 : 3, &n0, &n1);
    if (a->wtype == MNV_DTYPE_F32) run_f32(a, n0, n1);
    else if (a->wtype == MNV_DTYPE_F16) run_f16(a, n0, n1);
    else run_bf16(a, n0, n1);
}

#endif
