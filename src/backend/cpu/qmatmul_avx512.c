/* y = x * dequant(W)^T with AVX-512 (compiled with -mavx512f/bw/vl/dq/bf16/vnni
 * -mfma -mf16c). Two families, chosen per call:
 *
 * int8 (VNNI, impl "avx512-vnni"): affine 4/8-bit and mxfp4 decode, affine
 *   2-8-bit and mxfp4 prefill. Each row of x is rounded to int8 with one scale
 *   per weight group (dx = max|x|/127 over the group), and
 *     affine  y = sum_g dx_g * (s_g * sum_j xq_j q_j  +  b_g * sum_j xq_j)
 *     mxfp4   y = sum_g 2^(e_g-127) * 0.5 * dx_g * (sum_j xq_j u_j - 12 sum_j xq_j)
 *   with u = 2*e2m1 + 12 in [0, 24] (a vpshufb table), so vpdpbusd multiplies
 *   unsigned codes by signed x, 64 pairs per instruction. Both are exactly
 *   xhat . w (up to f32 rounding of the sums) for xhat_j = dx_g * xq_j, so the
 *   error is sum_j e_j w_j with |e_j| <= dx_g/2 = max|x over the group|/254:
 *   relative to |y| about max|x|/(127*sqrt(12)*rms(x)), ~0.4% for uniform x,
 *   ~0.7% for Gaussian x (the sum of x is deliberately the rounded one: the
 *   exact sum would leave the error sum e_j s q_j, 2-3x larger when the bias
 *   is a group edge as MLX makes it).
 *
 * f32 (impl "avx512", and the other formats under "avx512-vnni"): weights are
 *   dequantized to f32 (s*q + b as one FMA) and multiplied in f32.
 *
 * Decode (m <= 4) streams each W row once, front to back (threads split n into
 * contiguous chunks): int8 codes are expanded in registers and dotted with the
 * prepared x; the per-lane scale comes from a permute of 16 group scales.
 * Prefill packs panels of W rows (int8 codes interleaved as [k/4][row][4] for
 * vpdpbusd with a broadcast x dword, or f32 as [k][row]) into a thread-private
 * scratch panel and runs an outer-product register tile over all rows of x. */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "backend/cpu/qmatmul.h"

#define INLINE static inline __attribute__((always_inline))

enum { MAXR = 4, I8_R = 4, F32_R = 6, F32_GEMV_KC = 512 };

typedef struct {
    int bits, G, lg;  /* bits per code, group size, log2(group size) */
    bool fp4;         /* mxfp4 */
    mnv_dtype sdt;    /* scale dtype; U8 = E8M0 */
    int64_t ss;       /* bytes per scale */
} qdesc;

static qdesc describe(const mnv_qformat *f) {
    qdesc d = {.bits = f->bits, .G = f->group_size, .fp4 = f->mode == MNV_QMODE_MXFP4};
    while ((1 << d.lg) < d.G) d.lg++;
    d.sdt = f->mode == MNV_QMODE_AFFINE ? f->scale_dtype : MNV_DTYPE_U8;
    d.ss = (int64_t)mnv_dtype_size(d.sdt);
    return d;
}

static uint8_t *align64(void *p) { return (uint8_t *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

INLINE const uint8_t *wrow(const mnv_qmatmul_args *a, int64_t j) { return (const uint8_t *)(a->w + j * a->ldw); }
INLINE const void *srow(const mnv_qmatmul_args *a, const qdesc *d, int64_t j) {
    return (const char *)a->scales + j * a->lds * d->ss;
}
INLINE const void *brow(const mnv_qmatmul_args *a, const qdesc *d, int64_t j) {
    return a->biases ? (const char *)a->biases + j * a->lds * d->ss : NULL;
}

/* ---- scales -------------------------------------------------------------------- */

INLINE float scale_at(mnv_dtype t, const void *s, int64_t g) {
    switch (t) {
    case MNV_DTYPE_F32: return ((const float *)s)[g];
    case MNV_DTYPE_F16: return _cvtsh_ss(((const uint16_t *)s)[g]);
    case MNV_DTYPE_BF16: return mnv_bf16_to_f32(((const uint16_t *)s)[g]);
    default: { /* E8M0 */
        const uint32_t e = ((const uint8_t *)s)[g];
        return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128((int)(e ? e << 23 : 0x00400000u))));
    }
    }
}

