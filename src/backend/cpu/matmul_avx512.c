/* y = x * W^T with AVX-512 (compiled with -mavx512f/bw/vl/dq/bf16 -mfma -mf16c).
 *
 * Every product is a grid of register tiles in dot-product form: a tile of
 * R rows of x and C rows of W keeps R*C 16-lane partial sums while both
 * operands stream along k (W rows are contiguous along k, so nothing is
 * packed), then reduces each to a scalar. The R x-rows of a k block stay in
 * L1 while the C-row slices of W come from a block of W sized for L2.
 *
 *   f32 math   F32 weights, F16 weights (F16C) and BF16 weights widened to f32
 *   bf16 dot   BF16 weights with m > MNV_MATMUL_GEMV_MAX_M on AVX512_BF16: x is
 *              rounded to bf16 once (threads share the rows, then a barrier)
 *              and vdpbf16ps does 32 multiply-adds per instruction.
 *
 * Small m (decode, m <= MNV_MATMUL_GEMV_MAX_M) streams each W row once, front
 * to back, against all m rows of x (see run_rows); bf16 dot products with m
 * up to 16 read W the same way (run_streams, see gemm_bf16_dot). Threads split
 * n (rows of W) into contiguous chunks in all cases. */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "backend/cpu/matmul.h"

#define INLINE static inline __attribute__((always_inline))

enum {
    MAXR = 8,                 /* x rows per tile */
    MAXC = 4,                 /* W rows per tile (one __m128 of results per x row) */
    DOT = -1,                 /* mode: bf16 dot product instead of a dtype for f32 math */
    L2_BLOCK = 384 * 1024,    /* bytes of W per block kept in L2 (1 MiB per Zen 4 core) */
};

/* ---- loads and reductions ---------------------------------------------------- */

/* 16 weights of a row from element kk, widened to f32 (the masked form reads
 * only lanes in mask, zeroing the others). */
