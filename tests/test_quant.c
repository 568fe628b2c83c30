/* Tests of src/quant: names, format checks, element codecs, bit packing,
 * dequantization against the documented formulas on hand-made groups, and
 * quantize -> dequantize at fresh random rows for every mode, width, group
 * size and scale dtype. */
#include "quant/quant.h"
#include "test.h"

static const mnv_dtype FLOAT_DT[3] = {MNV_DTYPE_F32, MNV_DTYPE_F16, MNV_DTYPE_BF16};

static float round_to(mnv_dtype dt, float v) {
    if (dt == MNV_DTYPE_BF16) return mnv_bf16_to_f32(mnv_f32_to_bf16(v));
    if (dt == MNV_DTYPE_F16) return mnv_f16_to_f32(mnv_f32_to_f16(v));
    return v;
}

static float get_scale(mnv_dtype dt, const void *p, int64_t i) {
    if (dt == MNV_DTYPE_F32) return ((const float *)p)[i];
    if (dt == MNV_DTYPE_BF16) return mnv_bf16_to_f32(((const uint16_t *)p)[i]);
    if (dt == MNV_DTYPE_F16) return mnv_f16_to_f32(((const uint16_t *)p)[i]);
    return ((const uint8_t *)p)[i];
}

static void put_scale(mnv_dtype dt, void *p, int64_t i, float v) {
    if (dt == MNV_DTYPE_F32) ((float *)p)[i] = v;
    else if (dt == MNV_DTYPE_BF16) ((uint16_t *)p)[i] = mnv_f32_to_bf16(v);
    else ((uint16_t *)p)[i] = mnv_f32_to_f16(v);
}

static bool same_float(float a, float b) { return memcmp(&a, &b, 4) == 0 || (isnan(a) && isnan(b)); }

/* ---- names, defaults, checks ------------------------------------------------ */

static void test_names(void) {
    const char *names[] = {"affine", "mxfp4", "mxfp8", "nvfp4"};
    const int32_t bits[] = {4, 4, 8, 4}, groups[] = {64, 32, 32, 16};
    for (int i = 0; i < 4; i++) {
        mnv_qmode m = MNV_QMODE_NONE;
        CHECK(mnv_qmode_from_name(names[i], &m));
        CHECK(m == (mnv_qmode)(MNV_QMODE_AFFINE + i));
        CHECK(strcmp(mnv_qmode_name(m), names[i]) == 0);
        int32_t b = 0, g = 0;
        mnv_qmode_defaults(m, &b, &g);
        CHECKF(b == bits[i] && g == groups[i], "%s defaults %d/%d", names[i], b, g);
    }
    mnv_qmode m;
    CHECK(!mnv_qmode_from_name("int4", &m));
    CHECK(!mnv_qmode_from_name("Affine", &m));
    CHECK(!mnv_qmode_from_name("none", &m));
    CHECK(!mnv_qmode_from_name(NULL, &m));
}

static void expect_ok(mnv_qmode m, int32_t bits, int32_t gs, mnv_dtype sd) {
    mnv_qformat f = {m, bits, gs, sd};
    mnv_status st = mnv_qformat_check(&f, "t");
    CHECKF(st == MNV_OK, "%s bits %d group %d %s: %s", mnv_qmode_name(m), bits, gs, mnv_dtype_name(sd),
           mnv_last_error());
}

static void expect_bad(mnv_qmode m, int32_t bits, int32_t gs, mnv_dtype sd, const char *needle) {
    mnv_qformat f = {m, bits, gs, sd};
    mnv_clear_error();
    mnv_status st = mnv_qformat_check(&f, "model.layers.3.mlp.up_proj");
    const char *msg = mnv_last_error();
    CHECKF(st == MNV_ERR_UNSUPPORTED || st == MNV_ERR_FORMAT, "%s bits %d group %d accepted", mnv_qmode_name(m),
           bits, gs);
    CHECKF(strstr(msg, "model.layers.3.mlp.up_proj") != NULL, "message lacks the name: %s", msg);
    CHECKF(strstr(msg, needle) != NULL, "message lacks '%s': %s", needle, msg);
}