/* Scales g .. g+15 of a row as f32 (lanes outside mk are 0). */
INLINE __m512 load_scales16(const void *s, mnv_dtype t, int64_t g, __mmask16 mk) {
    switch (t) {
    case MNV_DTYPE_F32: return _mm512_maskz_loadu_ps(mk, (const float *)s + g);
    case MNV_DTYPE_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)s + g));
    case MNV_DTYPE_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)s + g)), 16));
    default: { /* E8M0: e << 23, e = 0 -> 2^-127 */
        const __m512i e = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, (const uint8_t *)s + g));
        const __mmask16 z = _mm512_mask_cmpeq_epi32_mask(mk, e, _mm512_setzero_si512());
        return _mm512_castsi512_ps(
            _mm512_mask_mov_epi32(_mm512_slli_epi32(e, 23), z, _mm512_set1_epi32(0x00400000)));
    }
    }
}

/* ---- 16 x 16 transpose of 32-bit elements ----------------------------------------- */

/* dst row c (c < 16) = element c of src rows 0..15; strides in bytes. */
INLINE void transpose16(const void *src, int64_t ss, void *dst, int64_t ds) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps((const char *)src + i * ss);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int q = 0; q < 4; q++) { /* r[4q+e], lane L: rows 4q..4q+3 of column 4L+e */
        r[4 * q + 0] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0x44);
        r[4 * q + 1] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0xEE);
        r[4 * q + 2] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
        r[4 * q + 3] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xEE);
    }
    for (int e = 0; e < 4; e++) {
        t[4 * e + 0] = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88);
        t[4 * e + 1] = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xDD);
        t[4 * e + 2] = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88);
        t[4 * e + 3] = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xDD);
    }
    char *o = dst;
    for (int e = 0; e < 4; e++) {
        _mm512_storeu_ps(o + e * ds, _mm512_shuffle_f32x4(t[4 * e], t[4 * e + 2], 0x88));
        _mm512_storeu_ps(o + (8 + e) * ds, _mm512_shuffle_f32x4(t[4 * e], t[4 * e + 2], 0xDD));
        _mm512_storeu_ps(o + (4 + e) * ds, _mm512_shuffle_f32x4(t[4 * e + 1], t[4 * e + 3], 0x88));
        _mm512_storeu_ps(o + (12 + e) * ds, _mm512_shuffle_f32x4(t[4 * e + 1], t[4 * e + 3], 0xDD));
    }
}

/* ---- activations rounded to int8 ----------------------------------------------------- */

/* One row of prepared x: int8 codes (kpad bytes), then per group dx and the
 * second term's factor (affine: dx * sum of codes, the bias's weight;
 * mxfp4: -6 * dx * sum of codes), each zero-padded to a multiple of 16 groups. */
typedef struct {
    int8_t *q;
    float *dx, *xs2;
} xrow;

INLINE int64_t kpad128(int64_t k) { return (k + 127) / 128 * 128; }

static xrow xrow_at(uint8_t *base, int64_t k, int64_t i) {
    const int64_t kp = kpad128(k);
    uint8_t *p = base + (size_t)i * mnv__qx_row_bytes(k);
    const size_t gb = ((size_t)kp / 16 * 4 + 63) / 64 * 64;
    return (xrow){(int8_t *)p, (float *)(p + kp), (float *)(p + kp + gb)};
}

/* 4-bit decode order: within each 128-element chunk the 64 even elements, then
 * the 64 odd ones (a byte of W holds element 2b in its low nibble, 2b+1 high). */
INLINE void deinterleave128(int8_t *p) {
    const __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 64);
    const __m256i e0 = _mm512_cvtepi16_epi8(v0), e1 = _mm512_cvtepi16_epi8(v1);
    const __m256i o0 = _mm512_cvtepi16_epi8(_mm512_srli_epi16(v0, 8));
    const __m256i o1 = _mm512_cvtepi16_epi8(_mm512_srli_epi16(v1, 8));
    _mm256_storeu_si256((__m256i *)p, e0);
    _mm256_storeu_si256((__m256i *)(p + 32), e1);
    _mm256_storeu_si256((__m256i *)(p + 64), o0);
    _mm256_storeu_si256((__m256i *)(p + 96), o1);
}

