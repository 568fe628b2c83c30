/* y = x * W^T with AVX2 + FMA + F16C (compiled with -mavx2 -mfma -mf16c).
 *
 * Prefill (m > 4): for each block of k (up to KC) and of NC W rows, the W
 * rows are converted once into f32 panels of 16 rows, k-major (F16 through
 * F16C, BF16 widened by a shift, an 8 x 8 transpose per step); then every
 * 6 rows of x run over each panel as an outer product: 6 x 16 sums in 12
 * registers, 2 panel loads and 6 broadcasts of x per k, so FMAs, not loads,
 * bound the loop. The x rows (6 x KC) stay in L1, the panels (NC x KC) in
 * L2. Decode (m <= 4): each W row streamed once, front to back, as one of 4
 * sequential streams, in dot-product form with f32 math. Batched decode with
 * BF16 weights (7-16 rows, a scratch given): 4 x 3 tiles on x permuted once,
 * see "batched decode" below. */
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
 * sequential streams side by side (see run_rows in matmul_avx512.c), each
 * starting at its own row of its part (mnv__stream_shift). */
INLINE void run_rows(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t, int R, int C) {
    const int64_t wsize = t == MNV_DTYPE_F32 ? 4 : 2, part = (n1 - n0) / C;
    const float *x[MAXR];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) x[i] = a->x + i * a->ldx;
    const int64_t shift = mnv__stream_shift(part, a->ldw * wsize);
    for (int64_t r = 0; r < part; r++) {
        const void *w[4];
        float out[MAXR][4];
        int64_t j[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            j[c] = n0 + c * part + (r + c * shift) % part;
            w[c] = (const char *)a->w + j[c] * a->ldw * wsize;
        }
        rows_dot(R, C, t, x, w, a->k, out);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) a->y[i * a->ldy + j[c]] = out[i][c];
    }
    for (int64_t j = n0 + C * part; j < n1; j++) { /* the n % C rows left */
        const void *w[4] = {(const char *)a->w + j * a->ldw * wsize};
        float out[MAXR][4];
        rows_dot(R, 1, t, x, w, a->k, out);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) a->y[i * a->ldy + j] = out[i][0];
    }
}

/* ---- batched decode: BF16 weights, a few rows of x per sequence ------------- */

/* 16 bf16 weights loaded as 8 32-bit words hold element 2s in the low half of
 * word s and 2s + 1 in the high half: a shift left by 16 widens the even
 * elements to f32, a mask of the high halves the odd ones, with no shuffle.
 * x is permuted once per product into that order (of every 16 elements, the 8
 * even ones then the 8 odd ones), so every widened vector feeds BR FMAs and
 * each x vector BC. Tiles of BR x BC: 12 accumulators, BC weights, one x. */
enum {
    BR = 4,  /* rows of x per pass */
    BC = 3,  /* rows of W per tile */
    BJ = 8,  /* rows of W per block and part: from memory in the first pass, from L2 in the others */
};

/* xp[0..k16) = x permuted: per 16 elements, the even ones then the odd ones. */
static void batch_permute(const float *x, float *xp, int64_t k16) {
    for (int64_t kk = 0; kk < k16; kk += 16) {
        __m256 a = _mm256_loadu_ps(x + kk), b = _mm256_loadu_ps(x + kk + 8);
        /* [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit pairs in order 0 2 1 3 */
        __m256 e = _mm256_shuffle_ps(a, b, 0x88), o = _mm256_shuffle_ps(a, b, 0xDD);
        e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
        o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
        _mm256_store_ps(xp + kk, e);
        _mm256_store_ps(xp + kk + 8, o);
    }
}

static const uint32_t HI_HALVES[8] __attribute__((aligned(32))) = {
    0xFFFF0000u, 0xFFFF0000u, 0xFFFF0000u, 0xFFFF0000u,
    0xFFFF0000u, 0xFFFF0000u, 0xFFFF0000u, 0xFFFF0000u};

/* The odd elements of 16 bf16 weights at p, as f32. Loaded again rather than
 * kept from the even half (12 accumulators, 3 weights and x fill the 16
 * registers), and masked with a memory operand, so no register holds the mask
 * and the compiler cannot merge the load with the first one. */
INLINE __m256 bf16_odd(const uint16_t *p) {
    __m256i v;
    __asm__("vmovdqu %1, %0\n\tvpand %2, %0, %0"
            : "=x"(v)
            : "m"(*(const __m256i *)p), "m"(*(const __m256i *)HI_HALVES));
    return _mm256_castsi256_ps(v);
}

