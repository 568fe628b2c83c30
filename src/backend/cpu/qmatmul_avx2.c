/* y = x * dequant(W)^T with AVX2 + FMA + F16C (compiled with -mavx2 -mfma
 * -mf16c), for hosts without AVX-512. The numerics are those of
 * qmatmul_avx512.c; two families, chosen per call:
 *
 * int8 (impl "avx2-int8"): affine (every bit width), mxfp4 and nvfp4. Each row of x is
 *   rounded to int8 with one scale per weight group (dx = max|x|/127 over the
 *   group, codes rint(x/dx)), and
 *     affine  y = sum_g dx_g * (s_g * sum_j xq_j q_j  +  b_g * sum_j xq_j)
 *     mxfp4   y = sum_g 2^(e_g-127) * 0.5 * dx_g * (sum_j xq_j u_j - 12 sum_j xq_j)
 *     nvfp4   the same with groups of 16 and e4m3(s_g) * global for 2^(e_g-127)
 *   with u = 2*e2m1 + 12 in [0, 24] (a vpshufb table). vpmaddubsw multiplies
 *   unsigned codes by signed x into int16 pairs and vpmaddwd against ones
 *   widens them to int32. Codes up to 24 (4-bit, mxfp4's u) times |x| <= 127
 *   leave room to add 4 vpmaddubsw results in int16 before widening (2 at
 *   6 bits, whose codes are unpacked to bytes in registers). 8-bit codes
 *   would overflow an int16 pair (2 * 255 * 127), so they are offset to
 *   signed, q - 128 (the offset folded into the bias term: b + 128 s), and
 *   multiplied as |q - 128| times x carrying q - 128's sign (vpsignb): a pair
 *   is then at most 2 * 128 * 127 = 32512. The result is exactly xhat . w for
 *   xhat_j = dx_g * xq_j, up to f32 rounding of the sums (error analysis in
 *   qmatmul_avx512.c).
 *
 * f32 (impl "avx2", and mxfp8 under "avx2-int8"): weights are dequantized
 *   to f32 in registers (affine s*q + b as one FMA; e2m1 / e4m3 times the
 *   scale, exact) and multiplied in f32. mxfp8 up to m = 8 runs the F16C
 *   kernels of qmatmul_fp_avx2.c.
 *
 * Decode (m <= 4) streams each W row once (threads split n into contiguous
 * chunks; a thread reads its chunk as up to 4 sequential streams). Mid-size m (int8) runs the decode kernel on up to 4
 * rows of x per pass over 16-row blocks of W, so W comes from memory once.
 * Prefill packs panels of W (int8: codes as [k/2][rows][2] bytes for
 * vpmaddubsw against a broadcast pair of x codes; f32: [k][16] floats) into a
 * thread-private scratch panel and runs a register tile over all rows of x. */
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <math.h>

#include "backend/cpu/qmatmul.h"

#define INLINE static inline __attribute__((always_inline))
/* The int8 decode kernels stream J parts of a thread's rows side by side,
 * each part front to back: J sequential streams, which the hardware
 * prefetcher follows (J neighbouring rows at a time, each stream jumping J
 * rows at its row's end, read at half the rate on Zen 3 from one thread:
 * 0.48B 4-bit decode on one thread 49 -> 63 tok/s, 8-bit 29 -> 42). A software prefetch
 * runs PF_LEAD / J bytes ahead in each stream (into the part's next rows,
 * which follow in memory); 1 KiB measured ahead of 4 KiB and of none. Each
 * stream starts at its own row of its part (mnv__stream_shift), so that the
 * streams do not meet on the same DRAM banks. */
#define PF_LEAD 1024
INLINE void prefetch_at(const uint8_t *w, int64_t off, int64_t dist) {
    _mm_prefetch((const char *)w + off + dist, _MM_HINT_T0);
}


enum { MAXR = 4 };

typedef struct {
    int bits, G;     /* bits per code, group size */
    bool fp4;        /* mxfp4 or nvfp4 (E2M1 codes) */
    bool nv;         /* nvfp4: E4M3 scales times gs */
    float gs;        /* nvfp4's global scale */
    mnv_dtype sdt;   /* scale dtype; U8 = E8M0 (E4M3 for nvfp4) */
    int64_t ss;      /* bytes per scale */
} qdesc;

static qdesc describe(const mnv_qformat *f, float global_scale) {
    qdesc d = {.bits = f->bits, .G = f->group_size, .fp4 = f->mode == MNV_QMODE_MXFP4 || f->mode == MNV_QMODE_NVFP4,
               .nv = f->mode == MNV_QMODE_NVFP4, .gs = global_scale};
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

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

INLINE float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

INLINE int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}

/* 16 bytes into the low half of a vector, the high half zero. */
INLINE __m256i load_lo128(const void *p) {
    return _mm256_inserti128_si256(_mm256_setzero_si256(), _mm_loadu_si128((const __m128i *)p), 0);
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

/* Scales g .. g+n-1 (n <= 8) of a row as f32, lanes from n on 0. */
INLINE __m256 load_scales8(const void *s, mnv_dtype t, int64_t g, int64_t n) {
    if (n < 8) { /* a row's last window: masked loads of whole 4-byte words where they cover n exactly (no
                  * byte past the n-th read; a scalar fill would stall the vector load on its stores) */
        const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        if (t == MNV_DTYPE_F32) return _mm256_maskload_ps((const float *)s + g, lanes);
        if ((t == MNV_DTYPE_F16 || t == MNV_DTYPE_BF16) && n % 2 == 0) {
            const __m128i words = _mm_cmpgt_epi32(_mm_set1_epi32((int)n / 2), _mm_setr_epi32(0, 1, 2, 3));
            const __m128i v = _mm_maskload_epi32((const int *)((const uint16_t *)s + g), words);
            if (t == MNV_DTYPE_F16) return _mm256_cvtph_ps(v); /* zero halves: 0.0 */
            return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
        }
        if (t != MNV_DTYPE_F16 && t != MNV_DTYPE_BF16 && n % 4 == 0) { /* E8M0 */
            const __m128i words = _mm_cmpgt_epi32(_mm_set1_epi32((int)n / 4), _mm_setr_epi32(0, 1, 2, 3));
            const __m256i e = _mm256_cvtepu8_epi32(_mm_maskload_epi32((const int *)((const uint8_t *)s + g), words));
            const __m256i v = _mm256_max_epu32(_mm256_slli_epi32(e, 23), _mm256_set1_epi32(0x00400000));
            return _mm256_castsi256_ps(_mm256_and_si256(v, lanes));
        }
        _Alignas(32) float tmp[8] = {0};
        for (int64_t i = 0; i < n; i++) tmp[i] = scale_at(t, s, g + i);
        return _mm256_load_ps(tmp);
    }
    switch (t) {
    case MNV_DTYPE_F32: return _mm256_loadu_ps((const float *)s + g);
    case MNV_DTYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)s + g)));
    case MNV_DTYPE_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)s + g))), 16));
    default: { /* E8M0: e << 23, e = 0 -> 2^-127 (0x00400000, below every e << 23 of e > 0) */
        const __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)s + g)));
        return _mm256_castsi256_ps(_mm256_max_epu32(_mm256_slli_epi32(e, 23), _mm256_set1_epi32(0x00400000)));
    }
    }
}

/* nvfp4: the E4M3 scale codes g .. g+n-1 (n <= 16) of a row, zero from n
 * on (no byte past the n-th is read). */
INLINE __m128i load_e4m3_codes16(const uint8_t *s, int64_t g, int64_t n) {
    if (n == 16) return _mm_loadu_si128((const __m128i *)(s + g));
    _Alignas(16) uint8_t tmp[16] = {0};
    memcpy(tmp, s + g, (size_t)n);
    return _mm_load_si128((const __m128i *)tmp);
}

/* 16 E4M3 codes times gs, to lo (the first 8) and hi. E4M3 to f16 bits by
 * shift and mask (the code sign-extended and shifted left 7: the sign lands
 * in bits 15 and 14, the mask clears 14), exactly e4m3 * 2^-8; vcvtph2ps,
 * then one product with 2^8 gs (the rounding of e4m3 * gs). The NaN codes
 * (0x7f, 0xff) come out +-480 gs: callers look for them (has_e4m3_nan). */
INLINE void e4m3_scales16(__m128i v, float gs, __m256 *lo, __m256 *hi) {
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(v), 7), _mm256_set1_epi16((short)0xBFFF));
    const __m256 k = _mm256_set1_ps(0x1p8f * gs);
    *lo = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), k);
    *hi = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), k);
}

/* Any NaN code (0x7f, 0xff) among n E4M3 codes? */
static bool has_e4m3_nan(const uint8_t *s, int64_t n) {
    for (int64_t t = 0; t < n; t++)
        if ((s[t] & 0x7f) == 0x7f) return true;
    return false;
}

/* ---- 8 x 8 transpose of 32-bit elements ------------------------------------------ */

/* dst row c (c < 8) = element c of src rows 0..7; strides in bytes. */
INLINE void transpose8(const void *src, int64_t ss, void *dst, int64_t ds) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps((const float *)((const char *)src + i * ss));
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int q = 0; q < 2; q++) { /* r[4q+e], lane h: rows 4q..4q+3 of column 4h+e */
        r[4 * q + 0] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], 0x44);
        r[4 * q + 1] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], 0xEE);
        r[4 * q + 2] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
        r[4 * q + 3] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xEE);
    }
    char *o = dst;
    for (int e = 0; e < 4; e++) {
        _mm256_storeu_ps((float *)(o + e * ds), _mm256_permute2f128_ps(r[e], r[4 + e], 0x20));
        _mm256_storeu_ps((float *)(o + (4 + e) * ds), _mm256_permute2f128_ps(r[e], r[4 + e], 0x31));
    }
}

/* ---- activations rounded to int8 ----------------------------------------------------- */

/* One row of prepared x: int8 codes (kpad bytes), then per group dx and the
 * second term's factor (affine: dx * sum of codes, the bias's weight;
 * mxfp4, nvfp4: -6 * dx * sum of codes), each zero-padded to a multiple of 16 groups
 * (the layout of mnv__qx_row_bytes). */
typedef struct {
    int8_t *q;
    float *dx, *xs2;
} xrow;


static xrow xrow_at(uint8_t *base, int64_t k, int64_t i) {
    const mnv__qx_row r = mnv__qx_row_at(base, k, i);
    return (xrow){r.q, (float *)r.g0, (float *)r.g1};
}

/* The J streams of a thread's rows j0..j0 + J * part (see PF_LEAD): the
 * prepared x rows, and each stream's starting shift. */
INLINE int64_t streams_begin(const mnv_qmatmul_args *a, uint8_t *xbase, int64_t part, const int R, xrow *xr) {
    for (int i = 0; i < R; i++) xr[i] = xrow_at(xbase, a->k, i);
    return mnv__stream_shift(part, a->ldw * 4);
}