static void prep_x_row(const float *x, int64_t k, const qdesc *d, bool deint, xrow r) {
    const int64_t G = d->G, ng = k / G, ngp = (ng + 15) / 16 * 16, kp = kpad128(k);
    for (int64_t g = 0; g < ng; g++) {
        const float *xg = x + g * G;
        __m512 amax = _mm512_setzero_ps();
        for (int64_t t = 0; t < G; t += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(xg + t)));
        const float am = _mm512_reduce_max_ps(amax), dx = am / 127.0f;
        const __m512 inv = _mm512_set1_ps(am > 0.0f ? 127.0f / am : 0.0f);
        __m512i sq = _mm512_setzero_si512();
        for (int64_t t = 0; t < G; t += 16) { /* round to nearest even */
            const __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xg + t), inv));
            sq = _mm512_add_epi32(sq, qi);
            _mm_storeu_si128((__m128i *)(r.q + g * G + t), _mm512_cvtepi32_epi8(qi));
        }
        const float sumq = (float)_mm512_reduce_add_epi32(sq);
        r.dx[g] = d->fp4 ? 0.5f * dx : dx;
        r.xs2[g] = d->fp4 ? -6.0f * dx * sumq : dx * sumq;
    }
    for (int64_t g = ng; g < ngp; g++) r.dx[g] = r.xs2[g] = 0.0f;
    memset(r.q + k, 0, (size_t)(kp - k));
    if (deint)
        for (int64_t c = 0; c < kp; c += 128) deinterleave128(r.q + c);
}

/* ---- decode: int8 ------------------------------------------------------------------ */

/* u = 2*e2m1(c) + 12 for the 16 codes (in every 128-bit lane, for vpshufb). */
INLINE __m512i fp4_lut(void) {
    return _mm512_broadcast_i32x4(_mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
}

/* Rows [j0, j1) of y for the R (= m) prepared rows of x. W rows are read front
 * to back in 64-byte chunks (64 codes at 8 bits, 128 at 4 bits); lane l of a
 * chunk's vpdpbusd sums covers 4 (8 codes), all of one group. Scales come 16
 * groups at a time; SD = scale * dx per group, permuted to the lanes. */
INLINE void vnni_gemv(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, int64_t j0, int64_t j1,
                      const int R, const int BITS, const bool FP4) {
    const int64_t k = a->k, G = d->G, ng = k / G;
    const int64_t CH = BITS == 8 ? 64 : 128;
    const int64_t rowbytes = k * BITS / 8, nch = (rowbytes + 63) / 64, wch = 16 * G / CH;
    const __m128i lgv = _mm_cvtsi32_si128(d->lg);
    const __m512i lanepos = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)(CH / 16)));
    const __m512i chv = _mm512_set1_epi32((int)CH);
    const __m512i lut = fp4_lut(), m4 = _mm512_set1_epi8(0x0F), zero = _mm512_setzero_si512();
    xrow xr[MAXR];
    for (int i = 0; i < R; i++) xr[i] = xrow_at(xbase, k, i);
    for (int64_t j = j0; j < j1; j++) {
        const uint8_t *w = wrow(a, j);
        const void *sc = srow(a, d, j), *bi = brow(a, d, j);
        __m512 facc[MAXR], bacc[MAXR];
        for (int i = 0; i < R; i++) facc[i] = bacc[i] = _mm512_setzero_ps();
        for (int64_t g0 = 0; g0 < ng; g0 += 16) {
            const __mmask16 mk = ng - g0 >= 16 ? 0xffff : (__mmask16)((1u << (ng - g0)) - 1);
            const __m512 S = load_scales16(sc, d->sdt, g0, mk);
            const __m512 B = FP4 ? S : load_scales16(bi, d->sdt, g0, mk);
            __m512 SD[MAXR];
            for (int i = 0; i < R; i++) {
                SD[i] = _mm512_mul_ps(S, _mm512_loadu_ps(xr[i].dx + g0));
                bacc[i] = _mm512_fmadd_ps(B, _mm512_loadu_ps(xr[i].xs2 + g0), bacc[i]);
            }
            const int64_t c0 = g0 * G / CH, c1 = MNV_MIN(c0 + wch, nch);
            __m512i pos = lanepos;
            for (int64_t c = c0; c < c1; c++) {
                const uint8_t *wp = w + c * 64;
                const __m512i wv = (c + 1) * 64 <= rowbytes
                                       ? _mm512_loadu_si512(wp)
                                       : _mm512_maskz_loadu_epi8(((__mmask64)1 << (rowbytes - c * 64)) - 1, wp);
                const __m512i idx = _mm512_srl_epi32(pos, lgv);
                pos = _mm512_add_epi32(pos, chv);
                __m512i lo = wv, hi = wv;
                if (BITS == 4) {
                    lo = _mm512_and_si512(wv, m4);
                    hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m4);
                    if (FP4) {
                        lo = _mm512_shuffle_epi8(lut, lo);
                        hi = _mm512_shuffle_epi8(lut, hi);
                    }
                }
                for (int i = 0; i < R; i++) {
                    __m512i acc;
                    if (BITS == 8) {
                        acc = _mm512_dpbusd_epi32(zero, wv, _mm512_loadu_si512(xr[i].q + c * 64));
                    } else {
                        acc = _mm512_dpbusd_epi32(zero, lo, _mm512_loadu_si512(xr[i].q + c * 128));
                        acc = _mm512_dpbusd_epi32(acc, hi, _mm512_loadu_si512(xr[i].q + c * 128 + 64));
                    }
                    facc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(idx, SD[i]), facc[i]);
                }
            }
        }
        for (int i = 0; i < R; i++) a->y[i * a->ldy + j] = _mm512_reduce_add_ps(_mm512_add_ps(facc[i], bacc[i]));
    }
}

