/* y = x * W^T with AVX2 + FMA + F16C (compiled with -mavx2 -mfma -mf16c).
 *
 * The same plan as matmul_avx512.c with 8-lane vectors and 16 registers:
 * register tiles of R x-rows by C W-rows in dot-product form (R*C partial
 * sums while both operands stream along k, then a horizontal reduction),
 * f32 math for every weight type (F16 through F16C, BF16 widened by a
 * shift), blocks of k and of W rows sized for L1 and L2, and for small m
 * (decode) each W row streamed once, front to back, as one of 4 sequential
 * streams. k tails shorter than a vector are summed in scalar code. */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "backend/cpu/matmul.h"

#define INLINE static inline __attribute__((always_inline))

enum {
    MAXR = 4,              /* x rows per tile */
    MAXC = 3,              /* W rows per tile: 4x3 sums + 3 W + 1 x = 16 registers */
    L2_BLOCK = 256 * 1024, /* bytes of W per block kept in L2 */
};

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

typedef struct {
    const float *x[MAXR];
    const void *w[MAXC];
} tile_rows;

/* out[i] lane j = sum over k in [k0, k1) of x_i[k] * w_j[k], for an R x C tile. */
INLINE void tile_dot(int R, int C, mnv_dtype t, const tile_rows *p, int64_t k0, int64_t k1,
                     __m128 out[MAXR]) {
    __m256 acc[MAXR][MAXC];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int j = 0; j < C; j++) acc[i][j] = _mm256_setzero_ps();
    int64_t kk = k0;
    for (; kk + 8 <= k1; kk += 8) {
        __m256 wv[MAXC];
#pragma GCC unroll 4
        for (int j = 0; j < C; j++) wv[j] = load_w8(p->w[j], kk, t);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256 xv = _mm256_loadu_ps(p->x[i] + kk);
            __asm__("" : "+x"(xv)); /* one load per x row, not one per FMA */
#pragma GCC unroll 4
            for (int j = 0; j < C; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    float tail[MAXR][4] = {{0}};
    for (; kk < k1; kk++)
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++) tail[i][j] += p->x[i][kk] * load_w1(p->w[j], kk, t);
    const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
        out[i] = _mm_add_ps(hsum4(acc[i][0], C > 1 ? acc[i][1] : z, C > 2 ? acc[i][2] : z, z),
                            _mm_loadu_ps(tail[i]));
}

/* Write (or add, for later k blocks) the valid rows x cols corner of a tile. */
INLINE void tile_store(const mnv_matmul_args *a, int R, int64_t i0, int64_t j0, int64_t rows,
                       int64_t cols, const __m128 out[MAXR], bool accumulate) {
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        if (i >= rows) break;
        float *y = a->y + (i0 + i) * a->ldy + j0, v[4];
        _mm_storeu_ps(v, out[i]);
        for (int j = 0; j < cols; j++) y[j] = accumulate ? y[j] + v[j] : v[j];
    }
}

/* k block: the largest multiple of step <= kc_max that splits k evenly. */
static int64_t pick_kc(int64_t k, int64_t kc_max, int64_t step) {
    int64_t nb = (k + kc_max - 1) / kc_max;
    int64_t kc = (k + nb - 1) / nb;
    return (kc + step - 1) / step * step;
}

/* Rows [n0, n1) of y, blocked as in matmul_avx512.c. */
INLINE void run_tiles(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t, int R,
                      int C, int64_t kc_max) {
    const int64_t wsize = t == MNV_DTYPE_F32 ? 4 : 2;
    const int64_t kc = pick_kc(a->k, kc_max, 8);
    const int64_t nc = MNV_MAX(C, L2_BLOCK / (kc * wsize) / C * C);
    for (int64_t k0 = 0; k0 < a->k; k0 += kc) {
        const int64_t k1 = MNV_MIN(a->k, k0 + kc);
        for (int64_t nb = n0; nb < n1; nb += nc) {
            const int64_t nb1 = MNV_MIN(n1, nb + nc);
            for (int64_t i0 = 0; i0 < a->m; i0 += R) {
                tile_rows p;
#pragma GCC unroll 4
                for (int i = 0; i < R; i++) p.x[i] = a->x + MNV_MIN(i0 + i, a->m - 1) * a->ldx;
                for (int64_t j0 = nb; j0 < nb1; j0 += C) {
#pragma GCC unroll 4
                    for (int j = 0; j < C; j++)
                        p.w[j] = (const char *)a->w + MNV_MIN(j0 + j, nb1 - 1) * a->ldw * wsize;
                    __m128 out[MAXR];
                    tile_dot(R, C, t, &p, k0, k1, out);
                    tile_store(a, R, i0, j0, a->m - i0, MNV_MIN(C, nb1 - j0), out, k0 > 0);
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
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[i][c] = _mm256_setzero_ps();
    int64_t kk = 0;
    for (; kk + 8 <= k; kk += 8) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) wv[c] = load_w8(w[c], kk, t);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256 xv = _mm256_loadu_ps(x[i] + kk);
            __asm__("" : "+x"(xv));
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) acc[i][c] = _mm256_fmadd_ps(xv, wv[c], acc[i][c]);
        }
    }
    const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 4
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
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) x[i] = a->x + i * a->ldx;
    for (int64_t r = 0; r < part; r++) {
        const void *w[4];
        float out[MAXR][4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            w[c] = (const char *)a->w + (n0 + c * part + r) * a->ldw * wsize;
        rows_dot(R, C, t, x, w, a->k, out);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) a->y[i * a->ldy + n0 + c * part + r] = out[i][c];
    }
    for (int64_t j = n0 + C * part; j < n1; j++) { /* the n % C rows left */
        const void *w[4] = {(const char *)a->w + j * a->ldw * wsize};
        float out[MAXR][4];
        rows_dot(R, 1, t, x, w, a->k, out);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) a->y[i * a->ldy + j] = out[i][0];
    }
}

/* One instantiation per weight type: decode (R = m) or prefill tiles. */
INLINE void run_type(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t) {
    switch (a->m) { /* decode: up to 4 streams, R*C + C + 1 <= 16 registers */
    case 1: run_rows(a, n0, n1, t, 1, 4); break;
    case 2: run_rows(a, n0, n1, t, 2, 4); break;
    case 3: run_rows(a, n0, n1, t, 3, 3); break;
    case 4: run_rows(a, n0, n1, t, 4, 2); break;
    default: run_tiles(a, n0, n1, t, 4, 3, 512); break;
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
