/* MLX quantization formats as data: one traits row per mode (names, allowed
 * bits and group sizes, scale type, group codec), bit packing for every
 * width, the element codecs, and row dequantization / quantization.
 *
 * The quantizers follow MLX's CPU path bit for bit on f32 input
 * (ml-explore/mlx 846d176):
 *  - affine: mlx/backend/cpu/quantized.cpp quantize(): per group in f32,
 *    the zero-exact scale/bias choice, q = rint((w - bias) / scale) with
 *    the f32 scale and bias (not the rounded ones); scale and bias are
 *    rounded to the scale dtype only when stored.
 *  - mxfp4 / mxfp8 / nvfp4: mlx/ops.cpp fp_quantize() fallback (the CPU
 *    stream never takes the fast::Quantize primitive for these modes):
 *    E8M0 exponent rint(log2(amax / max)), 0 for an all-zero group; E2M1
 *    by argmin over MLX's 16-entry table, so ties go to the smaller
 *    magnitude (0.75 -> 0.5, 1.75 -> 1.5, 2.5 -> 2, 3.5 -> 3, 5 -> 4) and
 *    |x| <= 0.25 gives +0; E4M3 round to nearest even, saturating at 448.
 *    The fallback computes in the weight dtype; here it is always f32 (the
 *    same numbers for f32 weights). Its E8M0 exponent is not clamped (an
 *    exponent below -127 wraps in the uint8 cast); here it is clamped to
 *    [-127, 127] like MLX's to_fp8_e8m0 and the Metal kernel. */
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>

/* Packing treats a row of U32 words as the row's little-endian byte stream. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "MLX packing assumes a little-endian host");

/* ---- block layouts: a group is whole U32 words, its scale(s) stored apart -- */
#define QWORDS(elems, bits) ((elems) * (bits) / 32)
typedef struct { uint32_t q[QWORDS(32, 4)]; } mnv_mxfp4_group;   /* 32 E2M1 codes */
typedef struct { uint32_t q[QWORDS(32, 8)]; } mnv_mxfp8_group;   /* 32 E4M3 codes */
typedef struct { uint32_t q[QWORDS(16, 4)]; } mnv_nvfp4_group;   /* 16 E2M1 codes */
_Static_assert(sizeof(mnv_mxfp4_group) == 16, "mxfp4 group: 32 x 4 bits");
_Static_assert(sizeof(mnv_mxfp8_group) == 32, "mxfp8 group: 32 x 8 bits");
_Static_assert(sizeof(mnv_nvfp4_group) == 8, "nvfp4 group: 16 x 4 bits");
/* The smallest affine group (32) packs into whole words at every width. */
_Static_assert((32 * 2) % 32 == 0 && (32 * 3) % 32 == 0 && (32 * 5) % 32 == 0 && (32 * 6) % 32 == 0,
               "affine groups of 32 fill whole words");

#define QGROUP_MAX 128

/* One group: codes (gs of them) and its decoded scale/bias. */
typedef void (*q_dequant_fn)(const uint8_t *codes, int32_t gs, float scale, float bias, float *out);
/* Quantize one group of f->group_size weights: fills codes and *scale,
 * *bias (affine, f32 before rounding) or *u8 (fp modes). */
typedef void (*q_quant_fn)(const mnv_qformat *f, const float *w, float global, uint8_t *codes, float *scale,
                           float *bias, uint8_t *u8);

typedef struct {
    const char *name;
    int32_t default_bits, default_group;
    uint32_t bits_ok;    /* bit b set: b bits allowed */
    uint32_t groups_ok;  /* bit n set: group size 2^n allowed */
    bool float_scales;   /* F32/F16/BF16 scales (+ biases) vs U8 */
    q_dequant_fn dequant;
    q_quant_fn quant;
} qmode_traits;

static void dq_affine(const uint8_t *c, int32_t gs, float s, float b, float *out);
static void dq_fp4(const uint8_t *c, int32_t gs, float s, float b, float *out);
static void dq_fp8(const uint8_t *c, int32_t gs, float s, float b, float *out);
static void q_affine(const mnv_qformat *f, const float *w, float g, uint8_t *c, float *s, float *b, uint8_t *u8);
static void q_mxfp4(const mnv_qformat *f, const float *w, float g, uint8_t *c, float *s, float *b, uint8_t *u8);
static void q_mxfp8(const mnv_qformat *f, const float *w, float g, uint8_t *c, float *s, float *b, uint8_t *u8);
static void q_nvfp4(const mnv_qformat *f, const float *w, float g, uint8_t *c, float *s, float *b, uint8_t *u8);