#define GEMV_CASES(BITS, FP4)                                                                                     \
    switch (a->m) {                                                                                               \
    case 1: vnni_gemv(a, d, xbase, n0, n1, 1, BITS, FP4); break;                                                  \
    case 2: vnni_gemv(a, d, xbase, n0, n1, 2, BITS, FP4); break;                                                  \
    case 3: vnni_gemv(a, d, xbase, n0, n1, 3, BITS, FP4); break;                                                  \
    default: vnni_gemv(a, d, xbase, n0, n1, 4, BITS, FP4); break;                                                 \
    }
static void gemv_i8_8(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, int64_t n0, int64_t n1) {
    GEMV_CASES(8, false)
}
static void gemv_i8_4(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, int64_t n0, int64_t n1) {
    GEMV_CASES(4, false)
}
static void gemv_i8_fp4(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, int64_t n0, int64_t n1) {
    GEMV_CASES(4, true)
}
#undef GEMV_CASES

/* Each thread prepares its own copy of x (m <= 4 rows: cheaper than a barrier). */
static void vnni_decode(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    uint8_t *xbase = align64(a->scratch) + (size_t)ith * (size_t)a->m * mnv__qx_row_bytes(a->k);
    for (int64_t i = 0; i < a->m; i++) prep_x_row(a->x + i * a->ldx, a->k, d, d->bits == 4, xrow_at(xbase, a->k, i));
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    if (d->fp4) gemv_i8_fp4(a, d, xbase, n0, n1);
    else if (d->bits == 8) gemv_i8_8(a, d, xbase, n0, n1);
    else gemv_i8_4(a, d, xbase, n0, n1);
}

/* ---- prefill: int8 panels ---------------------------------------------------------------- */

typedef struct {
    uint8_t *codes;  /* (kc/4, NP, 4): 4 consecutive codes of each of NP rows */
    float *sw, *bw;  /* (kc/G, NP) scales (mxfp4: 2^(e-127)) and biases */
    uint8_t *rowbuf; /* 16 rows of unpacked codes */
} i8panel;

enum { NP = MNV__QI8_NP };

static i8panel i8panel_at(uint8_t *p) {
    i8panel q;
    q.codes = p;
    q.sw = (float *)(p + (size_t)NP * MNV__QI8_KC_MAX);
    q.bw = q.sw + (size_t)(MNV__QI8_KC_MAX / 16) * NP;
    q.rowbuf = (uint8_t *)(q.bw + (size_t)(MNV__QI8_KC_MAX / 16) * NP);
    return q;
}

/* Codes [k0, k0+kc) of row j, one byte each (mxfp4: u = 2*e2m1 + 12). */
static void codes_row(const mnv_qmatmul_args *a, const qdesc *d, int64_t j, int64_t k0, int64_t kc, uint8_t *dst) {
    const uint8_t *w = wrow(a, j);
    if (d->bits == 8) {
        memcpy(dst, w + k0, (size_t)kc);
    } else if (d->bits == 4) {
        const uint8_t *s = w + k0 / 2;
        const __m512i lo = _mm512_set1_epi16(0x000F), hi = _mm512_set1_epi16(0x00F0), lut = fp4_lut();
        for (int64_t t = 0; t < kc / 2; t += 32) { /* 32 bytes -> 64 codes */
            const int64_t left = kc / 2 - t;
            const __mmask32 mk = left >= 32 ? 0xffffffffu : (__mmask32)((1u << left) - 1);
            const __m512i v = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mk, s + t));
            __m512i c = _mm512_or_si512(_mm512_and_si512(v, lo), _mm512_slli_epi16(_mm512_and_si512(v, hi), 4));
            if (d->fp4) c = _mm512_shuffle_epi8(lut, c);
            _mm512_mask_storeu_epi8(dst + 2 * t, left >= 32 ? ~(__mmask64)0 : ((__mmask64)1 << (2 * left)) - 1, c);
        }
    } else {
        mnv__qcodes(a->w + j * a->ldw, d->bits, k0, kc, dst);
    }
}