/* Step r of the streams: each stream's row within its part (rr) and that
 * row's codes, scales and (bi not NULL) biases. */
INLINE void stream_rows(const mnv_qmatmul_args *a, const qdesc *d, int64_t j0, int64_t part, int64_t shift, int64_t r,
                        const int J, int64_t *rr, const uint8_t **w, const void **sc, const void **bi) {
    for (int u = 0; u < J; u++) {
        rr[u] = (r + u * shift) % part;
        const int64_t j = j0 + u * part + rr[u];
        w[u] = wrow(a, j), sc[u] = srow(a, d, j);
        if (bi) bi[u] = brow(a, d, j);
    }
}

/* 4-bit decode order: within each 64-element chunk the 32 even elements, then
 * the 32 odd ones (byte b of 32 W bytes holds element 2b low, 2b+1 high). */
INLINE void deinterleave64(int8_t *p) {
    const __m256i sh = _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
    /* per 16 bytes: 8 evens then 8 odds; then qwords to [evens | odds] */
    const __m256i a = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)p), sh), 0xD8);
    const __m256i b =
        _mm256_permute4x64_epi64(_mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(p + 32)), sh), 0xD8);
    _mm256_storeu_si256((__m256i *)p, _mm256_permute2x128_si256(a, b, 0x20));
    _mm256_storeu_si256((__m256i *)(p + 32), _mm256_permute2x128_si256(a, b, 0x31));
}

/* 2, 3, 5 and 6-bit decode order (the byte slots of lb_codes):
 *   2 bits, per 128 elements: element 4b + t at 32t + b (byte b of 32 W bytes
 *     holds elements 4b..4b+3, one per 2-bit plane t);
 *   3 bits, per 64: the 16-element blocks in the order 0, 2, 1, 3;
 *   then (3, 5, 6 bits) each 16 as the pairs of codes lb_codes forms. */
INLINE void lb_order(int8_t *q, int64_t kp, int bits) {
    if (bits == 2) {
        const __m256i planes = _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
        const __m256i qw = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (int64_t c = 0; c < kp; c += 128) {
            __m256i v[4]; /* v[i] qword t: plane t of bytes 8i..8i+7 */
            for (int i = 0; i < 4; i++)
                v[i] = _mm256_permutevar8x32_epi32(
                    _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(q + c + 32 * i)), planes), qw);
            const __m256i t0 = _mm256_unpacklo_epi64(v[0], v[1]), t1 = _mm256_unpackhi_epi64(v[0], v[1]);
            const __m256i t2 = _mm256_unpacklo_epi64(v[2], v[3]), t3 = _mm256_unpackhi_epi64(v[2], v[3]);
            _mm256_storeu_si256((__m256i *)(q + c), _mm256_permute2x128_si256(t0, t2, 0x20));
            _mm256_storeu_si256((__m256i *)(q + c + 32), _mm256_permute2x128_si256(t1, t3, 0x20));
            _mm256_storeu_si256((__m256i *)(q + c + 64), _mm256_permute2x128_si256(t0, t2, 0x31));
            _mm256_storeu_si256((__m256i *)(q + c + 96), _mm256_permute2x128_si256(t1, t3, 0x31));
        }
        return;
    }
    const __m256i pairs =
        bits == 6 ? _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15))
                  : _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15));
    for (int64_t c = 0; c < kp; c += 64) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(q + c)), b = _mm256_loadu_si256((const __m256i *)(q + c + 32));
        if (bits == 3) {
            const __m256i t = _mm256_permute2x128_si256(a, b, 0x20);
            b = _mm256_permute2x128_si256(a, b, 0x31), a = t;
        }
        _mm256_storeu_si256((__m256i *)(q + c), _mm256_shuffle_epi8(a, pairs));
        _mm256_storeu_si256((__m256i *)(q + c + 32), _mm256_shuffle_epi8(b, pairs));
    }
}

/* Groups of 16 or of a multiple of 32 elements. order_bits: the decode
 * order of that width (4: deinterleave64; 2, 3, 5, 6: lb_order), 0 element
 * order. The per-group arrays are zero to a multiple of 16 groups (the
 * windows of the decode kernels; the arrays hold a multiple of 16 floats,
 * mnv__qx_group_bytes). */
static void prep_x_row(const float *x, int64_t k, const qdesc *d, int order_bits, xrow r) {
    const int64_t G = d->G, ng = k / G, ngp = (ng + 15) / 16 * 16, kp = mnv__qx_kpad(k);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t g = 0; g < ng; g++) {
        const float *xg = x + g * G;
        __m256 amax = _mm256_setzero_ps();
        for (int64_t t = 0; t < G; t += 8) amax = _mm256_max_ps(amax, _mm256_and_ps(absm, _mm256_loadu_ps(xg + t)));
        const float am = hmax8(amax), dx = am / 127.0f;
        const __m256 inv = _mm256_set1_ps(am > 0.0f ? 127.0f / am : 0.0f);
        __m256i sq = _mm256_setzero_si256();
        if (G == 16) { /* int32 -> int16 -> int8, in order */
            const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg), inv));
            const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + 8), inv));
            sq = _mm256_add_epi32(q0, q1);
            const __m256i h = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
            _mm_storeu_si128((__m128i *)(r.q + g * G),
                             _mm_packs_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
        }
        for (int64_t t = 0; t + 32 <= G; t += 32) { /* round to nearest even */
            __m256i q[4];
            for (int u = 0; u < 4; u++) {
                q[u] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + t + 8 * u), inv));
                sq = _mm256_add_epi32(sq, q[u]);
            }
            const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(r.q + g * G + t), _mm256_permutevar8x32_epi32(b, order));
        }
        const float sumq = (float)hsum8i(sq);
        r.dx[g] = d->fp4 ? 0.5f * dx : dx;
        r.xs2[g] = d->fp4 ? -6.0f * dx * sumq : dx * sumq;
    }
    for (int64_t g = ng; g < ngp; g++) r.dx[g] = r.xs2[g] = 0.0f;
    memset(r.q + k, 0, (size_t)(kp - k));
    if (order_bits == 4)
        for (int64_t c = 0; c < kp; c += 64) deinterleave64(r.q + c);
    else if (order_bits) lb_order(r.q, kp, order_bits);
}

/* ---- decode: int8 ------------------------------------------------------------------ */

/* u = 2*e2m1(c) + 12 for the 16 codes (in both 128-bit lanes, for vpshufb). */
INLINE __m256i fp4_lut(void) {
    return _mm256_broadcastsi128_si256(_mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
}

/* Per window of 8 groups: the per-group factor s * dx of each x row (to sd);
 * returns the bias factors, whose terms the caller adds (B * xs2): the
 * accumulators never have their address taken, so they stay in registers.
 * 8-bit: bias b + 128 s for codes offset to q - 128. */
INLINE __m256 window_scales(const qdesc *d, const void *sc, const void *bi, int64_t g0, int64_t n8, const xrow *xr,
                            const int R, const bool OFF128, const bool FP4, const int SDT, float sd[][8]) {
    const mnv_dtype sdt = SDT >= 0 ? (mnv_dtype)SDT : d->sdt; /* SDT: the dtype when known at compile time */
    const __m256 S = load_scales8(sc, sdt, g0, n8);
    __m256 B = FP4 ? S : load_scales8(bi, sdt, g0, n8);
    if (OFF128) B = _mm256_fmadd_ps(S, _mm256_set1_ps(128.0f), B);
    for (int i = 0; i < R; i++) _mm256_store_ps(sd[i], _mm256_mul_ps(S, _mm256_loadu_ps(xr[i].dx + g0)));
    return B;
}

/* Decode kernels: rows [j0, j1) of y for R prepared rows of x, J rows of W
 * side by side ((j1 - j0) a multiple of J), the group size G a compile-time
 * constant (32, 64 or 128), so the loops over a group's codes unroll and the
 * accumulators (R x J vectors) stay in registers. The J rows share every load
 * of x and give J independent sums; each row stream is prefetched once per
 * 64-byte line. Every instance is its own function (NOINLINE below): inlined
 * into one switch, the instances of a format shared one register allocation
 * and GCC kept the accumulators on the stack. */
enum { MAXJ = 4, MAXA = 4 }; /* W rows side by side; accumulators (R x J) at most */

/* The accumulators are named variables f0..f3 (accumulator n: x row n % R,
 * W row n / R): GCC kept an array of them in memory across the group loop,
 * a store per accumulator and group. ACC(X) applies X to each one in use. */
#define ACC(X)                                                                                                      \
    do {                                                                                                            \
        if (0 < R * J) X(0);                                                                                        \
        if (1 < R * J) X(1);                                                                                        \
        if (2 < R * J) X(2);                                                                                        \
        if (3 < R * J) X(3);                                                                                        \
    } while (0)
#define ACC_ZERO(n) f##n = _mm256_setzero_ps()
#define ACC_BIAS(n) f##n = _mm256_fmadd_ps(B[(n) / R], _mm256_loadu_ps(xr[(n) % R].xs2 + g0), f##n)
#define ACC_OUT(n) y[(n) % R * a->ldy + j0 + (n) / R * part + rr[(n) / R]] = hsum8(f##n)

/* 4-bit codes (affine, or mxfp4 through the table), x deinterleaved. A 32-byte
 * load holds 64 codes: low nibbles against the even x, high against the odd;
 * int32 lane l of the widened sum then covers elements 8l..8l+7 of the 64
 * (G = 32: lanes 0-3 one group, 4-7 the next). Per group the int16 sums take
 * at most 4 vpmaddubsw results (G = 128; |pair| <= 2 * 24 * 127). */
INLINE void q4_chunk(const uint8_t *const *w, int64_t e, int bytes, const xrow *xr, const int R, const int J,
                     const bool FP4, __m256i *p) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), lut = fp4_lut();
    __m256i lo[MAXJ], hi[MAXJ];
    for (int u = 0; u < J; u++) {
        __m256i wv;
        if (bytes == 32) wv = _mm256_loadu_si256((const __m256i *)(w[u] + e / 2));
        else if (bytes == 16) wv = load_lo128(w[u] + e / 2);
        else { /* the row's last 8 or 24 bytes (groups of 16) */
            _Alignas(32) uint8_t tmp[32] = {0};
            memcpy(tmp, w[u] + e / 2, (size_t)bytes);
            wv = _mm256_load_si256((const __m256i *)tmp);
        }
        lo[u] = _mm256_and_si256(wv, m4), hi[u] = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
        if (FP4) lo[u] = _mm256_shuffle_epi8(lut, lo[u]), hi[u] = _mm256_shuffle_epi8(lut, hi[u]);
    }
    for (int i = 0; i < R; i++) {
        const __m256i xe = _mm256_loadu_si256((const __m256i *)(xr[i].q + e));
        const __m256i xo = _mm256_loadu_si256((const __m256i *)(xr[i].q + e + 32));
        for (int u = 0; u < J; u++)
            p[u * R + i] = _mm256_add_epi16(p[u * R + i], _mm256_add_epi16(_mm256_maddubs_epi16(lo[u], xe),
                                                                 _mm256_maddubs_epi16(hi[u], xo)));
    }
}

