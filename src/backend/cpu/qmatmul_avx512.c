/* y = x * dequant(W)^T with AVX-512 (compiled with -mavx512f/bw/vl/dq/bf16/vnni
 * -mfma -mf16c). Three families, chosen per call:
 *
 * int8 (VNNI, impl "avx512-vnni"): affine 2-8-bit, mxfp4 and nvfp4, decode
 *   and prefill. Each row of x is rounded to int8 with one scale
 *   per weight group (dx = max|x|/127 over the group), and
 *     affine  y = sum_g dx_g * (s_g * sum_j xq_j q_j  +  b_g * sum_j xq_j)
 *     mxfp4   y = sum_g 2^(e_g-127) * 0.5 * dx_g * (sum_j xq_j u_j - 12 sum_j xq_j)
 *     nvfp4   the same with groups of 16 and e4m3(s_g) * global for 2^(e_g-127)
 *   with u = 2*e2m1 + 12 in [0, 24] (a vpshufb table), so vpdpbusd multiplies
 *   unsigned codes by signed x, 64 pairs per instruction. Both are exactly
 *   xhat . w (up to f32 rounding of the sums) for xhat_j = dx_g * xq_j, so the
 *   error is sum_j e_j w_j with |e_j| <= dx_g/2 = max|x over the group|/254:
 *   relative to |y| about max|x|/(127*sqrt(12)*rms(x)): ~0.4% for uniform x
 *   (measured median 0.38%), ~0.55-0.6% for Gaussian x at groups 64-128, more
 *   in groups holding an outlier (the sum of x is deliberately the rounded one: the
 *   exact sum would leave the error sum e_j s q_j, 2-3x larger when the bias
 *   is a group edge as MLX makes it).
 *
 * bf16 (mxfp8 prefill under "avx512-vnni" where the CPU has BF16): see
 *   panel_prefill below.
 *
 * f32 (impl "avx512", and mxfp8 otherwise): weights are
 *   dequantized to f32 in registers (affine s*q + b as one FMA; e2m1 / e4m3
 *   times the scale, exact) and multiplied in f32.
 *
 * Decode (m <= 4) streams each W row once, front to back (threads split n into
 * contiguous chunks): int8 codes are expanded in registers and dotted with the
 * prepared x; the per-lane scale comes from a permute of 16 group scales.
 * Mid-size m (int8 only) also reads W once, without packing it: up to
 * mid_gemv_max_m (6-10) the decode kernel runs on up to 8 rows of x per
 * pass over 16-row blocks of W (cache-resident for the later passes); above
 * it the packed prefill runs. Measured on Zen 4 (one thread, weights from
 * DRAM, 4-bit): 7-11 GB/s at m = 5 (packed panels: 3-4).
 * Prefill packs panels of W rows (int8 codes interleaved as [k/4][row][4] for
 * vpdpbusd with a broadcast x dword, or f32 as [k][row]) into a thread-private
 * scratch panel and runs an outer-product register tile over all rows of x. */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <stdlib.h>
#include <math.h>

#include "backend/cpu/qmatmul.h"

#define INLINE static inline __attribute__((always_inline))

enum { MAXR = 4, I8_MAXR = 8, I8_R = 4, F32_R = 6 };

typedef struct {
    int bits, G, lg;  /* bits per code, group size, log2(group size) */
    bool fp4;         /* mxfp4 or nvfp4 (E2M1 codes) */
    bool nv;          /* nvfp4: E4M3 scales times gs */
    float gs;         /* nvfp4's global scale */
    mnv_dtype sdt;    /* scale dtype; U8 = E8M0 (E4M3 for nvfp4) */
    int64_t ss;       /* bytes per scale */
} qdesc;

static qdesc describe(const mnv_qformat *f, float global_scale) {
    qdesc d = {.bits = f->bits, .G = f->group_size, .fp4 = f->mode == MNV_QMODE_MXFP4 || f->mode == MNV_QMODE_NVFP4,
               .nv = f->mode == MNV_QMODE_NVFP4, .gs = global_scale};
    while ((1 << d.lg) < d.G) d.lg++;
    d.sdt = f->mode == MNV_QMODE_AFFINE ? f->scale_dtype : MNV_DTYPE_U8;
    d.ss = (int64_t)mnv_dtype_size(d.sdt);
    return d;
}


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

/* FP8 E4M3 codes (one a 32-bit lane) to f32 through f16: the 7 magnitude
 * bits shifted left by 7 and the sign to bit 15 are the f16 bits of
 * e4m3 * 2^-8 exactly (bias 15 against 7; an E4M3 subnormal m * 2^-9 is the
 * f16 subnormal (m << 7) * 2^-24), widened by vcvtph2ps and times 2^8; 0x7f
 * and 0xff are NaN. (Placing the bits under an f32 exponent and multiplying
 * by 2^120 is as exact, but makes the subnormal codes denormal operands, which
 * cost a microcode assist each on Zen 4: MLX's nvfp4 without a global scale
 * stores most scales of small weights as E4M3 subnormals, and a 0.5B model's
 * decode ran at two thirds of its rate.) */