/* Rows [j0, j0+rows) (rows <= NP), codes [k0, k0+kc), into the panel. */
static void pack_i8(const mnv_qmatmul_args *a, const qdesc *d, int64_t j0, int64_t rows, int64_t k0, int64_t kc,
                    const i8panel *p) {
    const int64_t G = d->G, g0 = k0 / G, ngb = kc / G, nw = kc / 4;
    for (int64_t cb = 0; cb * 16 < rows; cb++) {
        const int64_t rb = MNV_MIN(16, rows - cb * 16), jb = j0 + cb * 16;
        const uint8_t *src;
        int64_t sst;
        if (d->bits == 8 && rb == 16) { /* straight from W */
            src = wrow(a, jb) + k0;
            sst = a->ldw * 4;
        } else {
            for (int64_t r = 0; r < 16; r++) {
                if (r < rb) codes_row(a, d, jb + r, k0, kc, p->rowbuf + r * kc);
                else memset(p->rowbuf + r * kc, 0, (size_t)kc);
            }
            src = p->rowbuf;
            sst = kc;
        }
        int64_t w4 = 0;
        for (; w4 + 16 <= nw; w4 += 16) transpose16(src + w4 * 4, sst, p->codes + (w4 * NP + cb * 16) * 4, NP * 4);
        for (; w4 < nw; w4++)
            for (int64_t r = 0; r < 16; r++) memcpy(p->codes + (w4 * NP + cb * 16 + r) * 4, src + r * sst + w4 * 4, 4);
        for (int64_t r = 0; r < 16; r++) {
            const void *sc = r < rb ? srow(a, d, jb + r) : NULL, *bi = r < rb ? brow(a, d, jb + r) : NULL;
            for (int64_t g = 0; g < ngb; g++) {
                p->sw[g * NP + cb * 16 + r] = sc ? scale_at(d->sdt, sc, g0 + g) : 0.0f;
                if (!d->fp4) p->bw[g * NP + cb * 16 + r] = bi ? scale_at(d->sdt, bi, g0 + g) : 0.0f;
            }
        }
    }
}

/* y tile (I8_R rows of x) x (C*16 rows of W) over one k block: per group, the
 * int32 sums of vpdpbusd (W codes as unsigned, x as signed bytes) are scaled
 * into f32 accumulators. */
INLINE void i8_tile(const int C, const bool FP4, const i8panel *p, int64_t ngb, int64_t G,
                    const int8_t *const *xq, const float *const *dx, const float *const *xs2, float *const *y,
                    int rows, const __mmask16 *cm, bool accumulate) {
    __m512 f[I8_R][3];
    for (int r = 0; r < I8_R; r++)
        for (int c = 0; c < C; c++) f[r][c] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ngb; g++) {
        __m512i s[I8_R][3];
        for (int r = 0; r < I8_R; r++)
            for (int c = 0; c < C; c++) s[r][c] = _mm512_setzero_si512();
        const uint8_t *pp = p->codes + g * (G / 4) * NP * 4;
        const int64_t x0 = g * G;
        for (int64_t t = 0; t < G / 4; t++) {
            __m512i wv[3];
            for (int c = 0; c < C; c++) wv[c] = _mm512_loadu_si512(pp + (t * NP + 16 * c) * 4);
            for (int r = 0; r < I8_R; r++) {
                int32_t xv;
                memcpy(&xv, xq[r] + x0 + 4 * t, 4);
                const __m512i xb = _mm512_set1_epi32(xv);
                for (int c = 0; c < C; c++) s[r][c] = _mm512_dpbusd_epi32(s[r][c], wv[c], xb);
            }
        }
        for (int r = 0; r < I8_R; r++) {
            const __m512 dxb = _mm512_set1_ps(dx[r][g]), xsb = _mm512_set1_ps(xs2[r][g]);
            for (int c = 0; c < C; c++) {
                const __m512 swv = _mm512_loadu_ps(p->sw + g * NP + 16 * c);
                const __m512 v = _mm512_cvtepi32_ps(s[r][c]);
                if (FP4) {
                    f[r][c] = _mm512_fmadd_ps(_mm512_fmadd_ps(v, dxb, xsb), swv, f[r][c]);
                } else {
                    f[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(v, dxb), swv, f[r][c]);
                    f[r][c] = _mm512_fmadd_ps(xsb, _mm512_loadu_ps(p->bw + g * NP + 16 * c), f[r][c]);
                }
            }
        }
    }
    for (int r = 0; r < I8_R; r++) {
        if (r >= rows) break;
        for (int c = 0; c < C; c++) {
            __m512 v = f[r][c];
            if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cm[c], y[r] + 16 * c));
            _mm512_mask_storeu_ps(y[r] + 16 * c, cm[c], v);
        }
    }
}