INLINE void gemv4(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int64_t j0, int64_t j1,
                  const int R, const int J, const int G, const bool FP4, const int SDT) {
    const int64_t k = a->k, ng = k / G;
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t part = (j1 - j0) / J, dist = PF_LEAD / J;
    xrow xr[MAXR];
    const int64_t shift = streams_begin(a, xbase, part, R, xr);
    for (int64_t r = 0; r < part; r++) {
        int64_t rr[MAXJ];
        const uint8_t *w[MAXJ];
        const void *sc[MAXJ], *bi[MAXJ];
        __m256 f0, f1, f2, f3;
        ACC(ACC_ZERO);
        stream_rows(a, d, j0, part, shift, r, J, rr, w, sc, bi);
        for (int64_t g0 = 0; g0 < ng; g0 += 8) {
            const int64_t n8 = MNV_MIN(8, ng - g0);
            _Alignas(32) float sd[MAXA][8];
            __m256 B[MAXJ];
            for (int u = 0; u < J; u++)
                B[u] = window_scales(d, sc[u], bi[u], g0, n8, xr, R, false, FP4, SDT, sd + u * R);
            ACC(ACC_BIAS);
            if (G == 32) { /* a chunk is two groups: lanes 0-3 and 4-7 */
                for (int64_t t = 0; 2 * t < n8; t++) {
                    const int64_t e = (g0 + 2 * t) * 32;
                    if (!(t & 1))
                        for (int u = 0; u < J; u++) prefetch_at(w[u], e / 2, dist);
                    __m256i p[MAXA];
                    for (int u = 0; u < J; u++)
                        for (int i = 0; i < R; i++) p[u * R + i] = _mm256_setzero_si256();
                    q4_chunk(w, e, 2 * t + 1 == n8 ? 16 : 32, xr, R, J, FP4, p);
/* the two groups' factors as one vector: two broadcast loads and a blend (no shuffle) */
#define ACC_G32(n)                                                                                                  \
    f##n = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p[n], ones)),                                       \
                           _mm256_blend_ps(_mm256_broadcast_ss(&sd[n][2 * t]),                                      \
                                           _mm256_broadcast_ss(&sd[n][2 * t + 1]), 0xF0),                           \
                           f##n)
                    ACC(ACC_G32);
#undef ACC_G32
                }
                continue;
            }
            for (int64_t g = 0; g < n8; g++) {
                const int64_t e = (g0 + g) * G;
                __m256i p[MAXA];
                for (int u = 0; u < J; u++)
                    for (int i = 0; i < R; i++) p[u * R + i] = _mm256_setzero_si256();
                for (int c = 0; c < G; c += 64) {
                    if (G == 128 || !((g0 + g) & 1)) /* one prefetch per 64 bytes of each row */
                        for (int u = 0; u < J; u++) prefetch_at(w[u], (e + c) / 2, dist);
                    q4_chunk(w, e + c, 32, xr, R, J, FP4, p);
                }
#define ACC_G(n)                                                                                                    \
    f##n = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p[n], ones)), _mm256_broadcast_ss(&sd[n][g]), f##n)
                ACC(ACC_G);
#undef ACC_G
            }
        }
        ACC(ACC_OUT);
    }
}

/* nvfp4 (E2M1 codes as mxfp4's, groups of 16, x deinterleaved): windows of
 * 16 groups (128 bytes of a row), whose E4M3 scales are converted at once. A
 * 32-byte chunk is four groups: int32 lanes 2q and 2q+1 of the widened sum
 * are group q, scaled by their factor s * dx duplicated into both lanes. */
INLINE void gemv4n(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int64_t j0, int64_t j1,
                   const int R, const int J) {
    const int64_t k = a->k, ng = k / 16;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i dup0 = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3), dup1 = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
    const int64_t part = (j1 - j0) / J, dist = PF_LEAD / J;
    xrow xr[MAXR];
    const int64_t shift = streams_begin(a, xbase, part, R, xr);
    for (int64_t r = 0; r < part; r++) {
        int64_t rr[MAXJ];
        const uint8_t *w[MAXJ];
        const void *sc[MAXJ];
        __m256 f0, f1, f2, f3;
        __m128i nan = _mm_setzero_si128(); /* bytes 0xff where a scale is NaN */
        ACC(ACC_ZERO);
        stream_rows(a, d, j0, part, shift, r, J, rr, w, sc, NULL);
        for (int64_t g0 = 0; g0 < ng; g0 += 16) {
            const int64_t n16 = MNV_MIN(16, ng - g0);
            _Alignas(32) float sd[MAXA][16];
            for (int u = 0; u < J; u++) {
                __m256 S0, S1;
                const __m128i c = load_e4m3_codes16(sc[u], g0, n16);
                nan = _mm_max_epu8(nan, _mm_or_si128(c, _mm_set1_epi8((char)0x80)));
                e4m3_scales16(c, d->gs, &S0, &S1);
                for (int i = 0; i < R; i++) { /* the per-group factors, and the second term S * xs2 */
                    _mm256_store_ps(sd[u * R + i], _mm256_mul_ps(S0, _mm256_loadu_ps(xr[i].dx + g0)));
                    _mm256_store_ps(sd[u * R + i] + 8, _mm256_mul_ps(S1, _mm256_loadu_ps(xr[i].dx + g0 + 8)));
                }
                for (int i = 0; i < R; i++) {
                    const __m256 b = _mm256_fmadd_ps(S1, _mm256_loadu_ps(xr[i].xs2 + g0 + 8),
                                                     _mm256_mul_ps(S0, _mm256_loadu_ps(xr[i].xs2 + g0)));
                    /* accumulator u * R + i */
                    switch (u * R + i) {
                    case 0: f0 = _mm256_add_ps(f0, b); break;
                    case 1: f1 = _mm256_add_ps(f1, b); break;
                    case 2: f2 = _mm256_add_ps(f2, b); break;
                    default: f3 = _mm256_add_ps(f3, b); break;
                    }
                }
            }
            for (int64_t t = 0; 4 * t < n16; t++) {
                if (!(t & 1))
                    for (int u = 0; u < J; u++) prefetch_at(w[u], (g0 + 4 * t) * 8, dist);
                __m256i p[MAXA];
                for (int u = 0; u < J; u++)
                    for (int i = 0; i < R; i++) p[u * R + i] = _mm256_setzero_si256();
                q4_chunk(w, (g0 + 4 * t) * 16, (int)MNV_MIN(32, (n16 - 4 * t) * 8), xr, R, J, true, p);
#define ACC_G16(n)                                                                                                  \
    f##n = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p[n], ones)),                                       \
                           _mm256_permutevar8x32_ps(_mm256_load_ps(sd[n] + (t >> 1) * 8), (t & 1) ? dup1 : dup0),   \
                           f##n)
                ACC(ACC_G16);
#undef ACC_G16
            }
        }
        ACC(ACC_OUT);
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(nan, _mm_set1_epi8(-1)))) /* a NaN scale: its rows' sums are NaN */
            for (int u = 0; u < J; u++)
                if (has_e4m3_nan(sc[u], ng))
                    for (int i = 0; i < R; i++) y[i * a->ldy + j0 + u * part + rr[u]] = NAN;
    }
}

/* 8-bit codes (element order): 32 codes per load, offset to q - 128 and
 * multiplied as |q - 128| x sign-carrying x; int32 sums per group. */
INLINE void gemv8(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int64_t j0, int64_t j1,
                  const int R, const int J, const int G, const int SDT) {
    const int64_t k = a->k, ng = k / G;
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
    const int64_t part = (j1 - j0) / J, dist = PF_LEAD / J;
    xrow xr[MAXR];
    const int64_t shift = streams_begin(a, xbase, part, R, xr);
    for (int64_t r = 0; r < part; r++) {
        int64_t rr[MAXJ];
        const uint8_t *w[MAXJ];
        const void *sc[MAXJ], *bi[MAXJ];
        __m256 f0, f1, f2, f3;
        ACC(ACC_ZERO);
        stream_rows(a, d, j0, part, shift, r, J, rr, w, sc, bi);
        for (int64_t g0 = 0; g0 < ng; g0 += 8) {
            const int64_t n8 = MNV_MIN(8, ng - g0);
            _Alignas(32) float sd[MAXA][8];
            __m256 B[MAXJ];
            for (int u = 0; u < J; u++)
                B[u] = window_scales(d, sc[u], bi[u], g0, n8, xr, R, true, false, SDT, sd + u * R);
            ACC(ACC_BIAS);
            for (int64_t g = 0; g < n8; g++) {
                const int64_t e = (g0 + g) * G;
                __m256i s[MAXA];
                for (int u = 0; u < J; u++)
                    for (int i = 0; i < R; i++) s[u * R + i] = _mm256_setzero_si256();
                for (int c = 0; c < G; c += 32) {
                    if (G > 32 ? !(c & 32) : !((g0 + g) & 1)) /* one prefetch per 64 bytes of each row */
                        for (int u = 0; u < J; u++) prefetch_at(w[u], e + c, dist);
                    __m256i ws[MAXJ], wa[MAXJ];
                    for (int u = 0; u < J; u++) {
                        ws[u] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w[u] + e + c)), flip);
                        wa[u] = _mm256_abs_epi8(ws[u]);
                    }
                    for (int i = 0; i < R; i++) {
                        const __m256i xv = _mm256_loadu_si256((const __m256i *)(xr[i].q + e + c));
                        for (int u = 0; u < J; u++)
                            s[u * R + i] = _mm256_add_epi32(
                                s[u * R + i],
                                _mm256_madd_epi16(_mm256_maddubs_epi16(wa[u], _mm256_sign_epi8(xv, ws[u])), ones));
                    }
                }
#define ACC_G(n) f##n = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[n]), _mm256_broadcast_ss(&sd[n][g]), f##n)
                ACC(ACC_G);
#undef ACC_G
            }
        }
        ACC(ACC_OUT);
    }
}
/* 2, 3, 5 and 6-bit codes, x in lb_order. A chunk of C codes (2 bits: 128,
 * 3 bits: 64, 5 and 6 bits: 32) is read as NV code vectors of 32 bytes, each
 * code in its own byte slot:
 *   2 bits: one 32-byte load, planes (w >> 2t) & 3 (NV = 4);
 *   3, 5, 6 bits: two 16-byte loads, the chunk's first and last 16 bytes
 *     (no byte outside it), one per 128-bit lane. vpshufb gives each 16-bit
 *     word the two bytes that hold a pair of neighbouring codes, a dword the
 *     same pair of two periods of the packing (3 bits: 8 codes in 3 bytes,
 *     5 bits: 8 in 5, 6 bits: 4 in 3), so one vpsrlvd puts both pairs' first
 *     code at bit 0 (their second is then at bit `bits`), vpsllw moves the
 *     second to bit 8, and a byte blend and a mask keep the two. 3 bits: 6
 *     bytes (16 codes) per lane and vector, NV = 2; 5 and 6 bits, NV = 1.
 * Per int32 lane of the widened sum, elements of one group: 2 bits, elements
 * 16l..16l+15 of the chunk; 3 bits, lanes 0-3 elements 0-31 and lanes 4-7
 * 32-63; 5 and 6 bits, one group. (A word's two codes shifted by vpmulhuw
 * and vpmullw by powers of two, with no vpsrlvd, measured 6% slower at 5 and
 * 6 bits: one thread, cache-resident, 18.4 against 19.5 GB/s at 6 bits.) */