INLINE __m512 e4m3_16(__m512i c) {
    const __m512i em = _mm512_and_si512(c, _mm512_set1_epi32(0x7f));
    const __m512i h = _mm512_or_si512(_mm512_slli_epi32(em, 7),
                                      _mm512_slli_epi32(_mm512_and_si512(c, _mm512_set1_epi32(0x80)), 8));
    const __m512 f = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)), _mm512_set1_ps(0x1p8f));
    return _mm512_mask_mov_ps(f, _mm512_cmpeq_epi32_mask(em, _mm512_set1_epi32(0x7f)), _mm512_set1_ps(NAN));
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

/* The weight scales g .. g+15 of a row (nvfp4: E4M3 times the global scale). */
INLINE __m512 load_wscales16(const qdesc *d, const void *s, int64_t g, __mmask16 mk) {
    if (d->nv)
        return _mm512_mul_ps(e4m3_16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, (const uint8_t *)s + g))),
                             _mm512_set1_ps(d->gs));
    return load_scales16(s, d->sdt, g, mk);
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


static xrow xrow_at(uint8_t *base, int64_t k, int64_t i) {
    const mnv__qx_row r = mnv__qx_row_at(base, k, i);
    return (xrow){r.q, (float *)r.g0, (float *)r.g1};
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
    const int64_t G = d->G, ng = k / G, ngp = (ng + 15) / 16 * 16, kp = mnv__qx_kpad(k);
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

/* 2, 3, 5 and 6-bit codes: 64 codes (8*bits bytes of the stream) to one byte
 * each, in element order. Dword lane l receives codes 4l..4l+3: vpermd brings
 * each 128-bit lane the dwords holding its 16 codes, vpshufb the 3 bytes of
 * each group of 4 codes, vpsrlvd drops a 4-bit misalignment (3 and 5 bits),
 * and three shift + bit-select steps move code t to byte t. */
typedef struct {
    __m512i perm, shuf, shift, m0, m01, m012, mall;
    int bits;
} unpacker;

static unpacker unpacker_for(int bits) {
    int32_t perm[16], shift[16], m[4];
    uint8_t shuf[64];
    for (int L = 0; L < 4; L++) {
        const int sb = 2 * L * bits, d0 = sb / 4, o = sb - 4 * d0;
        for (int i = 0; i < 4; i++) {
            perm[4 * L + i] = d0 + i;
            const int bit = 4 * i * bits, p = o + bit / 8;
            shift[4 * L + i] = bit % 8;
            for (int t = 0; t < 4; t++) shuf[16 * L + 4 * i + t] = (uint8_t)(t < 3 ? p + t : 0x80);
        }
    }
    for (int t = 0; t < 4; t++) m[t] = ((1 << bits) - 1) << (8 * t);
    unpacker u = {.bits = bits};
    u.perm = _mm512_loadu_si512(perm);
    u.shuf = _mm512_loadu_si512(shuf);
    u.shift = _mm512_loadu_si512(shift);
    u.m0 = _mm512_set1_epi32(m[0]);
    u.m01 = _mm512_set1_epi32(m[0] | m[1]);
    u.m012 = _mm512_set1_epi32(m[0] | m[1] | m[2]);
    u.mall = _mm512_set1_epi32(m[0] | m[1] | m[2] | m[3]);
    return u;
}

/* A ? B : C, bitwise */
#define BITSELECT(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0xCA)

INLINE __m512i unpack64(const unpacker *u, const uint8_t *p, __mmask64 bytes) {
    const int b = u->bits;
    __m512i v = _mm512_maskz_loadu_epi8(bytes, p);
    v = _mm512_shuffle_epi8(_mm512_permutexvar_epi32(u->perm, v), u->shuf);
    if (b == 3 || b == 5) v = _mm512_srlv_epi32(v, u->shift);
    __m512i r = BITSELECT(u->m0, v, _mm512_slli_epi32(v, 8 - b));
    r = BITSELECT(u->m01, r, _mm512_slli_epi32(v, 16 - 2 * b));
    r = BITSELECT(u->m012, r, _mm512_slli_epi32(v, 24 - 3 * b));
    return _mm512_and_si512(r, u->mall);
}

/* 4-bit rows are read with a software prefetch this many bytes ahead. The
 * hardware prefetchers stop at each 4 KiB page of a mapped checkpoint; on
 * Zen 4 (one thread, weights from DRAM in 4 KiB pages) it took nvfp4 from
 * 10.5-14.1 to 15.0-16.4 GB/s and 4-bit affine from 18.7-22.2 to 21.0-23.5,
 * while 8-bit rows (half the codes per byte, a prefetch per 64 codes) lost
 * up to 15% on rows of 5504 codes, so they go without. */
#define PF_LEAD4 2048

/* Rows [j0, j1) of y for the R (= m) prepared rows of x. W rows are read front
 * to back in chunks of 64 codes (64 bytes at 8 bits; 8*bits bytes at 2/3/5/6
 * bits, BITS = 0, unpacked to bytes) or 128 codes (64 bytes at 4 bits, low and
 * high nibbles against the even and odd halves of x); lane l of a chunk's
 * vpdpbusd sums covers 4 codes (8 at 4 bits), all of one group. Scales come 16
 * groups at a time; SD = scale * dx per group, permuted to the lanes. */
INLINE void vnni_gemv(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, uint8_t *xbase, float *y,
                      int64_t j0, int64_t j1, const int R, const int BITS, const bool FP4) {
    const int64_t k = a->k, G = d->G, ng = k / G;
    const int64_t CH = BITS == 4 ? 128 : 64;                   /* codes per chunk */
    const int64_t CB = BITS == 0 ? 8 * (int64_t)up->bits : 64; /* bytes per chunk (BITS 0: 2, 3, 5, 6 bits) */
    const int64_t nch = (k + CH - 1) / CH, wch = 16 * G / CH;
    const int64_t tailbytes = (k - (nch - 1) * CH) * CB / CH;  /* of the last chunk */
    const __mmask64 fullmask = CB == 64 ? ~(__mmask64)0 : ((__mmask64)1 << CB) - 1;
    const __mmask64 tailmask = tailbytes == 64 ? ~(__mmask64)0 : ((__mmask64)1 << tailbytes) - 1;
    /* lane -> group within the window, for each chunk of a window (<= 32 chunks) */
    int32_t idxtab[32 * 16];
    for (int64_t c = 0; c < wch; c++)
        for (int l = 0; l < 16; l++) idxtab[c * 16 + l] = (int32_t)((c * CH + l * (CH / 16)) >> d->lg);
    const __m512i lut = fp4_lut(), m4 = _mm512_set1_epi8(0x0F), zero = _mm512_setzero_si512();
    xrow xr[I8_MAXR];
    for (int i = 0; i < R; i++) xr[i] = xrow_at(xbase, k, i);
    for (int64_t j = j0; j < j1; j++) {
        const uint8_t *w = wrow(a, j);
        const void *sc = srow(a, d, j), *bi = brow(a, d, j);
        /* R > 4 (mid-size m): the bias terms go straight into facc, which
         * leaves registers for 8 rows. */
        __m512 facc[I8_MAXR], bacc[I8_MAXR];
        for (int i = 0; i < R; i++) facc[i] = bacc[i] = _mm512_setzero_ps();
        for (int64_t g0 = 0; g0 < ng; g0 += 16) {
            const __mmask16 mk = ng - g0 >= 16 ? 0xffff : (__mmask16)((1u << (ng - g0)) - 1);
            const __m512 S = load_wscales16(d, sc, g0, mk);
            const __m512 B = FP4 ? S : load_scales16(bi, d->sdt, g0, mk);
            __m512 SD[I8_MAXR];
            for (int i = 0; i < R; i++) {
                SD[i] = _mm512_mul_ps(S, _mm512_loadu_ps(xr[i].dx + g0));
                if (R > 4) facc[i] = _mm512_fmadd_ps(B, _mm512_loadu_ps(xr[i].xs2 + g0), facc[i]);
                else bacc[i] = _mm512_fmadd_ps(B, _mm512_loadu_ps(xr[i].xs2 + g0), bacc[i]);
            }
            const int64_t c0 = g0 * G / CH, c1 = MNV_MIN(c0 + wch, nch);
            for (int64_t c = c0; c < c1; c++) {
                const uint8_t *wp = w + c * CB;
                if (BITS == 4) _mm_prefetch((const char *)wp + PF_LEAD4, _MM_HINT_T0);
                const __mmask64 bm = c + 1 < nch ? fullmask : tailmask;
                __m512i wv;
                if (BITS == 0) wv = unpack64(up, wp, bm);
                else if (c + 1 < nch) wv = _mm512_loadu_si512(wp);
                else wv = _mm512_maskz_loadu_epi8(bm, wp);
                const __m512i idx = _mm512_loadu_si512(idxtab + (c - c0) * 16);
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
                    if (BITS != 4) {
                        acc = _mm512_dpbusd_epi32(zero, wv, _mm512_loadu_si512(xr[i].q + c * 64));
                    } else {
                        acc = _mm512_dpbusd_epi32(zero, lo, _mm512_loadu_si512(xr[i].q + c * 128));
                        acc = _mm512_dpbusd_epi32(acc, hi, _mm512_loadu_si512(xr[i].q + c * 128 + 64));
                    }
                    facc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(idx, SD[i]), facc[i]);
                }
            }
        }
        for (int i = 0; i < R; i++)
            y[i * a->ldy + j] = R > 4 ? _mm512_reduce_add_ps(facc[i])
                                      : _mm512_reduce_add_ps(_mm512_add_ps(facc[i], bacc[i]));
    }
}