#define I8_TILE_ARGS p, ngb, G, xq, dx, xs2, y, rows, cm, accumulate
static void i8_tile_any(int C, bool fp4, const i8panel *p, int64_t ngb, int64_t G, const int8_t *const *xq,
                        const float *const *dx, const float *const *xs2, float *const *y, int rows,
                        const __mmask16 *cm, bool accumulate) {
    if (fp4) {
        if (C == 3) i8_tile(3, true, I8_TILE_ARGS);
        else if (C == 2) i8_tile(2, true, I8_TILE_ARGS);
        else i8_tile(1, true, I8_TILE_ARGS);
    } else {
        if (C == 3) i8_tile(3, false, I8_TILE_ARGS);
        else if (C == 2) i8_tile(2, false, I8_TILE_ARGS);
        else i8_tile(1, false, I8_TILE_ARGS);
    }
}
#undef I8_TILE_ARGS

/* k block: a multiple of the group size that splits k evenly, about 512 KiB
 * of int8 x (kept in L2 across the thread's panels), at most QI8_KC_MAX. */
static int64_t pick_kc_i8(int64_t m, int64_t k, int64_t G) {
    int64_t t = MNV_MAX(256, MNV_MIN(MNV__QI8_KC_MAX - 128, (512 * 1024) / MNV_MAX(m, 1)));
    t = MNV_MAX(G, t / G * G);
    const int64_t nb = (k + t - 1) / t;
    return ((k + nb - 1) / nb + G - 1) / G * G;
}

static void vnni_prefill(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    const int64_t m = a->m, k = a->k, G = d->G;
    uint8_t *base = align64(a->scratch);
    const i8panel p = i8panel_at(base + (size_t)m * mnv__qx_row_bytes(k) + (size_t)ith * mnv__qpanel_bytes());
    int64_t r0, r1;
    mnv__qsplit(m, ith, nth, 1, &r0, &r1);
    for (int64_t i = r0; i < r1; i++) prep_x_row(a->x + i * a->ldx, k, d, false, xrow_at(base, k, i));
    if (nth > 1) a->barrier(a->barrier_ctx);

    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, 16, &n0, &n1);
    const int64_t kc_max = pick_kc_i8(m, k, G);
    for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
        const int64_t kc = MNV_MIN(kc_max, k - k0), ngb = kc / G;
        for (int64_t jp = n0; jp < n1; jp += NP) {
            const int64_t rows = MNV_MIN(NP, n1 - jp);
            const int C = (int)((rows + 15) / 16);
            pack_i8(a, d, jp, rows, k0, kc, &p);
            __mmask16 cm[3];
            for (int c = 0; c < 3; c++) {
                const int64_t left = rows - 16 * c;
                cm[c] = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
            }
            for (int64_t i0 = 0; i0 < m; i0 += I8_R) {
                const int8_t *xq[I8_R];
                const float *dx[I8_R], *xs2[I8_R];
                float *y[I8_R];
                for (int r = 0; r < I8_R; r++) {
                    const xrow xr = xrow_at(base, k, MNV_MIN(i0 + r, m - 1));
                    xq[r] = xr.q + k0;
                    dx[r] = xr.dx + k0 / G;
                    xs2[r] = xr.xs2 + k0 / G;
                    y[r] = a->y + MNV_MIN(i0 + r, m - 1) * a->ldy + jp;
                }
                i8_tile_any(C, d->fp4, &p, ngb, G, xq, dx, xs2, y, (int)MNV_MIN(I8_R, m - i0), cm, k0 > 0);
            }
        }
    }
}

/* ---- f32: dequantize, then multiply ------------------------------------------------------- */