/* The 4 x 3 tile's loop in assembly: the compiler spills accumulators of it
 * (12 of them, 3 weights and x take all 16 registers), and a spilled sum puts
 * a store and a load into its FMA chain. out[r][c] = x_r . w_c over k16
 * elements (a multiple of 16); xp: permuted x rows. */
static void tile43(const float *const *xp, const uint16_t *const *w, int64_t k16, float out[BR][4]) {
    const float *x0 = xp[0], *x1 = xp[1], *x2 = xp[2], *x3 = xp[3];
    const uint16_t *w0 = w[0], *w1 = w[1], *w2 = w[2];
    int64_t q = 0; /* byte offset in the W rows; x rows at twice it */
    const int64_t end = k16 * 2, end32 = k16 / 32 * 64;
#define FMA3(x, a, b, c)                                                                         \
    "vmovaps " x ", %%ymm15\n\t"                                                                 \
    "vfmadd231ps %%ymm15, %%ymm12, %%ymm" a "\n\t"                                               \
    "vfmadd231ps %%ymm15, %%ymm13, %%ymm" b "\n\t"                                               \
    "vfmadd231ps %%ymm15, %%ymm14, %%ymm" c "\n\t"
    /* 16 elements at byte dw of the W rows (x at xe: even, xo: odd): the even
     * ones are the low halves shifted up, the odd ones the high halves */
#define HALF(dw, xe, xo)                                                                         \
    "vmovdqu " dw "(%[w0], %[q]), %%ymm12\n\t"                                                   \
    "vpslld $16, %%ymm12, %%ymm12\n\t"                                                           \
    "vmovdqu " dw "(%[w1], %[q]), %%ymm13\n\t"                                                   \
    "vpslld $16, %%ymm13, %%ymm13\n\t"                                                           \
    "vmovdqu " dw "(%[w2], %[q]), %%ymm14\n\t"                                                   \
    "vpslld $16, %%ymm14, %%ymm14\n\t"                                                           \
    FMA3(xe "(%[x0], %[q], 2)", "0", "1", "2")                                                   \
    FMA3(xe "(%[x1], %[q], 2)", "3", "4", "5")                                                   \
    FMA3(xe "(%[x2], %[q], 2)", "6", "7", "8")                                                   \
    FMA3(xe "(%[x3], %[q], 2)", "9", "10", "11")                                                 \
    "vmovdqu " dw "(%[w0], %[q]), %%ymm12\n\t"                                                   \
    "vpand %[mask], %%ymm12, %%ymm12\n\t"                                                        \
    "vmovdqu " dw "(%[w1], %[q]), %%ymm13\n\t"                                                   \
    "vpand %[mask], %%ymm13, %%ymm13\n\t"                                                        \
    "vmovdqu " dw "(%[w2], %[q]), %%ymm14\n\t"                                                   \
    "vpand %[mask], %%ymm14, %%ymm14\n\t"                                                        \
    FMA3(xo "(%[x0], %[q], 2)", "0", "1", "2")                                                   \
    FMA3(xo "(%[x1], %[q], 2)", "3", "4", "5")                                                   \
    FMA3(xo "(%[x2], %[q], 2)", "6", "7", "8")                                                   \
    FMA3(xo "(%[x3], %[q], 2)", "9", "10", "11")
    /* the row's three sums (and a copy of the third) to 16 bytes at ds */
#define SUM3(a, b, c, ds)                                                                        \
    "vhaddps %%ymm" b ", %%ymm" a ", %%ymm12\n\t"                                                \
    "vhaddps %%ymm" c ", %%ymm" c ", %%ymm13\n\t"                                                \
    "vhaddps %%ymm13, %%ymm12, %%ymm12\n\t"                                                      \
    "vextractf128 $1, %%ymm12, %%xmm13\n\t"                                                      \
    "vaddps %%xmm13, %%xmm12, %%xmm12\n\t"                                                       \
    "vmovups %%xmm12, " ds "(%[s])\n\t"
    __asm__ volatile(
        "vxorps %%ymm0, %%ymm0, %%ymm0\n\t"
        "vxorps %%ymm1, %%ymm1, %%ymm1\n\t"
        "vxorps %%ymm2, %%ymm2, %%ymm2\n\t"
        "vxorps %%ymm3, %%ymm3, %%ymm3\n\t"
        "vxorps %%ymm4, %%ymm4, %%ymm4\n\t"
        "vxorps %%ymm5, %%ymm5, %%ymm5\n\t"
        "vxorps %%ymm6, %%ymm6, %%ymm6\n\t"
        "vxorps %%ymm7, %%ymm7, %%ymm7\n\t"
        "vxorps %%ymm8, %%ymm8, %%ymm8\n\t"
        "vxorps %%ymm9, %%ymm9, %%ymm9\n\t"
        "vxorps %%ymm10, %%ymm10, %%ymm10\n\t"
        "vxorps %%ymm11, %%ymm11, %%ymm11\n\t"
        "cmp %[end32], %[q]\n\t"
        "jae 2f\n\t"
        /* 32 elements per turn: one prefetch per 64-byte line of each row */
        "1:\n\t"
        "prefetcht0 1024(%[w0], %[q])\n\t"
        "prefetcht0 1024(%[w1], %[q])\n\t"
        "prefetcht0 1024(%[w2], %[q])\n\t"
        HALF("0", "0", "32")
        HALF("32", "64", "96")
        "add $64, %[q]\n\t"
        "cmp %[end32], %[q]\n\t"
        "jb 1b\n\t"
        "2:\n\t"
        "cmp %[end], %[q]\n\t" /* 16 elements left */
        "jae 3f\n\t"
        HALF("0", "0", "32")
        "3:\n\t"
        SUM3("0", "1", "2", "0")
        SUM3("3", "4", "5", "16")
        SUM3("6", "7", "8", "32")
        SUM3("9", "10", "11", "48")
        : [q] "+r"(q)
        : [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3), [w0] "r"(w0), [w1] "r"(w1),
          [w2] "r"(w2), [end] "r"(end), [end32] "r"(end32), [s] "r"(out),
          [mask] "m"(*(const __m256i *)HI_HALVES)
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
          "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
#undef SUM3
#undef HALF
#undef FMA3
}

/* out[i][c] = x_i . w_c for R rows of x (xp: permuted, x: as given, for the
 * k % 16 tail) and C rows of W. */
INLINE void batch_dot(int R, int C, const float *const *xp, const float *const *x,
                      const uint16_t *const *w, int64_t k, float out[BR][4]) {
    __m256 acc[BR][BC];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[i][c] = _mm256_setzero_ps();
    const int64_t k16 = k / 16 * 16;
    if (R == 4 && C == 3) tile43(xp, w, k16, out);
    else for (int64_t kk = 0; kk < k16; kk += 16) {
        __m256 wv[BC];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            if ((kk & 31) == 0) _mm_prefetch((const char *)(w[c] + kk + PF_K), _MM_HINT_T0);
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w[c] + kk));
            wv[c] = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
        }
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256 xv = _mm256_load_ps(xp[i] + kk);
            __asm__("" : "+x"(xv));
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) acc[i][c] = _mm256_fmadd_ps(xv, wv[c], acc[i][c]);
        }
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) wv[c] = bf16_odd(w[c] + kk);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256 xv = _mm256_load_ps(xp[i] + kk + 8);
            __asm__("" : "+x"(xv)); /* one load, BC FMAs from the register */
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) acc[i][c] = _mm256_fmadd_ps(xv, wv[c], acc[i][c]);
        }
    }
    const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        if (R < 4 || C < 3) /* else tile43 summed the lanes */
            _mm_storeu_ps(out[i], hsum4(acc[i][0], C > 1 ? acc[i][1] : z, C > 2 ? acc[i][2] : z, z));
        for (int64_t q = k16; q < k; q++)
            for (int c = 0; c < C; c++) out[i][c] += x[i][q] * mnv_bf16_to_f32(w[c][q]);
    }
}