/* rows: rows of x (prepared from xbase) and of y, 1 .. I8_MAXR. */
#define GEMV_CASES(BITS, FP4)                                                                                     \
    switch (rows) {                                                                                               \
    case 1: vnni_gemv(a, d, up, xbase, y, n0, n1, 1, BITS, FP4); break;                                           \
    case 2: vnni_gemv(a, d, up, xbase, y, n0, n1, 2, BITS, FP4); break;                                           \
    case 3: vnni_gemv(a, d, up, xbase, y, n0, n1, 3, BITS, FP4); break;                                           \
    case 4: vnni_gemv(a, d, up, xbase, y, n0, n1, 4, BITS, FP4); break;                                           \
    case 5: vnni_gemv(a, d, up, xbase, y, n0, n1, 5, BITS, FP4); break;                                           \
    case 6: vnni_gemv(a, d, up, xbase, y, n0, n1, 6, BITS, FP4); break;                                           \
    case 7: vnni_gemv(a, d, up, xbase, y, n0, n1, 7, BITS, FP4); break;                                           \
    default: vnni_gemv(a, d, up, xbase, y, n0, n1, 8, BITS, FP4); break;                                          \
    }
typedef void gemv_fn(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, uint8_t *xbase, float *y,
                     int rows, int64_t n0, int64_t n1);