#define BIT(n) (1u << (n))
static const qmode_traits QMODES[MNV_QMODE_COUNT] = {
    [MNV_QMODE_NONE] = {"none", 0, 0, 0, 0, false, NULL, NULL},
    [MNV_QMODE_AFFINE] = {"affine", 4, 64, BIT(2) | BIT(3) | BIT(4) | BIT(5) | BIT(6) | BIT(8),
                          BIT(5) | BIT(6) | BIT(7), true, dq_affine, q_affine},
    [MNV_QMODE_MXFP4] = {"mxfp4", 4, 32, BIT(4), BIT(5), false, dq_fp4, q_mxfp4},
    [MNV_QMODE_MXFP8] = {"mxfp8", 8, 32, BIT(8), BIT(5), false, dq_fp8, q_mxfp8},
    [MNV_QMODE_NVFP4] = {"nvfp4", 4, 16, BIT(4), BIT(4), false, dq_fp4, q_nvfp4},
};

static bool mode_valid(mnv_qmode m) { return (int)m > MNV_QMODE_NONE && m < MNV_QMODE_COUNT; }

/* ---- names and checks ------------------------------------------------------ */

const char *mnv_qmode_name(mnv_qmode m) {
    if ((int)m < 0 || m >= MNV_QMODE_COUNT) return "?";
    return QMODES[m].name;
}

bool mnv_qmode_from_name(const char *name, mnv_qmode *out) {
    if (!name) return false;
    for (int m = MNV_QMODE_AFFINE; m < MNV_QMODE_COUNT; m++) {
        if (strcmp(name, QMODES[m].name) == 0) {
            if (out) *out = (mnv_qmode)m;
            return true;
        }
    }
    return false;
}

void mnv_qmode_defaults(mnv_qmode m, int32_t *bits, int32_t *group_size) {
    bool ok = mode_valid(m);
    if (bits) *bits = ok ? QMODES[m].default_bits : 0;
    if (group_size) *group_size = ok ? QMODES[m].default_group : 0;
}

/* "2, 3, 4, 5, 6 and 8" from a bit mask of allowed values (value = f(bit)). */
static void list_allowed(uint32_t mask, bool pow2, char *buf, size_t cap) {
    int n = 0, total = __builtin_popcount(mask);
    size_t off = 0;
    buf[0] = 0;
    for (int b = 0; b < 32 && off < cap; b++) {
        if (!(mask & BIT(b))) continue;
        const char *sep = n == 0 ? "" : n == total - 1 ? " and " : ", ";
        off += (size_t)snprintf(buf + off, cap - off, "%s%u", sep, pow2 ? 1u << b : (unsigned)b);
        n++;
    }
}

static bool in_mask(uint32_t mask, int32_t v, bool pow2) {
    if (v <= 0 || v > (pow2 ? (1 << 30) : 31)) return false;
    if (!pow2) return (mask & BIT(v)) != 0;
    if (v & (v - 1)) return false;
    return (mask & BIT(__builtin_ctz((unsigned)v))) != 0;
}

mnv_status mnv_qformat_check(const mnv_qformat *f, const char *what) {
    if (!what) what = "quantized tensor";
    if (!f) return mnv_set_error(MNV_ERR_INVALID_ARG, "%s: no quantization format", what);
    if (!mode_valid(f->mode))
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: unknown quantization mode %d", what, (int)f->mode);
    const qmode_traits *t = &QMODES[f->mode];
    char allowed[64];
    if (!in_mask(t->bits_ok, f->bits, false)) {
        list_allowed(t->bits_ok, false, allowed, sizeof allowed);
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: %s quantization supports bits %s, not %d", what, t->name,
                             allowed, (int)f->bits);
    }
    if (!in_mask(t->groups_ok, f->group_size, true)) {
        list_allowed(t->groups_ok, true, allowed, sizeof allowed);
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: %s quantization supports group size %s, not %d", what,
                             t->name, allowed, (int)f->group_size);
    }
    bool sd_ok = t->float_scales ? (f->scale_dtype == MNV_DTYPE_F32 || f->scale_dtype == MNV_DTYPE_F16 ||
                                    f->scale_dtype == MNV_DTYPE_BF16)
                                 : f->scale_dtype == MNV_DTYPE_U8;
    if (!sd_ok)
        return mnv_set_error(MNV_ERR_FORMAT, "%s: %s quantization needs %s scales, not %s", what, t->name,
                             t->float_scales ? "F32, F16 or BF16" : "U8", mnv_dtype_name(f->scale_dtype));
    return MNV_OK;
}