/* 16 4-bit codes (8 bytes) in element order, as int32. */
INLINE __m512i codes16_4bit(const uint8_t *p) {
    const __m128i v = _mm_loadl_epi64((const __m128i *)p), m4 = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
    return _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
}

/* Groups [g0, g0+ngr) of row j as f32. Affine 4/8-bit and mxfp4 in SIMD
 * (affine as fma(q, s, b)); other formats through the portable helper. */
static void deq_f32(const mnv_qmatmul_args *a, const qdesc *d, int64_t j, int64_t g0, int64_t ngr, float *out) {
    const mnv_qformat *f = &a->fmt;
    const uint8_t *w = wrow(a, j);
    const void *sc = srow(a, d, j), *bi = brow(a, d, j);
    const int64_t G = d->G;
    if (f->mode == MNV_QMODE_AFFINE && (d->bits == 8 || d->bits == 4)) {
        for (int64_t g = g0; g < g0 + ngr; g++, out += G) {
            const __m512 s = _mm512_set1_ps(scale_at(d->sdt, sc, g)), b = _mm512_set1_ps(scale_at(d->sdt, bi, g));
            const uint8_t *p = w + g * G * d->bits / 8;
            for (int64_t t = 0; t < G; t += 16) {
                const __m512i q = d->bits == 8 ? _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + t)))
                                               : codes16_4bit(p + t / 2);
                _mm512_storeu_ps(out + t, _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), s, b));
            }
        }
    } else if (f->mode == MNV_QMODE_MXFP4) {
        const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f,
                                          -2.0f, -3.0f, -4.0f, -6.0f);
        for (int64_t g = g0; g < g0 + ngr; g++, out += G) {
            const __m512 s = _mm512_set1_ps(scale_at(MNV_DTYPE_U8, sc, g));
            const uint8_t *p = w + g * G / 2;
            for (int64_t t = 0; t < G; t += 16)
                _mm512_storeu_ps(out + t, _mm512_mul_ps(_mm512_permutexvar_ps(codes16_4bit(p + t / 2), lut), s));
        }
    } else {
        mnv__qdequant_groups(f, a->w + j * a->ldw, sc, bi, a->global_scale, g0, ngr, out);
    }
}

/* Decode: each row dequantized in blocks of F32_GEMV_KC, dotted with the R rows of x. */
INLINE void f32_gemv(const mnv_qmatmul_args *a, const qdesc *d, int64_t j0, int64_t j1, const int R) {
    _Alignas(64) float wbuf[F32_GEMV_KC];
    const int64_t k = a->k, G = d->G;
    const int64_t kcm = F32_GEMV_KC / G * G;
    for (int64_t j = j0; j < j1; j++) {
        __m512 acc[MAXR][2];
        for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        for (int64_t k0 = 0; k0 < k; k0 += kcm) {
            const int64_t kc = MNV_MIN(kcm, k - k0);
            deq_f32(a, d, j, k0 / G, kc / G, wbuf);
            int64_t t = 0;
            for (; t + 32 <= kc; t += 32) {
                const __m512 w0 = _mm512_load_ps(wbuf + t), w1 = _mm512_load_ps(wbuf + t + 16);
                for (int i = 0; i < R; i++) {
                    const float *x = a->x + i * a->ldx + k0 + t;
                    acc[i][0] = _mm512_fmadd_ps(_mm512_loadu_ps(x), w0, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), w1, acc[i][1]);
                }
            }
            if (t < kc) { /* kc is a multiple of 16 */
                const __m512 w0 = _mm512_load_ps(wbuf + t);
                for (int i = 0; i < R; i++)
                    acc[i][0] = _mm512_fmadd_ps(_mm512_loadu_ps(a->x + i * a->ldx + k0 + t), w0, acc[i][0]);
            }
        }
        for (int i = 0; i < R; i++) a->y[i * a->ldy + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
    }
}

static void f32_decode(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    switch (a->m) {
    case 1: f32_gemv(a, d, n0, n1, 1); break;
    case 2: f32_gemv(a, d, n0, n1, 2); break;
    case 3: f32_gemv(a, d, n0, n1, 3); break;
    default: f32_gemv(a, d, n0, n1, 4); break;
    }
}

enum { FNP = MNV__QF32_NP, FKC = MNV__QF32_KC_MAX };