static gemv_fn gemv_i8_8, gemv_i8_4, gemv_i8_fp4, gemv_i8_bits;
static void gemv_i8_8(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, uint8_t *xbase, float *y,
                      int rows, int64_t n0, int64_t n1) {
    GEMV_CASES(8, false)
}
static void gemv_i8_4(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, uint8_t *xbase, float *y,
                      int rows, int64_t n0, int64_t n1) {
    GEMV_CASES(4, false)
}
static void gemv_i8_fp4(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, uint8_t *xbase, float *y,
                        int rows, int64_t n0, int64_t n1) {
    GEMV_CASES(4, true)
}
static void gemv_i8_bits(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, uint8_t *xbase, float *y,
                         int rows, int64_t n0, int64_t n1) {
    GEMV_CASES(0, false)
}
#undef GEMV_CASES

/* Each thread prepares its own copy of x (m <= 4 rows: cheaper than a barrier). */
static void vnni_decode(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    uint8_t *xbase = mnv__align64(a->scratch) + (size_t)ith * (size_t)a->m * mnv__qx_row_bytes(a->k);
    for (int64_t i = 0; i < a->m; i++) prep_x_row(a->x + i * a->ldx, a->k, d, d->bits == 4, xrow_at(xbase, a->k, i));
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    const bool odd = d->bits != 4 && d->bits != 8;
    const unpacker up = unpacker_for(odd ? d->bits : 2);
    gemv_fn *fn = d->fp4 ? gemv_i8_fp4 : d->bits == 8 ? gemv_i8_8 : d->bits == 4 ? gemv_i8_4 : gemv_i8_bits;
    fn(a, d, &up, xbase, a->y, (int)a->m, n0, n1);
}

/* Mid-size m (MNV_QMATMUL_GEMV_MAX_M < m <= MNV_QMATMUL_MID_MAX_M): the decode
 * kernel on up to I8_MAXR rows of x at a time, over blocks of MID_JB rows of W
 * so that a block (and the x rows) are re-read from cache, not memory, by the
 * later passes: W streams from memory once, nothing is packed. x is prepared
 * once (threads share the rows, then a barrier), in the prefill's scratch. */
enum { MID_JB = 16 };

static void vnni_mid(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    const int64_t m = a->m, k = a->k, xr = (int64_t)mnv__qx_row_bytes(k);
    uint8_t *xbase = mnv__align64(a->scratch);
    int64_t r0, r1;
    mnv__qsplit(m, ith, nth, 1, &r0, &r1);
    for (int64_t i = r0; i < r1; i++) prep_x_row(a->x + i * a->ldx, k, d, d->bits == 4, xrow_at(xbase, k, i));
    if (nth > 1) a->barrier(a->barrier_ctx);
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    const bool odd = d->bits != 4 && d->bits != 8;
    const unpacker up = unpacker_for(odd ? d->bits : 2);
    gemv_fn *fn = d->fp4 ? gemv_i8_fp4 : d->bits == 8 ? gemv_i8_8 : d->bits == 4 ? gemv_i8_4 : gemv_i8_bits;
    /* passes of equal size: m = 9 as 5 + 4, not 8 + 1 */
    const int64_t npass = (m + I8_MAXR - 1) / I8_MAXR, per = (m + npass - 1) / npass;
    for (int64_t jb = n0; jb < n1; jb += MID_JB) {
        const int64_t jb1 = MNV_MIN(n1, jb + MID_JB);
        for (int64_t i0 = 0; i0 < m; i0 += per)
            fn(a, d, &up, xbase + i0 * xr, a->y + i0 * a->ldy, (int)MNV_MIN(per, m - i0), jb, jb1);
    }
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
static void codes_row(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, int64_t j, int64_t k0, int64_t kc,
                      uint8_t *dst) {
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
    } else { /* 2, 3, 5, 6 bits: 64 codes = 8*bits bytes at a time (kc is a multiple of 32) */
        const uint8_t *s = w + k0 / 8 * d->bits;
        for (int64_t t = 0; t < kc; t += 64) {
            const int64_t n = MNV_MIN(64, kc - t), nb = n / 8 * d->bits;
            const __m512i c = unpack64(up, s + t / 8 * d->bits, ((__mmask64)1 << nb) - 1);
            _mm512_mask_storeu_epi8(dst + t, n == 64 ? ~(__mmask64)0 : ((__mmask64)1 << n) - 1, c);
        }
    }
}