int64_t mnv_qformat_row_words(const mnv_qformat *f, int64_t k) {
    if (!f || f->bits <= 0 || k <= 0) return 0;
    return (k * f->bits + 31) / 32;
}

int64_t mnv_qformat_row_groups(const mnv_qformat *f, int64_t k) {
    if (!f || f->group_size <= 0 || k <= 0) return 0;
    return (k + f->group_size - 1) / f->group_size;
}

/* ---- element codecs -------------------------------------------------------- */

static const float E2M1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

float mnv_e2m1_to_f32(uint8_t code) { return E2M1[code & 0xf]; }

float mnv_e4m3_to_f32(uint8_t code) {
    uint32_t e = (code >> 3) & 0xf, m = code & 7;
    if ((code & 0x7f) == 0x7f) return NAN;
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 + m), (int)e - 10);
    return (code & 0x80) ? -v : v;
}

float mnv_e8m0_to_f32(uint8_t e) {
    /* As MLX: e = 0 is the subnormal 2^-127, otherwise e is the exponent
     * field (so 255 is +inf, although OCP calls 0xFF NaN). */
    uint32_t u = e == 0 ? 0x00400000u : (uint32_t)e << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint8_t mnv_f32_to_e4m3(float v) {
    uint8_t sign = signbit(v) ? 0x80 : 0;
    float a = fabsf(v);
    if (isnan(v)) return sign | 0x7f; /* MLX's encoder saturates NaN to 448; a NaN weight stays NaN here */
    if (a >= 448.0f) return sign | 0x7e;
    if (a < 0x1p-6f) /* subnormal: multiples of 2^-9; q = 8 carries into the smallest normal */
        return sign | (uint8_t)rintf(a * 512.0f);
    int e;
    float m = frexpf(a, &e);                           /* a = m * 2^e, m in [0.5, 1) */
    uint32_t mant = (uint32_t)rintf((m * 2.0f - 1.0f) * 8.0f); /* exact; rint: ties to even */
    return sign | (uint8_t)((uint32_t)(e - 1 + 7) * 8 + mant); /* mant == 8 carries into the exponent */
}

/* Nearest E2M1 code as MLX's CPU quantizer picks it: argmin over E2M1[]
 * with the first index winning ties (smaller magnitude, +0 for |x| <= 0.25;
 * inf gives code 0 as every distance is inf, NaN as no distance compares
 * less). The thresholds are exact: each |x - v| near them is exact in f32. */
static uint8_t f32_to_e2m1(float x) {
    float a = fabsf(x);
    if (!(a < INFINITY) || a <= 0.25f) return 0;
    uint8_t m = a <= 0.75f ? 1 : a <= 1.25f ? 2 : a <= 1.75f ? 3 : a <= 2.5f ? 4 : a <= 3.5f ? 5 : a <= 5.0f ? 6 : 7;
    return m | (signbit(x) ? 8 : 0);
}

/* round(log2(x)) with rint as MLX's Round, clamped to E8M0's [-127, 127]. */
static int e8m0_exponent(float x) {
    if (x == 0.0f) return 0; /* an all-zero group: exponent 0, scale 1 */
    if (!(x < INFINITY)) return 127;
    float l = rintf(log2f(x));
    return l < -127.0f ? -127 : l > 127.0f ? 127 : (int)l;
}

/* ---- bit packing ----------------------------------------------------------- */

uint32_t mnv_qunpack(const uint32_t *row, int32_t bits, int64_t j) {
    uint64_t off = (uint64_t)j * (uint64_t)bits;
    uint64_t w = off >> 5;
    uint32_t sh = (uint32_t)(off & 31), mask = bits >= 32 ? 0xffffffffu : (1u << bits) - 1;
    uint32_t v = row[w] >> sh;
    if (sh + (uint32_t)bits > 32) v |= row[w + 1] << (32 - sh);
    return v & mask;
}

void mnv_qpack_row(const uint8_t *codes, int64_t k, int32_t bits, uint32_t *row) {
    int64_t words = (k * bits + 31) / 32;
    memset(row, 0, (size_t)words * sizeof *row);
    uint32_t mask = (1u << bits) - 1;
    for (int64_t i = 0; i < k; i++) {
        uint64_t off = (uint64_t)i * (uint64_t)bits;
        uint64_t w = off >> 5;
        uint32_t sh = (uint32_t)(off & 31), c = codes[i] & mask;
        row[w] |= c << sh;
        if (sh + (uint32_t)bits > 32) row[w + 1] |= c >> (32 - sh);
    }
}

/* ---- scales ---------------------------------------------------------------- */

static float load_scale(mnv_dtype dt, const void *p, int64_t i) {
    uint16_t h;
    switch (dt) {
    case MNV_DTYPE_F32: {
        float f;
        memcpy(&f, (const float *)p + i, 4);
        return f;
    }
    case MNV_DTYPE_BF16: memcpy(&h, (const uint16_t *)p + i, 2); return mnv_bf16_to_f32(h);
    case MNV_DTYPE_F16: memcpy(&h, (const uint16_t *)p + i, 2); return mnv_f16_to_f32(h);
    default: return (float)((const uint8_t *)p)[i];
    }
}

static void store_scale(mnv_dtype dt, void *p, int64_t i, float v) {
    uint16_t h;
    switch (dt) {
    case MNV_DTYPE_F32: memcpy((float *)p + i, &v, 4); break;
    case MNV_DTYPE_BF16: h = mnv_f32_to_bf16(v); memcpy((uint16_t *)p + i, &h, 2); break;
    case MNV_DTYPE_F16: h = mnv_f32_to_f16(v); memcpy((uint16_t *)p + i, &h, 2); break;
    default: break;
    }
}

/* ---- group codecs ---------------------------------------------------------- */

static void dq_affine(const uint8_t *c, int32_t gs, float s, float b, float *out) {
    for (int32_t i = 0; i < gs; i++) out[i] = s * (float)c[i] + b;
}

static void dq_fp4(const uint8_t *c, int32_t gs, float s, float b, float *out) {
    (void)b;
    for (int32_t i = 0; i < gs; i++) out[i] = E2M1[c[i] & 0xf] * s;
}

static void dq_fp8(const uint8_t *c, int32_t gs, float s, float b, float *out) {
    (void)b;
    for (int32_t i = 0; i < gs; i++) out[i] = mnv_e4m3_to_f32(c[i]) * s;
}

/* MLX quantize() (CPU), one group; comparisons written as std::max/min are. */
static void q_affine(const mnv_qformat *f, const float *w, float g, uint8_t *c, float *s_out, float *b_out,
                     uint8_t *u8) {
    (void)g, (void)u8;
    const int32_t gs = f->group_size;
    const float n_bins = (float)((1 << f->bits) - 1), eps = 1e-7f;
    float mx = -INFINITY, mn = INFINITY;
    for (int32_t i = 0; i < gs; i++) {
        mx = mx < w[i] ? w[i] : mx;
        mn = w[i] < mn ? w[i] : mn;
    }
    bool mask = fabsf(mn) > fabsf(mx);
    float s = (mx - mn) / n_bins;
    s = s < eps ? eps : s;
    s = mask ? s : -s;
    float edge = mask ? mn : mx, q0 = rintf(edge / s), bias = 0.0f;
    if (q0 != 0.0f) {
        s = edge / q0;
        bias = edge;
    }
    for (int32_t i = 0; i < gs; i++) {
        float q = rintf((w[i] - bias) / s); /* the f32 scale and bias, as MLX's CPU kernel */
        q = q < 0.0f ? 0.0f : q;
        q = n_bins < q ? n_bins : q;
        c[i] = q == q ? (uint8_t)q : 0; /* NaN weight: code 0 */
    }
    *s_out = s;
    *b_out = bias;
}

static float group_amax(const float *w, int32_t gs) {
    float amax = -INFINITY;
    for (int32_t i = 0; i < gs; i++) {
        float a = fabsf(w[i]);
        amax = amax < a ? a : amax;
    }
    return amax;
}

static void q_mx(const float *w, int32_t gs, float maxval, bool fp4, uint8_t *c, uint8_t *u8) {
    int e = e8m0_exponent(group_amax(w, gs) / maxval);
    float p = ldexpf(1.0f, e);
    for (int32_t i = 0; i < gs; i++) c[i] = fp4 ? f32_to_e2m1(w[i] / p) : mnv_f32_to_e4m3(w[i] / p);
    *u8 = (uint8_t)(e + 127);
}

static void q_mxfp4(const mnv_qformat *f, const float *w, float g, uint8_t *c, float *s, float *b, uint8_t *u8) {
    (void)g, (void)s, (void)b;
    q_mx(w, f->group_size, 6.0f, true, c, u8);
}

static void q_mxfp8(const mnv_qformat *f, const float *w, float g, uint8_t *c, float *s, float *b, uint8_t *u8) {
    (void)g, (void)s, (void)b;
    q_mx(w, f->group_size, 448.0f, false, c, u8);
}

/* g: the dequantization multiplier (MLX's global_scale / (448 * 6)); the
 * encoder scales by its inverse, MLX's scale_encode. */
static void q_nvfp4(const mnv_qformat *f, const float *w, float g, uint8_t *c, float *s, float *b, uint8_t *u8) {
    (void)s, (void)b;
    const int32_t gs = f->group_size;
    float enc = 1.0f / g;
    float sc = group_amax(w, gs) / 6.0f;
    if (g != 1.0f) sc *= enc;
    *u8 = mnv_f32_to_e4m3(sc);
    float sd = mnv_e4m3_to_f32(*u8);
    for (int32_t i = 0; i < gs; i++) {
        float x = w[i] / sd; /* sd == 0: NaN, code 0 (MLX's argmin of NaN distances) */
        if (g != 1.0f) x *= enc;
        c[i] = f32_to_e2m1(x);
    }
}

/* ---- rows ------------------------------------------------------------------ */

static float sane_global(float g) { return (g > 0.0f && g < INFINITY) ? g : 1.0f; }

void mnv_dequant_row(const mnv_qformat *f, const uint32_t *row, const void *scales, const void *biases,
                     float global_scale, float *out, int64_t k) {
    if (!f || !mode_valid(f->mode) || f->group_size <= 0 || f->group_size > QGROUP_MAX) return;
    const qmode_traits *t = &QMODES[f->mode];
    const int32_t gs = f->group_size;
    const float g = sane_global(global_scale);
    uint8_t codes[QGROUP_MAX];
    for (int64_t j0 = 0, grp = 0; j0 < k; j0 += gs, grp++) {
        int32_t n = (int32_t)MNV_MIN((int64_t)gs, k - j0);
        for (int32_t i = 0; i < n; i++) codes[i] = (uint8_t)mnv_qunpack(row, f->bits, j0 + i);
        float s, b = 0.0f;
        if (t->float_scales) {
            s = load_scale(f->scale_dtype, scales, grp);
            b = biases ? load_scale(f->scale_dtype, biases, grp) : 0.0f;
        } else if (f->mode == MNV_QMODE_NVFP4) {
            s = mnv_e4m3_to_f32(((const uint8_t *)scales)[grp]) * g; /* MLX: scale first, then the element */
        } else {
            s = mnv_e8m0_to_f32(((const uint8_t *)scales)[grp]);
        }
        t->dequant(codes, n, s, b, out + j0);
    }
}

void mnv_quantize_row(const mnv_qformat *f, const float *w, int64_t k, uint32_t *row, void *scales, void *biases,
                      float global_scale) {
    if (!f || !mode_valid(f->mode) || f->group_size <= 0 || f->group_size > QGROUP_MAX) return;
    const qmode_traits *t = &QMODES[f->mode];
    const int32_t gs = f->group_size;
    const float g = sane_global(global_scale);
    const int64_t gwords = QWORDS((int64_t)gs, f->bits);
    uint8_t codes[QGROUP_MAX];
    for (int64_t j0 = 0, grp = 0; j0 + gs <= k; j0 += gs, grp++) {
        float s = 0.0f, b = 0.0f;
        uint8_t u8 = 0;
        t->quant(f, w + j0, g, codes, &s, &b, &u8);
        mnv_qpack_row(codes, gs, f->bits, row + grp * gwords);
        if (t->float_scales) {
            store_scale(f->scale_dtype, scales, grp, s);
            if (biases) store_scale(f->scale_dtype, biases, grp, b);
        } else {
            ((uint8_t *)scales)[grp] = u8;
        }
    }
}