INLINE __m512 load_w16(const void *row, int64_t kk, int t, bool masked, __mmask16 mask) {
    if (t == MNV_DTYPE_F32)
        return masked ? _mm512_maskz_loadu_ps(mask, (const float *)row + kk)
                      : _mm512_loadu_ps((const float *)row + kk);
    const uint16_t *p = (const uint16_t *)row + kk;
    __m256i h = masked ? _mm256_maskz_loadu_epi16(mask, p) : _mm256_loadu_si256((const __m256i *)p);
    if (t == MNV_DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Lane j of the result is the sum of the 16 lanes of the j-th argument. */
INLINE __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
    __m512 s = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* ---- the register tile ---------------------------------------------------------- */

typedef struct {
    const void *x[MAXR]; /* f32 rows of x, or bf16 rows in the scratch (DOT) */
    const void *w[MAXC];
} tile_rows;

/* One step along k: 16 elements (f32 math) or 32 (DOT) of every row pair. */
INLINE void tile_step(int R, int C, int t, const tile_rows *p, int64_t kk, bool masked,
                      __mmask32 mask, __m512 acc[MAXR][MAXC]) {
    __m512 wv[MAXC];
    __m512i wb[MAXC];
#pragma GCC unroll 4
    for (int j = 0; j < C; j++) {
        const uint16_t *wj = (const uint16_t *)p->w[j] + kk;
        if (t == DOT)
            wb[j] = masked ? _mm512_maskz_loadu_epi16(mask, wj) : _mm512_loadu_si512(wj);
        else
            wv[j] = load_w16(p->w[j], kk, t, masked, (__mmask16)mask);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        if (t == DOT) { /* x rows are zero-padded to a multiple of 32: no mask */
            __m512i xv = _mm512_loadu_si512((const uint16_t *)p->x[i] + kk);
#pragma GCC unroll 4
            for (int j = 0; j < C; j++)
                acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)xv, (__m512bh)wb[j]);
        } else {
            const float *xi = (const float *)p->x[i] + kk;
            __m512 xv = masked ? _mm512_maskz_loadu_ps((__mmask16)mask, xi) : _mm512_loadu_ps(xi);
            /* Keep xv in a register: GCC would otherwise fold the load into
             * each of the C FMAs, and loads, not FMAs, would bound the loop. */
            __asm__("" : "+v"(xv));
#pragma GCC unroll 4
            for (int j = 0; j < C; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
}

/* out[i] lane j = sum over k in [k0, k1) of x_i[k] * w_j[k], for an R x C tile. */
INLINE void tile_dot(int R, int C, int t, const tile_rows *p, int64_t k0, int64_t k1,
                     __m128 out[MAXR]) {
    const int64_t step = t == DOT ? 32 : 16;
    __m512 acc[MAXR][MAXC];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int j = 0; j < C; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t kk = k0;
    for (; kk + step <= k1; kk += step) tile_step(R, C, t, p, kk, false, 0, acc);
    if (kk < k1) tile_step(R, C, t, p, kk, true, (__mmask32)((1ull << (k1 - kk)) - 1), acc);
    const __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
        out[i] = hsum4(acc[i][0], C > 1 ? acc[i][1] : z, C > 2 ? acc[i][2] : z,
                       C > 3 ? acc[i][3] : z);
}

/* Write (or add, for later k blocks) the valid rows x cols corner of a tile. */
INLINE void tile_store(const mnv_matmul_args *a, int R, int64_t i0, int64_t j0, int64_t rows,
                       int64_t cols, const __m128 out[MAXR], bool accumulate) {
    const __mmask8 cm = (__mmask8)((1u << cols) - 1);
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        if (i >= rows) break;
        float *y = a->y + (i0 + i) * a->ldy + j0;
        __m128 v = out[i];
        if (accumulate) v = _mm_add_ps(v, _mm_maskz_loadu_ps(cm, y));
        _mm_mask_storeu_ps(y, cm, v);
    }
}

/* ---- blocking ------------------------------------------------------------------ */

typedef struct {
    const void *x;  /* f32 x (a->x) or its bf16 copy (DOT) */
    int64_t ldx;    /* row stride of that, elements */
    size_t xsize, wsize;
} operands;

/* k block: the largest multiple of step <= kc_max that splits k evenly. */
static int64_t pick_kc(int64_t k, int64_t kc_max, int64_t step) {
    int64_t nb = (k + kc_max - 1) / kc_max;
    int64_t kc = (k + nb - 1) / nb;
    return (kc + step - 1) / step * step;
}

/* Rows [n0, n1) of y: blocks of k (outer), of W rows (fits L2), of x rows
 * (R, reused from L1 across a W block), then C-row tiles of W. Tiles at the
 * edges clamp their row pointers and store only their valid corner. */
INLINE void run_tiles(const mnv_matmul_args *a, int64_t n0, int64_t n1, int t, int R, int C,
                      int64_t kc_max) {
    const operands op = {
        .x = t == DOT ? a->scratch : (const void *)a->x,
        .ldx = t == DOT ? mnv__matmul_bf16_kpad(a->k) : a->ldx,
        .xsize = t == DOT ? 2 : 4,
        .wsize = t == MNV_DTYPE_F32 ? 4 : 2,
    };
    const int64_t kc = pick_kc(a->k, kc_max, t == DOT ? 32 : 16);
    const int64_t nc = MNV_MAX(C, L2_BLOCK / (kc * (int64_t)op.wsize) / C * C);
    for (int64_t k0 = 0; k0 < a->k; k0 += kc) {
        const int64_t k1 = MNV_MIN(a->k, k0 + kc);
        for (int64_t nb = n0; nb < n1; nb += nc) {
            const int64_t nb1 = MNV_MIN(n1, nb + nc);
            for (int64_t i0 = 0; i0 < a->m; i0 += R) {
                tile_rows p;
#pragma GCC unroll 8
                for (int i = 0; i < R; i++)
                    p.x[i] = (const char *)op.x +
                             MNV_MIN(i0 + i, a->m - 1) * op.ldx * (int64_t)op.xsize;
                for (int64_t j0 = nb; j0 < nb1; j0 += C) {
#pragma GCC unroll 4
                    for (int j = 0; j < C; j++)
                        p.w[j] = (const char *)a->w +
                                 MNV_MIN(j0 + j, nb1 - 1) * a->ldw * (int64_t)op.wsize;
                    __m128 out[MAXR];
                    tile_dot(R, C, t, &p, k0, k1, out);
                    tile_store(a, R, i0, j0, a->m - i0, MNV_MIN(C, nb1 - j0), out, k0 > 0);
                }
            }
        }
    }
}

/* ---- decode ---------------------------------------------------------------------- */

/* acc[i][c][u] += x_i . w_c over the 64 bytes of each W row from element kk
 * (16 f32 or 32 f16/bf16 weights: one or two vectors). */
INLINE void line_step(int R, int C, int t, const float *const *x, const void *const *w,
                      int64_t kk, __m512 acc[MAXR][MAXC][2]) {
    const int U = t == MNV_DTYPE_F32 ? 1 : 2;
#pragma GCC unroll 2
    for (int u = 0; u < U; u++) {
        __m512 wv[MAXC];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) wv[c] = load_w16(w[c], kk + 16 * u, t, false, 0);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __m512 xv = _mm512_loadu_ps(x[i] + kk + 16 * u);
            if (C > 1) __asm__("" : "+v"(xv));
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) acc[i][c][u] = _mm512_fmadd_ps(xv, wv[c], acc[i][c][u]);
        }
    }
}