/* Rows [j0, j0+rows) (rows <= NP), codes [k0, k0+kc), into the panel. */
static void pack_i8(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, int64_t j0, int64_t rows,
                    int64_t k0, int64_t kc, const i8panel *p) {
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
                if (r < rb) codes_row(a, d, up, jb + r, k0, kc, p->rowbuf + r * kc);
                else memset(p->rowbuf + r * kc, 0, (size_t)kc);
            }
            src = p->rowbuf;
            sst = kc;
        }
        int64_t w4 = 0;
        for (; w4 + 16 <= nw; w4 += 16) transpose16(src + w4 * 4, sst, p->codes + (w4 * NP + cb * 16) * 4, NP * 4);
        for (; w4 < nw; w4++)
            for (int64_t r = 0; r < 16; r++) memcpy(p->codes + (w4 * NP + cb * 16 + r) * 4, src + r * sst + w4 * 4, 4);
        /* scales (and biases) of 16 rows x 16 groups at a time, transposed to (group, row) */
        _Alignas(64) float tmp[16][16];
        for (int pass = 0; pass < (d->fp4 ? 1 : 2); pass++) {
            float *dst = pass ? p->bw : p->sw;
            for (int64_t g = 0; g < ngb; g += 16) {
                const __mmask16 mk = ngb - g >= 16 ? 0xffff : (__mmask16)((1u << (ngb - g)) - 1);
                for (int64_t r = 0; r < 16; r++) {
                    const __m512 v = r >= rb ? _mm512_setzero_ps()
                                     : pass       ? load_scales16(brow(a, d, jb + r), d->sdt, g0 + g, mk)
                                                  : load_wscales16(d, srow(a, d, jb + r), g0 + g, mk);
                    _mm512_store_ps(tmp[r], v);
                }
                transpose16(tmp, 64, dst + g * NP + cb * 16, NP * 4);
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

static void vnni_prefill(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    const int64_t m = a->m, k = a->k, G = d->G;
    uint8_t *base = mnv__align64(a->scratch);
    const i8panel p = i8panel_at(base + (size_t)m * mnv__qx_row_bytes(k) + (size_t)ith * mnv__qpanel_bytes());
    int64_t r0, r1;
    mnv__qsplit(m, ith, nth, 1, &r0, &r1);
    for (int64_t i = r0; i < r1; i++) prep_x_row(a->x + i * a->ldx, k, d, false, xrow_at(base, k, i));
    if (nth > 1) a->barrier(a->barrier_ctx);

    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, 16, &n0, &n1);
    const int64_t kc_max = mnv__qpick_kc(m, k, G, MNV__QI8_KC_MAX - 128);
    const unpacker up = unpacker_for(d->bits == 4 || d->bits == 8 ? 2 : d->bits);
    for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
        const int64_t kc = MNV_MIN(kc_max, k - k0), ngb = kc / G;
        for (int64_t jp = n0; jp < n1; jp += NP) {
            const int64_t rows = MNV_MIN(NP, n1 - jp);
            const int C = (int)((rows + 15) / 16);
            pack_i8(a, d, &up, jp, rows, k0, kc, &p);
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

/* Codes of elements [e, e+16) of a row (e a multiple of 16), as int32. */
INLINE __m512i codes16(const qdesc *d, const unpacker *up, const uint8_t *w, int64_t e) {
    switch (d->bits) {
    case 8: return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w + e)));
    case 4: return codes16_4bit(w + e / 2);
    default: /* 16 codes = 2*bits bytes */
        return _mm512_cvtepu8_epi32(
            _mm512_castsi512_si128(unpack64(up, w + e / 8 * d->bits, ((__mmask64)1 << (2 * d->bits)) - 1)));
    }
}

INLINE float e4m3_1(uint8_t c) {
    return _mm_cvtss_f32(_mm512_castps512_ps128(e4m3_16(_mm512_set1_epi32(c))));
}

/* Scale and bias of group g of a row, as f32 (nvfp4: e4m3 * global). */
INLINE void group_sb(const mnv_qmatmul_args *a, const qdesc *d, const void *sc, const void *bi, int64_t g, float *s,
                     float *b) {
    if (a->fmt.mode == MNV_QMODE_NVFP4) *s = e4m3_1(((const uint8_t *)sc)[g]) * a->global_scale;
    else *s = scale_at(d->sdt, sc, g);
    *b = a->fmt.mode == MNV_QMODE_AFFINE ? scale_at(d->sdt, bi, g) : 0.0f;
}

/* 16 weights from their codes: affine fma(q, s, b); e2m1 and e4m3 times s. */
INLINE __m512 weights16(mnv_qmode mode, __m512i q, __m512 s, __m512 b) {
    switch (mode) {
    case MNV_QMODE_AFFINE: return _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), s, b);
    case MNV_QMODE_MXFP8: return _mm512_mul_ps(e4m3_16(q), s);
    default: {
        const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f,
                                          -2.0f, -3.0f, -4.0f, -6.0f);
        return _mm512_mul_ps(_mm512_permutexvar_ps(q, lut), s);
    }
    }
}