static void test_check(void) {
    const int32_t abits[] = {2, 3, 4, 5, 6, 8}, agroups[] = {32, 64, 128};
    for (int b = 0; b < 6; b++)
        for (int g = 0; g < 3; g++)
            for (int d = 0; d < 3; d++) expect_ok(MNV_QMODE_AFFINE, abits[b], agroups[g], FLOAT_DT[d]);
    expect_ok(MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8);
    expect_ok(MNV_QMODE_MXFP8, 8, 32, MNV_DTYPE_U8);
    expect_ok(MNV_QMODE_NVFP4, 4, 16, MNV_DTYPE_U8);
    expect_bad(MNV_QMODE_AFFINE, 1, 64, MNV_DTYPE_BF16, "not 1");
    expect_bad(MNV_QMODE_AFFINE, 7, 64, MNV_DTYPE_BF16, "not 7");
    expect_bad(MNV_QMODE_AFFINE, 16, 64, MNV_DTYPE_BF16, "2, 3, 4, 5, 6 and 8");
    expect_bad(MNV_QMODE_AFFINE, 4, 16, MNV_DTYPE_BF16, "32, 64 and 128");
    expect_bad(MNV_QMODE_AFFINE, 4, 48, MNV_DTYPE_BF16, "not 48");
    expect_bad(MNV_QMODE_AFFINE, 4, 256, MNV_DTYPE_BF16, "not 256");
    expect_bad(MNV_QMODE_AFFINE, 4, 0, MNV_DTYPE_BF16, "not 0");
    expect_bad(MNV_QMODE_AFFINE, 4, 64, MNV_DTYPE_U8, "U8");
    expect_bad(MNV_QMODE_AFFINE, 4, 64, MNV_DTYPE_I32, "I32");
    expect_bad(MNV_QMODE_MXFP4, 8, 32, MNV_DTYPE_U8, "mxfp4");
    expect_bad(MNV_QMODE_MXFP4, 4, 64, MNV_DTYPE_U8, "not 64");
    expect_bad(MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_BF16, "BF16");
    expect_bad(MNV_QMODE_MXFP8, 4, 32, MNV_DTYPE_U8, "mxfp8");
    expect_bad(MNV_QMODE_MXFP8, 8, 16, MNV_DTYPE_U8, "not 16");
    expect_bad(MNV_QMODE_NVFP4, 4, 32, MNV_DTYPE_U8, "nvfp4");
    expect_bad(MNV_QMODE_NVFP4, 4, 16, MNV_DTYPE_F16, "F16");
    expect_bad(MNV_QMODE_NONE, 4, 64, MNV_DTYPE_BF16, "mode");
    expect_bad((mnv_qmode)42, 4, 64, MNV_DTYPE_BF16, "mode");
    CHECK(mnv_qformat_check(NULL, "x") == MNV_ERR_INVALID_ARG);

    mnv_qformat f = {MNV_QMODE_AFFINE, 3, 64, MNV_DTYPE_BF16};
    CHECK(mnv_qformat_row_words(&f, 4096) == 384);
    CHECK(mnv_qformat_row_groups(&f, 4096) == 64);
    f = (mnv_qformat){MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8};
    CHECK(mnv_qformat_row_words(&f, 2880) == 360);
    CHECK(mnv_qformat_row_groups(&f, 2880) == 90);
    f = (mnv_qformat){MNV_QMODE_NVFP4, 4, 16, MNV_DTYPE_U8};
    CHECK(mnv_qformat_row_words(&f, 48) == 6 && mnv_qformat_row_groups(&f, 48) == 3);
}

/* ---- element codecs ---------------------------------------------------------- */