/* One R x C tile: rows i0.. of x by the W rows j[0..C). */
INLINE void batch_tile(const mnv_matmul_args *a, const float *xp, int64_t kp, int64_t i0,
                       const int64_t *j, int R, int C) {
    const float *xr[BR], *x[BR];
    const uint16_t *w[BC];
    float out[BR][4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) xr[i] = xp + (i0 + i) * kp, x[i] = a->x + (i0 + i) * a->ldx;
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) w[c] = (const uint16_t *)a->w + j[c] * a->ldw;
    batch_dot(R, C, xr, x, w, a->k, out);
    float *const y = a->y + i0 * a->ldy; /* locals: a store to y could alias *a */
    const int64_t ldy = a->ldy, j0 = j[0], j1 = j[C > 1], j2 = j[C > 2 ? 2 : 0];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        y[i * ldy + j0] = out[i][0];
        if (C > 1) y[i * ldy + j1] = out[i][1];
        if (C > 2) y[i * ldy + j2] = out[i][2];
    }
}

/* Rows of x by the W rows j[0..C): passes of at most BR rows (m split evenly:
 * 8 as 4 + 4, 7 as 3 + 4, 6 as 3 + 3). */
INLINE void batch_rows(const mnv_matmul_args *a, const float *xp, int64_t kp, int64_t i0, int R,
                       const int64_t *j, int C) {
    switch (R * 4 + C) { /* constant R and C: the tile's accumulators stay in registers */
    case 4 * 4 + 3: batch_tile(a, xp, kp, i0, j, 4, 3); break;
    case 3 * 4 + 3: batch_tile(a, xp, kp, i0, j, 3, 3); break;
    case 2 * 4 + 3: batch_tile(a, xp, kp, i0, j, 2, 3); break;
    case 1 * 4 + 3: batch_tile(a, xp, kp, i0, j, 1, 3); break;
    case 4 * 4 + 1: batch_tile(a, xp, kp, i0, j, 4, 1); break;
    case 3 * 4 + 1: batch_tile(a, xp, kp, i0, j, 3, 1); break;
    case 2 * 4 + 1: batch_tile(a, xp, kp, i0, j, 2, 1); break;
    default: batch_tile(a, xp, kp, i0, j, 1, 1); break;
    }
}