/* Groups [g0, g0+ngr) of row j as f32. */
static void deq_f32(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, int64_t j, int64_t g0, int64_t ngr,
                    float *out) {
    const uint8_t *w = wrow(a, j);
    const void *sc = srow(a, d, j), *bi = brow(a, d, j);
    const int64_t G = d->G;
    for (int64_t g = g0; g < g0 + ngr; g++, out += G) {
        float s, b;
        group_sb(a, d, sc, bi, g, &s, &b);
        const __m512 sv = _mm512_set1_ps(s), bv = _mm512_set1_ps(b);
        for (int64_t t = 0; t < G; t += 16)
            _mm512_storeu_ps(out + t, weights16(a->fmt.mode, codes16(d, up, w, g * G + t), sv, bv));
    }
}

/* Decode: each row's weights formed 16 at a time in registers and dotted
 * with the R rows of x (two sums per row of x). */
INLINE void f32_gemv(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, int64_t j0, int64_t j1,
                     const int R, const mnv_qmode MODE) {
    const int64_t k = a->k, G = d->G;
    for (int64_t j = j0; j < j1; j++) {
        const uint8_t *w = wrow(a, j);
        const void *sc = srow(a, d, j), *bi = brow(a, d, j);
        __m512 acc[MAXR][2];
        for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        for (int64_t g = 0; g < k / G; g++) {
            float s, b;
            group_sb(a, d, sc, bi, g, &s, &b);
            const __m512 sv = _mm512_set1_ps(s), bv = _mm512_set1_ps(b);
            int64_t e = g * G;
            for (; e + 32 <= (g + 1) * G; e += 32) {
                const __m512 w0 = weights16(MODE, codes16(d, up, w, e), sv, bv);
                const __m512 w1 = weights16(MODE, codes16(d, up, w, e + 16), sv, bv);
                for (int i = 0; i < R; i++) {
                    const float *x = a->x + i * a->ldx + e;
                    acc[i][0] = _mm512_fmadd_ps(_mm512_loadu_ps(x), w0, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), w1, acc[i][1]);
                }
            }
            if (e < (g + 1) * G) { /* nvfp4: groups of 16 */
                const __m512 w0 = weights16(MODE, codes16(d, up, w, e), sv, bv);
                for (int i = 0; i < R; i++)
                    acc[i][0] = _mm512_fmadd_ps(_mm512_loadu_ps(a->x + i * a->ldx + e), w0, acc[i][0]);
            }
        }
        for (int i = 0; i < R; i++) a->y[i * a->ldy + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
    }
}

#define F32_GEMV_CASES(MODE)                                                                                      \
    switch (a->m) {                                                                                               \
    case 1: f32_gemv(a, d, up, n0, n1, 1, MODE); break;                                                           \
    case 2: f32_gemv(a, d, up, n0, n1, 2, MODE); break;                                                           \
    case 3: f32_gemv(a, d, up, n0, n1, 3, MODE); break;                                                           \
    default: f32_gemv(a, d, up, n0, n1, 4, MODE); break;                                                          \
    }
static void f32_gemv_affine(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, int64_t n0, int64_t n1) {
    F32_GEMV_CASES(MNV_QMODE_AFFINE)
}
static void f32_gemv_fp4(const mnv_qmatmul_args *a, const qdesc *d, const unpacker *up, int64_t n0, int64_t n1) {
    F32_GEMV_CASES(MNV_QMODE_MXFP4)
}
#undef F32_GEMV_CASES

static void f32_decode(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    const unpacker up = unpacker_for(d->bits == 4 || d->bits == 8 ? 2 : d->bits);
    if (a->fmt.mode == MNV_QMODE_AFFINE) f32_gemv_affine(a, d, &up, n0, n1);
    else f32_gemv_fp4(a, d, &up, n0, n1); /* mxfp4, nvfp4 (mxfp8 decodes in qmatmul_fp_avx512.c) */
}

enum { FNP = MNV__QF32_NP, FKC = MNV__QF32_KC_MAX };

/* Write (or add, for later k blocks) the first rows of an F32_R x (C*16)
 * tile of y; cm masks the valid rows of W in each 16. */
INLINE void store_tile(const int C, __m512 acc[F32_R][4], float *const *y, int rows, const __mmask16 *cm,
                       bool accumulate) {
    for (int r = 0; r < F32_R; r++) {
        if (r >= rows) break;
        for (int c = 0; c < C; c++) {
            __m512 v = acc[r][c];
            if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cm[c], y[r] + 16 * c));
            _mm512_mask_storeu_ps(y[r] + 16 * c, cm[c], v);
        }
    }
}

/* y tile (F32_R rows of x) x (C*16 rows of W) over one k block: the panel
 * is (kc, FNP) floats, x f32, one FMA a weight. */
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
    store_tile(C, acc, y, rows, cm, accumulate);
}