/* out[i][c] = x_i . w_c for the R (= m) rows of x and C rows of W, one
 * 64-byte line of each W row per step, front to back. */
INLINE void rows_dot(int R, int C, int t, const float *const *x, const void *const *w, int64_t k,
                     float out[MAXR][MAXC]) {
    const int64_t line = t == MNV_DTYPE_F32 ? 16 : 32, kfull = k / line * line;
    __m512 acc[MAXR][MAXC][2];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[i][c][0] = acc[i][c][1] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < kfull; kk += line) line_step(R, C, t, x, w, kk, acc);
    for (int64_t kk = kfull; kk < k; kk += 16) { /* the partial last line */
        const __mmask16 m = k - kk >= 16 ? 0xffff : (__mmask16)((1u << (k - kk)) - 1);
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            __m512 wv = load_w16(w[c], kk, t, true, m);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++)
                acc[i][c][0] =
                    _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x[i] + kk), wv, acc[i][c][0]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            out[i][c] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][c][0], acc[i][c][1]));
}

/* Rows [n0, n1) of y for m = R rows of x: every weight byte is read once.
 *
 * The range is cut into C parts read side by side, each front to back, so
 * that W arrives as C long sequential streams (contiguous rows continue one
 * another) and each x load serves C rows. Measured on Zen 4 (bf16, m = 1,
 * one thread): one stream reaches the streaming-read bandwidth while x stays
 * in L1, but x of k = 5504 f32 (22 KB) plus the W row overflow L1 and it
 * drops to ~52%; 4 streams give 75-100%; 6 or 8 streams, 2-4 rows next to
 * each other, or blocking k (rows read in pieces) all lose 30-60%, as do
 * software prefetches. Each stream starts at its own row of its part
 * (mnv__stream_shift), so that parts a multiple of 1 MiB apart do not read
 * the same DRAM banks at the same time. */