/* Rows [n0, n1) of y. The share is cut into BC equal parts read side by side
 * as sequential streams (a tile takes one row of each, so the prefetch past a
 * row's end fetches the next tile's), in blocks of BJ rows per part: a block
 * comes from memory in the first pass over x and from L2 in the others. The
 * n % BC rows left run as one-row tiles. */
static void run_batch(const mnv_matmul_args *a, int64_t n0, int64_t n1, const float *xp, int64_t kp) {
    const int64_t passes = (a->m + BR - 1) / BR, part = (n1 - n0) / BC;
    for (int64_t b0 = 0; b0 < part; b0 += BJ) {
        const int64_t b1 = MNV_MIN(part, b0 + BJ);
        for (int64_t p = 0, i0 = 0; p < passes; p++) {
            const int R = (int)((a->m - i0) / (passes - p));
            for (int64_t r = b0; r < b1; r++) {
                _Static_assert(BC == 3, "a tile's W rows, one per part");
                const int64_t j[BC] = {n0 + r, n0 + part + r, n0 + 2 * part + r};
                batch_rows(a, xp, kp, i0, R, j, BC);
            }
            i0 += R;
        }
    }
    for (int64_t jj = n0 + BC * part; jj < n1; jj++)
        for (int64_t p = 0, i0 = 0; p < passes; p++) {
            const int R = (int)((a->m - i0) / (passes - p));
            const int64_t j[BC] = {jj, jj, jj};
            batch_rows(a, xp, kp, i0, R, j, 1);
            i0 += R;
        }
}

bool mnv__matmul_avx2_batched(const mnv_matmul_args *a) {
    return a->wtype == MNV_DTYPE_BF16 && !a->row_invariant && a->scratch && a->barrier &&
           a->m >= MNV_MATMUL_BATCH_MIN_M && a->m <= MNV_MATMUL_PASSES_MAX_M;
}

/* x permuted into the scratch (rows shared out between the threads), a
 * barrier, then each thread's share of W. */
static void batch_product(const mnv_matmul_args *a, int ith, int nth) {
    const int64_t kp = mnv__matmul_bf16_kpad(a->k), k16 = a->k / 16 * 16;
    float *xp = a->scratch;
    for (int64_t i = ith; i < a->m; i += nth) batch_permute(a->x + i * a->ldx, xp + i * kp, k16);
    if (nth > 1) a->barrier(a->barrier_ctx);
    int64_t n0, n1;
    mnv__matmul_split(a->n, ith, nth, a->n >= 64 * nth ? BC * BJ : BC, &n0, &n1);
    run_batch(a, n0, n1, xp, kp);
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
    if (mnv__matmul_avx2_batched(a)) {
        batch_product(a, ith, nth);
        return;
    }
    int64_t n0, n1;
    mnv__matmul_split(a->n, ith, nth, a->n >= 64 * nth ? 16 : 3, &n0, &n1);
    if (a->wtype == MNV_DTYPE_F32) run_f32(a, n0, n1);
    else if (a->wtype == MNV_DTYPE_F16) run_f16(a, n0, n1);
    else run_bf16(a, n0, n1);
}

#endif