INLINE int lb_chunk(const int BITS) { return BITS == 2 ? 128 : BITS == 3 ? 64 : 32; }
INLINE int lb_nv(const int BITS) { return BITS == 2 ? 4 : BITS == 3 ? 2 : 1; }
/* where lane 1 loads, from the chunk's start: its last 16 bytes */
INLINE int lb_lane1(const int BITS) { return BITS == 5 ? 4 : 8; }

typedef struct {
    __m256i sa, sb, sv, hb, mk;
} lbconst;

/* Per lane, dword d (pair d of each of two periods; 6 bits: pair d % 2 of
 * periods 2(d/2), 2(d/2)+1): the source bytes (-128: zero) and the shift. */
INLINE lbconst lb_const(const int BITS) {
    lbconst k;
    k.mk = _mm256_set1_epi8((char)((1 << BITS) - 1));
    k.hb = _mm256_set1_epi16((short)0xFF00);
    k.sa = k.sb = k.sv = _mm256_setzero_si256();
    if (BITS == 3) {
        k.sa = _mm256_setr_epi8(0, 1, 3, 4, 0, 1, 3, 4, 1, 2, 4, 5, 2, -128, 5, -128, 4, 5, 7, 8, 4, 5, 7, 8, 5, 6, 8,
                                9, 6, -128, 9, -128);
        k.sb = _mm256_setr_epi8(6, 7, 9, 10, 6, 7, 9, 10, 7, 8, 10, 11, 8, -128, 11, -128, 10, 11, 13, 14, 10, 11, 13,
                                14, 11, 12, 14, 15, 12, -128, 15, -128);
        k.sv = _mm256_setr_epi32(0, 6, 4, 2, 0, 6, 4, 2);
    } else if (BITS == 5) {
        k.sa = _mm256_setr_epi8(0, 1, 5, 6, 1, 2, 6, 7, 2, 3, 7, 8, 3, 4, 8, 9, 6, 7, 11, 12, 7, 8, 12, 13, 8, 9, 13,
                                14, 9, 10, 14, 15);
        k.sv = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    } else if (BITS == 6) {
        k.sa = _mm256_setr_epi8(0, 1, 3, 4, 1, 2, 4, 5, 6, 7, 9, 10, 7, 8, 10, 11, 4, 5, 7, 8, 5, 6, 8, 9, 10, 11, 13,
                                14, 11, 12, 14, 15);
        k.sv = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
    }
    return k;
}

/* The chunk's bytes at p as loaded (3, 5, 6 bits: the two lanes). */
INLINE __m256i lb_load(const int BITS, const uint8_t *p) {
    if (BITS == 2) return _mm256_loadu_si256((const __m256i *)p);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p)),
                                   _mm_loadu_si128((const __m128i *)(p + lb_lane1(BITS))), 1);
}

/* Code vector t of a loaded chunk. */
INLINE __m256i lb_codes(const int BITS, __m256i v, int t, const lbconst *k) {
    if (BITS == 2) return _mm256_and_si256(t ? _mm256_srli_epi16(v, 2 * t) : v, k->mk);
    const __m256i s = _mm256_srlv_epi32(_mm256_shuffle_epi8(v, t ? k->sb : k->sa), k->sv);
    return _mm256_and_si256(_mm256_blendv_epi8(s, _mm256_slli_epi16(s, 8 - BITS), k->hb), k->mk);
}

/* The factor s * dx of a chunk's int32 lanes: gpc groups per chunk from sd[q * gpc]. */
INLINE __m256 lb_factor(const float *sd, int64_t q, const int GPC) {
    if (GPC == 1) return _mm256_broadcast_ss(sd + q);
    if (GPC == 2) return _mm256_blend_ps(_mm256_broadcast_ss(sd + 2 * q), _mm256_broadcast_ss(sd + 2 * q + 1), 0xF0);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_load_ps(sd + 4 * q)),
                                    _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
}

/* The int16 sums of one chunk (codes at src[u] + off) against x at element
 * e, added to p. Sums of NV * SEG maddubs stay in
 * int16: pairs reach 2 * (2^bits - 1) * 127. */
INLINE void lb_chunk_sums(const uint8_t *const *src, int64_t off, int64_t e, const xrow *xr, const int R,
                          const int J, const int BITS, const lbconst *k, __m256i *p) {
    __m256i v[MAXJ];
    for (int u = 0; u < J; u++) v[u] = lb_load(BITS, src[u] + off);
    for (int t = 0; t < lb_nv(BITS); t++) {
        __m256i xv[MAXR];
        for (int i = 0; i < R; i++) xv[i] = _mm256_loadu_si256((const __m256i *)(xr[i].q + e + 32 * t));
        for (int u = 0; u < J; u++) {
            const __m256i c = lb_codes(BITS, v[u], t, k);
            for (int i = 0; i < R; i++) {
                const __m256i m = _mm256_maddubs_epi16(c, xv[i]);
                p[u * R + i] = _mm256_add_epi16(p[u * R + i], m);
            }
        }
    }
}

INLINE void gemvl(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int64_t j0, int64_t j1,
                  const int R, const int J, const int G, const int BITS) {
    const int C = lb_chunk(BITS), CB = C * BITS / 8;
    const int GPC = C >= G ? C / G : 1, CPG = C < G ? G / C : 1;
    const int SEG = BITS == 6 ? 2 : 4; /* chunks per int16 sum when C < G (NV = 1 at 5, 6 bits; 3 bits: 2 x 2) */
    const int64_t k = a->k, ng = k / G, kmain = k / C * C;
    const __m256i ones = _mm256_set1_epi16(1);
    const lbconst K = lb_const(BITS);
    const int64_t part = (j1 - j0) / J, dist = PF_LEAD / J;
    xrow xr[MAXR];
    const int64_t shift = streams_begin(a, xbase, part, R, xr);
    for (int64_t r = 0; r < part; r++) {
        int64_t rr[MAXJ];
        const uint8_t *w[MAXJ], *wt[MAXJ];
        const void *sc[MAXJ], *bi[MAXJ];
        _Alignas(32) uint8_t tail[MAXJ][32]; /* a row's last, partial chunk (2, 3 bits), zero-padded */
        __m256 f0, f1, f2, f3;
        ACC(ACC_ZERO);
        stream_rows(a, d, j0, part, shift, r, J, rr, w, sc, bi);
        for (int u = 0; u < J; u++) {
            wt[u] = tail[u];
            if (kmain < k) {
                memset(tail[u], 0, 32);
                memcpy(tail[u], w[u] + kmain / 8 * BITS, (size_t)((k - kmain) / 8 * BITS));
            }
        }
        for (int64_t g0 = 0; g0 < ng; g0 += 8) {
            const int64_t n8 = MNV_MIN(8, ng - g0);
            _Alignas(32) float sd[MAXA][8];
            __m256 B[MAXJ];
            for (int u = 0; u < J; u++)
                B[u] = window_scales(d, sc[u], bi[u], g0, n8, xr, R, false, false, -1, sd + u * R);
            ACC(ACC_BIAS);
            const int64_t e0 = g0 * G, e1 = e0 + n8 * G;
            if (C >= G) { /* a chunk is GPC groups */
                int64_t e = e0;
                for (; e < MNV_MIN(e1, kmain); e += C) {
                    const int64_t off = e / 8 * BITS, q = (e - e0) / C;
                    if ((off & 63) < CB)
                        for (int u = 0; u < J; u++) prefetch_at(w[u], off, dist);
                    __m256i p[MAXA];
                    for (int n = 0; n < R * J; n++) p[n] = _mm256_setzero_si256();
                    lb_chunk_sums(w, off, e, xr, R, J, BITS, &K, p);
#define ACC_LB(n) f##n = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p[n], ones)), lb_factor(sd[n], q, GPC), f##n)
                    ACC(ACC_LB);
                }
                if (e < e1) { /* the row's last chunk, partial */
                    const int64_t q = (e - e0) / C;
                    __m256i p[MAXA];
                    for (int n = 0; n < R * J; n++) p[n] = _mm256_setzero_si256();
                    lb_chunk_sums(wt, 0, e, xr, R, J, BITS, &K, p);
                    ACC(ACC_LB);
                }
#undef ACC_LB
                continue;
            }
            for (int64_t g = 0; g < n8; g++) { /* a group is CPG chunks */
                const int64_t eg = (g0 + g) * G;
                __m256i p[MAXA], s[MAXA];
                for (int n = 0; n < R * J; n++) s[n] = p[n] = _mm256_setzero_si256();
                for (int c = 0; c < CPG; c++) {
                    const int64_t e = eg + c * C, off = e / 8 * BITS;
                    if ((off & 63) < CB)
                        for (int u = 0; u < J; u++) prefetch_at(w[u], off, dist);
                    if (c % SEG == 0)
                        for (int n = 0; n < R * J; n++) p[n] = _mm256_setzero_si256();
                    lb_chunk_sums(w, off, e, xr, R, J, BITS, &K, p);
                    if (c % SEG == SEG - 1 || c == CPG - 1)
                        for (int n = 0; n < R * J; n++) s[n] = _mm256_add_epi32(s[n], _mm256_madd_epi16(p[n], ones));
                }
#define ACC_G(n) f##n = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[n]), _mm256_broadcast_ss(&sd[n][g]), f##n)
                ACC(ACC_G);
#undef ACC_G
            }
        }
        ACC(ACC_OUT);
    }
}
#undef ACC
#undef ACC_ZERO
#undef ACC_BIAS
#undef ACC_OUT

typedef void gemv_fn(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int rows, int64_t n0,
                     int64_t n1);
typedef void gemv_rows_fn(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int64_t j0,
                          int64_t j1);