/* The same with the panel as (kc/2, FNP) bf16 pairs of consecutive weights
 * of a row and x as the same pairs: one vdpbf16ps (16 rows x 2 k) a pair. */
INLINE void bf16_tile(const int C, const uint32_t *panel, int64_t kc2, const uint32_t *const *x, float *const *y,
                      int rows, const __mmask16 *cm, bool accumulate) {
    __m512 acc[F32_R][4];
    for (int r = 0; r < F32_R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    for (int64_t t = 0; t < kc2; t++) {
        __m512i wv[4];
        for (int c = 0; c < C; c++) wv[c] = _mm512_loadu_si512(panel + t * FNP + 16 * c);
        for (int r = 0; r < F32_R; r++) {
            const __m512i xb = _mm512_set1_epi32((int)x[r][t]);
            for (int c = 0; c < C; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)xb, (__m512bh)wv[c]);
        }
    }
    store_tile(C, acc, y, rows, cm, accumulate);
}

/* One tile of panel_prefill: ke panel elements a row (kc floats, or kc/2 bf16 pairs). */
INLINE void panel_tile_any(int C, const bool bf16, const float *panel, int64_t ke, const void *const *x,
                           float *const *y, int rows, const __mmask16 *cm, bool accumulate) {
#define PANEL_TILE(CC)                                                                                        \
    (bf16 ? bf16_tile(CC, (const uint32_t *)panel, ke, (const uint32_t *const *)x, y, rows, cm, accumulate) \
          : f32_tile(CC, panel, ke, (const float *const *)x, y, rows, cm, accumulate))
    switch (C) {
    case 4: PANEL_TILE(4); break;
    case 3: PANEL_TILE(3); break;
    case 2: PANEL_TILE(2); break;
    default: PANEL_TILE(1); break;
    }
#undef PANEL_TILE
}

/* Under "avx512-vnni" on hosts with AVX-512 BF16, mxfp8 products of more than
 * MXFP8_MID_MAX_M rows round x to bf16 (nearest even, as the bf16 weights'
 * default products do) and multiply with vdpbf16ps: E4M3 times a power of two
 * is exact in bf16 (4 significant bits), so weights are dequantized exactly
 * (f32 from deq_f32, then bf16; a product below 2^-126, from an E8M0 scale
 * under ~2^-117, would be flushed to zero) and only x is rounded, by at most
 * 2^-8 of an element (8 significant bits; an element below 2^-126 becomes
 * zero). Panels hold (kc/2, FNP) pairs of consecutive weights of a
 * row, so that one vdpbf16ps takes 16 rows x 2 k against a broadcast pair of
 * x: twice the multiply-adds of an f32 FMA. */