INLINE void run_rows(const mnv_matmul_args *a, int64_t n0, int64_t n1, int t, int R, int C) {
    const int64_t wsize = t == MNV_DTYPE_F32 ? 4 : 2, part = (n1 - n0) / C;
    const float *x[MAXR];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) x[i] = a->x + i * a->ldx;
    const int64_t shift = mnv__stream_shift(part, a->ldw * wsize);
    for (int64_t r = 0; r < part; r++) {
        const void *w[MAXC];
        float out[MAXR][MAXC];
        int64_t j[MAXC];
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
        const void *w[MAXC] = {(const char *)a->w + j * a->ldw * wsize};
        float out[MAXR][MAXC];
        rows_dot(R, 1, t, x, w, a->k, out);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) a->y[i * a->ldy + j] = out[i][0];
    }
}

/* ---- entry points, one instantiation per weight type and tile shape ------------- */

INLINE void run_gemv(const mnv_matmul_args *a, int64_t n0, int64_t n1, int t) {
    _Static_assert(MNV_MATMUL_GEMV_MAX_M == 4, "one case per m");
    switch (a->m) { /* C: as many streams as registers allow, up to 4 */
    case 1: run_rows(a, n0, n1, t, 1, 4); break;
    case 2: run_rows(a, n0, n1, t, 2, 4); break;
    case 3: run_rows(a, n0, n1, t, 3, 4); break;
    default: run_rows(a, n0, n1, t, 4, 2); break;
    }
}

static void gemv_f32(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_gemv(a, n0, n1, MNV_DTYPE_F32);
}
static void gemv_f16(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_gemv(a, n0, n1, MNV_DTYPE_F16);
}
static void gemv_bf16(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_gemv(a, n0, n1, MNV_DTYPE_BF16);
}

/* Prefill: 6x4 tiles (24 sums, 4 W + 1 x registers) and k blocks of up to
 * 1024 (6 x rows of f32 = 24 KB in L1) measured best of 4x4..8x3 and
 * 256..2048 for every weight type, 80-90% of the FMA peak on one core. */
static void gemm_f32(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_tiles(a, n0, n1, MNV_DTYPE_F32, 6, 4, 1024);
}
static void gemm_f16(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_tiles(a, n0, n1, MNV_DTYPE_F16, 6, 4, 1024);
}
static void gemm_bf16(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    run_tiles(a, n0, n1, MNV_DTYPE_BF16, 6, 4, 1024);
}
/* Rows [n0, n1) of y for mid-size m with bf16 dot products: as run_rows, the
 * range is cut into C parts read side by side, each front to back, so that W
 * arrives as C long sequential streams, and each group of C rows (whole, k
 * unblocked) is multiplied by every R-row block of x while it is in cache. */
INLINE void run_streams(const mnv_matmul_args *a, int64_t n0, int64_t n1, int R, int C) {
    const int64_t kpad = mnv__matmul_bf16_kpad(a->k), part = (n1 - n0) / C;
    const uint16_t *xb = a->scratch;
    for (int64_t r = 0; r < part + (n1 - n0) % C; r++) {
        tile_rows p;
        int64_t col[MAXC];
        const bool tail = r >= part; /* the n % C rows left, one at a time */
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            col[c] = tail ? n0 + C * part + (r - part) : n0 + c * part + r;
            p.w[c] = (const uint16_t *)a->w + col[c] * a->ldw;
        }
        for (int64_t i0 = 0; i0 < a->m; i0 += R) {
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) p.x[i] = xb + MNV_MIN(i0 + i, a->m - 1) * kpad;
            __m128 out[MAXR];
            tile_dot(R, C, DOT, &p, 0, a->k, out);
            for (int i = 0; i < R && i0 + i < a->m; i++) {
                float o[4];
                _mm_storeu_ps(o, out[i]);
                float *y = a->y + (i0 + i) * a->ldy;
                if (tail) y[col[0]] = o[0];
                else
                    for (int c = 0; c < C; c++) y[col[c]] = o[c];
            }
        }
    }
}