#define NOINLINE static __attribute__((noinline))
/* Instances per group size: (R, J) = (1, 4), (1, 1), (2, 2), (2, 1), (3, 1), (4, 1). */
#define GEMV_SET(KIND, G)                                                                                      \
    NOINLINE void KIND##_##G##_1_4(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xb, float *y, int64_t j0,   \
                                   int64_t j1) {                                                                   \
        KIND(a, d, xb, y, j0, j1, 1, 4, G);                                                            \
    }                                                                                                               \
    NOINLINE void KIND##_##G##_1_1(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xb, float *y, int64_t j0,   \
                                   int64_t j1) {                                                                   \
        KIND(a, d, xb, y, j0, j1, 1, 1, G);                                                            \
    }                                                                                                               \
    NOINLINE void KIND##_##G##_2_2(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xb, float *y, int64_t j0,   \
                                   int64_t j1) {                                                                   \
        KIND(a, d, xb, y, j0, j1, 2, 2, G);                                                            \
    }                                                                                                               \
    NOINLINE void KIND##_##G##_2_1(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xb, float *y, int64_t j0,   \
                                   int64_t j1) {                                                                   \
        KIND(a, d, xb, y, j0, j1, 2, 1, G);                                                            \
    }                                                                                                               \
    NOINLINE void KIND##_##G##_3_1(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xb, float *y, int64_t j0,   \
                                   int64_t j1) {                                                                   \
        KIND(a, d, xb, y, j0, j1, 3, 1, G);                                                            \
    }                                                                                                               \
    NOINLINE void KIND##_##G##_4_1(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xb, float *y, int64_t j0,   \
                                   int64_t j1) {                                                                   \
        KIND(a, d, xb, y, j0, j1, 4, 1, G);                                                            \
    }                                                                                                               \
    static gemv_rows_fn *const KIND##_##G##_set[6] = {KIND##_##G##_1_4, KIND##_##G##_1_1, KIND##_##G##_2_2,        \
                                                      KIND##_##G##_2_1, KIND##_##G##_3_1, KIND##_##G##_4_1};
/* The formats' instances; mxfp4's scale dtype (E8M0) fixed at compile time
 * (one thread, mxfp4 from L3: 17.1 -> 18.5 GB/s; a bf16 twin of the affine
 * instances gained 4% for twice the code, and was left out). */
#define GEMV_KIND(NAME, CORE, ...)                                                                                 \
    INLINE void NAME(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xb, float *y, int64_t j0, int64_t j1,     \
                     const int R, const int J, const int G) {                                                      \
        CORE(a, d, xb, y, j0, j1, R, J, G, __VA_ARGS__);                                                           \
    }
GEMV_KIND(gemv4a, gemv4, false, -1)
GEMV_KIND(gemv4f, gemv4, true, MNV_DTYPE_U8)
INLINE void gemv4n_k(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xb, float *y, int64_t j0, int64_t j1,
                     const int R, const int J, const int G) {
    (void)G;
    gemv4n(a, d, xb, y, j0, j1, R, J);
}
GEMV_KIND(gemv8a, gemv8, -1)
GEMV_SET(gemv4a, 32)
GEMV_SET(gemv4a, 64)
GEMV_SET(gemv4a, 128)
GEMV_SET(gemv4f, 32)
GEMV_SET(gemv4n_k, 16)
GEMV_SET(gemv8a, 32)
GEMV_SET(gemv8a, 64)
GEMV_SET(gemv8a, 128)
GEMV_KIND(gemvl2, gemvl, 2)
GEMV_KIND(gemvl3, gemvl, 3)
GEMV_KIND(gemvl5, gemvl, 5)
GEMV_KIND(gemvl6, gemvl, 6)
GEMV_SET(gemvl2, 32)
GEMV_SET(gemvl2, 64)
GEMV_SET(gemvl2, 128)
GEMV_SET(gemvl3, 32)
GEMV_SET(gemvl3, 64)
GEMV_SET(gemvl3, 128)
GEMV_SET(gemvl5, 32)
GEMV_SET(gemvl5, 64)
GEMV_SET(gemvl5, 128)
GEMV_SET(gemvl6, 32)
GEMV_SET(gemvl6, 64)
GEMV_SET(gemvl6, 128)

/* rows of x -> the set's J-wide instance over the largest multiple of J rows,
 * the J = 1 one over the rest */
static void gemv_run_set(gemv_rows_fn *const *set, const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase,
                         float *y, int rows, int64_t n0, int64_t n1) {
    gemv_rows_fn *wide = rows == 1 ? set[0] : rows == 2 ? set[2] : NULL;
    gemv_rows_fn *one = rows == 1 ? set[1] : rows == 2 ? set[3] : rows == 3 ? set[4] : set[5];
    const int J = rows <= 1 ? 4 : 2;
    int64_t ne = n0;
    if (wide) {
        ne = n0 + (n1 - n0) / J * J;
        wide(a, d, xbase, y, n0, ne);
    }
    one(a, d, xbase, y, ne, n1);
}

static void gemv_i8_q4(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int rows, int64_t n0,
                       int64_t n1) {
    gemv_rows_fn *const *set = d->nv ? gemv4n_k_16_set : d->fp4 ? gemv4f_32_set : d->G == 32 ? gemv4a_32_set
                             : d->G == 64 ? gemv4a_64_set : gemv4a_128_set;
    gemv_run_set(set, a, d, xbase, y, rows, n0, n1);
}
static void gemv_i8_q8(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int rows, int64_t n0,
                       int64_t n1) {
    gemv_run_set(d->G == 32 ? gemv8a_32_set : d->G == 64 ? gemv8a_64_set : gemv8a_128_set, a, d, xbase, y, rows, n0,
                 n1);
}

static void gemv_i8_bits(const mnv_qmatmul_args *a, const qdesc *d, uint8_t *xbase, float *y, int rows, int64_t n0,
                         int64_t n1) {
    static gemv_rows_fn *const *const sets[4][3] = {{gemvl2_32_set, gemvl2_64_set, gemvl2_128_set},
                                                    {gemvl3_32_set, gemvl3_64_set, gemvl3_128_set},
                                                    {gemvl5_32_set, gemvl5_64_set, gemvl5_128_set},
                                                    {gemvl6_32_set, gemvl6_64_set, gemvl6_128_set}};
    const int b = d->bits == 2 ? 0 : d->bits == 3 ? 1 : d->bits == 5 ? 2 : 3;
    gemv_run_set(sets[b][d->G == 32 ? 0 : d->G == 64 ? 1 : 2], a, d, xbase, y, rows, n0, n1);
}

/* The order of prepared x for the decode kernel of d (prep_x_row). */
static int x_order(const qdesc *d) { return d->bits == 8 ? 0 : d->bits; }

static gemv_fn *gemv_for(const qdesc *d) {
    return d->bits == 8 ? gemv_i8_q8 : d->bits == 4 ? gemv_i8_q4 : gemv_i8_bits;
}

/* Each thread prepares its own copy of x (m <= 4 rows: cheaper than a barrier). */
static void i8_decode(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    uint8_t *xbase = mnv__align64(a->scratch) + (size_t)ith * (size_t)a->m * mnv__qx_row_bytes(a->k);
    for (int64_t i = 0; i < a->m; i++) prep_x_row(a->x + i * a->ldx, a->k, d, x_order(d), xrow_at(xbase, a->k, i));
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    gemv_for(d)(a, d, xbase, a->y, (int)a->m, n0, n1);
}

/* Mid-size m: the decode kernel on up to MAXR rows of x at a time, over
 * blocks of MID_JB rows of W re-read from cache by the later passes (W
 * streams from memory once, nothing is packed). x is prepared once (threads
 * share the rows, then a barrier), in the prefill's scratch. */
enum { MID_JB = 16 };

static void i8_mid(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    const int64_t m = a->m, k = a->k, xr = (int64_t)mnv__qx_row_bytes(k);
    uint8_t *xbase = mnv__align64(a->scratch);
    int64_t r0, r1;
    mnv__qsplit(m, ith, nth, 1, &r0, &r1);
    for (int64_t i = r0; i < r1; i++) prep_x_row(a->x + i * a->ldx, k, d, x_order(d), xrow_at(xbase, k, i));
    if (nth > 1) a->barrier(a->barrier_ctx);
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    gemv_fn *fn = gemv_for(d);
    /* passes of equal size: m = 9 as 3 + 3 + 3, not 4 + 4 + 1 */
    const int64_t npass = (m + MAXR - 1) / MAXR, per = (m + npass - 1) / npass;
    for (int64_t jb = n0; jb < n1; jb += MID_JB) {
        const int64_t jb1 = MNV_MIN(n1, jb + MID_JB);
        for (int64_t i0 = 0; i0 < m; i0 += per)
            fn(a, d, xbase + i0 * xr, a->y + i0 * a->ldy, (int)MNV_MIN(per, m - i0), jb, jb1);
    }
}

/* ---- f32: dequantize, then multiply ------------------------------------------------------- */

/* 8 codes of elements [e, e+8) of a row (e a multiple of 8) as int32;
 * rowbytes bounds the reads (2, 3, 5, 6 bits read 8 bytes where they can). */
INLINE __m256i codes8(int bits, const uint8_t *w, int64_t e, int64_t rowbytes) {
    if (bits == 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w + e)));
    if (bits == 4) {
        uint32_t v;
        memcpy(&v, w + e / 2, 4);
        const __m128i b = _mm_cvtsi32_si128((int)v), m4 = _mm_set1_epi8(0x0F);
        return _mm256_cvtepu8_epi32(
            _mm_unpacklo_epi8(_mm_and_si128(b, m4), _mm_and_si128(_mm_srli_epi16(b, 4), m4)));
    }
    const int64_t off = e / 8 * bits;
    uint64_t v = 0;
    if (off + 8 <= rowbytes) memcpy(&v, w + off, 8);
    else
        for (int i = 0; i < bits; i++) v |= (uint64_t)w[off + i] << (8 * i);
    const __m256i V = _mm256_set1_epi64x((long long)v);
    const __m256i a = _mm256_srlv_epi64(V, _mm256_setr_epi64x(0, bits, 2 * bits, 3 * bits));
    const __m256i b = _mm256_srlv_epi64(V, _mm256_setr_epi64x(4 * bits, 5 * bits, 6 * bits, 7 * bits));
    /* dwords c0 c4 c1 c5 c2 c6 c3 c7, then in order */
    const __m256i c = _mm256_blend_epi32(a, _mm256_slli_epi64(b, 32), 0xAA);
    return _mm256_and_si256(_mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)),
                            _mm256_set1_epi32((1 << bits) - 1));
}

/* 8 E4M3 codes (one a 32-bit lane) to f32 through F16C: the shift and mask
 * of e4m3_scales16 on 16-bit lanes, so that no subnormal code becomes a
 * denormal f32 operand; 0x7f and 0xff NaN. */