static void test_e2m1_e8m0(void) {
    const float want[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    for (int c = 0; c < 16; c++) {
        CHECKF(same_float(mnv_e2m1_to_f32((uint8_t)c), want[c]), "e2m1 %d", c);
        CHECK(same_float(mnv_e2m1_to_f32((uint8_t)(c | 0xf0)), want[c])); /* low 4 bits only */
    }
    CHECK(mnv_e8m0_to_f32(0) == ldexpf(1.0f, -127));
    CHECK(mnv_e8m0_to_f32(1) == ldexpf(1.0f, -126));
    CHECK(mnv_e8m0_to_f32(127) == 1.0f);
    CHECK(mnv_e8m0_to_f32(130) == 8.0f);
    CHECK(mnv_e8m0_to_f32(254) == ldexpf(1.0f, 127));
    CHECK(isinf(mnv_e8m0_to_f32(255)));
}

/* The nearest E4M3 code by exhaustive search, ties to the even code. */
static uint8_t e4m3_ref(float v) {
    float a = fabsf(v);
    uint8_t best = 0;
    double bd = INFINITY;
    for (int c = 0; c < 0x7f; c++) {
        double d = fabs((double)a - mnv_e4m3_to_f32((uint8_t)c));
        if (d < bd || (d == bd && (c & 1) == 0)) {
            bd = d;
            best = (uint8_t)c;
        }
    }
    if (a >= 448.0f) best = 0x7e;
    return best | (signbit(v) ? 0x80 : 0);
}

static void test_e4m3(void) {
    CHECK(mnv_e4m3_to_f32(0x00) == 0.0f && !signbit(mnv_e4m3_to_f32(0x00)));
    CHECK(mnv_e4m3_to_f32(0x80) == 0.0f && signbit(mnv_e4m3_to_f32(0x80)));
    CHECK(mnv_e4m3_to_f32(0x01) == ldexpf(1.0f, -9));  /* smallest subnormal */
    CHECK(mnv_e4m3_to_f32(0x07) == ldexpf(7.0f, -9));  /* largest subnormal */
    CHECK(mnv_e4m3_to_f32(0x08) == ldexpf(1.0f, -6));  /* smallest normal */
    CHECK(mnv_e4m3_to_f32(0x38) == 1.0f);
    CHECK(mnv_e4m3_to_f32(0x3c) == 1.5f);
    CHECK(mnv_e4m3_to_f32(0x7e) == 448.0f);
    CHECK(mnv_e4m3_to_f32(0xfe) == -448.0f);
    CHECK(isnan(mnv_e4m3_to_f32(0x7f)) && isnan(mnv_e4m3_to_f32(0xff)));
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f) continue;
        CHECKF(mnv_f32_to_e4m3(mnv_e4m3_to_f32((uint8_t)c)) == c, "e4m3 round trip %02x", c);
    }
    CHECK(mnv_f32_to_e4m3(ldexpf(1.0f, -10)) == 0x00);      /* tie between 0 and 2^-9: even */
    CHECK(mnv_f32_to_e4m3(ldexpf(3.0f, -10)) == 0x02);      /* tie between 1 and 2 (x 2^-9): even */
    CHECK(mnv_f32_to_e4m3(1.0625f) == 0x38);                /* tie between 1 and 1.125: even */
    CHECK(mnv_f32_to_e4m3(1.1875f) == 0x3a);                /* tie between 1.125 and 1.25: even */
    CHECK(mnv_f32_to_e4m3(460.0f) == 0x7e);
    CHECK(mnv_f32_to_e4m3(1e9f) == 0x7e);
    CHECK(mnv_f32_to_e4m3(-INFINITY) == 0xfe);
    CHECK((mnv_f32_to_e4m3(NAN) & 0x7f) == 0x7f);
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        float v = ldexpf(t_randf(), t_randint(-12, 9));
        if (mnv_f32_to_e4m3(v) != e4m3_ref(v) && bad++ < 5)
            fprintf(stderr, "e4m3(%a) = %02x, want %02x\n", v, mnv_f32_to_e4m3(v), e4m3_ref(v));
    }
    CHECK(bad == 0);
}

/* ---- packing ----------------------------------------------------------------- */

/* Bit `i` of the row's little-endian byte stream. */
static int stream_bit(const uint32_t *row, int64_t i) {
    const uint8_t *b = (const uint8_t *)row;
    return (b[i >> 3] >> (i & 7)) & 1;
}

