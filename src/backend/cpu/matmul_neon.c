/* y = x * W^T with AArch64 Advanced SIMD (NEON), part of every AArch64 CPU
 * (no compiler flag; the same code is what an Apple Silicon build runs).
 *
 * The plan of matmul_avx2.c with 4-lane vectors and 32 registers: register
 * tiles of R x-rows by C W-rows in dot-product form (R*C partial sums while
 * both operands stream along k, then a pairwise horizontal reduction), f32
 * math for every weight type (F16 widened by FCVTL, BF16 by a shift),
 * blocks of k and of W rows sized for L1 and L2, and for small m (decode)
 * each W row streamed once, front to back, as one of up to 8 sequential
 * streams. k tails shorter than a vector are summed in scalar code. */
#if defined(__aarch64__) || defined(_M_ARM64)

#include <arm_neon.h>

#include "backend/cpu/matmul.h"

#define INLINE static inline __attribute__((always_inline))

enum {
    MAXR = 4,              /* x rows per tile */
    MAXC = 8,              /* W rows per tile (decode streams) */
    TILE_C = 5,            /* prefill: 4x5 sums + 5 W + 1 x = 26 of 32 registers */
    L2_BLOCK = 256 * 1024, /* bytes of W per block kept in L2 */
};

/* 4 weights of a row from element kk, widened to f32. */
INLINE float32x4_t load_w4(const void *row, int64_t kk, mnv_dtype t) {
    if (t == MNV_DTYPE_F32) return vld1q_f32((const float *)row + kk);
    const uint16x4_t h = vld1_u16((const uint16_t *)row + kk);
    if (t == MNV_DTYPE_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

INLINE float load_w1(const void *row, int64_t kk, mnv_dtype t) {
    if (t == MNV_DTYPE_F32) return ((const float *)row)[kk];
    const uint16_t h = ((const uint16_t *)row)[kk];
    return t == MNV_DTYPE_F16 ? mnv_f16_to_f32(h) : mnv_bf16_to_f32(h);
}

/* Lane j of the result is the sum of the 4 lanes of the j-th argument. */
INLINE float32x4_t hsum4(float32x4_t a, float32x4_t b, float32x4_t c, float32x4_t d) {
    return vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d));
}

/* out[i][c] = sum over k in [k0, k1) of x_i[k] * w_c[k] for R rows of x
 * and C rows of W (C <= 8: sums in two groups of 4 lanes). */
INLINE void block_dot(int R, int C, mnv_dtype t, const float *const *x, const void *const *w, int64_t k0,
                      int64_t k1, float out[MAXR][MAXC]) {
    float32x4_t acc[MAXR][MAXC];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) acc[i][c] = vdupq_n_f32(0.0f);
    int64_t kk = k0;
    for (; kk + 4 <= k1; kk += 4) {
        float32x4_t wv[MAXC];
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) wv[c] = load_w4(w[c], kk, t);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            const float32x4_t xv = vld1q_f32(x[i] + kk);
#pragma GCC unroll 8
            for (int c = 0; c < C; c++) acc[i][c] = vfmaq_f32(acc[i][c], xv, wv[c]);
        }
    }
    const float32x4_t z = vdupq_n_f32(0.0f);
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        vst1q_f32(out[i], hsum4(acc[i][0], C > 1 ? acc[i][1] : z, C > 2 ? acc[i][2] : z, C > 3 ? acc[i][3] : z));
        if (C > 4)
            vst1q_f32(out[i] + 4, hsum4(acc[i][4], C > 5 ? acc[i][5] : z, C > 6 ? acc[i][6] : z,
                                        C > 7 ? acc[i][7] : z));
        for (int64_t q = kk; q < k1; q++)
            for (int c = 0; c < C; c++) out[i][c] += x[i][q] * load_w1(w[c], q, t);
    }
}

/* k block: the largest multiple of step <= kc_max that splits k evenly. */
static int64_t pick_kc(int64_t k, int64_t kc_max, int64_t step) {
    int64_t nb = (k + kc_max - 1) / kc_max;
    int64_t kc = (k + nb - 1) / nb;
    return (kc + step - 1) / step * step;
}

/* ---- prefill --------------------------------------------------------------- */

/* Rows [n0, n1) of y: k blocks of at most kc_max, W rows in blocks that fit
 * L2, every x row against each block, in R x C register tiles. Tiles at the
 * edges repeat the last row (their extra sums are not stored). */