INLINE __m256 e4m3_8(__m256i c) {
    const __m256i em = _mm256_and_si256(c, _mm256_set1_epi32(0x7f));
    const __m256i h = _mm256_or_si256(_mm256_slli_epi32(em, 7),
                                      _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 8));
    const __m256 f = _mm256_mul_ps(
        _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1))),
        _mm256_set1_ps(0x1p8f));
    return _mm256_blendv_ps(f, _mm256_set1_ps(NAN), _mm256_castsi256_ps(_mm256_cmpeq_epi32(em, _mm256_set1_epi32(0x7f))));
}

/* One E4M3 code as f32 through F16C (the shift and mask of e4m3_scales16). */
INLINE float e4m3_f32(uint8_t c) {
    if ((c & 0x7f) == 0x7f) return NAN;
    return _cvtsh_ss((unsigned short)(((unsigned)(int8_t)c << 7) & 0xBFFFu)) * 0x1p8f;
}

/* 16 E4M3 codes times s, through F16C (the shift and mask of
 * e4m3_scales16; exactly e4m3 * s, as e4m3_8), 0x7f/0xff NaN. */
INLINE void e4m3_16(const uint8_t *p, __m256 s, __m256 *w0, __m256 *w1) {
    const __m256i c = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(c, 7), _mm256_set1_epi16((short)0xBFFF));
    const __m256i m7 = _mm256_set1_epi16(0x7f), nan = _mm256_cmpeq_epi16(_mm256_and_si256(c, m7), m7);
    const __m256 k = _mm256_set1_ps(0x1p8f);
    *w0 = _mm256_or_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), k), s),
                       _mm256_castsi256_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(nan))));
    *w1 = _mm256_or_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), k), s),
                       _mm256_castsi256_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(nan, 1))));
}

/* Scale and bias of group g of a row, as f32 (nvfp4: e4m3 * global). */
INLINE void group_sb(const mnv_qmatmul_args *a, const qdesc *d, const void *sc, const void *bi, int64_t g, float *s,
                     float *b) {
    if (a->fmt.mode == MNV_QMODE_NVFP4) *s = e4m3_f32(((const uint8_t *)sc)[g]) * a->global_scale;
    else *s = scale_at(d->sdt, sc, g);
    *b = a->fmt.mode == MNV_QMODE_AFFINE ? scale_at(d->sdt, bi, g) : 0.0f;
}

/* 8 weights from their codes: affine fma(q, s, b); e2m1 and e4m3 times s. */
INLINE __m256 weights8(mnv_qmode mode, __m256i q, __m256 s, __m256 b) {
    switch (mode) {
    case MNV_QMODE_AFFINE: return _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), s, b);
    case MNV_QMODE_MXFP8: return _mm256_mul_ps(e4m3_8(q), s);
    default: { /* e2m1: magnitude from the low 3 bits, sign from bit 3 */
        const __m256 lut = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
        const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(q, _mm256_set1_epi32(8)), 28);
        const __m256 v = _mm256_or_ps(_mm256_permutevar8x32_ps(lut, q), _mm256_castsi256_ps(sign));
        return _mm256_mul_ps(v, s);
    }
    }
}

/* Weights of elements [e, e+16) of a row (e a multiple of 16). 4-bit codes
 * are split with byte operations, 16 at a time; e2m1 goes through a table of
 * 2*e2m1 as int8 and is multiplied by hs = s/2 (the same product, exactly).
 * Other widths: codes8. */
INLINE void weights16(const mnv_qmode MODE, const int BITS, const uint8_t *w, int64_t e, int64_t rb, __m256 sv,
                      __m256 bv, __m256 hs, __m256 *w0, __m256 *w1) {
    if (BITS == 4) {
        const __m128i b = _mm_loadl_epi64((const __m128i *)(w + e / 2)), m4 = _mm_set1_epi8(0x0F);
        __m128i c = _mm_unpacklo_epi8(_mm_and_si128(b, m4), _mm_and_si128(_mm_srli_epi16(b, 4), m4));
        if (MODE == MNV_QMODE_AFFINE) {
            *w0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)), sv, bv);
            *w1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c, 8))), sv, bv);
        } else {
            c = _mm_shuffle_epi8(_mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12), c);
            *w0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)), hs);
            *w1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(c, 8))), hs);
        }
        return;
    }
    *w0 = weights8(MODE, codes8(BITS, w, e, rb), sv, bv);
    *w1 = weights8(MODE, codes8(BITS, w, e + 8, rb), sv, bv);
}

/* Groups [g0, g0+ngr) of row j as f32. */
static void deq_f32(const mnv_qmatmul_args *a, const qdesc *d, int64_t j, int64_t g0, int64_t ngr, float *out) {
    const uint8_t *w = wrow(a, j);
    const void *sc = srow(a, d, j), *bi = brow(a, d, j);
    const int64_t G = d->G, rb = a->k * d->bits / 8;
    const mnv_qmode mode = a->fmt.mode;
    for (int64_t g = g0; g < g0 + ngr; g++, out += G) {
        float s, b;
        group_sb(a, d, sc, bi, g, &s, &b);
        const __m256 sv = _mm256_set1_ps(s), bv = _mm256_set1_ps(b), hs = _mm256_set1_ps(0.5f * s);
        for (int64_t t = 0; t < G; t += 16) {
            __m256 w0, w1;
            if (d->bits == 4 && mode == MNV_QMODE_AFFINE)
                weights16(MNV_QMODE_AFFINE, 4, w, g * G + t, rb, sv, bv, hs, &w0, &w1);
            else if (d->bits == 4) weights16(MNV_QMODE_MXFP4, 4, w, g * G + t, rb, sv, bv, hs, &w0, &w1);
            else if (mode == MNV_QMODE_MXFP8) e4m3_16(w + g * G + t, sv, &w0, &w1);
            else {
                w0 = weights8(mode, codes8(d->bits, w, g * G + t, rb), sv, bv);
                w1 = weights8(mode, codes8(d->bits, w, g * G + t + 8, rb), sv, bv);
            }
            _mm256_storeu_ps(out + t, w0);
            _mm256_storeu_ps(out + t + 8, w1);
        }
    }
}

/* Rows [j0, j1) for R (<= 4) rows of x from xs (row stride ldx) into y (ldy):
 * each row's weights formed 16 at a time in registers (groups are multiples
 * of 16) and dotted with the R rows of x (two sums per row of x). */
INLINE void f32_gemv(const mnv_qmatmul_args *a, const qdesc *d, const float *xs, float *ys, int64_t j0, int64_t j1,
                     const int R, const mnv_qmode MODE, const int BITS) {
    const int64_t k = a->k, G = d->G, rb = k * BITS / 8;
    for (int64_t j = j0; j < j1; j++) {
        const uint8_t *w = wrow(a, j);
        const void *sc = srow(a, d, j), *bi = brow(a, d, j);
        __m256 acc[MAXR][2];
        for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int64_t g = 0; g < k / G; g++) {
            float s, b;
            group_sb(a, d, sc, bi, g, &s, &b);
            const __m256 sv = _mm256_set1_ps(s), bv = _mm256_set1_ps(b), hs = _mm256_set1_ps(0.5f * s);
            for (int64_t e = g * G; e < (g + 1) * G; e += 16) {
                __m256 w0, w1;
                weights16(MODE, BITS, w, e, rb, sv, bv, hs, &w0, &w1);
                for (int i = 0; i < R; i++) {
                    const float *x = xs + i * a->ldx + e;
                    acc[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x), w0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), w1, acc[i][1]);
                }
            }
        }
        for (int i = 0; i < R; i++) ys[i * a->ldy + j] = hsum8(_mm256_add_ps(acc[i][0], acc[i][1]));
    }
}

#define F32_GEMV_ROWS(MODE, BITS)                                                                                 \
    switch (rows) {                                                                                               \
    case 1: f32_gemv(a, d, xs, ys, n0, n1, 1, MODE, BITS); break;                                                 \
    case 2: f32_gemv(a, d, xs, ys, n0, n1, 2, MODE, BITS); break;                                                 \
    case 3: f32_gemv(a, d, xs, ys, n0, n1, 3, MODE, BITS); break;                                                 \
    default: f32_gemv(a, d, xs, ys, n0, n1, 4, MODE, BITS); break;                                                \
    }
typedef void f32_gemv_fn(const mnv_qmatmul_args *a, const qdesc *d, const float *xs, float *ys, int rows, int64_t n0,
                         int64_t n1);
static void f32_gemv_q8(const mnv_qmatmul_args *a, const qdesc *d, const float *xs, float *ys, int rows, int64_t n0,
                        int64_t n1) {
    F32_GEMV_ROWS(MNV_QMODE_AFFINE, 8)
}
static void f32_gemv_q4(const mnv_qmatmul_args *a, const qdesc *d, const float *xs, float *ys, int rows, int64_t n0,
                        int64_t n1) {
    F32_GEMV_ROWS(MNV_QMODE_AFFINE, 4)
}
static void f32_gemv_qbits(const mnv_qmatmul_args *a, const qdesc *d, const float *xs, float *ys, int rows,
                           int64_t n0, int64_t n1) {
    switch (d->bits) {
    case 2: F32_GEMV_ROWS(MNV_QMODE_AFFINE, 2) break;
    case 3: F32_GEMV_ROWS(MNV_QMODE_AFFINE, 3) break;
    case 5: F32_GEMV_ROWS(MNV_QMODE_AFFINE, 5) break;
    default: F32_GEMV_ROWS(MNV_QMODE_AFFINE, 6) break;
    }
}
static void f32_gemv_fp4(const mnv_qmatmul_args *a, const qdesc *d, const float *xs, float *ys, int rows, int64_t n0,
                         int64_t n1) {
    F32_GEMV_ROWS(MNV_QMODE_MXFP4, 4)
}
static void f32_gemv_fp8(const mnv_qmatmul_args *a, const qdesc *d, const float *xs, float *ys, int rows, int64_t n0,
                         int64_t n1) {
    F32_GEMV_ROWS(MNV_QMODE_MXFP8, 8)
}
#undef F32_GEMV_ROWS

static f32_gemv_fn *f32_gemv_for(const mnv_qmatmul_args *a) {
    switch (a->fmt.mode) {
    case MNV_QMODE_AFFINE: return a->fmt.bits == 8 ? f32_gemv_q8 : a->fmt.bits == 4 ? f32_gemv_q4 : f32_gemv_qbits;
    case MNV_QMODE_MXFP8: return f32_gemv_fp8;
    default: return f32_gemv_fp4; /* mxfp4, nvfp4 */
    }
}