static void test_pack(void) {
    for (int bits = 1; bits <= 8; bits++) {
        int64_t k = 32 * (2 * t_randint(0, 20) + 1); /* an odd number of 32s */
        uint8_t *codes = malloc((size_t)k);
        uint32_t *row = malloc((size_t)(k * bits / 32 + 1) * 4);
        for (int64_t i = 0; i < k; i++) codes[i] = (uint8_t)(t_rand64() & ((1u << bits) - 1));
        row[k * bits / 32] = 0xdeadbeef; /* must stay untouched */
        mnv_qpack_row(codes, k, bits, row);
        int bad = 0, bad_stream = 0;
        for (int64_t i = 0; i < k; i++) {
            bad += mnv_qunpack(row, bits, i) != codes[i];
            for (int b = 0; b < bits; b++) bad_stream += stream_bit(row, i * bits + b) != ((codes[i] >> b) & 1);
        }
        CHECKF(bad == 0 && bad_stream == 0, "bits %d k %lld: %d unpack, %d stream mismatches", bits, (long long)k,
               bad, bad_stream);
        CHECK(row[k * bits / 32] == 0xdeadbeef);
        free(codes);
        free(row);
    }
    /* The spec's 3-bit example: element 2 = bits 6-7 of byte 0 + bit 0 of byte 1. */
    uint32_t row[3] = {0};
    ((uint8_t *)row)[0] = 0x80; /* bit 7 */
    ((uint8_t *)row)[1] = 0x01; /* bit 8 */
    CHECK(mnv_qunpack(row, 3, 2) == 0x6);
    memset(row, 0, sizeof row);
    ((uint8_t *)row)[1] = 0x80; /* element 5 = bit 7 of byte 1 + bits 0-1 of byte 2 */
    ((uint8_t *)row)[2] = 0x03;
    CHECK(mnv_qunpack(row, 3, 5) == 0x7);
    /* 4-bit: byte b holds element 2b low, 2b+1 high */
    uint8_t c4[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    mnv_qpack_row(c4, 8, 4, row);
    CHECK(row[0] == 0x87654321u);
}

/* ---- dequantization of hand-made groups ------------------------------------- */

static void test_dequant_affine(void) {
    for (int d = 0; d < 3; d++) {
        const int bitsv[] = {2, 3, 4, 5, 6, 8};
        for (int bi = 0; bi < 6; bi++) {
            int bits = bitsv[bi], gs = 32, k = 64;
            mnv_qformat f = {MNV_QMODE_AFFINE, bits, gs, FLOAT_DT[d]};
            uint8_t codes[64];
            uint32_t row[16];
            for (int i = 0; i < k; i++) codes[i] = (uint8_t)((i * 7 + 3) % (1 << bits));
            mnv_qpack_row(codes, k, bits, row);
            float sv[2] = {-0.5f, 0.125f}, bv[2] = {3.0f, -1.25f}; /* a negative scale */
            uint8_t sc[8], bs[8];
            for (int g = 0; g < 2; g++) {
                put_scale(FLOAT_DT[d], sc, g, sv[g]);
                put_scale(FLOAT_DT[d], bs, g, bv[g]);
            }
            float out[64];
            mnv_dequant_row(&f, row, sc, bs, 1.0f, out, k);
            int bad = 0;
            for (int i = 0; i < k; i++) bad += out[i] != sv[i / gs] * codes[i] + bv[i / gs];
            CHECKF(bad == 0, "affine %d-bit %s: %d wrong", bits, mnv_dtype_name(FLOAT_DT[d]), bad);
        }
    }
}

static void test_dequant_mxfp(void) {
    /* mxfp4: all 16 codes at E8M0 extremes */
    const uint8_t es[4] = {0, 1, 127, 254};
    mnv_qformat f4 = {MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8};
    uint8_t codes[128];
    uint32_t row[32];
    for (int i = 0; i < 128; i++) codes[i] = (uint8_t)(i & 15);
    mnv_qpack_row(codes, 128, 4, row);
    float out[128];
    mnv_dequant_row(&f4, row, es, NULL, 1.0f, out, 128);
    int bad = 0;
    for (int i = 0; i < 128; i++) {
        int e = es[i / 32];
        float want = mnv_e2m1_to_f32(codes[i]) * (e == 0 ? ldexpf(1.0f, -127) : ldexpf(1.0f, e - 127));
        bad += !same_float(out[i], want);
    }
    CHECKF(bad == 0, "mxfp4: %d wrong", bad);
    CHECK(out[32 + 7] == 6.0f * ldexpf(1.0f, -126) && out[64 + 15] == -6.0f && out[96 + 1] == 0.5f * 0x1p127f);

    /* mxfp8: subnormals, max, NaN codes */
    mnv_qformat f8 = {MNV_QMODE_MXFP8, 8, 32, MNV_DTYPE_U8};
    const uint8_t c8[8] = {0x01, 0x07, 0x08, 0x7e, 0xfe, 0x7f, 0x38, 0x80};
    for (int i = 0; i < 64; i++) codes[i] = c8[i % 8];
    mnv_qpack_row(codes, 64, 8, row);
    const uint8_t e8[2] = {127, 130};
    mnv_dequant_row(&f8, row, e8, NULL, 1.0f, out, 64);
    bad = 0;
    for (int i = 0; i < 64; i++)
        bad += !same_float(out[i], mnv_e4m3_to_f32(codes[i]) * (i < 32 ? 1.0f : 8.0f));
    CHECKF(bad == 0, "mxfp8: %d wrong", bad);
    CHECK(out[0] == ldexpf(1.0f, -9) && out[3] == 448.0f && out[32 + 3] == 3584.0f && isnan(out[5]));
}

static void test_dequant_nvfp4(void) {
    mnv_qformat f = {MNV_QMODE_NVFP4, 4, 16, MNV_DTYPE_U8};
    uint8_t codes[48];
    uint32_t row[6];
    for (int i = 0; i < 48; i++) codes[i] = (uint8_t)((i * 5) & 15);
    mnv_qpack_row(codes, 48, 4, row);
    const uint8_t sc[3] = {0x38, 0x01, 0xc4}; /* 1.0, 2^-9, -3.0 (a negative E4M3 scale) */
    const float gv[2] = {1.0f, 0.375f};
    for (int gi = 0; gi < 2; gi++) {
        float out[48];
        mnv_dequant_row(&f, row, sc, NULL, gv[gi], out, 48);
        int bad = 0;
        for (int i = 0; i < 48; i++)
            bad += !same_float(out[i], mnv_e2m1_to_f32(codes[i]) * (mnv_e4m3_to_f32(sc[i / 16]) * gv[gi]));
        CHECKF(bad == 0, "nvfp4 global %g: %d wrong", gv[gi], bad);
    }
    CHECK(mnv_e4m3_to_f32(0xc4) == -3.0f);
}

/* ---- quantize -> dequantize -------------------------------------------------- */

static void random_row(float *w, int64_t k, mnv_dtype round) {
    float scale = ldexpf(1.0f, t_randint(-8, 3));
    float shift = t_randint(0, 3) == 0 ? t_randf() * scale : 0.0f; /* some one-sided groups */
    for (int64_t i = 0; i < k; i++) w[i] = round_to(round, t_randf() * scale + shift);
}

/* affine: each weight within half a step of its value, except the far end of
 * the range, which the zero-exact scale may push one step out (it clamps to
 * q = 0 or 2^bits - 1); plus the scale dtype's rounding of scale and bias. */
static int check_affine_row(const mnv_qformat *f, const float *w, const float *dq, const uint32_t *row,
                            const void *sc, const void *bi, int64_t k) {
    const float u = f->scale_dtype == MNV_DTYPE_F32 ? 0x1p-22f : f->scale_dtype == MNV_DTYPE_F16 ? 0x1p-10f : 0x1p-7f;
    const uint32_t n = (1u << f->bits) - 1;
    int bad = 0;
    for (int64_t j = 0; j < k; j++) {
        float s = get_scale(f->scale_dtype, sc, j / f->group_size), b = get_scale(f->scale_dtype, bi, j / f->group_size);
        uint32_t q = mnv_qunpack(row, f->bits, j);
        float slack = (fabsf(s) * (float)n + fabsf(b)) * u + 1e-6f * fabsf(w[j]) + 1e-30f;
        float err = fabsf(w[j] - dq[j]);
        bool ok = err <= fabsf(s) * 0.5f * (1.0f + u) + slack ||
                  ((q == n || q == 0) && err <= fabsf(s) * (1.0f + u) + slack);
        bad += !ok || dq[j] != s * (float)q + b;
        if (!ok && bad < 4)
            fprintf(stderr, "  affine %d/%d %s j %lld: w %g dq %g s %g b %g q %u\n", f->bits, f->group_size,
                    mnv_dtype_name(f->scale_dtype), (long long)j, w[j], dq[j], s, b, q);
    }
    return bad;
}

static void test_affine_roundtrip(void) {
    const int bitsv[] = {2, 3, 4, 5, 6, 8}, gsv[] = {32, 64, 128};
    for (int bi = 0; bi < 6; bi++)
        for (int gi = 0; gi < 3; gi++)
            for (int d = 0; d < 3; d++) {
                mnv_qformat f = {MNV_QMODE_AFFINE, bitsv[bi], gsv[gi], FLOAT_DT[d]};
                int64_t k = (int64_t)gsv[gi] * t_randint(1, 9);
                float *w = malloc((size_t)k * 4), *dq = malloc((size_t)k * 4);
                uint32_t *row = malloc((size_t)mnv_qformat_row_words(&f, k) * 4);
                float sc[40], bs[40];
                int bad = 0;
                for (int rep = 0; rep < 20; rep++) {
                    random_row(w, k, FLOAT_DT[d]);
                    if (rep % 4 == 0) w[t_randint(0, (int)k - 1)] = 0.0f;
                    mnv_quantize_row(&f, w, k, row, sc, bs, 1.0f);
                    mnv_dequant_row(&f, row, sc, bs, 1.0f, dq, k);
                    bad += check_affine_row(&f, w, dq, row, sc, bs, k);
                }
                CHECKF(bad == 0, "affine %d-bit g%d %s: %d bad", bitsv[bi], gsv[gi], mnv_dtype_name(FLOAT_DT[d]), bad);
                free(w);
                free(dq);
                free(row);
            }
}

/* A zero weight decodes to (almost) zero: exactly -q0 * (edge / q0) + edge
 * in real arithmetic; f32 division and the scale dtype's rounding leave a
 * residue of a few units of the stored bias's last place. */
static void test_affine_zero_and_constant(void) {
    for (int d = 0; d < 3; d++) {
        mnv_qformat f = {MNV_QMODE_AFFINE, 4, 64, FLOAT_DT[d]};
        float w[64], dq[64], sc[1], bs[1];
        uint32_t row[8];
        int bad_zero = 0, bad_const = 0;
        for (int rep = 0; rep < 200; rep++) {
            random_row(w, 64, FLOAT_DT[d]);
            int z = t_randint(0, 63);
            w[z] = 0.0f;
            mnv_quantize_row(&f, w, 64, row, sc, bs, 1.0f);
            mnv_dequant_row(&f, row, sc, bs, 1.0f, dq, 64);
            float b = get_scale(f.scale_dtype, bs, 0);
            float tol = fabsf(b) * (d == 0 ? 0x1p-21f : d == 1 ? 0x1p-9f : 0x1p-6f);
            bad_zero += !(fabsf(dq[z]) <= tol);
            /* constant groups are exact */
            float c = round_to(FLOAT_DT[d], t_randf() * ldexpf(1.0f, t_randint(-10, 6)));
            if (fabsf(c) < 1e-6f) c = 0.5f;
            for (int i = 0; i < 64; i++) w[i] = rep % 10 == 0 ? 0.0f : c;
            mnv_quantize_row(&f, w, 64, row, sc, bs, 1.0f);
            mnv_dequant_row(&f, row, sc, bs, 1.0f, dq, 64);
            for (int i = 0; i < 64; i++) bad_const += dq[i] != w[i];
        }
        CHECKF(bad_zero == 0, "%s: %d zero weights off", mnv_dtype_name(FLOAT_DT[d]), bad_zero);
        CHECKF(bad_const == 0, "%s: %d constant weights off", mnv_dtype_name(FLOAT_DT[d]), bad_const);
    }
    /* A hand-checked group: 2-bit, w in [-1, 0.9]: s = 1.9/3, q0 = rint(-1/s) = -2,
     * so s = 0.5 and bias = -1; 0.9 maps to 3.8 and clamps to q = 3 (0.5). */
    mnv_qformat f = {MNV_QMODE_AFFINE, 2, 32, MNV_DTYPE_F32};
    float w[32], dq[32], sc[1], bs[1];
    uint32_t row[2];
    for (int i = 0; i < 32; i++) w[i] = i == 0 ? -1.0f : i == 1 ? 0.9f : 0.0f;
    mnv_quantize_row(&f, w, 32, row, sc, bs, 1.0f);
    mnv_dequant_row(&f, row, sc, bs, 1.0f, dq, 32);
    CHECK(sc[0] == 0.5f && bs[0] == -1.0f);
    CHECK(mnv_qunpack(row, 2, 0) == 0 && mnv_qunpack(row, 2, 1) == 3 && mnv_qunpack(row, 2, 2) == 2);
    CHECK(dq[0] == -1.0f && dq[1] == 0.5f && dq[2] == 0.0f);
    /* positive side dominant: the scale is negative and the bias is the max */
    for (int i = 0; i < 32; i++) w[i] = (float)i / 31.0f;
    mnv_quantize_row(&f, w, 32, row, sc, bs, 1.0f);
    CHECK(sc[0] < 0.0f && bs[0] == 1.0f && mnv_qunpack(row, 2, 31) == 0);
}

/* Reference encoders written from the spec: E8M0 exponent rint(log2(amax / max))
 * clamped to [-127, 127] (0 for a zero group); E2M1 by argmin over the table,
 * first index winning ties. */
static uint8_t e2m1_argmin(float x) {
    uint8_t best = 0;
    float bd = fabsf(x - mnv_e2m1_to_f32(0));
    for (uint8_t c = 1; c < 16; c++) {
        float d = fabsf(x - mnv_e2m1_to_f32(c));
        if (d < bd) {
            bd = d;
            best = c;
        }
    }
    return best;
}

static int ref_exponent(float amax, float maxval) {
    if (amax == 0.0f) return 0;
    float l = rintf(log2f(amax / maxval));
    return l < -127 ? -127 : l > 127 ? 127 : (int)l;
}

static void test_e2m1_ties(void) {
    mnv_qformat f = {MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8};
    const float v[12] = {6.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, -0.75f, -0.25f, -0.1f, 5.5f};
    const uint8_t want[12] = {7, 0, 1, 2, 3, 4, 5, 6, 9, 0, 0, 7};
    float w[32] = {0};
    memcpy(w, v, sizeof v);
    uint32_t row[4];
    uint8_t e;
    mnv_quantize_row(&f, w, 32, row, &e, NULL, 1.0f);
    CHECK(e == 127);
    for (int i = 0; i < 12; i++) CHECKF(mnv_qunpack(row, 4, i) == want[i], "e2m1(%g) = %u", v[i], mnv_qunpack(row, 4, i));
    /* all-zero group: exponent 0 (stored 127), codes 0 */
    memset(w, 0, sizeof w);
    mnv_quantize_row(&f, w, 32, row, &e, NULL, 1.0f);
    CHECK(e == 127 && row[0] == 0 && row[3] == 0);
    /* a tiny group clamps at 2^-127 (stored 0); a huge one at 2^127 (254) */
    for (int i = 0; i < 32; i++) w[i] = 1e-40f; /* log2(1e-40 / 6) = -135.8 */
    mnv_quantize_row(&f, w, 32, row, &e, NULL, 1.0f);
    CHECK(e == 0);
    for (int i = 0; i < 32; i++) w[i] = 1e-45f; /* amax / 6 underflows to 0: a zero group */
    mnv_quantize_row(&f, w, 32, row, &e, NULL, 1.0f);
    CHECK(e == 127);
    for (int i = 0; i < 32; i++) w[i] = 3e38f; /* log2(5e37) = 125.2 */
    mnv_quantize_row(&f, w, 32, row, &e, NULL, 1.0f);
    CHECK(e == 252);
}

static float halfgap_e2m1(float a) { return a < 2.0f ? 0.25f : a < 4.0f ? 0.5f : 1.0f; }

static void test_fp_roundtrip(void) {
    const mnv_qmode modes[3] = {MNV_QMODE_MXFP4, MNV_QMODE_MXFP8, MNV_QMODE_NVFP4};
    for (int mi = 0; mi < 3; mi++)
        for (int gi = 0; gi < 2; gi++) {
            mnv_qformat f = {modes[mi], 0, 0, MNV_DTYPE_U8};
            mnv_qmode_defaults(f.mode, &f.bits, &f.group_size);
            const float global = (gi && f.mode == MNV_QMODE_NVFP4) ? 0.0625f : 1.0f;
            const float maxval = f.mode == MNV_QMODE_MXFP8 ? 448.0f : 6.0f;
            int bad_code = 0, bad_err = 0;
            for (int rep = 0; rep < 50; rep++) {
                int64_t k = (int64_t)f.group_size * t_randint(1, 12), ng = k / f.group_size;
                float w[32 * 12], dq[32 * 12];
                uint32_t row[96];
                uint8_t sc[24];
                random_row(w, k, rep % 2 ? MNV_DTYPE_BF16 : MNV_DTYPE_F32);
                mnv_quantize_row(&f, w, k, row, sc, NULL, global);
                mnv_dequant_row(&f, row, sc, NULL, global, dq, k);
                for (int64_t g = 0; g < ng; g++) {
                    const float *wg = w + g * f.group_size;
                    float amax = 0, p;
                    for (int i = 0; i < f.group_size; i++) amax = fmaxf(amax, fabsf(wg[i]));
                    if (f.mode == MNV_QMODE_NVFP4) {
                        uint8_t s = mnv_f32_to_e4m3(global == 1.0f ? amax / 6.0f : amax / 6.0f * (1.0f / global));
                        bad_code += sc[g] != s;
                        p = mnv_e4m3_to_f32(s) * global;
                    } else {
                        int e = ref_exponent(amax, maxval);
                        bad_code += sc[g] != e + 127;
                        p = ldexpf(1.0f, e);
                    }
                    for (int i = 0; i < f.group_size; i++) {
                        int64_t j = g * f.group_size + i;
                        float x = wg[i] / p, a = fabsf(x);
                        uint32_t q = mnv_qunpack(row, f.bits, j);
                        if (f.mode != MNV_QMODE_MXFP8) {
                            if (p > 0) bad_code += q != e2m1_argmin(x);
                            /* nvfp4: an E4M3 scale can round to 0 (amax / 6 < 2^-10): all zeros */
                            float tol = p * (halfgap_e2m1(a) + fmaxf(0.0f, a - 6.0f)) * 1.0001f + 1e-37f;
                            bad_err += p > 0 ? !(fabsf(dq[j] - wg[i]) <= tol) : dq[j] != 0.0f;
                        } else {
                            bad_code += q != mnv_f32_to_e4m3(x);
                            float tol = p * (fmaxf(a * 0x1p-4f, 0x1p-10f) + fmaxf(0.0f, a - 448.0f)) * 1.0001f;
                            bad_err += !(fabsf(dq[j] - wg[i]) <= tol);
                        }
                    }
                }
            }
            CHECKF(bad_code == 0 && bad_err == 0, "%s global %g: %d codes, %d errors", mnv_qmode_name(f.mode), global,
                   bad_code, bad_err);
        }
}

int main(void) {
    t_seed();
    test_names();
    test_check();
    test_e2m1_e8m0();
    test_e4m3();
    test_pack();
    test_dequant_affine();
    test_dequant_mxfp();
    test_dequant_nvfp4();
    test_affine_roundtrip();
    test_affine_zero_and_constant();
    test_e2m1_ties();
    test_fp_roundtrip();
    return t_done();
}