INLINE void run_tiles(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t, int R, int C,
                      int64_t kc_max) {
    const int64_t wsize = t == MNV_DTYPE_F32 ? 4 : 2;
    const int64_t kc = pick_kc(a->k, kc_max, 4);
    const int64_t nc = MNV_MAX(C, L2_BLOCK / (kc * wsize) / C * C);
    for (int64_t k0 = 0; k0 < a->k; k0 += kc) {
        const int64_t k1 = MNV_MIN(a->k, k0 + kc);
        for (int64_t nb = n0; nb < n1; nb += nc) {
            const int64_t nb1 = MNV_MIN(n1, nb + nc);
            for (int64_t i0 = 0; i0 < a->m; i0 += R) {
                const float *x[MAXR];
#pragma GCC unroll 4
                for (int i = 0; i < R; i++) x[i] = a->x + MNV_MIN(i0 + i, a->m - 1) * a->ldx;
                const int64_t rows = MNV_MIN(R, a->m - i0);
                for (int64_t j0 = nb; j0 < nb1; j0 += C) {
                    const void *w[MAXC];
#pragma GCC unroll 8
                    for (int j = 0; j < C; j++)
                        w[j] = (const char *)a->w + MNV_MIN(j0 + j, nb1 - 1) * a->ldw * wsize;
                    float out[MAXR][MAXC];
                    block_dot(R, C, t, x, w, k0, k1, out);
                    const int64_t cols = MNV_MIN(C, nb1 - j0);
                    for (int64_t i = 0; i < rows; i++) {
                        float *y = a->y + (i0 + i) * a->ldy + j0;
                        for (int64_t j = 0; j < cols; j++) y[j] = k0 ? y[j] + out[i][j] : out[i][j];
                    }
                }
            }
        }
    }
}

/* ---- decode ---------------------------------------------------------------- */

/* Rows [n0, n1) of y for m = R rows of x, each weight byte read once, as C
 * sequential streams side by side (row r of each of C equal parts). */
INLINE void run_rows(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t, int R, int C) {
    const int64_t wsize = t == MNV_DTYPE_F32 ? 4 : 2, part = (n1 - n0) / C;
    const float *x[MAXR];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) x[i] = a->x + i * a->ldx;
    for (int64_t r = 0; r < part; r++) {
        const void *w[MAXC];
        float out[MAXR][MAXC];
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) w[c] = (const char *)a->w + (n0 + c * part + r) * a->ldw * wsize;
        block_dot(R, C, t, x, w, 0, a->k, out);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
#pragma GCC unroll 8
            for (int c = 0; c < C; c++) a->y[i * a->ldy + n0 + c * part + r] = out[i][c];
    }
    for (int64_t j = n0 + C * part; j < n1; j++) { /* the n % C rows left */
        const void *w[MAXC] = {(const char *)a->w + j * a->ldw * wsize};
        float out[MAXR][MAXC];
        block_dot(R, 1, t, x, w, 0, a->k, out);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) a->y[i * a->ldy + j] = out[i][0];
    }
}

/* One instantiation per weight type: decode (R = m) or prefill tiles. */
INLINE void run_type(const mnv_matmul_args *a, int64_t n0, int64_t n1, mnv_dtype t) {
    switch (a->m) { /* decode: R*C sums + C weights + 1 x within 32 registers */
    case 1: run_rows(a, n0, n1, t, 1, 8); break;
    case 2: run_rows(a, n0, n1, t, 2, 8); break;
    case 3: run_rows(a, n0, n1, t, 3, 6); break;
    case 4: run_rows(a, n0, n1, t, 4, 5); break;
    default: run_tiles(a, n0, n1, t, 4, TILE_C, 512); break;
    }
}

static void run_f32(const mnv_matmul_args *a, int64_t n0, int64_t n1) { run_type(a, n0, n1, MNV_DTYPE_F32); }
static void run_f16(const mnv_matmul_args *a, int64_t n0, int64_t n1) { run_type(a, n0, n1, MNV_DTYPE_F16); }
static void run_bf16(const mnv_matmul_args *a, int64_t n0, int64_t n1) { run_type(a, n0, n1, MNV_DTYPE_BF16); }

void mnv__matmul_neon(const mnv_matmul_args *a, int ith, int nth) {
    _Static_assert(MNV_MATMUL_GEMV_MAX_M <= MAXR, "decode tiles hold all of x");
    int64_t n0, n1;
    mnv__matmul_split(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    if (a->wtype == MNV_DTYPE_F32) run_f32(a, n0, n1);
    else if (a->wtype == MNV_DTYPE_F16) run_f16(a, n0, n1);
    else run_bf16(a, n0, n1);
}

#endif