/* Any m without scratch, and decode: rows of x 4 at a time over the thread's W rows. */
static void f32_decode(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, a->n >= 64 * nth ? 16 : 4, &n0, &n1);
    f32_gemv_fn *fn = f32_gemv_for(a);
    for (int64_t i0 = 0; i0 < a->m; i0 += MAXR)
        fn(a, d, a->x + i0 * a->ldx, a->y + i0 * a->ldy, (int)MNV_MIN(MAXR, a->m - i0), n0, n1);
}

/* ---- f32 prefill: dequantized panels ------------------------------------------------------ */

enum { FNP = MNV__QF32_NP, FKC = MNV__QF32_KC_MAX, F32_R = 6 };

/* y tile (F32_R rows of x) x (16 rows of W): pan is (kc, 16) f32. */
INLINE void f32_tile(const float *pan, int64_t kc, const float *const *x, float *const *y, int rows, int cols,
                     bool accumulate) {
    __m256 acc[F32_R][2];
    for (int r = 0; r < F32_R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t t = 0; t < kc; t++) {
        const __m256 w0 = _mm256_load_ps(pan + 16 * t), w1 = _mm256_load_ps(pan + 16 * t + 8);
        for (int r = 0; r < F32_R; r++) {
            const __m256 xb = _mm256_broadcast_ss(x[r] + t);
            acc[r][0] = _mm256_fmadd_ps(xb, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(xb, w1, acc[r][1]);
        }
    }
    _Alignas(32) float v[F32_R][16]; /* (constant indices keep acc in registers) */
    for (int r = 0; r < F32_R; r++) {
        _mm256_store_ps(v[r], acc[r][0]);
        _mm256_store_ps(v[r] + 8, acc[r][1]);
    }
    for (int r = 0; r < F32_R && r < rows; r++) {
        if (cols == 16) {
            __m256 v0 = _mm256_load_ps(v[r]), v1 = _mm256_load_ps(v[r] + 8);
            if (accumulate) v0 = _mm256_add_ps(v0, _mm256_loadu_ps(y[r])), v1 = _mm256_add_ps(v1, _mm256_loadu_ps(y[r] + 8));
            _mm256_storeu_ps(y[r], v0);
            _mm256_storeu_ps(y[r] + 8, v1);
            continue;
        }
        for (int c = 0; c < cols; c++) y[r][c] = accumulate ? y[r][c] + v[r][c] : v[r][c];
    }
}

static void f32_prefill(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    const int64_t m = a->m, k = a->k, G = d->G;
    float *panel = (float *)(mnv__align64(a->scratch) + (size_t)m * mnv__qx_row_bytes(k) +
                             (size_t)ith * mnv__qpanel_bytes());
    float *rowbuf = panel + (size_t)FNP * FKC; /* 16 rows of FKC */
    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, 16, &n0, &n1);
    const int64_t kcm = FKC / G * G;
    for (int64_t k0 = 0; k0 < k; k0 += kcm) {
        const int64_t kc = MNV_MIN(kcm, k - k0);
        for (int64_t jp = n0; jp < n1; jp += FNP) {
            const int64_t rows = MNV_MIN(FNP, n1 - jp), C = (rows + 15) / 16;
            for (int64_t cb = 0; cb < C; cb++) { /* panel cb: (kc, 16) at panel + cb * FKC * 16 */
                for (int64_t r = 0; r < 16; r++) {
                    if (cb * 16 + r < rows) deq_f32(a, d, jp + cb * 16 + r, k0 / G, kc / G, rowbuf + r * FKC);
                    else memset(rowbuf + r * FKC, 0, sizeof(float) * (size_t)kc);
                }
                float *pc = panel + cb * FKC * 16;
                for (int64_t t = 0; t < kc; t += 8) {
                    transpose8(rowbuf + t, FKC * 4, pc + t * 16, 64);
                    transpose8(rowbuf + 8 * FKC + t, FKC * 4, pc + t * 16 + 8, 64);
                }
            }
            for (int64_t cb = 0; cb < C; cb++) {
                const int cols = (int)MNV_MIN(16, rows - 16 * cb);
                for (int64_t i0 = 0; i0 < m; i0 += F32_R) {
                    const float *x[F32_R];
                    float *y[F32_R];
                    for (int r = 0; r < F32_R; r++) {
                        const int64_t i = MNV_MIN(i0 + r, m - 1);
                        x[r] = a->x + i * a->ldx + k0;
                        y[r] = a->y + i * a->ldy + jp + 16 * cb;
                    }
                    f32_tile(panel + cb * FKC * 16, kc, x, y, (int)MNV_MIN(F32_R, m - i0), cols, k0 > 0);
                }
            }
        }
    }
}

/* ---- int8 prefill: packed panels -------------------------------------------------------- */

/* Panel of NP W rows (three blocks of 16) x kc codes, one byte each, as
 * [block][kc/4][16][4]: four consecutive codes of each of 16 rows, so one
 * vector is 8 rows x 4 codes and vpmaddubsw with a broadcast dword of x sums
 * pairs of codes per row. Codes: 4-bit as they are, mxfp4 u = 2*e2m1 + 12,
 * 8-bit q - 128 (signed). Per group and row: the scale sw (mxfp4 2^(e-127))
 * and the second term's factor bw (affine b, 8-bit b + 128 s, mxfp4 s). */
typedef struct {
    uint8_t *codes;
    float *sw, *bw;  /* [block][kc/G][16] */
    uint8_t *rowbuf; /* 16 rows of unpacked codes */
} i8panel;

enum { NP = MNV__QI8_NP, I8_R = 3 };

static i8panel i8panel_at(uint8_t *p) {
    i8panel q;
    q.codes = p;
    q.sw = (float *)(p + (size_t)NP * MNV__QI8_KC_MAX);
    q.bw = q.sw + (size_t)(MNV__QI8_KC_MAX / 16) * NP;
    q.rowbuf = (uint8_t *)(q.bw + (size_t)(MNV__QI8_KC_MAX / 16) * NP);
    return q;
}

/* Codes [k0, k0+kc) of row j as panel bytes (kc a multiple of 32; 2, 3, 5
 * and 6 bits through the portable unpacker, amortized over the rows of x). */
static void codes_row(const mnv_qmatmul_args *a, const qdesc *d, int64_t j, int64_t k0, int64_t kc, uint8_t *dst) {
    const uint8_t *w = wrow(a, j);
    if (d->bits == 8) {
        const __m256i flip = _mm256_set1_epi8((char)0x80);
        for (int64_t t = 0; t < kc; t += 32)
            _mm256_storeu_si256((__m256i *)(dst + t),
                                _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + k0 + t)), flip));
        return;
    }
    if (d->bits != 4) { /* 2, 3, 5, 6 bits */
        mnv__qcodes((const uint32_t *)w, d->bits, k0, kc, dst);
        return;
    }
    const uint8_t *s = w + k0 / 2;
    const __m128i m4 = _mm_set1_epi8(0x0F), lut = _mm256_castsi256_si128(fp4_lut());
    for (int64_t t = 0; t < kc / 2; t += 16) { /* 16 bytes -> 32 codes */
        const __m128i v = _mm_loadu_si128((const __m128i *)(s + t));
        __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        if (d->fp4) lo = _mm_shuffle_epi8(lut, lo), hi = _mm_shuffle_epi8(lut, hi);
        _mm_storeu_si128((__m128i *)(dst + 2 * t), _mm_unpacklo_epi8(lo, hi));
        _mm_storeu_si128((__m128i *)(dst + 2 * t + 16), _mm_unpackhi_epi8(lo, hi));
    }
}

/* Rows [j0, j0+rows) (rows <= NP), codes [k0, k0+kc), into the panel; rows past
 * `rows` are zero. */
static void pack_i8(const mnv_qmatmul_args *a, const qdesc *d, int64_t j0, int64_t rows, int64_t k0, int64_t kc,
                    const i8panel *p) {
    const int64_t G = d->G, g0 = k0 / G, ngb = kc / G, nq = kc / 4;
    for (int64_t cb = 0; cb * 16 < rows; cb++) {
        const int64_t rb = MNV_MIN(16, rows - cb * 16), jb = j0 + cb * 16;
        for (int64_t r = 0; r < 16; r++) {
            if (r < rb) codes_row(a, d, jb + r, k0, kc, p->rowbuf + r * kc);
            else memset(p->rowbuf + r * kc, 0, (size_t)kc);
        }
        uint8_t *dst = p->codes + cb * nq * 64;
        for (int64_t q = 0; q < nq; q += 8) { /* kc/4 is a multiple of 8 */
            transpose8(p->rowbuf + 4 * q, kc, dst + q * 64, 64);
            transpose8(p->rowbuf + 8 * kc + 4 * q, kc, dst + q * 64 + 32, 64);
        }
        float *sw = p->sw + cb * ngb * 16, *bw = p->bw + cb * ngb * 16;
        for (int64_t r = 0; r < 16; r++) {
            for (int64_t g = 0; g < ngb; g++) {
                float s = 0.0f, b = 0.0f;
                if (r < rb) {
                    s = d->nv ? e4m3_f32(((const uint8_t *)srow(a, d, jb + r))[g0 + g]) * d->gs
                              : scale_at(d->sdt, srow(a, d, jb + r), g0 + g);
                    b = d->fp4 ? s : scale_at(d->sdt, brow(a, d, jb + r), g0 + g);
                    if (d->bits == 8) b = fmaf(128.0f, s, b);
                }
                sw[g * 16 + r] = s;
                bw[g * 16 + r] = b;
            }
        }
    }
}

/* y tile: I8_R rows of x x one 16-row block of the panel, over one k block.
 * Per group, int sums of vpmaddubsw (4-bit: in int16 over segments of SEG
 * quads, then widened; 8-bit: each widened at once) are scaled into f32. */