/* Mid-size m (up to MNV_MATMUL_MID_MAX_M, e.g. the tokens of one expert):
 * m split into equal tiles of 5 to 8 rows (8x3 and 7x3 use 24 and 21 sums)
 * so that no tile computes clamped duplicate rows, e.g. m = 8 as one 8-row
 * pass instead of two 6-row ones. Up to 16 rows (two passes) W is read in C
 * side-by-side streams (run_streams); measured on Zen 4 (one thread, W from
 * DRAM) 16-20 GB/s at m = 5 and 12-13 at m = 8, against 10-14 and 8-10 for the
 * 6x4 tiles. Beyond, the tiles of run_tiles (as compute-bound as the streams,
 * 4-5 GB/s at m = 32), with W rows read whole (k blocks of up to 8192: 5-15%
 * faster than 1024 at m = 17..32; the x rows, at most 8 x 16 KB, stay in L2). */
static void gemm_bf16_dot(const mnv_matmul_args *a, int64_t n0, int64_t n1) {
    if (a->m > MNV_MATMUL_MID_MAX_M) {
        run_tiles(a, n0, n1, DOT, 6, 4, 1024);
        return;
    }
    const int64_t passes = (a->m + 7) / 8, r = (a->m + passes - 1) / passes;
    const bool streams = passes <= 2;
    switch (r) {
    case 5: streams ? run_streams(a, n0, n1, 5, 4) : run_tiles(a, n0, n1, DOT, 5, 4, 8192); break;
    case 6: streams ? run_streams(a, n0, n1, 6, 4) : run_tiles(a, n0, n1, DOT, 6, 4, 8192); break;
    case 7: streams ? run_streams(a, n0, n1, 7, 3) : run_tiles(a, n0, n1, DOT, 7, 3, 8192); break;
    default: streams ? run_streams(a, n0, n1, 8, 3) : run_tiles(a, n0, n1, DOT, 8, 3, 8192); break;
    }
}

/* Thread ith's rows of x rounded to bf16 (nearest even), zero-padded to kpad. */
static void convert_x_bf16(const mnv_matmul_args *a, int ith, int nth) {
    const int64_t kpad = mnv__matmul_bf16_kpad(a->k);
    int64_t r0, r1;
    mnv__matmul_split(a->m, ith, nth, 1, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const float *x = a->x + r * a->ldx;
        uint16_t *dst = (uint16_t *)a->scratch + r * kpad;
        for (int64_t kk = 0; kk < kpad; kk += 32) {
            const int64_t left = a->k - kk; /* may be <= 0 in the padding */
            const __mmask16 mlo = left >= 16 ? 0xffff : (__mmask16)((1u << MNV_MAX(left, 0)) - 1);
            const __mmask16 mhi =
                left >= 32 ? 0xffff : (__mmask16)((1u << MNV_MAX(left - 16, 0)) - 1);
            __m512 lo = _mm512_maskz_loadu_ps(mlo, x + kk);
            __m512 hi = _mm512_maskz_loadu_ps(mhi, x + kk + 16);
            _mm512_storeu_si512(dst + kk, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}

void mnv__matmul_avx512(const mnv_matmul_args *a, int ith, int nth, bool bf16_dot) {
    int64_t n0, n1; /* 16-row chunks keep threads' y writes off shared cache lines */
    mnv__matmul_split(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    const mnv_dtype t = a->wtype;
    if (a->m <= MNV_MATMUL_GEMV_MAX_M) {
        if (t == MNV_DTYPE_F32) gemv_f32(a, n0, n1);
        else if (t == MNV_DTYPE_F16) gemv_f16(a, n0, n1);
        else gemv_bf16(a, n0, n1);
        return;
    }
    if (t == MNV_DTYPE_BF16 && bf16_dot && a->scratch && (nth == 1 || a->barrier)) {
        convert_x_bf16(a, ith, nth);
        if (nth > 1) a->barrier(a->barrier_ctx);
        gemm_bf16_dot(a, n0, n1);
        return;
    }
    if (t == MNV_DTYPE_F32) gemm_f32(a, n0, n1);
    else if (t == MNV_DTYPE_F16) gemm_f16(a, n0, n1);
    else gemm_bf16(a, n0, n1);
}

#endif