/* y tile (F32_R rows of x) x (C*16 rows of W): panel is (kc, FNP) f32. */
INLINE void f32_tile(const int C, const float *panel, int64_t kc, const float *const *x, float *const *y, int rows,
                     const __mmask16 *cm, bool accumulate) {
    __m512 acc[F32_R][4];
    for (int r = 0; r < F32_R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    for (int64_t t = 0; t < kc; t++) {
        __m512 wv[4];
        for (int c = 0; c < C; c++) wv[c] = _mm512_loadu_ps(panel + t * FNP + 16 * c);
        for (int r = 0; r < F32_R; r++) {
            const __m512 xb = _mm512_set1_ps(x[r][t]);
            for (int c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(xb, wv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < F32_R; r++) {
        if (r >= rows) break;
        for (int c = 0; c < C; c++) {
            __m512 v = acc[r][c];
            if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cm[c], y[r] + 16 * c));
            _mm512_mask_storeu_ps(y[r] + 16 * c, cm[c], v);
        }
    }
}

static void f32_tile_any(int C, const float *panel, int64_t kc, const float *const *x, float *const *y, int rows,
                         const __mmask16 *cm, bool accumulate) {
    switch (C) {
    case 4: f32_tile(4, panel, kc, x, y, rows, cm, accumulate); break;
    case 3: f32_tile(3, panel, kc, x, y, rows, cm, accumulate); break;
    case 2: f32_tile(2, panel, kc, x, y, rows, cm, accumulate); break;
    default: f32_tile(1, panel, kc, x, y, rows, cm, accumulate); break;
    }
}

static void f32_prefill(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    const int64_t m = a->m, k = a->k, G = d->G;
    float *panel = (float *)(align64(a->scratch) + (size_t)m * mnv__qx_row_bytes(k) +
                             (size_t)ith * mnv__qpanel_bytes());
    float *rowbuf = panel + (size_t)FNP * FKC;
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, 16, &n0, &n1);
    const int64_t kcm = FKC / G * G;
    for (int64_t k0 = 0; k0 < k; k0 += kcm) {
        const int64_t kc = MNV_MIN(kcm, k - k0);
        for (int64_t jp = n0; jp < n1; jp += FNP) {
            const int64_t rows = MNV_MIN(FNP, n1 - jp);
            const int C = (int)((rows + 15) / 16);
            for (int cb = 0; cb < C; cb++) {
                for (int64_t r = 0; r < 16; r++) {
                    if (cb * 16 + r < rows) deq_f32(a, d, jp + cb * 16 + r, k0 / G, kc / G, rowbuf + r * FKC);
                    else memset(rowbuf + r * FKC, 0, sizeof(float) * (size_t)kc);
                }
                for (int64_t t = 0; t < kc; t += 16)
                    transpose16(rowbuf + t, FKC * 4, panel + t * FNP + cb * 16, FNP * 4);
            }
            __mmask16 cm[4];
            for (int c = 0; c < 4; c++) {
                const int64_t left = rows - 16 * c;
                cm[c] = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
            }
            for (int64_t i0 = 0; i0 < m; i0 += F32_R) {
                const float *x[F32_R];
                float *y[F32_R];
                for (int r = 0; r < F32_R; r++) {
                    const int64_t i = MNV_MIN(i0 + r, m - 1);
                    x[r] = a->x + i * a->ldx + k0;
                    y[r] = a->y + i * a->ldy + jp;
                }
                f32_tile_any(C, panel, kc, x, y, (int)MNV_MIN(F32_R, m - i0), cm, k0 > 0);
            }
        }
    }
}

/* ---- entry point -------------------------------------------------------------------------- */

void mnv__qmatmul_avx512(const mnv_qmatmul_args *a, int ith, int nth, bool vnni) {
    const qdesc d = describe(&a->fmt);
    const mnv_qmode mode = a->fmt.mode;
    const bool i8_fmt = mode == MNV_QMODE_MXFP4 || (mode == MNV_QMODE_AFFINE && d.G >= 32);
    if (a->m <= MNV_QMATMUL_GEMV_MAX_M) {
        if (vnni && a->scratch && i8_fmt && (d.bits == 4 || d.bits == 8)) vnni_decode(a, &d, ith, nth);
        else f32_decode(a, &d, ith, nth);
        return;
    }
    if (!a->scratch) {
        mnv__qmatmul_scalar(a, ith, nth);
        return;
    }
    if (vnni && i8_fmt && (nth == 1 || a->barrier)) vnni_prefill(a, &d, ith, nth);
    else f32_prefill(a, &d, ith, nth);
}

#endif