INLINE void i8_tile(const int BITS, const int SEG, const uint8_t *pc, const float *sw, const float *bw, int64_t ngb,
                    int64_t G, const int8_t *const *xq, const float *const *dx, const float *const *xs2,
                    float *const *y, int rows, int cols, bool accumulate) {
    const __m256i ones = _mm256_set1_epi16(1);
    _Alignas(32) float f[I8_R][16];
    for (int r = 0; r < I8_R; r++) {
        _mm256_store_ps(f[r], _mm256_setzero_ps());
        _mm256_store_ps(f[r] + 8, _mm256_setzero_ps());
    }
    const int64_t qg = G / 4; /* quads per group */
    for (int64_t g = 0; g < ngb; g++) {
        const __m256 sw0 = _mm256_load_ps(sw + g * 16), sw1 = _mm256_load_ps(sw + g * 16 + 8);
        __m256i s32[I8_R][2];
        if (BITS == 8)
            for (int r = 0; r < I8_R; r++) s32[r][0] = s32[r][1] = _mm256_setzero_si256();
        for (int64_t q0 = 0; q0 < qg; q0 += SEG) {
            __m256i s[I8_R][2]; /* 8-bit: the group's int32 sums themselves (no second set of registers) */
            for (int r = 0; r < I8_R; r++) {
                s[r][0] = BITS == 8 ? s32[r][0] : _mm256_setzero_si256();
                s[r][1] = BITS == 8 ? s32[r][1] : _mm256_setzero_si256();
            }
#pragma GCC unroll 1
            for (int64_t q = q0; q < q0 + SEG; q++) {
                const uint8_t *pq = pc + (g * qg + q) * 64;
                const __m256i w0 = _mm256_load_si256((const __m256i *)pq);
                const __m256i w1 = _mm256_load_si256((const __m256i *)(pq + 32));
                if (BITS == 8) {
                    const __m256i a0 = _mm256_abs_epi8(w0), a1 = _mm256_abs_epi8(w1);
                    for (int r = 0; r < I8_R; r++) {
                        int32_t xv;
                        memcpy(&xv, xq[r] + 4 * (g * qg + q), 4);
                        const __m256i xb = _mm256_set1_epi32(xv);
                        s[r][0] = _mm256_add_epi32(
                            s[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(xb, w0)), ones));
                        s[r][1] = _mm256_add_epi32(
                            s[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(xb, w1)), ones));
                    }
                } else {
                    for (int r = 0; r < I8_R; r++) {
                        int32_t xv;
                        memcpy(&xv, xq[r] + 4 * (g * qg + q), 4);
                        const __m256i xb = _mm256_set1_epi32(xv);
                        s[r][0] = _mm256_add_epi16(s[r][0], _mm256_maddubs_epi16(w0, xb));
                        s[r][1] = _mm256_add_epi16(s[r][1], _mm256_maddubs_epi16(w1, xb));
                    }
                }
            }
            for (int r = 0; r < I8_R; r++) {
                if (BITS == 8) {
                    s32[r][0] = s[r][0], s32[r][1] = s[r][1];
                    continue;
                }
                const __m256 dxb = _mm256_broadcast_ss(dx[r] + g);
                _mm256_store_ps(f[r], _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s[r][0], ones)),
                                                      _mm256_mul_ps(sw0, dxb), _mm256_load_ps(f[r])));
                _mm256_store_ps(f[r] + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s[r][1], ones)),
                                                          _mm256_mul_ps(sw1, dxb), _mm256_load_ps(f[r] + 8)));
            }
        }
        const __m256 bw0 = _mm256_load_ps(bw + g * 16), bw1 = _mm256_load_ps(bw + g * 16 + 8);
        for (int r = 0; r < I8_R; r++) {
            __m256 f0 = _mm256_load_ps(f[r]), f1 = _mm256_load_ps(f[r] + 8);
            if (BITS == 8) {
                const __m256 dxb = _mm256_broadcast_ss(dx[r] + g);
                f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[r][0]), _mm256_mul_ps(sw0, dxb), f0);
                f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[r][1]), _mm256_mul_ps(sw1, dxb), f1);
            }
            const __m256 xsb = _mm256_broadcast_ss(xs2[r] + g);
            _mm256_store_ps(f[r], _mm256_fmadd_ps(xsb, bw0, f0));
            _mm256_store_ps(f[r] + 8, _mm256_fmadd_ps(xsb, bw1, f1));
        }
    }
    for (int r = 0; r < I8_R && r < rows; r++) {
        if (cols == 16) {
            __m256 v0 = _mm256_load_ps(f[r]), v1 = _mm256_load_ps(f[r] + 8);
            if (accumulate) v0 = _mm256_add_ps(v0, _mm256_loadu_ps(y[r])), v1 = _mm256_add_ps(v1, _mm256_loadu_ps(y[r] + 8));
            _mm256_storeu_ps(y[r], v0);
            _mm256_storeu_ps(y[r] + 8, v1);
        } else {
            for (int c = 0; c < cols; c++) y[r][c] = accumulate ? y[r][c] + f[r][c] : f[r][c];
        }
    }
}

/* The kinds; segments: codes c in pairs with |x| <= 127 give at most
 * 254 c: 8 of them sum within int16 for c <= 15 (2, 3, 4 bits), 4 for c <= 31
 * (5 bits; mxfp4 u <= 24), 2 for c <= 63 (6 bits). */
#define I8_TILE_ARGS pc, sw, bw, ngb, G, xq, dx, xs2, y, rows, cols, accumulate
typedef void i8_tile_fn(const uint8_t *pc, const float *sw, const float *bw, int64_t ngb, int64_t G,
                        const int8_t *const *xq, const float *const *dx, const float *const *xs2, float *const *y,
                        int rows, int cols, bool accumulate);
static void i8_tile_q8(const uint8_t *pc, const float *sw, const float *bw, int64_t ngb, int64_t G,
                       const int8_t *const *xq, const float *const *dx, const float *const *xs2, float *const *y,
                       int rows, int cols, bool accumulate) {
    i8_tile(8, 8, I8_TILE_ARGS);
}
static void i8_tile_q4(const uint8_t *pc, const float *sw, const float *bw, int64_t ngb, int64_t G,
                       const int8_t *const *xq, const float *const *dx, const float *const *xs2, float *const *y,
                       int rows, int cols, bool accumulate) {
    i8_tile(4, 8, I8_TILE_ARGS);
}
static void i8_tile_q6(const uint8_t *pc, const float *sw, const float *bw, int64_t ngb, int64_t G,
                       const int8_t *const *xq, const float *const *dx, const float *const *xs2, float *const *y,
                       int rows, int cols, bool accumulate) {
    i8_tile(4, 2, I8_TILE_ARGS);
}
static void i8_tile_fp4(const uint8_t *pc, const float *sw, const float *bw, int64_t ngb, int64_t G,
                        const int8_t *const *xq, const float *const *dx, const float *const *xs2, float *const *y,
                        int rows, int cols, bool accumulate) {
    i8_tile(4, 4, I8_TILE_ARGS);
}
#undef I8_TILE_ARGS

static void i8_prefill(const mnv_qmatmul_args *a, const qdesc *d, int ith, int nth) {
    const int64_t m = a->m, k = a->k, G = d->G;
    uint8_t *base = mnv__align64(a->scratch);
    const i8panel p = i8panel_at(base + (size_t)m * mnv__qx_row_bytes(k) + (size_t)ith * mnv__qpanel_bytes());
    int64_t r0, r1;
    mnv__qsplit(m, ith, nth, 1, &r0, &r1);
    for (int64_t i = r0; i < r1; i++) prep_x_row(a->x + i * a->ldx, k, d, false, xrow_at(base, k, i));
    if (nth > 1) a->barrier(a->barrier_ctx);

    int64_t n0, n1;
    mnv__qsplit(a->n, ith, nth, 16, &n0, &n1);
    const int64_t kc_max = mnv__qpick_kc(m, k, MNV_MAX(G, 32), MNV__QI8_KC_MAX); /* codes_row: 32 at a time */
    i8_tile_fn *tile = d->bits == 8                  ? i8_tile_q8
                       : d->fp4 || d->bits == 5       ? i8_tile_fp4
                       : d->bits == 6                 ? i8_tile_q6
                                                      : i8_tile_q4;
    for (int64_t k0 = 0; k0 < k; k0 += kc_max) {
        const int64_t kc = MNV_MIN(kc_max, k - k0), ngb = kc / G;
        for (int64_t jp = n0; jp < n1; jp += NP) {
            const int64_t rows = MNV_MIN(NP, n1 - jp), nb = (rows + 15) / 16;
            pack_i8(a, d, jp, rows, k0, kc, &p);
            for (int64_t i0 = 0; i0 < m; i0 += I8_R) {
                const int8_t *xq[I8_R];
                const float *dx[I8_R], *xs2[I8_R];
                for (int r = 0; r < I8_R; r++) {
                    const xrow xr = xrow_at(base, k, MNV_MIN(i0 + r, m - 1));
                    xq[r] = xr.q + k0;
                    dx[r] = xr.dx + k0 / G;
                    xs2[r] = xr.xs2 + k0 / G;
                }
                for (int64_t cb = 0; cb < nb; cb++) {
                    float *y[I8_R];
                    for (int r = 0; r < I8_R; r++) y[r] = a->y + MNV_MIN(i0 + r, m - 1) * a->ldy + jp + 16 * cb;
                    tile(p.codes + cb * (kc / 4) * 64, p.sw + cb * ngb * 16, p.bw + cb * ngb * 16, ngb, G, xq, dx,
                         xs2, y, (int)MNV_MIN(I8_R, m - i0), (int)MNV_MIN(16, rows - 16 * cb), k0 > 0);
                }
            }
        }
    }
}

/* ---- entry point -------------------------------------------------------------------------- */

/* Mid-size m up to this (at most MNV_QMATMUL_MID_MAX_M, which sizes the
 * shared x) runs the decode kernel (i8_mid), above it the packed prefill.
 * Measured on Zen 2 (one thread, 2880 x 2880 weights from memory): the
 * decode kernel is ahead at every m up to 16 (4-bit: 2.7 ms against 3.6 at
 * m = 16; 8-bit: 3.6 against 4.3). */
enum { I8_MID_MAX_M = 16 };
/* mxfp8 up to this runs its decode kernel (qmatmul_fp_avx2.c), above it the
 * f32 prefill. Measured on Zen 3 (one thread, 2048 x 2048, CPU time): m = 8
 * 2.19 ms against 2.76, m = 12 3.32 against 2.77. */
enum { MXFP8_MID_MAX_M = 8 };

void mnv__qmatmul_avx2(const mnv_qmatmul_args *a, int ith, int nth, bool int8) {
    const qdesc d = describe(&a->fmt, a->global_scale);
    const mnv_qmode mode = a->fmt.mode;
    const bool i8_fmt =
        mode == MNV_QMODE_MXFP4 || mode == MNV_QMODE_NVFP4 || (mode == MNV_QMODE_AFFINE && d.G >= 32);
    if (mode == MNV_QMODE_MXFP8 && (a->m <= MXFP8_MID_MAX_M || !a->scratch)) {
        mnv__qmatmul_avx2_mxfp8(a, ith, nth);
        return;
    }
    if (a->m <= MNV_QMATMUL_GEMV_MAX_M || !a->scratch) {
        if (int8 && a->scratch && i8_fmt) i8_decode(a, &d, ith, nth);
        else f32_decode(a, &d, ith, nth);
        return;
    }
    if (int8 && i8_fmt && (nth == 1 || a->barrier)) {
        if (a->m <= I8_MID_MAX_M) {
            i8_mid(a, &d, ith, nth);
            return;
        }
        if (a->k % 32 == 0) { /* the packed panels take 32 codes at a time (nvfp4: k a multiple of 16) */
            i8_prefill(a, &d, ith, nth);
            return;
        }
    }
    f32_prefill(a, &d, ith, nth);
}

#endif