/* x row (k floats) as bf16 pairs, zero-padded to mnv__qx_kpad(k) elements. */
static void bf16_x_row(const float *x, int64_t k, uint32_t *dst) {
    for (int64_t kk = 0; kk < mnv__qx_kpad(k); kk += 32) {
        const int64_t left = k - kk; /* may be <= 0 in the padding */
        const __mmask16 mlo = left >= 16 ? 0xffff : (__mmask16)((1u << MNV_MAX(left, 0)) - 1);
        const __mmask16 mhi = left >= 32 ? 0xffff : (__mmask16)((1u << MNV_MAX(left - 16, 0)) - 1);
        const __m512 lo = _mm512_maskz_loadu_ps(mlo, x + kk), hi = _mm512_maskz_loadu_ps(mhi, x + kk + 16);
        _mm512_storeu_si512(dst + kk / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

/* kc floats (a multiple of 32) to kc/2 bf16 pairs, in place (each store
 * lands at or before the floats just loaded). */
static void to_pairs(float *row, int64_t kc) {
    for (int64_t kk = 0; kk < kc; kk += 32) {
        const __m512 lo = _mm512_loadu_ps(row + kk), hi = _mm512_loadu_ps(row + kk + 16);
        _mm512_storeu_si512((uint32_t *)row + kk / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

/* Prefill on dequantized panels: f32 (every format), or bf16 dot products
 * (bf16 = true: mxfp8 under "avx512-vnni" where the CPU has BF16; x rounded to
 * bf16 pairs once, in the scratch, then a barrier). */
INLINE void panel_prefill(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth, const bool bf16) {
    const int64_t m = a->m, k = a->k, G = d->G, kp2 = mnv__qx_kpad(k) / 2;
    uint8_t *base = mnv__align64(a->scratch);
    const uint32_t *xb = (const uint32_t *)base;
    float *panel = (float *)(base + (size_t)m * mnv__qx_row_bytes_for(k, &a->fmt) +
                             (size_t)ith * mnv__qpanel_bytes());
    float *rowbuf = panel + (size_t)FNP * FKC;
    if (bf16) {
        int64_t r0, r1;
        mnv__qsplit(m, ith, nth, 1, &r0, &r1);
        for (int64_t i = r0; i < r1; i++) bf16_x_row(a->x + i * a->ldx, k, (uint32_t *)base + i * kp2);
        if (nth > 1) a->barrier(a->barrier_ctx);
    }
    const unpacker up = unpacker_for(d->bits == 4 || d->bits == 8 ? 2 : d->bits);
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, 16, &n0, &n1);
    const int64_t kcm = FKC / G * G;
    for (int64_t k0 = 0; k0 < k; k0 += kcm) {
        const int64_t kc = MNV_MIN(kcm, k - k0), ke = bf16 ? kc / 2 : kc; /* panel elements a row */
        for (int64_t jp = n0; jp < n1; jp += FNP) {
            const int64_t rows = MNV_MIN(FNP, n1 - jp);
            const int C = (int)((rows + 15) / 16);
            for (int cb = 0; cb < C; cb++) {
                for (int64_t r = 0; r < 16; r++) {
                    float *row = rowbuf + r * FKC;
                    if (cb * 16 + r < rows) {
                        deq_f32(a, d, &up, jp + cb * 16 + r, k0 / G, kc / G, row);
                        if (bf16) to_pairs(row, kc);
                    } else {
                        memset(row, 0, sizeof(float) * (size_t)ke);
                    }
                }
                for (int64_t t = 0; t < ke; t += 16)
                    transpose16(rowbuf + t, FKC * 4, panel + t * FNP + cb * 16, FNP * 4);
            }
            __mmask16 cm[4];
            for (int c = 0; c < 4; c++) {
                const int64_t left = rows - 16 * c;
                cm[c] = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
            }
            for (int64_t i0 = 0; i0 < m; i0 += F32_R) {
                const void *x[F32_R];
                float *y[F32_R];
                for (int r = 0; r < F32_R; r++) {
                    const int64_t i = MNV_MIN(i0 + r, m - 1);
                    x[r] = bf16 ? (const void *)(xb + i * kp2 + k0 / 2) : (const void *)(a->x + i * a->ldx + k0);
                    y[r] = a->y + i * a->ldy + jp;
                }
                panel_tile_any(C, bf16, panel, ke, x, y, (int)MNV_MIN(F32_R, m - i0), cm, k0 > 0);
            }
        }
    }
}

static void f32_prefill(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    panel_prefill(a, d, ith, nth, false);
}
static void bf16_prefill(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    panel_prefill(a, d, ith, nth, true);
}

/* ---- entry point -------------------------------------------------------------------------- */

/* Mid-size m up to this runs the decode kernel (vnni_mid), above it the
 * packed prefill. The decode kernel's cost grows with m (a convert, a permute
 * and an FMA per 64 codes and row of x besides the vpdpbusd); measured
 * crossovers on Zen 4 (m-sweep of bench_qmatmul): about 10 at 4 bits, 6 at 8
 * bits. (A variant that packed x instead of W for m = 11..32 matched the
 * packed prefill in isolated sweeps but cost gpt-oss prefill 10-14% in the
 * whole model, so it was taken out.) */
static int64_t mid_gemv_max_m(const qdesc *d) { return d->bits == 8 ? 6 : 10; }
/* mxfp8 up to this runs its decode kernel (qmatmul_fp_avx512.c), above it the
 * bf16 prefill (where the CPU has BF16) or the f32 one. Measured on Zen 4 (one
 * thread, weights from DRAM, GB/s): m = 16 1.5-1.8 against the f32 prefill's
 * 1.1-1.2 and the bf16 prefill's 1.4-2.0 (a draw, shape by shape); m = 32
 * 0.8-0.9 against 1.1-1.5 for the bf16 prefill. */
enum { MXFP8_MID_MAX_M = 16 };

void mnv__qmatmul_avx512(const mnv_qmatmul_args *a, int ith, int nth, bool vnni) {
    const qdesc d = describe(&a->fmt, a->global_scale);
    const mnv_qmode mode = a->fmt.mode;
    const bool i8_fmt =
        mode == MNV_QMODE_MXFP4 || mode == MNV_QMODE_NVFP4 || (mode == MNV_QMODE_AFFINE && d.G >= 32);
    if (mode == MNV_QMODE_MXFP8 && (a->m <= MXFP8_MID_MAX_M || !a->scratch)) {
        mnv__qmatmul_avx512_mxfp8(a, ith, nth);
        return;
    }
    if (mode == MNV_QMODE_MXFP8 && vnni && mnv__cpu_has(MNV_CPU_AVX512_BF16) && (nth == 1 || a->barrier)) {
        bf16_prefill(a, &d, ith, nth);
        return;
    }
    if (a->m <= MNV_QMATMUL_GEMV_MAX_M) {
        if (vnni && a->scratch && i8_fmt) vnni_decode(a, &d, ith, nth);
        else f32_decode(a, &d, ith, nth);
        return;
    }
    if (!a->scratch) {
        mnv__qmatmul_scalar(a, ith, nth);
        return;
    }
    if (vnni && i8_fmt && (nth == 1 || a->barrier)) {
        if (a->m <= mid_gemv_max_m(&d)) vnni_mid(a, &d, ith, nth);
        else vnni_prefill(a, &d, ith, nth);
        return;
    }
    f32_prefill(a, &d, ith, nth);
}

#endif
